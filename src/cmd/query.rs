//! `irtdb query`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use irtdb_engine::query::QueryOptions;

/// Find the images of the collection most similar to each query image.
///
/// A query is an image file (embedded with the collection's own model, preprocessing, pooling
/// and PCA), or an image of the collection by its path or as id:N (not embedded again).
///
/// Example: irtdb query photo.jpg --k 10 --html results.html
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Query images: files, collection paths, or id:N.
    #[arg(required = true)]
    queries: Vec<String>,
    /// Number of results per query.
    #[arg(long, short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    db: super::index::DbArg,
    /// Compare against every image instead of searching the HNSW graph.
    #[arg(long)]
    exact: bool,
    /// HNSW search breadth (default max(2k, 64)); higher is more accurate and slower.
    #[arg(long)]
    ef: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML page with thumbnails to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Check that the collection was indexed at this precision (fp32, int8 or bf16); queries are
    /// always embedded at the collection's own precision, and a different one is refused.
    #[arg(long, value_name = "fp32|int8|bf16", value_parser = super::embed::parse_precision)]
    precision: Option<irtdb_engine::model::Precision>,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.k > 0, "--k must be at least 1");
    let report = irtdb_engine::query::run(&QueryOptions {
        db: args.db.path.clone(),
        queries: args.queries.clone(),
        k: args.k,
        exact: args.exact,
        ef: args.ef,
        batch: 16,
        precision: args.precision,
    })?;
    if let Some(html) = &args.html {
        irtdb_engine::html::write(&report, html)?;
    }
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if report.random_weights && !args.json {
        eprintln!(
            "note: the collection's model has RANDOM weights: similarity is colour and layout"
        );
    }
    let failed = report.results.iter().filter(|r| r.error.is_some()).count();
    if args.json {
        super::print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for r in &report.results {
            if report.results.len() > 1 {
                writeln!(out, "# {}", r.query)?;
            }
            if let Some(e) = &r.error {
                eprintln!("error: {}: {e}", r.query);
                continue;
            }
            for h in &r.hits {
                writeln!(
                    out,
                    "{:>3}  {:.4}  {}",
                    h.rank,
                    h.score,
                    report.root.join(&h.path).display()
                )?;
            }
        }
    }
    if let Some(html) = &args.html {
        eprintln!("wrote {}", html.display());
    }
    if failed == report.results.len() {
        anyhow::bail!("no query could be answered");
    }
    Ok(())
}
