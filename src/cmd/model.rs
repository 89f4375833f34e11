//! `irtdb model`: make and inspect model files.

use std::path::PathBuf;

use anyhow::Result;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write a ViT/DeiT with random weights (timm naming, safetensors) and its model card.
    ///
    /// For trying irtdb where no trained weights are at hand (this machine cannot download
    /// any): the pipeline runs for real, but descriptors of a random network only capture
    /// low-level colour and layout, and every command that uses it says so.
    Random(RandomArgs),
    /// The recommended models: name, size, descriptor dimension and what each is for.
    ///
    /// Any of them goes to --model as written; the first is what `irtdb index DIR` uses for a
    /// new collection when no --model is given.
    List(ListArgs),
    /// Fetch a model from the Hugging Face hub into the standard cache (or find it there).
    ///
    /// Takes hf-hub:ORG/NAME[@REVISION]. The cache is HF_HUB_CACHE, else HF_HOME/hub, else
    /// ~/.cache/huggingface/hub, shared with Python's huggingface_hub. HF_ENDPOINT picks another
    /// hub, HF_TOKEN reads gated repositories, HF_HUB_OFFLINE=1 uses the cache only.
    ///
    /// Example: irtdb model fetch hf-hub:timm/deit_small_patch16_224.fb_in1k
    Fetch(FetchArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// hf-hub:ORG/NAME[@REVISION] (default: the default model).
    #[arg(default_value = irtdb_engine::model::DEFAULT_MODEL)]
    reference: String,
    /// Print JSON (and no progress bar).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RandomArgs {
    /// Architecture: deit_tiny_patch16_224, deit_small_patch16_224, deit_base_patch16_224 or
    /// vit_micro (a 2-block toy for tests).
    #[arg(long, default_value = "deit_tiny_patch16_224")]
    arch: String,
    /// Override the depth (number of blocks), e.g. to make a faster model.
    #[arg(long)]
    depth: Option<usize>,
    /// Override the input image size (a multiple of the patch size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output .safetensors file; the model card goes beside it as <name>.json.
    #[arg(long, short)]
    out: PathBuf,
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Random(a) => random(a),
        Command::List(a) => list(a),
        Command::Fetch(a) => fetch(a),
    }
}

fn list(a: ListArgs) -> Result<()> {
    use irtdb_engine::model::RECOMMENDED;
    let cache = irtdb_hub::Cache::from_env();
    let cached = |name: &str| cache.has_model(name);
    if a.json {
        let rows: Vec<_> = RECOMMENDED
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).expect("serialisable");
                v["cached"] = cached(m.name).into();
                v["default"] = (m.name == irtdb_engine::model::DEFAULT_MODEL).into();
                v
            })
            .collect();
        return super::print_json(&serde_json::json!({ "models": rows, "cache": cache.root() }));
    }
    for m in RECOMMENDED {
        let mark = if m.name == irtdb_engine::model::DEFAULT_MODEL { " (default)" } else { "" };
        println!("{}{mark}", m.name);
        println!(
            "    {:.1}M parameters, {} MB download, {}-d descriptors{}",
            m.params_m,
            m.download_mb,
            m.dim,
            if cached(m.name) { ", cached" } else { "" }
        );
        println!("    {}", m.what_for);
    }
    println!("cache: {}", cache.root().display());
    Ok(())
}

fn fetch(a: FetchArgs) -> Result<()> {
    let r = irtdb_hub::HubRef::parse(&a.reference).unwrap_or_else(|| {
        Err(irtdb_hub::Error::BadReference { reference: a.reference.clone() })
    })?;
    let client = irtdb_hub::Client::from_env();
    let files = client.fetch_model(&r, &super::progress::Downloads::new(a.json))?;
    if a.json {
        return super::print_json(&serde_json::json!({
            "reference": r.to_string(), "repo": r.repo, "revision": r.revision,
            "commit": files.commit, "weights": files.weights, "weights_file": files.weights_file,
            "config": files.config, "cache": client.cache().root(),
        }));
    }
    println!("{} at commit {}", r, files.commit);
    println!("weights  {}", files.weights.display());
    if let Some(c) = &files.config {
        println!("config   {}", c.display());
    }
    Ok(())
}

fn random(a: RandomArgs) -> Result<()> {
    let opts = irtdb_engine::model::RandomModel {
        arch: a.arch,
        depth: a.depth,
        image_size: a.image_size,
        seed: a.seed,
    };
    let cfg = irtdb_engine::model::write_random_model(&opts, &a.out)?;
    eprintln!(
        "wrote {} ({}, {} blocks, dim {}, input {}; RANDOM weights) and its model card {}",
        a.out.display(),
        cfg.architecture,
        cfg.depth,
        cfg.dim,
        cfg.img_size[0],
        a.out.with_extension("json").display()
    );
    Ok(())
}
