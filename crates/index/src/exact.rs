//! Exact (brute-force) top-k inner-product search.
//!
//! Used for small collections, for `--exact` queries and as the ground truth HNSW recall is
//! measured against. It never materialises a queries × database score matrix: queries are taken
//! in blocks of [`QUERY_BLOCK`], the database in blocks of [`DB_BLOCK`] rows, each pair of blocks
//! scored with one matrix product into a buffer that stays in cache, and each query keeps only a
//! running top-k (fewer than [`GEMM_MIN_QUERIES`] queries use the SIMD dot kernel row by row
//! instead). Work is spread over rayon threads by query block and, when there are too few
//! queries to keep every thread busy, also by database range (partial top-k lists are merged).

use rayon::prelude::*;

use crate::{dist::dot, nd};

/// Queries scored together in one matrix product.
const QUERY_BLOCK: usize = 64;
/// Database rows scored together in one matrix product (64 × 1024 f32 scores = 256 KiB).
const DB_BLOCK: usize = 1024;
/// Below this many queries in a block, rows are scored with the SIMD dot kernel instead: a
/// matrix product with a handful of rows spends its time packing the database block.
const GEMM_MIN_QUERIES: usize = 8;

/// Exact top-`k` by inner product of every query against every database row.
///
/// `db` is `n × dim` row-major, `queries` is `q × dim` row-major. Returns, per query, up to
/// `min(k, n)` pairs `(row, score)` with `score = dot(db[row], query)`, best first; equal scores
/// are ordered by lower row. Rows whose score is NaN are never returned.
///
/// # Panics
/// If `dim == 0` or a buffer's length is not a multiple of `dim`.
pub fn exact_search(db: &[f32], dim: usize, queries: &[f32], k: usize) -> Vec<Vec<(u32, f32)>> {
    assert!(dim > 0, "exact_search: dim must be positive");
    assert_eq!(db.len() % dim, 0, "exact_search: db length is not a multiple of dim");
    assert_eq!(queries.len() % dim, 0, "exact_search: queries length is not a multiple of dim");
    assert!(db.len() / dim <= u32::MAX as usize, "exact_search: more than u32::MAX rows");
    let n = db.len() / dim;
    let nq = queries.len() / dim;
    let k = k.min(n);
    if k == 0 || nq == 0 {
        return vec![Vec::new(); nq];
    }

    let n_qblocks = nq.div_ceil(QUERY_BLOCK);
    let n_dbblocks = n.div_ceil(DB_BLOCK);
    let want_tasks = 2 * rayon::current_num_threads();
    let splits = if n_qblocks >= want_tasks {
        1
    } else {
        want_tasks.div_ceil(n_qblocks).min(n_dbblocks).max(1)
    };
    let blocks_per_split = n_dbblocks.div_ceil(splits);

    let tasks: Vec<(usize, usize)> =
        (0..n_qblocks).flat_map(|qb| (0..splits).map(move |s| (qb, s))).collect();
    let partial: Vec<Vec<TopK>> = tasks
        .par_iter()
        .map(|&(qb, s)| {
            let q0 = qb * QUERY_BLOCK;
            let q1 = (q0 + QUERY_BLOCK).min(nq);
            let r0 = (s * blocks_per_split * DB_BLOCK).min(n);
            let r1 = ((s + 1) * blocks_per_split * DB_BLOCK).min(n);
            search_block(db, dim, &queries[q0 * dim..q1 * dim], q1 - q0, r0, r1, k)
        })
        .collect();

    let mut out = Vec::with_capacity(nq);
    for (qb, chunk) in partial.chunks(splits).enumerate() {
        let rows_in_block = (nq - qb * QUERY_BLOCK).min(QUERY_BLOCK);
        for qi in 0..rows_in_block {
            let mut merged: Vec<(f32, u32)> =
                chunk.iter().flat_map(|tops| tops[qi].iter()).collect();
            merged.sort_by(|a, b| better_first(*a, *b));
            merged.truncate(k);
            out.push(merged.into_iter().map(|(s, r)| (r, s)).collect());
        }
    }
    out
}

