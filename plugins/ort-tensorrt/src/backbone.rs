//! One model in one ONNX Runtime session.

use irtdb_core::{BackboneInfo, InputInfo, OutputKind, Preprocess};
use irtdb_plugin_api::plugin::PluginBackbone;
use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::session::SessionOutputs;
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef};

use crate::config::{Config, Layout, ProviderName};
use crate::{cache, runtime};

/// A model loaded into an ONNX Runtime session.
#[derive(Debug)]
pub struct OrtBackbone {
    session: Session,
    input: InputSpec,
    output_name: String,
    info: BackboneInfo,
    /// The cached optimised model a session was loaded from: ONNX Runtime reads the graph and
    /// the weights in place (`session.use_ort_model_bytes_directly`), so the bytes live as long
    /// as the session. Declared after `session`, so dropped after it.
    _cached: Option<cache::Entry>,
}

/// The element type of the image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pixels {
    F32,
    F16,
    U8,
}

/// How images are handed to the model: irtdb's host always sends normalised f32 `[B, 3, H, W]`;
/// this says how to turn that into what the model takes.
#[derive(Debug)]
struct InputSpec {
    name: String,
    layout: Layout,
    pixels: Pixels,
    /// The model's fixed batch size, if any (a batch-1 model runs image by image).
    batch: Option<usize>,
    /// Pixel values 0–255 (the host sends them as [0, 1] with mean 0, std 1).
    raw: bool,
}

/// Reads the model's image input: layout, element type, size, batch.
fn input_spec(
    session: &Session,
    config: &Config,
    hint: Option<&serde_json::Value>,
    path: &str,
) -> Result<(InputSpec, [u32; 2], bool), String> {
    let input = session.inputs().first().ok_or_else(|| format!("model {path} has no input"))?;
    let name = input.name().to_string();
    let shape: Vec<i64> = input
        .dtype()
        .tensor_shape()
        .map(|s| s.to_vec())
        .ok_or_else(|| format!("model {path}: input '{name}' is not a tensor"))?;
    if shape.len() != 4 {
        return Err(format!(
            "model {path}: input '{name}' has shape {shape:?} (rank {}); irtdb feeds images as \
             [batch, 3, height, width] or [batch, height, width, 3]",
            shape.len()
        ));
    }
    let layout = match config.own.layout {
        Some(l) => l,
        None if shape[1] == 3 => Layout::Nchw,
        None if shape[3] == 3 => Layout::Nhwc,
        None => {
            return Err(format!(
                "model {path}: input '{name}' has shape {shape:?}, which shows no 3-channel axis: \
                 say the layout with the plugin option layout (\"nchw\" or \"nhwc\")"
            ))
        }
    };
    let (c, h, w) = match layout {
        Layout::Nchw => (shape[1], shape[2], shape[3]),
        Layout::Nhwc => (shape[3], shape[1], shape[2]),
    };
    if c != 3 && c > 0 {
        return Err(format!(
            "model {path}: input '{name}' has shape {shape:?}: {c} channels in {layout:?} layout; \
             irtdb feeds 3-channel RGB images (set layout if it was guessed wrong)"
        ));
    }
    let pixels = match input.dtype().tensor_type() {
        Some(TensorElementType::Float32) => Pixels::F32,
        Some(TensorElementType::Float16) => Pixels::F16,
        Some(TensorElementType::Uint8) => Pixels::U8,
        other => {
            return Err(format!(
                "model {path}: input '{name}' has element type {other:?}; irtdb feeds float32, \
                 float16 or uint8 images"
            ))
        }
    };
    let dynamic = h <= 0 || w <= 0;
    let size = if dynamic {
        config.base.input_size.or_else(|| hint.and_then(hint_size)).unwrap_or([224, 224])
    } else {
        let fixed = [h as u32, w as u32];
        if let Some(s) = config.base.input_size.filter(|&s| s != fixed) {
            return Err(format!(
                "model {path}: its input is fixed at {}x{}, so it cannot run at {}x{}; drop \
                 --input-size (or export the model with a dynamic size)",
                fixed[0], fixed[1], s[0], s[1]
            ));
        }
        fixed
    };
    let batch = (shape[0] > 0).then_some(shape[0] as usize);
    let raw = pixels == Pixels::U8 || config.own.raw_pixels == Some(true);
    Ok((InputSpec { name, layout, pixels, batch, raw }, size, dynamic))
}

