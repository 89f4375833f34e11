//! The JSON configuration the host passes to `backbone_create`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// An execution provider this plugin can register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Tensorrt,
    Cuda,
    Cpu,
}

impl ProviderName {
    /// The order tried when the user does not choose.
    pub const DEFAULT_CHAIN: [ProviderName; 3] = [Self::Tensorrt, Self::Cuda, Self::Cpu];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tensorrt => "tensorrt",
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
        }
    }

    /// ONNX Runtime's name for the provider.
    pub fn ort_name(self) -> &'static str {
        match self {
            Self::Tensorrt => "TensorrtExecutionProvider",
            Self::Cuda => "CUDAExecutionProvider",
            Self::Cpu => "CPUExecutionProvider",
        }
    }

    pub fn from_ort_name(name: &str) -> Option<Self> {
        Self::DEFAULT_CHAIN.into_iter().find(|p| p.ort_name() == name)
    }
}

/// Backbone configuration (all keys but `model` optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// An `.onnx` file, or a timm-named ViT/DeiT `.safetensors` file.
    pub model: PathBuf,
    /// Providers to use, in order. Absent: TensorRT → CUDA → CPU, each skipped if it cannot
    /// register. Present: each must register, or creation fails.
    #[serde(default)]
    pub providers: Option<Vec<ProviderName>>,
    /// GPU index for TensorRT and CUDA.
    #[serde(default)]
    pub device_id: i32,
    /// TensorRT in fp16 (default true).
    #[serde(default)]
    pub trt_fp16: Option<bool>,
    /// Where TensorRT caches its engines (default: `<cache dir>/irtdb/tensorrt`).
    #[serde(default)]
    pub trt_cache_dir: Option<PathBuf>,
    /// Intra-op threads for the CPU provider (0 or absent: ONNX Runtime's default).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Overrides of the preprocessing the plugin derives from the model (size always comes from
    /// the model). Any subset of `irtdb_core::Preprocess`'s fields.
    #[serde(default)]
    pub preprocess: Option<serde_json::Value>,
    /// For ONNX files whose token output does not reveal it: the number of leading non-patch
    /// tokens (1 for CLS, 2 for distilled DeiT).
    #[serde(default)]
    pub prefix_tokens: Option<usize>,
    /// For safetensors: number of attention heads when neither the file nor a sidecar tells.
    #[serde(default)]
    pub heads: Option<usize>,
    /// For ONNX files with a dynamic height and width: the `[H, W]` to run at (else the
    /// sidecar's `input_size`, else 224×224). Refused for a fixed-size model that differs.
    #[serde(default)]
    pub input_size: Option<[u32; 2]>,
    /// For ONNX files: the input layout when the shape does not tell (`nchw` or `nhwc`).
    #[serde(default)]
    pub layout: Option<Layout>,
    /// For ONNX files: the output to read (default: the first of rank 2 or 3).
    #[serde(default)]
    pub output: Option<String>,
    /// For float ONNX models that normalise their input themselves: feed pixel values 0–255
    /// with no mean/std (uint8 inputs always are fed so).
    #[serde(default)]
    pub raw_pixels: Option<bool>,
}

/// How an ONNX model's image input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}
