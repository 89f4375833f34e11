//! Training throughput of the tch-cuda trainer against the same network's forward alone (the
//! yardstick): images per second for one optimisation step (forward, contrastive + XBM + KoLeo,
//! backward, AdamW) and for an inference forward at the same batch, for random-weight DeiT-Ti
//! and DeiT-S at 224×224.
//!
//!     cd plugins/tch-cuda && cargo bench --bench train                 # CPU, batch 16
//!     cargo bench --bench train -- --device cuda --batch 64            # GPU, mixed precision
//!
//! Options: `--device cpu|cuda`, `--batch N`, `--steps N` (timed steps per model, after two
//! warm-up steps), `--models deit_tiny_patch16_224,deit_small_patch16_224`, `--no-amp`.
//! Inputs are random tensors: this measures the model, not image decoding (which the engine
//! overlaps with the step; see the root crate's embed bench for decoding throughput).

use std::time::Instant;

use irtdb_core::Trainer;
use irtdb_onnx::testing::{deit_config, random_vit, save_safetensors};
use irtdb_plugin_tch_cuda::{TchBackbone, TchTrainer};
use ndarray::Array4;

struct Args {
    device: String,
    batch: usize,
    steps: usize,
    models: Vec<String>,
    amp: bool,
}

fn args() -> Args {
    let mut a = Args {
        device: "cpu".into(),
        batch: 16,
        steps: 3,
        models: vec!["deit_tiny_patch16_224".into(), "deit_small_patch16_224".into()],
        amp: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--device" => a.device = value(),
            "--batch" => a.batch = value().parse().expect("--batch N"),
            "--steps" => a.steps = value().parse().expect("--steps N"),
            "--models" => a.models = value().split(',').map(str::to_string).collect(),
            "--no-amp" => a.amp = false,
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    println!("# tch-cuda training throughput");
    println!(
        "device {} | batch {} | {} timed steps | amp {} | libtorch threads {} | {}",
        a.device,
        a.batch,
        a.steps,
        a.amp && a.device == "cuda",
        tch::get_num_threads(),
        irtdb_plugin_tch_cuda::cuda_note()
    );
    println!("| model | forward img/s | train step img/s | train / forward |");
    println!("|---|---|---|---|");
    for name in &a.models {
        let cfg = deit_config(name).unwrap_or_else(|| panic!("unknown model {name}"));
        let path = dir.path().join(format!("{name}.safetensors"));
        save_safetensors(&path, &random_vit(&cfg, 1)).unwrap();
        let [h, w] = cfg.img_size;
        let classes = (a.batch / 4).max(2);
        let x = Array4::from_shape_fn((a.batch, 3, h, w), |(b, c, i, j)| {
            ((b * 31 + c * 7 + i * 3 + j) % 17) as f32 / 8.0 - 1.0
        });
        let labels: Vec<i64> = (0..a.batch).map(|i| (i % classes) as i64).collect();
        let config = serde_json::json!({
            "model": path, "device": a.device, "heads": cfg.heads, "memory": 4 * a.batch,
            "amp": a.amp,
        });

        // Yardstick: the inference forward (tokens out, as the backbone serves them).
        let bb =
            TchBackbone::new(&serde_json::from_value(config_backbone(&config)).unwrap()).unwrap();
        let flat = x.as_slice().unwrap();
        let shape = [a.batch, 3, h, w];
        for _ in 0..2 {
            let _ = bb.features(flat, &shape).unwrap();
        }
        let t = Instant::now();
        for _ in 0..a.steps {
            let _ = bb.features(flat, &shape).unwrap();
        }
        let forward = (a.steps * a.batch) as f64 / t.elapsed().as_secs_f64();
        drop(bb);

        let mut trainer = TchTrainer::new(serde_json::from_value(config).unwrap()).unwrap();
        for _ in 0..2 {
            trainer.step(x.view(), &labels, 1e-5).unwrap();
        }
        let t = Instant::now();
        for _ in 0..a.steps {
            // Returning the loss value synchronises with the device.
            trainer.step(x.view(), &labels, 1e-5).unwrap();
        }
        let train = (a.steps * a.batch) as f64 / t.elapsed().as_secs_f64();
        println!("| {name} | {forward:.1} | {train:.1} | {:.2} |", train / forward);
    }
}

/// The backbone part of a trainer config.
fn config_backbone(c: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"model": c["model"], "device": c["device"], "heads": c["heads"]})
}
