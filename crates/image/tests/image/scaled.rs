//! JPEG decoding at 1/2, 1/4 or 1/8 scale (DCT domain): the scale chosen, what preprocessing
//! makes of the smaller image compared with a full decode, orientation, colour models,
//! progressive files and the limits; libjpeg-turbo against jpeg-decoder.

use std::path::Path;

use image::{imageops, DynamicImage, ImageFormat, Rgb, RgbImage};
use irtdb_core::Preprocess;
use irtdb_image::{
    decode_bytes, decode_bytes_sized, decode_file_sized, prepare_file, preprocess_to_array,
    DecodeLimits, DecodeSize, DecodedImage, Error,
};

use crate::decode::exif_app1;
use crate::util::{encode, encode_jpeg, smooth, write};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// A photo-like picture: smooth colour fields, fine texture (periods of 5 to 23 pixels, which
/// a 1/8 decode cannot hold and must average as the antialiased resize does) and noise.
fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let s = seed as f32;
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let (xf, yf) = (x as f32, y as f32);
        let texture = 22.0 * (xf * 0.35 + s).sin() * (yf * 0.27).cos() + 10.0 * (xf * 1.3).sin();
        let noise = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed) % 17) as f32;
        let v = |base: f32| (base + texture + noise - 8.0).clamp(0.0, 255.0) as u8;
        Rgb([
            v(128.0 + 80.0 * (3.0 * fx + s).sin()),
            v(128.0 + 80.0 * (4.0 * fy + 2.0 * s).cos()),
            v(128.0 + 70.0 * (2.5 * (fx + fy) + 0.5 * s).sin()),
        ])
    })
}

/// Cosine similarity of two tensors (normalised images are centred near zero, so this measures
/// how alike the pictures are, as a descriptor would).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Mean absolute difference, in 8-bit levels (the tensors are normalised by std ≈ 0.225).
fn mean_levels(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
    sum / a.len() as f64 * 0.225 * 255.0
}

fn tensor(img: &DecodedImage, p: &Preprocess) -> Vec<f32> {
    preprocess_to_array(&img.rgb, p).into_raw_vec_and_offset().0
}

fn with_exif(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&exif_app1(orientation));
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn scale_is_the_smallest_that_still_covers_the_need() {
    let short = DecodeSize::ShorterSideAtLeast(256);
    // 1/2 is a candidate only with libjpeg-turbo (jpeg-decoder at 1/2 is slower than a full decode).
    assert_eq!(short.jpeg_denominator_among(1000, 1000, false, true), 2); // 500
    assert_eq!(short.jpeg_denominator_among(1000, 1000, false, false), 1); // 1/4 → 250
    assert_eq!(short.jpeg_denominator_among(2040, 2048, false, true), 4);
    assert_eq!(short.jpeg_denominator_among(511, 300, false, true), 1); // 150 at 1/2
    assert_eq!(short.jpeg_denominator_among(513, 512, false, true), 2); // ceil(513 / 2) = 257
    let half = irtdb_image::turbo::available();
    assert_eq!(short.jpeg_denominator(1000, 1000, false), if half { 2 } else { 1 });
    assert_eq!(short.jpeg_denominator(4000, 3000, false), 8); // 500×375
    assert_eq!(short.jpeg_denominator(3000, 4000, true), 8);
    assert_eq!(short.jpeg_denominator(2047, 2048, false), 8); // ceil(2047 / 8) = 256
    assert_eq!(short.jpeg_denominator(2040, 2048, false), 4); // 2040 / 8 = 255
    assert_eq!(short.jpeg_denominator(2048, 2048, false), 8); // exactly 256
    assert_eq!(short.jpeg_denominator(1100, 1024, false), 4);
    assert_eq!(short.jpeg_denominator(511, 300, false), 1);
    assert_eq!(DecodeSize::Full.jpeg_denominator_among(4000, 3000, false, true), 1);
    assert_eq!(short.jpeg_denominator(100, 80, false), 1); // smaller than needed: full
    assert_eq!(DecodeSize::Full.jpeg_denominator(4000, 3000, false), 1);
    // Upright sizes: a photo stored 4000×3000 and turned by its EXIF orientation is 3000 wide.
    let wide = DecodeSize::AtLeast { width: 400, height: 100 };
    assert_eq!(wide.jpeg_denominator(4000, 3000, false), 8); // 500 wide
    assert_eq!(wide.jpeg_denominator(4000, 3000, true), 4); // upright width = stored 3000 → 375 < 400
                                                            // libjpeg's scaled size is ceil(side / d).
    assert_eq!(DecodeSize::AtLeast { width: 126, height: 1 }.jpeg_denominator(1001, 8, false), 8);
    assert_eq!(DecodeSize::AtLeast { width: 127, height: 1 }.jpeg_denominator(1001, 8, false), 4);
    // What preprocessing needs: the shorter side of timm's resize, only when the flag is set.
    let mut p = Preprocess::imagenet(224);
    assert_eq!(DecodeSize::for_preprocess(&p), DecodeSize::ShorterSideAtLeast(256));
    p.jpeg_dct_scaling = false;
    assert_eq!(DecodeSize::for_preprocess(&p), DecodeSize::Full);
}

