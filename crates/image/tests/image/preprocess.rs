//! The timm eval transform against independent computations.

use image::{Rgb, RgbImage};
use irtdb_core::{Interpolation, Preprocess};
use irtdb_image::{preprocess, preprocess_to_array};

use crate::util::pattern;

fn settings(h: u32, w: u32, crop_pct: f32) -> Preprocess {
    Preprocess { size: [h, w], crop_pct, ..Preprocess::imagenet(224) }
}

/// Settings whose normalisation is the identity up to /255, to read the resized bytes back.
fn raw(h: u32, w: u32, crop_pct: f32) -> Preprocess {
    Preprocess { mean: [0.0; 3], std: [1.0; 3], ..settings(h, w, crop_pct) }
}

fn bytes_of(out: &ndarray::Array3<f32>) -> Vec<[i32; 3]> {
    let (_, h, w) = out.dim();
    (0..h * w).map(|i| [0, 1, 2].map(|c| (out[[c, i / w, i % w]] * 255.0).round() as i32)).collect()
}

#[test]
fn target_sized_image_is_only_normalised() {
    let img = pattern(224, 224);
    let mut p = Preprocess::imagenet(224);
    p.crop_pct = 1.0;
    let out = preprocess_to_array(&img, &p);
    assert_eq!(out.dim(), (3, 224, 224));
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let expected = (f32::from(px[c]) / 255.0 - p.mean[c]) / p.std[c];
            assert_eq!(out[[c, y as usize, x as usize]], expected, "c={c} x={x} y={y}");
        }
    }
}

#[test]
fn writes_into_a_caller_buffer() {
    let img = pattern(50, 40);
    let p = settings(32, 32, 0.875);
    let mut buf = vec![f32::NAN; 3 * 32 * 32];
    preprocess(&img, &p, &mut buf);
    assert_eq!(buf, preprocess_to_array(&img, &p).into_raw_vec_and_offset().0);
}

#[test]
fn mean_and_std_are_per_channel_in_rgb_order() {
    let img = RgbImage::from_pixel(16, 16, Rgb([10, 128, 250]));
    let p = Preprocess {
        size: [16, 16],
        crop_pct: 1.0,
        interpolation: Interpolation::Bicubic,
        mean: [0.1, 0.2, 0.3],
        std: [0.5, 0.25, 0.125],
        alpha_background: irtdb_core::AlphaBackground::DEFAULT,
        jpeg_dct_scaling: true,
    };
    let out = preprocess_to_array(&img, &p);
    for (c, v) in [10.0f32, 128.0, 250.0].into_iter().enumerate() {
        let expected = (v / 255.0 - p.mean[c]) / p.std[c];
        assert!(out.index_axis(ndarray::Axis(0), c).iter().all(|&x| x == expected), "channel {c}");
    }
}

/// Three vertical bands; a centre crop of a 2:1 image must keep the middle one.
fn bands(w: u32, h: u32, first_end: u32, second_end: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, _| match x {
        x if x < first_end => Rgb([255, 0, 0]),
        x if x < second_end => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    })
}

#[test]
fn centre_crop_without_resize_takes_exactly_the_centre() {
    // 200×100 → shorter side already 100: no resize, crop columns 50..150.
    let out = preprocess_to_array(&bands(200, 100, 50, 150), &raw(100, 100, 1.0));
    assert_eq!(out.dim(), (3, 100, 100));
    assert!(bytes_of(&out).iter().all(|px| *px == [0, 255, 0]));
}

#[test]
fn centre_crop_after_resize_is_centred() {
    // 600×300 → 512×256 (crop_pct 0.875), crop 224 at left = 144, i.e. source x 168.75..431.25:
    // about 26.7 red columns, green, about 26.7 blue columns.
    let out = preprocess_to_array(&bands(600, 300, 200, 400), &raw(224, 224, 0.875));
    assert_eq!(out.dim(), (3, 224, 224));
    let row: Vec<[i32; 3]> = bytes_of(&out)[100 * 224..101 * 224].to_vec();
    let is = |px: &[i32; 3], c: usize| {
        px[c] > 200 && px.iter().enumerate().all(|(i, v)| i == c || *v < 55)
    };
    assert!(is(&row[0], 0) && is(&row[20], 0), "left edge is red: {:?}", &row[..3]);
    assert!(is(&row[112], 1) && is(&row[40], 1) && is(&row[183], 1), "centre is green");
    assert!(is(&row[223], 2) && is(&row[203], 2), "right edge is blue");
    let red = row.iter().filter(|p| p[0] > 128).count();
    let blue = row.iter().filter(|p| p[2] > 128).count();
    assert!((26..=28).contains(&red) && red.abs_diff(blue) <= 1, "red {red}, blue {blue}");
}

