//! `irtdb index DIR`: scan, embed what is new or changed, store, fit PCA, build HNSW.
//!
//! Incremental and crash-safe: files are matched to the database by relative path; size and
//! mtime unchanged → skipped without reading; otherwise the content hash decides. Descriptors are
//! committed one batch per transaction, so a crash loses at most the batch in flight and a rerun
//! picks up where it stopped. The HNSW generation is recorded only after its files are durable;
//! a run that dies after changing descriptors but before recording its generation leaves the
//! `index_stale` mark ([`collection::META_INDEX_STALE`]), so that the next run rebuilds the PCA
//! and HNSW even when nothing is left to embed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use irtdb_core::Backbone;
use irtdb_image::{BatchPipeline, DecodeLimits, ScanOptions, ScannedFile};
use irtdb_index::{HnswParams, Pca};
use irtdb_store::{ImageMove, ImageRow, ImageUpdate, Outcome, StatUpdate, Status, Store};
use rayon::prelude::*;
use serde::Serialize;

use crate::collection::{self, StoredModel, META_INDEX_STALE, META_MODEL_ID};
use crate::embed::Embedder;
use crate::model::ModelSpec;

/// Options of an index run.
#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub root: PathBuf,
    pub db: PathBuf,
    /// The model; `None` reuses the collection's (required for a new collection).
    pub spec: Option<ModelSpec>,
    /// PCA and HNSW settings.
    pub build: BuildOptions,
    pub batch: usize,
    /// Wait for another writer instead of refusing.
    pub wait: bool,
    pub limits: DecodeLimits,
    /// Index only the files of this shard of the folder (see [`Shard`]).
    pub shard: Option<Shard>,
    /// Index exactly these files (paths relative to `root`) instead of scanning the folder;
    /// files of the database that are not listed are removed from it.
    pub files: Option<Vec<String>>,
    /// Store descriptors only: no PCA, no HNSW (a shard that `irtdb merge` indexes later).
    pub skip_index: bool,
}

/// How the searchable index is built from the descriptors: by `index`, `reindex` and `merge`.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// PCA output dimension; 0 for none.
    pub pca_dim: usize,
    pub whiten: bool,
    pub hnsw: HnswParams,
}

/// `meta` key: the shard of its folder that a collection holds (`I/N`), absent for a whole
/// folder.
pub const META_SHARD: &str = "shard";

/// Shard `index` of `count` (0-based): the files whose [`irtdb_image::shard_of`] their relative
/// path is `index`. Written and parsed as `I/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?} is not a shard: write I/N with 0 <= I < N, e.g. 0/8");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What an index run reports as it goes. Every method has a no-op default.
/// Told about an index run's stages, embedding progress and model downloads.
pub trait Progress: irtdb_hub::Progress + Sync {
    fn stage(&self, _message: &str) {}
    /// Image files found so far by the folder scan (called from several threads).
    fn scanned(&self, _files: u64) {}
    fn embed_start(&self, _total: u64) {}
    fn embedded(&self, _n: u64) {}
    fn embed_finish(&self) {}
}

/// Progress that reports nothing.
#[derive(Debug)]
pub struct Silent;
impl Progress for Silent {}
impl irtdb_hub::Progress for Silent {}

/// The closing summary of an index run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IndexReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    #[serde(serialize_with = "crate::lossy::path")]
    pub root: PathBuf,
    pub model: String,
    pub random_weights: bool,
    /// The shard of the folder this collection holds (`I/N`), if it holds one.
    pub shard: Option<String>,
    pub scanned: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    /// Files found at a new path with the content of a vanished one: their row (id and
    /// descriptor) moved with them, nothing re-embedded.
    pub moved: usize,
    /// Files whose content another image of the collection already has: that descriptor was
    /// copied, nothing re-embedded.
    pub same_content: usize,
    /// Files that could not be embedded in this run (or before and unchanged since).
    pub failed: usize,
    pub unchanged: usize,
    pub embedded: usize,
    pub embed_seconds: f64,
    pub images_per_second: f64,
    #[serde(flatten)]
    pub index: IndexSummary,
    pub seconds: f64,
    /// Files or folders the scan could not read.
    #[serde(serialize_with = "crate::lossy::path_problems")]
    pub scan_problems: Vec<(PathBuf, String)>,
}

