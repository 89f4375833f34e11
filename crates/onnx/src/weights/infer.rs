//! Inferring a [`VitConfig`] from tensor shapes, the overrides and the sidecar beside the
//! weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{heads_from_architecture, ConfigOverrides, TIMM_LN_EPS};
use crate::card::Sidecars;
use crate::error::{Error, Result};
use crate::Tensors as TensorMap;
use crate::VitConfig;

/// Where the tensors come from, for error messages.
pub(super) struct Ctx {
    pub(super) origin: String,
    /// Tensors dropped because of a non-float dtype: name → dtype.
    pub(super) skipped: BTreeMap<String, String>,
}

impl Ctx {
    pub(super) fn missing(&self, tensor: &str, hint: &str) -> Error {
        match self.skipped.get(tensor) {
            Some(dtype) => Error::UnsupportedDtype {
                origin: self.origin.clone(),
                tensor: tensor.to_owned(),
                dtype: dtype.clone(),
            },
            None => Error::MissingTensor {
                origin: self.origin.clone(),
                tensor: tensor.to_owned(),
                hint: hint.to_owned(),
            },
        }
    }

    pub(super) fn shape<'t>(
        &self,
        tensors: &'t TensorMap,
        tensor: &str,
        hint: &str,
    ) -> Result<&'t [usize]> {
        tensors
            .get(tensor)
            .map(|(shape, _)| shape.as_slice())
            .ok_or_else(|| self.missing(tensor, hint))
    }

    pub(super) fn mismatch(
        &self,
        tensor: &str,
        expected: Vec<usize>,
        found: &[usize],
        hint: &str,
    ) -> Error {
        Error::ShapeMismatch {
            origin: self.origin.clone(),
            tensor: tensor.to_owned(),
            expected,
            found: found.to_vec(),
            hint: hint.to_owned(),
        }
    }

    pub(super) fn config(&self, what: String, hint: &str) -> Error {
        Error::Config { origin: self.origin.clone(), what, hint: hint.to_owned() }
    }
}

/// What the sidecars next to the weights say (irtdb's model card, a timm hub `config.json`;
/// both use the same keys), key by key in [`Sidecars`]' order: the card's value, else the hub
/// config's.
#[derive(Debug, Default)]
pub(super) struct Sidecar {
    /// The file `num_heads` came from (for messages).
    path: PathBuf,
    architecture: Option<String>,
    num_heads: Option<usize>,
    img_size: Option<[usize; 2]>,
    /// `no_embed_class` (top level or under `model_args`): `pos_embed` without prefix rows.
    no_embed_class: Option<bool>,
}

impl Sidecar {
    /// Reads the sidecars of `weights` strictly (a damaged file or value is an error naming
    /// it); `None` when there are none.
    pub(super) fn read(weights: &Path) -> Result<Option<Self>> {
        let files = Sidecars::read(weights)?;
        let mut parsed = files.in_order().map(|(path, json, _)| Self::parse(path, json));
        let Some(mut merged) = parsed.next().transpose()? else { return Ok(None) };
        for other in parsed {
            let other = other?;
            if merged.num_heads.is_none() {
                merged.path = other.path;
            }
            merged.architecture = merged.architecture.or(other.architecture);
            merged.num_heads = merged.num_heads.or(other.num_heads);
            merged.img_size = merged.img_size.or(other.img_size);
            merged.no_embed_class = merged.no_embed_class.or(other.no_embed_class);
        }
        Ok(Some(merged))
    }

    /// The keys of one sidecar file.
    fn parse(path: &Path, json: &Value) -> Result<Self> {
        let path = path.to_path_buf();
        let bad = |reason: String| Error::Sidecar { path: path.clone(), reason };
        let architecture = match json.get("architecture") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(bad(format!("`architecture` is {other}, not a string"))),
        };
        let num_heads =
            match json.get("num_heads").or_else(|| json.pointer("/model_args/num_heads")) {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|&h| h > 0)
                        .ok_or_else(|| bad(format!("`num_heads` is {v}, not a positive integer")))?
                        as usize,
                ),
            };
        let img_size = if let Some(v) = json.pointer("/pretrained_cfg/input_size") {
            match v.as_array().map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>()).as_deref() {
                Some([Some(_), Some(h), Some(w)]) => Some([*h as usize, *w as usize]),
                _ => {
                    return Err(bad(format!(
                        "`pretrained_cfg.input_size` is {v}, not [channels, height, width]"
                    )))
                }
            }
        } else if let Some(v) =
            json.pointer("/model_args/img_size").or_else(|| json.get("img_size"))
        {
            match (
                v.as_u64(),
                v.as_array().map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>()),
            ) {
                (Some(s), _) => Some([s as usize, s as usize]),
                (None, Some(a)) => match a.as_slice() {
                    [Some(h), Some(w)] => Some([*h as usize, *w as usize]),
                    _ => return Err(bad(format!("`img_size` is {v}, not a size or [h, w]"))),
                },
                _ => return Err(bad(format!("`img_size` is {v}, not a size or [h, w]"))),
            }
        } else {
            None
        };
        let no_embed_class = match json
            .get("no_embed_class")
            .or_else(|| json.pointer("/model_args/no_embed_class"))
        {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => return Err(bad(format!("`no_embed_class` is {other}, not a boolean"))),
        };
        Ok(Self { path, architecture, num_heads, img_size, no_embed_class })
    }
}

