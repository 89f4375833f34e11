//! `irtdb eval`: the paper's evaluation protocols, and leave-one-out scores for a collection.
//!
//! Why this module: a retrieval model is only as good as the number it gets on the benchmarks
//! the paper reports (PAPER.md, "Results to aim at"), so irtdb reads the benchmarks' own files as
//! they are distributed, embeds their images with any plugin and model, and scores them with the
//! definitions in [`irtdb_core::metrics`]:
//!
//! - **SOP** (`Ebay_test.txt`), **CUB-200-2011** (`images.txt` + `image_class_labels.txt`,
//!   classes 101–200): every test image queries all the others; Recall@K and MAP@R.
//! - **In-Shop** (`list_eval_partition.txt`): the query split against the gallery split.
//! - **Revisited Oxford / Paris** (`gnd_roxford5k.pkl` / `gnd_rparis6k.pkl`): 70 queries
//!   cropped to their bounding box, mAP and mP@1/5/10 in the Easy / Medium / Hard settings.
//! - **A collection** (`--db`): leave-one-out on the stored descriptors, labels from folder
//!   names, with and without the collection's PCA.
//!
//! Each protocol is scored on the full descriptor and after a PCA to 128 dimensions fitted on
//! the evaluated descriptors themselves (the paper fits it on the training set, which irtdb does
//! not have here; the note in the report says so).
//!
//! Search is exact ([`irtdb_index::exact_search`], blocked): queries go through in blocks sized
//! so that at most [`RANKING_BUDGET`] ranking entries exist at once, and no query × gallery score
//! matrix is ever built, so SOP's 60k × 60k runs in bounded memory.

//!
//! The rooms: [`datasets`] reads the files, [`scoring`] ranks and scores, [`report`] holds what
//! is reported; this module runs the jobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result, Setting};
use irtdb_core::metrics::compute_map_revisited;
use irtdb_core::{Backbone, BackboneInfo};
use irtdb_image::DecodeLimits;
use irtdb_index::Pca;
use irtdb_store::Store;
use ndarray::{Array4, Axis};
use rayon::prelude::*;
use serde::Serialize;

use crate::collection;
use crate::embed::{embed_files, Embedder};
use crate::index::Progress;
use crate::model::ModelSpec;

pub mod datasets;
pub mod report;
pub mod scoring;

pub use datasets::{
    load_cub, load_inshop, load_revisited, load_sop, parse_gnd_pickle, GroundTruth, LabelledSet,
    QueryGallerySet, QueryTruth, RevisitedSet,
};
pub use report::{AtK, EvalReport, ModelSummary, RevisitedScores, RevisitedSetting, VariantResult};
pub use scoring::{full_rankings, score_labels, MAX_MAP_R_DEPTH, PCA_DIM, RANKING_BUDGET};

use datasets::Labeller;
use report::{add_skip_notes, label_variant, RANDOM_WEIGHTS_NOTE};
use scoring::fit_pca128;

/// The evaluation protocols `irtdb eval --protocol` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Stanford Online Products, test split.
    Sop,
    /// CUB-200-2011, classes 101–200.
    Cub,
    /// DeepFashion In-shop Clothes Retrieval, query against gallery.
    Inshop,
    /// Revisited Oxford 5k.
    ROxford5k,
    /// Revisited Paris 6k.
    RParis6k,
}

impl Protocol {
    pub const ALL: [Protocol; 5] =
        [Protocol::Sop, Protocol::Cub, Protocol::Inshop, Protocol::ROxford5k, Protocol::RParis6k];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Sop => "sop",
            Protocol::Cub => "cub",
            Protocol::Inshop => "inshop",
            Protocol::ROxford5k => "roxford5k",
            Protocol::RParis6k => "rparis6k",
        }
    }

    /// The K of Recall@K the paper reports (empty for the revisited protocols, which report
    /// mAP and mP@1/5/10).
    pub fn ks(self) -> &'static [usize] {
        match self {
            Protocol::Sop => &[1, 10, 100, 1000],
            Protocol::Cub => &[1, 2, 4, 8],
            Protocol::Inshop => &[1, 10, 20, 30],
            Protocol::ROxford5k | Protocol::RParis6k => &[],
        }
    }

    pub fn parse(s: &str) -> Result<Protocol> {
        let lower = s.to_ascii_lowercase().replace(['-', '_'], "");
        Protocol::ALL.into_iter().find(|p| p.name() == lower).ok_or_else(|| {
            let message = format!(
                "unknown protocol '{s}': use one of {}",
                Protocol::ALL.map(|p| p.name()).join(", ")
            );
            Error::setting(&[Setting::Protocol], message)
        })
    }
}

