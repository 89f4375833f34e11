//! Models, their descriptors, and the PCAs fitted on them.

use super::*;

impl Store {
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
}

pub(super) fn model_row(r: &Row<'_>) -> rusqlite::Result<ModelRow> {
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
