//! The single-writer lock: an exclusive advisory lock on `<db>.lock`.
//!
//! SQLite already serialises transactions, but two `irtdb index` runs interleaving batches would
//! each diff the folder against a database the other is changing, and both would fit a PCA and
//! write index files. So writers take this lock for their whole run. Readers never do: WAL lets
//! them read while a writer commits, and they only ever see whole batches.
//!
//! The lock is `flock`-style (std's `File::lock`): the OS drops it when the process dies, so a
//! crash never leaves a stale lock. The holder writes its pid into the file so that a refused
//! writer can say who holds it; the file itself is left in place, since deleting a lock file
//! races with the next process opening it.

use std::fs::TryLockError;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Held while a process writes to a collection; released on drop (or when the process exits).
#[derive(Debug)]
pub struct WriterLock {
    file: fs_err::File,
}

impl WriterLock {
    /// The lock file, `<db>.lock`.
    pub fn lock_path(&self) -> &Path {
        self.file.path()
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        // Clear the pid first so nobody reports a process that no longer holds the lock.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// `<db>.lock` beside the database.
pub fn lock_path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of the database at `db`. When another process holds it: without `on_wait`,
/// fails with [`Error::Locked`]; with it, calls it with the holder's pid and blocks.
pub(crate) fn acquire(
    db: &Path,
    on_wait: Option<&mut dyn FnMut(Option<u32>)>,
) -> Result<WriterLock> {
    let lock_err = |cause| Error::Lock { path: db.to_path_buf(), cause };
    let mut file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path_for(db))
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let pid = read_pid(&mut file);
            match on_wait {
                None => return Err(Error::Locked { path: db.to_path_buf(), pid }),
                Some(on_wait) => {
                    on_wait(pid);
                    file.lock().map_err(lock_err)?;
                }
            }
        }
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    // Best effort: the pid only improves the message of a refused writer.
    let _ = file
        .set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    Ok(WriterLock { file })
}

fn read_pid(file: &mut fs_err::File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}
