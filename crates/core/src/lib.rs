//! irtdb's shared vocabulary.
//!
//! Everything that more than one part of irtdb must agree on lives here, and nothing else: the
//! [`Backbone`], [`Pooling`], [`Loss`] and [`Trainer`] contracts, the preprocessing settings that
//! are stored with every model ([`Preprocess`]), the reference pooling and loss implementations
//! that define the semantics a plugin must reproduce, and L2 normalisation.
//!
//! This crate does no I/O and has no heavy dependency, so that plugins can depend on it cheaply.

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
pub use pooling::{l2_normalize_rows, Pool, Pooling};
pub use preprocess::{AlphaBackground, Interpolation, Preprocess};
