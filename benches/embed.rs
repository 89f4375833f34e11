//! Embedding throughput on the CPU: preprocessing alone, the forward alone (the yardstick), and
//! end to end (`embed_files`, decoding batch n+1 while batch n runs), for random-weight DeiT-S
//! and DeiT-Ti at batch 1 and 16.
//!
//!     scripts/setup-onnxruntime.sh                                # once
//!     cargo build --release -p irtdb-plugin-ort-tensorrt          # the plugin the bench loads
//!     cargo bench --bench embed
//!
//! Images are generated photo-like 500×375 JPEGs (quality 90). Each measurement is short (a few
//! seconds), so expect ±10 % between runs on a shared machine; ratios measured in the same run are
//! steadier than absolute numbers.

mod common;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, num, Table};
use irtdb_core::{Backbone, Pool, Preprocess};
use irtdb_engine::model::{write_random_model, RandomModel};
use irtdb_engine::{embed_files, Embedder};
use irtdb_image::{decode_file, prepare_batch, prepare_file, preprocess_to_array, DecodeLimits};
use irtdb_plugin_api::host::Plugin;
use ndarray::{s, Array4, Axis};

/// Number of generated images, and their size (a typical web photo).
const FILES: usize = 64;
const PHOTO: (u32, u32) = (500, 375);
/// Seconds spent on each forward measurement and targeted by each end-to-end run (which is
/// at least two batches).
const FORWARD_SECS: f64 = 1.5;
const E2E_SECS: f64 = 2.5;
/// Rounds of (forward alone, end to end) per model and batch size.
const ROUNDS: usize = 3;
const MODELS: [&str; 2] = ["deit_small_patch16_224", "deit_tiny_patch16_224"];
const BATCHES: [usize; 2] = [1, 16];

fn main() -> Result<()> {
    let started = Instant::now();
    let ort = common::setup_ort()?;
    let plugin_path = common::plugin_path()?;
    println!("# irtdb bench: embed");
    println!("machine: {}", common::machine());
    println!("plugin: {}\nONNX Runtime: {}", plugin_path.display(), ort.display());

    let tmp = tempfile::tempdir()?;
    let (files, bytes) = common::write_photos(&tmp.path().join("photos"), FILES, PHOTO, 7, None)?;
    println!(
        "images: {FILES} photo-like {}x{} JPEGs, mean {:.0} KB",
        PHOTO.0,
        PHOTO.1,
        bytes as f64 / FILES as f64 / 1000.0
    );

    let pre_parallel = preprocessing(&files)?;

    let plugin = Plugin::load(&plugin_path)?;
    let mut table = Table::new(
        "Embedding throughput (img/s)",
        &[
            "model",
            "batch",
            "forward alone",
            "end to end",
            "e2e / forward",
            "no-overlap estimate",
            "e2e images/round",
        ],
    );
    let mut loads = Vec::new();
    // IRTDB_BENCH_MODELS=deit_tiny_patch16_224 (comma-separated) picks other architectures.
    let models: Vec<String> = match std::env::var("IRTDB_BENCH_MODELS") {
        Ok(v) => v.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
        Err(_) => MODELS.iter().map(|m| m.to_string()).collect(),
    };
    for arch in &models {
        let (rows, load) = model_rows(&plugin, arch, &files, tmp.path(), pre_parallel)?;
        for r in rows {
            table.row(r);
        }
        loads.push(load);
    }
    table.print();
    println!(
        "forward alone: LoadedBackbone::forward on a preprocessed batch (ONNX Runtime CPU provider, \
         its default intra-op threads). end to end: embed_files over the JPEG files (decode, \
         resize, crop, normalise on rayon one batch ahead, forward, CLS pooling, L2). Medians \
         of {ROUNDS} alternating rounds; e2e / forward is the median of the per-round ratios. \
         no-overlap estimate: 1 / (1/forward + 1/preprocessing-parallel), what running the two \
         one after the other on the same cores would give."
    );
    for l in loads {
        println!("{l}");
    }
    println!(
        "\ntotal bench time {:.0} s; load average now {}",
        started.elapsed().as_secs_f64(),
        common::load_average()
    );
    Ok(())
}

