//! Loading HNSW index files: `HnswIndex::load` on arbitrary file contents must return an index
//! or an error naming the file, never panic or abort (a query that meets damaged index files
//! rebuilds them from the database, but only if loading them fails cleanly).
//!
//! The first byte picks how the three files are made:
//! - even: all three (`.irtdb-hnsw` header, `.hnsw.graph`, `.hnsw.data`) are raw input, which
//!   exercises the header's own checks (magic, version, lengths, BLAKE3);
//! - odd, only with `IRTDB_FUZZ_HNSW_VOUCHED=1` in the environment (else as even): the graph and
//!   data files are raw input but the header is a valid one vouching for them (dimension, point
//!   count and parameters from the input too), so hnsw_rs's own loader sees the bytes. No damaged
//!   file can get there (it would have to match the BLAKE3 sums of a header that is itself
//!   checksummed); a crafted one can, and then hnsw_rs aborts within seconds: its loader sizes
//!   `Vec::with_capacity` from counts in the file (hnswio.rs `load_point_graph`), an allocation
//!   failure that no `catch_unwind` stops. Off by default so that the target keeps looking for
//!   findings that matter; see fuzz/README.md.
//!
//! hnsw_rs panics on bad input and `load` catches that (see `irtdb_fuzz::guarded`); a panic
//! that escapes `load`, or an abort (a huge allocation), is a finding.
//!
//! The rest is split into parts by little-endian u16 lengths. The header layout is the one
//! documented in `crates/index/src/hnsw.rs`.
#![no_main]

use irtdb_index::{HnswIndex, INDEX_FORMAT_VERSION};
use libfuzzer_sys::fuzz_target;

const BASENAME: &str = "f.db.hnsw-1";

/// Splits off a part whose length is the next u16 (clamped to what is left).
fn part<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
    let len = match rest {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    *rest = rest.get(2..).unwrap_or_default();
    let (p, r) = rest.split_at(len.min(rest.len()));
    *rest = r;
    p
}

/// A valid `.irtdb-hnsw` header for these graph and data files.
fn header(dim: u32, distance: u32, m: u32, count: u64, graph: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = b"IRTDBHNS".to_vec();
    for v in [INDEX_FORMAT_VERSION, distance, dim, m, 200, 16] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&count.to_le_bytes());
    for file in [graph, data] {
        h.extend_from_slice(&(file.len() as u64).to_le_bytes());
        h.extend_from_slice(blake3::hash(file).as_bytes());
    }
    for id in 0..count {
        h.extend_from_slice(&(id as i64 + 1).to_le_bytes());
    }
    let own = blake3::hash(&h);
    h.extend_from_slice(own.as_bytes());
    h
}

fuzz_target!(|input: &[u8]| irtdb_fuzz::guarded(|| one_input(input)));

fn one_input(input: &[u8]) {
    let [mode, params @ ..] = input else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    static VOUCHED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let vouched = *VOUCHED.get_or_init(|| std::env::var_os("IRTDB_FUZZ_HNSW_VOUCHED").is_some());
    let (meta, graph, data) = if mode % 2 == 0 || !vouched {
        let mut rest = params;
        (part(&mut rest).to_vec(), part(&mut rest).to_vec(), rest.to_vec())
    } else {
        let [dim, distance, m, count, rest @ ..] = params else { return };
        let mut rest: &[u8] = rest;
        let graph = part(&mut rest).to_vec();
        let data = rest.to_vec();
        let h = header(
            u32::from(*dim),
            u32::from(distance % 3),
            u32::from(*m),
            u64::from(*count),
            &graph,
            &data,
        );
        (h, graph, data)
    };
    for (ext, bytes) in [("irtdb-hnsw", &meta), ("hnsw.graph", &graph), ("hnsw.data", &data)] {
        std::fs::write(dir.path().join(format!("{BASENAME}.{ext}")), bytes).expect("write");
    }
    if let Ok(index) = HnswIndex::load(dir.path(), BASENAME) {
        // Whatever loads must answer a search without panicking.
        let q = vec![0.5f32; index.dim()];
        let _ = index.search(&q, 3, 16);
    }
}
