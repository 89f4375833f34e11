//! Results run for the index crate: the figures quoted in reports, at sizes criterion can't
//! repeat (building a 100k or 1M graph many times over). Run in release:
//!
//! ```text
//! cargo run --release -p irtdb-index --example index_report -- --n 100000 --out /tmp/irtdb-bench
//! cargo run --release -p irtdb-index --example index_report -- --n 1000000 --skip-hnsw --skip-pca
//! /tmp/venv/bin/python crates/index/benches/hnswlib_peer.py /tmp/irtdb-bench
//! ```
//!
//! It measures, on seeded synthetic data (`benches/common/data.rs`):
//! - exact search: batch throughput (all threads) and single-thread queries per second;
//! - HNSW: build time (all threads) and the build's peak memory (peak RSS minus RSS before),
//!   then single-thread QPS and recall@10 against exact search for a range of `ef`;
//! - save and load times and file size; then 10 rounds of 1 % deletes + 1 % inserts without a
//!   rebuild, and the same curve again;
//! - PCA 384 → 128 on `--pca-n` vectors: the covariance + eigh fit against linfa-reduction's.
//!
//! With `--out DIR` it writes `db.npy`, `queries.npy` and `gt.npy` (exact top-10 rows) there for
//! the Python yardstick `benches/hnswlib_peer.py`, and `rust_results.json` with every figure.

#[path = "../benches/common/data.rs"]
mod data;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use irtdb_index::{exact_search, HnswIndex, HnswParams, Pca};
use serde_json::json;

struct Args {
    n: usize,
    nq: usize,
    recipe: String,
    out: Option<PathBuf>,
    skip_pca: bool,
    skip_hnsw: bool,
    pca_n: usize,
    efs: Vec<usize>,
}

