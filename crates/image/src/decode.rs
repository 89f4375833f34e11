//! Decoding any supported file into 8-bit RGB, safely.
//!
//! A gallery is untrusted input: files with the wrong extension, half-copied files, and headers
//! that declare gigapixel images (decompression bombs) all occur. So the format is recognised from
//! the content, the declared size is checked against [`DecodeLimits`] from the header before any
//! pixel buffer is allocated, a decoder panic becomes an error for that file, and every failure is
//! an [`Error`] naming the file.
//!
//! The output is what a user sees in a photo viewer: EXIF orientation is applied (for HEIF/AVIF
//! the file's own rotation and mirroring, see [`crate::heif`]). (timm's own loader, a plain PIL
//! `Image.open`, ignores EXIF orientation; irtdb applies it because a query photo taken upright
//! should match its gallery twin whatever the camera stored.) An alpha channel is kept beside the
//! colours, for [`DecodedImage::flattened`] to composite as the model's preprocessing says.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use irtdb_core::AlphaBackground;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bounds on what one image may cost to decode; checked from the header, before decoding pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// Largest `width × height` accepted (default 100 million).
    pub max_pixels: u64,
    /// Largest total allocation the decoder may make, output buffer included (default 1 GiB).
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self { max_pixels: 100_000_000, max_alloc_bytes: 1 << 30 }
    }
}

/// A decoded image: 8-bit RGB, upright (EXIF orientation applied), and its alpha channel if it
/// has one.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// The colour channels as stored (under transparent pixels: whatever the file holds).
    pub rgb: RgbImage,
    /// Opacity per pixel (255 = opaque), for images with transparency.
    pub alpha: Option<GrayImage>,
    /// Width of the image as stored, after the EXIF orientation was applied (= `rgb.width()`).
    pub original_width: u32,
    /// Height after the EXIF orientation was applied (= `rgb.height()`).
    pub original_height: u32,
}

impl DecodedImage {
    /// The image as the model should see it: composited over `background` (`c·a + bg·(1 − a)`,
    /// rounded), or the colour channels as stored for [`AlphaBackground::Drop`] or an opaque image.
    pub fn flattened(&self, background: AlphaBackground) -> std::borrow::Cow<'_, RgbImage> {
        let (Some(alpha), AlphaBackground::Color(bg)) = (&self.alpha, background) else {
            return std::borrow::Cow::Borrowed(&self.rgb);
        };
        let mut out = self.rgb.clone();
        for (px, a) in out.pixels_mut().zip(alpha.pixels()) {
            let a = u32::from(a[0]);
            for (c, b) in px.0.iter_mut().zip(bg) {
                *c = ((u32::from(*c) * a + u32::from(b) * (255 - a) + 127) / 255) as u8;
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Decodes the file at `path`; see [`decode_bytes`] for what is accepted and how it is converted.
pub fn decode_file(path: &Path, limits: &DecodeLimits) -> Result<DecodedImage> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    decode_reader(BufReader::new(file), path, limits)
}

/// Decodes an image held in memory; `name_for_errors` is the file name errors report.
///
/// - Formats: JPEG, PNG, WebP, BMP, TIFF, GIF (first frame), recognised from the content; HEIF
///   (HEIC) and AVIF through the system's libheif when it is installed ([`crate::heif`]).
/// - The EXIF orientation (JPEG, PNG, WebP, TIFF) is applied.
/// - The result is 8-bit RGB: grayscale is replicated to three channels, 16-bit and float samples
///   are scaled to 8 bits, CMYK JPEGs are converted by the decoder; an alpha channel is returned
///   separately ([`DecodedImage::alpha`]).
pub fn decode_bytes(
    bytes: &[u8],
    name_for_errors: &Path,
    limits: &DecodeLimits,
) -> Result<DecodedImage> {
    if bytes.is_empty() {
        return Err(Error::Empty { path: name_for_errors.to_path_buf() });
    }
    decode_reader(Cursor::new(bytes), name_for_errors, limits)
}

fn decode_reader<R: BufRead + Seek>(
    reader: R,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<DecodedImage> {
    // A decoder that panics on hostile input must cost one file, not the whole run.
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(reader, path, limits))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("the decoder failed on this file ({message})"),
            })
        }
    }
}

