use serde::{Deserialize, Serialize};

/// How the image is resampled when resized.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Bicubic (Catmull-Rom, a = -0.5, with antialiasing when shrinking), as PIL and timm.
    #[default]
    Bicubic,
    Bilinear,
    Nearest,
}

/// timm's evaluation transform, recorded with every model so that a query is preprocessed exactly
/// as the collection was.
///
/// The image is resized so that its shorter side is `floor(size / crop_pct)`, centre-cropped to
/// `size`, scaled to `[0, 1]` and normalised with `mean` / `std` per channel (RGB order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocess {
    /// Output height and width (the model's input size).
    pub size: [u32; 2],
    /// Fraction of the resized image kept by the centre crop (timm's DeiT default: 0.875).
    pub crop_pct: f32,
    pub interpolation: Interpolation,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet statistics, timm's defaults for ViT/DeiT.
    pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
    pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
    pub const DEFAULT_CROP_PCT: f32 = 0.875;

    /// The timm eval transform for a square model input of `size` pixels.
    pub fn imagenet(size: u32) -> Self {
        Self {
            size: [size, size],
            crop_pct: Self::DEFAULT_CROP_PCT,
            interpolation: Interpolation::Bicubic,
            mean: Self::IMAGENET_MEAN,
            std: Self::IMAGENET_STD,
        }
    }

    /// Length of the shorter side after the resize step, before the centre crop
    /// (timm: `scale_size = floor(img_size / crop_pct)`).
    pub fn resize_shorter_to(&self) -> u32 {
        let target = self.size[0].max(self.size[1]) as f32;
        (target / self.crop_pct).floor() as u32
    }

    /// Applies a JSON object of overrides: irtdb's keys or timm's `pretrained_cfg` (`mean`, `std`,
    /// `crop_pct`, `interpolation`; others such as `input_size` are ignored: the size always
    /// comes from the model). Wrong types are errors naming the key; the result is validated.
    pub fn apply_overrides(&mut self, overrides: &serde_json::Value) -> crate::Result<()> {
        let bad = |key: &str, e: &dyn std::fmt::Display| {
            crate::Error::Invalid(format!("preprocess.{key}: {e}"))
        };
        let obj = overrides.as_object().ok_or_else(|| {
            crate::Error::Invalid("preprocess overrides must be a JSON object".into())
        })?;
        for (k, v) in obj {
            match k.as_str() {
                "mean" => self.mean = serde_json::from_value(v.clone()).map_err(|e| bad(k, &e))?,
                "std" => self.std = serde_json::from_value(v.clone()).map_err(|e| bad(k, &e))?,
                "crop_pct" => {
                    self.crop_pct = v.as_f64().ok_or_else(|| bad(k, &"must be a number"))? as f32
                }
                "interpolation" => {
                    self.interpolation =
                        serde_json::from_value(v.clone()).map_err(|e| bad(k, &e))?
                }
                _ => {}
            }
        }
        self.validate()
    }

    /// Checks that the settings make sense, with a message that says which value is wrong.
    pub fn validate(&self) -> crate::Result<()> {
        if self.size[0] == 0 || self.size[1] == 0 {
            return Err(crate::Error::Invalid(format!(
                "preprocess: size {:?} has a zero",
                self.size
            )));
        }
        if !(self.crop_pct > 0.0 && self.crop_pct <= 1.0) {
            return Err(crate::Error::Invalid(format!(
                "preprocess: crop_pct must be in (0, 1], got {}",
                self.crop_pct
            )));
        }
        if self.std.iter().any(|s| s.is_nan() || *s <= 0.0) {
            return Err(crate::Error::Invalid(format!(
                "preprocess: std must be positive, got {:?}",
                self.std
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timm_scale_size() {
        assert_eq!(Preprocess::imagenet(224).resize_shorter_to(), 256);
        assert_eq!(Preprocess::imagenet(384).resize_shorter_to(), 438);
        let mut p = Preprocess::imagenet(224);
        p.crop_pct = 1.0;
        assert_eq!(p.resize_shorter_to(), 224);
    }

    #[test]
    fn overrides_accept_timm_keys_and_name_bad_ones() {
        let mut p = Preprocess::imagenet(224);
        let cfg = serde_json::json!({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
            "crop_pct": 0.9, "interpolation": "bilinear", "input_size": [3, 224, 224]});
        p.apply_overrides(&cfg).unwrap();
        assert_eq!((p.mean, p.crop_pct, p.interpolation), ([0.5; 3], 0.9, Interpolation::Bilinear));
        assert_eq!(p.size, [224, 224]);
        let err = p.apply_overrides(&serde_json::json!({"crop_pct": 2.0})).unwrap_err();
        assert!(err.to_string().contains("crop_pct"), "{err}");
        let err = p.apply_overrides(&serde_json::json!({"mean": "grey"})).unwrap_err();
        assert!(err.to_string().contains("preprocess.mean"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_value() {
        let mut p = Preprocess::imagenet(224);
        p.crop_pct = 1.5;
        assert!(p.validate().unwrap_err().to_string().contains("crop_pct"));
    }
}
