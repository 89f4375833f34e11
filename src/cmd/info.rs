//! `irtdb info`.

use anyhow::Result;

/// Show what a collection holds: counts, model, PCA, index and failures.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: super::index::DbArg,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also check the whole database file for damage (reads all of it: slow on a large one).
    #[arg(long)]
    check: bool,
}

pub fn run(args: Args) -> Result<()> {
    let info = irtdb_engine::info::run_checked(&args.db.path, args.check)?;
    if args.json {
        return super::print_json(&info);
    }
    println!("database   {} ({:.1} MiB)", info.db.display(), info.db_bytes as f64 / 1048576.0);
    if let Some(root) = &info.root {
        println!("folder     {}", root.display());
    }
    println!("images     {} ({} embedded, {} failed)", info.images, info.embedded, info.failed);
    if let Some(m) = &info.model {
        println!(
            "model      {} via {}, {} pooling, {}-d, input {}x{} (crop {}, transparency: {}, \
             JPEG decode: {})",
            m.architecture,
            m.plugin,
            m.pooling,
            m.dim,
            m.input_size[0],
            m.input_size[1],
            m.crop_pct,
            m.alpha_background,
            if m.jpeg_dct_scaling { "scaled" } else { "full" }
        );
        println!(
            "weights    {} (blake3 {}){}",
            m.weights,
            &m.weights_hash[..16.min(m.weights_hash.len())],
            if m.random_weights { ", RANDOM weights" } else { "" }
        );
        if let Some(h) = &m.hub {
            println!("from       {h}");
        }
        if let Some(i) = &m.input {
            println!(
                "input      {} {}{}{}{}, output '{}'",
                i.layout,
                i.dtype,
                if i.dynamic_size { ", dynamic size" } else { "" },
                i.fixed_batch.map(|b| format!(", batch fixed at {b}")).unwrap_or_default(),
                if i.raw_pixels { ", raw 0-255 pixels (the model normalises)" } else { "" },
                i.output
            );
        }
        if let Some(o) = &m.options {
            println!("options    {o}");
        }
    }
    match &info.pca {
        Some(p) => println!(
            "pca        {} → {}{}, {:.1}% of the variance, fitted on {} descriptors",
            p.in_dim,
            p.out_dim,
            if p.whiten { " whitened" } else { "" },
            100.0 * p.explained,
            p.n_samples
        ),
        None => println!("pca        none"),
    }
    match &info.index {
        Some(i) => println!(
            "index      {} generation {}: {} vectors × {} dims, {} ({:.1} MiB{}), built {}",
            i.kind,
            i.generation,
            i.count,
            i.dim,
            i.params,
            i.bytes as f64 / 1048576.0,
            if i.files_present { "" } else { "; files missing: rebuilt on the next query" },
            i.created_at
        ),
        None => println!("index      none"),
    }
    if !info.failures.is_empty() {
        println!("failures   {}:", info.failures.len());
        for f in &info.failures {
            println!("  {}: {}", f.path, f.error);
        }
    }
    Ok(())
}
