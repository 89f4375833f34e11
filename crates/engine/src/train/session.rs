//! The loop: the trainer opened through its plugin, one step per iteration with the next batch
//! prepared meanwhile, held-out evaluations and checkpoints at their intervals.

use std::time::Instant;

use crate::error::{Error, Result, Setting};
use irtdb_core::{BackboneInfo, StepStats, Trainer};
use irtdb_image::{DecodeLimits, TrainAugment};
use ndarray::{Array4, Axis};

use super::checkpoint::{checkpoint, failpoint_abort_after, source_heads};
use super::data::{self, prepare_train_batch, RunData, Sampler};
use super::{
    learning_rate, EvalPoint, LossPoint, RunState, TrainOptions, TrainProgress, TrainReport,
    BEST_FILE, CHECKPOINT_DIR, MODEL_FILE,
};
use crate::analyze::{components_for, cumulative_energy};
use crate::eval::{score_labels, LabelledSet};

/// Runs (or continues) the run `state` describes up to its `iters`, checkpointing as it goes.
pub(super) fn train_loop(
    mut state: RunState,
    resumed_from: Option<u64>,
    progress: &dyn TrainProgress,
) -> Result<TrainReport> {
    let opts = state.options.clone();
    let out = &opts.out;
    std::fs::create_dir_all(out.join(CHECKPOINT_DIR)).map_err(Error::io("create", out))?;
    let data = data::load(&opts)?;
    let (train, val) = (&data.train, &data.val);
    progress.stage(&format!(
        "training on {} images of {} classes; held out: {} images of {} classes",
        train.paths.len(),
        train.classes,
        val.paths.len(),
        val.classes
    ));
    let sampler = Sampler::new(&train.labels, opts.batch, opts.per_class, opts.seed)?;
    let (mut trainer, heads) = open_trainer(&opts, &state, train.paths.len())?;
    let info = trainer.info().clone();
    progress.stage(&format!("model: {}", crate::model::describe(&info)));
    let aug = augmentation(&opts, &info)?;
    if state.evals.is_empty() {
        progress.stage("evaluating the starting model on the held-out classes");
        if let Some(p) = evaluate_held_out(trainer.as_mut(), &data, &opts, 0)? {
            progress.evaluated(&p);
            state.evals.push(p);
        }
    }
    let mut run = Steps {
        batches: Batches { opts: &opts, data: &data, sampler: &sampler, aug: &aug },
        opts: &opts,
        data: &data,
        info: &info,
        heads,
        progress,
        trainer: trainer.as_mut(),
    };
    let (images_per_second, interrupted) = run.steps(&mut state)?;
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

/// The plugin's trainer, created from the starting weights or from the latest checkpoint and
/// its state; with the starting model's `num_heads` when known.
fn open_trainer(
    opts: &TrainOptions,
    state: &RunState,
    train_images: usize,
) -> Result<(Box<dyn Trainer>, Option<usize>)> {
    let memory = opts.memory.unwrap_or(train_images.min(irtdb_core::recipe::MAX_MEMORY));
    let (weights, trainer_state) = match &state.checkpoint {
        Some(c) => {
            let w = opts.out.join(c);
            (w.clone(), Some(w.with_extension("state")))
        }
        None => (opts.model.clone(), None),
    };
    let heads = source_heads(opts);
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
        let message = format!(
            "plugin '{}' ({}) cannot train; training needs a plugin with the train capability, \
             e.g. tch-cuda (see `irtdb plugins`)",
            plugin.name(),
            plugin.path().display()
        );
        return Err(Error::setting(&[Setting::Plugin], message));
    }
    let mut trainer = plugin.create_trainer(&config)?;
    if let Some(s) = &trainer_state {
        trainer.load_state(s).map_err(Error::backend(format!("resuming from {}", s.display())))?;
    }
    Ok((Box::new(trainer), heads))
}

/// The paper's augmentation for the model's input, with the run's resize and flip.
fn augmentation(opts: &TrainOptions, info: &BackboneInfo) -> Result<TrainAugment> {
    let mut aug = TrainAugment::paper(&info.preprocess);
    if let Some(r) = opts.train_resize {
        aug.resize = r;
    }
    aug.flip = opts.flip;
    aug.validate().map_err(|e| Error::setting(&[Setting::TrainResize], e.to_string()))?;
    Ok(aug)
}

/// A prepared batch: images, labels, and the images that failed to decode (replaced).
type Prepared = (Array4<f32>, Vec<i64>, Vec<(std::path::PathBuf, String)>);

/// Mean step statistics since the last checkpoint: their sums, count, and when they started.
struct Interval {
    sum: LossPoint,
    steps: u64,
    since: Instant,
}

impl Interval {
    fn new() -> Self {
        Interval { sum: LossPoint::default(), steps: 0, since: Instant::now() }
    }

    fn add(&mut self, stats: &StepStats) {
        self.sum.loss += f64::from(stats.loss);
        self.sum.contrastive += f64::from(stats.contrastive);
        self.sum.koleo += f64::from(stats.koleo);
        self.steps += 1;
    }

