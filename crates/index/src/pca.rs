//! PCA from descriptor dimension (typically 384) down to the index dimension (128).
//!
//! Why not just call linfa-reduction: its PCA runs a LOBPCG truncated SVD on the whole centred
//! `n × dim` matrix in f64, which takes seconds on 100k × 384. With `n ≫ dim` the same answer
//! comes from the `dim × dim` covariance: one blocked, parallel `XᵀX` over centred rows (f32
//! matrix products through `matrixmultiply`, each 512-row block's product accumulated in f64),
//! then a dense symmetric eigendecomposition of a 384 × 384 matrix, which is cheap. That is
//! [`Pca::fit`]. [`Pca::fit_linfa`] keeps the stock path as the reference the tests and the
//! benchmark compare against.
//!
//! Conventions shared by both fits, so that their outputs are interchangeable and reproducible:
//! components are unit rows sorted by explained variance (largest first), each with its sign
//! fixed so that its largest-magnitude entry is positive; variances use the `n - 1` denominator;
//! [`Pca::project`] centres, projects, optionally whitens (divides component `i` by
//! `sqrt(explained_variance[i])`) and L2-renormalises, because the index searches by inner
//! product on unit vectors.

use irtdb_core::l2_normalise;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{dist::dot, nd, Error, Result};

/// Rows per block of the covariance product: large enough for the matrix kernel to run near
/// peak, small enough that the f32 sum over a block loses nothing measurable before it is added
/// to the f64 total.
const COV_BLOCK_ROWS: usize = 512;
/// Rows per block in [`Pca::project_batch`].
const PROJECT_BLOCK_ROWS: usize = 256;

/// A fitted PCA. All fields are public so that the store can persist them as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pca {
    /// Input dimension (descriptor size).
    pub in_dim: usize,
    /// Output dimension (number of components).
    pub out_dim: usize,
    /// Whether [`Pca::project`] divides each component by its standard deviation.
    pub whiten: bool,
    /// Training mean, `in_dim` values.
    pub mean: Vec<f32>,
    /// Principal axes, row-major `out_dim × in_dim`, unit rows, largest variance first.
    pub components: Vec<f32>,
    /// Variance of the training data along each component (`n - 1` denominator).
    pub explained_variance: Vec<f32>,
    /// Total variance of the training data (trace of its covariance).
    pub total_variance: f64,
    /// Number of training samples.
    pub n_samples: usize,
}

impl Pca {
    /// Fits a PCA to `n` row-major vectors of `dim` values: covariance + symmetric eigensolver.
    ///
    /// Needs `n > out_dim` (else [`Error::TooFewSamples`]) and `1 <= out_dim <= dim`.
    pub fn fit(data: &[f32], n: usize, dim: usize, out_dim: usize, whiten: bool) -> Result<Pca> {
        check_fit_args(data, n, dim, out_dim)?;
        let mean = column_mean(data, n, dim);
        let mean32: Vec<f32> = mean.iter().map(|&m| m as f32).collect();

        // Σ_blocks (X_b - μ)ᵀ (X_b - μ), each block's product in f32, the running sum in f64.
        let scatter = data
            .par_chunks(COV_BLOCK_ROWS * dim)
            .fold(
                || (vec![0.0f64; dim * dim], Vec::<f32>::new(), vec![0.0f32; dim * dim]),
                |(mut acc, mut centred, mut block_gram), block| {
                    let rows = block.len() / dim;
                    centred.clear();
                    centred.extend(
                        block
                            .chunks_exact(dim)
                            .flat_map(|row| row.iter().zip(&mean32).map(|(x, m)| x - m)),
                    );
                    nd::gram(&centred, rows, dim, &mut block_gram);
                    acc.iter_mut().zip(&block_gram).for_each(|(a, g)| *a += *g as f64);
                    (acc, centred, block_gram)
                },
            )
            .map(|(acc, _, _)| acc)
            .reduce(
                || vec![0.0f64; dim * dim],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );

        let denom = (n - 1) as f64;
        let mut cov = vec![0.0f64; dim * dim];
        for i in 0..dim {
            for j in 0..dim {
                // Symmetrise exactly: the two triangles come from differently ordered sums.
                cov[i * dim + j] = 0.5 * (scatter[i * dim + j] + scatter[j * dim + i]) / denom;
            }
        }
        let total_variance: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
        let (values, vectors) = nd::eigh_desc(cov, dim)?;

        let mut components = Vec::with_capacity(out_dim * dim);
        for row in vectors.chunks_exact(dim).take(out_dim) {
            components.extend(signed_unit_row(row));
        }
        let explained_variance = values[..out_dim].iter().map(|&v| v.max(0.0) as f32).collect();
        Ok(Pca {
            in_dim: dim,
            out_dim,
            whiten,
            mean: mean32,
            components,
            explained_variance,
            total_variance,
            n_samples: n,
        })
    }

    /// Fits with the stock linfa-reduction PCA (LOBPCG truncated SVD of the centred data, f64).
    ///
    /// Same arguments, checks and output conventions as [`Pca::fit`]; kept as the reference and
    /// as the yardstick the benchmark compares the fast path against.
    pub fn fit_linfa(
        data: &[f32],
        n: usize,
        dim: usize,
        out_dim: usize,
        whiten: bool,
    ) -> Result<Pca> {
        check_fit_args(data, n, dim, out_dim)?;
        let fit = nd::linfa_pca(data, n, dim, out_dim)?;
        let denom = (n - 1) as f64;
        // linfa's own `explained_variance()` divides by the number of components rather than by
        // n - 1, so the variances are recomputed from the singular values here.
        let explained_variance =
            fit.singular_values.iter().map(|s| (s * s / denom) as f32).collect();
        let mut components = Vec::with_capacity(out_dim * dim);
        for row in fit.components.chunks_exact(dim) {
            components.extend(signed_unit_row(row));
        }
        let total_variance = total_variance(data, n, dim, &fit.mean);
        Ok(Pca {
            in_dim: dim,
            out_dim,
            whiten,
            mean: fit.mean.iter().map(|&m| m as f32).collect(),
            components,
            explained_variance,
            total_variance,
            n_samples: n,
        })
    }

