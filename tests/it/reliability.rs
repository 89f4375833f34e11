//! Reliability: the things that go wrong in real use, provoked on purpose and counted.
//!
//! Why this module exists: the README promises that indexing is crash-safe and incremental, that
//! a broken file costs that file only, that queries read while an index commits and see whole
//! batches, that one writer runs at a time, and that a damaged or foreign database is refused
//! with a message that says so. Those promises only hold if they are tried where they break:
//! a process killed with SIGKILL at arbitrary moments, galleries full of hostile files, readers
//! racing a writer, a full disk, garbage in the database file. Each test below does that, on
//! generated data, through the real binary and the real ort plugin, and checks the invariants
//! after every attempt:
//!
//! - the SQLite file passes `PRAGMA integrity_check` and `foreign_key_check`;
//! - every `ok` image has exactly one descriptor, failed images none, and no descriptor is
//!   orphaned;
//! - the current index generation's files all exist and load (they are the previous or the new
//!   generation), or there is no generation yet;
//! - a later complete run holds exactly the gallery's images.
//!
//! Timing-dependent tests use a seeded RNG; the seed is printed, and `IRTDB_RELIABILITY_SEED=N`
//! replays a run. Every test prints a small table of what it tried, for the report.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::util::*;

const W: u32 = PICTURE_W;
const H: u32 = PICTURE_H;

fn seed() -> u64 {
    let seed = std::env::var("IRTDB_RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1e4e_09a6);
    eprintln!("reliability seed {seed} (replay with IRTDB_RELIABILITY_SEED={seed})");
    seed
}

/// The shared fixture, with this module's commands.
type Setup = Fixture;

impl Fixture {
    /// `irtdb index --db <db> --batch 8 <gallery> --model <model> [--dim 16] EXTRA...`
    fn index_cmd(&self, extra: &[&str]) -> Command {
        let mut c = self.cmd(&["index", "--batch", "8"]);
        c.arg(&self.gallery).arg("--model").arg(&self.model).args(extra);
        if !extra.contains(&"--dim") {
            c.args(["--dim", "16"]);
        }
        c
    }

    /// Removes the database and everything beside it that belongs to it (WAL, lock, index files).
    fn remove_db(&self) {
        let name = self.db.file_name().unwrap().to_str().unwrap().to_string();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let e = e.unwrap();
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(&name) || n.starts_with(&format!(".{name}")) {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
}

/// Relative paths of the regular image files under `root`, as `irtdb index` stores them.
fn gallery_files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in walk(root) {
        if e.is_file() && irtdb_image::has_image_extension(&e) {
            out.insert(e.strip_prefix(root).unwrap().to_str().unwrap().to_string());
        }
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What a database holds, after its invariants were checked.
#[derive(Debug, Default, Clone, PartialEq)]
struct Snapshot {
    exists: bool,
    has_model: bool,
    ok: i64,
    failed: i64,
    /// Count of the current generation, if there is one.
    generation: Option<(i64, usize)>,
    /// Files beside the database that no generation references (leftovers of a killed save).
    stray_files: usize,
}

/// Checks every invariant a crash must not break (see the module docs) and returns what is
/// there. Panics with the violation otherwise.
fn check_database(db: &Path) -> Snapshot {
    if !db.exists() {
        return Snapshot::default();
    }
    let store = irtdb_store::Store::open_existing(db)
        .unwrap_or_else(|e| panic!("the database no longer opens: {e}"));
    store.integrity_check().unwrap_or_else(|e| panic!("integrity check: {e}"));
    let c = store.connection();
    let count = |sql: &str| -> i64 {
        c.query_row(sql, [], |r| r.get(0)).unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    let ok = count("SELECT count(*) FROM images WHERE status = 'ok'");
    let failed = count("SELECT count(*) FROM images WHERE status = 'failed'");
    let descriptors = count("SELECT count(*) FROM descriptors");
    let orphans =
        count("SELECT count(*) FROM descriptors WHERE image_id NOT IN (SELECT id FROM images)");
    let ok_without = count(
        "SELECT count(*) FROM images i WHERE i.status = 'ok' AND \
         (SELECT count(*) FROM descriptors d WHERE d.image_id = i.id) <> 1",
    );
    let failed_with = count(
        "SELECT count(*) FROM descriptors d JOIN images i ON i.id = d.image_id \
         WHERE i.status <> 'ok'",
    );
    let duplicate_paths =
        count("SELECT count(*) FROM (SELECT path FROM images GROUP BY path HAVING count(*) > 1)");
    let currents = count("SELECT count(*) FROM index_generations WHERE current = 1");
    assert_eq!(orphans, 0, "orphaned descriptors");
    assert_eq!(ok_without, 0, "ok images without exactly one descriptor");
    assert_eq!(failed_with, 0, "failed images with a descriptor");
    assert_eq!(descriptors, ok, "descriptors ≠ ok images");
    assert_eq!(duplicate_paths, 0, "duplicated image paths");
    assert!(currents <= 1, "{currents} current generations");

    let models = store.models().unwrap();
    let mut snap =
        Snapshot { exists: true, has_model: !models.is_empty(), ok, failed, ..Default::default() };
    let mut referenced = BTreeSet::new();
    if let Some(m) = models.first() {
        for g in store.generations(m.id).unwrap() {
            referenced.extend(g.files.iter().cloned());
        }
        if let Some(g) = store.current_generation(m.id).unwrap() {
            let missing: Vec<&String> =
                g.files.iter().filter(|f| !store.dir().join(f).is_file()).collect();
            assert!(missing.is_empty(), "generation {} lacks its files {missing:?}", g.id);
            let basename = irtdb_engine::collection::hnsw_basename(&g).unwrap();
            let index = irtdb_index::HnswIndex::load(store.dir(), &basename)
                .unwrap_or_else(|e| panic!("generation {} does not load: {e}", g.id));
            assert_eq!(index.len(), g.count, "generation {} holds another count", g.id);
            snap.generation = Some((g.id, g.count));
        }
    }
    let name = db.file_name().unwrap().to_str().unwrap();
    for e in std::fs::read_dir(store.dir()).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        let index_file =
            n.starts_with(&format!("{name}.hnsw-")) || n.starts_with(&format!(".{name}.hnsw-"));
        if index_file && !referenced.contains(&n) {
            snap.stray_files += 1;
        }
    }
    snap
}

/// Spawns `cmd` with stderr into a file.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    cmd.stdout(Stdio::null()).stderr(Stdio::from(f)).spawn().expect("spawn irtdb")
}

/// A child whose stderr lines arrive, time-stamped, on a channel as it prints them.
struct Watched {
    child: Child,
    lines: std::sync::mpsc::Receiver<(String, Instant)>,
    seen: Vec<String>,
}

impl Watched {
    fn spawn(cmd: &mut Command) -> Self {
        let mut child =
            cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn irtdb");
        let (tx, lines) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send((line, Instant::now()));
            }
        });
        Watched { child, lines, seen: Vec::new() }
    }

    /// Waits until a line starting with `prefix` appears; `None` if the process ends first.
    fn wait_for(&mut self, prefix: &str) -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok((line, at)) => {
                    let hit = line.starts_with(prefix);
                    self.seen.push(line);
                    if hit {
                        return Some(at);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        panic!("no '{prefix}' within a minute: {:?}", self.seen);
    }

    /// Kills the process (SIGKILL) unless it has ended; returns its stage at the kill, from the
    /// last message it printed, or "completed" if it had finished (successfully: asserted).
    fn kill(mut self) -> String {
        let done = self.child.try_wait().unwrap();
        if done.is_none() {
            self.child.kill().unwrap();
        }
        let status = self.child.wait().unwrap();
        self.seen.extend(self.lines.iter().map(|(l, _)| l));
        if done.is_some() || status.success() {
            // (It may also have finished between `try_wait` and the kill.)
            assert!(status.success(), "the run failed by itself: {:?}", self.seen);
            return "completed".into();
        }
        let line =
            self.seen.iter().rev().find(|l| !l.trim().is_empty()).map(String::as_str).unwrap_or("");
        for (prefix, stage) in [
            ("loading model", "model"),
            ("scanning", "scan"),
            ("hashing", "hash+embed"),
            ("fitting PCA", "pca"),
            ("building HNSW", "hnsw"),
            ("updating the index", "update"),
        ] {
            if line.starts_with(prefix) {
                return stage.into();
            }
        }
        if line.is_empty() {
            "start".into()
        } else {
            format!("other: {line}")
        }
    }
}

/// Runs a complete index with stderr piped and returns when each stage began (and the end).
fn timed_run(cmd: &mut Command) -> Vec<(String, Duration)> {
    let t0 = Instant::now();
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stages = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        stages.push((line, t0.elapsed()));
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "timing run failed: {stages:?}");
    stages.push(("end".into(), t0.elapsed()));
    stages
}

