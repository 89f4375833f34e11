//! Loading timm-named ViT weights and inferring their [`VitConfig`].
//!
//! Why this module exists: a checkpoint is only a bag of named tensors. Before a graph can be
//! built, irtdb must know the architecture (width, depth, patch, image size, ...) and be sure that
//! every tensor it will wire in is present with the right shape, so that a wrong checkpoint fails
//! here, with the tensor's name, rather than deep inside ONNX Runtime.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::VitConfig;

use crate::Tensors as TensorMap;

/// LayerNorm epsilon of timm's `VisionTransformer` (`partial(nn.LayerNorm, eps=1e-6)`).
const TIMM_LN_EPS: f32 = 1e-6;

/// Origin label used in error messages for weights that did not come from a file.
const IN_MEMORY: &str = "in-memory weights";

/// Values that cannot (or should not) be inferred from tensor shapes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigOverrides {
    /// Attention heads; wins over `config.json` and every guess.
    pub heads: Option<usize>,
    /// Architecture name recorded in the config (and used to guess heads).
    pub architecture: Option<String>,
    /// LayerNorm epsilon; timm's 1e-6 otherwise.
    pub ln_eps: Option<f32>,
}

/// A ViT's configuration plus its tensors, all converted to f32 and checked against it.
///
/// Every tensor the graph uses is guaranteed present with the shape `config` implies; other
/// tensors of the checkpoint (`head.*`, ...) are kept but ignored.
///
/// One normalisation happens on load: a `pos_embed` without positions for the prefix tokens
/// (timm's `no_embed_class=True`, as in DeiT-3 and DINOv2 with registers) is padded with zeros
/// in front, which is the same computation (class and register tokens get no position
/// embedding) in the standard `[1, T, D]` layout; `config.no_embed_class` records it, and
/// [`VitWeights::timm_pos_embed`] gives the tensor back in timm's layout.
#[derive(Clone)]
pub struct VitWeights {
    /// The configuration the tensors were checked against.
    pub config: VitConfig,
    tensors: TensorMap,
    origin: String,
}

