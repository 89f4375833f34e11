//! Inner-product kernels: the distance of every HNSW insert and search and of exact search.
//!
//! Why a hand-written kernel: HNSW spends most of its time in inner products between 128-d
//! vectors. [`dot`] keeps four independent 8-lane FMA accumulators (32 floats per iteration,
//! no serial chain of adds), dispatches on the CPU once per call through std's cached feature
//! test, and falls back to a portable loop on CPUs without AVX2+FMA.

/// Inner product of two equally long slices, AVX2+FMA when the CPU has it.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: slices of different lengths");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above), and
            // `dot_avx2_fma` reads only within both slices, whose lengths are equal.
            return unsafe { dot_avx2_fma(a, b) };
        }
    }
    dot_scalar(a, b)
}

/// Whether [`dot`] takes the AVX2+FMA path on this machine.
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_fma() -> bool {
    // std caches the CPUID result; each call is an atomic load and a bit test.
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Portable inner product: eight independent partial sums so that the compiler can vectorise it
/// with whatever the target baseline offers (SSE2 on x86_64) and so that rounding behaves like
/// the SIMD path's (pairwise-ish rather than one long serial sum).
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot_scalar: slices of different lengths");
    let mut acc = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a.remainder().iter().zip(chunks_b.remainder()).map(|(x, y)| x * y).sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            acc[i] += ca[i] * cb[i];
        }
    }
    (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]) + tail
}

/// # Safety
/// The CPU must support AVX2 and FMA, and `a.len() == b.len()`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len();
    let pa = a.as_ptr();
    let pb = b.as_ptr();
    // SAFETY: every 8-float load below starts at index `i (+ 8, 16, 24)` where the loop
    // conditions guarantee that the 8 floats lie within `0..n`, and both slices have length `n`
    // (the caller's contract); unaligned loads (`loadu`) have no alignment requirement; the
    // scalar tail reads `i < n`. The caller guarantees AVX2 and FMA. (One block for the whole
    // body because before Rust 1.87 even the register-only intrinsics were `unsafe fn`s.)
    unsafe {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut acc2 = _mm256_setzero_ps();
        let mut acc3 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            acc2 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 16)),
                _mm256_loadu_ps(pb.add(i + 16)),
                acc2,
            );
            acc3 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 24)),
                _mm256_loadu_ps(pb.add(i + 24)),
                acc3,
            );
            i += 32;
        }
        while i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let sum = _mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3));
        // Horizontal sum of 8 lanes: 256 → 128 → 64 → 32 bits.
        let lo = _mm256_castps256_ps128(sum);
        let hi = _mm256_extractf128_ps::<1>(sum);
        let s4 = _mm_add_ps(lo, hi);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<0b01>(s2, s2));
        let mut total = _mm_cvtss_f32(s1);
        while i < n {
            total += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn naive_f64(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }

    #[test]
    fn simd_matches_scalar_on_odd_lengths() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for len in [0usize, 1, 3, 7, 8, 9, 15, 31, 33, 63, 127, 129, 383, 385, 1001] {
            for _ in 0..20 {
                let a: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
                let b: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
                let reference = naive_f64(&a, &b);
                let fast = dot(&a, &b);
                let scalar = dot_scalar(&a, &b);
                let tol = 1e-5 * (1.0 + (len as f64).sqrt());
                assert!((fast - scalar).abs() as f64 <= tol, "len {len}: {fast} vs {scalar}");
                assert!((fast as f64 - reference).abs() <= tol, "len {len}: {fast} vs {reference}");
            }
        }
    }
}
