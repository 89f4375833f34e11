//! The trainer on a tiny synthetic problem: the loss falls, the memory fills, and the saved
//! checkpoint is a timm-named file that irtdb-onnx reads back to the same embeddings.

use irtdb_core::Trainer;
use irtdb_onnx::testing::{deit_config, random_images, random_vit, save_safetensors};
use irtdb_onnx::{reference, ConfigOverrides, VitWeights};
use irtdb_plugin_tch_cuda::{DeviceChoice, TchTrainer, TrainConfig};
use ndarray::{Array2, Array4};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A trainer configuration from JSON, as the host would send it.
fn trainer_config(v: serde_json::Value) -> irtdb_plugin_api::TrainerConfig {
    serde_json::from_value(v).expect("a trainer configuration")
}

#[test]
fn loss_falls_memory_fills_and_checkpoint_round_trips() {
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("start.safetensors");
    save_safetensors(&path, &random_vit(&cfg, 21)).unwrap();
    let config: TrainConfig = serde_json::from_value(serde_json::json!({
        "model": path, "device": "cpu", "heads": 4, "memory": 48
    }))
    .unwrap();
    assert_eq!((config.beta, config.lambda, config.weight_decay), (0.5, 0.7, 5e-4));
    assert_eq!(config.device, DeviceChoice::Cpu);
    let mut trainer = TchTrainer::new(config).unwrap();
    assert_eq!(trainer.info().provider, "cpu");

    // 4 classes; an image is its class's prototype plus noise.
    let [h, w] = cfg.img_size;
    let per = 3 * h * w;
    let protos = random_images(&cfg, 4, 22);
    let mut rng = StdRng::seed_from_u64(23);
    let batch = |rng: &mut StdRng| {
        let labels: Vec<i64> = (0..16).map(|i| i % 4).collect();
        let mut x = Vec::with_capacity(16 * per);
        for &y in &labels {
            let p = &protos[y as usize * per..(y as usize + 1) * per];
            x.extend(p.iter().map(|v| v + rng.random_range(-0.5f32..0.5)));
        }
        (Array4::from_shape_vec((16, 3, h, w), x).unwrap(), labels)
    };
    let mut history = Vec::new();
    for _ in 0..40 {
        let (x, y) = batch(&mut rng);
        let s = trainer.step(x.view(), &y, 1e-3).unwrap();
        assert!(s.loss.is_finite() && (s.loss - (s.contrastive + 0.7 * s.koleo)).abs() < 1e-4);
        history.push(s.contrastive);
    }
    assert_eq!(trainer.memory_len(), 48);
    let first: f32 = history[..3].iter().sum::<f32>() / 3.0;
    let last: f32 = history[history.len() - 3..].iter().sum::<f32>() / 3.0;
    eprintln!("contrastive loss over 40 steps: {first} → {last}");
    assert!(last < 0.5 * first, "contrastive loss {first} → {last}: {history:?}");

    // Save, read back with irtdb-onnx, and compare with the reference forward.
    let (x, _) = batch(&mut rng);
    let ours = trainer.embed(x.view()).unwrap();
    let saved = dir.path().join("trained.safetensors");
    trainer.save_weights(&saved).unwrap();
    let weights =
        VitWeights::load(&saved, &ConfigOverrides { heads: Some(4), ..Default::default() })
            .unwrap();
    let tokens = reference::forward(&weights, x.as_slice().unwrap(), 16);
    let mut want =
        Array2::from_shape_vec((16, 32), reference::pool(&weights, &tokens, 16)).unwrap();
    for mut row in want.rows_mut() {
        let n = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / n);
    }
    let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "embed vs reference of the saved checkpoint: {max}");
}

/// A labelled batch of 12 images (3 classes × 4) with values drawn from `seed`.
fn labelled_batch(cfg: &irtdb_onnx::VitConfig, seed: u64) -> (Array4<f32>, Vec<i64>) {
    let [h, w] = cfg.img_size;
    let x = random_images(cfg, 12, seed);
    (Array4::from_shape_vec((12, 3, h, w), x).unwrap(), (0..12).map(|i| i % 3).collect())
}

