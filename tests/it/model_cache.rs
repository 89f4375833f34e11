//! The ort plugin's optimised-model cache (`<cache dir>/irtdb/ort-cache`): made on the first
//! load, used on the next, damaged or stale files rebuilt and never trusted, concurrent first
//! loads safe. What the cache did is read from its files and from the lines
//! `IRTDB_MODEL_CACHE_LOG=1` prints, never from timings; every descriptor is compared with the
//! uncached session's (`IRTDB_NO_MODEL_CACHE=1`) and with irtdb-onnx's plain-Rust forward.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use crate::embed::{max_abs_diff, reference_cls};
use crate::util::*;

/// An `irtdb embed --json` of `img` with `model`, its cache under `cache_home`.
fn embed_cmd(model: &Path, img: &Path, cache_home: &Path) -> Command {
    let mut c = irtdb();
    c.args(["embed", "--plugin", "ort-tensorrt", "--json", "--model"])
        .arg(model)
        .arg(img)
        .env("XDG_CACHE_HOME", cache_home)
        .env("IRTDB_MODEL_CACHE_LOG", "1")
        .env_remove("IRTDB_NO_MODEL_CACHE");
    c
}

/// Runs `embed_cmd`, returns the JSON report's descriptor and backbone, and stderr.
fn embed(model: &Path, img: &Path, cache_home: &Path, no_cache: bool) -> Run {
    let mut c = embed_cmd(model, img, cache_home);
    if no_cache {
        c.env("IRTDB_NO_MODEL_CACHE", "1");
    }
    Run::of(&run_expect(&mut c, 0))
}

#[derive(Debug)]
struct Run {
    descriptor: Vec<f32>,
    backbone: serde_json::Value,
    stderr: String,
}

impl Run {
    fn of(out: &Output) -> Self {
        let j = json(out);
        Run {
            descriptor: serde_json::from_value(j["images"][0]["descriptor"].clone())
                .unwrap_or_else(|_| panic!("no descriptor in {j:#}")),
            backbone: j["model"]["backbone"].clone(),
            stderr: stderr(out),
        }
    }
}

/// The files in the cache folder (entries and any temporary file, not `digests/`).
fn cache_files(cache_home: &Path) -> Vec<PathBuf> {
    let dir = cache_home.join("irtdb").join("ort-cache");
    let mut v: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        // Files only: `digests/` holds the remembered hashes of model files.
        Ok(rd) => rd.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The one cache entry there must be.
fn only_entry(cache_home: &Path) -> PathBuf {
    let files = cache_files(cache_home);
    assert_eq!(files.len(), 1, "expected one cache file, found {files:?}");
    assert_eq!(files[0].extension().unwrap(), "ortcache", "{files:?}");
    files[0].clone()
}

/// Descriptors of a cached session equal the uncached session's: the same optimised graph runs
/// the same kernels, so the bits agree (checked exactly, with the reference forward within
/// 1e-4 as in the embed tests).
fn assert_same(got: &Run, uncached: &Run, what: &str) {
    assert_eq!(
        got.descriptor, uncached.descriptor,
        "{what}: cached and uncached descriptors differ"
    );
    assert_eq!(
        got.backbone, uncached.backbone,
        "{what}: the backbone describes itself differently"
    );
}

#[test]
fn the_optimised_model_is_cached_on_first_load_and_used_on_the_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (st, weights) = write_micro_vit(tmp.path(), true);
    let onnx = tmp.path().join("tokens.onnx");
    std::fs::write(
        &onnx,
        irtdb_onnx::build_vit_onnx(&weights, irtdb_onnx::GraphOutput::Tokens).unwrap(),
    )
    .unwrap();
    let img = tmp.path().join("x.png");
    write_picture(&img, 50, 40, 4);
    let want = reference_cls(&weights, &img);

    for (model, what) in [(&st, "safetensors"), (&onnx, "onnx file")] {
        let home =
            tmp.path().join(format!("cache-{}", model.extension().unwrap().to_string_lossy()));
        // Off: nothing is read or written.
        let uncached = embed(model, &img, &home, true);
        assert!(
            cache_files(&home).is_empty(),
            "{what}: IRTDB_NO_MODEL_CACHE wrote {:?}",
            cache_files(&home)
        );
        assert!(
            uncached.stderr.contains("model cache: not used")
                && uncached.stderr.contains("cache: off (IRTDB_NO_MODEL_CACHE is set)"),
            "{what}: {}",
            uncached.stderr
        );
        let diff = max_abs_diff(&uncached.descriptor, &want);
        assert!(diff <= 1e-4, "{what}: uncached vs reference forward differ by {diff}");

        // First load: a miss, and the entry is written.
        let first = embed(model, &img, &home, false);
        assert!(first.stderr.contains("model cache: miss"), "{what}: {}", first.stderr);
        let entry = only_entry(&home);
        assert!(
            first.stderr.contains(&format!("model cache: stored {}", entry.display())),
            "{what}: {}",
            first.stderr
        );
        assert_same(&first, &uncached, what);
        let meta = std::fs::metadata(&entry).unwrap();

        // Second load: a hit on that very file, not rewritten (its use recorded in its
        // modification time).
        let second = embed(model, &img, &home, false);
        assert!(
            second.stderr.contains(&format!("model cache: hit {}", entry.display())),
            "{what}: {}",
            second.stderr
        );
        assert_same(&second, &uncached, what);
        assert_eq!(only_entry(&home), entry);
        let again = std::fs::metadata(&entry).unwrap();
        assert_eq!((again.ino(), again.len()), (meta.ino(), meta.len()), "{what}: rewritten");
        assert!(again.modified().unwrap() >= meta.modified().unwrap());
    }
    // The safetensors graph and the identical .onnx file have different keys (irtdb builds one,
    // the user supplies the other), so neither run above saw the other's entry.
}

