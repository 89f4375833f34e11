//! timm's evaluation transform, reproduced on [`RgbImage`]s.
//!
//! A descriptor is only comparable with the ones it is searched against if every image went
//! through the same transform as at training time. timm's eval pipeline for ViT/DeiT is
//! `Resize(floor(size / crop_pct))` (shorter side, aspect kept, PIL bicubic with antialiasing),
//! `CenterCrop(size)`, `ToTensor()`, `Normalize(mean, std)`; this module follows torchvision's
//! definitions of each step, including its integer rounding, and writes CHW f32.
//!
//! The resize uses `fast_image_resize`, whose convolution resampler computes its coefficients as
//! Pillow does (Catmull-Rom with a = -0.5, support widened when shrinking, two 8-bit passes).
//! Only the pixels that survive the centre crop are computed: resizing the matching source region
//! with the same scale gives the same values as resizing everything and then cropping, as in
//! Pillow, because the filter window is clipped to the whole image, not to the region.

use std::cell::RefCell;

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use irtdb_core::{Interpolation, Preprocess};
use ndarray::Array3;

/// Preprocesses `img` into `out`, laid out CHW (`[3, H, W]` with `[H, W] = p.size`).
///
/// Steps, as timm's eval transform: resize so that the shorter side is `p.resize_shorter_to()`
/// and the longer side `floor(shorter_target × long / short)` (torchvision `Resize(int)`), with
/// `p.interpolation`; centre-crop to `p.size` with torchvision's offsets
/// (`round((h - crop_h) / 2)`, halves to even); then `(x / 255 - mean[c]) / std[c]` per channel,
/// RGB order.
///
/// # Panics
/// If `out.len() != 3 × H × W`, or if `p` fails [`Preprocess::validate`].
pub fn preprocess(img: &RgbImage, p: &Preprocess, out: &mut [f32]) {
    if let Err(e) = p.validate() {
        panic!("irtdb_image::preprocess called with invalid settings: {e}");
    }
    let [crop_h, crop_w] = p.size;
    let plane = crop_h as usize * crop_w as usize;
    assert_eq!(out.len(), 3 * plane, "preprocess: output buffer must hold 3×{crop_h}×{crop_w}");

    let cropped = resize_and_crop(img, p);
    let lut = normalisation_table(p);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (i, px) in cropped.as_raw().chunks_exact(3).enumerate() {
        r[i] = lut[0][px[0] as usize];
        g[i] = lut[1][px[1] as usize];
        b[i] = lut[2][px[2] as usize];
    }
}

/// [`preprocess`] into a new `[3, H, W]` array.
///
/// # Panics
/// If `p` fails [`Preprocess::validate`].
pub fn preprocess_to_array(img: &RgbImage, p: &Preprocess) -> Array3<f32> {
    let [h, w] = p.size;
    let mut out = Array3::zeros((3, h as usize, w as usize));
    preprocess(img, p, out.as_slice_mut().expect("a new array is contiguous"));
    out
}

/// `(v / 255 - mean) / std` for every byte value and channel, computed in f32 in the same order
/// as torchvision's `ToTensor` + `Normalize`, so the table gives bit-identical values.
pub(crate) fn normalisation_table(p: &Preprocess) -> [[f32; 256]; 3] {
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, x) in table.iter_mut().enumerate() {
            *x = (v as f32 / 255.0 - p.mean[c]) / p.std[c];
        }
    }
    lut
}

