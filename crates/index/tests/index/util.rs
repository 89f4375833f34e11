//! Seeded data generators shared by the tests (the recipes live with the benchmarks).

#[path = "../../benches/common/data.rs"]
mod data;

pub use data::{descriptor_like_split, isotropic, isotropic_split, normalise};
use rand::{rngs::StdRng, SeedableRng};

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` isotropic clustered unit vectors (the hard case; fine for exact-search tests).
pub fn clustered(seed: u64, n: usize, dim: usize, clusters: usize, spread: f32) -> Vec<f32> {
    isotropic(seed, n, dim, clusters, spread)
}

pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}
