//! The searchable index after a change of descriptors (shared by `index` and `merge`), and
//! `reindex`: PCA fitted on the descriptors, HNSW built over the projected vectors, recorded as
//! the collection's current generation.

use std::path::Path;
use std::time::Instant;

use irtdb_index::Pca;
use irtdb_store::{Descriptors, Generation, Store};

use super::{BuildOptions, IndexReport, IndexSummary, PcaSummary, Progress};
use crate::collection::{self, META_INDEX_STALE};
use crate::error::{Error, Result};

/// The searchable index after a change of descriptors: updated in place when the current
/// generation still fits (same PCA settings, few enough changes), left alone when nothing
/// changed and its files are there, rebuilt (PCA refit, new HNSW generation) otherwise. Fills
/// the index fields of `report`. Shared by `index` and `merge`.
pub(crate) fn finish_index(
    store: &mut Store,
    model_id: i64,
    descriptors_changed: bool,
    build: &BuildOptions,
    report: &mut IndexSummary,
    nothing_to_index: &str,
    progress: &dyn Progress,
) -> Result<()> {
    // Also when an earlier run changed descriptors and died before recording its generation: its
    // successor finds nothing left to embed, but the current generation is still the old one.
    let descriptors_changed =
        descriptors_changed || store.meta(META_INDEX_STALE)?.as_deref() == Some("1");
    let current = match store.current_generation(model_id)? {
        Some(g) if fits(store, model_id, &g, build)? => Some(g),
        _ => None,
    };
    if let Some(g) = current {
        if descriptors_changed {
            progress.stage("updating the index in place");
            if update_in_place(store, model_id, &g, build, report)? {
                return Ok(());
            }
        } else if collection::index_files_present(store, &g) {
            // Nothing changed: the index files need only be there (loading a large graph to
            // check it would cost more than the rest of the run; a query verifies them as it
            // loads them).
            let pca = collection::generation_pca(store, &g)?;
            report.indexed = g.count;
            report.index_dim = match &pca {
                Some(p) => p.out_dim,
                None => store.model(model_id)?.dim,
            };
            report.pca = pca.as_ref().map(summary);
            return Ok(());
        } else {
            progress.stage("the index files are missing: rebuilding them from the database");
            report.index_rebuilt = true;
        }
    }
    let descriptors = store.descriptors(model_id)?;
    if descriptors.ids.is_empty() {
        return Err(Error::refused(store.path(), nothing_to_index, &[]));
    }
    rebuild(store, model_id, descriptors, build, report, progress)
}

/// Whether generation `g` was built with the PCA settings `build` asks for.
fn fits(store: &Store, model_id: i64, g: &Generation, build: &BuildOptions) -> Result<bool> {
    let wanted = build.pca_dim;
    Ok(match collection::generation_pca(store, g)? {
        Some(p) => p.out_dim == wanted && p.whiten == build.whiten,
        None => {
            wanted == 0
                || store.descriptor_ids(model_id).map(|d| d.len() <= wanted).unwrap_or(false)
        }
    })
}

/// [`collection::update_in_place`], filling `report`; false when a rebuild is due instead.
fn update_in_place(
    store: &mut Store,
    model_id: i64,
    g: &Generation,
    build: &BuildOptions,
    report: &mut IndexSummary,
) -> Result<bool> {
    let Some((index, update)) = collection::update_in_place(store, model_id, g, &build.hnsw)?
    else {
        return Ok(false);
    };
    store.set_meta(META_INDEX_STALE, "0")?;
    let pca = collection::generation_pca(store, g)?;
    report.indexed = index.len();
    report.index_dim = index.dim();
    report.pca = pca.as_ref().map(summary);
    report.index_update = Some(update);
    Ok(true)
}

/// PCA refitted on `descriptors` (when asked for and possible) and a new HNSW generation.
fn rebuild(
    store: &mut Store,
    model_id: i64,
    descriptors: Descriptors,
    build: &BuildOptions,
    report: &mut IndexSummary,
    progress: &dyn Progress,
) -> Result<()> {
    let n = descriptors.ids.len();
    let (pca, pca_id) = fit_pca(store, model_id, &descriptors, build, report, progress)?;
    let v = collection::Vectors::new(descriptors, pca.as_ref());
    progress.stage(&format!("building HNSW over {n} vectors of {} dimensions", v.dim));
    let (_, index) = collection::build_and_record(store, model_id, pca_id, &v, &build.hnsw)?;
    store.set_meta(META_INDEX_STALE, "0")?;
    report.indexed = index.len();
    report.index_dim = v.dim;
    report.pca = pca.as_ref().map(summary);
    Ok(())
}

/// The PCA `build` asks for, fitted on `d` and saved (with its id), or `None` with the reason
/// in `report.pca_skipped` (too few images, or a dimension not below the descriptors').
fn fit_pca(
    store: &mut Store,
    model_id: i64,
    d: &Descriptors,
    build: &BuildOptions,
    report: &mut IndexSummary,
    progress: &dyn Progress,
) -> Result<(Option<Pca>, Option<i64>)> {
    let (wanted, n) = (build.pca_dim, d.ids.len());
    if wanted == 0 {
        return Ok((None, None));
    }
    if wanted >= d.dim {
        report.pca_skipped = Some(format!(
            "PCA to {wanted} dimensions is not below the descriptor dimension {}; vectors kept as \
             they are",
            d.dim
        ));
        return Ok((None, None));
    }
    progress.stage(&format!("fitting PCA {} → {wanted} on {n} descriptors", d.dim));
    match Pca::fit(&d.data, n, d.dim, wanted, build.whiten) {
        Ok(p) => {
            let id = store.save_pca(model_id, &collection::pca_to_record(&p))?;
            Ok((Some(p), Some(id)))
        }
        Err(irtdb_index::Error::TooFewSamples { .. }) => {
            report.pca_skipped = Some(format!(
                "PCA to {wanted} dimensions needs more than {wanted} images, the collection has \
                 {n}; vectors kept at {} dimensions (index more images, or ask for no PCA to \
                 silence this)",
                d.dim
            ));
            Ok((None, None))
        }
        Err(e) => Err(e.into()),
    }
}

fn summary(p: &Pca) -> PcaSummary {
    PcaSummary {
        in_dim: p.in_dim,
        out_dim: p.out_dim,
        whiten: p.whiten,
        explained: p.explained_ratio(),
    }
}

/// `irtdb reindex`: rebuild PCA and HNSW from the stored descriptors, embedding nothing.
pub fn reindex(db: &Path, build: &BuildOptions, progress: &dyn Progress) -> Result<IndexReport> {
    let started = Instant::now();
    let mut store = Store::open_existing(db)?;
    let _lock = store.lock_writer(false)?;
    let Some((row, stored)) = collection::collection_model(&store)? else {
        let message =
            format!("{} has no model yet: run `irtdb index DIR` first", store.path().display());
        return Err(Error::refused(store.path(), message, &[]));
    };
    let d = store.descriptors(row.id)?;
    let n = d.ids.len();
    if n == 0 {
        let message =
            format!("{} holds no descriptors: run `irtdb index DIR` first", store.path().display());
        return Err(Error::refused(store.path(), message, &[]));
    }
    let mut report = IndexReport {
        db: store.path().to_path_buf(),
        root: store.collection_root()?.unwrap_or_default(),
        model: crate::model::describe(&stored.backbone),
        random_weights: row.random_weights,
        unchanged: n,
        ..Default::default()
    };
    rebuild(&mut store, row.id, d, build, &mut report.index, progress)?;
    report.index.index_rebuilt = true;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}
