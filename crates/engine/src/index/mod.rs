//! `irtdb index DIR`: scan, embed what is new or changed, store, fit PCA, build HNSW.
//!
//! Incremental and crash-safe: files are matched to the database by relative path; size and
//! mtime unchanged → skipped without reading; otherwise the content hash decides. Descriptors are
//! committed one batch per transaction, so a crash loses at most the batch in flight and a rerun
//! picks up where it stopped. The HNSW generation is recorded only after its files are durable;
//! a run that dies after changing descriptors but before recording its generation leaves the
//! `index_stale` mark ([`collection::META_INDEX_STALE`]), so that the next run rebuilds the PCA
//! and HNSW even when nothing is left to embed.
//!
//! The rooms: `plan` (the scan diffed against the database, and the edits and embedding that
//! carry the plan out), `build` (PCA + HNSW after a change, and `reindex`); this module holds
//! the options and reports and runs the phases in order.

use std::path::{Path, PathBuf};
use std::time::Instant;

use irtdb_core::{Backbone, BackboneInfo};
use irtdb_image::{DecodeLimits, ScanOptions, ScanResult};
use irtdb_index::HnswParams;
use irtdb_plugin_api::host::LoadedBackbone;
use irtdb_store::{Store, WriterLock};
use serde::Serialize;

use crate::collection::{self, StoredModel, META_MODEL_ID};
use crate::error::{Error, Result, Setting};
use crate::model::ModelSpec;

mod build;
mod plan;

pub(crate) use build::finish_index;
pub use build::reindex;

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

