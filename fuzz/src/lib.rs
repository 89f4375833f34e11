//! Shared by the fuzz targets.
//!
//! libfuzzer-sys installs a panic hook that aborts the process, so it reports *every* panic as a
//! crash, including those irtdb catches on purpose: `decode_bytes` and `HnswIndex::load` run
//! third-party decoders under `catch_unwind` so that one hostile file costs that file only.
//! Targets that exercise such code call [`guarded`]: panics caught inside the code under test
//! are then what they are in irtdb (an `Err`), and only a panic that escapes it is a finding,
//! printed and turned into an abort for libFuzzer to record.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Runs `f`; a panic that escapes it is printed and aborts the process. Panics caught inside
/// `f` stay silent.
pub fn guarded(f: impl FnOnce()) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            *LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
        }))
    });
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        let message = LAST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
        eprintln!("panic escaped the code under test: {}", message.unwrap_or_default());
        std::process::abort();
    }
}
