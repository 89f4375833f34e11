//! PCA against an independent eigendecomposition (cyclic Jacobi in f64, written here) and
//! against the stock linfa-reduction fit.

use irtdb_index::{Error, Pca};
use rand_distr::{Distribution, StandardNormal};

use crate::util::{normalise, rng};

/// `n × dim` Gaussian data with distinct variances along a random orthonormal basis, plus an
/// offset mean, so that neither the axes nor the mean are trivial.
fn anisotropic(seed: u64, n: usize, dim: usize) -> Vec<f32> {
    let mut r = rng(seed);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    while basis.len() < dim {
        let mut v: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut r)).collect();
        for b in &basis {
            let p: f64 = v.iter().zip(b).map(|(x, y)| x * y).sum();
            v.iter_mut().zip(b).for_each(|(x, y)| *x -= p * y);
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        basis.push(v);
    }
    let scales: Vec<f64> = (0..dim).map(|j| 2.0 / (1.0 + j as f64).powf(0.8)).collect();
    let offset: Vec<f64> = (0..dim).map(|j| 0.3 + 0.01 * j as f64).collect();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let mut x = offset.clone();
        for (b, s) in basis.iter().zip(&scales) {
            let z: f64 = StandardNormal.sample(&mut r);
            x.iter_mut().zip(b).for_each(|(xi, bi)| *xi += s * z * bi);
        }
        out.extend(x.iter().map(|&v| v as f32));
    }
    out
}

/// Sample covariance (n - 1) in f64, computed naively.
fn covariance(data: &[f32], n: usize, dim: usize) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0f64; dim];
    for row in data.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0f64; dim * dim];
    for row in data.chunks_exact(dim) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(&x, m)| x as f64 - m).collect();
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] += c[i] * c[j];
            }
        }
    }
    cov.iter_mut().for_each(|v| *v /= (n - 1) as f64);
    (mean, cov)
}

/// Cyclic Jacobi eigenvalue algorithm: returns (eigenvalues, eigenvectors as rows), sorted by
/// eigenvalue descending.
fn jacobi(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut v = vec![0.0f64; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    for _sweep in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * d + j].powi(2))
            .sum();
        if off < 1e-26 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * d + q] - a[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let akp = a[k * d + p];
                    let akq = a[k * d + q];
                    a[k * d + p] = c * akp - s * akq;
                    a[k * d + q] = s * akp + c * akq;
                }
                for k in 0..d {
                    let apk = a[p * d + k];
                    let aqk = a[q * d + k];
                    a[p * d + k] = c * apk - s * aqk;
                    a[q * d + k] = s * apk + c * aqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| a[j * d + j].total_cmp(&a[i * d + i]));
    let vals = order.iter().map(|&i| a[i * d + i]).collect();
    let vecs = order.iter().map(|&i| (0..d).map(|k| v[k * d + i]).collect()).collect();
    (vals, vecs)
}

fn abs_cos(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    (dot / (na * nb)).abs()
}

#[test]
fn fast_fit_matches_independent_jacobi() {
    let (n, dim, k) = (3000, 40, 16);
    let data = anisotropic(10, n, dim);
    let pca = Pca::fit(&data, n, dim, k, false).unwrap();
    let (mean, cov) = covariance(&data, n, dim);
    let (vals, vecs) = jacobi(cov.clone(), dim);

    assert_eq!((pca.in_dim, pca.out_dim, pca.n_samples), (dim, k, n));
    for (m, want) in pca.mean.iter().zip(&mean) {
        assert!((*m as f64 - want).abs() < 1e-5);
    }
    for i in 0..k {
        let c = &pca.components[i * dim..][..dim];
        let cos = abs_cos(c, &vecs[i]);
        assert!(cos > 0.9999, "component {i}: |cos| = {cos}");
        let rel = (pca.explained_variance[i] as f64 - vals[i]).abs() / vals[i];
        assert!(rel < 1e-4, "eigenvalue {i}: {} vs {}", pca.explained_variance[i], vals[i]);
        // Unit norm and the documented sign convention.
        let norm: f32 = c.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let big = c.iter().copied().max_by(|a, b| a.abs().total_cmp(&b.abs())).unwrap();
        assert!(big > 0.0, "component {i}: largest entry must be positive");
    }
    let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
    assert!((pca.total_variance - trace).abs() / trace < 1e-6);
    let ratio: f64 = vals[..k].iter().sum::<f64>() / trace;
    assert!((pca.explained_ratio() - ratio).abs() < 1e-5);
}

