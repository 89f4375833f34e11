//! Turning many files into model-ready batches, in parallel and ahead of the model.
//!
//! Decoding and resizing a JPEG costs about as much CPU time as a ViT forward costs GPU time, so
//! the index pipeline must overlap them: [`BatchPipeline`] prepares batch n+1 on a background
//! thread (decoding its images in parallel with rayon) while the caller runs the model on batch
//! n. A file that fails is reported with its error and the caller's id; the rest of its batch
//! still comes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use irtdb_core::Preprocess;
use ndarray::{Array3, Array4};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::decode::{decode_file_sized, DecodeLimits, DecodeSize};
use crate::error::{Error, Result};
use crate::preprocess::preprocess;

/// What is known about a prepared image besides its tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMeta {
    /// Width after EXIF orientation, before any resize.
    pub width: u32,
    /// Height after EXIF orientation, before any resize.
    pub height: u32,
}

/// Decodes and preprocesses one file: a `[3, H, W]` tensor and the image's size.
///
/// A JPEG is decoded at a reduced scale when `p.jpeg_dct_scaling` allows ([`DecodeSize::for_preprocess`]).
pub fn prepare_file(
    path: &Path,
    p: &Preprocess,
    limits: &DecodeLimits,
) -> Result<(Array3<f32>, ImageMeta)> {
    let [h, w] = p.size;
    let mut out = Array3::zeros((3, h as usize, w as usize));
    let meta =
        prepare_into(path, p, limits, out.as_slice_mut().expect("a new array is contiguous"))?;
    Ok((out, meta))
}

/// Decodes and preprocesses every path in parallel (rayon); results are in the order of `paths`.
pub fn prepare_batch(
    paths: &[PathBuf],
    p: &Preprocess,
    limits: &DecodeLimits,
) -> Vec<Result<Array3<f32>>> {
    paths.par_iter().map(|path| prepare_file(path, p, limits).map(|(t, _)| t)).collect()
}

fn prepare_into(
    path: &Path,
    p: &Preprocess,
    limits: &DecodeLimits,
    out: &mut [f32],
) -> Result<ImageMeta> {
    p.validate()
        .map_err(|e| Error::Preprocess { path: path.to_path_buf(), detail: e.to_string() })?;
    let decoded = decode_file_sized(path, limits, DecodeSize::for_preprocess(p))?;
    preprocess(&decoded.flattened(p.alpha_background), p, out);
    Ok(ImageMeta { width: decoded.original_width, height: decoded.original_height })
}

/// One batch from a [`BatchPipeline`].
#[derive(Debug)]
pub struct PreparedBatch<T> {
    /// The images that were prepared, in input order; row `i` of `tensor` is `items[i]`.
    pub items: Vec<(T, ImageMeta)>,
    /// `[items.len(), 3, H, W]`, preprocessed. May have zero rows when every file failed.
    pub tensor: Array4<f32>,
    /// The inputs of this batch that could not be prepared, in input order.
    pub failed: Vec<(T, PathBuf, Error)>,
}

/// Prepares batches on a background thread, at most two ahead of the consumer.
///
/// Iterate it to receive [`PreparedBatch`]es in input order; every input appears exactly once,
/// either in `items` or in `failed` of the batch it was assigned to (`batch_size` inputs per batch,
/// the last one possibly smaller). Dropping the pipeline stops the worker: images not yet started
/// are skipped and the thread is joined.
///
/// ```no_run
/// # use irtdb_image::{BatchPipeline, DecodeLimits};
/// # let paths: Vec<std::path::PathBuf> = vec![];
/// let items = paths.into_iter().enumerate().map(|(i, p)| (i, p)).collect();
/// let p = irtdb_core::Preprocess::imagenet(224);
/// for batch in BatchPipeline::new(items, 64, p, DecodeLimits::default()) {
///     // batch.tensor: [n, 3, 224, 224]; run the model while the next batch is decoded.
///     for (id, path, err) in &batch.failed { eprintln!("skipping #{id}: {err}"); }
/// }
/// ```
#[derive(Debug)]
pub struct BatchPipeline<T> {
    receiver: Option<Receiver<PreparedBatch<T>>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

/// How many prepared batches may wait for the consumer.
const QUEUE_DEPTH: usize = 2;

impl<T: Send + 'static> BatchPipeline<T> {
    /// Starts preparing `items` (caller's id, file) in batches of `batch_size` (at least 1).
    pub fn new(
        items: Vec<(T, PathBuf)>,
        batch_size: usize,
        preprocess: Preprocess,
        limits: DecodeLimits,
    ) -> Self {
        let (sender, receiver) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let stop = Arc::new(AtomicBool::new(false));
        let worker_stop = Arc::clone(&stop);
        let batch_size = batch_size.max(1);
        let worker = std::thread::Builder::new()
            .name("irtdb-image-batches".into())
            .spawn(move || {
                let mut items = items.into_iter();
                loop {
                    let batch: Vec<(T, PathBuf)> = items.by_ref().take(batch_size).collect();
                    if batch.is_empty() || worker_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some(prepared) =
                        prepare_batch_for(batch, &preprocess, &limits, &worker_stop)
                    else {
                        return;
                    };
                    // Fails only when the consumer has gone: stop.
                    if sender.send(prepared).is_err() {
                        return;
                    }
                }
            })
            .expect("failed to spawn the image batch thread");
        Self { receiver: Some(receiver), stop, worker: Some(worker) }
    }
}

impl<T> Iterator for BatchPipeline<T> {
    type Item = PreparedBatch<T>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.receiver.as_ref()?.recv().ok();
        if batch.is_none() {
            // The worker is done; if it died of a panic, surface it here rather than end quietly.
            self.receiver = None;
            if let Some(worker) = self.worker.take() {
                if let Err(panic) = worker.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
        batch
    }
}

impl<T> Drop for BatchPipeline<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver wakes a worker blocked on a full queue.
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Prepares one batch; `None` if asked to stop meanwhile.
fn prepare_batch_for<T>(
    batch: Vec<(T, PathBuf)>,
    p: &Preprocess,
    limits: &DecodeLimits,
    stop: &AtomicBool,
) -> Option<PreparedBatch<T>> {
    let [h, w] = p.size;
    let per_image = 3 * h as usize * w as usize;
    let (ids, paths): (Vec<T>, Vec<PathBuf>) = batch.into_iter().unzip();

    // Write straight into the batch buffer; failed rows are squeezed out afterwards.
    let mut data = vec![0f32; per_image * paths.len()];
    let results: Vec<Option<Result<ImageMeta>>> = data
        .par_chunks_mut(per_image)
        .zip(paths.par_iter())
        .map(|(out, path)| {
            (!stop.load(Ordering::Relaxed)).then(|| prepare_into(path, p, limits, out))
        })
        .collect();
    if stop.load(Ordering::Relaxed) {
        return None;
    }

    let mut items = Vec::with_capacity(ids.len());
    let mut failed = Vec::new();
    for (row, ((id, path), result)) in ids.into_iter().zip(paths).zip(results).enumerate() {
        match result.expect("not stopped, so every image was attempted") {
            Ok(meta) => {
                let kept = items.len();
                if kept != row {
                    data.copy_within(row * per_image..(row + 1) * per_image, kept * per_image);
                }
                items.push((id, meta));
            }
            Err(error) => failed.push((id, path, error)),
        }
    }
    data.truncate(items.len() * per_image);
    let tensor = Array4::from_shape_vec((items.len(), 3, h as usize, w as usize), data)
        .expect("rows × 3 × H × W values");
    Some(PreparedBatch { items, tensor, failed })
}
