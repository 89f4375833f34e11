//! The benchmarks' own files, read as they are distributed: SOP's and CUB's lists, In-Shop's
//! partition file, and the revisited Oxford / Paris ground-truth pickle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Setting};
use irtdb_core::metrics::RevisitedGnd;
use rayon::prelude::*;
use serde::Deserialize;

use super::Protocol;

/// Images with class labels (labels are dense ids `0..classes`).
#[derive(Clone, Debug, Default)]
pub struct LabelledSet {
    pub paths: Vec<PathBuf>,
    pub labels: Vec<u32>,
    pub classes: usize,
}

/// Maps label strings to dense ids in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Labeller(pub(super) HashMap<String, u32>);

impl Labeller {
    pub(super) fn id(&mut self, label: &str) -> u32 {
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
    let message = format!(
        "{} is not a {what} folder: expected {} (give the folder that holds it, as \
         distributed)",
        dir.display(),
        candidates
            .iter()
            .map(|c| dir.join(c).display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    );
    Err(Error::refused(dir, message, &[Setting::Data]))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(Error::io("read", path))
}

/// Fails, naming a few, if any of `paths` is not a file.
fn check_exist(paths: &[PathBuf], listed_in: &Path) -> Result<()> {
    let missing: Vec<&PathBuf> = paths.par_iter().filter(|p| !p.is_file()).collect();
    if !missing.is_empty() {
        let first: Vec<String> = missing.iter().take(3).map(|p| p.display().to_string()).collect();
        let message = format!(
            "{} of the {} images listed in {} are missing (first: {}); the protocol needs every \
             one of them: check that the images were extracted beside the list",
            missing.len(),
            paths.len(),
            listed_in.display(),
            first.join(", ")
        );
        return Err(Error::input(listed_in, message));
    }
    Ok(())
}

fn bad_line(file: &Path, line_no: usize, expected: &str, line: &str) -> Error {
    let message = format!(
        "{}:{}: expected `{expected}`, found {line:?}; is this the file as distributed?",
        file.display(),
        line_no + 1
    );
    Error::input(file, message)
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
    if set.paths.is_empty() {
        let message = format!("{} lists no images", list.display());
        return Err(Error::input(&list, message));
    }
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
    if !labels_file.is_file() {
        let message = format!(
            "{} is missing: CUB-200-2011 lists each image's class there (expected beside {})",
            labels_file.display(),
            images.display()
        );
        return Err(Error::input(&labels_file, message));
    }
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
        let name = names.get(*id).ok_or_else(|| {
            let message = format!(
                "{}:{}: image {id} is not listed in {}",
                labels_file.display(),
                no + 1,
                images.display()
            );
            Error::input(&labels_file, message)
        })?;
        set.labels.push(labeller.id(class));
        set.paths.push(root.join("images").join(name));
    }
    if set.paths.is_empty() {
        let message = format!("{} has no image of the test classes 101–200", labels_file.display());
        return Err(Error::input(&labels_file, message));
    }
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
        if d != rows {
            let message = format!("{} declares {d} images on its first line but lists {rows}: the file is truncated or \
             not the one distributed", list.display());
            return Err(Error::input(&list, message));
        }
    }
    if set.queries.paths.is_empty() || set.gallery.paths.is_empty() {
        let message = format!(
            "{} has no query or no gallery images (evaluation_status must be query / gallery)",
            list.display()
        );
        return Err(Error::input(&list, message));
    }
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
    let truth = parse_gnd_pickle(&pkl)?;
    let jpg = |n: &String| root.join("jpg").join(format!("{n}.jpg"));
    let out = RevisitedSet {
        db: truth.imlist.iter().map(jpg).collect(),
        queries: truth.qimlist.iter().map(jpg).collect(),
        bbx: truth.gnd.iter().map(|g| g.bbx).collect(),
        gnd: truth
            .gnd
            .into_iter()
            .map(|g| RevisitedGnd { easy: g.easy, hard: g.hard, junk: g.junk })
            .collect(),
    };
    let all: Vec<PathBuf> = out.db.iter().chain(&out.queries).cloned().collect();
    check_exist(&all, &pkl)?;
    Ok(out)
}

/// The revisited ground truth as revisitop pickles it: the database and query image names, and
/// per query its box and the database indices of its easy, hard and junk images.
#[derive(Clone, Debug, Deserialize)]
pub struct GroundTruth {
    pub imlist: Vec<String>,
    pub qimlist: Vec<String>,
    pub gnd: Vec<QueryTruth>,
}

/// One query's entry of [`GroundTruth::gnd`]; absent lists are empty, an absent box is `None`.
#[derive(Clone, Debug, Deserialize)]
pub struct QueryTruth {
    /// `[x1, y1, x2, y2]` in pixels of the query image.
    #[serde(default)]
    pub bbx: Option<[f64; 4]>,
    #[serde(default)]
    pub easy: Vec<usize>,
    #[serde(default)]
    pub hard: Vec<usize>,
    #[serde(default)]
    pub junk: Vec<usize>,
}

/// Parses the revisited ground-truth pickle and checks that it is consistent (one `gnd` entry
/// per query, every index within `imlist`); every error names the file.
pub fn parse_gnd_pickle(pkl: &Path) -> Result<GroundTruth> {
    let bytes = std::fs::read(pkl).map_err(Error::io("read", pkl))?;
    let options = serde_pickle::DeOptions::new().decode_strings();
    let truth: GroundTruth = serde_pickle::from_slice(&bytes, options).map_err(|e| {
        let message = format!(
            "{}: {e}; expected revisitop's dict of `imlist`, `qimlist` and `gnd` (one dict per \
             query: `bbx` [x1, y1, x2, y2], `easy`, `hard`, `junk` index lists) in plain lists \
             and numbers (numpy arrays are not supported: re-save it with lists)",
            pkl.display()
        );
        Error::input(pkl, message)
    })?;
    if truth.gnd.len() != truth.qimlist.len() {
        let message = format!(
            "{}: `gnd` has {} entries but `qimlist` {} queries",
            pkl.display(),
            truth.gnd.len(),
            truth.qimlist.len()
        );
        return Err(Error::input(pkl, message));
    }
    for (q, g) in truth.gnd.iter().enumerate() {
        for (key, list) in [("easy", &g.easy), ("hard", &g.hard), ("junk", &g.junk)] {
            if let Some(i) = list.iter().find(|&&i| i >= truth.imlist.len()) {
                let message = format!(
                    "{}: gnd[{q}].{key} refers to image {i} but imlist has {}",
                    pkl.display(),
                    truth.imlist.len()
                );
                return Err(Error::input(pkl, message));
            }
        }
    }
    Ok(truth)
}
