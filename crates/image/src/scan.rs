//! Finding the images of a collection, and fingerprinting them.
//!
//! `irtdb index` diffs the folder against the database on every run, so the scan must be
//! deterministic (sorted), cheap (metadata only; hashing is a separate, explicit step), and must
//! finish on any tree a user points it at: unreadable folders, broken links, symlink loops and
//! non-UTF-8 names become [`ScanResult::problems`], never panics or hangs.

use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::has_image_extension;

/// How [`scan`] walks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanOptions {
    /// Descend into symbolic links to directories (default false). Loops are detected and
    /// reported as problems either way. Symbolic links to files are always listed.
    pub follow_links: bool,
    /// Also list hidden files and descend into hidden folders (names starting with `.`). Off by
    /// default: `.thumbnails/`, `.git/` and macOS `._IMG.jpg` resource forks are not images.
    pub include_hidden: bool,
}

/// One image file found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScannedFile {
    /// Path relative to the scanned root, `/`-separated. Names that are not UTF-8 are converted
    /// lossily (and reported in [`ScanResult::problems`]); use `abs_path` to open the file.
    pub rel_path: String,
    /// The file's path: the root made absolute (without resolving links), joined with the
    /// relative path.
    pub abs_path: PathBuf,
    /// Size in bytes (of the link target for a symbolic link).
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (negative before it; 0 if unknown).
    pub mtime_ns: i64,
    /// The folder holding the file, relative to the root and `/`-separated (`cats` for
    /// `cats/1.jpg`, `a/b` for `a/b/2.jpg`); `None` for files directly in the root.
    pub label: Option<String>,
}

/// Everything [`scan`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanResult {
    /// Image files, sorted by `rel_path`.
    pub files: Vec<ScannedFile>,
    /// Places that could not be read or were odd, with a description; sorted by path.
    pub problems: Vec<(PathBuf, String)>,
}

/// Walks `root` recursively and lists the files with an image extension ([`crate::IMAGE_EXTENSIONS`],
/// case-insensitive). Reads metadata only, never content. Never panics: whatever cannot be read is
/// listed in [`ScanResult::problems`] and the walk goes on.
pub fn scan(root: &Path, opts: &ScanOptions) -> ScanResult {
    scan_with_progress(root, opts, &|_| {})
}

/// [`scan`], calling `progress(n)` with the number of image files found so far, every
/// [`PROGRESS_EVERY`] files and once at the end.
///
/// The directory walk is sequential (reading a directory returns its entries in bulk, with
/// their types); the per-file `stat`, one system call per file and the slow part on a cold cache
/// or a network file system, runs in parallel on rayon's pool.
pub fn scan_with_progress(
    root: &Path,
    opts: &ScanOptions,
    progress: &(dyn Fn(usize) + Sync),
) -> ScanResult {
    scan_filtered(root, opts, &|_| true, progress)
}

