//! `irtdb analyze`: the two figures of the paper's analysis, for one or more collections.
//!
//! Why: the paper's argument for the KoLeo regulariser is that contrastive training collapses
//! descriptors onto a few directions, and that spreading them out again separates matching from
//! non-matching pairs better. Two pictures show it, and a collection holds everything needed to
//! draw them (its stored descriptors and folder labels):
//!
//! - the **cumulative energy** of the principal components: the fraction of the descriptors'
//!   variance captured by the first i eigenvalues of their covariance (computed with
//!   [`irtdb_index::Pca::fit`]; a steep curve means a collapsed embedding);
//! - **histograms of cosine similarity** of positive pairs (same label) and negative pairs
//!   (different labels), all pairs when there are few, else a seeded uniform sample; their
//!   intersection measures how much the two overlap.
//!
//! Several collections (e.g. the same gallery indexed with IRT_O, IRT_L and IRT_R weights) are
//! overlaid in one figure. Each figure is written as SVG, drawn by hand here (axes, ticks, labels
//! and a legend; no font or system dependency), and as a text-free PNG of the same chart drawn
//! with the `image` crate, for viewers that do not show SVG.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use irtdb_index::{dot, l2_normalise, Pca};

use crate::html::escape;
use irtdb_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::collection;

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct AnalyzeOptions {
    pub dbs: Vec<PathBuf>,
    /// Folder the figures are written to (created if missing).
    pub out: PathBuf,
    /// Pairs of each kind used for the histograms; more available pairs are sampled.
    pub max_pairs: usize,
    /// Histogram bins over the range the similarities span.
    pub bins: usize,
    pub seed: u64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            dbs: Vec::new(),
            out: PathBuf::from("."),
            max_pairs: 200_000,
            bins: 80,
            seed: 0,
        }
    }
}

/// The energy fractions whose component counts are reported.
pub const ENERGY_LEVELS: [f64; 3] = [0.5, 0.9, 0.99];

/// How many components reach an energy level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EnergyLevel {
    pub energy: f64,
    pub components: usize,
}

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

/// The analysis of one collection.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionAnalysis {
    pub db: PathBuf,
    /// The name in the figures' legends (the database file name).
    pub name: String,
    pub model: String,
    pub images: usize,
    pub dim: usize,
    pub labelled: usize,
    pub classes: usize,
    /// `cumulative_energy[i]`: fraction of the variance in the first `i + 1` components;
    /// non-decreasing, ends at 1. Empty when the descriptors have no variance.
    pub cumulative_energy: Vec<f64>,
    pub components_for: Vec<EnergyLevel>,
    pub similarity: Option<SimilarityStats>,
    pub notes: Vec<String>,
}

/// What `irtdb analyze` reports.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyzeReport {
    pub collections: Vec<CollectionAnalysis>,
    /// The files written.
    pub files: Vec<PathBuf>,
}

/// Cumulative energy of the principal components of `n` rows of `dim` values (see
/// [`CollectionAnalysis::cumulative_energy`]); `None` with fewer than 2 rows or no variance.
///
/// With `n ≤ dim` the covariance has rank at most `n − 1`; the remaining eigenvalues are zero
/// and the curve is 1 from there on.
pub fn cumulative_energy(data: &[f32], n: usize, dim: usize) -> Result<Option<Vec<f64>>> {
    if n < 2 || dim == 0 {
        return Ok(None);
    }
    let k = dim.min(n - 1);
    let pca = Pca::fit(data, n, dim, k, false)?;
    let values: Vec<f64> = pca.explained_variance.iter().map(|&v| v.max(0.0) as f64).collect();
    let total: f64 = values.iter().sum();
    if total <= 0.0 || !total.is_finite() {
        return Ok(None);
    }
    let mut sum = 0.0;
    let mut out: Vec<f64> = values
        .iter()
        .map(|v| {
            sum += v;
            (sum / total).min(1.0)
        })
        .collect();
    out.resize(dim, 1.0);
    *out.last_mut().expect("dim > 0") = 1.0;
    Ok(Some(out))
}

