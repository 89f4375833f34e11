/*!
The collection database of irtdb: one SQLite file that describes an image collection.

Why a database and not loose files: the index pipeline commits descriptors in batches, so a crash
loses at most the batch in flight and a rerun resumes; a query must know exactly which model,
preprocessing and PCA the collection was indexed with; and every fact about a collection stays in
one file that any SQLite client can read (`numpy.frombuffer(blob, '<f4')` for vectors). Index files
(HNSW) live beside the database and can always be rebuilt from it: it is the source of truth.

This crate holds no ML and no policy: it stores and returns plain data ([`types`]). What it does
guarantee:

- **Schema versioning.** Migrations in `migrations/NN-name/up.sql` at the workspace root are
  embedded at compile time and applied on open; the version is SQLite's `user_version`. A file
  from a newer irtdb is refused ([`Error::TooNew`]) rather than misread.
- **Concurrency.** WAL journaling: readers never block the writer and only see whole
  transactions. One writer at a time, by convention: [`Store::lock_writer`].
- **Consistency.** Foreign keys are on (deleting an image deletes its descriptors); a descriptor
  never outlives the content it describes ([`Store::commit_batch`]); exactly one index generation
  per model is current, switched in one durable transaction ([`Store::record_generation`]).
- **Damage is named.** Corruption surfaces as [`Error::Damaged`] / [`Error::NotADatabase`] with
  the file and what to do, wherever it is hit.
*/

mod blob;
mod error;
mod lock;
mod store;
pub mod types;

use std::sync::LazyLock;

use include_dir::{include_dir, Dir};
use rusqlite_migration::Migrations;

pub use crate::blob::{blob_to_f32s, f32s_to_blob};
pub use crate::error::{Error, Result};
pub use crate::lock::{lock_path_for, WriterLock};
pub use crate::store::{
    ReadSnapshot, Store, BUSY_TIMEOUT, META_APP_VERSION, META_COLLECTION_ROOT, META_CREATED_BY,
};
pub use crate::types::{
    Counts, Descriptors, Generation, ImageMove, ImageRow, ImageUpdate, ModelRow, NewGeneration,
    NewModel, Outcome, PcaRecord, StatUpdate, Status,
};

/// The schema version this build writes: the number of migrations. A test checks that it matches
/// `migrations/`.
pub const SCHEMA_VERSION: usize = 1;

/// The irtdb version recorded in `meta` by every writer.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");

static MIGRATIONS_DIR: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../migrations");

/// The embedded migrations; the directory is known at compile time, so loading cannot fail at run
/// time unless the build itself is broken (the `migrations_are_valid` test catches that).
pub(crate) static MIGRATIONS: LazyLock<Migrations<'static>> = LazyLock::new(|| {
    Migrations::from_directory(&MIGRATIONS_DIR).expect(
        "migrations/ embedded at build time are malformed; see the migrations_are_valid test",
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }

    #[test]
    fn schema_version_counts_the_migrations() {
        assert_eq!(MIGRATIONS_DIR.dirs().count(), SCHEMA_VERSION);
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        MIGRATIONS.to_latest(&mut conn).unwrap();
        let v: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, SCHEMA_VERSION);
    }
}
