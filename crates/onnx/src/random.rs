//! Random-weight timm ViTs: `irtdb model random`, the benchmarks and the tests use them.
//!
//! Why this module exists: trying irtdb, benchmarking it and testing it must not need a
//! download, yet every path needs "a ViT checkpoint in timm naming". [`random_vit`] makes one of
//! any shape in milliseconds (timm's initialisation), [`save_safetensors`] writes it where a real
//! checkpoint would be, and [`deit_config`] names the shapes of the real DeiT, DeiT-3 and DINOv2
//! models (and `vit_micro`, a test size).

use std::path::Path;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::VitConfig;

use crate::Tensors;

/// Element type to store tensors as in [`save_safetensors_as`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreDtype {
    F32,
    F16,
    Bf16,
}

/// Random weights for `cfg` under timm's names, deterministic in `seed`.
///
/// Matrices, tokens and position embeddings are drawn from a normal with std 0.02 truncated at
/// two standard deviations (timm's `trunc_normal_(std=.02)`), biases are small, and LayerNorm
/// weights are 1 and biases 0 plus noise of std 0.05, so that a graph ignoring them would be
/// caught. Layer-scale gammas are 0.1 plus noise (not timm's 1e-6, which would hide the branch).
pub fn random_vit(cfg: &VitConfig, seed: u64) -> Tensors {
    random_vit_with_std(cfg, seed, 0.02)
}

/// [`random_vit`] with weight std `std` instead of 0.02: larger values (0.1–0.3) make
/// attention far from uniform, for tests that must exercise softmax and GELU nonlinearity.
pub fn random_vit_with_std(cfg: &VitConfig, seed: u64, std: f32) -> Tensors {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Tensors::new();
    let mut put = |name: String, shape: Vec<usize>, center: f32, std: f32| {
        let n = shape.iter().product();
        let data = trunc_normal(&mut rng, n, std).into_iter().map(|v| center + v).collect();
        out.insert(name, (shape, data));
    };
    let (d, h, p) = (cfg.dim, cfg.mlp_hidden, cfg.patch);
    put("cls_token".into(), vec![1, 1, d], 0.0, std);
    if cfg.prefix_tokens == 2 {
        put("dist_token".into(), vec![1, 1, d], 0.0, std);
    }
    if cfg.reg_tokens > 0 {
        put("reg_token".into(), vec![1, cfg.reg_tokens, d], 0.0, std);
    }
    // timm's layout: no_embed_class models have patch positions only.
    let positions = if cfg.no_embed_class { cfg.num_patches() } else { cfg.num_tokens() };
    put("pos_embed".into(), vec![1, positions, d], 0.0, std);
    put("patch_embed.proj.weight".into(), vec![d, 3, p, p], 0.0, std);
    put("patch_embed.proj.bias".into(), vec![d], 0.0, std);
    for i in 0..cfg.depth {
        let b = |s: &str| format!("blocks.{i}.{s}");
        for norm in ["norm1", "norm2"] {
            put(b(&format!("{norm}.weight")), vec![d], 1.0, 0.05);
            put(b(&format!("{norm}.bias")), vec![d], 0.0, 0.05);
        }
        put(b("attn.qkv.weight"), vec![3 * d, d], 0.0, std);
        if cfg.qkv_bias {
            put(b("attn.qkv.bias"), vec![3 * d], 0.0, std);
        }
        put(b("attn.proj.weight"), vec![d, d], 0.0, std);
        put(b("attn.proj.bias"), vec![d], 0.0, std);
        put(b("mlp.fc1.weight"), vec![h, d], 0.0, std);
        put(b("mlp.fc1.bias"), vec![h], 0.0, std);
        put(b("mlp.fc2.weight"), vec![d, h], 0.0, std);
        put(b("mlp.fc2.bias"), vec![d], 0.0, std);
        if cfg.layer_scale {
            put(b("ls1.gamma"), vec![d], 0.1, 0.05);
            put(b("ls2.gamma"), vec![d], 0.1, 0.05);
        }
    }
    let norm = if cfg.fc_norm { "fc_norm" } else { "norm" };
    put(format!("{norm}.weight"), vec![d], 1.0, 0.05);
    put(format!("{norm}.bias"), vec![d], 0.0, 0.05);
    // A classifier head, as real checkpoints have; the graph must ignore it.
    put("head.weight".into(), vec![10, d], 0.0, std);
    put("head.bias".into(), vec![10], 0.0, std);
    out
}

