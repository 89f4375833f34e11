//! Index generations: the searchable index's files recorded per model, one current.

use super::*;

impl Store {
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
}

pub(super) fn insert_generation(
    conn: &mut Connection,
    path: &Path,
    g: &NewGeneration,
) -> Result<i64> {
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

pub(super) fn generation_row(r: &Row<'_>) -> rusqlite::Result<Generation> {
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