#[test]
fn a_12_megapixel_photo_decoded_at_an_eighth_preprocesses_like_the_full_decode() {
    let img = photo(4000, 3000, 1);
    let bytes = encode_jpeg(&img, 90);
    let full = decode_bytes(&bytes, Path::new("p.jpg"), &limits()).unwrap();
    assert_eq!(full.scale_denominator, 1);
    for (size, expect_d) in [(224, 8), (384, 4), (112, 8)] {
        let p = Preprocess::imagenet(size);
        let scaled = decode_bytes_sized(
            &bytes,
            Path::new("p.jpg"),
            &limits(),
            DecodeSize::for_preprocess(&p),
        )
        .unwrap();
        assert_eq!(scaled.scale_denominator, expect_d, "{size}");
        assert_eq!(scaled.rgb.dimensions(), (4000 / expect_d, 3000 / expect_d));
        assert_eq!((scaled.original_width, scaled.original_height), (4000, 3000));
        assert!(scaled.rgb.height() >= p.resize_shorter_to());
        let (a, b) = (tensor(&full, &p), tensor(&scaled, &p));
        let (c, m) = (cosine(&a, &b), mean_levels(&a, &b));
        eprintln!("{size}: 1/{expect_d} decode vs full: cosine {c:.6}, mean {m:.2} levels");
        assert!(c >= 0.999, "{size}: cosine {c}, mean difference {m:.2} levels");
        assert!(m < 3.0, "{size}: mean difference {m:.2} levels (cosine {c})");
    }
}

#[test]
fn exif_orientation_6_and_8_are_kept_by_a_scaled_decode() {
    let img = photo(4000, 3000, 2);
    let plain = encode_jpeg(&img, 90);
    // Independently: the stored picture decoded in full, then turned by the image crate.
    let stored = decode_bytes(&plain, Path::new("plain.jpg"), &limits()).unwrap().rgb;
    let p = Preprocess::imagenet(224);
    let dir = tempfile::tempdir().unwrap();
    for (orientation, turned) in
        [(6, imageops::rotate90(&stored)), (8, imageops::rotate270(&stored))]
    {
        let path =
            write(dir.path(), &format!("o{orientation}.jpg"), &with_exif(&plain, orientation));
        let scaled = decode_file_sized(&path, &limits(), DecodeSize::for_preprocess(&p)).unwrap();
        assert_eq!(scaled.scale_denominator, 8, "orientation {orientation}");
        assert_eq!(scaled.rgb.dimensions(), (375, 500), "orientation {orientation}: turned");
        assert_eq!((scaled.original_width, scaled.original_height), (3000, 4000));
        let want = preprocess_to_array(&turned, &p).into_raw_vec_and_offset().0;
        let got = tensor(&scaled, &p);
        let c = cosine(&want, &got);
        assert!(c >= 0.999, "orientation {orientation}: cosine {c} with the turned full decode");
        // The check can tell: the picture turned the other way is far off.
        let other = if orientation == 6 {
            imageops::rotate270(&stored)
        } else {
            imageops::rotate90(&stored)
        };
        let wrong = preprocess_to_array(&other, &p).into_raw_vec_and_offset().0;
        assert!(cosine(&wrong, &got) < 0.99, "orientation {orientation}: turned the wrong way?");
        // prepare_file reports the upright full size.
        let (x, meta) = prepare_file(&path, &p, &limits()).unwrap();
        assert_eq!((meta.width, meta.height), (3000, 4000));
        assert_eq!(x.into_raw_vec_and_offset().0, got);
    }
}