/// The number of components whose cumulative energy first reaches each of `levels`.
pub fn components_for(cumulative: &[f64], levels: &[f64]) -> Vec<EnergyLevel> {
    levels
        .iter()
        .map(|&e| EnergyLevel {
            energy: e,
            components: cumulative
                .iter()
                .position(|&c| c >= e - 1e-12)
                .map_or(cumulative.len(), |i| i + 1),
        })
        .collect()
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

/// Analyses one collection.
pub fn analyze_collection(db: &Path, opts: &AnalyzeOptions) -> Result<CollectionAnalysis> {
    let store = Store::open_existing(db)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        bail!(
            "{} has no model yet: index a folder into it first (irtdb index DIR --db …)",
            db.display()
        );
    };
    let d = store.descriptors(row.id)?;
    let (n, dim) = (d.ids.len(), d.dim);
    ensure!(n >= 2, "{} holds {n} descriptors: the analysis needs at least 2", db.display());
    let mut notes = Vec::new();
    let cumulative = cumulative_energy(&d.data, n, dim)?.unwrap_or_else(|| {
        notes.push("the descriptors have no variance: no energy curve".into());
        Vec::new()
    });
    if n <= dim && !cumulative.is_empty() {
        notes.push(format!(
            "{n} descriptors of {dim} dimensions: at most {} components carry energy",
            n - 1
        ));
    }
    let labels: HashMap<i64, Option<String>> =
        store.images()?.into_iter().map(|r| (r.id, r.label)).collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut unit = Vec::new();
    let mut label_ids = Vec::new();
    for (i, id) in d.ids.iter().enumerate() {
        if let Some(l) = labels.get(id).and_then(|l| l.as_deref()) {
            let next = ids.len() as u32;
            label_ids.push(*ids.entry(l.to_string()).or_insert(next));
            let start = unit.len();
            unit.extend_from_slice(&d.data[i * dim..(i + 1) * dim]);
            l2_normalise(&mut unit[start..]);
        }
    }
    let similarity = similarity_stats(&unit, dim, &label_ids, opts.max_pairs, opts.bins, opts.seed);
    if similarity.is_none() {
        notes.push(if label_ids.is_empty() {
            "no image has a label (labels are sub-folder names): no similarity histograms".into()
        } else {
            "the labels give no positive pair or no negative pair: no similarity histograms".into()
        });
    }
    let name = store
        .path()
        .file_name()
        .map_or_else(|| db.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok(CollectionAnalysis {
        db: store.path().to_path_buf(),
        name,
        model: format!(
            "{} ({}, {})",
            stored.backbone.architecture,
            stored.spec.pooling.name(),
            stored.spec.model.display()
        ),
        images: n,
        dim,
        labelled: label_ids.len(),
        classes: ids.len(),
        components_for: components_for(&cumulative, &ENERGY_LEVELS),
        cumulative_energy: cumulative,
        similarity,
        notes,
    })
}

/// Analyses every collection and writes the figures (and `analysis.json`) to `opts.out`.
pub fn run(opts: &AnalyzeOptions) -> Result<AnalyzeReport> {
    ensure!(!opts.dbs.is_empty(), "no collection to analyse: give --db FILE (several to overlay)");
    ensure!(opts.bins >= 2, "--bins must be at least 2");
    ensure!(opts.max_pairs >= 1, "--max-pairs must be at least 1");
    let mut collections: Vec<CollectionAnalysis> =
        opts.dbs.iter().map(|db| analyze_collection(db, opts)).collect::<Result<_>>()?;
    // Same file names in different folders: tell them apart in the legends.
    let names: Vec<String> = collections.iter().map(|c| c.name.clone()).collect();
    for c in collections.iter_mut() {
        if names.iter().filter(|n| **n == c.name).count() > 1 {
            c.name = c.db.display().to_string();
        }
    }
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating the output folder {}", opts.out.display()))?;
    let mut files = Vec::new();

    let energy_series: Vec<Series> = collections
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.cumulative_energy.is_empty())
        .map(|(i, c)| Series {
            name: c.name.clone(),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            points: std::iter::once((0.0, 0.0))
                .chain(c.cumulative_energy.iter().enumerate().map(|(j, &e)| ((j + 1) as f64, e)))
                .collect(),
        })
        .collect();
    if !energy_series.is_empty() {
        let max_dim = collections.iter().map(|c| c.dim).max().unwrap_or(1) as f64;
        let chart = Chart {
            title: "Cumulative energy of the principal components".into(),
            x_label: "number of principal components".into(),
            y_label: "fraction of the variance".into(),
            x_range: (0.0, max_dim),
            y_range: (0.0, 1.0),
            series: energy_series,
        };
        files.extend(write_chart(&chart, &opts.out.join("energy"))?);
    }

    let mut sim_series = Vec::new();
    let mut y_max: f64 = 0.0;
    let mut x_range = (f64::INFINITY, f64::NEG_INFINITY);
    for (i, c) in collections.iter().enumerate() {
        let Some(s) = &c.similarity else { continue };
        x_range = (x_range.0.min(s.hist_range[0]), x_range.1.max(s.hist_range[1]));
        for (hist, kind, dashed) in
            [(&s.positive_hist, "positive", false), (&s.negative_hist, "negative", true)]
        {
            y_max = y_max.max(hist.iter().copied().fold(0.0, f64::max));
            sim_series.push(Series {
                name: format!("{} {kind}", c.name),
                color: PALETTE[i % PALETTE.len()],
                dashed,
                points: step_points(hist, s.hist_range),
            });
        }
    }
    if !sim_series.is_empty() {
        let chart = Chart {
            title: "Cosine similarity of positive (solid) and negative (dashed) pairs".into(),
            x_label: "cosine similarity".into(),
            y_label: "fraction of pairs".into(),
            x_range,
            y_range: (0.0, nice_ceil(y_max * 1.05)),
            series: sim_series,
        };
        files.extend(write_chart(&chart, &opts.out.join("similarity"))?);
    }

    let mut report = AnalyzeReport { collections, files };
    let json_path = opts.out.join("analysis.json");
    report.files.push(json_path.clone());
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(report)
}

