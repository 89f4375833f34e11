//! Scoring by exact blocked search: Recall@K and MAP@R against labels, full rankings for the
//! revisited protocols, and the PCA-128 variant.

use std::collections::HashMap;

use crate::error::Result;
use irtdb_core::metrics::LabelMetrics;
use irtdb_index::{exact_search, Pca};

/// Ranking entries (one `(row, score)` each) alive at once during a blocked evaluation:
/// 8 Mi × 8 bytes = 64 MiB, whatever the number of queries.
pub const RANKING_BUDGET: usize = 1 << 23;
/// MAP@R needs every query's ranking R deep (R = its class size). Deeper than this it is skipped
/// (with a note): the top-R lists of a collection with one huge class would cost O(N²) memory
/// traffic for a number nobody reads.
pub const MAX_MAP_R_DEPTH: usize = 10_000;
/// The dimension the paper reduces descriptors to.
pub const PCA_DIM: usize = 128;

/// Recall@K and MAP@R of `queries` against `gallery` by exact blocked search.
///
/// With `gallery = None` the evaluation is leave-one-out: the queries are the gallery and each
/// query's own row is removed from its ranking. Returns the accumulated metrics and whether
/// MAP@R was computed (it is skipped beyond [`MAX_MAP_R_DEPTH`]).
pub fn score_labels(
    queries: &[f32],
    query_labels: &[u32],
    gallery: Option<(&[f32], &[u32])>,
    dim: usize,
    ks: &[usize],
) -> (LabelMetrics, bool) {
    score_labels_within(queries, query_labels, gallery, dim, ks, RANKING_BUDGET)
}

/// [`score_labels`] holding at most `budget` ranking entries at once (at least 64 queries' worth).
fn score_labels_within(
    queries: &[f32],
    query_labels: &[u32],
    gallery: Option<(&[f32], &[u32])>,
    dim: usize,
    ks: &[usize],
    budget: usize,
) -> (LabelMetrics, bool) {
    let loo = gallery.is_none();
    let (g, gl) = gallery.unwrap_or((queries, query_labels));
    assert_eq!(queries.len(), query_labels.len() * dim, "score_labels: queries and labels differ");
    assert_eq!(g.len(), gl.len() * dim, "score_labels: gallery and labels differ");
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &l in gl {
        *counts.entry(l).or_default() += 1;
    }
    let r_of = |l: u32| counts.get(&l).copied().unwrap_or(0).saturating_sub(loo as usize);
    let max_r = query_labels.iter().map(|&l| r_of(l)).max().unwrap_or(0);
    let with_map = max_r <= MAX_MAP_R_DEPTH;
    let depth = ks.iter().copied().max().unwrap_or(1).max(if with_map { max_r } else { 0 }).max(1);
    let k_search = (depth + loo as usize).min(gl.len());
    let mut metrics = LabelMetrics::new(ks);
    if k_search == 0 || query_labels.is_empty() {
        query_labels.iter().for_each(|_| metrics.add_query(&[], 0));
        return (metrics, with_map);
    }
    let block = (budget / k_search).clamp(64, 16_384) / 64 * 64;
    for (b, chunk) in queries.chunks(block * dim).enumerate() {
        let results = exact_search(g, dim, chunk, k_search);
        // In query order, one query at a time: the sums (and so the printed digits) do not
        // depend on thread scheduling, and this is cheap next to the search.
        let mut relevant = Vec::with_capacity(depth);
        for (qi, hits) in results.iter().enumerate() {
            let q = b * block + qi;
            let label = query_labels[q];
            relevant.clear();
            relevant.extend(
                hits.iter()
                    .filter(|&&(row, _)| !(loo && row as usize == q))
                    .take(depth)
                    .map(|&(row, _)| gl[row as usize] == label),
            );
            metrics.add_query(&relevant, r_of(label));
        }
    }
    (metrics, with_map)
}

/// The full ranking (all database rows, best first) of each query, by exact search.
pub fn full_rankings(db: &[f32], queries: &[f32], dim: usize) -> Vec<Vec<usize>> {
    let n = db.len() / dim;
    exact_search(db, dim, queries, n)
        .into_iter()
        .map(|hits| hits.into_iter().map(|(r, _)| r as usize).collect())
        .collect()
}

/// A PCA to [`PCA_DIM`] fitted on `data` (`n × dim`), or why it was not.
pub(super) fn fit_pca128(
    data: &[f32],
    n: usize,
    dim: usize,
) -> Result<std::result::Result<Pca, String>> {
    if dim <= PCA_DIM {
        return Ok(Err(format!("PCA-{PCA_DIM} skipped: the descriptor has only {dim} dimensions")));
    }
    if n <= PCA_DIM {
        return Ok(Err(format!(
            "PCA-{PCA_DIM} skipped: {n} images are too few to fit {PCA_DIM} components (need more \
             than {PCA_DIM})"
        )));
    }
    Ok(Ok(Pca::fit(data, n, dim, PCA_DIM, false)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use irtdb_core::metrics;

    fn random_unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect();
        v.chunks_exact_mut(dim).for_each(|r| {
            irtdb_core::l2_normalise(r);
        });
        v
    }

    /// The blocked evaluation against the definitions on full score sorts.
    #[test]
    fn blocked_leave_one_out_matches_full_rankings() {
        let (n, dim) = (700, 8);
        let data = random_unit_rows(n, dim, 3);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 90).collect();
        let ks = [1, 2, 4, 8, 100];
        // A budget of one query block at a time: 11 blocks, the last one partial.
        let (blocked, with_map) = score_labels_within(&data, &labels, None, dim, &ks, 1);
        assert!(with_map);
        assert_eq!(blocked, score_labels(&data, &labels, None, dim, &ks).0);
        let rankings: Vec<Vec<usize>> = data
            .chunks_exact(dim)
            .map(|q| {
                let scores: Vec<f32> =
                    data.chunks_exact(dim).map(|r| irtdb_index::dot(q, r)).collect();
                metrics::rank_by_score(&scores)
            })
            .collect();
        let reference = metrics::leave_one_out(&labels, &rankings, &ks);
        assert_eq!(blocked.scored(), reference.scored());
        for ((k, a), (_, b)) in blocked.recall().into_iter().zip(reference.recall()) {
            assert!((a - b).abs() < 1e-12, "R@{k}: {a} vs {b}");
        }
        assert!((blocked.map_at_r() - reference.map_at_r()).abs() < 1e-9);
    }

    #[test]
    fn query_gallery_scores_against_the_gallery_only() {
        // Gallery: two points; the query equals gallery row 1 (label 5).
        let gallery = [1.0f32, 0.0, 0.0, 1.0];
        let (m, _) = score_labels(&[0.0, 1.0], &[5], Some((&gallery, &[4, 5])), 2, &[1]);
        assert_eq!(m.recall(), vec![(1, 1.0)]);
        // A query whose label has no gallery image is skipped.
        let (m, _) = score_labels(&[0.0, 1.0], &[6], Some((&gallery, &[4, 5])), 2, &[1]);
        assert_eq!((m.scored(), m.skipped()), (0, 1));
    }
}
