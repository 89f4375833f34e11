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