/// Names every ViT tensor must follow; the hint of a missing one.
const NAMING: &str =
    "the checkpoint must use timm VisionTransformer names (patch_embed.proj.weight, \
                      cls_token, pos_embed, blocks.N.*, norm.*)";

/// Infers the configuration from tensor shapes (plus overrides and sidecar, see
/// [`super::VitWeights::load`]).
pub(super) fn infer_config(
    tensors: &TensorMap,
    overrides: &ConfigOverrides,
    sidecar: Option<&Sidecar>,
    ctx: &Ctx,
) -> Result<VitConfig> {
    reject_unsupported(tensors, ctx)?;
    let (dim, patch) = patch_embedding(tensors, ctx)?;
    let (prefix_tokens, reg_tokens, fc_norm) = prefix_and_norm(tensors, ctx, dim)?;
    let (depth, mlp_hidden, qkv_bias, layer_scale) = blocks(tensors, ctx, dim)?;
    let architecture = overrides
        .architecture
        .clone()
        .or_else(|| sidecar.and_then(|s| s.architecture.clone()))
        .unwrap_or_else(|| "vit".to_owned());
    // timm's DeiT-3 and register models use no_embed_class (pos_embed without prefix positions).
    let patch_only_pos = layer_scale
        || reg_tokens > 0
        || architecture.to_ascii_lowercase().contains("deit3")
        || sidecar.and_then(|s| s.no_embed_class) == Some(true);
    // ...and every timm register model does, so that layout is tried first for them.
    let prefer_patch_only = reg_tokens > 0 || sidecar.and_then(|s| s.no_embed_class) == Some(true);
    let grid =
        Grid { dim, patch, prefix: prefix_tokens + reg_tokens, patch_only_pos, prefer_patch_only };
    let (img_size, no_embed_class) = infer_img_size(tensors, &grid, sidecar, ctx)?;
    let heads = heads(overrides, sidecar, &architecture, dim, ctx)?;
    Ok(VitConfig {
        architecture,
        dim,
        depth,
        heads,
        mlp_hidden,
        patch,
        img_size,
        prefix_tokens,
        reg_tokens,
        no_embed_class,
        fc_norm,
        qkv_bias,
        layer_scale,
        ln_eps: overrides.ln_eps.unwrap_or(TIMM_LN_EPS),
    })
}

/// Width and patch size from the patch embedding's Conv2d.
fn patch_embedding(tensors: &TensorMap, ctx: &Ctx) -> Result<(usize, usize)> {
    let naming = NAMING;
    let proj = "patch_embed.proj.weight";
    let proj_shape = ctx.shape(tensors, proj, naming)?;
    Ok(match *proj_shape {
        [d, 3, p, q] if p == q && d > 0 && p > 0 => (d, p),
        [_, 3, p, q] if p != q => {
            return Err(ctx.config(
                format!("`{proj}` has non-square {p}x{q} patches"),
                "only square patches are supported",
            ))
        }
        _ => {
            let d = proj_shape.first().copied().unwrap_or(0);
            let p = proj_shape.get(2).copied().unwrap_or(0);
            return Err(ctx.mismatch(
                proj,
                vec![d, 3, p, p],
                proj_shape,
                "the patch embedding must be a Conv2d over 3 (RGB) channels with square kernels",
            ));
        }
    })
}

