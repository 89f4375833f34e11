//! A collection: its database, the model it was indexed with, its PCA and its current index.
//!
//! Shared by `index`, `query`, `info` and `reindex`. The database is the source of truth: index
//! files that are missing or damaged are rebuilt from the stored descriptors and PCA.

use std::path::Path;

use irtdb_core::BackboneInfo;
use irtdb_index::{HnswIndex, HnswParams, IndexFiles, Pca, UpdateStats};
use irtdb_store::{Generation, ModelRow, NewGeneration, NewModel, PcaRecord, Store};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, Setting};
use crate::model::ModelSpec;

/// Meta key holding the id of the collection's model.
pub const META_MODEL_ID: &str = "model_id";

/// Meta key set to `1` by an index run before it changes any descriptor, and back to `0` once
/// the PCA and index generation rebuilt from them are recorded. A `1` found by the next run means
/// an earlier run died in between: the current generation is stale and must be rebuilt, even if
/// nothing is left to embed.
pub const META_INDEX_STALE: &str = "index_stale";

/// What is stored in `models.config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredModel {
    pub spec: ModelSpec,
    pub backbone: BackboneInfo,
}

impl StoredModel {
    /// The model of `row`, a row of the database at `db`.
    pub fn from_row(row: &ModelRow, db: &Path) -> Result<Self> {
        serde_json::from_value(row.config.clone()).map_err(|e| {
            invalid_data(db, format!("model {} has an unreadable configuration ({e})", row.id))
        })
    }

    pub fn to_new_model(&self, weights_hash: String, random_weights: bool) -> NewModel {
        NewModel {
            plugin: self.spec.plugin.clone(),
            backbone: self.backbone.architecture.clone(),
            weights_path: Some(self.spec.model.display().to_string()),
            weights_hash,
            config: serde_json::to_value(self).expect("serialisable"),
            dim: self.backbone.dim,
            random_weights,
        }
    }
}

/// The model of a collection, from the database.
pub fn collection_model(store: &Store) -> Result<Option<(ModelRow, StoredModel)>> {
    let Some(id) = store.meta(META_MODEL_ID)? else { return Ok(None) };
    let id: i64 = id.parse().map_err(|_| {
        invalid_data(store.path(), format!("meta {META_MODEL_ID} = {id:?} is not an id"))
    })?;
    let row = store.model(id)?;
    let mut stored = StoredModel::from_row(&row, store.path())?;
    stored.spec.relocate();
    Ok(Some((row, stored)))
}

/// [`irtdb_store::Error::InvalidData`]: the database at `db` holds `what`, which irtdb never
/// writes.
pub(crate) fn invalid_data(db: &Path, what: String) -> Error {
    Error::Store(irtdb_store::Error::InvalidData { path: db.to_path_buf(), what })
}

/// Fails unless the weights file the collection was indexed with is still there, unchanged.
pub fn check_weights(row: &ModelRow, stored: &StoredModel) -> Result<()> {
    let path = &stored.spec.model;
    if let (false, Some(h)) = (path.is_file(), &stored.spec.hub) {
        let message = format!(
            "the collection was indexed with {} ({} at commit {}), which is no longer in the \
             Hugging Face cache ({}): run `irtdb model fetch {}` once with network, or point \
             HF_HUB_CACHE / HF_HOME at the cache that has it",
            stored.spec.name(),
            h.file,
            h.commit,
            irtdb_hub::Cache::from_env().root().display(),
            h.pinned()
        );
        return Err(Error::refused(path, message, &[]));
    }
    if !path.is_file() {
        let message = format!(
            "the collection was indexed with the model {} (blake3 {}), which no longer exists: \
             put it back, or index into a new database",
            path.display(),
            &row.weights_hash[..16.min(row.weights_hash.len())]
        );
        return Err(Error::refused(path, message, &[Setting::Db]));
    }
    let hash = stored.spec.weights_hash()?;
    if hash != row.weights_hash {
        let message = format!(
            "the model file {} changed since the collection was indexed (blake3 {} then, {} now): \
             descriptors of different weights are not comparable; restore the file, or index \
             into a new database",
            path.display(),
            &row.weights_hash[..16.min(row.weights_hash.len())],
            &hash[..16]
        );
        return Err(Error::refused(path, message, &[Setting::Db]));
    }
    Ok(())
}