#[test]
fn damaged_and_stale_cache_files_are_rebuilt_and_never_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let (a, _) = write_micro_vit_seeded(tmp.path(), 7);
    let (b, weights_b) = write_micro_vit_seeded(tmp.path(), 8);
    let img = tmp.path().join("x.png");
    write_picture(&img, 48, 48, 9);
    let uncached_a = embed(&a, &img, &home, true);
    let uncached_b = embed(&b, &img, &home, true);
    assert!(max_abs_diff(&uncached_a.descriptor, &uncached_b.descriptor) > 1e-3, "a and b agree");
    let diff = max_abs_diff(&uncached_b.descriptor, &reference_cls(&weights_b, &img));
    assert!(diff <= 1e-4, "b vs reference forward differ by {diff}");

    embed(&b, &img, &home, false);
    let entry_b = only_entry(&home);
    let good_b = std::fs::read(&entry_b).unwrap();

    // Each damage is noticed, the entry rebuilt (the next load is a hit on a good file) and the
    // descriptor is the uncached one.
    let mut garbage = good_b.clone();
    let mut x = 0x9e37_79b9u32;
    for byte in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *byte = x as u8;
    }
    let mut one_bit = good_b.clone();
    one_bit[good_b.len() / 3] ^= 0x10;
    let damages: [(&str, Vec<u8>, &str); 4] = [
        ("truncated to half", good_b[..good_b.len() / 2].to_vec(), "damaged"),
        ("empty", Vec::new(), "damaged"),
        ("garbage of the same length", garbage, "damaged"),
        ("one bit flipped in the model", one_bit, "blake3"),
    ];
    for (what, bytes, reason) in damages {
        std::fs::write(&entry_b, &bytes).unwrap();
        let run = embed(&b, &img, &home, false);
        assert!(
            run.stderr
                .contains(&format!("ignoring the cached optimised model {}", entry_b.display()))
                && run.stderr.contains(reason)
                && run.stderr.contains("model cache: stored"),
            "{what}: {}",
            run.stderr
        );
        assert_same(&run, &uncached_b, what);
        assert_eq!(only_entry(&home), entry_b);
        let next = embed(&b, &img, &home, false);
        assert!(next.stderr.contains("model cache: hit"), "{what}: {}", next.stderr);
        assert_same(&next, &uncached_b, what);
    }

    // Stale: a's (valid, checksummed) entry under b's name. Trusted, it would give a's
    // descriptor; the key in its trailer says it is another model's.
    let home_a = tmp.path().join("cache-a");
    embed(&a, &img, &home_a, false);
    std::fs::copy(only_entry(&home_a), &entry_b).unwrap();
    let run = embed(&b, &img, &home, false);
    assert!(run.stderr.contains("stale"), "{}", run.stderr);
    assert_same(&run, &uncached_b, "stale entry");
    // Replaced by b's own: the next load is a hit with b's descriptor.
    let next = embed(&b, &img, &home, false);
    assert!(
        next.stderr.contains(&format!("model cache: hit {}", entry_b.display())),
        "{}",
        next.stderr
    );
    assert_same(&next, &uncached_b, "after the stale entry");

    // A changed model card (heads) changes the graph, so it is another key: a miss, not a hit.
    let card = b.with_extension("json");
    std::fs::write(&card, serde_json::json!({"num_heads": 2, "random_weights": true}).to_string())
        .unwrap();
    let run = embed(&b, &img, &home, false);
    assert!(run.stderr.contains("model cache: miss"), "{}", run.stderr);
    assert_eq!(cache_files(&home).len(), 2);
}

