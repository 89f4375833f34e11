//! `exact_search` against a naive full sort.

use irtdb_index::exact_search;
use rand::Rng;

use crate::util::{clustered, dot64, rng};

/// Naive reference: score every row, sort everything (score desc, row asc), keep k.
fn naive(db: &[f32], dim: usize, q: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut all: Vec<(u32, f32)> = db
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, row)| (i as u32, row.iter().zip(q).map(|(a, b)| a * b).sum::<f32>()))
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

#[test]
fn integer_data_matches_naive_exactly_including_ties() {
    // Small integers: every dot product is exact in f32 whatever the summation order, so the
    // result must be identical, and there are many equal scores to exercise the tie-break.
    let mut r = rng(1);
    let (n, dim, nq, k) = (5003, 13, 150, 17);
    let db: Vec<f32> = (0..n * dim).map(|_| r.random_range(-3i32..=3) as f32).collect();
    let queries: Vec<f32> = (0..nq * dim).map(|_| r.random_range(-3i32..=3) as f32).collect();
    let got = exact_search(&db, dim, &queries, k);
    assert_eq!(got.len(), nq);
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        assert_eq!(got[qi], naive(&db, dim, q, k), "query {qi}");
    }
}

#[test]
fn float_data_matches_naive_within_rounding() {
    let (n, dim, nq, k) = (4100, 128, 70, 10);
    let db = clustered(2, n, dim, 20, 0.1);
    let queries = clustered(3, nq, dim, 20, 0.1);
    let got = exact_search(&db, dim, &queries, k);
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        let want = naive(&db, dim, q, k);
        for (rank, (&(row, score), &(_, want_score))) in got[qi].iter().zip(&want).enumerate() {
            let true_score = dot64(&db[row as usize * dim..][..dim], q);
            assert!((score as f64 - true_score).abs() < 1e-5, "query {qi} rank {rank}");
            assert!((score - want_score).abs() < 1e-5, "query {qi} rank {rank}");
        }
        assert_eq!(got[qi].len(), k);
    }
}

#[test]
fn single_query_splits_the_database_and_merges() {
    // One query: the search is split over database ranges; the merge must keep global order.
    let mut r = rng(4);
    let (n, dim) = (9000, 8);
    let db: Vec<f32> = (0..n * dim).map(|_| r.random_range(-2i32..=2) as f32).collect();
    let q = vec![1.0, -1.0, 2.0, 0.0, 1.0, 1.0, -2.0, 1.0];
    for k in [1, 5, 100, 9000, 20000] {
        assert_eq!(exact_search(&db, dim, &q, k)[0], naive(&db, dim, &q, k), "k {k}");
    }
}

#[test]
fn few_queries_take_the_dot_path_and_agree_with_batches() {
    // Fewer than 8 queries are scored with the dot kernel, more with matrix products.
    let (n, dim, k) = (3000, 128, 10);
    let db = clustered(5, n, dim, 10, 0.1);
    let queries = clustered(6, 20, dim, 10, 0.1);
    let batch = exact_search(&db, dim, &queries, k);
    for (qi, q) in queries.chunks_exact(dim).enumerate() {
        let single = exact_search(&db, dim, q, k).pop().unwrap();
        let want = naive(&db, dim, q, k);
        for ((a, b), w) in single.iter().zip(&batch[qi]).zip(&want) {
            assert!((a.1 - b.1).abs() < 1e-5 && (a.1 - w.1).abs() < 1e-5, "query {qi}");
        }
    }
}