fn stage_time(stages: &[(String, Duration)], prefix: &str) -> Duration {
    stages.iter().find(|(l, _)| l.starts_with(prefix)).map(|s| s.1).unwrap_or_else(|| {
        panic!("no stage '{prefix}' in {stages:?}");
    })
}

fn rand_between(rng: &mut StdRng, a: Duration, b: Duration) -> Duration {
    let (a, b) = (a.as_micros() as u64, b.as_micros().max(a.as_micros() + 1) as u64);
    Duration::from_micros(rng.random_range(a..b))
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

// ----- 1. crash safety ---------------------------------------------------------------------------

#[test]
fn index_killed_at_random_moments_never_corrupts_and_resumes() {
    let s = Setup::new(6, 20); // 120 images, batches of 8
    let gallery_size = gallery_files(&s.gallery).len();
    let mut rng = StdRng::seed_from_u64(seed());

    // A complete run, timed stage by stage: how long each stage lasts here.
    let stages = timed_run(&mut s.index_cmd(&[]));
    let t = |prefix| stage_time(&stages, prefix);
    let d_start = t("loading model");
    let d_model = t("scanning") - t("loading model");
    let d_embed = t("fitting PCA") - t("hashing");
    let d_tail = t("end") - t("fitting PCA");
    eprintln!(
        "timing run (ms): {:?}",
        stages
            .iter()
            .map(|(l, t)| (l.split(' ').next().unwrap(), t.as_millis()))
            .collect::<Vec<_>>()
    );
    check_database(&s.db);

    // Each kill is aimed at a stage: it waits for the stage's message on stderr, then a random
    // part of the stage's duration (so machine load shifts the aim less than absolute delays).
    let anchors: [(&str, Duration); 5] = [
        ("", d_start.mul_f32(1.5)),
        ("loading model", d_model),
        ("hashing", d_embed),
        ("hashing", d_embed),
        ("fitting PCA", d_tail.mul_f32(1.2)),
    ];
    const TRIALS: usize = 40;
    let mut by_stage: BTreeMap<String, usize> = BTreeMap::new();
    let mut partial_embeds = 0;
    let mut with_previous_generation = 0;
    let mut stray_max = 0;
    let mut rewrites = 0u32;
    let started = Instant::now();
    for trial in 0..TRIALS {
        let fresh = trial % 2 == 0;
        if fresh {
            s.remove_db();
        } else if check_database(&s.db).generation.is_some_and(|(_, c)| c == gallery_size) {
            // Complete already: change 8 images so that this run re-embeds, updates the index
            // (or refits the PCA and rebuilds it) and writes a new generation while the previous
            // one is current.
            rewrites += 1;
            let class = rng.random_range(0..6);
            add_pictures(&s.gallery, class, 1, 8, 100_000 * rewrites);
        }
        let before = check_database(&s.db);
        let (anchor, span) = anchors[trial / 2 % anchors.len()];
        let offset = rand_between(&mut rng, Duration::ZERO, span);
        let mut run = Watched::spawn(&mut s.index_cmd(&[]));
        let spawned = Instant::now();
        let from = if anchor.is_empty() { Some(spawned) } else { run.wait_for(anchor) };
        if let Some(from) = from {
            std::thread::sleep((from + offset).saturating_duration_since(Instant::now()));
        }
        let at = spawned.elapsed();
        let stage = run.kill();
        let after = check_database(&s.db);
        if stage == "completed" {
            assert_eq!(
                after.stray_files, 0,
                "trial {trial}: a complete run left stray index files"
            );
        }
        let stage = match stage.as_str() {
            "hash+embed" if after.ok == before.ok => "hash".to_string(),
            "hash+embed" => "embed".to_string(),
            _ => stage,
        };
        if stage == "embed" && after.ok > 0 && (after.ok as usize) < gallery_size {
            partial_embeds += 1;
        }
        if before.generation.is_some() && matches!(stage.as_str(), "pca" | "hnsw" | "update") {
            with_previous_generation += 1;
        }
        stray_max = stray_max.max(after.stray_files);
        eprintln!(
            "trial {trial:2} {} aimed at '{anchor}'+{:3} ms, killed at {:4} ms in {stage:<10} → ok {:3}, generation {:?}, stray files {}",
            if fresh { "fresh " } else { "resume" },
            offset.as_millis(),
            at.as_millis(),
            after.ok,
            after.generation,
            after.stray_files
        );
        *by_stage.entry(stage).or_default() += 1;
    }
    eprintln!(
        "kills by stage: {by_stage:?}; partial embeddings {partial_embeds}; PCA/HNSW kills over a \
         previous generation {with_previous_generation}; most stray index files {stray_max}; {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // A full rerun ends with exactly the gallery, and an index that holds all of it.
    let r = json(&run_expect(&mut s.index_cmd(&["--json"]), 0));
    assert_eq!(n(&r["indexed"]) as usize, gallery_size, "{r:#}");
    let snap = check_database(&s.db);
    assert_eq!(snap.ok as usize, gallery_size);
    assert_eq!(snap.generation.map(|g| g.1), Some(gallery_size));
    assert_eq!(snap.stray_files, 0, "index files left behind by killed runs");
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    let stored: BTreeSet<String> = store.images().unwrap().into_iter().map(|r| r.path).collect();
    assert_eq!(stored, gallery_files(&s.gallery));
    drop(store);
    let stale = stale_self_queries(&s);
    assert!(
        stale.is_empty(),
        "{} images do not find themselves:\n{}",
        stale.len(),
        stale.join("\n")
    );

    let killed: usize = by_stage.iter().filter(|(k, _)| *k != "completed").map(|(_, v)| v).sum();
    assert!(killed >= 20, "only {killed} of {TRIALS} runs were killed mid-way: {by_stage:?}");
    assert!(partial_embeds >= 1, "no kill landed mid-embedding: {by_stage:?}");
    assert!(by_stage.len() >= 3, "kills landed in too few stages: {by_stage:?}");
}

/// Self-queries through HNSW: every image must find itself with score ≈ 1, which holds only if
/// the index holds the current descriptors (projected by the current PCA). Returns the failures.
fn stale_self_queries(s: &Setup) -> Vec<String> {
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    let ids: Vec<String> = store
        .images()
        .unwrap()
        .into_iter()
        .filter(|r| r.status == irtdb_store::Status::Ok)
        .map(|r| format!("id:{}", r.id))
        .collect();
    drop(store);
    let q = json(&run_expect(s.cmd(&["query", "--k", "1", "--json"]).args(&ids), 0));
    q["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let hit = &r["hits"][0];
            hit["id"] != r["collection_id"] || hit["score"].as_f64().unwrap_or(0.0) < 0.9999
        })
        .map(|r| format!("{} → {}", r["query"], r["hits"][0]))
        .collect()
}

#[test]
fn a_run_killed_after_embedding_leaves_no_stale_index_behind() {
    // A complete collection; then 8 images change and a run is killed right after it committed
    // their new descriptors, before its new PCA and HNSW generation were recorded.
    let s = Setup::new(3, 8);
    run_expect(&mut s.index_cmd(&[]), 0);
    add_pictures(&s.gallery, 1, 1, 8, 4242);
    write_picture(&s.gallery.join("class02/new.jpg"), W, H, 777);
    let out = s.index_cmd(&[]).env("IRTDB_FAILPOINT", "abort-after-batch:2").output().unwrap();
    assert!(out.status.code().is_none(), "expected a crash: {}", stderr(&out));
    // What a run killed while saving index files leaves: temporaries, and complete files of a
    // generation that was never recorded. The next build removes them.
    for stray in [
        ".c.db.hnsw-17.tmp-4242-0.hnsw.graph",
        ".c.db.hnsw-17.tmp-4242-0.irtdb-hnsw",
        "c.db.hnsw-18.hnsw.data",
    ] {
        std::fs::write(s.dir.join(stray), b"left by a killed run").unwrap();
    }
    assert_eq!(check_database(&s.db).stray_files, 3);
    // The next run has nothing left to embed, but must not keep the stale generation.
    let r = json(&run_expect(&mut s.index_cmd(&["--json"]), 0));
    assert_eq!(n(&r["embedded"]), 0, "{r:#}");
    assert_eq!(n(&r["indexed"]), 25, "the new image is not in the index: {r:#}");
    let stale = stale_self_queries(&s);
    assert!(
        stale.is_empty(),
        "{} images do not find themselves:\n{}",
        stale.len(),
        stale.join("\n")
    );
    assert_eq!(check_database(&s.db).stray_files, 0);
}

// ----- 2. malformed input ------------------------------------------------------------------------

/// CRC-32 (IEEE), for crafting PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid PNG header declaring `w`×`h` RGB pixels, with a tiny (incomplete) image stream: a
/// decompression bomb as far as the header is concerned.
fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    // zlib stream of a few zero bytes (stored block), far short of w×h pixels.
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 0x04, 0, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A BMP header declaring `w`×`h` 24-bit pixels, followed by a few bytes of pixel data.
fn bmp_bomb(w: i32, h: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend_from_slice(&(54u32 + 16).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&[0x7f; 16]);
    b
}

/// A JPEG of the picture, its SOF header patched to declare `w`×`h`.
fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg_bytes(16, 16, 1);
    let sof = b.windows(2).position(|m| m == [0xFF, 0xC0]).expect("baseline JPEG has SOF0");
    b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    b
}

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn picture(w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = (x * 7 + y * 13 + seed * 31) % 256;
        image::Rgb([v as u8, (255 - v) as u8, ((x ^ y) * 5 % 256) as u8])
    })
}

