//! Which plugin, weights, pooling and preprocessing make a model, and opening it.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result, Setting};
use irtdb_core::{Backbone, BackboneInfo, Pool};
use irtdb_plugin_api::host::{LoadedBackbone, Plugin};
use irtdb_plugin_api::BackboneConfig;
use serde::{Deserialize, Serialize};

/// `--precision`: the arithmetic of the forward. Only fp32 and int8 run; fp16 and bf16 are
/// named so that asking for them gets a reason (ONNX Runtime's CPU provider has no fast fp16 or
/// bf16 kernels: such a graph would run slower than fp32) rather than "unknown value".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
    Fp16,
    Bf16,
}

impl Precision {
    /// Parses `fp32`, `int8`, `fp16` or `bf16`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "int8" | "i8" => Ok(Precision::Int8),
            "fp16" | "f16" | "float16" => Ok(Precision::Fp16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(format!("unknown precision '{s}': use fp32, int8 or bf16")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Fails for the precisions no irtdb plugin runs (fp16), saying why and what to use. Whether
    /// the chosen plugin runs the others is its own check (bf16: tch-cuda only).
    pub fn check_supported(self) -> Result<Self> {
        match self {
            Precision::Fp32 | Precision::Int8 | Precision::Bf16 => Ok(self),
            Precision::Fp16 => Err(Error::setting(
                &[Setting::Precision],
                "--precision fp16 is not supported: ONNX Runtime's CPU provider has no fast fp16 \
                 kernels and most CPUs no fp16 arithmetic (the graph would run slower than fp32). \
                 Use --precision int8 (ort-tensorrt) or bf16 (tch-cuda, on CPUs with AVX512-BF16) \
                 for a faster CPU forward, or fp32 (the default); on a GPU the ort plugin's \
                 TensorRT provider already runs fp16 (plugin option trt_fp16)"
                    .to_string(),
            )),
        }
    }
}

/// The plugin used when none is named.
pub const DEFAULT_PLUGIN: &str = "ort-tensorrt";

/// The model a new collection is indexed with when none is named: the paper's DeiT-S.
pub const DEFAULT_MODEL: &str = "hf-hub:timm/deit_small_patch16_224.fb_in1k";

/// A model `irtdb model list` recommends.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Recommended {
    pub name: &'static str,
    pub params_m: f32,
    pub download_mb: u32,
    pub dim: usize,
    pub what_for: &'static str,
}

/// The models `irtdb model list` recommends, default first. Every one is a timm ViT/DeiT
/// checkpoint in safetensors that both plugins load.
pub const RECOMMENDED: &[Recommended] = &[
    Recommended {
        name: DEFAULT_MODEL,
        params_m: 22.1,
        download_mb: 88,
        dim: 384,
        what_for: "the default: the paper's DeiT-S (IRT_O), a good balance of speed and quality",
    },
    Recommended {
        name: "hf-hub:timm/deit_tiny_patch16_224.fb_in1k",
        params_m: 5.7,
        download_mb: 23,
        dim: 192,
        what_for: "fastest on a CPU (about 4x DeiT-S), for large photo folders on a laptop",
    },
    Recommended {
        name: "hf-hub:timm/deit_base_patch16_224.fb_in1k",
        params_m: 86.6,
        download_mb: 346,
        dim: 768,
        what_for: "the paper's DeiT-B: stronger descriptors, about 4x the cost of DeiT-S",
    },
    Recommended {
        name: "hf-hub:timm/deit_small_distilled_patch16_224.fb_in1k",
        params_m: 22.4,
        download_mb: 89,
        dim: 384,
        what_for: "DeiT-S with a distillation token (the paper's DeiT-S-distilled)",
    },
    Recommended {
        name: "hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m",
        params_m: 22.1,
        download_mb: 88,
        dim: 384,
        what_for: "DINOv2 ViT-S/14 with registers, strong off the shelf; native 518, about 5x \
                   DeiT-S's cost: an input size of 224 runs it at DeiT-S's",
    },
];

/// Where a model from the hub came from: recorded with a collection so that later runs use
/// exactly these weights from the cache, with no network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSource {
    /// `ORG/NAME`.
    pub repo: String,
    /// The revision asked for (a branch, tag or commit).
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    /// The weights file inside the repository.
    pub file: String,
}

impl HubSource {
    /// `hf-hub:ORG/NAME@COMMIT`: the exact weights.
    pub fn pinned(&self) -> String {
        format!("{}{}@{}", irtdb_hub::PREFIX, self.repo, self.commit)
    }
}

/// A model argument resolved to a file: a path as given, or a hub reference fetched into (or
/// found in) the Hugging Face cache.
pub fn resolve_model(
    reference: &Path,
    progress: &dyn irtdb_hub::Progress,
) -> Result<(PathBuf, Option<HubSource>)> {
    let Some(r) = reference.to_str().and_then(irtdb_hub::HubRef::parse) else {
        return Ok((reference.to_path_buf(), None));
    };
    let r = r?;
    let client = irtdb_hub::Client::from_env();
    let files = client.fetch_model(&r, progress)?;
    let source = HubSource {
        repo: r.repo.clone(),
        revision: r.revision.clone(),
        commit: files.commit,
        file: files.weights_file,
    };
    Ok((files.weights, Some(source)))
}

