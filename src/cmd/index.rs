//! `irtdb index` and `irtdb reindex`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use irtdb_core::Pool;
use irtdb_engine::index::{BuildOptions, IndexOptions, IndexReport};
use irtdb_engine::ModelSpec;
use irtdb_image::DecodeLimits;
use irtdb_index::HnswParams;

/// Embed a folder of images into the collection database, fit PCA, build the HNSW index.
///
/// Incremental: only new and changed files are embedded (matched by path, then size + mtime,
/// then content hash); deleted files are dropped. Descriptors are committed batch by batch, so
/// an interrupted run resumes where it stopped. Files that cannot be decoded are recorded with
/// their error (see `irtdb info`) and skipped.
///
/// Example: irtdb index ./photos --model deit_small_patch16_224.safetensors
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder to index (recursively). Sub-folder names become labels.
    dir: PathBuf,
    #[command(flatten)]
    db: DbArg,
    /// Plugin name or path to a plugin library (default for a new collection: ort-tensorrt).
    #[arg(long)]
    plugin: Option<String>,
    /// Model: an .onnx file, a timm-named ViT/DeiT .safetensors file, or a model on the
    /// Hugging Face hub as hf-hub:ORG/NAME[@REVISION]. A new collection without it uses
    /// hf-hub:timm/deit_small_patch16_224.fb_in1k (fetched once into the Hugging Face cache);
    /// later runs reuse the collection's model, offline.
    #[arg(long, env = "IRTDB_MODEL")]
    model: Option<PathBuf>,
    /// Pooling of token features: cls, mean, max, gem or gem:P.
    #[arg(long, value_parser = super::embed::parse_pool)]
    pooling: Option<Pool>,
    /// Execution providers to insist on, in order (e.g. cpu). Default: the plugin's chain.
    #[arg(long, value_delimiter = ',')]
    providers: Option<Vec<String>>,
    /// Preprocessing overrides as JSON, e.g. '{"crop_pct": 1.0, "interpolation": "bilinear"}'
    /// (keys: mean, std, crop_pct, interpolation; the size always comes from the model). They
    /// are recorded with the collection and applied to queries too.
    #[arg(long, value_parser = super::embed::parse_preprocess)]
    preprocess: Option<serde_json::Value>,
    #[command(flatten)]
    options: super::embed::ModelOptions,
    #[command(flatten)]
    build: BuildArgs,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeLimits::default().max_pixels)]
    max_pixels: u64,
    /// If another irtdb is writing this database, wait for it instead of refusing.
    #[arg(long)]
    wait: bool,
    /// Index only shard I of N (0 <= I < N) of the folder: the files whose relative path
    /// hashes to I (BLAKE3, modulo N), the same split on every machine. The database holds
    /// that shard, run after run; `irtdb merge` joins the shards.
    #[arg(long, value_name = "I/N")]
    shard: Option<irtdb_engine::index::Shard>,
    /// Index exactly the files listed in this file (one path per line, relative to DIR or
    /// absolute under it; `-` reads stdin), as a scheduler's partition, instead of scanning
    /// DIR. A path outside DIR is an error; files of the database that are not listed are
    /// removed from it.
    #[arg(long, value_name = "LIST")]
    files_from: Option<PathBuf>,
    /// Store descriptors only; no PCA, no HNSW (for shards that `irtdb merge` indexes once).
    #[arg(long)]
    descriptors_only: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `--db`, shared by the collection commands: the SQLite file (never the gallery's images).
#[derive(Debug, clap::Args)]
pub struct DbArg {
    /// The collection database (index files sit beside it).
    #[arg(long = "db", value_name = "DB", env = "IRTDB_DB", default_value = "irtdb.db")]
    pub path: PathBuf,
}

/// PCA and HNSW settings, shared by index and reindex.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// PCA output dimension (the paper: 128); 0 keeps the full descriptor.
    #[arg(long, default_value_t = 128)]
    dim: usize,
    /// Whiten the PCA components (divide by their standard deviation).
    #[arg(long)]
    whiten: bool,
    /// HNSW links per node.
    #[arg(long, default_value_t = 16)]
    hnsw_m: usize,
    /// HNSW candidate list size while building.
    #[arg(long, default_value_t = 200)]
    hnsw_ef_construction: usize,
}

impl BuildArgs {
    fn hnsw(&self) -> HnswParams {
        HnswParams {
            m: self.hnsw_m,
            ef_construction: self.hnsw_ef_construction,
            ..HnswParams::default()
        }
    }

    pub fn options(&self) -> BuildOptions {
        BuildOptions { pca_dim: self.dim, whiten: self.whiten, hnsw: self.hnsw() }
    }
}

