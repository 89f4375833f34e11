//! Fetching files of a hub repository into the [`Cache`].

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::cache::token_file;
use crate::{is_commit, Cache, Error, HubRef, DEFAULT_ENDPOINT};

/// Weight files irtdb can load, in the order a model repository is searched for them.
pub const WEIGHT_FILES: [&str; 3] = ["model.safetensors", "model.onnx", "onnx/model.onnx"];

/// Told about each transfer (the CLI draws a bar on stderr; scripts pass [`NoProgress`]).
pub trait Progress {
    /// A transfer of `file` starts; `total` bytes if known, `resumed_from` already on disk.
    fn download_start(&self, _file: &str, _total: Option<u64>, _resumed_from: u64) {}
    fn downloaded(&self, _bytes: u64) {}
    fn download_finish(&self) {}
    /// A one-line remark (a retry, a fall-back to the cache).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// A file in the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// `snapshots/<commit>/<file>`.
    pub path: PathBuf,
    /// The commit the revision resolved to.
    pub commit: String,
    /// Whether bytes were transferred (false: it was already cached).
    pub transferred: bool,
}

/// What [`Client::fetch_model`] brings: `config.json` (when the repository has one) and the
/// first of [`WEIGHT_FILES`] it has, from one commit.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    pub commit: String,
    /// Path of the weights inside the repository (e.g. `model.safetensors`).
    pub weights_file: String,
    pub weights: PathBuf,
    pub config: Option<PathBuf>,
}

/// The hub as seen from here: endpoint, token, offline switch, cache.
#[derive(Debug)]
pub struct Client {
    endpoint: String,
    token: Option<String>,
    offline: bool,
    cache: Cache,
    agent: ureq::Agent,
    /// Attempts per request (transient errors: no connection, 5xx, 429, a cut transfer).
    attempts: u32,
    backoff: Duration,
}

/// What the hub says about a file before it is downloaded.
#[derive(Debug)]
struct Meta {
    commit: String,
    etag: String,
    size: Option<u64>,
    /// Where the bytes are (the CDN for LFS files).
    url: String,
}

/// A failed request: transient ones are retried.
enum Failure {
    Transient(String),
    Fatal(Error),
}

