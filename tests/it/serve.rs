//! `irtdb serve`: the API against `irtdb query --json`, concurrency, hostile requests, a writer
//! committing a new index generation, schemathesis fuzzing from the OpenAPI document, and the web
//! page in headless Chromium. Each test starts the real binary on port 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// A generated gallery (`classes × per_class` pictures), indexed with a micro ViT.
/// The shared fixture, indexed (16 dimensions) by [`Gallery::new`].
pub struct Gallery(Fixture);

impl std::ops::Deref for Gallery {
    type Target = Fixture;
    fn deref(&self) -> &Fixture {
        &self.0
    }
}

impl Gallery {
    pub fn new(classes: usize, per_class: usize) -> Self {
        let g = Gallery(Fixture::new(classes, per_class));
        g.index();
        g
    }

    /// An empty gallery folder and the micro ViT; nothing indexed yet.
    pub fn empty() -> Self {
        let f = Fixture::model_only();
        std::fs::create_dir_all(&f.gallery).unwrap();
        Gallery(f)
    }

    pub fn index(&self) -> serde_json::Value {
        let mut c = irtdb();
        c.args(["index", "--json", "--dim", "16", "--db"])
            .arg(&self.db)
            .arg(&self.gallery)
            .arg("--model")
            .arg(&self.model);
        json(&run_expect(&mut c, 0))
    }

    /// `irtdb query --json QUERIES EXTRA...`
    pub fn query(&self, queries: &[&str], extra: &[&str]) -> serde_json::Value {
        let mut c = irtdb();
        c.args(["query", "--json", "--db"]).arg(&self.db).args(queries).args(extra);
        json(&run_expect(&mut c, 0))
    }
}

/// A running `irtdb serve`; stopped (SIGTERM, then killed) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
}

impl Server {
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let mut child = irtdb()
            .args(["serve", "--bind", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn irtdb serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("irtdb serve did not say where it listens: {line:?}")
            })
            .to_string();
        let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{url}");
        Server { child, addr, url }
    }

    pub fn get(&self, target: &str) -> Reply {
        request(self.addr, "GET", target, &[], &[])
    }

    pub fn post(&self, target: &str, content_type: &str, body: &[u8]) -> Reply {
        request(self.addr, "POST", target, &[("Content-Type", content_type)], body)
    }

    /// SIGTERM; the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < Duration::from_secs(20), "irtdb serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{} is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection, the target sent exactly as given (no client-side
/// normalisation of `..` or percent escapes, so the server sees what an attacker would send).
pub fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading all of a large body; a write error then is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        let (mut out, mut rest) = (Vec::new(), &body[..]);
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
            let size = usize::from_str_radix(
                std::str::from_utf8(&rest[..nl]).unwrap().split(';').next().unwrap().trim(),
                16,
            )
            .unwrap();
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
        body = out;
    }
    Reply { status, headers, body }
}