/// (a) preprocessing alone; prints its table and returns the parallel img/s.
fn preprocessing(files: &[PathBuf]) -> Result<f64> {
    let p = Preprocess::imagenet(224);
    let limits = DecodeLimits::default();
    let n = files.len() as f64;
    let threads = rayon::current_num_threads();

    let decode = common::measure(2, 2.0, 20, || {
        for f in files {
            decode_file(f, &limits).expect("decodes");
        }
    });
    let decoded = files
        .iter()
        .map(|f| decode_file(f, &limits).map(|d| d.rgb))
        .collect::<Result<Vec<_>, _>>()?;
    let resize = common::measure(2, 1.0, 50, || {
        for img in &decoded {
            std::hint::black_box(preprocess_to_array(img, &p));
        }
    });
    let single = common::measure(2, 2.0, 20, || {
        for f in files {
            std::hint::black_box(prepare_file(f, &p, &limits).expect("prepares"));
        }
    });
    let parallel = common::measure(2, 2.0, 40, || {
        let out = prepare_batch(files, &p, &limits);
        assert!(out.iter().all(Result::is_ok));
    });

    let mut t = Table::new(
        &format!(
            "Preprocessing alone: {}x{} JPEG → 224x224 tensor (timm eval: bicubic to 256, crop, normalise)",
            PHOTO.0, PHOTO.1
        ),
        &["stage", "threads", "img/s", "ms/img (per thread)"],
    );
    let mut row = |stage: &str, th: usize, times: &[f64]| {
        let per = median(times) / n;
        t.row(vec![stage.into(), th.to_string(), num(1.0 / per), common::ms(per * th as f64)]);
        1.0 / per
    };
    row("decode only (decode_file)", 1, &decode);
    row("resize + crop + normalise only", 1, &resize);
    row("decode + preprocess (prepare_file)", 1, &single);
    let par = row("decode + preprocess (prepare_batch, rayon)", threads, &parallel);
    t.print();
    Ok(par)
}

/// (b) and (c) for one architecture: table rows and a line about writing and loading the model.
fn model_rows(
    plugin: &Plugin,
    arch: &str,
    files: &[PathBuf],
    dir: &std::path::Path,
    pre_parallel: f64,
) -> Result<(Vec<Vec<String>>, String)> {
    let model = dir.join(format!("{arch}.safetensors"));
    let t = Instant::now();
    let opts = RandomModel { arch: arch.into(), depth: None, image_size: None, seed: 1 };
    let cfg = write_random_model(&opts, &model)?;
    let write_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let backbone = plugin
        .create_backbone(&irtdb_plugin_api::BackboneConfig {
            providers: Some(vec!["cpu".into()]),
            ..irtdb_plugin_api::BackboneConfig::new(&model)
        })
        .with_context(|| format!("creating {arch}"))?;
    let load_s = t.elapsed().as_secs_f64();
    let info = backbone.info().clone();
    ensure!(info.dim == cfg.dim, "{arch}: dim {} != {}", info.dim, cfg.dim);
    let mut embedder = Embedder::new(backbone, Pool::Cls);
    let limits = DecodeLimits::default();

    // A batch of real preprocessed images as the forward's input.
    let max_batch = *BATCHES.iter().max().expect("batches");
    let rows = prepare_batch(&files[..max_batch], &info.preprocess, &limits)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
    let input: Array4<f32> = ndarray::stack(Axis(0), &views)?;

    let mut out = Vec::new();
    for b in BATCHES {
        let x = input.slice(s![..b, .., .., ..]);
        embedder.backbone.forward(x)?; // warm-up: the first run of a shape plans its kernels

        // Alternate the two measurements, so that a change in the machine's load (it is shared)
        // hits both; report the medians and the median of the per-round ratios.
        let (mut forwards, mut e2es, mut ratios, mut n) = (vec![], vec![], vec![], 0);
        for _ in 0..ROUNDS {
            let times = common::measure(1, FORWARD_SECS, 200, || {
                embedder.backbone.forward(x).expect("forward");
            });
            let forward = b as f64 / median(&times);

            // Enough files for about E2E_SECS, in whole batches, at least two batches.
            let want = (forward * E2E_SECS / b as f64).ceil() as usize * b;
            n = want.clamp((2 * b).max(8), files.len() / b * b);
            let t = Instant::now();
            let results = embed_files(&mut embedder, &files[..n], b, &limits, |_| {})?;
            let e2e = n as f64 / t.elapsed().as_secs_f64();
            ensure!(results.iter().all(|r| r.result.is_ok()), "{arch}: an image failed to embed");
            forwards.push(forward);
            e2es.push(e2e);
            ratios.push(e2e / forward);
        }
        if std::env::var_os("IRTDB_BENCH_VERBOSE").is_some() {
            println!("{arch} batch {b}: forward {forwards:.2?} img/s, end to end {e2es:.2?} img/s");
        }
        let (forward, e2e) = (median(&forwards), median(&e2es));

        let estimate = 1.0 / (1.0 / forward + 1.0 / pre_parallel);
        out.push(vec![
            format!("{arch} (dim {}, depth {})", cfg.dim, cfg.depth),
            b.to_string(),
            num(forward),
            num(e2e),
            format!("{:.2}", median(&ratios)),
            num(estimate),
            n.to_string(),
        ]);
    }
    let t = Instant::now();
    drop(embedder);
    let drop_s = t.elapsed().as_secs_f64();
    let load = format!(
        "{arch}: random weights written in {write_s:.2} s ({:.0} MB); plugin backbone created in \
         {load_s:.2} s (graph build + session) on {}, dropped in {drop_s:.3} s",
        std::fs::metadata(&model)?.len() as f64 / 1e6,
        info.provider
    );
    Ok((out, load))
}
