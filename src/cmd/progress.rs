//! The progress bar that long jobs (index, eval) draw on stderr: hidden when stderr is not a
//! terminal and under `--json`; stage messages print above it.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use irtdb_engine::index::Progress;

/// A progress bar on stderr (hidden when stderr is not a terminal or with --json).
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    pub fn new(quiet: bool) -> Self {
        let bar = ProgressBar::hidden();
        Self { bar, quiet }
    }
}

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
    fn embed_finish(&self) {
        self.bar.finish_and_clear();
    }
}