/// Everything needed to embed images the same way twice: stored with a collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Plugin name or library path, as given to `--plugin`.
    pub plugin: String,
    /// The weights (`.onnx` or `.safetensors`), absolute.
    pub model: PathBuf,
    pub pooling: Pool,
    /// Execution providers to insist on (None: the plugin's default chain).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Preprocessing overrides handed to the plugin (e.g. `{"crop_pct": 1.0}`).
    #[serde(default)]
    pub preprocess: Option<serde_json::Value>,
    /// Set when the weights came from the hub (`hf-hub:...`); `model` is then their place in
    /// the Hugging Face cache, found again from this on every later run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<HubSource>,
    /// Further plugin options (a JSON object merged into the plugin's configuration), e.g.
    /// `input_size`, and for ONNX files `layout`, `output`, `raw_pixels`. Part of the model's
    /// identity: a collection never mixes options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

impl ModelSpec {
    pub fn new(plugin: Option<&str>, model: &Path, pooling: Pool) -> Result<Self> {
        if !model.exists() {
            let message = format!(
                "model file {} does not exist: give an .onnx file or a timm-named ViT/DeiT \
                 .safetensors file (`irtdb model random` writes a random-weight one)",
                model.display()
            );
            return Err(Error::setting(&[Setting::Model], message));
        }
        // The folder is made absolute, the file itself is not followed: a hub snapshot's file is
        // a link into blobs/, and its sidecars (config.json) sit beside the link.
        let resolving = Error::io("resolve", model);
        let model = match model.file_name() {
            Some(name) => {
                let dir = model.parent().filter(|p| !p.as_os_str().is_empty());
                dir.unwrap_or(Path::new(".")).canonicalize().map_err(resolving)?.join(name)
            }
            None => model.canonicalize().map_err(resolving)?,
        };
        if model.to_str().is_none() {
            // The plugin gets the path inside JSON, and the collection stores it as JSON.
            let message = format!(
                "the model path {} is not valid UTF-8, so it cannot be handed to the plugin or \
                 stored: rename the file (or its folder)",
                model.display()
            );
            return Err(Error::input(&model, message));
        }
        Ok(Self {
            plugin: plugin.unwrap_or(DEFAULT_PLUGIN).to_string(),
            model,
            pooling,
            providers: None,
            preprocess: None,
            hub: None,
            options: None,
        })
    }

    /// [`ModelSpec::new`] for a model argument: a path, or `hf-hub:ORG/NAME[@REVISION]`
    /// (fetched once into the Hugging Face cache, then read from there).
    pub fn from_ref(
        plugin: Option<&str>,
        reference: &Path,
        pooling: Pool,
        progress: &dyn irtdb_hub::Progress,
    ) -> Result<Self> {
        let (path, hub) = resolve_model(reference, progress)?;
        let mut spec = Self::new(plugin, &path, pooling)?;
        spec.hub = hub;
        Ok(spec)
    }

