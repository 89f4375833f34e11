//! Bottleneck ResNets (ResNet-50 and kin) with GeM pooling, with timm's parameter names.
//!
//! The CNN baseline for retrieval: a ResNet trunk whose last feature map is pooled by
//! generalised mean (GeM, Radenović et al.), the standard global descriptor of CNN image
//! retrieval. Every parameter and buffer lives in one [`nn::VarStore`] under exactly its timm
//! (and torchvision) `state_dict` name (`conv1.weight`, `bn1.running_var`,
//! `layer3.5.conv2.weight`, `layer4.0.downsample.1.bias`, ...), so a timm `resnet50`
//! `.safetensors` loads name for name and [`ResNet::save_safetensors`] writes a file timm reads
//! back. The classifier (`fc.*`) is not part of the model: it is skipped on load.
//!
//! The architecture is timm's `ResNet` with `Bottleneck` blocks and the "v1.5" stride placement
//! (the stride of a stage sits on the 3×3 `conv2`, not on `conv1`); the depth per stage and the
//! stem width are read from the checkpoint ([`ResNet::config_from_checkpoint`]).
//!
//! BatchNorm is frozen: it always normalises with the running statistics, in fine-tuning as
//! in inference, and they are never updated (its affine weight and bias still train). Retrieval
//! training uses small class-balanced batches (a few classes × a few images each) whose
//! statistics are noisy and unlike the data at large; normalising with them, or folding them
//! into the running statistics, would both make a descriptor depend on its batch-mates and
//! drift the network away from its pretrained statistics. Frozen BN keeps a descriptor a
//! function of its image alone, identical between training and indexing.

use std::collections::HashMap;
use std::path::Path;

use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

/// ε of every BatchNorm (timm's and torchvision's default).
pub const BN_EPS: f64 = 1e-5;
/// ε GeM clamps activations to before the power (as in timm's `GeneralizedMeanPooling`).
pub const GEM_EPS: f64 = 1e-6;
/// Output channels of a bottleneck block per unit of its inner width.
const EXPANSION: usize = 4;

/// The shape of a bottleneck ResNet and its pooling.
#[derive(Clone, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Bottleneck blocks in `layer1` .. `layer4` (`[3, 4, 6, 3]` for ResNet-50).
    pub layers: [usize; 4],
    /// Channels of the stem and inner width of the `layer1` blocks (64); stage `i` has inner
    /// width `base_width · 2^i` and `4 ·` that many output channels.
    pub base_width: usize,
    /// The GeM exponent p (3.0; 1 is average pooling, ∞ max pooling).
    pub gem_p: f64,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        Self::resnet50()
    }
}

impl ResNetConfig {
    /// timm's `resnet50` with GeM p = 3.
    pub fn resnet50() -> Self {
        ResNetConfig { layers: [3, 4, 6, 3], base_width: 64, gem_p: 3.0 }
    }

    /// Channels of the last feature map, the dimension of the pooled descriptor (2048 for
    /// ResNet-50).
    pub fn num_features(&self) -> usize {
        self.base_width * 8 * EXPANSION
    }

    /// timm's name for the standard depths at width 64 (`resnet50`, `resnet101`, ...), otherwise
    /// a descriptive one such as `resnet_1-1-1-1_w8`.
    pub fn architecture(&self) -> String {
        let standard = match self.layers {
            [2, 2, 2, 2] => Some("resnet26"),
            [3, 4, 6, 3] => Some("resnet50"),
            [3, 4, 23, 3] => Some("resnet101"),
            [3, 8, 36, 3] => Some("resnet152"),
            [3, 24, 36, 3] => Some("resnet200"),
            _ => None,
        };
        match standard {
            Some(name) if self.base_width == 64 => name.to_string(),
            _ => {
                let [a, b, c, d] = self.layers;
                format!("resnet_{a}-{b}-{c}-{d}_w{}", self.base_width)
            }
        }
    }
}

/// A BatchNorm that always uses (and never updates) its running statistics; see the module
/// documentation. Holds `weight`, `bias` (trainable) and `running_mean`, `running_var`,
/// `num_batches_tracked` (buffers, not trainable) under its path.
#[derive(Debug)]
struct FrozenBatchNorm {
    bn: nn::BatchNorm,
}

