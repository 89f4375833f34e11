//! The index file: one `<basename>.irtdb-hnsw`, checked completely before use.
//!
//! # Layout (format version 2, little-endian)
//! ```text
//! offset  size  field
//!      0     8  magic "IRTDBHNS"
//!      8     4  format version (2)
//!     12     4  dim            16  4  m            20  4  ef_construction
//!     24     8  seed           32  8  rows         40  8  upper lists (= sum of levels)
//!     48     4  entry row (u32::MAX: none)         52  4  top level
//!     56     8  live rows
//!     64        ids        rows × i64
//!               tombstones rows × u8 (0 or 1)
//!               levels     rows × u8 (≤ 16)
//!               vectors    rows × dim × f32
//!               layer 0    rows × (1 + 2m) × u32   (count, then links)
//!               upper      upper lists × (1 + m) × u32
//!  end − 32    32  BLAKE3 of everything before
//! ```
//!
//! # Checks
//! `load` trusts nothing: the version is read first (a version-1 header, which put the same
//! field at the same offset, gets [`Error::FormatVersion`], and the engine rebuilds from the
//! database); the exact file length implied by the header's counts, computed without overflow,
//! must equal the file's length *before* anything is allocated, so a crafted count can never
//! ask for more memory than the file holds; after reading, the checksum (damage), then the
//! structure: every level ≤ 16 and their sum equal to the upper-list count, tombstones 0/1 and
//! the live count right, the entry row of the top level, every link count within its list's
//! capacity, every link a row, and every link on layer `l ≥ 1` a row that has layer `l` (else a
//! search would index another row's lists), vectors finite, live ids unique. A file that passes
//! can be searched without a panic; the fuzz target `hnsw_load` feeds files with valid
//! checksums to make sure of it.
//!
//! Durability: written under a temporary name (`.<basename>.tmp-<pid>-<n>.irtdb-hnsw`),
//! fsynced, renamed, and the directory fsynced, so a crash never leaves a half-written file
//! under the final name. Callers save each generation under a new basename and record it in
//! the database only after `save` returns.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use super::graph::{Graph, MAX_LEVEL};
use super::{HnswIndex, HnswParams};
use crate::{Error, Result};

/// Version of the file [`HnswIndex::save`] writes. Bump it whenever the layout or meaning changes; `load`
/// refuses other versions with [`Error::FormatVersion`] and the engine rebuilds from the
/// database. Version 1 was hnsw_rs's dump plus a header of irtdb's.
pub const INDEX_FORMAT_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"IRTDBHNS";
const HEADER_LEN: usize = 64;
const HASH_LEN: usize = 32;
const NO_ENTRY: u32 = u32::MAX;
/// Largest dimension accepted (far above any descriptor; bounds the per-row size).
pub(crate) const MAX_DIM: usize = 1 << 16;
const EXT: &str = "irtdb-hnsw";

pub(crate) fn file_name(basename: &str) -> String {
    format!("{basename}.{EXT}")
}

fn check_basename(basename: &str) -> Result<()> {
    let bad = basename.is_empty()
        || basename == "."
        || basename == ".."
        || basename.contains(['/', '\\', '\0', '\n']);
    if bad {
        return Err(Error::InvalidArgument(format!(
            "HNSW basename {basename:?} must be a plain file name"
        )));
    }
    Ok(())
}

