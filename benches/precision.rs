//! `--precision int8` against fp32 on the CPU: forward img/s of a random-weight DeiT-S at batch
//! 16 and 32 with 2 intra-op threads, both backbones created through the ort plugin and measured
//! in alternating rounds of the same run, and the mean cosine of their CLS descriptors on
//! photo-like JPEGs (end to end: decode, preprocess, forward, L2).
//!
//!     scripts/setup-onnxruntime.sh                                # once
//!     cargo build --release -p irtdb-plugin-ort-tensorrt          # the plugin the bench loads
//!     cargo bench --bench precision
//!     cargo bench --bench precision -- model.onnx   # a given model instead (an .onnx file is
//!                                                   # rewritten to int8 by irtdb_onnx::quantize)
//!
//! Random weights make recall meaningless (the descriptors encode colour and layout only), so
//! the bench reports agreement with fp32, not Recall@1.

mod common;

use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, num, Table};
use irtdb_core::{Backbone, Pool};
use irtdb_engine::model::{write_random_model, RandomModel};
use irtdb_engine::{embed_files, Embedder};
use irtdb_image::{prepare_batch, DecodeLimits};
use irtdb_plugin_api::host::{LoadedBackbone, Plugin};
use ndarray::{s, Array4, Axis};

const FILES: usize = 64;
const PHOTO: (u32, u32) = (500, 375);
const ARCH: &str = "deit_small_patch16_224";
const THREADS: usize = 2;
const BATCHES: [usize; 2] = [16, 32];
const ROUNDS: usize = 3;
const FORWARD_SECS: f64 = 4.0;
const PRECISIONS: [&str; 2] = ["fp32", "int8"];

fn main() -> Result<()> {
    let started = Instant::now();
    let ort = common::setup_ort()?;
    // The bench's own models never go to the user's model cache.
    std::env::set_var("IRTDB_NO_MODEL_CACHE", "1");
    let plugin_path = common::plugin_path()?;
    println!("# irtdb bench: precision");
    println!("machine: {}", common::machine());
    println!("plugin: {}\nONNX Runtime: {}", plugin_path.display(), ort.display());
    let tmp = tempfile::tempdir()?;
    let (files, _) = common::write_photos(&tmp.path().join("photos"), FILES, PHOTO, 11, None)?;
    let (model, label, dim) = match common::first_arg() {
        Some(given) => {
            let model = std::path::PathBuf::from(given);
            let label = model.display().to_string();
            (model, label, None)
        }
        None => {
            let model = tmp.path().join(format!("{ARCH}.safetensors"));
            let opts = RandomModel { arch: ARCH.into(), depth: None, image_size: None, seed: 1 };
            let cfg = write_random_model(&opts, &model)?;
            (model, format!("random {ARCH}"), Some(cfg.dim))
        }
    };

    let plugin = Plugin::load(&plugin_path)?;
    let mut embedders = Vec::new();
    for p in PRECISIONS {
        let t = Instant::now();
        let backbone = plugin
            .create_backbone(&irtdb_plugin_api::BackboneConfig {
                providers: Some(vec!["cpu".into()]),
                threads: Some(THREADS),
                precision: Some(p.into()),
                ..irtdb_plugin_api::BackboneConfig::new(&model)
            })
            .with_context(|| format!("creating {label} at {p}"))?;
        println!(
            "{p}: backbone created in {:.2} s (graph build or rewrite + session)",
            t.elapsed().as_secs_f64()
        );
        ensure!(dim.is_none_or(|d| backbone.info().dim == d), "dim");
        embedders.push(Embedder::new(backbone, Pool::Cls));
    }

    let limits = DecodeLimits::default();
    let max_batch = *BATCHES.iter().max().expect("batches");
    let rows = prepare_batch(&files[..max_batch], &embedders[0].preprocess, &limits)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    let input: Array4<f32> = ndarray::stack(Axis(0), &views)?;

    let mut table = Table::new(
        &format!("Forward throughput, {label}, {THREADS} threads (img/s)"),
        &["batch", "fp32", "int8", "int8 / fp32 (median of rounds)"],
    );
    for b in BATCHES {
        let x = input.slice(s![..b, .., .., ..]);
        for e in embedders.iter_mut() {
            e.backbone.forward(x)?; // warm-up: the first run of a shape plans its kernels
        }
        let mut ips: Vec<Vec<f64>> = vec![Vec::new(); PRECISIONS.len()];
        let mut ratios = Vec::new();
        for _ in 0..ROUNDS {
            for (i, e) in embedders.iter_mut().enumerate() {
                let bb: &mut LoadedBackbone = &mut e.backbone;
                let times = common::measure(1, FORWARD_SECS, 100, || {
                    bb.forward(x).expect("forward");
                });
                ips[i].push(b as f64 / median(&times));
            }
            ratios.push(ips[1].last().unwrap() / ips[0].last().unwrap());
        }
        table.row(vec![
            b.to_string(),
            num(median(&ips[0])),
            num(median(&ips[1])),
            format!("{:.2}", median(&ratios)),
        ]);
    }
    table.print();

    // Agreement: CLS descriptors (L2-normalised) of every photo at both precisions.
    let mut descriptors = Vec::new();
    for e in embedders.iter_mut() {
        let out = embed_files(e, &files, 16, &limits, |_| {})?;
        let d: Vec<Vec<f32>> = out
            .into_iter()
            .map(|r| r.result.map_err(anyhow::Error::from))
            .collect::<Result<_>>()?;
        descriptors.push(d);
    }
    let cos: Vec<f64> = descriptors[0]
        .iter()
        .zip(&descriptors[1])
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum())
        .collect();
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let worst = cos.iter().copied().fold(1.0, f64::min);
    println!(
        "int8 vs fp32 CLS descriptors on {FILES} photo-like {}x{} JPEGs: mean cosine {mean:.4}, \
         min {worst:.4}",
        PHOTO.0, PHOTO.1
    );
    println!(
        "\nforward alone: LoadedBackbone::forward on a preprocessed batch; medians of {ROUNDS} \
         alternating rounds of {FORWARD_SECS} s. total bench time {:.0} s; load average now {}",
        started.elapsed().as_secs_f64(),
        common::load_average()
    );
    Ok(())
}
