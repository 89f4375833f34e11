//! Loading timm-named ViT weights and inferring their [`VitConfig`].
//!
//! Why this module exists: a checkpoint is only a bag of named tensors. Before a graph can be
//! built, irtdb must know the architecture (width, depth, patch, image size, ...) and be sure that
//! every tensor it will wire in is present with the right shape, so that a wrong checkpoint fails
//! here, with the tensor's name, rather than deep inside ONNX Runtime.
//!
//! The rooms: `infer` (the configuration from tensor shapes and the sidecar), `check` (every
//! tensor against a configuration); this module loads and holds the weights.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::VitConfig;

use crate::Tensors as TensorMap;

mod check;
mod infer;

use check::{check_config, check_tensors, pad_pos_embed};
use infer::{infer_config, Ctx, Sidecar};

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
