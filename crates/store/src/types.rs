//! Plain data going in and out of the store: no behaviour beyond small accessors.

use serde::{Deserialize, Serialize};

/// Whether an image produced a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Decoded and embedded.
    Ok,
    /// Could not be decoded or embedded; [`ImageRow::error`] says why.
    Failed,
}

impl Status {
    /// The value stored in `images.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        match s {
            "ok" => Some(Status::Ok),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// One row of `images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRow {
    pub id: i64,
    /// Relative to the collection root, `/` separated.
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    /// blake3 of the content, lowercase hex.
    pub hash: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub label: Option<String>,
    pub status: Status,
    /// Why the image failed; `None` exactly when `status` is [`Status::Ok`].
    pub error: Option<String>,
    /// UTC, ISO-8601.
    pub updated_at: String,
}

/// One scanned image and what embedding it gave, for [`crate::Store::commit_batch`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageUpdate {
    /// Relative to the collection root, `/` separated, no `.` or `..` components.
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub hash: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub label: Option<String>,
    pub outcome: Outcome,
}

/// The result of embedding one image.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The descriptor, exactly the model's `dim` values.
    Embedded(Vec<f32>),
    /// The error message to record.
    Failed(String),
}

/// New-file statistics for an image whose content hash did not change (a `touch`), for
/// [`crate::Store::update_stats`]: the next scan then skips hashing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatUpdate {
    pub id: i64,
    pub size: i64,
    pub mtime_ns: i64,
}

/// A file that moved: the image row `id` (and its descriptors, for every model) now describes
/// the file at `path`, for [`crate::Store::move_images`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMove {
    pub id: i64,
    /// The new path, relative to the collection root, `/` separated.
    pub path: String,
    pub size: i64,
    pub mtime_ns: i64,
    pub label: Option<String>,
}

/// A descriptor extractor to register with [`crate::Store::upsert_model`].
///
/// Its identity is (plugin, backbone, weights_hash, config); `weights_path` only records where
/// the weights were last found.
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    pub plugin: String,
    pub backbone: String,
    /// `None` for random weights.
    pub weights_path: Option<String>,
    pub weights_hash: String,
    /// Preprocessing, pooling and backbone details; stored with object keys sorted.
    pub config: serde_json::Value,
    pub dim: usize,
    pub random_weights: bool,
}

/// One row of `models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub id: i64,
    pub plugin: String,
    pub backbone: String,
    pub weights_path: Option<String>,
    pub weights_hash: String,
    pub config: serde_json::Value,
    pub dim: usize,
    pub random_weights: bool,
    pub created_at: String,
}

/// All descriptors of one model, as one row-major matrix.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Descriptors {
    /// Image ids, ascending; row `i` of `data` belongs to `ids[i]`.
    pub ids: Vec<i64>,
    pub dim: usize,
    /// `ids.len() * dim` values.
    pub data: Vec<f32>,
}

impl Descriptors {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The vector of the `i`-th image (`ids[i]`).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// `(image id, vector)` pairs in id order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &[f32])> + '_ {
        // chunks_exact(0) panics; a zero-dim model cannot be stored, but Default gives dim 0.
        let dim = self.dim.max(1);
        self.ids.iter().copied().zip(self.data.chunks_exact(dim))
    }
}

/// A fitted PCA: `y = components · (x − mean)`, optionally divided by `sqrt(explained_variance)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PcaRecord {
    pub in_dim: usize,
    pub out_dim: usize,
    pub whiten: bool,
    /// `in_dim` values.
    pub mean: Vec<f32>,
    /// `out_dim × in_dim`, row-major (one principal axis per row).
    pub components: Vec<f32>,
    /// `out_dim` values.
    pub explained_variance: Vec<f32>,
    pub total_variance: f64,
    pub n_samples: usize,
}

/// A set of index files, for [`crate::Store::record_generation`].
#[derive(Debug, Clone, PartialEq)]
pub struct NewGeneration {
    pub model_id: i64,
    /// The PCA the indexed vectors were projected with, if any.
    pub pca_id: Option<i64>,
    /// `"hnsw"`, …
    pub kind: String,
    pub params: serde_json::Value,
    /// File names relative to the database's folder.
    pub files: Vec<String>,
    /// Number of vectors indexed.
    pub count: usize,
}

/// One row of `index_generations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    pub id: i64,
    pub model_id: i64,
    pub pca_id: Option<i64>,
    pub kind: String,
    pub params: serde_json::Value,
    pub files: Vec<String>,
    pub count: usize,
    pub current: bool,
    pub created_at: String,
}

/// Row counts, for `irtdb status`-like summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub images: usize,
    pub ok: usize,
    pub failed: usize,
    pub models: usize,
    pub descriptors: usize,
    pub pca: usize,
    pub generations: usize,
}
