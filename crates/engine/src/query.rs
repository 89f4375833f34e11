//! `irtdb query IMG...`: the most similar images of the collection.
//!
//! The query is embedded exactly as the collection was (same plugin, weights, preprocessing,
//! pooling, PCA); a collection image can be the query by its path or `id:N` without being
//! embedded again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::error::{Error, Result};
use irtdb_core::Backbone;
use irtdb_image::DecodeLimits;
use irtdb_index::{exact_search, Pca};
use irtdb_store::{Status, Store};
use serde::Serialize;

use crate::collection;
use crate::embed::{embed_files, Embedder};

#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub db: PathBuf,
    pub queries: Vec<String>,
    pub k: usize,
    /// Search every vector instead of the HNSW graph.
    pub exact: bool,
    /// HNSW search breadth (None: max(2k, 64)).
    pub ef: Option<usize>,
    pub batch: usize,
    /// `--precision`: must be the collection's (None: no check).
    pub precision: Option<crate::model::Precision>,
}

/// One result.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: i64,
    /// Cosine similarity in the indexed space (after PCA when there is one).
    pub score: f32,
    /// Relative to the collection root.
    pub path: String,
    pub label: Option<String>,
}

/// The results for one query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    pub query: String,
    /// The file the query image was read from, when it was embedded now.
    #[serde(serialize_with = "crate::lossy::opt_path")]
    pub file: Option<PathBuf>,
    /// Set when the query is an image of the collection (not embedded again).
    pub collection_id: Option<i64>,
    pub hits: Vec<Hit>,
    pub error: Option<String>,
}

/// Timings of a query run, for `--json` and benchmarks.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueryTimings {
    pub open_seconds: f64,
    pub model_load_seconds: f64,
    pub embed_seconds: f64,
    pub search_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QueryReport {
    #[serde(serialize_with = "crate::lossy::path")]
    pub db: PathBuf,
    #[serde(serialize_with = "crate::lossy::path")]
    pub root: PathBuf,
    pub model: String,
    pub random_weights: bool,
    pub method: String,
    pub results: Vec<QueryResult>,
    pub timings: QueryTimings,
    /// Notes worth showing (e.g. an index rebuilt from the database).
    pub notes: Vec<String>,
}

/// What a query argument refers to.
enum Target {
    Stored(i64),
    File(PathBuf),
}

fn resolve(store: &Store, root: &Path, q: &str) -> Result<Target> {
    if let Some(id) = q.strip_prefix("id:") {
        let bad = |message: String| Error::input(Path::new(q), message);
        let id: i64 = id.parse().map_err(|_| bad(format!("'{q}': id:N needs a number")))?;
        return match store.image_by_id(id)? {
            Some(r) if r.status == Status::Ok => Ok(Target::Stored(id)),
            Some(r) => Err(bad(format!(
                "image id {id} ({}) failed to embed: {}",
                r.path,
                r.error.unwrap_or_default()
            ))),
            None => Err(bad(format!("no image with id {id} in the collection"))),
        };
    }
    let p = Path::new(q);
    // A path of the collection, relative to its root or absolute under it, whose file is as it
    // was when indexed.
    let rel = if p.exists() {
        p.canonicalize()
            .ok()
            .and_then(|c| c.strip_prefix(root).ok().map(|r| r.to_string_lossy().replace('\\', "/")))
    } else {
        Some(q.to_string())
    };
    if let Some(rel) = rel {
        if let Some(r) = store.image_by_path(&rel)? {
            let file = root.join(&rel);
            let meta = std::fs::metadata(&file).ok();
            let unchanged = meta.is_some_and(|m| m.len() as i64 == r.size);
            if r.status == Status::Ok && (unchanged || !p.exists()) {
                return Ok(Target::Stored(r.id));
            }
        }
    }
    if p.is_file() {
        Ok(Target::File(p.to_path_buf()))
    } else {
        Err(Error::input(
            p,
            format!(
                "query '{q}' is neither an image file nor an image of the collection (by path or \
                 id:N)"
            ),
        ))
    }
}

