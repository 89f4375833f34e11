//! The optimised-model cache: ONNX Runtime's graph optimisation of a ViT takes ~0.5 s of every
//! cold start, so the optimised graph is saved once (`SessionBuilder::with_optimized_model_path`,
//! ORT format) and later sessions load it with optimisation off.
//!
//! - Where: `<user cache dir>/irtdb/ort-cache/` (`$XDG_CACHE_HOME/irtdb/ort-cache`, else
//!   `~/.cache/irtdb/ort-cache`); `IRTDB_NO_MODEL_CACHE=1` turns the cache off (nothing read or
//!   written), `IRTDB_MODEL_CACHE_LOG=1` prints one line per load saying what the cache did.
//! - Only sessions whose one provider is the CPU are cached: TensorRT keeps its own engine cache
//!   (`trt_cache_dir`), and a graph optimised for CUDA holds provider-specific nodes.
//! - One file per key, `<key id>.ortcache`: the model bytes, then a JSON trailer (the full key,
//!   the model's length and blake3, what the graph builder said about the model), its length
//!   and a magic tag. The key ([`Key`]) holds everything that changes the optimised graph: the
//!   model's bytes (blake3), irtdb's graph-builder version and options, ONNX Runtime's build,
//!   the optimisation level and provider, and the CPU (level-all graphs hold CPU-specific
//!   layouts). A file whose trailer, length, hash or key does not check out is ignored, rebuilt
//!   and replaced, never run.
//! - Written atomically: ONNX Runtime writes the optimised model under a temporary name in the
//!   cache folder, the trailer is appended, the file fsynced and renamed over the entry, the
//!   folder fsynced. Concurrent first loads each write their own temporary file; the last
//!   rename wins and every reader sees one whole entry.
//! - A hit refreshes the entry's modification time; writing an entry removes entries unused
//!   for 30 days (and temporary files of crashed writers).
//! - Read by mapping the file (no copy); ONNX Runtime then reads the graph and the weights in
//!   place (`session.use_ort_model_bytes_directly`), so the mapping lives with the session.
//! - `digests/` remembers each model file's blake3 by its identity (device, inode, size, mtime,
//!   ctime), so a warm load does not read the weights; a changed file is hashed again.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// The layout of a cache file (bump on any change to it or to what the key covers).
pub const FORMAT: u32 = 1;
/// The last bytes of every cache file.
const MAGIC: &[u8; 16] = b"irtdb-ortcache-1";
/// The file name extension of cache entries.
const EXT: &str = "ortcache";
/// Temporary files older than this are a crashed writer's and are removed.
const STALE_TEMP_SECS: u64 = 3600;
/// Entries not used for this long are removed when another entry is written.
const UNUSED_ENTRY_SECS: u64 = 30 * 24 * 3600;

/// Environment variable that turns the cache off (any value but empty or `0`).
pub const DISABLE_ENV: &str = "IRTDB_NO_MODEL_CACHE";
/// Environment variable that makes every load print what the cache did.
pub const LOG_ENV: &str = "IRTDB_MODEL_CACHE_LOG";

fn env_on(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The cache folder, whether or not it exists (`None`: no user cache dir is known).
pub fn dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("irtdb").join("ort-cache"))
}

/// One line for `irtdb doctor` / the plugin description.
pub fn describe() -> String {
    match (env_on(DISABLE_ENV), dir()) {
        (true, _) => format!("optimised-model cache: off ({DISABLE_ENV} is set)"),
        (false, None) => "optimised-model cache: off (no user cache folder is known)".into(),
        (false, Some(d)) => format!(
            "optimised-model cache: {} (CPU sessions; {DISABLE_ENV}=1 turns it off)",
            d.display()
        ),
    }
}

/// Prints a line about the cache when `IRTDB_MODEL_CACHE_LOG` is set.
pub fn log(msg: impl FnOnce() -> String) {
    if env_on(LOG_ENV) {
        eprintln!("ort-tensorrt model cache: {}", msg());
    }
}

/// Everything that changes the optimised graph, as JSON; its blake3 names the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key(pub serde_json::Value);

impl Key {
    /// The key of a model whose bytes (and, for irtdb's own graphs, builder inputs) are
    /// described by `source`, optimised at `level` for the CPU provider.
    pub fn new(source: serde_json::Value, level: &str) -> Self {
        Key(serde_json::json!({
            "format": FORMAT,
            "source": source,
            "onnxruntime": {
                "expected": crate::runtime::ONNXRUNTIME_VERSION,
                "build": ort::info(),
            },
            "session": { "optimization": level, "providers": ["cpu"], "saved_as": "ort" },
            "cpu": cpu_identity(),
            "plugin": env!("CARGO_PKG_VERSION"),
        }))
    }

