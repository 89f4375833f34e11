//! The tch ResNet + GeM against a plain-loop reference, its timm names, checkpoint loading and
//! saving, and frozen BatchNorm under autograd.

use std::collections::HashMap;
use std::path::Path;

use irtdb_plugin_tch_cuda::resnet::{ResNet, ResNetConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

fn tiny() -> ResNetConfig {
    ResNetConfig { layers: [1, 1, 1, 1], base_width: 8, gem_p: 3.0 }
}

/// A tensor as plain data: shape and row-major values.
#[derive(Clone, Debug)]
struct Data {
    shape: Vec<usize>,
    values: Vec<f32>,
}

/// Overwrites every float variable with random values: Kaiming-uniform convolutions, BN
/// weights in [0.5, 1.5], biases and running means in [-0.2, 0.2], running variances in
/// [0.5, 1.5] (non-trivial statistics, activations of order 1). Returns them by name.
fn randomize(net: &ResNet, seed: u64) -> HashMap<String, Data> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut vars: Vec<(String, Tensor)> = net.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = HashMap::new();
    for (name, mut var) in vars {
        if !var.is_floating_point() {
            continue;
        }
        let shape: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        let n: usize = shape.iter().product();
        let (lo, hi) =
            if name.ends_with("running_var") || (name.ends_with(".weight") && shape.len() == 1) {
                (0.5, 1.5)
            } else if shape.len() == 4 {
                let fan_in = (shape[1] * shape[2] * shape[3]) as f32;
                let bound = (6.0 / fan_in).sqrt();
                (-bound, bound)
            } else {
                (-0.2, 0.2)
            };
        let values: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        let src = Tensor::from_slice(&values).reshape(var.size());
        tch::no_grad(|| var.copy_(&src));
        out.insert(name, Data { shape, values });
    }
    out
}

fn random_images(batch: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..batch * 3 * h * w).map(|_| rng.random_range(-2.0f32..2.0)).collect()
}

fn images_tensor(images: &[f32], batch: usize, h: usize, w: usize) -> Tensor {
    Tensor::from_slice(images).reshape([batch as i64, 3, h as i64, w as i64])
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.detach().contiguous().view(-1)).unwrap()
}

/// Plain-loop reference, one image at a time (written from the ResNet paper / timm's
/// `Bottleneck`, sharing no code with the module under test).
mod reference {
    use super::Data;
    use std::collections::HashMap;

    /// A feature map `[C, H, W]`.
    #[derive(Clone, Debug)]
    pub struct Map {
        pub c: usize,
        pub h: usize,
        pub w: usize,
        pub v: Vec<f32>,
    }

    impl Map {
        fn at(&self, c: usize, y: usize, x: usize) -> f32 {
            self.v[(c * self.h + y) * self.w + x]
        }
    }

