//! The collection side: (a) how fast descriptors go into SQLite through `Store::commit_batch`,
//! against the same bytes written to a flat file with one fsync; (b) the latency of a cold
//! `irtdb query` process, split into its parts, against `irtdb query id:N` (no embedding).
//!
//!     scripts/setup-onnxruntime.sh                                # once
//!     cargo build --release -p irtdb-plugin-ort-tensorrt          # the plugin `irtdb` loads
//!     cargo bench --bench collection
//!
//! "Cold" means a new process each time (plugin, ONNX Runtime and the model loaded again); the
//! OS page cache stays warm (one untimed query runs first).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, ms, num, Table};
use irtdb_core::{Backbone, Pool};
use irtdb_engine::model::{write_random_model, RandomModel};
use irtdb_engine::ModelSpec;
use irtdb_image::{prepare_file, DecodeLimits};
use irtdb_plugin_api::host::Plugin;
use irtdb_store::{f32s_to_blob, ImageUpdate, NewModel, Outcome, Store};
use ndarray::Axis;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Store benchmark: descriptors, their dimension (DeiT-S), images per commit, repetitions.
const N: usize = 20_000;
const DIM: usize = 384;
const BATCH: usize = 64;
const STORE_RUNS: usize = 3;

/// Query benchmark: the indexed gallery, the model, and the number of timed processes.
const GALLERY: usize = 48;
const CLASSES: usize = 6;
const PCA_DIM: usize = 32;
const QUERY_ARCH: &str = "deit_small_patch16_224";
const QUERY_RUNS: usize = 5;

fn main() -> Result<()> {
    let started = Instant::now();
    let ort = common::setup_ort()?;
    let plugin = common::plugin_path()?;
    println!("# irtdb bench: collection");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    println!("scratch folder: {}", tmp.path().display());

    store_writes(tmp.path())?;
    query_latency(tmp.path(), &ort, &plugin)?;

    println!(
        "\ntotal bench time {:.0} s; load average now {}",
        started.elapsed().as_secs_f64(),
        common::load_average()
    );
    Ok(())
}

// ----- (a) descriptors into SQLite ------------------------------------------------------------

fn bench_model() -> NewModel {
    NewModel {
        plugin: "bench".into(),
        backbone: "deit_small_patch16_224".into(),
        weights_path: None,
        weights_hash: "0".repeat(64),
        config: serde_json::json!({ "pooling": "cls" }),
        dim: DIM,
        random_weights: true,
    }
}

