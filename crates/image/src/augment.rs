//! The training transform of the paper (shared/PAPER.md, "Recipe"): resize to a fixed square
//! (256×256 for a 224 model), take a random crop of the model's size, flip horizontally with
//! probability ½, normalise as at evaluation.
//!
//! Randomness comes in as a `u64` per image ([`TrainAugment::draw`]): the trainer derives it
//! from the run's seed, the iteration and the image's slot in the batch, so a run, and a run
//! resumed from a checkpoint, sees exactly the same pixels.

use image::RgbImage;
use irtdb_core::Preprocess;
use serde::{Deserialize, Serialize};

use crate::preprocess::{normalisation_table, resize_crop};

/// Resize, random crop, flip, normalise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainAugment {
    /// Every image is first resized to this `[height, width]` (aspect not kept).
    pub resize: [u32; 2],
    /// Normalisation, interpolation and the crop size (`eval.size`, the model's input).
    pub eval: Preprocess,
    /// Horizontal flips with probability ½.
    pub flip: bool,
}

/// The random choices for one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentDraw {
    pub top: u32,
    pub left: u32,
    pub flip: bool,
}

/// SplitMix64: a tiny, well-mixed generator; enough for crop offsets and coin flips.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TrainAugment {
    /// The paper's transform for a model whose eval preprocessing is `eval`: resize to
    /// `size × 256 / 224` (256 for 224, 36 for a 32-pixel toy model), crop `size`, flip.
    pub fn paper(eval: &Preprocess) -> Self {
        let scale = |s: u32| (u64::from(s) * 256).div_ceil(224) as u32;
        TrainAugment {
            resize: [scale(eval.size[0]), scale(eval.size[1])],
            eval: eval.clone(),
            flip: true,
        }
    }

    /// Checks that the crop fits in the resized image and the normalisation is valid.
    pub fn validate(&self) -> Result<(), String> {
        self.eval.validate().map_err(|e| e.to_string())?;
        let [h, w] = self.eval.size;
        if self.resize[0] < h || self.resize[1] < w {
            return Err(format!(
                "train resize {}×{} is smaller than the model's input {h}×{w}",
                self.resize[0], self.resize[1]
            ));
        }
        Ok(())
    }

    /// The crop position and flip for one image, from `seed`.
    pub fn draw(&self, seed: u64) -> AugmentDraw {
        let mut s = seed;
        let [h, w] = self.eval.size;
        let top = (splitmix(&mut s) % u64::from(self.resize[0] - h + 1)) as u32;
        let left = (splitmix(&mut s) % u64::from(self.resize[1] - w + 1)) as u32;
        let flip = self.flip && splitmix(&mut s) & 1 == 1;
        AugmentDraw { top, left, flip }
    }

    /// Writes the augmented image, CHW `[3, H, W]` with `[H, W] = eval.size`, into `out`.
    ///
    /// # Panics
    /// If `out` has the wrong length or the settings fail [`Self::validate`].
    pub fn apply(&self, img: &RgbImage, draw: AugmentDraw, out: &mut [f32]) {
        if let Err(e) = self.validate() {
            panic!("TrainAugment::apply called with invalid settings: {e}");
        }
        let [h, w] = self.eval.size;
        let plane = h as usize * w as usize;
        assert_eq!(out.len(), 3 * plane, "augment: output buffer must hold 3×{h}×{w}");
        let crop = resize_crop(
            img,
            [self.resize[1], self.resize[0]],
            [draw.left, draw.top],
            [w, h],
            self.eval.interpolation,
        );
        let lut = normalisation_table(&self.eval);
        let raw = crop.as_raw();
        let (w, h) = (w as usize, h as usize);
        for y in 0..h {
            for x in 0..w {
                let sx = if draw.flip { w - 1 - x } else { x };
                let px = &raw[(y * w + sx) * 3..(y * w + sx) * 3 + 3];
                for c in 0..3 {
                    out[c * plane + y * w + x] = lut[c][px[c] as usize];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 5) as u8, (x ^ y) as u8])
        })
    }

    fn plain(mut p: Preprocess) -> Preprocess {
        p.mean = [0.0; 3];
        p.std = [1.0; 3];
        p
    }

    #[test]
    fn crops_and_flips_exactly_when_no_resize_is_needed() {
        // Resize target = image size: the crop is a plain copy, checkable pixel by pixel.
        let img = pattern(20, 16);
        let aug =
            TrainAugment { resize: [16, 20], eval: plain(Preprocess::imagenet(8)), flip: true };
        for seed in 0..40 {
            let d = aug.draw(seed);
            assert!(d.top <= 8 && d.left <= 12);
            let mut out = vec![0.0; 3 * 64];
            aug.apply(&img, d, &mut out);
            for y in 0..8u32 {
                for x in 0..8u32 {
                    let sx = if d.flip { 7 - x } else { x };
                    let px = img.get_pixel(d.left + sx, d.top + y);
                    for c in 0..3 {
                        let want = f32::from(px[c]) / 255.0;
                        assert_eq!(out[c * 64 + (y * 8 + x) as usize], want, "seed {seed}");
                    }
                }
            }
        }
    }

    #[test]
    fn draws_cover_every_offset_and_both_flips() {
        let aug = TrainAugment { resize: [12, 12], eval: Preprocess::imagenet(8), flip: true };
        let mut tops = [false; 5];
        let mut lefts = [false; 5];
        let mut flips = [0; 2];
        for seed in 0..400 {
            let d = aug.draw(seed);
            tops[d.top as usize] = true;
            lefts[d.left as usize] = true;
            flips[d.flip as usize] += 1;
        }
        assert!(tops.iter().chain(&lefts).all(|&b| b));
        assert!(flips[0] > 150 && flips[1] > 150, "{flips:?}");
        assert_eq!(aug.draw(7), aug.draw(7));
        let no_flip = TrainAugment { flip: false, ..aug };
        assert!((0..100).all(|s| !no_flip.draw(s).flip));
    }

    #[test]
    fn the_centre_draw_equals_the_eval_transform_of_a_square_image() {
        // A square image, resize = resize_shorter_to, centre crop, no flip: exactly the eval
        // transform, whose own tests pin it to Pillow.
        let img = pattern(64, 64);
        let eval = Preprocess::imagenet(28); // resize 32, crop 28
        let aug = TrainAugment { resize: [32, 32], eval: eval.clone(), flip: false };
        let mut got = vec![0.0; 3 * 28 * 28];
        aug.apply(&img, AugmentDraw { top: 2, left: 2, flip: false }, &mut got);
        let mut want = vec![0.0; 3 * 28 * 28];
        crate::preprocess(&img, &eval, &mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn paper_sizes() {
        assert_eq!(TrainAugment::paper(&Preprocess::imagenet(224)).resize, [256, 256]);
        assert_eq!(TrainAugment::paper(&Preprocess::imagenet(32)).resize, [37, 37]);
        let bad = TrainAugment { resize: [20, 40], eval: Preprocess::imagenet(32), flip: true };
        assert!(bad.validate().unwrap_err().contains("smaller"));
    }
}