fn micro_trainer(model: &std::path::Path) -> TchTrainer {
    TchTrainer::new(
        serde_json::from_value(serde_json::json!({
            "model": model, "device": "cpu", "heads": 4, "memory": 20
        }))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn resume_reproduces_the_next_step() {
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.safetensors");
    save_safetensors(&start, &random_vit(&cfg, 31)).unwrap();

    // Run A: 5 steps, save weights + state, then 2 more steps.
    let mut a = micro_trainer(&start);
    for s in 0..5 {
        let (x, y) = labelled_batch(&cfg, 100 + s);
        a.step(x.view(), &y, 1e-3).unwrap();
    }
    let (weights, state) = (dir.path().join("ck.safetensors"), dir.path().join("ck.state"));
    a.save_weights(&weights).unwrap();
    a.save_state(&state).unwrap();
    let next: Vec<_> = (5..7)
        .map(|s| {
            let (x, y) = labelled_batch(&cfg, 100 + s);
            a.step(x.view(), &y, 1e-3).unwrap()
        })
        .collect();

    // Run B resumes from the checkpoint and takes the same two steps.
    let mut b = micro_trainer(&weights);
    b.load_state(&state).unwrap();
    assert_eq!((b.steps(), b.memory_len()), (5, 20));
    for (s, want) in (5..7).zip(&next) {
        let (x, y) = labelled_batch(&cfg, 100 + s);
        let got = b.step(x.view(), &y, 1e-3).unwrap();
        for (g, w) in
            [(got.loss, want.loss), (got.contrastive, want.contrastive), (got.koleo, want.koleo)]
        {
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "step {s}: resumed {got:?}, original {want:?}"
            );
        }
    }

    // Without the state the next step differs (fresh moments, empty memory): the test above is
    // not vacuous.
    let mut c = micro_trainer(&weights);
    let (x, y) = labelled_batch(&cfg, 105);
    let fresh = c.step(x.view(), &y, 1e-3).unwrap();
    assert!((fresh.contrastive - next[0].contrastive).abs() > 1e-3, "{fresh:?} vs {:?}", next[0]);

    // A state of another model is refused, naming the file.
    let other_cfg = deit_config("vit_micro").map(|mut c| {
        c.depth += 1;
        c
    });
    let other = dir.path().join("other.safetensors");
    save_safetensors(&other, &random_vit(&other_cfg.unwrap(), 32)).unwrap();
    let mut d = micro_trainer(&other);
    let e = d.load_state(&state).unwrap_err().to_string();
    assert!(e.contains("ck.state") && e.contains("another model"), "{e}");
}

#[test]
fn weight_decay_spares_biases_norms_and_embeddings() {
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.safetensors");
    save_safetensors(&start, &random_vit(&cfg, 41)).unwrap();
    let t = micro_trainer(&start);
    let groups: std::collections::HashMap<String, bool> = t.param_groups().into_iter().collect();
    for (name, decayed) in [
        ("blocks.0.attn.qkv.weight", true),
        ("blocks.0.mlp.fc1.weight", true),
        ("patch_embed.proj.weight", true),
        ("blocks.0.attn.qkv.bias", false),
        ("blocks.0.norm1.weight", false),
        ("norm.bias", false),
        ("cls_token", false),
        ("pos_embed", false),
    ] {
        assert_eq!(groups.get(name), Some(&decayed), "{name}");
    }
}

#[test]
fn adamw_matches_torch_update_on_one_step() {
    // With a zero learning rate nothing moves; with lr the first AdamW step moves every
    // parameter with a non-zero gradient by about lr (|m̂/√v̂| = 1 at t = 1), plus decay.
    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.safetensors");
    save_safetensors(&start, &random_vit(&cfg, 51)).unwrap();
    let mut t = micro_trainer(&start);
    let (x, y) = labelled_batch(&cfg, 52);
    t.step(x.view(), &y, 0.0).unwrap();
    let after0 = dir.path().join("after0.safetensors");
    t.save_weights(&after0).unwrap();
    let read = |p: &std::path::Path| -> std::collections::HashMap<String, tch::Tensor> {
        tch::Tensor::read_safetensors(p).unwrap().into_iter().collect()
    };
    let (w0, w1) = (read(&start), read(&after0));
    for (k, v) in &w1 {
        let d = f64::try_from((v - &w0[k]).abs().max()).unwrap();
        assert_eq!(d, 0.0, "{k} moved with lr 0");
    }
    let lr = 1e-3;
    t.step(x.view(), &y, lr as f32).unwrap();
    let after1 = dir.path().join("after1.safetensors");
    t.save_weights(&after1).unwrap();
    let w2 = read(&after1);
    // The second step (t = 2): |update| ≤ lr·(1 + tiny) for each element; the largest should be
    // close to lr for a matrix with dense gradients.
    let q = "blocks.0.attn.qkv.weight";
    let delta = (&w2[q] - &w1[q]).abs();
    let max = f64::try_from(delta.max()).unwrap();
    assert!(max > 0.3 * lr && max < 1.5 * lr, "max |Δ{q}| = {max}, lr {lr}");
}

#[test]
fn the_trainer_through_the_plugin_abi() {
    use irtdb_plugin_api::host::Plugin;
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libirtdb_plugin_tch_cuda.so");
    assert!(lib.is_file(), "{} is missing: run `cargo build` before `cargo test`", lib.display());
    let plugin = Plugin::load(&lib).unwrap();
    assert!(plugin.can_train());
    assert_eq!(plugin.capability_names(), ["infer", "train"]);

    let cfg = deit_config("vit_micro").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.safetensors");
    save_safetensors(&start, &random_vit(&cfg, 61)).unwrap();
    let config = serde_json::json!({"model": start, "device": "cpu", "heads": 4, "memory": 20});
    let mut via_abi = plugin.create_trainer(&trainer_config(config.clone())).unwrap();
    let mut direct = TchTrainer::new(serde_json::from_value(config.clone()).unwrap()).unwrap();
    assert_eq!(via_abi.info(), direct.info());
    assert_eq!(via_abi.info().output, irtdb_core::OutputKind::Pooled);
    for s in 0..3 {
        let (x, y) = labelled_batch(&cfg, 200 + s);
        let a = via_abi.step(x.view(), &y, 1e-3).unwrap();
        let b = direct.step(x.view(), &y, 1e-3).unwrap();
        assert!((a.loss - b.loss).abs() < 1e-5, "{a:?} vs {b:?}");
    }
    let (x, _) = labelled_batch(&cfg, 300);
    let za = via_abi.embed(x.view()).unwrap();
    let zb = direct.embed(x.view()).unwrap();
    let max = za.iter().zip(&zb).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-5, "{max}");
    // Saving goes through too; errors come back with the plugin's message.
    via_abi.save_weights(&dir.path().join("w.safetensors")).unwrap();
    let e = via_abi.load_state(&dir.path().join("missing.state")).unwrap_err().to_string();
    assert!(e.contains("missing.state"), "{e}");
    let e = plugin
        .create_trainer(&trainer_config(serde_json::json!({"model": start, "lamda": 1})))
        .unwrap_err();
    assert!(e.to_string().contains("lamda"), "{e}");
    let (x, y) = labelled_batch(&cfg, 1);
    let e = via_abi.step(x.view(), &y[..5], 1e-3).unwrap_err().to_string();
    assert!(e.contains("5 labels"), "{e}");
}

