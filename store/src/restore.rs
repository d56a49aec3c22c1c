//! Restoring a snapshot into a directory (RELIABILITY.md "Restore: path traversal and symlink
//! races"; DESIGN.md invariant 5).
//!
//! Safety rules:
//! - every name comes from a tree that was checked on decode (not empty, not `.`/`..`, no `/`,
//!   no NUL) and is checked again here before use;
//! - directories are created with `mkdirat` relative to an open parent and entered with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)`, so a symlink, planted by the snapshot or already in the
//!   target, is never traversed;
//! - files are written unnamed (`O_TMPFILE` in their directory) and linked to their name when
//!   complete, where the target allows it and nothing is at the name; otherwise under a
//!   temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`) renamed over the final name when
//!   complete. Either way an interrupted restore never leaves a partial file under a real name
//!   (unnamed, it leaves nothing), and an existing symlink is replaced, never written through;
//! - metadata is applied last, on the open descriptor: ownership (as root only), then mode
//!   (setuid/setgid only as root), then times; a directory's when everything in it is done. An
//!   unnamed file, which nobody else can open before it is linked, is created with its mode;
//!   its owner and mode are set only when they differ from what it got (this process's owner,
//!   the directory's group when set-group-id, the mode less the umask), and attributes a
//!   default ACL may have given it are looked for only where the directory has one.
//!
//! Every blob is verified against its id as it is read. A file whose data cannot be read or
//! verified is removed and reported with the pack and blob at fault; the rest is restored.
//! Runs of zero bytes (whole 4 KiB blocks) are left as holes.
//!
//! Files go to the writer threads in batches (up to 64 files, 16,384 chunks, 32 MiB): the
//! chunks of a batch are sorted by pack and offset, and each blob is read once, in pack order,
//! and written to every place in the batch that holds it. A file alone in its batch (a large
//! one: a database dump, a forest stand) has its blobs read, verified and written (each at its
//! offset) 16 at a time on as many decoder threads as there are writers while no other writer
//! is busy, so restoring one big file is not left to one core.
//!
//! The walk that selects what to restore ([`plan`] for `--dry-run`, [`restore`] for the real
//! thing) is one function, so both agree on `--include`/`--exclude`.
//!
//! Parts: `select` (what is restored), `target` (writing into the target by the rules above),
//! `batch` (batches read in pack order, decode windows for a file alone). `store cat`'s
//! [`crate::vfs::write_file_to`] lives with the path lookup in `vfs`.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::pack::BlobKind;
use crate::pattern::Patterns;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{Component, Manifest};
use crate::tree::{
    escape_name, is_valid_name, join_raw, ChunkRefs, Content, Metadata, Node, Time, Xattr,
};
use crate::vfs::{component_node, dir_entries, for_each_chunk};

mod batch;
mod select;
mod target;

use self::batch::{file_writer, BatchFill, Writer};
use self::select::{selected_components, walk_selected, Selection, Sink};
use self::target::{prepare_target, DirHandle};

/// What to do with entries that already exist in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Leave every existing entry as it is; restore only what is missing.
    Never,
    /// Replace an existing entry only when it differs from the snapshot (a file's content is
    /// read and hashed chunk by chunk), so an interrupted restore resumes where it stopped.
    IfChanged,
    /// Replace every existing entry.
    Always,
}

/// Where and how to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The target directory; created if missing. Must be empty unless `overwrite` is set.
    pub target: PathBuf,
    /// Parallel file writers; the number of CPUs when 0.
    pub threads: usize,
    /// Only these components (all when empty).
    pub components: Vec<String>,
    /// Only paths matching one of these patterns (with everything below a matching
    /// directory), matched against `component/path` (see `snapshot --exclude`).
    pub include: Vec<String>,
    /// Never paths matching one of these patterns (nor anything below them).
    pub exclude: Vec<String>,
    /// How to treat existing entries; `None` refuses a non-empty target.
    pub overwrite: Option<Overwrite>,
    /// Read every written file back and check it against the snapshot.
    pub verify: bool,
    /// Write every file under a temporary name and rename it, also where the target allows
    /// unnamed files (`O_TMPFILE`, linked to their name when complete: the default there).
    pub named_temporaries: bool,
}