#[test]
fn portrait_and_odd_offsets_follow_torchvision() {
    // A column/row index image read back after a crop without resize: offsets are
    // round((size - crop) / 2) with halves to even, as torchvision's CenterCrop.
    for (w, h, left, top) in
        [(101, 100, 0, 0), (103, 100, 2, 0), (100, 105, 0, 2), (100, 107, 0, 4)]
    {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 0]));
        let out = preprocess_to_array(&img, &raw(100, 100, 1.0));
        let px = bytes_of(&out);
        assert_eq!(px[0], [left, top, 0], "{w}×{h}");
        assert_eq!(px[99 * 100 + 99], [left + 99, top + 99, 0], "{w}×{h}");
    }
}

#[test]
fn non_square_size_output_shape() {
    let out = preprocess_to_array(&pattern(300, 200), &settings(96, 128, 0.9));
    assert_eq!(out.dim(), (3, 96, 128));
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn constant_image_stays_constant() {
    for interpolation in [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest] {
        for (w, h) in [(640, 480), (97, 300), (50, 50)] {
            let img = RgbImage::from_pixel(w, h, Rgb([37, 150, 222]));
            let p = Preprocess { interpolation, ..raw(224, 224, 0.875) };
            let out = preprocess_to_array(&img, &p);
            assert!(
                bytes_of(&out).iter().all(|px| *px == [37, 150, 222]),
                "{interpolation:?} {w}×{h}"
            );
        }
    }
}

#[test]
fn smooth_gradient_downscale_is_the_gradient() {
    // R = x / 2 over 512 columns, G = y / 2; shrinking 4× averages 4 source pixels:
    // output column i ≈ mean(x/2 for x in 4i..4i+4) = 2i + 0.75.
    let img = RgbImage::from_fn(512, 512, |x, y| Rgb([(x / 2) as u8, (y / 2) as u8, 128]));
    let out = preprocess_to_array(&img, &raw(128, 128, 1.0));
    let px = bytes_of(&out);
    for i in 2..126 {
        let expected = 2.0 * i as f32 + 0.75;
        let r = px[64 * 128 + i][0] as f32;
        let g = px[i * 128 + 64][1] as f32;
        assert!((r - expected).abs() <= 1.0, "column {i}: {r} vs {expected}");
        assert!((g - expected).abs() <= 1.0, "row {i}: {g} vs {expected}");
    }
}

/// Pillow's `ImagingResample` for 8-bit images with the bicubic filter, transcribed from
/// `libImaging/Resample.c`: coefficients in f64, fixed point with 22 fractional bits, the
/// horizontal pass first, 8-bit intermediate.
mod pillow {
    const PRECISION_BITS: u32 = 22;

    fn bicubic(x: f64) -> f64 {
        let a = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * a
        } else {
            0.0
        }
    }

    /// Per output pixel: first input index and fixed-point weights.
    fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i64>)> {
        let scale = f64::from(in_size) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = 2.0 * filterscale;
        (0..out_size)
            .map(|xx| {
                let center = (f64::from(xx) + 0.5) * scale;
                let ss = 1.0 / filterscale;
                let xmin = ((center - support + 0.5) as i64).max(0); // C (int) truncates
                let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
                let w: Vec<f64> = (0..xmax)
                    .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) * ss))
                    .collect();
                let total: f64 = w.iter().sum();
                let fixed = w
                    .iter()
                    .map(|k| {
                        let k = if total != 0.0 { k / total } else { *k };
                        let scaled = k * f64::from(1u32 << PRECISION_BITS);
                        if k < 0.0 {
                            (scaled - 0.5) as i64
                        } else {
                            (scaled + 0.5) as i64
                        }
                    })
                    .collect();
                (xmin as usize, fixed)
            })
            .collect()
    }

    fn clip8(v: i64) -> u8 {
        if v >= (1i64 << PRECISION_BITS << 8) {
            255
        } else if v <= 0 {
            0
        } else {
            (v >> PRECISION_BITS) as u8
        }
    }

    /// Resizes an RGB8 buffer (`w × h`) to `ow × oh`.
    pub fn resize(src: &[u8], w: u32, h: u32, ow: u32, oh: u32) -> Vec<u8> {
        let mut cur = src.to_vec();
        let mut cur_w = w;
        if ow != w {
            let k = coefficients(w, ow);
            let mut out = vec![0u8; (ow * h * 3) as usize];
            for y in 0..h as usize {
                for (xx, (xmin, ws)) in k.iter().enumerate() {
                    for c in 0..3 {
                        let mut ss = 1i64 << (PRECISION_BITS - 1);
                        for (x, wt) in ws.iter().enumerate() {
                            ss += i64::from(cur[(y * w as usize + xmin + x) * 3 + c]) * wt;
                        }
                        out[(y * ow as usize + xx) * 3 + c] = clip8(ss);
                    }
                }
            }
            cur = out;
            cur_w = ow;
        }
        if oh != h {
            let k = coefficients(h, oh);
            let mut out = vec![0u8; (cur_w * oh * 3) as usize];
            for (yy, (ymin, ws)) in k.iter().enumerate() {
                for x in 0..cur_w as usize {
                    for c in 0..3 {
                        let mut ss = 1i64 << (PRECISION_BITS - 1);
                        for (y, wt) in ws.iter().enumerate() {
                            ss += i64::from(cur[((ymin + y) * cur_w as usize + x) * 3 + c]) * wt;
                        }
                        out[(yy * cur_w as usize + x) * 3 + c] = clip8(ss);
                    }
                }
            }
            cur = out;
        }
        cur
    }
}