fn store_writes(dir: &Path) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(3);
    let vectors: Vec<f32> = (0..N * DIM).map(|_| rng.random_range(-1.0..1.0f32)).collect();
    let updates: Vec<ImageUpdate> = vectors
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| ImageUpdate {
            path: format!("class{:03}/img{i:06}.jpg", i % 100),
            size: 60_000 + i as i64,
            mtime_ns: 1_700_000_000_000_000_000 + i as i64,
            hash: (0..4).map(|_| format!("{:016x}", rng.random::<u64>())).collect(),
            width: Some(500),
            height: Some(375),
            label: Some(format!("class{:03}", i % 100)),
            outcome: Outcome::Embedded(v.to_vec()),
        })
        .collect();
    let bytes = (N * DIM * 4) as f64;

    let (mut commits, mut closes, mut reads, mut db_bytes) = (vec![], vec![], vec![], 0u64);
    for run in 0..STORE_RUNS {
        let db = dir.join(format!("store{run}.db"));
        let mut store = Store::open(&db)?;
        let model = store.upsert_model(&bench_model())?;
        let t = Instant::now();
        for chunk in updates.chunks(BATCH) {
            store.commit_batch(model, chunk)?;
        }
        commits.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let back = store.descriptors(model)?;
        reads.push(t.elapsed().as_secs_f64());
        ensure!(back.len() == N && back.dim == DIM, "read back {} vectors", back.len());
        let t = Instant::now();
        drop(store); // closing checkpoints the WAL into the database file
        closes.push(commits[run] + t.elapsed().as_secs_f64());
        db_bytes = std::fs::metadata(&db)?.len();
    }

    // The same image rows without descriptors: what the row bookkeeping alone costs.
    let rows_only: Vec<ImageUpdate> = updates
        .iter()
        .map(|u| ImageUpdate { outcome: Outcome::Failed("bench".into()), ..u.clone() })
        .collect();
    let mut row_commits = vec![];
    for run in 0..STORE_RUNS {
        let mut store = Store::open(&dir.join(format!("rows{run}.db")))?;
        let model = store.upsert_model(&bench_model())?;
        let t = Instant::now();
        for chunk in rows_only.chunks(BATCH) {
            store.commit_batch(model, chunk)?;
        }
        drop(store);
        row_commits.push(t.elapsed().as_secs_f64());
    }

    let (mut flat_writes, mut flat_reads) = (vec![], vec![]);
    for run in 0..STORE_RUNS {
        let path = dir.join(format!("flat{run}.f32"));
        let t = Instant::now();
        let mut f = std::fs::File::create(&path)?;
        for chunk in vectors.chunks(BATCH * DIM) {
            f.write_all(&f32s_to_blob(chunk))?;
        }
        f.sync_all()?;
        drop(f);
        flat_writes.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let raw = std::fs::read(&path)?;
        let back: Vec<f32> =
            raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        flat_reads.push(t.elapsed().as_secs_f64());
        ensure!(back.len() == N * DIM, "flat read back {} values", back.len());
    }

    let mut t = Table::new(
        &format!(
            "Descriptors into the collection: {N} x {DIM}-d f32 ({:.1} MB), {} commits of {BATCH}, \
             median of {STORE_RUNS}",
            bytes / 1e6,
            N.div_ceil(BATCH)
        ),
        &["operation", "seconds", "descriptors/s", "MB/s", "vs flat file"],
    );
    let flat_w = median(&flat_writes);
    let flat_r = median(&flat_reads);
    let row = |t: &mut Table, what: &str, secs: f64, yard: f64| {
        t.row(vec![
            what.into(),
            format!("{secs:.3}"),
            num(N as f64 / secs),
            num(bytes / 1e6 / secs),
            format!("{:.1}x", secs / yard),
        ]);
    };
    row(&mut t, "SQLite: Store::commit_batch, all batches", median(&commits), flat_w);
    row(&mut t, "SQLite: commits + close (WAL checkpoint)", median(&closes), flat_w);
    row(&mut t, "flat file: write + fsync once (yardstick)", flat_w, flat_w);
    t.row(vec![
        "SQLite: the same image rows, no descriptors, + close".into(),
        format!("{:.3}", median(&row_commits)),
        format!("({} rows/s)", num(N as f64 / median(&row_commits))),
        "-".into(),
        format!("{:.1}x", median(&row_commits) / flat_w),
    ]);
    row(&mut t, "SQLite: Store::descriptors (read all back)", median(&reads), flat_r);
    row(&mut t, "flat file: read all back (yardstick)", flat_r, flat_r);
    t.print();
    println!(
        "Each commit also upserts the image row (path, size, mtime, hash, label); the database \
         holds {:.1} MB after close ({:.2}x the raw vectors). WAL with synchronous=NORMAL: \
         commits are not fsynced one by one. Page cache warm for the reads.",
        db_bytes as f64 / 1e6,
        db_bytes as f64 / bytes
    );
    Ok(())
}

// ----- (b) cold query latency -----------------------------------------------------------------

/// Per-run parts of one query process, in seconds.
#[derive(Debug, Default)]
struct Parts {
    wall: Vec<f64>,
    open: Vec<f64>,
    load: Vec<f64>,
    embed: Vec<f64>,
    search: Vec<f64>,
}

impl Parts {
    fn push(&mut self, stdout: &[u8], wall: f64) -> Result<()> {
        let report: serde_json::Value = serde_json::from_slice(stdout)?;
        let ti = &report["timings"];
        let get = |k: &str| ti[k].as_f64().with_context(|| format!("timings.{k} in {ti}"));
        let results = report["results"].as_array().context("results")?;
        ensure!(results.iter().all(|r| r["error"].is_null()), "query failed: {report}");
        self.wall.push(wall);
        self.open.push(get("open_seconds")?);
        self.load.push(get("model_load_seconds")?);
        self.embed.push(get("embed_seconds")?);
        self.search.push(get("search_seconds")?);
        Ok(())
    }

    /// Wall time minus the parts measured inside `query::run` after opening: process start,
    /// dynamic linking, argument parsing, opening the database, printing, exit.
    fn startup_open(&self) -> Vec<f64> {
        (0..self.wall.len())
            .map(|i| self.wall[i] - self.load[i] - self.embed[i] - self.search[i])
            .collect()
    }
}

