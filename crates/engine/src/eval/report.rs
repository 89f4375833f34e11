//! What `irtdb eval` reports: the scores of each descriptor variant, and the notes that say how
//! they were obtained.

use std::path::PathBuf;

use irtdb_core::metrics::{LabelMetrics, MapResult};
use irtdb_core::BackboneInfo;
use serde::Serialize;

use super::MAX_MAP_R_DEPTH;
use crate::model::ModelSpec;

/// Which model produced the descriptors.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub path: PathBuf,
    pub plugin: String,
    pub pooling: String,
    pub architecture: String,
    pub dim: usize,
    pub provider: String,
    pub random_weights: bool,
}

impl ModelSummary {
    pub(super) fn new(spec: &ModelSpec, info: &BackboneInfo, random_weights: bool) -> Self {
        ModelSummary {
            path: spec.model.clone(),
            plugin: spec.plugin.clone(),
            pooling: spec.pooling.name(),
            architecture: info.architecture.clone(),
            dim: info.dim,
            provider: info.provider.clone(),
            random_weights,
        }
    }
}

/// A value at some k, in percent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AtK {
    pub k: usize,
    pub percent: f64,
}

/// One setting (Easy, Medium or Hard) of the revisited protocol, in percent.
#[derive(Clone, Debug, Serialize)]
pub struct RevisitedSetting {
    pub map: f64,
    pub mp: Vec<AtK>,
    /// Queries scored (those with at least one positive in this setting).
    pub queries: usize,
}

impl RevisitedSetting {
    pub(super) fn from(r: &MapResult) -> Self {
        RevisitedSetting {
            map: 100.0 * r.map,
            mp: r.mp_at.iter().map(|&(k, p)| AtK { k, percent: 100.0 * p }).collect(),
            queries: r.aps.len() - r.n_empty,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RevisitedScores {
    pub easy: RevisitedSetting,
    pub medium: RevisitedSetting,
    pub hard: RevisitedSetting,
}

/// The scores of one descriptor variant (the full descriptor, or after a PCA).
#[derive(Clone, Debug, Serialize)]
pub struct VariantResult {
    /// `full`, `pca128` or `collection_pca`.
    pub name: String,
    pub dim: usize,
    /// Recall@K in percent (category-level protocols and `--db`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recall: Vec<AtK>,
    /// MAP@R in percent (absent when skipped, see the notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_at_r: Option<f64>,
    /// Queries scored, and queries skipped because nothing in the gallery shares their label.
    pub scored_queries: usize,
    pub skipped_queries: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisited: Option<RevisitedScores>,
    pub search_seconds: f64,
}

/// What `irtdb eval` reports.
#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    /// A protocol name, or `db` for a collection.
    pub protocol: String,
    /// The dataset folder or the database file.
    pub source: PathBuf,
    pub model: Option<ModelSummary>,
    /// Images whose descriptors were evaluated.
    pub images: usize,
    pub queries: usize,
    pub gallery: usize,
    /// Distinct labels among the evaluated images (0 for the revisited protocols).
    pub classes: usize,
    pub variants: Vec<VariantResult>,
    pub notes: Vec<String>,
    pub embed_seconds: f64,
}

/// The report of one label-based variant (Recall@K, MAP@R).
pub(super) fn label_variant(
    name: &str,
    dim: usize,
    (metrics, with_map): (LabelMetrics, bool),
    seconds: f64,
) -> VariantResult {
    VariantResult {
        name: name.to_string(),
        dim,
        recall: metrics.recall().into_iter().map(|(k, r)| AtK { k, percent: 100.0 * r }).collect(),
        map_at_r: with_map.then(|| 100.0 * metrics.map_at_r()),
        scored_queries: metrics.scored() as usize,
        skipped_queries: metrics.skipped() as usize,
        revisited: None,
        search_seconds: seconds,
    }
}

/// Notes on queries left out of the scores, and on MAP@R when it was skipped.
pub(super) fn add_skip_notes(report: &mut EvalReport) {
    if let Some(v) = report.variants.first() {
        if v.skipped_queries > 0 && v.revisited.is_none() {
            report.notes.push(format!(
                "{} queries have no other image with their label and are left out of the scores",
                v.skipped_queries
            ));
        }
        if v.map_at_r.is_none() && v.revisited.is_none() {
            report.notes.push(format!(
                "MAP@R skipped: a class has more than {MAX_MAP_R_DEPTH} images, so each query \
                 would have to be ranked that deep"
            ));
        }
    }
}

/// The note every report of a model with random weights carries.
pub(super) const RANDOM_WEIGHTS_NOTE: &str =
    "the model has RANDOM weights: the scores measure colour and layout";

impl EvalReport {
    /// A report of `protocol` on `source` with nothing counted or scored yet.
    pub(super) fn new(protocol: &str, source: PathBuf, model: ModelSummary) -> Self {
        EvalReport {
            protocol: protocol.to_string(),
            source,
            model: Some(model),
            images: 0,
            queries: 0,
            gallery: 0,
            classes: 0,
            variants: Vec::new(),
            notes: Vec::new(),
            embed_seconds: 0.0,
        }
    }
}
