//! One error type for the whole crate.
//!
//! Every variant names the database it is about and ends with what the user can do, because these
//! messages reach the terminal unchanged through the CLI's `{:#}`. Causes from rusqlite are folded
//! into the message (not chained as `source`) so that the advice stays at the end of the line.
//! Large causes are boxed to keep `Result`s small.

use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

/// Result of every fallible operation in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with the collection database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`crate::Store::open_existing`] found no file.
    #[error("no collection database at {}: run `irtdb index DIR` first (or pass --db)", .path.display())]
    NotFound { path: PathBuf },

    /// SQLite could not open or configure the file.
    #[error("cannot open database {}: {cause}; check that the file and its folder exist and are writable", .path.display())]
    Open { path: PathBuf, cause: Box<rusqlite::Error> },

    /// The file's schema version is newer than this build's migrations.
    #[error("{} was written by a newer irtdb (schema {found}, this build knows up to {known}): upgrade irtdb", .path.display())]
    TooNew { path: PathBuf, found: i64, known: usize },

    /// A valid SQLite file with tables but no irtdb schema version: refuse to add our tables to it.
    #[error("{} is an SQLite database but not an irtdb collection (it has tables but no irtdb schema version): pass another --db", .path.display())]
    NotIrtdb { path: PathBuf },

    /// SQLITE_NOTADB: not a database at all, or page 1 is overwritten.
    #[error("{} is not an SQLite database, or its header is damaged ({detail}): check --db; if it is your collection, restore it from backup or delete it and re-run `irtdb index`", .path.display())]
    NotADatabase { path: PathBuf, detail: String },

    /// SQLITE_CORRUPT, or `PRAGMA integrity_check` / `foreign_key_check` found problems.
    #[error("database {} is damaged: {detail}; restore from backup or delete it and re-run `irtdb index`", .path.display())]
    Damaged { path: PathBuf, detail: String },

    /// Applying the embedded migrations failed.
    #[error("cannot upgrade the schema of {}: {cause}; restore from backup or delete it and re-run `irtdb index`", .path.display())]
    Migrate { path: PathBuf, cause: Box<rusqlite_migration::Error> },

    /// SQLite refused WAL mode (typically a network filesystem), so readers would block writers.
    #[error("cannot switch {} to WAL journaling (SQLite kept {mode:?}): put the database on a local filesystem", .path.display())]
    NoWal { path: PathBuf, mode: String },

    /// Any other SQLite failure, with the operation that was attempted and advice by error code.
    #[error("database {}: cannot {op}: {cause}; {hint}", .path.display())]
    Sqlite { path: PathBuf, op: String, cause: Box<rusqlite::Error>, hint: &'static str },

    /// Stored values that cannot be what irtdb wrote (bad blob length, bad JSON, unknown status).
    #[error("database {} holds invalid data: {what}; restore from backup or delete it and re-run `irtdb index`", .path.display())]
    InvalidData { path: PathBuf, what: String },

    /// The caller asked to store something inconsistent (wrong dimension, absolute image path).
    #[error("refusing to write to {}: {what} (this is a bug in irtdb; please report it)", .path.display())]
    InvalidInput { path: PathBuf, what: String },

    /// No `models` row with this id.
    #[error("database {} has no model {id}: re-run `irtdb index` to register it", .path.display())]
    NoSuchModel { path: PathBuf, id: i64 },

    /// [`crate::Store::upsert_model`] found a model with the same identity but different facts.
    #[error("database {} already has model {id} with the same plugin, backbone, weights and config, but {what}: the plugin is not deterministic about its output; please report it", .path.display())]
    ModelConflict { path: PathBuf, id: i64, what: String },

    /// Another process holds the writer lock.
    #[error("another irtdb is writing {}{}; wait for it or pass --wait", .path.display(), pid_note(*.pid))]
    Locked { path: PathBuf, pid: Option<u32> },

    /// The lock file could not be created or locked.
    #[error("cannot take the writer lock of {}: {cause}; check that its folder is writable", .path.display())]
    Lock { path: PathBuf, cause: std::io::Error },

    /// [`crate::blob_to_f32s`] got a blob whose length is not a multiple of 4.
    #[error("a vector blob of {len} bytes is not a whole number of 4-byte little-endian f32 values; the database was not written by irtdb or is damaged")]
    BlobLength { len: usize },
}

fn is_shm_failure(cause: &rusqlite::Error) -> bool {
    use rusqlite::ffi::{SQLITE_IOERR_SHMMAP, SQLITE_IOERR_SHMOPEN, SQLITE_IOERR_SHMSIZE};
    matches!(cause, rusqlite::Error::SqliteFailure(e, _)
        if [SQLITE_IOERR_SHMSIZE, SQLITE_IOERR_SHMOPEN, SQLITE_IOERR_SHMMAP].contains(&e.extended_code))
}

fn pid_note(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

impl Error {
    /// Classifies a rusqlite error raised while doing `op` on the database at `path`.
    ///
    /// Corruption gets its own variants wherever it surfaces, so that a damaged file reads the
    /// same whether open, a query or `integrity_check` trips over it.
    pub(crate) fn sqlite(path: &Path, op: impl Into<String>, cause: rusqlite::Error) -> Error {
        let path = path.to_path_buf();
        match &cause {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                return Error::InvalidData { path, what: format!("{}: {cause}", op.into()) };
            }
            _ => {}
        }
        let hint = match cause.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt) => {
                let detail = format!("{cause} (while trying to {})", op.into());
                return Error::Damaged { path, detail };
            }
            Some(ErrorCode::NotADatabase) => {
                return Error::NotADatabase { path, detail: cause.to_string() };
            }
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                "another process kept the database busy for more than 5 s; try again when it is done"
            }
            Some(
                ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::AuthorizationForStatementDenied,
            ) => "check that the file and its folder are writable",
            Some(ErrorCode::DiskFull) => "free some disk space and try again",
            // Creating or growing `<db>-shm` (WAL's shared index) fails like this on a full disk,
            // before any write could report SQLITE_FULL: even readers need it.
            Some(ErrorCode::SystemIoFailure) if is_shm_failure(&cause) => {
                "SQLite could not create or grow the shared-memory file <db>-shm beside it: the \
                 disk is probably full; free some disk space and try again"
            }
            Some(ErrorCode::SystemIoFailure) => "check the disk that holds it",
            _ => "if this persists, please report it as an irtdb bug",
        };
        Error::Sqlite { path, op: op.into(), cause: Box::new(cause), hint }
    }

    /// Like [`Error::sqlite`], as a closure for `map_err`.
    pub(crate) fn at<'a>(
        path: &'a Path,
        op: &'a str,
    ) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        move |cause| Error::sqlite(path, op, cause)
    }
}
