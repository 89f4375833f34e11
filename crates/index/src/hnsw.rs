//! HNSW approximate search over hnsw_rs, with durable, self-checking index files.
//!
//! Vectors are the PCA-projected, L2-normalised descriptors; the distance is `1 - dot`
//! ([`DistDotFast`] by default, hnsw_rs's stock `DistDot` as a yardstick), and search reports
//! `score = 1 - distance`, the inner product.
//!
//! # Files
//! [`HnswIndex::save`] writes three files into a directory:
//! - `<basename>.hnsw.graph` and `<basename>.hnsw.data`: hnsw_rs's own dump;
//! - `<basename>.irtdb-hnsw`: this crate's header. It records a magic number,
//!   [`INDEX_FORMAT_VERSION`], the distance, dimension, build parameters and point count, the
//!   external `i64` ids (hnsw_rs knows points by row number), the length and BLAKE3 hash of both
//!   hnsw_rs files, and a trailing BLAKE3 of itself.
//!
//! [`HnswIndex::load`] checks all of that *before* handing the files to hnsw_rs, because hnsw_rs
//! answers bad input with `assert!`s and panics, and a garbage length field can make it try a huge
//! allocation, which aborts the process (no `catch_unwind` can stop that). After the checks, the
//! hnsw_rs calls still run under `catch_unwind` as a second line of defence. A missing, truncated,
//! garbage or mismatched file gives an [`Error`] naming that file.
//!
//! Durability: all three files are first written under temporary names, fsynced, then renamed
//! (the header last) and the directory is fsynced, so a crash never leaves a half-written file
//! under a final name. A crash between two renames can leave files of two generations side by
//! side; the header's hashes detect that. Callers should save each index generation under a new
//! basename and record it in the database only after `save` returns.
//!
//! # Ownership of a reloaded graph
//! hnsw_rs's `HnswIo::load_hnsw` returns an `Hnsw<'b, ..>` that borrows the `HnswIo` it came from
//! (for the optional mmap of the data file, which this crate does not use). To give
//! [`HnswIndex`] one owned type whether it was built or loaded, `load` moves the `HnswIo` into a
//! `Box` and leaks it on purpose, which makes the borrow `'static`. The leaked value is a few
//! hundred bytes (a path, the basename, options, a counter) per load, holds no file handle and no
//! vector data, and an index is loaded once per process in practice. The alternatives were worse:
//! a self-referential struct needs `unsafe` lifetime extension that depends on hnsw_rs internals,
//! and rebuilding the graph from our own copy of the vectors costs a full build at every query.
//!
//! hnsw_rs has no delete: callers filter tombstoned ids from results and rebuild.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hnsw_rs::prelude::{AnnT, DistDot, Distance, Hnsw, HnswIo, Neighbour};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dist::DistDotFast;
use crate::error::panic_message;
use crate::{Error, Result};

/// Version of the files [`HnswIndex::save`] writes (the `.irtdb-hnsw` header and the hnsw_rs
/// dump it vouches for). Bump it whenever their layout or meaning changes, including a change of
/// hnsw_rs's dump format or a rename of [`DistDotFast`]; `load` refuses other versions with
/// [`Error::FormatVersion`] and the engine rebuilds from the database.
pub const INDEX_FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"IRTDBHNS";
/// Fixed part of the header, before the ids.
const HEADER_LEN: usize = 120;
const HASH_LEN: usize = 32;
/// hnsw_rs's maximum number of layers; its dump format accepts no other value.
const HNSW_RS_LAYERS: usize = 16;

/// Which `1 - dot` implementation the graph uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceKind {
    /// [`DistDotFast`]: this crate's AVX2+FMA kernel, clamped at 0.
    #[default]
    Fast,
    /// hnsw_rs's `DistDot` (simdeez): the stock path, kept for comparison.
    Stock,
}

impl DistanceKind {
    fn code(self) -> u32 {
        match self {
            DistanceKind::Fast => 1,
            DistanceKind::Stock => 2,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(DistanceKind::Fast),
            2 => Some(DistanceKind::Stock),
            _ => None,
        }
    }
}

