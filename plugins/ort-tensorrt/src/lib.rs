//! irtdb backend plugin: inference through ONNX Runtime.
//!
//! Execution providers, by default tried in order: TensorRT (fp16, engine cache) → CUDA → CPU. A
//! provider the user asks for explicitly (`"providers": ["cuda"]`) that fails to register is an
//! error, never a silent fallback; the provider that was registered first is reported in the
//! backbone's info (`provider`), and so shown by `irtdb embed`/`index`.
//!
//! Models:
//! - an ONNX file whose first input is images `[B, 3, H, W]` (H, W read from the model) and whose
//!   first output is tokens `[B, prefix + M, D]` or a pooled `[B, D]`;
//! - a timm-named ViT/DeiT `.safetensors` file, turned into an ONNX graph in memory by
//!   `irtdb-onnx`.
//!
//! ONNX Runtime itself is loaded at run time (`ort`'s `load-dynamic`), see the `runtime` module.
//! CPU sessions keep their optimised graph in a cache (`<cache dir>/irtdb/ort-cache`), so that a
//! cold start skips ONNX Runtime's graph optimisation; see the `cache` module.

mod backbone;
mod cache;
mod config;
mod runtime;

use irtdb_plugin_api::plugin::PluginBackend;
use irtdb_plugin_api::{BackboneConfig, PluginDescription, CAP_INFER};

pub use backbone::OrtBackbone;
pub use config::{Config, OrtOptions, ProviderName};

/// The plugin type exported through the irtdb plugin ABI.
#[derive(Debug)]
pub struct OrtPlugin;

impl PluginBackend for OrtPlugin {
    const NAME: &'static std::ffi::CStr = c"ort-tensorrt";
    const VERSION: &'static std::ffi::CStr = c"0.1.0";
    const CAPABILITIES: u64 = CAP_INFER;
    type Backbone = OrtBackbone;
    type Trainer = irtdb_plugin_api::plugin::NoTrainer;

    fn describe() -> PluginDescription {
        let mut d = PluginDescription {
            backbones: vec![
                "onnx (any [B,3,H,W] → tokens or pooled)".into(),
                "vit / deit (timm safetensors, tiny/small/base, distilled)".into(),
            ],
            providers: ProviderName::DEFAULT_CHAIN.iter().map(|p| p.as_str().to_string()).collect(),
            ..Default::default()
        };
        match runtime::environment() {
            Ok(rt) => {
                d.available_providers = runtime::available_providers(&rt.library)
                    .into_iter()
                    .filter_map(|p| ProviderName::from_ort_name(&p).map(|n| n.as_str().to_string()))
                    .collect();
                d.notes.push(format!("ONNX Runtime loaded from {}", rt.library.display()));
            }
            Err(e) => d.notes.push(e),
        }
        d.notes.push(cache::describe());
        d
    }

    fn create(config: BackboneConfig) -> Result<OrtBackbone, String> {
        let config = Config::new(config).map_err(|e| format!("ort-tensorrt: {e}"))?;
        OrtBackbone::new(&config)
    }
}

irtdb_plugin_api::export_plugin!(OrtPlugin);
