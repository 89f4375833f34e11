//! The one error type of this crate.
//!
//! Every variant carries the fields a caller needs to act on it (which file, which dimension, how
//! many samples), and the messages say what to do, because most of them reach a user of the `irtdb`
//! CLI verbatim through anyhow's `{:#}`.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from PCA fitting, HNSW building, saving and loading.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// PCA to `needed - 1` dimensions was asked for with only `n` samples: it needs at least
    /// `needed` (strictly more samples than output dimensions).
    #[error(
        "PCA to {out} dimensions needs more than {out} images, the collection has {n}; \
         index more images or pass --dim 0",
        out = .needed - 1
    )]
    TooFewSamples {
        /// Samples available.
        n: usize,
        /// Samples required (`out_dim + 1`).
        needed: usize,
    },

    /// A buffer or vector does not have the length its stated shape implies.
    #[error("{what}: expected {expected} values, got {got}")]
    DimensionMismatch {
        /// What was being checked, e.g. "HNSW build data (n × dim)".
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },

    /// An argument is out of range (k, m, out_dim, an empty collection, a non-finite value…).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An I/O error on a named file or directory. The message always names the path (fs-err's
    /// errors already do; others get it prefixed).
    #[error("{}", io_message(path, source))]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// An index file exists but its content is not what this build wrote: truncated, garbage,
    /// from another index generation, or mismatched with its companion files.
    #[error("index file {} is corrupt ({reason}); rebuild the index with `irtdb index`", path.display())]
    CorruptIndex {
        /// The offending file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },

    /// An index file written by another (older or newer) format version.
    #[error(
        "index file {} has format version {found}, this build reads version {supported}; \
         rebuild the index with `irtdb index`",
        path.display()
    )]
    FormatVersion {
        /// The offending file.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Version this build reads and writes ([`crate::INDEX_FORMAT_VERSION`]).
        supported: u32,
    },

    /// A linear-algebra step (eigendecomposition, linfa's truncated SVD) failed.
    #[error("linear algebra failed while {action}: {message}")]
    Linalg {
        /// What was being done.
        action: &'static str,
        /// The library's message.
        message: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::CorruptIndex { path: path.into(), reason: reason.into() }
    }
}

fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    let text = source.to_string();
    let shown = path.display().to_string();
    if text.contains(&shown) {
        text
    } else {
        format!("{shown}: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_few_samples_message() {
        let e = Error::TooFewSamples { n: 57, needed: 129 };
        assert_eq!(
            e.to_string(),
            "PCA to 128 dimensions needs more than 128 images, the collection has 57; \
             index more images or pass --dim 0"
        );
    }

    #[test]
    fn io_message_names_the_file() {
        let e = Error::io("/x/y.hnsw.graph", std::io::ErrorKind::NotFound.into());
        assert!(e.to_string().starts_with("/x/y.hnsw.graph: "), "{e}");
        // fs-err errors already name the path; it is not repeated.
        let source = fs_err::File::open("/nonexistent/y.hnsw.graph").unwrap_err();
        let e = Error::io("/nonexistent/y.hnsw.graph", source);
        assert_eq!(e.to_string().matches("/nonexistent/y.hnsw.graph").count(), 1, "{e}");
    }
}
