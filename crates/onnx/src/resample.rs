//! Position-embedding resampling for running a ViT at another input size, as timm's
//! `resample_abs_pos_embed` does it: the patch-grid rows reshaped to `[D, gh, gw]`, resized with
//! `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`, prefix rows (class,
//! distillation, registers) kept apart and unchanged.
//!
//! PyTorch's antialiased bicubic is separable: per axis, output `i` is a normalised weighted
//! sum of inputs around `center = scale·(i + ½)` with the cubic kernel (a = −½, as PIL) stretched
//! by `scale = in / out` when shrinking (support `2·scale`), plain when enlarging (support 2).
//! The tch plugin's tests check this against libtorch's own `_upsample_bicubic2d_aa`.

/// The cubic convolution kernel PyTorch uses for antialiased bicubic (a = −0.5).
fn cubic_aa(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output index along an axis of `input` → `output` samples: the first input index and
/// the normalised weights.
fn axis_weights(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let (support, invscale) = if scale >= 1.0 { (2.0 * scale, 1.0 / scale) } else { (2.0, 1.0) };
    (0..output)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64).max(0) as usize;
            let mut w: Vec<f64> =
                (xmin..xmax).map(|j| cubic_aa((j as f64 - center + 0.5) * invscale)).collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Resizes `channels` planes of `[in_h, in_w]` (channel-major) to `[out_h, out_w]` with
/// PyTorch's antialiased bicubic (`align_corners=False`): width first, then height.
pub fn bicubic_aa(
    data: &[f32],
    channels: usize,
    [in_h, in_w]: [usize; 2],
    [out_h, out_w]: [usize; 2],
) -> Vec<f32> {
    assert_eq!(data.len(), channels * in_h * in_w, "bicubic_aa: data is not [C, H, W]");
    let wx = axis_weights(in_w, out_w);
    let wy = axis_weights(in_h, out_h);
    // Width pass: [C, in_h, out_w].
    let mut mid = vec![0f64; channels * in_h * out_w];
    for c in 0..channels {
        for y in 0..in_h {
            let row = &data[(c * in_h + y) * in_w..][..in_w];
            for (x, (x0, w)) in wx.iter().enumerate() {
                mid[(c * in_h + y) * out_w + x] =
                    w.iter().enumerate().map(|(k, &wk)| wk * row[x0 + k] as f64).sum();
            }
        }
    }
    // Height pass: [C, out_h, out_w].
    let mut out = vec![0f32; channels * out_h * out_w];
    for c in 0..channels {
        for (y, (y0, w)) in wy.iter().enumerate() {
            for x in 0..out_w {
                let v: f64 = w
                    .iter()
                    .enumerate()
                    .map(|(k, &wk)| wk * mid[(c * in_h + y0 + k) * out_w + x])
                    .sum();
                out[(c * out_h + y) * out_w + x] = v as f32;
            }
        }
    }
    out
}

/// Resamples a `[1, prefix + gh·gw, D]` position embedding to the grid `[new_h, new_w]`;
/// the first `prefix` rows are kept as they are.
pub fn resample_pos_embed(
    pos: &[f32],
    dim: usize,
    prefix: usize,
    [gh, gw]: [usize; 2],
    [new_h, new_w]: [usize; 2],
) -> Vec<f32> {
    assert_eq!(pos.len(), (prefix + gh * gw) * dim, "pos_embed is not [1, prefix + gh·gw, D]");
    if [gh, gw] == [new_h, new_w] {
        return pos.to_vec();
    }
    let grid = &pos[prefix * dim..];
    // [gh·gw, D] → [D, gh, gw]
    let mut planes = vec![0f32; dim * gh * gw];
    for t in 0..gh * gw {
        for d in 0..dim {
            planes[d * gh * gw + t] = grid[t * dim + d];
        }
    }
    let resized = bicubic_aa(&planes, dim, [gh, gw], [new_h, new_w]);
    let mut out = pos[..prefix * dim].to_vec();
    out.reserve(new_h * new_w * dim);
    for t in 0..new_h * new_w {
        for d in 0..dim {
            out.push(resized[d * new_h * new_w + t]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity_and_constants_stay_constant() {
        let data: Vec<f32> = (0..2 * 5 * 7).map(|i| (i as f32 * 0.37).sin()).collect();
        let same = bicubic_aa(&data, 2, [5, 7], [5, 7]);
        for (a, b) in data.iter().zip(&same) {
            assert!((a - b).abs() < 1e-6);
        }
        // Normalised weights: a constant image stays constant, shrinking or enlarging.
        let ones = vec![1.5f32; 37 * 37];
        for size in [[16, 16], [64, 40]] {
            assert!(bicubic_aa(&ones, 1, [37, 37], size).iter().all(|v| (v - 1.5).abs() < 1e-5));
        }
    }

    #[test]
    fn prefix_rows_are_kept() {
        let dim = 3;
        let pos: Vec<f32> = (0..(1 + 16) * dim).map(|i| i as f32).collect();
        let out = resample_pos_embed(&pos, dim, 1, [4, 4], [2, 2]);
        assert_eq!(out.len(), (1 + 4) * dim);
        assert_eq!(&out[..dim], &pos[..dim]);
    }
}