pub fn run(opts: &IndexOptions, progress: &dyn Progress) -> Result<IndexReport> {
    let started = Instant::now();
    let root = folder_to_index(&opts.root)?;
    // A list is checked whole before the database is touched: a path that leaves the folder is
    // a mistake in the list, not a file to skip.
    let files =
        opts.files.as_deref().map(|list| listed_paths(&opts.root, &root, list)).transpose()?;
    let mut store = Store::open(&opts.db)?;
    let _lock = lock(&store, opts.wait, progress)?;
    check_root(&mut store, &root)?;
    let existing = collection::collection_model(&store)?;
    let spec = choose_model(opts, &store, existing.as_ref(), progress)?;
    let shard = check_shard(&mut store, opts.shard, existing.is_some())?;
    let random_weights = crate::model::is_random_weights(&spec.model);
    let model = register_model(&mut store, &spec, existing.as_ref(), random_weights, progress)?;

    let scan = scan(files.as_deref(), opts.shard, &root, progress);
    let mut report = IndexReport {
        db: store.path().to_path_buf(),
        root: root.clone(),
        model: crate::model::describe(&model.info),
        random_weights,
        shard,
        scanned: scan.files.len(),
        scan_problems: scan.problems.clone(),
        ..Default::default()
    };
    let mut run = plan::Apply { store: &mut store, model_id: model.id, report: &mut report };
    let plan = run.plan(scan.files, progress)?;
    run.edits(&plan)?;
    let opened = model.opened;
    let open = || match opened {
        Some(b) => Ok(b),
        None => open_checked(&spec, existing.as_ref(), progress),
    };
    run.embed(plan.jobs, (&model.info, spec.pooling), open, opts, progress)?;
    run.followers(&plan.followers)?;

    let descriptors_changed =
        report.embedded > 0 || report.same_content > 0 || report.removed > 0 || report.changed > 0;
    if opts.skip_index {
        report.index.index_skipped = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let nothing_to_index = format!(
        "no image in {} could be embedded ({} failed): nothing to index; `irtdb info` on {} \
         lists the failures",
        root.display(),
        report.failed,
        store.path().display()
    );
    let mut summary = IndexSummary::default();
    finish_index(
        &mut store,
        model.id,
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

/// The folder to index, absolute; an error if it is not a folder.
fn folder_to_index(root: &Path) -> Result<PathBuf> {
    let not_a_folder =
        |why: &str| Error::input(root, format!("cannot index {}: {why}", root.display()));
    let root = root.canonicalize().map_err(|_| not_a_folder("no such folder"))?;
    if !root.is_dir() {
        return Err(not_a_folder("not a folder"));
    }
    Ok(root)
}

/// The writer lock, waiting for another writer (and saying so) when asked to.
fn lock(store: &Store, wait: bool, progress: &dyn Progress) -> Result<WriterLock> {
    if !wait {
        return Ok(store.lock_writer(false)?);
    }
    Ok(store.lock_writer_waiting(|pid| {
        progress.stage(&match pid {
            Some(p) => format!("waiting for irtdb (pid {p}) to finish writing"),
            None => "waiting for another irtdb to finish writing".into(),
        })
    })?)
}

/// Records `root` as the collection's folder, or checks that it is the recorded one.
fn check_root(store: &mut Store, root: &Path) -> Result<()> {
    match store.collection_root()? {
        Some(r) if r != root => {
            let message = format!(
                "{} indexes the folder {}, not {}: paths in it are relative to that folder; use \
                 another database for this folder",
                store.path().display(),
                r.display(),
                root.display()
            );
            Err(Error::refused(store.path(), message, &[Setting::Db]))
        }
        Some(_) => Ok(()),
        None => Ok(store.set_collection_root(root)?),
    }
}

/// The model: the one given, which must match the collection's, or the collection's own, or
/// for a new collection the default model.
fn choose_model(
    opts: &IndexOptions,
    store: &Store,
    existing: Option<&(irtdb_store::ModelRow, StoredModel)>,
    progress: &dyn Progress,
) -> Result<ModelSpec> {
    Ok(match (&opts.spec, existing) {
        (Some(s), _) => s.clone(),
        (None, Some((_, stored))) => stored.spec.clone(),
        (None, None) => {
            progress.stage(&format!(
                "{} is a new collection and no model was given: using the default model {} \
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
    })
}

/// A shard database holds its shard and nothing else, run after run: records the shard a new
/// collection is asked for, refuses another one. Returns the shard as `I/N`.
fn check_shard(store: &mut Store, shard: Option<Shard>, existing: bool) -> Result<Option<String>> {
    let asked = shard.map(|s| s.to_string());
    let recorded = store.meta(META_SHARD)?;
    if existing && recorded != asked {
        let what = |s: &Option<String>| match s {
            Some(s) => format!("shard {s} of the folder"),
            None => "the whole folder".to_string(),
        };
        let message = format!(
            "{} holds {}; this run asks for {}: use another database (`irtdb merge` joins \
             shards)",
            store.path().display(),
            what(&recorded),
            what(&asked)
        );
        return Err(Error::refused(store.path(), message, &[Setting::Db]));
    }
    if let (false, Some(s)) = (existing, &asked) {
        store.set_meta(META_SHARD, s)?;
    }
    Ok(asked)
}

/// The collection's model: its id, its backbone's description, and the backbone when it had to
/// be opened to learn them (a new collection).
struct Registered {
    id: i64,
    info: BackboneInfo,
    opened: Option<LoadedBackbone>,
}

/// Checks that `spec` is the collection's model, or registers it for a new collection (which
/// opens the backbone). A rerun with nothing new never pays for loading the model.
fn register_model(
    store: &mut Store,
    spec: &ModelSpec,
    existing: Option<&(irtdb_store::ModelRow, StoredModel)>,
    random_weights: bool,
    progress: &dyn Progress,
) -> Result<Registered> {
    let weights_hash = spec.weights_hash()?;
    if let Some((row, old)) = existing {
        if row.weights_hash != weights_hash
            || old.spec.pooling != spec.pooling
            || old.spec.plugin != spec.plugin
            || old.spec.preprocess != spec.preprocess
            || old.spec.options != spec.options
        {
            let message = format!(
                "{} was indexed with another model ({} via {}, pooling {}, precision {}); this \
                 run asks for {} via {}, pooling {}, precision {}{}. Descriptors of different \
                 models are never mixed: use a new database for the new model",
                store.path().display(),
                old.spec.name(),
                old.spec.plugin,
                old.spec.pooling,
                old.spec.precision(),
                spec.name(),
                spec.plugin,
                spec.pooling,
                spec.precision(),
                if old.spec.precision() != spec.precision() {
                    format!(
                        " (the precision differs: index with --precision {} to add to this \
                         collection)",
                        old.spec.precision()
                    )
                } else if old.spec.options != spec.options {
                    format!(
                        " (the plugin options differ: {} vs {})",
                        crate::merge::json_or_none(&old.spec.options),
                        crate::merge::json_or_none(&spec.options)
                    )
                } else {
                    String::new()
                }
            );
            return Err(Error::refused(store.path(), message, &[Setting::Db]));
        }
        return Ok(Registered { id: row.id, info: old.backbone.clone(), opened: None });
    }
    progress.stage(&format!("loading model {}", spec.name()));
    let (_plugin, backbone) = spec.open()?;
    let info = backbone.info().clone();
    let stored = StoredModel { spec: spec.clone(), backbone: info.clone() };
    let id = store.upsert_model(&stored.to_new_model(weights_hash, random_weights))?;
    store.set_meta(META_MODEL_ID, &id.to_string())?;
    Ok(Registered { id, info, opened: Some(backbone) })
}

/// The collection's backbone for embedding, opened now: checked against the description the
/// collection recorded.
fn open_checked(
    spec: &ModelSpec,
    existing: Option<&(irtdb_store::ModelRow, StoredModel)>,
    progress: &dyn Progress,
) -> Result<LoadedBackbone> {
    progress.stage(&format!("loading model {}", spec.name()));
    let (_plugin, backbone) = spec.open()?;
    if let Some((_, old)) = existing {
        collection::check_backbone(old, backbone.info())?;
    }
    Ok(backbone)
}

/// The folder's image files (or the listed ones), restricted to the run's shard.
fn scan(
    files: Option<&[String]>,
    shard: Option<Shard>,
    root: &Path,
    progress: &dyn Progress,
) -> ScanResult {
    let in_shard = |rel: &str| shard.is_none_or(|s| irtdb_image::shard_of(rel, s.count) == s.index);
    match files {
        Some(list) => {
            progress.stage(&format!(
                "reading {} listed files under {}",
                list.len(),
                root.display()
            ));
            let mut scan = irtdb_image::list_files(root, list);
            scan.files.retain(|f| in_shard(&f.rel_path));
            scan
        }
        None => {
            progress.stage(&format!("scanning {}", root.display()));
            // A shard stats only its own files.
            irtdb_image::scan_filtered(root, &ScanOptions::default(), &in_shard, &|n| {
                progress.scanned(n as u64)
            })
        }
    }
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
            let abs_given = irtdb_core::absolute(given_root);
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
            _ => {
                return Err(Error::setting(
                    &[Setting::FilesFrom],
                    format!(
                        "line {} of the file list names {name}, which is not inside {}: list \
                         paths relative to the indexed folder (no `..`), e.g. `class1/photo.jpg`",
                        line + 1,
                        root.display()
                    ),
                ))
            }
        }
    }
    Ok(out)
}
