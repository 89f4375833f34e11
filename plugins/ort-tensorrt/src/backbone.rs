//! One model in one ONNX Runtime session.

use irtdb_core::{BackboneInfo, OutputKind, Preprocess};
use irtdb_plugin_api::plugin::PluginBackbone;
use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use crate::config::{Config, ProviderName};
use crate::runtime;

/// A model loaded into an ONNX Runtime session.
#[derive(Debug)]
pub struct OrtBackbone {
    session: Session,
    input_name: String,
    info: BackboneInfo,
}

/// How a model file was turned into ONNX bytes, and what it says about itself.
struct LoadedModel {
    onnx: Vec<u8>,
    architecture: String,
    prefix_tokens: Option<usize>,
    preprocess_hint: Option<serde_json::Value>,
}

fn load_model(config: &Config) -> Result<LoadedModel, String> {
    let path = &config.model;
    if !path.is_file() {
        return Err(format!("model file {} does not exist", path.display()));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "onnx" => Ok(LoadedModel {
            onnx: std::fs::read(path).map_err(|e| format!("cannot read model {}: {e}", path.display()))?,
            architecture: "onnx".into(),
            prefix_tokens: config.prefix_tokens,
            preprocess_hint: irtdb_onnx::sidecar::preprocess_hint(path),
        }),
        "safetensors" => {
            let overrides = irtdb_onnx::ConfigOverrides { heads: config.heads, ..Default::default() };
            let weights = irtdb_onnx::VitWeights::load(path, &overrides).map_err(|e| e.to_string())?;
            let onnx = irtdb_onnx::build_vit_onnx(&weights, irtdb_onnx::GraphOutput::Tokens)
                .map_err(|e| e.to_string())?;
            Ok(LoadedModel {
                onnx,
                architecture: weights.config.architecture.clone(),
                prefix_tokens: Some(weights.config.prefix_tokens),
                preprocess_hint: irtdb_onnx::sidecar::preprocess_hint(path),
            })
        }
        _ => Err(format!(
            "model {}: unknown model format '.{ext}'; the ort-tensorrt plugin reads .onnx files and \
             timm-named ViT/DeiT .safetensors files",
            path.display()
        )),
    }
}

fn register_providers(
    mut builder: ort::session::builder::SessionBuilder,
    config: &Config,
) -> Result<(ort::session::builder::SessionBuilder, ProviderName), String> {
    let explicit = config.providers.is_some();
    let chain = config.providers.clone().unwrap_or_else(|| ProviderName::DEFAULT_CHAIN.to_vec());
    if chain.is_empty() {
        return Err("providers: the list is empty; name at least one of tensorrt, cuda, cpu".into());
    }
    let mut first_ok = None;
    let mut skipped = Vec::new();
    for p in chain {
        let result = match p {
            ProviderName::Tensorrt => {
                let cache = config
                    .trt_cache_dir
                    .clone()
                    .or_else(|| dirs::cache_dir().map(|d| d.join("irtdb").join("tensorrt")));
                let mut ep = ort::ep::TensorRT::default()
                    .with_device_id(config.device_id)
                    .with_fp16(config.trt_fp16.unwrap_or(true));
                if let Some(dir) = cache {
                    let _ = std::fs::create_dir_all(&dir);
                    ep = ep
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display().to_string());
                }
                available(p).and_then(|()| ep.register(&mut builder).map_err(|e| e.to_string()))
            }
            ProviderName::Cuda => available(p).and_then(|()| {
                ort::ep::CUDA::default()
                    .with_device_id(config.device_id)
                    .register(&mut builder)
                    .map_err(|e| e.to_string())
            }),
            ProviderName::Cpu => {
                ort::ep::CPU::default().register(&mut builder).map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => {
                first_ok.get_or_insert(p);
            }
            Err(e) if explicit => {
                return Err(format!(
                    "execution provider '{}' was asked for but could not be registered: {e}",
                    p.as_str()
                ))
            }
            Err(e) => skipped.push(format!("{}: {e}", p.as_str())),
        }
    }
    let used = first_ok.ok_or_else(|| {
        format!("no execution provider could be registered ({})", skipped.join("; "))
    })?;
    Ok((builder, used))
}