#[test]
fn concurrent_first_loads_leave_one_good_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let (model, _) = write_micro_vit(tmp.path(), false);
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 56, 3);
    let uncached = embed(&model, &img, &home, true);

    let children: Vec<_> = (0..4)
        .map(|_| {
            embed_cmd(&model, &img, &home)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn irtdb")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let run = Run::of(&out);
        assert!(!run.stderr.contains("ignoring"), "{}", run.stderr);
        assert_same(&run, &uncached, "concurrent first load");
    }
    // One entry, no temporary file left, and it is good.
    let entry = only_entry(&home);
    let run = embed(&model, &img, &home, false);
    assert!(
        run.stderr.contains(&format!("model cache: hit {}", entry.display())),
        "{}",
        run.stderr
    );
    assert_same(&run, &uncached, "after the concurrent loads");
}

#[test]
fn doctor_shows_where_the_cache_is_and_when_it_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let check = |off: bool| -> String {
        let mut c = irtdb();
        c.args(["doctor", "--json"]).env("XDG_CACHE_HOME", tmp.path());
        if off {
            c.env("IRTDB_NO_MODEL_CACHE", "1");
        } else {
            c.env_remove("IRTDB_NO_MODEL_CACHE");
        }
        // Exit status aside (a missing optional part fails nothing here): the JSON report.
        let out = c.output().expect("spawn irtdb");
        let j = json(&out);
        let checks = j["checks"].as_array().expect("checks").clone();
        let found = checks.iter().find(|c| c["what"] == "model cache");
        found.unwrap_or_else(|| panic!("no model cache check in {j:#}"))["found"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let on = check(false);
    let dir = tmp.path().join("irtdb").join("ort-cache");
    assert!(on.starts_with(&dir.display().to_string()), "{on}");
    assert!(on.contains("IRTDB_NO_MODEL_CACHE=1 turns it off"), "{on}");
    assert_eq!(check(true), "off (IRTDB_NO_MODEL_CACHE is set)");
}

#[test]
fn a_model_file_changed_in_place_is_hashed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let (a, _) = write_micro_vit_seeded(tmp.path(), 7);
    let (b, weights_b) = write_micro_vit_seeded(tmp.path(), 8);
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 40, 2);
    let uncached_a = embed(&a, &img, &home, true);
    // A file changed in the last two seconds is hashed but not remembered (coarse time
    // stamps); once settled, its digest is remembered by its identity.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let first = embed(&a, &img, &home, false);
    assert!(first.stderr.contains("model cache: stored"), "{}", first.stderr);
    assert!(!first.stderr.contains("remembered"), "{}", first.stderr);
    let second = embed(&a, &img, &home, false);
    assert!(
        second.stderr.contains(&format!("digest of {} remembered", a.display()))
            && second.stderr.contains("model cache: hit"),
        "{}",
        second.stderr
    );
    assert_same(&second, &uncached_a, "remembered digest");

    // The same path, rewritten in place with other weights of the same size: a new identity,
    // so hashed again, a miss, and b's descriptor (a trusted memo would have given a's).
    let bytes_b = std::fs::read(&b).unwrap();
    assert_eq!(bytes_b.len() as u64, std::fs::metadata(&a).unwrap().len());
    std::fs::write(&a, &bytes_b).unwrap();
    let changed = embed(&a, &img, &home, false);
    assert!(
        !changed.stderr.contains("remembered") && changed.stderr.contains("model cache: miss"),
        "{}",
        changed.stderr
    );
    let diff = max_abs_diff(&changed.descriptor, &reference_cls(&weights_b, &img));
    assert!(diff <= 1e-4, "rewritten model vs b's reference forward differ by {diff}");
}

