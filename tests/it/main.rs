//! End-to-end tests of the `irtdb` binary: one integration test binary (as ripgrep does), one
//! module per area. Every test builds its own tiny models and images; nothing is downloaded.

mod collection;
mod dups;
mod embed;
mod eval;
mod hub;
mod hubstand;
mod model_cache;
mod onnx_wild;
mod photos;
mod plugins;
mod precision;
mod reliability;
mod scale;
mod serve;
mod train;
mod util;
