//! SIGINT and SIGTERM during the commands that write or read for long (snapshot, restore, check,
//! prune, repair, forget, stats): the first asks the engine to stop at its next safe point, where
//! it cleans up as on any failure (no temporary pack left, the lock released, nothing committed);
//! a second one ends the process at once (crash-safe, as a kill is). Exit status 130 (SIGINT) or
//! 143 (SIGTERM), as shells report them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

struct Flags {
    /// Set by either signal.
    stop: Arc<AtomicBool>,
    /// Set by SIGTERM.
    term: Arc<AtomicBool>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once).
pub fn install() -> std::io::Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags =
        Flags { stop: Arc::new(AtomicBool::new(false)), term: Arc::new(AtomicBool::new(false)) };
    for (signal, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Registered first, so it sees the flag as it was before this signal: a second signal
        // ends the process.
        signal_hook::flag::register_conditional_shutdown(signal, code, Arc::clone(&flags.stop))?;
        signal_hook::flag::register(signal, Arc::clone(&flags.stop))?;
    }
    signal_hook::flag::register(SIGTERM, Arc::clone(&flags.term))?;
    let _ = FLAGS.set(flags);
    Ok(())
}

/// Whether a signal asked to stop.
pub fn interrupted() -> bool {
    FLAGS.get().is_some_and(|f| f.stop.load(Ordering::SeqCst))
}

/// The flag a signal sets, for the engine's lock waits.
pub fn stop_flag() -> Option<Arc<AtomicBool>> {
    FLAGS.get().map(|f| Arc::clone(&f.stop))
}

/// The exit status of an interrupted command: 143 after SIGTERM, 130 after SIGINT.
pub fn exit_code() -> u8 {
    if FLAGS.get().is_some_and(|f| f.term.load(Ordering::SeqCst)) {
        143
    } else {
        130
    }
}
