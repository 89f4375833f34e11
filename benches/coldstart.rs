//! Cold start and the ort plugin's optimised-model cache: the wall time of a cold
//! `irtdb query photo.jpg` process and its model load with the cache off (the yardstick: ONNX
//! Runtime optimises the graph in every process, as before the cache) and warm, alternating in
//! the same run; the first load that fills the cache; then the model load alone, in-process.
//!
//!     scripts/setup-onnxruntime.sh                                # once
//!     cargo build --release -p irtdb-plugin-ort-tensorrt          # the plugin `irtdb` loads
//!     cargo bench --bench coldstart
//!
//! "Cold" means a new process each time (plugin, ONNX Runtime and the model loaded again); the
//! OS page cache stays warm (one untimed query per mode runs first). The cache lives in the
//! bench's scratch folder (`XDG_CACHE_HOME`), so the user's is never touched. Every query's
//! results must be the same with and without the cache, and so must the descriptors in-process.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, ms, Table};
use irtdb_core::{Backbone, Features, Pool};
use irtdb_engine::model::{write_random_model, RandomModel};
use irtdb_engine::ModelSpec;
use irtdb_image::{prepare_file, DecodeLimits};
use irtdb_plugin_api::host::Plugin;
use ndarray::Axis;

const ARCH: &str = "deit_small_patch16_224";
const GALLERY: usize = 24;
const CLASSES: usize = 4;
const PCA_DIM: usize = 16;
/// Timed processes per mode, and in-process loads per mode.
const RUNS: usize = 7;
const LOADS: usize = 5;
/// Timed forwards per in-process load (after an untimed first one).
const FORWARDS: usize = 3;
const NO_CACHE: &str = "IRTDB_NO_MODEL_CACHE";

fn main() -> Result<()> {
    let started = Instant::now();
    let ort = common::setup_ort()?;
    let plugin = common::plugin_path()?;
    println!("# irtdb bench: coldstart");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    println!("scratch folder: {}", dir.display());

    let gallery = dir.join("gallery");
    common::write_photos(&gallery, GALLERY, (500, 375), 11, Some(CLASSES))?;
    let query_img = dir.join("query.jpg");
    common::write_photo_jpeg(&query_img, 500, 375, 999)?;
    let model = dir.join(format!("{ARCH}.safetensors"));
    let opts = RandomModel { arch: ARCH.into(), depth: None, image_size: None, seed: 2 };
    write_random_model(&opts, &model)?;
    let db = dir.join("gallery.db");
    let p = |p: &Path| p.to_string_lossy().into_owned();
    let cache_dir = dir.join("xdg-cache").join("irtdb").join("ort-cache");

    // Indexed with the cache off: the cache folder stays empty until the first timed query.
    common::run_timed(irtdb(dir, &ort, &plugin, false).args([
        "index",
        &p(&gallery),
        "--model",
        &p(&model),
        "--db",
        &p(&db),
        "--dim",
        &PCA_DIM.to_string(),
        "--json",
    ]))?;
    ensure!(!cache_dir.exists(), "indexing with {NO_CACHE}=1 made {}", cache_dir.display());

    let query = |cache: bool| -> Result<(Query, f64)> {
        let (out, wall) = common::run_timed(irtdb(dir, &ort, &plugin, cache).args([
            "query",
            &p(&query_img),
            "--db",
            &p(&db),
            "--json",
        ]))?;
        Ok((Query::parse(&out)?, wall))
    };
    query(false)?; // untimed: warms the page cache (binary, libraries, weights)
    let (first, first_wall) = query(true)?; // cache empty: optimises and stores
    let entries: Vec<_> = std::fs::read_dir(&cache_dir)?
        .map(|e| Ok(e?.path()))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ortcache"))
        .collect();
    ensure!(entries.len() == 1, "cache entries after the first query: {entries:?}");
    let entry_bytes = std::fs::metadata(&entries[0])?.len();
    query(true)?; // untimed: the entry into the page cache
    let (mut off, mut on) = (Times::default(), Times::default());
    for _ in 0..RUNS {
        let (q, wall) = query(false)?;
        ensure!(q.results == first.results, "uncached results differ: {:?}", q.results);
        off.push(&q, wall);
        let (q, wall) = query(true)?;
        ensure!(q.results == first.results, "cached results differ: {:?}", q.results);
        on.push(&q, wall);
    }

    let mut t = Table::new(
        &format!(
            "Cold `irtdb query IMAGE.jpg` process ({ARCH}, random weights, {GALLERY} images, CPU): \
             median ms of {RUNS} runs per mode, alternating"
        ),
        &["", "cache off (yardstick)", "(min-max)", "cache warm", "(min-max)", "warm / off"],
    );
    let mut row = |what: &str, a: &[f64], b: &[f64]| {
        t.row(vec![
            what.into(),
            ms(median(a)),
            format!("{}-{}", ms(common::min(a)), ms(common::max(a))),
            ms(median(b)),
            format!("{}-{}", ms(common::min(b)), ms(common::max(b))),
            format!("{:.2}", median(b) / median(a)),
        ]);
    };
    row("total wall time", &off.wall, &on.wall);
    row("model load (timings.model_load_seconds)", &off.load, &on.load);
    row("forward (decode + preprocess + forward)", &off.embed, &on.embed);
    t.print();
    println!(
        "First query with the cache empty (optimises, then writes the {:.0} MB entry): wall {} ms, \
         model load {} ms. The model load covers the plugin, the host's blake3 of the weights, and \
         the session (cache on: the key — the weights' digest remembered by file identity, the \
         model card's blake3 —, reading the entry and checking its blake3, loading it in place \
         with optimisation off).",
        entry_bytes as f64 / 1e6,
        ms(first_wall),
        ms(first.load)
    );

    in_process(&model, &query_img, &plugin)?;
    println!(
        "\ntotal bench time {:.0} s; load average now {}",
        started.elapsed().as_secs_f64(),
        common::load_average()
    );
    Ok(())
}