    /// Sets `--input-size`, `--precision` and `--plugin-config` (merged; the input size and
    /// precision win). `fp32` is the default and is not recorded, so a collection indexed before
    /// `--precision` existed and one indexed with `--precision fp32` are the same model.
    pub fn set_options(
        &mut self,
        input_size: Option<[u32; 2]>,
        precision: Option<Precision>,
        plugin_config: Option<&serde_json::Value>,
    ) {
        let mut o = match plugin_config {
            Some(serde_json::Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        if let Some(s) = input_size {
            o.insert("input_size".into(), serde_json::json!(s));
        }
        match precision {
            Some(Precision::Fp32) => {
                o.remove("precision");
            }
            Some(p) => {
                o.insert("precision".into(), p.name().into());
            }
            None => {}
        }
        // fp32 is never recorded, however it was asked for (`--plugin-config` too).
        if o.get("precision").and_then(|p| p.as_str()) == Some(Precision::Fp32.name()) {
            o.remove("precision");
        }
        self.options = (!o.is_empty()).then_some(serde_json::Value::Object(o));
    }

    /// The precision the model runs at: the options' `precision`, else fp32.
    pub fn precision(&self) -> String {
        self.options
            .as_ref()
            .and_then(|o| o.get("precision"))
            .and_then(|p| p.as_str())
            .unwrap_or(Precision::Fp32.name())
            .to_owned()
    }

    /// What to call the model in messages: its hub reference, else its path.
    pub fn name(&self) -> String {
        match &self.hub {
            Some(h) if h.revision == h.commit => h.pinned(),
            Some(h) => format!(
                "{}{}{} (commit {})",
                irtdb_hub::PREFIX,
                h.repo,
                if h.revision == "main" { String::new() } else { format!("@{}", h.revision) },
                &h.commit[..12.min(h.commit.len())]
            ),
            None => self.model.display().to_string(),
        }
    }

    /// For a stored hub model: points `model` at its file in this run's Hugging Face cache
    /// (which may be elsewhere than when it was indexed). Nothing is fetched.
    pub fn relocate(&mut self) {
        if let Some(h) = &self.hub {
            self.model = irtdb_hub::Cache::from_env().snapshot_file(&h.repo, &h.commit, &h.file);
        }
    }

    /// The configuration handed to the plugin's `backbone_create`: model, providers and
    /// preprocessing, with the further options laid over them.
    pub fn plugin_config(&self) -> Result<BackboneConfig> {
        let mut c = BackboneConfig::new(&self.model);
        c.providers = self.providers.clone();
        c.preprocess = self.preprocess.clone();
        if let Some(serde_json::Value::Object(o)) = &self.options {
            c.merge(o).map_err(|e| Error::setting(&[Setting::PluginConfig], e))?;
        }
        Ok(c)
    }

    /// Loads the plugin and creates the backbone.
    pub fn open(&self) -> Result<(Plugin, LoadedBackbone)> {
        let plugin = Plugin::open(&self.plugin)?;
        let backbone = plugin.create_backbone(&self.plugin_config()?)?;
        let info = backbone.info();
        if !matches!(self.pooling, Pool::Cls) && info.output == irtdb_core::OutputKind::Pooled {
            return Err(irtdb_core::Error::NeedsTokens { pooling: self.pooling.name() }.into());
        }
        Ok((plugin, backbone))
    }

    /// blake3 of the weights file, hex: identifies the weights whatever their path.
    pub fn weights_hash(&self) -> Result<String> {
        let mut hasher = blake3::Hasher::new();
        let mut file =
            std::fs::File::open(&self.model).map_err(Error::io("open the model", &self.model))?;
        // blake3's own reader loop: a larger buffer than io::copy's, ~1.4× faster on 87 MB.
        hasher.update_reader(&mut file).map_err(Error::io("read the model", &self.model))?;
        Ok(hasher.finalize().to_hex().to_string())
    }
}

/// A short human description of a backbone, for progress lines.
pub fn describe(info: &BackboneInfo) -> String {
    format!(
        "{} ({}-d {}, input {}x{}, on {})",
        info.architecture,
        info.dim,
        match info.output {
            irtdb_core::OutputKind::Tokens { prefix } => format!("tokens, {prefix} prefix"),
            irtdb_core::OutputKind::Pooled => "pooled".into(),
        },
        info.preprocess.size[0],
        info.preprocess.size[1],
        info.provider
    )
}

/// Options for [`write_random_model`].
#[derive(Clone, Debug)]
pub struct RandomModel {
    /// A preset of `irtdb_onnx::random::deit_config` (e.g. `deit_tiny_patch16_224`).
    pub arch: String,
    pub depth: Option<usize>,
    pub image_size: Option<usize>,
    pub seed: u64,
}

/// Writes a random-weight ViT (timm names, safetensors) to `out` and its model card to
/// `out.with_extension("json")` (`random_weights: true`, `num_heads`, `preprocess`). Returns the
/// configuration written.
pub fn write_random_model(opts: &RandomModel, out: &Path) -> Result<irtdb_onnx::VitConfig> {
    let Some(mut cfg) = irtdb_onnx::random::deit_config(&opts.arch) else {
        let message = format!(
            "unknown architecture '{}': use deit_tiny_patch16_224, deit_small_patch16_224, \
             deit_base_patch16_224 or vit_micro",
            opts.arch
        );
        return Err(Error::setting(&[Setting::Architecture], message));
    };
    if let Some(d) = opts.depth {
        cfg.depth = d;
    }
    if let Some(s) = opts.image_size {
        if s == 0 || !s.is_multiple_of(cfg.patch) {
            let message = format!(
                "image size {s} is not a positive multiple of the patch size {}",
                cfg.patch
            );
            return Err(Error::setting(&[Setting::ImageSize], message));
        }
        cfg.img_size = [s, s];
    }
    let tensors = irtdb_onnx::random::random_vit(&cfg, opts.seed);
    irtdb_onnx::random::save_safetensors(out, &tensors)?;
    let mut extra = serde_json::Map::new();
    extra.insert("seed".into(), opts.seed.into());
    extra.insert("config".into(), serde_json::to_value(&cfg).expect("serialisable"));
    let card = irtdb_onnx::ModelCard {
        architecture: Some(cfg.architecture.clone()),
        num_heads: Some(cfg.heads),
        preprocess: Some(
            serde_json::to_value(irtdb_core::Preprocess::imagenet(cfg.img_size[0] as u32))
                .expect("serialisable"),
        ),
        random_weights: true,
        extra,
        ..Default::default()
    };
    card.write(out)?;
    Ok(cfg)
}

/// True when the model card beside `model` says its weights are random.
pub fn is_random_weights(model: &Path) -> bool {
    irtdb_onnx::ModelCard::read_lenient(model).is_some_and(|c| c.random_weights)
}