/// `input_size` (`[3, H, W]`) of a sidecar's preprocessing object (timm's `pretrained_cfg`).
fn hint_size(hint: &serde_json::Value) -> Option<[u32; 2]> {
    let s = hint.get("input_size")?.as_array()?;
    let d = |i: usize| s.get(i)?.as_u64().filter(|&v| v > 0).map(|v| v as u32);
    Some([d(s.len().checked_sub(2)?)?, d(s.len() - 1)?])
}

/// The output to read: `wanted` by name, else the first whose declared rank is 2 or 3 (or
/// unknown).
fn pick_output(session: &Session, wanted: Option<&str>, path: &str) -> Result<String, String> {
    let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
    if let Some(w) = wanted {
        return names.iter().find(|&&n| n == w).map(|n| n.to_string()).ok_or_else(|| {
            format!("model {path} has no output '{w}'; its outputs are {}", names.join(", "))
        });
    }
    session
        .outputs()
        .iter()
        .find(|o| o.dtype().tensor_shape().is_none_or(|s| (2..=3).contains(&s.len())))
        .map(|o| o.name().to_string())
        .ok_or_else(|| {
            format!(
                "model {path}: no output has rank 2 ([B, D]) or 3 ([B, T, D]); its outputs are \
                 {}: pick one with the plugin option output",
                names.join(", ")
            )
        })
}

/// How a model file was turned into ONNX bytes, and what it says about itself.
struct LoadedModel {
    /// The graph irtdb built (safetensors) or rewrote (an .onnx file at int8); `None`: the .onnx
    /// file is loaded from its path.
    onnx: Option<Vec<u8>>,
    built: Option<cache::Built>,
}