impl fmt::Debug for VitWeights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VitWeights")
            .field("config", &self.config)
            .field("origin", &self.origin)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl VitWeights {
    /// Loads a safetensors file of timm-named ViT weights (F32, F16, BF16 or F64 tensors).
    ///
    /// The number of attention heads is taken from, in order:
    /// 1. `overrides.heads`;
    /// 2. `num_heads` (top level or under `model_args`) in the sidecar: irtdb's model card
    ///    `<file stem>.json`, else a `config.json` next to the file (timm's hub layout);
    /// 3. the architecture name (`overrides.architecture`, else `config.json`'s
    ///    `architecture`): a name containing `tiny` → 3, `small` → 6, `base` → 12,
    ///    `large`/`huge` → 16;
    /// 4. `dim / 64` (timm's head width of 64) when `dim` is a multiple of 64;
    ///
    /// otherwise it is an error. The image size comes from `pos_embed` when its patch positions
    /// form a square grid; a non-square grid needs `pretrained_cfg.input_size` (`[3, H, W]`) or
    /// `model_args.img_size` in `config.json`, which, when present, must agree with `pos_embed`.
    pub fn load(path: &Path, overrides: &ConfigOverrides) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        let (tensors, skipped) = parse_safetensors(&bytes, path)?;
        let sidecar = Sidecar::read(path)?;
        let ctx = Ctx { origin: path.display().to_string(), skipped };
        Self::infer(tensors, overrides, sidecar.as_ref(), ctx)
    }

    /// Like [`VitWeights::load`] for the bytes of a safetensors file already in memory, without
    /// a sidecar (so the heads come from `overrides` or are guessed). Used by the fuzz target,
    /// which must reach the same parsing and checks as a file on disk.
    pub fn from_safetensors_bytes(bytes: &[u8], overrides: &ConfigOverrides) -> Result<Self> {
        let (tensors, skipped) = parse_safetensors(bytes, Path::new(IN_MEMORY))?;
        let ctx = Ctx { origin: IN_MEMORY.to_owned(), skipped };
        Self::infer(tensors, overrides, None, ctx)
    }

    /// Builds from tensors already in memory (timm names), inferring the configuration as
    /// [`VitWeights::load`] does, without a `config.json`.
    pub fn from_tensors(tensors: TensorMap, overrides: &ConfigOverrides) -> Result<Self> {
        let ctx = Ctx { origin: IN_MEMORY.to_owned(), skipped: BTreeMap::new() };
        Self::infer(tensors, overrides, None, ctx)
    }

    /// Builds from tensors and a configuration known beforehand (e.g. a model card), checking
    /// that every tensor matches it instead of inferring anything.
    pub fn with_config(config: VitConfig, tensors: TensorMap) -> Result<Self> {
        let ctx = Ctx { origin: IN_MEMORY.to_owned(), skipped: BTreeMap::new() };
        let tensors = pad_pos_embed(tensors, &config);
        check_config(&config, &ctx.origin)?;
        check_tensors(&config, &tensors, &ctx, "the tensors do not match the given VitConfig")?;
        Ok(Self { config, tensors, origin: ctx.origin })
    }

    /// The tensor called `name` (timm naming): its shape and row-major data.
    /// Runs the model at `size` (`[H, W]`, multiples of the patch size): the position
    /// embedding's patch grid is resampled as timm's `resample_abs_pos_embed` does (bicubic,
    /// antialiased; prefix rows kept apart, see [`crate::resample`]) and `config.img_size`
    /// becomes `size`. A no-op at the native size.
    pub fn resample_to(&mut self, size: [usize; 2]) -> Result<()> {
        let c = &self.config;
        if size[0] == 0
            || size[1] == 0
            || !size[0].is_multiple_of(c.patch)
            || !size[1].is_multiple_of(c.patch)
        {
            return Err(Error::Config {
                origin: self.origin.clone(),
                what: format!(
                    "input size {}x{} is not a positive multiple of the patch size {}",
                    size[0], size[1], c.patch
                ),
                hint: format!(
                    "pick a multiple of {} (e.g. {})",
                    c.patch,
                    (224 / c.patch).max(1) * c.patch
                ),
            });
        }
        if size == c.img_size {
            return Ok(());
        }
        let grid = [c.img_size[0] / c.patch, c.img_size[1] / c.patch];
        let new = [size[0] / c.patch, size[1] / c.patch];
        let (dim, prefix) = (c.dim, c.num_prefix());
        let Some((shape, data)) = self.tensors.get_mut("pos_embed") else {
            return Err(Error::MissingTensor {
                origin: self.origin.clone(),
                tensor: "pos_embed".into(),
                hint: "a ViT checkpoint has one".into(),
            });
        };
        *data = crate::resample::resample_pos_embed(data, dim, prefix, grid, new);
        *shape = vec![1, prefix + new[0] * new[1], dim];
        self.config.img_size = size;
        Ok(())
    }

    /// `pos_embed` as timm's module holds it: `[1, M, D]` (patch positions only) for a
    /// no_embed_class model, else `[1, T, D]`. What a trainer learns and saves.
    pub fn timm_pos_embed(&self) -> Result<(Vec<usize>, &[f32])> {
        let c = &self.config;
        let data = self.data("pos_embed")?;
        Ok(if c.no_embed_class {
            (vec![1, c.num_patches(), c.dim], &data[c.num_prefix() * c.dim..])
        } else {
            (vec![1, c.num_tokens(), c.dim], data)
        })
    }

    pub fn tensor(&self, name: &str) -> Option<(&[usize], &[f32])> {
        self.tensors.get(name).map(|(shape, data)| (shape.as_slice(), data.as_slice()))
    }

    /// All tensors, including ones the graph ignores.
    pub fn tensors(&self) -> &TensorMap {
        &self.tensors
    }

    /// Where the weights came from (a file path, or "in-memory weights"), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Re-checks the tensors against `self.config` (which is a public, editable field).
    pub(crate) fn check(&self) -> Result<()> {
        let ctx = Ctx { origin: self.origin.clone(), skipped: BTreeMap::new() };
        check_config(&self.config, &ctx.origin)?;
        check_tensors(&self.config, &self.tensors, &ctx, "the config was changed after loading")
    }

    /// Data of a tensor known to be present (after [`VitWeights::check`]).
    pub(crate) fn data(&self, name: &str) -> Result<&[f32]> {
        self.tensor(name).map(|(_, data)| data).ok_or_else(|| Error::MissingTensor {
            origin: self.origin.clone(),
            tensor: name.to_owned(),
            hint: "the weights do not match their config".to_owned(),
        })
    }

    fn infer(
        tensors: TensorMap,
        overrides: &ConfigOverrides,
        sidecar: Option<&Sidecar>,
        ctx: Ctx,
    ) -> Result<Self> {
        let config = infer_config(&tensors, overrides, sidecar, &ctx)?;
        let tensors = pad_pos_embed(tensors, &config);
        check_tensors(
            &config,
            &tensors,
            &ctx,
            "the checkpoint does not match the configuration inferred from its other tensors; \
             check that it is a complete timm VisionTransformer state_dict",
        )?;
        Ok(Self { config, tensors, origin: ctx.origin })
    }
}

