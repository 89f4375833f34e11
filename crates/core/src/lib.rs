//! irtdb's shared vocabulary.
//!
//! Everything that more than one part of irtdb must agree on lives here, and nothing else: the
//! [`Backbone`], [`Pooling`], [`Loss`] and [`Trainer`] contracts, the preprocessing settings that
//! are stored with every model ([`Preprocess`]), the reference pooling and loss implementations
//! that define the semantics a plugin must reproduce, L2 normalisation, and [`absolute`] paths.
//!
//! This crate does no I/O (beyond [`absolute`] reading the current directory) and has no heavy
//! dependency, so that plugins can depend on it cheaply.

mod backbone;
mod error;
pub mod loss;
pub mod metrics;
mod pooling;
mod preprocess;
pub mod recipe;

pub use backbone::{Backbone, BackboneInfo, Features, InputInfo, OutputKind, StepStats, Trainer};
pub use error::{Error, Result};
pub use loss::{Contrastive, KoLeo, Loss};
pub use pooling::{l2_normalise, l2_normalise_rows, Pool, Pooling};
pub use preprocess::{AlphaBackground, Interpolation, Preprocess};

/// `path` made absolute against the current directory, lexically: nothing else is read, links
/// are not followed, and the path need not exist (unlike `canonicalize`). As given when the
/// current directory cannot be read. The one helper for paths that are stored or reported.
pub fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
