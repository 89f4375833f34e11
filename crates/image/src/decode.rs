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
//!
//! A caller that will shrink the image anyway says how large it must stay ([`DecodeSize`]): a
//! JPEG is then decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (the inverse DCT of each
//! 8×8 block computed at 4×4, 2×2 or 1×1, as libjpeg's scaled decoding and Pillow's
//! `Image.draft` do), choosing the smallest scale whose result is still at least that size. The
//! decoder is the system's libjpeg-turbo where it is installed ([`crate::turbo`]), else
//! `jpeg-decoder` at 1/4 or 1/8 only (see [`DecodeSize::jpeg_denominator`]). A 12-megapixel photo
//! prepared for a 224-pixel model is decoded at 1/8.
//! Other formats, and JPEGs the scaled decoder does not handle (12-bit, lossless), are decoded
//! in full.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};
use irtdb_core::{AlphaBackground, Preprocess};
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

/// How large a decoded image must be; lets a JPEG be decoded at a reduced scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DecodeSize {
    /// Every pixel (what [`decode_file`] and [`decode_bytes`] do).
    #[default]
    Full,
    /// The shorter side at least this many pixels (the same whatever the orientation).
    ShorterSideAtLeast(u32),
    /// At least this width and height once upright (after the EXIF orientation), so a photo
    /// stored sideways (orientation 5 to 8) needs `height` of its stored width.
    AtLeast {
        /// Upright width.
        width: u32,
        /// Upright height.
        height: u32,
    },
}

impl DecodeSize {
    /// What [`crate::preprocess`] needs of an image under `p`: its shorter side at least
    /// [`Preprocess::resize_shorter_to`] when `p.jpeg_dct_scaling` is set, every pixel
    /// otherwise (a collection recorded before the flag existed).
    pub fn for_preprocess(p: &Preprocess) -> Self {
        if p.jpeg_dct_scaling {
            DecodeSize::ShorterSideAtLeast(p.resize_shorter_to())
        } else {
            DecodeSize::Full
        }
    }

    /// The JPEG scale denominator (1, 2, 4 or 8) for an image stored as `width × height`, whose
    /// EXIF orientation turns it by 90° when `sideways`: the largest whose decoded size (libjpeg's
    /// `ceil(side / d)`) still meets this requirement, among those this machine decodes faster
    /// than a full decode ([`Self::jpeg_denominator_among`] with 1/2 only where libjpeg-turbo is
    /// loaded).
    pub fn jpeg_denominator(self, width: u32, height: u32, sideways: bool) -> u32 {
        let half = crate::turbo::available();
        self.jpeg_denominator_among(width, height, sideways, half)
    }

    /// [`Self::jpeg_denominator`], with 1/2 a candidate only when `half`.
    ///
    /// 1/2 pays only with libjpeg-turbo: jpeg-decoder's entropy decoding is slower than the full
    /// decoder's (zune-jpeg), and at 1/2 the smaller inverse DCT does not make up for it
    /// (0.75–0.85× the speed of a full decode in `cargo bench --bench decode`); at 1/4 and 1/8 it
    /// does.
    pub fn jpeg_denominator_among(
        self,
        width: u32,
        height: u32,
        sideways: bool,
        half: bool,
    ) -> u32 {
        let (need_w, need_h) = match self {
            DecodeSize::Full => return 1,
            DecodeSize::ShorterSideAtLeast(n) => {
                if width <= height {
                    (n, 0)
                } else {
                    (0, n)
                }
            }
            DecodeSize::AtLeast { width: w, height: h } if sideways => (h, w),
            DecodeSize::AtLeast { width: w, height: h } => (w, h),
        };
        let candidates: &[u32] = if half { &[8, 4, 2] } else { &[8, 4] };
        candidates
            .iter()
            .copied()
            .find(|&d| width.div_ceil(d) >= need_w && height.div_ceil(d) >= need_h)
            .unwrap_or(1)
    }
}

/// A decoded image: 8-bit RGB, upright (EXIF orientation applied), and its alpha channel if it
/// has one.
#[derive(Clone, Debug)]
pub struct DecodedImage {
    /// The colour channels as stored (under transparent pixels: whatever the file holds), at
    /// `1 / scale_denominator` of the image's size.
    pub rgb: RgbImage,
    /// Opacity per pixel (255 = opaque), for images with transparency.
    pub alpha: Option<GrayImage>,
    /// Full width of the image, after the EXIF orientation was applied (= `rgb.width()` unless
    /// it was decoded at a reduced scale).
    pub original_width: u32,
    /// Full height after the EXIF orientation was applied.
    pub original_height: u32,
    /// 1 for a full decode; 2, 4 or 8 for a JPEG decoded at that fraction of its size
    /// (`rgb` is then `ceil(original / scale_denominator)` on each side).
    pub scale_denominator: u32,
}

