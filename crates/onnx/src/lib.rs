//! Builds an ONNX graph for the ViT/DeiT family from timm-named safetensors weights.
//!
//! Why this crate exists: irtdb's inference plugin runs ONNX Runtime, but the weights irtdb
//! trains and downloads are timm `state_dict`s saved as safetensors. Rather than needing Python
//! and `torch.onnx.export`, irtdb writes the (small, fixed) ViT graph itself:
//!
//! 1. [`VitWeights::load`] reads a safetensors file (F32, F16 or BF16), infers the
//!    [`VitConfig`] from tensor shapes and checks every tensor the graph needs;
//! 2. [`build_vit_onnx`] turns it into a serialized ONNX `ModelProto` (opset 17) whose input is
//!    `pixel_values` `[batch, 3, H, W]` and whose output is either all tokens or the pooled
//!    class token (see [`GraphOutput`]).
//!
//! [`reference`](mod@reference) is an independent plain-loop forward of the same network, the yardstick the
//! graph is tested against; [`quantize`] rewrites a user's ONNX model to int8 the way
//! [`Precision::Int8`] graphs are built; [`random`] makes random timm-named weights (`irtdb model random`,
//! benchmarks, tests) and [`testing`] adds fixtures for tests anywhere in the workspace. The model is the one of "Training Vision Transformers for Image Retrieval"
//! (El-Nouby et al., 2021): a DeiT backbone whose class token is the image descriptor.

pub mod card;
mod error;
mod graph;
pub mod proto;
pub mod quantize;
pub mod random;
pub mod reference;
pub mod resample;
pub mod sidecar;
pub mod testing;
mod weights;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use card::{ModelCard, CARD_FORMAT};
pub use error::{Error, Result};
pub use graph::{
    build_vit_onnx, build_vit_onnx_int8_ops, build_vit_onnx_with, quantize_per_column, GraphOutput,
    Int8Ops, Precision, GRAPH_BUILDER_VERSION, INPUT_NAME, MS_DOMAIN, OPSET, POOLED_OUTPUT,
    TOKENS_OUTPUT,
};
pub use quantize::{quantize_onnx, QuantizeReport, QUANTIZE_VERSION};
pub use weights::{heads_from_architecture, ConfigOverrides, VitWeights};

/// This crate's version (part of the ort plugin's cache key with [`GRAPH_BUILDER_VERSION`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Tensors by timm name: `(shape, row-major f32 data)`.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The hyper-parameters of a timm `VisionTransformer` that the graph depends on.
///
/// Usually inferred from tensor shapes by [`VitWeights::load`]; `heads` is the one value that
/// shapes cannot tell (see [`VitWeights::load`] for where it comes from).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// timm model name, e.g. `"deit_small_patch16_224"`, or `"vit"` when unknown.
    pub architecture: String,
    /// Embedding width D.
    pub dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads per block; `dim` must be a multiple of it.
    pub heads: usize,
    /// Hidden width of each block's MLP.
    pub mlp_hidden: usize,
    /// Patch side P (square patches, stride P).
    pub patch: usize,
    /// Input image size `[H, W]`, both multiples of `patch`.
    pub img_size: [usize; 2],
    /// Tokens before the patch tokens in the output: 1 (class token) or 2 (class +
    /// distillation token).
    pub prefix_tokens: usize,
    /// Register tokens (timm `reg_tokens`, DINOv2 "with registers"): learned tokens after the
    /// class (and distillation) tokens that take part in attention but are not part of the
    /// output, so no pooling ever sees them (timm excludes them from its own pooling too).
    #[serde(default)]
    pub reg_tokens: usize,
    /// timm's `no_embed_class`: the checkpoint's `pos_embed` covers the patches only (DeiT-3,
    /// DINOv2 with registers). [`VitWeights`] pads it with zero rows for the prefix, the same
    /// computation; the flag says to save it in timm's layout again.
    #[serde(default)]
    pub no_embed_class: bool,
    /// timm's `global_pool='avg'` with `fc_norm`: no final norm over the tokens; the model's own
    /// descriptor is `fc_norm(mean of the patch tokens)` (see [`GraphOutput::Pooled`]).
    #[serde(default)]
    pub fc_norm: bool,
    /// Whether `attn.qkv` has a bias.
    pub qkv_bias: bool,
    /// Whether blocks have layer scale (`ls1.gamma`, `ls2.gamma`, as in DeiT-3).
    pub layer_scale: bool,
    /// LayerNorm epsilon (timm's ViT uses 1e-6).
    pub ln_eps: f32,
}

impl VitConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }

    /// Patch grid `[H / P, W / P]`.
    pub fn grid(&self) -> [usize; 2] {
        [self.img_size[0] / self.patch.max(1), self.img_size[1] / self.patch.max(1)]
    }

    /// Number of patch tokens M.
    pub fn num_patches(&self) -> usize {
        let [gh, gw] = self.grid();
        gh * gw
    }

    /// Tokens in front of the patches inside the network: class, distillation and register
    /// tokens (timm's `num_prefix_tokens`).
    pub fn num_prefix(&self) -> usize {
        self.prefix_tokens + self.reg_tokens
    }

    /// Sequence length inside the network T = class/distillation + register tokens + patches
    /// (the rows of the padded `pos_embed`).
    pub fn num_tokens(&self) -> usize {
        self.num_prefix() + self.num_patches()
    }

    /// Tokens in the [`GraphOutput::Tokens`] output: prefix tokens + patches (registers dropped).
    pub fn output_tokens(&self) -> usize {
        self.prefix_tokens + self.num_patches()
    }
}
