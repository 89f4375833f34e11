//! HNSW: self-matches, recall against exact search, save/load, and bad files.

use std::path::Path;
use std::sync::OnceLock;

use irtdb_index::{exact_search, Error, HnswIndex, HnswParams, UpdateStats};

use crate::util::{clustered, descriptor_like_split, isotropic_split};

const N: usize = 3000;
const DIM: usize = 128;

struct Fixture {
    data: Vec<f32>,
    ids: Vec<i64>,
    queries: Vec<f32>,
    fast: HnswIndex,
}

/// One build shared by the tests (the test profile compiles this crate unoptimised).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Descriptor-like: 6 clusters of ~500, each spread along 48 directions of its own.
        let (data, queries) = descriptor_like_split(20, N, 200, DIM, 6, 48);
        // External ids unrelated to row numbers, to catch any mix-up.
        let ids: Vec<i64> = (0..N as i64).map(|i| 1_000_000 - 7 * i).collect();
        let fast = HnswIndex::build(&data, DIM, &ids, &HnswParams::default()).unwrap();
        Fixture { data, ids, queries, fast }
    })
}

fn recall_at_10(index: &HnswIndex, data: &[f32], ids: &[i64], queries: &[f32], ef: usize) -> f64 {
    let truth = exact_search(data, DIM, queries, 10);
    let got = index.search_batch(queries, 10, ef);
    let mut hits = 0;
    for (t, g) in truth.iter().zip(&got) {
        hits +=
            t.iter().filter(|(row, _)| g.iter().any(|(id, _)| *id == ids[*row as usize])).count();
    }
    hits as f64 / (10 * truth.len()) as f64
}

#[test]
fn every_vector_finds_itself_first() {
    let f = fixture();
    assert_eq!((f.fast.len(), f.fast.dim()), (N, DIM));
    {
        let index = &f.fast;
        let results = index.search_batch(&f.data, 10, 64);
        for (row, res) in results.iter().enumerate() {
            assert_eq!(res[0].0, f.ids[row], "row {row}: {:?}", &res[..3]);
            assert!((res[0].1 - 1.0).abs() < 1e-5, "row {row} self score {}", res[0].1);
            assert!(res.windows(2).all(|w| w[0].1 >= w[1].1), "scores not descending");
        }
    }
}

#[test]
fn recall_at_10_against_exact() {
    let f = fixture();
    for ef in [64, 100] {
        let fast = recall_at_10(&f.fast, &f.data, &f.ids, &f.queries, ef);
        eprintln!("recall@10 ef={ef}: {fast:.4}");
        assert!(fast >= 0.95, "recall@10 at ef {ef}: {fast}");
    }
}

/// Full-rank isotropic clusters are the worst case for a graph index (neighbours nearly
/// equidistant in 128 dimensions); recall is lower there at large n; at this size it still clears the same floor.
#[test]
fn recall_on_isotropic_clusters_is_reported() {
    let (data, queries) = isotropic_split(22, 2000, 100, DIM, 4, 0.1);
    let ids: Vec<i64> = (0..2000).collect();
    let index = HnswIndex::build(&data, DIM, &ids, &HnswParams::default()).unwrap();
    for ef in [64, 100, 200] {
        let r = recall_at_10(&index, &data, &ids, &queries, ef);
        eprintln!("isotropic recall@10 ef={ef}: {r:.4}");
        assert!(r >= 0.95, "isotropic recall@10 at ef {ef}: {r}");
    }
}

#[test]
fn scores_are_inner_products() {
    let f = fixture();
    let q = &f.queries[..DIM];
    for (id, score) in f.fast.search(q, 10, 64) {
        let row = f.ids.iter().position(|&x| x == id).unwrap();
        let dot: f32 = f.data[row * DIM..][..DIM].iter().zip(q).map(|(a, b)| a * b).sum();
        assert!((dot - score).abs() < 1e-5);
    }
    assert!(f.fast.search(q, 0, 64).is_empty());
    assert_eq!(f.fast.search(q, 5, 1).len(), 5, "ef is raised to k");
}

