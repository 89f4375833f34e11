//! A stand-in for the Hugging Face hub on loopback, answering as the hub does: `resolve` URLs
//! give small files `200` with `ETag` (the git blob id) and `X-Repo-Commit`, LFS files (weights)
//! a `302` to a second loopback address acting as the CDN with `X-Linked-Etag` (sha256),
//! `X-Linked-Size` and `X-Repo-Commit`; errors carry `X-Error-Code`. The CDN honours `Range`
//! and can be told to cut a transfer, corrupt it, or go slowly. Every CDN request is logged.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

#[derive(Default)]
pub struct Repo {
    pub files: HashMap<String, Vec<u8>>,
    pub commit: String,
    /// Branches and tags → commit (`main` always).
    pub revisions: HashMap<String, String>,
    /// Gated: only this bearer token may read.
    pub token: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub repos: HashMap<String, Repo>,
    blobs: HashMap<String, Vec<u8>>,
    /// sha256 → bytes to send before closing the connection (once).
    pub cut_after: HashMap<String, usize>,
    pub corrupt: HashSet<String>,
    /// Pause per 64 KiB chunk on the CDN.
    pub slow: Option<Duration>,
    /// `(sha256, Range header)` of every CDN GET.
    pub cdn_gets: Vec<(String, Option<String>)>,
    /// Every hub request line.
    pub hub_requests: Vec<String>,
}

pub struct Hub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
}

pub fn sha256_hex(b: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(b))
}

pub fn git_blob_id(b: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    h.digest().to_string()
}

fn is_lfs(file: &str) -> bool {
    file.ends_with(".safetensors") || file.ends_with(".onnx")
}

impl Hub {
    /// Starts the hub on 127.0.0.1 and its CDN on 127.0.0.2 (both loopback), each on its own
    /// port, serving until the test process ends.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let hub = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn = TcpListener::bind("127.0.0.2:0").unwrap();
        let cdn_url = format!("http://{}", cdn.local_addr().unwrap());
        let url = format!("http://{}", hub.local_addr().unwrap());
        for (listener, is_cdn) in [(hub, false), (cdn, true)] {
            let state = state.clone();
            let cdn_url = cdn_url.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let state = state.clone();
                    let cdn_url = cdn_url.clone();
                    std::thread::spawn(move || {
                        let _ = serve(stream, &state, is_cdn, &cdn_url);
                    });
                }
            });
        }
        Self { url, state }
    }

    /// Adds (or replaces) a repository at a fresh commit; returns the commit.
    pub fn put_repo(&self, repo: &str, files: Vec<(&str, Vec<u8>)>, token: Option<&str>) -> String {
        let mut st = self.state.lock().unwrap();
        let mut all = Vec::new();
        for (_, b) in &files {
            all.extend_from_slice(b);
        }
        all.extend_from_slice(repo.as_bytes());
        let commit = git_blob_id(&all);
        let mut r =
            Repo { commit: commit.clone(), token: token.map(str::to_string), ..Default::default() };
        r.revisions.insert("main".into(), commit.clone());
        for (name, bytes) in files {
            if is_lfs(name) {
                st.blobs.insert(sha256_hex(&bytes), bytes.clone());
            }
            r.files.insert(name.to_string(), bytes);
        }
        st.repos.insert(repo.to_string(), r);
        commit
    }

    pub fn cdn_gets(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().cdn_gets.clone()
    }
}

struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    Some(Request { method, path, headers })
}

fn respond(
    mut s: &TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    head: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-length")) {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    s.write_all(out.as_bytes())?;
    if !head {
        s.write_all(body)?;
    }
    s.flush()
}

fn error(
    s: &TcpStream,
    status: &str,
    code: &str,
    message: &str,
    head: bool,
) -> std::io::Result<()> {
    let body = format!("{{\"error\":\"{message}\"}}");
    respond(
        s,
        status,
        &[
            ("X-Error-Code", code.into()),
            ("X-Error-Message", message.into()),
            ("Content-Type", "application/json".into()),
        ],
        body.as_bytes(),
        head,
    )
}

