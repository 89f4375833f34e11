//! One module per subcommand.

pub mod analyze;
pub mod doctor;
pub mod dups;
pub mod embed;
pub mod eval;
pub mod export;
pub mod index;
pub mod info;
pub mod merge;
pub mod model;
pub mod plugins;
pub mod progress;
pub mod query;
pub mod serve;
pub mod train;

use std::io::Write;

use irtdb_engine::Setting;

/// The flag that sets an engine [`Setting`].
pub fn flag(setting: Setting) -> &'static str {
    match setting {
        Setting::Db => "--db",
        Setting::Model => "--model",
        Setting::Plugin => "--plugin",
        Setting::Data => "--data",
        Setting::ValData => "--val-data",
        Setting::ValFraction => "--val-fraction",
        Setting::Out => "--out",
        Setting::Resume => "--resume",
        Setting::Batch => "--batch",
        Setting::PerClass => "--per-class",
        Setting::Lr => "--lr",
        Setting::EvalEvery => "--eval-every",
        Setting::TrainResize => "--train-resize",
        Setting::Dim => "--dim",
        Setting::Raw => "--raw",
        Setting::Shard => "--shard",
        Setting::FilesFrom => "--files-from",
        Setting::RowGroup => "--row-group",
        Setting::Threshold => "--threshold",
        Setting::Bins => "--bins",
        Setting::MaxPairs => "--max-pairs",
        Setting::PluginConfig => "--plugin-config",
        Setting::Architecture => "--arch",
        Setting::ImageSize => "--image-size",
        Setting::Protocol => "--protocol",
        Setting::Precision => "--precision",
    }
}

/// An error as the CLI prints it: its causes joined with ": " (as `{:#}` does), and after an
/// engine error whose advice refers to settings, the flags that set them.
pub fn render(e: &anyhow::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|cause| {
            let text = cause.to_string();
            let flags: Vec<&str> = cause
                .downcast_ref::<irtdb_engine::Error>()
                .map(|e| e.settings().iter().map(|&s| flag(s)).collect())
                .unwrap_or_default();
            if flags.is_empty() {
                text
            } else {
                format!("{text} (see {})", flags.join(", "))
            }
        })
        .collect();
    parts.join(": ")
}

/// Prints `value` as one line of JSON on stdout. Serialising typed values (not
/// `serde_json::Value`) keeps f32s in their shortest form.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(|e| match e.io_error_kind() {
        Some(kind) => anyhow::Error::new(std::io::Error::from(kind)),
        None => e.into(),
    })?;
    writeln!(out)?;
    Ok(())
}
