//! `irtdb train`: fine-tune a backbone with the paper's recipe (IRT_L, IRT_R) through a plugin's
//! trainer.
//!
//! The plugin takes one optimisation step at a time (loss, cross-batch memory, AdamW: see
//! `irtdb_core::Trainer`); this module is the loop around it, so that every backend trains the
//! same way:
//!
//! - **data**: labelled images, one sub-folder per class (`--data DIR`), or a collection's images
//!   labelled by their folder. Classes are split, never images: a held-out set of classes
//!   (`--val-data DIR`, or a seeded fraction of the training classes) measures retrieval on
//!   classes the model has not seen, as the benchmarks do.
//! - **sampling**: class-balanced batches, `per_class` images from each of `batch / per_class`
//!   classes (drawn with replacement when a class is small), as is usual for pair losses.
//! - **augmentation**: [`irtdb_image::TrainAugment`] (resize, random crop, flip).
//! - **schedule**: linear warm-up, then cosine decay to zero.
//! - **evaluation**: Recall@1/10 and MAP@R on the held-out classes, leave-one-out, by
//!   [`crate::eval::score_labels`] (definitions in `irtdb_core::metrics`), before training and
//!   every `eval_every` iterations.
//! - **checkpoints**: weights (timm safetensors), a JSON model card beside them (architecture,
//!   heads, preprocessing, pooling, loss and optimiser settings, metrics), and the trainer's state;
//!   `run.json` names the latest complete one, so `--resume` continues exactly where a run
//!   stopped or crashed.
//!
//! Every random choice (classes, images, crops, flips) is a function of the seed and the
//! iteration number, not of a generator's history: a resumed run draws what the original would
//! have drawn, and the first step after a resume has the loss the original had.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use irtdb_core::{BackboneInfo, StepStats, Trainer};
use irtdb_image::{DecodeLimits, TrainAugment};
use ndarray::{Array4, Axis};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analyze::{components_for, cumulative_energy};
use crate::eval::{score_labels, LabelledSet};

/// Files of a training output folder.
pub const RUN_FILE: &str = "run.json";
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The latest weights and card, for `irtdb index --model OUT/model.safetensors`.
pub const MODEL_FILE: &str = "model.safetensors";
/// The weights with the best held-out Recall@1 so far.
pub const BEST_FILE: &str = "best.safetensors";
/// Model card format tag.
pub const CARD_FORMAT: &str = "irtdb-model-card/1";

/// Where the training images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "path")]
pub enum DataSource {
    /// A folder with one sub-folder per class.
    Folder(PathBuf),
    /// A collection database: its images, labelled by folder.
    Collection(PathBuf),
}

/// Everything that defines a training run. Stored in `run.json`, so `--resume` needs nothing
/// else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Plugin name or library path.
    pub plugin: String,
    /// The starting weights (timm-named safetensors).
    pub model: PathBuf,
    pub data: DataSource,
    /// Held-out classes in their own folder; `None`: a fraction of `data`'s classes.
    pub val_data: Option<PathBuf>,
    /// Fraction of `data`'s classes held out when `val_data` is `None` (0: no evaluation).
    pub val_fraction: f64,
    pub out: PathBuf,
    pub iters: u64,
    pub batch: usize,
    /// Images per class in a batch (m).
    pub per_class: usize,
    pub lr: f64,
    /// Linear warm-up iterations.
    pub warmup: u64,
    pub weight_decay: f64,
    /// Contrastive margin β.
    pub beta: f64,
    /// KoLeo weight λ (0: IRT_L).
    pub lambda: f64,
    /// Cross-batch memory size; `None`: the training set's size (the paper), capped at 65 536.
    pub memory: Option<usize>,
    /// Evaluate and checkpoint every this many iterations (and at the end).
    pub eval_every: u64,
    /// Also checkpoint (without evaluating) every this many iterations (1000 from
    /// [`TrainOptions::new`], the CLI's default too); 0: only with evaluations (and runs saved
    /// before the key existed).
    #[serde(default)]
    pub checkpoint_every: u64,
    pub seed: u64,
    /// `auto`, `cpu` or `cuda`.
    pub device: String,
    /// Attention heads when the starting model's name or card does not tell.
    pub heads: Option<usize>,
    /// Preprocessing overrides (JSON, as `irtdb index --preprocess`).
    pub preprocess: Option<serde_json::Value>,
    /// Train-time resize `[H, W]`; `None`: 256/224 of the model's input (the paper's 256).
    pub train_resize: Option<[u32; 2]>,
    /// Train a ViT at this input size (`--input-size`): the starting position embedding is
    /// resampled, and the weights are saved at this size. `None`: the model's own size.
    #[serde(default)]
    pub input_size: Option<[u32; 2]>,
    /// Horizontal flips.
    pub flip: bool,
    /// CPU threads for the plugin (None: its default).
    pub threads: Option<i32>,
    pub limits: DecodeLimits,
}