#[test]
fn a_resnet_gem_baseline_trains_and_serves() {
    use irtdb_plugin_api::plugin::PluginBackbone;
    use irtdb_plugin_tch_cuda::resnet::{ResNet, ResNetConfig};
    use irtdb_plugin_tch_cuda::TchBackbone;
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("resnet_tiny.safetensors");
    let cfg = ResNetConfig { layers: [1, 1, 1, 1], base_width: 8, gem_p: 3.0 };
    tch::manual_seed(3);
    ResNet::new(&cfg, tch::Device::Cpu).save_safetensors(&start).unwrap();
    std::fs::write(start.with_extension("json"), r#"{"preprocess": {"crop_pct": 1.0}}"#).unwrap();
    let config = serde_json::json!({"model": start, "device": "cpu", "memory": 12,
        "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}});
    let mut t = TchTrainer::new(serde_json::from_value(config).unwrap()).unwrap();
    assert_eq!(t.info().dim, 256);
    assert_eq!(t.info().preprocess.size, [224, 224]);
    // A 224 input at width 8 is cheap; 6 images, 3 classes.
    let x = Array4::from_shape_fn((6, 3, 224, 224), |(b, c, i, j)| {
        (((b % 3) * 7 + c * 3 + (i / 16) * (j / 16)) % 11) as f32 / 5.0 - 1.0 + b as f32 * 0.05
    });
    let y: Vec<i64> = (0..6).map(|i| i % 3).collect();
    for _ in 0..3 {
        assert!(t.step(x.view(), &y, 1e-3).unwrap().loss.is_finite());
    }
    // BatchNorm moved only through its affine parameters: weights decay, BN scales do not.
    let groups: std::collections::HashMap<_, _> = t.param_groups().into_iter().collect();
    assert!(groups["conv1.weight"]);
    assert!(!groups["bn1.weight"]);
    assert!(!groups.contains_key("bn1.running_mean"));
    let saved = dir.path().join("trained.safetensors");
    t.save_weights(&saved).unwrap();
    let z = t.embed(x.view()).unwrap();
    let mut bb = TchBackbone::new(
        &serde_json::from_value(serde_json::json!({"model": saved, "device": "cpu",
            "preprocess": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
        .unwrap(),
    )
    .unwrap();
    let (shape, values) = bb.forward(x.as_slice().unwrap(), &[6, 3, 224, 224]).unwrap();
    assert_eq!(shape, [6, 256], "a ResNet backbone returns pooled descriptors");
    let p = ndarray::Array2::from_shape_vec((6, 256), values).unwrap();
    for (zr, pr) in z.rows().into_iter().zip(p.rows()) {
        let cos = zr.dot(&pr) / pr.dot(&pr).sqrt();
        assert!(cos > 0.99999, "{cos}");
    }
}

/// DINOv2 with registers trains, and saves in timm's layout: `reg_token` [1, R, D] and a
/// `pos_embed` with patch rows only (no_embed_class), which irtdb-onnx reads back to the
/// trainer's own embeddings.
#[test]
fn registers_train_and_save_in_timm_layout() {
    let cfg = irtdb_onnx::VitConfig {
        patch: 14,
        img_size: [28, 28],
        layer_scale: true,
        reg_tokens: 4,
        no_embed_class: true,
        ..deit_config("vit_micro").unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let start = dir.path().join("start.safetensors");
    save_safetensors(&start, &random_vit(&cfg, 41)).unwrap();
    let mut trainer = micro_trainer(&start);
    let before = {
        let (x, _) = labelled_batch(&cfg, 42);
        trainer.embed(x.view()).unwrap()
    };
    for s in 0..3 {
        let (x, y) = labelled_batch(&cfg, 43 + s);
        let stats = trainer.step(x.view(), &y, 1e-2).unwrap();
        assert!(stats.loss.is_finite());
    }
    let saved = dir.path().join("trained.safetensors");
    trainer.save_weights(&saved).unwrap();
    let tensors = safetensors_shapes(&saved);
    assert_eq!(tensors["reg_token"], [1, 4, 32]);
    assert_eq!(tensors["pos_embed"], [1, 4, 32], "2x2 patch positions, no prefix rows");

    let weights =
        VitWeights::load(&saved, &ConfigOverrides { heads: Some(4), ..Default::default() })
            .unwrap();
    assert_eq!((weights.config.reg_tokens, weights.config.no_embed_class), (4, true));
    let (x, _) = labelled_batch(&cfg, 42);
    let ours = trainer.embed(x.view()).unwrap();
    let moved = ours.iter().zip(&before).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "three steps did not change the embeddings ({moved})");
    let tokens = reference::forward(&weights, x.as_slice().unwrap(), 12);
    let mut want =
        Array2::from_shape_vec((12, 32), reference::pool(&weights, &tokens, 12)).unwrap();
    for mut row in want.rows_mut() {
        let n = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / n);
    }
    let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "embed vs reference of the saved checkpoint: {max}");
}

/// Tensor shapes of a safetensors file, read with the safetensors crate (not irtdb-onnx).
fn safetensors_shapes(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    file.iter().map(|(name, view)| (name.to_owned(), view.shape().to_vec())).collect()
}