/// Top-k of `qn` queries over database rows `r0..r1`.
fn search_block(
    db: &[f32],
    dim: usize,
    queries: &[f32],
    qn: usize,
    r0: usize,
    r1: usize,
    k: usize,
) -> Vec<TopK> {
    let mut tops: Vec<TopK> = (0..qn).map(|_| TopK::new(k)).collect();
    let mut scores = vec![0.0f32; qn * DB_BLOCK];
    let mut start = r0;
    while start < r1 {
        let end = (start + DB_BLOCK).min(r1);
        let rows = end - start;
        let block_scores = &mut scores[..qn * rows];
        let db_block = &db[start * dim..end * dim];
        if qn >= GEMM_MIN_QUERIES {
            nd::gemm_nt(queries, qn, dim, db_block, rows, block_scores);
        } else {
            for (q, out) in queries.chunks_exact(dim).zip(block_scores.chunks_exact_mut(rows)) {
                for (o, row) in out.iter_mut().zip(db_block.chunks_exact(dim)) {
                    *o = dot(q, row);
                }
            }
        }
        for (top, row_scores) in tops.iter_mut().zip(block_scores.chunks_exact(rows)) {
            for (i, &s) in row_scores.iter().enumerate() {
                // Rows arrive in increasing order, so a later row with a score equal to the
                // current k-th is never better: a strict `>` implements the lower-row tie-break.
                if s > top.threshold || (top.len() < k && !s.is_nan()) {
                    top.push(s, (start + i) as u32);
                }
            }
        }
        start = end;
    }
    tops
}

/// `Ordering` placing the better of two `(score, row)` pairs first: higher score, then lower row.
fn better_first(a: (f32, u32), b: (f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// A `(score, row)` ordered so that the *worse* pair is the greater: a max-heap of them keeps
/// the current k-th best on top, where it is both the admission threshold and the one to evict.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Worst((f32, u32));

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        better_first(self.0, other.0)
    }
}

/// A running top-k as a binary heap: O(log k) per admitted row, which matters for deep
/// searches (k = 1000 for SOP's Recall@1000) where a sorted vector's shifting dominated.
struct TopK {
    k: usize,
    heap: std::collections::BinaryHeap<Worst>,
    /// Score of the k-th item once full; −∞ until then.
    threshold: f32,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: std::collections::BinaryHeap::with_capacity(k + 1),
            threshold: f32::NEG_INFINITY,
        }
    }

    fn len(&self) -> usize {
        self.heap.len()
    }

    /// The kept pairs, in no particular order.
    fn iter(&self) -> impl Iterator<Item = (f32, u32)> + '_ {
        self.heap.iter().map(|w| w.0)
    }

    fn push(&mut self, score: f32, row: u32) {
        self.heap.push(Worst((score, row)));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
        if self.heap.len() == self.k {
            self.threshold = self.heap.peek().expect("k >= 1 items").0 .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_go_to_lower_rows() {
        let db = vec![1.0f32, 0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0];
        let res = exact_search(&db, 2, &[1.0, 0.0], 3);
        assert_eq!(res, vec![vec![(0, 1.0), (1, 1.0), (3, 1.0)]]);
    }

    #[test]
    fn k_larger_than_n_and_zero() {
        let db = vec![1.0f32, 0.0, 0.0, 1.0];
        assert_eq!(exact_search(&db, 2, &[0.0, 1.0], 10), vec![vec![(1, 1.0), (0, 0.0)]]);
        assert_eq!(exact_search(&db, 2, &[0.0, 1.0], 0), vec![vec![]]);
        assert_eq!(exact_search(&[], 2, &[0.0, 1.0], 3), vec![vec![]]);
    }
}