/// A histogram of `[lo, hi]` as a step line.
fn step_points(hist: &[f64], [lo, hi]: [f64; 2]) -> Vec<(f64, f64)> {
    let w = (hi - lo) / hist.len() as f64;
    let mut pts = vec![(lo, 0.0)];
    for (b, &v) in hist.iter().enumerate() {
        let x0 = lo + b as f64 * w;
        pts.push((x0, v));
        pts.push((x0 + w, v));
    }
    pts.push((hi, 0.0));
    pts
}

// ----- charts -------------------------------------------------------------------------------

/// Colour-blind-safe colours (Okabe–Ito), one per collection.
const PALETTE: [&str; 7] =
    ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

#[derive(Clone, Debug)]
struct Series {
    name: String,
    color: &'static str,
    dashed: bool,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Debug)]
struct Chart {
    title: String,
    x_label: String,
    y_label: String,
    x_range: (f64, f64),
    y_range: (f64, f64),
    series: Vec<Series>,
}

const WIDTH: u32 = 760;
const HEIGHT: u32 = 460;
/// Plot area: left, top, right, bottom (pixels).
const PLOT: (f64, f64, f64, f64) = (70.0, 40.0, 560.0, 400.0);
const DASH: (f64, f64) = (7.0, 5.0);

impl Chart {
    fn px(&self, (x, y): (f64, f64)) -> (f64, f64) {
        let (x0, x1) = self.x_range;
        let (y0, y1) = self.y_range;
        let fx = if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.0 };
        let fy = if y1 > y0 { (y - y0) / (y1 - y0) } else { 0.0 };
        (PLOT.0 + fx * (PLOT.2 - PLOT.0), PLOT.3 - fy * (PLOT.3 - PLOT.1))
    }
}

/// Round numbers 1, 2, 5 × 10^k covering `[lo, hi]` with about five steps.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// The smallest 1, 2, 5 × 10^k (or a multiple of its tenth) at least `v`.
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= v)
        .unwrap_or(10.0 * mag)
}

fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.to_string()
    }
}

