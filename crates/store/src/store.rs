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
            return Err(Error::NotFound { path: absolute(path) });
        }
        Self::open_with(path, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| match e {
            // Removed between the check and the open.
            Error::Open { path, .. } if !path.exists() => Error::NotFound { path },
            e => e,
        })
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Store> {
        let path = absolute(path);
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
        let root = absolute(root);
        let Some(text) = root.to_str() else {
            return Err(
                self.invalid(format!("collection root {} is not valid UTF-8", root.display()))
            );
        };
        self.set_meta(META_COLLECTION_ROOT, text)
    }

    // ----- images ------------------------------------------------------------------------------

    /// Every image row, ordered by id.
    pub fn images(&self) -> Result<Vec<ImageRow>> {
        self.query_images("", "ORDER BY id", [])
    }

    /// The image rows whose id is in `first..=last`, ordered by id.
    pub fn images_in_range(&self, first: i64, last: i64) -> Result<Vec<ImageRow>> {
        self.query_images("WHERE id >= ?1 AND id <= ?2", "ORDER BY id", [first, last])
    }

    /// Starts a read transaction: until the returned guard is dropped, every read through this
    /// `Store` sees the database as it was at the first of them, whatever other processes
    /// commit meanwhile (WAL snapshot isolation). For reads in several steps, such as
    /// [`Store::descriptors_page`] page after page. Do not write through this `Store` while
    /// it is held.
    pub fn read_snapshot(&self) -> Result<ReadSnapshot<'_>> {
        // Deferred, not the connection's default (immediate, for writers): a read must not take
        // the write lock.
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Deferred)
            .map_err(self.err("begin a read"))?;
        Ok(ReadSnapshot { _tx: tx })
    }

    /// The image stored under `rel` (relative to the collection root).
    pub fn image_by_path(&self, rel: &str) -> Result<Option<ImageRow>> {
        Ok(self.query_images("WHERE path = ?1", "", [rel])?.pop())
    }

    /// The image with this id.
    pub fn image_by_id(&self, id: i64) -> Result<Option<ImageRow>> {
        Ok(self.query_images("WHERE id = ?1", "", [id])?.pop())
    }

    /// Images that could not be embedded, ordered by path.
    pub fn failures(&self) -> Result<Vec<ImageRow>> {
        self.query_images("WHERE status = 'failed'", "ORDER BY path", [])
    }

    fn query_images<P: rusqlite::Params>(
        &self,
        filter: &str,
        order: &str,
        params: P,
    ) -> Result<Vec<ImageRow>> {
        let sql = format!("SELECT {IMAGE_COLUMNS} FROM images {filter} {order}");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err("read images"))?;
        let rows = stmt.query_map(params, image_row).map_err(self.err("read images"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err("read images"))
    }

    /// Deletes images (their descriptors go with them) in one transaction; returns how many
    /// rows existed.
    pub fn delete_images(&mut self, ids: &[i64]) -> Result<usize> {
        let path = &self.path;
        let err = Error::at(path, "delete images");
        let tx = self.conn.transaction().map_err(err)?;
        let mut deleted = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM images WHERE id = ?1")
                .map_err(Error::at(path, "delete images"))?;
            for id in ids {
                deleted += stmt.execute([id]).map_err(Error::at(path, "delete images"))?;
            }
        }
        stamp(&tx).map_err(Error::at(path, "delete images"))?;
        tx.commit().map_err(Error::at(path, "commit deleted images"))?;
        Ok(deleted)
    }

    /// Gives images new paths (files moved or renamed, content unchanged) in one transaction:
    /// each row keeps its id, hash and every model's descriptor; path, label, size and mtime are
    /// replaced. A new path that another row holds is an error (nothing is moved then).
    pub fn move_images(&mut self, moves: &[ImageMove]) -> Result<()> {
        for m in moves {
            check_rel_path(&m.path, "image path").map_err(|what| self.invalid(what))?;
        }
        let path = &self.path;
        let op = "move images";
        let tx = self.conn.transaction().map_err(Error::at(path, op))?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE images SET path = ?2, label = ?3, size = ?4, mtime_ns = ?5, \
                     updated_at = {NOW} WHERE id = ?1"
                ))
                .map_err(Error::at(path, op))?;
            for m in moves {
                let err = |cause| {
                    Error::sqlite(path, format!("move image {} to {}", m.id, m.path), cause)
                };
                stmt.execute(params![m.id, m.path, m.label, m.size, m.mtime_ns]).map_err(err)?;
            }
        }
        stamp(&tx).map_err(Error::at(path, op))?;
        tx.commit().map_err(Error::at(path, "commit moved images"))
    }

    /// Records new size and mtime for images whose content did not change, in one transaction.
    pub fn update_stats(&mut self, updates: &[StatUpdate]) -> Result<()> {
        let path = &self.path;
        let tx = self.conn.transaction().map_err(Error::at(path, "update image stats"))?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "UPDATE images SET size = ?2, mtime_ns = ?3, updated_at = {NOW} WHERE id = ?1"
                ))
                .map_err(Error::at(path, "update image stats"))?;
            for u in updates {
                stmt.execute(params![u.id, u.size, u.mtime_ns])
                    .map_err(Error::at(path, "update image stats"))?;
            }
        }
        stamp(&tx).map_err(Error::at(path, "update image stats"))?;
        tx.commit().map_err(Error::at(path, "commit image stats"))
    }

    /// Writes one batch of the index pipeline in one transaction: each image row is upserted by
    /// path, and its descriptor for `model_id` stored.
    ///
    /// - A failed image gets status `failed` and its error, and loses its descriptors.
    /// - An image whose content hash changed loses the descriptors of *every* model: they
    ///   describe the old content. Other models re-embed it on their next run.
    /// - Label, size and dimensions are replaced by the update's values.
    ///
    /// Readers see either none or all of the batch; a crash loses at most this batch.
    pub fn commit_batch(&mut self, model_id: i64, batch: &[ImageUpdate]) -> Result<()> {
        let dim = self.model(model_id)?.dim;
        for u in batch {
            check_rel_path(&u.path, "image path").map_err(|what| self.invalid(what))?;
            if let Outcome::Embedded(v) = &u.outcome {
                if v.len() != dim {
                    return Err(self.invalid(format!(
                        "descriptor of {} has {} values but model {model_id} has dim {dim}",
                        u.path,
                        v.len()
                    )));
                }
            }
        }
        let path = &self.path;
        let op = "write a batch of images";
        let tx = self.conn.transaction().map_err(Error::at(path, op))?;
        {
            let mut find = tx
                .prepare_cached("SELECT hash FROM images WHERE path = ?1")
                .map_err(Error::at(path, op))?;
            let mut upsert = tx
                .prepare_cached(&format!(
                    "INSERT INTO images \
                       (path, size, mtime_ns, hash, width, height, label, status, error, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, {NOW}) \
                     ON CONFLICT (path) DO UPDATE SET \
                       size = excluded.size, mtime_ns = excluded.mtime_ns, hash = excluded.hash, \
                       width = excluded.width, height = excluded.height, label = excluded.label, \
                       status = excluded.status, error = excluded.error, \
                       updated_at = excluded.updated_at \
                     RETURNING id"
                ))
                .map_err(Error::at(path, op))?;
            let mut clear = tx
                .prepare_cached("DELETE FROM descriptors WHERE image_id = ?1")
                .map_err(Error::at(path, op))?;
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO descriptors (image_id, model_id, vector) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (image_id, model_id) DO UPDATE SET vector = excluded.vector",
                )
                .map_err(Error::at(path, op))?;
            for u in batch {
                let err = |cause| Error::sqlite(path, format!("store image {}", u.path), cause);
                let old_hash: Option<String> =
                    find.query_row([&u.path], |r| r.get(0)).optional().map_err(err)?;
                let (status, error) = match &u.outcome {
                    Outcome::Embedded(_) => (Status::Ok, None),
                    Outcome::Failed(e) => (Status::Failed, Some(e.as_str())),
                };
                let id: i64 = upsert
                    .query_row(
                        params![
                            u.path,
                            u.size,
                            u.mtime_ns,
                            u.hash,
                            u.width,
                            u.height,
                            u.label,
                            status.as_str(),
                            error
                        ],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                let changed = old_hash.is_some_and(|h| h != u.hash);
                if changed || status == Status::Failed {
                    clear.execute([id]).map_err(err)?;
                }
                if let Outcome::Embedded(v) = &u.outcome {
                    put.execute(params![id, model_id, f32s_to_blob(v)]).map_err(err)?;
                }
            }
        }
        stamp(&tx).map_err(Error::at(path, op))?;
        tx.commit().map_err(Error::at(path, "commit a batch of images"))
    }

    // ----- models ------------------------------------------------------------------------------

    /// Registers a model and returns its id; an identical model (same plugin, backbone,
    /// weights hash and config) keeps its id, and its `weights_path` is updated if it moved.
    pub fn upsert_model(&self, m: &NewModel) -> Result<i64> {
        let path = &self.path;
        let op = "register a model";
        let config = canonical_json(&m.config);
        let tx = self.conn.unchecked_transaction().map_err(Error::at(path, op))?;
        tx.execute(
            "INSERT INTO models \
               (plugin, backbone, weights_path, weights_hash, config, dim, random_weights) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
             ON CONFLICT (plugin, backbone, weights_hash, config) DO NOTHING",
            params![
                m.plugin,
                m.backbone,
                m.weights_path,
                m.weights_hash,
                config,
                to_i64(m.dim),
                m.random_weights
            ],
        )
        .map_err(Error::at(path, op))?;
        let (id, dim, random, weights_path): (i64, usize, bool, Option<String>) = tx
            .query_row(
                "SELECT id, dim, random_weights, weights_path FROM models \
                 WHERE plugin = ?1 AND backbone = ?2 AND weights_hash = ?3 AND config = ?4",
                params![m.plugin, m.backbone, m.weights_hash, config],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(Error::at(path, op))?;
        if dim != m.dim {
            return Err(Error::ModelConflict {
                path: path.clone(),
                id,
                what: format!("dim {} instead of {dim}", m.dim),
            });
        }
        if random != m.random_weights {
            return Err(Error::ModelConflict {
                path: path.clone(),
                id,
                what: format!("random_weights {} instead of {random}", m.random_weights),
            });
        }
        if weights_path != m.weights_path {
            tx.execute(
                "UPDATE models SET weights_path = ?2 WHERE id = ?1",
                params![id, m.weights_path],
            )
            .map_err(Error::at(path, op))?;
        }
        stamp(&tx).map_err(Error::at(path, op))?;
        tx.commit().map_err(Error::at(path, op))?;
        Ok(id)
    }

    /// The model with this id; [`Error::NoSuchModel`] if there is none.
    pub fn model(&self, id: i64) -> Result<ModelRow> {
        self.conn
            .query_row(
                &format!("SELECT {MODEL_COLUMNS} FROM models WHERE id = ?1"),
                [id],
                model_row,
            )
            .optional()
            .map_err(self.err("read a model"))?
            .ok_or_else(|| Error::NoSuchModel { path: self.path.clone(), id })
    }

    /// Every model, ordered by id.
    pub fn models(&self) -> Result<Vec<ModelRow>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY id"))
            .map_err(self.err("read models"))?;
        let rows = stmt.query_map([], model_row).map_err(self.err("read models"))?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err("read models"))
    }

    // ----- descriptors -------------------------------------------------------------------------

    /// All descriptors of a model for images with status `ok`, ordered by image id.
    pub fn descriptors(&self, model_id: i64) -> Result<Descriptors> {
        self.descriptors_page(model_id, i64::MIN, usize::MAX)
    }

    /// [`Store::descriptors`] a page at a time: at most `limit` descriptors of images whose id
    /// is above `after`, ordered by image id. The next page starts after the last id returned;
    /// an empty page is the end. Read the pages inside one [`Store::read_snapshot`] to see one
    /// state of the database throughout.
    pub fn descriptors_page(&self, model_id: i64, after: i64, limit: usize) -> Result<Descriptors> {
        let dim = self.model(model_id)?.dim;
        let op = "read descriptors";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.image_id, d.vector FROM descriptors d JOIN images i ON i.id = d.image_id \
                 WHERE d.model_id = ?1 AND i.status = 'ok' AND d.image_id > ?2 \
                 ORDER BY d.image_id LIMIT ?3",
            )
            .map_err(self.err(op))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![model_id, after, limit]).map_err(self.err(op))?;
        let mut out = Descriptors { ids: Vec::new(), dim, data: Vec::new() };
        while let Some(row) = rows.next().map_err(self.err(op))? {
            let id: i64 = row.get(0).map_err(self.err(op))?;
            let blob = row.get_ref(1).and_then(|v| Ok(v.as_blob()?)).map_err(self.err(op))?;
            if blob.len() != dim * 4 {
                return Err(self.bad_data(format!(
                    "descriptor of image {id} for model {model_id} has {} bytes, expected {}",
                    blob.len(),
                    dim * 4
                )));
            }
            extend_f32s(&mut out.data, blob).map_err(|e| self.bad_data(e.to_string()))?;
            out.ids.push(id);
        }
        Ok(out)
    }

    /// The ids of the images that have a descriptor for `model_id` (status ok), ascending:
    /// what [`Store::descriptors`] would return, without reading the vectors.
    pub fn descriptor_ids(&self, model_id: i64) -> Result<Vec<i64>> {
        let op = "read descriptor ids";
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.image_id FROM descriptors d JOIN images i ON i.id = d.image_id \
                 WHERE d.model_id = ?1 AND i.status = 'ok' ORDER BY d.image_id",
            )
            .map_err(self.err(op))?;
        let ids = stmt.query_map([model_id], |r| r.get(0)).map_err(self.err(op))?;
        ids.collect::<rusqlite::Result<_>>().map_err(self.err(op))
    }

    /// One image's descriptor for a model.
    pub fn descriptor(&self, image_id: i64, model_id: i64) -> Result<Option<Vec<f32>>> {
        let blob: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT vector FROM descriptors WHERE image_id = ?1 AND model_id = ?2",
                [image_id, model_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err("read a descriptor"))?;
        blob.map(|b| crate::blob_to_f32s(&b).map_err(|e| self.bad_data(e.to_string()))).transpose()
    }

    // ----- PCA ---------------------------------------------------------------------------------

    /// Stores a PCA fitted on `model_id`'s descriptors; returns its id.
    pub fn save_pca(&mut self, model_id: i64, pca: &PcaRecord) -> Result<i64> {
        let dim = self.model(model_id)?.dim;
        let shape_error = if pca.in_dim != dim {
            Some(format!("PCA input dim {} but model {model_id} has dim {dim}", pca.in_dim))
        } else if pca.out_dim == 0 || pca.out_dim > pca.in_dim {
            Some(format!("PCA output dim {} not in 1..={}", pca.out_dim, pca.in_dim))
        } else if pca.mean.len() != pca.in_dim {
            Some(format!("PCA mean has {} values, expected {}", pca.mean.len(), pca.in_dim))
        } else if pca.components.len() != pca.in_dim * pca.out_dim {
            Some(format!(
                "PCA components have {} values, expected {} × {}",
                pca.components.len(),
                pca.out_dim,
                pca.in_dim
            ))
        } else if pca.explained_variance.len() != pca.out_dim {
            Some(format!(
                "PCA explained variance has {} values, expected {}",
                pca.explained_variance.len(),
                pca.out_dim
            ))
        } else {
            None
        };
        if let Some(what) = shape_error {
            return Err(self.invalid(what));
        }
        let path = &self.path;
        let op = "store a PCA";
        let tx = self.conn.transaction().map_err(Error::at(path, op))?;
        let id: i64 = tx
            .query_row(
                "INSERT INTO pca (model_id, in_dim, out_dim, whiten, mean, components, \
                   explained_variance, total_variance, n_samples) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
                params![
                    model_id,
                    to_i64(pca.in_dim),
                    to_i64(pca.out_dim),
                    pca.whiten,
                    f32s_to_blob(&pca.mean),
                    f32s_to_blob(&pca.components),
                    f32s_to_blob(&pca.explained_variance),
                    pca.total_variance,
                    to_i64(pca.n_samples)
                ],
                |r| r.get(0),
            )
            .map_err(Error::at(path, op))?;
        stamp(&tx).map_err(Error::at(path, op))?;
        tx.commit().map_err(Error::at(path, op))?;
        Ok(id)
    }

    /// The most recently stored PCA of a model. Note that a query must use the PCA of the
    /// current generation ([`Store::pca`] with [`Generation::pca_id`]), which may be older.
    pub fn latest_pca(&self, model_id: i64) -> Result<Option<(i64, PcaRecord)>> {
        self.query_pca("WHERE model_id = ?1 ORDER BY id DESC LIMIT 1", model_id)
    }

    /// The PCA with this id.
    pub fn pca(&self, id: i64) -> Result<Option<PcaRecord>> {
        Ok(self.query_pca("WHERE id = ?1", id)?.map(|(_, p)| p))
    }

    fn query_pca(&self, filter: &str, param: i64) -> Result<Option<(i64, PcaRecord)>> {
        let op = "read a PCA";
        let row = self
            .conn
            .query_row(&format!("SELECT {PCA_COLUMNS} FROM pca {filter}"), [param], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, usize>(1)?,
                    r.get::<_, usize>(2)?,
                    r.get::<_, bool>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Vec<u8>>(5)?,
                    r.get::<_, Vec<u8>>(6)?,
                    r.get::<_, f64>(7)?,
                    r.get::<_, usize>(8)?,
                ))
            })
            .optional()
            .map_err(self.err(op))?;
        let Some((id, in_dim, out_dim, whiten, mean, components, ev, total_variance, n_samples)) =
            row
        else {
            return Ok(None);
        };
        let decode = |b: &[u8]| crate::blob_to_f32s(b).map_err(|e| self.bad_data(e.to_string()));
        let pca = PcaRecord {
            in_dim,
            out_dim,
            whiten,
            mean: decode(&mean)?,
            components: decode(&components)?,
            explained_variance: decode(&ev)?,
            total_variance,
            n_samples,
        };
        Ok(Some((id, pca)))
    }

    // ----- index generations -------------------------------------------------------------------

    /// Records a generation of index files and makes it the model's current one, in one
    /// transaction committed with `synchronous=FULL`. Call it only once the files are durable
    /// (written and fsynced): from then on queries use them.
    pub fn record_generation(&mut self, g: &NewGeneration) -> Result<i64> {
        self.model(g.model_id)?;
        if let Some(pca_id) = g.pca_id {
            let owner: Option<i64> = self
                .conn
                .query_row("SELECT model_id FROM pca WHERE id = ?1", [pca_id], |r| r.get(0))
                .optional()
                .map_err(self.err("read a PCA"))?;
            if owner != Some(g.model_id) {
                return Err(self.invalid(format!(
                    "generation for model {} refers to PCA {pca_id}, which {}",
                    g.model_id,
                    match owner {
                        None => "does not exist".to_string(),
                        Some(m) => format!("belongs to model {m}"),
                    }
                )));
            }
        }
        if g.kind.is_empty() {
            return Err(self.invalid("generation with an empty kind".to_string()));
        }
        for f in &g.files {
            check_rel_path(f, "index file name").map_err(|what| self.invalid(what))?;
        }
        let path = &self.path;
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(Error::at(path, "set synchronous=FULL"))?;
        let result = insert_generation(&mut self.conn, path, g);
        let restored = self
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(Error::at(path, "set synchronous=NORMAL"));
        let id = result?;
        restored?;
        Ok(id)
    }

    /// The generation queries should use for this model.
    pub fn current_generation(&self, model_id: i64) -> Result<Option<Generation>> {
        Ok(self.query_generations("AND current = 1", model_id)?.pop())
    }

    /// Every generation of a model, oldest first (for removing the files of old ones).
    pub fn generations(&self, model_id: i64) -> Result<Vec<Generation>> {
        self.query_generations("ORDER BY id", model_id)
    }

    fn query_generations(&self, rest: &str, model_id: i64) -> Result<Vec<Generation>> {
        let op = "read index generations";
        let sql = format!(
            "SELECT {GENERATION_COLUMNS} FROM index_generations WHERE model_id = ?1 {rest}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err(op))?;
        let rows = stmt.query_map([model_id], generation_row).map_err(self.err(op))?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.err(op))
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

fn insert_generation(conn: &mut Connection, path: &Path, g: &NewGeneration) -> Result<i64> {
    let op = "record an index generation";
    let tx = conn.transaction().map_err(Error::at(path, op))?;
    tx.execute(
        "UPDATE index_generations SET current = 0 WHERE model_id = ?1 AND current = 1",
        [g.model_id],
    )
    .map_err(Error::at(path, op))?;
    let files = serde_json::Value::from(g.files.clone());
    let id: i64 = tx
        .query_row(
            "INSERT INTO index_generations (model_id, pca_id, kind, params, files, count, current) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1) RETURNING id",
            params![
                g.model_id,
                g.pca_id,
                g.kind,
                canonical_json(&g.params),
                canonical_json(&files),
                to_i64(g.count)
            ],
            |r| r.get(0),
        )
        .map_err(Error::at(path, op))?;
    stamp(&tx).map_err(Error::at(path, op))?;
    tx.commit().map_err(Error::at(path, "commit an index generation"))?;
    Ok(id)
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

fn image_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
    let status: String = r.get(8)?;
    let Some(status) = Status::parse(&status) else {
        return Err(rusqlite::Error::FromSqlConversionFailure(
            8,
            Type::Text,
            format!("unknown image status {status:?}").into(),
        ));
    };
    Ok(ImageRow {
        id: r.get(0)?,
        path: r.get(1)?,
        size: r.get(2)?,
        mtime_ns: r.get(3)?,
        hash: r.get(4)?,
        width: r.get(5)?,
        height: r.get(6)?,
        label: r.get(7)?,
        status,
        error: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn model_row(r: &Row<'_>) -> rusqlite::Result<ModelRow> {
    Ok(ModelRow {
        id: r.get(0)?,
        plugin: r.get(1)?,
        backbone: r.get(2)?,
        weights_path: r.get(3)?,
        weights_hash: r.get(4)?,
        config: json_column(r, 5)?,
        dim: r.get(6)?,
        random_weights: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn generation_row(r: &Row<'_>) -> rusqlite::Result<Generation> {
    let files = json_column(r, 5)?;
    let files = serde_json::from_value(files)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, Type::Text, Box::new(e)))?;
    Ok(Generation {
        id: r.get(0)?,
        model_id: r.get(1)?,
        pca_id: r.get(2)?,
        kind: r.get(3)?,
        params: json_column(r, 4)?,
        files,
        count: r.get(6)?,
        current: r.get(7)?,
        created_at: r.get(8)?,
    })
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

/// Paths stored in the database are relative, `/` separated and never climb out of their root.
fn check_rel_path(p: &str, what: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err(format!("empty {what}"));
    }
    if p.starts_with('/') {
        return Err(format!("{what} {p:?} is absolute; it must be relative"));
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("{what} {p:?} has an empty, '.' or '..' component"));
    }
    Ok(())
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
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