/// Fails when a run asks for a `precision` other than the one the collection was indexed at
/// (`query` and `eval --db` always use the collection's precision; asking is only a check).
pub fn check_precision(
    db: &std::path::Path,
    stored: &StoredModel,
    asked: Option<crate::model::Precision>,
) -> Result<()> {
    let Some(asked) = asked else { return Ok(()) };
    let have = stored.spec.precision();
    if asked.name() != have {
        let message = format!(
            "the collection was indexed at precision {have}, and this run asks for {}: a \
             collection's descriptors and its queries are all embedded at its own precision, \
             never mixed; drop --precision or give --precision {have}",
            asked.name()
        );
        return Err(Error::refused(db, message, &[Setting::Precision]));
    }
    Ok(())
}

/// Fails when a freshly opened backbone differs from what the collection recorded.
pub fn check_backbone(stored: &StoredModel, now: &BackboneInfo) -> Result<()> {
    let then = &stored.backbone;
    // The alpha background and JPEG DCT scaling are applied by the host from the record,
    // whatever a plugin's default.
    if then.dim != now.dim
        || then.output != now.output
        || !then.preprocess.same_apart_from_host_settings(&now.preprocess)
    {
        let message = format!(
            "the model now describes itself differently from when the collection was indexed \
             (then: {}-d, {:?}, {:?}; now: {}-d, {:?}, {:?}); refusing to mix descriptors",
            then.dim, then.output, then.preprocess, now.dim, now.output, now.preprocess
        );
        return Err(Error::refused(&stored.spec.model, message, &[]));
    }
    Ok(())
}

pub fn pca_from_record(r: PcaRecord) -> Pca {
    Pca {
        in_dim: r.in_dim,
        out_dim: r.out_dim,
        whiten: r.whiten,
        mean: r.mean,
        components: r.components,
        explained_variance: r.explained_variance,
        total_variance: r.total_variance,
        n_samples: r.n_samples,
    }
}

pub fn pca_to_record(p: &Pca) -> PcaRecord {
    PcaRecord {
        in_dim: p.in_dim,
        out_dim: p.out_dim,
        whiten: p.whiten,
        mean: p.mean.clone(),
        components: p.components.clone(),
        explained_variance: p.explained_variance.clone(),
        total_variance: p.total_variance,
        n_samples: p.n_samples,
    }
}