/// The fixed part of the file.
#[derive(Debug, Clone, Copy)]
struct Header {
    dim: usize,
    m: usize,
    ef_construction: usize,
    seed: u64,
    rows: usize,
    upper_lists: usize,
    entry: u32,
    top: u32,
    live: usize,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        let mut put = |o: usize, b: &[u8]| h[o..o + b.len()].copy_from_slice(b);
        put(8, &INDEX_FORMAT_VERSION.to_le_bytes());
        put(12, &(self.dim as u32).to_le_bytes());
        put(16, &(self.m as u32).to_le_bytes());
        put(20, &(self.ef_construction as u32).to_le_bytes());
        put(24, &self.seed.to_le_bytes());
        put(32, &(self.rows as u64).to_le_bytes());
        put(40, &(self.upper_lists as u64).to_le_bytes());
        put(48, &self.entry.to_le_bytes());
        put(52, &self.top.to_le_bytes());
        put(56, &(self.live as u64).to_le_bytes());
        h
    }

    /// Decodes and checks the fixed part against the file's length.
    fn decode(b: &[u8], file_len: u64, path: &Path) -> Result<Header> {
        let corrupt = |reason: String| Error::corrupt(path, reason);
        if b.len() < 12 || &b[..8] != MAGIC {
            return Err(corrupt("not an irtdb HNSW index file (bad magic)".into()));
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
        if b.len() < HEADER_LEN {
            return Err(corrupt(format!("truncated: {file_len} bytes")));
        }
        let (dim, m) = (u32_at(12) as usize, u32_at(16) as usize);
        if dim == 0 || dim > MAX_DIM {
            return Err(corrupt(format!("dimension {dim} outside 1..={MAX_DIM}")));
        }
        if !(2..=255).contains(&m) {
            return Err(corrupt(format!("m {m} outside 2..=255")));
        }
        let (rows, upper_lists, live) = (u64_at(32), u64_at(40), u64_at(56));
        let expected = expected_len(dim as u128, m as u128, rows as u128, upper_lists as u128);
        if expected != u128::from(file_len) {
            return Err(corrupt(format!(
                "{file_len} bytes where the header's counts ({rows} rows, {upper_lists} upper \
                 lists, dimension {dim}, m {m}) need {expected} (truncated or altered)"
            )));
        }
        // The length check bounds rows and upper_lists by the file size, so these fit.
        Ok(Header {
            dim,
            m,
            ef_construction: u32_at(20) as usize,
            seed: u64_at(24),
            rows: rows as usize,
            upper_lists: upper_lists as usize,
            entry: u32_at(48),
            top: u32_at(52),
            live: live as usize,
        })
    }
}

/// The file length the counts imply (u128: no overflow for any u64 inputs).
fn expected_len(dim: u128, m: u128, rows: u128, upper_lists: u128) -> u128 {
    let per_row = 8 + 1 + 1 + 4 * dim + 4 * (1 + 2 * m);
    (HEADER_LEN + HASH_LEN) as u128 + rows * per_row + upper_lists * 4 * (1 + m)
}

/// Writes through a BLAKE3 hasher.
struct Hashing<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Writes 4-byte values in chunks (one `to_le_bytes` per value, no per-value write call).
fn write_words(w: &mut impl Write, words: impl Iterator<Item = [u8; 4]>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for word in words {
        buf.extend_from_slice(&word);
        if buf.len() >= 1 << 16 {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)
}

/// Reads `rows` rows of `words` 4-byte values each, in chunks, handing each row to `f`.
fn for_each_row(
    r: &mut impl Read,
    rows: usize,
    words: usize,
    mut f: impl FnMut(usize, &[u8]),
) -> std::io::Result<()> {
    let row_bytes = words * 4;
    if row_bytes == 0 {
        return Ok(());
    }
    let per_chunk = ((1 << 16) / row_bytes).max(1);
    let mut buf = vec![0u8; per_chunk * row_bytes];
    let mut row = 0;
    while row < rows {
        let take = per_chunk.min(rows - row);
        let bytes = &mut buf[..take * row_bytes];
        r.read_exact(bytes)?;
        for chunk in bytes.chunks_exact(row_bytes) {
            f(row, chunk);
            row += 1;
        }
    }
    Ok(())
}

fn words(bytes: &[u8]) -> impl Iterator<Item = [u8; 4]> + '_ {
    bytes.chunks_exact(4).map(|c| c.try_into().expect("4 bytes"))
}

/// Reads `n` 4-byte values in chunks.
fn read_words<T>(r: &mut impl Read, n: usize, f: impl Fn([u8; 4]) -> T) -> std::io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 1 << 16];
    let mut left = n;
    while left > 0 {
        let take = left.min(buf.len() / 4);
        let bytes = &mut buf[..take * 4];
        r.read_exact(bytes)?;
        out.extend(bytes.chunks_exact(4).map(|c| f(c.try_into().expect("4 bytes"))));
        left -= take;
    }
    Ok(out)
}

