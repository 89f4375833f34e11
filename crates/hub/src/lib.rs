//! irtdb's Hugging Face hub client.
//!
//! - [`HubRef`]: the `hf-hub:ORG/NAME[@REVISION]` spelling timm uses for a model on the hub.
//! - [`Cache`]: the standard cache shared with Python's `huggingface_hub` (`HF_HUB_CACHE`, else
//!   `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`),
//!   laid out as it lays it out: `models--ORG--NAME/{blobs/<etag>, snapshots/<commit>/<file> →
//!   blob, refs/<revision>}`, with its lock files under `.locks/`.
//! - [`Client`]: fetches `$HF_ENDPOINT/ORG/NAME/resolve/REV/FILE` the way the hub answers (small
//!   files `200` with `ETag` and `X-Repo-Commit`; LFS files a redirect to a CDN with
//!   `X-Linked-Etag`, `X-Linked-Size`; errors named by `X-Error-Code`), resuming cut transfers
//!   with `Range`, verifying the content hash before a file enters the cache, under a lock shared
//!   with other processes (Python's included), honouring `HF_HUB_OFFLINE` and `HF_TOKEN`.
//!
//! Why not the `hf-hub` crate: 0.5 does not read `HF_HUB_OFFLINE` and has no resumable,
//! verified download; 1.0 reads no environment and resolves its default cache relative to the
//! current directory. What irtdb needs is ~500 lines on a well-kept blocking HTTP client.

mod cache;
mod client;
mod error;
mod reference;

pub use cache::Cache;
pub use client::{Client, Downloaded, ModelFiles, NoProgress, Progress, WEIGHT_FILES};
pub use error::Error;
pub use reference::{is_commit, HubRef, PREFIX};

/// The public hub, used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