/// HNSW build parameters. Stored in the index header and meant to be stored with the index
/// generation in the database (hence serde).
///
/// There is no seed: hnsw_rs seeds its level generator with a constant of its own, and parallel
/// insertion order makes the graph nondeterministic anyway; results are checked by recall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on upper layers (layer 0 gets `2 * m`). 2..=255.
    pub m: usize,
    /// Candidate list size while inserting. Higher: better graph, slower build.
    pub ef_construction: usize,
    /// Number of layers. hnsw_rs saves only graphs built with 16, its maximum, so 16 is the only
    /// accepted value (the layer count that is *used* grows with `log(n)` regardless).
    pub max_layers: usize,
    /// Distance implementation.
    #[serde(default)]
    pub distance: DistanceKind,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            max_layers: HNSW_RS_LAYERS,
            distance: DistanceKind::Fast,
        }
    }
}

/// The graph, typed by its distance. Both variants are `'static`: built graphs own their
/// vectors, loaded ones borrow a deliberately leaked `HnswIo` (see the module docs).
enum Graph {
    Fast(Hnsw<'static, f32, DistDotFast>),
    Stock(Hnsw<'static, f32, DistDot>),
}

/// Runs `$body` with `$g` bound to the inner `Hnsw`, whichever its distance type.
macro_rules! with_graph {
    ($graph:expr, $g:ident => $body:expr) => {
        match $graph {
            Graph::Fast($g) => $body,
            Graph::Stock($g) => $body,
        }
    };
}

/// An HNSW index over L2-normalised `f32` vectors with `i64` external ids, built in memory or
/// loaded from files; searching works the same either way.
pub struct HnswIndex {
    graph: Graph,
    ids: Vec<i64>,
    dim: usize,
    params: HnswParams,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("len", &self.ids.len())
            .field("dim", &self.dim)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl HnswIndex {
    /// Builds an index over `ids.len()` row-major vectors of `dim` values, inserting in parallel
    /// (rayon). Vectors should be L2-normalised: scores are inner products.
    pub fn build(data: &[f32], dim: usize, ids: &[i64], params: &HnswParams) -> Result<Self> {
        let n = ids.len();
        if dim == 0 {
            return Err(Error::InvalidArgument("HNSW dimension must be positive".into()));
        }
        if data.len() != n * dim {
            return Err(Error::DimensionMismatch {
                what: "HNSW build data (ids.len() × dim)",
                expected: n * dim,
                got: data.len(),
            });
        }
        if n == 0 {
            return Err(Error::InvalidArgument(
                "cannot build an HNSW index over 0 vectors; use exact search".into(),
            ));
        }
        if dim > u32::MAX as usize || n > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!("HNSW index too large: {n} × {dim}")));
        }
        check_params(params)?;
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "HNSW build data has a non-finite value in row {} (id {})",
                i / dim,
                ids[i / dim]
            )));
        }

        let rows: Vec<(&[f32], usize)> = data.chunks_exact(dim).zip(0..n).collect();
        let p = *params;
        let built = catch_unwind(AssertUnwindSafe(|| match p.distance {
            DistanceKind::Fast => Graph::Fast(insert_all(&rows, &p, DistDotFast)),
            DistanceKind::Stock => Graph::Stock(insert_all(&rows, &p, DistDot)),
        }))
        .map_err(|e| Error::Hnsw {
            action: "building the index".into(),
            message: panic_message(e.as_ref()),
        })?;
        Ok(HnswIndex { graph: built, ids: ids.to_vec(), dim, params: p })
    }

    /// The `k` nearest vectors to `q` as `(external id, score)`, best (highest inner product)
    /// first. `ef` is the search candidate list size (raised to `k` if smaller); 64–128 gives
    /// recall@10 above 0.95 on typical descriptor sets.
    ///
    /// # Panics
    /// If `q.len() != self.dim()`.
    pub fn search(&self, q: &[f32], k: usize, ef: usize) -> Vec<(i64, f32)> {
        assert_eq!(q.len(), self.dim, "HnswIndex::search: query length != index dimension");
        if k == 0 || self.ids.is_empty() {
            return Vec::new();
        }
        let ef = ef.max(k);
        let found: Vec<Neighbour> = with_graph!(&self.graph, g => g.search(q, k, ef));
        found
            .into_iter()
            .filter_map(|nb| self.ids.get(nb.d_id).map(|&id| (id, 1.0 - nb.distance)))
            .collect()
    }

    /// [`HnswIndex::search`] for `queries.len() / dim` row-major queries, in parallel.
    ///
    /// # Panics
    /// If `queries.len()` is not a multiple of `self.dim()`.
    pub fn search_batch(&self, queries: &[f32], k: usize, ef: usize) -> Vec<Vec<(i64, f32)>> {
        assert_eq!(queries.len() % self.dim, 0, "search_batch: length not a multiple of dim");
        queries.par_chunks_exact(self.dim).map(|q| self.search(q, k, ef)).collect()
    }

    /// Number of indexed vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the index holds no vectors (never true for a built or loaded index).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Build parameters (as stored in the header for a loaded index).
    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// External ids, in insertion (row) order.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// The names of the files `save(dir, basename)` writes, relative to `dir`.
    pub fn file_names(basename: &str) -> Vec<String> {
        vec![
            format!("{basename}.hnsw.graph"),
            format!("{basename}.hnsw.data"),
            format!("{basename}.irtdb-hnsw"),
        ]
    }

    /// Writes the index durably into the existing directory `dir` (see the module docs) and
    /// returns the names of the files written, relative to `dir`. Files of the same basename are
    /// replaced.
    pub fn save(&self, dir: &Path, basename: &str) -> Result<Vec<String>> {
        check_basename(basename)?;
        let meta = fs_err::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument(format!("{} is not a directory", dir.display())));
        }
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let tmp_base = format!(
            ".{basename}.tmp-{}-{}",
            std::process::id(),
            SAVES.fetch_add(1, Ordering::Relaxed)
        );
        let mut temps: Vec<PathBuf> = Vec::new();
        let result = self.save_via_temps(dir, basename, &tmp_base, &mut temps);
        if result.is_err() {
            for t in &temps {
                let _ = fs_err::remove_file(t);
            }
        }
        result
    }

    fn save_via_temps(
        &self,
        dir: &Path,
        basename: &str,
        tmp_base: &str,
        temps: &mut Vec<PathBuf>,
    ) -> Result<Vec<String>> {
        let action = format!("saving {}", dir.join(basename).display());
        // hnsw_rs may pick another name if the temporary one exists; use the one it returns.
        let dumped = catch_unwind(AssertUnwindSafe(
            || with_graph!(&self.graph, g => g.file_dump(dir, tmp_base)),
        ));
        // Register both possible temp files for clean-up before looking at the outcome.
        let dump_base = match &dumped {
            Ok(Ok(name)) => name.clone(),
            _ => tmp_base.to_string(),
        };
        let tmp_graph = dir.join(format!("{dump_base}.hnsw.graph"));
        let tmp_data = dir.join(format!("{dump_base}.hnsw.data"));
        let tmp_meta = dir.join(format!("{tmp_base}.irtdb-hnsw"));
        temps.extend([tmp_graph.clone(), tmp_data.clone(), tmp_meta.clone()]);
        match dumped {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::Hnsw { action, message: format!("{e:#}") }),
            Err(p) => return Err(Error::Hnsw { action, message: panic_message(p.as_ref()) }),
        }

        let graph_sum = sync_and_hash(&tmp_graph)?;
        let data_sum = sync_and_hash(&tmp_data)?;
        let header = self.encode_header(graph_sum, data_sum);
        write_synced(&tmp_meta, &header)?;

        let names = Self::file_names(basename);
        // The header goes last: until it is renamed, the old generation's header (if any)
        // rejects the new graph and data files by their hashes instead of misreading them.
        for (tmp, name) in [(&tmp_graph, &names[0]), (&tmp_data, &names[1]), (&tmp_meta, &names[2])]
        {
            let to = dir.join(name);
            fs_err::rename(tmp, &to).map_err(|e| Error::io(&to, e))?;
        }
        sync_dir(dir)?;
        Ok(names)
    }

    fn encode_header(&self, graph: FileSum, data: FileSum) -> Vec<u8> {
        let n = self.ids.len();
        let mut h = Vec::with_capacity(HEADER_LEN + 8 * n + HASH_LEN);
        h.extend_from_slice(MAGIC);
        for v in [
            INDEX_FORMAT_VERSION,
            self.params.distance.code(),
            self.dim as u32,
            self.params.m as u32,
            self.params.ef_construction as u32,
            self.params.max_layers as u32,
        ] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h.extend_from_slice(&(n as u64).to_le_bytes());
        for sum in [graph, data] {
            h.extend_from_slice(&sum.len.to_le_bytes());
            h.extend_from_slice(&sum.hash);
        }
        debug_assert_eq!(h.len(), HEADER_LEN);
        for id in &self.ids {
            h.extend_from_slice(&id.to_le_bytes());
        }
        let own = blake3::hash(&h);
        h.extend_from_slice(own.as_bytes());
        h
    }

    /// Loads an index saved by [`HnswIndex::save`]. Every failure (missing, truncated, garbage
    /// or mismatched file, other format version) is an [`Error`] naming the file; none panics.
    pub fn load(dir: &Path, basename: &str) -> Result<Self> {
        check_basename(basename)?;
        let names = Self::file_names(basename);
        let graph_path = dir.join(&names[0]);
        let data_path = dir.join(&names[1]);
        let meta_path = dir.join(&names[2]);

        let bytes = fs_err::read(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let header = Header::decode(&bytes, &meta_path)?;
        header.graph.verify(&graph_path, &meta_path)?;
        header.data.verify(&data_path, &meta_path)?;

        let action = format!("loading {}", graph_path.display());
        let distance = header.params.distance;
        let loaded = catch_unwind(|| match distance {
            DistanceKind::Fast => load_graph::<DistDotFast>(dir, basename).map(Graph::Fast),
            DistanceKind::Stock => load_graph::<DistDot>(dir, basename).map(Graph::Stock),
        });
        let mut graph = match loaded {
            Ok(Ok(g)) => g,
            Ok(Err(message)) => return Err(Error::Hnsw { action, message }),
            Err(p) => return Err(Error::Hnsw { action, message: panic_message(p.as_ref()) }),
        };
        let (count, dim) = with_graph!(&mut graph, g => {
            g.set_searching_mode(true);
            (g.get_nb_point(), g.get_point_indexation().get_data_dimension())
        });
        if count != header.ids.len() || dim != header.dim {
            return Err(Error::corrupt(
                &graph_path,
                format!(
                    "holds {count} vectors of dimension {dim}, the header {} says {} of {}",
                    meta_path.display(),
                    header.ids.len(),
                    header.dim
                ),
            ));
        }
        Ok(HnswIndex { graph, ids: header.ids, dim: header.dim, params: header.params })
    }
}

