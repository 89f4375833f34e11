//! Image decoding and preprocessing on arbitrary bytes: `decode_bytes` must return an image or an
//! error: a decoder panic that it catches is fine (see `irtdb_fuzz::guarded`), one that escapes
//! it, an abort, or an allocation past the limits is a finding; and
//! `preprocess_to_array` must turn any decoded image into finite values of the requested size.
//!
//! The first two bytes choose the preprocessing (size, crop, interpolation); limits are smaller
//! than irtdb's defaults so that a legitimate large image cannot exhaust the fuzzer's memory,
//! and going over them is exactly what must not happen.
#![no_main]

use std::path::Path;

use irtdb_core::{Interpolation, Preprocess};
use irtdb_image::{decode_bytes, preprocess_to_array, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| irtdb_fuzz::guarded(|| one_input(data)));

fn one_input(data: &[u8]) {
    let [a, b, bytes @ ..] = data else { return };
    let limits = DecodeLimits { max_pixels: 4_000_000, max_alloc_bytes: 64 << 20 };
    let Ok(img) = decode_bytes(bytes, Path::new("fuzz-input"), &limits) else { return };
    assert_eq!((img.rgb.width(), img.rgb.height()), (img.original_width, img.original_height));
    let mut p = Preprocess::imagenet(8 + u32::from(a % 32));
    p.size[1] = 8 + u32::from(b % 32);
    p.crop_pct = [0.875, 1.0, 0.5, 0.95][usize::from(a >> 6)];
    p.interpolation = [Interpolation::Bicubic, Interpolation::Bilinear, Interpolation::Nearest]
        [usize::from(b >> 6) % 3];
    let x = preprocess_to_array(&img.rgb, &p);
    assert_eq!(x.shape(), [3, p.size[0] as usize, p.size[1] as usize]);
    assert!(x.iter().all(|v| v.is_finite()));
}
