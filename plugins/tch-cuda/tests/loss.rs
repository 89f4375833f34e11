//! The tch losses against `irtdb_core::loss` (values) and against finite differences (gradients).

use irtdb_core::loss::{Contrastive, KoLeo, Loss};
use irtdb_plugin_tch_cuda::loss::{
    contrastive, contrastive_against_memory, koleo, koleo_nearest, value,
};
use ndarray::Array2;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

/// `n` random L2-normalised rows of width `d`, and labels in `0..classes`.
fn batch(n: usize, d: usize, classes: i64, seed: u64) -> (Array2<f32>, Vec<i64>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut z = Array2::from_shape_fn((n, d), |_| rng.random_range(-1.0f32..1.0));
    for mut row in z.rows_mut() {
        let norm = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / norm);
    }
    let labels = (0..n).map(|_| rng.random_range(0..classes)).collect();
    (z, labels)
}

fn tensor(z: &Array2<f32>) -> Tensor {
    let (n, d) = z.dim();
    Tensor::from_slice(z.as_slice().unwrap()).reshape([n as i64, d as i64])
}

fn close(got: f64, want: f32, what: &str) {
    let tol = 1e-5 * f64::from(want.abs()).max(1.0);
    assert!((got - f64::from(want)).abs() <= tol, "{what}: tch {got} vs core {want}");
}

#[test]
fn values_match_core() {
    for seed in 0..5 {
        let (z, y) = batch(24, 16, 5, seed);
        let (m, my) = batch(40, 16, 5, seed + 100);
        let (zt, yt) = (tensor(&z), Tensor::from_slice(&y));
        let (mt, myt) = (tensor(&m), Tensor::from_slice(&my));
        for beta in [0.0f32, 0.5, 0.8] {
            let c = Contrastive { beta };
            close(
                value(&contrastive(&zt, &yt, beta.into())),
                c.compute(z.view(), &y),
                "contrastive",
            );
            close(
                value(&contrastive_against_memory(&zt, &yt, &mt, &myt, beta.into())),
                c.against_memory(z.view(), &y, m.view(), &my),
                "memory",
            );
        }
        let k = KoLeo::default();
        let nn: Vec<i64> = Vec::try_from(koleo_nearest(&zt)).unwrap();
        let want_nn: Vec<i64> = KoLeo::nearest(z.view()).into_iter().map(|j| j as i64).collect();
        assert_eq!(nn, want_nn);
        close(value(&koleo(&zt, k.eps.into())), k.compute(z.view(), &y), "koleo");
    }
}

#[test]
fn degenerate_sizes() {
    let one = Tensor::from_slice(&[1.0f32, 0.0]).reshape([1, 2]);
    let y = Tensor::from_slice(&[3i64]);
    assert_eq!(value(&koleo(&one, 1e-8)), 0.0);
    assert_eq!(value(&contrastive(&one, &y, 0.5)), 0.0);
    // No memory yet: the memory term is zero.
    let empty = Tensor::zeros([0, 2], (Kind::Float, tch::Device::Cpu));
    let ey = Tensor::zeros([0], (Kind::Int64, tch::Device::Cpu));
    assert_eq!(value(&contrastive_against_memory(&one, &y, &empty, &ey, 0.5)), 0.0);
}

/// Analytic gradient of `f` at `z` (f64) against central differences.
fn check_gradient(z: &Tensor, f: &dyn Fn(&Tensor) -> Tensor, what: &str) {
    let x = z.to_kind(Kind::Double).detach().set_requires_grad(true);
    let loss = f(&x);
    loss.backward();
    let grad: Vec<f64> = Vec::try_from(x.grad().view(-1)).unwrap();
    let base: Vec<f64> = Vec::try_from(x.detach().view(-1)).unwrap();
    let shape = x.size();
    let h = 1e-6;
    for i in 0..base.len() {
        let at = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            value(&tch::no_grad(|| f(&Tensor::from_slice(&v).reshape(&shape))))
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - grad[i]).abs() < 1e-6 * numeric.abs().max(1.0),
            "{what}: d/dz[{i}] analytic {} vs numeric {numeric}",
            grad[i]
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    // Not normalised: the losses must be right as functions of z, whatever feeds them. Values
    // are chosen so no hinge sits at its kink (|s − β| is not tiny) and neighbours are unique.
    let (z, y) = batch(5, 3, 2, 7);
    let zt = tensor(&z) * 1.3;
    let yt = Tensor::from_slice(&y);
    let (m, my) = batch(6, 3, 2, 8);
    let (mt, myt) = (tensor(&m).to_kind(Kind::Double), Tensor::from_slice(&my));
    check_gradient(&zt, &|x| contrastive(x, &yt, 0.2), "contrastive");
    check_gradient(&zt, &|x| contrastive_against_memory(x, &yt, &mt, &myt, 0.2), "memory");
    check_gradient(&zt, &|x| koleo(x, 1e-8), "koleo");
    check_gradient(
        &zt,
        &|x| contrastive(x, &yt, 0.2) + koleo(x, 1e-8) * 0.1,
        "contrastive + 0.1·koleo",
    );
}

#[test]
fn memory_gets_no_gradient() {
    let (z, y) = batch(4, 3, 2, 9);
    let (m, my) = batch(5, 3, 2, 10);
    let zt = tensor(&z).set_requires_grad(true);
    let mt = tensor(&m).set_requires_grad(true);
    let l = contrastive_against_memory(
        &zt,
        &Tensor::from_slice(&y),
        &mt,
        &Tensor::from_slice(&my),
        0.0,
    );
    l.backward();
    assert!(zt.grad().defined());
    assert!(!mt.grad().defined(), "the memory is detached");
}