fn serve(
    stream: TcpStream,
    state: &Mutex<State>,
    is_cdn: bool,
    cdn_url: &str,
) -> std::io::Result<()> {
    let Some(req) = read_request(&stream) else { return Ok(()) };
    let head = req.method == "HEAD";
    if is_cdn {
        return serve_cdn(&stream, state, &req);
    }
    state.lock().unwrap().hub_requests.push(format!("{} {}", req.method, req.path));
    // /ORG/NAME/resolve/REV/FILE...
    let parts: Vec<&str> = req.path.trim_start_matches('/').splitn(5, '/').collect();
    if parts.len() < 5 || parts[2] != "resolve" {
        return error(&stream, "404 Not Found", "NotFound", "no such route", head);
    }
    let (repo, rev, file) = (format!("{}/{}", parts[0], parts[1]), parts[3], parts[4]);
    let st = state.lock().unwrap();
    let Some(r) = st.repos.get(&repo) else {
        return error(&stream, "401 Unauthorized", "RepoNotFound", "Repository not found", head);
    };
    if let Some(t) = &r.token {
        match req.headers.get("authorization") {
            None => {
                return error(
                    &stream,
                    "401 Unauthorized",
                    "GatedRepo",
                    "Access to this model is restricted",
                    head,
                )
            }
            Some(a) if a != &format!("Bearer {t}") => {
                return error(
                    &stream,
                    "403 Forbidden",
                    "GatedRepo",
                    "Access to this model is restricted",
                    head,
                )
            }
            Some(_) => {}
        }
    }
    if rev != r.commit && !r.revisions.contains_key(rev) {
        return error(&stream, "404 Not Found", "RevisionNotFound", "Invalid rev id", head);
    }
    let Some(bytes) = r.files.get(file) else {
        return error(&stream, "404 Not Found", "EntryNotFound", "Entry not found", head);
    };
    let commit = r.commit.clone();
    if is_lfs(file) {
        let sha = sha256_hex(bytes);
        let hdrs = [
            ("Location", format!("{cdn_url}/blobs/{sha}")),
            ("X-Linked-Etag", format!("\"{sha}\"")),
            ("X-Linked-Size", bytes.len().to_string()),
            ("X-Repo-Commit", commit),
            ("ETag", format!("\"{sha}\"")),
        ];
        drop(st);
        respond(&stream, "302 Found", &hdrs, b"", head)
    } else {
        let hdrs = [("ETag", format!("\"{}\"", git_blob_id(bytes))), ("X-Repo-Commit", commit)];
        let bytes = bytes.clone();
        drop(st);
        respond(&stream, "200 OK", &hdrs, &bytes, head)
    }
}

fn serve_cdn(stream: &TcpStream, state: &Mutex<State>, req: &Request) -> std::io::Result<()> {
    let head = req.method == "HEAD";
    let sha = req.path.trim_start_matches("/blobs/").to_string();
    let range = req.headers.get("range").cloned();
    let (mut bytes, cut, slow) = {
        let mut st = state.lock().unwrap();
        if !head {
            st.cdn_gets.push((sha.clone(), range.clone()));
        }
        let Some(b) = st.blobs.get(&sha).cloned() else {
            drop(st);
            return respond(stream, "404 Not Found", &[], b"no such blob", head);
        };
        let cut = if head { None } else { st.cut_after.remove(&sha) };
        let mut b = b;
        if st.corrupt.contains(&sha) {
            let mid = b.len() / 2;
            b[mid] ^= 0x55;
        }
        (b, cut, st.slow)
    };
    let total = bytes.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let partial = range.is_some();
    if start > total {
        return respond(stream, "416 Range Not Satisfiable", &[], b"", head);
    }
    bytes.drain(..start);
    let mut hdrs =
        vec![("Content-Length", bytes.len().to_string()), ("Accept-Ranges", "bytes".into())];
    if partial {
        hdrs.push(("Content-Range", format!("bytes {start}-{}/{total}", total.saturating_sub(1))));
    }
    let status = if partial { "206 Partial Content" } else { "200 OK" };
    let mut s = stream;
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in &hdrs {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    s.write_all(out.as_bytes())?;
    if head {
        return Ok(());
    }
    let send = cut.map_or(bytes.len(), |c| c.min(bytes.len()));
    for chunk in bytes[..send].chunks(1 << 16) {
        s.write_all(chunk)?;
        if let Some(d) = slow {
            std::thread::sleep(d);
        }
    }
    s.flush()?;
    if cut.is_some() {
        // Drop the connection mid-file, as a flaky network does.
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    Ok(())
}