/// The K of `irtdb eval --db` (the paper's CUB K plus 10).
pub const DB_KS: [usize; 5] = [1, 2, 4, 8, 10];
/// The k of the revisited protocol's mP@k.
pub const REVISITED_KS: [usize; 3] = [1, 5, 10];

/// Options of a protocol evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    pub protocol: Protocol,
    /// The dataset folder, as distributed.
    pub data: PathBuf,
    pub spec: ModelSpec,
    pub batch: usize,
    /// Also score after a PCA to [`PCA_DIM`] dimensions.
    pub pca: bool,
    pub limits: DecodeLimits,
}

// ----- embedding ----------------------------------------------------------------------------

/// Embeds every file; any failure is an error naming the first few files (a protocol's numbers
/// are meaningless with images missing).
fn embed_all<B: Backbone>(
    embedder: &mut Embedder<B>,
    paths: &[PathBuf],
    batch: usize,
    limits: &DecodeLimits,
    progress: &dyn Progress,
) -> Result<Vec<f32>> {
    progress.embed_start(paths.len() as u64);
    let outcomes = embed_files(embedder, paths, batch, limits, |n| progress.embedded(n as u64))?;
    progress.embed_finish();
    let mut data = Vec::with_capacity(paths.len() * embedder.backbone.info().dim);
    let mut failed = Vec::new();
    let mut first_failed = None;
    for o in outcomes {
        match o.result {
            Ok(v) => data.extend_from_slice(&v),
            Err(e) => {
                failed.push(format!("{}: {e:#}", o.path.display()));
                first_failed.get_or_insert(o.path);
            }
        }
    }
    if !failed.is_empty() {
        let message = format!(
            "{} of {} images could not be embedded ({}); the protocol needs every image: replace \
             or re-extract them",
            failed.len(),
            paths.len(),
            failed.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
        return Err(Error::input(&first_failed.unwrap_or_default(), message));
    }
    Ok(data)
}

/// Crops a query image to its box, or says why it cannot be.
fn crop_to_box(img: &image::RgbImage, bbx: [f64; 4], path: &Path) -> Result<image::RgbImage> {
    irtdb_image::crop_to_box(img, bbx).ok_or_else(|| {
        let message = format!(
            "{}: the query box {bbx:?} does not overlap the {}×{} image",
            path.display(),
            img.width(),
            img.height()
        );
        Error::input(path, message)
    })
}

/// Decodes each file, crops it to its box (if any), preprocesses it with the backbone's own
/// settings and embeds: the query path of the revisited protocols.
pub fn embed_cropped<B: Backbone>(
    embedder: &mut Embedder<B>,
    items: &[(PathBuf, Option<[f64; 4]>)],
    batch: usize,
    limits: &DecodeLimits,
) -> Result<Vec<f32>> {
    let p = embedder.preprocess.clone();
    let mut out = Vec::new();
    for chunk in items.chunks(batch.max(1)) {
        let arrays = chunk
            .par_iter()
            .map(|(path, bbx)| {
                // A bounding box is in the full image's pixels: decode those in full.
                let size = match bbx {
                    Some(_) => irtdb_image::DecodeSize::Full,
                    None => irtdb_image::DecodeSize::for_preprocess(&p),
                };
                let img = irtdb_image::decode_file_sized(path, limits, size)?
                    .flattened(p.alpha_background)
                    .into_owned();
                let img = match bbx {
                    Some(b) => crop_to_box(&img, *b, path)?,
                    None => img,
                };
                Ok(irtdb_image::preprocess_to_array(&img, &p))
            })
            .collect::<Result<Vec<_>>>()?;
        let views: Vec<_> = arrays.iter().map(|a| a.view()).collect();
        let tensor: Array4<f32> = ndarray::stack(Axis(0), &views).map_err(|e| Error::Internal {
            what: format!("query images of unequal shapes ({e})"),
        })?;
        let d = embedder.embed_tensor(tensor.view())?;
        out.extend(d.iter().copied());
    }
    Ok(out)
}

// ----- the jobs -----------------------------------------------------------------------------

/// A protocol's dataset, as its files describe it.
enum Dataset {
    /// Every image queries all the others (SOP, CUB).
    LeaveOneOut(LabelledSet),
    /// A query split against a gallery split (In-Shop).
    QueryGallery(QueryGallerySet),
    /// Cropped queries against a database, with graded ground truth (revisited Oxford / Paris).
    Revisited(RevisitedSet),
}

fn read_dataset(p: Protocol, dir: &Path) -> Result<Dataset> {
    Ok(match p {
        Protocol::Sop => Dataset::LeaveOneOut(load_sop(dir)?),
        Protocol::Cub => Dataset::LeaveOneOut(load_cub(dir)?),
        Protocol::Inshop => Dataset::QueryGallery(load_inshop(dir)?),
        Protocol::ROxford5k | Protocol::RParis6k => Dataset::Revisited(load_revisited(dir, p)?),
    })
}

/// Runs a protocol: reads the dataset, embeds it, scores the full descriptor and PCA-128.
pub fn run_protocol(opts: &EvalOptions, progress: &dyn Progress) -> Result<EvalReport> {
    let p = opts.protocol;
    progress.stage(&format!("reading the {} layout in {}", p.name(), opts.data.display()));
    let data = read_dataset(p, &opts.data)?;
    let (_plugin, backbone) = opts.spec.open()?;
    let info = backbone.info().clone();
    let random = crate::model::is_random_weights(&opts.spec.model);
    let mut job = ProtocolRun {
        opts,
        progress,
        embedder: Embedder::new(backbone, opts.spec.pooling),
        report: EvalReport::new(
            p.name(),
            opts.data.clone(),
            ModelSummary::new(&opts.spec, &info, random),
        ),
        started: Instant::now(),
    };
    if random {
        job.report.notes.push(RANDOM_WEIGHTS_NOTE.into());
    }
    match data {
        Dataset::LeaveOneOut(set) => job.leave_one_out(&set, info.dim)?,
        Dataset::QueryGallery(set) => job.query_gallery(&set, info.dim)?,
        Dataset::Revisited(set) => job.revisited(&set, &info)?,
    }
    let mut report = job.report;
    add_skip_notes(&mut report);
    Ok(report)
}

/// One protocol evaluation in progress: the options, the model, and the report being filled.
struct ProtocolRun<'a, B: Backbone> {
    opts: &'a EvalOptions,
    progress: &'a dyn Progress,
    embedder: Embedder<B>,
    report: EvalReport,
    started: Instant,
}

