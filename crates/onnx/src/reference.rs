//! An independent plain-Rust forward of the ViT, the yardstick for the ONNX graph.
//!
//! Why this module exists: a graph that runs is not a graph that is right. This forward is
//! written straight from the maths of timm's `VisionTransformer.forward_features`, with plain
//! loops over plain slices and no shared code with [`crate::build_vit_onnx`], so that agreement
//! between the two (run through ONNX Runtime) is evidence that both are right. Dot products and
//! LayerNorm statistics accumulate in f64; speed is not a goal.

use crate::VitWeights;

/// Runs the ViT on `images` (`[batch, 3, H, W]`, row-major, already normalised) and returns
/// the output tokens after the final norm (none for an `fc_norm` model), register tokens left
/// out: `[batch, prefix + M, D]` row-major (`config.output_tokens()` tokens).
///
/// # Panics
/// If `images.len()` is not `batch · 3 · H · W` for the configured image size. (`w` itself is
/// known to be complete: [`VitWeights`] checks its tensors when it is made.)
pub fn forward(w: &VitWeights, images: &[f32], batch: usize) -> Vec<f32> {
    let c = &w.config;
    let [ih, iw] = c.img_size;
    assert_eq!(images.len(), batch * 3 * ih * iw, "images must be [batch, 3, {ih}, {iw}]");
    let (d, t) = (c.dim, c.output_tokens());
    let mut out = Vec::with_capacity(batch * t * d);
    for b in 0..batch {
        let image = &images[b * 3 * ih * iw..(b + 1) * 3 * ih * iw];
        let mut x = embed(w, image);
        for i in 0..c.depth {
            block(w, &mut x, i);
        }
        if !c.fc_norm {
            for token in x.iter_mut() {
                *token = layer_norm(token, get(w, "norm.weight"), get(w, "norm.bias"), c.ln_eps);
            }
        }
        // Sequence [cls, (dist), reg × R, patches]: the registers stay inside the network.
        let registers = c.prefix_tokens..c.num_prefix();
        for (j, token) in x.into_iter().enumerate() {
            if !registers.contains(&j) {
                out.extend(token);
            }
        }
    }
    out
}

/// The model's own descriptor ([`crate::GraphOutput::Pooled`]) from `forward`'s tokens: the
/// class token; for a distilled model (2 prefix tokens) the mean of class and distillation
/// tokens; for an `fc_norm` model `fc_norm(mean of the patch tokens)` (timm's `global_pool='avg'`).
pub fn pool(w: &VitWeights, tokens: &[f32], batch: usize) -> Vec<f32> {
    let c = &w.config;
    let (d, t) = (c.dim, c.output_tokens());
    let mut out = Vec::with_capacity(batch * d);
    for b in 0..batch {
        let token = |j: usize| &tokens[(b * t + j) * d..(b * t + j + 1) * d];
        if c.fc_norm {
            let mut mean = vec![0f64; d];
            for j in c.prefix_tokens..t {
                for (m, v) in mean.iter_mut().zip(token(j)) {
                    *m += f64::from(*v);
                }
            }
            let m = (t - c.prefix_tokens) as f64;
            let mean: Vec<f32> = mean.into_iter().map(|s| (s / m) as f32).collect();
            out.extend(layer_norm(
                &mean,
                get(w, "fc_norm.weight"),
                get(w, "fc_norm.bias"),
                c.ln_eps,
            ));
        } else if c.prefix_tokens == 2 {
            out.extend(token(0).iter().zip(token(1)).map(|(a, b)| (a + b) / 2.0));
        } else {
            out.extend_from_slice(token(0));
        }
    }
    out
}

/// Patch embedding, prefix tokens and position embedding: `T` tokens of width `D`.
fn embed(w: &VitWeights, image: &[f32]) -> Vec<Vec<f32>> {
    let c = &w.config;
    let (d, p) = (c.dim, c.patch);
    let [ih, iw] = c.img_size;
    let [gh, gw] = c.grid();
    let kernel = get(w, "patch_embed.proj.weight"); // [D, 3, P, P]
    let bias = get(w, "patch_embed.proj.bias");
    let mut tokens = vec![get(w, "cls_token").to_vec()];
    if c.prefix_tokens == 2 {
        tokens.push(get(w, "dist_token").to_vec());
    }
    if c.reg_tokens > 0 {
        tokens.extend(get(w, "reg_token").chunks(d).map(<[f32]>::to_vec));
    }
    // Patch (gy, gx) becomes token prefix + gy·gw + gx (row-major over the grid).
    for gy in 0..gh {
        for gx in 0..gw {
            let mut token = vec![0.0; d];
            for (o, value) in token.iter_mut().enumerate() {
                let mut acc = f64::from(bias[o]);
                for ch in 0..3 {
                    for ky in 0..p {
                        for kx in 0..p {
                            let pixel = image[ch * ih * iw + (gy * p + ky) * iw + gx * p + kx];
                            let weight = kernel[((o * 3 + ch) * p + ky) * p + kx];
                            acc += f64::from(pixel) * f64::from(weight);
                        }
                    }
                }
                *value = acc as f32;
            }
            tokens.push(token);
        }
    }
    let pos = get(w, "pos_embed"); // [1, T, D], zero rows for the prefix if no_embed_class
    for (j, token) in tokens.iter_mut().enumerate() {
        for (k, value) in token.iter_mut().enumerate() {
            *value += pos[j * d + k];
        }
    }
    tokens
}

