use ndarray::{Array2, ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::{Error, Features, Result};

/// Turns a backbone's features into one vector per image.
pub trait Pooling {
    /// Pools `features` to `[B, D]`. The result is not normalised; see [`l2_normalise_rows`].
    fn pool(&self, features: &Features) -> Result<Array2<f32>>;
}

/// The poolings of the paper (table 9): the CLS token, or mean / max / GeM over the patch tokens.
///
/// For the token poolings the leading `prefix` tokens (CLS, and DeiT's distillation token, or
/// register tokens) are excluded. For a distilled model (`prefix == 2`) `Cls` averages the CLS
/// and distillation tokens, as timm's `VisionTransformerDistilled` does at inference; with more
/// prefix tokens (a class token followed by registers, as an exported DINOv2 with registers
/// gives them) `Cls` is the first token. A model whose output is
/// already pooled `[B, D]` passes through unchanged for `Cls`, and is refused by the others.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Pool {
    #[default]
    Cls,
    Mean,
    Max,
    /// Generalised mean `(mean_i max(x_i, eps)^p)^(1/p)`, per dimension; `p = 3` in the paper.
    Gem {
        p: f32,
    },
}

impl Pool {
    /// The clamp applied before the power in GeM (as in Radenović et al.'s reference code).
    pub const GEM_EPS: f32 = 1e-6;

