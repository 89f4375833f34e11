//! The networks the plugin serves, behind one type: a timm ViT/DeiT ([`Vit`]) or the paper's
//! convolutional baseline, a ResNet with GeM pooling ([`ResNet`]). The backbone and the trainer
//! see only [`Net`].

use std::path::Path;

use tch::{nn, Device, Tensor};

use crate::resnet::ResNet;
use crate::vit::Vit;

/// A network whose parameters carry timm's names.
#[derive(Debug)]
pub enum Net {
    Vit(Vit),
    ResNet(ResNet),
}

impl Net {
    /// Every parameter (and buffer), under its timm name.
    pub fn vs(&self) -> &nn::VarStore {
        match self {
            Net::Vit(v) => &v.vs,
            Net::ResNet(r) => &r.vs,
        }
    }

    /// Converts every floating-point parameter and buffer to bfloat16 (inference only: the
    /// trainer keeps fp32 master weights).
    pub fn to_bfloat16(&mut self) {
        match self {
            Net::Vit(v) => v.vs.bfloat16(),
            Net::ResNet(r) => r.vs.bfloat16(),
        }
    }

    /// What the plugin's backbone returns for a batch: a ViT's tokens `[B, prefix + M, D]`
    /// (the host pools them as the user chose) or an average-pooled ViT's own descriptor, a
    /// ResNet's GeM descriptor `[B, C]`.
    pub fn forward_features(&self, x: &Tensor) -> Tensor {
        match self {
            Net::Vit(v) => v.forward_features(x),
            Net::ResNet(r) => r.forward_pooled(x),
        }
    }

    /// The training descriptor before L2 normalisation `[B, D]`: a ViT's class token (the mean
    /// of class and distillation tokens when distilled), as the paper trains it; a ResNet's GeM.
    pub fn forward_pooled(&self, x: &Tensor) -> Tensor {
        match self {
            Net::Vit(v) => v.pool(&v.forward_tokens(x)),
            Net::ResNet(r) => r.forward_pooled(x),
        }
    }

    /// Writes every tensor of the VarStore under its timm name, F32 on the CPU, sorted by name.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), String> {
        let mut named: Vec<(String, Tensor)> = self
            .vs()
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&named, path)
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }
}
