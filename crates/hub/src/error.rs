//! What can go wrong fetching from the hub, each saying what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "'{reference}' is not a hub reference: write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION \
         (e.g. hf-hub:timm/deit_small_patch16_224.fb_in1k)"
    )]
    BadReference { reference: String },
    #[error(
        "the hub at {endpoint} has no model repository {repo} (or it is private: set HF_TOKEN to \
         a token that can read it); check the name, e.g. with `irtdb model list`"
    )]
    RepoNotFound { endpoint: String, repo: String },
    #[error(
        "hf-hub:{repo} has no revision '{revision}': use a branch, tag or full commit id of it"
    )]
    RevisionNotFound { repo: String, revision: String },
    #[error("hf-hub:{repo}@{revision} has no file {file}")]
    EntryNotFound { repo: String, revision: String, file: String },
    #[error(
        "hf-hub:{repo} is gated: accept its terms at {endpoint}/{repo}, then set HF_TOKEN to an \
         access token of that account"
    )]
    GatedNoToken { endpoint: String, repo: String },
    #[error(
        "hf-hub:{repo} is gated and the token in HF_TOKEN has no access to it: accept its terms \
         at {endpoint}/{repo} with the account the token belongs to"
    )]
    GatedDenied { endpoint: String, repo: String },
    #[error(
        "HF_HUB_OFFLINE is set and {what} is not in the Hugging Face cache at {}: fetch it once \
         with network (unset HF_HUB_OFFLINE and run `irtdb model fetch {what}`), or point \
         HF_HUB_CACHE / HF_HOME at a cache that has it",
        .cache.display()
    )]
    OfflineNotCached { what: String, cache: PathBuf },
    #[error(
        "cannot reach the hub at {endpoint} ({cause}) and {what} is not in the Hugging Face cache \
         at {}: connect to the network (or set HF_ENDPOINT to a mirror) and run again",
        .cache.display()
    )]
    Unreachable { endpoint: String, what: String, cause: String, cache: PathBuf },
    #[error("the hub answered {status} for {url}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Http { status: u16, url: String, message: Option<String> },
    #[error(
        "the download of {file} from hf-hub:{repo} failed after {attempts} attempts ({cause}); \
         the {have} bytes received are kept and the next run resumes from there"
    )]
    Transfer { repo: String, file: String, attempts: u32, cause: String, have: u64 },
    #[error(
        "{file} from hf-hub:{repo} is corrupt: its content hashes to {got}, the hub says {expected}; \
         nothing was cached, run again to download it anew"
    )]
    Corrupt { repo: String, file: String, expected: String, got: String },
    #[error(
        "the disk is full writing {} ({have} of {} bytes): free space there, or set HF_HUB_CACHE \
         to a disk with room; the partial file is kept and the next run resumes",
        .path.display(), .total.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
    )]
    DiskFull { path: PathBuf, have: u64, total: Option<u64> },
    #[error("{what} {}", .path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error(
        "the hub's answer for {url} lacks {header}; is HF_ENDPOINT ({endpoint}) a Hugging Face hub?"
    )]
    NotAHub { endpoint: String, url: String, header: &'static str },
}

impl Error {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { what, path: path.into(), source }
    }
}
