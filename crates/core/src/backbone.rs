use ndarray::{Array2, Array3, ArrayView4};
use serde::{Deserialize, Serialize};

use crate::{Preprocess, Result};

/// What a backbone's forward returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum OutputKind {
    /// The last layer's tokens `[B, prefix + M, D]`: `prefix` leading tokens (CLS, and the
    /// distillation token of distilled DeiT) followed by the M patch tokens.
    Tokens { prefix: usize },
    /// One already pooled vector per image `[B, D]`.
    Pooled,
}

/// A backbone's description of itself. Stored with every collection, so that a query is
/// embedded exactly as the collection was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackboneInfo {
    /// Architecture name, timm-style where known (`deit_small_patch16_224`), or `onnx`.
    pub architecture: String,
    /// How input images must be prepared; `preprocess.size` is the model's input `[H, W]`.
    pub preprocess: Preprocess,
    pub output: OutputKind,
    /// Feature dimension D.
    pub dim: usize,
    /// The execution device/provider that actually runs the model (e.g. `CPUExecutionProvider`).
    pub provider: String,
    /// How an ONNX model takes its images and which output is read, as inferred from the file
    /// (absent for backbones irtdb builds itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<InputInfo>,
}

/// What a backbone inferred about a model's input and output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputInfo {
    /// `nchw` or `nhwc`.
    pub layout: String,
    /// `float32`, `float16` or `uint8`.
    pub dtype: String,
    /// A batch size fixed by the model (1: image by image); absent when dynamic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_batch: Option<usize>,
    /// The model's height and width are dynamic (the size comes from the configuration).
    pub dynamic_size: bool,
    /// The model normalises itself: it is fed pixel values 0–255, no mean/std applied.
    pub raw_pixels: bool,
    /// The name of the output read.
    pub output: String,
}

/// The features of one batch, in batch order.
#[derive(Clone, Debug, PartialEq)]
pub enum Features {
    /// `[B, prefix + M, D]`: `prefix` leading tokens (CLS, distillation) then M patch tokens.
    Tokens { tokens: Array3<f32>, prefix: usize },
    /// `[B, D]`.
    Pooled(Array2<f32>),
}

impl Features {
    pub fn batch_len(&self) -> usize {
        match self {
            Features::Tokens { tokens, .. } => tokens.dim().0,
            Features::Pooled(p) => p.dim().0,
        }
    }
}

/// A neural network that maps preprocessed images to features.
///
/// Contract:
/// - `images` is `[B, 3, H, W]`, f32, RGB, already normalised per [`BackboneInfo::preprocess`],
///   with `[H, W] == info().preprocess.size`.
/// - the result has B rows in the same order, of dimension `info().dim`, laid out as
///   `info().output` says. It is *not* L2-normalised: pooling comes first.
/// - every value is finite; a backend that produces NaN or infinity reports an error instead.
pub trait Backbone: Send {
    fn info(&self) -> &BackboneInfo;
    fn forward(&mut self, images: ArrayView4<'_, f32>) -> Result<Features>;
}

/// Statistics of one training step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    pub loss: f32,
    pub contrastive: f32,
    pub koleo: f32,
}

/// A training backend: a backbone whose weights it can update.
///
/// `step` runs one optimisation step on a labelled batch with learning rate `lr`; `embed` runs
/// the model in evaluation mode and returns L2-normalised descriptors `[B, D]` without changing
/// any state; `save_weights` writes the weights in timm naming (safetensors), a file any plugin
/// serving that architecture loads as a model. `save_state` / `load_state` carry what else the
/// next step depends on (optimiser moments, step count, cross-batch memory): a trainer created
/// from saved weights, given the state saved with them, takes the step the saving run would have.
pub trait Trainer: Send {
    /// The network's description; `output` is [`OutputKind::Pooled`] (what `embed` returns).
    fn info(&self) -> &BackboneInfo;
    fn step(&mut self, images: ArrayView4<'_, f32>, labels: &[i64], lr: f32) -> Result<StepStats>;
    fn embed(&mut self, images: ArrayView4<'_, f32>) -> Result<Array2<f32>>;
    fn save_weights(&mut self, path: &std::path::Path) -> Result<()>;
    fn save_state(&mut self, path: &std::path::Path) -> Result<()>;
    fn load_state(&mut self, path: &std::path::Path) -> Result<()>;
}