fn query_latency(dir: &Path, ort: &Path, plugin: &Path) -> Result<()> {
    let gallery = dir.join("gallery");
    let (_, _) = common::write_photos(&gallery, GALLERY, (500, 375), 11, Some(CLASSES))?;
    let query_img = dir.join("query.jpg");
    common::write_photo_jpeg(&query_img, 500, 375, 999)?;
    let model = dir.join(format!("{QUERY_ARCH}.safetensors"));
    let opts = RandomModel { arch: QUERY_ARCH.into(), depth: None, image_size: None, seed: 2 };
    write_random_model(&opts, &model)?;
    let db = dir.join("gallery.db");
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();

    let (out, index_wall) = common::run_timed(common::irtdb(dir, ort, plugin).args([
        "index",
        &path(&gallery),
        "--model",
        &path(&model),
        "--db",
        &path(&db),
        "--dim",
        &PCA_DIM.to_string(),
        "--json",
    ]))?;
    let index: serde_json::Value = serde_json::from_slice(&out)?;
    ensure!(index["embedded"].as_u64() == Some(GALLERY as u64), "index report: {index}");
    println!(
        "\nindexed {GALLERY} photo-like 500x375 JPEGs with random {QUERY_ARCH} in {index_wall:.1} s \
         ({} img/s while embedding), PCA {DIM} -> {PCA_DIM}, HNSW",
        num(index["images_per_second"].as_f64().unwrap_or(f64::NAN))
    );

    let query = |target: &str| -> Result<(Vec<u8>, f64)> {
        common::run_timed(common::irtdb(dir, ort, plugin).args([
            "query",
            target,
            "--db",
            &path(&db),
            "--json",
        ]))
    };
    let qpath = path(&query_img);
    query(&qpath)?; // untimed: warms the page cache (binary, libraries, weights)
    let (mut file, mut stored) = (Parts::default(), Parts::default());
    for _ in 0..QUERY_RUNS {
        let (out, wall) = query(&qpath)?;
        file.push(&out, wall)?;
        let (out, wall) = query("id:1")?;
        stored.push(&out, wall)?;
    }

    let mut t = Table::new(
        &format!(
            "Cold `irtdb query` process ({QUERY_ARCH}, random weights, {GALLERY} images): median \
             ms of {QUERY_RUNS} runs"
        ),
        &["part", "query IMAGE.jpg", "(min-max)", "query id:1 (lower bound)"],
    );
    let mut row = |what: &str, a: &[f64], b: &[f64]| {
        t.row(vec![
            what.into(),
            ms(median(a)),
            format!("{}-{}", ms(common::min(a)), ms(common::max(a))),
            ms(median(b)),
        ]);
    };
    row(
        "process start-up + open (wall - the three below)",
        &file.startup_open(),
        &stored.startup_open(),
    );
    row("  of which open (store, model row, PCA)", &file.open, &stored.open);
    row("model load (plugin, weights hash, graph, session)", &file.load, &stored.load);
    row("forward (decode + preprocess + forward, 1 image)", &file.embed, &stored.embed);
    row("search (HNSW load + search + rows)", &file.search, &stored.search);
    row("total wall time", &file.wall, &stored.wall);
    t.print();
    println!(
        "The --json timings cover the work inside `query::run`; the first row is the rest of the \
         wall time: process start and exit, argument parsing, opening the database, printing, and \
         for an image query also dropping the model and exiting with ONNX Runtime loaded (the \
         session teardown alone is timed below)."
    );
    model_load_breakdown(&model, &query_img, plugin)
}

/// Where the model-load time of a cold query goes, measured in this (fresh) process with the
/// same calls `irtdb query` makes.
fn model_load_breakdown(model: &Path, image: &Path, plugin_path: &Path) -> Result<()> {
    let mut t = Table::new(
        &format!("Model load of a cold query, step by step, in-process ({QUERY_ARCH})"),
        &["step", "ms"],
    );
    let spec = ModelSpec::new(Some(&plugin_path.to_string_lossy()), model, Pool::Cls)?;
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let t = Instant::now();
        f()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let mut plugin = None;
    let s = time(&mut || {
        plugin = Some(Plugin::load(plugin_path)?);
        Ok(())
    })?;
    let plugin = plugin.expect("loaded");
    t.row(vec!["load the plugin library (dlopen + handshake)".into(), ms(s)]);
    let s = time(&mut || spec.weights_hash().map(drop).map_err(Into::into))?;
    t.row(vec!["blake3 of the weights file (check_weights)".into(), ms(s)]);

    let default_chain = spec.plugin_config()?;
    let mut cpu_only = spec.plugin_config()?;
    cpu_only.providers = Some(vec!["cpu".into()]);
    let limits = DecodeLimits::default();
    for (what, config) in [
        ("create backbone, default providers, first in process", &default_chain),
        ("create backbone, default providers, again", &default_chain),
        ("create backbone, providers [cpu]", &cpu_only),
    ] {
        let t0 = Instant::now();
        let mut backbone = plugin.create_backbone(config)?;
        t.row(vec![
            format!("{what} (on {})", backbone.info().provider),
            ms(t0.elapsed().as_secs_f64()),
        ]);
        if what.ends_with("first in process") {
            let (x, _) = prepare_file(image, &backbone.info().preprocess, &limits)?;
            let x = x.insert_axis(Axis(0));
            let s = time(&mut || backbone.forward(x.view()).map(drop).map_err(Into::into))?;
            t.row(vec!["  first forward after creation, batch 1".into(), ms(s)]);
            let s = time(&mut || backbone.forward(x.view()).map(drop).map_err(Into::into))?;
            t.row(vec!["  second forward, batch 1".into(), ms(s)]);
        }
        let t0 = Instant::now();
        drop(backbone);
        t.row(vec![
            "  drop the backbone (session teardown)".into(),
            ms(t0.elapsed().as_secs_f64()),
        ]);
    }
    t.print();
    Ok(())
}
