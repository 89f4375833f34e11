//! The trainer (IRT_L / IRT_R), served through the plugin ABI's `trainer_*` functions.
//!
//! One step (shared/PAPER.md): tokens → class token (mean of class and distillation tokens for
//! a distilled model) → L2 normalisation → `L = L_contr(batch) + L_contr(batch, memory) +
//! λ·L_KoLeo` → AdamW. The batch's detached embeddings then enter the cross-batch memory (FIFO,
//! newest first). The training *loop* (sampling, augmentation, schedule, evaluation,
//! checkpoints) is the host's: this type only knows how to take one step.
//!
//! AdamW is written out here rather than taken from `tch::nn::Optimizer`, for two reasons:
//! its moments must be saved and restored for `--resume` (tch's optimiser does not expose
//! them), and, as timm does, biases, norm parameters and the token/position embeddings are not
//! decayed. The update is `torch.optim.AdamW`'s, term for term.
//!
//! On CUDA the forward runs under autocast (fp16) with dynamic loss scaling, as
//! `torch.cuda.amp.GradScaler` does: the loss is multiplied by a scale before backward, a step
//! whose gradients overflow is skipped and halves the scale, and 2000 clean steps double it.

use std::collections::BTreeMap;
use std::path::Path;

use irtdb_core::{BackboneInfo, Error, OutputKind, Result, StepStats, Trainer};
use irtdb_plugin_api::{BackboneConfig, TrainerConfig};
use ndarray::{Array2, ArrayView4};
use serde::Deserialize;
use tch::{Device, Kind, Tensor};

use crate::backbone::{Config, DeviceChoice, TchBackbone};
use crate::loss;
use crate::net::Net;

/// A training configuration as this plugin reads it: the shared keys of [`TrainerConfig`]
/// (the starting weights, a timm-named ViT/DeiT or ResNet `.safetensors` file, and how to run
/// them; `input_size` trains a ViT at that `[H, W]`, its starting position embedding resampled
/// and the weights saved at the trained size), with every absent recipe value replaced by the
/// paper's category-level recipe, plus the plugin's own keys (`koleo_eps`, `adam_beta1`,
/// `adam_beta2`, `adam_eps`, `amp`).
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "TrainerConfig")]
pub struct TrainConfig {
    /// The network: model, heads, preprocessing, threads, input size, device id.
    pub base: BackboneConfig,
    pub device: DeviceChoice,
    /// Contrastive margin β.
    pub beta: f64,
    /// KoLeo weight λ (0: IRT_L).
    pub lambda: f64,
    pub koleo_eps: f64,
    /// Cross-batch memory size in embeddings (0: no memory).
    pub memory: usize,
    /// AdamW weight decay, applied to weight matrices and convolution kernels only.
    pub weight_decay: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Mixed precision on CUDA (ignored on the CPU).
    pub amp: bool,
}

/// The plugin's own keys of a training configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Own {
    #[serde(default = "defaults::koleo_eps")]
    koleo_eps: f64,
    #[serde(default = "defaults::beta1")]
    adam_beta1: f64,
    #[serde(default = "defaults::beta2")]
    adam_beta2: f64,
    #[serde(default = "defaults::adam_eps")]
    adam_eps: f64,
    #[serde(default = "defaults::amp")]
    amp: bool,
}

impl TryFrom<TrainerConfig> for TrainConfig {
    type Error = String;
    fn try_from(t: TrainerConfig) -> Result<Self, String> {
        let own: Own = t.extra_as()?;
        let device = match t.device.as_deref() {
            None | Some("auto") => DeviceChoice::Auto,
            Some("cpu") => DeviceChoice::Cpu,
            Some("cuda") => DeviceChoice::Cuda,
            Some(other) => {
                return Err(format!(
                    "device '{other}': the tch-cuda plugin knows auto, cpu and cuda"
                ))
            }
        };
        Ok(TrainConfig {
            base: BackboneConfig { extra: Default::default(), ..t.backbone },
            device,
            beta: t.beta.unwrap_or_else(defaults::beta),
            lambda: t.lambda.unwrap_or_else(defaults::lambda),
            koleo_eps: own.koleo_eps,
            memory: t.memory.unwrap_or(0),
            weight_decay: t.weight_decay.unwrap_or_else(defaults::weight_decay),
            adam_beta1: own.adam_beta1,
            adam_beta2: own.adam_beta2,
            adam_eps: own.adam_eps,
            amp: own.amp,
        })
    }
}

