//! Criterion micro- and meso-benchmarks of irtdb-index (not timed tests).
//!
//! `cargo bench -p irtdb-index --bench index -- --warm-up-time 1 --measurement-time 3`
//!
//! - `dot`: the AVX2+FMA kernel against the portable fallback, on 128-d and 384-d vectors;
//! - `exact_search`: 20k × 128, one query and a batch of 100;
//! - `hnsw_search_10k`: one query on a 10k graph at ef 64, beside exact search over the same
//!   10k (the brute-force yardstick);
//! - `hnsw_change_10k`: 100 inserts + 100 removals into a 10k graph, beside rebuilding it
//!   (what every change cost before deletes existed); `hnsw_build_2k`: a small build;
//! - `pca_fit`: 10k × 384 → 128, covariance+eigh against linfa-reduction.
//!
//! Whole-size figures (100k/1M graphs against hnswlib and faiss, 100k × 384 PCA, recall curves)
//! come from `examples/index_report.rs` and `benches/hnswlib_peer.py`, which build each graph once.

#[path = "common/data.rs"]
mod data;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use irtdb_index::{dot, dot_scalar, exact_search, HnswIndex, HnswParams, Pca};

fn bench_dot(c: &mut Criterion) {
    let mut g = c.benchmark_group("dot");
    for dim in [128usize, 384] {
        let v = data::descriptor_like(1, 2, dim, 1, 4);
        let (a, b) = v.split_at(dim);
        g.bench_function(BenchmarkId::new("avx2_fma", dim), |bn| {
            bn.iter(|| dot(black_box(a), black_box(b)))
        });
        g.bench_function(BenchmarkId::new("scalar", dim), |bn| {
            bn.iter(|| dot_scalar(black_box(a), black_box(b)))
        });
    }
    g.finish();
}

fn bench_exact(c: &mut Criterion) {
    let (db, queries) = data::descriptor_like_split(2, 20_000, 100, 128, 100, 32);
    let mut g = c.benchmark_group("exact_search_20k");
    g.sample_size(20);
    g.bench_function("1_query", |bn| bn.iter(|| exact_search(&db, 128, &queries[..128], 10)));
    g.bench_function("100_queries", |bn| bn.iter(|| exact_search(&db, 128, &queries, 10)));
    g.finish();
}

fn bench_hnsw(c: &mut Criterion) {
    let (db, queries) = data::descriptor_like_split(3, 10_000, 200, 128, 50, 32);
    let ids: Vec<i64> = (0..10_000).collect();
    let p = HnswParams::default();
    let index = HnswIndex::build(&db, 128, &ids, &p).unwrap();
    let mut g = c.benchmark_group("hnsw_search_10k");
    g.bench_function("hnsw_ef64", |bn| {
        let mut qs = queries.chunks_exact(128).cycle();
        bn.iter(|| index.search(qs.next().unwrap(), 10, 64))
    });
    g.bench_function("exact", |bn| {
        let mut qs = queries.chunks_exact(128).cycle();
        bn.iter(|| exact_search(&db, 128, qs.next().unwrap(), 10))
    });
    g.finish();

    let mut g = c.benchmark_group("hnsw_change_10k");
    g.sample_size(10);
    let (extra, _) = data::descriptor_like_split(5, 100, 1, 128, 5, 32);
    let mut round = 0i64;
    g.bench_function("insert_100_remove_100", |bn| {
        bn.iter_batched_ref(
            || HnswIndex::build(&db, 128, &ids, &p).unwrap(),
            |index| {
                round += 1;
                let new: Vec<i64> = (0..100).map(|i| 1_000_000 * round + i).collect();
                index.insert(&extra, &new).unwrap();
                index.remove(&ids[..100]);
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("rebuild", |bn| bn.iter(|| HnswIndex::build(&db, 128, &ids, &p).unwrap()));
    g.finish();

    let mut g = c.benchmark_group("hnsw_build_2k");
    g.sample_size(10);
    g.bench_function("build", |bn| {
        bn.iter(|| HnswIndex::build(&db[..2000 * 128], 128, &ids[..2000], &p).unwrap())
    });
    g.finish();
}

fn bench_pca(c: &mut Criterion) {
    let n = 10_000;
    let x = data::descriptor_like(4, n, 384, 50, 64);
    let mut g = c.benchmark_group("pca_fit_10k_384_to_128");
    g.sample_size(10);
    g.bench_function("covariance_eigh", |bn| bn.iter(|| Pca::fit(&x, n, 384, 128, false)));
    g.bench_function("linfa_reduction", |bn| bn.iter(|| Pca::fit_linfa(&x, n, 384, 128, false)));
    g.finish();
}

criterion_group!(benches, bench_dot, bench_exact, bench_hnsw, bench_pca);
criterion_main!(benches);