/// [`scan_with_progress`] of the files whose relative path (`/`-separated, as
/// [`ScannedFile::rel_path`] will read) `keep` accepts, decided from the directory listing before
/// any file is `stat`ed: a shard of a folder (`keep = |p| shard_of(p, n) == i`) costs one walk of
/// the folders and the `stat`s of its own files only.
pub fn scan_filtered(
    root: &Path,
    opts: &ScanOptions,
    keep: &(dyn Fn(&str) -> bool + Sync),
    progress: &(dyn Fn(usize) + Sync),
) -> ScanResult {
    let mut result = ScanResult::default();
    let abs_root = irtdb_core::absolute(root);
    let walker = WalkDir::new(root)
        .follow_links(opts.follow_links)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || opts.include_hidden || !is_hidden(e.file_name()));

    // (path, is a symbolic link) of every entry that may be an image file, in walk order.
    let mut candidates = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let message = match (e.loop_ancestor(), e.io_error()) {
                    (Some(ancestor), _) => format!(
                        "symbolic link loop: leads back to {}, not followed again",
                        ancestor.display()
                    ),
                    (None, Some(io)) => format!("cannot read: {io}"),
                    (None, None) => e.to_string(),
                };
                result.problems.push((path, message));
                continue;
            }
        };
        if entry.file_type().is_dir() || !has_image_extension(entry.path()) {
            continue;
        }
        if !keep(&rel_path_of(root, entry.path()).0) {
            continue;
        }
        let is_symlink = entry.path_is_symlink();
        candidates.push((entry.into_path(), is_symlink));
    }

    let found = std::sync::atomic::AtomicUsize::new(0);
    let listed: Vec<std::result::Result<Option<Listed>, (PathBuf, String)>> = candidates
        .into_par_iter()
        .map(|(path, is_symlink)| {
            let entry = listed_file(root, &abs_root, &path, is_symlink, opts.follow_links)?;
            if entry.is_some() {
                let n = found.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(PROGRESS_EVERY) {
                    progress(n);
                }
            }
            Ok(entry)
        })
        .collect();
    for item in listed {
        match item {
            Ok(Some((file, lossy))) => {
                if let Some(problem) = lossy {
                    result.problems.push(problem);
                }
                result.files.push(file);
            }
            Ok(None) => {}
            Err(problem) => result.problems.push(problem),
        }
    }
    progress(result.files.len());
    // Stable: files whose names convert to the same text stay in walk (byte) order.
    result.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    drop_lossy_twins(&mut result, &abs_root);
    result.problems.sort();
    result
}

/// Lists exactly the files named in `rel_paths` (relative to `root`, `/`-separated), as a
/// scheduler's partition names them: the [`scan`] of a folder that holds only those files.
///
/// Each name is checked before it is touched: absolute paths, `..` and empty names are
/// problems, never opened; so are names without an image extension, files that do not exist
/// and names that are not regular files. Duplicates are listed once. The result is sorted by
/// `rel_path` like a scan's; the metadata reads run in parallel.
pub fn list_files(root: &Path, rel_paths: &[String]) -> ScanResult {
    let mut result = ScanResult::default();
    let abs_root = irtdb_core::absolute(root);
    let mut names: Vec<&str> = rel_paths.iter().map(|s| s.trim_end_matches('\r')).collect();
    names.sort_unstable();
    names.dedup();
    let listed: Vec<std::result::Result<Option<Listed>, (PathBuf, String)>> = names
        .into_par_iter()
        .filter(|name| !name.is_empty())
        .map(|name| {
            let rel = Path::new(name);
            let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err((
                    rel.to_path_buf(),
                    "listed path must be relative to the folder, without `..` or `.`: skipped"
                        .to_string(),
                ));
            }
            if !has_image_extension(rel) {
                return Err((
                    rel.to_path_buf(),
                    "listed file has no image extension: skipped".to_string(),
                ));
            }
            let path = root.join(rel);
            let is_symlink = fs::symlink_metadata(&path)
                .map(|m| m.is_symlink())
                .map_err(|e| (path.clone(), format!("listed file cannot be read: {e}")))?;
            match listed_file(root, &abs_root, &path, is_symlink, false)? {
                None => Err((path, "listed path is not a regular file: skipped".to_string())),
                some => Ok(some),
            }
        })
        .collect();
    for item in listed {
        match item {
            Ok(Some((file, _))) => result.files.push(file),
            Ok(None) => {}
            Err(problem) => result.problems.push(problem),
        }
    }
    result.files.sort_by(|a, b| a.rel_path.cmp(&b.rel_path));
    result.problems.sort();
    result
}

/// The shard (`0..count`) that the file at `rel_path` belongs to when a collection is split
/// into `count` shards: the first 8 bytes of BLAKE3 of the `/`-separated relative path, read
/// as a little-endian u64, modulo `count`. It depends on the path alone, so every machine
/// computes the same split, and a file keeps its shard as long as it keeps its path.
pub fn shard_of(rel_path: &str, count: u32) -> u32 {
    let hash = blake3::hash(rel_path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(count.max(1))) as u32
}

/// How often [`scan_with_progress`] reports.
pub const PROGRESS_EVERY: usize = 1000;