mod defaults {
    pub fn beta() -> f64 {
        irtdb_core::recipe::BETA
    }
    pub fn lambda() -> f64 {
        irtdb_core::recipe::LAMBDA
    }
    pub fn koleo_eps() -> f64 {
        1e-8
    }
    pub fn weight_decay() -> f64 {
        irtdb_core::recipe::WEIGHT_DECAY
    }
    pub fn beta1() -> f64 {
        0.9
    }
    pub fn beta2() -> f64 {
        0.999
    }
    pub fn adam_eps() -> f64 {
        1e-8
    }
    pub fn amp() -> bool {
        true
    }
}

/// One trainable tensor and its AdamW moments.
#[derive(Debug)]
struct Param {
    name: String,
    value: Tensor,
    m: Tensor,
    v: Tensor,
    decay: bool,
}

/// `GradScaler`'s defaults.
const SCALE_INIT: f64 = 65536.0;
const SCALE_GROWTH_INTERVAL: u64 = 2000;

/// A network, its AdamW state and the cross-batch memory.
#[derive(Debug)]
pub struct TchTrainer {
    net: Net,
    device: Device,
    info: BackboneInfo,
    config: TrainConfig,
    params: Vec<Param>,
    /// Optimiser steps taken (AdamW's bias correction `t`).
    steps: i64,
    mem: Tensor,
    mem_labels: Tensor,
    /// Loss scale (mixed precision only) and clean steps since it last changed.
    scale: f64,
    clean_steps: u64,
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn l2_normalise(z: &Tensor) -> Tensor {
    z / z.square().sum_dim_intlist(-1, true, z.kind()).sqrt().clamp_min(1e-12)
}

/// timm's rule (`param_groups_weight_decay` + ViT's `no_weight_decay`): no decay for 1-D
/// tensors (biases, norm scales, layer-scale) or the token and position embeddings.
pub fn decays(name: &str, dims: usize) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    dims > 1 && !matches!(leaf, "cls_token" | "dist_token" | "pos_embed" | "reg_token")
}

