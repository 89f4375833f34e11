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

/// What transparent pixels become before the model sees an image.
///
/// An RGBA image's colour channels under transparent pixels are whatever the program that wrote
/// it left there (often black, sometimes the pixels before a background was erased); dropping the
/// alpha channel, as PIL's `convert("RGB")` does, lets those invisible values decide the
/// descriptor. Compositing over a fixed colour makes the descriptor depend on what is visible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum AlphaBackground {
    /// Ignore the alpha channel (the colour channels as stored).
    Drop,
    /// Composite over this sRGB colour: `c·a + bg·(1 − a)`.
    Color([u8; 3]),
}

impl AlphaBackground {
    /// The default for new collections: white, the background of product photography (the
    /// paper's SOP) and of most cut-out images.
    pub const DEFAULT: Self = AlphaBackground::Color([255, 255, 255]);
    /// What collections recorded before irtdb composited transparency did.
    pub const RECORDED_BEFORE: Self = AlphaBackground::Drop;

    /// Parses `drop`, `white`, `black`, `gray`/`grey` (128), `#rgb` or `#rrggbb`.
    pub fn parse(s: &str) -> crate::Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let hex = |h: &str| u8::from_str_radix(h, 16).ok();
        let color = match t.as_str() {
            "drop" | "none" => return Ok(AlphaBackground::Drop),
            "white" => Some([255, 255, 255]),
            "black" => Some([0, 0, 0]),
            "gray" | "grey" => Some([128, 128, 128]),
            _ => match t.strip_prefix('#') {
                Some(h) if h.len() == 6 && h.is_ascii() => {
                    match (hex(&h[0..2]), hex(&h[2..4]), hex(&h[4..6])) {
                        (Some(r), Some(g), Some(b)) => Some([r, g, b]),
                        _ => None,
                    }
                }
                Some(h) if h.len() == 3 && h.is_ascii() => {
                    let d = |i: usize| hex(&h[i..i + 1]).map(|v| v * 17);
                    match (d(0), d(1), d(2)) {
                        (Some(r), Some(g), Some(b)) => Some([r, g, b]),
                        _ => None,
                    }
                }
                _ => None,
            },
        };
        color.map(AlphaBackground::Color).ok_or_else(|| {
            crate::Error::Invalid(format!(
                "alpha background '{s}': use white, black, gray, #rrggbb, #rgb or drop"
            ))
        })
    }

    pub fn name(&self) -> String {
        match self {
            AlphaBackground::Drop => "drop".into(),
            AlphaBackground::Color([255, 255, 255]) => "white".into(),
            AlphaBackground::Color([0, 0, 0]) => "black".into(),
            AlphaBackground::Color([r, g, b]) => format!("#{r:02x}{g:02x}{b:02x}"),
        }
    }

    fn recorded_before() -> Self {
        Self::RECORDED_BEFORE
    }
}

