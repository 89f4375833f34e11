//! `irtdb train`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use irtdb_core::{recipe, StepStats};
use irtdb_engine::train::{
    DataSource, EvalPoint, TrainOptions, TrainProgress, TrainReport, RUN_FILE,
};

/// Fine-tune a backbone for retrieval: contrastive loss + cross-batch memory + KoLeo (IRT_R).
///
/// Training images come from --data (one sub-folder per class) or, without it, from the
/// collection --db (labels = folder names). Held-out classes (--val-data, or --val-fraction of
/// the training classes) are scored with Recall@1/10 before training and every --eval-every
/// iterations. Each evaluation writes a checkpoint to --out: model.safetensors (+ its model card
/// model.json), best.safetensors (best held-out Recall@1), and run.json, from which --resume
/// continues exactly where the run stopped or crashed. Index with the result at once:
/// `irtdb index DIR --plugin tch-cuda --model OUT/model.safetensors` (or the ort-tensorrt plugin).
///
/// Defaults are the paper's category-level recipe (AdamW lr 3e-5, weight decay 5e-4, batch 64,
/// β = 0.5, λ = 0.7, memory = training-set size, resize 256 + random crop 224 + flip), with a
/// linear warm-up and cosine decay.
///
/// Examples:
///   irtdb train --model deit_small.safetensors --data sop/train --val-data sop/test --out runs/sop
///   irtdb train --model deit_small.safetensors --db photos.db --lambda 0 --iters 2000
///   irtdb train --resume --out runs/sop --iters 40000
#[derive(Debug, clap::Args)]
// A repeated option overrides the earlier one (handy for scripts that append settings).
#[command(args_override_self = true, verbatim_doc_comment)]
pub struct Args {
    /// Plugin that trains (it must have the train capability; see `irtdb plugins`).
    #[arg(long, default_value = "tch-cuda")]
    plugin: String,
    /// Starting weights: a timm-named ViT/DeiT (or ResNet) .safetensors file, or
    /// hf-hub:ORG/NAME[@REVISION] (fetched once into the Hugging Face cache).
    #[arg(long, env = "IRTDB_MODEL", required_unless_present = "resume")]
    model: Option<PathBuf>,
    /// Training images, one sub-folder per class. Without it: the collection --db.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The collection whose images train, when --data is not given.
    #[arg(long, env = "IRTDB_DB", default_value = "irtdb.db")]
    db: PathBuf,
    /// Held-out classes, one sub-folder per class (must not share classes with --data).
    #[arg(long)]
    val_data: Option<PathBuf>,
    /// Without --val-data: fraction of the training classes held out for evaluation (0: none).
    #[arg(long, default_value_t = recipe::VAL_FRACTION)]
    val_fraction: f64,
    /// Output folder: checkpoints, model.safetensors, best.safetensors, run.json.
    #[arg(long, default_value = "irtdb-train")]
    out: PathBuf,
    /// Continue the run in --out (its run.json holds every other setting; --iters may extend it).
    // (--model and --db are left out of the conflicts: they may come from IRTDB_MODEL / IRTDB_DB.)
    #[arg(long, conflicts_with_all = [
        "plugin", "data", "val_data", "val_fraction", "batch", "per_class", "lr", "warmup",
        "weight_decay", "beta", "lambda", "memory", "eval_every", "checkpoint_every", "seed", "device", "heads",
        "preprocess", "train_resize", "no_flip", "threads", "input_size", "alpha_background",
    ])]
    resume: bool,
    /// Optimisation steps (default 2000; the paper: 35k for SOP/In-Shop, 2k for CUB).
    #[arg(long)]
    iters: Option<u64>,
    /// Images per step.
    #[arg(long, default_value_t = recipe::BATCH)]
    batch: usize,
    /// Images of each class in a batch (m of the class-balanced sampler).
    #[arg(long, default_value_t = recipe::PER_CLASS)]
    per_class: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = recipe::LR)]
    lr: f64,
    /// Linear warm-up iterations (default: 5 % of --iters).
    #[arg(long)]
    warmup: Option<u64>,
    /// AdamW weight decay (not applied to biases, norms and token/position embeddings).
    #[arg(long, default_value_t = recipe::WEIGHT_DECAY)]
    weight_decay: f64,
    /// Contrastive margin β.
    #[arg(long, default_value_t = recipe::BETA)]
    beta: f64,
    /// KoLeo weight λ (0 trains IRT_L, without the regulariser).
    #[arg(long, default_value_t = recipe::LAMBDA)]
    lambda: f64,
    /// Cross-batch memory size (default: the training-set size, at most 65536; 0: none).
    #[arg(long)]
    memory: Option<usize>,
    /// Evaluate and checkpoint every N iterations (default: --iters / 4).
    #[arg(long)]
    eval_every: Option<u64>,
    /// Also checkpoint every N iterations without evaluating (default: 1000; 0: only with
    /// evaluations). Ctrl-C checkpoints too, then stops.
    #[arg(long)]
    checkpoint_every: Option<u64>,
    /// Seed of every random choice (classes, images, crops, flips): same seed, same run.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// auto (CUDA when available), cpu or cuda.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Attention heads, when neither the model's name nor its card says.
    #[arg(long)]
    heads: Option<usize>,
    /// Preprocessing overrides as JSON (as for `irtdb index`); recorded in the model card.
    #[arg(long, value_parser = super::embed::parse_preprocess)]
    preprocess: Option<serde_json::Value>,
    /// Train-time resize before the random crop, e.g. 256 or 256x256 (default: 256/224 of the
    /// model's input size).
    #[arg(long, value_parser = parse_size)]
    train_resize: Option<[u32; 2]>,
    /// Train a ViT at this input size, N or HxW (e.g. 224 from a 518 DINOv2 checkpoint): the
    /// position embedding is resampled as timm does, and the weights are saved at this size.
    #[arg(long, value_parser = super::embed::parse_size)]
    input_size: Option<[u32; 2]>,
    /// What transparent pixels become: white (default), black, gray, #rrggbb or drop; recorded
    /// in the model card, so that collections indexed with the trained model do the same.
    #[arg(long, value_name = "COLOR", value_parser = super::embed::parse_alpha)]
    alpha_background: Option<irtdb_core::AlphaBackground>,
    /// Turn off horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// CPU threads for the plugin.
    #[arg(long)]
    threads: Option<i32>,
    /// Print the summary as JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let parse = |v: &str| v.trim().parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok([parse(h)?, parse(w)?]),
        None => parse(s).map(|v| [v, v]),
    }
}

