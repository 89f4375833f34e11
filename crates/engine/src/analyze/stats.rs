//! Pair statistics: cosine similarities of positive and negative pairs, their histograms and
//! how much the two overlap.

use irtdb_index::dot;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Positive- and negative-pair cosine similarities.
#[derive(Clone, Debug, Serialize)]
pub struct SimilarityStats {
    /// Pairs available (same label / different labels).
    pub positive_pairs: u64,
    pub negative_pairs: u64,
    /// Pairs used (all of them, or a seeded uniform sample).
    pub used_positive: usize,
    pub used_negative: usize,
    pub mean_positive: f64,
    pub mean_negative: f64,
    /// Histogram intersection Σ min(p_b, n_b) of the two normalised histograms: 0 when the
    /// distributions are apart, 1 when identical.
    pub overlap: f64,
    /// The range `[lo, hi]` the bins split evenly: the similarities' range widened to multiples
    /// of 0.05 (a fixed [-1, 1] would squeeze the usual 0.2–1 spread of ViT descriptors into a
    /// few bins).
    pub hist_range: [f64; 2],
    /// Fraction of pairs per bin.
    pub positive_hist: Vec<f64>,
    pub negative_hist: Vec<f64>,
}

/// Histogram of values over `bins` equal bins of `[lo, hi]`, as fractions summing to 1 (all
/// zeros for no values). Values outside are clamped into the end bins.
pub fn histogram(values: &[f32], bins: usize, [lo, hi]: [f64; 2]) -> Vec<f64> {
    let mut h = vec![0.0; bins];
    if values.is_empty() || bins == 0 {
        return h;
    }
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    for &v in values {
        let b = (((v as f64 - lo) / width) * bins as f64).floor();
        h[(b.max(0.0) as usize).min(bins - 1)] += 1.0;
    }
    h.iter_mut().for_each(|x| *x /= values.len() as f64);
    h
}

/// Σ min(a_b, b_b): the intersection of two normalised histograms.
pub fn histogram_intersection(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x.min(*y)).sum()
}

/// Cosine similarities of positive and negative pairs of unit rows `data` with `labels`: every
/// pair when a kind has at most `max_pairs`, else `max_pairs` pairs drawn uniformly (with
/// replacement) from that kind, seeded.
pub fn similarity_stats(
    data: &[f32],
    dim: usize,
    labels: &[u32],
    max_pairs: usize,
    bins: usize,
    seed: u64,
) -> Option<SimilarityStats> {
    let n = labels.len();
    // Items grouped by label: order[start..start + len] are the members of one class.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (labels[i], i));
    let mut classes: Vec<(usize, usize)> = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        match classes.last_mut() {
            Some((start, len)) if labels[order[*start]] == labels[i] => *len += 1,
            _ => classes.push((pos, 1)),
        }
    }
    let pos_total: u64 = classes.iter().map(|&(_, c)| (c * c.saturating_sub(1) / 2) as u64).sum();
    let all_pairs = (n as u64) * (n as u64).saturating_sub(1) / 2;
    let neg_total = all_pairs - pos_total;
    if pos_total == 0 || neg_total == 0 {
        return None;
    }
    let sim =
        |a: usize, b: usize| dot(&data[a * dim..(a + 1) * dim], &data[b * dim..(b + 1) * dim]);
    let mut rng = StdRng::seed_from_u64(seed);

    let positives: Vec<f32> = if pos_total as usize <= max_pairs {
        classes
            .iter()
            .flat_map(|&(s, c)| {
                let members = &order[s..s + c];
                (0..c).flat_map(move |a| (a + 1..c).map(move |b| (members[a], members[b])))
            })
            .map(|(a, b)| sim(a, b))
            .collect()
    } else {
        let weights: Vec<u64> =
            classes.iter().map(|&(_, c)| (c * c.saturating_sub(1) / 2) as u64).collect();
        let cumulative = prefix_sums(&weights);
        (0..max_pairs)
            .map(|_| {
                let (s, c) = classes[pick(&cumulative, rng.random_range(0..pos_total))];
                let a = rng.random_range(0..c);
                let mut b = rng.random_range(0..c - 1);
                if b >= a {
                    b += 1;
                }
                sim(order[s + a], order[s + b])
            })
            .collect()
    };
    let negatives: Vec<f32> = if neg_total as usize <= max_pairs {
        (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .filter(|&(a, b)| labels[a] != labels[b])
            .map(|(a, b)| sim(a, b))
            .collect()
    } else {
        // An ordered negative pair (a, b) is uniform when a's class is drawn with weight
        // c·(n − c), a uniformly in it, and b uniformly among the n − c items outside it.
        let weights: Vec<u64> = classes.iter().map(|&(_, c)| (c * (n - c)) as u64).collect();
        let cumulative = prefix_sums(&weights);
        let total = *cumulative.last().expect("classes exist");
        (0..max_pairs)
            .map(|_| {
                let (s, c) = classes[pick(&cumulative, rng.random_range(0..total))];
                let a = order[s + rng.random_range(0..c)];
                let r = rng.random_range(0..n - c);
                let b = order[if r < s { r } else { r + c }];
                sim(a, b)
            })
            .collect()
    };
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let range = hist_range(positives.iter().chain(&negatives).copied());
    let positive_hist = histogram(&positives, bins, range);
    let negative_hist = histogram(&negatives, bins, range);
    Some(SimilarityStats {
        positive_pairs: pos_total,
        negative_pairs: neg_total,
        used_positive: positives.len(),
        used_negative: negatives.len(),
        mean_positive: mean(&positives),
        mean_negative: mean(&negatives),
        overlap: histogram_intersection(&positive_hist, &negative_hist),
        hist_range: range,
        positive_hist,
        negative_hist,
    })
}

