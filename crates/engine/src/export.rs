//! `irtdb export --parquet FILE`: a collection's vectors as one Parquet file, the handoff to a
//! distributed vector store (or Spark, pandas, DuckDB) when one machine's HNSW is not enough.
//!
//! One row per embedded image: `id` (int64), `path` (string), `label` (string, null for files in
//! the root), `descriptor` (`list<float>`). By default the descriptor is the vector the
//! collection's index searches — PCA-projected (and whitened) when the collection has a PCA,
//! L2-normalised, so inner product is cosine; `raw` exports the model's descriptors instead.
//! The file's key-value metadata says what the vectors are, so a consumer can embed its
//! queries the same way: `irtdb.model` (the model identity as the database records it),
//! `irtdb.vectors` (`indexed` or `raw`), `irtdb.dim`, `irtdb.pca` (mean and components,
//! row-major, when the vectors are projected) and `irtdb.version`.
//!
//! Written with the parquet crate's column writer (no Arrow), Snappy-compressed, in row groups
//! of [`ROW_GROUP`] images (by default), read from the database a row group at a time inside one
//! read snapshot, to a temporary file made durable and renamed when complete.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use irtdb_index::Pca;
use irtdb_store::{ImageRow, Store};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, FloatType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::Serialize;

use crate::collection;
use crate::error::{Error, Result, Setting};

/// Images per Parquet row group (about 0.5 MB of 128-d vectors).
pub const ROW_GROUP: usize = 1 << 16;

const SCHEMA: &str = "
message irtdb_collection {
  required int64 id;
  required binary path (STRING);
  optional binary label (STRING);
  required group descriptor (LIST) {
    repeated group list {
      required float element;
    }
  }
}";

/// What an export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct ExportReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub file: PathBuf,
    pub rows: usize,
    pub dim: usize,
    /// `indexed` (what the index searches) or `raw` (the model's descriptors).
    pub vectors: &'static str,
    pub bytes: u64,
}

pub fn parquet(db: &Path, file: &Path, raw: bool, row_group: usize) -> Result<ExportReport> {
    if row_group == 0 {
        return Err(Error::setting(&[Setting::RowGroup], "a row group holds at least one row"));
    }
    let store = Store::open_existing(db)?;
    // One state of the database from the first read to the last, whatever an `irtdb index`
    // commits meanwhile.
    let _snapshot = store.read_snapshot()?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        let message =
            format!("{} has no model yet: run `irtdb index DIR` first", store.path().display());
        return Err(Error::refused(store.path(), message, &[]));
    };
    let pca = if raw {
        None
    } else {
        match store.current_generation(row.id)? {
            Some(g) => collection::generation_pca(&store, &g)?,
            None => {
                let message = format!(
                    "{} has no index yet, so no indexed vectors: run `irtdb reindex` on it (or \
                     `irtdb merge`) first, or export the model's descriptors instead",
                    store.path().display()
                );
                return Err(Error::refused(store.path(), message, &[Setting::Raw]));
            }
        }
    };
    let dim = pca.as_ref().map_or(row.dim, |p| p.out_dim);

    let meta = metadata(&row, &stored, dim, pca.as_ref(), raw);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_key_value_metadata(Some(meta))
        .build();
    let schema = Arc::new(parse_message_type(SCHEMA).expect("the schema parses"));

    let tmp = crate::durable::temp_path(file);
    let out = std::fs::File::create(&tmp).map_err(Error::io("create", &tmp))?;
    let rows = Rows { store: &store, model_id: row.id, pca: pca.as_ref(), row_group };
    let rows = match write_row_groups(out, schema, props, &rows) {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(match e {
                Written::Store(e) => e.into(),
                Written::Parquet(e) => {
                    Error::Export { path: file.to_path_buf(), cause: e.to_string() }
                }
            });
        }
    };
    crate::durable::commit_file(&tmp, file)?;
    let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    Ok(ExportReport {
        file: irtdb_core::absolute(file),
        rows,
        dim,
        vectors: if raw { "raw" } else { "indexed" },
        bytes,
    })
}

