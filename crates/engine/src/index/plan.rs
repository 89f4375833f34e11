//! The scan diffed against the database ([`plan`]), and the plan carried out: moves, copies,
//! deletions and stat updates (each one transaction), then the embedding (one transaction per
//! batch), then the files that follow an embedded one.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use irtdb_core::{BackboneInfo, Pool};
use irtdb_image::{BatchPipeline, ScannedFile};
use irtdb_plugin_api::host::LoadedBackbone;
use irtdb_store::{ImageMove, ImageRow, ImageUpdate, Outcome, StatUpdate, Status, Store};
use rayon::prelude::*;

use super::{IndexOptions, IndexReport, Progress};
use crate::collection::{invalid_data, META_INDEX_STALE};
use crate::embed::Embedder;
use crate::error::Result;

/// A file to embed: its scan entry and content hash.
pub(super) struct Job {
    file: ScannedFile,
    hash: String,
    existed: bool,
}

/// Test hooks after the N-th committed batch: `IRTDB_FAILPOINT=abort-after-batch:N` aborts the
/// process, as a crash would, to test that reruns resume; `pause-after-batch:N:FILE` waits until
/// FILE exists (at most two minutes), so that a test observes a run in the middle for certain
/// instead of hoping to be quick enough.
fn failpoint_after_batch(batches: usize) {
    let Ok(v) = std::env::var("IRTDB_FAILPOINT") else { return };
    if v.strip_prefix("abort-after-batch:").and_then(|n| n.parse::<usize>().ok()) == Some(batches) {
        std::process::abort();
    }
    if let Some((n, file)) = v.strip_prefix("pause-after-batch:").and_then(|r| r.split_once(':')) {
        if n.parse::<usize>().ok() == Some(batches) {
            let t = std::time::Instant::now();
            while !std::path::Path::new(file).exists() && t.elapsed().as_secs() < 120 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

/// The plan of a run being carried out on the collection, counted into its report.
pub(super) struct Apply<'a> {
    pub store: &'a mut Store,
    pub model_id: i64,
    pub report: &'a mut IndexReport,
}

impl Apply<'_> {
    /// Diffs the scanned `files` against the database.
    pub fn plan(&mut self, files: Vec<ScannedFile>, progress: &dyn Progress) -> Result<Plan> {
        let rows = self.store.images()?;
        let embedded: HashSet<i64> =
            self.store.descriptor_ids(self.model_id)?.into_iter().collect();
        let plan = plan(files, &rows, &embedded, progress);
        let r = &mut *self.report;
        r.unchanged = plan.unchanged;
        r.failed = plan.failed_before + plan.unreadable.len();
        r.moved = plan.moves.len();
        r.same_content = plan.copies.len() + plan.followers.len();
        Ok(plan)
    }

    /// Moves first (rows keep their ids and descriptors), then copies of descriptors for files
    /// whose content is already embedded, and only then the deletions: a vanished row can be
    /// the source of a copy. Each step is one transaction; a crash between them leaves a state
    /// that the next run's plan completes.
    pub fn edits(&mut self, plan: &Plan) -> Result<()> {
        let (store, model_id) = (&mut *self.store, self.model_id);
        if !plan.moves.is_empty() {
            store.move_images(&plan.moves)?;
        }
        if !plan.copies.is_empty() {
            store.set_meta(META_INDEX_STALE, "1")?;
            let mut updates = Vec::with_capacity(plan.copies.len());
            for (job, source) in &plan.copies {
                let vector = store.descriptor(source.id, model_id)?.ok_or_else(|| {
                    let what = format!("image id {} lost its descriptor during the run", source.id);
                    invalid_data(store.path(), what)
                })?;
                let embedded = Outcome::Embedded(vector);
                updates.push(update(&job.file, job.hash.clone(), source.size, embedded));
            }
            store.commit_batch(model_id, &updates)?;
        }
        if !plan.removed.is_empty() {
            store.set_meta(META_INDEX_STALE, "1")?;
            self.report.removed = store.delete_images(&plan.removed)?;
        }
        store.update_stats(&plan.stats)?;
        if !plan.unreadable.is_empty() {
            store.set_meta(META_INDEX_STALE, "1")?;
            store.commit_batch(model_id, &plan.unreadable)?;
        }
        Ok(())
    }

    /// Embeds `jobs` in batches, one transaction per batch; `open` gives the backbone, called
    /// only when there is something to embed.
    pub fn embed(
        &mut self,
        jobs: Vec<Job>,
        (info, pooling): (&BackboneInfo, Pool),
        open: impl FnOnce() -> Result<LoadedBackbone>,
        opts: &IndexOptions,
        progress: &dyn Progress,
    ) -> Result<()> {
        let total = jobs.len();
        let report = &mut *self.report;
        report.added = jobs.iter().filter(|j| !j.existed).count();
        report.changed = total - report.added;
        if total == 0 {
            return Ok(());
        }
        self.store.set_meta(META_INDEX_STALE, "1")?;
        let backbone = open()?;
        let mut embedder = Embedder::new(backbone, pooling);
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
                let failed = Outcome::Failed(err.to_string());
                updates.push(update(&job.file, job.hash.clone(), None, failed));
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
            self.store.commit_batch(self.model_id, &updates)?;
            batches += 1;
            failpoint_after_batch(batches);
            progress.embedded(updates.len() as u64);
        }
        progress.embed_finish();
        report.embed_seconds = t0.elapsed().as_secs_f64();
        report.images_per_second = report.embedded as f64 / report.embed_seconds.max(1e-9);
        Ok(())
    }

    /// Gives the files that follow an embedded one of this run that file's outcome.
    pub fn followers(&mut self, followers: &[(Job, String)]) -> Result<()> {
        if followers.is_empty() {
            return Ok(());
        }
        self.store.set_meta(META_INDEX_STALE, "1")?;
        let followed = follow(self.store, self.model_id, followers)?;
        self.report.failed +=
            followed.iter().filter(|u| matches!(u.outcome, Outcome::Failed(_))).count();
        self.store.commit_batch(self.model_id, &followed)?;
        Ok(())
    }
}

