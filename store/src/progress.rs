//! Progress reporting: the engine calls a [`Progress`] the caller supplies; it never prints.

/// Receives progress of long operations (snapshot, restore). All methods have empty
/// defaults; implementations must be cheap, as they are called from worker threads.
pub trait Progress: Sync {
    /// A new phase starts (for example a component's name).
    fn phase(&self, _name: &str) {}
    /// The amount of work is known: `items` files and `bytes` bytes of content.
    fn set_total(&self, _items: u64, _bytes: u64) {}
    /// `n` more bytes of content were processed.
    fn add_bytes(&self, _n: u64) {}
    /// `n` more files were processed.
    fn add_items(&self, _n: u64) {}
    /// A source path could not be backed up as it was (each is reported here as it is met; a
    /// manifest lists a bounded number of them).
    fn issue(&self, _issue: &crate::snapshot::PathIssue) {}
    /// Whether the operator asked the operation to stop (SIGINT, SIGTERM). Long operations ask
    /// at safe points and stop with [`crate::Error::Interrupted`], leaving what a failure leaves:
    /// nothing committed, no temporary pack, the lock released by its owner.
    fn interrupted(&self) -> bool {
        false
    }
    /// Whether [`Progress::file`] is wanted (it costs a path per file, so it is off unless
    /// asked for).
    fn wants_files(&self) -> bool {
        false
    }
    /// A file was handled. A snapshot names it by `component` and the `path` below it, as it is
    /// added to its directory (name order), `path` raw bytes; a restore by its `path` below the
    /// target (`component/...`, escaped as [`crate::escape_name`] shows names, `component`
    /// empty), as it is written.
    fn file(&self, _component: &str, _path: &[u8], _what: FileEvent) {}
}

/// What happened to a file, for [`Progress::file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEvent {
    /// Snapshot: not in the parent set; read.
    New,
    /// Snapshot: in the parent set, not provably unchanged; read again.
    Changed,
    /// Snapshot: unchanged since the parent set; its content reused without reading.
    Unchanged,
    /// Snapshot: left out by an exclude pattern (with everything below it).
    Excluded,
    /// Restore: written to the target.
    Restored,
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
