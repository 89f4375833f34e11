//! Differentiable twins of `irtdb_core::loss` (shared/PAPER.md, "Losses").
//!
//! Same formulas, same normalisation, on tensors: `z` is `[N, D]` L2-normalised embeddings,
//! labels are `[N]` int64. Every function works in the dtype of `z` (f32 for training, f64 in the
//! gradient tests). The tests hold them to the core reference on identical inputs.

use tch::{Kind, Tensor};

/// Contrastive loss with margin `beta`:
/// `(1/N) Σᵢ [ Σ_{j≠i, yⱼ=yᵢ} (1 − zᵢ·zⱼ) + Σ_{j: yⱼ≠yᵢ} max(0, zᵢ·zⱼ − β) ]`
/// (as `irtdb_core::loss::Contrastive::compute`).
pub fn contrastive(z: &Tensor, labels: &Tensor, beta: f64) -> Tensor {
    pairs(z, labels, z, labels, beta, true)
}

/// The cross-batch-memory term: anchors `z` against the memory `mem` (`[K, D]`, detached here,
/// so no gradient reaches it), every memory entry with the anchor's label a positive
/// (as `irtdb_core::loss::Contrastive::against_memory`).
pub fn contrastive_against_memory(
    z: &Tensor,
    labels: &Tensor,
    mem: &Tensor,
    mem_labels: &Tensor,
    beta: f64,
) -> Tensor {
    pairs(z, labels, &mem.detach(), mem_labels, beta, false)
}

fn pairs(z: &Tensor, zl: &Tensor, r: &Tensor, rl: &Tensor, beta: f64, skip_self: bool) -> Tensor {
    let n = z.size()[0];
    let kind = z.kind();
    if n == 0 || r.size()[0] == 0 {
        return Tensor::zeros(&[] as &[i64], (kind, z.device()));
    }
    let sim = z.matmul(&r.transpose(0, 1)); // [N, K]
    let same = zl.unsqueeze(1).eq_tensor(&rl.unsqueeze(0)); // [N, K] bool
    let mut pos = same.to_kind(kind);
    if skip_self {
        let k = r.size()[0];
        pos *= Tensor::eye_m(n, k, (kind, z.device())).neg() + 1.0;
    }
    let neg = same.logical_not().to_kind(kind);
    let per_pair = (sim.neg() + 1.0) * pos + (sim - beta).relu() * neg;
    per_pair.sum(kind) / n as f64
}

/// Index of each row's nearest other row by Euclidean distance (ties: the lowest index), found
/// without gradient (as `irtdb_core::loss::KoLeo::nearest`). `[N]` int64; needs N ≥ 2.
pub fn koleo_nearest(z: &Tensor) -> Tensor {
    tch::no_grad(|| {
        // Squared differences summed, not ‖a‖² + ‖b‖² − 2a·b: the same numbers as the reference,
        // so that near-ties pick the same neighbour.
        let d2 = (z.unsqueeze(1) - z.unsqueeze(0)).square().sum_dim_intlist(-1, false, z.kind());
        let mut d2 = d2;
        let _ = d2.fill_diagonal_(f64::INFINITY, false);
        // `argmin` returns the first minimal index.
        d2.argmin(1, false)
    })
}

/// KoLeo regulariser `−(1/N) Σᵢ log(ρᵢ + ε)`, `ρᵢ = min_{j≠i} ‖zᵢ − zⱼ‖`: the neighbour is
/// chosen without gradient, the gradient flows through the distance to it (to both ends)
/// (as `irtdb_core::loss::KoLeo::compute`). Zero for fewer than two rows.
///
/// Two identical rows give ρ = 0, whose gradient through the square root is infinite, exactly as
/// the formula says; the paper's ε only keeps the value finite.
pub fn koleo(z: &Tensor, eps: f64) -> Tensor {
    let n = z.size()[0];
    if n < 2 {
        return Tensor::zeros(&[] as &[i64], (z.kind(), z.device()));
    }
    let nn = koleo_nearest(z);
    let rho = (z - z.index_select(0, &nn)).square().sum_dim_intlist(-1, false, z.kind()).sqrt();
    (rho + eps).log().mean(z.kind()).neg()
}

/// Scalar value of a loss tensor as f64 (for logs and tests).
pub fn value(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).double_value(&[])
}
