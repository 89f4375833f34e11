//! The training data: labelled images from a folder or a collection, the class split, the
//! class-balanced sampler and the decoding + augmentation of a batch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Setting};
use irtdb_image::{DecodeLimits, TrainAugment};
use ndarray::Array4;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use super::{DataSource, TrainOptions};
use crate::eval::LabelledSet;

/// The images of a run: training and held-out sets (classes split, never images), and the
/// training images' indices by class.
pub(super) struct RunData {
    pub train: LabelledSet,
    pub val: LabelledSet,
    pub by_class: Vec<Vec<usize>>,
}

/// Reads `opts.data` and splits off the held-out classes (`opts.val_data`, or a seeded
/// `opts.val_fraction` of the classes).
pub(super) fn load(opts: &TrainOptions) -> Result<RunData> {
    let all = match &opts.data {
        DataSource::Folder(p) => load_folder(p)?,
        DataSource::Collection(db) => load_collection(db)?,
    };
    let (train, val) = match &opts.val_data {
        Some(v) => {
            let mut train = all;
            relabel(&mut train);
            (train, load_folder(v)?)
        }
        None => split_classes(all, opts.val_fraction, opts.seed),
    };
    if train.classes < 2 || train.paths.is_empty() {
        let message = format!(
            "the training data has {} classes with {} images: it needs sub-folders (one per \
             class) of images",
            train.classes,
            train.paths.len()
        );
        return Err(Error::setting(&[Setting::Data], message));
    }
    let mut by_class = vec![Vec::new(); train.classes];
    for (i, &l) in train.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    Ok(RunData { train, val, by_class })
}

/// Images with class labels, from a folder with one sub-folder per class. Files directly in
/// the root have no class and are left out.
pub fn load_folder(root: &Path) -> Result<LabelledSet> {
    if !root.is_dir() {
        return Err(Error::input(root, format!("{} is not a folder", root.display())));
    }
    let scan = irtdb_image::scan(root, &Default::default());
    let mut by_class: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in scan.files {
        if let Some(label) = f.label {
            // The class is the first folder level: `cat/indoor/1.jpg` is a cat.
            let class = label.split('/').next().unwrap_or(&label).to_string();
            by_class.entry(class).or_default().push(f.abs_path);
        }
    }
    Ok(labelled(by_class))
}

/// A collection's images that were embedded successfully, labelled by their folder.
pub fn load_collection(db: &Path) -> Result<LabelledSet> {
    let store = irtdb_store::Store::open_existing(db)?;
    let root = store.collection_root()?.ok_or_else(|| {
        let message =
            format!("{} has no collection root: index a folder into it first", db.display());
        Error::refused(db, message, &[])
    })?;
    let mut by_class: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for row in store.images()? {
        if let (Some(label), irtdb_store::Status::Ok) = (&row.label, row.status) {
            let class = label.split('/').next().unwrap_or(label).to_string();
            by_class.entry(class).or_default().push(root.join(&row.path));
        }
    }
    Ok(labelled(by_class))
}

fn labelled(by_class: BTreeMap<String, Vec<PathBuf>>) -> LabelledSet {
    let mut set = LabelledSet::default();
    for (id, (_, paths)) in by_class.into_iter().enumerate() {
        for p in paths {
            set.paths.push(p);
            set.labels.push(id as u32);
        }
    }
    set.classes = set.labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    set
}