#[test]
fn save_load_gives_identical_results() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    {
        let (index, base) = (&f.fast, "fast");
        let names = index.save(dir.path(), base).unwrap();
        assert_eq!(names, HnswIndex::file_names(base));
        for name in &names {
            assert!(dir.path().join(name).is_file(), "{name}");
        }
        let loaded = HnswIndex::load(dir.path(), base).unwrap();
        assert_eq!((loaded.len(), loaded.dim(), loaded.params()), (N, DIM, index.params()));
        assert_eq!(loaded.ids(), index.ids());
        let before = index.search_batch(&f.queries, 10, 64);
        let after = loaded.search_batch(&f.queries, 10, 64);
        assert_eq!(before, after, "{base}");
        // A loaded index saves again over its own file and reloads to the same results.
        loaded.save(dir.path(), base).unwrap();
        let again = HnswIndex::load(dir.path(), base).unwrap();
        assert_eq!(again.search_batch(&f.queries, 10, 64), before);
    }
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Saves a small index into a fresh directory.
fn small_saved(base: &str) -> (tempfile::TempDir, HnswIndex) {
    let data = clustered(30, 300, 16, 5, 0.2);
    let ids: Vec<i64> = (0..300).collect();
    let index = HnswIndex::build(&data, 16, &ids, &HnswParams::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path(), base).unwrap();
    (dir, index)
}

/// Asserts that loading fails with an error whose message names `file`.
fn assert_load_error_names(dir: &Path, base: &str, file: &str) -> Error {
    let result = std::panic::catch_unwind(|| HnswIndex::load(dir, base));
    let err = result.expect("load panicked").expect_err("load succeeded on a bad file");
    let msg = err.to_string();
    assert!(msg.contains(file), "error does not name {file}: {msg}");
    err
}

#[test]
fn missing_files_are_errors_naming_the_file() {
    for name in HnswIndex::file_names("idx") {
        let (dir, _) = small_saved("idx");
        std::fs::remove_file(dir.path().join(&name)).unwrap();
        let err = assert_load_error_names(dir.path(), "idx", &name);
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }
    let empty = tempfile::tempdir().unwrap();
    assert_load_error_names(empty.path(), "nothing", "nothing.irtdb-hnsw");
}

#[test]
fn truncated_files_are_errors_naming_the_file() {
    for name in HnswIndex::file_names("idx") {
        for keep in [0usize, 7, 100] {
            let (dir, _) = small_saved("idx");
            let path = dir.path().join(&name);
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..keep.min(bytes.len() - 1)]).unwrap();
            let err = assert_load_error_names(dir.path(), "idx", &name);
            assert!(matches!(err, Error::CorruptIndex { .. }), "{name} keep {keep}: {err:?}");
        }
    }
}

#[test]
fn garbage_files_are_errors_naming_the_file() {
    for name in HnswIndex::file_names("idx") {
        let (dir, _) = small_saved("idx");
        let path = dir.path().join(&name);
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        // Same length, different content: only the checksums can tell.
        let garbage: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        let err = assert_load_error_names(dir.path(), "idx", &name);
        assert!(matches!(err, Error::CorruptIndex { .. }), "{name}: {err:?}");
        // One flipped byte in the middle.
        let (dir, _) = small_saved("idx");
        let path = dir.path().join(&name);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
        assert_load_error_names(dir.path(), "idx", &name);
    }
}

#[test]
fn other_format_version_is_refused() {
    let (dir, _) = small_saved("idx");
    let path = dir.path().join("idx.irtdb-hnsw");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&path, bytes).unwrap();
    let err = assert_load_error_names(dir.path(), "idx", "idx.irtdb-hnsw");
    assert!(matches!(err, Error::FormatVersion { found: 99, .. }), "{err:?}");
    assert!(err.to_string().contains("rebuild"), "{err}");
}

