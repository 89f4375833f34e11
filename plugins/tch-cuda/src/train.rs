//! A first trainer (IRT_L / IRT_R): not yet behind the plugin ABI (that vtable extension is the
//! lead's design), but the whole step the ABI will call, usable and tested from Rust.
//!
//! One step (shared/PAPER.md): tokens → class token (mean of class and distillation tokens for
//! a distilled model) → L2 normalisation → `L = L_contr(batch) + L_contr(batch, memory) +
//! λ·L_KoLeo` → AdamW. The batch's detached embeddings then enter the cross-batch memory (FIFO,
//! newest first). Saving writes the VarStore under timm's names.

use std::path::{Path, PathBuf};

use irtdb_core::{BackboneInfo, Error, Result, StepStats, Trainer};
use ndarray::{Array2, ArrayView4};
use serde::{Deserialize, Serialize};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use crate::backbone::{Config as BackboneConfig, DeviceChoice, TchBackbone};
use crate::loss;
use crate::vit::Vit;

/// Training configuration (JSON; defaults are the paper's category-level recipe).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// The starting weights: a timm-named ViT/DeiT `.safetensors` file.
    pub model: PathBuf,
    #[serde(default)]
    pub device: DeviceChoice,
    #[serde(default)]
    pub device_id: usize,
    #[serde(default)]
    pub heads: Option<usize>,
    #[serde(default)]
    pub preprocess: Option<serde_json::Value>,
    /// Contrastive margin β.
    #[serde(default = "defaults::beta")]
    pub beta: f64,
    /// KoLeo weight λ (0: IRT_L).
    #[serde(default = "defaults::lambda")]
    pub lambda: f64,
    #[serde(default = "defaults::koleo_eps")]
    pub koleo_eps: f64,
    /// Cross-batch memory size in embeddings (0: no memory).
    #[serde(default)]
    pub memory: usize,
    /// AdamW weight decay (applied to every parameter, as `torch.optim.AdamW(model.parameters())`).
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
}

mod defaults {
    pub fn beta() -> f64 {
        0.5
    }
    pub fn lambda() -> f64 {
        0.7
    }
    pub fn koleo_eps() -> f64 {
        1e-8
    }
    pub fn weight_decay() -> f64 {
        5e-4
    }
}

/// A ViT, its AdamW state and the cross-batch memory.
#[derive(Debug)]
pub struct TchTrainer {
    vit: Vit,
    device: Device,
    info: BackboneInfo,
    opt: nn::Optimizer,
    config: TrainConfig,
    mem: Tensor,
    mem_labels: Tensor,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn l2_normalize(z: &Tensor) -> Tensor {
    z / z.square().sum_dim_intlist(-1, true, z.kind()).sqrt().clamp_min(1e-12)
}

impl TchTrainer {
    pub fn new(config: TrainConfig) -> Result<Self> {
        // The backbone does the loading, device choice and BackboneInfo; take its network.
        let bb = TchBackbone::new(&BackboneConfig {
            model: config.model.clone(),
            device: config.device,
            device_id: config.device_id,
            heads: config.heads,
            preprocess: config.preprocess.clone(),
            threads: None,
            providers: None,
        })
        .map_err(backend)?;
        let (vit, device, info) = bb.into_parts();
        // The learning rate is set by every `step`.
        let opt = nn::AdamW { wd: config.weight_decay, ..Default::default() }
            .build(&vit.vs, 0.0)
            .map_err(backend)?;
        let d = vit.config.dim as i64;
        Ok(TchTrainer {
            mem: Tensor::zeros([0, d], (Kind::Float, device)),
            mem_labels: Tensor::zeros([0], (Kind::Int64, device)),
            vit,
            device,
            info,
            opt,
            config,
        })
    }

    /// Embeddings in the memory now.
    pub fn memory_len(&self) -> usize {
        self.mem.size()[0] as usize
    }

    fn input(&self, images: ArrayView4<'_, f32>) -> Result<Tensor> {
        let (b, c, h, w) = images.dim();
        let [eh, ew] = self.info.preprocess.size;
        if c != 3 || h != eh as usize || w != ew as usize {
            return Err(Error::Shape {
                what: "trainer input",
                expected: format!("[B, 3, {eh}, {ew}]"),
                got: vec![b, c, h, w],
            });
        }
        let data = images.as_standard_layout();
        let x = Tensor::from_slice(data.as_slice().expect("standard layout"))
            .reshape([b as i64, 3, h as i64, w as i64]);
        Ok(x.to_device(self.device))
    }

    fn enqueue(&mut self, z: &Tensor, labels: &Tensor) {
        let k = self.config.memory as i64;
        if k == 0 {
            return;
        }
        let keep = |t: Tensor| {
            let n = t.size()[0].min(k);
            t.narrow(0, 0, n)
        };
        self.mem = keep(Tensor::cat(&[&z.detach(), &self.mem], 0));
        self.mem_labels = keep(Tensor::cat(&[labels, &self.mem_labels], 0));
    }
}

impl Trainer for TchTrainer {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn step(&mut self, images: ArrayView4<'_, f32>, labels: &[i64], lr: f32) -> Result<StepStats> {
        if labels.len() != images.dim().0 {
            return Err(Error::Invalid(format!(
                "{} labels for a batch of {} images",
                labels.len(),
                images.dim().0
            )));
        }
        let x = self.input(images)?;
        let y = Tensor::from_slice(labels).to_device(self.device);
        let c = &self.config;
        let z = l2_normalize(&self.vit.pool(&self.vit.forward_tokens(&x)));
        let batch_term = loss::contrastive(&z, &y, c.beta);
        // Not `+=`: an in-place add on a tensor of the autograd graph is best avoided.
        let contr = match self.memory_len() {
            0 => batch_term,
            _ => {
                batch_term
                    + loss::contrastive_against_memory(&z, &y, &self.mem, &self.mem_labels, c.beta)
            }
        };
        let koleo = loss::koleo(&z, c.koleo_eps);
        let total = &contr + &koleo * c.lambda;
        let stats = StepStats {
            loss: loss::value(&total) as f32,
            contrastive: loss::value(&contr) as f32,
            koleo: loss::value(&koleo) as f32,
        };
        if !stats.loss.is_finite() {
            return Err(Error::Invalid(format!("loss is not finite: {stats:?}")));
        }
        self.opt.set_lr(f64::from(lr));
        self.opt.backward_step(&total);
        self.enqueue(&z, &y);
        Ok(stats)
    }

    fn embed(&mut self, images: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let x = self.input(images)?;
        let z = tch::no_grad(|| l2_normalize(&self.vit.pool(&self.vit.forward_tokens(&x))));
        let (n, d) = z.size2().map_err(backend)?;
        let data = Vec::<f32>::try_from(z.to_device(Device::Cpu).contiguous().view(-1))
            .map_err(backend)?;
        Array2::from_shape_vec((n as usize, d as usize), data).map_err(backend)
    }

    /// The weights under timm's names, F32. (A DeiT-3 checkpoint, whose `pos_embed` had no
    /// prefix positions, is saved in the padded `[1, T, D]` layout irtdb-onnx normalises to.)
    fn save(&mut self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = self
            .vit
            .vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k, v.detach().to_device(Device::Cpu).contiguous()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&named, path).map_err(backend)
    }
}
