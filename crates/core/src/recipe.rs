//! The paper's category-level training recipe (IRT_R: contrastive loss + cross-batch memory +
//! KoLeo, AdamW): the one place its defaults are stated. The CLI shows them as its defaults,
//! the engine's training options start from them, and the tch plugin's trainer falls back to
//! them for keys its configuration leaves out.

/// Optimisation steps of a run (the paper: 35k for SOP / In-Shop, 2k for CUB).
pub const ITERS: u64 = 2000;
/// Images per step.
pub const BATCH: usize = 64;
/// Images of each class in a batch (m of the class-balanced sampler).
pub const PER_CLASS: usize = 4;
/// Peak learning rate (AdamW).
pub const LR: f64 = 3e-5;
/// AdamW weight decay (not applied to biases, norms and token/position embeddings).
pub const WEIGHT_DECAY: f64 = 5e-4;
/// Contrastive margin β.
pub const BETA: f64 = 0.5;
/// KoLeo weight λ (0 trains IRT_L, without the regulariser).
pub const LAMBDA: f64 = 0.7;
/// Largest cross-batch memory when its size is left to the training set's size.
pub const MAX_MEMORY: usize = 65_536;
/// Fraction of the training classes held out for evaluation when no held-out folder is given.
pub const VAL_FRACTION: f64 = 0.2;
/// Iterations between checkpoints that do not evaluate.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// Linear warm-up iterations of a run of `iters`: 5 % of it.
pub fn warmup(iters: u64) -> u64 {
    iters / 20
}

/// Iterations between held-out evaluations of a run of `iters`: a quarter of it (at least 1).
pub fn eval_every(iters: u64) -> u64 {
    (iters / 4).max(1)
}