pub(crate) fn save(index: &HnswIndex, dir: &Path, basename: &str) -> Result<Vec<String>> {
    check_basename(basename)?;
    let meta = fs_err::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!("{} is not a directory", dir.display())));
    }
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{basename}.tmp-{}-{}.{EXT}",
        std::process::id(),
        SAVES.fetch_add(1, Relaxed)
    ));
    let name = file_name(basename);
    let to = dir.join(&name);
    let written = write_file(index, &tmp).and_then(|()| {
        fs_err::rename(&tmp, &to).map_err(|e| Error::io(&to, e))?;
        sync_dir(dir)
    });
    if written.is_err() {
        let _ = fs_err::remove_file(&tmp);
    }
    written.map(|()| vec![name])
}

fn write_file(index: &HnswIndex, path: &Path) -> Result<()> {
    let g = &index.graph;
    let entry = *g.entry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let header = Header {
        dim: g.dim,
        m: g.m,
        ef_construction: g.ef_construction,
        seed: index.params.seed,
        rows: index.ids.len(),
        upper_lists: g.upper.len() / g.slots_upper(),
        entry: entry.map_or(NO_ENTRY, |e| e.0),
        top: entry.map_or(0, |e| u32::from(e.1)),
        live: index.live,
    };
    let io = |e| Error::io(path, e);
    let file = fs_err::File::create(path).map_err(io)?;
    let mut w =
        Hashing { inner: BufWriter::with_capacity(1 << 20, file), hasher: blake3::Hasher::new() };
    w.write_all(&header.encode()).map_err(io)?;
    for id in &index.ids {
        w.write_all(&id.to_le_bytes()).map_err(io)?;
    }
    let flags: Vec<u8> = index.deleted.iter().map(|&d| u8::from(d)).collect();
    w.write_all(&flags).map_err(io)?;
    w.write_all(&g.levels).map_err(io)?;
    let rows = 0..g.len() as u32;
    let vectors = rows.clone().flat_map(|r| g.vector(r).iter().map(|v| v.to_le_bytes()));
    write_words(&mut w, vectors).map_err(io)?;
    let layer0 = rows.flat_map(|r| g.list(r, 0).iter().map(|a| a.load(Relaxed).to_le_bytes()));
    write_words(&mut w, layer0).map_err(io)?;
    write_words(&mut w, g.upper.iter().map(|a| a.load(Relaxed).to_le_bytes())).map_err(io)?;
    let sum = w.hasher.finalize();
    let mut inner = w.inner;
    inner.write_all(sum.as_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// Makes the rename durable. Directories cannot be opened for fsync on Windows; there the
/// rename is as durable as the file system makes it.
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        fs_err::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(crate) fn load(dir: &Path, basename: &str) -> Result<HnswIndex> {
    check_basename(basename)?;
    let path: PathBuf = dir.join(file_name(basename));
    let io = |e| Error::io(&path, e);
    let file = fs_err::File::open(&path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r =
        Hashing { inner: BufReader::with_capacity(1 << 20, file), hasher: blake3::Hasher::new() };
    let mut fixed = vec![0u8; HEADER_LEN.min(file_len as usize)];
    r.read_exact(&mut fixed).map_err(io)?;
    let h = Header::decode(&fixed, file_len, &path)?;

    // The length is right, so every read below is bounded by the file and succeeds unless the
    // file changes under us (an I/O error then).
    let ids = {
        let mut b = vec![0u8; h.rows * 8];
        r.read_exact(&mut b).map_err(io)?;
        b.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect::<Vec<_>>()
    };
    let mut flags = vec![0u8; h.rows];
    r.read_exact(&mut flags).map_err(io)?;
    let mut levels = vec![0u8; h.rows];
    r.read_exact(&mut levels).map_err(io)?;
    // Vectors and layer-0 lists go straight into the graph's records (no second copy).
    let mut graph = Graph::new(h.dim, h.m, h.ef_construction);
    graph.add_rows(&levels);
    let mut row_vector = vec![0f32; h.dim];
    let mut non_finite = None;
    for_each_row(&mut r, h.rows, h.dim, |row, bytes| {
        for (x, b) in row_vector.iter_mut().zip(words(bytes)) {
            *x = f32::from_le_bytes(b);
        }
        if non_finite.is_none() && row_vector.iter().any(|v| !v.is_finite()) {
            non_finite = Some(row);
        }
        graph.set_vector(row, &row_vector);
    })
    .map_err(io)?;
    for_each_row(&mut r, h.rows, 1 + 2 * h.m, |row, bytes| {
        for (slot, b) in graph.list(row as u32, 0).iter().zip(words(bytes)) {
            slot.store(u32::from_le_bytes(b), Relaxed);
        }
    })
    .map_err(io)?;
    let upper =
        read_words(&mut r, h.upper_lists * (1 + h.m), |b| AtomicU32::new(u32::from_le_bytes(b)))
            .map_err(io)?;
    let sum = r.hasher.finalize();
    let mut trailer = [0u8; HASH_LEN];
    r.inner.read_exact(&mut trailer).map_err(io)?;
    if sum.as_bytes() != &trailer {
        return Err(Error::corrupt(&path, "checksum mismatch (damaged or partly written)"));
    }

    let corrupt = |reason: String| Error::corrupt(&path, reason);
    if let Some(bad) = flags.iter().find(|&&f| f > 1) {
        return Err(corrupt(format!("tombstone flag {bad} is neither 0 nor 1")));
    }
    let deleted: Vec<bool> = flags.iter().map(|&f| f == 1).collect();
    let live = deleted.iter().filter(|&&d| !d).count();
    if live != h.live {
        return Err(corrupt(format!("{live} live rows, the header says {}", h.live)));
    }
    if let Some(r) = levels.iter().position(|&l| l > MAX_LEVEL) {
        return Err(corrupt(format!("row {r} has level {}, above {MAX_LEVEL}", levels[r])));
    }
    let level_sum: usize = levels.iter().map(|&l| l as usize).sum();
    if level_sum != h.upper_lists {
        return Err(corrupt(format!(
            "levels add up to {level_sum} upper lists, the header says {}",
            h.upper_lists
        )));
    }
    let entry = check_entry(&h, &levels).map_err(corrupt)?;
    if let Some(row) = non_finite {
        return Err(corrupt(format!("row {row} holds a non-finite value")));
    }
    let mut seen = std::collections::HashSet::with_capacity(live);
    if let Some(r) = (0..h.rows).find(|&r| !deleted[r] && !seen.insert(ids[r])) {
        return Err(corrupt(format!("id {} is live in two rows", ids[r])));
    }
    graph.finish_load(upper, entry);
    check_links(&graph).map_err(corrupt)?;
    let params = HnswParams { m: h.m, ef_construction: h.ef_construction, seed: h.seed };
    Ok(HnswIndex { graph, ids, deleted, live, params })
}

fn check_entry(h: &Header, levels: &[u8]) -> std::result::Result<Option<(u32, u8)>, String> {
    if h.entry == NO_ENTRY {
        return if h.rows == 0 {
            Ok(None)
        } else {
            Err(format!("{} rows but no entry point", h.rows))
        };
    }
    let e = h.entry as usize;
    if e >= h.rows {
        return Err(format!("entry row {e} of {} rows", h.rows));
    }
    let max = levels.iter().copied().max().unwrap_or(0);
    if u32::from(levels[e]) != h.top || u32::from(max) != h.top {
        return Err(format!(
            "entry row {e} has level {}, the top level is {}, the highest row level {max}",
            levels[e], h.top
        ));
    }
    Ok(Some((h.entry, max)))
}

/// Every list's count within capacity, every link a row that has the list's layer.
fn check_links(g: &Graph) -> std::result::Result<(), String> {
    let rows = g.len();
    for node in 0..rows {
        for layer in 0..=g.levels[node] as usize {
            let list = g.list(node as u32, layer);
            let count = list[0].load(Relaxed) as usize;
            if count > list.len() - 1 {
                return Err(format!(
                    "row {node}, layer {layer}: {count} links in a list of {}",
                    list.len() - 1
                ));
            }
            for link in list[1..=count].iter().map(|a| a.load(Relaxed) as usize) {
                if link >= rows || (g.levels[link] as usize) < layer {
                    return Err(format!(
                        "row {node}, layer {layer}: link to {link}, which is not a row with that \
                         layer"
                    ));
                }
            }
        }
    }
    Ok(())
}
