//! Retrieval metrics, exactly as the papers irtdb reproduces define them.
//!
//! Why a module of its own, with no I/O: the numbers `irtdb eval` prints are only comparable to
//! published ones if every detail of the definition matches (which items are excluded, how ties
//! are broken, what happens to a query without positives), so the definitions live in one small,
//! pure, heavily unit-tested place, and the engine only feeds rankings in.
//!
//! - **Recall@K** (SOP, CUB, In-Shop; the metric-learning convention, not the IR one): a query
//!   scores 1 if *any* of its K nearest items shares its label, else 0; the mean over queries.
//!   In leave-one-out evaluation the query itself is removed from its ranking first.
//! - **MAP@R** (Musgrave et al. 2020, "A Metric Learning Reality Check"): with R the number of
//!   items sharing the query's label, `(1/R) Σ_{i=1..R} P(i)`, where `P(i)` is the precision at
//!   i when the i-th item is relevant and 0 otherwise.
//! - **Revisited Oxford/Paris AP** (Radenović et al. 2018, `revisitop/python/evaluate.py`):
//!   ignored (junk) items are dropped from the ranking, then AP by the trapezoid rule; queries
//!   with no positives are left out of the mean; mP@k uses the protocol's own definition (see
//!   [`compute_map`]). [`compute_map_revisited`] applies the Easy / Medium / Hard settings.
//!
//! Queries without any relevant item are *skipped* (counted, not scored) by every metric here,
//! as pytorch-metric-learning and revisitop do; callers report how many were skipped.
//!
//! Ties: the metrics take rankings, so a tie is whatever order the ranking gives. irtdb ranks
//! higher scores first and equal scores by lower index ([`rank_by_score`], and
//! `irtdb_index::exact_search` does the same), which makes every result deterministic.

use serde::{Deserialize, Serialize};

/// Indices of `scores` best first: higher score first, equal scores by lower index, NaN last.
pub fn rank_by_score(scores: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        let (sa, sb) = (scores[a], scores[b]);
        match (sa.is_nan(), sb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => sb.total_cmp(&sa).then(a.cmp(&b)),
        }
    });
    order
}

/// Whether any of the first `k` retrieved items is relevant (`relevant[i]`: the i-th item, best
/// first, shares the query's label).
pub fn hit_at_k(relevant: &[bool], k: usize) -> bool {
    relevant.iter().take(k).any(|&r| r)
}

/// Average precision at R of one query (Musgrave et al.): `(1/R) Σ_{i=1..R} P(i)·rel(i)`.
///
/// `relevant` is the ranking's relevance, best first, and must cover at least the first `r`
/// items (positions beyond its end count as not relevant). Returns `None` when `r == 0`.
pub fn average_precision_at_r(relevant: &[bool], r: usize) -> Option<f64> {
    if r == 0 {
        return None;
    }
    let mut found = 0usize;
    let mut sum = 0.0f64;
    for (i, &rel) in relevant.iter().take(r).enumerate() {
        if rel {
            found += 1;
            sum += found as f64 / (i + 1) as f64;
        }
    }
    Some(sum / r as f64)
}

/// Recall@K and MAP@R accumulated one query at a time, so that a caller scoring queries in
/// blocks never holds every ranking at once. Merge partial accumulators with [`Self::merge`].
#[derive(Clone, Debug, PartialEq)]
pub struct LabelMetrics {
    ks: Vec<usize>,
    hits: Vec<u64>,
    map_r_sum: f64,
    scored: u64,
    skipped: u64,
}

impl LabelMetrics {
    /// An empty accumulator for Recall at each of `ks`.
    pub fn new(ks: &[usize]) -> Self {
        LabelMetrics {
            ks: ks.to_vec(),
            hits: vec![0; ks.len()],
            map_r_sum: 0.0,
            scored: 0,
            skipped: 0,
        }
    }

