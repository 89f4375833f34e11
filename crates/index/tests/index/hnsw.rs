//! HNSW: self-matches, recall against exact search, save/load, and bad files.

use std::path::Path;
use std::sync::OnceLock;

use irtdb_index::{exact_search, DistanceKind, Error, HnswIndex, HnswParams};

use crate::util::{clustered, descriptor_like_split, isotropic_split};

const N: usize = 3000;
const DIM: usize = 128;

struct Fixture {
    data: Vec<f32>,
    ids: Vec<i64>,
    queries: Vec<f32>,
    fast: HnswIndex,
    stock: HnswIndex,
}

/// One build per distance shared by the tests (the test profile compiles this crate unoptimised).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Descriptor-like: 6 clusters of ~500, each spread along 48 directions of its own.
        let (data, queries) = descriptor_like_split(20, N, 200, DIM, 6, 48);
        // External ids unrelated to row numbers, to catch any mix-up.
        let ids: Vec<i64> = (0..N as i64).map(|i| 1_000_000 - 7 * i).collect();
        let fast = HnswIndex::build(&data, DIM, &ids, &HnswParams::default()).unwrap();
        let stock_params = HnswParams { distance: DistanceKind::Stock, ..Default::default() };
        let stock = HnswIndex::build(&data, DIM, &ids, &stock_params).unwrap();
        Fixture { data, ids, queries, fast, stock }
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
    for index in [&f.fast, &f.stock] {
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
        let stock = recall_at_10(&f.stock, &f.data, &f.ids, &f.queries, ef);
        eprintln!("recall@10 ef={ef}: fast distance {fast:.4}, stock DistDot {stock:.4}");
        assert!(fast >= 0.95, "fast distance recall@10 at ef {ef}: {fast}");
        assert!(stock >= 0.95, "stock distance recall@10 at ef {ef}: {stock}");
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
    for (index, base) in [(&f.fast, "fast"), (&f.stock, "stock")] {
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
        // A loaded index saves again (hnsw_rs refuses to overwrite a reloaded dump's files by
        // name; the temporary-name scheme must cope) and reloads to the same results.
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
fn files_from_another_generation_are_detected() {
    let (dir, _) = small_saved("a");
    let other = clustered(31, 300, 16, 5, 0.2);
    let ids: Vec<i64> = (0..300).collect();
    let b = HnswIndex::build(&other, 16, &ids, &HnswParams::default()).unwrap();
    b.save(dir.path(), "b").unwrap();
    std::fs::copy(dir.path().join("b.hnsw.data"), dir.path().join("a.hnsw.data")).unwrap();
    assert_load_error_names(dir.path(), "a", "a.hnsw.data");
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

/// A graph file that passes this crate's checks (its hash is re-vouched in the header) but is
/// garbage to hnsw_rs: the hnsw_rs error (or panic) must come back as an error, not a panic.
#[test]
fn hnsw_rs_failures_behind_a_valid_header_are_errors() {
    let (dir, _) = small_saved("idx");
    let graph = dir.path().join("idx.hnsw.graph");
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&graph, &garbage).unwrap();
    // Re-vouch: patch the graph length and hash in the header, then its trailing hash.
    let meta = dir.path().join("idx.irtdb-hnsw");
    let mut h = std::fs::read(&meta).unwrap();
    h[40..48].copy_from_slice(&(garbage.len() as u64).to_le_bytes());
    h[48..80].copy_from_slice(blake3::hash(&garbage).as_bytes());
    let body_len = h.len() - 32;
    let trailer = *blake3::hash(&h[..body_len]).as_bytes();
    h[body_len..].copy_from_slice(&trailer);
    std::fs::write(&meta, h).unwrap();
    let err = assert_load_error_names(dir.path(), "idx", "idx.hnsw.graph");
    assert!(matches!(err, Error::Hnsw { .. }), "{err:?}");
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