/// Splits off a seeded `fraction` of the classes (at least 2 when any) as the held-out set.
fn split_classes(set: LabelledSet, fraction: f64, seed: u64) -> (LabelledSet, LabelledSet) {
    let mut classes: Vec<u32> = (0..set.classes as u32).collect();
    classes.shuffle(&mut StdRng::seed_from_u64(seed ^ 0x5EED_C1A5));
    // At least 2 classes on each side (retrieval needs another class to confuse with); fewer
    // than 4 classes in all: nothing is held out.
    let n_val = if fraction > 0.0 && set.classes >= 4 {
        ((set.classes as f64 * fraction).round() as usize).clamp(2, set.classes - 2)
    } else {
        0
    };
    let held: std::collections::HashSet<u32> =
        classes[..n_val.min(classes.len())].iter().copied().collect();
    let (mut train, mut val) = (LabelledSet::default(), LabelledSet::default());
    for (p, &l) in set.paths.into_iter().zip(&set.labels) {
        let s = if held.contains(&l) { &mut val } else { &mut train };
        s.paths.push(p);
        s.labels.push(l);
    }
    relabel(&mut train);
    relabel(&mut val);
    (train, val)
}

/// Renumbers labels densely from 0 in order of first appearance.
fn relabel(set: &mut LabelledSet) {
    let mut map: HashMap<u32, u32> = HashMap::new();
    for l in &mut set.labels {
        let next = map.len() as u32;
        *l = *map.entry(*l).or_insert(next);
    }
    set.classes = map.len();
}

/// A mixing of `(seed, a, b)` into one well-spread `u64` (SplitMix64 finaliser).
fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed
        .wrapping_add(a.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(b.wrapping_mul(0xD1B5_4A32_D192_ED03));

    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Class-balanced batches: `batch / per_class` distinct classes, `per_class` images of each
/// (without replacement while the class has enough, with replacement beyond).
#[derive(Debug)]
pub struct Sampler {
    by_class: Vec<Vec<usize>>,
    per_class: usize,
    classes_per_batch: usize,
    seed: u64,
}

impl Sampler {
    pub fn new(labels: &[u32], batch: usize, per_class: usize, seed: u64) -> Result<Self> {
        let n_classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
        let mut by_class = vec![Vec::new(); n_classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let classes_per_batch = batch / per_class;
        if n_classes < classes_per_batch {
            let message = format!(
                "a batch of {batch} with {per_class} per class needs {classes_per_batch} \
                 classes; the training set has {n_classes}: lower the batch or raise the images \
                 per class"
            );
            return Err(Error::setting(&[Setting::Batch, Setting::PerClass], message));
        }
        Ok(Sampler { by_class, per_class, classes_per_batch, seed })
    }

    /// The image indices and labels of iteration `it`'s batch.
    pub fn batch(&self, it: u64) -> (Vec<usize>, Vec<i64>) {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, it, 1));
        let classes =
            rand::seq::index::sample(&mut rng, self.by_class.len(), self.classes_per_batch);
        let mut idx = Vec::with_capacity(self.classes_per_batch * self.per_class);
        let mut labels = Vec::with_capacity(idx.capacity());
        for c in classes {
            let pool = &self.by_class[c];
            if pool.len() >= self.per_class {
                for j in rand::seq::index::sample(&mut rng, pool.len(), self.per_class) {
                    idx.push(pool[j]);
                }
            } else {
                idx.extend((0..self.per_class).map(|_| pool[rng.random_range(0..pool.len())]));
            }
            labels.extend(std::iter::repeat_n(c as i64, self.per_class));
        }
        (idx, labels)
    }
}

/// A training image that could not be decoded, and why.
type Failure = (PathBuf, String);