    /// Adds one query. `relevant[i]`: whether the i-th retrieved item (best first, the query
    /// itself already removed) shares the query's label; it must cover the first
    /// `max(max k, n_relevant)` items, or the whole gallery if that is shorter. `n_relevant` is R,
    /// the number of gallery items sharing the label. A query with `n_relevant == 0` cannot be
    /// scored and is counted as skipped.
    pub fn add_query(&mut self, relevant: &[bool], n_relevant: usize) {
        let Some(ap) = average_precision_at_r(relevant, n_relevant) else {
            self.skipped += 1;
            return;
        };
        self.scored += 1;
        self.map_r_sum += ap;
        for (h, &k) in self.hits.iter_mut().zip(&self.ks) {
            if hit_at_k(relevant, k) {
                *h += 1;
            }
        }
    }

    /// Adds the counts of `other` (which must have the same `ks`).
    ///
    /// # Panics
    /// If the two accumulators were made for different `ks`.
    pub fn merge(&mut self, other: &LabelMetrics) {
        assert_eq!(self.ks, other.ks, "LabelMetrics::merge: different ks");
        self.hits.iter_mut().zip(&other.hits).for_each(|(a, b)| *a += b);
        self.map_r_sum += other.map_r_sum;
        self.scored += other.scored;
        self.skipped += other.skipped;
    }

    /// `(k, recall)` for each k, recall as a fraction in [0, 1] (0 when nothing was scored).
    pub fn recall(&self) -> Vec<(usize, f64)> {
        self.ks.iter().zip(&self.hits).map(|(&k, &h)| (k, ratio(h as f64, self.scored))).collect()
    }

    /// MAP@R as a fraction in [0, 1] (0 when nothing was scored).
    pub fn map_at_r(&self) -> f64 {
        ratio(self.map_r_sum, self.scored)
    }

    /// Queries that were scored.
    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// Queries skipped because no gallery item shares their label.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

fn ratio(x: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        x / n as f64
    }
}

/// Leave-one-out Recall@K and MAP@R over full rankings: query `i` is item `i`, `rankings[i]`
/// lists other items best first (item `i` itself is removed if present), R is the number of
/// *other* items with `labels[i]`. The reference the engine's blocked evaluation is tested
/// against.
pub fn leave_one_out<L: PartialEq>(
    labels: &[L],
    rankings: &[Vec<usize>],
    ks: &[usize],
) -> LabelMetrics {
    let mut m = LabelMetrics::new(ks);
    for (i, ranking) in rankings.iter().enumerate() {
        let relevant: Vec<bool> =
            ranking.iter().filter(|&&j| j != i).map(|&j| labels[j] == labels[i]).collect();
        let r = labels.iter().enumerate().filter(|&(j, l)| j != i && *l == labels[i]).count();
        m.add_query(&relevant, r);
    }
    m
}

/// Ground truth of one query for [`compute_map`]: the positives, and the items to ignore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApGnd {
    pub ok: Vec<usize>,
    pub junk: Vec<usize>,
}

/// One query of the revisited Oxford/Paris ground truth (database indices).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisitedGnd {
    pub easy: Vec<usize>,
    pub hard: Vec<usize>,
    pub junk: Vec<usize>,
}

/// Positions (0-based) of the positives of `ranking` after the junk items are removed from it.
///
/// Equivalent to revisitop's loop: a positive at position p moves up by the number of junk
/// items at positions before p. An item listed both as positive and as junk counts as a
/// positive at its own position and as junk for the items after it, as there.
pub fn positive_ranks(ranking: &[usize], ok: &[usize], junk: &[usize]) -> Vec<usize> {
    let ok: std::collections::HashSet<usize> = ok.iter().copied().collect();
    let junk: std::collections::HashSet<usize> = junk.iter().copied().collect();
    let mut out = Vec::new();
    let mut junk_before = 0usize;
    for (pos, item) in ranking.iter().enumerate() {
        if ok.contains(item) {
            out.push(pos - junk_before);
        }
        if junk.contains(item) {
            junk_before += 1;
        }
    }
    out
}

/// AP by the trapezoid rule from the (sorted, 0-based, junk-free) ranks of the positives found
/// and the number of positives `n_positives`: for the j-th positive at rank r add
/// `((j/r, or 1 if r = 0) + (j+1)/(r+1)) / 2 / n_positives` (revisitop's `compute_ap`).
pub fn trapezoid_ap(ranks: &[usize], n_positives: usize) -> f64 {
    if n_positives == 0 {
        return 0.0;
    }
    let step = 1.0 / n_positives as f64;
    ranks
        .iter()
        .enumerate()
        .map(|(j, &r)| {
            let p0 = if r == 0 { 1.0 } else { j as f64 / r as f64 };
            let p1 = (j + 1) as f64 / (r + 1) as f64;
            (p0 + p1) * step / 2.0
        })
        .sum()
}