/// What the model file says about itself, read before (or instead of) building a graph.
struct ModelFile {
    kind: ModelKind,
    preprocess_hint: Option<serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ModelKind {
    Onnx,
    Safetensors,
}

fn model_file(config: &Config) -> Result<ModelFile, String> {
    let path = &config.base.model;
    if !path.is_file() {
        return Err(format!("model file {} does not exist", path.display()));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let kind = match ext.as_str() {
        "onnx" => ModelKind::Onnx,
        "safetensors" => ModelKind::Safetensors,
        _ => {
            return Err(format!(
                "model {}: unknown model format '.{ext}'; the ort-tensorrt plugin reads .onnx \
                 files and timm-named ViT/DeiT .safetensors files",
                path.display()
            ))
        }
    };
    Ok(ModelFile { kind, preprocess_hint: irtdb_onnx::sidecar::preprocess_hint(path) })
}

/// The `precision` option: fp32 (also when absent) or int8 (irtdb's own ViT graphs are built
/// at int8; a given .onnx file has its weight MatMul/Gemm nodes rewritten, see
/// `irtdb_onnx::quantize`).
fn precision(config: &Config) -> Result<irtdb_onnx::Precision, String> {
    match config.base.precision.as_deref() {
        None | Some("fp32") => Ok(irtdb_onnx::Precision::Fp32),
        Some("int8") => Ok(irtdb_onnx::Precision::Int8),
        Some(p @ ("fp16" | "bf16")) => Err(format!(
            "--precision {p} is not supported by the ort-tensorrt plugin: ONNX Runtime's CPU \
             provider has no fast {p} kernels; use int8 (or fp32) on a CPU, the tch-cuda \
             plugin for bf16 (libtorch's oneDNN on CPUs with AVX512-BF16 or AMX), and the \
             plugin option trt_fp16 on a GPU"
        )),
        Some(p) => {
            Err(format!("unknown precision '{p}': the ort-tensorrt plugin runs fp32 or int8"))
        }
    }
}

fn load_model(config: &Config, file: &ModelFile) -> Result<LoadedModel, String> {
    let path = &config.base.model;
    let precision = precision(config)?;
    match file.kind {
        ModelKind::Onnx if precision == irtdb_onnx::Precision::Fp32 => {
            Ok(LoadedModel { onnx: None, built: None })
        }
        ModelKind::Onnx => {
            // int8: the file's weight MatMul/Gemm nodes rewritten, the session loads the bytes.
            let bytes = std::fs::read(path)
                .map_err(|e| format!("cannot read model {}: {e}", path.display()))?;
            let (onnx, report) = irtdb_onnx::quantize_onnx(&bytes)
                .map_err(|e| format!("model {}: {e}", path.display()))?;
            eprintln!("ort-tensorrt: {}: {}", path.display(), report.summary());
            Ok(LoadedModel { onnx: Some(onnx), built: None })
        }
        ModelKind::Safetensors => {
            let overrides =
                irtdb_onnx::ConfigOverrides { heads: config.base.heads, ..Default::default() };
            let mut weights =
                irtdb_onnx::VitWeights::load(path, &overrides).map_err(|e| e.to_string())?;
            if let Some([h, w]) = config.base.input_size {
                weights.resample_to([h as usize, w as usize]).map_err(|e| e.to_string())?;
            }
            // Tokens, so that the host pools them as the user chose; an average-pooled (fc_norm)
            // ViT's descriptor is its own head, fc_norm after the mean, so it comes pooled.
            let output = if weights.config.fc_norm {
                irtdb_onnx::GraphOutput::Pooled
            } else {
                irtdb_onnx::GraphOutput::Tokens
            };
            let onnx = irtdb_onnx::build_vit_onnx_with(&weights, output, precision)
                .map_err(|e| e.to_string())?;
            Ok(LoadedModel {
                onnx: Some(onnx),
                built: Some(cache::Built {
                    architecture: weights.config.architecture.clone(),
                    prefix_tokens: weights.config.prefix_tokens,
                }),
            })
        }
    }
}

/// The cache key's `source`: the model's bytes, the precision (an int8 .onnx file is rewritten,
/// with the rewrite's version) and, for irtdb's own graphs, every input of the graph builder
/// (the model card and `config.json` beside the weights, heads, input size, the builder's
/// version). `None`: the model is not cached (an ONNX file with external data).
fn cache_source(
    store: &cache::Cache,
    config: &Config,
    kind: ModelKind,
) -> Result<Option<serde_json::Value>, String> {
    let path = &config.base.model;
    let digest = store.digest(path, kind == ModelKind::Onnx)?;
    match kind {
        ModelKind::Onnx if digest.external_data => Ok(None),
        ModelKind::Onnx => {
            let precision = precision(config)?;
            // An int8 graph is the file rewritten: the rewrite's version is an input too.
            let rewrite = (precision == irtdb_onnx::Precision::Int8).then(|| {
                serde_json::json!({
                    "quantize": irtdb_onnx::QUANTIZE_VERSION,
                    "irtdb_onnx": irtdb_onnx::VERSION,
                })
            });
            Ok(Some(serde_json::json!({
                "kind": "onnx",
                "blake3": digest.blake3,
                "precision": precision.name(),
                "rewrite": rewrite,
            })))
        }
        ModelKind::Safetensors => {
            let sidecars: Vec<serde_json::Value> = irtdb_onnx::card::Sidecars::paths(path)
                .iter()
                .map(|p| match p.is_file() {
                    true => cache::hash_file(p).map(serde_json::Value::from),
                    false => Ok(serde_json::Value::Null),
                })
                .collect::<Result<_, _>>()?;
            Ok(Some(serde_json::json!({
                "kind": "vit-safetensors",
                "blake3": digest.blake3,
                "sidecars": sidecars,
                "heads": config.base.heads,
                "input_size": config.base.input_size,
                "precision": precision(config)?.name(),
                "graph_builder": irtdb_onnx::GRAPH_BUILDER_VERSION,
                "irtdb_onnx": irtdb_onnx::VERSION,
            })))
        }
    }
}

/// The level of a session that optimises the model itself (and of the graphs the cache saves).
const LEVEL: GraphOptimizationLevel = GraphOptimizationLevel::All;
const LEVEL_NAME: &str = "all";

/// A session builder with the configured threads and providers, at optimisation `level`; the
/// providers that registered, in order.
fn session_builder(
    rt: &runtime::Runtime,
    config: &Config,
    level: GraphOptimizationLevel,
) -> Result<(ort::session::builder::SessionBuilder, Vec<ProviderName>), String> {
    // No weight prepacking: packing the GEMM weights took ~0.2 s of every DeiT-S session load
    // (half of a cached one), and a CPU forward packs them per call at no measurable cost (the
    // packing is O(K·N) against O(M·K·N) for the product, M ≥ 197 tokens). Off for every
    // session, so that cached and uncached sessions run the same kernels: equal bits.
    let mut builder = Session::builder(&rt.env)
        .map_err(|e| e.to_string())?
        .with_optimization_level(level)
        .map_err(|e| e.to_string())?
        .with_config_entry("session.disable_prepacking", "1")
        .map_err(|e| e.to_string())?;
    if let Some(t) = config.base.threads.filter(|&t| t > 0) {
        builder = builder.with_intra_threads(t).map_err(|e| e.to_string())?;
    }
    register_providers(builder, config)
}

/// Builds the session: from the cache when the model's optimised graph is there (CPU only),
/// else by optimising it (saving the result in the cache when it may be cached).
fn open_session(
    rt: &runtime::Runtime,
    config: &Config,
    file: &ModelFile,
) -> Result<Opened, String> {
    let path = config.base.model.display().to_string();
    let (builder, registered) = session_builder(rt, config, LEVEL)?;
    let provider = registered[0];
    let store = match registered.as_slice() {
        [ProviderName::Cpu] => cache::Cache::from_env(),
        _ => None,
    };
    let key = match &store {
        Some(store) => {
            cache_source(store, config, file.kind)?.map(|s| cache::Key::new(s, LEVEL_NAME))
        }
        None => None,
    };
    let (Some(store), Some(key)) = (store, key) else {
        cache::log(|| {
            let why = match registered.as_slice() {
                [ProviderName::Cpu] if cache::Cache::from_env().is_none() => cache::describe(),
                [ProviderName::Cpu] => "the model refers to external data files".into(),
                _ => format!("providers {registered:?}: only CPU sessions are cached"),
            };
            format!("not used for {path}: {why}")
        });
        let model = load_model(config, file)?;
        let session = commit(builder, &model, config)?;
        return Ok(Opened { session, provider, built: model.built, cached: None });
    };
    let own_graph = file.kind == ModelKind::Safetensors;
    match store.lookup(&key) {
        cache::Lookup::Hit(entry) if entry.built.is_some() == own_graph => {
            // The graph is optimised already: ONNX Runtime only loads it, reading the graph and
            // the weights in place rather than copying them (the entry is kept as long as the
            // session: see `OrtBackbone::_cached`).
            let loaded = (|| -> Result<Session, String> {
                let err = |e: ort::Error<_>| e.to_string();
                let mut b = builder
                    .with_optimization_level(GraphOptimizationLevel::Disable)
                    .map_err(err)?
                    .with_config_entry("session.use_ort_model_bytes_directly", "1")
                    .map_err(err)?
                    .with_config_entry("session.use_ort_model_bytes_for_initializers", "1")
                    .map_err(err)?;
                b.commit_from_memory(entry.model()).map_err(|e| e.to_string())
            })();
            match loaded {
                Ok(session) => {
                    cache::log(|| format!("hit {} for {path}", entry.path.display()));
                    let built = entry.built.clone();
                    return Ok(Opened { session, provider, built, cached: Some(entry) });
                }
                Err(e) => eprintln!(
                    "ort-tensorrt: ignoring the cached optimised model {} ({e}); rebuilding it",
                    entry.path.display()
                ),
            }
        }
        cache::Lookup::Hit(entry) => eprintln!(
            "ort-tensorrt: ignoring the cached optimised model {} (stale: made from another kind \
             of model file); rebuilding it",
            entry.path.display()
        ),
        cache::Lookup::Miss => cache::log(|| format!("miss for {path}")),
        cache::Lookup::Bad(p, why) => eprintln!(
            "ort-tensorrt: ignoring the cached optimised model {} ({why}); rebuilding it",
            p.display()
        ),
    }
    let model = load_model(config, file)?;
    let (builder, _) = session_builder(rt, config, LEVEL)?;
    let saved = store.temp_path(&key).and_then(|tmp| {
        let session = builder
            .with_optimized_model_path(&tmp)
            .map_err(|e| e.to_string())
            .and_then(|b| commit(b, &model, config));
        match session {
            Ok(session) => Ok((session, tmp)),
            Err(e) => {
                // Whatever ONNX Runtime wrote before failing.
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    });
    match saved {
        Ok((session, tmp)) => {
            match store.commit(&tmp, &key, model.built.clone()) {
                Ok(p) => cache::log(|| format!("stored {} for {path}", p.display())),
                Err(e) => eprintln!("ort-tensorrt: not caching the optimised model: {e}"),
            }
            Ok(Opened { session, provider, built: model.built, cached: None })
        }
        Err(e) => {
            // Saving may fail where loading does not (a full disk, a read-only cache): the
            // model still loads, uncached; a model that cannot load fails here with its error.
            let (builder, _) = session_builder(rt, config, LEVEL)?;
            let session = commit(builder, &model, config)?;
            eprintln!("ort-tensorrt: not caching the optimised model of {path}: {e}");
            Ok(Opened { session, provider, built: model.built, cached: None })
        }
    }
}

/// A session and where it came from.
struct Opened {
    session: Session,
    /// The first provider registered.
    provider: ProviderName,
    /// What irtdb's graph builder said about the model (`None`: an .onnx file).
    built: Option<cache::Built>,
    /// The cache entry the session reads in place.
    cached: Option<cache::Entry>,
}

/// Commits `builder` with the model: irtdb's own graph or an int8 rewrite from memory, an .onnx
/// file from its path (so that weights kept as external data beside it are found).
fn commit(
    mut builder: ort::session::builder::SessionBuilder,
    model: &LoadedModel,
    config: &Config,
) -> Result<Session, String> {
    match &model.onnx {
        Some(bytes) => builder.commit_from_memory(bytes),
        None => builder.commit_from_file(&config.base.model),
    }
    .map_err(|e| format!("ONNX Runtime cannot load model {}: {e}", config.base.model.display()))
}

fn register_providers(
    mut builder: ort::session::builder::SessionBuilder,
    config: &Config,
) -> Result<(ort::session::builder::SessionBuilder, Vec<ProviderName>), String> {
    let explicit = config.providers.is_some();
    let chain = config.providers.clone().unwrap_or_else(|| ProviderName::DEFAULT_CHAIN.to_vec());
    if chain.is_empty() {
        return Err("providers: the list is empty; name at least one of tensorrt, cuda, cpu".into());
    }
    let mut registered = Vec::new();
    let mut skipped = Vec::new();
    for p in chain {
        let result = match p {
            ProviderName::Tensorrt => {
                let cache = config
                    .own
                    .trt_cache_dir
                    .clone()
                    .or_else(|| dirs::cache_dir().map(|d| d.join("irtdb").join("tensorrt")));
                let mut ep = ort::ep::TensorRT::default()
                    .with_device_id(config.device_id)
                    .with_fp16(config.own.trt_fp16.unwrap_or(true));
                if let Some(dir) = cache {
                    let _ = std::fs::create_dir_all(&dir);
                    ep = ep
                        .with_engine_cache(true)
                        .with_engine_cache_path(dir.display().to_string());
                }
                available(p).and_then(|()| ep.register(&mut builder).map_err(|e| e.to_string()))
            }
            ProviderName::Cuda => available(p).and_then(|()| {
                ort::ep::CUDA::default()
                    .with_device_id(config.device_id)
                    .register(&mut builder)
                    .map_err(|e| e.to_string())
            }),
            ProviderName::Cpu => {
                ort::ep::CPU::default().register(&mut builder).map_err(|e| e.to_string())
            }
        };
        match result {
            Ok(()) => registered.push(p),
            Err(e) if explicit => {
                return Err(format!(
                    "execution provider '{}' was asked for but could not be registered: {e}",
                    p.as_str()
                ))
            }
            Err(e) => skipped.push(format!("{}: {e}", p.as_str())),
        }
    }
    if registered.is_empty() {
        return Err(format!("no execution provider could be registered ({})", skipped.join("; ")));
    }
    Ok((builder, registered))
}

/// Checks that the loaded ONNX Runtime was built with the provider.
fn available(p: ProviderName) -> Result<(), String> {
    let ok = match p {
        ProviderName::Tensorrt => ort::ep::TensorRT::is_available(),
        ProviderName::Cuda => ort::ep::CUDA::is_available(),
        ProviderName::Cpu => Ok(true),
    };
    match ok {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!(
            "this ONNX Runtime library was not built with {} (the CPU wheel onnxruntime has only \
             CPU; GPU providers need onnxruntime-gpu's library and the CUDA/TensorRT libraries)",
            p.ort_name()
        )),
        Err(e) => Err(e.to_string()),
    }
}

impl OrtBackbone {
    pub fn new(config: &Config) -> Result<Self, String> {
        let rt = runtime::environment()?;
        let file = model_file(config)?;
        // Refused before the model cache is consulted, whatever it holds.
        precision(config)?;
        let path = config.base.model.display().to_string();
        let Opened { session, provider, built, cached } = open_session(rt, config, &file)?;

        let (input, size, dynamic) =
            input_spec(&session, config, file.preprocess_hint.as_ref(), &path)?;
        let output_name = pick_output(&session, config.own.output.as_deref(), &path)?;
        let mut preprocess = Preprocess::imagenet(size[0]);
        preprocess.size = size;
        for o in
            [file.preprocess_hint.as_ref(), config.base.preprocess.as_ref()].into_iter().flatten()
        {
            // `apply_overrides` ignores size keys: the size is the model's (or --input-size).
            preprocess.apply_overrides(o).map_err(|e| format!("model {path}: {e}"))?;
        }
        if input.raw {
            // The model normalises itself: the host sends [0, 1], the plugin scales to 0–255.
            preprocess.mean = [0.0; 3];
            preprocess.std = [1.0; 3];
        }
        // Only an .onnx file's input is inferred; irtdb's own graphs are plain NCHW float32.
        let input_info = built.is_none().then(|| InputInfo {
            layout: match input.layout {
                Layout::Nchw => "nchw".into(),
                Layout::Nhwc => "nhwc".into(),
            },
            dtype: match input.pixels {
                Pixels::F32 => "float32".into(),
                Pixels::F16 => "float16".into(),
                Pixels::U8 => "uint8".into(),
            },
            fixed_batch: input.batch,
            dynamic_size: dynamic,
            raw_pixels: input.raw,
            output: output_name.clone(),
        });

        let mut backbone = OrtBackbone {
            session,
            input,
            output_name,
            info: BackboneInfo {
                architecture: built
                    .as_ref()
                    .map_or_else(|| "onnx".into(), |b| b.architecture.clone()),
                preprocess,
                output: OutputKind::Pooled,
                dim: 0,
                provider: provider.ort_name().to_string(),
                input: input_info,
            },
            _cached: cached,
        };
        // The output layout: from the model's declared output shape when every dimension but
        // the batch is fixed (irtdb's own graphs, most exports), else from one forward pass of a
        // blank image (which costs a forward, ~0.25 s for DeiT-S on a CPU).
        let declared: Option<Vec<usize>> = backbone
            .session
            .outputs()
            .iter()
            .find(|o| o.name() == backbone.output_name)
            .and_then(|o| o.dtype().tensor_shape().map(|s| s.to_vec()))
            .filter(|s| (2..=3).contains(&s.len()) && s[1..].iter().all(|&d| d > 0))
            // A dynamic-size model's token count depends on the size chosen.
            .filter(|_| !dynamic)
            .map(|s| std::iter::once(1).chain(s[1..].iter().map(|&d| d as usize)).collect());
        let out_shape = match declared {
            Some(shape) => shape,
            None => {
                let probe = vec![0f32; 3 * size[0] as usize * size[1] as usize];
                backbone
                    .run(&probe, &[1, 3, size[0] as usize, size[1] as usize])
                    .map_err(|e| format!("model {path}: test forward failed: {e}"))?
                    .0
            }
        };
        backbone.info.output = match out_shape.len() {
            2 => OutputKind::Pooled,
            3 => {
                let t = out_shape[1];
                let prefix = match built.as_ref().map(|b| b.prefix_tokens).or(config.own.prefix_tokens) {
                    Some(p) => p,
                    None => guess_prefix(t).ok_or_else(|| {
                        format!(
                            "model {path}: output has {t} tokens, which is not a square grid plus 1, \
                             2, 5 or 9 prefix tokens; set prefix_tokens in the plugin config \
                             (--plugin-config '{{\"prefix_tokens\": N}}')"
                        )
                    })?,
                };
                if prefix >= t {
                    return Err(format!("model {path}: prefix_tokens {prefix} ≥ token count {t}"));
                }
                OutputKind::Tokens { prefix }
            }
            _ => {
                return Err(format!(
                    "model {path}: output has shape {out_shape:?}; irtdb needs tokens [B, T, D] or \
                     a pooled [B, D]"
                ))
            }
        };
        backbone.info.dim = *out_shape.last().expect("rank >= 2");
        Ok(backbone)
    }

    /// Runs normalised f32 `[B, 3, H, W]` images, in chunks of the model's fixed batch size
    /// (the last one padded) when it has one.
    fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<(Vec<usize>, Vec<f32>), String> {
        let b = shape[0];
        let per = input.len() / b.max(1);
        let Some(chunk) = self.input.batch.filter(|&fb| fb != b) else {
            return self.run_chunk(input, shape);
        };
        let mut out_shape = Vec::new();
        let mut data = Vec::new();
        for start in (0..b).step_by(chunk) {
            let n = chunk.min(b - start);
            let mut x = input[start * per..(start + n) * per].to_vec();
            x.resize(chunk * per, 0.0);
            let (s, d) = self.run_chunk(&x, &[chunk, shape[1], shape[2], shape[3]])?;
            let row = d.len() / chunk;
            data.extend_from_slice(&d[..n * row]);
            out_shape = s;
        }
        out_shape[0] = b;
        Ok((out_shape, data))
    }

    fn run_chunk(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let (b, h, w) = (shape[0], shape[2], shape[3]);
        let spec = &self.input;
        let err = |e: ort::Error| e.to_string();
        if spec.layout == Layout::Nchw && spec.pixels == Pixels::F32 && !spec.raw {
            // What the host sends is what the model takes: no copy.
            let tensor = TensorRef::from_array_view((shape.to_vec(), input)).map_err(err)?;
            let outputs =
                self.session.run(ort::inputs![spec.name.as_str() => tensor]).map_err(err)?;
            return extract(&outputs, &self.output_name);
        }
        let scale = if spec.raw { 255.0 } else { 1.0 };
        // The host's NCHW, scaled, in the model's layout.
        let (dims, values): (Vec<usize>, Vec<f32>) = match spec.layout {
            Layout::Nchw => (shape.to_vec(), input.iter().map(|&v| v * scale).collect()),
            Layout::Nhwc => {
                let hw = h * w;
                let mut out = vec![0f32; input.len()];
                for i in 0..b {
                    let img = &input[i * 3 * hw..(i + 1) * 3 * hw];
                    let dst = &mut out[i * 3 * hw..(i + 1) * 3 * hw];
                    for p in 0..hw {
                        for c in 0..3 {
                            dst[p * 3 + c] = img[c * hw + p] * scale;
                        }
                    }
                }
                (vec![b, h, w, 3], out)
            }
        };
        let value: DynValue = match spec.pixels {
            Pixels::F32 => Tensor::from_array((dims, values)).map_err(err)?.into_dyn(),
            Pixels::F16 => {
                let v: Vec<half::f16> = values.iter().map(|&x| half::f16::from_f32(x)).collect();
                Tensor::from_array((dims, v)).map_err(err)?.into_dyn()
            }
            Pixels::U8 => {
                let v: Vec<u8> =
                    values.iter().map(|&x| x.round().clamp(0.0, 255.0) as u8).collect();
                Tensor::from_array((dims, v)).map_err(err)?.into_dyn()
            }
        };
        let outputs = self.session.run(ort::inputs![spec.name.as_str() => value]).map_err(err)?;
        extract(&outputs, &self.output_name)
    }
}

/// The output `name` as f32 (float16 outputs converted), with its shape.
fn extract(outputs: &SessionOutputs<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let out = &outputs[name];
    if let Ok((s, d)) = out.try_extract_tensor::<f32>() {
        return Ok((s.iter().map(|&d| d as usize).collect(), d.to_vec()));
    }
    let (s, d) = out
        .try_extract_tensor::<half::f16>()
        .map_err(|e| format!("output '{name}' is neither float32 nor float16: {e}"))?;
    Ok((s.iter().map(|&d| d as usize).collect(), d.iter().map(|x| x.to_f32()).collect()))
}

/// 1 + g² tokens → 1 (CLS); 2 + g² → 2 (CLS + distillation); 5 + g² or 9 + g² → CLS and 4
/// or 8 register tokens (DINOv2 with registers exported with its registers).
fn guess_prefix(tokens: usize) -> Option<usize> {
    let is_square = |m: usize| {
        let g = (m as f64).sqrt().round() as usize;
        m > 0 && g * g == m
    };
    [1, 2, 5, 9].into_iter().find(|&p| tokens > p && is_square(tokens - p))
}

impl PluginBackbone for OrtBackbone {
    fn info(&self) -> BackboneInfo {
        self.info.clone()
    }

    fn forward(
        &mut self,
        input: &[f32],
        shape: &[usize],
    ) -> Result<(Vec<usize>, Vec<f32>), String> {
        let [h, w] = self.info.preprocess.size;
        if shape.len() != 4 || shape[1] != 3 || shape[2] != h as usize || shape[3] != w as usize {
            return Err(format!("input shape {shape:?}, expected [B, 3, {h}, {w}]"));
        }
        self.run(input, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_guess() {
        assert_eq!(guess_prefix(197), Some(1));
        assert_eq!(guess_prefix(198), Some(2));
        assert_eq!(guess_prefix(17), Some(1));
        assert_eq!(guess_prefix(50), Some(1));
        assert_eq!(guess_prefix(100), None);
        assert_eq!(guess_prefix(5 + 37 * 37), Some(5), "DINOv2 reg4 at 518");
        assert_eq!(guess_prefix(9 + 16 * 16), Some(9));
    }
}