/// Rewrites the file's trailing checksum after `patch`, so that only the structural checks
/// can refuse it (what a crafted file, unlike a damaged one, gets past).
fn patched(dir: &Path, patch: impl FnOnce(&mut Vec<u8>)) -> Error {
    let path = dir.join("idx.irtdb-hnsw");
    let mut b = std::fs::read(&path).unwrap();
    let body = b.len() - 32;
    b.truncate(body);
    patch(&mut b);
    let sum = *blake3::hash(&b).as_bytes();
    b.extend_from_slice(&sum);
    std::fs::write(&path, b).unwrap();
    assert_load_error_names(dir, "idx", "idx.irtdb-hnsw")
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// Offsets of the sections of a saved `small_saved` file (dim 16, m 16, 300 rows).
struct Layout {
    rows: usize,
    levels: usize,
    layer0: usize,
    upper: usize,
}

fn layout(b: &[u8]) -> Layout {
    let rows = u64::from_le_bytes(b[32..40].try_into().unwrap()) as usize;
    let dim = u32_at(b, 12) as usize;
    let levels = 64 + 9 * rows;
    let layer0 = levels + rows + 4 * dim * rows;
    let upper = layer0 + rows * 4 * 33;
    Layout { rows, levels, layer0, upper }
}

#[test]
fn crafted_files_with_valid_checksums_are_refused() {
    type Craft = (&'static str, Box<dyn FnOnce(&mut Vec<u8>)>);
    let crafts: Vec<Craft> = vec![
        ("a huge row count", Box::new(|b| b[32..40].copy_from_slice(&u64::MAX.to_le_bytes()))),
        ("a huge dimension", Box::new(|b| b[12..16].copy_from_slice(&u32::MAX.to_le_bytes()))),
        ("m out of range", Box::new(|b| b[16..20].copy_from_slice(&1u32.to_le_bytes()))),
        ("entry out of range", Box::new(|b| b[48..52].copy_from_slice(&5000u32.to_le_bytes()))),
        ("wrong live count", Box::new(|b| b[56..64].copy_from_slice(&7u64.to_le_bytes()))),
        ("a tombstone flag of 2", Box::new(|b| b[64 + 8 * 300] = 2)),
        (
            "a link count above capacity",
            Box::new(|b| {
                let l = layout(b);
                b[l.layer0..l.layer0 + 4].copy_from_slice(&1000u32.to_le_bytes());
            }),
        ),
        (
            "a link to a row that does not exist",
            Box::new(|b| {
                let l = layout(b);
                b[l.layer0 + 4..l.layer0 + 8].copy_from_slice(&(l.rows as u32).to_le_bytes());
            }),
        ),
        (
            "an upper link to a row without that layer",
            Box::new(|b| {
                let l = layout(b);
                let low = (0..l.rows).find(|&r| b[l.levels + r] == 0).unwrap();
                // The first upper list belongs to the first row with a level; give it a link to a
                // layer-0-only row.
                b[l.upper..l.upper + 4].copy_from_slice(&1u32.to_le_bytes());
                b[l.upper + 4..l.upper + 8].copy_from_slice(&(low as u32).to_le_bytes());
            }),
        ),
        (
            "a level above the cap",
            Box::new(|b| {
                let l = layout(b);
                b[l.levels] = 200;
            }),
        ),
        (
            "a NaN in a vector",
            Box::new(|b| {
                let l = layout(b);
                b[l.levels + l.rows..l.levels + l.rows + 4]
                    .copy_from_slice(&f32::NAN.to_le_bytes());
            }),
        ),
        (
            "a live id in two rows",
            Box::new(|b| {
                let (first, second) = (64, 72);
                let id: [u8; 8] = b[first..first + 8].try_into().unwrap();
                b[second..second + 8].copy_from_slice(&id);
            }),
        ),
    ];
    for (what, craft) in crafts {
        let (dir, _) = small_saved("idx");
        let err = patched(dir.path(), craft);
        assert!(matches!(err, Error::CorruptIndex { .. }), "{what}: {err:?}");
        eprintln!("{what}: {err}");
    }
}

#[test]
fn a_format_1_file_asks_for_a_rebuild() {
    let dir =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/compat_data/index_v1");
    let err = HnswIndex::load(&dir, "small").unwrap_err();
    assert!(matches!(err, Error::FormatVersion { found: 1, supported: 2, .. }), "{err:?}");
}

#[test]
fn removed_ids_never_come_back_and_inserted_ones_are_found() {
    let f = fixture();
    let mut index = HnswIndex::build(&f.data, DIM, &f.ids, &HnswParams::default()).unwrap();
    let gone: Vec<i64> = f.ids.iter().step_by(3).copied().collect();
    assert_eq!(index.remove(&gone), gone.len());
    assert_eq!(index.remove(&gone), 0, "removing twice counts once");
    assert_eq!((index.len(), index.tombstones()), (N - gone.len(), gone.len()));
    let gone_set: std::collections::HashSet<i64> = gone.iter().copied().collect();
    for hits in index.search_batch(&f.data, 10, 64) {
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|(id, _)| !gone_set.contains(id)), "a removed id came back");
    }
    // Re-insert a removed row under a new id, and move a live id to another vector.
    let row = 0; // removed above (step_by(3) starts at 0)
    let v = f.data[row * DIM..(row + 1) * DIM].to_vec();
    index.insert(&v, &[42]).unwrap();
    assert_eq!(index.search(&v, 1, 64)[0].0, 42);
    let live_id = f.ids[1];
    index.insert(&v, &[live_id]).unwrap();
    let hits = index.search(&v, 2, 64);
    let ids: Vec<i64> = hits.iter().map(|h| h.0).collect();
    assert!(ids.contains(&live_id) && ids.contains(&42), "{hits:?}");
    let old = &f.data[DIM..2 * DIM];
    assert!(index.search(old, 3, 64).iter().all(|h| h.0 != live_id || h.1 > 0.999));
    assert_eq!(index.ids().iter().filter(|&&i| i == live_id).count(), 1);
    // Tombstones survive a save and load.
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path(), "t").unwrap();
    let loaded = HnswIndex::load(dir.path(), "t").unwrap();
    assert_eq!((loaded.len(), loaded.tombstones()), (index.len(), index.tombstones()));
    assert_eq!(loaded.search_batch(&f.queries, 10, 64), index.search_batch(&f.queries, 10, 64));
}

