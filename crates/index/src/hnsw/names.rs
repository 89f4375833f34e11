//! The names of a database's index files, which sit beside it: generation `<db>.hnsw-<ms>`
//! is the file `<db>.hnsw-<ms>.irtdb-hnsw`, written under the temporary name
//! `.<db>.hnsw-<ms>.tmp-<pid>-<n>.irtdb-hnsw` while it is saved. This module is the one place
//! that knows that pattern: new basenames, the listing of a database's index files, and the
//! removal of those no generation uses.

use std::path::{Path, PathBuf};

/// The index files of the database named `owner` in the folder `dir`.
#[derive(Clone, Debug)]
pub struct IndexFiles {
    dir: PathBuf,
    owner: String,
}

impl IndexFiles {
    /// The index files beside `db` (its folder, its file name).
    pub fn beside(db: &Path) -> Self {
        let dir = db.parent().map(Path::to_path_buf).unwrap_or_default();
        let owner = db.file_name().and_then(|n| n.to_str()).unwrap_or("irtdb.db").to_string();
        IndexFiles { dir, owner }
    }

    /// The folder the files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A basename for a new generation, stamped with the current time in milliseconds and
    /// moved past any of `taken` (never a recorded generation's, even within a millisecond).
    pub fn new_basename(&self, taken: &[String]) -> String {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut millis = stamp.as_millis();
        loop {
            let b = format!("{}.hnsw-{millis}", self.owner);
            if !taken.contains(&b) {
                return b;
            }
            millis += 1;
        }
    }

    /// Whether `name` (a file name in [`Self::dir`]) is one of this database's index files,
    /// complete or temporary.
    pub fn is_ours(&self, name: &str) -> bool {
        let complete = format!("{}.hnsw-", self.owner);
        name.starts_with(&complete)
            || name.strip_prefix('.').is_some_and(|n| n.starts_with(&complete))
    }

    /// This database's index files in [`Self::dir`], complete or temporary, by file name.
    pub fn list(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| self.is_ours(n))
            .collect();
        names.sort();
        names
    }

    /// Removes this database's index files that are not in `keep` (file names): what a run
    /// killed while saving left behind, or files whose generation was never recorded. Only
    /// the database's writer may call it (no other process is saving then). Best effort:
    /// returns how many files were removed.
    pub fn remove_all_but(&self, keep: &[String]) -> usize {
        self.list()
            .into_iter()
            .filter(|n| !keep.contains(n))
            .filter(|n| std::fs::remove_file(self.dir.join(n)).is_ok())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_removes_only_this_databases_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = IndexFiles::beside(&dir.path().join("a.db"));
        let b = files.new_basename(&[]);
        assert!(b.starts_with("a.db.hnsw-"), "{b}");
        let taken = files.new_basename(std::slice::from_ref(&b));
        assert_ne!(taken, b);
        let ours = [format!("{b}.irtdb-hnsw"), format!(".{b}.tmp-1-0.irtdb-hnsw")];
        let theirs =
            ["a.db", "a.db-wal", "b.db.hnsw-1.irtdb-hnsw", ".b.db.hnsw-1.tmp-1-0.irtdb-hnsw"];
        for n in ours.iter().map(String::as_str).chain(theirs) {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let mut expected = ours.to_vec();
        expected.sort();
        assert_eq!(files.list(), expected);
        assert_eq!(files.remove_all_but(&ours[..1]), 1);
        assert_eq!(files.list(), ours[..1].to_vec());
        for n in theirs {
            assert!(dir.path().join(n).is_file(), "{n} was removed");
        }
    }
}