/// A JPEG written by jpeg-encoder (CMYK, YCCK, greyscale and progressive files, which the image
/// crate's encoder cannot write).
fn jpeg_encoded(img: &RgbImage, color: jpeg_encoder::ColorType, progressive: bool) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let data: Vec<u8> = match color {
        jpeg_encoder::ColorType::Rgb => img.as_raw().clone(),
        jpeg_encoder::ColorType::Luma => img.pixels().map(|p| p[1]).collect(),
        // Plain CMYK from RGB with black generation.
        _ => img
            .pixels()
            .flat_map(|p| {
                let k = 255 - p.0.iter().copied().max().unwrap();
                let c = |v: u8| 255 - v - k;
                [c(p[0]), c(p[1]), c(p[2]), k]
            })
            .collect(),
    };
    let mut out = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, 90);
    encoder.set_progressive(progressive);
    encoder.encode(&data, w as u16, h as u16, color).unwrap();
    out
}

#[test]
fn cmyk_ycck_grey_and_progressive_jpegs_scale_like_their_full_decode() {
    use jpeg_encoder::ColorType;
    let img = photo(1600, 1200, 3);
    let p = Preprocess::imagenet(224);
    for (name, color, progressive) in [
        ("cmyk", ColorType::Cmyk, false),
        ("ycck", ColorType::CmykAsYcck, false),
        ("grey", ColorType::Luma, false),
        ("progressive", ColorType::Rgb, true),
        ("progressive cmyk", ColorType::Cmyk, true),
    ] {
        let bytes = jpeg_encoded(&img, color, progressive);
        let full = decode_bytes(&bytes, Path::new("x.jpg"), &limits()).unwrap();
        let scaled = decode_bytes_sized(
            &bytes,
            Path::new("x.jpg"),
            &limits(),
            DecodeSize::for_preprocess(&p),
        )
        .unwrap();
        assert_eq!(scaled.scale_denominator, 4, "{name}"); // 1200 / 4 = 300 ≥ 256
        assert_eq!(scaled.rgb.dimensions(), (400, 300), "{name}");
        if color == ColorType::Luma {
            assert!(scaled.rgb.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "{name}");
        }
        let (a, b) = (tensor(&full, &p), tensor(&scaled, &p));
        let (c, m) = (cosine(&a, &b), mean_levels(&a, &b));
        assert!(c >= 0.999 && m < 3.0, "{name}: cosine {c}, mean difference {m:.2} levels");
    }
}

#[test]
fn a_scaled_decode_keeps_the_limits() {
    // A bomb is refused from its header, as in a full decode.
    let mut bomb = encode_jpeg(&smooth(16, 16), 90);
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    let size = DecodeSize::ShorterSideAtLeast(256);
    let err = decode_bytes_sized(&bomb, Path::new("bomb.jpg"), &limits(), size).unwrap_err();
    assert!(matches!(err, Error::TooLarge { width: 60_000, height: 60_000, .. }), "{err:?}");

    // The memory budget still counts the full image (a progressive decode holds every DCT
    // coefficient at full size), and the error says so before decoding.
    let img = photo(1600, 1200, 4);
    let progressive = jpeg_encoded(&img, jpeg_encoder::ColorType::Rgb, true);
    let tight = DecodeLimits { max_alloc_bytes: 2_000_000, ..limits() };
    let err = decode_bytes_sized(&progressive, Path::new("p.jpg"), &tight, size).unwrap_err();
    assert!(matches!(err, Error::TooMuchMemory { limit: 2_000_000, .. }), "{err:?}");
    assert!(err.to_string().contains("p.jpg"), "{err}");

    // A truncated JPEG is refused, not decoded at a smaller scale with a grey half.
    let whole = encode_jpeg(&img, 90);
    let cut = &whole[..whole.len() * 2 / 3];
    let err = decode_bytes_sized(cut, Path::new("cut.jpg"), &limits(), size).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");

    // Other formats are decoded in full whatever the request.
    let png = encode(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Png);
    let decoded = decode_bytes_sized(&png, Path::new("p.png"), &limits(), size).unwrap();
    assert_eq!((decoded.scale_denominator, decoded.rgb.dimensions()), (1, (1600, 1200)));
    assert_eq!(decoded.rgb, img);
}

#[test]
fn the_preprocess_flag_decides_between_scaled_and_full_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.jpg", &encode_jpeg(&photo(2400, 1800, 5), 90));
    let mut p = Preprocess::imagenet(224);
    let full = decode_file_sized(&path, &limits(), DecodeSize::Full).unwrap();
    let scaled = decode_file_sized(&path, &limits(), DecodeSize::ShorterSideAtLeast(256)).unwrap();
    assert_eq!(scaled.scale_denominator, 4);
    let (x, meta) = prepare_file(&path, &p, &limits()).unwrap();
    assert_eq!(x.into_raw_vec_and_offset().0, tensor(&scaled, &p));
    assert_eq!((meta.width, meta.height), (2400, 1800));
    // A collection recorded before the flag: every pixel, exactly as before.
    p.jpeg_dct_scaling = false;
    let (x, _) = prepare_file(&path, &p, &limits()).unwrap();
    assert_eq!(x.into_raw_vec_and_offset().0, tensor(&full, &p));
}