fn parse_args() -> Args {
    let mut a = Args {
        n: 100_000,
        nq: 1000,
        recipe: "descriptor".into(),
        out: None,
        skip_pca: false,
        skip_hnsw: false,
        pca_n: 100_000,
        efs: vec![10, 16, 24, 32, 48, 64, 100, 150, 200, 300],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = val().parse().expect("--n"),
            "--nq" => a.nq = val().parse().expect("--nq"),
            "--recipe" => a.recipe = val(),
            "--out" => a.out = Some(PathBuf::from(val())),
            "--pca-n" => a.pca_n = val().parse().expect("--pca-n"),
            "--efs" => a.efs = val().split(',').map(|s| s.parse().expect("--efs")).collect(),
            "--skip-pca" => a.skip_pca = true,
            "--skip-hnsw" => a.skip_hnsw = true,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

const DIM: usize = 128;
const K: usize = 10;

fn main() {
    let args = parse_args();
    let threads = rayon::current_num_threads();
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    println!("machine: {threads} rayon threads, AVX2+FMA dot: {}", irtdb_index::simd_available());
    let mut report = serde_json::Map::new();
    report.insert("threads".into(), json!(threads));
    report.insert("n".into(), json!(args.n));
    report.insert("nq".into(), json!(args.nq));
    report.insert("recipe".into(), json!(args.recipe));

    let t = Instant::now();
    let clusters = (args.n / 200).max(1);
    let (db, queries) = match args.recipe.as_str() {
        "descriptor" => data::descriptor_like_split(1, args.n, args.nq, DIM, clusters, 32),
        "isotropic" => data::isotropic_split(1, args.n, args.nq, DIM, clusters, 0.1),
        other => panic!("unknown recipe {other}"),
    };
    println!(
        "data: {} × {DIM} ({} recipe, {clusters} clusters) + {} queries, generated in {:.1}s",
        args.n,
        args.recipe,
        args.nq,
        t.elapsed().as_secs_f64()
    );

    // Exact search: ground truth and the brute-force yardstick.
    let t = Instant::now();
    let truth = exact_search(&db, DIM, &queries, K);
    let exact_batch_s = t.elapsed().as_secs_f64();
    let single_q = args.nq.min(200);
    let mut s = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        one_thread.install(|| {
            for q in queries.chunks_exact(DIM).take(single_q) {
                std::hint::black_box(exact_search(&db, DIM, q, K));
            }
        });
        s = s.min(t.elapsed().as_secs_f64());
    }
    let exact_single_qps = single_q as f64 / s;
    println!(
        "exact: batch of {} queries in {:.3}s = {:.0} QPS ({threads} threads); \
         one query at a time, 1 thread: {:.1} QPS",
        args.nq,
        exact_batch_s,
        args.nq as f64 / exact_batch_s,
        exact_single_qps
    );
    report.insert(
        "exact".into(),
        json!({"batch_s": exact_batch_s, "batch_qps": args.nq as f64 / exact_batch_s,
               "single_thread_qps": exact_single_qps}),
    );

    if let Some(dir) = &args.out {
        fs_err::create_dir_all(dir).unwrap();
        write_npy_f32(&dir.join("db.npy"), &db, args.n, DIM);
        write_npy_f32(&dir.join("queries.npy"), &queries, args.nq, DIM);
        let gt: Vec<i32> =
            truth.iter().flat_map(|r| r.iter().map(|(row, _)| *row as i32)).collect();
        write_npy_i32(&dir.join("gt.npy"), &gt, args.nq, K);
    }

    let ids: Vec<i64> = (0..args.n as i64).collect();
    if !args.skip_hnsw {
        report.insert("hnsw".into(), hnsw_report(&args, &db, &queries, &truth, &ids));
    }

    if !args.skip_pca {
        report.insert("pca".into(), pca_report(args.pca_n));
    }
    if let Some(dir) = &args.out {
        let path = dir.join("rust_results.json");
        fs_err::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
        println!("wrote {}", path.display());
    }
}

/// This process's resident memory, current and peak, in bytes (Linux `/proc/self/status`).
fn rss() -> (u64, u64) {
    let status = fs_err::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Single-thread QPS and recall@10 per ef, best of two passes after a warm-up.
fn curve(
    index: &HnswIndex,
    queries: &[f32],
    truth: &[Vec<(u32, f32)>],
    efs: &[usize],
    map: &(dyn Fn(i64) -> i64 + Sync),
) -> Vec<serde_json::Value> {
    let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let nq = queries.len() / DIM;
    one_thread.install(|| {
        for q in queries.chunks_exact(DIM) {
            std::hint::black_box(index.search(q, K, efs[0]));
        }
        let mut out = Vec::new();
        for &ef in efs {
            let mut s = f64::INFINITY;
            let mut got = Vec::new();
            for _ in 0..2 {
                let t = Instant::now();
                got = queries.chunks_exact(DIM).map(|q| index.search(q, K, ef)).collect::<Vec<_>>();
                s = s.min(t.elapsed().as_secs_f64());
            }
            let got: Vec<Vec<(i64, f32)>> = got
                .into_iter()
                .map(|r| r.into_iter().map(|(id, s)| (map(id), s)).collect())
                .collect();
            let recall = recall(truth, &got);
            let qps = nq as f64 / s;
            println!("  ef {ef:>4}: recall@10 {recall:.4}, {qps:>8.0} QPS (1 thread)");
            out.push(json!({"ef": ef, "recall": recall, "qps_1thread": qps}));
        }
        out
    })
}

fn hnsw_report(
    args: &Args,
    db: &[f32],
    queries: &[f32],
    truth: &[Vec<(u32, f32)>],
    ids: &[i64],
) -> serde_json::Value {
    let threads = rayon::current_num_threads();
    let params = HnswParams::default();
    let (rss_before, _) = rss();
    let t = Instant::now();
    let index = HnswIndex::build(db, DIM, ids, &params).unwrap();
    let build_s = t.elapsed().as_secs_f64();
    let (_, peak) = rss();
    let build_bytes = peak.saturating_sub(rss_before);
    println!(
        "hnsw: build m=16 ef_c=200 in {build_s:.1}s ({:.0} inserts/s, {threads} threads), \
         peak memory of the build {:.0} MB",
        args.n as f64 / build_s,
        build_bytes as f64 / 1e6
    );
    let c = curve(&index, queries, truth, &args.efs, &|id| id);
    let ef95 = c.iter().find(|c| c["recall"].as_f64().unwrap() >= 0.95).cloned();
    let batch_qps = ef95.as_ref().map(|c| {
        let ef = c["ef"].as_u64().unwrap() as usize;
        let mut s = f64::INFINITY;
        for _ in 0..2 {
            let t = Instant::now();
            std::hint::black_box(index.search_batch(queries, K, ef));
            s = s.min(t.elapsed().as_secs_f64());
        }
        let qps = (queries.len() / DIM) as f64 / s;
        println!("  ef {ef}: batch search {qps:.0} QPS ({threads} threads)");
        qps
    });
    let mut entry = json!({"build_s": build_s, "build_peak_bytes": build_bytes, "curve": c,
                           "first_ef_with_recall_0_95": ef95, "batch_qps_at_that_ef": batch_qps});
    if let Some(dir) = &args.out {
        let t = Instant::now();
        let files = index.save(dir, "bench").unwrap();
        let save_s = t.elapsed().as_secs_f64();
        let bytes: u64 = files.iter().map(|f| fs_err::metadata(dir.join(f)).unwrap().len()).sum();
        drop(index);
        let t = Instant::now();
        let loaded = HnswIndex::load(dir, "bench").unwrap();
        let load_s = t.elapsed().as_secs_f64();
        assert_eq!(loaded.len(), args.n);
        println!(
            "  save {save_s:.2}s, load (read + checksum + full validation) {load_s:.2}s, {:.1} MB on disk",
            bytes as f64 / 1e6
        );
        entry["save_s"] = json!(save_s);
        entry["load_s"] = json!(load_s);
        entry["bytes"] = json!(bytes);
        let _ = fs_err::remove_file(dir.join(&files[0]));
        entry["updates"] = updates_report(loaded, db, queries, truth, &args.efs);
    }
    entry
}

/// Changes without a rebuild: replace 10 % of the vectors (new ids, same vectors, so the exact
/// ground truth still holds after mapping ids back), in 10 rounds of 1 %, then search.
fn updates_report(
    mut index: HnswIndex,
    db: &[f32],
    queries: &[f32],
    truth: &[Vec<(u32, f32)>],
    efs: &[usize],
) -> serde_json::Value {
    let n = index.len();
    let offset = 1i64 << 40;
    let per_round = n / 100;
    let t = Instant::now();
    for round in 0..10 {
        let rows: Vec<usize> =
            (round * per_round..(round + 1) * per_round).map(|i| (i * 7919) % n).collect();
        let old: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let new: Vec<i64> = rows.iter().map(|&r| r as i64 + offset).collect();
        let data: Vec<f32> =
            rows.iter().flat_map(|&r| db[r * DIM..(r + 1) * DIM].iter().copied()).collect();
        index.remove(&old);
        index.insert(&data, &new).unwrap();
    }
    let update_s = t.elapsed().as_secs_f64();
    println!(
        "hnsw after 10 rounds of 1 % removed + 1 % inserted ({:.1}s, {} tombstones): ",
        update_s,
        index.tombstones()
    );
    let c = curve(&index, queries, truth, efs, &|id| if id >= offset { id - offset } else { id });
    json!({"update_s": update_s, "tombstones": index.tombstones(), "curve": c})
}

fn recall(truth: &[Vec<(u32, f32)>], got: &[Vec<(i64, f32)>]) -> f64 {
    let mut hits = 0;
    for (t, g) in truth.iter().zip(got) {
        hits += t.iter().filter(|(row, _)| g.iter().any(|(id, _)| *id == *row as i64)).count();
    }
    hits as f64 / (K * truth.len()) as f64
}

fn pca_report(n: usize) -> serde_json::Value {
    const IN: usize = 384;
    const OUT: usize = 128;
    // 384-d unit descriptors: 64 directions per cluster give a realistic decaying spectrum.
    let x = data::descriptor_like(2, n, IN, (n / 200).max(1), 64);
    let t = Instant::now();
    let fast = Pca::fit(&x, n, IN, OUT, false).unwrap();
    let fast_s = t.elapsed().as_secs_f64();
    println!(
        "pca {n}×{IN}→{OUT}: covariance+eigh fit {fast_s:.2}s, explained {:.4}",
        fast.explained_ratio()
    );
    let t = Instant::now();
    let projected = fast.project_batch(&x, n);
    let project_s = t.elapsed().as_secs_f64();
    std::hint::black_box(projected);
    println!("  project_batch {n} vectors: {project_s:.2}s");
    let t = Instant::now();
    let stock = Pca::fit_linfa(&x, n, IN, OUT, false);
    let linfa_s = t.elapsed().as_secs_f64();
    let stock_summary = match stock {
        Ok(stock) => {
            let cos: Vec<f64> = (0..OUT)
                .map(|i| {
                    let a = &fast.components[i * IN..][..IN];
                    let b = &stock.components[i * IN..][..IN];
                    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>()
                })
                .collect();
            let min_cos_16 = cos[..16].iter().copied().fold(f64::INFINITY, f64::min);
            let min_cos_all = cos.iter().copied().fold(f64::INFINITY, f64::min);
            println!(
                "  linfa-reduction fit {linfa_s:.2}s ({:.1}× slower), explained {:.4}, \
                 min cos(fast, linfa) top-16 {min_cos_16:.6}, all 128 {min_cos_all:.6}",
                linfa_s / fast_s,
                stock.explained_ratio()
            );
            json!({"linfa_s": linfa_s, "linfa_explained": stock.explained_ratio(),
                   "min_cos_top16": min_cos_16, "min_cos_all": min_cos_all})
        }
        Err(e) => {
            println!("  linfa-reduction fit failed after {linfa_s:.2}s: {e}");
            json!({"linfa_s": linfa_s, "linfa_error": e.to_string()})
        }
    };
    json!({"n": n, "fast_s": fast_s, "fast_explained": fast.explained_ratio(),
           "project_batch_s": project_s, "linfa": stock_summary})
}

fn write_npy(path: &Path, descr: &str, rows: usize, cols: usize, payload: &[u8]) {
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header, padded to a multiple of 64 with '\n'.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(fs_err::File::create(path).unwrap());
    f.write_all(b"\x93NUMPY\x01\x00").unwrap();
    f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
    f.write_all(header.as_bytes()).unwrap();
    f.write_all(payload).unwrap();
}

fn write_npy_f32(path: &Path, v: &[f32], rows: usize, cols: usize) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(path, "<f4", rows, cols, &bytes);
}

fn write_npy_i32(path: &Path, v: &[i32], rows: usize, cols: usize) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    write_npy(path, "<i4", rows, cols, &bytes);
}