    /// The file-name id: the first 32 hex digits of the blake3 of the key's JSON.
    pub fn id(&self) -> String {
        let hex = blake3::hash(self.0.to_string().as_bytes()).to_hex();
        hex[..32].to_string()
    }
}

/// The CPU the graph is optimised for: level-all optimisation picks layouts (NCHWc) and fused
/// kernels for the instruction set at hand, so a cache shared between machines must not mix.
fn cpu_identity() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = blake3::hash(field("flags").as_bytes()).to_hex();
    format!(
        "{} {} / {} / flags {}",
        std::env::consts::ARCH,
        field("vendor_id"),
        field("model name"),
        &flags[..16]
    )
}

/// What a graph irtdb built says about the model, kept so that a cache hit skips reading the
/// weights into a graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Built {
    pub architecture: String,
    pub prefix_tokens: usize,
}

/// The JSON trailer of a cache file.
#[derive(Debug, Serialize, Deserialize)]
struct Trailer {
    format: u32,
    key: Key,
    model_len: u64,
    model_blake3: String,
    #[serde(default)]
    built: Option<Built>,
}

/// A cache file mapped read-only into memory: the pages of the OS's file cache, not a copy
/// (reading 87 MB into a fresh buffer cost more than checking and loading it). Entries are
/// only ever replaced by a rename (a new file), never rewritten in place, so a mapped entry
/// does not change under a session that reads its weights in place.
#[derive(Debug)]
struct Mapped {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; `&[u8]` of it may be shared.
unsafe impl Send for Mapped {}
unsafe impl Sync for Mapped {}

impl Mapped {
    fn open(path: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path)?;
        let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
        if len == 0 {
            return Ok(Mapped { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a fresh read-only private mapping of an open file; checked for failure.
        // MAP_POPULATE maps every page now (one pass instead of a fault per page later).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_POPULATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapped { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmaps exactly the mapping made in `open`, once.
            unsafe { libc::munmap(self.ptr, self.len) };
        }
    }
}

/// A checked cache entry: the model bytes and what came with them.
#[derive(Debug)]
pub struct Entry {
    bytes: Mapped,
    model_len: usize,
    pub built: Option<Built>,
    pub path: PathBuf,
}

impl Entry {
    /// The optimised model (ORT format).
    pub fn model(&self) -> &[u8] {
        &self.bytes.bytes()[..self.model_len]
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Entry),
    /// No file for the key.
    Miss,
    /// A file that does not check out, and why; it is rebuilt and replaced.
    Bad(PathBuf, String),
}

/// The cache folder of this process.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache in its usual folder, unless it is turned off.
    pub fn from_env() -> Option<Self> {
        if env_on(DISABLE_ENV) {
            return None;
        }
        dir().map(Self::at)
    }

    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    pub fn path(&self, key: &Key) -> PathBuf {
        self.dir.join(format!("{}.{EXT}", key.id()))
    }

    /// Reads and checks the entry for `key`.
    pub fn lookup(&self, key: &Key) -> Lookup {
        let path = self.path(key);
        let bytes = match Mapped::open(&path) {
            Ok(b) => b,
            // No file, or no folder (a cache that cannot be made is reported when writing).
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                return Lookup::Miss
            }
            Err(e) => return Lookup::Bad(path, format!("cannot read it: {e}")),
        };
        match check(bytes, key) {
            Ok((bytes, model_len, built)) => {
                // Used now: `tidy` keeps it (best effort; the owner may set the time).
                let _ = std::fs::File::open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Lookup::Hit(Entry { bytes, model_len, built, path })
            }
            Err(why) => Lookup::Bad(path, why),
        }
    }

