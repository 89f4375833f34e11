//! [`Store`]: the connection to one collection database and every query irtdb runs on it.
//!
//! All SQL of irtdb lives here, so the engine deals in plain structs. Each mutating method is one
//! transaction, begun IMMEDIATE so that a writer takes SQLite's write lock up front (waiting up to
//! the busy timeout) instead of failing half way when a read transaction cannot be upgraded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Type;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::blob::{extend_f32s, f32s_to_blob};
use crate::error::{Error, Result};
use crate::lock::{self, WriterLock};
use crate::types::{
    Counts, Descriptors, Generation, ImageMove, ImageRow, ImageUpdate, ModelRow, NewGeneration,
    NewModel, Outcome, PcaRecord, StatUpdate, Status,
};
use crate::{APP_VERSION, MIGRATIONS, SCHEMA_VERSION};

mod generations;
mod images;
mod models;

use images::check_rel_path;

/// `meta` key: the irtdb version that last wrote the database.
pub const META_APP_VERSION: &str = "app_version";
/// `meta` key: the irtdb version that created the database.
pub const META_CREATED_BY: &str = "created_by";
/// `meta` key: the absolute path of the collection root that image paths are relative to.
pub const META_COLLECTION_ROOT: &str = "collection_root";

/// How long a statement waits for another connection's lock before failing with "busy".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const IMAGE_COLUMNS: &str =
    "id, path, size, mtime_ns, hash, width, height, label, status, error, updated_at";
const MODEL_COLUMNS: &str =
    "id, plugin, backbone, weights_path, weights_hash, config, dim, random_weights, created_at";
const PCA_COLUMNS: &str = "id, in_dim, out_dim, whiten, mean, components, explained_variance, \
                           total_variance, n_samples";
const GENERATION_COLUMNS: &str =
    "id, model_id, pca_id, kind, params, files, count, current, created_at";

/// A read transaction of a [`Store`] ([`Store::read_snapshot`]); ends (rolls back, nothing was
/// written) when dropped.
pub struct ReadSnapshot<'a> {
    _tx: rusqlite::Transaction<'a>,
}

impl std::fmt::Debug for ReadSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadSnapshot")
    }
}

