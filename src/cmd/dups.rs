//! `irtdb dups`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

/// Find groups of near-duplicate images: resized, recompressed, slightly cropped or recoloured
/// copies of one picture.
///
/// Images whose descriptors (after PCA) have cosine ≥ the threshold are joined, and the joins
/// chained into groups (largest first). In each group the first image is the one with the most
/// near-duplicates; the others' scores are their cosine to it.
///
/// Example: irtdb dups --db photos.db --html dups.html
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: super::index::DbArg,
    /// Cosine from which two images count as near-duplicates (default chosen by measurement on
    /// planted near-duplicates; raise it for fewer, closer groups).
    #[arg(long, default_value_t = irtdb_engine::dups::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML review sheet (thumbnails of every group) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let report = irtdb_engine::dups::run(&args.db.path, args.threshold)?;
    if let Some(html) = &args.html {
        irtdb_engine::html::write_dups(&report, html)?;
    }
    if report.random_weights && !args.json {
        eprintln!(
            "note: the collection's model has RANDOM weights: similarity is colour and layout"
        );
    }
    if args.json {
        super::print_json(&report)?;
    } else {
        let mut out = std::io::stdout().lock();
        for (i, g) in report.groups.iter().enumerate() {
            writeln!(out, "# group {} ({} images)", i + 1, g.images.len())?;
            for m in &g.images {
                writeln!(out, "{:.4}  {}", m.score, report.root.join(&m.path).display())?;
            }
        }
        eprintln!(
            "{} groups, {} of {} images (cosine >= {}, {} search)",
            report.groups.len(),
            report.grouped,
            report.images,
            report.threshold,
            report.method
        );
    }
    if let Some(html) = &args.html {
        eprintln!("wrote {}", html.display());
    }
    Ok(())
}