pub fn run(opts: &QueryOptions) -> Result<QueryReport> {
    let t_open = Instant::now();
    let mut store = Store::open_existing(&opts.db)?;
    let root = store.collection_root()?.unwrap_or_default();
    let (row, stored) = collection::searchable_model(&store)?;
    collection::check_precision(store.path(), &stored, opts.precision)?;
    let generation = collection::searchable_generation(&store, row.id)?;
    let pca: Option<Pca> = collection::generation_pca(&store, &generation)?;
    let mut notes = Vec::new();
    let mut timings =
        QueryTimings { open_seconds: t_open.elapsed().as_secs_f64(), ..Default::default() };

    // Query vectors, in the collection's descriptor space.
    let targets: Vec<Result<Target>> =
        opts.queries.iter().map(|q| resolve(&store, &root, q)).collect();
    let files: Vec<PathBuf> = targets
        .iter()
        .filter_map(|t| match t {
            Ok(Target::File(p)) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let mut embedded = std::collections::HashMap::new();
    if !files.is_empty() {
        let t = Instant::now();
        collection::check_weights(&row, &stored)?;
        let (_plugin, backbone) = stored.spec.open()?;
        collection::check_backbone(&stored, backbone.info())?;
        timings.model_load_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut embedder = Embedder::new(backbone, stored.spec.pooling);
        embedder.preprocess = stored.backbone.preprocess.clone();
        for o in embed_files(&mut embedder, &files, opts.batch, &DecodeLimits::default(), |_| {})? {
            embedded.insert(o.path, o.result);
        }
        timings.embed_seconds = t.elapsed().as_secs_f64();
    }

    let t_search = Instant::now();
    let ef = opts.ef.unwrap_or(default_ef(opts.k));
    let searcher =
        Searcher::new(&mut store, row.id, &generation, pca.as_ref(), opts.exact, &mut notes)?;
    let mut results = Vec::new();
    for (q, t) in opts.queries.iter().zip(targets) {
        let mut r = QueryResult {
            query: q.clone(),
            file: None,
            collection_id: None,
            hits: vec![],
            error: None,
        };
        let vector = match t {
            Err(e) => Err(e),
            Ok(Target::Stored(id)) => {
                r.collection_id = Some(id);
                store.descriptor(id, row.id)?.ok_or_else(|| {
                    collection::invalid_data(
                        store.path(),
                        format!("image id {id} has no descriptor"),
                    )
                })
            }
            Ok(Target::File(p)) => {
                r.file = Some(p.clone());
                match embedded.remove(&p) {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(e)) => Err(e),
                    None => {
                        Err(Error::Internal { what: format!("{} was not embedded", p.display()) })
                    }
                }
            }
        };
        match vector {
            Err(e) => r.error = Some(format!("{e:#}")),
            Ok(v) => r.hits = hits(&store, &searcher, pca.as_ref(), &v, opts.k, ef)?,
        }
        results.push(r);
    }
    timings.search_seconds = t_search.elapsed().as_secs_f64();
    Ok(QueryReport {
        db: store.path().to_path_buf(),
        root,
        model: crate::model::describe(&stored.backbone),
        random_weights: row.random_weights,
        method: if opts.exact { "exact".into() } else { format!("hnsw (ef {ef})") },
        results,
        timings,
        notes,
    })
}

/// The HNSW search breadth used when none is given: `max(2k, 64)`.
pub fn default_ef(k: usize) -> usize {
    (2 * k).max(64)
}

/// The `k` best hits for descriptor `v` (in the collection's descriptor space, before PCA): `v`
/// is projected with `pca`, searched, and each hit gets its path and label from the database.
/// The one scoring path of `irtdb query` and `irtdb serve`.
pub fn hits(
    store: &Store,
    searcher: &Searcher,
    pca: Option<&Pca>,
    v: &[f32],
    k: usize,
    ef: usize,
) -> Result<Vec<Hit>> {
    let projected;
    let v = match pca {
        Some(p) => {
            projected = p.project(v);
            &projected[..]
        }
        None => v,
    };
    let mut out = Vec::new();
    for (rank, (id, score)) in searcher.search(v, k, ef).into_iter().enumerate() {
        let img = store.image_by_id(id)?;
        let (path, label) = img.map(|i| (i.path, i.label)).unwrap_or_default();
        out.push(Hit { rank: rank + 1, id, score, path, label });
    }
    Ok(out)
}

/// HNSW or exact search over the collection's indexed vectors.
#[derive(Debug)]
pub enum Searcher {
    Hnsw(Box<irtdb_index::HnswIndex>),
    Exact(collection::Vectors),
}

impl Searcher {
    /// The current generation's HNSW index (rebuilt from the database when its files are missing
    /// or damaged; why goes to `notes`), or, with `exact`, every indexed vector.
    pub fn new(
        store: &mut Store,
        model_id: i64,
        g: &irtdb_store::Generation,
        pca: Option<&Pca>,
        exact: bool,
        notes: &mut Vec<String>,
    ) -> Result<Self> {
        if exact {
            return Ok(Searcher::Exact(collection::indexed_vectors(store, model_id, pca)?));
        }
        let (index, rebuilt) = collection::load_or_rebuild(store, model_id, g, pca)?;
        notes.extend(rebuilt);
        Ok(Searcher::Hnsw(Box::new(index)))
    }

    /// `(id, score)` of the `k` best, best first; `q` is in the indexed space (after PCA).
    pub fn search(&self, q: &[f32], k: usize, ef: usize) -> Vec<(i64, f32)> {
        match self {
            Searcher::Hnsw(index) => index.search(q, k, ef),
            Searcher::Exact(v) => exact_search(&v.data, v.dim, q, k)
                .into_iter()
                .next()
                .unwrap_or_default()
                .into_iter()
                .map(|(row, s)| (v.ids[row as usize], s))
                .collect(),
        }
    }
}