/// Checks that the loaded ONNX Runtime was built with the provider.
fn available(p: ProviderName) -> Result<(), String> {
    let ok = match p {
        ProviderName::Tensorrt => ort::ep::TensorRT::is_available(),
        ProviderName::Cuda => ort::ep::CUDA::is_available(),
        ProviderName::Cpu => Ok(true),
    };
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "this ONNX Runtime library was not built with {} (the CPU wheel onnxruntime has only \
             CPU; GPU providers need onnxruntime-gpu's library and the CUDA/TensorRT libraries)",
            p.ort_name()
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl OrtBackbone {
    pub fn new(config: &Config) -> Result<Self, String> {
        let rt = runtime::environment()?;
        let model = load_model(config)?;
        let path = config.model.display().to_string();
        let mut builder = Session::builder(&rt.env)
            .map_err(|e| e.to_string())?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| e.to_string())?;
        if let Some(t) = config.threads.filter(|&t| t > 0) {
            builder = builder.with_intra_threads(t).map_err(|e| e.to_string())?;
        }
        let (mut builder, provider) = register_providers(builder, config)?;
        let session = builder
            .commit_from_memory(&model.onnx)
            .map_err(|e| format!("ONNX Runtime cannot load model {path}: {e}"))?;

        // Input: images [B, 3, H, W] with fixed H, W.
        let input = session.inputs().first().ok_or_else(|| format!("model {path} has no input"))?;
        let input_name = input.name().to_string();
        let shape: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.to_vec())
            .ok_or_else(|| format!("model {path}: input '{input_name}' is not a tensor"))?;
        if shape.len() != 4 || (shape[1] != 3 && shape[1] != -1) {
            return Err(format!(
                "model {path}: input '{input_name}' has shape {shape:?} (rank {}); irtdb feeds \
                 images as [batch, 3, height, width]: export the model with such an input",
                shape.len()
            ));
        }
        if shape[2] <= 0 || shape[3] <= 0 {
            return Err(format!(
                "model {path}: input '{input_name}' has a dynamic image size {shape:?}; export it \
                 with a fixed height and width"
            ));
        }
        let size = [shape[2] as u32, shape[3] as u32];
        let mut preprocess = Preprocess::imagenet(size[0]);
        preprocess.size = size;
        for o in [model.preprocess_hint.as_ref(), config.preprocess.as_ref()].into_iter().flatten()
        {
            preprocess.apply_overrides(o).map_err(|e| format!("model {path}: {e}"))?;
        }

        let mut backbone = OrtBackbone {
            session,
            input_name,
            info: BackboneInfo {
                architecture: model.architecture,
                preprocess,
                output: OutputKind::Pooled,
                dim: 0,
                provider: provider.ort_name().to_string(),
            },
        };
        // The output layout: from the model's declared output shape when every dimension but
        // the batch is fixed (irtdb's own graphs, most exports), else from one forward pass of a
        // blank image (which costs a forward, ~0.25 s for DeiT-S on a CPU).
        let declared: Option<Vec<usize>> = backbone
            .session
            .outputs()
            .first()
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.to_vec()))
            .filter(|s| (2..=3).contains(&s.len()) && s[1..].iter().all(|&d| d > 0))
            .map(|s| std::iter::once(1).chain(s[1..].iter().map(|&d| d as usize)).collect());
        let out_shape = match declared {
            Some(shape) => shape,
            None => {
                let probe = vec![0f32; 3 * size[0] as usize * size[1] as usize];
                backbone
                    .run(&probe, &[1, 3, size[0] as usize, size[1] as usize])
                    .map_err(|e| format!("model {path}: test forward failed: {e}"))?
                    .0
            }
        };
        backbone.info.output = match out_shape.len() {
            2 => OutputKind::Pooled,
            3 => {
                let t = out_shape[1];
                let prefix = match model.prefix_tokens {
                    Some(p) => p,
                    None => guess_prefix(t).ok_or_else(|| {
                        format!(
                            "model {path}: output has {t} tokens, which is not a square grid plus 1 \
                             or 2 prefix tokens; set prefix_tokens in the plugin config"
                        )
                    })?,
                };
                if prefix >= t {
                    return Err(format!("model {path}: prefix_tokens {prefix} ≥ token count {t}"));
                }
                OutputKind::Tokens { prefix }
            }
            _ => {
                return Err(format!(
                    "model {path}: output has shape {out_shape:?}; irtdb needs tokens [B, T, D] or \
                     a pooled [B, D]"
                ))
            }
        };
        backbone.info.dim = *out_shape.last().expect("rank >= 2");
        Ok(backbone)
    }

    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), String> {
        let tensor =
            TensorRef::from_array_view((shape.to_vec(), input)).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| e.to_string())?;
        let (out_shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("first output is not an f32 tensor: {e}"))?;
        Ok((out_shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
    }
}

/// 1 + g² tokens → 1 (CLS); 2 + g² → 2 (CLS + distillation).
fn guess_prefix(tokens: usize) -> Option<usize> {
    let is_square = |m: usize| {
        let g = (m as f64).sqrt().round() as usize;
        m > 0 && g * g == m
    };
    [1, 2].into_iter().find(|&p| tokens > p && is_square(tokens - p))
}

impl PluginBackbone for OrtBackbone {
    fn info(&self) -> BackboneInfo {
        self.info.clone()
    }

    fn forward(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let [h, w] = self.info.preprocess.size;
        if shape.len() != 4 || shape[1] != 3 || shape[2] != h as usize || shape[3] != w as usize {
            return Err(format!("input shape {shape:?}, expected [B, 3, {h}, {w}]"));
        }
        self.run(input, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_guess() {
        assert_eq!(guess_prefix(197), Some(1));
        assert_eq!(guess_prefix(198), Some(2));
        assert_eq!(guess_prefix(17), Some(1));
        assert_eq!(guess_prefix(50), Some(1));
        assert_eq!(guess_prefix(100), None);
    }
}