/// An open collection database.
///
/// Any number of `Store`s (in any number of processes) may read one file at once; writers should
/// hold [`Store::lock_writer`] for their whole run. A `Store` is `Send` but not `Sync`: give each
/// thread its own.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens the database at `path`, creating it if missing, and migrates it to this build's
    /// schema.
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_with(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
    }

    /// Opens an existing database (for commands that only make sense on an indexed collection);
    /// fails with [`Error::NotFound`] when there is no file.
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(Error::NotFound { path: irtdb_core::absolute(path) });
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| match e {
            // Removed between the check and the open.
            Error::Open { path, .. } if !path.exists() => Error::NotFound { path },
            e => e,
        })
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Store> {
        let path = irtdb_core::absolute(path);
        let flags = flags | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(&path, flags)
            .map_err(|cause| Error::Open { path: path.clone(), cause: Box::new(cause) })?;
        conn.set_transaction_behavior(TransactionBehavior::Immediate);
        configure(&conn, &path)?;
        migrate(&mut conn, &path)?;
        Ok(Store { conn, path })
    }

    /// The database file (made absolute when opened).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding the database, against which [`Generation::files`] are resolved.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The underlying connection, for ad-hoc reads (tests, diagnostics). Writing through it
    /// bypasses the invariants this type keeps.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    // ----- writer lock -------------------------------------------------------------------------

    /// Takes the single-writer lock (`<db>.lock`). When another process holds it: with
    /// `wait`, blocks until it is released; without, fails with [`Error::Locked`].
    pub fn lock_writer(&self, wait: bool) -> Result<WriterLock> {
        if wait {
            self.lock_writer_waiting(|_| {})
        } else {
            lock::acquire(&self.path, None)
        }
    }

    /// Like `lock_writer(true)`, but calls `on_wait` with the holder's pid (when known) before
    /// blocking, so the caller can tell the user what it is waiting for.
    pub fn lock_writer_waiting(&self, mut on_wait: impl FnMut(Option<u32>)) -> Result<WriterLock> {
        lock::acquire(&self.path, Some(&mut on_wait))
    }

    // ----- meta --------------------------------------------------------------------------------

    /// A value of the `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(Error::at(&self.path, "read meta"))
    }

    /// Sets a value of the `meta` table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        set_meta(&self.conn, key, value).map_err(Error::at(&self.path, "write meta"))
    }

    /// The collection root recorded by [`Store::set_collection_root`].
    pub fn collection_root(&self) -> Result<Option<PathBuf>> {
        Ok(self.meta(META_COLLECTION_ROOT)?.map(PathBuf::from))
    }

    /// Records the absolute folder that image paths are relative to.
    pub fn set_collection_root(&self, root: &Path) -> Result<()> {
        let root = irtdb_core::absolute(root);
        let Some(text) = root.to_str() else {
            return Err(
                self.invalid(format!("collection root {} is not valid UTF-8", root.display()))
            );
        };
        self.set_meta(META_COLLECTION_ROOT, text)
    }

    // ----- summaries and checks ----------------------------------------------------------------

    /// Row counts of every table.
    pub fn counts(&self) -> Result<Counts> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM images), \
                        (SELECT count(*) FROM images WHERE status = 'ok'), \
                        (SELECT count(*) FROM images WHERE status = 'failed'), \
                        (SELECT count(*) FROM models), \
                        (SELECT count(*) FROM descriptors), \
                        (SELECT count(*) FROM pca), \
                        (SELECT count(*) FROM index_generations)",
                [],
                |r| {
                    Ok(Counts {
                        images: r.get(0)?,
                        ok: r.get(1)?,
                        failed: r.get(2)?,
                        models: r.get(3)?,
                        descriptors: r.get(4)?,
                        pca: r.get(5)?,
                        generations: r.get(6)?,
                    })
                },
            )
            .map_err(self.err("count rows"))
    }

    /// Runs `PRAGMA integrity_check` and `PRAGMA foreign_key_check`; any finding is
    /// [`Error::Damaged`]. Reads the whole file, so it takes a while on a large collection.
    pub fn integrity_check(&self) -> Result<()> {
        let op = "run an integrity check";
        let mut stmt = self.conn.prepare("PRAGMA integrity_check").map_err(self.err(op))?;
        let findings: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.err(op))?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err(op))?;
        if findings != ["ok"] {
            let mut detail = findings.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
            if findings.len() > 5 {
                detail += &format!("; and {} more problems", findings.len() - 5);
            }
            return Err(Error::Damaged { path: self.path.clone(), detail });
        }
        let mut stmt = self.conn.prepare("PRAGMA foreign_key_check").map_err(self.err(op))?;
        let orphans: Vec<(String, Option<i64>, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err(op))?
            .collect::<rusqlite::Result<_>>()
            .map_err(self.err(op))?;
        if let Some((table, rowid, parent)) = orphans.first() {
            return Err(Error::Damaged {
                path: self.path.clone(),
                detail: format!(
                    "{} rows refer to missing rows (first: {table} row {} → {parent})",
                    orphans.len(),
                    rowid.map_or("?".to_string(), |r| r.to_string())
                ),
            });
        }
        Ok(())
    }

    // ----- helpers -----------------------------------------------------------------------------

    fn err<'a>(&'a self, op: &'a str) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
        Error::at(&self.path, op)
    }

    fn invalid(&self, what: String) -> Error {
        Error::InvalidInput { path: self.path.clone(), what }
    }

    fn bad_data(&self, what: String) -> Error {
        Error::InvalidData { path: self.path.clone(), what }
    }
}