impl Client {
    /// From the environment, as huggingface_hub reads it: `HF_ENDPOINT`, `HF_TOKEN` (else the
    /// token file `huggingface-cli login` writes), `HF_HUB_OFFLINE`; cache from
    /// [`Cache::from_env`].
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into());
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| std::fs::read_to_string(token_file()).ok().filter(|t| !t.trim().is_empty()))
            .map(|t| t.trim().to_string());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
        });
        Self::new(&endpoint, token, offline, Cache::from_env())
    }

    pub fn new(endpoint: &str, token: Option<String>, offline: bool, cache: Cache) -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(concat!("irtdb/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            offline,
            cache,
            agent: ureq::Agent::new_with_config(config),
            attempts: 5,
            backoff: Duration::from_millis(300),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
    pub fn offline(&self) -> bool {
        self.offline
    }
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Brings `config.json` and the weights of a model repository into the cache (or finds them
    /// there) and returns their paths, both from the same commit.
    pub fn fetch_model(&self, r: &HubRef, progress: &dyn Progress) -> Result<ModelFiles, Error> {
        let config = match self.download(r, "config.json", progress) {
            Ok(d) => Some(d),
            Err(Error::EntryNotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        // Pin the rest to the commit config.json came from.
        let pinned = config.as_ref().map(|d| r.at(&d.commit)).unwrap_or_else(|| r.clone());
        for file in WEIGHT_FILES {
            match self.download(&pinned, file, progress) {
                Ok(d) => {
                    return Ok(ModelFiles {
                        commit: d.commit,
                        weights_file: file.into(),
                        weights: d.path,
                        config: config.map(|c| c.path),
                    })
                }
                Err(Error::EntryNotFound { .. } | Error::OfflineNotCached { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        if self.offline {
            return Err(Error::OfflineNotCached {
                what: r.to_string(),
                cache: self.cache.root().into(),
            });
        }
        Err(Error::EntryNotFound {
            repo: r.repo.clone(),
            revision: r.revision.clone(),
            file: format!(
                "{} (irtdb loads safetensors or ONNX weights; a repository with only \
                 pytorch_model.bin needs converting first)",
                WEIGHT_FILES.join(" or ")
            ),
        })
    }

    /// `file` of `r` in the cache, downloading it unless cached. Offline (`HF_HUB_OFFLINE`) only
    /// the cache is read; when the hub cannot be reached the cache is used if it has the file.
    pub fn download(
        &self,
        r: &HubRef,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<Downloaded, Error> {
        let cached = || {
            self.cache.cached(&r.repo, &r.revision, file).map(|(commit, path)| Downloaded {
                path,
                commit,
                transferred: false,
            })
        };
        let what = || format!("{file} of {r}");
        if self.offline {
            return cached().ok_or_else(|| Error::OfflineNotCached {
                what: what(),
                cache: self.cache.root().into(),
            });
        }
        if is_commit(&r.revision) {
            if let Some(hit) = cached() {
                return Ok(hit); // a commit never changes: no network needed
            }
        }
        let meta = match self.metadata(r, file) {
            Ok(m) => m,
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(cause)) => {
                return match cached() {
                    Some(hit) => {
                        progress.note(&format!(
                            "cannot reach {} ({cause}); using the cached {}",
                            self.endpoint,
                            what()
                        ));
                        Ok(hit)
                    }
                    None => Err(Error::Unreachable {
                        endpoint: self.endpoint.clone(),
                        what: what(),
                        cause,
                        cache: self.cache.root().into(),
                    }),
                }
            }
        };
        self.cache.write_ref(&r.repo, &r.revision, &meta.commit)?;
        let snap = self.cache.snapshot_file(&r.repo, &meta.commit, file);
        let blob = self.cache.blob(&r.repo, &meta.etag);
        if snap.is_file() && blob.is_file() {
            return Ok(Downloaded { path: snap, commit: meta.commit, transferred: false });
        }
        let mut transferred = false;
        if !blob.is_file() {
            let lock_path = self.cache.lock_file(&r.repo, &meta.etag);
            let dir = lock_path.parent().expect("lock file has a parent");
            std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
            let lock =
                File::create(&lock_path).map_err(|e| Error::io("creating", &lock_path, e))?;
            lock.lock().map_err(|e| Error::io("locking", &lock_path, e))?;
            // Another process may have finished it while this one waited.
            if !blob.is_file() {
                self.fetch_blob(r, file, &meta, &blob, progress)?;
                transferred = true;
            }
        }
        let path = self.cache.link(&r.repo, &meta.commit, file, &meta.etag)?;
        Ok(Downloaded { path, commit: meta.commit, transferred })
    }

    fn resolve_url(&self, r: &HubRef, file: &str) -> String {
        format!("{}/{}/resolve/{}/{}", self.endpoint, r.repo, r.revision, file)
    }

    /// HEAD on the resolve URL, redirects read by hand (the hub's headers, not the CDN's).
    fn metadata(&self, r: &HubRef, file: &str) -> Result<Meta, Failure> {
        let mut url = self.resolve_url(r, file);
        for _hop in 0..5 {
            let resp = self.with_retries(&|_, _, _| {}, || {
                let mut req = self.agent.head(&url);
                if let Some(t) = &self.token {
                    req = req.header("Authorization", format!("Bearer {t}"));
                }
                let resp = req.call().map_err(|e| Failure::Transient(e.to_string()))?;
                let status = resp.status().as_u16();
                if status == 429 || status >= 500 {
                    return Err(Failure::Transient(format!("HTTP {status}")));
                }
                Ok(resp)
            })?;
            let status = resp.status().as_u16();
            let header =
                |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
            if status >= 400 {
                return Err(Failure::Fatal(self.hub_error(
                    r,
                    file,
                    &url,
                    status,
                    header("x-error-code"),
                    header("x-error-message"),
                )));
            }
            let commit = header("x-repo-commit");
            let linked = header("x-linked-etag");
            let location = header("location");
            if (300..400).contains(&status) && linked.is_none() {
                // A renamed repository: the hub points at the new resolve URL.
                let Some(loc) = location else {
                    return Err(Failure::Fatal(self.not_a_hub(&url, "Location")));
                };
                url = join_url(&url, &loc);
                continue;
            }
            let Some(commit) = commit.filter(|c| is_commit(c)) else {
                return Err(Failure::Fatal(self.not_a_hub(&url, "X-Repo-Commit")));
            };
            let Some(etag) = linked.or_else(|| header("etag")).map(|e| normalise_etag(&e)) else {
                return Err(Failure::Fatal(self.not_a_hub(&url, "ETag")));
            };
            if etag.is_empty() || etag.contains(['/', '\\']) || etag.starts_with('.') {
                return Err(Failure::Fatal(self.not_a_hub(&url, "a usable ETag")));
            }
            let size = header("x-linked-size")
                .or_else(|| header("content-length"))
                .and_then(|s| s.parse().ok());
            let url = match location {
                Some(loc) if (300..400).contains(&status) => join_url(&url, &loc),
                _ => url,
            };
            return Ok(Meta { commit, etag, size, url });
        }
        Err(Failure::Fatal(Error::Http {
            status: 310,
            url,
            message: Some("too many redirects".into()),
        }))
    }

    fn not_a_hub(&self, url: &str, header: &'static str) -> Error {
        Error::NotAHub { endpoint: self.endpoint.clone(), url: url.into(), header }
    }

    fn hub_error(
        &self,
        r: &HubRef,
        file: &str,
        url: &str,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    ) -> Error {
        let repo = r.repo.clone();
        let endpoint = self.endpoint.clone();
        match code.as_deref() {
            Some("RepoNotFound" | "RepositoryNotFound") => Error::RepoNotFound { endpoint, repo },
            Some("RevisionNotFound") => {
                Error::RevisionNotFound { repo, revision: r.revision.clone() }
            }
            Some("EntryNotFound") => {
                Error::EntryNotFound { repo, revision: r.revision.clone(), file: file.into() }
            }
            Some("GatedRepo") if self.token.is_some() => Error::GatedDenied { endpoint, repo },
            Some("GatedRepo") => Error::GatedNoToken { endpoint, repo },
            _ if status == 401 => Error::RepoNotFound { endpoint, repo },
            _ => Error::Http { status, url: url.into(), message },
        }
    }

    /// Runs `f` up to `attempts` times while it fails transiently, backing off in between.
    /// Before each retry `on_retry(cause, next attempt, wait)` is told. After the last attempt a
    /// transient failure is returned as such, with its cause.
    fn with_retries<T>(
        &self,
        on_retry: &dyn Fn(&str, u32, Duration),
        mut f: impl FnMut() -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            match f() {
                Err(Failure::Transient(cause)) if attempt < self.attempts => {
                    attempt += 1;
                    on_retry(&cause, attempt, wait);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                other => return other,
            }
        }
    }

    /// Downloads `meta.url` into `blob`, resuming `<blob>.incomplete`, verifying the hash, then
    /// renaming into place. The caller holds the blob's lock.
    fn fetch_blob(
        &self,
        r: &HubRef,
        file: &str,
        meta: &Meta,
        blob: &Path,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let part = blob.with_file_name(format!("{}.incomplete", meta.etag));
        let dir = part.parent().expect("blobs/ has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
        let same_host = host_of(&meta.url) == host_of(&self.endpoint);
        let on_retry = |cause: &str, attempt: u32, wait: Duration| {
            progress.note(&format!(
                "{cause}; retrying {file} in {:.1} s (attempt {attempt} of {})",
                wait.as_secs_f32(),
                self.attempts
            ))
        };
        match self.with_retries(&on_retry, || self.transfer(meta, &part, same_host, file, progress))
        {
            Ok(()) => {}
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(cause)) => {
                let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                return Err(Error::Transfer {
                    repo: r.repo.clone(),
                    file: file.into(),
                    attempts: self.attempts,
                    cause,
                    have,
                });
            }
        }
        if let Some(got) = content_hash(&part, &meta.etag)? {
            if got != meta.etag {
                let _ = std::fs::remove_file(&part);
                return Err(Error::Corrupt {
                    repo: r.repo.clone(),
                    file: file.into(),
                    expected: meta.etag.clone(),
                    got,
                });
            }
        }
        File::open(&part).and_then(|f| f.sync_all()).map_err(|e| Error::io("syncing", &part, e))?;
        std::fs::rename(&part, blob).map_err(|e| Error::io("renaming into place", blob, e))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// One GET, appending to `part` from where it ends.
    fn transfer(
        &self,
        meta: &Meta,
        part: &Path,
        same_host: bool,
        file: &str,
        progress: &dyn Progress,
    ) -> Result<(), Failure> {
        let io = |what, e| Failure::Fatal(Error::io(what, part, e));
        let mut have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        if meta.size.is_some_and(|s| have > s) {
            have = 0;
        }
        if meta.size == Some(have) && have > 0 {
            return Ok(()); // complete but not yet renamed (a crash in between)
        }
        let mut req = self.agent.get(&meta.url);
        if same_host {
            if let Some(t) = &self.token {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
        }
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| Failure::Transient(e.to_string()))?;
        let status = resp.status().as_u16();
        match status {
            206 => {}
            200 => have = 0, // the server ignored the range: start over
            416 => {
                std::fs::remove_file(part).map_err(|e| io("removing", e))?;
                return Err(Failure::Transient(
                    "the partial file did not match the server's".into(),
                ));
            }
            429 | 500.. => {
                return Err(Failure::Transient(format!("HTTP {status} from {}", meta.url)))
            }
            _ => {
                let msg = resp
                    .headers()
                    .get("x-error-message")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                return Err(Failure::Fatal(Error::Http {
                    status,
                    url: meta.url.clone(),
                    message: msg,
                }));
            }
        }
        let mut out = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(have == 0)
            .append(have > 0)
            .open(part)
            .map_err(|e| io("opening", e))?;
        progress.download_start(file, meta.size, have);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let result = loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(Failure::Transient(format!(
                        "the connection broke after {have} bytes ({e})"
                    )))
                }
            };
            if let Err(e) = out.write_all(&buf[..n]) {
                let full =
                    e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull;
                break Err(Failure::Fatal(if full {
                    Error::DiskFull { path: part.into(), have, total: meta.size }
                } else {
                    Error::io("writing", part, e)
                }));
            }
            have += n as u64;
            progress.downloaded(n as u64);
        };
        progress.download_finish();
        if let Err(e) = out.flush() {
            return Err(Failure::Fatal(Error::io("writing", part, e)));
        }
        result?;
        match meta.size {
            Some(s) if have < s => {
                Err(Failure::Transient(format!("the connection closed after {have} of {s} bytes")))
            }
            _ => Ok(()),
        }
    }
}

/// `W/"abc"` → `abc`, as huggingface_hub normalises it.
fn normalise_etag(e: &str) -> String {
    e.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// The hash the etag names, computed over `path`: sha256 for LFS files (64 hex digits), the git
/// blob id for others (40); `None` for an etag of another form (not verifiable).
fn content_hash(path: &Path, etag: &str) -> Result<Option<String>, Error> {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut f = File::open(path).map_err(|e| Error::io("reading", path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut feed = |update: &mut dyn FnMut(&[u8])| -> Result<(), Error> {
        loop {
            let n = f.read(&mut buf).map_err(|e| Error::io("reading", path, e))?;
            if n == 0 {
                return Ok(());
            }
            update(&buf[..n]);
        }
    };
    if etag.len() == 64 && hex(etag) {
        let mut h = sha2::Sha256::new();
        feed(&mut |b| h.update(b))?;
        Ok(Some(format!("{:x}", h.finalize())))
    } else if etag.len() == 40 && hex(etag) {
        let len = std::fs::metadata(path).map_err(|e| Error::io("reading", path, e))?.len();
        let mut h = sha1_smol::Sha1::new();
        h.update(format!("blob {len}\0").as_bytes());
        feed(&mut |b| h.update(b))?;
        Ok(Some(h.digest().to_string()))
    } else {
        Ok(None)
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or("")
}

/// Resolves a `Location` against the URL it answered.
fn join_url(base: &str, loc: &str) -> String {
    if loc.contains("://") {
        return loc.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    let host = rest.split('/').next().unwrap_or("");
    if loc.starts_with('/') {
        format!("{scheme}://{host}{loc}")
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{loc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_and_urls() {
        assert_eq!(normalise_etag("W/\"abc\""), "abc");
        assert_eq!(normalise_etag("\"abc\""), "abc");
        assert_eq!(
            join_url("http://h:1/a/resolve/main/x", "/b/resolve/main/x"),
            "http://h:1/b/resolve/main/x"
        );
        assert_eq!(join_url("http://h:1/a/b", "http://c/d"), "http://c/d");
        assert_eq!(host_of("http://127.0.0.1:80/x"), "127.0.0.1:80");
    }

    #[test]
    fn git_blob_id_and_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello\n").unwrap();
        // `git hash-object` of "hello\n".
        let sha1 = "ce013625030ba8dba906f756967f9e9ca394464a";
        assert_eq!(content_hash(&p, sha1).unwrap().as_deref(), Some(sha1));
        let sha256 = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";
        assert_eq!(content_hash(&p, sha256).unwrap().as_deref(), Some(sha256));
        assert_eq!(content_hash(&p, "xyz").unwrap(), None);
    }
}
