//! `irtdb serve` under load: warm query latency over HTTP (p50/p99) against the forward alone
//! (decode + preprocess + forward of the same image in this process, the service's own code), and
//! throughput with 16 concurrent clients against one forward at a time.
//!
//!     scripts/setup-onnxruntime.sh                                # once
//!     cargo build --release -p irtdb-plugin-ort-tensorrt          # the plugin `irtdb` loads
//!     cargo bench --bench serve [-- ARCH]                         # default deit_small_patch16_224
//!
//! The server is the real binary (`irtdb serve --bind 127.0.0.1:0`) with one model instance;
//! clients are ureq agents (keep-alive) on threads of this process.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use common::{median, ms, num, Table};
use irtdb_engine::model::{write_random_model, RandomModel};
use irtdb_engine::service::{Service, ServiceOptions};

const GALLERY: usize = 200;
const PCA_DIM: usize = 64;
const RUNS: usize = 60;
const CLIENTS: usize = 16;
const PER_CLIENT: usize = 8;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn main() -> Result<()> {
    let arch = common::first_arg().unwrap_or_else(|| "deit_small_patch16_224".into());
    let ort = common::setup_ort()?;
    let plugin = common::plugin_path()?;
    // This process opens the model too (the forward-alone yardstick).
    std::env::set_var("IRTDB_PLUGIN_PATH", plugin.parent().expect("a file in a folder"));
    println!("# irtdb bench: serve");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let gallery = dir.join("gallery");
    common::write_photos(&gallery, GALLERY, (640, 480), 5, Some(10))?;
    let queries: Vec<PathBuf> = (0..8)
        .map(|i| {
            let p = dir.join(format!("q{i}.jpg"));
            common::write_photo_jpeg(&p, 640, 480, 90_000 + i).map(|_| p)
        })
        .collect::<Result<_>>()?;
    let bodies: Vec<Vec<u8>> = queries.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let model = dir.join(format!("{arch}.safetensors"));
    write_random_model(
        &RandomModel { arch: arch.clone(), depth: None, image_size: None, seed: 3 },
        &model,
    )?;
    let db = dir.join("g.db");
    let status = common::irtdb(dir, &ort, &plugin)
        .args(["index", "--json", "--dim", &PCA_DIM.to_string(), "--db"])
        .arg(&db)
        .arg(&gallery)
        .arg("--model")
        .arg(&model)
        .stdout(Stdio::null())
        .status()?;
    ensure!(status.success(), "irtdb index failed");
    println!("{GALLERY} photo-like 640x480 JPEGs indexed with random {arch}, PCA {PCA_DIM}, HNSW");

    // The yardstick: the forward alone, in this process, through the service's own embedding.
    let service = Service::open(&ServiceOptions {
        db: db.clone(),
        workers: 1,
        limits: irtdb_image::DecodeLimits::default(),
    })?;
    for b in &bodies {
        service.embed_bytes(b).map_err(|e| anyhow::anyhow!("{e}"))?; // warm-up
    }
    let mut forward = Vec::new();
    let mut model_only = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        let (_, timings) =
            service.embed_bytes(&bodies[i % bodies.len()]).map_err(|e| anyhow::anyhow!("{e}"))?;
        forward.push(t.elapsed().as_secs_f64());
        model_only.push(timings.embed_ms / 1e3);
    }
    drop(service);

    // The server.
    let mut child = common::irtdb(dir, &ort, &plugin)
        .args(["serve", "--bind", "127.0.0.1:0", "--db"])
        .arg(&db)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let Some(url) = line.trim().strip_prefix("listening on ").map(String::from) else {
        let _ = child.kill();
        bail!("irtdb serve said {line:?}");
    };
    let result = load(&url, &bodies, &forward, &model_only);
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    child.wait()?;
    result?;
    println!("load average now {}", common::load_average());
    Ok(())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

fn post(agent: &ureq::Agent, url: &str, body: &[u8]) -> Result<()> {
    let mut r = agent.post(url).header("Content-Type", "image/jpeg").send(body)?;
    let text = r.body_mut().read_to_string()?;
    ensure!(r.status() == 200, "{}: {text}", r.status());
    Ok(())
}

fn load(url: &str, bodies: &[Vec<u8>], forward: &[f64], model_only: &[f64]) -> Result<()> {
    let target = format!("{url}/api/query?k=10");
    let a = agent();
    for b in bodies {
        post(&a, &target, b)?; // warm-up
    }
    let mut http = Vec::new();
    for i in 0..RUNS {
        let t = Instant::now();
        post(&a, &target, &bodies[i % bodies.len()])?;
        http.push(t.elapsed().as_secs_f64());
    }
    let mut t = Table::new(
        &format!("Warm query latency, one client, {RUNS} queries (640x480 JPEG upload, k 10)"),
        &["", "p50 ms", "p99 ms"],
    );
    t.row(vec![
        "model forward only (1 image)".into(),
        ms(median(model_only)),
        ms(percentile(model_only, 0.99)),
    ]);
    t.row(vec![
        "forward alone: decode + preprocess + forward".into(),
        ms(median(forward)),
        ms(percentile(forward, 0.99)),
    ]);
    t.row(vec![
        "HTTP POST /api/query (all of it)".into(),
        ms(median(&http)),
        ms(percentile(&http, 0.99)),
    ]);
    t.print();
    println!(
        "HTTP p50 - forward-alone p50 = {} ms (target <= 10 ms)",
        ms(median(&http) - median(forward))
    );

    // Throughput: 16 clients at once against one at a time.
    let started = Instant::now();
    let lat: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let target = &target;
                s.spawn(move || -> Result<Vec<f64>> {
                    let a = agent();
                    let mut v = Vec::new();
                    for i in 0..PER_CLIENT {
                        let t = Instant::now();
                        post(&a, target, &bodies[(c + i) % bodies.len()])?;
                        v.push(t.elapsed().as_secs_f64());
                    }
                    Ok(v)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("client thread")).collect::<Result<Vec<_>>>()
    })?
    .concat();
    let wall = started.elapsed().as_secs_f64();
    let mut t = Table::new(
        &format!(
            "Throughput, {CLIENTS} concurrent clients x {PER_CLIENT} queries, 1 model instance"
        ),
        &["", "queries/s", "p50 ms", "p99 ms"],
    );
    t.row(vec![
        "sequential forward alone (1 / p50)".into(),
        num(1.0 / median(forward)),
        ms(median(forward)),
        ms(percentile(forward, 0.99)),
    ]);
    t.row(vec![
        format!("HTTP, {CLIENTS} clients"),
        num(lat.len() as f64 / wall),
        ms(median(&lat)),
        ms(percentile(&lat, 0.99)),
    ]);
    t.print();
    Ok(())
}