fn jpeg_bytes(w: u32, h: u32, seed: u32) -> Vec<u8> {
    encode(picture(w, h, seed).into(), image::ImageFormat::Jpeg)
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    encode(img, image::ImageFormat::Png)
}

/// A 4-component (CMYK, Adobe) JPEG: the `image` crate cannot write one, jpeg-encoder can.
fn cmyk_jpeg(w: u16, h: u16) -> Vec<u8> {
    let data: Vec<u8> = (0..u32::from(w) * u32::from(h))
        .flat_map(|i| [(i * 3 % 256) as u8, (i * 5 % 256) as u8, (i * 7 % 256) as u8, 40])
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&data, w, h, jpeg_encoder::ColorType::Cmyk)
        .unwrap();
    out
}

fn animated_gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut out);
        enc.set_repeat(image::codecs::gif::Repeat::Infinite).unwrap();
        let frames = (0..3).map(|i| {
            let rgba = image::DynamicImage::from(picture(24, 20, i)).into_rgba8();
            image::Frame::from_parts(rgba, 0, 0, image::Delay::from_numer_denom_ms(100, 1))
        });
        enc.encode_frames(frames).unwrap();
    }
    out
}

/// What a file of the hostile corpus should become.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Embedded,
    /// Recorded as failed, with an error containing this text.
    Failed(&'static str),
    /// Not an image row at all: listed among the scan problems (with this text) or ignored.
    ScanProblem(&'static str),
    Ignored,
}

#[test]
fn a_hostile_gallery_is_embedded_or_recorded_file_by_file() {
    let s = Setup::new(2, 6); // 12 ordinary images so that there is something to index
    let g = &s.gallery;
    let mut expected: Vec<(PathBuf, Expect)> = Vec::new();
    macro_rules! put {
        ($rel:expr, $bytes:expr, $e:expr) => {{
            let p = g.join($rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, $bytes).unwrap();
            expected.push((p, $e));
        }};
    }
    let jpeg = jpeg_bytes(40, 30, 7);
    let png = png_bytes(picture(40, 30, 8).into());
    put!("bad/empty.jpg", b"", Expect::Failed("empty file"));
    put!("bad/truncated.jpg", &jpeg[..jpeg.len() / 2], Expect::Failed("truncated"));
    put!("bad/truncated.png", &png[..png.len() / 2], Expect::Failed("truncated"));
    put!("bad/header_only.png", &png[..33], Expect::Failed("truncated"));
    put!(
        "bad/text.png",
        b"this is not an image at all, just text\n",
        Expect::Failed("not an image")
    );
    put!(
        "bad/soi_then_garbage.jpg",
        &[&[0xFF, 0xD8, 0xFF][..], &[0x5a; 300]].concat(),
        Expect::Failed("corrupt")
    );
    put!("bad/bomb.png", &png_bomb(100_000, 100_000), Expect::Failed("image too large"));
    put!("bad/bomb.bmp", &bmp_bomb(100_000, 100_000), Expect::Failed("too large"));
    put!("bad/bomb.jpg", &jpeg_bomb(60_000, 60_000), Expect::Failed("image too large"));
    put!("odd/png_named.jpg", &png, Expect::Embedded);
    put!("odd/jpeg_named.png", &jpeg, Expect::Embedded);
    put!("odd/one_pixel.png", &png_bytes(picture(1, 1, 3).into()), Expect::Embedded);
    put!("odd/wide_10000x10.png", &png_bytes(picture(10_000, 10, 4).into()), Expect::Embedded);
    put!("odd/tall_10x10000.jpg", &jpeg_bytes(10, 10_000, 5), Expect::Embedded);
    put!("odd/cmyk.jpg", &cmyk_jpeg(40, 30), Expect::Embedded);
    let rgb = image::DynamicImage::from(picture(40, 30, 9));
    put!(
        "odd/gray8.png",
        &png_bytes(image::DynamicImage::ImageLuma8(rgb.to_luma8())),
        Expect::Embedded
    );
    put!(
        "odd/gray16.png",
        &png_bytes(image::DynamicImage::ImageLuma16(rgb.to_luma16())),
        Expect::Embedded
    );
    put!(
        "odd/gray_alpha.png",
        &png_bytes(image::DynamicImage::ImageLumaA8(rgb.to_luma_alpha8())),
        Expect::Embedded
    );
    put!(
        "odd/rgb16.png",
        &png_bytes(image::DynamicImage::ImageRgb16(rgb.to_rgb16())),
        Expect::Embedded
    );
    put!(
        "odd/rgba.png",
        &png_bytes(image::DynamicImage::ImageRgba8(rgb.to_rgba8())),
        Expect::Embedded
    );
    put!("odd/animated.gif", &animated_gif(), Expect::Embedded);
    put!("odd/image.bmp", &encode(rgb.clone(), image::ImageFormat::Bmp), Expect::Embedded);
    put!("odd/image.tiff", &encode(rgb.clone(), image::ImageFormat::Tiff), Expect::Embedded);
    put!("odd/UPPER.JPG", &jpeg, Expect::Embedded);
    put!("odd/folder.jpg/inside.jpg", &jpeg_bytes(20, 20, 11), Expect::Embedded);

    // Unreadable permissions: root reads anyway (CI runs as root), so decide by trying.
    put!("perm/locked.jpg", &jpeg_bytes(30, 30, 12), Expect::Embedded);
    let locked = g.join("perm/locked.jpg");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::File::open(&locked).is_ok();
    if !readable {
        expected.last_mut().unwrap().1 = Expect::Failed("Permission denied");
    }
    put!(
        "perm/locked_dir/x.jpg",
        &jpeg_bytes(30, 30, 13),
        if readable { Expect::Embedded } else { Expect::ScanProblem("cannot read") }
    );
    std::fs::set_permissions(g.join("perm/locked_dir"), std::fs::Permissions::from_mode(0o000))
        .unwrap();
    eprintln!(
        "permissions: {}",
        if readable {
            "running as root, chmod 000 files stay readable"
        } else {
            "chmod 000 denies reading"
        }
    );

    // Links: loops, a dangling one, a good one, and a link to a folder above (not followed).
    let links = g.join("links");
    std::fs::create_dir_all(&links).unwrap();
    let link =
        |target: &str, name: &str| std::os::unix::fs::symlink(target, links.join(name)).unwrap();
    link("self.jpg", "self.jpg");
    link("b.jpg", "a.jpg");
    link("a.jpg", "b.jpg");
    link("nowhere.jpg", "dangling.jpg");
    link("../class00/000.jpg", "good.jpg");
    link("..", "up");
    link("/dev/zero", "zero.jpg");
    for name in ["self.jpg", "a.jpg", "b.jpg", "dangling.jpg"] {
        expected.push((links.join(name), Expect::ScanProblem("broken symbolic link")));
    }
    expected.push((links.join("good.jpg"), Expect::Embedded));
    expected.push((links.join("zero.jpg"), Expect::Ignored));

    // Special files: a FIFO named like an image must be skipped, not opened (it would block).
    let fifo = g.join("special/fifo.jpg");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = Command::new("mkfifo").arg(&fifo).status().map(|s| s.success()).unwrap_or(false);
    if made {
        expected.push((fifo, Expect::Ignored));
    } else {
        eprintln!("note: mkfifo is not available; FIFO case skipped");
    }

    // Names that are not UTF-8: one alone is embedded under its lossy name (and reported); two
    // that read the same once converted cannot both be stored under that name.
    let names = g.join("names");
    std::fs::create_dir_all(&names).unwrap();
    let alone = names.join(OsStr::from_bytes(b"caf\xe9.jpg"));
    std::fs::write(&alone, jpeg_bytes(30, 30, 14)).unwrap();
    expected.push((alone, Expect::Embedded));
    let twin_a = names.join(OsStr::from_bytes(b"tw\xffin.jpg"));
    let twin_b = names.join(OsStr::from_bytes(b"tw\xfein.jpg"));
    std::fs::write(&twin_a, jpeg_bytes(30, 30, 15)).unwrap();
    std::fs::write(&twin_b, jpeg_bytes(31, 31, 16)).unwrap();

    let out = run_expect(&mut s.index_cmd(&["--json"]), 0);
    let report = json(&out);
    let info = s.info();
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    let rows: BTreeMap<String, irtdb_store::ImageRow> =
        store.images().unwrap().into_iter().map(|r| (r.path.clone(), r)).collect();
    let problems: Vec<(String, String)> =
        serde_json::from_value(report["scan_problems"].clone()).unwrap();
    let failures: BTreeMap<String, String> = info_failures(&info).into_iter().collect();

    let mut tally: BTreeMap<&str, (usize, usize)> = BTreeMap::new(); // kind → (as expected, not)
    let mut wrong = Vec::new();
    for (path, want) in &expected {
        let rel_lossy = path.strip_prefix(g).unwrap().to_string_lossy().into_owned();
        let row = rows.get(&rel_lossy);
        let problem = problems
            .iter()
            .find(|(p, _)| Path::new(p).ends_with(&rel_lossy) || p.ends_with(&rel_lossy));
        let got_ok = match want {
            Expect::Embedded => row.is_some_and(|r| r.status == irtdb_store::Status::Ok),
            Expect::Failed(text) => {
                row.is_some_and(|r| r.status == irtdb_store::Status::Failed)
                    && failures.get(&rel_lossy).is_some_and(|e| e.contains(text))
            }
            Expect::ScanProblem(text) => {
                row.is_none() && problem.is_some_and(|(_, m)| m.contains(text))
            }
            Expect::Ignored => row.is_none(),
        };
        let kind = match want {
            Expect::Embedded => "embedded",
            Expect::Failed(_) => "failed with reason",
            Expect::ScanProblem(_) => "scan problem",
            Expect::Ignored => "ignored",
        };
        let e = tally.entry(kind).or_default();
        if got_ok {
            e.0 += 1;
        } else {
            e.1 += 1;
            wrong.push(format!(
                "{rel_lossy}: wanted {want:?}, got row {:?}, failure {:?}, problem {:?}",
                row.map(|r| (r.status, r.error.clone())),
                failures.get(&rel_lossy),
                problem
            ));
        }
    }
    // The twins: never both silently stored under one name; the one that is stored (if any)
    // holds the hash of a file that really has that content.
    let twin_rel = "names/tw\u{FFFD}in.jpg";
    let twin_problem = problems.iter().any(|(p, m)| p.contains("tw") && m.contains("not indexed"));
    let twin_row = rows.get(twin_rel);
    if let Some(r) = twin_row {
        let hashes = [&twin_a, &twin_b].map(|p| irtdb_image::content_hash(p).unwrap());
        assert!(hashes.contains(&r.hash), "twin stored with a hash of neither file");
        assert_eq!(r.hash, hashes[1], "the first name in byte order (\\xfe) is the one kept");
    }
    eprintln!("hostile corpus: {tally:?}; twins: row {:?}", twin_row.map(|r| r.status));
    for p in &problems {
        eprintln!("  scan problem: {} — {}", p.0, p.1);
    }
    for (p, e) in &failures {
        eprintln!("  failure: {p} — {e}");
    }
    assert!(wrong.is_empty(), "{} files were handled wrongly:\n{}", wrong.len(), wrong.join("\n"));
    assert!(twin_problem);

    // The twins stay stable: a rerun embeds nothing again (no flip-flopping between them).
    let again = json(&run_expect(&mut s.index_cmd(&["--json"]), 0));
    assert_eq!((n(&again["embedded"]), n(&again["changed"])), (0, 0), "{again:#}");
    // The text report works too, and the non-UTF-8 name can be queried by its stored name.
    let text = run_expect(&mut s.index_cmd(&[]), 0);
    assert!(String::from_utf8_lossy(&text.stdout).contains("irtdb info"));
    let q =
        json(&run_expect(&mut s.cmd(&["query", "names/caf\u{FFFD}.jpg", "--k", "1", "--json"]), 0));
    assert_eq!(q["results"][0]["hits"][0]["path"], "names/caf\u{FFFD}.jpg", "{q:#}");
    drop(store);
    check_database(&s.db);
    // Outside a collection: `embed --json` names such a file lossily instead of failing, and a
    // model whose path is not UTF-8 is refused plainly (it used to panic).
    let out = run_expect(
        irtdb()
            .args(["embed", "--json", "--model"])
            .arg(&s.model)
            .arg(names.join(OsStr::from_bytes(b"caf\xe9.jpg"))),
        0,
    );
    assert_eq!(
        json(&out)["images"][0]["path"].as_str().unwrap(),
        names.join("caf\u{FFFD}.jpg").to_str().unwrap()
    );
    let odd_model = s.dir.join(OsStr::from_bytes(b"m\xff.safetensors"));
    std::fs::copy(&s.model, &odd_model).unwrap();
    let out = run_expect(
        irtdb().args(["embed", "--model"]).arg(&odd_model).arg(g.join("class00/000.jpg")),
        2,
    );
    assert!(stderr(&out).contains("is not valid UTF-8"), "{}", stderr(&out));
    // Restore permissions so that the temporary folder can be removed.
    let _ =
        std::fs::set_permissions(g.join("perm/locked_dir"), std::fs::Permissions::from_mode(0o755));
}

#[test]
fn files_vanishing_during_an_index_run_are_recorded_or_dropped() {
    let s = Setup::new(4, 30); // 120 images
    let mut rng = StdRng::seed_from_u64(seed() ^ 0x5eed);
    let mut victims: Vec<String> = gallery_files(&s.gallery).into_iter().collect();
    // Every third file, deleted in random order over the first ~1.5 s of the run.
    victims = victims.into_iter().step_by(3).collect();
    let mut order: Vec<(Duration, String)> = victims
        .iter()
        .map(|v| (Duration::from_millis(rng.random_range(0..1500)), v.clone()))
        .collect();
    order.sort();
    let log = s.dir.join("vanish.log");
    let mut child = spawn_logged(&mut s.index_cmd(&["--json"]), &log);
    let t0 = Instant::now();
    for (at, rel) in &order {
        if let Some(wait) = at.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        std::fs::remove_file(s.gallery.join(rel)).unwrap();
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    let snap = check_database(&s.db);
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    let (mut absent, mut failed, mut embedded) = (0, 0, 0);
    for rel in &victims {
        match store.image_by_path(rel).unwrap() {
            None => absent += 1,
            Some(r) if r.status == irtdb_store::Status::Failed => {
                assert!(r.error.as_deref().is_some_and(|e| e.contains("No such file")), "{r:?}");
                failed += 1;
            }
            Some(_) => embedded += 1,
        }
    }
    eprintln!(
        "{} files deleted during the run: {absent} gone before the scan, {failed} recorded as \
         failed, {embedded} embedded before they went; generation {:?}",
        victims.len(),
        snap.generation
    );
    drop(store);
    // The next run drops them all.
    let r = json(&run_expect(&mut s.index_cmd(&["--json"]), 0));
    assert_eq!(n(&r["removed"]) as usize, failed + embedded, "{r:#}");
    let info = s.info();
    assert_eq!(n(&info["images"]) as usize, 120 - victims.len());
    assert_eq!(n(&info["failed"]), 0);
}

// ----- 3. concurrency ----------------------------------------------------------------------------

#[test]
fn queries_during_an_index_run_never_fail_and_see_whole_batches() {
    let s = Setup::new(5, 8); // 40 images, indexed first so that queries have a generation
    run_expect(&mut s.index_cmd(&[]), 0);
    add_pictures(&s.gallery, 5, 20, 18, 0); // 360 more: 45 batches of 8
    let total = 400usize;

    let log = s.dir.join("writer.log");
    // The writer waits after its third batch until this file exists, which the loop below makes
    // once it has seen that state: an observation in the middle of the run, however slow the
    // machine.
    let go = s.dir.join("go");
    let pause = format!("pause-after-batch:3:{}", go.display());
    let mut writer = spawn_logged(s.index_cmd(&["--json"]).env("IRTDB_FAILPOINT", &pause), &log);
    let lock_file = {
        let mut p = s.db.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    };
    let (mut infos, mut queries, mut hnsw_queries) = (0, 0, 0);
    let mut seen_counts = BTreeSet::new();
    let mut refused = 0;
    let mut second_ran_anyway = 0;
    let mut waiter: Option<Child> = None;
    let t0 = Instant::now();
    while writer.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(120), "the index run does not end");
        // info: one consistent count; whole batches only.
        let info = s.info();
        let embedded = n(&info["embedded"]) as usize;
        assert!(
            (embedded - 40).is_multiple_of(8) || embedded == total,
            "info saw {embedded} embedded images: half a batch"
        );
        seen_counts.insert(embedded);
        if embedded > 40 && embedded < total {
            std::fs::write(&go, b"").unwrap();
        }
        infos += 1;
        // An exact query over every vector: never fails; sees whole batches too.
        let q = json(&run_expect(
            &mut s.cmd(&["query", "id:1", "--exact", "--k", "1000", "--json"]),
            0,
        ));
        let hits = q["results"][0]["hits"].as_array().unwrap().len();
        assert!(
            (hits - 40).is_multiple_of(8) || hits == total,
            "query saw {hits} vectors: half a batch"
        );
        assert_eq!(q["results"][0]["hits"][0]["id"], 1);
        queries += 1;
        // And through HNSW (the generation may be replaced under it: it must cope).
        let q = json(&run_expect(&mut s.cmd(&["query", "id:2", "--k", "5", "--json"]), 0));
        assert_eq!(q["results"][0]["hits"][0]["id"], 2, "{q:#}");
        hnsw_queries += 1;
        // A second writer, once the first holds the lock: refused, clearly; with --wait, queued.
        if waiter.is_none() && std::fs::metadata(&lock_file).is_ok_and(|m| m.len() > 0) {
            let out = s.index_cmd(&[]).output().unwrap();
            if out.status.code() == Some(2) {
                let err = stderr(&out);
                assert!(
                    err.contains("another irtdb is writing") && err.contains("--wait"),
                    "{err}"
                );
                refused += 1;
            } else {
                // Only possible if the first run finished in between.
                assert!(out.status.success(), "{}", stderr(&out));
                assert!(
                    writer.try_wait().unwrap().is_some(),
                    "a second writer ran beside the first"
                );
                second_ran_anyway += 1;
            }
            waiter = Some(spawn_logged(
                &mut s.index_cmd(&["--wait", "--json"]),
                &s.dir.join("waiter.log"),
            ));
        }
    }
    assert!(writer.wait().unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap());
    let waited = waiter.expect("the writer held the lock at some point").wait().unwrap();
    assert!(waited.success(), "{}", std::fs::read_to_string(s.dir.join("waiter.log")).unwrap());
    eprintln!(
        "during one index run: {infos} info + {queries} exact + {hnsw_queries} HNSW queries, none \
         failed; embedded counts seen {seen_counts:?}; second writer refused {refused}×, ran after \
         the first {second_ran_anyway}×; the --wait writer succeeded"
    );
    assert!(
        seen_counts.iter().any(|&c| c > 40 && c < total),
        "no observation while the run was embedding: {seen_counts:?}"
    );
    let snap = check_database(&s.db);
    assert_eq!((snap.ok as usize, snap.generation.map(|g| g.1)), (total, Some(total)));
}

