//! Durable, atomic file writes: the one way irtdb's commit points (a training run's `run.json`,
//! published weights, exports) reach the disk.
//!
//! A file is written under a temporary name beside its destination, fsynced, renamed over the
//! destination, and the folder is fsynced so that the rename survives a power cut. A reader sees
//! the old file or the new one, never half of one; after [`commit_file`] returns, a crash keeps
//! the new one.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The temporary name a file is written under before [`commit_file`] gives it `path`: in the
/// same folder (a rename never crosses file systems), hidden, and tagged with the process id so
/// two writers never share one.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` durably and atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(Error::io("write", &tmp))?;
    commit_file(&tmp, path)
}

/// Makes the finished file `tmp` durable and gives it its name: fsync the file, rename it over
/// `path`, fsync the folder.
pub fn commit_file(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(Error::io("sync", tmp))?;
    std::fs::rename(tmp, path).map_err(Error::io("write", path))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync the folder", dir))?;
    Ok(())
}