impl DecodedImage {
    /// An image decoded at full size: its size is the size of `rgb`.
    pub fn full(rgb: RgbImage, alpha: Option<GrayImage>) -> Self {
        DecodedImage {
            original_width: rgb.width(),
            original_height: rgb.height(),
            rgb,
            alpha,
            scale_denominator: 1,
        }
    }

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
    decode_file_sized(path, limits, DecodeSize::Full)
}

/// [`decode_file`], reduced to no less than `size` where the format allows (see [`DecodeSize`]).
pub fn decode_file_sized(
    path: &Path,
    limits: &DecodeLimits,
    size: DecodeSize,
) -> Result<DecodedImage> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::Empty { path: path.to_path_buf() });
    }
    decode_reader(BufReader::new(file), path, limits, size)
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
    decode_bytes_sized(bytes, name_for_errors, limits, DecodeSize::Full)
}

/// [`decode_bytes`], reduced to no less than `size` where the format allows (see [`DecodeSize`]).
pub fn decode_bytes_sized(
    bytes: &[u8],
    name_for_errors: &Path,
    limits: &DecodeLimits,
    size: DecodeSize,
) -> Result<DecodedImage> {
    if bytes.is_empty() {
        return Err(Error::Empty { path: name_for_errors.to_path_buf() });
    }
    decode_reader(Cursor::new(bytes), name_for_errors, limits, size)
}

fn decode_reader<R: BufRead + Seek>(
    reader: R,
    path: &Path,
    limits: &DecodeLimits,
    size: DecodeSize,
) -> Result<DecodedImage> {
    // A decoder that panics on hostile input must cost one file, not the whole run.
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(reader, path, limits, size))) {
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
    size: DecodeSize,
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
            Ok(DecodedImage::full(rgb, alpha))
        }
        Some(ImageFormat::Jpeg) => {
            // The JPEG decoder reads the whole stream into memory anyway; holding it here as well
            // lets us check that it is complete (see `jpeg_reaches_end`).
            let mut data = Vec::new();
            reader.into_inner().read_to_end(&mut data).map_err(|e| Error::io(path, e))?;
            let reader = ImageReader::with_format(Cursor::new(data.as_slice()), ImageFormat::Jpeg);
            decode_with(reader, path, limits, &|| jpeg_reaches_end(&data), Some((&data, size)))
        }
        Some(_) => decode_with(reader, path, limits, &|| true, None),
    }
}

/// Decodes with the size checks; `complete` is asked after the header passed them, before the
/// pixels are decoded. `jpeg`: the whole JPEG stream and how large its decode must be, for a
/// scaled decode.
fn decode_with<R: BufRead + Seek>(
    mut reader: ImageReader<R>,
    path: &Path,
    limits: &DecodeLimits,
    complete: &dyn Fn() -> bool,
    jpeg: Option<(&[u8], DecodeSize)>,
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
    if let Some((data, size)) = jpeg {
        let denominator = size.jpeg_denominator(width, height, turns_sideways(orientation));
        if denominator > 1 {
            let header = ScaledJpeg { width, height, denominator, orientation };
            drop(decoder); // it holds its own copy of the stream
            if let Some(decoded) = decode_jpeg_scaled(data, path, limits, header)? {
                return Ok(decoded);
            }
            // A JPEG the scaled decoder does not handle: decode every pixel after all.
            let reader = ImageReader::with_format(Cursor::new(data), ImageFormat::Jpeg);
            return decode_with(reader, path, limits, &|| true, None);
        }
    }
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| convert_error(e, path, limits))?;
    image.apply_orientation(orientation);
    let (rgb, alpha) = if image.color().has_alpha() {
        split_alpha(image.into_rgba8())
    } else {
        (image.into_rgb8(), None)
    };
    Ok(DecodedImage::full(rgb, alpha))
}