#[test]
fn a_second_writer_is_refused_or_queued_while_the_lock_is_held() {
    let s = Setup::new(2, 6);
    run_expect(&mut s.index_cmd(&[]), 0);
    add_pictures(&s.gallery, 2, 1, 4, 0);
    // This test process holds the writer lock, as a running `irtdb index` would.
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    let lock = store.lock_writer(false).unwrap();
    let out = run_expect(&mut s.index_cmd(&[]), 2);
    let err = stderr(&out);
    assert!(err.contains("another irtdb is writing"), "{err}");
    assert!(err.contains(&format!("pid {}", std::process::id())), "{err}");
    let out = run_expect(&mut s.cmd(&["reindex"]), 2);
    assert!(stderr(&out).contains("another irtdb is writing"), "{}", stderr(&out));
    // Readers are not blocked.
    run_expect(&mut s.cmd(&["query", "id:1", "--json"]), 0);

    let log = s.dir.join("wait.log");
    let mut waiting = spawn_logged(&mut s.index_cmd(&["--wait"]), &log);
    // Until it says that it waits (the event, not a guess at how long it takes to get there).
    let t = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("waiting for irtdb") {
        let exited = waiting.try_wait().unwrap();
        assert!(
            exited.is_none(),
            "--wait did not wait: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(t.elapsed() < Duration::from_secs(60), "no 'waiting' line within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(waiting.try_wait().unwrap().is_none(), "it waits while the lock is held");
    drop(lock);
    let status = waiting.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap());
    drop(store);
    let snap = check_database(&s.db);
    assert_eq!(snap.ok, 16);
}

// ----- 5. the database file ----------------------------------------------------------------------

#[test]
fn a_database_from_a_newer_irtdb_is_refused_by_every_command() {
    let s = Setup::new(2, 6);
    run_expect(&mut s.index_cmd(&[]), 0);
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    store.connection().pragma_update(None, "user_version", 999).unwrap();
    drop(store);
    let commands: [&[&str]; 4] =
        [&["info"], &["query", "id:1"], &["reindex"], &["query", "class00/000.jpg", "--exact"]];
    for args in commands {
        let out = run_expect(&mut s.cmd(args), 2);
        let err = stderr(&out);
        assert!(
            err.contains("written by a newer irtdb (schema 999") && err.contains("upgrade irtdb"),
            "{args:?}: {err}"
        );
    }
    let out = run_expect(&mut s.index_cmd(&[]), 2);
    assert!(stderr(&out).contains("newer irtdb"), "{}", stderr(&out));
}

/// Copies `src` to `dst` with `f` applied to its bytes.
fn damaged_copy(src: &Path, dst: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(src).unwrap();
    f(&mut bytes);
    std::fs::write(dst, bytes).unwrap();
}

#[test]
fn a_damaged_database_is_reported_as_damaged_never_a_crash() {
    let s = Setup::new(6, 20);
    run_expect(&mut s.index_cmd(&["--dim", "0"]), 0);
    // A clean, self-contained copy (everything checkpointed from the WAL into the file).
    let store = irtdb_store::Store::open_existing(&s.db).unwrap();
    store.connection().query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(store);
    let pristine = s.dir.join("pristine.db");
    std::fs::copy(&s.db, &pristine).unwrap();
    let page = 4096usize;
    let len = std::fs::metadata(&pristine).unwrap().len() as usize;
    let pages = len / page;
    assert!(pages >= 8, "database of {pages} pages is too small to damage in the middle");
    let mut rng = StdRng::seed_from_u64(seed() ^ 0xdead);
    let damaged = s.dir.join("damaged.db");
    let info = |db: &Path| irtdb().args(["info", "--db"]).arg(db).output().unwrap();
    let clear = |out: &std::process::Output, what: &str| {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(2), "{what}: {:?}\n{err}", out.status);
        assert!(err.contains("is damaged") || err.contains("header is damaged"), "{what}: {err}");
    };

    // Garbage over the middle half of the file.
    damaged_copy(&pristine, &damaged, |b| {
        let (from, to) = (pages / 4 * page, pages * 3 / 4 * page);
        rng.fill(&mut b[from..to]);
    });
    clear(&info(&damaged), "middle half overwritten");
    // Page 1 (header and schema) overwritten.
    damaged_copy(&pristine, &damaged, |b| rng.fill(&mut b[..page]));
    clear(&info(&damaged), "first page overwritten");
    // Cut in half.
    damaged_copy(&pristine, &damaged, |b| b.truncate(len / 2));
    clear(&info(&damaged), "truncated to half");

    // One page at a time: `info` reads only what it needs, so it may not notice every page;
    // whatever it does, it never crashes, and `info --check` (a full integrity check) always
    // notices.
    let (mut noticed, mut checked_noticed, mut total) = (0, 0, 0);
    for p in 1..pages {
        damaged_copy(&pristine, &damaged, |b| rng.fill(&mut b[p * page..(p + 1) * page]));
        let _ = std::fs::remove_file(s.dir.join("damaged.db-wal"));
        let out = info(&damaged);
        assert!(out.status.code().is_some(), "page {p}: irtdb died of a signal: {:?}", out.status);
        if out.status.code() == Some(2) {
            clear(&out, &format!("page {p}"));
            noticed += 1;
        } else {
            assert_eq!(out.status.code(), Some(0), "page {p}: {}", stderr(&out));
        }
        let out = irtdb().args(["info", "--check", "--db"]).arg(&damaged).output().unwrap();
        clear(&out, &format!("page {p}, --check"));
        checked_noticed += 1;
        total += 1;
    }
    eprintln!("single damaged pages: `info` noticed {noticed} of {total}, `info --check` {checked_noticed} of {total}");
    // And the pristine copy still checks clean.
    run_expect(irtdb().args(["info", "--check", "--db"]).arg(&pristine), 0);
}

