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
//! overlaid in one figure, written as SVG and PNG from one plotters description
//! (`charts.rs`); the energy curve's component axis can be logarithmic.
//!
//! Rooms: `spectrum.rs` (the energy curve), `stats.rs` (pair similarities and histograms),
//! `charts.rs` (drawing), this module (reading collections, writing the files).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use irtdb_core::l2_normalise;
use irtdb_store::Store;
use serde::Serialize;

use crate::collection;
use crate::error::{Error, Result, Setting};

mod charts;
mod spectrum;
mod stats;

pub use spectrum::{components_for, cumulative_energy, EnergyLevel, ENERGY_LEVELS};
pub use stats::{histogram, histogram_intersection, similarity_stats, SimilarityStats};

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
    /// Draw the energy curve's component axis on a log scale.
    pub log_energy: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            dbs: Vec::new(),
            out: PathBuf::from("."),
            max_pairs: 200_000,
            bins: 80,
            seed: 0,
            log_energy: false,
        }
    }
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

/// Analyses one collection.
pub fn analyze_collection(db: &Path, opts: &AnalyzeOptions) -> Result<CollectionAnalysis> {
    let store = Store::open_existing(db)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        let message = format!(
            "{} has no model yet: index a folder into it first (irtdb index DIR --db …)",
            db.display()
        );
        return Err(Error::refused(db, message, &[]));
    };
    let d = store.descriptors(row.id)?;
    let (n, dim) = (d.ids.len(), d.dim);
    if n < 2 {
        let message =
            format!("{} holds {n} descriptors: the analysis needs at least 2", db.display());
        return Err(Error::refused(db, message, &[]));
    }
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
    if opts.dbs.is_empty() {
        let message = "no collection to analyse: name one (several to overlay)";
        return Err(Error::setting(&[Setting::Db], message));
    }
    if opts.bins < 2 {
        return Err(Error::setting(&[Setting::Bins], "a histogram needs at least 2 bins"));
    }
    if opts.max_pairs < 1 {
        return Err(Error::setting(&[Setting::MaxPairs], "at least 1 pair must be sampled"));
    }
    let mut collections: Vec<CollectionAnalysis> =
        opts.dbs.iter().map(|db| analyze_collection(db, opts)).collect::<Result<_>>()?;
    // Same file names in different folders: tell them apart in the legends.
    let names: Vec<String> = collections.iter().map(|c| c.name.clone()).collect();
    for c in collections.iter_mut() {
        if names.iter().filter(|n| **n == c.name).count() > 1 {
            c.name = c.db.display().to_string();
        }
    }
    std::fs::create_dir_all(&opts.out).map_err(Error::io("create the output folder", &opts.out))?;
    let mut files = Vec::new();

    if let Some(chart) = charts::energy_chart(&collections, opts.log_energy) {
        files.extend(charts::write_chart(&chart, &opts.out.join("energy"))?);
    }
    if let Some(chart) = charts::similarity_chart(&collections) {
        files.extend(charts::write_chart(&chart, &opts.out.join("similarity"))?);
    }

    let mut report = AnalyzeReport { collections, files };
    let json_path = opts.out.join("analysis.json");
    report.files.push(json_path.clone());
    let json = serde_json::to_string_pretty(&report).expect("the report serialises");
    std::fs::write(&json_path, json).map_err(Error::io("write", &json_path))?;
    Ok(report)
}