    /// The interval's mean as the loss log's point at `iteration`, and a fresh interval.
    fn close(&mut self, iteration: u64, lr: f64, batch: usize) -> LossPoint {
        let Interval { sum, steps, since } = std::mem::replace(self, Interval::new());
        let nf = steps.max(1) as f64;
        LossPoint {
            iteration,
            loss: sum.loss / nf,
            contrastive: sum.contrastive / nf,
            koleo: sum.koleo / nf,
            lr,
            images_per_second: (steps as usize * batch) as f64
                / since.elapsed().as_secs_f64().max(1e-9),
        }
    }
}

/// Where the batches come from: the sampler's draw, decoded and augmented.
struct Batches<'a> {
    opts: &'a TrainOptions,
    data: &'a RunData,
    sampler: &'a Sampler,
    aug: &'a TrainAugment,
}

impl Batches<'_> {
    /// Iteration `it`'s batch.
    fn prepare(&self, it: u64) -> Result<Prepared> {
        let (opts, data) = (self.opts, self.data);
        let (idx, labels) = self.sampler.batch(it);
        let (x, bad) = prepare_train_batch(
            &data.train,
            &data.by_class,
            &idx,
            self.aug,
            &opts.limits,
            opts.seed,
            it,
        )?;
        Ok((x, labels, bad))
    }
}

/// What the step loop works with.
struct Steps<'a> {
    batches: Batches<'a>,
    opts: &'a TrainOptions,
    data: &'a RunData,
    info: &'a BackboneInfo,
    heads: Option<usize>,
    progress: &'a dyn TrainProgress,
    trainer: &'a mut dyn Trainer,
}

impl Steps<'_> {
    /// Steps from `state.iteration` to the run's end, or until asked to stop (after a
    /// checkpoint). Returns the last step's images per second and whether it was stopped.
    fn steps(&mut self, state: &mut RunState) -> Result<(f64, bool)> {
        let opts = self.opts;
        self.progress.start(state.iteration, opts.iters);
        let started = Instant::now();
        let seconds_before = state.train_seconds;
        let mut interval = Interval::new();
        // The next batch is decoded on rayon's pool while the plugin steps on this one.
        let mut next =
            (state.iteration < opts.iters).then(|| self.batches.prepare(state.iteration));
        let mut images_per_second = 0.0;
        while state.iteration < opts.iters {
            let it = state.iteration;
            let (x, labels, bad) = next.take().expect("prepared")?;
            for (p, e) in bad {
                state.bad_images.entry(p.display().to_string()).or_insert(e);
            }
            let lr = learning_rate(it, opts.iters, opts.lr, opts.warmup);
            let t0 = Instant::now();
            let (batches, trainer) = (&self.batches, &mut *self.trainer);
            let (stats, prepared) = rayon::join(
                || trainer.step(x.view(), &labels, lr as f32),
                || (it + 1 < opts.iters).then(|| batches.prepare(it + 1)),
            );
            let stats = stats.map_err(Error::backend(format!("iteration {}", it + 1)))?;
            next = prepared;
            images_per_second = x.dim().0 as f64 / t0.elapsed().as_secs_f64().max(1e-9);
            state.iteration = it + 1;
            self.progress.step(state.iteration, &stats, lr, images_per_second);
            interval.add(&stats);

            let at_end = state.iteration == opts.iters;
            let eval_due = state.iteration.is_multiple_of(opts.eval_every) || at_end;
            let stop = self.progress.should_stop();
            let checkpoint_due = eval_due
                || stop
                || (opts.checkpoint_every > 0
                    && state.iteration.is_multiple_of(opts.checkpoint_every));
            if checkpoint_due {
                // The loss log has one point per checkpoint, so a resumed run logs what an
                // uninterrupted one would.
                state.losses.push(interval.close(state.iteration, lr, opts.batch));
                state.train_seconds = seconds_before + started.elapsed().as_secs_f64();
                self.checkpoint(state, eval_due)?;
            }
            if stop && !at_end {
                return Ok((images_per_second, true));
            }
        }
        Ok((images_per_second, false))
    }

    /// Evaluates (when due) and writes the checkpoint of `state.iteration`.
    fn checkpoint(&mut self, state: &mut RunState, eval_due: bool) -> Result<()> {
        let point = if eval_due {
            evaluate_held_out(self.trainer, self.data, self.opts, state.iteration)?
        } else {
            None
        };
        if let Some(p) = &point {
            self.progress.evaluated(p);
            state.evals.push(p.clone());
        }
        let data = (&self.data.train, &self.data.val);
        checkpoint(state, self.trainer, self.info, self.heads, point.as_ref(), data)?;
        failpoint_abort_after(state.iteration);
        Ok(())
    }
}

/// [`evaluate`] on the held-out set, if there is one.
fn evaluate_held_out(
    trainer: &mut dyn Trainer,
    data: &RunData,
    opts: &TrainOptions,
    it: u64,
) -> Result<Option<EvalPoint>> {
    if data.val.paths.is_empty() {
        return Ok(None);
    }
    Ok(Some(evaluate(trainer, &data.val, opts.batch, &opts.limits, it)?))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_components_interpolate() {
        assert_eq!(fractional_components(&[0.5, 0.8, 1.0], 0.9), 2.5);
        assert_eq!(fractional_components(&[0.95, 1.0], 0.9), 0.9 / 0.95);
        assert_eq!(fractional_components(&[0.5, 0.9, 1.0], 0.9), 2.0);
    }
}