/// Whether the tests run with libjpeg-turbo: under the README's test command
/// (IRTDB_TEST_STRICT=1, which installs libturbojpeg0) it must be there.
fn turbo_or_skip(test: &str) -> bool {
    match irtdb_image::turbo::library() {
        Ok(_) => true,
        Err(why) => {
            let strict = std::env::var_os("IRTDB_TEST_STRICT").is_some_and(|v| v == "1");
            assert!(!strict, "{test}: libjpeg-turbo is needed: {why}");
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

#[test]
fn libjpeg_turbo_and_jpeg_decoder_give_the_same_scaled_pixels() {
    if !turbo_or_skip("libjpeg_turbo_and_jpeg_decoder_give_the_same_scaled_pixels") {
        return;
    }
    let img = photo(2000, 1500, 6);
    for (name, bytes) in [
        ("baseline 4:2:0", encode_jpeg(&img, 90)),
        ("progressive", jpeg_encoded(&img, jpeg_encoder::ColorType::Rgb, true)),
        ("grey", jpeg_encoded(&img, jpeg_encoder::ColorType::Luma, false)),
    ] {
        for d in [2u32, 4, 8] {
            let turbo = irtdb_image::turbo::decode_scaled(&bytes, 2000, 1500, d).unwrap();
            // Independently: jpeg-decoder's own scaled decode of the same stream.
            let mut other = jpeg_decoder::Decoder::new(bytes.as_slice());
            other.read_info().unwrap();
            let want = (2000u32.div_ceil(d), 1500u32.div_ceil(d));
            let (w, h) = other.scale(want.0 as u16, want.1 as u16).unwrap();
            assert_eq!((u32::from(w), u32::from(h)), want, "{name} 1/{d}");
            let pixels = other.decode().unwrap();
            let rgb: Vec<u8> = match other.info().unwrap().pixel_format {
                jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
                _ => pixels,
            };
            assert_eq!(turbo.len(), rgb.len(), "{name} 1/{d}");
            let mean = turbo.iter().zip(&rgb).map(|(a, b)| a.abs_diff(*b) as f64).sum::<f64>()
                / rgb.len() as f64;
            // Both are libjpeg's scaled IDCTs; they differ in rounding and in chroma upsampling.
            assert!(mean < 2.0, "{name} 1/{d}: mean difference {mean:.2} levels");
        }
    }
    // Not handled (the caller decodes CMYK another way), and damaged data is an error.
    let cmyk = jpeg_encoded(&img, jpeg_encoder::ColorType::Cmyk, false);
    assert!(matches!(
        irtdb_image::turbo::decode_scaled(&cmyk, 2000, 1500, 8),
        Err(irtdb_image::turbo::Failure::NotHandled)
    ));
    let mut broken = encode_jpeg(&img, 90);
    let sof = broken.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    broken[sof + 9] = 7; // seven components
    assert!(matches!(
        irtdb_image::turbo::decode_scaled(&broken, 2000, 1500, 8),
        Err(irtdb_image::turbo::Failure::Corrupt(_))
    ));
}

#[test]
fn a_half_scale_decode_preprocesses_like_the_full_decode() {
    if !turbo_or_skip("a_half_scale_decode_preprocesses_like_the_full_decode") {
        return;
    }
    let img = photo(1000, 900, 7);
    let bytes = encode_jpeg(&img, 90);
    let p = Preprocess::imagenet(224);
    let full = decode_bytes(&bytes, Path::new("h.jpg"), &limits()).unwrap();
    let half =
        decode_bytes_sized(&bytes, Path::new("h.jpg"), &limits(), DecodeSize::for_preprocess(&p))
            .unwrap();
    assert_eq!((half.scale_denominator, half.rgb.dimensions()), (2, (500, 450)));
    let (a, b) = (tensor(&full, &p), tensor(&half, &p));
    let (c, m) = (cosine(&a, &b), mean_levels(&a, &b));
    assert!(c >= 0.999 && m < 3.0, "1/2: cosine {c}, mean difference {m:.2} levels");
}