    /// Centres, projects and (if `whiten`) whitens one vector, without renormalising.
    ///
    /// # Panics
    /// If `x.len() != self.in_dim`.
    pub fn project_raw(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.in_dim, "Pca::project: vector length != in_dim");
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        let mut y: Vec<f32> =
            self.components.chunks_exact(self.in_dim).map(|c| dot(c, &centred)).collect();
        self.whiten_in_place(&mut y);
        y
    }

    /// Centres, projects, (whitens) and L2-renormalises one vector: what goes into the index.
    ///
    /// A vector that projects to exactly zero stays zero rather than becoming NaN.
    ///
    /// # Panics
    /// If `x.len() != self.in_dim`.
    pub fn project(&self, x: &[f32]) -> Vec<f32> {
        let mut y = self.project_raw(x);
        l2_normalise(&mut y);
        y
    }

    /// [`Pca::project`] for `n` row-major vectors, in parallel blocks (matrix products rather
    /// than one dot product per component). Returns `n × out_dim` row-major values.
    ///
    /// # Panics
    /// If `data.len() != n * self.in_dim`.
    pub fn project_batch(&self, data: &[f32], n: usize) -> Vec<f32> {
        let (d, k) = (self.in_dim, self.out_dim);
        assert_eq!(data.len(), n * d, "Pca::project_batch: data length != n * in_dim");
        let mut out = vec![0.0f32; n * k];
        out.par_chunks_mut(PROJECT_BLOCK_ROWS * k)
            .zip(data.par_chunks(PROJECT_BLOCK_ROWS * d))
            .for_each(|(out_block, in_block)| {
                let rows = in_block.len() / d;
                let centred: Vec<f32> = in_block
                    .chunks_exact(d)
                    .flat_map(|row| row.iter().zip(&self.mean).map(|(v, m)| v - m))
                    .collect();
                nd::gemm_nt(&centred, rows, d, &self.components, k, out_block);
                for y in out_block.chunks_exact_mut(k) {
                    self.whiten_in_place(y);
                    l2_normalise(y);
                }
            });
        out
    }

    /// Fraction of the training data's variance the kept components explain (0 when the data
    /// had no variance).
    pub fn explained_ratio(&self) -> f64 {
        if self.total_variance <= 0.0 {
            return 0.0;
        }
        let kept: f64 = self.explained_variance.iter().map(|&v| v as f64).sum();
        (kept / self.total_variance).min(1.0)
    }

    fn whiten_in_place(&self, y: &mut [f32]) {
        if self.whiten {
            for (v, var) in y.iter_mut().zip(&self.explained_variance) {
                *v /= var.max(1e-12).sqrt();
            }
        }
    }
}

fn check_fit_args(data: &[f32], n: usize, dim: usize, out_dim: usize) -> Result<()> {
    if dim == 0 || out_dim == 0 || out_dim > dim {
        return Err(Error::InvalidArgument(format!(
            "PCA output dimension must be between 1 and the input dimension {dim}, got {out_dim}"
        )));
    }
    if data.len() != n * dim {
        return Err(Error::DimensionMismatch {
            what: "PCA training data (n × dim)",
            expected: n * dim,
            got: data.len(),
        });
    }
    if n <= out_dim {
        return Err(Error::TooFewSamples { n, needed: out_dim + 1 });
    }
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "PCA training data has a non-finite value in row {} (column {})",
            i / dim,
            i % dim
        )));
    }
    Ok(())
}

fn column_mean(data: &[f32], n: usize, dim: usize) -> Vec<f64> {
    let sums = data
        .par_chunks(COV_BLOCK_ROWS * dim)
        .map(|block| {
            let mut s = vec![0.0f64; dim];
            for row in block.chunks_exact(dim) {
                s.iter_mut().zip(row).for_each(|(a, &x)| *a += x as f64);
            }
            s
        })
        .reduce(
            || vec![0.0f64; dim],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    sums.into_iter().map(|s| s / n as f64).collect()
}

fn total_variance(data: &[f32], n: usize, dim: usize, mean: &[f64]) -> f64 {
    let ss: f64 = data
        .par_chunks(COV_BLOCK_ROWS * dim)
        .map(|block| {
            block
                .chunks_exact(dim)
                .map(|row| row.iter().zip(mean).map(|(&x, m)| (x as f64 - m).powi(2)).sum::<f64>())
                .sum::<f64>()
        })
        .sum();
    ss / (n - 1) as f64
}

/// Unit-normalises an axis and fixes its sign: the entry of largest magnitude (first one on a
/// tie) becomes positive. Eigen- and SVD solvers may return either sign; this makes the fit
/// reproducible across solvers, thread counts and versions.
fn signed_unit_row(row: &[f64]) -> impl Iterator<Item = f32> + '_ {
    let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut arg = 0;
    for (i, v) in row.iter().enumerate() {
        if v.abs() > row[arg].abs() {
            arg = i;
        }
    }
    let scale = if row[arg] < 0.0 { -1.0 } else { 1.0 } / if norm > 0.0 { norm } else { 1.0 };
    row.iter().map(move |v| (v * scale) as f32)
}
