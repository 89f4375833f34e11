//! `irtdb eval`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{ensure, Result};
use irtdb_core::Pool;
use irtdb_engine::eval::{EvalOptions, EvalReport, Protocol};
use irtdb_engine::ModelSpec;
use irtdb_image::DecodeLimits;

/// Score a model on a benchmark, or a collection on its own labels.
///
/// With --protocol, reads the benchmark's files as distributed under --data, embeds every image
/// with --model and reports the paper's metrics (in percent) for the full descriptor and after
/// PCA to 128 dimensions:
///
///   sop        Stanford Online Products: Ebay_test.txt; Recall@1/10/100/1000, leave-one-out
///   cub        CUB-200-2011: images.txt + image_class_labels.txt, classes 101-200; R@1/2/4/8
///   inshop     In-Shop: list_eval_partition.txt, query vs gallery; R@1/10/20/30
///   roxford5k  Revisited Oxford: gnd_roxford5k.pkl + jpg/; mAP, mP@1/5/10, Easy/Medium/Hard
///   rparis6k   Revisited Paris: gnd_rparis6k.pkl + jpg/
///
/// With --db instead, scores the collection's stored descriptors leave-one-out against the
/// images' labels (sub-folder names): Recall@1/2/4/8/10 and MAP@R, with and without its PCA.
///
/// Examples:
///   irtdb eval --protocol sop --data ~/data/Stanford_Online_Products --model deit_small.safetensors
///   irtdb eval --db photos.db --json
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The benchmark: sop, cub, inshop, roxford5k or rparis6k.
    #[arg(long, value_parser = parse_protocol, requires_all = ["data", "model"], conflicts_with = "db")]
    protocol: Option<Protocol>,
    /// The benchmark's folder, as distributed (the one holding its list files).
    #[arg(long, requires = "protocol")]
    data: Option<PathBuf>,
    /// A collection database to score on its own labels (instead of --protocol).
    #[arg(long, required_unless_present = "protocol")]
    db: Option<PathBuf>,
    /// Plugin name or path to a plugin library.
    #[arg(long, default_value = irtdb_engine::DEFAULT_PLUGIN)]
    plugin: String,
    /// Model: an .onnx file, a timm-named ViT/DeiT .safetensors file, or a model on the
    /// Hugging Face hub as hf-hub:ORG/NAME[@REVISION] (fetched once into the standard cache,
    /// then used offline; `irtdb model list` recommends some).
    #[arg(long, env = "IRTDB_MODEL")]
    model: Option<PathBuf>,
    /// Pooling of token features: cls, mean, max, gem or gem:P.
    #[arg(long, default_value = "cls", value_parser = super::embed::parse_pool)]
    pooling: Pool,
    #[command(flatten)]
    options: super::embed::ModelOptions,
    /// Execution providers to insist on, in order (e.g. cpu). Default: the plugin's chain.
    #[arg(long, value_delimiter = ',')]
    providers: Option<Vec<String>>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Score the full descriptor only (no PCA-128).
    #[arg(long)]
    no_pca: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).map_err(|e| e.to_string())
}

pub fn run(args: Args) -> Result<()> {
    let report = match (args.protocol, &args.db) {
        (Some(protocol), _) => {
            let (Some(data), Some(model)) = (&args.data, &args.model) else {
                anyhow::bail!("--protocol needs --data DIR and --model FILE");
            };
            ensure!(args.batch > 0, "--batch must be at least 1");
            let mut spec = ModelSpec::from_ref(
                Some(&args.plugin),
                model,
                args.pooling,
                &super::progress::Bar::new(args.json),
            )?;
            spec.providers = args.providers.clone();
            args.options.apply(&mut spec)?;
            let opts = EvalOptions {
                protocol,
                data: data.clone(),
                spec,
                batch: args.batch,
                pca: !args.no_pca,
                limits: DecodeLimits::default(),
            };
            irtdb_engine::eval::run_protocol(&opts, &super::progress::Bar::new(args.json))?
        }
        (None, Some(db)) => irtdb_engine::eval::run_db(db, args.options.precision)?,
        (None, None) => anyhow::bail!("give --protocol NAME --data DIR --model FILE, or --db FILE"),
    };
    if args.json {
        return super::print_json(&report);
    }
    print_table(&report)
}

fn print_table(r: &EvalReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "protocol  {}  ({})", r.protocol, r.source.display())?;
    if let Some(m) = &r.model {
        writeln!(
            out,
            "model     {} {}-d, {} pooling, on {} ({})",
            m.architecture,
            m.dim,
            m.pooling,
            m.provider,
            m.path.display()
        )?;
    }
    if r.protocol == "roxford5k" || r.protocol == "rparis6k" {
        writeln!(out, "images    {} database, {} queries", r.gallery, r.queries)?;
    } else if r.queries == r.gallery {
        writeln!(
            out,
            "images    {} in {} classes, each the query against all others",
            r.images, r.classes
        )?;
    } else {
        writeln!(
            out,
            "images    {} queries against {} gallery images, {} classes",
            r.queries, r.gallery, r.classes
        )?;
    }
    writeln!(out)?;
    if let Some(first) = r.variants.first() {
        if let Some(first_rv) = &first.revisited {
            let ks: Vec<String> =
                first_rv.medium.mp.iter().map(|a| format!("mP@{}", a.k)).collect();
            write!(out, "{:<14} {:<7} {:>7}", "descriptor", "setting", "mAP")?;
            for k in &ks {
                write!(out, " {k:>7}")?;
            }
            writeln!(out)?;
            for v in &r.variants {
                let Some(rv) = &v.revisited else { continue };
                for (name, s) in [("easy", &rv.easy), ("medium", &rv.medium), ("hard", &rv.hard)] {
                    write!(
                        out,
                        "{:<14} {:<7} {:>7.2}",
                        format!("{} ({}-d)", v.name, v.dim),
                        name,
                        s.map
                    )?;
                    for a in &s.mp {
                        write!(out, " {:>7.2}", a.percent)?;
                    }
                    writeln!(out)?;
                }
            }
        } else {
            write!(out, "{:<20}", "descriptor")?;
            for a in &first.recall {
                write!(out, " {:>7}", format!("R@{}", a.k))?;
            }
            writeln!(out, " {:>7}", "MAP@R")?;
            for v in &r.variants {
                write!(out, "{:<20}", format!("{} ({}-d)", v.name, v.dim))?;
                for a in &v.recall {
                    write!(out, " {:>7.2}", a.percent)?;
                }
                match v.map_at_r {
                    Some(m) => writeln!(out, " {m:>7.2}")?,
                    None => writeln!(out, " {:>7}", "-")?,
                }
            }
        }
    }
    for n in &r.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}
