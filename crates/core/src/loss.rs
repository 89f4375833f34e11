//! Reference forward of the paper's losses (shared/PAPER.md, "Losses").
//!
//! These define the semantics. A training backend implements differentiable twins and is tested
//! against these on identical inputs. Inputs are L2-normalised embeddings `[N, D]`, so dot
//! products are cosine similarities.

use ndarray::{ArrayView2, Axis};

/// A loss over a batch of L2-normalised embeddings and their labels.
pub trait Loss {
    fn compute(&self, z: ArrayView2<'_, f32>, labels: &[i64]) -> f32;
}

/// Contrastive loss with margin β (paper default 0.5):
///
/// `L = (1/N) Σᵢ [ Σ_{j≠i, yⱼ=yᵢ} (1 − zᵢ·zⱼ) + Σ_{j: yⱼ≠yᵢ} max(0, zᵢ·zⱼ − β) ]`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Contrastive {
    pub beta: f32,
}

impl Default for Contrastive {
    fn default() -> Self {
        Self { beta: crate::recipe::BETA as f32 }
    }
}

impl Contrastive {
    /// Sum over anchors `z` against references `r` (divided by the number of anchors). When
    /// `skip_self` the pair (i, i) is excluded, as when the references are the batch itself.
    fn pairs(
        &self,
        z: ArrayView2<'_, f32>,
        zl: &[i64],
        r: ArrayView2<'_, f32>,
        rl: &[i64],
        skip_self: bool,
    ) -> f32 {
        let sim = z.dot(&r.t());
        let mut total = 0.0f64;
        for (i, row) in sim.axis_iter(Axis(0)).enumerate() {
            for (j, &s) in row.iter().enumerate() {
                if skip_self && i == j {
                    continue;
                }
                total +=
                    if zl[i] == rl[j] { (1.0 - s) as f64 } else { (s - self.beta).max(0.0) as f64 };
            }
        }
        (total / z.nrows().max(1) as f64) as f32
    }

    /// The cross-batch-memory term: anchors of the batch against the (detached) memory.
    /// Every memory entry with the anchor's label is a positive.
    pub fn against_memory(
        &self,
        z: ArrayView2<'_, f32>,
        labels: &[i64],
        mem: ArrayView2<'_, f32>,
        mem_labels: &[i64],
    ) -> f32 {
        self.pairs(z, labels, mem, mem_labels, false)
    }
}

impl Loss for Contrastive {
    fn compute(&self, z: ArrayView2<'_, f32>, labels: &[i64]) -> f32 {
        self.pairs(z, labels, z, labels, true)
    }
}

/// KoLeo differential-entropy regulariser (Sablayrolles et al. 2019), over the batch:
///
/// `ρᵢ = min_{j≠i} ‖zᵢ − zⱼ‖`, `L = −(1/N) Σᵢ log(ρᵢ + ε)`
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KoLeo {
    pub eps: f32,
}

impl Default for KoLeo {
    fn default() -> Self {
        Self { eps: 1e-8 }
    }
}

impl KoLeo {
    /// Index of each row's nearest other row (ties: the lowest index).
    pub fn nearest(z: ArrayView2<'_, f32>) -> Vec<usize> {
        let n = z.nrows();
        (0..n)
            .map(|i| {
                let mut best = (f32::INFINITY, usize::MAX);
                for j in (0..n).filter(|&j| j != i) {
                    let d: f32 =
                        z.row(i).iter().zip(z.row(j)).map(|(a, b)| (a - b) * (a - b)).sum();
                    if d < best.0 {
                        best = (d, j);
                    }
                }
                best.1
            })
            .collect()
    }
}

impl Loss for KoLeo {
    fn compute(&self, z: ArrayView2<'_, f32>, _labels: &[i64]) -> f32 {
        let n = z.nrows();
        if n < 2 {
            return 0.0;
        }
        let nn = Self::nearest(z);
        let total: f64 = nn
            .iter()
            .enumerate()
            .map(|(i, &j)| {
                let d: f32 = z
                    .row(i)
                    .iter()
                    .zip(z.row(j))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                -((d + self.eps) as f64).ln()
            })
            .sum();
        (total / n as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn contrastive_by_hand() {
        // Three unit vectors; 0 and 1 share a label.
        let z = array![[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]];
        let y = [7, 7, 3];
        // sims: s01 = 0.6, s02 = 0.0, s12 = 0.8
        // i=0: pos (1-0.6)=0.4, neg max(0, 0-0.5)=0     -> 0.4
        // i=1: pos 0.4, neg max(0, 0.8-0.5)=0.3         -> 0.7
        // i=2: neg s20=0 -> 0, neg s21 0.3              -> 0.3
        let l = Contrastive::default().compute(z.view(), &y);
        assert!((l - 1.4 / 3.0).abs() < 1e-6, "{l}");
    }

    #[test]
    fn memory_term_counts_every_same_label_entry() {
        let z = array![[1.0, 0.0]];
        let mem = array![[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]];
        // pos with mem 0: 1-1 = 0; neg mem 1: max(0, 0-0.5)=0; neg mem 2: 0.8-0.5 = 0.3
        let l = Contrastive::default().against_memory(z.view(), &[1], mem.view(), &[1, 2, 3]);
        assert!((l - 0.3).abs() < 1e-6, "{l}");
    }

    #[test]
    fn koleo_by_hand() {
        let z = array![[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]];
        // distances: d01 = sqrt(0.16+0.64)=sqrt(0.8); d12 = sqrt(0.36+0.04)=sqrt(0.4); d02 = sqrt2
        // nn: 0->1 (sqrt .8), 1->2 (sqrt .4), 2->1 (sqrt .4)
        let expect = -((0.8f64.sqrt()).ln() + 2.0 * (0.4f64.sqrt()).ln()) / 3.0;
        let l = KoLeo { eps: 0.0 }.compute(z.view(), &[0, 0, 0]);
        assert!((l as f64 - expect).abs() < 1e-6, "{l} vs {expect}");
        assert_eq!(KoLeo::nearest(z.view()), vec![1, 2, 1]);
    }
}