/// Runs hnsw_rs's loader. Its `HnswIo` is leaked on purpose so that the graph can borrow it for
/// `'static` (see the module docs). hnsw_rs errors are `anyhow::Error`; they are carried as their
/// `{:#}` text (cause chain included), so this crate needs no anyhow dependency.
fn load_graph<D>(dir: &Path, basename: &str) -> std::result::Result<Hnsw<'static, f32, D>, String>
where
    D: Distance<f32> + Default + Send + Sync,
{
    let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
    io.load_hnsw::<f32, D>().map_err(|e| format!("{e:#}"))
}

fn insert_all<D>(rows: &Vec<(&[f32], usize)>, p: &HnswParams, dist: D) -> Hnsw<'static, f32, D>
where
    D: Distance<f32> + Send + Sync,
{
    let hnsw = Hnsw::new(p.m, rows.len(), p.max_layers, p.ef_construction, dist);
    hnsw.parallel_insert_slice(rows);
    let mut hnsw = hnsw;
    hnsw.set_searching_mode(true);
    hnsw
}

fn check_params(p: &HnswParams) -> Result<()> {
    // hnsw_rs stores m in a u8 and calls process::exit for m > 256; reject it here instead.
    if !(2..=255).contains(&p.m) {
        return Err(Error::InvalidArgument(format!("HNSW m must be in 2..=255, got {}", p.m)));
    }
    if p.ef_construction == 0 || p.ef_construction > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "HNSW ef_construction must be positive, got {}",
            p.ef_construction
        )));
    }
    if p.max_layers != HNSW_RS_LAYERS {
        return Err(Error::InvalidArgument(format!(
            "HNSW max_layers must be {HNSW_RS_LAYERS} (hnsw_rs saves no other value), got {}",
            p.max_layers
        )));
    }
    Ok(())
}

