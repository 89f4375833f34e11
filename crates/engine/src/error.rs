//! One error type for the engine.
//!
//! Every message names what it is about (a file, a folder, a collection, a setting) and ends
//! with what the user can do. The engine is a library: it never names a front end's flags.
//! Where its advice is "choose another value of this setting", the error carries the
//! [`Setting`]s it means, and the front end names them its own way (the CLI: `--db`, `--resume`,
//! …; see `src/main.rs`). Causes from the other crates keep their own (already specific)
//! messages; I/O causes are folded into the message, as irtdb-store does, so the advice stays
//! at the end of the line.

use std::path::{Path, PathBuf};

/// Result of every fallible job of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A choice the caller made (or left to its default) that an error refers to.
///
/// Not `non_exhaustive` on purpose: a front end's mapping must name every setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Setting {
    /// The collection database.
    Db,
    /// The model (weights file or hub reference).
    Model,
    /// The backend plugin.
    Plugin,
    /// A dataset or training-data folder.
    Data,
    /// The held-out classes' folder.
    ValData,
    /// The fraction of classes held out.
    ValFraction,
    /// A training run's output folder.
    Out,
    /// Continuing a training run instead of starting one.
    Resume,
    /// Images per batch.
    Batch,
    /// Images per class in a training batch.
    PerClass,
    /// The learning rate.
    Lr,
    /// Iterations between evaluations.
    EvalEvery,
    /// The train-time resize.
    TrainResize,
    /// The PCA dimension.
    Dim,
    /// Exporting raw descriptors instead of the indexed vectors.
    Raw,
    /// The shard of a folder an index run takes.
    Shard,
    /// A file naming the images to index.
    FilesFrom,
    /// Images per Parquet row group.
    RowGroup,
    /// The cosine above which two images are near-duplicates.
    Threshold,
    /// Histogram bins of an analysis.
    Bins,
    /// Pairs sampled by an analysis.
    MaxPairs,
    /// Options laid over a plugin's configuration.
    PluginConfig,
    /// A random model's architecture preset.
    Architecture,
    /// A random model's image size.
    ImageSize,
    /// An evaluation protocol.
    Protocol,
    /// The arithmetic of the forward (`fp32`, `int8`).
    Precision,
}

impl Setting {
    /// Every setting, for front ends that map them all.
    pub const ALL: [Setting; 26] = [
        Setting::Db,
        Setting::Model,
        Setting::Plugin,
        Setting::Data,
        Setting::ValData,
        Setting::ValFraction,
        Setting::Out,
        Setting::Resume,
        Setting::Batch,
        Setting::PerClass,
        Setting::Lr,
        Setting::EvalEvery,
        Setting::TrainResize,
        Setting::Dim,
        Setting::Raw,
        Setting::Shard,
        Setting::FilesFrom,
        Setting::RowGroup,
        Setting::Threshold,
        Setting::Bins,
        Setting::MaxPairs,
        Setting::PluginConfig,
        Setting::Architecture,
        Setting::ImageSize,
        Setting::Protocol,
        Setting::Precision,
    ];
}

/// What went wrong in a job of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] irtdb_store::Error),
    #[error(transparent)]
    Index(#[from] irtdb_index::Error),
    #[error(transparent)]
    Image(#[from] irtdb_image::Error),
    #[error(transparent)]
    Onnx(#[from] irtdb_onnx::Error),
    #[error(transparent)]
    Hub(#[from] irtdb_hub::Error),
    /// A backbone or pooling failure (shapes, values), from irtdb-core.
    #[error(transparent)]
    Backbone(#[from] irtdb_core::Error),
    #[error(transparent)]
    PluginLoad(#[from] irtdb_plugin_api::host::LoadError),
    #[error(transparent)]
    Plugin(#[from] irtdb_plugin_api::host::CallError),

    /// Reading or writing a file or folder failed.
    #[error("cannot {action} {}: {cause}", .path.display())]
    Io { action: &'static str, path: PathBuf, cause: std::io::Error },

    /// A backend failure while doing `what` (saving weights, a training step, …).
    #[error("{what}: {cause}")]
    Backend { what: String, cause: irtdb_core::Error },

    /// Writing an export failed (the partial file is removed).
    #[error("cannot write {}: {cause}", .path.display())]
    Export { path: PathBuf, cause: String },

    /// A file irtdb wrote (`run.json`, a model card) that does not parse.
    #[error("{} is damaged ({cause}); {advice}", .path.display())]
    Damaged { path: PathBuf, cause: String, advice: &'static str },

    /// Settings whose values cannot work (together); the message says why and what would.
    #[error("{message}")]
    Setting { settings: Vec<Setting>, message: String },

    /// Input files (a dataset as distributed, training images, a list) that are not what the
    /// job needs; the message names the file and ends with what to do.
    #[error("{message}")]
    Input { path: PathBuf, message: String },

    /// What is at `path` (a collection, a shard, a run folder) cannot do what was asked; the
    /// message ends with what to do, and `settings` are the choices that advice refers to.
    #[error("{message}")]
    Refused { path: PathBuf, message: String, settings: Vec<Setting> },

    /// An inconsistency irtdb itself should never produce.
    #[error("{what} (this is a bug in irtdb; please report it)")]
    Internal { what: String },
}

impl Error {
    /// [`Error::Io`] for `action` (`"read"`, `"write"`, …) on `path`.
    pub fn io<'a>(
        action: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'a {
        move |cause| Error::Io { action, path: path.to_path_buf(), cause }
    }

    /// [`Error::Backend`] while doing `what`.
    pub fn backend(what: String) -> impl FnOnce(irtdb_core::Error) -> Error {
        move |cause| Error::Backend { what, cause }
    }

    /// [`Error::Input`] about `path`.
    pub fn input(path: &Path, message: impl Into<String>) -> Error {
        Error::Input { path: path.to_path_buf(), message: message.into() }
    }

    /// [`Error::Refused`] about `path`, its advice referring to `settings`.
    pub fn refused(path: &Path, message: impl Into<String>, settings: &[Setting]) -> Error {
        Error::Refused {
            path: path.to_path_buf(),
            message: message.into(),
            settings: settings.to_vec(),
        }
    }

    /// [`Error::Setting`] about `settings`.
    pub fn setting(settings: &[Setting], message: impl Into<String>) -> Error {
        Error::Setting { settings: settings.to_vec(), message: message.into() }
    }

    /// The settings this error's advice refers to (empty for most).
    pub fn settings(&self) -> &[Setting] {
        match self {
            Error::Setting { settings, .. } | Error::Refused { settings, .. } => settings,
            _ => &[],
        }
    }
}
