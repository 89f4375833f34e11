//! Checkpoints: the weights, their model card and the trainer's state under `checkpoints/`,
//! `run.json` (the commit point), and the published `model.safetensors` / `best.safetensors`.

use std::path::Path;

use crate::error::{Error, Result};
use irtdb_core::{BackboneInfo, Trainer};
use irtdb_onnx::{ModelCard, CARD_FORMAT};
use serde::Serialize;

use super::{EvalPoint, RunState, TrainOptions, BEST_FILE, CHECKPOINT_DIR, MODEL_FILE, RUN_FILE};
use crate::eval::LabelledSet;

/// Writes checkpoint `state.iteration`: weights, card and trainer state under
/// `checkpoints/`, then `run.json` pointing at it (the commit point), then the published
/// copies `model.safetensors` (and `best.safetensors` when Recall@1 improved). Older
/// checkpoints but the previous one are removed.
pub(super) fn checkpoint(
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
    trainer
        .save_weights(&weights)
        .map_err(Error::backend(format!("saving {}", weights.display())))?;
    trainer.save_state(&weights.with_extension("state")).map_err(Error::backend(format!(
        "saving the trainer state beside {}",
        weights.display()
    )))?;
    let card = model_card(&state.options, info, heads, it, eval.or(state.evals.last()), data);
    crate::durable::write(&ModelCard::path_for(&weights), card.to_json().as_bytes())?;
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

/// The model card written beside every checkpoint's weights (`<weights>.json`): what the
/// plugins read (`num_heads`, `preprocess`) and what a person wants to know about the weights.
fn model_card(
    opts: &TrainOptions,
    info: &BackboneInfo,
    heads: Option<usize>,
    it: u64,
    eval: Option<&EvalPoint>,
    data: (&LabelledSet, &LabelledSet),
) -> ModelCard {
    let pooling = if matches!(info.output, irtdb_core::OutputKind::Pooled)
        && info.architecture.starts_with("resnet")
    {
        "gem"
    } else {
        "cls"
    };
    let loss = if opts.lambda > 0.0 {
        "IRT_R (contrastive + XBM + KoLeo)"
    } else {
        "IRT_L (contrastive + XBM)"
    };
    let extra = serde_json::json!({
        "loss": {
            "contrastive_beta": opts.beta,
            "koleo_lambda": opts.lambda,
            "memory": opts.memory,
            "name": loss,
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
    });
    ModelCard {
        format: Some(CARD_FORMAT.into()),
        architecture: Some(info.architecture.clone()),
        num_heads: heads,
        dim: Some(info.dim),
        preprocess: Some(serde_json::to_value(&info.preprocess).expect("serialisable")),
        // The size the weights were trained (and their position embedding saved) at.
        input_size: Some(info.preprocess.size),
        pooling: Some(pooling.into()),
        normalisation: Some("l2".into()),
        random_weights: false,
        extra: match extra {
            serde_json::Value::Object(map) => map,
            _ => unreachable!("an object literal"),
        },
    }
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("run state and cards serialise");
    crate::durable::write(path, text.as_bytes())
}

/// Copies `src` (weights) and its card to `dst` via a temporary name, so a reader never sees a
/// half-written file.
fn publish(src: &Path, dst: &Path) -> Result<()> {
    for (s, d) in [
        (src.to_path_buf(), dst.to_path_buf()),
        (ModelCard::path_for(src), ModelCard::path_for(dst)),
    ] {
        let tmp = crate::durable::temp_path(&d);
        std::fs::copy(&s, &tmp).map_err(Error::io("copy to", &tmp))?;
        crate::durable::commit_file(&tmp, &d)?;
    }
    Ok(())
}

/// `num_heads` of the starting model when the options or its sidecar say (the architecture name
/// tells the rest).
pub(super) fn source_heads(opts: &TrainOptions) -> Option<usize> {
    opts.heads.or_else(|| irtdb_onnx::sidecar::num_heads_hint(&opts.model))
}

/// Test hook: `IRTDB_FAILPOINT=abort-after-iteration:N` aborts the process right after the
/// checkpoint of iteration N, as a crash would, to test that `--resume` continues exactly.
pub(super) fn failpoint_abort_after(iteration: u64) {
    if let Ok(v) = std::env::var("IRTDB_FAILPOINT") {
        if v.strip_prefix("abort-after-iteration:").and_then(|n| n.parse::<u64>().ok())
            == Some(iteration)
        {
            std::process::abort();
        }
    }
}
