//! irtdb backend plugin: ViT/DeiT through libtorch (tch 0.24 = PyTorch 2.11.0), on CUDA or CPU.
//!
//! This is the foundation of `irtdb train --plugin tch-cuda` (issue 4). Through the ABI it serves
//! inference ([`CAP_INFER`]): a timm-named `.safetensors` ViT/DeiT becomes a [`vit::Vit`] whose
//! parameters carry timm's names, run in eval mode, returning tokens `[B, prefix + M, D]`. The
//! differentiable losses training needs are in [`loss`], tested against `irtdb_core::loss`;
//! [`train::TchTrainer`] implements `irtdb_core::Trainer` (AdamW, cross-batch memory, KoLeo,
//! timm-named checkpoints) for Rust callers until the ABI grows its training functions.
//!
//! Backbone config (JSON): `{"model": path, "device": "auto" | "cpu" | "cuda"}` plus optional
//! `device_id`, `heads`, `preprocess`, `threads` (see [`backbone::Config`]). The device in use is
//! reported as the backbone's `provider`: `cuda:0` or `cpu`.
//!
//! Building needs libtorch 2.11.0: `scripts/setup-libtorch.sh` (CPU) or `--cuda`; the build
//! script gives the library an rpath to it.

pub mod backbone;
pub mod loss;
pub mod train;
pub mod vit;

use irtdb_plugin_api::plugin::PluginBackend;
use irtdb_plugin_api::{PluginDescription, CAP_INFER};

pub use backbone::{Config, DeviceChoice, TchBackbone};
pub use train::{TchTrainer, TrainConfig};

/// The plugin type exported through the irtdb plugin ABI.
#[derive(Debug)]
pub struct TchPlugin;

/// What libtorch says about CUDA on this machine, for messages.
pub fn cuda_note() -> String {
    let linked = if cfg!(tch_cuda_linked) {
        "built with libtorch_cuda"
    } else {
        "built against a CPU-only libtorch (scripts/setup-libtorch.sh --cuda for GPUs)"
    };
    if tch::Cuda::is_available() {
        format!(
            "{linked}; {} CUDA device(s), cuDNN {}",
            tch::Cuda::device_count(),
            if tch::Cuda::cudnn_is_available() { "available" } else { "unavailable" }
        )
    } else {
        format!("{linked}; no CUDA device visible")
    }
}

impl PluginBackend for TchPlugin {
    const NAME: &'static std::ffi::CStr = c"tch-cuda";
    const VERSION: &'static std::ffi::CStr = c"0.1.0";
    const CAPABILITIES: u64 = CAP_INFER;
    type Backbone = TchBackbone;

    fn describe() -> PluginDescription {
        let mut available = Vec::new();
        if tch::Cuda::is_available() {
            available.push("cuda".to_string());
        }
        available.push("cpu".to_string());
        PluginDescription {
            backbones: vec!["vit / deit / deit3 (timm safetensors, distilled too)".into()],
            providers: vec!["cuda".into(), "cpu".into()],
            available_providers: available,
            notes: vec![format!("libtorch 2.11.0 via tch 0.24.0; {}", cuda_note())],
        }
    }

    fn create(config_json: &str) -> Result<TchBackbone, String> {
        let config: Config = serde_json::from_str(config_json)
            .map_err(|e| format!("tch-cuda: invalid backbone config: {e}"))?;
        TchBackbone::new(&config)
    }
}

irtdb_plugin_api::export_plugin!(TchPlugin);