/// The file's key-value metadata: what the vectors are and how to embed queries alike.
fn metadata(
    row: &irtdb_store::ModelRow,
    stored: &collection::StoredModel,
    dim: usize,
    pca: Option<&Pca>,
    raw: bool,
) -> Vec<KeyValue> {
    let mut meta = vec![
        KeyValue::new("irtdb.version".into(), irtdb_store::APP_VERSION.to_string()),
        KeyValue::new("irtdb.vectors".into(), if raw { "raw" } else { "indexed" }.to_string()),
        KeyValue::new("irtdb.dim".into(), dim.to_string()),
        KeyValue::new(
            "irtdb.model".into(),
            serde_json::json!({
                "plugin": row.plugin,
                "backbone": row.backbone,
                "weights_hash": row.weights_hash,
                "random_weights": row.random_weights,
                "dim": row.dim,
                "config": stored,
            })
            .to_string(),
        ),
    ];
    if let Some(p) = pca {
        meta.push(KeyValue::new(
            "irtdb.pca".into(),
            serde_json::json!({
                "in_dim": p.in_dim, "out_dim": p.out_dim, "whiten": p.whiten,
                "mean": p.mean, "components": p.components,
                "explained_variance": p.explained_variance,
            })
            .to_string(),
        ));
    }
    meta
}

/// Where the rows come from: a collection's descriptors, projected by its PCA (if any), read
/// `row_group` at a time.
struct Rows<'a> {
    store: &'a Store,
    model_id: i64,
    pca: Option<&'a Pca>,
    row_group: usize,
}

/// Why writing the row groups stopped.
enum Written {
    Store(irtdb_store::Error),
    Parquet(ParquetError),
}

impl From<irtdb_store::Error> for Written {
    fn from(e: irtdb_store::Error) -> Self {
        Written::Store(e)
    }
}

impl From<ParquetError> for Written {
    fn from(e: ParquetError) -> Self {
        Written::Parquet(e)
    }
}

/// Writes the rows, a row group at a time, so memory stays at one group's vectors whatever the
/// collection's size; returns how many were written.
fn write_row_groups(
    out: std::fs::File,
    schema: Arc<parquet::schema::types::Type>,
    props: WriterProperties,
    rows: &Rows<'_>,
) -> std::result::Result<usize, Written> {
    let missing = |what: &str| ParquetError::General(format!("the writer has no {what}"));
    let mut writer = SerializedFileWriter::new(out, schema, Arc::new(props))?;
    let mut written = 0;
    let mut after = i64::MIN;
    loop {
        let page = rows.store.descriptors_page(rows.model_id, after, rows.row_group)?;
        let (Some(&first), Some(&last)) = (page.ids.first(), page.ids.last()) else { break };
        let ids = &page.ids;
        let dim = rows.pca.map_or(page.dim, |p| p.out_dim);
        let data = match rows.pca {
            Some(p) => p.project_batch(&page.data, ids.len()),
            None => page.data,
        };
        let by_id: HashMap<i64, ImageRow> =
            rows.store.images_in_range(first, last)?.into_iter().map(|r| (r.id, r)).collect();
        let mut paths = Vec::with_capacity(ids.len());
        let mut labels = Vec::new();
        let mut label_defs = Vec::with_capacity(ids.len());
        for id in ids {
            let r = by_id
                .get(id)
                .ok_or_else(|| ParquetError::General(format!("image {id} has no row")))?;
            paths.push(ByteArray::from(r.path.as_str()));
            match &r.label {
                Some(l) => {
                    labels.push(ByteArray::from(l.as_str()));
                    label_defs.push(1);
                }
                None => label_defs.push(0),
            }
        }
        // The list column: every row holds `dim` values (definition level 1: present); the
        // repetition level is 0 at the start of a row, 1 inside it.
        let defs = vec![1i16; data.len()];
        let reps: Vec<i16> = (0..data.len()).map(|i| i16::from(i % dim != 0)).collect();
        let mut group = writer.next_row_group()?;
        let mut col = group.next_column()?.ok_or_else(|| missing("id column"))?;
        col.typed::<Int64Type>().write_batch(ids, None, None)?;
        col.close()?;
        let mut col = group.next_column()?.ok_or_else(|| missing("path column"))?;
        col.typed::<ByteArrayType>().write_batch(&paths, None, None)?;
        col.close()?;
        let mut col = group.next_column()?.ok_or_else(|| missing("label column"))?;
        col.typed::<ByteArrayType>().write_batch(&labels, Some(&label_defs), None)?;
        col.close()?;
        let mut col = group.next_column()?.ok_or_else(|| missing("descriptor column"))?;
        col.typed::<FloatType>().write_batch(&data, Some(&defs), Some(&reps))?;
        col.close()?;
        group.close()?;
        written += ids.len();
        after = last;
    }
    writer.close()?;
    Ok(written)
}