/// A path that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFailure {
    /// Path below the target.
    pub path: String,
    /// What went wrong (names the pack and blob for damaged data).
    pub error: String,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// FIFOs and devices created.
    pub specials: u64,
    /// Files made as hard links to a file restored before them (one file, several names).
    pub hard_links: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Existing entries left as they were (`--overwrite never`, or unchanged with
    /// `--overwrite if-changed`).
    pub unchanged: u64,
    /// Files read back and found identical to the snapshot (`--verify`).
    pub verified: u64,
    /// Paths that could not be restored.
    pub failures: Vec<RestoreFailure>,
    /// Entries of the set this restore does not make (sockets; devices without root), each
    /// with the reason.
    pub not_restored: Vec<RestoreFailure>,
    /// `--include` and `--exclude` patterns that matched nothing, as `--include PATTERN`.
    pub unmatched_patterns: Vec<String>,
    /// The file being written when the target ran out of space (the restore stopped there:
    /// what was restored before it stays, nothing after it was written).
    pub out_of_space: Option<String>,
    /// Wall time.
    pub duration: Duration,
}

type Shared = Mutex<RestoreReport>;

fn record(shared: &Shared, path: &str, error: impl std::fmt::Display) {
    if let Ok(mut r) = shared.lock() {
        r.failures.push(RestoreFailure { path: path.to_owned(), error: error.to_string() });
    }
}

/// Records a part of the set this restore could not make at `path` (exit 3, not a failure).
fn not_restored(shared: &Shared, path: &str, why: impl std::fmt::Display) {
    count(shared, |r| {
        r.not_restored.push(RestoreFailure { path: path.to_owned(), error: why.to_string() });
    });
}

fn count(shared: &Shared, f: impl FnOnce(&mut RestoreReport)) {
    if let Ok(mut r) = shared.lock() {
        f(&mut r);
    }
}

struct FileJob<'a> {
    dir: Arc<DirHandle<'a>>,
    node: Node,
    path: String,
}

/// `parent/name` as raw bytes (`name` alone below the target's root).
fn join(parent: &str, name: &[u8]) -> String {
    let name = escape_name(name);
    if parent.is_empty() {
        name
    } else {
        format!("{parent}/{name}")
    }
}

/// Calls `f` with the path and node of every entry a restore with `opts` would write
/// (`restore --dry-run`); writes nothing.
///
/// # Errors
/// [`Error::InvalidOption`] for an unknown component or a bad pattern; the first error of
/// `f`; damaged trees are returned as the list of paths that could not be read.
pub fn plan(
    repo: &Repository,
    manifest: &Manifest,
    opts: &RestoreOptions,
    f: &mut dyn FnMut(&str, &Node) -> Result<()>,
) -> Result<Vec<RestoreFailure>> {
    struct Lister<'f> {
        f: &'f mut dyn FnMut(&str, &Node) -> Result<()>,
        failures: Vec<RestoreFailure>,
    }
    impl Sink for Lister<'_> {
        type Dir = ();
        fn make_dir(&mut self, (): &(), node: &Node, path: &str) -> Result<()> {
            (self.f)(path, node)
        }
        fn leaf(&mut self, (): &(), node: Node, path: String) -> Result<()> {
            (self.f)(&path, &node)
        }
        fn failure(&mut self, path: &str, error: &Error) {
            self.failures.push(RestoreFailure { path: path.to_owned(), error: error.to_string() });
        }
    }
    let components = selected_components(manifest, opts)?;
    let selection = Selection::new(opts)?;
    let mut lister = Lister { f, failures: Vec::new() };
    walk_selected(repo, &selection, &(), &components, &mut lister)?;
    Ok(lister.failures)
}

