//! irtdb's jobs, one module each, used by the CLI: the CLI parses arguments and prints, this
//! crate does the work by composing the library crates (plugins through `irtdb-plugin-api`'s
//! host, images through `irtdb-image`, storage through `irtdb-store`, search through
//! `irtdb-index`). It holds no SQL and no FFI.

pub mod analyze;
pub mod collection;
pub mod dups;
pub mod durable;
pub mod embed;
pub mod error;
pub mod eval;
pub mod export;
pub mod html;
pub mod index;
pub mod info;
pub mod lossy;
pub mod merge;
pub mod model;
pub mod query;
pub mod service;
pub mod train;

pub use embed::{embed_files, EmbedOutcome, Embedder};
pub use error::{Error, Result, Setting};
pub use model::{ModelSpec, DEFAULT_PLUGIN};