pub fn run(args: Args) -> Result<()> {
    let bar = TrainBar::new(args.json);
    stop_on_signals()?;
    let report = if args.resume {
        if !args.out.join(RUN_FILE).is_file() {
            bail!(
                "--resume: {} holds no training run (no {RUN_FILE}); start one without --resume",
                args.out.display()
            );
        }
        irtdb_engine::train::resume(&args.out, args.iters, &bar)?
    } else {
        let reference = args.model.clone().expect("clap requires --model without --resume");
        let (model, _) = irtdb_engine::model::resolve_model(&reference, &bar)?;
        let data = DataSource::choose(args.data.as_deref(), &args.db)?;
        let mut o = TrainOptions::new(&args.plugin, &model, data, &args.out);
        if let Some(iters) = args.iters {
            o.set_iters(iters);
        }
        o.val_data = args.val_data;
        o.val_fraction = args.val_fraction;
        o.batch = args.batch;
        o.per_class = args.per_class;
        o.lr = args.lr;
        if let Some(warmup) = args.warmup {
            o.warmup = warmup;
        }
        o.weight_decay = args.weight_decay;
        o.beta = args.beta;
        o.lambda = args.lambda;
        o.memory = args.memory;
        if let Some(every) = args.eval_every {
            o.eval_every = every;
        }
        if let Some(every) = args.checkpoint_every {
            o.checkpoint_every = every;
        }
        o.seed = args.seed;
        o.device = args.device;
        o.heads = args.heads;
        o.preprocess = args.preprocess;
        if let Some(a) = args.alpha_background {
            super::embed::with_alpha_background(&mut o.preprocess, a);
        }
        o.input_size = args.input_size;
        o.train_resize = args.train_resize;
        o.flip = !args.no_flip;
        o.threads = args.threads;
        irtdb_engine::train::run(o, &bar)?
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        print_report(&report);
    }
    if report.interrupted {
        eprintln!(
            "interrupted: checkpoint saved at iteration {}; continue with `irtdb train --resume \
             --out {}`",
            report.iterations,
            report.out.display()
        );
        std::process::exit(130);
    }
    Ok(())
}

