//! The long-lived query service behind `irtdb serve`: the collection's model loaded once, the
//! current index generation held in memory and followed as `irtdb index` commits new ones.
//!
//! Blocking code, no HTTP (the `irtdb-serve` crate puts it behind axum). Every answer goes through
//! the same scoring as `irtdb query` ([`crate::query::hits`]), so an uploaded image gets the hits
//! `irtdb query --json` gives for the same file.
//!
//! - Model: `workers` backbone instances (default 1), each used by one request at a time; decoding
//!   and preprocessing run on the caller's thread, outside the model's lock. Concurrent queries are
//!   not batched: each is one forward of one image, so an answer is bit-identical to the CLI's.
//! - Generations: each request reads the current generation's id (one indexed SQLite row; WAL lets
//!   it read beside a writer). When it changed, the request that notices loads the new index and
//!   PCA and swaps them in; requests arriving meanwhile keep answering from the old one. A
//!   generation whose files are gone (a newer one replaced it) is skipped; one whose files are
//!   damaged is rebuilt in memory from the database. The service never writes the database.
//! - Files: only by image id, and only when the path, symlinks resolved, stays under the
//!   collection root.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::Instant;

use irtdb_core::Backbone;
use irtdb_image::DecodeLimits;
use irtdb_index::{HnswIndex, Pca};
use irtdb_plugin_api::host::{LoadedBackbone, Plugin};
use irtdb_store::{Generation, Status, Store};
use ndarray::Array4;
use serde::Serialize;

use crate::collection::{self, StoredModel};
use crate::dups::{self, DupsReport};
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::query::{self, Hit, Searcher};

/// What kind of failure a request met; the HTTP layer maps each to a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request itself is wrong (a parameter, an undecodable image).
    BadRequest,
    /// No such image, or its file is gone.
    NotFound,
    /// The image's file resolves outside the collection root.
    Forbidden,
    /// The image declares more pixels or memory than the limits allow (a decompression bomb).
    TooLarge,
    /// The collection cannot answer now (e.g. no index generation).
    Unavailable,
    /// Anything else: a bug or a broken installation.
    Internal,
}

/// A request's failure: its kind and a message that says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl From<Error> for ServiceError {
    fn from(e: Error) -> Self {
        Self::new(ErrorKind::Internal, e.to_string())
    }
}

impl From<irtdb_store::Error> for ServiceError {
    fn from(e: irtdb_store::Error) -> Self {
        Self::new(ErrorKind::Internal, e.to_string())
    }
}

impl From<irtdb_image::Error> for ServiceError {
    fn from(e: irtdb_image::Error) -> Self {
        let kind = match e {
            irtdb_image::Error::TooLarge { .. } | irtdb_image::Error::TooMuchMemory { .. } => {
                ErrorKind::TooLarge
            }
            irtdb_image::Error::Io { .. } => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        };
        Self::new(kind, e.to_string())
    }
}

pub type ServiceResult<T> = std::result::Result<T, ServiceError>;

/// How a [`Service`] is set up.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    pub db: PathBuf,
    /// Model instances (concurrent forwards); at least 1.
    pub workers: usize,
    /// Decode limits for uploads and thumbnails.
    pub limits: DecodeLimits,
}

/// The answer to one query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryAnswer {
    /// `upload` or `id:N`.
    pub query: String,
    /// Set when the query is an image of the collection.
    pub collection_id: Option<i64>,
    pub hits: Vec<Hit>,
    /// `hnsw (ef N)` or `exact`, as `irtdb query` reports it.
    pub method: String,
    /// The index generation that answered.
    pub generation: i64,
    pub timings: AnswerTimings,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct AnswerTimings {
    pub decode_ms: f64,
    pub embed_ms: f64,
    pub search_ms: f64,
}

/// One index generation, loaded.
#[derive(Debug)]
struct Loaded {
    generation: Generation,
    pca: Option<Pca>,
    hnsw: Searcher,
    /// Every vector, for `exact=1` and duplicates; read on first use.
    exact: OnceLock<std::result::Result<Arc<Searcher>, String>>,
    /// The last duplicates answer (threshold bits, report).
    dups: Mutex<Option<(u32, Arc<DupsReport>)>>,
    note: Option<String>,
}