#[test]
fn fast_fit_matches_linfa() {
    let (n, dim, k) = (2000, 64, 12);
    let data = anisotropic(11, n, dim);
    let fast = Pca::fit(&data, n, dim, k, false).unwrap();
    let stock = Pca::fit_linfa(&data, n, dim, k, false).unwrap();
    for i in 0..k {
        let a = &fast.components[i * dim..][..dim];
        let b: Vec<f64> = stock.components[i * dim..][..dim].iter().map(|&x| x as f64).collect();
        let cos = abs_cos(a, &b);
        assert!(cos > 0.9999, "component {i}: |cos| = {cos}");
        // Same sign convention on both paths: the components agree, not just up to sign.
        let dot: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * y).sum();
        assert!(dot > 0.9999, "component {i}: signs differ");
        let (va, vb) = (fast.explained_variance[i], stock.explained_variance[i]);
        assert!(((va - vb) / vb).abs() < 1e-3, "variance {i}: {va} vs {vb}");
    }
    assert!((fast.total_variance - stock.total_variance).abs() / stock.total_variance < 1e-6);
    for (a, b) in fast.mean.iter().zip(&stock.mean) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn mean_projects_to_zero_and_project_normalises() {
    let (n, dim, k) = (500, 24, 8);
    let data = anisotropic(12, n, dim);
    let pca = Pca::fit(&data, n, dim, k, false).unwrap();
    let raw = pca.project_raw(&pca.mean);
    assert!(raw.iter().all(|v| v.abs() < 1e-5), "{raw:?}");
    // A zero projection stays zero (no NaN) after renormalisation.
    assert!(pca.project(&pca.mean).iter().all(|v| *v == 0.0));
    let y = pca.project(&data[..dim]);
    let norm: f32 = y.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
    let mut raw = pca.project_raw(&data[..dim]);
    normalise(&mut raw);
    assert!(raw.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-6));
}

#[test]
fn whitening_gives_unit_variance_on_training_data() {
    let (n, dim, k) = (3000, 32, 10);
    let data = anisotropic(13, n, dim);
    let pca = Pca::fit(&data, n, dim, k, true).unwrap();
    let proj: Vec<Vec<f32>> = data.chunks_exact(dim).map(|x| pca.project_raw(x)).collect();
    for i in 0..k {
        let mean: f64 = proj.iter().map(|y| y[i] as f64).sum::<f64>() / n as f64;
        let var: f64 =
            proj.iter().map(|y| (y[i] as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(mean.abs() < 1e-4, "component {i} mean {mean}");
        assert!((var - 1.0).abs() < 1e-3, "component {i} variance {var}");
        for j in 0..i {
            let cov: f64 =
                proj.iter().map(|y| y[i] as f64 * y[j] as f64).sum::<f64>() / (n - 1) as f64;
            assert!(cov.abs() < 1e-3, "components {i},{j} covariance {cov}");
        }
    }
}

#[test]
fn project_batch_equals_project() {
    let (n, dim, k) = (700, 48, 16);
    let data = anisotropic(14, n, dim);
    for whiten in [false, true] {
        let pca = Pca::fit(&data, n, dim, k, whiten).unwrap();
        let batch = pca.project_batch(&data, n);
        assert_eq!(batch.len(), n * k);
        for (x, yb) in data.chunks_exact(dim).zip(batch.chunks_exact(k)) {
            let y = pca.project(x);
            assert!(y.iter().zip(yb).all(|(a, b)| (a - b).abs() < 1e-5), "whiten {whiten}");
        }
    }
}

#[test]
fn too_few_samples_is_a_clear_error() {
    let data = vec![0.5f32; 57 * 384];
    for fit in [Pca::fit, Pca::fit_linfa] {
        let err = fit(&data, 57, 384, 128, false).unwrap_err();
        assert!(matches!(err, Error::TooFewSamples { n: 57, needed: 129 }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "PCA to 128 dimensions needs more than 128 images, the collection has 57; \
             index more images or pass --dim 0"
        );
    }
    // n == out_dim is still too few; n == out_dim + 1 is enough.
    let data = anisotropic(15, 9, 12);
    assert!(matches!(Pca::fit(&data[..8 * 12], 8, 12, 8, false), Err(Error::TooFewSamples { .. })));
    assert!(Pca::fit(&data, 9, 12, 8, false).is_ok());
}

#[test]
fn bad_arguments_are_errors() {
    let data = anisotropic(16, 50, 10);
    assert!(Pca::fit(&data, 50, 10, 11, false).is_err());
    assert!(Pca::fit(&data, 50, 10, 0, false).is_err());
    assert!(Pca::fit(&data[1..], 50, 10, 4, false).is_err());
    let mut nan = data.clone();
    nan[37] = f32::NAN;
    let err = Pca::fit(&nan, 50, 10, 4, false).unwrap_err().to_string();
    assert!(err.contains("row 3"), "{err}");
}

#[test]
fn serde_round_trip() {
    let data = anisotropic(17, 100, 10);
    let pca = Pca::fit(&data, 100, 10, 4, true).unwrap();
    let json = serde_json::to_string(&pca).unwrap();
    assert_eq!(serde_json::from_str::<Pca>(&json).unwrap(), pca);
}
