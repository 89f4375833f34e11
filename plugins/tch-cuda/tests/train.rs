//! The trainer on a tiny synthetic problem: the loss falls, the memory fills, and the saved
//! checkpoint is a timm-named file that irtdb-onnx reads back to the same embeddings.

use irtdb_core::Trainer;
use irtdb_onnx::testing::{deit_config, random_images, random_vit, save_safetensors};
use irtdb_onnx::{reference, ConfigOverrides, VitWeights};
use irtdb_plugin_tch_cuda::{DeviceChoice, TchTrainer, TrainConfig};
use ndarray::{Array2, Array4};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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
    trainer.save(&saved).unwrap();
    let weights =
        VitWeights::load(&saved, &ConfigOverrides { heads: Some(4), ..Default::default() })
            .unwrap();
    let tokens = reference::forward(&weights, x.as_slice().unwrap(), 16);
    let mut want =
        Array2::from_shape_vec((16, 32), reference::pool_cls(&weights, &tokens, 16)).unwrap();
    for mut row in want.rows_mut() {
        let n = row.dot(&row).sqrt();
        row.mapv_inplace(|v| v / n);
    }
    let max = ours.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(max < 1e-4, "embed vs reference of the saved checkpoint: {max}");
}
