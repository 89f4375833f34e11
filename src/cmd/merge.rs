//! `irtdb merge`.

use std::path::PathBuf;

use anyhow::Result;
use irtdb_engine::merge::{MergeOptions, MergeReport};

/// Join shard collections (from `irtdb index --shard I/N` or `--files-from`, e.g. one per Spark
/// task) into one collection, then fit PCA and build the HNSW index once.
///
/// The shards must index the same folder with the same model; a shard of another model is
/// refused, naming the difference. The output holds exactly the union of the shards: merging
/// again after some shards changed writes only what changed and drops images that no shard
/// holds any more. Safe to kill: the next merge finishes the job.
///
/// Example: irtdb merge shards/*.db --db photos.db
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shard databases.
    #[arg(required = true, value_name = "SHARD.db")]
    shards: Vec<PathBuf>,
    #[command(flatten)]
    db: super::index::DbArg,
    #[command(flatten)]
    build: super::index::BuildArgs,
    /// If another irtdb is writing the output database, wait for it instead of refusing.
    #[arg(long)]
    wait: bool,
    /// Merge the images and descriptors only: no PCA, no HNSW (when the collection is too large
    /// for one machine's index: `irtdb export --raw` hands it to a vector store).
    #[arg(long)]
    descriptors_only: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let bar = super::progress::Bar::new(args.json);
    let opts = MergeOptions {
        shards: args.shards,
        db: args.db.path,
        build: args.build.options(),
        wait: args.wait,
        skip_index: args.descriptors_only,
    };
    let report = irtdb_engine::merge::run(&opts, &bar)?;
    if args.json {
        return super::print_json(&report);
    }
    print_report(&report);
    Ok(())
}

fn print_report(r: &MergeReport) {
    println!("collection {} ({})", r.db.display(), r.root.display());
    println!("model      {}", r.model);
    for s in &r.shards {
        let which = s.shard.as_deref().map(|s| format!(" (shard {s})")).unwrap_or_default();
        println!("shard      {}{which}: {} images", s.db.display(), s.images);
    }
    println!(
        "images     {}: {} added, {} changed, {} removed, {} unchanged, {} failed in their shard",
        r.images, r.added, r.changed, r.removed, r.unchanged, r.failed
    );
    for w in &r.warnings {
        println!("warning    {w}");
    }
    let i = &r.index;
    super::index::print_pca(i);
    if i.index_skipped {
        println!(
            "index      none (--descriptors-only: `irtdb reindex` or a merge without it builds it)"
        );
    } else {
        println!("index      HNSW over {} vectors of {} dimensions", i.indexed, i.index_dim);
    }
    println!("done in {:.1} s", r.seconds);
}
