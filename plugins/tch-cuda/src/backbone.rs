//! The inference backbone: a [`Vit`] on CUDA or the CPU, behind the plugin ABI.

use irtdb_core::{BackboneInfo, OutputKind, Preprocess};
use irtdb_plugin_api::plugin::PluginBackbone;
use irtdb_plugin_api::BackboneConfig;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::net::Net;
use crate::resnet::ResNet;
use crate::vit::Vit;

/// Where the model runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA device 0 if libtorch sees one, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA (`device_id`); an error if libtorch sees no GPU.
    Cuda,
}

/// A backbone configuration as this plugin reads it: the shared keys of [`BackboneConfig`]
/// (`model`: a timm-named ViT/DeiT/ResNet `.safetensors` file; `input_size` resamples a ViT's
/// position embedding as timm's `resample_abs_pos_embed` does; `threads` sizes libtorch's
/// intra-op pool; `providers`, what `irtdb --providers` sends: `cuda` and `cpu` are understood,
/// the first one decides, and it overrides `device`) plus the plugin's own key `device`:
/// `{"model": "deit_small.safetensors", "device": "auto" | "cpu" | "cuda"}`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(try_from = "BackboneConfig")]
pub struct Config {
    pub base: BackboneConfig,
    pub device: DeviceChoice,
    /// `precision: "bf16"`: weights and activations in bfloat16 (oneDNN's bf16 kernels on CPUs
    /// with AVX512-BF16 or AMX; tensor cores on CUDA); fp32 otherwise.
    pub bf16: bool,
}

/// The plugin's own keys of a backbone configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default)]
    device: DeviceChoice,
}

impl TryFrom<BackboneConfig> for Config {
    type Error = String;
    fn try_from(base: BackboneConfig) -> Result<Self, String> {
        let own: Own = base.extra_as()?;
        let bf16 = match base.precision.as_deref() {
            None | Some("fp32") => false,
            Some("bf16") => true,
            Some(p) => {
                return Err(format!(
                    "precision {p}: the tch-cuda plugin runs fp32 or bf16; for an int8 CPU \
                     forward use the ort-tensorrt plugin with the same .safetensors weights \
                     (--plugin ort-tensorrt --precision int8)"
                ))
            }
        };
        Ok(Config { base, device: own.device, bf16 })
    }
}

impl Config {
    /// The device choice after `providers`.
    pub fn device_choice(&self) -> Result<DeviceChoice, String> {
        let Some(list) = &self.base.providers else { return Ok(self.device) };
        for p in list {
            if p != "cuda" && p != "cpu" {
                return Err(format!(
                    "provider '{p}': the tch-cuda plugin runs on cuda or cpu (TensorRT is the \
                     ort-tensorrt plugin's)"
                ));
            }
        }
        match list.first().map(String::as_str) {
            Some("cuda") => Ok(DeviceChoice::Cuda),
            Some(_) => Ok(DeviceChoice::Cpu),
            None => Err("providers: the list is empty; name cuda or cpu".into()),
        }
    }

    /// CUDA device index (with `device` `cuda` or `auto`).
    pub fn device_id(&self) -> usize {
        self.base.device_id.unwrap_or(0) as usize
    }
}

/// The device `choice` resolves to on this machine.
pub fn resolve_device(choice: DeviceChoice, device_id: usize) -> Result<Device, String> {
    let gpus = if tch::Cuda::is_available() { tch::Cuda::device_count() as usize } else { 0 };
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto if gpus == 0 => Ok(Device::Cpu),
        DeviceChoice::Auto | DeviceChoice::Cuda if device_id < gpus => Ok(Device::Cuda(device_id)),
        DeviceChoice::Auto | DeviceChoice::Cuda if gpus > 0 => {
            Err(format!("device_id {device_id}: libtorch sees {gpus} CUDA device(s)"))
        }
        _ => Err(format!(
            "device \"cuda\" was asked for but libtorch sees no CUDA device ({})",
            crate::cuda_note()
        )),
    }
}

/// The provider string reported in [`BackboneInfo::provider`]: `cuda:0` or `cpu`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Whether the safetensors file at `path` holds a ResNet (read from its header only).
fn is_resnet_file(path: &std::path::Path) -> Result<bool, String> {
    use std::io::Read;
    let bad = |e: &dyn std::fmt::Display| format!("model {}: {e}", path.display());
    let mut f = std::fs::File::open(path).map_err(|e| bad(&e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| bad(&format!("not a safetensors file ({e})")))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(&format!("not a safetensors file (header of {len} bytes)")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| bad(&format!("truncated safetensors header ({e})")))?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| bad(&format!("bad safetensors header: {e}")))?;
    let names: Vec<&str> = json.keys().map(String::as_str).collect();
    Ok(ResNet::is_resnet_checkpoint(&names))
}

/// A ViT/DeiT or ResNet loaded from a timm safetensors checkpoint.
#[derive(Debug)]
pub struct TchBackbone {
    net: Net,
    device: Device,
    info: BackboneInfo,
    /// The kind the network's parameters (and so its input) are in: Float or BFloat16.
    kind: Kind,
}