/// The whole transform (resize + crop) against Pillow's resampler and torchvision's geometry,
/// computed independently here.
#[test]
fn matches_pillow_bicubic_and_torchvision_geometry() {
    let mut worst = 0;
    let mut differing = 0usize;
    let mut total = 0usize;
    for (w, h, size, crop_pct) in
        [(640, 480, 224, 0.875), (333, 500, 224, 0.875), (97, 61, 64, 0.9), (300, 300, 96, 1.0)]
    {
        let img = pattern(w, h);
        let p = raw(size, size, crop_pct);
        let out = bytes_of(&preprocess_to_array(&img, &p));

        // torchvision Resize(int): shorter side → s, longer → int(s * long / short).
        let s = (size as f64 / crop_pct as f64).floor() as u32;
        let (rw, rh) = if w <= h { (s, s * h / w) } else { (s * w / h, s) };
        let reference = pillow::resize(img.as_raw(), w, h, rw, rh);
        // torchvision CenterCrop: int(round((dim - crop) / 2.0)), Python rounds halves to even.
        let offset = |dim: u32| ((dim - size) as f64 / 2.0).round_ties_even() as usize;
        let (left, top) = (offset(rw), offset(rh));
        for y in 0..size as usize {
            for x in 0..size as usize {
                for c in 0..3 {
                    let expected =
                        i32::from(reference[((top + y) * rw as usize + left + x) * 3 + c]);
                    let got = out[y * size as usize + x][c];
                    let diff = (got - expected).abs();
                    worst = worst.max(diff);
                    differing += usize::from(diff != 0);
                    total += 1;
                }
            }
        }
    }
    let share = differing as f64 / total as f64;
    eprintln!("vs Pillow: worst {worst}, {:.3}% of values differ", share * 100.0);
    // fast_image_resize keeps about 14 bits of coefficient precision where Pillow keeps 22: an
    // occasional value lands one level off after each of the two passes.
    assert!(worst <= 2, "worst difference {worst}");
    assert!(share < 0.01, "{:.3}% of values differ", share * 100.0);
}

#[test]
fn same_image_twice_gives_identical_tensors() {
    let img = pattern(321, 123);
    let p = Preprocess::imagenet(224);
    assert_eq!(preprocess_to_array(&img, &p), preprocess_to_array(&img, &p));
}