/// `(id, rank, score, path, label)` of each hit.
fn hit_list(v: &serde_json::Value) -> Vec<(i64, u64, f64, String, Option<String>)> {
    v["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("no hits in {v}"))
        .iter()
        .map(|h| {
            (
                h["id"].as_i64().unwrap(),
                h["rank"].as_u64().unwrap(),
                h["score"].as_f64().unwrap(),
                h["path"].as_str().unwrap().to_string(),
                h["label"].as_str().map(String::from),
            )
        })
        .collect()
}

/// Same ids, ranks, paths and labels; scores equal (both are the same f32 printed by serde).
fn assert_same_hits(api: &serde_json::Value, cli: &serde_json::Value, what: &str) {
    let (a, c) = (hit_list(api), hit_list(cli));
    assert!(!a.is_empty(), "{what}: no hits");
    assert_eq!(a, c, "{what}: serve and `irtdb query --json` differ");
}

fn multipart(field: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "irtdb-test-boundary-7e1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"q.jpg\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[test]
fn api_answers_equal_irtdb_query() {
    let g = Gallery::new(5, 8);
    let new_image = g.dir.join("new.png");
    write_picture(&new_image, 80, 60, 4242);
    let server = Server::start(&g.db, &[]);

    // An image from outside the collection, uploaded raw and as multipart.
    let bytes = std::fs::read(&new_image).unwrap();
    let cli = g.query(&[new_image.to_str().unwrap()], &["--k", "7"]);
    let raw = server.post("/api/query?k=7", "image/png", &bytes);
    assert_eq!(raw.status, 200, "{}", String::from_utf8_lossy(&raw.body));
    assert_same_hits(&raw.json(), &cli["results"][0], "raw upload");
    let (ct, body) = multipart("image", &bytes);
    let form = server.post("/api/query?k=7", &ct, &body);
    assert_eq!(form.status, 200, "{}", String::from_utf8_lossy(&form.body));
    assert_same_hits(&form.json(), &cli["results"][0], "multipart upload");

    // A collection file uploaded (embedded again) finds itself first, as the CLI does for the
    // same bytes given as a file outside the collection.
    let copy = g.dir.join("copy.jpg");
    std::fs::copy(g.gallery.join("class02/003.jpg"), &copy).unwrap();
    let cli = g.query(&[copy.to_str().unwrap()], &["--k", "5", "--exact"]);
    let api = server.post("/api/query?k=5&exact=1", "image/jpeg", &std::fs::read(&copy).unwrap());
    assert_same_hits(&api.json(), &cli["results"][0], "exact upload");
    assert_eq!(api.json()["hits"][0]["path"], "class02/003.jpg");
    assert_eq!(api.json()["method"], "exact");

    // By id, with and without exact search and with an explicit ef.
    let id = cli["results"][0]["hits"][0]["id"].as_i64().unwrap();
    for (target, extra) in [
        (format!("/api/query?id={id}&k=10"), vec!["--k", "10"]),
        (format!("/api/query?id={id}&k=4&exact=1"), vec!["--k", "4", "--exact"]),
        (format!("/api/query?id={id}&k=6&ef=80"), vec!["--k", "6", "--ef", "80"]),
    ] {
        let q = format!("id:{id}");
        let cli = g.query(&[&q], &extra);
        let api = server.get(&target);
        assert_eq!(api.status, 200, "{target}");
        assert_same_hits(&api.json(), &cli["results"][0], &target);
        assert_eq!(api.json()["collection_id"], id);
    }

    // Files and thumbnails by id.
    let file = server.get(&format!("/api/images/{id}/file"));
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-type"), Some("image/jpeg"));
    assert_eq!(file.body, std::fs::read(g.gallery.join("class02/003.jpg")).unwrap());
    let thumb = server.get(&format!("/api/images/{id}/thumbnail?size=32"));
    assert_eq!(thumb.status, 200);
    let t = image::load_from_memory(&thumb.body).unwrap();
    assert_eq!((t.width(), t.height()), (32, 24));

    // Info, the OpenAPI document, the page and its assets.
    let info = server.get("/api/info").json();
    assert_eq!(info["images"], 40);
    assert_eq!(info["serving"]["random_weights"], true);
    let doc = server.get("/api/openapi.json").json();
    for p in ["/api/query", "/api/images/{id}/thumbnail", "/api/images/{id}/file", "/api/info"] {
        assert!(doc["paths"][p].is_object(), "openapi.json lacks {p}");
    }
    let page = server.get("/");
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<input type=\"file\"") && !html.contains("http"), "self-contained");
    assert_eq!(server.get("/app.js").status, 200);
    assert_eq!(server.get("/style.css").status, 200);
    assert!(server.stop().success(), "SIGTERM stops serve with status 0");
}