impl TchBackbone {
    pub fn new(config: &Config) -> Result<Self, String> {
        let path = &config.base.model;
        if !path.is_file() {
            return Err(format!("model file {} does not exist", path.display()));
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext != "safetensors" {
            return Err(format!(
                "model {}: the tch-cuda plugin reads timm-named ViT/DeiT/ResNet .safetensors files, not \
                 '.{ext}' (ONNX models run in the ort-tensorrt plugin)",
                path.display()
            ));
        }
        if let Some(t) = config.base.threads.filter(|&t| t > 0) {
            tch::set_num_threads(i32::try_from(t).unwrap_or(i32::MAX));
        }
        let device = resolve_device(config.device_choice()?, config.device_id())?;
        let (mut net, architecture, output, dim, size) = if is_resnet_file(path)? {
            if config.base.input_size.is_some() {
                return Err("--input-size applies to ViTs; this ResNet runs at 224".into());
            }
            let r = ResNet::from_safetensors(path, device)?;
            let (arch, dim) = (r.config.architecture(), r.config.num_features());
            // timm's resnet50 evaluates at 224 (its pretrained_cfg: crop 0.95 at 224 for the a1
            // weights; a model card or --preprocess says so).
            (Net::ResNet(r), arch, OutputKind::Pooled, dim, [224, 224])
        } else {
            let overrides =
                irtdb_onnx::ConfigOverrides { heads: config.base.heads, ..Default::default() };
            let mut weights =
                irtdb_onnx::VitWeights::load(path, &overrides).map_err(|e| e.to_string())?;
            if let Some([h, w]) = config.base.input_size {
                weights.resample_to([h as usize, w as usize]).map_err(|e| e.to_string())?;
            }
            let vit = Vit::from_weights(&weights, device)?;
            let c = &weights.config;
            let size = [c.img_size[0] as u32, c.img_size[1] as u32];
            let output = if c.fc_norm {
                OutputKind::Pooled
            } else {
                OutputKind::Tokens { prefix: c.prefix_tokens }
            };
            (Net::Vit(vit), c.architecture.clone(), output, c.dim, size)
        };
        let kind = if config.bf16 {
            net.to_bfloat16();
            Kind::BFloat16
        } else {
            Kind::Float
        };
        let mut preprocess = Preprocess::imagenet(size[0]);
        preprocess.size = size;
        for o in
            [irtdb_onnx::sidecar::preprocess_hint(path).as_ref(), config.base.preprocess.as_ref()]
                .into_iter()
                .flatten()
        {
            preprocess.apply_overrides(o).map_err(|e| format!("model {}: {e}", path.display()))?;
        }
        let info = BackboneInfo {
            architecture,
            preprocess,
            output,
            dim,
            provider: device_name(device),
            input: None,
        };
        Ok(TchBackbone { net, device, info, kind })
    }

    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The network, its device and the description (for the trainer).
    pub fn into_parts(self) -> (Net, Device, BackboneInfo) {
        (self.net, self.device, self.info)
    }

    /// The features of a batch `[B, 3, H, W]` as `info().output` says, on the CPU.
    pub fn features(&self, input: &[f32], shape: &[usize]) -> Result<Tensor, String> {
        let [h, w] = self.info.preprocess.size;
        if shape.len() != 4 || shape[1] != 3 || shape[2] != h as usize || shape[3] != w as usize {
            return Err(format!("input shape {shape:?}, expected [B, 3, {h}, {w}]"));
        }
        if input.len() != shape.iter().product::<usize>() {
            return Err(format!("input has {} values for shape {shape:?}", input.len()));
        }
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        let out = tch::no_grad(|| {
            // to_kind to the kind the tensor has already (fp32) returns it as it is.
            let x = Tensor::from_slice(input).reshape(&dims).to_device(self.device);
            let x = x.to_kind(self.kind);
            self.net.forward_features(&x).to_device(Device::Cpu).to_kind(Kind::Float)
        });
        Ok(out)
    }
}

impl PluginBackbone for TchBackbone {
    fn info(&self) -> BackboneInfo {
        self.info.clone()
    }

    fn forward(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let out = self.features(input, shape)?;
        let out_shape: Vec<usize> = out.size().iter().map(|&d| d as usize).collect();
        let data = Vec::<f32>::try_from(out.contiguous().view(-1)).map_err(|e| e.to_string())?;
        Ok((out_shape, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_rejects_typos() {
        let c: Config =
            serde_json::from_str(r#"{"model": "m.safetensors", "device": "cpu"}"#).unwrap();
        assert_eq!(c.device, DeviceChoice::Cpu);
        let c: Config = serde_json::from_str(r#"{"model": "m.safetensors"}"#).unwrap();
        assert_eq!(c.device, DeviceChoice::Auto);
        assert!(serde_json::from_str::<Config>(r#"{"model": "m", "devise": "cpu"}"#).is_err());
        let p = |json: &str| serde_json::from_str::<Config>(json).unwrap().device_choice();
        assert_eq!(p(r#"{"model": "m", "providers": ["cpu"]}"#), Ok(DeviceChoice::Cpu));
        assert_eq!(p(r#"{"model": "m", "providers": ["cuda", "cpu"]}"#), Ok(DeviceChoice::Cuda));
        assert!(p(r#"{"model": "m", "providers": ["tensorrt"]}"#)
            .unwrap_err()
            .contains("TensorRT"));
    }

    #[test]
    fn cpu_and_auto_resolve_without_a_gpu() {
        assert_eq!(resolve_device(DeviceChoice::Cpu, 0).unwrap(), Device::Cpu);
        if !tch::Cuda::is_available() {
            assert_eq!(resolve_device(DeviceChoice::Auto, 0).unwrap(), Device::Cpu);
            let e = resolve_device(DeviceChoice::Cuda, 0).unwrap_err();
            assert!(e.contains("no CUDA device"), "{e}");
        }
    }
}