impl TrainOptions {
    /// The defaults of the paper's category-level recipe, for `model` and `data`.
    pub fn new(plugin: &str, model: &Path, data: DataSource, out: &Path) -> Self {
        TrainOptions {
            plugin: plugin.into(),
            model: model.into(),
            data,
            val_data: None,
            val_fraction: 0.2,
            out: out.into(),
            iters: 2000,
            batch: 64,
            per_class: 4,
            lr: 3e-5,
            warmup: 100,
            weight_decay: 5e-4,
            beta: 0.5,
            lambda: 0.7,
            memory: None,
            eval_every: 500,
            checkpoint_every: 1000,
            seed: 0,
            device: "auto".into(),
            heads: None,
            preprocess: None,
            train_resize: None,
            input_size: None,
            flip: true,
            threads: None,
            limits: DecodeLimits::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(self.batch >= 2, "--batch {}: a pair loss needs at least 2 images", self.batch);
        ensure!(
            self.per_class >= 2 && self.batch.is_multiple_of(self.per_class),
            "--per-class {}: needs ≥ 2 (positives) and to divide --batch {}",
            self.per_class,
            self.batch
        );
        ensure!(self.batch / self.per_class >= 2, "--batch / --per-class must be ≥ 2 classes");
        ensure!(self.lr > 0.0 && self.lr.is_finite(), "--lr {} must be positive", self.lr);
        ensure!(self.eval_every > 0, "--eval-every must be positive");
        ensure!(
            (0.0..1.0).contains(&self.val_fraction),
            "--val-fraction {} must be in [0, 1)",
            self.val_fraction
        );
        Ok(())
    }
}

/// Learning rate at iteration `it` (0-based): linear warm-up from `lr / warmup` to `lr` over
/// `warmup` iterations, then cosine decay to 0 at `iters`.
pub fn learning_rate(it: u64, iters: u64, lr: f64, warmup: u64) -> f64 {
    if it < warmup {
        return lr * (it + 1) as f64 / warmup as f64;
    }
    let span = iters.saturating_sub(warmup).max(1);
    let t = (it - warmup).min(span) as f64 / span as f64;
    0.5 * lr * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Held-out retrieval scores at one iteration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub iteration: u64,
    pub recall_at_1: f64,
    pub recall_at_10: f64,
    pub map_at_r: f64,
    pub queries: u64,
    /// Principal components holding 90 % of the held-out descriptors' variance, interpolated
    /// between whole components: how spread the embedding is (contrastive training lowers it,
    /// KoLeo raises it again; shared/PAPER.md).
    pub components_90: Option<f64>,
}

/// Mean step statistics over an interval, for the log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    pub iteration: u64,
    pub loss: f64,
    pub contrastive: f64,
    pub koleo: f64,
    pub lr: f64,
    pub images_per_second: f64,
}

/// `run.json`: the options, how far the run got, and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub options: TrainOptions,
    /// Iterations completed (and saved in `checkpoint`).
    pub iteration: u64,
    /// The latest complete checkpoint's weights, relative to the output folder.
    pub checkpoint: Option<String>,
    pub evals: Vec<EvalPoint>,
    pub losses: Vec<LossPoint>,
    pub best: Option<EvalPoint>,
    /// Training images that could not be decoded (skipped; another image of the class was used).
    pub bad_images: BTreeMap<String, String>,
    /// Seconds spent training, summed over resumes.
    pub train_seconds: f64,
}

