//! Named crash points on the durable steps of commands, for crash tests of the real binary.
//!
//! Compiled in only with the `crash-points` feature (tests); then, when `STORE_CRASH_AT` equals
//! `<label>_<stage>`, the process aborts on the spot: no destructors, no cleanup, like a crash.
//! `<label>_<stage>@N` aborts the N-th time the point is reached instead of the first.
//! The points and what a crash there leaves are listed in docs/FORMAT.md §12.
//!
//! The same points pause: when `STORE_PAUSE_AT` names one, the process stops itself (SIGSTOP)
//! there, the first time, so a test knows exactly where a process stands while it acts beside it
//! (a paused writer, a suspended laptop); SIGCONT resumes it.

/// Aborts if `STORE_CRASH_AT` is `<label>_<stage>` or `<label>_<stage>@N` (only with the
/// `crash-points` feature).
#[cfg(feature = "crash-points")]
pub(crate) fn point(label: &str, stage: &str) {
    static REACHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if let Ok(target) = std::env::var("STORE_PAUSE_AT") {
        if target.strip_prefix(label).and_then(|r| r.strip_prefix('_')) == Some(stage)
            && !PAUSED.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::STOP,
            );
        }
    }
    if let Ok(target) = std::env::var("STORE_CRASH_AT") {
        let (name, nth) = match target.split_once('@') {
            Some((name, n)) => (name, n.parse().unwrap_or(1)),
            None => (target.as_str(), 1),
        };
        if name.strip_prefix(label).and_then(|r| r.strip_prefix('_')) == Some(stage)
            && REACHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == nth
        {
            std::process::abort();
        }
    }
}

/// No crash points in this build.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub(crate) fn point(_label: &str, _stage: &str) {}
