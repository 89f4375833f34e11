//! Images: their rows, moves, stat updates, deletions, and the batch commit of their
//! descriptors.

use super::*;

impl Store {
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
}

pub(super) fn image_row(r: &Row<'_>) -> rusqlite::Result<ImageRow> {
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

/// Paths stored in the database are relative, `/` separated and never climb out of their root.
pub(super) fn check_rel_path(p: &str, what: &str) -> std::result::Result<(), String> {
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