/// What `irtdb train` reports at the end.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub out: PathBuf,
    #[serde(serialize_with = "crate::lossy::path")]
    pub model: PathBuf,
    #[serde(serialize_with = "crate::lossy::opt_path")]
    pub best: Option<PathBuf>,
    pub architecture: String,
    pub provider: String,
    pub train_classes: usize,
    pub train_images: usize,
    pub val_classes: usize,
    pub val_images: usize,
    pub iterations: u64,
    pub resumed_from: Option<u64>,
    pub first_eval: Option<EvalPoint>,
    pub last_eval: Option<EvalPoint>,
    pub best_eval: Option<EvalPoint>,
    pub images_per_second: f64,
    pub bad_images: usize,
    /// The run was asked to stop ([`TrainProgress::should_stop`]) and saved a checkpoint at
    /// `iterations`, from which `--resume` continues.
    pub interrupted: bool,
}

/// What a training run reports as it goes. Every method has a no-op default.
pub trait TrainProgress {
    fn stage(&self, _message: &str) {}
    fn start(&self, _first: u64, _iters: u64) {}
    fn step(&self, _it: u64, _stats: &StepStats, _lr: f64, _images_per_second: f64) {}
    fn evaluated(&self, _point: &EvalPoint) {}
    fn finish(&self) {}
    /// Polled after every step: true makes the run checkpoint and return early (Ctrl-C).
    fn should_stop(&self) -> bool {
        false
    }
}

/// Progress that reports nothing (the same word as [`crate::index::Silent`]).
#[derive(Debug)]
pub struct Silent;
impl TrainProgress for Silent {}

// ----- data ---------------------------------------------------------------------------------