/// Per-connection settings: these are not stored in the file (except journal_mode), so every
/// connection sets them.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|cause| Error::Open { path: path.into(), cause: Box::new(cause) })?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(Error::at(path, "enable foreign keys"))?;
    // The first statement that reads the file: a non-database fails here with NOTADB.
    let mode: String =
        retry_busy(|| conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0)))
            .map_err(Error::at(path, "switch to WAL journaling"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::NoWal { path: path.into(), mode });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(Error::at(path, "set synchronous=NORMAL"))
}

/// Retries `f` while SQLite answers BUSY, for up to [`BUSY_TIMEOUT`].
///
/// Needed where SQLite returns BUSY without consulting the busy handler: switching a new file to
/// WAL while another connection does the same (it would otherwise deadlock, so SQLite refuses at
/// once). Seen when several processes create one database at the same moment.
fn retry_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && start.elapsed() < BUSY_TIMEOUT =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Refuses newer and foreign databases, then applies pending migrations.
fn migrate(conn: &mut Connection, path: &Path) -> Result<()> {
    let read_state = |conn: &Connection| {
        // One statement, so version and tables come from the same snapshot.
        conn.query_row(
            "SELECT (SELECT user_version FROM pragma_user_version), \
                    (SELECT count(*) FROM sqlite_schema \
                     WHERE type = 'table' AND name NOT LIKE 'sqlite_%')",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
        )
        .map_err(Error::at(path, "read the schema version"))
    };
    let (version, tables) = read_state(conn)?;
    let known = SCHEMA_VERSION;
    if version > to_i64(known) || version < 0 {
        return Err(Error::TooNew { path: path.into(), found: version, known });
    }
    if version == 0 && tables > 0 {
        return Err(Error::NotIrtdb { path: path.into() });
    }
    if version == to_i64(known) {
        return Ok(());
    }
    if let Err(cause) = MIGRATIONS.to_latest(conn) {
        // rusqlite_migration reads user_version before taking the write lock, so when two
        // processes create the database at once the second replays migration 1 and fails.
        // That is fine if the other one got the schema to where we want it.
        let (now, _) = read_state(conn)?;
        if now != to_i64(known) {
            return Err(match cause {
                rusqlite_migration::Error::RusqliteError { err, .. } if is_damage(&err) => {
                    Error::sqlite(path, "apply migrations", err)
                }
                cause => Error::Migrate { path: path.into(), cause: Box::new(cause) },
            });
        }
    }
    if version == 0 {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO NOTHING",
            [META_CREATED_BY, APP_VERSION],
        )
        .map_err(Error::at(path, "write meta"))?;
        stamp(conn).map_err(Error::at(path, "write meta"))?;
    }
    Ok(())
}

fn is_damage(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// Records this build as the last writer; part of every write transaction.
fn stamp(conn: &Connection) -> rusqlite::Result<()> {
    set_meta(conn, META_APP_VERSION, APP_VERSION)
}

fn json_column(r: &Row<'_>, i: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

/// JSON with object keys sorted at every level, whatever serde_json's `preserve_order` says, so
/// that equal configs are equal strings and the models' UNIQUE constraint means what it says.
pub(crate) fn canonical_json(v: &serde_json::Value) -> String {
    fn write(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::Value::from(k.as_str()).to_string());
                    out.push(':');
                    write(v, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(v, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = serde_json::json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s\"q"}});
        assert_eq!(canonical_json(&a), r#"{"a":{"x":"s\"q","y":[1,{"c":3,"d":2}]},"b":1}"#);
    }

    #[test]
    fn relative_paths() {
        assert!(check_rel_path("a/b.jpg", "p").is_ok());
        assert!(check_rel_path("a b/ü.jpg", "p").is_ok());
        for bad in ["", "/a.jpg", "a//b.jpg", "./a.jpg", "a/../b.jpg", "a/"] {
            assert!(check_rel_path(bad, "p").is_err(), "{bad:?}");
        }
    }
}