/// What became of the searchable index (PCA + HNSW) at the end of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IndexSummary {
    pub pca: Option<PcaSummary>,
    /// Why there is no PCA, if there is none.
    pub pca_skipped: Option<String>,
    pub indexed: usize,
    pub index_dim: usize,
    pub index_rebuilt: bool,
    /// Set when the run stored descriptors only (`skip_index`): no PCA, no HNSW.
    pub index_skipped: bool,
    /// Set when the index was updated in place (no PCA refit, no graph rebuild).
    pub index_update: Option<collection::IndexUpdate>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PcaSummary {
    pub in_dim: usize,
    pub out_dim: usize,
    pub whiten: bool,
    pub explained: f64,
}

/// A file to embed: its scan entry and content hash.
struct Job {
    file: ScannedFile,
    hash: String,
    existed: bool,
}

/// Test hook: `IRTDB_FAILPOINT=abort-after-batch:N` aborts the process right after the N-th
/// committed batch, as a crash would, to test that reruns resume.
fn failpoint_abort_after(batches: usize) {
    if let Ok(v) = std::env::var("IRTDB_FAILPOINT") {
        if v.strip_prefix("abort-after-batch:").and_then(|n| n.parse::<usize>().ok())
            == Some(batches)
        {
            std::process::abort();
        }
    }
}