/// Restores the selected components of `manifest` into `opts.target`, each as
/// `TARGET/<name>`.
///
/// Damaged data does not stop the restore: the files affected are listed in
/// [`RestoreReport::failures`] and everything else is written.
///
/// # Errors
/// [`Error::Target`] when the target cannot be used; [`Error::InvalidOption`] for an unknown
/// component or a bad pattern; repository errors that stop everything.
pub fn restore(
    repo: &Repository,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let components = selected_components(manifest, opts)?;
    let selection = Selection::new(opts)?;
    let target_fd = prepare_target(&opts.target, opts.overwrite)?;
    repo.index()?;
    let threads = crate::threads_or_cpus(opts.threads);
    let as_root = rustix::process::geteuid().is_root();
    let (files, bytes) =
        components.iter().fold((0, 0), |(f, b), c| (f + c.counts.files, b + c.counts.bytes_source));
    progress.set_total(files, bytes);
    let shared: Shared = Mutex::default();
    let decoders = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::InvalidOption { option: "threads", reason: e.to_string() })?;
    let busy = std::sync::atomic::AtomicUsize::new(0);
    let ctx = Ctx {
        repo,
        opts,
        as_root,
        shared: &shared,
        progress,
        decoders: &decoders,
        busy,
        full: Mutex::default(),
        unnamed: (!opts.named_temporaries && target::unnamed_files_work(&target_fd)).into(),
        umask: target::process_umask(),
    };
    std::thread::scope(|s| -> Result<()> {
        let (tx, rx) = bounded::<Vec<FileJob<'_>>>(1);
        for _ in 0..threads {
            let rx = rx.clone();
            let ctx = &ctx;
            s.spawn(move || file_writer(ctx, &rx));
        }
        drop(rx);
        let root = Arc::new(DirHandle {
            fd: target_fd,
            meta: None,
            path: String::new(),
            raw: Vec::new(),
            as_root,
            shared: &shared,
            inherited: std::sync::OnceLock::new(),
        });
        let mut writer = Writer {
            ctx: &ctx,
            tx,
            batch: Vec::new(),
            fill: BatchFill::default(),
            root: Arc::clone(&root),
            links: std::collections::HashMap::new(),
        };
        let walked = walk_selected(repo, &selection, &root, &components, &mut writer);
        writer.flush();
        match walked {
            // The target is full: the walk stopped there, and what was written stays.
            Err(Error::TargetFull) => Ok(()),
            other => other,
        }
    })?;
    let out_of_space = ctx.full.lock().ok().and_then(|mut f| f.take());
    let mut report = shared.into_inner().unwrap_or_default();
    report.out_of_space = out_of_space;
    report.unmatched_patterns = selection.unmatched();
    report.duration = started.elapsed();
    Ok(report)
}

/// What every writer thread shares.
struct Ctx<'a> {
    repo: &'a Repository,
    opts: &'a RestoreOptions,
    as_root: bool,
    shared: &'a Shared,
    progress: &'a dyn Progress,
    /// Reads, verifies and writes the chunks of a file alone in its batch in parallel (as many
    /// threads as writers), so a database dump restored alone is not written by one core.
    decoders: &'a rayon::ThreadPool,
    /// Writers working on a batch; the decoder threads are used only when one is.
    busy: std::sync::atomic::AtomicUsize,
    /// Where the target's file system ran out of space, if it did: the restore stops there.
    full: Mutex<Option<String>>,
    /// Files are written unnamed (`O_TMPFILE`) and linked to their name when complete, where
    /// the target allows it; else under a temporary name, renamed.
    unnamed: std::sync::atomic::AtomicBool,
    /// This process's file mode creation mask, when known (`/proc/self/status`): an unnamed
    /// file is then created with its mode, and needs no `fchmod` when the mask kept it.
    umask: Option<u32>,
}

impl Ctx<'_> {
    /// Notes that `e`, met writing `path`, is the target running out of space (the first such
    /// path is kept). True when it is.
    fn note_if_full(&self, e: &Error, path: &str) -> bool {
        let Error::Io { cause, .. } = e else { return false };
        if cause.kind() != std::io::ErrorKind::StorageFull {
            return false;
        }
        if let Ok(mut full) = self.full.lock() {
            full.get_or_insert_with(|| path.to_owned());
        }
        true
    }

    /// Whether the target ran out of space.
    fn is_full(&self) -> bool {
        self.full.lock().map(|f| f.is_some()).unwrap_or(true)
    }
}
