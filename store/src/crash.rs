//! Named crash points on the durable steps of commands, for crash tests of the real binary.
//!
//! Compiled in only with the `crash-points` feature (tests); then, when `STORE_CRASH_AT` equals
//! `<label>_<stage>`, the process aborts on the spot: no destructors, no cleanup, like a crash.
//! The points and what a crash there leaves are listed in docs/FORMAT.md §12.

/// Aborts if `STORE_CRASH_AT` is `<label>_<stage>` (only with the `crash-points` feature).
#[cfg(feature = "crash-points")]
pub(crate) fn point(label: &str, stage: &str) {
    if let Ok(target) = std::env::var("STORE_CRASH_AT") {
        if target.strip_prefix(label).and_then(|r| r.strip_prefix('_')) == Some(stage) {
            std::process::abort();
        }
    }
}

/// No crash points in this build.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn point(_label: &str, _stage: &str) {}