/// The lines of a `--files-from` list (`-`: stdin); blank lines are skipped.
fn read_list(path: &Path) -> Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read the file list from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the file list {}", path.display()))?
    };
    Ok(text.lines().map(str::trim_end).filter(|l| !l.is_empty()).map(String::from).collect())
}

pub fn run(args: Args) -> Result<()> {
    let bar = super::progress::Bar::new(args.json);
    let spec = match &args.model {
        Some(m) => {
            let mut s = ModelSpec::from_ref(
                args.plugin.as_deref(),
                m,
                args.pooling.unwrap_or_default(),
                &bar,
            )?;
            s.providers = args.providers.clone();
            s.preprocess = args.preprocess.clone();
            args.options.apply(&mut s)?;
            Some(s)
        }
        None => {
            anyhow::ensure!(
                args.plugin.is_none()
                    && args.pooling.is_none()
                    && args.providers.is_none()
                    && args.preprocess.is_none()
                    && !args.options.any(),
                "--plugin, --pooling, --providers, --preprocess, --input-size, --precision and \
                 --plugin-config \
                 describe a model: give --model \
                 too (e.g. --model {})",
                irtdb_engine::model::DEFAULT_MODEL
            );
            None
        }
    };
    let files = args.files_from.as_deref().map(read_list).transpose()?;
    let opts = IndexOptions {
        root: args.dir.clone(),
        db: args.db.path.clone(),
        spec,
        build: args.build.options(),
        batch: args.batch,
        wait: args.wait,
        limits: DecodeLimits { max_pixels: args.max_pixels, ..DecodeLimits::default() },
        shard: args.shard,
        files,
        skip_index: args.descriptors_only,
    };
    let report = irtdb_engine::index::run(&opts, &bar)?;
    print_report(&report, args.json)
}

/// Rebuild PCA and the HNSW index from the database, embedding nothing.
///
/// Use after changing --dim / --whiten / HNSW settings, or if index files were lost (queries
/// also rebuild missing index files on their own).
#[derive(Debug, clap::Args)]
pub struct ReindexArgs {
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    build: BuildArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn reindex(args: ReindexArgs) -> Result<()> {
    let report = irtdb_engine::index::reindex(
        &args.db.path,
        &args.build.options(),
        &super::progress::Bar::new(args.json),
    )?;
    print_report(&report, args.json)
}

fn print_report(r: &IndexReport, json: bool) -> Result<()> {
    if json {
        return super::print_json(r);
    }
    match &r.shard {
        Some(s) => println!("collection {} ({}, shard {s})", r.db.display(), r.root.display()),
        None => println!("collection {} ({})", r.db.display(), r.root.display()),
    }
    println!("model      {}", r.model);
    if r.random_weights {
        println!(
            "           RANDOM weights: descriptors reflect colour and layout, not what is in \
             the images; train or load real weights for real retrieval"
        );
    }
    println!(
        "images     {} scanned: {} added, {} changed, {} removed, {} moved, {} same content, {} \
         failed, {} unchanged",
        r.scanned, r.added, r.changed, r.removed, r.moved, r.same_content, r.failed, r.unchanged
    );
    if r.embedded > 0 {
        println!(
            "embedded   {} in {:.1} s ({:.1} images/s)",
            r.embedded, r.embed_seconds, r.images_per_second
        );
    }
    print_pca(&r.index);
    let how = match &r.index.index_update {
        Some(u) => format!(
            " (updated in place: {} inserted, {} replaced, {} removed{})",
            u.stats.added,
            u.stats.changed,
            u.stats.removed,
            if u.compacted { "; compacted" } else { "" }
        ),
        None if r.index.index_rebuilt => " (rebuilt)".into(),
        None => String::new(),
    };
    if r.index.index_skipped {
        println!(
            "index      none (--descriptors-only: `irtdb merge` or `irtdb reindex` builds it)"
        );
    } else {
        println!(
            "index      HNSW over {} vectors of {} dimensions{how}",
            r.index.indexed, r.index.index_dim
        );
    }
    for (p, why) in &r.scan_problems {
        println!("skipped    {}: {why}", p.display());
    }
    if r.failed > 0 {
        println!("           {} files could not be read: `irtdb info` lists them", r.failed);
    }
    println!("done in {:.1} s", r.seconds);
    Ok(())
}

/// The PCA line of a closing summary (index, reindex, merge).
pub fn print_pca(i: &irtdb_engine::index::IndexSummary) {
    match (&i.pca, &i.pca_skipped) {
        (Some(p), _) => println!(
            "pca        {} → {}{} ({:.1}% of the variance kept)",
            p.in_dim,
            p.out_dim,
            if p.whiten { ", whitened" } else { "" },
            100.0 * p.explained
        ),
        (None, Some(why)) => println!("pca        none: {why}"),
        (None, None) => {}
    }
}
