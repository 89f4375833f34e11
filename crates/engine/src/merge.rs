//! `irtdb merge SHARD.db… --db OUT.db`: the collections that `irtdb index --shard I/N` (or
//! `--files-from`) built on many machines, joined into one, indexed once.
//!
//! Shards must agree on the folder they index and on the model identity (weights hash,
//! plugin, pooling, preprocessing, plugin options, and what the backbone says it outputs):
//! descriptors of different models are never mixed, and the refusal names the difference. The
//! output holds exactly the union of the shards: a path is copied only when the output does
//! not already hold it with the same content, status and descriptor, and paths that no shard
//! holds any more are removed; so merging again after some shards changed writes only what
//! changed. Rows are written in transactions of [`CHUNK`] images after the `index_stale` mark
//! is set, so a merge killed at any moment is finished by the next one; the PCA and HNSW are
//! built once at the end, by the same code as `irtdb index`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use irtdb_store::{ImageRow, ImageUpdate, ModelRow, Outcome, Status, Store};
use serde::Serialize;

use crate::collection::{self, StoredModel, META_INDEX_STALE, META_MODEL_ID};
use crate::error::{Error, Result, Setting};
use crate::index::{finish_index, BuildOptions, IndexSummary, Progress, META_SHARD};

/// Images written per transaction.
pub const CHUNK: usize = 1000;

/// Options of a merge.
#[derive(Clone, Debug)]
pub struct MergeOptions {
    pub shards: Vec<PathBuf>,
    /// The merged collection (created if missing).
    pub db: PathBuf,
    pub build: BuildOptions,
    /// Wait for another writer of `db` instead of refusing.
    pub wait: bool,
    /// Merge the rows only: no PCA, no HNSW (for a collection too large for one machine's
    /// index, handed to a vector store with `irtdb export --raw`).
    pub skip_index: bool,
}

/// One input of a merge.
#[derive(Clone, Debug, Serialize)]
pub struct ShardSummary {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    /// The shard it says it holds (`I/N`), if it was indexed with `--shard`.
    pub shard: Option<String>,
    pub images: usize,
}

/// The closing summary of a merge.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MergeReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    #[serde(serialize_with = "crate::lossy::path")]
    pub root: PathBuf,
    pub model: String,
    pub shards: Vec<ShardSummary>,
    /// Images in the merged collection.
    pub images: usize,
    pub added: usize,
    pub changed: usize,
    pub removed: usize,
    pub unchanged: usize,
    /// Images recorded as failed by their shard (kept, with their error).
    pub failed: usize,
    /// Things worth a look that did not stop the merge (an incomplete set of shards, a path
    /// held by two shards).
    pub warnings: Vec<String>,
    #[serde(flatten)]
    pub index: IndexSummary,
    pub seconds: f64,
}

/// A shard, opened and checked.
struct Input {
    store: Store,
    model: (ModelRow, StoredModel),
    root: PathBuf,
    shard: Option<String>,
}

