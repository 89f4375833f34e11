//! irtdb backend plugin: ViT/DeiT through libtorch (tch 0.24 = PyTorch 2.11.0), on CUDA or CPU.
//!
//! This is the foundation of `irtdb train --plugin tch-cuda` (issue 4). Through the ABI it serves
//! inference ([`CAP_INFER`]): a timm-named `.safetensors` ViT/DeiT becomes a [`vit::Vit`] whose
//! parameters carry timm's names, run in eval mode, returning tokens `[B, prefix + M, D]`. The
//! differentiable losses training needs are in [`loss`], tested against `irtdb_core::loss`;
//! [`train::TchTrainer`] takes one training step (contrastive + cross-batch memory + KoLeo,
//! AdamW, timm-named checkpoints, resumable state) and is served through the ABI's `trainer_*`
//! functions ([`CAP_TRAIN`]); `irtdb train` drives it.
//!
//! Backbone config (JSON): `{"model": path, "device": "auto" | "cpu" | "cuda"}` plus the
//! optional shared keys of [`irtdb_plugin_api::BackboneConfig`] (see [`backbone::Config`]). The device in use is
//! reported as the backbone's `provider`: `cuda:0` or `cpu`.
//!
//! Building needs libtorch 2.11.0: `scripts/setup-libtorch.sh` (CPU) or `--cuda`; the build
//! script gives the library an rpath to it.

pub mod backbone;
pub mod loss;
pub mod net;
pub mod resnet;
pub mod train;
pub mod vit;

use irtdb_plugin_api::plugin::{PluginBackend, PluginTrainer};
use irtdb_plugin_api::{BackboneConfig, PluginDescription, TrainerConfig, CAP_INFER, CAP_TRAIN};

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
    const CAPABILITIES: u64 = CAP_INFER | CAP_TRAIN;
    type Backbone = TchBackbone;
    type Trainer = TchTrainer;

    fn describe() -> PluginDescription {
        let mut available = Vec::new();
        if tch::Cuda::is_available() {
            available.push("cuda".to_string());
        }
        available.push("cpu".to_string());
        PluginDescription {
            backbones: vec![
                "vit / deit / deit3 (timm safetensors, distilled too)".into(),
                "resnet50 and other bottleneck resnets + GeM (timm safetensors)".into(),
            ],
            providers: vec!["cuda".into(), "cpu".into()],
            available_providers: available,
            notes: vec![format!("libtorch 2.11.0 via tch 0.24.0; {}", cuda_note())],
        }
    }

    fn create(config: BackboneConfig) -> Result<TchBackbone, String> {
        let config = Config::try_from(config)
            .map_err(|e| format!("tch-cuda: invalid backbone config: {e}"))?;
        TchBackbone::new(&config)
    }

    fn create_trainer(config: TrainerConfig) -> Result<TchTrainer, String> {
        let config = TrainConfig::try_from(config)
            .map_err(|e| format!("tch-cuda: invalid trainer config: {e}"))?;
        TchTrainer::new(config).map_err(|e| e.to_string())
    }
}

/// The ABI face of [`TchTrainer`]: the same calls with raw buffers and string errors.
impl PluginTrainer for TchTrainer {
    fn info(&self) -> irtdb_core::BackboneInfo {
        irtdb_core::Trainer::info(self).clone()
    }

    fn step(
        &mut self,
        input: &[f32],
        shape: &[usize],
        labels: &[i64],
        lr: f32,
    ) -> Result<irtdb_core::StepStats, String> {
        let x = batch_view(input, shape)?;
        irtdb_core::Trainer::step(self, x, labels, lr).map_err(|e| e.to_string())
    }

    fn embed(&mut self, input: &[f32], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), String> {
        let x = batch_view(input, shape)?;
        let z = irtdb_core::Trainer::embed(self, x).map_err(|e| e.to_string())?;
        let (n, d) = z.dim();
        Ok((vec![n, d], z.into_raw_vec_and_offset().0))
    }

    fn save_weights(&mut self, path: &std::path::Path) -> Result<(), String> {
        irtdb_core::Trainer::save_weights(self, path).map_err(|e| e.to_string())
    }

    fn save_state(&mut self, path: &std::path::Path) -> Result<(), String> {
        irtdb_core::Trainer::save_state(self, path).map_err(|e| e.to_string())
    }

    fn load_state(&mut self, path: &std::path::Path) -> Result<(), String> {
        irtdb_core::Trainer::load_state(self, path).map_err(|e| e.to_string())
    }
}

fn batch_view<'a>(
    input: &'a [f32],
    shape: &[usize],
) -> Result<ndarray::ArrayView4<'a, f32>, String> {
    let &[b, c, h, w] = shape else {
        return Err(format!("input shape {shape:?}: expected [B, 3, H, W]"));
    };
    ndarray::ArrayView4::from_shape((b, c, h, w), input).map_err(|e| format!("input: {e}"))
}

irtdb_plugin_api::export_plugin!(TchPlugin);