/// Whether an EXIF orientation swaps width and height.
fn turns_sideways(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// What the header told about a JPEG to decode at a reduced scale.
struct ScaledJpeg {
    /// Stored size (before the orientation).
    width: u32,
    height: u32,
    denominator: u32,
    orientation: Orientation,
}

/// Decodes `data` at `1 / denominator` of its size, whose inverse DCT computes each 8×8 block at
/// the reduced size: with libjpeg-turbo where it is installed, else (and for CMYK/YCCK colours)
/// with `jpeg-decoder`; `None` for a JPEG neither scales (12-bit samples, lossless coding), which
/// the caller decodes in full.
///
/// The header has passed the pixel limit already; the memory this decode needs is checked
/// before any of it is allocated: the colour planes and output at the reduced size, plus, for a
/// progressive JPEG, every DCT coefficient at full size (2 bytes per sample and component).
fn decode_jpeg_scaled(
    data: &[u8],
    path: &Path,
    limits: &DecodeLimits,
    jpeg: ScaledJpeg,
) -> Result<Option<DecodedImage>> {
    use jpeg_decoder::{CodingProcess, PixelFormat};

    let mut decoder = jpeg_decoder::Decoder::new(data);
    decoder.read_info().map_err(|e| jpeg_error(e, path))?;
    let info = decoder.info().expect("read_info succeeded");
    if info.coding_process == CodingProcess::Lossless
        || info.pixel_format == PixelFormat::L16
        || (u32::from(info.width), u32::from(info.height)) != (jpeg.width, jpeg.height)
    {
        return Ok(None);
    }
    let want = (jpeg.width.div_ceil(jpeg.denominator), jpeg.height.div_ceil(jpeg.denominator));
    // `scale` picks the smallest scale reaching the request on either side: asking for exactly
    // the size of the chosen scale gets that scale.
    let (w, h) = decoder.scale(want.0 as u16, want.1 as u16).map_err(|e| jpeg_error(e, path))?;
    if (u32::from(w), u32::from(h)) != want {
        return Ok(None);
    }

    let channels = info.pixel_format.pixel_bytes() as u64;
    let scaled = u64::from(w) * u64::from(h);
    // Component planes, the decoder's interleaved output, and our RGB image.
    let mut needed = scaled * (channels + channels + 3);
    if info.coding_process == CodingProcess::DctProgressive {
        let padded =
            u64::from(jpeg.width.div_ceil(32) * 32) * u64::from(jpeg.height.div_ceil(32) * 32);
        needed += channels * padded * 2;
    }
    if needed > limits.max_alloc_bytes {
        return Err(Error::TooMuchMemory {
            path: path.to_path_buf(),
            detail: format!(
                "decoding {}×{} at 1/{} needs about {needed} bytes",
                jpeg.width, jpeg.height, jpeg.denominator
            ),
            limit: limits.max_alloc_bytes,
        });
    }
    let (w, h) = (u32::from(w), u32::from(h));
    let raw = match crate::turbo::decode_scaled(data, jpeg.width, jpeg.height, jpeg.denominator) {
        Ok(rgb) => rgb,
        Err(crate::turbo::Failure::Corrupt(message)) => {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                detail: format!("libjpeg-turbo: {message}"),
            })
        }
        Err(crate::turbo::Failure::NotHandled) => {
            decode_scaled_pure_rust(decoder, info.pixel_format, path, limits)?
        }
    };
    let rgb = RgbImage::from_raw(w, h, raw).ok_or_else(|| Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!("the JPEG decoder returned a buffer that does not hold {w}×{h} pixels"),
    })?;
    let mut image = DynamicImage::ImageRgb8(rgb);
    image.apply_orientation(jpeg.orientation);
    let (original_width, original_height) = if turns_sideways(jpeg.orientation) {
        (jpeg.height, jpeg.width)
    } else {
        (jpeg.width, jpeg.height)
    };
    Ok(Some(DecodedImage {
        rgb: image.into_rgb8(),
        alpha: None,
        original_width,
        original_height,
        scale_denominator: jpeg.denominator,
    }))
}

/// The scaled decode by `jpeg-decoder` (scale already set), as interleaved 8-bit RGB: where
/// libjpeg-turbo is not installed, and for CMYK/YCCK JPEGs.
fn decode_scaled_pure_rust(
    mut decoder: jpeg_decoder::Decoder<&[u8]>,
    pixel_format: jpeg_decoder::PixelFormat,
    path: &Path,
    limits: &DecodeLimits,
) -> Result<Vec<u8>> {
    use jpeg_decoder::PixelFormat;

    decoder.set_max_decoding_buffer_size(
        usize::try_from(limits.max_alloc_bytes).unwrap_or(usize::MAX),
    );
    let pixels = decoder.decode().map_err(|e| jpeg_error(e, path))?;
    Ok(match pixel_format {
        PixelFormat::RGB24 => pixels,
        PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        // jpeg-decoder gives plain CMYK (Adobe's inversion undone, YCCK converted); the image
        // crate's decoder (zune-jpeg), which gives the full-size result, computes R = C'·K' / 255
        // on the stored (inverted) values C' = 255 − C, K' = 255 − K. Do the same.
        PixelFormat::CMYK32 => pixels
            .chunks_exact(4)
            .flat_map(|px| {
                let k = 255 - u32::from(px[3]);
                let blend = |c: u8| {
                    let t = (255 - u32::from(c)) * k + 128;
                    ((t + (t >> 8)) >> 8) as u8
                };
                [blend(px[0]), blend(px[1]), blend(px[2])]
            })
            .collect(),
        PixelFormat::L16 => unreachable!("12-bit JPEGs are decoded in full"),
    })
}

fn jpeg_error(error: jpeg_decoder::Error, path: &Path) -> Error {
    let path = path.to_path_buf();
    match error {
        jpeg_decoder::Error::Unsupported(feature) => {
            Error::Unsupported { path, detail: format!("JPEG feature not supported: {feature:?}") }
        }
        jpeg_decoder::Error::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            Error::Corrupt { path, detail: "the file ends early (truncated)".into() }
        }
        jpeg_decoder::Error::Io(e) => Error::Io { path, error: e },
        other => Error::Corrupt { path, detail: other.to_string() },
    }
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