pub fn run(opts: &MergeOptions, progress: &dyn Progress) -> Result<MergeReport> {
    let started = Instant::now();
    let inputs = open_inputs(opts)?;
    let first = &inputs[0];
    let mut out = Store::open(&opts.db)?;
    let _lock = if opts.wait {
        out.lock_writer_waiting(|_| progress.stage("waiting for another irtdb to finish writing"))?
    } else {
        out.lock_writer(false)?
    };
    let model_id = prepare_output(&mut out, first)?;
    let mut report = MergeReport {
        db: out.path().to_path_buf(),
        root: first.root.clone(),
        model: crate::model::describe(&first.model.1.backbone),
        ..Default::default()
    };
    report.warnings.extend(shard_set_warnings(&inputs));
    let mut merge = Merge::new(&out, model_id)?;
    let mut changed_any = false;
    for (i, input) in inputs.iter().enumerate() {
        progress.stage(&format!("reading {}", input.store.path().display()));
        let updates = merge.shard(&inputs, i, &mut report)?;
        if !updates.is_empty() {
            out.set_meta(META_INDEX_STALE, "1")?;
            changed_any = true;
            for chunk in updates.chunks(CHUNK) {
                out.commit_batch(model_id, chunk)?;
            }
        }
        failpoint_abort_after_shard(i + 1);
    }
    let gone = merge.gone();
    if !gone.is_empty() {
        out.set_meta(META_INDEX_STALE, "1")?;
        changed_any = true;
        report.removed = out.delete_images(&gone)?;
    }
    report.images = merge.owner.len();
    if opts.skip_index {
        // The rows are merged; PCA and HNSW are left to a later merge, `irtdb reindex`, or a
        // vector store fed by `irtdb export --raw`. `index_stale` stays set if rows changed.
        report.index.index_skipped = true;
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    let nothing =
        format!("the shards hold no embedded image ({} failed): nothing to index", report.failed);
    finish_index(
        &mut out,
        model_id,
        changed_any,
        &opts.build,
        &mut report.index,
        &nothing,
        progress,
    )?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The shards, opened, each once, none of them the output, all of one folder and one model.
fn open_inputs(opts: &MergeOptions) -> Result<Vec<Input>> {
    if opts.shards.is_empty() {
        let message = "nothing to merge: name the shard databases, e.g. `irtdb merge shards/*.db`";
        return Err(Error::refused(&opts.db, message, &[]));
    }
    let out_path = irtdb_core::absolute(&opts.db);
    let mut inputs = Vec::with_capacity(opts.shards.len());
    let mut seen_paths = HashSet::new();
    for path in &opts.shards {
        let input = open_shard(path)?;
        if input.store.path() == out_path {
            let message = format!(
                "{} is both a shard and the output: give the merged collection its own database",
                path.display()
            );
            return Err(Error::refused(path, message, &[Setting::Db]));
        }
        if !seen_paths.insert(input.store.path().to_path_buf()) {
            return Err(Error::input(path, format!("{} is named twice", path.display())));
        }
        inputs.push(input);
    }
    let first = &inputs[0];
    for other in &inputs[1..] {
        if other.root != first.root {
            let message = format!(
                "{} indexes the folder {}, {} indexes {}: shards of one collection index the \
                 same folder (the same path on every machine)",
                first.store.path().display(),
                first.root.display(),
                other.store.path().display(),
                other.root.display()
            );
            return Err(Error::refused(other.store.path(), message, &[]));
        }
        if let Some(diff) = identity_difference(&first.model, &other.model) {
            let message = format!(
                "{} and {} were indexed with different models ({diff}): descriptors of \
                 different models are never mixed; re-index the odd shard with the others' model",
                first.store.path().display(),
                other.store.path().display()
            );
            return Err(Error::refused(other.store.path(), message, &[]));
        }
    }
    Ok(inputs)
}

/// Checks that the output indexes the shards' folder with their model (recording both in a new
/// one) and is not a shard itself. Returns its model id.
fn prepare_output(out: &mut Store, first: &Input) -> Result<i64> {
    match out.collection_root()? {
        Some(r) if r != first.root => {
            let message = format!(
                "{} indexes the folder {}, the shards index {}: merge into another database",
                out.path().display(),
                r.display(),
                first.root.display()
            );
            return Err(Error::refused(out.path(), message, &[Setting::Db]));
        }
        Some(_) => {}
        None => out.set_collection_root(&first.root)?,
    }
    let (row, stored) = &first.model;
    let model_id = match collection::collection_model(out)? {
        Some(existing) => {
            if let Some(diff) = identity_difference(&existing, &first.model) {
                let message = format!(
                    "{} holds descriptors of another model than the shards ({diff}): merge into \
                     another database",
                    out.path().display()
                );
                return Err(Error::refused(out.path(), message, &[Setting::Db]));
            }
            existing.0.id
        }
        None => {
            let id = out
                .upsert_model(&stored.to_new_model(row.weights_hash.clone(), row.random_weights))?;
            out.set_meta(META_MODEL_ID, &id.to_string())?;
            id
        }
    };
    if out.meta(META_SHARD)?.is_some() {
        let message = format!(
            "{} is itself a shard (indexed as one): merge into another database",
            out.path().display()
        );
        return Err(Error::refused(out.path(), message, &[Setting::Db]));
    }
    Ok(model_id)
}

/// The output's rows before the merge, and every path some shard holds so far.
struct Merge {
    old_rows: Vec<ImageRow>,
    old_embedded: HashSet<i64>,
    /// Every path some shard holds → the shard that gave it (for the overlap check) and its
    /// content hash.
    owner: HashMap<String, (usize, String)>,
}

impl Merge {
    fn new(out: &Store, model_id: i64) -> Result<Self> {
        Ok(Merge {
            old_rows: out.images()?,
            old_embedded: out.descriptor_ids(model_id)?.into_iter().collect(),
            owner: HashMap::new(),
        })
    }

    /// The rows of shard `i` that the output lacks or holds otherwise, counted into `report`.
    fn shard(
        &mut self,
        inputs: &[Input],
        i: usize,
        report: &mut MergeReport,
    ) -> Result<Vec<ImageUpdate>> {
        let input = &inputs[i];
        let old: HashMap<&str, &ImageRow> =
            self.old_rows.iter().map(|r| (r.path.as_str(), r)).collect();
        let rows = input.store.images()?;
        let vectors = input.store.descriptors(input.model.0.id)?;
        let at: HashMap<i64, usize> =
            vectors.ids.iter().enumerate().map(|(k, &id)| (id, k)).collect();
        report.shards.push(ShardSummary {
            db: input.store.path().to_path_buf(),
            shard: input.shard.clone(),
            images: rows.len(),
        });
        let mut updates = Vec::new();
        for r in &rows {
            if let Some((j, hash)) = self.owner.get(&r.path) {
                if *hash != r.hash {
                    let message = format!(
                        "{} is in {} and in {} with different content: the shards overlap and \
                         disagree; re-index one of them",
                        r.path,
                        inputs[*j].store.path().display(),
                        input.store.path().display()
                    );
                    return Err(Error::refused(input.store.path(), message, &[]));
                }
                report.warnings.push(format!(
                    "{} is in {} and in {}: merged once",
                    r.path,
                    inputs[*j].store.path().display(),
                    input.store.path().display()
                ));
                continue;
            }
            self.owner.insert(r.path.clone(), (i, r.hash.clone()));
            let outcome = match r.status {
                Status::Failed => {
                    report.failed += 1;
                    Outcome::Failed(r.error.clone().unwrap_or_default())
                }
                Status::Ok => match at.get(&r.id) {
                    Some(&k) => Outcome::Embedded(
                        vectors.data[k * vectors.dim..(k + 1) * vectors.dim].to_vec(),
                    ),
                    None => {
                        report.warnings.push(format!(
                            "{} has no descriptor in {}: not merged; run that shard's index again",
                            r.path,
                            input.store.path().display()
                        ));
                        continue;
                    }
                },
            };
            let prior = old.get(r.path.as_str()).copied();
            if prior.is_some_and(|o| same_row(o, r, self.old_embedded.contains(&o.id))) {
                report.unchanged += 1;
                continue;
            }
            match prior {
                Some(_) => report.changed += 1,
                None => report.added += 1,
            }
            updates.push(ImageUpdate {
                path: r.path.clone(),
                size: r.size,
                mtime_ns: r.mtime_ns,
                hash: r.hash.clone(),
                width: r.width,
                height: r.height,
                label: r.label.clone(),
                outcome,
            });
        }
        Ok(updates)
    }

    /// The output's images that no shard holds.
    fn gone(&self) -> Vec<i64> {
        self.old_rows.iter().filter(|r| !self.owner.contains_key(&r.path)).map(|r| r.id).collect()
    }
}

/// Test hook: `IRTDB_FAILPOINT=merge-abort-after-shard:N` aborts the process right after the
/// rows of the N-th shard are written, as a crash would, to test that the next merge finishes.
fn failpoint_abort_after_shard(shards: usize) {
    if let Ok(v) = std::env::var("IRTDB_FAILPOINT") {
        if v.strip_prefix("merge-abort-after-shard:").and_then(|n| n.parse::<usize>().ok())
            == Some(shards)
        {
            std::process::abort();
        }
    }
}

fn open_shard(path: &Path) -> Result<Input> {
    let store = Store::open_existing(path).map_err(|e| {
        Error::refused(path, format!("cannot read the shard {}: {e}", path.display()), &[])
    })?;
    let Some(model) = collection::collection_model(&store)? else {
        let message = format!(
            "{} has no model: it is not an irtdb collection yet (index its shard of the folder \
             into it first)",
            path.display()
        );
        return Err(Error::refused(path, message, &[Setting::Shard, Setting::Db]));
    };
    let Some(root) = store.collection_root()? else {
        let message = format!(
            "{} records no collection folder: it is not an index of a folder",
            path.display()
        );
        return Err(Error::refused(path, message, &[]));
    };
    let shard = store.meta(META_SHARD)?;
    Ok(Input { store, model, root, shard })
}

/// Whether the output already holds this shard row exactly (so it is not written again).
fn same_row(old: &ImageRow, new: &ImageRow, old_has_descriptor: bool) -> bool {
    old.hash == new.hash
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.label == new.label
        && old.status == new.status
        && old.error == new.error
        && old.width == new.width
        && old.height == new.height
        && (old.status == Status::Failed || old_has_descriptor)
}

/// The first way two collections' models differ, in words; `None` when they are the same
/// model (where the weights file lies is not part of a model's identity; its hash is).
pub fn identity_difference(
    a: &(ModelRow, StoredModel),
    b: &(ModelRow, StoredModel),
) -> Option<String> {
    let ((ra, sa), (rb, sb)) = (a, b);
    let short = |h: &str| h[..16.min(h.len())].to_string();
    if ra.weights_hash != rb.weights_hash {
        return Some(format!(
            "weights {} (blake3 {}) vs {} (blake3 {})",
            sa.spec.name(),
            short(&ra.weights_hash),
            sb.spec.name(),
            short(&rb.weights_hash)
        ));
    }
    if sa.spec.plugin != sb.spec.plugin {
        return Some(format!("plugin {} vs {}", sa.spec.plugin, sb.spec.plugin));
    }
    if sa.spec.pooling != sb.spec.pooling {
        return Some(format!("pooling {} vs {}", sa.spec.pooling, sb.spec.pooling));
    }
    if sa.spec.preprocess != sb.spec.preprocess {
        return Some(format!(
            "preprocessing overrides {} vs {}",
            json_or_none(&sa.spec.preprocess),
            json_or_none(&sb.spec.preprocess)
        ));
    }
    if sa.spec.options != sb.spec.options {
        return Some(format!(
            "plugin options {} vs {}",
            json_or_none(&sa.spec.options),
            json_or_none(&sb.spec.options)
        ));
    }
    let (ba, bb) = (&sa.backbone, &sb.backbone);
    if ba.dim != bb.dim || ba.output != bb.output || ba.preprocess != bb.preprocess {
        return Some(format!(
            "the backbone describes itself differently ({}-d, {:?} vs {}-d, {:?})",
            ba.dim, ba.output, bb.dim, bb.output
        ));
    }
    None
}

pub(crate) fn json_or_none(v: &Option<serde_json::Value>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// Warnings about the set of shards: some of `0..N` missing, or shards of different splits.
fn shard_set_warnings(inputs: &[Input]) -> Vec<String> {
    let mut by_count: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for input in inputs {
        let Some(s) = &input.shard else { continue };
        if let Ok(s) = s.parse::<crate::index::Shard>() {
            by_count.entry(s.count).or_default().insert(s.index);
        }
    }
    let mut warnings = Vec::new();
    if by_count.len() > 1 {
        let splits: Vec<String> = by_count.keys().map(|n| format!("{n}")).collect();
        warnings.push(format!(
            "the shards come from different splits (into {} shards): check that they cover the \
             folder once",
            splits.join(", ")
        ));
    }
    for (count, have) in &by_count {
        let missing: Vec<String> =
            (0..*count).filter(|i| !have.contains(i)).map(|i| format!("{i}/{count}")).collect();
        if !missing.is_empty() {
            warnings.push(format!(
                "shards {} are not among the inputs: their images are not in the merged \
                 collection",
                missing.join(", ")
            ));
        }
    }
    warnings
}