fn svg(chart: &Chart) -> String {
    use std::fmt::Write;
    let (l, t, r, b) = PLOT;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        (l + r) / 2.0,
        escape(&chart.title)
    );
    // Grid, ticks and tick labels.
    for x in ticks(chart.x_range.0, chart.x_range.1) {
        let (px, _) = chart.px((x, chart.y_range.0));
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{t}" x2="{px:.1}" y2="{b}" stroke="#e6e6e6"/>"##
        );
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" y1="{b}" x2="{px:.1}" y2="{}" stroke="black"/>"##,
            b + 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#,
            b + 19.0,
            tick_label(x)
        );
    }
    for y in ticks(chart.y_range.0, chart.y_range.1) {
        let (_, py) = chart.px((chart.x_range.0, y));
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{py:.1}" x2="{r}" y2="{py:.1}" stroke="#e6e6e6"/>"##
        );
        let _ = writeln!(
            s,
            r##"<line x1="{}" y1="{py:.1}" x2="{l}" y2="{py:.1}" stroke="black"/>"##,
            l - 5.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            l - 8.0,
            py + 4.0,
            tick_label(y)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="black"/>"##,
        r - l,
        b - t
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (l + r) / 2.0,
        b + 40.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">{1}</text>"#,
        (t + b) / 2.0,
        escape(&chart.y_label)
    );
    // Series.
    for se in &chart.series {
        let pts: Vec<String> =
            se.points.iter().map(|&p| chart.px(p)).map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let dash = if se.dashed {
            format!(r#" stroke-dasharray="{},{}""#, DASH.0, DASH.1)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
            se.color,
            pts.join(" "),
            escape(&se.name)
        );
    }
    // Legend.
    for (i, se) in chart.series.iter().enumerate() {
        let y = t + 10.0 + 20.0 * i as f64;
        let dash = if se.dashed {
            format!(r#" stroke-dasharray="{},{}""#, DASH.0, DASH.1)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{dash}/>"#,
            r + 15.0,
            r + 45.0,
            se.color
        );
        let _ =
            writeln!(s, r#"<text x="{}" y="{}">{}</text>"#, r + 52.0, y + 4.0, escape(&se.name));
    }
    s.push_str("</svg>\n");
    s
}

fn hex(c: &str) -> image::Rgb<u8> {
    let v = u32::from_str_radix(c.trim_start_matches('#'), 16).unwrap_or(0);
    image::Rgb([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

/// Draws a line of width ~2 px; `dash` (on, off) lengths in pixels, measured from `phase`.
/// Returns the phase at the end, so that a polyline's dashes continue across its segments.
fn draw_line(
    img: &mut image::RgbImage,
    a: (f64, f64),
    b: (f64, f64),
    color: image::Rgb<u8>,
    dash: Option<(f64, f64)>,
    phase: f64,
) -> f64 {
    let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
    let steps = (len * 2.0).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let f = i as f64 / steps as f64;
        if let Some((on, off)) = dash {
            if (phase + f * len) % (on + off) >= on {
                continue;
            }
        }
        let (x, y) = (a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1));
        for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)] {
            let (px, py) = ((x - 0.5 + dx).floor(), (y - 0.5 + dy).floor());
            if px >= 0.0 && py >= 0.0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, color);
            }
        }
    }
    phase + len
}