impl FrozenBatchNorm {
    fn new(p: nn::Path<'_>, channels: usize) -> Self {
        let config = nn::BatchNormConfig {
            eps: BN_EPS,
            // tch's default weight init is U(0, 1); timm's is 1.
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        // tch creates weight, bias (trainable), running_mean, running_var (not trainable) ...
        let bn = nn::batch_norm2d(&p, channels as i64, config);
        // ... but not PyTorch's `num_batches_tracked` buffer, which timm checkpoints carry. It
        // only matters to momentum-free running averages, never used here; it is kept so that
        // saved files have timm's exact set of tensors.
        let _ = p.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, p.device())), false);
        FrozenBatchNorm { bn }
    }
}

impl Module for FrozenBatchNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        // `train = false`: normalise with running_mean / running_var and leave them alone.
        self.bn.forward_t(x, false)
    }
}

fn conv(p: nn::Path<'_>, cin: usize, cout: usize, k: usize, stride: usize) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride: stride as i64,
        padding: (k / 2) as i64,
        bias: false,
        ..conv_init()
    };
    nn::conv2d(p, cin as i64, cout as i64, k as i64, config)
}

/// timm's `Bottleneck`: 1×1 reduce, 3×3 (carrying the stride), 1×1 expand, plus a projection
/// shortcut (`downsample`) in the first block of each stage.
#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: FrozenBatchNorm,
    conv2: nn::Conv2D,
    bn2: FrozenBatchNorm,
    conv3: nn::Conv2D,
    bn3: FrozenBatchNorm,
    downsample: Option<(nn::Conv2D, FrozenBatchNorm)>,
}

impl Bottleneck {
    fn new(p: nn::Path<'_>, cin: usize, width: usize, stride: usize) -> Self {
        let cout = width * EXPANSION;
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = &p / "downsample";
            (conv(&d / 0, cin, cout, 1, stride), FrozenBatchNorm::new(&d / 1, cout))
        });
        Bottleneck {
            conv1: conv(&p / "conv1", cin, width, 1, 1),
            bn1: FrozenBatchNorm::new(&p / "bn1", width),
            conv2: conv(&p / "conv2", width, width, 3, stride),
            bn2: FrozenBatchNorm::new(&p / "bn2", width),
            conv3: conv(&p / "conv3", width, cout, 1, 1),
            bn3: FrozenBatchNorm::new(&p / "bn3", cout),
            downsample,
        }
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = self.bn1.forward(&self.conv1.forward(x)).relu();
        let y = self.bn2.forward(&self.conv2.forward(&y)).relu();
        let y = self.bn3.forward(&self.conv3.forward(&y));
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)),
            None => x.shallow_clone(),
        };
        (y + shortcut).relu()
    }
}

/// A bottleneck ResNet trunk + GeM whose parameters and BN buffers are in `vs` under timm's
/// names.
#[derive(Debug)]
pub struct ResNet {
    pub config: ResNetConfig,
    pub vs: nn::VarStore,
    conv1: nn::Conv2D,
    bn1: FrozenBatchNorm,
    stages: Vec<Vec<Bottleneck>>,
}

impl ResNet {
    /// The network for `config` on `device`, initialised as timm does (convolutions Kaiming
    /// normal, fan-out; BN weight 1, bias 0, running mean 0, variance 1; timm's
    /// `zero_init_last` is not applied). The trainable variables are exactly the convolution
    /// weights and BN weights and biases.
    pub fn new(config: &ResNetConfig, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let base = config.base_width;
        let conv1 = nn::conv2d(
            &root / "conv1",
            3,
            base as i64,
            7,
            nn::ConvConfig { stride: 2, padding: 3, bias: false, ..conv_init() },
        );
        let bn1 = FrozenBatchNorm::new(&root / "bn1", base);
        let mut cin = base;
        let mut stages = Vec::with_capacity(4);
        for (s, &depth) in config.layers.iter().enumerate() {
            let width = base << s;
            let p = &root / format!("layer{}", s + 1);
            let blocks = (0..depth)
                .map(|i| {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    let block = Bottleneck::new(&p / i, cin, width, stride);
                    cin = width * EXPANSION;
                    block
                })
                .collect();
            stages.push(blocks);
        }
        ResNet { config: config.clone(), vs, conv1, bn1, stages }
    }