/// The float tensors of a safetensors file (converted to f32), and the names and dtypes of the
/// others. `path` names the file in errors.
fn parse_safetensors(bytes: &[u8], path: &Path) -> Result<(TensorMap, BTreeMap<String, String>)> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::NotSafetensors { path: path.to_owned(), reason: e.to_string() })?;
    let mut tensors = TensorMap::new();
    let mut skipped = BTreeMap::new();
    for (name, view) in file.iter() {
        match to_f32(view.dtype(), view.data()) {
            Some(data) => {
                tensors.insert(name.to_owned(), (view.shape().to_vec(), data));
            }
            None => {
                skipped.insert(name.to_owned(), format!("{:?}", view.dtype()));
            }
        }
    }
    Ok((tensors, skipped))
}

/// Guesses the number of heads from a timm model name (`deit_small_patch16_224` → 6).
pub fn heads_from_architecture(name: &str) -> Option<usize> {
    let name = name.to_ascii_lowercase();
    [("tiny", 3), ("small", 6), ("base", 12), ("large", 16), ("huge", 16)]
        .into_iter()
        .find(|(size, _)| name.contains(size))
        .map(|(_, heads)| heads)
}

/// Where the tensors come from, for error messages.
struct Ctx {
    origin: String,
    /// Tensors dropped because of a non-float dtype: name → dtype.
    skipped: BTreeMap<String, String>,
}

impl Ctx {
    fn missing(&self, tensor: &str, hint: &str) -> Error {
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

    fn shape<'t>(&self, tensors: &'t TensorMap, tensor: &str, hint: &str) -> Result<&'t [usize]> {
        tensors
            .get(tensor)
            .map(|(shape, _)| shape.as_slice())
            .ok_or_else(|| self.missing(tensor, hint))
    }

    fn mismatch(&self, tensor: &str, expected: Vec<usize>, found: &[usize], hint: &str) -> Error {
        Error::ShapeMismatch {
            origin: self.origin.clone(),
            tensor: tensor.to_owned(),
            expected,
            found: found.to_vec(),
            hint: hint.to_owned(),
        }
    }

    fn config(&self, what: String, hint: &str) -> Error {
        Error::Config { origin: self.origin.clone(), what, hint: hint.to_owned() }
    }
}