/// The searchable form of a collection: ids and the vectors that are indexed (after PCA).
#[derive(Debug)]
pub struct Vectors {
    pub ids: Vec<i64>,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl Vectors {
    /// Descriptors, projected with `pca` when there is one.
    pub fn new(d: irtdb_store::Descriptors, pca: Option<&Pca>) -> Self {
        let n = d.ids.len();
        match pca {
            Some(p) => Vectors { ids: d.ids, dim: p.out_dim, data: p.project_batch(&d.data, n) },
            None => Vectors { ids: d.ids, dim: d.dim, data: d.data },
        }
    }
}

/// The stored descriptors of `model_id`, projected with `pca` when there is one.
pub fn indexed_vectors(store: &Store, model_id: i64, pca: Option<&Pca>) -> Result<Vectors> {
    Ok(Vectors::new(store.descriptors(model_id)?, pca))
}

/// The generation's PCA, if it has one.
pub fn generation_pca(store: &Store, g: &Generation) -> Result<Option<Pca>> {
    match g.pca_id {
        None => Ok(None),
        Some(id) => {
            let r = store.pca(id)?.ok_or_else(|| {
                invalid_data(
                    store.path(),
                    format!("PCA {id} of index generation {} is missing", g.id),
                )
            })?;
            Ok(Some(pca_from_record(r)))
        }
    }
}

/// The base name of a generation's HNSW files (they sit beside the database), if it records
/// one.
pub fn hnsw_basename(g: &Generation) -> Option<String> {
    g.params.get("basename").and_then(|v| v.as_str()).map(String::from)
}

/// [`hnsw_basename`], or an error naming the database when the generation records none.
pub(crate) fn basename_of(store: &Store, g: &Generation) -> Result<String> {
    hnsw_basename(g).ok_or_else(|| {
        let what = format!("index generation {} does not record its file names", g.id);
        invalid_data(store.path(), what)
    })
}

/// Builds the HNSW index over `v`, writes its files beside the database and records them as the
/// current generation (only after the files are durable). Old generations' files are removed.
pub fn build_and_record(
    store: &mut Store,
    model_id: i64,
    pca_id: Option<i64>,
    v: &Vectors,
    params: &HnswParams,
) -> Result<(i64, HnswIndex)> {
    let index = HnswIndex::build(&v.data, v.dim, &v.ids, params)?;
    let lineage = Lineage { pca_fit_n: v.ids.len(), changes_since_fit: 0 };
    let id = record_index(store, model_id, pca_id, &index, lineage)?;
    Ok((id, index))
}

/// How far a generation has drifted from the PCA it projects with: the PCA was fitted on
/// `pca_fit_n` descriptors, and `changes_since_fit` descriptors were added, changed or removed
/// by incremental updates since. Recorded with each generation.
#[derive(Clone, Copy, Debug)]
pub struct Lineage {
    pub pca_fit_n: usize,
    pub changes_since_fit: usize,
}

/// Incremental updates keep the current PCA until the descriptors that changed since it was
/// fitted reach this fraction of the ones it was fitted on; then `index` refits and rebuilds.
pub const REFIT_FRACTION: f64 = 0.2;

/// Writes `index` beside the database under a new basename and records it as the current
/// generation (only after the file is durable). Old generations' files are removed.
pub fn record_index(
    store: &mut Store,
    model_id: i64,
    pca_id: Option<i64>,
    index: &HnswIndex,
    lineage: Lineage,
) -> Result<i64> {
    let names = IndexFiles::beside(store.path());
    let old: Vec<Generation> = store.generations(model_id)?;
    let taken: Vec<String> = old.iter().filter_map(hnsw_basename).collect();
    let basename = names.new_basename(&taken);
    let files = index.save(store.dir(), &basename)?;
    let recorded = store.record_generation(&NewGeneration {
        model_id,
        pca_id,
        kind: "hnsw".into(),
        params: serde_json::json!({
            "basename": basename,
            "hnsw": index.params(),
            "dim": index.dim(),
            "pca_fit_n": lineage.pca_fit_n,
            "changes_since_fit": lineage.changes_since_fit,
        }),
        files: files.clone(),
        count: index.len(),
    });
    let id = match recorded {
        Ok(id) => id,
        Err(e) => {
            // Never recorded (e.g. the disk filled up): nothing will ever use these files.
            for f in &files {
                let _ = std::fs::remove_file(store.dir().join(f));
            }
            return Err(e.into());
        }
    };
    // The new generation is current; the old files are garbage now. Best effort: a leftover
    // file costs disk, never correctness.
    for g in old {
        for f in &g.files {
            if !files.contains(f) {
                let _ = std::fs::remove_file(store.dir().join(f));
            }
        }
    }
    // What a run killed while saving left behind, or files whose generation was never
    // recorded: without this they would stay forever, each as large as the index.
    names.remove_all_but(&files);
    Ok(id)
}

/// What [`update_in_place`] did.
#[derive(Clone, Debug, Serialize)]
pub struct IndexUpdate {
    #[serde(flatten)]
    pub stats: UpdateStats,
    /// Tombstones had passed [`irtdb_index::COMPACT_FRACTION`]; the graph was rebuilt from the
    /// live vectors (same PCA).
    pub compacted: bool,
}

/// Brings the current generation `g` up to the database's descriptors without refitting PCA or
/// rebuilding the graph: vectors are projected with `g`'s PCA, and the index file is loaded and
/// updated (removed ids tombstoned, new and changed ones inserted), then saved as a new
/// generation. Returns `None`, having changed nothing, when a full refit and rebuild is due
/// instead: the build parameters differ, the index file does not load, or the descriptors
/// changed since the PCA fit would pass [`REFIT_FRACTION`].
pub fn update_in_place(
    store: &mut Store,
    model_id: i64,
    g: &Generation,
    params: &HnswParams,
) -> Result<Option<(HnswIndex, IndexUpdate)>> {
    let recorded: Option<HnswParams> =
        g.params.get("hnsw").cloned().and_then(|p| serde_json::from_value(p).ok());
    if recorded.as_ref() != Some(params) {
        return Ok(None);
    }
    let number = |key: &str| g.params.get(key).and_then(|v| v.as_u64()).map(|v| v as usize);
    let lineage = Lineage {
        pca_fit_n: number("pca_fit_n").unwrap_or(g.count),
        changes_since_fit: number("changes_since_fit").unwrap_or(0),
    };
    let Ok(mut index) = HnswIndex::load(store.dir(), &basename_of(store, g)?) else {
        return Ok(None);
    };
    let pca = generation_pca(store, g)?;
    let v = indexed_vectors(store, model_id, pca.as_ref())?;
    if v.dim != index.dim() || v.ids.is_empty() {
        return Ok(None);
    }
    let plan = index.plan_update(&v.data, v.dim, &v.ids)?;
    let d = plan.stats;
    let changes = lineage.changes_since_fit + d.added + d.changed + d.removed;
    if pca.is_some() && changes as f64 > REFIT_FRACTION * lineage.pca_fit_n as f64 {
        return Ok(None);
    }
    let stats = index.apply(plan)?;
    let compacted = index.needs_compaction();
    if compacted {
        index = index.compacted()?;
    }
    let lineage = Lineage { changes_since_fit: changes, ..lineage };
    record_index(store, model_id, g.pca_id, &index, lineage)?;
    Ok(Some((index, IndexUpdate { stats, compacted })))
}

/// Whether every file of generation `g` exists beside the database (a stat each; contents are
/// checked when an index is loaded).
pub fn index_files_present(store: &Store, g: &Generation) -> bool {
    !g.files.is_empty() && g.files.iter().all(|f| store.dir().join(f).is_file())
}

/// Generation `g`'s HNSW index from its files, or (inner `Err`) why they cannot serve it:
/// missing, damaged, or holding another number of vectors than the database.
pub fn load_index(store: &Store, g: &Generation) -> Result<std::result::Result<HnswIndex, String>> {
    let basename = basename_of(store, g)?;
    Ok(match HnswIndex::load(store.dir(), &basename) {
        Ok(index) if index.len() == g.count => Ok(index),
        Ok(index) => {
            Err(format!("index files hold {} vectors, the database {}", index.len(), g.count))
        }
        Err(e) => Err(e.to_string()),
    })
}

/// The HNSW parameters generation `g` was built with (the defaults if it records none).
pub fn hnsw_params(g: &Generation) -> HnswParams {
    g.params.get("hnsw").cloned().and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default()
}

/// The collection's model, or a refusal saying to index a folder first.
pub fn searchable_model(store: &Store) -> Result<(ModelRow, StoredModel)> {
    collection_model(store)?.ok_or_else(|| {
        let message = format!(
            "{} has no indexed images yet: run `irtdb index DIR` first",
            store.path().display()
        );
        Error::refused(store.path(), message, &[])
    })
}

/// The current index generation of `model_id`, or a refusal saying how to build one.
pub fn searchable_generation(store: &Store, model_id: i64) -> Result<Generation> {
    store.current_generation(model_id)?.ok_or_else(|| {
        let root = store.collection_root().ok().flatten().unwrap_or_default();
        let message = format!(
            "{} has no index yet: run `irtdb index {}` (or `irtdb reindex`)",
            store.path().display(),
            root.display()
        );
        Error::refused(store.path(), message, &[])
    })
}

/// Loads the current generation's index; if its files are missing or damaged, rebuilds it from
/// the database (and records the rebuilt files if no other process is writing). Returns the
/// index and, when it had to be rebuilt, why.
pub fn load_or_rebuild(
    store: &mut Store,
    model_id: i64,
    g: &Generation,
    pca: Option<&Pca>,
) -> Result<(HnswIndex, Option<String>)> {
    let problem = match load_index(store, g)? {
        Ok(index) => return Ok((index, None)),
        Err(problem) => problem,
    };
    let params = hnsw_params(g);
    let v = indexed_vectors(store, model_id, pca)?;
    match store.lock_writer(false) {
        Ok(_lock) => {
            let (_, index) = build_and_record(store, model_id, g.pca_id, &v, &params)?;
            Ok((index, Some(format!("{problem}; rebuilt the index from the database"))))
        }
        Err(_) => {
            let index = HnswIndex::build(&v.data, v.dim, &v.ids, &params)?;
            Ok((index, Some(format!("{problem}; rebuilt it in memory (another irtdb is writing)"))))
        }
    }
}