/// Prefix tokens (class + distillation), register tokens, and whether the final norm is
/// `fc_norm` (timm's `global_pool='avg'`).
fn prefix_and_norm(tensors: &TensorMap, ctx: &Ctx, dim: usize) -> Result<(usize, usize, bool)> {
    let naming = NAMING;
    if !tensors.contains_key("cls_token") && tensors.contains_key("pos_embed") {
        return Err(ctx.config(
            "the checkpoint has no `cls_token` (a timm ViT with class_token=False)".to_owned(),
            "irtdb's ViT needs a class token; use a checkpoint that has one",
        ));
    }
    ctx.shape(tensors, "cls_token", naming)?;
    let prefix_tokens = if tensors.contains_key("dist_token") { 2 } else { 1 };
    let reg_tokens = match tensors.get("reg_token").map(|(shape, _)| shape.as_slice()) {
        None => 0,
        Some(&[1, r, d]) if r > 0 && d == dim => r,
        Some(other) => {
            let r = other.get(1).copied().unwrap_or(0);
            return Err(ctx.mismatch(
                "reg_token",
                vec![1, r, dim],
                other,
                "register tokens are [1, R, dim]",
            ));
        }
    };
    // timm's global_pool='avg' models replace the final `norm` by `fc_norm` after pooling.
    let fc_norm =
        match (tensors.contains_key("norm.weight"), tensors.contains_key("fc_norm.weight")) {
            (false, true) => true,
            (true, true) => {
                return Err(ctx.config(
                    "the checkpoint has both `norm` and `fc_norm`".to_owned(),
                    "a timm ViT has one of them; check that the checkpoint is not a merge of two",
                ))
            }
            _ => false,
        };
    Ok((prefix_tokens, reg_tokens, fc_norm))
}

/// Depth, MLP width, and whether the blocks have a qkv bias and layer scale.
fn blocks(tensors: &TensorMap, ctx: &Ctx, dim: usize) -> Result<(usize, usize, bool, bool)> {
    let naming = NAMING;
    let depth = tensors
        .keys()
        .filter_map(|name| name.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |last| last + 1);
    let (mlp_hidden, qkv_bias, layer_scale) = if depth > 0 {
        let fc1 = "blocks.0.mlp.fc1.weight";
        let hidden = match ctx.shape(tensors, fc1, naming)? {
            [h, d] if *d == dim => *h,
            other => {
                let h = other.first().copied().unwrap_or(0);
                return Err(ctx.mismatch(fc1, vec![h, dim], other, "fc1 must map dim to hidden"));
            }
        };
        (
            hidden,
            tensors.contains_key("blocks.0.attn.qkv.bias"),
            tensors.contains_key("blocks.0.ls1.gamma"),
        )
    } else {
        (4 * dim, true, false)
    };
    Ok((depth, mlp_hidden, qkv_bias, layer_scale))
}

/// The number of attention heads: the override, the sidecar's `num_heads`, the architecture
/// name, or `dim / 64`; it must divide `dim`.
fn heads(
    overrides: &ConfigOverrides,
    sidecar: Option<&Sidecar>,
    architecture: &str,
    dim: usize,
    ctx: &Ctx,
) -> Result<usize> {
    let (heads, heads_from) = if let Some(h) = overrides.heads {
        (h, "the heads override".to_owned())
    } else if let Some(h) = sidecar.and_then(|s| s.num_heads) {
        (h, format!("`num_heads` in {}", sidecar.map_or(Path::new(""), |s| &s.path).display()))
    } else if let Some(h) = heads_from_architecture(architecture) {
        (h, format!("the architecture name `{architecture}`"))
    } else if dim.is_multiple_of(64) {
        (dim / 64, "dim / 64 (timm's usual head width)".to_owned())
    } else {
        return Err(ctx.config(
            format!("cannot determine the number of attention heads for dim {dim}"),
            "give it explicitly (ConfigOverrides::heads, --heads) or put `num_heads` in a \
             config.json next to the weights",
        ));
    };
    if heads == 0 || !dim.is_multiple_of(heads) {
        return Err(ctx.config(
            format!("{heads} attention heads (from {heads_from}) do not divide dim {dim}"),
            "give the right number of heads explicitly (ConfigOverrides::heads, --heads)",
        ));
    }
    Ok(heads)
}

/// What [`infer_img_size`] needs to know about the model.
struct Grid {
    dim: usize,
    patch: usize,
    prefix: usize,
    /// Whether a square `pos_embed` without prefix positions (no_embed_class) may be assumed.
    patch_only_pos: bool,
    /// Whether to try that layout before the standard one (register models, or the sidecar
    /// says no_embed_class).
    prefer_patch_only: bool,
}

