//! `irtdb export`.

use std::path::PathBuf;

use anyhow::Result;

/// Write a collection's vectors to a Parquet file: the handoff to a distributed vector store,
/// Spark, DuckDB or pandas.
///
/// One row per embedded image: id, path, label, descriptor (list<float>). By default the
/// vectors the index searches (PCA-projected when the collection has a PCA); --raw writes
/// the model's descriptors. The file's metadata carries the model identity (irtdb.model), the
/// PCA (irtdb.pca) and what the vectors are (irtdb.vectors, irtdb.dim).
///
/// Example: irtdb export --db photos.db --parquet photos.parquet
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    db: super::index::DbArg,
    /// The Parquet file to write (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    parquet: PathBuf,
    /// Export the model's descriptors instead of the indexed (PCA-projected) vectors.
    #[arg(long)]
    raw: bool,
    /// Images per Parquet row group (the unit readers load at once; also what the export holds
    /// in memory).
    #[arg(long, value_name = "N", default_value_t = irtdb_engine::export::ROW_GROUP)]
    row_group: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let r = irtdb_engine::export::parquet(&args.db.path, &args.parquet, args.raw, args.row_group)?;
    if args.json {
        return super::print_json(&r);
    }
    println!(
        "wrote {}: {} rows of {} {} dimensions ({:.1} MB)",
        r.file.display(),
        r.rows,
        r.dim,
        r.vectors,
        r.bytes as f64 / 1e6
    );
    Ok(())
}