/// One pre-norm transformer block, in place: `x += ls1·attn(norm1(x)); x += ls2·mlp(norm2(x))`.
fn block(w: &VitWeights, x: &mut [Vec<f32>], i: usize) {
    let c = &w.config;
    let (d, heads, hd) = (c.dim, c.heads, c.head_dim());
    let name = |suffix: &str| format!("blocks.{i}.{suffix}");
    let ones = vec![1.0; d];

    // Attention. qkv row o < D is q, D..2D is k, 2D..3D is v; head h owns [h·hd, (h+1)·hd).
    let qkv: Vec<Vec<f32>> = x
        .iter()
        .map(|token| {
            let h = layer_norm(
                token,
                get(w, &name("norm1.weight")),
                get(w, &name("norm1.bias")),
                c.ln_eps,
            );
            let bias = c.qkv_bias.then(|| get(w, &name("attn.qkv.bias")));
            linear(&h, get(w, &name("attn.qkv.weight")), bias, 3 * d)
        })
        .collect();
    let scale = 1.0 / (hd as f64).sqrt();
    let mut merged = vec![vec![0.0f32; d]; x.len()];
    for h in 0..heads {
        for (qi, out) in merged.iter_mut().enumerate() {
            let q = &qkv[qi][h * hd..(h + 1) * hd];
            let logits: Vec<f64> = qkv
                .iter()
                .map(|row| {
                    let k = &row[d + h * hd..d + (h + 1) * hd];
                    dot(q, k) * scale
                })
                .collect();
            let probs = softmax(&logits);
            for (e, value) in out[h * hd..(h + 1) * hd].iter_mut().enumerate() {
                let acc: f64 = probs
                    .iter()
                    .zip(&qkv)
                    .map(|(p, row)| p * f64::from(row[2 * d + h * hd + e]))
                    .sum();
                *value = acc as f32;
            }
        }
    }
    let gamma1 = if c.layer_scale { get(w, &name("ls1.gamma")) } else { &ones };
    for (token, ctx) in x.iter_mut().zip(&merged) {
        let y = linear(
            ctx,
            get(w, &name("attn.proj.weight")),
            Some(get(w, &name("attn.proj.bias"))),
            d,
        );
        for k in 0..d {
            token[k] += gamma1[k] * y[k];
        }
    }

    // MLP with exact GELU.
    let gamma2 = if c.layer_scale { get(w, &name("ls2.gamma")) } else { &ones };
    for token in x.iter_mut() {
        let h =
            layer_norm(token, get(w, &name("norm2.weight")), get(w, &name("norm2.bias")), c.ln_eps);
        let fc1 = get(w, &name("mlp.fc1.weight"));
        let h = linear(&h, fc1, Some(get(w, &name("mlp.fc1.bias"))), c.mlp_hidden);
        let h: Vec<f32> = h.iter().map(|&v| gelu(v)).collect();
        let y = linear(&h, get(w, &name("mlp.fc2.weight")), Some(get(w, &name("mlp.fc2.bias"))), d);
        for k in 0..d {
            token[k] += gamma2[k] * y[k];
        }
    }
}

/// `y = W x + b` for a timm `nn.Linear` weight `[out, in]`, row-major.
fn linear(x: &[f32], weight: &[f32], bias: Option<&[f32]>, out: usize) -> Vec<f32> {
    let n = x.len();
    (0..out)
        .map(|o| {
            let b = bias.map_or(0.0, |b| f64::from(b[o]));
            (b + dot(x, &weight[o * n..(o + 1) * n])) as f32
        })
        .collect()
}

/// `(x - mean) / sqrt(var + eps) · weight + bias`, biased variance, over the whole vector.
fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    x.iter()
        .zip(weight.iter().zip(bias))
        .map(|(&v, (&g, &b))| ((f64::from(v) - mean) * inv * f64::from(g) + f64::from(b)) as f32)
        .collect()
}