    /// A fresh temporary path in the cache folder (made if missing) for ONNX Runtime to write
    /// the optimised model of `key` to; stale temporary files of crashed writers are removed.
    pub fn temp_path(&self, key: &Key) -> Result<PathBuf, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        self.tidy();
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // `.ort`: ONNX Runtime saves the ORT format when the name ends so.
        Ok(self.dir.join(format!(
            ".{}.{}-{}-{nanos}.tmp.ort",
            key.id(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }

    /// Turns the optimised model ONNX Runtime wrote to `tmp` into the entry for `key`: appends
    /// the trailer, fsyncs, renames over the entry, fsyncs the folder. `tmp` is removed on
    /// failure.
    pub fn commit(&self, tmp: &Path, key: &Key, built: Option<Built>) -> Result<PathBuf, String> {
        let path = self.path(key);
        let result = (|| -> std::io::Result<()> {
            let model = std::fs::read(tmp)?;
            if model.is_empty() {
                return Err(std::io::Error::other("ONNX Runtime wrote an empty model"));
            }
            let trailer = Trailer {
                format: FORMAT,
                key: key.clone(),
                model_len: model.len() as u64,
                model_blake3: blake3::hash(&model).to_hex().to_string(),
                built,
            };
            let json = serde_json::to_vec(&trailer).map_err(std::io::Error::other)?;
            let mut f = std::fs::OpenOptions::new().append(true).open(tmp)?;
            f.write_all(&json)?;
            f.write_all(&(json.len() as u64).to_le_bytes())?;
            f.write_all(MAGIC)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        })();
        result.map(|()| path.clone()).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            format!("cannot write {}: {e}", path.display())
        })
    }

    /// Removes temporary files older than an hour (a writer that crashed mid-way) and entries
    /// unused for 30 days (a hit refreshes an entry's modification time), so that entries of
    /// an older ONNX Runtime or of deleted models do not pile up. Removing an entry another
    /// process has mapped is safe: its mapping stays valid.
    fn tidy(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let limit = if name.starts_with('.') && name.ends_with(".tmp.ort") {
                STALE_TEMP_SECS
            } else if name.ends_with(&format!(".{EXT}")) {
                UNUSED_ENTRY_SECS
            } else {
                continue;
            };
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > limit);
            if old {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Checks a cache file against `key`: magic, trailer, length, blake3 of the model, key.
fn check(mapped: Mapped, key: &Key) -> Result<(Mapped, usize, Option<Built>), String> {
    let bytes = mapped.bytes();
    let n = bytes.len();
    if n < MAGIC.len() + 8 || &bytes[n - MAGIC.len()..] != MAGIC {
        return Err(format!("damaged: no end tag ({n} bytes; truncated or not a cache file)"));
    }
    let len_at = n - MAGIC.len() - 8;
    let trailer_len = u64::from_le_bytes(bytes[len_at..len_at + 8].try_into().expect("8 bytes"));
    let trailer_len = usize::try_from(trailer_len)
        .ok()
        .filter(|&l| l <= len_at)
        .ok_or_else(|| format!("damaged: trailer length {trailer_len} in a {n}-byte file"))?;
    let model_len = len_at - trailer_len;
    let trailer: Trailer = serde_json::from_slice(&bytes[model_len..len_at])
        .map_err(|e| format!("damaged: unreadable trailer ({e})"))?;
    if trailer.format != FORMAT {
        return Err(format!(
            "stale: cache format {} (this plugin writes {FORMAT})",
            trailer.format
        ));
    }
    if &trailer.key != key {
        return Err("stale: written for another model or setup (its key differs)".into());
    }
    if trailer.model_len != model_len as u64 {
        return Err(format!(
            "damaged: the model is {model_len} bytes, the trailer says {}",
            trailer.model_len
        ));
    }
    let hash = blake3::hash(&bytes[..model_len]).to_hex();
    if hash.as_str() != trailer.model_blake3 {
        return Err("damaged: the model's blake3 does not match the trailer".into());
    }
    Ok((mapped, model_len, trailer.built))
}

/// Whether ONNX bytes refer to external data files (an `external_data` entry's `location`
/// key, field 1 of length 8): such a model's graph depends on files its hash does not cover,
/// so it is not cached. A false positive only means no caching.
pub fn has_external_data(onnx: &[u8]) -> bool {
    const PATTERN: &[u8] = b"\x0a\x08location";
    // `location` is rare: compare whole windows only where its first letter is.
    onnx.windows(PATTERN.len()).any(|w| w[2] == b'l' && w == PATTERN)
}

/// blake3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> Result<String, String> {
    let err = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path).map_err(err)?).map_err(err)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// What the key needs of a model file's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub blake3: String,
    /// An ONNX file that refers to external data (see [`has_external_data`]).
    pub external_data: bool,
}

/// A file's identity as the file system tells it: any write changes the change time (which
/// no one can set back) and in practice the modification time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A remembered digest (`<cache dir>/digests/<id>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Memo {
    path: PathBuf,
    identity: Identity,
    digest: Digest,
}

/// A file changed less than this long ago is not remembered: time stamps are coarse (a few
/// ms), so a second write within the same tick could keep the identity (git's "racy" files).
const SETTLED_SECS: i64 = 2;

