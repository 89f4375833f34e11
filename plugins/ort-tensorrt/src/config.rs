//! How this plugin reads the [`BackboneConfig`] the host passes to `backbone_create`.

use std::path::PathBuf;

use irtdb_plugin_api::BackboneConfig;
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

/// The ort plugin's own keys (the `extra` of [`BackboneConfig`]); all optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrtOptions {
    /// TensorRT in fp16 (default true).
    #[serde(default)]
    pub trt_fp16: Option<bool>,
    /// Where TensorRT caches its engines (default: `<cache dir>/irtdb/tensorrt`).
    #[serde(default)]
    pub trt_cache_dir: Option<PathBuf>,
    /// For ONNX files whose token output does not reveal it: the number of leading non-patch
    /// tokens (1 for CLS, 2 for distilled DeiT).
    #[serde(default)]
    pub prefix_tokens: Option<usize>,
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

/// A backbone configuration as this plugin reads it: the shared keys (`model` an `.onnx` file
/// or a timm-named ViT/DeiT `.safetensors` file; `input_size` for ONNX files with a dynamic
/// height and width, else the sidecar's, else 224×224, refused for a fixed-size model that
/// differs; `heads` for safetensors), the providers by name, and the plugin's own keys.
#[derive(Clone, Debug)]
pub struct Config {
    pub base: BackboneConfig,
    /// Providers to use, in order. Absent: TensorRT → CUDA → CPU, each skipped if it cannot
    /// register. Present: each must register, or creation fails.
    pub providers: Option<Vec<ProviderName>>,
    /// GPU index for TensorRT and CUDA.
    pub device_id: i32,
    pub own: OrtOptions,
}

impl Config {
    /// Checks the provider names and reads the plugin's own keys.
    pub fn new(base: BackboneConfig) -> Result<Self, String> {
        let providers = match &base.providers {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        ProviderName::DEFAULT_CHAIN
                            .into_iter()
                            .find(|p| p.as_str() == n)
                            .ok_or_else(|| {
                                format!("provider '{n}': ort-tensorrt knows tensorrt, cuda and cpu")
                            })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let device_id = i32::try_from(base.device_id.unwrap_or(0))
            .map_err(|_| format!("device_id {}: too large", base.device_id.unwrap_or(0)))?;
        let own = base.extra_as()?;
        Ok(Config { base, providers, device_id, own })
    }
}

/// How an ONNX model's image input is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}
