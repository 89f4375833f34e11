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
    /// Images to embed (JPEG, PNG, WebP, BMP, TIFF, GIF).
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
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
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