/// The result of [`compute_map`]: fractions in [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MapResult {
    /// Mean AP over the queries that have positives.
    pub map: f64,
    /// Per query AP; `None` for a query without positives.
    pub aps: Vec<Option<f64>>,
    /// Mean precision at each k of the `ks` given, over the queries that have positives.
    pub mp_at: Vec<(usize, f64)>,
    /// Queries left out because they have no positives.
    pub n_empty: usize,
}

/// mAP and mP@k of rankings against a ground truth, as revisitop's `compute_map`.
///
/// `ranks[q]` is query q's ranking of database indices, best first (normally the whole
/// database). Junk is removed, AP is [`trapezoid_ap`] with `|ok|` positives, and precision at k
/// is revisitop's: with `pos` the 1-based junk-free ranks of the positives found,
/// `kq = min(max(pos), k)` and `P@k = |{p ∈ pos : p ≤ kq}| / kq` (so a query whose positives
/// all lie before k is not penalised for having fewer than k). A query with positives of which
/// none appears in its ranking gets AP 0 and P@k 0. Queries with no positives are left out.
///
/// # Panics
/// If `ranks` and `gnd` have different lengths.
pub fn compute_map(ranks: &[Vec<usize>], gnd: &[ApGnd], ks: &[usize]) -> MapResult {
    assert_eq!(ranks.len(), gnd.len(), "compute_map: one ranking per ground-truth query");
    let mut aps = Vec::with_capacity(gnd.len());
    let mut map = 0.0;
    let mut pr = vec![0.0; ks.len()];
    let mut n_empty = 0;
    for (ranking, g) in ranks.iter().zip(gnd) {
        if g.ok.is_empty() {
            aps.push(None);
            n_empty += 1;
            continue;
        }
        let pos = positive_ranks(ranking, &g.ok, &g.junk);
        let ap = trapezoid_ap(&pos, g.ok.len());
        map += ap;
        aps.push(Some(ap));
        if let Some(&last) = pos.last() {
            let last = last + 1;
            for (p, &k) in pr.iter_mut().zip(ks) {
                let kq = last.min(k);
                if kq > 0 {
                    *p += pos.iter().filter(|&&r| r < kq).count() as f64 / kq as f64;
                }
            }
        }
    }
    let nq = (gnd.len() - n_empty) as f64;
    let mean = |x: f64| if nq > 0.0 { x / nq } else { 0.0 };
    MapResult {
        map: mean(map),
        aps,
        mp_at: ks.iter().zip(pr).map(|(&k, p)| (k, mean(p))).collect(),
        n_empty,
    }
}

/// Easy / Medium / Hard results of the revisited protocol.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RevisitedMap {
    pub easy: MapResult,
    pub medium: MapResult,
    pub hard: MapResult,
}

