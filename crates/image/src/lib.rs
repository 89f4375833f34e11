//! irtdb's image input: everything between a folder of files and a `[B, 3, H, W]` f32 batch.
//!
//! The index pipeline and the query path must turn a file into exactly the tensor that timm's
//! evaluation transform would give a model, quickly, and without letting one bad or malicious file
//! stop (or exhaust the memory of) a run over a million images. This crate owns that path:
//!
//! - [`scan`]: walk a folder, keep image files, record size, mtime and label; never panic, report
//!   unreadable places as problems ([`content_hash`] fingerprints a file's bytes).
//! - [`decode_file`] / [`decode_bytes`]: decode by content (not extension), with pixel and memory
//!   limits checked from the header before any pixel buffer is allocated, EXIF orientation
//!   applied, and everything converted to 8-bit RGB (plus alpha); HEIC/AVIF through the
//!   system's libheif ([`heif`]); [`decode_file_sized`] decodes a JPEG at 1/4 or 1/8 scale
//!   when preprocessing will shrink it below that anyway ([`DecodeSize`]).
//! - [`preprocess`]: timm's eval transform (resize shorter side, centre crop, normalise).
//! - [`prepare_batch`] and [`BatchPipeline`]: decode and preprocess in parallel, the pipeline on a
//!   background thread so that preparing batch n+1 overlaps the model's forward of batch n.
//!
//! - [`TrainAugment`]: the paper's training transform (resize, random crop, flip), seeded.

mod augment;
mod batch;
mod decode;
mod dylib;
mod edit;
mod error;
pub mod heif;
mod preprocess;
mod scan;
pub mod turbo;

pub use augment::{AugmentDraw, TrainAugment};
pub use batch::{prepare_batch, prepare_file, BatchPipeline, ImageMeta, PreparedBatch};
pub use decode::{
    decode_bytes, decode_bytes_sized, decode_file, decode_file_sized, DecodeLimits, DecodeSize,
    DecodedImage,
};
pub use edit::{crop_to_box, thumbnail_jpeg};
pub use error::{Error, Result};
pub use preprocess::{preprocess, preprocess_to_array};
pub use scan::{
    content_hash, list_files, scan, scan_filtered, scan_with_progress, shard_of, ScanOptions,
    ScanResult, ScannedFile, PROGRESS_EVERY,
};

/// File extensions (lower case, without the dot) that [`scan`] treats as images.
///
/// The decoder does not trust them: the format is always recognised from the content.
pub const IMAGE_EXTENSIONS: &[&str] =
    &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif", "heic", "heif", "hif", "avif"];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)))
}
