//! irtdb-onnx's position-embedding resampling (used by both plugins for `--input-size`) against
//! libtorch's own antialiased bicubic interpolation, which is what timm's
//! `resample_abs_pos_embed` calls (`F.interpolate(mode="bicubic", antialias=True)`).

use tch::Tensor;

#[test]
fn bicubic_aa_matches_libtorch() {
    // Shrinking (DINOv2's 37×37 grid to 16×16 for 224 input), enlarging, non-square both ways.
    for (c, [h, w], [oh, ow]) in [
        (8usize, [37usize, 37usize], [16usize, 16usize]),
        (5, [14, 14], [37, 37]),
        (3, [7, 9], [12, 5]),
        (4, [24, 24], [16, 16]),
        (2, [4, 4], [3, 3]),
    ] {
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i as f32) * 0.731).sin() + 0.3 * ((i as f32) * 0.117).cos())
            .collect();
        let t = Tensor::from_slice(&data).reshape([1, c as i64, h as i64, w as i64]);
        let want = t.internal_upsample_bicubic2d_aa([oh as i64, ow as i64], false, None, None);
        let want: Vec<f32> = Vec::<f32>::try_from(want.flatten(0, -1)).unwrap();
        let got = irtdb_onnx::resample::bicubic_aa(&data, c, [h, w], [oh, ow]);
        assert_eq!(got.len(), want.len());
        let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max < 2e-5, "{h}x{w} → {oh}x{ow}: max |Δ| {max}");
    }
}