/// The revisited Oxford/Paris protocol (revisitop's `compute_map_and_print`): Easy counts `easy`
/// as positives and ignores `junk ∪ hard`; Medium counts `easy ∪ hard` and ignores `junk`; Hard
/// counts `hard` and ignores `junk ∪ easy`. The paper reports `ks = [1, 5, 10]`.
pub fn compute_map_revisited(
    ranks: &[Vec<usize>],
    gnd: &[RevisitedGnd],
    ks: &[usize],
) -> RevisitedMap {
    let cat = |a: &[usize], b: &[usize]| -> Vec<usize> { a.iter().chain(b).copied().collect() };
    let setting = |f: &dyn Fn(&RevisitedGnd) -> ApGnd| -> MapResult {
        let g: Vec<ApGnd> = gnd.iter().map(f).collect();
        compute_map(ranks, &g, ks)
    };
    RevisitedMap {
        easy: setting(&|g| ApGnd { ok: g.easy.clone(), junk: cat(&g.junk, &g.hard) }),
        medium: setting(&|g| ApGnd { ok: cat(&g.easy, &g.hard), junk: g.junk.clone() }),
        hard: setting(&|g| ApGnd { ok: g.hard.clone(), junk: cat(&g.junk, &g.easy) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn ties_rank_lower_index_first_and_nan_last() {
        assert_eq!(rank_by_score(&[0.5, 0.9, 0.5, 0.9]), vec![1, 3, 0, 2]);
        assert_eq!(rank_by_score(&[f32::NAN, 0.1, f32::NAN, 0.2]), vec![3, 1, 0, 2]);
        assert!(rank_by_score(&[]).is_empty());
    }

    #[test]
    fn recall_at_k_hand_worked() {
        // Labels a a b b c. Rankings with the query itself already removed.
        let labels = ['a', 'a', 'b', 'b', 'c'];
        let rankings = vec![
            vec![1, 2, 3, 4], // query 0 (a): its positive first → hit at 1
            vec![2, 3, 0, 4], // query 1 (a): positive third → hit at 4, not at 1 or 2
            vec![0, 1, 4, 3], // query 2 (b): positive last → hit at 4 only
            vec![2, 0, 1, 4], // query 3 (b): first → hit at 1
            vec![0, 1, 2, 3], // query 4 (c): no positive anywhere → skipped
        ];
        let m = leave_one_out(&labels, &rankings, &[1, 2, 4]);
        assert_eq!(m.scored(), 4);
        assert_eq!(m.skipped(), 1);
        // R@1: queries 0 and 3 → 2/4; R@2 the same; R@4: all four.
        assert_eq!(m.recall(), vec![(1, 0.5), (2, 0.5), (4, 1.0)]);
        // R = 1 for every scored query: AP@R = 1 if the first item is relevant, else 0.
        close(m.map_at_r(), 0.5);
    }

    #[test]
    fn the_query_itself_is_removed_from_its_ranking() {
        let labels = [1, 2, 1];
        // Query 0's ranking contains itself first (score 1 with itself), then 1, then 2.
        let m = leave_one_out(&labels, &[vec![0, 1, 2], vec![1, 0, 2], vec![2, 0, 1]], &[1]);
        // Query 0: [1 (b), 2 (a)] → miss at 1. Query 1 (label 2): no positive → skipped.
        // Query 2: [0 (a), 1] → hit.
        assert_eq!(m.recall(), vec![(1, 0.5)]);
        assert_eq!(m.skipped(), 1);
    }

    #[test]
    fn map_at_r_hand_worked() {
        // R = 3, relevance T F T T: P(1) = 1, P(2) → 0 (not relevant), P(3) = 2/3; the 4th item
        // is beyond R. (1 + 0 + 2/3) / 3 = 5/9.
        close(average_precision_at_r(&[true, false, true, true], 3).unwrap(), 5.0 / 9.0);
        // Perfect ranking: 1.
        close(average_precision_at_r(&[true, true, false], 2).unwrap(), 1.0);
        // Ranking shorter than R: missing positions are not relevant. (1/1) / 4.
        close(average_precision_at_r(&[true], 4).unwrap(), 0.25);
        assert_eq!(average_precision_at_r(&[true], 0), None);
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = LabelMetrics::new(&[1, 2]);
        a.add_query(&[true, false], 1);
        let mut b = LabelMetrics::new(&[1, 2]);
        b.add_query(&[false, true], 1);
        b.add_query(&[false, false], 0);
        a.merge(&b);
        assert_eq!((a.scored(), a.skipped()), (2, 1));
        assert_eq!(a.recall(), vec![(1, 0.5), (2, 1.0)]);
        close(a.map_at_r(), 0.5);
        // Nothing scored: zeros, not NaN.
        let e = LabelMetrics::new(&[1]);
        assert_eq!(e.recall(), vec![(1, 0.0)]);
        assert_eq!(e.map_at_r(), 0.0);
    }

    /// A brute-force restatement from the definitions, on random labels and scores: every
    /// query scores all others, sorts, and checks the first K and the first R directly.
    #[test]
    fn leave_one_out_matches_brute_force_on_random_data() {
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let n = 300;
        let labels: Vec<u64> = (0..n).map(|_| next() % 40).collect();
        let points: Vec<[f32; 3]> =
            (0..n).map(|_| [0, 1, 2].map(|_| (next() % 2000) as f32 / 1000.0 - 1.0)).collect();
        let ks = [1, 2, 4, 8, 16];
        let rankings: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                let scores: Vec<f32> = points
                    .iter()
                    .map(|p| p.iter().zip(&points[i]).map(|(a, b)| a * b).sum())
                    .collect();
                rank_by_score(&scores)
            })
            .collect();
        let m = leave_one_out(&labels, &rankings, &ks);

        let mut hits = [0usize; 5];
        let (mut ap_sum, mut scored) = (0.0, 0usize);
        for i in 0..n {
            let others: Vec<usize> = rankings[i].iter().copied().filter(|&j| j != i).collect();
            let r = (0..n).filter(|&j| j != i && labels[j] == labels[i]).count();
            if r == 0 {
                continue;
            }
            scored += 1;
            for (h, &k) in hits.iter_mut().zip(&ks) {
                if others[..k].iter().any(|&j| labels[j] == labels[i]) {
                    *h += 1;
                }
            }
            let mut ap = 0.0;
            for rank in 1..=r {
                if labels[others[rank - 1]] == labels[i] {
                    let tp = others[..rank].iter().filter(|&&j| labels[j] == labels[i]).count();
                    ap += tp as f64 / rank as f64;
                }
            }
            ap_sum += ap / r as f64;
        }
        assert_eq!(m.scored() as usize, scored);
        for ((k, rec), (h, k2)) in m.recall().into_iter().zip(hits.iter().zip(ks)) {
            assert_eq!(k, k2);
            close(rec, *h as f64 / scored as f64);
        }
        close(m.map_at_r(), ap_sum / scored as f64);
    }

    #[test]
    fn trapezoid_ap_hand_worked() {
        // Positives at ranks 0 and 2 of 2: (1 + 1/1)/2/2 = 0.5, then (1/2 + 2/3)/2/2 = 7/24.
        close(trapezoid_ap(&[0, 2], 2), 0.5 + 7.0 / 24.0);
        // One positive at rank 1: (0/1 + 1/2)/2 = 0.25 (the trapezoid rule, not the 0.5 of
        // non-interpolated AP).
        close(trapezoid_ap(&[1], 1), 0.25);
        // Only one of two positives found, at rank 0: (1 + 1)/2/2 = 0.5.
        close(trapezoid_ap(&[0], 2), 0.5);
        close(trapezoid_ap(&[], 3), 0.0);
    }

    #[test]
    fn junk_is_dropped_wherever_it_is() {
        // Database items: 10, 11 positive; 20, 21 junk; 30, 31 negative. With junk dropped every
        // ranking below is [pos, neg, pos] → AP 0.5 + 7/24 = 19/24.
        let ok = [10, 11];
        let junk = [20, 21];
        let expected = 19.0 / 24.0;
        for ranking in [
            vec![10, 30, 11, 31],         // no junk
            vec![20, 10, 30, 11, 31],     // junk first
            vec![10, 20, 30, 21, 11, 31], // junk between
            vec![10, 30, 11, 20, 31, 21], // junk after the last positive
            vec![20, 21, 10, 30, 11, 31], // both junk first
        ] {
            let pos = positive_ranks(&ranking, &ok, &junk);
            assert_eq!(pos, vec![0, 2], "{ranking:?}");
            close(trapezoid_ap(&pos, ok.len()), expected);
        }
        // Junk right before a positive at the top makes it rank 0: [j, p] → AP 1.
        close(trapezoid_ap(&positive_ranks(&[20, 10], &[10], &junk), 1), 1.0);
    }

    #[test]
    fn compute_map_skips_empty_queries_and_uses_the_protocols_precision() {
        let ranks = vec![vec![10, 30, 11, 31], vec![30, 10, 31], vec![30, 31, 10]];
        let gnd = vec![
            ApGnd { ok: vec![10, 11], junk: vec![] },
            ApGnd { ok: vec![], junk: vec![10] }, // no positives: left out
            ApGnd { ok: vec![10], junk: vec![31] },
        ];
        let r = compute_map(&ranks, &gnd, &[1, 5, 10]);
        assert_eq!(r.n_empty, 1);
        // Query 0: 19/24 (above). Query 2: junk 31 is before 10 → [30, 10] → rank 1 → 0.25.
        assert_eq!(r.aps[1], None);
        close(r.aps[0].unwrap(), 19.0 / 24.0);
        close(r.aps[2].unwrap(), 0.25);
        close(r.map, (19.0 / 24.0 + 0.25) / 2.0);
        // P@k, 1-based positive ranks: query 0 [1, 3], query 2 [2].
        // k=1: q0 kq=min(3,1)=1 → 1/1; q2 kq=1 → 0/1. Mean 0.5.
        // k=5: q0 kq=min(3,5)=3 → 2/3; q2 kq=min(2,5)=2 → 1/2. Mean 7/12. k=10 the same.
        assert_eq!(r.mp_at.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 5, 10]);
        close(r.mp_at[0].1, 0.5);
        close(r.mp_at[1].1, 7.0 / 12.0);
        close(r.mp_at[2].1, 7.0 / 12.0);
    }

    #[test]
    fn compute_map_with_no_scorable_query_is_zero_and_positive_not_ranked_scores_zero() {
        let r = compute_map(&[vec![1, 2]], &[ApGnd { ok: vec![], junk: vec![] }], &[1]);
        assert_eq!((r.map, r.n_empty, r.mp_at.clone()), (0.0, 1, vec![(1, 0.0)]));
        let r = compute_map(&[vec![1, 2]], &[ApGnd { ok: vec![9], junk: vec![] }], &[1]);
        assert_eq!((r.map, r.aps.clone(), r.mp_at.clone()), (0.0, vec![Some(0.0)], vec![(1, 0.0)]));
    }

    #[test]
    fn revisited_easy_medium_hard_hand_worked() {
        // easy = {0}, hard = {1}, junk = {2}; item 3 is a negative. Ranking [3, 0, 2, 1].
        let gnd = vec![RevisitedGnd { easy: vec![0], hard: vec![1], junk: vec![2] }];
        let ranks = vec![vec![3, 0, 2, 1]];
        let r = compute_map_revisited(&ranks, &gnd, &[1, 5, 10]);
        // Easy: ok {0}, ignore {2, 1} → [3, 0] → rank 1 → (0/1 + 1/2)/2 = 0.25.
        close(r.easy.map, 0.25);
        // Medium: ok {0, 1}, ignore {2} → [3, 0, 1] → ranks 1, 2:
        //   (0/1 + 1/2)/2/2 = 1/8, (1/2 + 2/3)/2/2 = 7/24 → 5/12.
        close(r.medium.map, 5.0 / 12.0);
        // Hard: ok {1}, ignore {2, 0} → [3, 1] → rank 1 → 0.25.
        close(r.hard.map, 0.25);
        // mP@1: no positive at rank 1 in any setting → 0. mP@5 (Medium): pos [2, 3], kq = 3 →
        // 2/3.
        close(r.medium.mp_at[0].1, 0.0);
        close(r.medium.mp_at[1].1, 2.0 / 3.0);
        // Hard with no hard images: left out of Hard only.
        let gnd = vec![RevisitedGnd { easy: vec![0], hard: vec![], junk: vec![] }];
        let r = compute_map_revisited(&[vec![0, 1]], &gnd, &[1]);
        assert_eq!((r.easy.n_empty, r.medium.n_empty, r.hard.n_empty), (0, 0, 1));
        close(r.easy.map, 1.0);
    }

    #[test]
    fn tied_scores_give_the_ranking_order() {
        // A positive (0) and a negative (1) with the same score: the lower index ranks first,
        // so the positive is at rank 0 and AP is 1; swapping the indices gives rank 1 → 0.25.
        let scores = [0.7f32, 0.7, 0.1];
        let ranking = rank_by_score(&scores);
        close(trapezoid_ap(&positive_ranks(&ranking, &[0], &[]), 1), 1.0);
        close(trapezoid_ap(&positive_ranks(&ranking, &[1], &[]), 1), 0.25);
        let relevant: Vec<bool> = ranking.iter().map(|&i| i == 1).collect();
        assert!(!hit_at_k(&relevant, 1) && hit_at_k(&relevant, 2));
    }
}