fn check_basename(basename: &str) -> Result<()> {
    if basename.is_empty()
        || basename == "."
        || basename == ".."
        || basename.contains(['/', '\\'])
        || basename.chars().any(char::is_control)
    {
        return Err(Error::InvalidArgument(format!(
            "index basename must be a plain file name, got {basename:?}"
        )));
    }
    Ok(())
}

/// Length and BLAKE3 hash of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileSum {
    len: u64,
    hash: [u8; HASH_LEN],
}

impl FileSum {
    fn verify(&self, path: &Path, meta_path: &Path) -> Result<()> {
        let len = fs_err::metadata(path).map_err(|e| Error::io(path, e))?.len();
        if len != self.len {
            return Err(Error::corrupt(
                path,
                format!(
                    "{len} bytes where the header {} expects {} (truncated, or from another \
                     index generation)",
                    meta_path.display(),
                    self.len
                ),
            ));
        }
        let actual = hash_file(path)?;
        if actual != *self {
            return Err(Error::corrupt(
                path,
                format!("content does not match the checksum in {}", meta_path.display()),
            ));
        }
        Ok(())
    }
}

fn hash_file(path: &Path) -> Result<FileSum> {
    let mut file = fs_err::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let got = file.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        len += got as u64;
    }
    Ok(FileSum { len, hash: *hasher.finalize().as_bytes() })
}