/// Image size from `pos_embed` (plus the sidecar's declared size, if any), and whether
/// `pos_embed` has the patch positions only (timm's no_embed_class).
///
/// `pos_embed` is `[1, prefix + M, D]`, or `[1, M, D]` for timm's no_embed_class (padded later).
/// Without a declared size the two layouts can be confused (a 2×4 grid plus a class token has
/// 9 positions, like a 3×3 grid without one), so the patch-only layout is only assumed for
/// DeiT-3 (layer scale, or `deit3` in the name), the timm family that uses it.
fn infer_img_size(
    tensors: &TensorMap,
    grid: &Grid,
    sidecar: Option<&Sidecar>,
    ctx: &Ctx,
) -> Result<([usize; 2], bool)> {
    let &Grid { dim, patch, prefix, patch_only_pos, prefer_patch_only } = grid;
    let name = "pos_embed";
    let shape = ctx.shape(tensors, name, "a learned position embedding [1, T, dim] is required")?;
    let positions = match *shape {
        [1, t, d] if d == dim => t,
        _ => {
            let t = shape.get(1).copied().unwrap_or(0);
            return Err(ctx.mismatch(
                name,
                vec![1, t, dim],
                shape,
                "pos_embed must be [1, T, dim]",
            ));
        }
    };
    let pos_error = |positions: usize, reason: String, hint: &str| Error::PosEmbed {
        origin: ctx.origin.clone(),
        positions,
        prefix,
        reason,
        hint: hint.to_owned(),
    };
    if let Some([h, w]) = sidecar.and_then(|s| s.img_size) {
        let path = sidecar.map_or(Path::new(""), |s| &s.path).display().to_string();
        if h == 0 || w == 0 || h % patch != 0 || w % patch != 0 {
            return Err(ctx.config(
                format!("image size {h}x{w} from {path} is not a multiple of the patch {patch}"),
                "fix the image size in config.json",
            ));
        }
        let m = (h / patch) * (w / patch);
        // `positions == m`: timm's no_embed_class layout, padded later.
        if positions == m + prefix || positions == m {
            return Ok(([h, w], positions == m));
        }
        return Err(pos_error(
            positions.saturating_sub(prefix),
            format!("but the image size {h}x{w} in {path} with patch {patch} needs {m}"),
            "fix the image size in config.json or use weights trained for it",
        ));
    }
    // Standard layout [1, prefix + g², D], else (DeiT-3) no_embed_class [1, g², D].
    let patch_only = patch_only_pos.then_some(positions);
    let mut layouts = [(positions.checked_sub(prefix), false), (patch_only, true)];
    if prefer_patch_only {
        layouts.reverse();
    }
    for (m, no_embed_class) in layouts {
        let Some(m) = m else { continue };
        let g = m.isqrt();
        if m > 0 && g * g == m {
            return Ok(([g * patch, g * patch], no_embed_class));
        }
    }
    Err(pos_error(
        positions.saturating_sub(prefix),
        "which is not a square grid".to_owned(),
        "for a non-square image (or a pos_embed without class-token position) give the image \
         size as `pretrained_cfg.input_size: [3, H, W]` in a config.json next to the weights",
    ))
}

/// Rejects timm ViT variants whose extra tensors the graph would silently ignore.
fn reject_unsupported(tensors: &TensorMap, ctx: &Ctx) -> Result<()> {
    const FEATURES: [(&str, &str); 7] = [
        ("norm_pre.", "a norm before the blocks (CLIP-style pre-norm)"),
        ("patch_embed.norm.", "a norm after the patch embedding"),
        (".attn.q_norm.", "query/key normalisation"),
        (".attn.k_norm.", "query/key normalisation"),
        (".attn.norm.", "a norm inside attention (scale_attn_norm)"),
        (".mlp.norm.", "a norm inside the MLP (scale_mlp_norm)"),
        (".mlp.fc1_g.", "a gated (SwiGLU) MLP"),
    ];
    for name in tensors.keys().chain(ctx.skipped.keys()) {
        let is_block = name.starts_with("blocks.");
        for (marker, feature) in FEATURES {
            let hit = if marker.starts_with('.') {
                is_block && name.contains(marker)
            } else {
                name.starts_with(marker)
            };
            if hit {
                return Err(Error::Unsupported {
                    origin: ctx.origin.clone(),
                    tensor: name.clone(),
                    feature: feature.to_owned(),
                });
            }
        }
    }
    Ok(())
}
