//! The cdylib through the host's loader, against the ort-tensorrt plugin on the same weights.
//!
//! The ort half needs `/work/main/target/debug/libirtdb_plugin_ort_tensorrt.so` (or
//! `IRTDB_ORT_PLUGIN`) and ONNX Runtime (`ORT_DYLIB_PATH`, or `.deps/onnxruntime` of the
//! workspace); without them that test says so and passes.

use std::path::{Path, PathBuf};

use irtdb_core::{Backbone, Features, OutputKind};
use irtdb_onnx::testing::{deit_config, random_images, random_vit_with_std, save_safetensors};
use irtdb_onnx::VitConfig;
use irtdb_plugin_api::host::Plugin;
use ndarray::{Array4, ArrayView1};
use serde_json::json;

/// A backbone configuration from JSON, as the host would send it.
fn config(v: serde_json::Value) -> irtdb_plugin_api::BackboneConfig {
    serde_json::from_value(v).expect("a backbone configuration")
}

/// The directory of the test binary's build: `target/debug`, where the cdylib lands.
fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_owned() // target/debug/deps/x → target/debug
}

fn tch_plugin() -> Plugin {
    let path = build_dir().join("libirtdb_plugin_tch_cuda.so");
    // `cargo test` links the rlib; the cdylib comes from `cargo build`.
    assert!(path.is_file(), "{} is missing: run `cargo build` before `cargo test`", path.display());
    Plugin::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A random vit_micro saved with a model card `<model>.json` carrying its preprocessing.
fn model(dir: &Path, cfg: &VitConfig) -> PathBuf {
    let path = dir.join("micro.safetensors");
    save_safetensors(&path, &random_vit_with_std(cfg, 11, 0.2)).unwrap();
    let card = json!({"num_heads": cfg.heads, "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}});
    std::fs::write(path.with_extension("json"), card.to_string()).unwrap();
    path
}

fn images(cfg: &VitConfig, batch: usize) -> Array4<f32> {
    let [h, w] = cfg.img_size;
    Array4::from_shape_vec((batch, 3, h, w), random_images(cfg, batch, 12)).unwrap()
}

fn tokens(f: Features) -> ndarray::Array3<f32> {
    tokens_with_prefix(f, 1)
}

fn tokens_with_prefix(f: Features, want: usize) -> ndarray::Array3<f32> {
    match f {
        Features::Tokens { tokens, prefix } => {
            assert_eq!(prefix, want);
            tokens
        }
        Features::Pooled(_) => panic!("expected tokens"),
    }
}

fn cosine(a: ArrayView1<'_, f32>, b: ArrayView1<'_, f32>) -> f32 {
    a.dot(&b) / (a.dot(&a).sqrt() * b.dot(&b).sqrt())
}

#[test]
fn loads_describes_and_embeds_on_cpu() {
    let plugin = tch_plugin();
    assert_eq!(plugin.name(), "tch-cuda");
    assert!(plugin.description().available_providers.contains(&"cpu".to_string()));
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), &cfg);
    let mut bb = plugin.create_backbone(&config(json!({"model": path, "device": "cpu"}))).unwrap();
    let info = bb.info().clone();
    assert_eq!(info.provider, "cpu");
    assert_eq!(info.dim, 32);
    assert_eq!(info.output, OutputKind::Tokens { prefix: 1 });
    assert_eq!(info.preprocess.size, [32, 32]);
    assert_eq!(info.preprocess.mean, [0.5; 3], "the model card's preprocess is applied");
    let t = tokens(bb.forward(images(&cfg, 4).view()).unwrap());
    assert_eq!(t.dim(), (4, cfg.num_tokens(), 32));

    // Errors cross the boundary as messages.
    let e = plugin
        .create_backbone(&config(json!({"model": dir.path().join("nope.safetensors")})))
        .unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
    let e = plugin.create_backbone(&config(json!({"model": path, "devise": "cpu"}))).unwrap_err();
    assert!(e.to_string().contains("devise"), "{e}");
    // fp32 or bf16: int8 is refused, pointing at the plugin that has it; fp32 said aloud is fine.
    let e = plugin
        .create_backbone(&config(json!({"model": path, "device": "cpu", "precision": "int8"})))
        .unwrap_err();
    assert!(
        e.to_string().contains("fp32 or bf16") && e.to_string().contains("ort-tensorrt"),
        "{e}"
    );
    plugin
        .create_backbone(&config(json!({"model": path, "device": "cpu", "precision": "fp32"})))
        .unwrap();
    if !tch::Cuda::is_available() {
        let e =
            plugin.create_backbone(&config(json!({"model": path, "device": "cuda"}))).unwrap_err();
        assert!(e.to_string().contains("no CUDA device"), "{e}");
    }
}

#[test]
fn bf16_agrees_with_fp32() {
    let plugin = tch_plugin();
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), &cfg);
    let x = images(&cfg, 6);
    let run = |precision: &str| {
        let json = json!({"model": path, "device": "cpu", "precision": precision});
        let mut bb = plugin.create_backbone(&config(json)).unwrap();
        tokens(bb.forward(x.view()).unwrap())
    };
    let (full, half) = (run("fp32"), run("bf16"));
    assert_eq!(full.dim(), half.dim());
    // bfloat16 keeps 8 bits of mantissa: every token within a small angle of fp32's, and the
    // outputs are not the fp32 ones (the bf16 kernels did run).
    for i in 0..6 {
        for t in 0..full.dim().1 {
            let c = cosine(full.slice(ndarray::s![i, t, ..]), half.slice(ndarray::s![i, t, ..]));
            assert!(c >= 0.99, "image {i} token {t}: cosine {c}");
        }
        let c = cosine(full.slice(ndarray::s![i, 0, ..]), half.slice(ndarray::s![i, 0, ..]));
        assert!(c >= 0.999, "image {i}: class-token cosine {c}");
    }
    assert!(full.iter().zip(half.iter()).any(|(a, b)| a != b), "bf16 gave fp32's bits");
    // Training stays fp32.
    let e = plugin
        .create_trainer(
            &serde_json::from_value(json!({"model": path, "device": "cpu", "precision": "bf16"}))
                .unwrap(),
        )
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("training runs in fp32"), "{e}");
}