impl std::fmt::Display for AlphaBackground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::str::FromStr for AlphaBackground {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for AlphaBackground {
    type Error = crate::Error;
    fn try_from(s: String) -> crate::Result<Self> {
        Self::parse(&s)
    }
}

impl From<AlphaBackground> for String {
    fn from(a: AlphaBackground) -> String {
        a.name()
    }
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
    /// What transparent pixels become (irtdb's addition, before the resize). Absent in records
    /// made before irtdb composited transparency, which dropped the alpha channel.
    #[serde(default = "AlphaBackground::recorded_before")]
    pub alpha_background: AlphaBackground,
    /// Whether a JPEG may be decoded at 1/4 or 1/8 of its size in the DCT domain (as
    /// Pillow's `Image.draft` and libjpeg's scaled decoding do) when that still leaves the
    /// shorter side at least [`Preprocess::resize_shorter_to`]; the resize then starts from the
    /// smaller image. irtdb's addition: much faster on camera photos, and the descriptors differ
    /// slightly from a full decode's (cosine ≥ 0.999 in irtdb's tests), so it is part of what a
    /// collection's descriptors mean. New records set it; records made before it existed lack
    /// the key and keep decoding every pixel.
    #[serde(default)]
    pub jpeg_dct_scaling: bool,
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
            alpha_background: AlphaBackground::DEFAULT,
            jpeg_dct_scaling: true,
        }
    }

    /// Whether `other` prepares images the same way, apart from the settings that the host
    /// applies from the collection's record whatever a plugin's default: the alpha background
    /// and JPEG DCT scaling.
    pub fn same_apart_from_host_settings(&self, other: &Preprocess) -> bool {
        Preprocess {
            alpha_background: other.alpha_background,
            jpeg_dct_scaling: other.jpeg_dct_scaling,
            ..self.clone()
        } == *other
    }

    /// Length of the shorter side after the resize step, before the centre crop
    /// (timm: `scale_size = floor(img_size / crop_pct)`).
    pub fn resize_shorter_to(&self) -> u32 {
        let target = self.size[0].max(self.size[1]) as f32;
        (target / self.crop_pct).floor() as u32
    }

    /// Applies a JSON object of overrides: irtdb's keys or timm's `pretrained_cfg` (`mean`, `std`,
    /// `crop_pct`, `interpolation`, and irtdb's `alpha_background` and `jpeg_dct_scaling`; others such as `input_size` are ignored: the size always
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
                "alpha_background" => {
                    let s = v.as_str().ok_or_else(|| bad(k, &"must be a string"))?;
                    self.alpha_background = AlphaBackground::parse(s).map_err(|e| bad(k, &e))?
                }
                "jpeg_dct_scaling" => {
                    self.jpeg_dct_scaling =
                        v.as_bool().ok_or_else(|| bad(k, &"must be true or false"))?
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
    fn alpha_background_parses_and_defaults() {
        for (s, want) in [
            ("white", AlphaBackground::Color([255; 3])),
            ("Black", AlphaBackground::Color([0; 3])),
            ("#808080", AlphaBackground::Color([128; 3])),
            ("#f0a", AlphaBackground::Color([255, 0, 170])),
            ("drop", AlphaBackground::Drop),
        ] {
            let a = AlphaBackground::parse(s).unwrap();
            assert_eq!(a, want, "{s}");
            assert_eq!(AlphaBackground::parse(&a.name()).unwrap(), a);
        }
        assert!(AlphaBackground::parse("#12345").unwrap_err().to_string().contains("#rrggbb"));
        assert!(AlphaBackground::parse("#ééé").is_err());
        // New records composite on white; records without the key dropped alpha.
        assert_eq!(Preprocess::imagenet(224).alpha_background, AlphaBackground::DEFAULT);
        let mut old = serde_json::to_value(Preprocess::imagenet(224)).unwrap();
        old.as_object_mut().unwrap().remove("alpha_background");
        let old: Preprocess = serde_json::from_value(old).unwrap();
        assert_eq!(old.alpha_background, AlphaBackground::Drop);
        assert!(old.same_apart_from_host_settings(&Preprocess::imagenet(224)));
        let mut p = Preprocess::imagenet(224);
        p.apply_overrides(&serde_json::json!({"alpha_background": "#000000"})).unwrap();
        assert_eq!(p.alpha_background, AlphaBackground::Color([0; 3]));
    }

    #[test]
    fn jpeg_dct_scaling_is_on_for_new_records_and_off_for_old_ones() {
        assert!(Preprocess::imagenet(224).jpeg_dct_scaling);
        let mut old = serde_json::to_value(Preprocess::imagenet(224)).unwrap();
        old.as_object_mut().unwrap().remove("jpeg_dct_scaling");
        let old: Preprocess = serde_json::from_value(old).unwrap();
        assert!(!old.jpeg_dct_scaling, "records made before the flag decoded every pixel");
        assert!(old.same_apart_from_host_settings(&Preprocess::imagenet(224)));
        assert_ne!(old, Preprocess::imagenet(224));
        let mut p = Preprocess::imagenet(224);
        p.apply_overrides(&serde_json::json!({"jpeg_dct_scaling": false})).unwrap();
        assert!(!p.jpeg_dct_scaling);
        let err = p.apply_overrides(&serde_json::json!({"jpeg_dct_scaling": "no"})).unwrap_err();
        assert!(err.to_string().contains("preprocess.jpeg_dct_scaling"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_value() {
        let mut p = Preprocess::imagenet(224);
        p.crop_pct = 1.5;
        assert!(p.validate().unwrap_err().to_string().contains("crop_pct"));
    }
}
