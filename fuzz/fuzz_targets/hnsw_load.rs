//! Loading HNSW index files: `HnswIndex::load` on arbitrary file contents must return an index
//! or an error naming the file, never panic or abort, and whatever loads must answer searches
//! (a query that meets damaged index files rebuilds them from the database, but only if loading
//! them fails cleanly).
//!
//! The first byte picks how the file is made from the rest of the input:
//! - even: the rest is the file as it is, which mostly exercises the magic, version, length and
//!   checksum checks;
//! - odd: the rest is the file *without* its trailing BLAKE3, and the target appends a valid
//!   one: a crafted file, which only the structural validation (counts, levels, entry point,
//!   every link) stands between and a search. There is no checksum shortcut to rely on.
//!
//! The layout is documented in `crates/index/src/hnsw/file.rs`.
#![no_main]

use irtdb_index::HnswIndex;
use libfuzzer_sys::fuzz_target;

const BASENAME: &str = "f.db.hnsw-1";

fuzz_target!(|input: &[u8]| irtdb_fuzz::guarded(|| one_input(input)));

fn one_input(input: &[u8]) {
    let [mode, rest @ ..] = input else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let file =
        if mode % 2 == 0 { rest.to_vec() } else { [rest, blake3::hash(rest).as_bytes()].concat() };
    std::fs::write(dir.path().join(format!("{BASENAME}.irtdb-hnsw")), file).expect("write");
    if let Ok(mut index) = HnswIndex::load(dir.path(), BASENAME) {
        let q = vec![0.5f32; index.dim()];
        let _ = index.search(&q, 3, 16);
        let ids = index.ids();
        index.remove(&ids[..ids.len().min(1)]);
        let _ = index.search(&q, 3, 16);
    }
}