/// The query service; `Sync`, share it behind an `Arc`.
pub struct Service {
    db: PathBuf,
    /// The collection root, canonical (symlinks resolved).
    root: PathBuf,
    /// The root as recorded (paths in answers are relative to it).
    recorded_root: PathBuf,
    model_id: i64,
    stored: StoredModel,
    random_weights: bool,
    limits: DecodeLimits,
    workers: usize,
    _plugins: Vec<Plugin>,
    embedders: Mutex<Vec<Embedder<LoadedBackbone>>>,
    embedder_free: Condvar,
    stores: Mutex<Vec<Store>>,
    state: RwLock<Arc<Loaded>>,
    reloading: Mutex<()>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("db", &self.db)
            .field("root", &self.root)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Opens the collection, loads its model `workers` times and its current index generation.
    pub fn open(opts: &ServiceOptions) -> Result<Self> {
        let store = Store::open_existing(&opts.db)?;
        let recorded_root = store.collection_root()?.unwrap_or_default();
        let root = recorded_root.canonicalize().map_err(|e| {
            let message = format!(
                "the collection root {} is not reachable ({e}): serve needs the images' folder",
                recorded_root.display()
            );
            Error::refused(store.path(), message, &[])
        })?;
        let (row, stored) = collection::searchable_model(&store)?;
        collection::check_weights(&row, &stored)?;
        let workers = opts.workers.max(1);
        let (mut plugins, mut embedders) = (Vec::new(), Vec::new());
        for _ in 0..workers {
            let (plugin, backbone) = stored.spec.open()?;
            collection::check_backbone(&stored, backbone.info())?;
            let mut embedder = Embedder::new(backbone, stored.spec.pooling);
            embedder.preprocess = stored.backbone.preprocess.clone();
            plugins.push(plugin);
            embedders.push(embedder);
        }
        let generation = collection::searchable_generation(&store, row.id)?;
        let loaded = load_generation(&store, row.id, generation)?;
        Ok(Service {
            db: store.path().to_path_buf(),
            root,
            recorded_root,
            model_id: row.id,
            stored,
            random_weights: row.random_weights,
            limits: opts.limits,
            workers,
            _plugins: plugins,
            embedders: Mutex::new(embedders),
            embedder_free: Condvar::new(),
            stores: Mutex::new(vec![store]),
            state: RwLock::new(Arc::new(loaded)),
            reloading: Mutex::new(()),
        })
    }

    /// The database file.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Model instances.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The decode limits for uploads.
    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// The index generation answering now (without checking for a newer one).
    pub fn generation(&self) -> i64 {
        self.state.read().unwrap_or_else(|e| e.into_inner()).generation.id
    }

    /// Runs `f` with a database connection of the pool (opened when none is free).
    fn with_store<T>(&self, f: impl FnOnce(&Store) -> ServiceResult<T>) -> ServiceResult<T> {
        let pooled = self.stores.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let store = match pooled {
            Some(s) => s,
            None => Store::open_existing(&self.db)?,
        };
        let out = f(&store);
        let mut pool = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 32 {
            pool.push(store);
        }
        out
    }