/// Images with class labels, from a folder with one sub-folder per class. Files directly in
/// the root have no class and are left out.
pub fn load_folder(root: &Path) -> Result<LabelledSet> {
    ensure!(root.is_dir(), "{} is not a folder", root.display());
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
    let root = store.collection_root()?.with_context(|| {
        format!("{} has no collection root: index a folder into it first", db.display())
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
        ensure!(
            n_classes >= classes_per_batch,
            "a batch of {batch} with {per_class} per class needs {classes_per_batch} classes; \
             the training set has {n_classes}: lower --batch or raise --per-class"
        );
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
fn prepare_train_batch(
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
            bail!(
                "no image of the class of {} can be decoded ({} tried): fix or remove the class",
                set.paths[i].display(),
                class.len()
            )
        })
        .collect::<Result<_>>()?;
    Ok((x, failures.into_iter().flatten().collect()))
}

// ----- evaluation ---------------------------------------------------------------------------

/// Leave-one-out Recall@1/10 and MAP@R of the trainer's descriptors on `val`.
fn evaluate(
    trainer: &mut dyn Trainer,
    val: &LabelledSet,
    batch: usize,
    limits: &DecodeLimits,
    it: u64,
) -> Result<EvalPoint> {
    let info = trainer.info().clone();
    let mut descriptors = Vec::with_capacity(val.paths.len() * info.dim);
    let mut labels = Vec::with_capacity(val.paths.len());
    for (paths, ls) in val.paths.chunks(batch).zip(val.labels.chunks(batch)) {
        let prepared = irtdb_image::prepare_batch(paths, &info.preprocess, limits);
        let mut ok = Vec::new();
        for ((t, &l), p) in prepared.into_iter().zip(ls).zip(paths) {
            match t {
                Ok(t) => {
                    ok.push(t);
                    labels.push(l);
                }
                // A broken held-out image is left out of the evaluation (and said so once).
                Err(e) => eprintln!("warning: held-out image {} skipped: {e}", p.display()),
            }
        }
        if ok.is_empty() {
            continue;
        }
        let views: Vec<_> = ok.iter().map(|a| a.view()).collect();
        let x = ndarray::stack(Axis(0), &views).expect("same shapes");
        let z = trainer.embed(x.view())?;
        descriptors.extend(z.iter().copied());
    }
    let (m, _) = score_labels(&descriptors, &labels, None, info.dim, &[1, 10]);
    let r = m.recall();
    let components_90 = cumulative_energy(&descriptors, labels.len(), info.dim)?
        .map(|c| fractional_components(&c, 0.9));
    Ok(EvalPoint {
        iteration: it,
        recall_at_1: r[0].1,
        recall_at_10: r[1].1,
        map_at_r: m.map_at_r(),
        queries: m.scored(),
        components_90,
    })
}

/// The (interpolated) number of components at which the cumulative energy curve reaches
/// `level`: `k − 1 + (level − c[k−2]) / (c[k−1] − c[k−2])` for the first k with `c[k−1] ≥ level`.
pub fn fractional_components(cumulative: &[f64], level: f64) -> f64 {
    let k = components_for(cumulative, &[level])[0].components;
    let before = if k >= 2 { cumulative[k - 2] } else { 0.0 };
    let at = cumulative[k - 1];
    if at <= before {
        return k as f64;
    }
    (k - 1) as f64 + ((level - before) / (at - before)).clamp(0.0, 1.0)
}

// ----- checkpoints --------------------------------------------------------------------------

/// The model card written beside every checkpoint's weights (`<weights>.json`): what the
/// plugins read (`num_heads`, `preprocess`) and what a person wants to know about the weights.
fn model_card(
    opts: &TrainOptions,
    info: &BackboneInfo,
    heads: Option<usize>,
    it: u64,
    eval: Option<&EvalPoint>,
    data: (&LabelledSet, &LabelledSet),
) -> serde_json::Value {
    let pooling = if matches!(info.output, irtdb_core::OutputKind::Pooled)
        && info.architecture.starts_with("resnet")
    {
        "gem"
    } else {
        "cls"
    };
    serde_json::json!({
        "format": CARD_FORMAT,
        "architecture": info.architecture,
        "num_heads": heads,
        "dim": info.dim,
        "preprocess": info.preprocess,
        // The size the weights were trained (and their position embedding saved) at.
        "input_size": info.preprocess.size,
        "pooling": pooling,
        "normalisation": "l2",
        "loss": {
            "contrastive_beta": opts.beta,
            "koleo_lambda": opts.lambda,
            "memory": opts.memory,
            "name": if opts.lambda > 0.0 { "IRT_R (contrastive + XBM + KoLeo)" } else { "IRT_L (contrastive + XBM)" },
        },
        "optimizer": {
            "name": "adamw", "lr": opts.lr, "weight_decay": opts.weight_decay,
            "warmup": opts.warmup, "schedule": "cosine", "batch": opts.batch,
            "per_class": opts.per_class,
        },
        "training": {
            "iteration": it, "iters": opts.iters, "seed": opts.seed,
            "started_from": opts.model, "plugin": opts.plugin,
            "train_classes": data.0.classes, "train_images": data.0.paths.len(),
            "val_classes": data.1.classes, "val_images": data.1.paths.len(),
            "augment": {"resize": opts.train_resize, "flip": opts.flip},
        },
        "metrics": eval,
    })
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    crate::durable::write(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Copies `src` (weights) and its card to `dst` via a temporary name, so a reader never sees a
/// half-written file.
fn publish(src: &Path, dst: &Path) -> Result<()> {
    for (s, d) in [
        (src.to_path_buf(), dst.to_path_buf()),
        (src.with_extension("json"), dst.with_extension("json")),
    ] {
        let tmp = crate::durable::temp_path(&d);
        std::fs::copy(&s, &tmp)
            .with_context(|| format!("copying {} to {}", s.display(), tmp.display()))?;
        crate::durable::commit_file(&tmp, &d)?;
    }
    Ok(())
}

/// `num_heads` of the starting model when the options or its sidecar say (the architecture name
/// tells the rest).
fn source_heads(opts: &TrainOptions) -> Option<usize> {
    opts.heads.or_else(|| irtdb_onnx::sidecar::num_heads_hint(&opts.model))
}

/// Test hook: `IRTDB_FAILPOINT=abort-after-iteration:N` aborts the process right after the
/// checkpoint of iteration N, as a crash would, to test that `--resume` continues exactly.
fn failpoint_abort_after(iteration: u64) {
    if let Ok(v) = std::env::var("IRTDB_FAILPOINT") {
        if v.strip_prefix("abort-after-iteration:").and_then(|n| n.parse::<u64>().ok())
            == Some(iteration)
        {
            std::process::abort();
        }
    }
}

// ----- the loop -----------------------------------------------------------------------------

/// Starts a new run in `opts.out` (which must not hold one already).
pub fn run(opts: TrainOptions, progress: &dyn TrainProgress) -> Result<TrainReport> {
    opts.validate()?;
    let run_file = opts.out.join(RUN_FILE);
    if run_file.exists() {
        bail!(
            "{} already holds a training run ({}): continue it with --resume, or choose another \
             --out",
            opts.out.display(),
            run_file.display()
        );
    }
    let state = RunState {
        options: opts,
        iteration: 0,
        checkpoint: None,
        evals: Vec::new(),
        losses: Vec::new(),
        best: None,
        bad_images: BTreeMap::new(),
        train_seconds: 0.0,
    };
    train_loop(state, None, progress)
}

/// Continues the run in `out`; `iters` extends (or shortens) its length.
pub fn resume(out: &Path, iters: Option<u64>, progress: &dyn TrainProgress) -> Result<TrainReport> {
    let run_file = out.join(RUN_FILE);
    let text = std::fs::read_to_string(&run_file).with_context(|| {
        format!("{} holds no training run to resume (no {RUN_FILE})", out.display())
    })?;
    let mut state: RunState = serde_json::from_str(&text)
        .with_context(|| format!("{} is damaged", run_file.display()))?;
    state.options.out = out.to_path_buf();
    if let Some(n) = iters {
        state.options.iters = n;
    }
    let from = state.iteration;
    train_loop(state, Some(from), progress)
}

fn train_loop(
    mut state: RunState,
    resumed_from: Option<u64>,
    progress: &dyn TrainProgress,
) -> Result<TrainReport> {
    let opts = state.options.clone();
    let out = &opts.out;
    std::fs::create_dir_all(out.join(CHECKPOINT_DIR))
        .with_context(|| format!("creating {}", out.display()))?;

    // Data.
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
    ensure!(
        train.classes >= 2 && !train.paths.is_empty(),
        "the training data has {} classes with {} images: it needs sub-folders (one per class) of \
         images",
        train.classes,
        train.paths.len()
    );
    let sampler = Sampler::new(&train.labels, opts.batch, opts.per_class, opts.seed)?;
    let mut by_class = vec![Vec::new(); train.classes];
    for (i, &l) in train.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    progress.stage(&format!(
        "training on {} images of {} classes; held out: {} images of {} classes",
        train.paths.len(),
        train.classes,
        val.paths.len(),
        val.classes
    ));

    // Trainer: from the starting weights, or the latest checkpoint and its state.
    let memory = opts.memory.unwrap_or(train.paths.len().min(65_536));
    let (weights, trainer_state) = match &state.checkpoint {
        Some(c) => {
            let w = out.join(c);
            (w.clone(), Some(w.with_extension("state")))
        }
        None => (opts.model.clone(), None),
    };
    let heads = source_heads(&opts);
    let mut config = irtdb_plugin_api::TrainerConfig::new(weights);
    config.device = Some(opts.device.clone());
    (config.beta, config.lambda) = (Some(opts.beta), Some(opts.lambda));
    (config.memory, config.weight_decay) = (Some(memory), Some(opts.weight_decay));
    config.backbone.heads = heads;
    config.backbone.preprocess = opts.preprocess.clone();
    config.backbone.threads = opts.threads.map(|t| t.max(0) as usize);
    config.backbone.input_size = opts.input_size;
    let plugin = irtdb_plugin_api::host::Plugin::open(&opts.plugin)?;
    if !plugin.can_train() {
        bail!(
            "plugin '{}' ({}) cannot train; training needs a plugin with the train capability, \
             e.g. --plugin tch-cuda (see `irtdb plugins`)",
            plugin.name(),
            plugin.path().display()
        );
    }
    let mut trainer = plugin.create_trainer(&config)?;
    if let Some(s) = &trainer_state {
        trainer.load_state(s).with_context(|| format!("resuming from {}", s.display()))?;
    }
    let info = trainer.info().clone();
    progress.stage(&format!("model: {}", crate::model::describe(&info)));
    let mut aug = TrainAugment::paper(&info.preprocess);
    if let Some(r) = opts.train_resize {
        aug.resize = r;
    }
    aug.flip = opts.flip;
    aug.validate().map_err(|e| anyhow::anyhow!("--train-resize: {e}"))?;

    let evaluate_now = |trainer: &mut dyn Trainer, it: u64| -> Result<Option<EvalPoint>> {
        if val.paths.is_empty() {
            return Ok(None);
        }
        Ok(Some(evaluate(trainer, &val, opts.batch, &opts.limits, it)?))
    };
    if state.evals.is_empty() {
        progress.stage("evaluating the starting model on the held-out classes");
        if let Some(p) = evaluate_now(&mut trainer, 0)? {
            progress.evaluated(&p);
            state.evals.push(p);
        }
    }

    progress.start(state.iteration, opts.iters);
    let started = Instant::now();
    let seconds_before = state.train_seconds;
    let mut interval = (LossPoint::default(), 0u64, Instant::now());
    let prepare = |it: u64| {
        let (idx, labels) = sampler.batch(it);
        prepare_train_batch(&train, &by_class, &idx, &aug, &opts.limits, opts.seed, it)
            .map(|(x, bad)| (x, labels, bad))
    };
    // The next batch is decoded on rayon's pool while the plugin steps on this one.
    let mut next = (state.iteration < opts.iters).then(|| prepare(state.iteration));
    let mut images_per_second = 0.0;
    let mut interrupted = false;
    while state.iteration < opts.iters {
        let it = state.iteration;
        let (x, labels, bad) = next.take().expect("prepared")?;
        for (p, e) in bad {
            state.bad_images.entry(p.display().to_string()).or_insert(e);
        }
        let lr = learning_rate(it, opts.iters, opts.lr, opts.warmup);
        let t0 = Instant::now();
        let (stats, prepared) = rayon::join(
            || trainer.step(x.view(), &labels, lr as f32),
            || (it + 1 < opts.iters).then(|| prepare(it + 1)),
        );
        let stats = stats.with_context(|| format!("iteration {}", it + 1))?;
        next = prepared;
        let dt = t0.elapsed().as_secs_f64();
        images_per_second = x.dim().0 as f64 / dt.max(1e-9);
        state.iteration = it + 1;
        progress.step(state.iteration, &stats, lr, images_per_second);
        let (acc, n, _) = &mut interval;
        acc.loss += f64::from(stats.loss);
        acc.contrastive += f64::from(stats.contrastive);
        acc.koleo += f64::from(stats.koleo);
        *n += 1;

        let at_end = state.iteration == opts.iters;
        let eval_due = state.iteration.is_multiple_of(opts.eval_every) || at_end;
        let stop = progress.should_stop();
        let checkpoint_due = eval_due
            || stop
            || (opts.checkpoint_every > 0 && state.iteration.is_multiple_of(opts.checkpoint_every));
        if checkpoint_due {
            // The loss log has one point per checkpoint, so a resumed run logs what an
            // uninterrupted one would.
            let (acc, n, since) =
                std::mem::replace(&mut interval, (LossPoint::default(), 0, Instant::now()));
            let nf = n.max(1) as f64;
            state.losses.push(LossPoint {
                iteration: state.iteration,
                loss: acc.loss / nf,
                contrastive: acc.contrastive / nf,
                koleo: acc.koleo / nf,
                lr,
                images_per_second: (n as usize * opts.batch) as f64
                    / since.elapsed().as_secs_f64().max(1e-9),
            });
            let point = if eval_due { evaluate_now(&mut trainer, state.iteration)? } else { None };
            if let Some(p) = &point {
                progress.evaluated(p);
                state.evals.push(p.clone());
            }
            state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
            checkpoint(&mut state, &mut trainer, &info, heads, point.as_ref(), (&train, &val))?;
            failpoint_abort_after(state.iteration);
        }
        if stop && !at_end {
            interrupted = true;
            break;
        }
    }
    progress.finish();

    let model = out.join(MODEL_FILE);
    let best = out.join(BEST_FILE);
    Ok(TrainReport {
        out: out.clone(),
        model,
        best: best.is_file().then_some(best),
        architecture: info.architecture.clone(),
        provider: info.provider.clone(),
        train_classes: train.classes,
        train_images: train.paths.len(),
        val_classes: val.classes,
        val_images: val.paths.len(),
        iterations: state.iteration,
        resumed_from,
        first_eval: state.evals.first().cloned(),
        last_eval: state.evals.last().cloned(),
        best_eval: state.best.clone(),
        images_per_second,
        bad_images: state.bad_images.len(),
        interrupted,
    })
}

/// Writes checkpoint `state.iteration`: weights, card and trainer state under
/// `checkpoints/`, then `run.json` pointing at it (the commit point), then the published
/// copies `model.safetensors` (and `best.safetensors` when Recall@1 improved). Older
/// checkpoints but the previous one are removed.
fn checkpoint(
    state: &mut RunState,
    trainer: &mut dyn Trainer,
    info: &BackboneInfo,
    heads: Option<usize>,
    eval: Option<&EvalPoint>,
    data: (&LabelledSet, &LabelledSet),
) -> Result<()> {
    let out = state.options.out.clone();
    let it = state.iteration;
    let rel = format!("{CHECKPOINT_DIR}/iter-{it:08}.safetensors");
    let weights = out.join(&rel);
    trainer.save_weights(&weights).with_context(|| format!("saving {}", weights.display()))?;
    trainer
        .save_state(&weights.with_extension("state"))
        .with_context(|| format!("saving the trainer state beside {}", weights.display()))?;
    let card = model_card(&state.options, info, heads, it, eval.or(state.evals.last()), data);
    write_json_atomic(&weights.with_extension("json"), &card)?;
    let previous = state.checkpoint.replace(rel);
    let improved = match (eval, &state.best) {
        (Some(e), Some(b)) => e.recall_at_1 > b.recall_at_1,
        (Some(_), None) => true,
        _ => false,
    };
    if improved {
        state.best = eval.cloned();
    }
    write_json_atomic(&out.join(RUN_FILE), state)?;
    publish(&weights, &out.join(MODEL_FILE))?;
    if improved {
        publish(&weights, &out.join(BEST_FILE))?;
    }
    // Keep the previous checkpoint (a crash while writing this one must leave a complete one).
    if let Ok(entries) = std::fs::read_dir(out.join(CHECKPOINT_DIR)) {
        let keep: Vec<String> = [state.checkpoint.as_deref(), previous.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(|c| Path::new(c).file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        for e in entries.flatten() {
            let stem = e.path().file_stem().map(|s| s.to_string_lossy().into_owned());
            if stem.is_some_and(|s| !keep.contains(&s)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_components_interpolate() {
        assert_eq!(fractional_components(&[0.5, 0.8, 1.0], 0.9), 2.5);
        assert_eq!(fractional_components(&[0.95, 1.0], 0.9), 0.9 / 0.95);
        assert_eq!(fractional_components(&[0.5, 0.9, 1.0], 0.9), 2.0);
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lr = |it| learning_rate(it, 110, 1.0, 10);
        assert!((lr(0) - 0.1).abs() < 1e-12);
        assert!((lr(9) - 1.0).abs() < 1e-12);
        assert!((lr(10) - 1.0).abs() < 1e-12);
        assert!((lr(60) - 0.5).abs() < 1e-12);
        assert!(lr(109) < 0.001 && lr(109) > 0.0);
        assert!((1..110).all(|i| i <= 10 || lr(i) <= lr(i - 1)));
        assert_eq!(learning_rate(5, 10, 2.0, 0), 1.0);
    }

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