/// The same chart without text: frame, grid, ticks, series and legend swatches.
fn png(chart: &Chart) -> image::RgbImage {
    let mut img = image::RgbImage::from_pixel(WIDTH, HEIGHT, image::Rgb([255, 255, 255]));
    let (l, t, r, b) = PLOT;
    let grid = image::Rgb([230, 230, 230]);
    let black = image::Rgb([0, 0, 0]);
    let thin = |img: &mut image::RgbImage, a: (f64, f64), z: (f64, f64), c: image::Rgb<u8>| {
        // 1-px axis-aligned line.
        let (x0, x1) = (a.0.min(z.0).round() as u32, a.0.max(z.0).round() as u32);
        let (y0, y1) = (a.1.min(z.1).round() as u32, a.1.max(z.1).round() as u32);
        for x in x0..=x1.min(WIDTH - 1) {
            for y in y0..=y1.min(HEIGHT - 1) {
                img.put_pixel(x, y, c);
            }
        }
    };
    for x in ticks(chart.x_range.0, chart.x_range.1) {
        let (px, _) = chart.px((x, chart.y_range.0));
        thin(&mut img, (px, t), (px, b), grid);
        thin(&mut img, (px, b), (px, b + 5.0), black);
    }
    for y in ticks(chart.y_range.0, chart.y_range.1) {
        let (_, py) = chart.px((chart.x_range.0, y));
        thin(&mut img, (l, py), (r, py), grid);
        thin(&mut img, (l - 5.0, py), (l, py), black);
    }
    for (a, z) in [((l, t), (r, t)), ((l, b), (r, b)), ((l, t), (l, b)), ((r, t), (r, b))] {
        thin(&mut img, a, z, black);
    }
    for (i, se) in chart.series.iter().enumerate() {
        let color = hex(se.color);
        let dash = se.dashed.then_some(DASH);
        let mut phase = 0.0;
        for w in se.points.windows(2) {
            phase = draw_line(&mut img, chart.px(w[0]), chart.px(w[1]), color, dash, phase);
        }
        let y = t + 10.0 + 20.0 * i as f64;
        draw_line(&mut img, (r + 15.0, y), (r + 45.0, y), color, dash, 0.0);
    }
    img
}

/// Writes `<base>.svg` and `<base>.png`; returns their paths.
fn write_chart(chart: &Chart, base: &Path) -> Result<Vec<PathBuf>> {
    let svg_path = base.with_extension("svg");
    std::fs::write(&svg_path, svg(chart))
        .with_context(|| format!("writing {}", svg_path.display()))?;
    let png_path = base.with_extension("png");
    png(chart).save(&png_path).with_context(|| format!("writing {}", png_path.display()))?;
    Ok(vec![svg_path, png_path])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn energy_of_data_on_a_line_is_all_in_one_component() {
        // Points along (1, 1, 0): one component carries everything.
        let data: Vec<f32> = (0..10).flat_map(|i| [i as f32, i as f32, 0.0]).collect();
        let e = cumulative_energy(&data, 10, 3).unwrap().unwrap();
        assert_eq!(e.len(), 3);
        assert!((e[0] - 1.0).abs() < 1e-6, "{e:?}");
        assert_eq!(e[2], 1.0);
        assert_eq!(
            components_for(&e, &[0.5, 0.99]).iter().map(|l| l.components).collect::<Vec<_>>(),
            vec![1, 1]
        );
        // No variance, or one row: no curve.
        assert!(cumulative_energy(&[1.0, 2.0, 1.0, 2.0], 2, 2).unwrap().is_none());
        assert!(cumulative_energy(&[1.0, 2.0], 1, 2).unwrap().is_none());
    }

    #[test]
    fn energy_with_fewer_rows_than_dimensions_ends_at_one() {
        let data: Vec<f32> = (0..4 * 6).map(|i| ((i * 37) % 11) as f32).collect();
        let e = cumulative_energy(&data, 4, 6).unwrap().unwrap();
        assert_eq!(e.len(), 6);
        assert!(e.windows(2).all(|w| w[0] <= w[1]), "{e:?}");
        assert_eq!(&e[2..], &[1.0, 1.0, 1.0, 1.0]); // rank ≤ 3
    }

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

    #[test]
    fn charts_have_axes_ticks_and_legend() {
        let chart = Chart {
            title: "t".into(),
            x_label: "x <axis>".into(),
            y_label: "y".into(),
            x_range: (0.0, 384.0),
            y_range: (0.0, 1.0),
            series: vec![Series {
                name: "a & b".into(),
                color: PALETTE[0],
                dashed: true,
                points: vec![(0.0, 0.0), (384.0, 1.0)],
            }],
        };
        let s = svg(&chart);
        assert!(
            s.contains("x &lt;axis&gt;")
                && s.contains("a &amp; b")
                && s.contains("stroke-dasharray")
        );
        let labels: Vec<String> = ticks(0.0, 1.0).into_iter().map(tick_label).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1"]);
        assert_eq!(ticks(-1.0, 1.0).len(), 5);
        assert_eq!(tick_label(0.6000000000000001), "0.6");
        let img = png(&chart);
        assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
        assert!(img.pixels().any(|p| *p == hex(PALETTE[0])));
    }
}