/// `[lo, hi]` covering `values`, on multiples of 0.05 within [-1, 1], at least 0.1 wide.
fn hist_range(values: impl Iterator<Item = f32>) -> [f64; 2] {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v as f64);
        hi = hi.max(v as f64);
    }
    if lo > hi {
        return [-1.0, 1.0];
    }
    // On the grid of twentieths, so that the edges are exact multiples of 0.05.
    let mut lo = ((lo * 20.0).floor() as i32).max(-20);
    let mut hi = ((hi * 20.0).ceil() as i32).min(20);
    if hi - lo < 2 {
        hi = (lo + 2).min(20);
        lo = hi - 2;
    }
    [lo as f64 / 20.0, hi as f64 / 20.0]
}

fn prefix_sums(w: &[u64]) -> Vec<u64> {
    let mut s = 0;
    w.iter()
        .map(|x| {
            s += x;
            s
        })
        .collect()
}

/// The index `i` with `cumulative[i - 1] <= r < cumulative[i]`.
fn pick(cumulative: &[u64], r: u64) -> usize {
    cumulative.partition_point(|&c| c <= r)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_and_overlap() {
        let h = histogram(&[-1.0, -0.9, 0.0, 0.99, 1.0, 2.0], 4, [-1.0, 1.0]);
        assert_eq!(h, vec![2.0 / 6.0, 0.0, 1.0 / 6.0, 3.0 / 6.0]);
        let h = histogram(&[0.5, 0.55, 0.9, 0.1], 2, [0.5, 1.0]);
        assert_eq!(h, vec![3.0 / 4.0, 1.0 / 4.0]);
        assert_eq!(hist_range([0.93f32, 0.999].into_iter()), [0.9, 1.0]);
        assert_eq!(hist_range([0.98f32, 0.999].into_iter()), [0.9, 1.0]);
        assert_eq!(hist_range([-0.33f32, 0.41].into_iter()), [-0.35, 0.45]);
        assert_eq!(hist_range([0.2f32, 0.21].into_iter()), [0.2, 0.3]);
        assert_eq!(hist_range(std::iter::empty()), [-1.0, 1.0]);
        assert_eq!(histogram_intersection(&[0.5, 0.5, 0.0], &[0.0, 0.5, 0.5]), 0.5);
        assert_eq!(histogram(&[], 3, [-1.0, 1.0]), vec![0.0; 3]);
    }

    #[test]
    fn all_pairs_when_few_and_uniform_samples_when_many() {
        // Two tight classes on orthogonal axes: positives ≈ 1, negatives ≈ 0.
        let labels: Vec<u32> = (0..40).map(|i| i % 2).collect();
        let data: Vec<f32> =
            labels.iter().flat_map(|&l| if l == 0 { [1.0, 0.0] } else { [0.0, 1.0] }).collect();
        let all = similarity_stats(&data, 2, &labels, 1_000_000, 20, 1).unwrap();
        assert_eq!((all.positive_pairs, all.negative_pairs), (2 * 190, 400));
        assert_eq!((all.used_positive, all.used_negative), (380, 400));
        assert!((all.mean_positive - 1.0).abs() < 1e-9 && all.mean_negative.abs() < 1e-9);
        assert_eq!(all.overlap, 0.0);
        let sampled = similarity_stats(&data, 2, &labels, 50, 20, 1).unwrap();
        assert_eq!((sampled.used_positive, sampled.used_negative), (50, 50));
        assert!((sampled.mean_positive - 1.0).abs() < 1e-9 && sampled.mean_negative.abs() < 1e-9);
        // Seeded: the same sample twice.
        let again = similarity_stats(&data, 2, &labels, 50, 20, 1).unwrap();
        assert_eq!(sampled.positive_hist, again.positive_hist);
        // One class only: no negatives, no stats.
        assert!(similarity_stats(&data, 2, &[0; 40], 10, 4, 0).is_none());
    }

    #[test]
    fn sampled_negative_pairs_never_share_a_label() {
        // Unequal classes: 1 item of label 0, 5 of label 1, 2 of label 2; vectors encode labels.
        let labels = [1u32, 0, 2, 1, 1, 2, 1, 1];
        let data: Vec<f32> =
            labels.iter().flat_map(|&l| [(l as f32).cos(), (l as f32).sin()]).collect();
        let s = similarity_stats(&data, 2, &labels, 3, 200, 9).unwrap();
        assert!(s.negative_hist.iter().sum::<f64>() > 0.99);
        // Same-label pairs have cosine 1 (the last bin); negatives never land there.
        assert_eq!(*s.negative_hist.last().unwrap(), 0.0);
        assert!(*s.positive_hist.last().unwrap() > 0.99);
    }
}