/// Decodes and augments a batch in parallel. An image that fails to decode is replaced by the
/// next image of its class that decodes (its failure is returned, to be recorded).
pub(super) fn prepare_train_batch(
    set: &LabelledSet,
    by_class: &[Vec<usize>],
    idx: &[usize],
    aug: &TrainAugment,
    limits: &DecodeLimits,
    seed: u64,
    it: u64,
) -> Result<(Array4<f32>, Vec<Failure>)> {
    let [h, w] = aug.eval.size;
    let background = aug.eval.alpha_background;
    let plane = 3 * h as usize * w as usize;
    let mut x = Array4::<f32>::zeros((idx.len(), 3, h as usize, w as usize));
    let failures: Vec<Vec<Failure>> = x
        .as_slice_mut()
        .expect("contiguous")
        .par_chunks_mut(plane)
        .zip(idx.par_iter().enumerate())
        .map(|(out, (slot, &i))| {
            let class = &by_class[set.labels[i] as usize];
            let start = class.iter().position(|&j| j == i).unwrap_or(0);
            let mut failed = Vec::new();
            for k in 0..class.len() {
                let j = class[(start + k) % class.len()];
                match irtdb_image::decode_file(&set.paths[j], limits) {
                    Ok(img) => {
                        let rgb = img.flattened(background);
                        aug.apply(&rgb, aug.draw(mix(seed, it, 1000 + slot as u64)), out);
                        return Ok(failed);
                    }
                    Err(e) => failed.push((set.paths[j].clone(), e.to_string())),
                }
            }
            let message = format!(
                "no image of the class of {} can be decoded ({} tried): fix or remove the class",
                set.paths[i].display(),
                class.len()
            );
            Err(Error::input(&set.paths[i], message))
        })
        .collect::<Result<_>>()?;
    Ok((x, failures.into_iter().flatten().collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_is_balanced_and_a_function_of_the_iteration() {
        let labels: Vec<u32> = (0..60).map(|i| i % 6).collect();
        let labels = [labels, vec![6, 6]].concat(); // a class of 2, smaller than per_class
        let s = Sampler::new(&labels, 12, 4, 9).unwrap();
        let mut small_seen = false;
        for it in 0..50 {
            let (idx, ys) = s.batch(it);
            assert_eq!(idx.len(), 12);
            let mut counts = HashMap::new();
            for (&i, &y) in idx.iter().zip(&ys) {
                assert_eq!(labels[i] as i64, y);
                *counts.entry(y).or_insert(0) += 1;
            }
            assert_eq!(counts.len(), 3);
            assert!(counts.values().all(|&c| c == 4));
            small_seen |= counts.contains_key(&6);
            // Distinct images within a class whenever the class is big enough.
            for c in counts.keys().filter(|&&c| c != 6) {
                let mut mine: Vec<_> =
                    idx.iter().zip(&ys).filter(|(_, y)| *y == c).map(|(i, _)| *i).collect();
                mine.sort();
                mine.dedup();
                assert_eq!(mine.len(), 4);
            }
            assert_eq!(s.batch(it), (idx, ys));
        }
        assert!(small_seen);
        assert_ne!(s.batch(1), s.batch(2));
        assert!(Sampler::new(&labels, 64, 4, 0).unwrap_err().to_string().contains("16 classes"));
    }

    #[test]
    fn class_split_is_disjoint_and_seeded() {
        let set = LabelledSet {
            paths: (0..100).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
            labels: (0..100).map(|i| i % 10).collect(),
            classes: 10,
        };
        let (train, val) = split_classes(set.clone(), 0.2, 3);
        assert_eq!((train.classes, val.classes), (8, 2));
        assert_eq!((train.paths.len(), val.paths.len()), (80, 20));
        let class_of =
            |p: &PathBuf| p.to_str().unwrap().trim_end_matches(".png").parse::<u32>().unwrap() % 10;
        let tc: std::collections::HashSet<_> = train.paths.iter().map(class_of).collect();
        assert!(val.paths.iter().all(|p| !tc.contains(&class_of(p))));
        let (_, again) = split_classes(set.clone(), 0.2, 3);
        assert_eq!(again.paths, val.paths);
        let (all, none) = split_classes(set, 0.0, 3);
        assert_eq!((all.classes, none.paths.len()), (10, 0));
        // Too few classes to hold any out.
        let three = LabelledSet {
            paths: (0..6).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
            labels: (0..6).map(|i| i % 3).collect(),
            classes: 3,
        };
        let (all, none) = split_classes(three, 0.2, 3);
        assert_eq!((all.classes, none.paths.len()), (3, 0));
    }
}