/// Converts little-endian float data to f32; `None` for non-float dtypes.
fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let out = match dtype {
        Dtype::F32 => {
            data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
        }
        Dtype::F16 => {
            data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        Dtype::BF16 => {
            data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
        }
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        _ => return None,
    };
    Some(out)
}

/// What a timm hub `config.json` next to the weights says.
#[derive(Debug)]
struct Sidecar {
    path: PathBuf,
    architecture: Option<String>,
    num_heads: Option<usize>,
    img_size: Option<[usize; 2]>,
    /// `no_embed_class` (top level or under `model_args`): `pos_embed` without prefix rows.
    no_embed_class: Option<bool>,
}

impl Sidecar {
    /// Reads irtdb's model card `<weights>.json` or, failing that, timm's `config.json` in the
    /// weights' folder, if there is one. Both use the same keys.
    fn read(weights: &Path) -> Result<Option<Self>> {
        let card = weights.with_extension("json");
        let hub = weights.parent().unwrap_or(Path::new("")).join("config.json");
        let Some(path) = [card, hub].into_iter().find(|p| p.is_file()) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|e| Error::Sidecar {
            path: path.clone(),
            reason: format!("not valid JSON ({e})"),
        })?;
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
        Ok(Some(Self { path, architecture, num_heads, img_size, no_embed_class }))
    }
}

/// Infers the configuration from tensor shapes (plus overrides and sidecar, see
/// [`VitWeights::load`]).
fn infer_config(
    tensors: &TensorMap,
    overrides: &ConfigOverrides,
    sidecar: Option<&Sidecar>,
    ctx: &Ctx,
) -> Result<VitConfig> {
    reject_unsupported(tensors, ctx)?;
    let naming = "the checkpoint must use timm VisionTransformer names (patch_embed.proj.weight, \
                  cls_token, pos_embed, blocks.N.*, norm.*)";

    let proj = "patch_embed.proj.weight";
    let proj_shape = ctx.shape(tensors, proj, naming)?;
    let (dim, patch) = match *proj_shape {
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
    };

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
    let (heads, heads_from) = if let Some(h) = overrides.heads {
        (h, "the heads override".to_owned())
    } else if let Some(h) = sidecar.and_then(|s| s.num_heads) {
        (h, format!("`num_heads` in {}", sidecar.map_or(Path::new(""), |s| &s.path).display()))
    } else if let Some(h) = heads_from_architecture(&architecture) {
        (h, format!("the architecture name `{architecture}`"))
    } else if dim % 64 == 0 {
        (dim / 64, "dim / 64 (timm's usual head width)".to_owned())
    } else {
        return Err(ctx.config(
            format!("cannot determine the number of attention heads for dim {dim}"),
            "give it explicitly (ConfigOverrides::heads, --heads) or put `num_heads` in a \
             config.json next to the weights",
        ));
    };
    if heads == 0 || dim % heads != 0 {
        return Err(ctx.config(
            format!("{heads} attention heads (from {heads_from}) do not divide dim {dim}"),
            "give the right number of heads explicitly (ConfigOverrides::heads, --heads)",
        ));
    }

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

/// Checks the configuration itself (values the shapes cannot contradict).
fn check_config(c: &VitConfig, origin: &str) -> Result<()> {
    let bad = |what: String| Error::Config {
        origin: origin.to_owned(),
        what,
        hint: "fix the VitConfig".to_owned(),
    };
    if c.dim == 0 || c.heads == 0 || !c.dim.is_multiple_of(c.heads) {
        return Err(bad(format!("heads {} must be positive and divide dim {}", c.heads, c.dim)));
    }
    if c.patch == 0 || c.img_size.iter().any(|&s| s == 0 || s % c.patch != 0) {
        return Err(bad(format!(
            "image size {:?} must be positive multiples of the patch {}",
            c.img_size, c.patch
        )));
    }
    if !(1..=2).contains(&c.prefix_tokens) {
        return Err(bad(format!("prefix_tokens is {}, not 1 or 2", c.prefix_tokens)));
    }
    if c.depth > 0 && c.mlp_hidden == 0 {
        return Err(bad("mlp_hidden is 0".to_owned()));
    }
    if !(c.ln_eps.is_finite() && c.ln_eps > 0.0) {
        return Err(bad(format!("ln_eps {} must be positive", c.ln_eps)));
    }
    Ok(())
}

/// Every tensor the graph uses, with the shape `config` implies.
pub(crate) fn expected_shapes(c: &VitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, h, p) = (c.dim, c.mlp_hidden, c.patch);
    let mut out = vec![
        ("cls_token".to_owned(), vec![1, 1, d]),
        ("pos_embed".to_owned(), vec![1, c.num_tokens(), d]),
        ("patch_embed.proj.weight".to_owned(), vec![d, 3, p, p]),
        ("patch_embed.proj.bias".to_owned(), vec![d]),
    ];
    if c.prefix_tokens == 2 {
        out.push(("dist_token".to_owned(), vec![1, 1, d]));
    }
    if c.reg_tokens > 0 {
        out.push(("reg_token".to_owned(), vec![1, c.reg_tokens, d]));
    }
    for i in 0..c.depth {
        let mut block = vec![
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![h, d]),
            ("mlp.fc1.bias", vec![h]),
            ("mlp.fc2.weight", vec![d, h]),
            ("mlp.fc2.bias", vec![d]),
        ];
        if c.qkv_bias {
            block.push(("attn.qkv.bias", vec![3 * d]));
        }
        if c.layer_scale {
            block.push(("ls1.gamma", vec![d]));
            block.push(("ls2.gamma", vec![d]));
        }
        out.extend(block.into_iter().map(|(name, shape)| (format!("blocks.{i}.{name}"), shape)));
    }
    let norm = if c.fc_norm { "fc_norm" } else { "norm" };
    out.push((format!("{norm}.weight"), vec![d]));
    out.push((format!("{norm}.bias"), vec![d]));
    out
}

