//! `irtdb analyze`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use irtdb_engine::analyze::AnalyzeOptions;

/// Plot how a collection's descriptors use their dimensions and separate its labels.
///
/// Writes to --out: energy.svg/.png, the cumulative energy of the principal components of the
/// descriptors (a steep rise means the embedding collapsed onto few directions), and, when the
/// images have labels (sub-folder names), similarity.svg/.png, histograms of the cosine
/// similarity of positive pairs (same label) and negative pairs; plus analysis.json. The SVG
/// and the PNG of a figure show the same chart, with title, axis labels, ticks and legend. Give
/// --db several times to overlay collections, e.g. one gallery indexed with different weights.
///
/// Example: irtdb analyze --db irt_l.db --db irt_r.db --out figures/
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Collection database(s); repeat to overlay several in one figure.
    #[arg(long, required = true)]
    db: Vec<PathBuf>,
    /// Folder the figures are written to (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Pairs of each kind for the histograms; when more exist, this many are sampled.
    #[arg(long, default_value_t = AnalyzeOptions::default().max_pairs)]
    max_pairs: usize,
    /// Histogram bins (over the range the similarities span).
    #[arg(long, default_value_t = AnalyzeOptions::default().bins)]
    bins: usize,
    /// Seed of the pair sample.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Draw the energy curve's component axis on a log scale (spreads out the first few
    /// components, where a collapsed embedding puts most of its energy).
    #[arg(long)]
    log_energy: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let report = irtdb_engine::analyze::run(&AnalyzeOptions {
        dbs: args.db.clone(),
        out: args.out.clone(),
        max_pairs: args.max_pairs,
        bins: args.bins,
        seed: args.seed,
        log_energy: args.log_energy,
    })?;
    if args.json {
        return super::print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    for c in &report.collections {
        writeln!(
            out,
            "collection {} ({} images, {}-d, {} labelled in {} classes)",
            c.db.display(),
            c.images,
            c.dim,
            c.labelled,
            c.classes
        )?;
        writeln!(out, "  model    {}", c.model)?;
        if !c.cumulative_energy.is_empty() {
            let levels: Vec<String> = c
                .components_for
                .iter()
                .map(|l| format!("{:.0}% in {}", 100.0 * l.energy, l.components))
                .collect();
            writeln!(out, "  energy   {} of {} components", levels.join(", "), c.dim)?;
        }
        if let Some(s) = &c.similarity {
            let how = |used: usize, total: u64| {
                if used as u64 == total {
                    format!("all {total}")
                } else {
                    format!("{used} sampled of {total}")
                }
            };
            writeln!(
                out,
                "  cosine   positive pairs mean {:.4} ({}), negative mean {:.4} ({}), histogram overlap {:.4}",
                s.mean_positive,
                how(s.used_positive, s.positive_pairs),
                s.mean_negative,
                how(s.used_negative, s.negative_pairs),
                s.overlap
            )?;
        }
        for n in &c.notes {
            writeln!(out, "  note: {n}")?;
        }
    }
    for f in &report.files {
        writeln!(out, "wrote {}", f.display())?;
    }
    Ok(())
}