    /// Whether tensor names look like a timm / torchvision ResNet: `conv1.weight` (a plain, not
    /// deep, stem) and `layer1.0.conv1.weight`.
    pub fn is_resnet_checkpoint(names: &[&str]) -> bool {
        names.contains(&"conv1.weight") && names.contains(&"layer1.0.conv1.weight")
    }

    /// The configuration of a checkpoint: blocks per stage counted from the
    /// `layer{s}.{i}.conv1.weight` present, `base_width` from `conv1.weight`, GeM p = 3.
    /// Only bottleneck ResNets with a plain stem are accepted.
    pub fn config_from_checkpoint(tensors: &[(String, Tensor)]) -> Result<ResNetConfig, String> {
        let shapes: HashMap<&str, Vec<i64>> =
            tensors.iter().map(|(n, t)| (n.as_str(), t.size())).collect();
        let names: Vec<&str> = shapes.keys().copied().collect();
        if !Self::is_resnet_checkpoint(&names) {
            return Err("not a ResNet checkpoint (no `conv1.weight` and `layer1.0.conv1.weight`; \
                        deep-stem variants such as resnet50d are not supported)"
                .to_string());
        }
        let stem = &shapes["conv1.weight"];
        if stem.len() != 4 || stem[1] != 3 || stem[0] <= 0 {
            return Err(format!("`conv1.weight` has shape {stem:?}, expected [C, 3, 7, 7]"));
        }
        if !shapes.contains_key("layer1.0.conv3.weight") {
            return Err("basic-block ResNet (no `layer1.0.conv3.weight`, resnet18/34-style): \
                        only bottleneck ResNets are supported"
                .to_string());
        }
        let mut layers = [0usize; 4];
        for (s, n) in layers.iter_mut().enumerate() {
            while shapes.contains_key(format!("layer{}.{}.conv1.weight", s + 1, *n).as_str()) {
                *n += 1;
            }
            if *n == 0 {
                return Err(format!("not a 4-stage ResNet: no `layer{}.0.conv1.weight`", s + 1));
            }
        }
        Ok(ResNetConfig { layers, base_width: stem[0] as usize, gem_p: 3.0 })
    }