impl TchTrainer {
    pub fn new(config: TrainConfig) -> Result<Self> {
        // The backbone does the loading, device choice and preprocessing; take its network.
        // Training keeps fp32 master weights (mixed precision is `amp`, on CUDA).
        if let Some(p) = config.base.precision.as_deref().filter(|&p| p != "fp32") {
            return Err(backend(format!(
                "precision {p}: training runs in fp32 (with amp on a GPU); bf16 is for embedding"
            )));
        }
        let config_bb = Config { base: config.base.clone(), device: config.device, bf16: false };
        let bb = TchBackbone::new(&config_bb).map_err(backend)?;
        let (net, device, mut info) = bb.into_parts();
        info.output = OutputKind::Pooled;
        let mut named: Vec<(String, Tensor)> = net.vs().variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params = named
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, value)| Param {
                decay: decays(&name, value.dim()),
                m: value.zeros_like(),
                v: value.zeros_like(),
                name,
                value,
            })
            .collect();
        let d = info.dim as i64;
        Ok(TchTrainer {
            mem: Tensor::zeros([0, d], (Kind::Float, device)),
            mem_labels: Tensor::zeros([0], (Kind::Int64, device)),
            net,
            device,
            info,
            config,
            params,
            steps: 0,
            scale: SCALE_INIT,
            clean_steps: 0,
        })
    }

    /// Embeddings in the memory now.
    pub fn memory_len(&self) -> usize {
        self.mem.size()[0] as usize
    }

    /// Optimiser steps taken so far (restored by `load_state`).
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Whether steps run in mixed precision (CUDA and `amp`).
    pub fn mixed_precision(&self) -> bool {
        self.config.amp && self.device.is_cuda()
    }

    /// The trainable parameters' names, and whether each is weight-decayed.
    pub fn param_groups(&self) -> Vec<(String, bool)> {
        self.params.iter().map(|p| (p.name.clone(), p.decay)).collect()
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

    /// L2-normalised f32 descriptors, under autocast when mixed precision is on.
    fn descriptors(&self, x: &Tensor) -> Tensor {
        let amp = self.mixed_precision();
        let pooled = tch::autocast(amp, || self.net.forward_pooled(x));
        l2_normalise(&pooled.to_kind(Kind::Float))
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

    /// AdamW on every parameter's `grad / scale`, as `torch.optim.AdamW` (decoupled decay
    /// `p ← p·(1 − lr·wd)` first, then the bias-corrected Adam update).
    fn adamw(&mut self, lr: f64, inv_scale: f64) {
        self.steps += 1;
        let c = &self.config;
        let (b1, b2) = (c.adam_beta1, c.adam_beta2);
        let t = self.steps as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        tch::no_grad(|| {
            for p in &mut self.params {
                let g = p.value.grad();
                if !g.defined() {
                    continue;
                }
                let g = if inv_scale == 1.0 { g } else { g * inv_scale };
                let _ = p.m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                let _ = p.v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
                if p.decay && c.weight_decay != 0.0 {
                    let _ = p.value.g_mul_scalar_(1.0 - lr * c.weight_decay);
                }
                let denom = (&p.v / bc2).sqrt() + c.adam_eps;
                let update = (&p.m / bc1) / denom * lr;
                let _ = p.value.g_sub_(&update);
            }
        });
    }

    fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.value.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Whether every gradient is finite (checked only under mixed precision).
    fn grads_finite(&self) -> bool {
        tch::no_grad(|| {
            self.params.iter().all(|p| {
                let g = p.value.grad();
                !g.defined() || bool::try_from(g.isfinite().all()).unwrap_or(false)
            })
        })
    }

    fn check_labels(&self, images: &ArrayView4<'_, f32>, labels: &[i64]) -> Result<()> {
        if labels.len() != images.dim().0 {
            return Err(Error::Invalid(format!(
                "{} labels for a batch of {} images",
                labels.len(),
                images.dim().0
            )));
        }
        Ok(())
    }
}

impl Trainer for TchTrainer {
    fn info(&self) -> &BackboneInfo {
        &self.info
    }

    fn step(&mut self, images: ArrayView4<'_, f32>, labels: &[i64], lr: f32) -> Result<StepStats> {
        self.check_labels(&images, labels)?;
        let x = self.input(images)?;
        let y = Tensor::from_slice(labels).to_device(self.device);
        let z = self.descriptors(&x);
        let c = &self.config;
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
            return Err(Error::Invalid(format!(
                "loss is not finite ({stats:?}): lower the learning rate, or check the images \
                 (KoLeo is infinite when two images of a batch have identical embeddings)"
            )));
        }
        self.zero_grad();
        if self.mixed_precision() {
            (&total * self.scale).backward();
            if self.grads_finite() {
                self.adamw(f64::from(lr), 1.0 / self.scale);
                self.clean_steps += 1;
                if self.clean_steps == SCALE_GROWTH_INTERVAL {
                    self.scale *= 2.0;
                    self.clean_steps = 0;
                }
            } else {
                // Overflow: skip this update (as GradScaler does) and retry smaller.
                self.scale /= 2.0;
                self.clean_steps = 0;
            }
        } else {
            total.backward();
            self.adamw(f64::from(lr), 1.0);
        }
        self.enqueue(&z, &y);
        Ok(stats)
    }

    fn embed(&mut self, images: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let x = self.input(images)?;
        let z = tch::no_grad(|| self.descriptors(&x));
        let (n, d) = z.size2().map_err(backend)?;
        let data = Vec::<f32>::try_from(z.to_device(Device::Cpu).contiguous().view(-1))
            .map_err(backend)?;
        Array2::from_shape_vec((n as usize, d as usize), data).map_err(backend)
    }

    /// The weights under timm's names, F32. (A DeiT-3 checkpoint, whose `pos_embed` had no
    /// prefix positions, is saved in the padded `[1, T, D]` layout irtdb-onnx normalises to.)
    fn save_weights(&mut self, path: &Path) -> Result<()> {
        self.net.save_safetensors(path).map_err(backend)
    }

    /// `adam.m.<name>`, `adam.v.<name>`, `adam.step`, `amp.scale`, `xbm.embeddings`,
    /// `xbm.labels` in one safetensors file.
    fn save_state(&mut self, path: &Path) -> Result<()> {
        let cpu = |t: &Tensor| t.detach().to_device(Device::Cpu).contiguous();
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for p in &self.params {
            named.push((format!("adam.m.{}", p.name), cpu(&p.m)));
            named.push((format!("adam.v.{}", p.name), cpu(&p.v)));
        }
        named.push(("adam.step".into(), Tensor::from_slice(&[self.steps])));
        named
            .push(("amp.scale".into(), Tensor::from_slice(&[self.scale, self.clean_steps as f64])));
        named.push(("xbm.embeddings".into(), cpu(&self.mem)));
        named.push(("xbm.labels".into(), cpu(&self.mem_labels)));
        Tensor::write_safetensors(&named, path)
            .map_err(|e| backend(format!("writing trainer state {}: {e}", path.display())))
    }

    fn load_state(&mut self, path: &Path) -> Result<()> {
        let what = |m: String| backend(format!("trainer state {}: {m}", path.display()));
        let tensors: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(path).map_err(|e| what(e.to_string()))?.into_iter().collect();
        let get = |name: &str| {
            tensors.get(name).ok_or_else(|| {
                what(format!("`{name}` is missing: not a trainer state, or one of another model"))
            })
        };
        let device = self.device;
        let mut moments = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let m = get(&format!("adam.m.{}", p.name))?;
            let v = get(&format!("adam.v.{}", p.name))?;
            if m.size() != p.value.size() || v.size() != p.value.size() {
                return Err(what(format!(
                    "moments of `{}` have shape {:?}, the model's tensor {:?}: the state belongs \
                     to another model",
                    p.name,
                    m.size(),
                    p.value.size()
                )));
            }
            moments.push((m.to_device(device), v.to_device(device)));
        }
        let expected = 2 * self.params.len() + 4;
        if tensors.len() != expected {
            return Err(what(format!(
                "{} tensors, a state of this model has {expected}: it belongs to another model",
                tensors.len()
            )));
        }
        let mem = get("xbm.embeddings")?;
        if mem.dim() != 2 || mem.size()[1] != self.info.dim as i64 {
            return Err(what(format!(
                "memory of shape {:?} for D = {}",
                mem.size(),
                self.info.dim
            )));
        }
        let keep = (self.config.memory as i64).min(mem.size()[0]);
        self.mem = mem.narrow(0, 0, keep).to_kind(Kind::Float).to_device(device);
        self.mem_labels = get("xbm.labels")?.narrow(0, 0, keep).to_device(device);
        self.steps = get("adam.step")?.int64_value(&[0]);
        let scale = get("amp.scale")?;
        self.scale = scale.double_value(&[0]);
        self.clean_steps = scale.double_value(&[1]) as u64;
        for (p, (m, v)) in self.params.iter_mut().zip(moments) {
            p.m = m;
            p.v = v;
        }
        Ok(())
    }
}