/// Many rounds of changes without a rebuild: 20 rounds that each remove 2 % of the live
/// vectors and insert 2 % new ones; recall against exact search over the live set stays at the
/// level of a fresh build, and compaction gives the same answers as a fresh build would.
#[test]
fn recall_holds_after_many_changes() {
    let (pool, queries) = descriptor_like_split(23, 2 * N, 200, DIM, 12, 48);
    let mut live: Vec<usize> = (0..N).collect();
    let mut next = N;
    let ids_of = |rows: &[usize]| rows.iter().map(|&r| r as i64).collect::<Vec<_>>();
    let data_of = |rows: &[usize]| -> Vec<f32> {
        rows.iter().flat_map(|&r| pool[r * DIM..(r + 1) * DIM].iter().copied()).collect()
    };
    let mut index =
        HnswIndex::build(&data_of(&live), DIM, &ids_of(&live), &HnswParams::default()).unwrap();
    for round in 0..20 {
        let step = N / 50;
        let out: Vec<usize> =
            (0..step).map(|i| live.remove((i * 37 + round * 11) % live.len())).collect();
        let inn: Vec<usize> = (next..next + step).collect();
        next += step;
        index.remove(&ids_of(&out));
        index.insert(&data_of(&inn), &ids_of(&inn)).unwrap();
        live.extend(inn);
    }
    assert_eq!(index.len(), live.len());
    assert!(index.tombstones() > 0);
    let live_data = data_of(&live);
    let live_ids = ids_of(&live);
    let r = recall_at_10(&index, &live_data, &live_ids, &queries, 64);
    let fresh = HnswIndex::build(&live_data, DIM, &live_ids, &HnswParams::default()).unwrap();
    let r_fresh = recall_at_10(&fresh, &live_data, &live_ids, &queries, 64);
    eprintln!(
        "recall@10 at ef 64 after 20 rounds of changes: {r:.4} ({} tombstones); fresh build {r_fresh:.4}",
        index.tombstones()
    );
    assert!(r >= 0.95 && r >= r_fresh - 0.02, "{r} vs fresh {r_fresh}");
    assert!(index.needs_compaction(), "{} tombstones of {} rows", index.tombstones(), index.rows());
    let compact = index.compacted().unwrap();
    assert_eq!((compact.len(), compact.tombstones()), (live.len(), 0));
    let r_compact = recall_at_10(&compact, &live_data, &live_ids, &queries, 64);
    assert!(r_compact >= 0.95, "{r_compact}");
}

#[test]
fn update_to_applies_the_difference() {
    let data = clustered(33, 400, 16, 5, 0.2);
    let ids: Vec<i64> = (0..400).collect();
    let mut index = HnswIndex::build(&data, 16, &ids, &HnswParams::default()).unwrap();
    // Target: rows 0..350 (50 removed), row 7 moved to row 399's vector, 10 new ids.
    let mut t_data = data[..350 * 16].to_vec();
    let mut t_ids: Vec<i64> = ids[..350].to_vec();
    t_data[7 * 16..8 * 16].copy_from_slice(&data[399 * 16..400 * 16]);
    t_data.extend_from_slice(&data[350 * 16..360 * 16]);
    t_ids.extend(1000..1010);
    let stats = index.update_to(&t_data, 16, &t_ids).unwrap();
    assert_eq!(stats, UpdateStats { added: 10, changed: 1, removed: 50, unchanged: 349 });
    let mut got = index.ids();
    got.sort_unstable();
    let mut want = t_ids.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    for (row, q) in t_data.chunks_exact(16).enumerate() {
        let hits = index.search(q, 2, 64);
        assert!(hits.iter().any(|h| h.0 == t_ids[row]), "row {row}: {hits:?}");
    }
    let again = index.update_to(&t_data, 16, &t_ids).unwrap();
    assert_eq!(again, UpdateStats { unchanged: 360, ..Default::default() });
    assert!(index.update_to(&t_data, 8, &t_ids).is_err());
}

#[test]
fn save_into_a_missing_directory_is_an_error() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = f.fast.save(&missing, "idx").unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(f.fast.save(dir.path(), "../escape").is_err());
}
