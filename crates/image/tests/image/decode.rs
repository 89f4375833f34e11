//! Decoding: every format, orientation, colour conversions, and every kind of bad input.

use std::path::Path;
use std::time::Instant;

use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, RgbImage, Rgba};
use irtdb_core::Preprocess;
use irtdb_image::{decode_bytes, decode_file, prepare_file, DecodeLimits, Error};

use crate::util::{encode, encode_jpeg, pattern, png_header_only, smooth, write};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

#[test]
fn every_format_decodes_from_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let img = pattern(48, 32);
    let dynamic = DynamicImage::ImageRgb8(img.clone());
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("png", encode(&dynamic, ImageFormat::Png), true),
        ("jpg", encode_jpeg(&smooth(48, 32), 95), false),
        ("webp", encode(&dynamic, ImageFormat::WebP), true), // lossless in image 0.25
        ("bmp", encode(&dynamic, ImageFormat::Bmp), true),
        ("tiff", encode(&dynamic, ImageFormat::Tiff), true),
        ("gif", encode(&dynamic, ImageFormat::Gif), false),
    ];
    for (ext, bytes, lossless) in cases {
        // A misleading extension: the content decides.
        let path = write(dir.path(), &format!("{ext}-content.dat"), &bytes);
        let decoded = decode_file(&path, &limits()).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(decoded.rgb.dimensions(), (48, 32), "{ext}");
        assert_eq!((decoded.original_width, decoded.original_height), (48, 32), "{ext}");
        if lossless {
            assert_eq!(decoded.rgb, img, "{ext} is lossless");
        }
        let from_bytes = decode_bytes(&bytes, &path, &limits()).unwrap();
        assert_eq!(from_bytes.rgb, decoded.rgb, "{ext}: bytes and file agree");
    }
}

#[test]
fn gif_first_frame_keeps_its_colours() {
    let dir = tempfile::tempdir().unwrap();
    let img =
        RgbImage::from_fn(40, 20, |x, _| if x < 20 { Rgb([255, 0, 0]) } else { Rgb([0, 0, 255]) });
    let path = write(
        dir.path(),
        "a.gif",
        &encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Gif),
    );
    assert_eq!(decode_file(&path, &limits()).unwrap().rgb, img);
}

/// An EXIF APP1 segment holding only Orientation = `value` (big-endian TIFF).
pub(crate) fn exif_app1(value: u16) -> Vec<u8> {
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // TIFF header, IFD0 at offset 8
    payload.extend_from_slice(&1u16.to_be_bytes()); // one entry
    payload.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    payload.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    payload.extend_from_slice(&1u32.to_be_bytes()); // count
    payload.extend_from_slice(&value.to_be_bytes());
    payload.extend_from_slice(&[0, 0]); // value padding
    payload.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    segment.extend_from_slice(&payload);
    segment
}

fn quadrants() -> RgbImage {
    // 64×32: red | green over blue | white.
    RgbImage::from_fn(64, 32, |x, y| match (x < 32, y < 16) {
        (true, true) => Rgb([255, 0, 0]),
        (false, true) => Rgb([0, 255, 0]),
        (true, false) => Rgb([0, 0, 255]),
        (false, false) => Rgb([255, 255, 255]),
    })
}

fn close(px: &Rgb<u8>, expected: [u8; 3]) -> bool {
    px.0.iter().zip(expected).all(|(a, b)| a.abs_diff(b) < 40)
}

#[test]
fn exif_orientation_6_rotates_90_clockwise() {
    let dir = tempfile::tempdir().unwrap();
    let plain = encode_jpeg(&quadrants(), 95);
    assert_eq!(&plain[..2], &[0xFF, 0xD8]);
    let mut rotated = plain[..2].to_vec();
    rotated.extend_from_slice(&exif_app1(6));
    rotated.extend_from_slice(&plain[2..]);
    let path = write(dir.path(), "rotated.jpg", &rotated);

    let decoded = decode_file(&path, &limits()).unwrap();
    assert_eq!(decoded.rgb.dimensions(), (32, 64), "width and height swap");
    assert_eq!((decoded.original_width, decoded.original_height), (32, 64));
    // Rotating clockwise: old bottom-left → top-left, old top-left → top-right,
    // old bottom-right → bottom-left, old top-right → bottom-right.
    let at = |x, y| decoded.rgb.get_pixel(x, y);
    assert!(close(at(8, 16), [0, 0, 255]), "top-left {:?}", at(8, 16));
    assert!(close(at(24, 16), [255, 0, 0]), "top-right {:?}", at(24, 16));
    assert!(close(at(8, 48), [255, 255, 255]), "bottom-left {:?}", at(8, 48));
    assert!(close(at(24, 48), [0, 255, 0]), "bottom-right {:?}", at(24, 48));

    // Without the EXIF segment nothing turns.
    let upright = decode_bytes(&plain, Path::new("plain.jpg"), &limits()).unwrap();
    assert_eq!(upright.rgb.dimensions(), (64, 32));
    assert!(close(upright.rgb.get_pixel(8, 8), [255, 0, 0]));
}