/// A file found by the walk, and the problem to report if its name is not UTF-8.
type Listed = (ScannedFile, Option<(PathBuf, String)>);

/// Reads the metadata of one walk entry: the file to list, nothing (not a regular file), or a
/// problem.
fn listed_file(
    root: &Path,
    abs_root: &Path,
    path: &Path,
    is_symlink: bool,
    follow_links: bool,
) -> std::result::Result<Option<Listed>, (PathBuf, String)> {
    // Links are listed by what they point to; a link to a folder is not descended unless
    // follow_links (then walkdir already reported it as a folder).
    let metadata =
        if is_symlink || follow_links { fs::metadata(path) } else { fs::symlink_metadata(path) };
    let metadata = match metadata {
        Ok(m) => m,
        Err(e) if is_symlink => {
            return Err((path.to_path_buf(), format!("broken symbolic link: {e}")));
        }
        Err(e) => return Err((path.to_path_buf(), format!("cannot read metadata: {e}"))),
    };
    if !metadata.is_file() {
        return Ok(None);
    }
    let rel = path.strip_prefix(root).unwrap_or(path);
    let abs_path =
        if rel.as_os_str().is_empty() { abs_root.to_path_buf() } else { abs_root.join(rel) };
    let (rel_path, lossy) = rel_path_of(root, path);
    let parts: Vec<&str> = rel_path.split('/').collect();
    let problem = lossy.then(|| {
        (path.to_path_buf(), format!("file name is not valid UTF-8; listed as {rel_path:?}"))
    });
    let label = (parts.len() > 1).then(|| parts[..parts.len() - 1].join("/"));
    let file = ScannedFile {
        rel_path,
        abs_path,
        size: metadata.len(),
        mtime_ns: metadata.modified().map(mtime_ns).unwrap_or(0),
        label,
    };
    Ok(Some((file, problem)))
}

/// The `/`-separated path of `path` relative to `root` (the file's own name when `path` is the
/// root), names that are not UTF-8 converted lossily; and whether one was.
fn rel_path_of(root: &Path, path: &Path) -> (String, bool) {
    let rel = path.strip_prefix(root).unwrap_or(path);
    // The root itself is a file: list it under its own name.
    let rel = if rel.as_os_str().is_empty() {
        Path::new(path.file_name().unwrap_or_default())
    } else {
        rel
    };
    let mut parts = Vec::new();
    let mut lossy = false;
    for component in rel.components() {
        if let Component::Normal(name) = component {
            lossy |= name.to_str().is_none();
            parts.push(name.to_string_lossy());
        }
    }
    (parts.join("/"), lossy)
}

/// Two names that differ only in bytes that are not UTF-8 (`a\xfe.jpg`, `a\xff.jpg`) read the
/// same once converted, and `rel_path` is how the database knows a file: stored under one name,
/// the two would overwrite each other's row and be re-embedded in turn on every run. The first in
/// byte order is kept (deterministically, run after run); the others are problems to rename.
fn drop_lossy_twins(result: &mut ScanResult, abs_root: &Path) {
    let mut kept: Vec<ScannedFile> = Vec::with_capacity(result.files.len());
    for file in std::mem::take(&mut result.files) {
        let Some(first) = kept.last().filter(|first| first.rel_path == file.rel_path) else {
            kept.push(file);
            continue;
        };
        // This replaces the "listed as" problem reported for the file during the walk.
        if let Ok(rel) = file.abs_path.strip_prefix(abs_root) {
            result.problems.retain(|(p, _)| !p.ends_with(rel));
        }
        result.problems.push((
            file.abs_path.clone(),
            format!(
                "file name is not valid UTF-8 and reads as {:?} once converted, as {} does: not \
                 indexed (rename one of them)",
                file.rel_path,
                first.abs_path.display()
            ),
        ));
    }
    result.files = kept;
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn mtime_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_nanos()).map(|n| -n).unwrap_or(i64::MIN),
    }
}

/// BLAKE3 of the file's content, lower-case hex (64 characters). Streams the file.
pub fn content_hash(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(file).map_err(|e| Error::io(path, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}