    /// The current generation, loading a newer one first if `index` committed it.
    fn current(&self, store: &Store) -> ServiceResult<Arc<Loaded>> {
        let held = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let now = store.current_generation(self.model_id)?;
        let Some(now) = now.filter(|g| g.id != held.generation.id) else { return Ok(held) };
        // One request loads; the others keep answering from the generation they have.
        let Ok(_reloading) = self.reloading.try_lock() else { return Ok(held) };
        let held = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        if held.generation.id == now.id {
            return Ok(held);
        }
        match load_generation(store, self.model_id, now) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&loaded);
                Ok(loaded)
            }
            // Not loadable now (e.g. replaced while reading): the next request tries again.
            Err(_) => Ok(held),
        }
    }

    /// Embeds an uploaded image exactly as `irtdb query` embeds a file.
    pub fn embed_bytes(&self, bytes: &[u8]) -> ServiceResult<(Vec<f32>, AnswerTimings)> {
        let t = Instant::now();
        let p = &self.stored.backbone.preprocess;
        p.validate().map_err(|e| {
            ServiceError::new(
                ErrorKind::Internal,
                format!("the collection's preprocessing is invalid: {e}"),
            )
        })?;
        let decoded = irtdb_image::decode_bytes_sized(
            bytes,
            Path::new("the uploaded image"),
            &self.limits,
            irtdb_image::DecodeSize::for_preprocess(p),
        )?;
        let [h, w] = p.size;
        let mut tensor = Array4::<f32>::zeros((1, 3, h as usize, w as usize));
        irtdb_image::preprocess(
            &decoded.flattened(p.alpha_background),
            p,
            tensor.as_slice_mut().expect("a new array is contiguous"),
        );
        let decode_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let mut embedder = {
            let mut free = self.embedders.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(e) = free.pop() {
                    break e;
                }
                free = self.embedder_free.wait(free).unwrap_or_else(|e| e.into_inner());
            }
        };
        let out = embedder.embed_tensor(tensor.view());
        self.embedders.lock().unwrap_or_else(|e| e.into_inner()).push(embedder);
        self.embedder_free.notify_one();
        let out = out.map_err(|e| {
            ServiceError::new(
                ErrorKind::Internal,
                format!("the model failed on the uploaded image: {e}"),
            )
        })?;
        let embed_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok((out.row(0).to_vec(), AnswerTimings { decode_ms, embed_ms, search_ms: 0.0 }))
    }

    /// The `k` best hits for an uploaded image.
    pub fn query_bytes(
        &self,
        bytes: &[u8],
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> ServiceResult<QueryAnswer> {
        let (v, timings) = self.embed_bytes(bytes)?;
        self.answer("upload".into(), None, &v, k, ef, exact, timings)
    }

    /// The `k` best hits for the collection's image `id` (its stored descriptor).
    pub fn query_id(
        &self,
        id: i64,
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> ServiceResult<QueryAnswer> {
        let v = self.with_store(|store| {
            let row = store.image_by_id(id)?.ok_or_else(|| no_image(id))?;
            if row.status != Status::Ok {
                return Err(ServiceError::new(
                    ErrorKind::NotFound,
                    format!(
                        "image {id} ({}) failed to embed, so it cannot be a query: {}",
                        row.path,
                        row.error.unwrap_or_default()
                    ),
                ));
            }
            store.descriptor(id, self.model_id)?.ok_or_else(|| {
                ServiceError::new(ErrorKind::NotFound, format!("image {id} has no descriptor yet"))
            })
        })?;
        self.answer(format!("id:{id}"), Some(id), &v, k, ef, exact, AnswerTimings::default())
    }

    #[allow(clippy::too_many_arguments)]
    fn answer(
        &self,
        query: String,
        collection_id: Option<i64>,
        v: &[f32],
        k: usize,
        ef: Option<usize>,
        exact: bool,
        mut timings: AnswerTimings,
    ) -> ServiceResult<QueryAnswer> {
        let t = Instant::now();
        let ef = ef.unwrap_or(query::default_ef(k));
        self.with_store(|store| {
            let loaded = self.current(store)?;
            let exact_searcher;
            let searcher = if exact {
                exact_searcher = loaded.exact(store, self.model_id)?;
                &*exact_searcher
            } else {
                &loaded.hnsw
            };
            let hits = query::hits(store, searcher, loaded.pca.as_ref(), v, k, ef)?;
            timings.search_ms = t.elapsed().as_secs_f64() * 1e3;
            Ok(QueryAnswer {
                query,
                collection_id,
                hits,
                method: if exact { "exact".into() } else { format!("hnsw (ef {ef})") },
                generation: loaded.generation.id,
                timings,
            })
        })
    }

    /// The file of image `id`, only if it resolves (symlinks followed) under the collection root.
    pub fn image_file(&self, id: i64) -> ServiceResult<PathBuf> {
        let row = self.with_store(|store| store.image_by_id(id)?.ok_or_else(|| no_image(id)))?;
        let rel = Path::new(&row.path);
        let plain = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain {
            return Err(ServiceError::new(
                ErrorKind::Forbidden,
                format!("image {id}'s recorded path is not a plain relative path; not served"),
            ));
        }
        let file = self.recorded_root.join(rel).canonicalize().map_err(|_| {
            ServiceError::new(
                ErrorKind::NotFound,
                format!("image {id}'s file ({}) is gone; re-run `irtdb index`", row.path),
            )
        })?;
        if !file.starts_with(&self.root) {
            return Err(ServiceError::new(
                ErrorKind::Forbidden,
                format!(
                    "image {id}'s file ({}) resolves outside the collection root; not served",
                    row.path
                ),
            ));
        }
        if !file.is_file() {
            return Err(ServiceError::new(
                ErrorKind::NotFound,
                format!("image {id}'s path ({}) is not a file", row.path),
            ));
        }
        Ok(file)
    }

    /// A JPEG thumbnail (at most `size` × `size`) of image `id`.
    pub fn thumbnail(&self, id: i64, size: u32) -> ServiceResult<Vec<u8>> {
        let file = self.image_file(id)?;
        // Both sides at least `size` (more than a fit in size × size needs): a camera JPEG is
        // decoded at 1/8 or 1/4 instead of in full.
        let at_least = irtdb_image::DecodeSize::AtLeast { width: size, height: size };
        let img = irtdb_image::decode_file_sized(&file, &self.limits, at_least).map_err(|e| {
            ServiceError::new(ErrorKind::NotFound, format!("image {id} cannot be decoded now: {e}"))
        })?;
        irtdb_image::thumbnail_jpeg(&img, size).map_err(|e| {
            ServiceError::new(ErrorKind::Internal, format!("making a thumbnail of image {id}: {e}"))
        })
    }

    /// `irtdb info` of the collection, plus what this service holds.
    pub fn info(&self) -> ServiceResult<serde_json::Value> {
        let info = crate::info::run(&self.db)?;
        let mut v = serde_json::to_value(info)
            .map_err(|e| ServiceError::new(ErrorKind::Internal, e.to_string()))?;
        let loaded = self.with_store(|store| self.current(store))?;
        v["serving"] = serde_json::json!({
            "generation": loaded.generation.id,
            "count": loaded.generation.count,
            "workers": self.workers,
            "note": loaded.note,
            "model": crate::model::describe(&self.stored.backbone),
            "random_weights": self.random_weights,
            "max_pixels": self.limits.max_pixels,
        });
        Ok(v)
    }

    /// Near-duplicate groups (see [`crate::dups`]), cached per generation and threshold.
    pub fn duplicates(&self, threshold: f32) -> ServiceResult<Arc<DupsReport>> {
        self.with_store(|store| {
            let loaded = self.current(store)?;
            if let Some((bits, r)) = &*loaded.dups.lock().unwrap_or_else(|e| e.into_inner()) {
                if *bits == threshold.to_bits() {
                    return Ok(Arc::clone(r));
                }
            }
            let exact = loaded.exact(store, self.model_id)?;
            let Searcher::Exact(v) = &*exact else { unreachable!("exact() gives exact") };
            let hnsw = match &loaded.hnsw {
                Searcher::Hnsw(h) if v.ids.len() > dups::EXACT_LIMIT => Some(&**h),
                _ => None,
            };
            let groups = dups::find_groups(v, threshold, dups::NEIGHBOURS, hnsw);
            let report = Arc::new(dups::report(
                store,
                self.recorded_root.clone(),
                v,
                threshold,
                hnsw.is_some(),
                self.random_weights,
                groups,
            )?);
            *loaded.dups.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((threshold.to_bits(), Arc::clone(&report)));
            Ok(report)
        })
    }
}

impl Loaded {
    fn exact(&self, store: &Store, model_id: i64) -> ServiceResult<Arc<Searcher>> {
        self.exact
            .get_or_init(|| {
                collection::indexed_vectors(store, model_id, self.pca.as_ref())
                    .map(|v| Arc::new(Searcher::Exact(v)))
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(|e| ServiceError::new(ErrorKind::Internal, e))
    }
}

fn no_image(id: i64) -> ServiceError {
    ServiceError::new(ErrorKind::NotFound, format!("no image with id {id} in the collection"))
}

/// Loads generation `g`'s PCA and HNSW index. Damaged or missing files are rebuilt in memory
/// from the database (never written: the service only reads), unless a newer generation has
/// replaced `g` meanwhile, which is an error (the caller loads that one instead).
fn load_generation(store: &Store, model_id: i64, g: Generation) -> Result<Loaded> {
    let pca = collection::generation_pca(store, &g)?;
    let (index, note) = match collection::load_index(store, &g)? {
        Ok(index) => (index, None),
        Err(problem) => {
            let still_current =
                store.current_generation(model_id)?.is_some_and(|now| now.id == g.id);
            if !still_current {
                return Err(Error::Internal {
                    what: format!("index generation {} was replaced while loading", g.id),
                });
            }
            let v = collection::indexed_vectors(store, model_id, pca.as_ref())?;
            let index = HnswIndex::build(&v.data, v.dim, &v.ids, &collection::hnsw_params(&g))?;
            (index, Some(format!("{problem}; serving an index rebuilt in memory")))
        }
    };
    Ok(Loaded {
        generation: g,
        pca,
        hnsw: Searcher::Hnsw(Box::new(index)),
        exact: OnceLock::new(),
        dups: Mutex::new(None),
        note,
    })
}
