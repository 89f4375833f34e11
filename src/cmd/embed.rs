//! `irtdb embed`: print the descriptors of images.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use irtdb_core::{Backbone, Pool};
use irtdb_engine::{embed_files, Embedder, ModelSpec};
use irtdb_image::DecodeLimits;

/// Print the L2-normalised descriptor of each image.
///
/// Example: irtdb embed a.jpg b.png --model deit_small.safetensors --pooling gem --json
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images to embed (JPEG, PNG, WebP, BMP, TIFF, GIF; HEIC/HEIF and AVIF with libheif).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Plugin name or path to a plugin library.
    #[arg(long, default_value = irtdb_engine::DEFAULT_PLUGIN)]
    plugin: String,
    /// Model: an .onnx file, a timm-named ViT/DeiT .safetensors file, or a model on the
    /// Hugging Face hub as hf-hub:ORG/NAME[@REVISION] (fetched once into the standard cache,
    /// then used offline; `irtdb model list` recommends some).
    #[arg(long, env = "IRTDB_MODEL")]
    model: PathBuf,
    /// How token features become one vector: cls, mean, max, gem (p=3) or gem:P.
    #[arg(long, default_value = "cls", value_parser = parse_pool)]
    pooling: Pool,
    /// Execution providers to insist on, in order (e.g. cpu, or tensorrt,cuda). Default: the
    /// plugin's own chain, skipping what is unavailable.
    #[arg(long, value_delimiter = ',')]
    providers: Option<Vec<String>>,
    /// Preprocessing overrides as JSON, e.g. '{"crop_pct": 1.0, "interpolation": "bilinear"}'
    /// (keys: mean, std, crop_pct, interpolation; the size always comes from the model). They
    /// are recorded with the collection and applied to queries too.
    #[arg(long, value_parser = parse_preprocess)]
    preprocess: Option<serde_json::Value>,
    #[command(flatten)]
    options: ModelOptions,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Model options shared by `index` and `embed`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelOptions {
    /// Run the model at this input size: N (square) or HxW. A timm ViT (.safetensors) gets its
    /// position embedding resampled as timm's resample_abs_pos_embed does (e.g. a 518 DINOv2
    /// checkpoint at 224, 5x cheaper); an ONNX model needs a dynamic height and width (default
    /// then: the sidecar's input_size, else 224). Part of the model's identity: a collection
    /// never mixes sizes.
    #[arg(long, value_parser = parse_size)]
    pub input_size: Option<[u32; 2]>,
    /// Further plugin options as a JSON object. For ONNX files with the ort-tensorrt plugin:
    /// "layout" ("nchw" | "nhwc", when the shape does not tell), "output" (the output to read;
    /// default the first of rank 2 or 3), "raw_pixels" (true: a float model that normalises
    /// itself gets 0-255 pixels; uint8 inputs always do).
    #[arg(long, value_parser = parse_preprocess)]
    pub plugin_config: Option<serde_json::Value>,
    /// What transparent pixels become before the model sees them: white (the default for new
    /// collections), black, gray, #rrggbb, or drop (use the colour channels as stored, what
    /// collections made before this option did). Part of the model's identity.
    #[arg(long, value_name = "COLOR", value_parser = parse_alpha)]
    pub alpha_background: Option<irtdb_core::AlphaBackground>,
    /// Arithmetic of the forward: fp32 (default), int8 or bf16. int8 (ort-tensorrt plugin):
    /// linear-layer weights quantised per output channel, activations at run time; about 2x
    /// faster on a CPU with VNNI, descriptors within cosine ~0.99 of fp32; a given .onnx file has
    /// its constant-weight MatMul/Gemm nodes rewritten (refused when it has none). bf16
    /// (tch-cuda plugin): weights and activations in bfloat16, ~1.8x faster on CPUs with
    /// AVX512-BF16 or AMX. fp16 is refused. Part of the model's identity: a collection never
    /// mixes precisions.
    #[arg(long, value_name = "fp32|int8|bf16", value_parser = parse_precision)]
    pub precision: Option<irtdb_engine::model::Precision>,
}

pub fn parse_precision(s: &str) -> Result<irtdb_engine::model::Precision, String> {
    irtdb_engine::model::Precision::parse(s)
}

