//! Paths in reports, serialised as (lossy) UTF-8 text.
//!
//! serde refuses to serialise a `Path` that is not valid UTF-8, so one file name with a stray
//! Latin-1 byte in a gallery made `irtdb index --json` fail with "path contains invalid UTF-8
//! characters" *after* the whole index had been built. Reports are for people and scripts; a
//! replacement character in a name is better than no report. (The database stores such names
//! lossily too, and the scan reports them; see `irtdb_image::scan`.)

use std::path::{Path, PathBuf};

use serde::Serializer;

pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

pub fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => path(p, s),
        None => s.serialize_none(),
    }
}

pub fn path_problems<S: Serializer>(v: &[(PathBuf, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(p, m)| (p.to_string_lossy(), m)))
}