#[test]
fn sixty_four_concurrent_requests() {
    let g = Gallery::new(4, 8);
    let server = Server::start(&g.db, &["--workers", "2"]);
    let files: Vec<PathBuf> =
        (0..4).map(|i| g.gallery.join(format!("class0{i}/00{i}.jpg"))).collect();
    let copies: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let c = g.dir.join(format!("q{i}.jpg"));
            std::fs::copy(f, &c).unwrap();
            c
        })
        .collect();
    let args: Vec<&str> = copies.iter().map(|p| p.to_str().unwrap()).collect();
    let cli = g.query(&args, &["--k", "5"]);
    let bodies: Vec<Vec<u8>> = copies.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let addr = server.addr;
    let answers: Vec<(usize, Reply)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let body = &bodies[i % 4];
                s.spawn(move || {
                    let r = if i % 8 == 7 {
                        // Some by id among the uploads.
                        request(addr, "GET", "/api/query?id=1&k=5", &[], &[])
                    } else {
                        request(
                            addr,
                            "POST",
                            "/api/query?k=5",
                            &[("Content-Type", "image/jpeg")],
                            body,
                        )
                    };
                    (i, r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let by_id = g.query(&["id:1"], &["--k", "5"]);
    for (i, r) in answers {
        assert_eq!(r.status, 200, "request {i}: {}", String::from_utf8_lossy(&r.body));
        let expected = if i % 8 == 7 { &by_id["results"][0] } else { &cli["results"][i % 4] };
        assert_same_hits(&r.json(), expected, &format!("concurrent request {i}"));
    }
}

/// A PNG that declares `w` × `h` pixels but holds almost nothing: a decompression bomb's header.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    chunk(&mut png, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (a real bomb would be a long run of them).
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn bad_requests_get_4xx_json_and_the_server_keeps_serving() {
    let g = Gallery::new(3, 8);
    // A file outside the collection, and an indexed file replaced by a symlink to it.
    let outside = g.dir.join("secret.jpg");
    write_picture(&outside, 64, 48, 999);
    let linked = g.gallery.join("class01/002.jpg");
    let linked_id = g.query(&["class01/002.jpg"], &["--k", "1"])["results"][0]["collection_id"]
        .as_i64()
        .unwrap();
    std::fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink(&outside, &linked).unwrap();
    let server = Server::start(&g.db, &["--max-upload-mib", "20"]);
    let good = std::fs::read(g.gallery.join("class00/000.jpg")).unwrap();
    let healthy = |server: &Server| {
        let r = server.post("/api/query?k=3", "image/jpeg", &good);
        assert_eq!(
            r.status,
            200,
            "the server stopped serving: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["hits"][0]["path"], "class00/000.jpg");
    };

    let big = vec![0xffu8; 30 << 20];
    let cases: Vec<(&str, Reply, u16)> = vec![
        ("not an image", server.post("/api/query", "image/jpeg", b"hello, not a picture"), 400),
        ("empty body", server.post("/api/query", "image/png", b""), 400),
        ("truncated JPEG", server.post("/api/query", "image/jpeg", &good[..good.len() / 3]), 400),
        ("30 MiB upload", server.post("/api/query", "image/jpeg", &big), 413),
        ("bomb", server.post("/api/query", "image/png", &bomb_png(100_000, 100_000)), 413),
        ("wrong content type", server.post("/api/query", "text/plain", &good), 415),
        ("k too large", server.post("/api/query?k=1001", "image/jpeg", &good), 400),
        ("k zero", server.get("/api/query?id=1&k=0"), 400),
        ("k not a number", server.get("/api/query?id=1&k=ten"), 400),
        ("ef too large", server.get("/api/query?id=1&ef=99999999"), 400),
        ("exact not a flag", server.get("/api/query?id=1&exact=maybe"), 400),
        ("no id", server.get("/api/query?k=3"), 400),
        ("unknown id", server.get("/api/query?id=987654"), 404),
        ("unknown id file", server.get("/api/images/987654/file"), 404),
        ("unknown id thumbnail", server.get("/api/images/987654/thumbnail"), 404),
        ("negative id", server.get("/api/images/-1/file"), 404),
        ("huge id", server.get("/api/images/99999999999999999999999/file"), 400),
        ("thumbnail size", server.get("/api/images/1/thumbnail?size=100000"), 400),
        ("threshold", server.get("/api/duplicates?threshold=2"), 400),
        ("threshold text", server.get("/api/duplicates?threshold=../../etc"), 400),
        ("unknown route", server.get("/api/nothing"), 404),
        ("wrong method", server.post("/api/info", "image/jpeg", &good), 405),
        (
            "symlink out of the root: file",
            server.get(&format!("/api/images/{linked_id}/file")),
            403,
        ),
        (
            "symlink out of the root: thumbnail",
            server.get(&format!("/api/images/{linked_id}/thumbnail")),
            403,
        ),
    ];
    for (what, r, want) in &cases {
        assert_eq!(r.status, *want, "{what}: {}", String::from_utf8_lossy(&r.body));
        let j = r.json();
        let msg = j["error"].as_str().unwrap_or_else(|| panic!("{what}: no error message: {j}"));
        assert!(msg.len() > 10 && j["status"] == *want, "{what}: {j}");
    }
    // The bomb's answer says why.
    assert!(cases[4].1.json()["error"].as_str().unwrap().contains("100000×100000"));
    healthy(&server);

    // Path traversal in every route: whatever a client puts in the path, no file outside the
    // collection comes back (and only ids name files at all).
    let secret = std::fs::read(&outside).unwrap();
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    let outside_abs = outside.to_str().unwrap().to_string();
    let enc = outside_abs.replace('/', "%2f");
    let targets = [
        "/../../../../etc/passwd".to_string(),
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/..%2f..%2f..%2fetc%2fpasswd".to_string(),
        "/app.js/../../etc/passwd".to_string(),
        "/api/images/../../../../etc/passwd/file".to_string(),
        "/api/images/%2e%2e/file".to_string(),
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/file".to_string(),
        "/api/images/..%2f..%2fsecret.jpg/thumbnail".to_string(),
        "/api/images//etc/passwd/file".to_string(),
        format!("/api/images/{enc}/file"),
        format!("/api/images/{enc}/thumbnail"),
        format!("/api/images/1/file/../../../{enc}"),
        format!("/api/images/1/../../..{outside_abs}"),
        format!("/{enc}"),
        outside_abs.clone(),
        "/api/query?id=..%2f..%2fetc%2fpasswd".to_string(),
        format!("/api/query?id={enc}"),
        "/api/duplicates?threshold=%2e%2e%2fetc%2fpasswd".to_string(),
        "/api/openapi.json/../../../etc/passwd".to_string(),
        "/api/info/%2e%2e/%2e%2e/etc/passwd".to_string(),
    ];
    for t in &targets {
        let r = server.get(t);
        assert!(
            (400..500).contains(&r.status),
            "{t}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert!(r.json()["error"].is_string(), "{t}: not a JSON error");
        assert!(
            r.body != secret && (passwd.is_empty() || !r.body.starts_with(&passwd[..20])),
            "{t}"
        );
    }
    // The same through POST.
    for t in ["/api/images/%2e%2e/file", "/api/query/..%2f..%2fetc%2fpasswd"] {
        let r = server.post(t, "image/jpeg", &good);
        assert!((400..500).contains(&r.status), "POST {t}: {}", r.status);
    }
    healthy(&server);
}

#[test]
fn a_new_generation_is_picked_up_while_serving() {
    let g = Gallery::new(3, 8);
    let server = Server::start(&g.db, &[]);
    let before = server.get("/api/query?id=1&k=3").json();
    let gen_before = before["generation"].as_i64().unwrap();

    // Queries keep coming while `irtdb index` embeds new images and commits a new generation.
    let new_dir = g.gallery.join("class09");
    std::fs::create_dir_all(&new_dir).unwrap();
    for i in 0..8 {
        write_picture(&new_dir.join(format!("{i:03}.jpg")), 64, 48, 50_000 + i);
    }
    let probe = std::fs::read(new_dir.join("005.jpg")).unwrap();
    let mut index = irtdb();
    index
        .args(["index", "--json", "--dim", "16", "--db"])
        .arg(&g.db)
        .arg(&g.gallery)
        .arg("--model")
        .arg(&g.model)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut child = index.spawn().unwrap();
    let mut answered = 0;
    let mut generations = std::collections::BTreeSet::new();
    let status = loop {
        let r = server.post("/api/query?k=3", "image/jpeg", &probe);
        assert_eq!(r.status, 200, "during index: {}", String::from_utf8_lossy(&r.body));
        generations.insert(r.json()["generation"].as_i64().unwrap());
        answered += 1;
        if answered > 3 {
            // Give the writer the CPU too (the machine may be small).
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if answered > 10_000 {
            panic!("index never finished");
        }
    };
    assert!(status.success(), "index failed: {status}");
    // The first request after the commit answers from the new generation, with the new images.
    let after = server.post("/api/query?k=3", "image/jpeg", &probe).json();
    let gen_after = after["generation"].as_i64().unwrap();
    assert!(gen_after > gen_before, "generation {gen_before} → {gen_after}");
    assert_eq!(after["hits"][0]["path"], "class09/005.jpg", "{after}");
    let copy = g.dir.join("probe.jpg");
    std::fs::write(&copy, &probe).unwrap();
    let cli = g.query(&[copy.to_str().unwrap()], &["--k", "3"]);
    assert_same_hits(&after, &cli["results"][0], "after the new generation");
    eprintln!("{answered} queries answered during the index run, generations {generations:?}");
}

/// Under the test command (IRTDB_TEST_STRICT=1) a missing peer fails; otherwise it skips.
fn strict() -> bool {
    std::env::var_os("IRTDB_TEST_STRICT").is_some_and(|v| v == "1")
}

#[test]
fn the_api_survives_schemathesis() {
    let Some(python) = test_python_with("schemathesis") else { return };
    let g = Gallery::new(3, 8);
    let server = Server::start(&g.db, &[]);
    let report = g.dir.join("schemathesis");
    // Bounded: a fixed number of examples per operation and a wall-clock cap.
    let mut child = Command::new(&python)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/api/openapi.json", server.url))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            "--report-dir",
        ])
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "")
        // Its example cache goes to the working folder: keep it out of the repository.
        .current_dir(&g.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(150) {
            let _ = child.kill();
            panic!("schemathesis ran past 150 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "schemathesis found problems:\n{out}\n{err}");
    // Still serving.
    assert_eq!(server.get("/api/query?id=1&k=2").status, 200);
    eprintln!(
        "schemathesis: {:.1} s\n{}",
        t.elapsed().as_secs_f64(),
        out.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );
}

/// `node` and playwright-core (tests/web/node_modules, `npm ci` by scripts/setup-test-env.sh)
/// driving Debian's chromium; None (skip) when missing outside the test command.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = std::env::var_os("IRTDB_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let web = root().join("tests/web");
    let node_ok = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    let pw = web.join("node_modules/playwright-core/package.json").is_file();
    if node_ok && pw && chromium.is_file() {
        return Some((chromium, web));
    }
    let why = format!(
        "browser test needs node ({node_ok}), playwright-core in tests/web ({pw}) and {} ({}): \
         run scripts/setup-test-env.sh",
        chromium.display(),
        chromium.is_file()
    );
    assert!(!strict(), "{why}");
    eprintln!("skipped: {why}");
    None
}

#[test]
fn the_page_works_in_headless_chromium() {
    let Some((chromium, web)) = browser() else { return };
    let g = Gallery::new(4, 6);
    // Planted exact copies, for the duplicates view.
    std::fs::copy(g.gallery.join("class01/001.jpg"), g.gallery.join("class01/copy.jpg")).unwrap();
    g.index();
    let query = g.dir.join("query.jpg");
    std::fs::copy(g.gallery.join("class02/004.jpg"), &query).unwrap();
    let cli = g.query(&[query.to_str().unwrap()], &["--k", "24"]);
    let expected: Vec<i64> = hit_list(&cli["results"][0]).iter().map(|h| h.0).collect();
    let first = expected[0];
    let by_first = g.query(&[&format!("id:{first}")], &["--k", "24"]);
    let expected_click: Vec<i64> = hit_list(&by_first["results"][0]).iter().map(|h| h.0).collect();
    let dups = {
        let mut c = irtdb();
        c.args(["dups", "--json", "--db"]).arg(&g.db);
        json(&run_expect(&mut c, 0))
    };
    let server = Server::start(&g.db, &[]);
    let shots = g.dir.join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new("node")
        .arg(web.join("page.mjs"))
        .arg(&server.url)
        .arg(&query)
        .arg(&chromium)
        .arg(&shots)
        .current_dir(&web)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "page.mjs failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("page.mjs printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    });
    let ids = |v: &serde_json::Value| -> Vec<i64> {
        v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
    };
    assert_eq!(ids(&r["upload"]), expected, "the grid after the upload");
    assert_eq!(r["thumbnails_loaded"], expected.len(), "every thumbnail decoded");
    assert_eq!(ids(&r["clicked"]), expected_click, "the grid after clicking the first result");
    assert_eq!(r["focused_first"], true, "after a search the first result has the focus");
    assert_eq!(ids(&r["keyboard"]), expected_click, "Enter on a focused result searches by it");
    let planted: Vec<Vec<i64>> = dups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            g["images"].as_array().unwrap().iter().map(|m| m["id"].as_i64().unwrap()).collect()
        })
        .collect();
    let shown: Vec<Vec<i64>> = r["groups"].as_array().unwrap().iter().map(ids).collect();
    assert!(!planted.is_empty());
    assert_eq!(shown, planted, "the duplicates view shows `irtdb dups` groups");
    assert!(r["info_text"].as_str().unwrap().contains("25"), "info shows the image count: {r}");
    assert_eq!(r["phone_overflow"], false, "no sideways scrolling at phone width");
    assert_eq!(r["console_errors"].as_array().unwrap().len(), 0, "{r}");
}