pub fn run(opts: &IndexOptions, progress: &dyn Progress) -> Result<IndexReport> {
    let started = Instant::now();
    let root = opts
        .root
        .canonicalize()
        .with_context(|| format!("cannot index {}: no such folder", opts.root.display()))?;
    if !root.is_dir() {
        bail!("cannot index {}: not a folder", root.display());
    }
    // A list is checked whole before the database is touched: a path that leaves the folder is
    // a mistake in the list, not a file to skip.
    let files = match &opts.files {
        Some(list) => Some(listed_paths(&opts.root, &root, list)?),
        None => None,
    };
    let mut store = Store::open(&opts.db)?;
    let _lock = if opts.wait {
        store.lock_writer_waiting(|pid| {
            progress.stage(&match pid {
                Some(p) => format!("waiting for irtdb (pid {p}) to finish writing"),
                None => "waiting for another irtdb to finish writing".into(),
            })
        })?
    } else {
        store.lock_writer(false)?
    };

    match store.collection_root()? {
        Some(r) if r != root => bail!(
            "{} indexes the folder {}, not {}: paths in it are relative to that folder; use \
             another --db for this folder",
            store.path().display(),
            r.display(),
            root.display()
        ),
        Some(_) => {}
        None => store.set_collection_root(&root)?,
    }

    // The model: the one given, which must match the collection's, or the collection's own.
    let existing = collection::collection_model(&store)?;
    let spec = match (&opts.spec, &existing) {
        (Some(s), _) => s.clone(),
        (None, Some((_, stored))) => stored.spec.clone(),
        (None, None) => {
            progress.stage(&format!(
                "{} is a new collection and no --model was given: using the default model {} \
                 (the paper's DeiT-S; `irtdb model list` shows others)",
                store.path().display(),
                crate::model::DEFAULT_MODEL
            ));
            ModelSpec::from_ref(
                None,
                Path::new(crate::model::DEFAULT_MODEL),
                Default::default(),
                progress,
            )?
        }
    };
    // A shard database holds its shard and nothing else, run after run.
    let asked = opts.shard.map(|s| s.to_string());
    let recorded = store.meta(META_SHARD)?;
    if existing.is_some() && recorded != asked {
        let what = |s: &Option<String>| match s {
            Some(s) => format!("shard {s} of the folder"),
            None => "the whole folder".to_string(),
        };
        bail!(
            "{} holds {}; this run asks for {}: use another --db (`irtdb merge` joins shards)",
            store.path().display(),
            what(&recorded),
            what(&asked)
        );
    }
    if let (None, Some(s)) = (&existing, &asked) {
        store.set_meta(META_SHARD, s)?;
    }

    let weights_hash = spec.weights_hash()?;
    let random_weights = crate::model::is_random_weights(&spec.model);
    // The backbone is opened only when there is something to embed (or nothing is known about
    // the model yet): a rerun with nothing new never pays for loading the model.
    let mut opened = None;
    let (model_id, info) = match &existing {
        Some((row, old)) => {
            if row.weights_hash != weights_hash
                || old.spec.pooling != spec.pooling
                || old.spec.plugin != spec.plugin
                || old.spec.preprocess != spec.preprocess
                || old.spec.options != spec.options
            {
                bail!(
                    "{} was indexed with another model ({} via {}, pooling {}); this run asks \
                     for {} via {}, pooling {}. Descriptors of different models are never \
                     mixed: use a new --db for the new model",
                    store.path().display(),
                    old.spec.name(),
                    old.spec.plugin,
                    old.spec.pooling,
                    spec.name(),
                    spec.plugin,
                    spec.pooling
                );
            }
            (row.id, old.backbone.clone())
        }
        None => {
            progress.stage(&format!("loading model {}", spec.name()));
            let (_plugin, backbone) = spec.open()?;
            let info = backbone.info().clone();
            let stored = StoredModel { spec: spec.clone(), backbone: info.clone() };
            let id = store.upsert_model(&stored.to_new_model(weights_hash, random_weights))?;
            store.set_meta(META_MODEL_ID, &id.to_string())?;
            opened = Some(backbone);
            (id, info)
        }
    };

    // Scan (or list) and diff.
    let mut scan = match &files {
        Some(list) => {
            progress.stage(&format!(
                "reading {} listed files under {}",
                list.len(),
                root.display()
            ));
            irtdb_image::list_files(&root, list)
        }
        None => {
            progress.stage(&format!("scanning {}", root.display()));
            // A shard stats only its own files.
            let keep = |rel: &str| {
                opts.shard.is_none_or(|s| irtdb_image::shard_of(rel, s.count) == s.index)
            };
            irtdb_image::scan_filtered(&root, &ScanOptions::default(), &keep, &|n| {
                progress.scanned(n as u64)
            })
        }
    };
    if let Some(shard) = opts.shard {
        scan.files.retain(|f| irtdb_image::shard_of(&f.rel_path, shard.count) == shard.index);
    }
    let mut report = IndexReport {
        db: store.path().to_path_buf(),
        root: root.clone(),
        model: crate::model::describe(&info),
        random_weights,
        shard: asked,
        scanned: scan.files.len(),
        scan_problems: scan.problems.clone(),
        ..Default::default()
    };
    let rows = store.images()?;
    let embedded_ids: HashSet<i64> = store.descriptor_ids(model_id)?.into_iter().collect();
    let plan = plan(scan.files, &rows, &embedded_ids, progress);
    report.unchanged = plan.unchanged;
    report.failed = plan.failed_before + plan.unreadable.len();
    report.moved = plan.moves.len();
    report.same_content = plan.copies.len() + plan.followers.len();

    // Moves first (rows keep their ids and descriptors), then copies of descriptors for files
    // whose content is already embedded, and only then the deletions: a vanished row can be
    // the source of a copy. Each step is one transaction; a crash between them leaves a state
    // that the next run's plan completes.
    if !plan.moves.is_empty() {
        store.move_images(&plan.moves)?;
    }
    let by_id: HashMap<i64, &irtdb_store::ImageRow> = rows.iter().map(|r| (r.id, r)).collect();
    if !plan.copies.is_empty() {
        store.set_meta(META_INDEX_STALE, "1")?;
        let mut updates = Vec::with_capacity(plan.copies.len());
        for (job, source) in &plan.copies {
            let vector = store
                .descriptor(*source, model_id)?
                .with_context(|| format!("image id {source} lost its descriptor during the run"))?;
            let size = by_id.get(source).and_then(|r| r.width.zip(r.height));
            updates.push(update(&job.file, job.hash.clone(), size, Outcome::Embedded(vector)));
        }
        store.commit_batch(model_id, &updates)?;
    }
    if !plan.removed.is_empty() {
        store.set_meta(META_INDEX_STALE, "1")?;
        report.removed = store.delete_images(&plan.removed)?;
    }
    store.update_stats(&plan.stats)?;
    if !plan.unreadable.is_empty() {
        store.set_meta(META_INDEX_STALE, "1")?;
        store.commit_batch(model_id, &plan.unreadable)?;
    }
    let jobs = plan.jobs;

    // Embed in batches, one transaction per batch.
    let total = jobs.len();
    report.added = jobs.iter().filter(|j| !j.existed).count();
    report.changed = total - report.added;
    if total > 0 {
        store.set_meta(META_INDEX_STALE, "1")?;
        let backbone = match opened {
            Some(b) => b,
            None => {
                progress.stage(&format!("loading model {}", spec.name()));
                let (_plugin, backbone) = spec.open()?;
                if let Some((_, old)) = &existing {
                    collection::check_backbone(old, backbone.info())?;
                }
                backbone
            }
        };
        let mut embedder = Embedder::new(backbone, spec.pooling);
        progress.embed_start(total as u64);
        let t0 = Instant::now();
        let items: Vec<(Job, PathBuf)> = jobs
            .into_iter()
            .map(|j| {
                let p = j.file.abs_path.clone();
                (j, p)
            })
            .collect();
        let mut batches = 0;
        for batch in
            BatchPipeline::new(items, opts.batch.max(1), info.preprocess.clone(), opts.limits)
        {
            let mut updates = Vec::with_capacity(batch.items.len() + batch.failed.len());
            for (job, _path, err) in &batch.failed {
                updates.push(update(
                    &job.file,
                    job.hash.clone(),
                    None,
                    Outcome::Failed(err.to_string()),
                ));
            }
            if !batch.items.is_empty() {
                let descriptors = embedder.embed_tensor(batch.tensor.view())?;
                for ((job, meta), row) in batch.items.iter().zip(descriptors.rows()) {
                    updates.push(update(
                        &job.file,
                        job.hash.clone(),
                        Some((meta.width, meta.height)),
                        Outcome::Embedded(row.to_vec()),
                    ));
                }
            }
            report.failed += batch.failed.len();
            report.embedded += batch.items.len();
            store.commit_batch(model_id, &updates)?;
            batches += 1;
            failpoint_abort_after(batches);
            progress.embedded(updates.len() as u64);
        }
        progress.embed_finish();
        report.embed_seconds = t0.elapsed().as_secs_f64();
        report.images_per_second = report.embedded as f64 / report.embed_seconds.max(1e-9);
    }
    if !plan.followers.is_empty() {
        store.set_meta(META_INDEX_STALE, "1")?;
        let followed = follow(&store, model_id, &plan.followers)?;
        report.failed +=
            followed.iter().filter(|u| matches!(u.outcome, Outcome::Failed(_))).count();
        store.commit_batch(model_id, &followed)?;
    }

    let descriptors_changed =
        report.embedded > 0 || report.same_content > 0 || report.removed > 0 || report.changed > 0;
    if opts.skip_index {
        report.index.index_skipped = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let nothing_to_index = format!(
        "no image in {} could be embedded ({} failed): nothing to index; `irtdb info --db {}` \
         lists the failures",
        root.display(),
        report.failed,
        store.path().display()
    );
    let mut summary = IndexSummary::default();
    finish_index(
        &mut store,
        model_id,
        descriptors_changed,
        &opts.build,
        &mut summary,
        &nothing_to_index,
        progress,
    )?;
    report.index = summary;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The searchable index after a change of descriptors: updated in place when the current
/// generation still fits (same PCA settings, few enough changes), left alone when nothing
/// changed and its files are there, rebuilt (PCA refit, new HNSW generation) otherwise. Fills
/// the index fields of `report`. Shared by `index` and `merge`.
pub(crate) fn finish_index(
    store: &mut Store,
    model_id: i64,
    descriptors_changed: bool,
    build: &BuildOptions,
    report: &mut IndexSummary,
    nothing_to_index: &str,
    progress: &dyn Progress,
) -> Result<()> {
    // PCA and HNSW, unless nothing changed and the current generation still matches.
    // Also when an earlier run changed descriptors and died before recording its generation: its
    // successor finds nothing left to embed, but the current generation is still the old one.
    let descriptors_changed =
        descriptors_changed || store.meta(META_INDEX_STALE)?.as_deref() == Some("1");
    let current = store.current_generation(model_id)?;
    let wanted_pca = build.pca_dim;
    let current_pca_dim = match &current {
        Some(g) => collection::generation_pca(store, g)?.map(|p| (p.out_dim, p.whiten)),
        None => None,
    };
    let current_fits = current.as_ref().is_some_and(|_| match current_pca_dim {
        Some((d, w)) => d == wanted_pca && w == build.whiten,
        None => {
            wanted_pca == 0
                || store.descriptor_ids(model_id).map(|d| d.len() <= wanted_pca).unwrap_or(false)
        }
    });
    if descriptors_changed && current_fits {
        let g = current.as_ref().expect("checked");
        progress.stage("updating the index in place");
        if let Some((index, update)) = collection::update_in_place(store, model_id, g, &build.hnsw)?
        {
            store.set_meta(META_INDEX_STALE, "0")?;
            let pca = collection::generation_pca(store, g)?;
            report.indexed = index.len();
            report.index_dim = index.dim();
            report.pca = pca.as_ref().map(summary);
            report.index_update = Some(update);
            return Ok(());
        }
    }
    if !descriptors_changed && current_fits {
        let g = current.expect("checked");
        // Nothing changed: the index files need only be there (loading a large graph to check it
        // would cost more than the rest of the run; a query verifies them as it loads them).
        if collection::index_files_present(store, &g) {
            let pca = collection::generation_pca(store, &g)?;
            report.indexed = g.count;
            report.index_dim = match &pca {
                Some(p) => p.out_dim,
                None => store.model(model_id)?.dim,
            };
            report.pca = pca.as_ref().map(summary);
            return Ok(());
        }
        progress.stage("the index files are missing: rebuilding them from the database");
        report.index_rebuilt = true;
    }

    let descriptors = store.descriptors(model_id)?;
    let n = descriptors.ids.len();
    if n == 0 {
        bail!("{nothing_to_index}");
    }
    let mut pca_id = None;
    let mut pca = None;
    if wanted_pca > 0 {
        if wanted_pca >= descriptors.dim {
            report.pca_skipped = Some(format!(
                "--dim {wanted_pca} is not below the descriptor dimension {}; vectors kept as they are",
                descriptors.dim
            ));
        } else {
            progress.stage(&format!(
                "fitting PCA {} → {wanted_pca} on {n} descriptors",
                descriptors.dim
            ));
            match Pca::fit(&descriptors.data, n, descriptors.dim, wanted_pca, build.whiten) {
                Ok(p) => {
                    pca_id = Some(store.save_pca(model_id, &collection::pca_to_record(&p))?);
                    pca = Some(p);
                }
                Err(irtdb_index::Error::TooFewSamples { .. }) => {
                    report.pca_skipped = Some(format!(
                        "PCA to {wanted_pca} dimensions needs more than {wanted_pca} images, the \
                         collection has {n}; vectors kept at {} dimensions (index more images, or \
                         pass --dim 0 to silence this)",
                        descriptors.dim
                    ));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let v = match &pca {
        Some(p) => collection::Vectors {
            ids: descriptors.ids,
            dim: p.out_dim,
            data: p.project_batch(&descriptors.data, n),
        },
        None => collection::Vectors {
            ids: descriptors.ids,
            dim: descriptors.dim,
            data: descriptors.data,
        },
    };
    progress.stage(&format!("building HNSW over {n} vectors of {} dimensions", v.dim));
    let (_, index) = collection::build_and_record(store, model_id, pca_id, &v, &build.hnsw)?;
    store.set_meta(META_INDEX_STALE, "0")?;
    report.indexed = index.len();
    report.index_dim = v.dim;
    report.pca = pca.as_ref().map(summary);
    Ok(())
}

/// The names of a `--files-from` list as paths relative to the collection folder: `./` prefixes
/// dropped, absolute paths under the folder (as given or canonical) made relative, blank lines
/// skipped. A name that is absolute elsewhere or climbs out with `..` is refused, naming it.
fn listed_paths(given_root: &Path, root: &Path, list: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(list.len());
    for (line, name) in list.iter().enumerate() {
        let name = name.trim_end_matches(['\r', '\n']);
        if name.is_empty() {
            continue;
        }
        let p = Path::new(name);
        let rel = if p.is_absolute() {
            let abs_given = std::path::absolute(given_root).unwrap_or_else(|_| given_root.into());
            p.strip_prefix(root).or_else(|_| p.strip_prefix(&abs_given)).ok()
        } else {
            Some(p)
        };
        let parts: Option<Vec<&str>> = rel.and_then(|rel| {
            rel.components()
                .filter(|c| !matches!(c, std::path::Component::CurDir))
                .map(|c| match c {
                    std::path::Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .collect()
        });
        match parts {
            Some(parts) if !parts.is_empty() => out.push(parts.join("/")),
            _ => bail!(
                "line {} of the file list names {name}, which is not inside {}: list paths \
                 relative to the indexed folder (no `..`), e.g. `class1/photo.jpg`",
                line + 1,
                root.display()
            ),
        }
    }
    Ok(out)
}

/// What the scan, diffed against the database, asks of this run.
#[derive(Default)]
struct Plan {
    /// Files to embed (new content).
    jobs: Vec<Job>,
    /// Files with the same content as a job of this run, with that job's path: they get its
    /// outcome afterwards.
    followers: Vec<(Job, String)>,
    /// Files whose content an embedded image already has: (file, that image's id).
    copies: Vec<(Job, i64)>,
    /// Vanished images found again at a new path.
    moves: Vec<ImageMove>,
    /// Touched but unchanged files: new size and mtime only.
    stats: Vec<StatUpdate>,
    /// Files that could not be read for hashing, recorded as failed.
    unreadable: Vec<ImageUpdate>,
    /// Images whose file is gone (and did not move).
    removed: Vec<i64>,
    unchanged: usize,
    /// Files that failed before and have not changed since.
    failed_before: usize,
}

/// Diffs the scan against the stored rows. A file whose path, size and mtime are unchanged is
/// not read. Every other file is hashed (in parallel); then, by content:
/// the stored hash of its own path → stat update; the hash of a vanished image → that image
/// moves here (a rename keeps its descriptor); the hash of another embedded image → its
/// descriptor is copied (a duplicate file is embedded once); the hash of a file already queued
/// in this run → it follows that file; otherwise → embedded.
fn plan(
    files: Vec<ScannedFile>,
    rows: &[ImageRow],
    embedded_ids: &HashSet<i64>,
    progress: &dyn Progress,
) -> Plan {
    let mut plan = Plan::default();
    let by_path: HashMap<&str, &ImageRow> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
    let is_embedded = |r: &ImageRow| r.status == Status::Ok && embedded_ids.contains(&r.id);
    let mut seen = HashSet::new();
    let mut to_check = Vec::new();
    for f in files {
        seen.insert(f.rel_path.clone());
        match by_path.get(f.rel_path.as_str()).copied() {
            Some(r) if r.size == f.size as i64 && r.mtime_ns == f.mtime_ns => match r.status {
                Status::Ok if embedded_ids.contains(&r.id) => plan.unchanged += 1,
                Status::Failed => plan.failed_before += 1,
                Status::Ok => to_check.push((f, Some(r))),
            },
            r => to_check.push((f, r)),
        }
    }
    // Vanished images that may have moved, by content; any embedded image, by content, as the
    // source of a copy (its stored descriptor describes its stored hash).
    let mut vanished: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut gone = Vec::new();
    for r in rows.iter().filter(|r| !seen.contains(&r.path)) {
        gone.push(r.id);
        if is_embedded(r) {
            vanished.entry(r.hash.as_str()).or_default().push(r.id);
        }
    }
    let mut sources: HashMap<&str, i64> = HashMap::new();
    for r in rows.iter().filter(|r| is_embedded(r)) {
        sources.entry(r.hash.as_str()).or_insert(r.id);
    }

    progress.stage(&format!("hashing {} new or modified files", to_check.len()));
    let hashed: Vec<(ScannedFile, Option<&ImageRow>, Result<String, String>)> = to_check
        .into_par_iter()
        .map(|(f, r)| {
            let h = irtdb_image::content_hash(&f.abs_path).map_err(|e| e.to_string());
            (f, r, h)
        })
        .collect();
    let mut moved = HashSet::new();
    // Content queued for embedding in this run → the path of the file that carries it.
    let mut queued: HashMap<String, String> = HashMap::new();
    for (f, r, h) in hashed {
        let hash = match h {
            Ok(hash) => hash,
            // Vanished or unreadable between scan and read: recorded as a failure, run goes on.
            Err(e) => {
                plan.unreadable.push(update(&f, String::new(), None, Outcome::Failed(e)));
                continue;
            }
        };
        if let Some(r) = r.filter(|r| r.hash == hash && is_embedded(r)) {
            plan.stats.push(StatUpdate { id: r.id, size: f.size as i64, mtime_ns: f.mtime_ns });
            plan.unchanged += 1;
            continue;
        }
        let existed = r.is_some();
        if !existed {
            if let Some(id) = vanished.get_mut(hash.as_str()).and_then(Vec::pop) {
                moved.insert(id);
                plan.moves.push(ImageMove {
                    id,
                    path: f.rel_path.clone(),
                    size: f.size as i64,
                    mtime_ns: f.mtime_ns,
                    label: f.label.clone(),
                });
                continue;
            }
        }
        let source = sources.get(hash.as_str()).copied().filter(|&s| Some(s) != r.map(|r| r.id));
        let job = Job { file: f, hash, existed };
        match (source, queued.get(&job.hash)) {
            (Some(source), _) => plan.copies.push((job, source)),
            (None, Some(leader)) => {
                let leader = leader.clone();
                plan.followers.push((job, leader));
            }
            (None, None) => {
                queued.insert(job.hash.clone(), job.file.rel_path.clone());
                plan.jobs.push(job);
            }
        }
    }
    plan.removed = gone.into_iter().filter(|id| !moved.contains(id)).collect();
    plan
}

/// The outcomes of files whose content a job of this run had: the descriptor it got, or the
/// error it failed with (the same bytes fail the same way).
fn follow(store: &Store, model_id: i64, followers: &[(Job, String)]) -> Result<Vec<ImageUpdate>> {
    let mut out = Vec::with_capacity(followers.len());
    for (f, leader_path) in followers {
        let Some(leader) = store.image_by_path(leader_path)? else {
            bail!("{}: {leader_path}, with the same content, was not stored", f.file.rel_path);
        };
        let vector = match leader.status {
            Status::Ok => store.descriptor(leader.id, model_id)?,
            Status::Failed => None,
        };
        let outcome =
            match vector {
                Some(v) => Outcome::Embedded(v),
                None => Outcome::Failed(leader.error.clone().unwrap_or_else(|| {
                    "a file with the same content could not be embedded".into()
                })),
            };
        let size = leader.width.zip(leader.height);
        out.push(update(&f.file, f.hash.clone(), size, outcome));
    }
    Ok(out)
}

fn summary(p: &Pca) -> PcaSummary {
    PcaSummary {
        in_dim: p.in_dim,
        out_dim: p.out_dim,
        whiten: p.whiten,
        explained: p.explained_ratio(),
    }
}

fn update(
    f: &ScannedFile,
    hash: String,
    size: Option<(u32, u32)>,
    outcome: Outcome,
) -> ImageUpdate {
    ImageUpdate {
        path: f.rel_path.clone(),
        size: f.size as i64,
        mtime_ns: f.mtime_ns,
        hash,
        width: size.map(|s| s.0),
        height: size.map(|s| s.1),
        label: f.label.clone(),
        outcome,
    }
}

/// `irtdb reindex`: rebuild PCA and HNSW from the stored descriptors, embedding nothing.
pub fn reindex(db: &Path, build: &BuildOptions, progress: &dyn Progress) -> Result<IndexReport> {
    let (pca_dim, whiten, hnsw) = (build.pca_dim, build.whiten, &build.hnsw);
    let started = Instant::now();
    let mut store = Store::open_existing(db)?;
    let _lock = store.lock_writer(false)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        bail!(
            "{} has no model yet: run `irtdb index DIR --model FILE` first",
            store.path().display()
        );
    };
    let d = store.descriptors(row.id)?;
    let n = d.ids.len();
    if n == 0 {
        bail!("{} holds no descriptors: run `irtdb index DIR` first", store.path().display());
    }
    let mut report = IndexReport {
        db: store.path().to_path_buf(),
        root: store.collection_root()?.unwrap_or_default(),
        model: crate::model::describe(&stored.backbone),
        random_weights: row.random_weights,
        unchanged: n,
        ..Default::default()
    };
    let mut pca = None;
    let mut pca_id = None;
    if pca_dim > 0 && pca_dim < d.dim {
        progress.stage(&format!("fitting PCA {} → {pca_dim} on {n} descriptors", d.dim));
        match Pca::fit(&d.data, n, d.dim, pca_dim, whiten) {
            Ok(p) => {
                pca_id = Some(store.save_pca(row.id, &collection::pca_to_record(&p))?);
                pca = Some(p);
            }
            Err(irtdb_index::Error::TooFewSamples { .. }) => {
                report.index.pca_skipped = Some(format!(
                    "PCA to {pca_dim} needs more than {pca_dim} images, the collection has {n}"
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let v = collection::indexed_vectors(&store, row.id, pca.as_ref())?;
    progress.stage(&format!("building HNSW over {n} vectors of {} dimensions", v.dim));
    let (_, index) = collection::build_and_record(&mut store, row.id, pca_id, &v, hnsw)?;
    store.set_meta(META_INDEX_STALE, "0")?;
    report.index.indexed = index.len();
    report.index.index_dim = v.dim;
    report.index.index_rebuilt = true;
    report.index.pca = pca.as_ref().map(summary);
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
