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
//!
//! The rooms: [`data`] (images, class split, sampler, batch preparation), `checkpoint`
//! (weights, card, state, `run.json`, publishing), `session` (the loop and its evaluations);
//! this module holds the options and what a run records and reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Setting};
use irtdb_core::{recipe, StepStats};
use irtdb_image::DecodeLimits;
use serde::{Deserialize, Serialize};

mod checkpoint;
pub mod data;
mod session;

pub use data::{load_collection, load_folder, Sampler};
pub use session::fractional_components;

/// Files of a training output folder.
pub const RUN_FILE: &str = "run.json";
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// The latest weights and card, for `irtdb index --model OUT/model.safetensors`.
pub const MODEL_FILE: &str = "model.safetensors";
/// The weights with the best held-out Recall@1 so far.
pub const BEST_FILE: &str = "best.safetensors";
/// Model card format tag.
pub use irtdb_onnx::CARD_FORMAT;

impl DataSource {
    /// The training images: the `data` folder when given, else the collection `db` when it
    /// exists; an error saying what to give otherwise.
    pub fn choose(data: Option<&Path>, db: &Path) -> Result<DataSource> {
        match data {
            Some(d) => Ok(DataSource::Folder(d.to_path_buf())),
            None if db.is_file() => Ok(DataSource::Collection(db.to_path_buf())),
            None => {
                let message = format!(
                    "no training data: give a folder (one sub-folder of images per class), or a \
                     collection whose images sit in class folders ({} does not exist)",
                    db.display()
                );
                Err(Error::setting(&[Setting::Data, Setting::Db], message))
            }
        }
    }
}

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
            val_fraction: recipe::VAL_FRACTION,
            out: out.into(),
            iters: recipe::ITERS,
            batch: recipe::BATCH,
            per_class: recipe::PER_CLASS,
            lr: recipe::LR,
            warmup: recipe::warmup(recipe::ITERS),
            weight_decay: recipe::WEIGHT_DECAY,
            beta: recipe::BETA,
            lambda: recipe::LAMBDA,
            memory: None,
            eval_every: recipe::eval_every(recipe::ITERS),
            checkpoint_every: recipe::CHECKPOINT_EVERY,
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

    /// Sets the run's length and what follows from it unless set otherwise: the warm-up
    /// ([`recipe::warmup`]) and the evaluation interval ([`recipe::eval_every`]).
    pub fn set_iters(&mut self, iters: u64) {
        self.iters = iters;
        self.warmup = recipe::warmup(iters);
        self.eval_every = recipe::eval_every(iters);
    }

    fn validate(&self) -> Result<()> {
        let bad = |settings: &[Setting], message: String| Err(Error::setting(settings, message));
        let (batch, per_class) = (self.batch, self.per_class);
        if batch < 2 {
            return bad(
                &[Setting::Batch],
                format!("a batch of {batch}: a pair loss needs at least 2 images"),
            );
        }
        if per_class < 2 || !batch.is_multiple_of(per_class) {
            let message = format!(
                "{per_class} images per class: needs ≥ 2 (positives) and to divide the batch of {batch}"
            );
            return bad(&[Setting::PerClass, Setting::Batch], message);
        }
        if batch / per_class < 2 {
            let message = format!(
                "a batch of {batch} with {per_class} images per class holds one class: it needs ≥ 2"
            );
            return bad(&[Setting::Batch, Setting::PerClass], message);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(&[Setting::Lr], format!("learning rate {}: must be positive", self.lr));
        }
        if self.eval_every == 0 {
            return bad(
                &[Setting::EvalEvery],
                "evaluating every 0 iterations: must be positive".into(),
            );
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            let message = format!("held-out fraction {}: must be in [0, 1)", self.val_fraction);
            return bad(&[Setting::ValFraction], message);
        }
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

/// Reports nothing.
#[derive(Debug)]
pub struct Silent;
impl TrainProgress for Silent {}

// ----- the loop -----------------------------------------------------------------------------

/// Starts a new run in `opts.out` (which must not hold one already).
pub fn run(opts: TrainOptions, progress: &dyn TrainProgress) -> Result<TrainReport> {
    opts.validate()?;
    let run_file = opts.out.join(RUN_FILE);
    if run_file.exists() {
        let message = format!(
            "{} already holds a training run ({}): continue it, or choose another output folder",
            opts.out.display(),
            run_file.display()
        );
        return Err(Error::refused(&opts.out, message, &[Setting::Resume, Setting::Out]));
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
    session::train_loop(state, None, progress)
}

/// Continues the run in `out`; `iters` extends (or shortens) its length.
pub fn resume(out: &Path, iters: Option<u64>, progress: &dyn TrainProgress) -> Result<TrainReport> {
    let run_file = out.join(RUN_FILE);
    let text = std::fs::read_to_string(&run_file).map_err(|e| {
        let message =
            format!("{} holds no training run to resume (no {RUN_FILE}: {e})", out.display());
        Error::refused(out, message, &[Setting::Out])
    })?;
    let mut state: RunState = serde_json::from_str(&text).map_err(|e| Error::Damaged {
        path: run_file.clone(),
        cause: e.to_string(),
        advice: "restore it from a backup, or start the run again in another folder",
    })?;
    state.options.out = out.to_path_buf();
    if let Some(n) = iters {
        state.options.iters = n;
    }
    let from = state.iteration;
    session::train_loop(state, Some(from), progress)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
