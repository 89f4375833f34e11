//! Integration tests of irtdb-index, one binary (ripgrep's `tests/tests.rs` layout).

mod compat;
mod exact;
mod hnsw;
mod pca;
mod util;