    /// Reads a timm / torchvision ResNet `.safetensors` (any float dtype, converted to f32),
    /// infers its configuration and loads it. `fc.*` is ignored; every other tensor must belong
    /// to the model, and every model tensor must be in the file with the same shape, except
    /// `num_batches_tracked` (unused here; 0 when absent).
    pub fn from_safetensors(path: &Path, device: Device) -> Result<Self, String> {
        let origin = path.display().to_string();
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| format!("{origin}: cannot read safetensors: {e}"))?;
        let config =
            Self::config_from_checkpoint(&tensors).map_err(|e| format!("{origin}: {e}"))?;
        let mut net = Self::new(&config, device);
        net.load_tensors(&tensors, &origin)?;
        Ok(net)
    }

    /// Copies each variable from the tensor of the same name in `tensors` (see
    /// [`ResNet::from_safetensors`] for what must be there); `origin` names the source in errors.
    pub fn load_tensors(
        &mut self,
        tensors: &[(String, Tensor)],
        origin: &str,
    ) -> Result<(), String> {
        let vars = self.vs.variables();
        for (name, _) in tensors {
            if !vars.contains_key(name) && !name.starts_with("fc.") {
                return Err(format!(
                    "{origin}: unexpected tensor `{name}` for a plain bottleneck {} \
                     (SE / ResNet-D / other variants are not supported)",
                    self.config.architecture()
                ));
            }
        }
        let by_name: HashMap<&str, &Tensor> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        tch::no_grad(|| {
            for name in names {
                let mut var = vars[name].shallow_clone();
                let Some(src) = by_name.get(name.as_str()) else {
                    if name.ends_with(".num_batches_tracked") {
                        continue;
                    }
                    return Err(format!("{origin}: tensor `{name}` is missing"));
                };
                let (want, got) = (var.size(), src.size());
                if want != got {
                    return Err(format!(
                        "{origin}: tensor `{name}` has shape {got:?}, the model needs {want:?}"
                    ));
                }
                let src = if var.is_floating_point() {
                    if !src.is_floating_point() {
                        return Err(format!(
                            "{origin}: tensor `{name}` has dtype {:?}, expected a float",
                            src.kind()
                        ));
                    }
                    src.to_kind(Kind::Float)
                } else {
                    src.to_kind(var.kind())
                };
                var.copy_(&src);
            }
            Ok(())
        })
    }

    /// The last feature map `[B, num_features, H/32, W/32]` for images `[B, 3, H, W]` (already
    /// normalised). BatchNorm uses its running statistics whether or not gradients are tracked.
    pub fn forward_features(&self, x: &Tensor) -> Tensor {
        let mut x = self.bn1.forward(&self.conv1.forward(x)).relu().max_pool2d(
            [3, 3],
            [2, 2],
            [1, 1],
            [1, 1],
            false,
        );
        for block in self.stages.iter().flatten() {
            x = block.forward(&x);
        }
        x
    }

    /// Generalised-mean pooling of `[B, C, h, w]` to `[B, C]`:
    /// `(mean_{h,w} max(x, eps)^p)^(1/p)`.
    pub fn gem(features: &Tensor, p: f64, eps: f64) -> Tensor {
        features
            .clamp_min(eps)
            .pow_tensor_scalar(p)
            .mean_dim([2i64, 3].as_slice(), false, None::<Kind>)
            .pow_tensor_scalar(1.0 / p)
    }

    /// The GeM descriptor `[B, num_features]`, not L2-normalised.
    pub fn forward_pooled(&self, x: &Tensor) -> Tensor {
        Self::gem(&self.forward_features(x), self.config.gem_p, GEM_EPS)
    }

    /// Writes every variable (parameters and BN buffers, `num_batches_tracked` as int64) under
    /// its timm name, floats as f32, to a `.safetensors` file timm's `resnet*` loads with
    /// `strict=False` (there is no `fc`).
    pub fn save_safetensors(&self, path: &Path) -> Result<(), String> {
        let mut tensors: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .map(|(name, t)| {
                let t = t.detach().to_device(Device::Cpu);
                let t = if t.is_floating_point() { t.to_kind(Kind::Float) } else { t };
                (name, t.contiguous())
            })
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Tensor::write_safetensors(&tensors, path)
            .map_err(|e| format!("{}: cannot write safetensors: {e}", path.display()))
    }

    /// The names of the variables, sorted (timm `state_dict` keys without `fc.*`).
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vs.variables().into_keys().collect();
        names.sort();
        names
    }
}

/// timm's / torchvision's convolution initialisation, `kaiming_normal_(mode="fan_out",
/// nonlinearity="relu")`, as a base config.
fn conv_init() -> nn::ConvConfig {
    nn::ConvConfig {
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn architecture_names() {
        assert_eq!(ResNetConfig::resnet50().architecture(), "resnet50");
        assert_eq!(ResNetConfig::resnet50().num_features(), 2048);
        let r101 = ResNetConfig { layers: [3, 4, 23, 3], ..ResNetConfig::resnet50() };
        assert_eq!(r101.architecture(), "resnet101");
        let tiny = ResNetConfig { layers: [1, 1, 1, 1], base_width: 8, gem_p: 3.0 };
        assert_eq!(tiny.architecture(), "resnet_1-1-1-1_w8");
        assert_eq!(tiny.num_features(), 256);
        let narrow = ResNetConfig { base_width: 32, ..ResNetConfig::resnet50() };
        assert_eq!(narrow.architecture(), "resnet_3-4-6-3_w32");
    }

    #[test]
    fn names_are_timm_names() {
        let net = ResNet::new(
            &ResNetConfig { layers: [2, 1, 1, 1], base_width: 4, gem_p: 3.0 },
            Device::Cpu,
        );
        let names: HashSet<String> = net.tensor_names().into_iter().collect();
        for n in [
            "conv1.weight",
            "bn1.num_batches_tracked",
            "layer1.0.downsample.0.weight",
            "layer1.1.bn3.running_mean",
            "layer4.0.conv2.weight",
        ] {
            assert!(names.contains(n), "{n} missing");
        }
        assert!(!names.contains("layer1.1.downsample.0.weight"));
        assert!(!names.iter().any(|n| n.contains("__")), "duplicate names");
    }
}