#[test]
fn same_file_twice_gives_identical_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.jpg", &encode_jpeg(&smooth(300, 200), 90));
    let p = Preprocess::imagenet(224);
    let (a, meta) = prepare_file(&path, &p, &limits()).unwrap();
    let (b, _) = prepare_file(&path, &p, &limits()).unwrap();
    assert_eq!(a, b);
    assert_eq!((meta.width, meta.height), (300, 200));
}

#[test]
fn sixteen_bit_grey_and_alpha_become_rgb8() {
    let dir = tempfile::tempdir().unwrap();

    let deep: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_fn(8, 4, |x, y| Rgb([(x * 8000) as u16, (y * 16000) as u16, 65535]));
    let path = write(
        dir.path(),
        "deep.png",
        &encode(&DynamicImage::ImageRgb16(deep.clone()), ImageFormat::Png),
    );
    let decoded = decode_file(&path, &limits()).unwrap();
    for (x, y, px) in decoded.rgb.enumerate_pixels() {
        let src = deep.get_pixel(x, y);
        for c in 0..3 {
            let expected = (f64::from(src[c]) / 257.0).round() as i32;
            assert!((i32::from(px[c]) - expected).abs() <= 1, "16-bit {x},{y}");
        }
    }

    let grey: ImageBuffer<Luma<u8>, Vec<u8>> =
        ImageBuffer::from_fn(8, 4, |x, y| Luma([(x * 30 + y) as u8]));
    let path = write(
        dir.path(),
        "grey.png",
        &encode(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png),
    );
    let decoded = decode_file(&path, &limits()).unwrap();
    for (x, y, px) in decoded.rgb.enumerate_pixels() {
        let v = grey.get_pixel(x, y)[0];
        assert_eq!(px.0, [v, v, v]);
    }
    let grey_jpeg = {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&DynamicImage::ImageLuma8(grey))
            .unwrap();
        out
    };
    let decoded = decode_bytes(&grey_jpeg, Path::new("grey.jpg"), &limits()).unwrap();
    assert!(
        decoded.rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "grey JPEG → equal channels"
    );

    let grey_alpha: ImageBuffer<LumaA<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(3, 3, LumaA([65535, 0]));
    let decoded = decode_bytes(
        &encode(&DynamicImage::ImageLumaA16(grey_alpha), ImageFormat::Png),
        Path::new("la16.png"),
        &limits(),
    )
    .unwrap();
    assert!(decoded.rgb.pixels().all(|p| p.0 == [255, 255, 255]));

    // Alpha is dropped, not composited: a fully transparent pixel keeps its colour.
    let rgba = image::RgbaImage::from_fn(6, 6, |x, _| Rgba([200, 100, 50, (x * 50) as u8]));
    let path =
        write(dir.path(), "alpha.png", &encode(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png));
    let decoded = decode_file(&path, &limits()).unwrap();
    assert!(decoded.rgb.pixels().all(|p| p.0 == [200, 100, 50]));
}

fn assert_names(err: &Error, path: &Path) {
    assert_eq!(err.path(), path);
    assert!(err.to_string().contains(&path.display().to_string()), "message names the file: {err}");
}

#[test]
fn text_file_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "notes.jpg", b"these are my holiday notes, not a picture\n");
    let err = decode_file(&path, &limits()).unwrap_err();
    assert!(matches!(err, Error::NotAnImage { .. }), "{err:?}");
    assert_names(&err, &path);
    assert_eq!(
        err.to_string(),
        format!(
            "not an image: {} (unrecognised format; irtdb reads JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF, AVIF)",
            path.display()
        )
    );
}

#[test]
fn zero_byte_file_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "empty.png", b"");
    let err = decode_file(&path, &limits()).unwrap_err();
    assert!(matches!(err, Error::Empty { .. }), "{err:?}");
    assert_names(&err, &path);
    assert!(matches!(decode_bytes(&[], &path, &limits()), Err(Error::Empty { .. })));
}