    fn conv(x: &Map, wt: &Data, stride: usize, pad: usize) -> Map {
        let (co, ci, kh, kw) = (wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3]);
        assert_eq!(ci, x.c);
        let h = (x.h + 2 * pad - kh) / stride + 1;
        let w = (x.w + 2 * pad - kw) / stride + 1;
        let mut v = vec![0f32; co * h * w];
        for o in 0..co {
            for oy in 0..h {
                for ox in 0..w {
                    let mut acc = 0f64;
                    for i in 0..ci {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let y = (oy * stride + ky) as isize - pad as isize;
                                let xx = (ox * stride + kx) as isize - pad as isize;
                                if y < 0 || xx < 0 || y >= x.h as isize || xx >= x.w as isize {
                                    continue;
                                }
                                let wv = wt.values[((o * ci + i) * kh + ky) * kw + kx];
                                acc += f64::from(wv) * f64::from(x.at(i, y as usize, xx as usize));
                            }
                        }
                    }
                    v[(o * h + oy) * w + ox] = acc as f32;
                }
            }
        }
        Map { c: co, h, w, v }
    }

    fn bn(x: &Map, p: &HashMap<String, Data>, prefix: &str) -> Map {
        let g = |s: &str| &p[&format!("{prefix}.{s}")].values;
        let (wt, b, m, var) = (g("weight"), g("bias"), g("running_mean"), g("running_var"));
        let mut out = x.clone();
        let hw = x.h * x.w;
        for c in 0..x.c {
            let scale = f64::from(wt[c]) / (f64::from(var[c]) + 1e-5).sqrt();
            for k in 0..hw {
                let v = &mut out.v[c * hw + k];
                *v = ((f64::from(*v) - f64::from(m[c])) * scale + f64::from(b[c])) as f32;
            }
        }
        out
    }

    fn relu(mut x: Map) -> Map {
        x.v.iter_mut().for_each(|v| *v = v.max(0.0));
        x
    }

    fn maxpool_3x3_s2_p1(x: &Map) -> Map {
        let h = (x.h + 2 - 3) / 2 + 1;
        let w = (x.w + 2 - 3) / 2 + 1;
        let mut v = vec![f32::NEG_INFINITY; x.c * h * w];
        for c in 0..x.c {
            for oy in 0..h {
                for ox in 0..w {
                    let out = &mut v[(c * h + oy) * w + ox];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let y = (oy * 2 + ky) as isize - 1;
                            let xx = (ox * 2 + kx) as isize - 1;
                            // Padding is -inf: out-of-range positions never win.
                            if y >= 0 && xx >= 0 && (y as usize) < x.h && (xx as usize) < x.w {
                                *out = out.max(x.at(c, y as usize, xx as usize));
                            }
                        }
                    }
                }
            }
        }
        Map { c: x.c, h, w, v }
    }

    fn bottleneck(x: &Map, p: &HashMap<String, Data>, prefix: &str, stride: usize) -> Map {
        let w = |s: &str| &p[&format!("{prefix}.{s}")];
        let y = relu(bn(&conv(x, w("conv1.weight"), 1, 0), p, &format!("{prefix}.bn1")));
        let y = relu(bn(&conv(&y, w("conv2.weight"), stride, 1), p, &format!("{prefix}.bn2")));
        let y = bn(&conv(&y, w("conv3.weight"), 1, 0), p, &format!("{prefix}.bn3"));
        let shortcut = if p.contains_key(&format!("{prefix}.downsample.0.weight")) {
            let s = conv(x, w("downsample.0.weight"), stride, 0);
            bn(&s, p, &format!("{prefix}.downsample.1"))
        } else {
            x.clone()
        };
        assert_eq!((y.c, y.h, y.w), (shortcut.c, shortcut.h, shortcut.w));
        let v = y.v.iter().zip(&shortcut.v).map(|(a, b)| (a + b).max(0.0)).collect();
        Map { v, ..y }
    }

    pub fn features(image: Map, p: &HashMap<String, Data>, layers: [usize; 4]) -> Map {
        let x = relu(bn(&conv(&image, &p["conv1.weight"], 2, 3), p, "bn1"));
        let mut x = maxpool_3x3_s2_p1(&x);
        for (s, &depth) in layers.iter().enumerate() {
            for i in 0..depth {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                x = bottleneck(&x, p, &format!("layer{}.{i}", s + 1), stride);
            }
        }
        x
    }

    pub fn gem(x: &Map, p: f64, eps: f64) -> Vec<f32> {
        let hw = x.h * x.w;
        (0..x.c)
            .map(|c| {
                let s: f64 =
                    x.v[c * hw..(c + 1) * hw].iter().map(|&v| f64::from(v).max(eps).powf(p)).sum();
                (s / hw as f64).powf(1.0 / p) as f32
            })
            .collect()
    }
}