/// Random images `[batch, 3, H, W]` for `cfg`, roughly normalised pixels (std 1).
pub fn random_images(cfg: &VitConfig, batch: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let [h, w] = cfg.img_size;
    trunc_normal(&mut rng, batch * 3 * h * w, 1.0)
}

fn trunc_normal(rng: &mut StdRng, n: usize, std: f32) -> Vec<f32> {
    let Ok(normal) = Normal::new(0.0f32, std.max(f32::MIN_POSITIVE)) else {
        return vec![0.0; n];
    };
    (0..n)
        .map(|_| loop {
            let v = normal.sample(rng);
            if v.abs() <= 2.0 * std {
                break v;
            }
        })
        .collect()
}

/// Writes `tensors` as an F32 safetensors file.
pub fn save_safetensors(path: &Path, tensors: &Tensors) -> Result<()> {
    save_safetensors_as(path, tensors, StoreDtype::F32)
}

/// Writes `tensors` as a safetensors file with elements stored as `dtype`.
pub fn save_safetensors_as(path: &Path, tensors: &Tensors, dtype: StoreDtype) -> Result<()> {
    let fail = |reason: String| Error::Serialize { path: path.to_owned(), reason };
    let encoded: Vec<(&String, &Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, (shape, data))| {
            let bytes = match dtype {
                StoreDtype::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                StoreDtype::F16 => {
                    data.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
                }
                StoreDtype::Bf16 => {
                    data.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
                }
            };
            (name, shape, bytes)
        })
        .collect();
    let st_dtype = match dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
        StoreDtype::Bf16 => Dtype::BF16,
    };
    let views = encoded
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(st_dtype, shape.to_vec(), bytes)
                .map(|view| (name.as_str(), view))
                .map_err(|e| fail(format!("tensor `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Configuration presets by timm name: `deit_{tiny,small,base}_patch16_224`, their
/// `_distilled_` variants (2 prefix tokens), `deit3_{small,base}_patch16_224` (layer scale),
/// `vit_{small,base}_patch14_dinov2` (patch 14, 518×518, layer scale),
/// `vit_{small,base}_patch14_reg4_dinov2` (also 4 registers, no_embed_class),
/// and `vit_micro` (dim 32, depth 2, 4 heads, patch 8, 32×32 images, MLP 128), a test size.
///
/// See: <https://github.com/huggingface/pytorch-image-models/blob/main/timm/models/deit.py> and
/// `vision_transformer.py` (the dinov2 entries).
pub fn deit_config(name: &str) -> Option<VitConfig> {
    let base = |dim: usize, depth: usize, heads: usize| VitConfig {
        architecture: name.to_owned(),
        dim,
        depth,
        heads,
        mlp_hidden: 4 * dim,
        patch: 16,
        img_size: [224, 224],
        prefix_tokens: 1,
        reg_tokens: 0,
        no_embed_class: false,
        fc_norm: false,
        qkv_bias: true,
        layer_scale: false,
        ln_eps: 1e-6,
    };
    let dinov2 = |dim: usize, heads: usize, registers: usize| VitConfig {
        patch: 14,
        img_size: [518, 518],
        layer_scale: true,
        reg_tokens: registers,
        no_embed_class: registers > 0,
        ..base(dim, 12, heads)
    };
    let config = match name {
        "vit_small_patch14_dinov2" => dinov2(384, 6, 0),
        "vit_base_patch14_dinov2" => dinov2(768, 12, 0),
        "vit_small_patch14_reg4_dinov2" => dinov2(384, 6, 4),
        "vit_base_patch14_reg4_dinov2" => dinov2(768, 12, 4),
        "deit_tiny_patch16_224" => base(192, 12, 3),
        "deit_small_patch16_224" => base(384, 12, 6),
        "deit_base_patch16_224" => base(768, 12, 12),
        "deit_tiny_distilled_patch16_224" => VitConfig { prefix_tokens: 2, ..base(192, 12, 3) },
        "deit_small_distilled_patch16_224" => VitConfig { prefix_tokens: 2, ..base(384, 12, 6) },
        "deit_base_distilled_patch16_224" => VitConfig { prefix_tokens: 2, ..base(768, 12, 12) },
        "deit3_small_patch16_224" => VitConfig { layer_scale: true, ..base(384, 12, 6) },
        "deit3_base_patch16_224" => VitConfig { layer_scale: true, ..base(768, 12, 12) },
        "vit_micro" => {
            VitConfig { mlp_hidden: 128, patch: 8, img_size: [32, 32], ..base(32, 2, 4) }
        }
        _ => return None,
    };
    Some(config)
}
