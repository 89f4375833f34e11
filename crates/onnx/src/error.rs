//! Errors of this crate.
//!
//! Every message names where the weights came from (a file path, or "in-memory weights"), the
//! offending tensor or value, and what to do about it: a user meets these when pointing irtdb at
//! a checkpoint that is not a timm ViT, and must be able to fix it without reading code.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong loading ViT weights or building their ONNX graph.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read or written.
    #[error("cannot {action} {}: {source}; check that the path exists and is accessible", path.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is not a valid safetensors file.
    #[error(
        "{} is not a valid safetensors file ({reason}); give a .safetensors checkpoint with \
         timm parameter names (a PyTorch .pth/.bin can be converted with \
         safetensors.torch.save_file(model.state_dict(), ...))",
        path.display()
    )]
    NotSafetensors { path: PathBuf, reason: String },

    /// A tensor this crate needs is stored in a dtype it cannot convert to f32.
    #[error(
        "{origin}: tensor `{tensor}` has dtype {dtype}; only F32, F16, BF16 and F64 are \
         supported; re-save the checkpoint with floating-point weights"
    )]
    UnsupportedDtype { origin: String, tensor: String, dtype: String },

    /// A tensor the ViT needs is absent.
    #[error("{origin}: tensor `{tensor}` is missing; {hint}")]
    MissingTensor { origin: String, tensor: String, hint: String },

    /// A tensor has the wrong shape for the configuration.
    #[error(
        "{origin}: tensor `{tensor}` has shape {found:?} but {expected:?} was expected; {hint}"
    )]
    ShapeMismatch {
        origin: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        hint: String,
    },

    /// The number of patch positions in `pos_embed` does not give an image size.
    #[error(
        "{origin}: tensor `pos_embed` has {positions} patch positions (after {prefix} prefix \
         token(s)), {reason}; {hint}"
    )]
    PosEmbed { origin: String, positions: usize, prefix: usize, reason: String, hint: String },

    /// The checkpoint uses a ViT variant this graph builder does not implement.
    #[error(
        "{origin}: tensor `{tensor}` shows {feature}, which irtdb's ViT graph does not \
         implement; use a plain ViT/DeiT checkpoint (timm VisionTransformer with class token, \
         no registers, no extra norms)"
    )]
    Unsupported { origin: String, tensor: String, feature: String },

    /// A configuration value is invalid or could not be determined.
    #[error("{origin}: {what}; {hint}")]
    Config { origin: String, what: String, hint: String },

    /// The sidecar `config.json` next to the weights could not be used.
    #[error(
        "{}: {reason}; fix or remove this file (it is optional: the number of heads can also \
         be given explicitly)",
        path.display()
    )]
    Sidecar { path: PathBuf, reason: String },

    /// An ONNX model that [`crate::quantize::quantize_onnx`] cannot rewrite to int8.
    #[error("cannot quantise this ONNX model to int8: {reason}; {hint}")]
    Quantize { reason: String, hint: String },

    /// Writing a safetensors file failed.
    #[error("cannot write safetensors file {}: {reason}; check the tensors and the path", path.display())]
    Serialize { path: PathBuf, reason: String },
}