/// Set by the first SIGINT / SIGTERM: the run checkpoints and stops after the step in flight; a
/// second one exits at once with status 130 (the previous checkpoint stays valid).
fn stop_requested() -> &'static Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

fn stop_on_signals() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM] {
        // Order matters: the exit is armed before the flag, so the first signal only sets it.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop_requested().clone())?;
        signal_hook::flag::register(signal, stop_requested().clone())?;
    }
    Ok(())
}

fn pct(v: f64) -> String {
    format!("{:.1}", 100.0 * v)
}

fn print_report(r: &TrainReport) {
    println!(
        "trained {} on {} ({} iterations{}, {} images of {} classes, {:.1} img/s)",
        r.architecture,
        r.provider,
        r.iterations,
        r.resumed_from.map(|i| format!(", resumed at {i}")).unwrap_or_default(),
        r.train_images,
        r.train_classes,
        r.images_per_second
    );
    if let (Some(a), Some(b)) = (&r.first_eval, &r.last_eval) {
        println!(
            "held-out ({} images of {} classes): Recall@1 {} → {}, Recall@10 {} → {}, MAP@R {} → {}",
            r.val_images,
            r.val_classes,
            pct(a.recall_at_1),
            pct(b.recall_at_1),
            pct(a.recall_at_10),
            pct(b.recall_at_10),
            pct(a.map_at_r),
            pct(b.map_at_r)
        );
    }
    if r.bad_images > 0 {
        println!(
            "{} training images could not be decoded and were replaced (listed in {})",
            r.bad_images,
            r.out.join(RUN_FILE).display()
        );
    }
    println!("model: {}", r.model.display());
    if let (Some(b), Some(e)) = (&r.best, &r.best_eval) {
        println!(
            "best:  {} (Recall@1 {} at iteration {})",
            b.display(),
            pct(e.recall_at_1),
            e.iteration
        );
    }
}

/// The training progress bar: iterations, loss parts, learning rate, images per second.
struct TrainBar {
    bar: ProgressBar,
    quiet: bool,
    downloads: super::progress::Downloads,
}

impl TrainBar {
    fn new(quiet: bool) -> Self {
        Self {
            bar: ProgressBar::hidden(),
            quiet,
            downloads: super::progress::Downloads::new(quiet),
        }
    }
}

super::progress::forward_downloads!(TrainBar);

impl TrainProgress for TrainBar {
    fn stage(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }
    fn start(&self, first: u64, iters: u64) {
        if self.quiet {
            return;
        }
        self.bar.set_length(iters);
        self.bar.set_position(first);
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.set_style(
            ProgressStyle::with_template("train {bar:24} {pos}/{len}  {msg}  ETA {eta}")
                .expect("valid template"),
        );
        self.bar.enable_steady_tick(Duration::from_millis(250));
    }
    fn step(&self, it: u64, s: &StepStats, lr: f64, images_per_second: f64) {
        self.bar.set_position(it);
        self.bar.set_message(format!(
            "loss {:.4} (contr {:.4} + koleo {:.3})  lr {lr:.2e}  {images_per_second:.1} img/s",
            s.loss, s.contrastive, s.koleo
        ));
    }
    fn evaluated(&self, p: &EvalPoint) {
        self.stage(&format!(
            "iteration {}: held-out Recall@1 {}  Recall@10 {}  MAP@R {}",
            p.iteration,
            pct(p.recall_at_1),
            pct(p.recall_at_10),
            pct(p.map_at_r)
        ));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
    fn should_stop(&self) -> bool {
        let stop = stop_requested().load(Ordering::SeqCst);
        if stop && !self.quiet {
            self.bar
                .suspend(|| eprintln!("stopping: saving a checkpoint (Ctrl-C again to quit now)"));
        }
        stop
    }
}