/// Where the protocol's PCA-128 is fitted (the paper fits it on the training set).
const PCA_ON_EVALUATED: &str =
    "is fitted on the evaluated descriptors themselves (the paper fits it on the training set)";

impl<B: Backbone> ProtocolRun<'_, B> {
    fn embed(&mut self, paths: &[PathBuf]) -> Result<Vec<f32>> {
        let (batch, limits) = (self.opts.batch, &self.opts.limits);
        embed_all(&mut self.embedder, paths, batch, limits, self.progress)
    }

    /// The PCA-128 variant's projection, fitted on the `n` rows of `data`, when asked for and
    /// possible; the report notes where it was fitted, or why it was skipped.
    fn pca(&mut self, data: &[f32], n: usize, dim: usize, fitted: &str) -> Result<Option<Pca>> {
        if !self.opts.pca {
            return Ok(None);
        }
        Ok(match fit_pca128(data, n, dim)? {
            Ok(pca) => {
                self.report.notes.push(format!("PCA-{PCA_DIM} {fitted}"));
                Some(pca)
            }
            Err(note) => {
                self.report.notes.push(note);
                None
            }
        })
    }

    /// The full descriptors of `n` images and, when fitted, their PCA-128 projection.
    fn variants(&mut self, desc: Vec<f32>, n: usize, dim: usize) -> Result<Vec<Variant>> {
        let pca = self.pca(&desc, n, dim, PCA_ON_EVALUATED)?;
        let projected =
            pca.map(|p| Variant::new(format!("pca{PCA_DIM}"), PCA_DIM, p.project_batch(&desc, n)));
        Ok([Some(Variant::new("full".into(), dim, desc)), projected]
            .into_iter()
            .flatten()
            .collect())
    }

    fn leave_one_out(&mut self, set: &LabelledSet, dim: usize) -> Result<()> {
        self.progress.stage(&format!("embedding {} images", set.paths.len()));
        let desc = self.embed(&set.paths)?;
        let r = &mut self.report;
        r.embed_seconds = self.started.elapsed().as_secs_f64();
        let n = set.paths.len();
        (r.images, r.queries, r.gallery, r.classes) = (n, n, n, set.classes);
        for v in self.variants(desc, n, dim)? {
            self.progress.stage(&format!("scoring {} ({}-d), leave-one-out", v.name, v.dim));
            let t = Instant::now();
            let scored = score_labels(&v.data, &set.labels, None, v.dim, self.opts.protocol.ks());
            let seconds = t.elapsed().as_secs_f64();
            self.report.variants.push(label_variant(&v.name, v.dim, scored, seconds));
        }
        Ok(())
    }

    fn query_gallery(&mut self, set: &QueryGallerySet, dim: usize) -> Result<()> {
        let all: Vec<PathBuf> =
            set.queries.paths.iter().chain(&set.gallery.paths).cloned().collect();
        self.progress.stage(&format!("embedding {} images", all.len()));
        let desc = self.embed(&all)?;
        let r = &mut self.report;
        r.embed_seconds = self.started.elapsed().as_secs_f64();
        let (nq, ng) = (set.queries.paths.len(), set.gallery.paths.len());
        (r.images, r.queries, r.gallery, r.classes) = (nq + ng, nq, ng, set.classes);
        for v in self.variants(desc, nq + ng, dim)? {
            let (name, d) = (&v.name, v.dim);
            self.progress.stage(&format!("scoring {name} ({d}-d), query against gallery"));
            let t = Instant::now();
            let (q, g) = v.data.split_at(nq * d);
            let gallery = Some((g, set.gallery.labels.as_slice()));
            let scored = score_labels(q, &set.queries.labels, gallery, d, self.opts.protocol.ks());
            let seconds = t.elapsed().as_secs_f64();
            self.report.variants.push(label_variant(name, d, scored, seconds));
        }
        Ok(())
    }

    fn revisited(&mut self, set: &RevisitedSet, info: &BackboneInfo) -> Result<()> {
        self.progress.stage(&format!("embedding {} database images", set.db.len()));
        let db = self.embed(&set.db)?;
        let (n, nq) = (set.db.len(), set.queries.len());
        self.progress.stage(&format!("embedding {nq} queries, cropped to their boxes"));
        let items: Vec<(PathBuf, Option<[f64; 4]>)> =
            set.queries.iter().cloned().zip(set.bbx.iter().copied()).collect();
        let (batch, limits) = (self.opts.batch, &self.opts.limits);
        let q = embed_cropped(&mut self.embedder, &items, batch, limits)?;
        let r = &mut self.report;
        r.embed_seconds = self.started.elapsed().as_secs_f64();
        (r.images, r.queries, r.gallery) = (n + nq, nq, n);
        r.notes.push(format!(
            "queries are cropped to their box, then preprocessed like the database (the model's \
             own transform, input {}x{}); the paper square-resizes to 224 or 384",
            info.preprocess.size[0], info.preprocess.size[1]
        ));
        let on_db = "is fitted on the database descriptors (the paper fits it on SfM-120k)";
        let mut variants = vec![("full".to_string(), info.dim, db, q)];
        if let Some(pca) = self.pca(&variants[0].2, n, info.dim, on_db)? {
            let (pdb, pq) =
                (pca.project_batch(&variants[0].2, n), pca.project_batch(&variants[0].3, nq));
            variants.push((format!("pca{PCA_DIM}"), PCA_DIM, pdb, pq));
        }
        for (name, d, db, q) in &variants {
            self.progress.stage(&format!("ranking the database for {name} ({d}-d)"));
            let t = Instant::now();
            let ranks = full_rankings(db, q, *d);
            let r = compute_map_revisited(&ranks, &set.gnd, &REVISITED_KS);
            self.report.variants.push(VariantResult {
                name: name.clone(),
                dim: *d,
                recall: Vec::new(),
                map_at_r: None,
                scored_queries: nq - r.medium.n_empty,
                skipped_queries: r.medium.n_empty,
                revisited: Some(RevisitedScores {
                    easy: RevisitedSetting::from(&r.easy),
                    medium: RevisitedSetting::from(&r.medium),
                    hard: RevisitedSetting::from(&r.hard),
                }),
                search_seconds: t.elapsed().as_secs_f64(),
            });
        }
        Ok(())
    }
}

