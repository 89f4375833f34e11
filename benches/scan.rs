//! Big trees: the cost of an `irtdb index` re-run on a 100k-file tree where nothing changed,
//! against `find DIR -type f | wc -l` on the same tree (the least any tool can do: list it), in
//! the same run. Also the first index of the tree, and the scan alone (sequential stat as
//! walkdir does it, against irtdb's parallel stat).
//!
//!     scripts/setup-onnxruntime.sh                                     # once
//!     cargo build --release -p irtdb -p irtdb-plugin-ort-tensorrt
//!     cargo bench --bench scan [-- FILES]                              # default 100000
//!
//! The tree: FILES distinct 8×8 PNGs in folders of 1,000. The model is a tiny random ViT, so the
//! first index measures the pipeline, not a network. Page cache warm (one untimed listing first).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use common::{median, ms, Table};
use irtdb_engine::model::{write_random_model, RandomModel};

const RUNS: usize = 3;

fn main() -> Result<()> {
    let files: usize = common::first_arg().map(|a| a.parse()).transpose()?.unwrap_or(100_000);
    common::setup_ort()?;
    let plugin = common::plugin_path()?;
    let exe = plugin.with_file_name("irtdb");
    ensure!(exe.is_file(), "{} is not built: cargo build --release -p irtdb", exe.display());
    println!("# irtdb bench: scan ({files} files)");
    println!("machine: {}", common::machine());
    let tmp = tempfile::tempdir()?;
    let tree = tmp.path().join("tree");
    let t = Instant::now();
    make_tree(&tree, files)?;
    println!("tree written in {:.1} s", t.elapsed().as_secs_f64());
    let model = tmp.path().join("micro.safetensors");
    let micro = RandomModel { arch: "vit_micro".into(), depth: None, image_size: None, seed: 1 };
    write_random_model(&micro, &model)?;
    let db = tmp.path().join("c.db");
    let index = || {
        let mut c = Command::new(&exe);
        c.args(["index", "--json", "--dim", "0", "--db"]).arg(&db).arg(&tree);
        c.arg("--model").arg(&model).arg("--plugin").arg(&plugin);
        c
    };

    let t = Instant::now();
    let first = run_json(&mut index())?;
    let first_s = t.elapsed().as_secs_f64();
    ensure!(first["added"].as_u64() == Some(files as u64), "first index: {first}");

    let find = || {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("find '{}' -type f | wc -l", tree.display()));
        c
    };
    find().output()?; // warm
    let mut rerun = Vec::new();
    let mut listing = Vec::new();
    let mut scan_par = Vec::new();
    let mut scan_seq = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = find().output()?;
        listing.push(t.elapsed().as_secs_f64());
        let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse()?;
        ensure!(n == files, "find counted {n}");

        let t = Instant::now();
        let r = run_json(&mut index())?;
        rerun.push(t.elapsed().as_secs_f64());
        ensure!(
            r["unchanged"].as_u64() == Some(files as u64) && r["embedded"].as_u64() == Some(0),
            "the re-run changed something: {r}"
        );

        let t = Instant::now();
        let s = irtdb_image::scan(&tree, &Default::default());
        scan_par.push(t.elapsed().as_secs_f64());
        ensure!(s.files.len() == files);
        let t = Instant::now();
        let n = sequential_scan(&tree);
        scan_seq.push(t.elapsed().as_secs_f64());
        ensure!(n == files);
    }
    let mut table = Table::new(
        &format!("{files} files, nothing changed (median of {RUNS})"),
        &["what", "ms", "vs find"],
    );
    let base = median(&listing);
    for (what, times) in [
        ("find DIR -type f | wc -l", &listing),
        ("irtdb index, nothing changed (whole process)", &rerun),
        ("irtdb_image::scan (walk + parallel stat)", &scan_par),
        ("walkdir + sequential stat", &scan_seq),
    ] {
        let m = median(times);
        table.row(vec![what.into(), ms(m), format!("{:.2}x", m / base)]);
    }
    println!(
        "\nfirst index of {files} files: {first_s:.1} s ({:.0} files/s)",
        files as f64 / first_s
    );
    println!("{}", table.render());

    // Cold cache (root only: the kernel's page, dentry and inode caches dropped before each).
    if !drop_caches() {
        println!(
            "(cold-cache rows skipped: /proc/sys/vm/drop_caches is not writable; run as root)"
        );
        return Ok(());
    }
    let mut times: [Vec<f64>; 4] = Default::default();
    for _ in 0..RUNS {
        for (k, slot) in times.iter_mut().enumerate() {
            drop_caches();
            let t = Instant::now();
            match k {
                0 => drop(find().output()?),
                1 => drop(run_json(&mut index())?),
                2 => drop(irtdb_image::scan(&tree, &Default::default())),
                _ => drop(sequential_scan(&tree)),
            }
            slot.push(t.elapsed().as_secs_f64());
        }
    }
    let mut cold = Table::new(
        &format!("{files} files, cold cache (median of {RUNS})"),
        &["what", "ms", "vs find"],
    );
    let base = median(&times[0]);
    let names = [
        "find DIR -type f | wc -l",
        "irtdb index, nothing changed (whole process)",
        "irtdb_image::scan (walk + parallel stat)",
        "walkdir + sequential stat",
    ];
    for (what, t) in names.iter().zip(&times) {
        let m = median(t);
        cold.row(vec![(*what).into(), ms(m), format!("{:.2}x", m / base)]);
    }
    println!("{}", cold.render());
    Ok(())
}

/// Drops the page cache (needs root); whether it could.
fn drop_caches() -> bool {
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

fn run_json(c: &mut Command) -> Result<serde_json::Value> {
    let out = c.output().context("running irtdb")?;
    ensure!(out.status.success(), "irtdb failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// `files` distinct 8×8 PNGs, 1,000 per folder.
fn make_tree(root: &Path, files: usize) -> Result<()> {
    use rayon::prelude::*;
    (0..files.div_ceil(1000)).into_par_iter().try_for_each(|d| -> Result<()> {
        let dir = root.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir)?;
        for i in d * 1000..((d + 1) * 1000).min(files) {
            let img = image::RgbImage::from_fn(8, 8, |x, y| {
                let high = ((i / 65536) as u8).wrapping_mul(32);
                image::Rgb([(i % 256) as u8, ((i / 256) % 256) as u8, high + (x * 4 + y) as u8])
            });
            img.save(dir.join(format!("{i:06}.png")))?;
        }
        Ok(())
    })
}

/// What the scan did before: one `stat` after another, in walk order.
fn sequential_scan(root: &Path) -> usize {
    walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| irtdb_image::has_image_extension(e.path()))
        .filter(|e| e.metadata().is_ok_and(|m| m.is_file()))
        .count()
}