/// A 2 MiB tmpfs, unmounted on drop; `None` where mounting is not permitted.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "note: cannot mount a tmpfs here ({}); out-of-disk case skipped",
                stderr(&out).trim()
            );
            return None;
        }
        Some(SmallDisk(at.to_path_buf()))
    }

    /// Fills the disk, leaving about `free` bytes; returns the filler's path.
    fn fill(&self, free: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        drop(f);
        let len = std::fs::metadata(&filler).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
        f.set_len(len.saturating_sub(free)).unwrap();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn running_out_of_disk_fails_clearly_and_keeps_the_previous_state() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(&tmp.path().join("small")) else { return };
    let s = Setup::new(2, 10);
    let db = disk.0.join("c.db");
    let cmd = |args: &[&str]| {
        let mut c = irtdb();
        c.arg(args[0]).arg("--db").arg(&db).args(&args[1..]);
        c
    };
    let index = |extra: &[&str]| {
        let mut c = cmd(&["index", "--dim", "8", "--batch", "8"]);
        c.arg(&s.gallery).arg("--model").arg(&s.model).args(extra);
        c
    };
    run_expect(&mut index(&[]), 0);
    let first = check_database(&db);
    assert_eq!(first.ok, 20);
    add_pictures(&s.gallery, 2, 6, 20, 0); // 120 more

    let mut outcomes = Vec::new();
    // Less and less space: 0, then more each try, until a run completes.
    for free_kib in [0u64, 16, 48, 96, 160, 256, 512, 1024] {
        let before = check_database(&db);
        let filler = disk.fill(free_kib * 1024);
        let out = index(&["--json"]).output().unwrap();
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(2),
            "{free_kib} KiB free: {:?}\n{}",
            out.status,
            stderr(&out)
        );
        std::fs::remove_file(&filler).unwrap();
        let after = check_database(&db);
        assert!(after.ok >= before.ok, "committed batches were lost");
        if code == Some(2) {
            let err = stderr(&out);
            assert!(
                err.contains("No space left on device")
                    || err.contains("disk is full")
                    || err.contains("free some disk space"),
                "{free_kib} KiB free: the error does not say the disk is full:\n{err}"
            );
            // The previous generation still answers queries.
            assert_eq!(after.generation, before.generation, "{free_kib} KiB free");
            let q = json(&run_expect(&mut cmd(&["query", "id:1", "--json"]), 0));
            assert_eq!(q["results"][0]["hits"][0]["id"], 1);
            outcomes.push(format!(
                "{free_kib} KiB: failed ({}), {} ok kept",
                err.trim().lines().last().unwrap_or(""),
                after.ok
            ));
        } else {
            outcomes.push(format!("{free_kib} KiB: completed, {} ok", after.ok));
            break;
        }
    }
    eprintln!("out of disk:\n  {}", outcomes.join("\n  "));
    assert!(outcomes.iter().filter(|o| o.contains("failed")).count() >= 1, "{outcomes:?}");
    // With the space back, a run completes.
    run_expect(&mut index(&[]), 0);
    let last = check_database(&db);
    assert_eq!((last.ok, last.generation.map(|g| g.1)), (140, Some(140)));

    // Full while storing the PCA or writing the index files: a reader holds the database open
    // here, so the WAL and its shared memory already have their space, and `reindex` gets that
    // far. A little more space each try, until one completes.
    let reader = irtdb_store::Store::open_existing(&db).unwrap();
    let mut reindex_failures = Vec::new();
    for free_kib in (0..=96).step_by(8) {
        let before = check_database(&db);
        let filler = disk.fill(free_kib * 1024);
        let out = cmd(&["reindex", "--dim", "4"]).output().unwrap();
        std::fs::remove_file(&filler).unwrap();
        let after = check_database(&db);
        if after.stray_files > 0 {
            for e in std::fs::read_dir(&disk.0).unwrap() {
                eprintln!("  {:?}", e.unwrap().file_name());
            }
            eprintln!("{free_kib} KiB: {}", stderr(&out));
        }
        assert_eq!(after.stray_files, 0, "{free_kib} KiB: a failed save left files behind");
        if out.status.success() {
            break;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("No space left on device") || err.contains("disk is full"), "{err}");
        assert_eq!(after.generation, before.generation, "the previous generation stays current");
        let step = if err.contains("store a PCA") {
            "storing the PCA"
        } else if err.contains("index generation") {
            "recording the generation"
        } else if err.contains("hnsw") {
            "writing HNSW files"
        } else {
            "other"
        };
        reindex_failures
            .push(format!("{free_kib} KiB: {step}: {}", err.trim().lines().last().unwrap_or("")));
    }
    drop(reader);
    eprintln!("reindex on a full disk:\n  {}", reindex_failures.join("\n  "));
    assert!(!reindex_failures.is_empty());
    run_expect(&mut cmd(&["query", "id:1", "--json"]), 0);
    drop(disk);
}
