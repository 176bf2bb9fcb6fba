//! Crash points for testing the commit protocol: `HOOKLAKE_CRASH_AT=<point>` makes the process
//! abort (as abruptly as `kill -9`) the first time it reaches that point.
//!
//! Points: `flush-before-rename` (files written and fsynced under temporary names),
//! `flush-between-renames` (one file published, others not), `flush-after-renames` (every file
//! published, no commit record), `flush-after-commit` (committed, log not yet truncated);
//! on a remote lake `upload-mid-batch` (one file of a batch uploaded, others not) and
//! `flush-after-upload` (every file uploaded, no Delta commit).
//! Invariant: when the variable is unset, [`hit`] is a read of a cached `None`.

use std::sync::OnceLock;

/// Aborts the process if `point` is the configured crash point.
pub fn hit(point: &str) {
    static CONFIGURED: OnceLock<Option<String>> = OnceLock::new();
    let configured = CONFIGURED.get_or_init(|| std::env::var("HOOKLAKE_CRASH_AT").ok());
    if configured.as_deref() == Some(point) {
        eprintln!("HOOKLAKE_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
