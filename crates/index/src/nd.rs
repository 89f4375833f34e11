//! The only module that touches `ndarray`.
//!
//! linfa 0.8 and linfa-linalg are built on ndarray 0.16 while the rest of the workspace is on
//! 0.17. Rather than convert between the two versions' types, this crate's public API is plain
//! row-major `&[f32]` slices, and every use of ndarray 0.16 — matrix products through
//! `matrixmultiply` (pure Rust, runtime-dispatched AVX/FMA kernels), linfa-linalg's symmetric
//! eigendecomposition and the stock linfa-reduction PCA — is wrapped here behind slice-in,
//! `Vec`-out functions. Upgrading linfa (or dropping it) touches this file only.

use ndarray016::{linalg::general_mat_mul, Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::{Error, Result};

/// `c (m×n) = a (m×k) · b (n×k)ᵀ`, all row-major; `c` is overwritten.
pub(crate) fn gemm_nt(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, c: &mut [f32]) {
    let a = ArrayView2::from_shape((m, k), a).expect("gemm_nt: a has m*k values");
    let b = ArrayView2::from_shape((n, k), b).expect("gemm_nt: b has n*k values");
    let mut c = ArrayViewMut2::from_shape((m, n), c).expect("gemm_nt: c has m*n values");
    general_mat_mul(1.0, &a, &b.t(), 0.0, &mut c);
}

/// `out (dim×dim) = xᵀ · x` for a row-major `rows × dim` block; `out` is overwritten.
pub(crate) fn gram(x: &[f32], rows: usize, dim: usize, out: &mut [f32]) {
    let x = ArrayView2::from_shape((rows, dim), x).expect("gram: x has rows*dim values");
    let mut c = ArrayViewMut2::from_shape((dim, dim), out).expect("gram: out has dim*dim values");
    general_mat_mul(1.0, &x.t(), &x, 0.0, &mut c);
}

/// Symmetric eigendecomposition of a row-major `dim × dim` matrix (linfa-linalg, pure Rust:
/// Householder tridiagonalisation + implicit QR).
///
/// Returns `(eigenvalues, eigenvectors)` sorted by eigenvalue, largest first; eigenvector `i` is
/// row `i` of the second (row-major `dim × dim`).
pub(crate) fn eigh_desc(matrix: Vec<f64>, dim: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    use linfa_linalg::eigh::EighInto;
    let a = Array2::from_shape_vec((dim, dim), matrix).expect("eigh_desc: dim*dim values");
    let (vals, vecs) = a.eigh_into().map_err(|e| Error::Linalg {
        action: "diagonalising the covariance matrix",
        message: e.to_string(),
    })?;
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&i, &j| vals[j].total_cmp(&vals[i]).then(i.cmp(&j)));
    let values = order.iter().map(|&i| vals[i]).collect();
    let mut vectors = Vec::with_capacity(dim * dim);
    for &i in &order {
        vectors.extend(vecs.column(i).iter().copied());
    }
    Ok((values, vectors))
}

/// What the stock linfa-reduction PCA yields, in plain vectors.
pub(crate) struct LinfaPca {
    /// Per-feature mean (`dim`).
    pub mean: Vec<f64>,
    /// Unit principal axes, row-major `out_dim × dim`, largest singular value first.
    pub components: Vec<f64>,
    /// Singular values of the centred data (`out_dim`).
    pub singular_values: Vec<f64>,
}

/// The stock path: `linfa_reduction::Pca::params(out_dim).fit(..)` on an f64 copy of the data
/// (linfa-linalg's LOBPCG truncated SVD of the centred `n × dim` matrix). Whitening is not asked
/// of linfa; the caller applies it from the singular values, as for the fast path.
pub(crate) fn linfa_pca(data: &[f32], n: usize, dim: usize, out_dim: usize) -> Result<LinfaPca> {
    use linfa::traits::Fit;
    let records = Array2::from_shape_fn((n, dim), |(r, c)| data[r * dim + c] as f64);
    let dataset = linfa::DatasetBase::from(records);
    let model = linfa_reduction::Pca::params(out_dim).fit(&dataset).map_err(|e| Error::Linalg {
        action: "fitting PCA with linfa-reduction",
        message: e.to_string(),
    })?;
    let components = model.components();
    debug_assert_eq!(components.len_of(Axis(0)), out_dim);
    Ok(LinfaPca {
        mean: model.mean().to_vec(),
        components: components.iter().copied().collect(),
        singular_values: model.singular_values().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_nt_small() {
        // a = [[1,2],[3,4]], b = [[5,6],[7,8],[9,10]] → a·bᵀ = [[17,23,29],[39,53,67]]
        let mut c = vec![0.0; 6];
        gemm_nt(&[1., 2., 3., 4.], 2, 2, &[5., 6., 7., 8., 9., 10.], 3, &mut c);
        assert_eq!(c, vec![17., 23., 29., 39., 53., 67.]);
    }

    #[test]
    fn gram_small() {
        let mut c = vec![0.0; 4];
        gram(&[1., 2., 3., 4., 5., 6.], 3, 2, &mut c);
        assert_eq!(c, vec![35., 44., 44., 56.]);
    }

    #[test]
    fn eigh_sorted_descending() {
        let (vals, vecs) = eigh_desc(vec![2., 0., 0., 0., 5., 0., 0., 0., 3.], 3).unwrap();
        assert!((vals[0] - 5.).abs() < 1e-12 && (vals[1] - 3.).abs() < 1e-12);
        assert!((vecs[1].abs() - 1.).abs() < 1e-12, "first vector is e1: {vecs:?}");
    }
}