fn check_tensors(c: &VitConfig, tensors: &TensorMap, ctx: &Ctx, hint: &str) -> Result<()> {
    for (name, expected) in expected_shapes(c) {
        let found = ctx.shape(tensors, &name, hint)?;
        if found != expected.as_slice() {
            return Err(ctx.mismatch(&name, expected, found, hint));
        }
        let len = tensors[&name].1.len();
        if len != expected.iter().product::<usize>() {
            return Err(ctx.config(
                format!("tensor `{name}` holds {len} values, not as many as its shape {found:?}"),
                "the tensor data is corrupt; re-create it",
            ));
        }
    }
    if c.reg_tokens == 0 && tensors.contains_key("reg_token") {
        return Err(ctx.config(
            "`reg_token` is present but reg_tokens is 0".to_owned(),
            "set reg_tokens to the number of register tokens",
        ));
    }
    if c.prefix_tokens == 1 && tensors.contains_key("dist_token") {
        return Err(ctx.config(
            "`dist_token` is present but prefix_tokens is 1".to_owned(),
            "set prefix_tokens to 2 for a distilled DeiT",
        ));
    }
    Ok(())
}

/// Pads a `[1, M, D]` (no_embed_class) `pos_embed` to `[1, prefix + M, D]` with zero rows for
/// the class, distillation and register tokens.
fn pad_pos_embed(mut tensors: TensorMap, c: &VitConfig) -> TensorMap {
    if let Some((shape, data)) = tensors.get_mut("pos_embed") {
        if *shape == [1, c.num_patches(), c.dim] && c.num_prefix() > 0 {
            let mut padded = vec![0.0; c.num_prefix() * c.dim];
            padded.extend_from_slice(data);
            *data = padded;
            *shape = vec![1, c.num_tokens(), c.dim];
        }
    }
    tensors
}