fn sync_and_hash(path: &Path) -> Result<FileSum> {
    fs_err::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io(path, e))?;
    hash_file(path)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = fs_err::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::io(path, e))
}

/// Makes the renames durable. Directories cannot be opened for fsync on Windows; there the
/// renames are as durable as the file system makes them.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs_err::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The decoded `.irtdb-hnsw` header.
struct Header {
    dim: usize,
    params: HnswParams,
    graph: FileSum,
    data: FileSum,
    ids: Vec<i64>,
}

impl Header {
    fn decode(b: &[u8], path: &Path) -> Result<Header> {
        let corrupt = |reason: String| Error::corrupt(path, reason);
        if b.len() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
            return Err(corrupt("not an irtdb HNSW header (bad magic)".into()));
        }
        if b.len() < HEADER_LEN + HASH_LEN {
            return Err(corrupt(format!(
                "truncated: {} bytes, the header alone needs {}",
                b.len(),
                HEADER_LEN + HASH_LEN
            )));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != INDEX_FORMAT_VERSION {
            return Err(Error::FormatVersion {
                path: path.to_path_buf(),
                found: version,
                supported: INDEX_FORMAT_VERSION,
            });
        }
        let count = u64_at(32);
        let expected = (count as u128) * 8 + (HEADER_LEN + HASH_LEN) as u128;
        if b.len() as u128 != expected {
            return Err(corrupt(format!(
                "{} bytes where a header for {count} ids needs {expected} (truncated?)",
                b.len()
            )));
        }
        let (body, trailer) = b.split_at(b.len() - HASH_LEN);
        if blake3::hash(body).as_bytes() != trailer {
            return Err(corrupt("header checksum mismatch (modified or partly written)".into()));
        }
        let distance = DistanceKind::from_code(u32_at(12))
            .ok_or_else(|| corrupt(format!("unknown distance code {}", u32_at(12))))?;
        let params = HnswParams {
            m: u32_at(20) as usize,
            ef_construction: u32_at(24) as usize,
            max_layers: u32_at(28) as usize,
            distance,
        };
        let sum_at = |o: usize| FileSum {
            len: u64_at(o),
            hash: b[o + 8..o + 8 + HASH_LEN].try_into().expect("32 bytes"),
        };
        let ids = body[HEADER_LEN..]
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Header { dim: u32_at(16) as usize, params, graph: sum_at(40), data: sum_at(80), ids })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        let data = vec![1.0f32, 0.0];
        let bad = [
            HnswParams { m: 1, ..Default::default() },
            HnswParams { m: 300, ..Default::default() },
            HnswParams { ef_construction: 0, ..Default::default() },
            HnswParams { max_layers: 8, ..Default::default() },
        ];
        for p in bad {
            let e = HnswIndex::build(&data, 2, &[1], &p).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{p:?}: {e}");
        }
        assert!(HnswIndex::build(&[], 2, &[], &HnswParams::default()).is_err());
        assert!(HnswIndex::build(&[f32::NAN, 0.0], 2, &[1], &HnswParams::default()).is_err());
        assert!(HnswIndex::build(&[1.0], 2, &[1], &HnswParams::default()).is_err());
    }

    #[test]
    fn params_serde_round_trip() {
        let p = HnswParams { distance: DistanceKind::Stock, ..Default::default() };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(s, r#"{"m":16,"ef_construction":200,"max_layers":16,"distance":"stock"}"#);
        assert_eq!(serde_json::from_str::<HnswParams>(&s).unwrap(), p);
    }

    #[test]
    fn basenames_are_checked() {
        for b in ["", ".", "..", "a/b", "a\\b", "a\nb"] {
            assert!(check_basename(b).is_err(), "{b:?}");
        }
        assert!(check_basename("irtdb.db.hnsw-17").is_ok());
        assert!(check_basename(".hidden.db.hnsw-17").is_ok());
    }
}
