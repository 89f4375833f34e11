//! The hardware limit the forward is measured against: this CPU's peak fp32 FMA rate and int8
//! dot-product (VNNI) rate, measured with register-only loops on 1 and all threads, and what they
//! allow for DeiT-S at 224 (the model of the other benches): images per second if every
//! multiply-accumulate ran at peak.
//!
//!     cargo bench --bench roofline
//!
//! Compare with the forward alone in `cargo bench --bench precision` or benches/index_peer.py:
//! the ratio is how much of the machine ONNX Runtime's kernels use. (int8 applies to the linear
//! layers only; the attention products and the patch embedding stay fp32, as in irtdb's graph.)

mod common;

use std::time::Instant;

use anyhow::Result;
use common::Table;

/// DeiT-S/16 at 224: 197 tokens, width 384, MLP 1536, 12 blocks, 196 patches of 16×16×3.
const TOKENS: f64 = 197.0;
const WIDTH: f64 = 384.0;
const MLP: f64 = 1536.0;
const BLOCKS: f64 = 12.0;

/// Multiply-accumulates per image: (linear layers, everything else).
fn deit_small_macs() -> (f64, f64) {
    let linear = BLOCKS * TOKENS * (WIDTH * 3.0 * WIDTH + WIDTH * WIDTH + 2.0 * WIDTH * MLP);
    let attention = BLOCKS * 2.0 * TOKENS * TOKENS * WIDTH;
    let patches = 196.0 * (16.0 * 16.0 * 3.0) * WIDTH;
    (linear, attention + patches)
}

const ITERS: u64 = 100_000_000;
/// Independent accumulators per loop (enough to cover the FMA latency on two pipes).
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    use super::{CHAINS, ITERS};

    /// fp32 FLOPs done (2 per lane per FMA).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f64 {
        let (b, c) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-6));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..ITERS {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, b, c);
            }
        }
        std::hint::black_box(acc);
        ITERS as f64 * CHAINS as f64 * 16.0 * 2.0
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f64 {
        let (b, c) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-6));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..ITERS {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, b, c);
            }
        }
        std::hint::black_box(acc);
        ITERS as f64 * CHAINS as f64 * 8.0 * 2.0
    }

    /// int8 multiply-accumulates done (u8 × i8, 64 per vpdpbusd).
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub unsafe fn vnni512() -> f64 {
        let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        for _ in 0..ITERS {
            for s in &mut acc {
                *s = _mm512_dpbusd_epi32(*s, a, b);
            }
        }
        std::hint::black_box(acc);
        ITERS as f64 * CHAINS as f64 * 64.0
    }
}

/// Operations per second of `kernel` on `threads` threads at once.
fn rate(threads: usize, kernel: fn() -> f64) -> f64 {
    let start = Instant::now();
    let ops: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(kernel)).collect();
        handles.into_iter().map(|h| h.join().expect("kernel thread")).sum()
    });
    ops / start.elapsed().as_secs_f64()
}

fn main() -> Result<()> {
    println!("# irtdb bench: roofline (peak arithmetic rates of this CPU)");
    println!("machine: {}", common::machine());
    #[cfg(target_arch = "x86_64")]
    {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let fp32: (&str, fn() -> f64) = if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            ("AVX-512 FMA", || unsafe { kernels::fma512() })
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            ("AVX2 FMA", || unsafe { kernels::fma256() })
        } else {
            println!("(no AVX2/FMA: nothing to measure)");
            return Ok(());
        };
        let vnni = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni");
        let (linear, rest) = deit_small_macs();
        let mut table = Table::new(
            "Peak rates (register-only loops) and the DeiT-S/224 images per second they allow",
            &[
                "threads",
                "fp32 GFLOP/s",
                "DeiT-S fp32 img/s",
                "int8 GOP/s (VNNI)",
                "DeiT-S int8 img/s",
            ],
        );
        for t in [1, threads] {
            let flops = rate(t, fp32.1);
            let fp32_images = flops / (2.0 * (linear + rest));
            let (int8_ops, int8_images) = if vnni {
                // SAFETY: the CPU has AVX-512F and AVX-512 VNNI (checked above).
                let macs = rate(t, || unsafe { kernels::vnni512() });
                // The linear layers in int8, the rest in fp32, each at its peak.
                let seconds = linear / macs + 2.0 * rest / flops;
                (format!("{:.0}", 2.0 * macs / 1e9), format!("{:.1}", 1.0 / seconds))
            } else {
                ("-".into(), "-".into())
            };
            table.row(vec![
                t.to_string(),
                format!("{:.1}", flops / 1e9),
                format!("{fp32_images:.1}"),
                int8_ops,
                int8_images,
            ]);
            if threads == 1 {
                break;
            }
        }
        table.print();
        println!(
            "DeiT-S/224: {:.2} GMAC per image ({:.2} in the linear layers); fp32 kernel: {}",
            (linear + rest) / 1e9,
            linear / 1e9,
            fp32.0
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("(x86-64 only)");
    Ok(())
}
