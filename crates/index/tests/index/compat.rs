//! Index files of each released format version stay loadable (tantivy's compat-test idea).
//!
//! `tests/compat_data/index_v{N}/` holds a tiny index written by format version N. If the
//! directory for the current [`INDEX_FORMAT_VERSION`] is missing, this test writes it (commit the
//! result); afterwards it must keep loading. Changing the layout in `src/hnsw/file.rs` breaks
//! this test — bump the version then. `index_v1` (hnsw_rs's dump) is kept to check that the
//! old format is refused with a version error (`a_format_1_file_asks_for_a_rebuild`), which
//! makes the engine rebuild from the database.

use std::path::PathBuf;

use irtdb_index::{HnswIndex, HnswParams, INDEX_FORMAT_VERSION};

use crate::util::clustered;

#[test]
fn current_format_fixture_loads() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat_data")
        .join(format!("index_v{INDEX_FORMAT_VERSION}"));
    let data = clustered(40, 200, 8, 4, 0.3);
    let ids: Vec<i64> = (0..200).map(|i| i * 10).collect();
    if !dir.join("small.irtdb-hnsw").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let index = HnswIndex::build(&data, 8, &ids, &HnswParams::default()).unwrap();
        index.save(&dir, "small").unwrap();
        eprintln!("wrote compat fixture {}", dir.display());
    }
    let index = HnswIndex::load(&dir, "small").unwrap();
    assert_eq!((index.len(), index.dim()), (200, 8));
    let mut self_hits = 0;
    for (row, q) in data.chunks_exact(8).enumerate() {
        let res = index.search(q, 1, 50);
        self_hits += usize::from(res[0].0 == ids[row]);
    }
    assert!(self_hits >= 198, "{self_hits} of 200 self-matches");
}