/// An embedded image whose descriptor a file with the same content gets: its id and size.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source {
    id: i64,
    size: Option<(u32, u32)>,
}

/// What the scan, diffed against the database, asks of this run.
#[derive(Default)]
pub(super) struct Plan {
    /// Files to embed (new content).
    pub(super) jobs: Vec<Job>,
    /// Files with the same content as a job of this run, with that job's path: they get its
    /// outcome afterwards.
    pub(super) followers: Vec<(Job, String)>,
    /// Files whose content an embedded image already has, with that image.
    pub(super) copies: Vec<(Job, Source)>,
    /// Vanished images found again at a new path.
    pub(super) moves: Vec<ImageMove>,
    /// Touched but unchanged files: new size and mtime only.
    pub(super) stats: Vec<StatUpdate>,
    /// Files that could not be read for hashing, recorded as failed.
    pub(super) unreadable: Vec<ImageUpdate>,
    /// Images whose file is gone (and did not move).
    pub(super) removed: Vec<i64>,
    pub(super) unchanged: usize,
    /// Files that failed before and have not changed since.
    pub(super) failed_before: usize,
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
    let mut sources: HashMap<&str, Source> = HashMap::new();
    for r in rows.iter().filter(|r| is_embedded(r)) {
        sources.entry(r.hash.as_str()).or_insert(Source { id: r.id, size: r.width.zip(r.height) });
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
        let source = sources.get(hash.as_str()).copied().filter(|s| Some(s.id) != r.map(|r| r.id));
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
            let what = format!(
                "{}: {leader_path}, with the same content, was not stored",
                f.file.rel_path
            );
            return Err(invalid_data(store.path(), what));
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
