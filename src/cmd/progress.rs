//! The progress bar that long jobs (index, eval) draw on stderr: hidden when stderr is not a
//! terminal and under `--json`; stage messages print above it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use irtdb_engine::index::Progress;

/// A progress bar on stderr (hidden when stderr is not a terminal or with --json).
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
    downloads: Downloads,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::hidden();
        Self { bar, quiet, downloads: Downloads::new(quiet) }
    }
}

/// Model downloads on stderr: bytes, rate and ETA (hidden under --json and off a terminal);
/// remarks (retries, cache fall-backs) print unless quiet.
pub struct Downloads {
    bar: ProgressBar,
    quiet: bool,
}

impl Downloads {
    pub fn new(quiet: bool) -> Self {
        Self { bar: ProgressBar::hidden(), quiet }
    }
}

impl irtdb_hub::Progress for Downloads {
    fn download_start(&self, file: &str, total: Option<u64>, resumed_from: u64) {
        if self.quiet {
            return;
        }
        if resumed_from > 0 {
            eprintln!("resuming {file} at {} bytes", resumed_from);
        } else {
            eprintln!("downloading {file}");
        }
        self.bar.reset();
        self.bar.set_length(total.unwrap_or(0));
        self.bar.set_position(resumed_from);
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  ETA {eta}",
            )
            .expect("valid template"),
        );
    }
    fn downloaded(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
    fn download_finish(&self) {
        self.bar.finish_and_clear();
        self.bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    fn note(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }
}

/// Forwards the download reports of a job's progress to its [`Downloads`].
macro_rules! forward_downloads {
    ($t:ty) => {
        impl irtdb_hub::Progress for $t {
            fn download_start(&self, file: &str, total: Option<u64>, from: u64) {
                self.downloads.download_start(file, total, from)
            }
            fn downloaded(&self, bytes: u64) {
                self.downloads.downloaded(bytes)
            }
            fn download_finish(&self) {
                self.downloads.download_finish()
            }
            fn note(&self, message: &str) {
                self.downloads.note(message)
            }
        }
    };
}
pub(crate) use forward_downloads;

forward_downloads!(Bar);

impl Progress for Bar {
    fn stage(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }
    fn embed_start(&self, total: u64) {
        if self.quiet {
            return;
        }
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.set_style(
            ProgressStyle::with_template(
                "embedding {bar:30} {pos}/{len} images  {per_sec}  ETA {eta}",
            )
            .expect("valid template"),
        );
        self.bar.enable_steady_tick(Duration::from_millis(250));
    }
    fn embedded(&self, n: u64) {
        self.bar.inc(n);
    }
    fn scanned(&self, files: u64) {
        // Big trees only: a line every 10,000 files found.
        if !self.quiet && files > 0 && files.is_multiple_of(10_000) {
            self.bar.suspend(|| eprintln!("  {files} image files found so far"));
        }
    }
    fn embed_finish(&self) {
        self.bar.finish_and_clear();
    }
}
