//! The Hugging Face cache, laid out exactly as Python's `huggingface_hub` lays it out, so each
//! finds what the other fetched.

use std::path::{Path, PathBuf};

use crate::{is_commit, Error};

/// A hub cache root (`.../huggingface/hub`).
#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `HF_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
    /// `~/.cache/huggingface/hub`: huggingface_hub's own order.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home().join("hub"));
        Self { root }
    }

    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `models--ORG--NAME`.
    pub fn repo_dir(&self, repo: &str) -> PathBuf {
        self.root.join(format!("models--{}", repo.replace('/', "--")))
    }

    /// Where `file` of `repo` at `commit` lives (a link into `blobs/`), whether or not it exists.
    pub fn snapshot_file(&self, repo: &str, commit: &str, file: &str) -> PathBuf {
        self.repo_dir(repo).join("snapshots").join(commit).join(file)
    }

    /// The commit a revision resolves to in this cache: the revision itself when it is a commit,
    /// else what `refs/<revision>` says.
    pub fn commit_of(&self, repo: &str, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.repo_dir(repo).join("refs").join(revision)).ok()?;
        let c = text.trim();
        is_commit(c).then(|| c.to_string())
    }

    /// `file` of `repo` at `revision`, if the cache has it.
    pub fn cached(&self, repo: &str, revision: &str, file: &str) -> Option<(String, PathBuf)> {
        let commit = self.commit_of(repo, revision)?;
        let p = self.snapshot_file(repo, &commit, file);
        p.is_file().then_some((commit, p))
    }

    /// Whether the cache has weights (any of [`crate::WEIGHT_FILES`]) for the hub reference
    /// `reference` (`hf-hub:ORG/NAME[@REV]`; anything else: false).
    pub fn has_model(&self, reference: &str) -> bool {
        let Some(Ok(r)) = crate::HubRef::parse(reference) else { return false };
        crate::WEIGHT_FILES.iter().any(|f| self.cached(&r.repo, &r.revision, f).is_some())
    }

    pub(crate) fn blob(&self, repo: &str, etag: &str) -> PathBuf {
        self.repo_dir(repo).join("blobs").join(etag)
    }

    pub(crate) fn lock_file(&self, repo: &str, etag: &str) -> PathBuf {
        self.root
            .join(".locks")
            .join(format!("models--{}", repo.replace('/', "--")))
            .join(format!("{etag}.lock"))
    }

    /// Records that `revision` of `repo` is `commit` (atomically: a reader sees the old or the
    /// new commit).
    pub(crate) fn write_ref(&self, repo: &str, revision: &str, commit: &str) -> Result<(), Error> {
        if is_commit(revision) || self.commit_of(repo, revision).as_deref() == Some(commit) {
            return Ok(());
        }
        let path = self.repo_dir(repo).join("refs").join(revision);
        let dir = path.parent().expect("refs/<revision> has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let tmp = dir.join(format!(".{}.tmp-{}", file_name(&path), std::process::id()));
        std::fs::write(&tmp, commit).map_err(|e| Error::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("writing", &path, e))
    }

    /// Points `snapshots/<commit>/<file>` at `blobs/<etag>` with a relative link, as
    /// huggingface_hub does.
    pub(crate) fn link(
        &self,
        repo: &str,
        commit: &str,
        file: &str,
        etag: &str,
    ) -> Result<PathBuf, Error> {
        let link = self.snapshot_file(repo, commit, file);
        let dir = link.parent().expect("a snapshot file has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        // snapshots/<commit>/<a/b/file> → ../../(../)*blobs/<etag>
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        // Made under a temporary name, then renamed over: two processes linking the same file
        // both succeed, and a reader never sees the link missing.
        let tmp = dir.join(format!(".{}.link-{}", file_name(&link), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io("linking", &tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| Error::io("linking", &link, e))?;
        Ok(link)
    }
}

/// huggingface_hub's `HF_HOME`.
fn hf_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(h);
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    xdg.or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("huggingface")
}

/// The token file `huggingface-cli login` writes (`$HF_HOME/token`).
pub(crate) fn token_file() -> PathBuf {
    std::env::var_os("HF_TOKEN_PATH")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| hf_home().join("token"))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::at(dir.path());
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(c.repo_dir("a/b").join("blobs")).unwrap();
        std::fs::write(c.blob("a/b", "e1"), b"x").unwrap();
        c.write_ref("a/b", "main", commit).unwrap();
        let link = c.link("a/b", commit, "onnx/model.onnx", "e1").unwrap();
        assert_eq!(
            link,
            dir.path().join("models--a--b/snapshots").join(commit).join("onnx/model.onnx")
        );
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("../../../blobs/e1"));
        assert_eq!(std::fs::read(&link).unwrap(), b"x");
        assert_eq!(c.commit_of("a/b", "main").as_deref(), Some(commit));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("models--a--b/refs/main")).unwrap(),
            commit
        );
        assert!(c.cached("a/b", "main", "onnx/model.onnx").is_some());
        assert!(c.cached("a/b", "v2", "onnx/model.onnx").is_none());
    }
}