impl Cache {
    /// The blake3 of a model file (and, for ONNX, whether it refers to external data),
    /// remembered by the file's identity so that a warm load need not read the weights: a
    /// changed file has another identity and is hashed again.
    pub fn digest(&self, path: &Path, onnx: bool) -> Result<Digest, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let identity = Identity::of(&meta);
        let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let id = blake3::hash(canonical.as_os_str().as_encoded_bytes()).to_hex();
        let memo_path = self.dir.join("digests").join(format!("{}.json", &id[..32]));
        let remembered = std::fs::read(&memo_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Memo>(&b).ok())
            .filter(|m| m.path == canonical && m.identity == identity);
        if let Some(m) = remembered {
            log(|| format!("digest of {} remembered", path.display()));
            return Ok(m.digest);
        }
        // Streamed (no 100 MB buffer); an ONNX file is read whole for the external-data scan.
        let digest = if onnx {
            let bytes =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            Digest {
                blake3: blake3::hash(&bytes).to_hex().to_string(),
                external_data: has_external_data(&bytes),
            }
        } else {
            Digest { blake3: hash_file(path)?, external_data: false }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if now - identity.ctime.0.max(identity.mtime.0) >= SETTLED_SECS {
            // Best effort: a memo that cannot be written only means hashing again next time.
            let memo = Memo { path: canonical, identity, digest: digest.clone() };
            let _ = self.write_small(&memo_path, &serde_json::to_vec(&memo).unwrap_or_default());
        }
        Ok(digest)
    }

    /// Writes a small file atomically (temporary name, rename); no fsync: it is a hint.
    fn write_small(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().expect("a file in the cache folder");
        std::fs::create_dir_all(dir)?;
        static N: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        Key(serde_json::json!({ "format": FORMAT, "model": n }))
    }

    /// Writes `model` as ONNX Runtime would, then commits it.
    fn entry(cache: &Cache, k: &Key, model: &[u8]) -> PathBuf {
        let tmp = cache.temp_path(k).unwrap();
        std::fs::write(&tmp, model).unwrap();
        let built = Built { architecture: "vit_micro".into(), prefix_tokens: 2 };
        cache.commit(&tmp, k, Some(built)).unwrap()
    }

    #[test]
    fn an_entry_round_trips_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path().join("c"));
        let model: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = entry(&cache, &key(1), &model);
        match cache.lookup(&key(1)) {
            Lookup::Hit(e) => {
                assert_eq!(e.model(), &model[..]);
                assert_eq!(e.built.unwrap().prefix_tokens, 2);
                assert_eq!(e.path, path);
            }
            other => panic!("{other:?}"),
        }
        let names: Vec<_> = std::fs::read_dir(dir.path().join("c"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![format!("{}.{EXT}", key(1).id())]);
        assert!(matches!(cache.lookup(&key(2)), Lookup::Miss));
    }

    #[test]
    fn damaged_and_stale_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::at(dir.path());
        let model = vec![42u8; 3000];
        let path = entry(&cache, &key(1), &model);
        let good = std::fs::read(&path).unwrap();
        let bad = |bytes: &[u8], k: &Key| {
            std::fs::write(cache.path(k), bytes).unwrap();
            match cache.lookup(k) {
                Lookup::Bad(_, why) => why,
                other => panic!("{other:?}"),
            }
        };
        // Truncated anywhere: the end tag is gone.
        for cut in [0, 10, 2999, good.len() - 1] {
            assert!(bad(&good[..cut], &key(1)).contains("no end tag"));
        }
        // One flipped bit in the model: the hash catches it.
        let mut flipped = good.clone();
        flipped[1234] ^= 1;
        assert!(bad(&flipped, &key(1)).contains("blake3"));
        // Garbage with a valid-looking end.
        let mut garbage = vec![7u8; 100];
        garbage.extend_from_slice(&5u64.to_le_bytes());
        garbage.extend_from_slice(MAGIC);
        assert!(bad(&garbage, &key(1)).contains("unreadable trailer"));
        let mut huge = vec![7u8; 10];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        huge.extend_from_slice(MAGIC);
        assert!(bad(&huge, &key(1)).contains("trailer length"));
        // Another key's entry under this key's name.
        assert!(bad(&good, &key(2)).contains("stale"));
    }

    #[test]
    fn external_data_is_detected() {
        let mut onnx = vec![1u8; 100];
        assert!(!has_external_data(&onnx));
        onnx.extend_from_slice(b"\x0a\x08location\x12\x08w.bin");
        assert!(has_external_data(&onnx));
    }
}
