//! The errors of this crate. Every variant names the file it is about, because the index pipeline
//! records them per image and a user reading `irtdb index` output must know which file to fix.

use std::io;
use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong with one file. The message says what is wrong and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or read.
    #[error("cannot read {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },

    /// The file has no bytes at all.
    #[error("empty file: {} (0 bytes; was it copied or downloaded completely?)", path.display())]
    Empty { path: PathBuf },

    /// The content is not in any format irtdb decodes (whatever its extension says).
    #[error(
        "not an image: {} (unrecognised format; irtdb reads JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC/HEIF, AVIF)",
        path.display()
    )]
    NotAnImage { path: PathBuf },

    /// The format was recognised but the data is damaged or ends early.
    #[error("truncated or corrupt image {}: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// A valid file using a feature the decoder does not support (e.g. an exotic TIFF compression).
    #[error("unsupported image {}: {detail} (convert it to PNG or JPEG)", path.display())]
    Unsupported { path: PathBuf, detail: String },

    /// The header declares more pixels than [`crate::DecodeLimits::max_pixels`] allows.
    #[error(
        "image too large: {} declares {width}×{height} = {pixels} pixels, over the limit of \
         {limit}; raise --max-pixels if it is genuine",
        path.display()
    )]
    TooLarge { path: PathBuf, width: u32, height: u32, pixels: u64, limit: u64 },

    /// Decoding would allocate more than [`crate::DecodeLimits::max_alloc_bytes`].
    #[error(
        "image needs too much memory to decode: {} ({detail}), over the limit of {limit} bytes; \
         raise the decode memory limit (max_alloc_bytes) if it is genuine",
        path.display()
    )]
    TooMuchMemory { path: PathBuf, detail: String, limit: u64 },

    /// The preprocessing settings are invalid (reported per file so that batch results line up).
    #[error("cannot preprocess {}: {detail}", path.display())]
    Preprocess { path: PathBuf, detail: String },
}

impl Error {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            Error::Io { path, .. }
            | Error::Empty { path }
            | Error::NotAnImage { path }
            | Error::Corrupt { path, .. }
            | Error::Unsupported { path, .. }
            | Error::TooLarge { path, .. }
            | Error::TooMuchMemory { path, .. }
            | Error::Preprocess { path, .. } => path,
        }
    }

    pub(crate) fn io(path: &Path, error: io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), error }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message, word for word: these reach users through `irtdb index` and the database.
    #[test]
    fn messages() {
        let path = PathBuf::from("g/a.jpg");
        let cases = [
            (
                Error::io(&path, io::Error::new(io::ErrorKind::PermissionDenied, "denied")),
                "cannot read g/a.jpg: denied",
            ),
            (
                Error::Empty { path: path.clone() },
                "empty file: g/a.jpg (0 bytes; was it copied or downloaded completely?)",
            ),
            (
                Error::NotAnImage { path: path.clone() },
                "not an image: g/a.jpg (unrecognised format; irtdb reads JPEG, PNG, WebP, BMP, \
                 TIFF, GIF, HEIC/HEIF, AVIF)",
            ),
            (
                Error::Corrupt { path: path.clone(), detail: "bad Huffman code".into() },
                "truncated or corrupt image g/a.jpg: bad Huffman code",
            ),
            (
                Error::Unsupported { path: path.clone(), detail: "JPEG-in-TIFF".into() },
                "unsupported image g/a.jpg: JPEG-in-TIFF (convert it to PNG or JPEG)",
            ),
            (
                Error::TooLarge {
                    path: path.clone(),
                    width: 20_000,
                    height: 10_000,
                    pixels: 200_000_000,
                    limit: 100_000_000,
                },
                "image too large: g/a.jpg declares 20000×10000 = 200000000 pixels, over the limit \
                 of 100000000; raise --max-pixels if it is genuine",
            ),
            (
                Error::TooMuchMemory {
                    path: path.clone(),
                    detail: "needs 3 GB".into(),
                    limit: 1024,
                },
                "image needs too much memory to decode: g/a.jpg (needs 3 GB), over the limit of \
                 1024 bytes; raise the decode memory limit (max_alloc_bytes) if it is genuine",
            ),
            (
                Error::Preprocess {
                    path: path.clone(),
                    detail: "crop_pct must be in (0, 1]".into(),
                },
                "cannot preprocess g/a.jpg: crop_pct must be in (0, 1]",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
            assert_eq!(error.path(), path);
        }
    }
}