/// Size after torchvision's `Resize(shorter)`: the shorter side becomes `shorter`, the longer
/// `int(shorter * long / short)` (truncated). Returns `(width, height)`.
pub(crate) fn resized_size(width: u32, height: u32, shorter: u32) -> (u32, u32) {
    let scaled = |long: u32, short: u32| {
        (u64::from(shorter) * u64::from(long) / u64::from(short)).min(u64::from(u32::MAX)) as u32
    };
    if width <= height {
        (shorter, scaled(height, width))
    } else {
        (scaled(width, height), shorter)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((size - crop) / 2.0))`, where Python's `round`
/// sends halves to the even neighbour.
pub(crate) fn crop_offset(size: u32, crop: u32) -> u32 {
    let diff = size.saturating_sub(crop);
    let half = diff / 2;
    if diff % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// The centre crop of the resized image, as an RGB image of `p.size`.
fn resize_and_crop(img: &RgbImage, p: &Preprocess) -> RgbImage {
    let [crop_h, crop_w] = p.size;
    let (width, height) = img.dimensions();
    let (resized_w, resized_h) = resized_size(width, height, p.resize_shorter_to());
    let left = crop_offset(resized_w, crop_w);
    let top = crop_offset(resized_h, crop_h);
    resize_crop(img, [resized_w, resized_h], [left, top], [crop_w, crop_h], p.interpolation)
}

/// The `crop` (width, height) at `[left, top]` of `img` resized to `resized` (width, height),
/// computing only the pixels of the crop. The crop must lie inside the resized image.
pub(crate) fn resize_crop(
    img: &RgbImage,
    [resized_w, resized_h]: [u32; 2],
    [left, top]: [u32; 2],
    [crop_w, crop_h]: [u32; 2],
    interpolation: Interpolation,
) -> RgbImage {
    let (width, height) = img.dimensions();
    if (resized_w, resized_h) == (width, height) {
        return crop_copy(img, left, top, crop_w, crop_h);
    }
    let filter = match interpolation {
        Interpolation::Bicubic => FilterType::CatmullRom,
        Interpolation::Bilinear => FilterType::Bilinear,
        Interpolation::Nearest => {
            let region = Region::of(width, resized_w, left, crop_w);
            let rows = Region::of(height, resized_h, top, crop_h);
            let (w, h, raw) = (width, height, img.as_raw());
            return resize_region(raw, w, h, ResizeAlg::Nearest, region, rows, crop_w, crop_h);
        }
    };
    let algorithm = ResizeAlg::Convolution(filter);

    // Pillow resamples horizontally first and rounds to 8 bits in between; fast_image_resize
    // would go vertically first for 8-bit images, which changes the rounding (by several levels
    // on high-contrast edges). So the passes are run one at a time, in Pillow's order.
    // The horizontal pass only needs the source rows that the vertical filter will read (as in
    // Pillow); the margin keeps the vertical window clear of the band's cut edges.
    let rows = Region::of(height, resized_h, top, crop_h);
    let (band_start, band_end) = if resized_h == height {
        (top, top + crop_h)
    } else {
        let support = filter_support(filter) * (f64::from(height) / f64::from(resized_h)).max(1.0);
        let first = (rows.start - support - 1.0).floor().max(0.0) as u32;
        let last = (rows.start + rows.len + support + 1.0).ceil().min(f64::from(height)) as u32;
        (first, last)
    };
    let band_h = band_end - band_start;
    let horizontal = if resized_w == width {
        crop_copy(img, left, band_start, crop_w, band_h)
    } else {
        let row_bytes = width as usize * 3;
        let band = &img.as_raw()[band_start as usize * row_bytes..band_end as usize * row_bytes];
        let columns = Region::of(width, resized_w, left, crop_w);
        resize_region(
            band,
            width,
            band_h,
            algorithm,
            columns,
            Region::whole(band_h),
            crop_w,
            band_h,
        )
    };
    if resized_h == height {
        return horizontal;
    }
    let rows = Region { start: rows.start - f64::from(band_start), len: rows.len }.clamped(band_h);
    resize_region(
        horizontal.as_raw(),
        crop_w,
        band_h,
        algorithm,
        Region::whole(crop_w),
        rows,
        crop_w,
        crop_h,
    )
}

/// Half-width of the filter kernel at scale 1, in source pixels (as in Pillow).
fn filter_support(filter: FilterType) -> f64 {
    match filter {
        FilterType::Bilinear => 1.0,
        _ => 2.0, // Catmull-Rom
    }
}

/// A span of the source (in source pixels) that maps onto the output's span.
#[derive(Clone, Copy, Debug)]
struct Region {
    start: f64,
    len: f64,
}

impl Region {
    /// The source span of `source` pixels that lands on `[offset, offset + len)` once the whole
    /// axis is resized to `resized`: same scale as the full resize, so every filter centre falls
    /// where it would in the full resized image (the filter window is clipped to the whole
    /// source, not to the span, as in Pillow).
    fn of(source: u32, resized: u32, offset: u32, len: u32) -> Self {
        let scale = f64::from(source) / f64::from(resized);
        Self { start: f64::from(offset) * scale, len: f64::from(len) * scale }.clamped(source)
    }

    /// Guards against a rounding step past the edge of a source of `size` pixels.
    fn clamped(self, size: u32) -> Self {
        Self { start: self.start, len: self.len.min(f64::from(size) - self.start) }
    }

    fn whole(source: u32) -> Self {
        Self { start: 0.0, len: f64::from(source) }
    }
}

#[allow(clippy::too_many_arguments)]
fn resize_region(
    src: &[u8],
    src_w: u32,
    src_h: u32,
    algorithm: ResizeAlg,
    columns: Region,
    rows: Region,
    out_w: u32,
    out_h: u32,
) -> RgbImage {
    let options = ResizeOptions::new().resize_alg(algorithm).use_alpha(false).crop(
        columns.start,
        rows.start,
        columns.len,
        rows.len,
    );
    let src = ImageRef::new(src_w, src_h, src, PixelType::U8x3)
        .expect("the buffer holds width × height × 3 bytes");
    let mut dst = Image::new(out_w, out_h, PixelType::U8x3);
    RESIZER
        .with(|r| r.borrow_mut().resize(&src, &mut dst, &options))
        .expect("both images are U8x3, non-empty, and the region lies inside the source");
    RgbImage::from_raw(out_w, out_h, dst.into_vec()).expect("the buffer has out_w × out_h × 3")
}

/// Copies the `crop_w × crop_h` window at (`left`, `top`); pixels outside `img` stay black, as
/// torchvision pads a crop larger than the image.
fn crop_copy(img: &RgbImage, left: u32, top: u32, crop_w: u32, crop_h: u32) -> RgbImage {
    if (left, top, crop_w, crop_h) == (0, 0, img.width(), img.height()) {
        return img.clone();
    }
    let mut out = RgbImage::new(crop_w, crop_h);
    let copy_w = crop_w.min(img.width().saturating_sub(left)) as usize;
    for y in 0..crop_h.min(img.height().saturating_sub(top)) {
        let src_start = ((top + y) as usize * img.width() as usize + left as usize) * 3;
        let dst_start = y as usize * crop_w as usize * 3;
        out.as_mut()[dst_start..dst_start + copy_w * 3]
            .copy_from_slice(&img.as_raw()[src_start..src_start + copy_w * 3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_sizes() {
        // torchvision: new_long = int(256 * long / short).
        assert_eq!(resized_size(500, 333, 256), (384, 256));
        assert_eq!(resized_size(333, 500, 256), (256, 384));
        assert_eq!(resized_size(640, 480, 256), (341, 256));
        assert_eq!(resized_size(300, 300, 256), (256, 256));
        assert_eq!(resized_size(1, 1000, 256), (256, 256_000));
    }

    #[test]
    fn python_round_half_to_even_offsets() {
        assert_eq!(crop_offset(224, 224), 0);
        assert_eq!(crop_offset(225, 224), 0); // round(0.5) = 0
        assert_eq!(crop_offset(226, 224), 1);
        assert_eq!(crop_offset(227, 224), 2); // round(1.5) = 2
        assert_eq!(crop_offset(229, 224), 2); // round(2.5) = 2
        assert_eq!(crop_offset(231, 224), 4); // round(3.5) = 4
        assert_eq!(crop_offset(256, 224), 16);
        assert_eq!(crop_offset(341, 224), 58); // round(58.5) = 58
    }

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                ((x * 7 + y * 3) % 256) as u8,
                ((x * x + y * 5) % 251) as u8,
                (((x ^ y) * 13) % 256) as u8,
            ])
        })
    }

    /// Full-image resize with fast_image_resize, one pass at a time in Pillow's order.
    fn full_resize(img: &RgbImage, alg: ResizeAlg, rw: u32, rh: u32) -> RgbImage {
        let mut cur = img.clone();
        for (w, h) in [(rw, img.height()), (rw, rh)] {
            if (w, h) == cur.dimensions() {
                continue;
            }
            let src =
                ImageRef::new(cur.width(), cur.height(), cur.as_raw(), PixelType::U8x3).unwrap();
            let mut dst = Image::new(w, h, PixelType::U8x3);
            Resizer::new().resize(&src, &mut dst, &ResizeOptions::new().resize_alg(alg)).unwrap();
            cur = RgbImage::from_raw(w, h, dst.into_vec()).unwrap();
        }
        cur
    }

    /// Resizing only the cropped region (and only the rows it needs) must equal "resize
    /// everything, then crop".
    #[test]
    fn cropped_resize_equals_full_resize_then_crop() {
        for interpolation in
            [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest]
        {
            for (w, h) in [(640, 480), (480, 640), (333, 500), (97, 61), (1000, 300), (256, 700)] {
                let img = pattern(w, h);
                let mut p = Preprocess::imagenet(224);
                p.interpolation = interpolation;
                let fast = resize_and_crop(&img, &p);

                let (rw, rh) = resized_size(w, h, p.resize_shorter_to());
                let alg = match interpolation {
                    Interpolation::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
                    Interpolation::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
                    Interpolation::Nearest => ResizeAlg::Nearest,
                };
                let full = full_resize(&img, alg, rw, rh);
                let slow = crop_copy(&full, crop_offset(rw, 224), crop_offset(rh, 224), 224, 224);

                let diffs: Vec<u8> =
                    fast.as_raw().iter().zip(slow.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
                let max = diffs.iter().max().copied().unwrap();
                let differing = diffs.iter().filter(|d| **d != 0).count();
                // fast_image_resize picks its fixed-point precision from the largest coefficient
                // it computes, which depends on the region: a value may round one level apart.
                assert!(
                    max <= 1 && differing <= diffs.len() / 100,
                    "{interpolation:?} {w}×{h}: max diff {max}, {differing} values differ"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "crop_pct")]
    fn invalid_settings_panic_with_the_reason() {
        let mut p = Preprocess::imagenet(8);
        p.crop_pct = 0.0;
        preprocess_to_array(&RgbImage::new(8, 8), &p);
    }
}
