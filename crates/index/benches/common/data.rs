//! Seeded synthetic data shared by the tests (`tests/index/util.rs`), the criterion bench and
//! the report example, included with `#[path]` so that every consumer builds exactly the same
//! vectors from the same seed (and the Python peer reads them from the `.npy` the report writes).
//!
//! Two recipes:
//! - [`descriptor_like`]: unit vectors around cluster centres, each cluster spreading along a few
//!   (`rank`) directions of its own with decaying variance plus a little isotropic noise. Real
//!   ViT descriptors after PCA look like this: low intrinsic dimension, clustered by object.
//! - [`isotropic`]: clusters with full-rank Gaussian noise. Neighbours are then nearly
//!   equidistant in 128 dimensions, the worst case for any graph index; reported for honesty.

#![allow(dead_code)]

use rand::{rngs::StdRng, Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn unit_vectors(r: &mut StdRng, count: usize, dim: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; count * dim];
    for v in out.chunks_exact_mut(dim) {
        v.iter_mut().for_each(|x| *x = StandardNormal.sample(r));
        normalise(v);
    }
    out
}

/// `n` descriptor-like unit vectors (see the module docs). `clusters` centres; each point is
/// `centre + Σ_j a_j·b_j + noise`, with `rank` unit directions `b_j` per cluster,
/// `a_j ~ N(0, 0.25/(1+j))` and per-coordinate noise `N(0, 0.02²)`, then L2-normalised.
pub fn descriptor_like(seed: u64, n: usize, dim: usize, clusters: usize, rank: usize) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    let centres = unit_vectors(&mut r, clusters, dim);
    let dirs = unit_vectors(&mut r, clusters * rank, dim);
    let scales: Vec<f32> = (0..rank).map(|j| 0.5 / (1.0 + j as f32).sqrt()).collect();
    let mut out = vec![0.0f32; n * dim];
    for v in out.chunks_exact_mut(dim) {
        let c = r.random_range(0..clusters);
        v.copy_from_slice(&centres[c * dim..][..dim]);
        for (j, s) in scales.iter().enumerate() {
            let z: f32 = StandardNormal.sample(&mut r);
            let a = s * z;
            let d = &dirs[(c * rank + j) * dim..][..dim];
            v.iter_mut().zip(d).for_each(|(x, y)| *x += a * y);
        }
        for x in v.iter_mut() {
            let z: f32 = StandardNormal.sample(&mut r);
            *x += 0.02 * z;
        }
        normalise(v);
    }
    out
}

/// Database and queries from one distribution: `descriptor_like` with `n + nq` points, split.
pub fn descriptor_like_split(
    seed: u64,
    n: usize,
    nq: usize,
    dim: usize,
    clusters: usize,
    rank: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut all = descriptor_like(seed, n + nq, dim, clusters, rank);
    let queries = all.split_off(n * dim);
    (all, queries)
}

/// `n` unit vectors around `clusters` random unit centres with isotropic noise `spread` per
/// coordinate (0.1 at 128-d gives within-cluster cosines around 0.45).
pub fn isotropic(seed: u64, n: usize, dim: usize, clusters: usize, spread: f32) -> Vec<f32> {
    let mut r = StdRng::seed_from_u64(seed);
    let centres = unit_vectors(&mut r, clusters, dim);
    let mut out = vec![0.0f32; n * dim];
    for v in out.chunks_exact_mut(dim) {
        let c = &centres[r.random_range(0..clusters) * dim..][..dim];
        for (x, m) in v.iter_mut().zip(c) {
            let z: f32 = StandardNormal.sample(&mut r);
            *x = m + spread * z;
        }
        normalise(v);
    }
    out
}

/// Like [`isotropic`], `n + nq` points split into database and queries.
pub fn isotropic_split(
    seed: u64,
    n: usize,
    nq: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
) -> (Vec<f32>, Vec<f32>) {
    let mut all = isotropic(seed, n + nq, dim, clusters, spread);
    let queries = all.split_off(n * dim);
    (all, queries)
}
