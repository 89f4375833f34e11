//! `irtdb info`: what a collection holds.

use std::path::{Path, PathBuf};

use crate::error::Result;
use irtdb_store::Store;
use serde::Serialize;

use crate::collection;

#[derive(Clone, Debug, Serialize)]
pub struct Info {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    pub db_bytes: u64,
    #[serde(serialize_with = "crate::lossy::opt_path")]
    pub root: Option<PathBuf>,
    pub images: usize,
    pub embedded: usize,
    pub failed: usize,
    /// Descriptor rows (one per embedded image per model).
    pub descriptors: usize,
    pub model: Option<ModelInfo>,
    pub pca: Option<PcaInfo>,
    pub index: Option<IndexInfo>,
    pub failures: Vec<Failure>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelInfo {
    pub plugin: String,
    pub weights: String,
    pub weights_hash: String,
    pub architecture: String,
    pub pooling: String,
    pub dim: usize,
    pub input_size: [u32; 2],
    pub crop_pct: f32,
    /// What transparent pixels become (`drop` for collections made before irtdb composited).
    pub alpha_background: irtdb_core::AlphaBackground,
    /// Whether JPEGs are decoded at a reduced scale when preprocessing allows (`false` for
    /// collections made before irtdb did, which keep decoding every pixel).
    pub jpeg_dct_scaling: bool,
    pub random_weights: bool,
    /// `hf-hub:ORG/NAME@COMMIT` when the weights came from the hub.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// How an ONNX model takes its images, as inferred when the collection was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<irtdb_core::InputInfo>,
    /// Plugin options (`--input-size`, `--plugin-config`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PcaInfo {
    pub in_dim: usize,
    pub out_dim: usize,
    pub whiten: bool,
    pub explained: f64,
    pub n_samples: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct IndexInfo {
    pub generation: i64,
    pub kind: String,
    pub count: usize,
    pub dim: usize,
    pub params: serde_json::Value,
    pub files: Vec<String>,
    pub bytes: u64,
    pub files_present: bool,
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub path: String,
    pub error: String,
}

pub fn run(db: &Path) -> Result<Info> {
    run_checked(db, false)
}

/// Like [`run`]; with `check`, first reads the whole file (`PRAGMA integrity_check` and
/// `foreign_key_check`). Without it, `info` reads only the pages its counts need, so damage
/// elsewhere in the file goes unnoticed until a command reads there.
pub fn run_checked(db: &Path, check: bool) -> Result<Info> {
    let store = Store::open_existing(db)?;
    if check {
        store.integrity_check()?;
    }
    let counts = store.counts()?;
    let mut info = Info {
        db: store.path().to_path_buf(),
        db_bytes: std::fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0),
        root: store.collection_root()?,
        images: counts.images,
        embedded: counts.ok,
        failed: counts.failed,
        descriptors: counts.descriptors,
        model: None,
        pca: None,
        index: None,
        failures: store
            .failures()?
            .into_iter()
            .map(|r| Failure { path: r.path, error: r.error.unwrap_or_default() })
            .collect(),
    };
    if let Some((row, stored)) = collection::collection_model(&store)? {
        info.model = Some(ModelInfo {
            plugin: stored.spec.plugin.clone(),
            weights: stored.spec.model.display().to_string(),
            weights_hash: row.weights_hash.clone(),
            architecture: stored.backbone.architecture.clone(),
            pooling: stored.spec.pooling.name(),
            dim: stored.backbone.dim,
            input_size: stored.backbone.preprocess.size,
            crop_pct: stored.backbone.preprocess.crop_pct,
            alpha_background: stored.backbone.preprocess.alpha_background,
            jpeg_dct_scaling: stored.backbone.preprocess.jpeg_dct_scaling,
            random_weights: row.random_weights,
            hub: stored.spec.hub.as_ref().map(|h| h.pinned()),
            input: stored.backbone.input.clone(),
            options: stored.spec.options.clone(),
        });
        if let Some(g) = store.current_generation(row.id)? {
            if let Some(p) = collection::generation_pca(&store, &g)? {
                info.pca = Some(PcaInfo {
                    in_dim: p.in_dim,
                    out_dim: p.out_dim,
                    whiten: p.whiten,
                    explained: p.explained_ratio(),
                    n_samples: p.n_samples,
                });
            }
            let sizes: Vec<Option<u64>> = g
                .files
                .iter()
                .map(|f| std::fs::metadata(store.dir().join(f)).ok().map(|m| m.len()))
                .collect();
            info.index = Some(IndexInfo {
                generation: g.id,
                kind: g.kind.clone(),
                count: g.count,
                dim: g.params.get("dim").and_then(|d| d.as_u64()).unwrap_or(0) as usize,
                params: g.params.get("hnsw").cloned().unwrap_or_default(),
                files: g.files.clone(),
                bytes: sizes.iter().flatten().sum(),
                files_present: sizes.iter().all(Option::is_some),
                created_at: g.created_at.clone(),
            });
        }
    }
    Ok(info)
}