/// Exact GELU: `0.5 · x · (1 + erf(x / √2))`.
fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32
}

/// Numerically stable softmax.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
}

/// A tensor [`VitWeights`] guarantees to be present.
fn get<'w>(w: &'w VitWeights, name: &str) -> &'w [f32] {
    match w.tensor(name) {
        Some((_, data)) => data,
        None => panic!("{}: tensor `{name}` missing from checked weights", w.origin()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConfigOverrides, Tensors, VitConfig};

    /// Depth 0, one 2×2 patch, D = 4: the forward is patch-embed + cls + pos + final LN, small
    /// enough to compute by hand.
    #[test]
    fn depth_zero_is_computable_by_hand() {
        let config = VitConfig {
            architecture: "hand".into(),
            dim: 4,
            depth: 0,
            heads: 1,
            mlp_hidden: 16,
            patch: 2,
            img_size: [2, 2],
            prefix_tokens: 1,
            reg_tokens: 0,
            no_embed_class: false,
            fc_norm: false,
            qkv_bias: true,
            layer_scale: false,
            ln_eps: 1e-6,
        };
        // Kernel [4, 3, 2, 2]: out 0 sums every pixel, out 1 takes 2 × (channel 0, y 0, x 0),
        // out 2 is minus the sum of channel 2, out 3 is zero.
        let mut kernel = vec![0.0; 4 * 12];
        kernel[..12].fill(1.0);
        kernel[12] = 2.0;
        kernel[2 * 12 + 8..3 * 12].fill(-1.0);
        let mut t = Tensors::new();
        let mut put = |name: &str, shape: Vec<usize>, data: Vec<f32>| {
            t.insert(name.to_owned(), (shape, data));
        };
        put("patch_embed.proj.weight", vec![4, 3, 2, 2], kernel);
        put("patch_embed.proj.bias", vec![4], vec![0.5, 0.0, 1.0, -1.0]);
        put("cls_token", vec![1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]);
        put("pos_embed", vec![1, 2, 4], vec![0.0, 0.0, 0.0, 0.0, -0.5, 0.0, 1.0, 1.0]);
        put("norm.weight", vec![4], vec![2.0; 4]);
        put("norm.bias", vec![4], vec![0.5; 4]);
        let w = VitWeights::with_config(config, t).expect("complete weights");
        // Pixel (c, y, x) = 4c + 2y + x + 1, i.e. 1..=12 in [3, 2, 2] order.
        let image: Vec<f32> = (1..=12).map(|v| v as f32).collect();

        // Patch token: [78 + 0.5, 2, -(9+10+11+12) + 1, -1] + pos [-0.5, 0, 1, 1] = [78, 2, -40, 0].
        // Mean 10, deviations [68, -8, -50, -10], variance 7288 / 4 = 1822.
        let std = (1822.0f64 + 1e-6).sqrt();
        let patch = [68.0, -8.0, -50.0, -10.0].map(|dev: f64| (dev / std * 2.0 + 0.5) as f32);
        // Class token [1, 2, 3, 4]: mean 2.5, variance 1.25.
        let std = (1.25f64 + 1e-6).sqrt();
        let cls = [-1.5, -0.5, 0.5, 1.5].map(|dev: f64| (dev / std * 2.0 + 0.5) as f32);

        let out = forward(&w, &image, 1);
        let expected: Vec<f32> = cls.iter().chain(&patch).copied().collect();
        for (a, e) in out.iter().zip(&expected) {
            assert!((a - e).abs() < 1e-6, "{out:?} vs {expected:?}");
        }
        assert_eq!(pool(&w, &out, 1), cls);
    }

    #[test]
    fn gelu_is_exact() {
        // 0.5 · x · (1 + erf(x / √2)) at x = 1 and x = -2 (values from the normal CDF).
        assert!((f64::from(gelu(1.0)) - 0.841_344_746_068_543).abs() < 1e-7);
        assert!((f64::from(gelu(-2.0)) - -0.045_500_263_896_358).abs() < 1e-7);
        assert_eq!(gelu(0.0), 0.0);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-12 && (p[1] - 0.5).abs() < 1e-12 && p[2] < 1e-300);
    }

    #[test]
    fn images_are_per_batch_item() {
        let cfg = crate::testing::deit_config("vit_micro").unwrap();
        let heads = ConfigOverrides { heads: Some(4), ..ConfigOverrides::default() };
        let w = VitWeights::from_tensors(crate::testing::random_vit(&cfg, 1), &heads).unwrap();
        let images = crate::testing::random_images(&cfg, 2, 2);
        let both = forward(&w, &images, 2);
        let second = forward(&w, &images[images.len() / 2..], 1);
        assert_eq!(both[both.len() / 2..], second[..]);
    }
}