impl ModelOptions {
    pub fn any(&self) -> bool {
        self.input_size.is_some()
            || self.plugin_config.is_some()
            || self.alpha_background.is_some()
            || self.precision.is_some()
    }
    pub fn apply(&self, spec: &mut ModelSpec) -> Result<()> {
        if let Some(p) = self.precision {
            p.check_supported()?;
        }
        spec.set_options(self.input_size, self.precision, self.plugin_config.as_ref());
        if let Some(a) = self.alpha_background {
            with_alpha_background(&mut spec.preprocess, a);
        }
        Ok(())
    }
}

/// Adds `alpha_background` to preprocessing overrides (where the plugins' preprocessing reads it).
pub fn with_alpha_background(
    preprocess: &mut Option<serde_json::Value>,
    alpha: irtdb_core::AlphaBackground,
) {
    let mut obj = match preprocess.take() {
        Some(serde_json::Value::Object(o)) => o,
        _ => serde_json::Map::new(),
    };
    obj.insert("alpha_background".into(), serde_json::Value::String(alpha.name()));
    *preprocess = Some(serde_json::Value::Object(obj));
}

pub fn parse_alpha(s: &str) -> Result<irtdb_core::AlphaBackground, String> {
    irtdb_core::AlphaBackground::parse(s).map_err(|e| e.to_string())
}

/// Parses `--input-size`: `N` or `HxW`.
pub fn parse_size(s: &str) -> Result<[u32; 2], String> {
    let p = |t: &str| t.trim().parse::<u32>().ok().filter(|&v| (1..=8192).contains(&v));
    let v = match s.split_once(['x', 'X']) {
        Some((h, w)) => p(h).zip(p(w)).map(|(h, w)| [h, w]),
        None => p(s).map(|n| [n, n]),
    };
    v.ok_or_else(|| format!("'{s}' is not a size: write N (e.g. 224) or HxW (e.g. 224x320)"))
}

/// Parses `--preprocess`: a JSON object.
pub fn parse_preprocess(s: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("expected a JSON object such as '{\"crop_pct\": 1.0}'".into()),
        Err(e) => Err(format!("not JSON ({e}); expected e.g. '{{\"crop_pct\": 1.0}}'")),
    }
}

pub fn parse_pool(s: &str) -> Result<Pool, String> {
    Pool::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let mut spec = ModelSpec::from_ref(
        Some(&args.plugin),
        &args.model,
        args.pooling,
        &super::progress::Bar::new(args.json),
    )?;
    spec.providers = args.providers.clone();
    spec.preprocess = args.preprocess.clone();
    args.options.apply(&mut spec)?;
    let (_plugin, backbone) = spec.open()?;
    let info = backbone.info().clone();
    let mut embedder = Embedder::new(backbone, args.pooling);
    let outcomes =
        embed_files(&mut embedder, &args.images, args.batch, &DecodeLimits::default(), |_| {})?;
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if args.json {
        #[derive(serde::Serialize)]
        struct Image<'a> {
            /// Lossy: serde refuses non-UTF-8 paths, and the descriptors must still come out.
            path: std::borrow::Cow<'a, str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            descriptor: Option<&'a [f32]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<String>,
        }
        let images: Vec<Image> = outcomes
            .iter()
            .map(|o| match &o.result {
                Ok(v) => Image { path: o.path.to_string_lossy(), descriptor: Some(v), error: None },
                Err(e) => Image {
                    path: o.path.to_string_lossy(),
                    descriptor: None,
                    error: Some(format!("{e:#}")),
                },
            })
            .collect();
        #[derive(serde::Serialize)]
        struct Output<'a> {
            model: serde_json::Value,
            images: Vec<Image<'a>>,
        }
        let model = serde_json::json!({
            "path": spec.model, "hub": spec.hub, "plugin": args.plugin, "pooling": args.pooling.name(),
            "backbone": info, "random_weights": irtdb_engine::model::is_random_weights(&spec.model),
        });
        super::print_json(&Output { model, images })?;
    } else {
        eprintln!("model: {}", irtdb_engine::model::describe(&info));
        if irtdb_engine::model::is_random_weights(&spec.model) {
            eprintln!("note: this model has RANDOM weights: descriptors reflect colour and layout, not content");
        }
        let mut out = std::io::stdout().lock();
        for o in &outcomes {
            match &o.result {
                Ok(v) => {
                    let values: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
                    writeln!(out, "{}\t{}", o.path.display(), values.join(" "))?;
                }
                Err(e) => eprintln!("skipped {}: {e:#}", o.path.display()),
            }
        }
    }
    if failed == outcomes.len() {
        anyhow::bail!("none of the {} images could be embedded", outcomes.len());
    }
    Ok(())
}
