//! Images in, L2-normalised descriptors out.

use std::path::PathBuf;

use crate::error::{Error, Result};
use irtdb_core::{l2_normalise_rows, Backbone, Pool, Pooling};
use irtdb_image::{BatchPipeline, DecodeLimits};
use ndarray::{Array2, ArrayView4};

/// A backbone plus the pooling that turns its features into descriptors.
pub struct Embedder<B: Backbone> {
    pub backbone: B,
    pub pooling: Pool,
    /// How files are prepared: the backbone's own preprocessing, unless the caller sets the
    /// collection's record (whose alpha background wins over a plugin's default).
    pub preprocess: irtdb_core::Preprocess,
}

impl<B: Backbone> std::fmt::Debug for Embedder<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("info", self.backbone.info())
            .field("pooling", &self.pooling)
            .finish()
    }
}

impl<B: Backbone> Embedder<B> {
    pub fn new(backbone: B, pooling: Pool) -> Self {
        let preprocess = backbone.info().preprocess.clone();
        Self { backbone, pooling, preprocess }
    }

    /// Forward, pool, L2-normalise: `[B, 3, H, W]` → `[B, D]` unit rows.
    pub fn embed_tensor(&mut self, images: ArrayView4<'_, f32>) -> irtdb_core::Result<Array2<f32>> {
        let features = self.backbone.forward(images)?;
        let mut pooled = self.pooling.pool(&features)?;
        l2_normalise_rows(&mut pooled)?;
        Ok(pooled)
    }
}

/// The result for one input file.
#[derive(Debug)]
pub struct EmbedOutcome {
    pub path: PathBuf,
    pub result: Result<Vec<f32>>,
}

/// Embeds files in batches; decoding the next batch overlaps the current forward pass. Files
/// that fail to decode get their error and do not stop the others. Results in input order.
pub fn embed_files<B: Backbone>(
    embedder: &mut Embedder<B>,
    paths: &[PathBuf],
    batch_size: usize,
    limits: &DecodeLimits,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<EmbedOutcome>> {
    let preprocess = embedder.preprocess.clone();
    let items: Vec<(usize, PathBuf)> = paths.iter().cloned().enumerate().collect();
    let mut slots: Vec<Option<Result<Vec<f32>>>> = (0..paths.len()).map(|_| None).collect();
    for batch in BatchPipeline::new(items, batch_size.max(1), preprocess, *limits) {
        for (i, _path, err) in batch.failed {
            slots[i] = Some(Err(Error::from(err)));
        }
        if !batch.items.is_empty() {
            let descriptors = embedder.embed_tensor(batch.tensor.view())?;
            for ((i, _meta), row) in batch.items.iter().zip(descriptors.rows()) {
                slots[*i] = Some(Ok(row.to_vec()));
            }
        }
        on_batch(batch.items.len());
    }
    Ok(paths
        .iter()
        .zip(slots)
        .map(|(p, r)| EmbedOutcome {
            path: p.clone(),
            result: r.unwrap_or_else(|| {
                Err(Error::Internal { what: format!("{}: not processed", p.display()) })
            }),
        })
        .collect())
}