fn decode_unguarded<R: BufRead + Seek>(
    reader: R,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<DecodedImage> {
    let reader = ImageReader::new(reader).with_guessed_format().map_err(|e| Error::io(path, e))?;
    match reader.format() {
        // The image crate recognises AVIF but is built without its decoder: libheif reads it.
        None | Some(ImageFormat::Avif) => {
            // with_guessed_format leaves the reader at the start; look at the brand first, so
            // that a large file of something else is never read whole.
            let mut inner = reader.into_inner();
            let mut head = Vec::with_capacity(12);
            io::Read::by_ref(&mut inner)
                .take(12)
                .read_to_end(&mut head)
                .map_err(|e| Error::io(path, e))?;
            if !crate::heif::is_heif(&head) {
                return Err(Error::NotAnImage { path: path.to_path_buf() });
            }
            inner.rewind().map_err(|e| Error::io(path, e))?;
            let mut data = Vec::new();
            inner.read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
            let (rgb, alpha) = crate::heif::decode(&data, path, limits)?;
            Ok(DecodedImage {
                original_width: rgb.width(),
                original_height: rgb.height(),
                rgb,
                alpha,
            })
        }
        Some(ImageFormat::Jpeg) => {
            // The JPEG decoder reads the whole stream into memory anyway; holding it here as well
            // lets us check that it is complete (see `jpeg_reaches_end`).
            let mut data = Vec::new();
            reader.into_inner().read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
            let reader = ImageReader::with_format(Cursor::new(data.as_slice()), ImageFormat::Jpeg);
            decode_with(reader, path, limits, || jpeg_reaches_end(&data))
        }
        Some(_) => decode_with(reader, path, limits, || true),
    }
}

/// Decodes with the size checks; `complete` is asked after the header passed them, before the
/// pixels are decoded.
fn decode_with<R: BufRead + Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
    limits: &DecodeLimits,
    complete: impl FnOnce() -> bool,
) -> Result<DecodedImage> {
    let mut image_limits = image::Limits::no_limits();
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(image_limits.clone());

    // Reads the header only: dimensions and colour type, no pixel buffer yet.
    let mut decoder = reader.into_decoder().map_err(|e| convert_error(e, path, limits))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!("the header declares an empty image ({width}×{height})"),
        });
    }
    // The decoded buffer counts against the allocation budget; the decoder gets what is left.
    let output_bytes = decoder.total_bytes();
    if output_bytes > limits.max_alloc_bytes {
        return Err(Error::TooMuchMemory {
            path: path.to_path_buf(),
            detail: format!(
                "{width}×{height} {:?} needs {output_bytes} bytes",
                decoder.color_type()
            ),
            limit: limits.max_alloc_bytes,
        });
    }
    image_limits.max_alloc = Some(limits.max_alloc_bytes - output_bytes);
    decoder.set_limits(image_limits).map_err(|e| convert_error(e, path, limits))?;
    if !complete() {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: "the data ends before the end-of-image marker (the file is truncated)".into(),
        });
    }

    // A damaged EXIF block is no reason to reject the pixels: fall back to "as stored".
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| convert_error(e, path, limits))?;
    image.apply_orientation(orientation);
    let (rgb, alpha) = if image.color().has_alpha() {
        split_alpha(image.into_rgba8())
    } else {
        (image.into_rgb8(), None)
    };
    Ok(DecodedImage { original_width: rgb.width(), original_height: rgb.height(), rgb, alpha })
}

/// The colour channels and, unless every pixel is opaque (many PNGs carry an alpha channel that
/// is all 255), the alpha channel of an RGBA image, in one pass.
pub(crate) fn split_alpha(rgba: image::RgbaImage) -> (RgbImage, Option<GrayImage>) {
    let (w, h) = rgba.dimensions();
    let pixels = rgba.as_raw();
    let mut rgb = Vec::with_capacity(pixels.len() / 4 * 3);
    let mut alpha = Vec::with_capacity(pixels.len() / 4);
    for px in pixels.chunks_exact(4) {
        rgb.extend_from_slice(&px[..3]);
        alpha.push(px[3]);
    }
    let rgb = RgbImage::from_raw(w, h, rgb).expect("sized from the image");
    let alpha = alpha
        .iter()
        .any(|&a| a != 255)
        .then(|| GrayImage::from_raw(w, h, alpha).expect("sized from the image"));
    (rgb, alpha)
}

fn convert_error(error: ImageError, path: &Path, limits: &DecodeLimits) -> Error {
    let path = path.to_path_buf();
    match error {
        ImageError::Limits(e) => match e.kind() {
            LimitErrorKind::InsufficientMemory | LimitErrorKind::DimensionError => {
                Error::TooMuchMemory { path, detail: e.to_string(), limit: limits.max_alloc_bytes }
            }
            _ => Error::Unsupported { path, detail: e.to_string() },
        },
        ImageError::Unsupported(e) => Error::Unsupported { path, detail: e.to_string() },
        ImageError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Error::Corrupt { path, detail: "the file ends early (truncated)".into() }
        }
        ImageError::IoError(e) if e.kind() == io::ErrorKind::InvalidData => {
            Error::Corrupt { path, detail: e.to_string() }
        }
        ImageError::IoError(e) => Error::Io { path, error: e },
        ImageError::Decoding(e) => Error::Corrupt { path, detail: e.to_string() },
        ImageError::Parameter(e) => Error::Corrupt { path, detail: e.to_string() },
        ImageError::Encoding(e) => Error::Corrupt { path, detail: e.to_string() },
    }
}

/// Whether a JPEG stream reaches its end-of-image marker (EOI, `FF D9`) after its first scan.
///
/// The JPEG decoder is lenient: it decodes a truncated file by painting the missing part grey, and
/// an index would then hold a descriptor of half a picture. Pillow (hence timm) refuses such files
/// ("image file is truncated"), and so does irtdb. The segments before the first scan are skipped
/// by their lengths because an EXIF thumbnail is a complete JPEG, EOI included; inside scan data a
/// literal `FF` byte is always stuffed as `FF 00`, so `FF D9` there is the real marker. Data after
/// EOI (e.g. the video of a "motion photo") is allowed. Unusual header layouts answer `true`,
/// leaving the verdict to the decoder.
fn jpeg_reaches_end(data: &[u8]) -> bool {
    let mut i = 2; // after SOI
    loop {
        match data.get(i) {
            Some(0xFF) => {}
            None => return false,   // ends inside the headers
            Some(_) => return true, // not a layout this check understands
        }
        // Any number of fill bytes may precede a marker.
        while data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let Some(&marker) = data.get(i + 1) else { return false };
        i += 2;
        match marker {
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => continue, // markers without a length
            _ => {}
        }
        let Some(len) = data.get(i..i + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        i += len;
        if marker == 0xDA {
            break;
        }
    }
    let mut rest = data.get(i..).unwrap_or_default();
    while let Some(ff) = rest.iter().position(|&b| b == 0xFF) {
        if rest.get(ff + 1) == Some(&0xD9) {
            return true;
        }
        rest = &rest[ff + 1..];
    }
    false
}