/// One descriptor variant to score: its name, dimension and rows.
struct Variant {
    name: String,
    dim: usize,
    data: Vec<f32>,
}

impl Variant {
    fn new(name: String, dim: usize, data: Vec<f32>) -> Self {
        Variant { name, dim, data }
    }
}

/// Leave-one-out Recall@K ([`DB_KS`]) and MAP@R of a collection's stored descriptors, labels
/// from the images' folder names, with and without the collection's PCA.
pub fn run_db(db: &Path, precision: Option<crate::model::Precision>) -> Result<EvalReport> {
    let store = Store::open_existing(db)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        let message = format!(
            "{} has no model yet: index a folder into it first (`irtdb index DIR`)",
            db.display()
        );
        return Err(Error::refused(db, message, &[]));
    };
    collection::check_precision(db, &stored, precision)?;
    let d = store.descriptors(row.id)?;
    let labels: HashMap<i64, Option<String>> =
        store.images()?.into_iter().map(|r| (r.id, r.label)).collect();
    let mut labeller = Labeller::default();
    let mut data = Vec::new();
    let mut ids = Vec::new();
    let mut unlabelled = 0usize;
    for (i, id) in d.ids.iter().enumerate() {
        match labels.get(id).and_then(|l| l.as_deref()) {
            Some(l) => {
                ids.push(labeller.id(l));
                data.extend_from_slice(&d.data[i * d.dim..(i + 1) * d.dim]);
            }
            None => unlabelled += 1,
        }
    }
    let n = ids.len();
    let model = ModelSummary::new(&stored.spec, &stored.backbone, row.random_weights);
    let mut report = EvalReport::new("db", store.path().to_path_buf(), model);
    (report.images, report.queries, report.gallery) = (n, n, n);
    report.classes = labeller.0.len();
    if unlabelled > 0 {
        report.notes.push(format!(
            "{unlabelled} of {} images have no label (they sit directly in the collection's root \
             folder) and are left out",
            d.ids.len()
        ));
    }
    if n < 2 || report.classes < 1 {
        let message = format!(
            "{} has {n} labelled images: leave-one-out needs labelled images (the sub-folder \
             names of the indexed folder are the labels)",
            db.display()
        );
        return Err(Error::refused(db, message, &[]));
    }
    if row.random_weights {
        report.notes.push(RANDOM_WEIGHTS_NOTE.into());
    }
    let t = Instant::now();
    let scored = score_labels(&data, &ids, None, d.dim, &DB_KS);
    report.variants.push(label_variant("full", d.dim, scored, t.elapsed().as_secs_f64()));
    let pca = match store.current_generation(row.id)? {
        Some(g) => collection::generation_pca(&store, &g)?,
        None => store.latest_pca(row.id)?.map(|(_, r)| collection::pca_from_record(r)),
    };
    match pca {
        Some(p) => {
            let t = Instant::now();
            let projected = p.project_batch(&data, n);
            let scored = score_labels(&projected, &ids, None, p.out_dim, &DB_KS);
            report.variants.push(label_variant(
                "collection_pca",
                p.out_dim,
                scored,
                t.elapsed().as_secs_f64(),
            ));
        }
        None => report.notes.push("the collection has no PCA (indexed without one)".into()),
    }
    add_skip_notes(&mut report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_parse() {
        assert_eq!(Protocol::parse("rOxford5k").unwrap(), Protocol::ROxford5k);
        assert_eq!(Protocol::parse("in-shop").unwrap(), Protocol::Inshop);
        let e = Protocol::parse("oxford").unwrap_err().to_string();
        assert!(e.contains("sop, cub, inshop, roxford5k, rparis6k"), "{e}");
    }

    #[test]
    fn a_box_outside_the_image_is_an_error_naming_the_file() {
        let img = image::RgbImage::new(10, 8);
        let e = crop_to_box(&img, [20.0, 0.0, 30.0, 5.0], Path::new("q.jpg")).unwrap_err();
        assert!(e.to_string().contains("q.jpg"), "{e}");
    }
}