#[test]
fn missing_file_is_an_io_error() {
    let path = Path::new("/nonexistent/irtdb/x.jpg");
    let err = decode_file(path, &limits()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_names(&err, path);
}

#[test]
fn truncated_jpeg_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let full = encode_jpeg(&pattern(256, 256), 90);
    for keep in [full.len() * 2 / 3, full.len() / 3, full.len() - 2, 200] {
        let path = write(dir.path(), &format!("cut{keep}.jpg"), &full[..keep]);
        let err = decode_file(&path, &limits()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{keep} bytes: {err:?}");
        assert_names(&err, &path);
        assert!(err.to_string().starts_with("truncated or corrupt image "), "{err}");
    }
    // The complete file, and one with data after the end marker, are fine.
    assert!(decode_bytes(&full, Path::new("full.jpg"), &limits()).is_ok());
    let mut trailing = full.clone();
    trailing.extend_from_slice(&[0u8; 1000]);
    assert!(decode_bytes(&trailing, Path::new("trailing.jpg"), &limits()).is_ok());
}

#[test]
fn jpeg_with_embedded_thumbnail_is_still_checked_for_truncation() {
    // An APP1 segment holding a complete JPEG (as EXIF thumbnails do) must not make a truncated
    // main image look complete.
    let thumb = encode_jpeg(&smooth(16, 16), 80);
    let main = encode_jpeg(&pattern(128, 128), 90);
    let mut segment = vec![0xFF, 0xE1];
    segment.extend_from_slice(&((thumb.len() + 2) as u16).to_be_bytes());
    segment.extend_from_slice(&thumb);
    let mut with_thumb = main[..2].to_vec();
    with_thumb.extend_from_slice(&segment);
    with_thumb.extend_from_slice(&main[2..]);
    assert!(decode_bytes(&with_thumb, Path::new("t.jpg"), &limits()).is_ok());
    let cut = &with_thumb[..with_thumb.len() - 500];
    assert!(matches!(decode_bytes(cut, Path::new("t.jpg"), &limits()), Err(Error::Corrupt { .. })));
}

#[test]
fn truncated_png_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let full = encode(&DynamicImage::ImageRgb8(pattern(128, 128)), ImageFormat::Png);
    for keep in [full.len() / 2, 40, full.len() - 12] {
        let path = write(dir.path(), &format!("cut{keep}.png"), &full[..keep]);
        let err = decode_file(&path, &limits()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{keep} bytes: {err:?}");
        assert_names(&err, &path);
    }
}

#[test]
fn png_decompression_bomb_fails_fast_from_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bomb.png", &png_header_only(100_000, 100_000));
    let started = Instant::now();
    let err = decode_file(&path, &limits()).unwrap_err();
    assert!(started.elapsed().as_secs_f64() < 1.0, "took {:?}", started.elapsed());
    match &err {
        Error::TooLarge { width, height, pixels, limit, .. } => {
            assert_eq!((*width, *height), (100_000, 100_000));
            assert_eq!(*pixels, 10_000_000_000);
            assert_eq!(*limit, 100_000_000);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_names(&err, &path);
    assert_eq!(
        err.to_string(),
        format!(
            "image too large: {} declares 100000×100000 = 10000000000 pixels, over the limit of \
             100000000; raise --max-pixels if it is genuine",
            path.display()
        )
    );
}

#[test]
fn jpeg_decompression_bomb_fails_fast_from_the_header() {
    let mut bytes = encode_jpeg(&smooth(16, 16), 90);
    // Patch the frame header (SOF0: FF C0, length, precision, height, width) to 60000×60000.
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).expect("baseline JPEG");
    bytes[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let started = Instant::now();
    let err = decode_bytes(&bytes, Path::new("bomb.jpg"), &limits()).unwrap_err();
    assert!(started.elapsed().as_secs_f64() < 1.0);
    assert!(matches!(err, Error::TooLarge { width: 60_000, height: 60_000, .. }), "{err:?}");
}

#[test]
fn memory_limit_is_enforced_before_decoding() {
    let bytes = encode(&DynamicImage::ImageRgb8(pattern(100, 100)), ImageFormat::Png);
    let tight = DecodeLimits { max_pixels: 1_000_000, max_alloc_bytes: 10_000 };
    let err = decode_bytes(&bytes, Path::new("big.png"), &tight).unwrap_err();
    assert!(matches!(err, Error::TooMuchMemory { limit: 10_000, .. }), "{err:?}");
    assert!(err.to_string().contains("big.png"));
    let few_pixels = DecodeLimits { max_pixels: 9_999, ..DecodeLimits::default() };
    let err = decode_bytes(&bytes, Path::new("big.png"), &few_pixels).unwrap_err();
    assert!(matches!(err, Error::TooLarge { pixels: 10_000, limit: 9_999, .. }), "{err:?}");
}

#[test]
fn corrupt_data_is_an_error_not_a_panic() {
    // Valid signatures followed by garbage, for every format.
    let dir = tempfile::tempdir().unwrap();
    let img = DynamicImage::ImageRgb8(pattern(64, 64));
    for format in
        [ImageFormat::Png, ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff, ImageFormat::Gif]
    {
        let mut bytes = encode(&img, format);
        let n = bytes.len();
        for (i, b) in bytes[24..n].iter_mut().enumerate() {
            *b = b.wrapping_mul(31).wrapping_add(i as u8);
        }
        let path = write(dir.path(), &format!("garbage.{}", format.extensions_str()[0]), &bytes);
        // Some decoders may still produce an image from garbage; what matters is no panic and,
        // on failure, an error naming the file.
        if let Err(err) = decode_file(&path, &limits()) {
            assert_names(&err, &path);
        }
    }
}