    /// Parses `cls`, `mean`, `max`, `gem` (p = 3) or `gem:P`.
    pub fn parse(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cls" => Ok(Pool::Cls),
            "mean" | "avg" => Ok(Pool::Mean),
            "max" => Ok(Pool::Max),
            "gem" => Ok(Pool::Gem { p: 3.0 }),
            other => match other.strip_prefix("gem:").map(str::parse::<f32>) {
                Some(Ok(p)) if p > 0.0 && p.is_finite() => Ok(Pool::Gem { p }),
                _ => Err(Error::Invalid(format!(
                    "unknown pooling '{s}': use cls, mean, max, gem or gem:P with P > 0"
                ))),
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Pool::Cls => "cls".into(),
            Pool::Mean => "mean".into(),
            Pool::Max => "max".into(),
            Pool::Gem { p } => format!("gem:{p}"),
        }
    }
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl Pooling for Pool {
    fn pool(&self, features: &Features) -> Result<Array2<f32>> {
        match features {
            Features::Tokens { tokens, prefix } => self.pool_tokens(tokens.view(), *prefix),
            Features::Pooled(p) => match self {
                Pool::Cls => Ok(p.clone()),
                other => Err(Error::NeedsTokens { pooling: other.name() }),
            },
        }
    }
}

impl Pool {
    /// Pools tokens `[B, prefix + M, D]` (see the type's docs).
    pub fn pool_tokens(
        &self,
        tokens: ndarray::ArrayView3<'_, f32>,
        prefix: usize,
    ) -> Result<Array2<f32>> {
        let (b, t, d) = tokens.dim();
        if prefix == 0 || t <= prefix {
            return Err(Error::Shape {
                what: "token pooling",
                expected: format!("[B, {prefix} prefix + M>0 patch tokens, D] with prefix >= 1"),
                got: vec![b, t, d],
            });
        }
        let mut out = Array2::<f32>::zeros((b, d));
        for (i, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
            let img = tokens.index_axis(Axis(0), i);
            let patches: ArrayView2<f32> = img.slice(ndarray::s![prefix.., ..]);
            let m = patches.nrows() as f32;
            match self {
                Pool::Cls => {
                    // prefix == 2: distilled DeiT, timm averages the CLS and distillation tokens;
                    // prefix > 2: CLS then registers.
                    let heads = if prefix == 2 { 2 } else { 1 };
                    let heads = img.slice(ndarray::s![..heads, ..]);
                    row.assign(&heads.mean_axis(Axis(0)).expect("non-empty"));
                }
                Pool::Mean => row.assign(&(patches.sum_axis(Axis(0)) / m)),
                Pool::Max => {
                    row.fill(f32::NEG_INFINITY);
                    for p in patches.rows() {
                        row.zip_mut_with(&p, |a, &x| *a = a.max(x));
                    }
                }
                Pool::Gem { p } => {
                    let p = *p;
                    row.fill(0.0);
                    for tok in patches.rows() {
                        row.zip_mut_with(&tok, |a, &x| *a += x.max(Self::GEM_EPS).powf(p));
                    }
                    row.mapv_inplace(|s| (s / m).powf(1.0 / p));
                }
            }
        }
        Ok(out)
    }
}

/// Scales `v` to unit L2 norm, in place, and returns the norm it had. A vector without a
/// direction (norm zero or not finite) is left as it is: whether that is an error is the
/// caller's to say — a model's output is ([`l2_normalise_rows`]), a PCA projection at the mean
/// is not (it stays zero, equally far from everything).
///
/// The one L2 normalisation of irtdb: the embedder, the index's PCA projection, evaluation and
/// analysis all call it, so a descriptor is scaled the same way wherever it is computed.
pub fn l2_normalise(v: &mut [f32]) -> f32 {
    // Eight running sums: the loop vectorises, and the result does not depend on the CPU.
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|x| x * x).sum();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] * c[i];
        }
    }
    let norm =
        ((acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail)
            .sqrt();
    if norm > 0.0 && norm.is_finite() {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

/// Scales each row to unit L2 norm, in place, with [`l2_normalise`]. A zero or non-finite row
/// is an error (it would poison every similarity it takes part in), reported with its index.
pub fn l2_normalise_rows(x: &mut Array2<f32>) -> Result<()> {
    for (i, mut row) in x.axis_iter_mut(Axis(0)).enumerate() {
        let norm = match row.as_slice_mut() {
            Some(r) => l2_normalise(r),
            None => {
                let mut r = row.to_vec();
                let norm = l2_normalise(&mut r);
                row.assign(&ndarray::ArrayView1::from(&r));
                norm
            }
        };
        if !norm.is_finite() || norm == 0.0 {
            return Err(Error::Invalid(format!(
                "descriptor {i} has norm {norm}: the model produced a zero or non-finite vector"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    // One image, CLS + 3 patch tokens, D = 2. Values chosen so every pooling differs.
    fn tokens() -> Array3<f32> {
        array![[[10.0, -10.0], [1.0, -2.0], [3.0, 0.5], [2.0, 4.0]]]
    }

    #[test]
    fn cls_takes_first_token() {
        let out = Pool::Cls.pool_tokens(tokens().view(), 1).unwrap();
        assert_eq!(out, array![[10.0, -10.0]]);
    }

    #[test]
    fn distilled_cls_averages_cls_and_dist() {
        let out = Pool::Cls.pool_tokens(tokens().view(), 2).unwrap();
        assert_eq!(out, array![[5.5, -6.0]]);
    }

    #[test]
    fn cls_with_registers_is_the_first_token() {
        let out = Pool::Cls.pool_tokens(tokens().view(), 3).unwrap();
        assert_eq!(out, array![[10.0, -10.0]]);
        let mean = Pool::Mean.pool_tokens(tokens().view(), 3).unwrap();
        assert_eq!(mean, array![[2.0, 4.0]], "registers are not patches");
    }

    #[test]
    fn mean_excludes_cls() {
        let out = Pool::Mean.pool_tokens(tokens().view(), 1).unwrap();
        assert_eq!(out, array![[2.0, 2.5 / 3.0]]);
    }

    #[test]
    fn max_excludes_cls() {
        let out = Pool::Max.pool_tokens(tokens().view(), 1).unwrap();
        assert_eq!(out, array![[3.0, 4.0]]);
    }

    #[test]
    fn gem_by_hand() {
        let out = Pool::Gem { p: 3.0 }.pool_tokens(tokens().view(), 1).unwrap();
        // dim 0: ((1 + 27 + 8) / 3)^(1/3) = 12^(1/3)
        // dim 1: clamp(-2) = 1e-6, so ((1e-18 + 0.125 + 64) / 3)^(1/3)
        let d0 = 12f32.powf(1.0 / 3.0);
        let d1 = ((1e-18f32 + 0.125 + 64.0) / 3.0).powf(1.0 / 3.0);
        assert!((out[[0, 0]] - d0).abs() < 1e-5, "{out:?}");
        assert!((out[[0, 1]] - d1).abs() < 1e-5, "{out:?}");
    }

    #[test]
    fn gem_p1_on_positive_is_mean() {
        let t = array![[[0.0, 0.0], [1.0, 2.0], [3.0, 4.0]]];
        let out = Pool::Gem { p: 1.0 }.pool_tokens(t.view(), 1).unwrap();
        assert!((out[[0, 0]] - 2.0).abs() < 1e-6 && (out[[0, 1]] - 3.0).abs() < 1e-6);
    }

    #[test]
    fn pooled_output_only_allows_cls() {
        let f = Features::Pooled(array![[1.0, 2.0]]);
        assert_eq!(Pool::Cls.pool(&f).unwrap(), array![[1.0, 2.0]]);
        let err = Pool::Mean.pool(&f).unwrap_err().to_string();
        assert!(err.contains("already pooled"), "{err}");
    }

    #[test]
    fn parse_round_trip() {
        for s in ["cls", "mean", "max", "gem", "gem:4.5"] {
            let p = Pool::parse(s).unwrap();
            assert_eq!(Pool::parse(&p.name()).unwrap(), p);
        }
        assert!(Pool::parse("median").unwrap_err().to_string().contains("use cls, mean"));
    }

    #[test]
    fn l2_normalises_and_rejects_zero() {
        let mut x = array![[3.0, 4.0], [0.0, 2.0]];
        l2_normalise_rows(&mut x).unwrap();
        assert_eq!(x, array![[0.6, 0.8], [0.0, 1.0]]);
        let mut z = array![[1.0, 0.0], [0.0, 0.0]];
        assert!(l2_normalise_rows(&mut z).unwrap_err().to_string().contains("descriptor 1"));
    }
}