/// The `irtdb` binary cargo built for this bench, with a clean environment and the cache in the
/// scratch folder, on or off.
fn irtdb(dir: &Path, ort: &Path, plugin: &Path, cache: bool) -> Command {
    let mut c = common::irtdb(dir, ort, plugin);
    c.env_remove("IRTDB_MODEL_CACHE_LOG");
    if cache {
        c.env_remove(NO_CACHE);
    } else {
        c.env(NO_CACHE, "1");
    }
    c
}

/// One query's report.
struct Query {
    results: serde_json::Value,
    load: f64,
    embed: f64,
}

impl Query {
    fn parse(stdout: &[u8]) -> Result<Self> {
        let report: serde_json::Value = serde_json::from_slice(stdout)?;
        let ti = &report["timings"];
        let get = |k: &str| ti[k].as_f64().with_context(|| format!("timings.{k} in {ti}"));
        let results = report["results"].clone();
        let list = results.as_array().context("results")?;
        ensure!(list.iter().all(|r| r["error"].is_null()), "query failed: {report}");
        Ok(Query { results, load: get("model_load_seconds")?, embed: get("embed_seconds")? })
    }
}

#[derive(Debug, Default)]
struct Times {
    wall: Vec<f64>,
    load: Vec<f64>,
    embed: Vec<f64>,
}

impl Times {
    fn push(&mut self, q: &Query, wall: f64) {
        self.wall.push(wall);
        self.load.push(q.load);
        self.embed.push(q.embed);
    }
}

/// The model load alone, in this process, with the same calls `irtdb query` makes, cache off
/// and warm alternating; the descriptors of both must be identical.
fn in_process(model: &Path, image: &Path, plugin_path: &Path) -> Result<()> {
    let spec = ModelSpec::new(Some(&plugin_path.to_string_lossy()), model, Pool::Cls)?;
    let plugin = Plugin::load(plugin_path)?;
    let config = spec.plugin_config()?;
    let t0 = Instant::now();
    spec.weights_hash()?;
    let hash = t0.elapsed().as_secs_f64();
    let limits = DecodeLimits::default();
    let mut reference: Option<Features> = None;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let (mut fwd_off, mut fwd_on) = (Vec::new(), Vec::new());
    for _ in 0..LOADS {
        for cache in [false, true] {
            // Edition 2021; the plugin reads the variable at each backbone creation.
            if cache {
                std::env::remove_var(NO_CACHE);
            } else {
                std::env::set_var(NO_CACHE, "1");
            }
            let t = Instant::now();
            let mut backbone = plugin.create_backbone(&config)?;
            let s = t.elapsed().as_secs_f64();
            let times = if cache { &mut on } else { &mut off };
            times.push(s);
            let (x, _) = prepare_file(image, &backbone.info().preprocess, &limits)?;
            let x = x.insert_axis(Axis(0));
            let out = backbone.forward(x.view())?;
            // The forward of each session, after its first: a cached graph must run as fast.
            let fwd = if cache { &mut fwd_on } else { &mut fwd_off };
            for _ in 0..FORWARDS {
                let t = Instant::now();
                backbone.forward(x.view())?;
                fwd.push(t.elapsed().as_secs_f64());
            }
            match &reference {
                None => reference = Some(out),
                Some(r) => ensure!(r == &out, "the model's outputs differ (cache {cache})"),
            }
        }
    }
    let mut t = Table::new(
        &format!("Model load alone, in-process ({ARCH}, CPU): median ms of {LOADS} per mode"),
        &["step", "ms"],
    );
    t.row(vec!["host: blake3 of the weights (check_weights)".into(), ms(hash)]);
    t.row(vec!["create backbone, cache off (graph + optimise + session)".into(), ms(median(&off))]);
    t.row(vec!["create backbone, cache warm (key + read + check + load)".into(), ms(median(&on))]);
    let n = LOADS * FORWARDS;
    t.row(vec![format!("forward batch 1, cache off (median of {n})"), ms(median(&fwd_off))]);
    t.row(vec![format!("forward batch 1, cache warm (median of {n})"), ms(median(&fwd_on))]);
    t.print();
    Ok(())
}
