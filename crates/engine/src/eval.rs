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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use irtdb_core::metrics::{compute_map_revisited, LabelMetrics, MapResult, RevisitedGnd};
use irtdb_core::{Backbone, BackboneInfo};
use irtdb_image::DecodeLimits;
use irtdb_index::{exact_search, Pca};
use irtdb_store::Store;
use ndarray::{Array4, Axis};
use rayon::prelude::*;
use serde::Serialize;

use crate::collection;
use crate::embed::{embed_files, Embedder};
use crate::index::Progress;
use crate::model::ModelSpec;

/// Ranking entries (one `(row, score)` each) alive at once during a blocked evaluation:
/// 8 Mi × 8 bytes = 64 MiB, whatever the number of queries.
pub const RANKING_BUDGET: usize = 1 << 23;
/// MAP@R needs every query's ranking R deep (R = its class size). Deeper than this it is skipped
/// (with a note): the top-R lists of a collection with one huge class would cost O(N²) memory
/// traffic for a number nobody reads.
pub const MAX_MAP_R_DEPTH: usize = 10_000;
/// The dimension the paper reduces descriptors to.
pub const PCA_DIM: usize = 128;

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
        Protocol::ALL.into_iter().find(|p| p.name() == lower).with_context(|| {
            format!(
                "unknown protocol '{s}': use one of {}",
                Protocol::ALL.map(|p| p.name()).join(", ")
            )
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
    fn new(spec: &ModelSpec, info: &BackboneInfo, random_weights: bool) -> Self {
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
    fn from(r: &MapResult) -> Self {
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

// ----- dataset layouts ----------------------------------------------------------------------

/// Images with class labels (labels are dense ids `0..classes`).
#[derive(Clone, Debug, Default)]
pub struct LabelledSet {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<u32>,
    pub classes: usize,
}

/// Maps label strings to dense ids in order of first appearance.
#[derive(Debug, Default)]
struct Labeller(HashMap<String, u32>);

impl Labeller {
    fn id(&mut self, label: &str) -> u32 {
        let next = self.0.len() as u32;
        *self.0.entry(label.to_string()).or_insert(next)
    }
}

/// The first of `candidates` (relative to `dir`) that is a file, else an error listing them all.
fn find_file(dir: &Path, candidates: &[&str], what: &str) -> Result<PathBuf> {
    for c in candidates {
        let p = dir.join(c);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{} is not a {what} folder: expected {} (pass --data the folder that holds it, as \
         distributed)",
        dir.display(),
        candidates
            .iter()
            .map(|c| dir.join(c).display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Fails, naming a few, if any of `paths` is not a file.
fn check_exist(paths: &[PathBuf], listed_in: &Path) -> Result<()> {
    let missing: Vec<&PathBuf> = paths.par_iter().filter(|p| !p.is_file()).collect();
    if !missing.is_empty() {
        let first: Vec<String> = missing.iter().take(3).map(|p| p.display().to_string()).collect();
        bail!(
            "{} of the {} images listed in {} are missing (first: {}); the protocol needs every \
             one of them: check that the images were extracted beside the list",
            missing.len(),
            paths.len(),
            listed_in.display(),
            first.join(", ")
        );
    }
    Ok(())
}

fn bad_line(file: &Path, line_no: usize, expected: &str, line: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{}:{}: expected `{expected}`, found {line:?}; is this the file as distributed?",
        file.display(),
        line_no + 1
    )
}

/// Stanford Online Products' test split: `Ebay_test.txt`, a header line, then
/// `image_id class_id super_class_id path`; paths relative to the folder holding the list.
pub fn load_sop(dir: &Path) -> Result<LabelledSet> {
    let list = find_file(
        dir,
        &["Ebay_test.txt", "Stanford_Online_Products/Ebay_test.txt"],
        "Stanford Online Products",
    )?;
    let root = list.parent().expect("a file has a parent").to_path_buf();
    let text = read_text(&list)?;
    let mut set = LabelledSet::default();
    let mut labeller = Labeller::default();
    for (no, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() || (no == 0 && fields[0] == "image_id") {
            continue;
        }
        let expected = "image_id class_id super_class_id path";
        if fields.len() != 4 || fields[0].parse::<u64>().is_err() {
            return Err(bad_line(&list, no, expected, line));
        }
        set.labels.push(labeller.id(fields[1]));
        set.paths.push(root.join(fields[3]));
    }
    ensure!(!set.paths.is_empty(), "{} lists no images", list.display());
    set.classes = labeller.0.len();
    check_exist(&set.paths, &list)?;
    Ok(set)
}

/// CUB-200-2011's test split: classes 101–200 of `image_class_labels.txt`, paths from
/// `images.txt` relative to `images/`.
pub fn load_cub(dir: &Path) -> Result<LabelledSet> {
    let images = find_file(dir, &["images.txt", "CUB_200_2011/images.txt"], "CUB-200-2011")?;
    let root = images.parent().expect("a file has a parent").to_path_buf();
    let labels_file = root.join("image_class_labels.txt");
    let mut names: HashMap<String, String> = HashMap::new();
    for (no, line) in read_text(&images)?.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => continue,
            [id, name] => {
                names.insert(id.to_string(), name.to_string());
            }
            _ => return Err(bad_line(&images, no, "image_id image_name", line)),
        }
    }
    ensure!(
        labels_file.is_file(),
        "{} is missing: CUB-200-2011 lists each image's class there (expected beside {})",
        labels_file.display(),
        images.display()
    );
    let mut set = LabelledSet::default();
    let mut labeller = Labeller::default();
    for (no, line) in read_text(&labels_file)?.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let expected = "image_id class_id";
        let [id, class] = fields.as_slice() else {
            return Err(bad_line(&labels_file, no, expected, line));
        };
        let class_no: u32 =
            class.parse().map_err(|_| bad_line(&labels_file, no, expected, line))?;
        if !(101..=200).contains(&class_no) {
            continue;
        }
        let name = names.get(*id).with_context(|| {
            format!(
                "{}:{}: image {id} is not listed in {}",
                labels_file.display(),
                no + 1,
                images.display()
            )
        })?;
        set.labels.push(labeller.id(class));
        set.paths.push(root.join("images").join(name));
    }
    ensure!(
        !set.paths.is_empty(),
        "{} has no image of the test classes 101–200",
        labels_file.display()
    );
    set.classes = labeller.0.len();
    check_exist(&set.paths, &images)?;
    Ok(set)
}

/// In-Shop's query and gallery splits (labels shared between them).
#[derive(Clone, Debug, Default)]
pub struct QueryGallerySet {
    pub queries: LabelledSet,
    pub gallery: LabelledSet,
    pub classes: usize,
}

/// DeepFashion In-Shop: `list_eval_partition.txt` (a count line, a column-name line, then
/// `image_name item_id evaluation_status` with status train / query / gallery); image names are
/// relative to the dataset folder (the one holding `img/`).
pub fn load_inshop(dir: &Path) -> Result<QueryGallerySet> {
    let list = find_file(
        dir,
        &["list_eval_partition.txt", "Eval/list_eval_partition.txt"],
        "In-Shop (DeepFashion In-shop Clothes Retrieval)",
    )?;
    let in_eval = list.parent().is_some_and(|p| p.file_name().is_some_and(|n| n == "Eval"));
    let root =
        if in_eval { dir.to_path_buf() } else { list.parent().expect("parent").to_path_buf() };
    let text = read_text(&list)?;
    let mut set = QueryGallerySet::default();
    let mut labeller = Labeller::default();
    let mut declared: Option<usize> = None;
    let mut rows = 0usize;
    for (no, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if no == 0 && fields.len() == 1 {
            declared = fields[0].parse().ok();
            continue;
        }
        if fields[0] == "image_name" {
            continue;
        }
        let expected = "image_name item_id evaluation_status";
        let [name, item, status] = fields.as_slice() else {
            return Err(bad_line(&list, no, expected, line));
        };
        rows += 1;
        let target = match *status {
            "query" => &mut set.queries,
            "gallery" => &mut set.gallery,
            "train" => continue,
            _ => return Err(bad_line(&list, no, expected, line)),
        };
        target.labels.push(labeller.id(item));
        target.paths.push(root.join(name));
    }
    if let Some(d) = declared {
        ensure!(
            d == rows,
            "{} declares {d} images on its first line but lists {rows}: the file is truncated or \
             not the one distributed",
            list.display()
        );
    }
    ensure!(
        !set.queries.paths.is_empty() && !set.gallery.paths.is_empty(),
        "{} has no query or no gallery images (evaluation_status must be query / gallery)",
        list.display()
    );
    set.classes = labeller.0.len();
    set.queries.classes = set.classes;
    set.gallery.classes = set.classes;
    let all: Vec<PathBuf> = set.queries.paths.iter().chain(&set.gallery.paths).cloned().collect();
    check_exist(&all, &list)?;
    Ok(set)
}

/// A revisited Oxford / Paris dataset: database images, queries with their boxes, ground truth.
#[derive(Clone, Debug, Default)]
pub struct RevisitedSet {
    pub db: Vec<PathBuf>,
    pub queries: Vec<PathBuf>,
    /// `[x1, y1, x2, y2]` per query, in pixels of the query image.
    pub bbx: Vec<Option<[f64; 4]>>,
    pub gnd: Vec<RevisitedGnd>,
}

/// Reads `gnd_<name>.pkl` (a Python pickle of a dict with `imlist`, `qimlist`, and `gnd`: one
/// dict per query with `bbx`, `easy`, `hard`, `junk`); images are `jpg/<name>.jpg` beside it.
pub fn load_revisited(dir: &Path, protocol: Protocol) -> Result<RevisitedSet> {
    let name = protocol.name();
    let pkl_name = format!("gnd_{name}.pkl");
    let nested = format!("{name}/{pkl_name}");
    let pkl = find_file(dir, &[&pkl_name, &nested], name)?;
    let root = pkl.parent().expect("a file has a parent").to_path_buf();
    let mut set = parse_gnd_pickle(&pkl)?;
    let jpg = |n: &String| root.join("jpg").join(format!("{n}.jpg"));
    let (imlist, qimlist) = (std::mem::take(&mut set.0), std::mem::take(&mut set.1));
    let out = RevisitedSet {
        db: imlist.iter().map(jpg).collect(),
        queries: qimlist.iter().map(jpg).collect(),
        bbx: set.2,
        gnd: set.3,
    };
    let all: Vec<PathBuf> = out.db.iter().chain(&out.queries).cloned().collect();
    check_exist(&all, &pkl)?;
    Ok(out)
}

type ParsedGnd = (Vec<String>, Vec<String>, Vec<Option<[f64; 4]>>, Vec<RevisitedGnd>);

/// Parses the revisited ground-truth pickle; every error names the file and the field.
pub fn parse_gnd_pickle(pkl: &Path) -> Result<ParsedGnd> {
    use serde_pickle::{HashableValue as H, Value as V};
    let bytes = std::fs::read(pkl).with_context(|| format!("reading {}", pkl.display()))?;
    let value =
        serde_pickle::value_from_slice(&bytes, serde_pickle::DeOptions::new().decode_strings())
            .with_context(|| {
                format!(
                "{} is not a readable pickle of plain lists, dicts, strings and numbers (numpy \
                 arrays are not supported: re-save it with lists)",
                pkl.display()
            )
            })?;
    let bad = |what: &str| {
        anyhow::anyhow!("{}: {what}; is this the file revisitop distributes?", pkl.display())
    };
    fn get<'a>(v: &'a V, key: &str) -> Option<&'a V> {
        match v {
            V::Dict(d) => d
                .get(&H::String(key.to_string()))
                .or_else(|| d.get(&H::Bytes(key.as_bytes().to_vec()))),
            _ => None,
        }
    }
    fn items(v: &V) -> Option<&[V]> {
        match v {
            V::List(l) | V::Tuple(l) => Some(l),
            _ => None,
        }
    }
    fn string(v: &V) -> Option<String> {
        match v {
            V::String(s) => Some(s.clone()),
            V::Bytes(b) => String::from_utf8(b.clone()).ok(),
            _ => None,
        }
    }
    fn number(v: &V) -> Option<f64> {
        match v {
            V::I64(i) => Some(*i as f64),
            V::F64(f) => Some(*f),
            V::Int(b) => b.to_string().parse().ok(),
            _ => None,
        }
    }
    let strings = |key: &str| -> Result<Vec<String>> {
        let list =
            get(&value, key).and_then(items).ok_or_else(|| bad(&format!("no list `{key}`")))?;
        list.iter()
            .map(|v| string(v).ok_or_else(|| bad(&format!("`{key}` holds a non-string"))))
            .collect()
    };
    let imlist = strings("imlist")?;
    let qimlist = strings("qimlist")?;
    let gnd_list = get(&value, "gnd").and_then(items).ok_or_else(|| bad("no list `gnd`"))?;
    ensure!(
        gnd_list.len() == qimlist.len(),
        "{}: `gnd` has {} entries but `qimlist` {} queries",
        pkl.display(),
        gnd_list.len(),
        qimlist.len()
    );
    let mut bbx = Vec::with_capacity(gnd_list.len());
    let mut gnd = Vec::with_capacity(gnd_list.len());
    for (q, g) in gnd_list.iter().enumerate() {
        let indices = |key: &str| -> Result<Vec<usize>> {
            let Some(v) = get(g, key) else { return Ok(Vec::new()) };
            let list = items(v).ok_or_else(|| bad(&format!("gnd[{q}].{key} is not a list")))?;
            list.iter()
                .map(|x| {
                    let i = number(x)
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .ok_or_else(|| bad(&format!("gnd[{q}].{key} holds a non-index")))?
                        as usize;
                    ensure!(
                        i < imlist.len(),
                        "{}: gnd[{q}].{key} refers to image {i} but imlist has {}",
                        pkl.display(),
                        imlist.len()
                    );
                    Ok(i)
                })
                .collect()
        };
        ensure!(matches!(g, V::Dict(_)), "{}: gnd[{q}] is not a dict", pkl.display());
        gnd.push(RevisitedGnd {
            easy: indices("easy")?,
            hard: indices("hard")?,
            junk: indices("junk")?,
        });
        bbx.push(match get(g, "bbx") {
            None | Some(V::None) => None,
            Some(v) => {
                let nums: Vec<f64> = items(v).unwrap_or(&[]).iter().filter_map(number).collect();
                let [x1, y1, x2, y2] = nums[..] else {
                    bail!("{}: gnd[{q}].bbx is not four numbers [x1, y1, x2, y2]", pkl.display())
                };
                Some([x1, y1, x2, y2])
            }
        });
    }
    Ok((imlist, qimlist, bbx, gnd))
}

// ----- scoring ------------------------------------------------------------------------------

/// Recall@K and MAP@R of `queries` against `gallery` by exact blocked search.
///
/// With `gallery = None` the evaluation is leave-one-out: the queries are the gallery and each
/// query's own row is removed from its ranking. Returns the accumulated metrics and whether
/// MAP@R was computed (it is skipped beyond [`MAX_MAP_R_DEPTH`]).
pub fn score_labels(
    queries: &[f32],
    query_labels: &[u32],
    gallery: Option<(&[f32], &[u32])>,
    dim: usize,
    ks: &[usize],
) -> (LabelMetrics, bool) {
    score_labels_within(queries, query_labels, gallery, dim, ks, RANKING_BUDGET)
}

/// [`score_labels`] holding at most `budget` ranking entries at once (at least 64 queries' worth).
fn score_labels_within(
    queries: &[f32],
    query_labels: &[u32],
    gallery: Option<(&[f32], &[u32])>,
    dim: usize,
    ks: &[usize],
    budget: usize,
) -> (LabelMetrics, bool) {
    let loo = gallery.is_none();
    let (g, gl) = gallery.unwrap_or((queries, query_labels));
    assert_eq!(queries.len(), query_labels.len() * dim, "score_labels: queries and labels differ");
    assert_eq!(g.len(), gl.len() * dim, "score_labels: gallery and labels differ");
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for &l in gl {
        *counts.entry(l).or_default() += 1;
    }
    let r_of = |l: u32| counts.get(&l).copied().unwrap_or(0).saturating_sub(loo as usize);
    let max_r = query_labels.iter().map(|&l| r_of(l)).max().unwrap_or(0);
    let with_map = max_r <= MAX_MAP_R_DEPTH;
    let depth = ks.iter().copied().max().unwrap_or(1).max(if with_map { max_r } else { 0 }).max(1);
    let k_search = (depth + loo as usize).min(gl.len());
    let mut metrics = LabelMetrics::new(ks);
    if k_search == 0 || query_labels.is_empty() {
        query_labels.iter().for_each(|_| metrics.add_query(&[], 0));
        return (metrics, with_map);
    }
    let block = (budget / k_search).clamp(64, 16_384) / 64 * 64;
    for (b, chunk) in queries.chunks(block * dim).enumerate() {
        let results = exact_search(g, dim, chunk, k_search);
        // In query order, one query at a time: the sums (and so the printed digits) do not
        // depend on thread scheduling, and this is cheap next to the search.
        let mut relevant = Vec::with_capacity(depth);
        for (qi, hits) in results.iter().enumerate() {
            let q = b * block + qi;
            let label = query_labels[q];
            relevant.clear();
            relevant.extend(
                hits.iter()
                    .filter(|&&(row, _)| !(loo && row as usize == q))
                    .take(depth)
                    .map(|&(row, _)| gl[row as usize] == label),
            );
            metrics.add_query(&relevant, r_of(label));
        }
    }
    (metrics, with_map)
}

/// The full ranking (all database rows, best first) of each query, by exact search.
pub fn full_rankings(db: &[f32], queries: &[f32], dim: usize) -> Vec<Vec<usize>> {
    let n = db.len() / dim;
    exact_search(db, dim, queries, n)
        .into_iter()
        .map(|hits| hits.into_iter().map(|(r, _)| r as usize).collect())
        .collect()
}

fn label_variant(
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

/// A PCA to [`PCA_DIM`] fitted on `data` (`n × dim`), or why it was not.
fn fit_pca128(data: &[f32], n: usize, dim: usize) -> Result<std::result::Result<Pca, String>> {
    if dim <= PCA_DIM {
        return Ok(Err(format!("PCA-{PCA_DIM} skipped: the descriptor has only {dim} dimensions")));
    }
    if n <= PCA_DIM {
        return Ok(Err(format!(
            "PCA-{PCA_DIM} skipped: {n} images are too few to fit {PCA_DIM} components (need more \
             than {PCA_DIM})"
        )));
    }
    Ok(Ok(Pca::fit(data, n, dim, PCA_DIM, false)?))
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
    for o in outcomes {
        match o.result {
            Ok(v) => data.extend_from_slice(&v),
            Err(e) => failed.push(format!("{}: {e:#}", o.path.display())),
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} images could not be embedded ({}); the protocol needs every image: replace \
             or re-extract them",
            failed.len(),
            paths.len(),
            failed.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
        );
    }
    Ok(data)
}

/// Crops a query image to its box, or says why it cannot be.
fn crop_to_box(img: &image::RgbImage, bbx: [f64; 4], path: &Path) -> Result<image::RgbImage> {
    irtdb_image::crop_to_box(img, bbx).with_context(|| {
        format!(
            "{}: the query box {bbx:?} does not overlap the {}×{} image",
            path.display(),
            img.width(),
            img.height()
        )
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
                let img = irtdb_image::decode_file(path, limits)?
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
        let tensor: Array4<f32> = ndarray::stack(Axis(0), &views)?;
        let d = embedder.embed_tensor(tensor.view())?;
        out.extend(d.iter().copied());
    }
    Ok(out)
}

// ----- the jobs -----------------------------------------------------------------------------

/// Runs a protocol: reads the dataset, embeds it, scores the full descriptor and PCA-128.
pub fn run_protocol(opts: &EvalOptions, progress: &dyn Progress) -> Result<EvalReport> {
    let p = opts.protocol;
    progress.stage(&format!("reading the {} layout in {}", p.name(), opts.data.display()));
    enum Data {
        Loo(LabelledSet),
        QueryGallery(QueryGallerySet),
        Revisited(RevisitedSet),
    }
    let data = match p {
        Protocol::Sop => Data::Loo(load_sop(&opts.data)?),
        Protocol::Cub => Data::Loo(load_cub(&opts.data)?),
        Protocol::Inshop => Data::QueryGallery(load_inshop(&opts.data)?),
        Protocol::ROxford5k | Protocol::RParis6k => Data::Revisited(load_revisited(&opts.data, p)?),
    };
    let (_plugin, backbone) = opts.spec.open()?;
    let info = backbone.info().clone();
    let dim = info.dim;
    let random = crate::model::is_random_weights(&opts.spec.model);
    let mut embedder = Embedder::new(backbone, opts.spec.pooling);
    let mut report = EvalReport {
        protocol: p.name().to_string(),
        source: opts.data.clone(),
        model: Some(ModelSummary::new(&opts.spec, &info, random)),
        images: 0,
        queries: 0,
        gallery: 0,
        classes: 0,
        variants: Vec::new(),
        notes: Vec::new(),
        embed_seconds: 0.0,
    };
    if random {
        report
            .notes
            .push("the model has RANDOM weights: the scores measure colour and layout".into());
    }
    let pca_note = format!(
        "PCA-{PCA_DIM} is fitted on the evaluated descriptors themselves (the paper fits it on \
         the training set)"
    );
    let t = Instant::now();
    match data {
        Data::Loo(set) => {
            progress.stage(&format!("embedding {} images", set.paths.len()));
            let desc = embed_all(&mut embedder, &set.paths, opts.batch, &opts.limits, progress)?;
            report.embed_seconds = t.elapsed().as_secs_f64();
            let n = set.paths.len();
            (report.images, report.queries, report.gallery, report.classes) =
                (n, n, n, set.classes);
            let mut variants = vec![("full".to_string(), dim, desc)];
            if opts.pca {
                match fit_pca128(&variants[0].2, n, dim)? {
                    Ok(pca) => {
                        let projected = pca.project_batch(&variants[0].2, n);
                        variants.push((format!("pca{PCA_DIM}"), PCA_DIM, projected));
                        report.notes.push(pca_note);
                    }
                    Err(note) => report.notes.push(note),
                }
            }
            for (name, d, data) in &variants {
                progress.stage(&format!("scoring {name} ({d}-d), leave-one-out"));
                let t = Instant::now();
                let scored = score_labels(data, &set.labels, None, *d, p.ks());
                report.variants.push(label_variant(name, *d, scored, t.elapsed().as_secs_f64()));
            }
        }
        Data::QueryGallery(set) => {
            let all: Vec<PathBuf> =
                set.queries.paths.iter().chain(&set.gallery.paths).cloned().collect();
            progress.stage(&format!("embedding {} images", all.len()));
            let desc = embed_all(&mut embedder, &all, opts.batch, &opts.limits, progress)?;
            report.embed_seconds = t.elapsed().as_secs_f64();
            let (nq, ng) = (set.queries.paths.len(), set.gallery.paths.len());
            (report.images, report.queries, report.gallery, report.classes) =
                (nq + ng, nq, ng, set.classes);
            let mut variants = vec![("full".to_string(), dim, desc)];
            if opts.pca {
                match fit_pca128(&variants[0].2, nq + ng, dim)? {
                    Ok(pca) => {
                        let projected = pca.project_batch(&variants[0].2, nq + ng);
                        variants.push((format!("pca{PCA_DIM}"), PCA_DIM, projected));
                        report.notes.push(pca_note);
                    }
                    Err(note) => report.notes.push(note),
                }
            }
            for (name, d, data) in &variants {
                progress.stage(&format!("scoring {name} ({d}-d), query against gallery"));
                let t = Instant::now();
                let (q, g) = data.split_at(nq * d);
                let scored = score_labels(
                    q,
                    &set.queries.labels,
                    Some((g, &set.gallery.labels)),
                    *d,
                    p.ks(),
                );
                report.variants.push(label_variant(name, *d, scored, t.elapsed().as_secs_f64()));
            }
        }
        Data::Revisited(set) => {
            progress.stage(&format!("embedding {} database images", set.db.len()));
            let db = embed_all(&mut embedder, &set.db, opts.batch, &opts.limits, progress)?;
            progress
                .stage(&format!("embedding {} queries, cropped to their boxes", set.queries.len()));
            let items: Vec<(PathBuf, Option<[f64; 4]>)> =
                set.queries.iter().cloned().zip(set.bbx.iter().copied()).collect();
            let q = embed_cropped(&mut embedder, &items, opts.batch, &opts.limits)?;
            report.embed_seconds = t.elapsed().as_secs_f64();
            let (n, nq) = (set.db.len(), set.queries.len());
            (report.images, report.queries, report.gallery) = (n + nq, nq, n);
            report.notes.push(format!(
                "queries are cropped to their box, then preprocessed like the database (the \
                 model's own transform, input {}x{}); the paper square-resizes to 224 or 384",
                info.preprocess.size[0], info.preprocess.size[1]
            ));
            let mut variants = vec![("full".to_string(), dim, db, q)];
            if opts.pca {
                match fit_pca128(&variants[0].2, n, dim)? {
                    Ok(pca) => {
                        let pdb = pca.project_batch(&variants[0].2, n);
                        let pq = pca.project_batch(&variants[0].3, nq);
                        variants.push((format!("pca{PCA_DIM}"), PCA_DIM, pdb, pq));
                        report.notes.push(format!(
                            "PCA-{PCA_DIM} is fitted on the database descriptors (the paper fits \
                             it on SfM-120k)"
                        ));
                    }
                    Err(note) => report.notes.push(note),
                }
            }
            for (name, d, db, q) in &variants {
                progress.stage(&format!("ranking the database for {name} ({d}-d)"));
                let t = Instant::now();
                let ranks = full_rankings(db, q, *d);
                let r = compute_map_revisited(&ranks, &set.gnd, &REVISITED_KS);
                report.variants.push(VariantResult {
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
        }
    }
    add_skip_notes(&mut report);
    Ok(report)
}

fn add_skip_notes(report: &mut EvalReport) {
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

/// Leave-one-out Recall@K ([`DB_KS`]) and MAP@R of a collection's stored descriptors, labels
/// from the images' folder names, with and without the collection's PCA.
pub fn run_db(db: &Path) -> Result<EvalReport> {
    let store = Store::open_existing(db)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        bail!(
            "{} has no model yet: index a folder into it first (irtdb index DIR --db …)",
            db.display()
        );
    };
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
    let mut report = EvalReport {
        protocol: "db".into(),
        source: store.path().to_path_buf(),
        model: Some(ModelSummary::new(&stored.spec, &stored.backbone, row.random_weights)),
        images: n,
        queries: n,
        gallery: n,
        classes: labeller.0.len(),
        variants: Vec::new(),
        notes: Vec::new(),
        embed_seconds: 0.0,
    };
    if unlabelled > 0 {
        report.notes.push(format!(
            "{unlabelled} of {} images have no label (they sit directly in the collection's root \
             folder) and are left out",
            d.ids.len()
        ));
    }
    ensure!(
        n >= 2 && report.classes >= 1,
        "{} has {n} labelled images: leave-one-out needs labelled images (the sub-folder names \
         of the indexed folder are the labels)",
        db.display()
    );
    if row.random_weights {
        report
            .notes
            .push("the model has RANDOM weights: the scores measure colour and layout".into());
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
        None => report.notes.push("the collection has no PCA (indexed with --dim 0)".into()),
    }
    add_skip_notes(&mut report);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use irtdb_core::metrics;

    fn random_unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        let mut v: Vec<f32> = (0..n * dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 20_001) as f32 / 10_000.0 - 1.0
            })
            .collect();
        v.chunks_exact_mut(dim).for_each(|r| {
            irtdb_core::l2_normalise(r);
        });
        v
    }

    /// The blocked evaluation against the definitions on full score sorts.
    #[test]
    fn blocked_leave_one_out_matches_full_rankings() {
        let (n, dim) = (700, 8);
        let data = random_unit_rows(n, dim, 3);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 7919) % 90).collect();
        let ks = [1, 2, 4, 8, 100];
        // A budget of one query block at a time: 11 blocks, the last one partial.
        let (blocked, with_map) = score_labels_within(&data, &labels, None, dim, &ks, 1);
        assert!(with_map);
        assert_eq!(blocked, score_labels(&data, &labels, None, dim, &ks).0);
        let rankings: Vec<Vec<usize>> = data
            .chunks_exact(dim)
            .map(|q| {
                let scores: Vec<f32> =
                    data.chunks_exact(dim).map(|r| irtdb_index::dot(q, r)).collect();
                metrics::rank_by_score(&scores)
            })
            .collect();
        let reference = metrics::leave_one_out(&labels, &rankings, &ks);
        assert_eq!(blocked.scored(), reference.scored());
        for ((k, a), (_, b)) in blocked.recall().into_iter().zip(reference.recall()) {
            assert!((a - b).abs() < 1e-12, "R@{k}: {a} vs {b}");
        }
        assert!((blocked.map_at_r() - reference.map_at_r()).abs() < 1e-9);
    }

    #[test]
    fn query_gallery_scores_against_the_gallery_only() {
        // Gallery: two points; the query equals gallery row 1 (label 5).
        let gallery = [1.0f32, 0.0, 0.0, 1.0];
        let (m, _) = score_labels(&[0.0, 1.0], &[5], Some((&gallery, &[4, 5])), 2, &[1]);
        assert_eq!(m.recall(), vec![(1, 1.0)]);
        // A query whose label has no gallery image is skipped.
        let (m, _) = score_labels(&[0.0, 1.0], &[6], Some((&gallery, &[4, 5])), 2, &[1]);
        assert_eq!((m.scored(), m.skipped()), (0, 1));
    }

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
