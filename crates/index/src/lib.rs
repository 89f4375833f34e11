//! irtdb-index: the numerical core between descriptors and query results.
//!
//! - [`Pca`]: reduces descriptors (typically 384-d ViT features) to the index dimension (128),
//!   fitted from the covariance matrix and a symmetric eigensolver; the stock linfa-reduction fit
//!   is kept as [`Pca::fit_linfa`] for comparison.
//! - [`exact_search`]: blocked, parallel brute-force top-k by inner product; the ground truth for
//!   HNSW and the search path for small collections.
//! - [`HnswIndex`]: irtdb's own HNSW graph (flat link arrays, contiguous vectors, the AVX2+FMA
//!   [`dot`]), with tombstone deletes and incremental inserts, a durable save, and a load that
//!   checks every count and link before use and turns every bad file into an error naming it.
//!
//! Everything takes and returns plain row-major `f32` slices, so callers never see the ndarray
//! 0.16 that linfa needs (it is confined to one private module, `nd`). This crate does no SQL and
//! no image work; the engine owns those.

mod dist;
mod error;
mod exact;
mod hnsw;
mod nd;
mod pca;

pub use dist::{dot, dot_scalar, simd_available};
pub use error::{Error, Result};
pub use exact::exact_search;
pub use hnsw::{
    HnswIndex, HnswParams, IndexFiles, UpdatePlan, UpdateStats, COMPACT_FRACTION,
    INDEX_FORMAT_VERSION,
};
pub use pca::Pca;