#[test]
fn auto_device_uses_cuda_when_present() {
    let plugin = tch_plugin();
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = model(dir.path(), &cfg);
    let bb = plugin.create_backbone(&config(json!({"model": path}))).unwrap();
    let want = if tch::Cuda::is_available() { "cuda:0" } else { "cpu" };
    assert_eq!(bb.info().provider, want);
}

#[test]
fn matches_the_ort_plugin() {
    let ort = std::env::var_os("IRTDB_ORT_PLUGIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/debug/libirtdb_plugin_ort_tensorrt.so"));
    let ort_lib = workspace().join(".deps/onnxruntime/libonnxruntime.so");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() && ort_lib.is_file() {
        // Before the ort plugin loads ONNX Runtime (once, lazily), and before other threads
        // read the environment: this test sets it and nothing else here reads it.
        #[allow(unused_unsafe)]
        unsafe {
            std::env::set_var("ORT_DYLIB_PATH", &ort_lib)
        };
    }
    if !ort.is_file() || std::env::var_os("ORT_DYLIB_PATH").is_none() {
        // Under the README's test command (which sets IRTDB_TEST_STRICT) a missing peer is a
        // failure, not a skip; a bare `cargo test` here may lack the root workspace's build.
        let why = format!("no ort-tensorrt plugin at {} or no ORT_DYLIB_PATH", ort.display());
        assert!(std::env::var_os("IRTDB_TEST_STRICT").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let ort_plugin = Plugin::load(&ort).unwrap();
    // A test size, and a real DeiT layout (224², 12 blocks, distillation token), DINOv2 with
    // registers at its native 518² and at 224² (two of its blocks, to keep the test short), and
    // an average-pooled (fc_norm) ViT; each also at other input sizes (`--input-size`: the
    // position embedding resampled in irtdb-onnx).
    let preset = |name: &str| deit_config(name).unwrap();
    let shallow = |name: &str| VitConfig { depth: 2, ..preset(name) };
    let gap =
        VitConfig { fc_norm: true, reg_tokens: 1, no_embed_class: true, ..preset("vit_micro") };
    for (native, batch, size) in [
        (preset("vit_micro"), 5, None),
        (preset("vit_micro"), 3, Some([24u32, 24u32])),
        (preset("vit_micro"), 2, Some([48, 40])),
        (preset("deit_tiny_distilled_patch16_224"), 2, None),
        (preset("deit_tiny_distilled_patch16_224"), 2, Some([160, 160])),
        (shallow("vit_small_patch14_reg4_dinov2"), 1, None),
        (shallow("vit_small_patch14_reg4_dinov2"), 2, Some([224, 224])),
        (shallow("vit_small_patch14_dinov2"), 2, Some([224, 224])),
        (gap.clone(), 3, None),
        (gap, 3, Some([40, 40])),
    ] {
        let name = native.architecture.clone();
        let dir = tempfile::tempdir().unwrap();
        let path = model(dir.path(), &native);
        let mut cfg = native.clone();
        if let Some([h, w]) = size {
            cfg.img_size = [h as usize, w as usize];
        }
        let x = images(&cfg, batch);
        let mut tch_bb = tch_plugin()
            .create_backbone(&config(json!({"model": path, "device": "auto", "input_size": size})))
            .unwrap();
        let mut ort_bb = ort_plugin
            .create_backbone(&config(
                json!({"model": path, "providers": ["cpu"], "input_size": size}),
            ))
            .unwrap();
        let want_size = size.unwrap_or([cfg.img_size[0] as u32, cfg.img_size[1] as u32]);
        assert_eq!(ort_bb.info().preprocess.size, want_size);
        assert_eq!(tch_bb.info().preprocess, ort_bb.info().preprocess);
        assert_eq!(tch_bb.info().dim, ort_bb.info().dim);
        assert_eq!(tch_bb.info().output, ort_bb.info().output);

        let p = cfg.prefix_tokens;
        let (a, b) = (tch_bb.forward(x.view()).unwrap(), ort_bb.forward(x.view()).unwrap());
        if cfg.fc_norm {
            // The model's own descriptor, fc_norm(mean of the patches), from both.
            let (Features::Pooled(a), Features::Pooled(b)) = (a, b) else {
                panic!("{name}: an fc_norm model's output is pooled")
            };
            for i in 0..a.nrows() {
                let c = cosine(a.row(i), b.row(i));
                assert!(c >= 0.9999, "{name} image {i}: cosine {c}");
            }
            continue;
        }
        let a = tokens_with_prefix(a, p);
        let b = tokens_with_prefix(b, p);
        assert_eq!(a.dim(), b.dim());
        let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        for i in 0..a.dim().0 {
            // The descriptor: the class token (L2-normalised downstream; cosine ignores scale).
            let c = cosine(a.slice(ndarray::s![i, 0, ..]), b.slice(ndarray::s![i, 0, ..]));
            assert!(c >= 0.9999, "{name} image {i}: cosine {c} (max token |Δ| {max})");
        }
        assert!(max < 1e-3, "{name}: max token |Δ| {max}");
        eprintln!("{name}: tch ({}) vs ort (cpu): max token |Δ| = {max:e}", tch_bb.info().provider);
    }
}