#[test]
fn a_model_with_external_data_is_not_cached() {
    use irtdb_onnx::testing::PixelModel;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let img = tmp.path().join("x.png");
    write_picture(&img, 64, 64, 5);
    let model = tmp.path().join("ext.onnx");
    let write = |scale: f32| {
        let m = PixelModel {
            weights: Some((0..48).map(|i| scale * (1.0 + i as f32 / 48.0)).collect()),
            external: Some("ext.weights".into()),
            ..PixelModel::plain(64)
        };
        std::fs::write(&model, m.build(tmp.path()).unwrap()).unwrap();
    };
    write(1.0);
    let first = embed(&model, &img, &home, false);
    assert!(
        first.stderr.contains("model cache: not used")
            && first.stderr.contains("external data files"),
        "{}",
        first.stderr
    );
    assert!(cache_files(&home).is_empty(), "{:?}", cache_files(&home));
    // The same .onnx bytes with other external weights: another descriptor (a cache keyed on
    // the .onnx file alone would have returned the first one).
    let onnx_bytes = std::fs::read(&model).unwrap();
    let weights = std::fs::read(tmp.path().join("ext.weights")).unwrap();
    let reversed: Vec<u8> = weights.chunks(4).rev().flatten().copied().collect();
    std::fs::write(tmp.path().join("ext.weights"), reversed).unwrap();
    assert_eq!(std::fs::read(&model).unwrap(), onnx_bytes);
    let second = embed(&model, &img, &home, false);
    assert!(
        max_abs_diff(&first.descriptor, &second.descriptor) > 1e-4,
        "new external weights gave the old descriptor"
    );
    assert!(cache_files(&home).is_empty(), "{:?}", cache_files(&home));
}

#[test]
fn an_unwritable_cache_only_costs_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, weights) = write_micro_vit(tmp.path(), false);
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 40, 8);
    // `<cache home>/irtdb` is a file: the cache folder cannot be made (root ignores
    // permissions, so this is the portable way to refuse it).
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("irtdb"), b"not a folder").unwrap();
    let run = embed(&model, &img, &home, false);
    assert!(
        run.stderr.contains("ort-tensorrt: not caching the optimised model")
            && run.stderr.contains("ort-cache")
            && !run.stderr.contains("ignoring"),
        "{}",
        run.stderr
    );
    let diff = max_abs_diff(&run.descriptor, &reference_cls(&weights, &img));
    assert!(diff <= 1e-4, "uncached fallback vs reference forward differ by {diff}");
}

#[test]
fn entries_unused_for_a_month_are_removed_when_another_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let (a, _) = write_micro_vit_seeded(tmp.path(), 7);
    let (b, _) = write_micro_vit_seeded(tmp.path(), 8);
    let (c, _) = write_micro_vit_seeded(tmp.path(), 9);
    let img = tmp.path().join("x.png");
    write_picture(&img, 40, 40, 1);
    embed(&a, &img, &home, false);
    let entry_a = only_entry(&home);
    embed(&b, &img, &home, false);
    let entry_b = cache_files(&home).into_iter().find(|p| p != &entry_a).unwrap();
    let age = |p: &Path, days: u64| {
        let when = SystemTime::now() - Duration::from_secs(days * 24 * 3600);
        std::fs::File::open(p).unwrap().set_modified(when).unwrap();
    };
    // a: last used 40 days ago; b: 40 days ago too, but used now (a hit refreshes it).
    age(&entry_a, 40);
    age(&entry_b, 40);
    let hit = embed(&b, &img, &home, false);
    assert!(hit.stderr.contains("model cache: hit"), "{}", hit.stderr);
    let fresh = std::fs::metadata(&entry_b).unwrap().modified().unwrap();
    assert!(fresh.elapsed().unwrap() < Duration::from_secs(3600), "the hit did not refresh b");
    // Writing c's entry tidies the folder: a goes, b stays.
    let stored = embed(&c, &img, &home, false);
    assert!(stored.stderr.contains("model cache: stored"), "{}", stored.stderr);
    let files = cache_files(&home);
    assert!(!files.contains(&entry_a), "{files:?}");
    assert!(files.contains(&entry_b), "{files:?}");
    assert_eq!(files.len(), 2, "{files:?}");
}

#[test]
fn a_model_that_cannot_load_fails_with_its_error_and_leaves_nothing_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("cache");
    let img = tmp.path().join("x.png");
    write_picture(&img, 32, 32, 5);
    let garbage = tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x01garbage").unwrap();
    let out = run_expect(&mut embed_cmd(&garbage, &img, &home), 2);
    let err = stderr(&out);
    assert!(err.contains("garbage.onnx") && err.contains("model cache: miss"), "{err}");
    assert!(cache_files(&home).is_empty(), "{:?}", cache_files(&home));
}