fn reference_pooled(
    p: &HashMap<String, Data>,
    config: &ResNetConfig,
    images: &[f32],
    batch: usize,
    h: usize,
    w: usize,
) -> Vec<f32> {
    let n = 3 * h * w;
    (0..batch)
        .flat_map(|b| {
            let image = reference::Map { c: 3, h, w, v: images[b * n..(b + 1) * n].to_vec() };
            let f = reference::features(image, p, config.layers);
            reference::gem(&f, config.gem_p, 1e-6)
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = 0f32;
    for (a, b) in got.iter().zip(want) {
        assert!(a.is_finite(), "{what}: non-finite output");
        worst = worst.max((a - b).abs() / b.abs().max(1.0));
    }
    assert!(worst < tol, "{what}: max relative |tch − reference| = {worst}");
}

#[test]
fn tiny_resnet_matches_reference() {
    let config = tiny();
    let net = ResNet::new(&config, Device::Cpu);
    let p = randomize(&net, 1);

    // 32×32 as the brief; 64×48 so that the last map is 2×2 and GeM averages something.
    for (batch, h, w, seed) in [(2, 32, 32, 2), (1, 64, 48, 3)] {
        let images = random_images(batch, h, w, seed);
        let out = tch::no_grad(|| net.forward_pooled(&images_tensor(&images, batch, h, w)));
        assert_eq!(out.size(), [batch as i64, config.num_features() as i64]);
        let want = reference_pooled(&p, &config, &images, batch, h, w);
        // The descriptor must not be trivial: ReLU'd, GeM'd, many channels above eps.
        assert!(want.iter().filter(|&&v| v > 1e-3).count() > want.len() / 4);
        assert_close(&values(&out), &want, 1e-4, &format!("{h}x{w}"));
    }

    // forward_features too (shape and values through the reference).
    let images = random_images(1, 64, 48, 4);
    let f = tch::no_grad(|| net.forward_features(&images_tensor(&images, 1, 64, 48)));
    assert_eq!(f.size(), [1, 256, 2, 2]);
    let image = reference::Map { c: 3, h: 64, w: 48, v: images };
    let want = reference::features(image, &p, config.layers);
    assert_close(&values(&f), &want.v, 1e-4, "features");
}

#[test]
fn gem_matches_reference() {
    let mut rng = StdRng::seed_from_u64(7);
    let (b, c, h, w) = (2, 5, 3, 4);
    let x: Vec<f32> = (0..b * c * h * w).map(|_| rng.random_range(-1.0f32..3.0)).collect();
    for p in [1.0, 3.0, 4.5] {
        let got = ResNet::gem(&Tensor::from_slice(&x).reshape([b, c, h, w]), p, 1e-6);
        assert_eq!(got.size(), [b, c]);
        let n = (c * h * w) as usize;
        let want: Vec<f32> = (0..b as usize)
            .flat_map(|i| {
                let m = reference::Map {
                    c: c as usize,
                    h: h as usize,
                    w: w as usize,
                    v: x[i * n..(i + 1) * n].to_vec(),
                };
                reference::gem(&m, p, 1e-6)
            })
            .collect();
        assert_close(&values(&got), &want, 1e-5, &format!("gem p={p}"));
    }
}

/// The names of a bottleneck block that has a projection shortcut, as in timm's `state_dict`.
const LAYER1_0: [&str; 24] = [
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.0.conv3.weight",
    "layer1.0.bn3.weight",
    "layer1.0.bn3.bias",
    "layer1.0.bn3.running_mean",
    "layer1.0.bn3.running_var",
    "layer1.0.bn3.num_batches_tracked",
    "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.weight",
    "layer1.0.downsample.1.bias",
    "layer1.0.downsample.1.running_mean",
    "layer1.0.downsample.1.running_var",
    "layer1.0.downsample.1.num_batches_tracked",
];

const STEM: [&str; 6] = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
];

/// Named tensors, as read from and written to safetensors.
type Named = Vec<(String, Tensor)>;

fn read(path: &Path) -> Named {
    Tensor::read_safetensors(path).unwrap()
}

fn write(path: &Path, tensors: &[(String, Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap();
}

#[test]
fn save_load_round_trip_with_timm_names() {
    let config = tiny();
    let net = ResNet::new(&config, Device::Cpu);
    randomize(&net, 11);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    net.save_safetensors(&path).unwrap();

    // Exactly timm's names for [1, 1, 1, 1]: the stem and one projection block per stage.
    let saved = read(&path);
    let mut names: Vec<String> = saved.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let mut expected: Vec<String> = STEM.iter().map(|s| s.to_string()).collect();
    for stage in 1..=4 {
        let prefix = format!("layer{stage}.");
        expected.extend(LAYER1_0.iter().map(|n| n.replacen("layer1.", &prefix, 1)));
    }
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(net.tensor_names(), expected);
    let shapes: HashMap<&str, (Vec<i64>, Kind)> =
        saved.iter().map(|(n, t)| (n.as_str(), (t.size(), t.kind()))).collect();
    for (name, shape) in [
        ("conv1.weight", vec![8, 3, 7, 7]),
        ("bn1.running_var", vec![8]),
        ("layer1.0.conv1.weight", vec![8, 8, 1, 1]),
        ("layer1.0.conv3.weight", vec![32, 8, 1, 1]),
        ("layer1.0.downsample.0.weight", vec![32, 8, 1, 1]),
        ("layer2.0.conv1.weight", vec![16, 32, 1, 1]),
        ("layer2.0.conv2.weight", vec![16, 16, 3, 3]),
        ("layer4.0.downsample.0.weight", vec![256, 128, 1, 1]),
        ("layer4.0.bn3.bias", vec![256]),
    ] {
        assert_eq!(shapes[name], (shape, Kind::Float), "{name}");
    }
    assert_eq!(shapes["layer3.0.bn2.num_batches_tracked"], (vec![], Kind::Int64));

    // Loading reproduces the outputs exactly.
    let loaded = ResNet::from_safetensors(&path, Device::Cpu).unwrap();
    assert_eq!(loaded.config, config);
    let images = images_tensor(&random_images(2, 32, 32, 12), 2, 32, 32);
    let a = tch::no_grad(|| net.forward_pooled(&images));
    let b = tch::no_grad(|| loaded.forward_pooled(&images));
    assert_eq!(values(&a), values(&b));

    // A timm checkpoint has a classifier: ignored, not created.
    let mut with_fc = read(&path);
    with_fc.push(("fc.weight".into(), Tensor::zeros([10, 256], (Kind::Float, Device::Cpu))));
    with_fc.push(("fc.bias".into(), Tensor::zeros([10], (Kind::Float, Device::Cpu))));
    let fc_path = dir.path().join("with_fc.safetensors");
    write(&fc_path, &with_fc);
    let loaded = ResNet::from_safetensors(&fc_path, Device::Cpu).unwrap();
    assert!(!loaded.tensor_names().iter().any(|n| n.starts_with("fc.")));
    assert_eq!(values(&tch::no_grad(|| loaded.forward_pooled(&images))), values(&a));

    // A missing tensor is named, with the file.
    let missing: Vec<(String, Tensor)> =
        read(&path).into_iter().filter(|(n, _)| n != "layer2.0.bn2.running_var").collect();
    let missing_path = dir.path().join("missing.safetensors");
    write(&missing_path, &missing);
    let e = ResNet::from_safetensors(&missing_path, Device::Cpu).unwrap_err();
    assert!(e.contains("layer2.0.bn2.running_var"), "{e}");
    assert!(e.contains(&missing_path.display().to_string()), "{e}");
}

#[test]
fn bad_checkpoints_are_refused_clearly() {
    let net = ResNet::new(&tiny(), Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    net.save_safetensors(&path).unwrap();
    let variant = |name: &str, edit: &dyn Fn(&mut Named)| {
        let mut t = read(&path);
        edit(&mut t);
        let p = dir.path().join(format!("{name}.safetensors"));
        write(&p, &t);
        let e = ResNet::from_safetensors(&p, Device::Cpu).unwrap_err();
        assert!(e.contains(&p.display().to_string()), "{e}");
        e
    };

    let e = variant("shape", &|t| {
        let x = t.iter_mut().find(|(n, _)| n == "layer1.0.conv2.weight").unwrap();
        x.1 = Tensor::zeros([8, 8, 1, 1], (Kind::Float, Device::Cpu));
    });
    assert!(e.contains("layer1.0.conv2.weight") && e.contains("[8, 8, 1, 1]"), "{e}");

    let e = variant("se", &|t| {
        t.push((
            "layer1.0.se.fc1.weight".into(),
            Tensor::zeros([2, 32, 1, 1], (Kind::Float, Device::Cpu)),
        ))
    });
    assert!(e.contains("layer1.0.se.fc1.weight"), "{e}");

    let e = variant("vit", &|t| t.retain(|(n, _)| !n.starts_with("layer1.")));
    assert!(e.contains("not a ResNet"), "{e}");

    let e = variant("basic", &|t| t.retain(|(n, _)| !n.contains(".conv3.")));
    assert!(e.contains("bottleneck"), "{e}");

    let e =
        ResNet::from_safetensors(&dir.path().join("absent.safetensors"), Device::Cpu).unwrap_err();
    assert!(e.contains("absent.safetensors"), "{e}");

    // num_batches_tracked is unused: a checkpoint without it still loads.
    let p = dir.path().join("no_nbt.safetensors");
    let mut t = read(&path);
    t.retain(|(n, _)| !n.ends_with("num_batches_tracked"));
    write(&p, &t);
    ResNet::from_safetensors(&p, Device::Cpu).unwrap();
}

#[test]
fn half_precision_checkpoints_convert_to_f32() {
    let net = ResNet::new(&tiny(), Device::Cpu);
    randomize(&net, 21);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    net.save_safetensors(&path).unwrap();
    for kind in [Kind::BFloat16, Kind::Half, Kind::Double] {
        let t: Vec<(String, Tensor)> = read(&path)
            .into_iter()
            .map(|(n, t)| if t.is_floating_point() { (n, t.to_kind(kind)) } else { (n, t) })
            .collect();
        let p = dir.path().join(format!("{kind:?}.safetensors"));
        write(&p, &t);
        let loaded = ResNet::from_safetensors(&p, Device::Cpu).unwrap();
        let vars = loaded.vs.variables();
        for (name, src) in &t {
            let var = &vars[name];
            let want = if src.is_floating_point() {
                src.to_kind(Kind::Float)
            } else {
                src.shallow_clone()
            };
            assert_eq!(var.kind(), want.kind(), "{name}");
            assert!(var.equal(&want), "{kind:?} {name}");
        }
    }
}

#[test]
fn config_is_inferred_from_checkpoint() {
    let config = ResNetConfig { layers: [2, 1, 3, 1], base_width: 4, gem_p: 3.0 };
    let net = ResNet::new(&config, Device::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resnet.safetensors");
    net.save_safetensors(&path).unwrap();
    let tensors = read(&path);
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(ResNet::is_resnet_checkpoint(&names));
    assert!(!ResNet::is_resnet_checkpoint(&["patch_embed.proj.weight", "cls_token"]));
    assert_eq!(ResNet::config_from_checkpoint(&tensors).unwrap(), config);
    assert_eq!(config.architecture(), "resnet_2-1-3-1_w4");
    // Only the first block of a stage has a projection shortcut.
    assert!(names.contains(&"layer3.0.downsample.0.weight"));
    assert!(!names.contains(&"layer3.1.downsample.0.weight"));
    assert_eq!(ResNet::from_safetensors(&path, Device::Cpu).unwrap().config, config);
}

#[test]
fn resnet50_has_timm_parameter_count_and_names() {
    let config = ResNetConfig::resnet50();
    assert_eq!(config.architecture(), "resnet50");
    assert_eq!(config.num_features(), 2048);
    let net = ResNet::new(&config, Device::Cpu);
    // timm's resnet50 has 25,557,032 parameters, of which the classifier 2048·1000 + 1000.
    let trainable: i64 = net.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
    assert_eq!(trainable, 25_557_032 - 2_049_000);
    assert_eq!(trainable, 23_508_032);
    // 53 convolutions and 53 BNs: 53 + 2·53 trainable tensors, 53 + 5·53 in the state_dict
    // (timm's 320 keys less fc.weight and fc.bias).
    assert_eq!(net.vs.trainable_variables().len(), 159);
    let names = net.tensor_names();
    assert_eq!(names.len(), 318);
    for n in ["layer3.5.bn3.running_var", "layer4.0.downsample.0.weight", "layer4.2.conv3.weight"] {
        assert!(names.iter().any(|x| x == n), "{n}");
    }
    assert!(!names.iter().any(|x| x.starts_with("layer3.6.") || x.starts_with("fc.")));

    let x = Tensor::randn([1, 3, 224, 224], (Kind::Float, Device::Cpu));
    let f = tch::no_grad(|| net.forward_features(&x));
    assert_eq!(f.size(), [1, 2048, 7, 7]);
    let y = tch::no_grad(|| net.forward_pooled(&x));
    assert_eq!(y.size(), [1, 2048]);
    assert!(values(&y).iter().all(|v| v.is_finite() && *v > 0.0));
}

#[test]
fn gradients_flow_and_bn_statistics_stay_frozen() {
    let net = ResNet::new(&tiny(), Device::Cpu);
    randomize(&net, 31);
    let vars = net.vs.variables();
    let buffers: Vec<(String, Tensor)> = vars
        .iter()
        .filter(|(n, _)| n.contains("running_") || n.ends_with("num_batches_tracked"))
        .map(|(n, t)| (n.clone(), t.copy()))
        .collect();
    assert_eq!(buffers.len(), 3 * (1 + 4 * 4));
    // Trainable: exactly conv weights and BN weights and biases, never the buffers.
    for (_, t) in &buffers {
        assert!(!t.requires_grad());
    }
    for (n, _) in &buffers {
        assert!(!vars[n].requires_grad(), "{n} requires grad");
    }
    let n_params = vars.keys().filter(|n| n.ends_with(".weight") || n.ends_with(".bias")).count();
    assert_eq!(net.vs.trainable_variables().len(), n_params);

    let images = random_images(4, 32, 32, 32);
    let x = images_tensor(&images, 4, 32, 32);
    let y = net.forward_pooled(&x);
    y.sum(Kind::Float).backward();
    let g = vars["conv1.weight"].grad();
    assert!(g.defined(), "conv1.weight has no gradient");
    assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "conv1.weight gradient is zero");
    for n in ["bn1.weight", "layer4.0.bn3.bias", "layer2.0.downsample.0.weight"] {
        assert!(vars[n].grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{n}");
    }

    // The forward with autograd used, and left, the running statistics.
    for (n, before) in &buffers {
        assert!(vars[n].equal(before), "{n} changed");
    }
    // Hence a descriptor does not depend on its batch-mates.
    let alone = tch::no_grad(|| net.forward_pooled(&x.narrow(0, 1, 1)));
    assert_close(&values(&alone), &values(&y.narrow(0, 1, 1)), 1e-5, "batch independence");
}
