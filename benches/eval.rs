//! Leave-one-out evaluation at SOP scale: Recall@K and MAP@R over 100k descriptors of 128
//! dimensions (the paper's PCA size) by exact blocked search, timed, with the process's peak
//! resident memory.
//!
//!     cargo bench --bench eval
//!
//! Why: `irtdb eval` must score 60k (SOP) to 100k+ (a large collection) descriptors against each
//! other exactly. A query × gallery score matrix would need N² × 4 bytes (40 GB at 100k);
//! `irtdb_engine::eval::score_labels` holds at most `RANKING_BUDGET` ranking entries and one
//! cache-sized score block per thread, so memory stays near the size of the descriptors. The
//! descriptors are random class centres plus noise (10 per class), so that the recall is neither
//! 0 nor 1; the numbers themselves mean nothing, the time and memory do.

mod common;

use std::time::Instant;

use anyhow::Result;
use common::{num, Table};
use irtdb_engine::eval::{score_labels, DB_KS, RANKING_BUDGET};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 100_000;
const DIM: usize = 128;
const PER_CLASS: usize = 10;
/// Noise per coordinate, uniform in ±NOISE, around a unit class centre.
const NOISE: f32 = 0.3;

/// A `VmHWM` / `VmRSS`-style line of /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn unit(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn main() -> Result<()> {
    println!("# irtdb bench: eval");
    println!("machine: {}", common::machine());
    let mut rng = StdRng::seed_from_u64(5);
    let classes = N / PER_CLASS;
    let mut centres = vec![0.0f32; classes * DIM];
    for c in centres.chunks_exact_mut(DIM) {
        c.iter_mut().for_each(|x| *x = rng.random_range(-1.0..1.0));
        unit(c);
    }
    let mut data = vec![0.0f32; N * DIM];
    let mut labels = Vec::with_capacity(N);
    for (i, row) in data.chunks_exact_mut(DIM).enumerate() {
        let c = (i * 7919) % classes; // classes interleaved, not in blocks
        for (x, m) in row.iter_mut().zip(&centres[c * DIM..(c + 1) * DIM]) {
            *x = m + rng.random_range(-NOISE..NOISE);
        }
        unit(row);
        labels.push(c as u32);
    }
    drop(centres);
    let base = status_mib("VmHWM:");
    println!(
        "{N} descriptors × {DIM} dims ({:.1} MiB), {classes} classes of {PER_CLASS}; peak RSS \
         before scoring {base:.1} MiB; ranking budget {RANKING_BUDGET} entries",
        (N * DIM * 4) as f64 / (1 << 20) as f64
    );

    let mut table = Table::new(
        "Leave-one-out Recall@K + MAP@R, exact blocked search (release)",
        &["K", "search depth", "seconds", "queries/s", "R@1 %", "MAP@R %", "peak RSS MiB"],
    );
    for ks in [&[1usize, 10, 100, 1000][..], &DB_KS[..]] {
        let t = Instant::now();
        let (m, _) = score_labels(&data, &labels, None, DIM, ks);
        let secs = t.elapsed().as_secs_f64();
        let depth = ks.iter().max().unwrap().max(&(PER_CLASS - 1)) + 1;
        table.row(vec![
            format!("{ks:?}"),
            depth.to_string(),
            format!("{secs:.2}"),
            num(N as f64 / secs),
            format!("{:.2}", 100.0 * m.recall()[0].1),
            format!("{:.2}", 100.0 * m.map_at_r()),
            format!("{:.1}", status_mib("VmHWM:")),
        ]);
    }
    table.print();
    println!(
        "A full {N} × {N} f32 score matrix would take {:.1} GiB.",
        (N * N * 4) as f64 / (1u64 << 30) as f64
    );
    Ok(())
}
