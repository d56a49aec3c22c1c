//! Restoring a snapshot into a directory (RELIABILITY.md "Restore: path traversal and symlink
//! races"; DESIGN.md invariant 5).
//!
//! Safety rules:
//! - every name comes from a tree that was checked on decode (not empty, not `.`/`..`, no `/`,
//!   no NUL) and is checked again here before use;
//! - directories are created with `mkdirat` relative to an open parent and entered with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)`, so a symlink, planted by the snapshot or already in the
//!   target, is never traversed;
//! - files are written under a temporary name (`O_CREAT | O_EXCL | O_NOFOLLOW`) and renamed
//!   over the final name when complete, so an interrupted restore never leaves a partial file
//!   under a real name, and an existing symlink is replaced, never written through;
//! - metadata is applied last, on the open descriptor: ownership (as root only), then mode
//!   (setuid/setgid only as root), then times; a directory's when everything in it is done.
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

use std::fs::File;
use std::io::{Read, Write};
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
use crate::tree::{escape_name, is_valid_name, ChunkRefs, Content, Metadata, Node};
use crate::vfs::{component_node, dir_entries, for_each_chunk};

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
    /// Bytes of file content written.
    pub bytes: u64,
    /// Existing entries left as they were (`--overwrite never`, or unchanged with
    /// `--overwrite if-changed`).
    pub unchanged: u64,
    /// Files read back and found identical to the snapshot (`--verify`).
    pub verified: u64,
    /// Paths that could not be restored.
    pub failures: Vec<RestoreFailure>,
    /// Wall time.
    pub duration: Duration,
}

type Shared = Mutex<RestoreReport>;

fn record(shared: &Shared, path: &str, error: impl std::fmt::Display) {
    if let Ok(mut r) = shared.lock() {
        r.failures.push(RestoreFailure { path: path.to_owned(), error: error.to_string() });
    }
}

fn count(shared: &Shared, f: impl FnOnce(&mut RestoreReport)) {
    if let Ok(mut r) = shared.lock() {
        f(&mut r);
    }
}

fn timespec(ns: i64) -> Timespec {
    Timespec { tv_sec: ns.div_euclid(1_000_000_000), tv_nsec: ns.rem_euclid(1_000_000_000) as _ }
}

fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps { last_access: timespec(meta.mtime_ns), last_modification: timespec(meta.mtime_ns) }
}

/// Applies ownership (as root), mode and times to an open file or directory.
fn apply_meta(fd: impl AsFd, meta: &Metadata, as_root: bool) -> rustix::io::Result<()> {
    let mut mode = meta.mode & 0o7777;
    if as_root {
        rustix::fs::fchown(
            &fd,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        )?;
    } else {
        mode &= 0o1777;
    }
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(&fd, &timestamps(meta))
}

/// An open directory of the target; its metadata is applied when the last user drops it,
/// that is after everything inside it has been written.
struct DirHandle<'a> {
    fd: OwnedFd,
    meta: Option<Metadata>,
    path: String,
    as_root: bool,
    shared: &'a Shared,
}

impl Drop for DirHandle<'_> {
    fn drop(&mut self) {
        if let Some(meta) = &self.meta {
            if let Err(e) = apply_meta(&self.fd, meta, self.as_root) {
                record(self.shared, &self.path, format!("cannot set metadata: {e}"));
            }
        }
    }
}

struct FileJob<'a> {
    dir: Arc<DirHandle<'a>>,
    node: Node,
    path: String,
}

fn join(parent: &str, name: &[u8]) -> String {
    let name = escape_name(name);
    if parent.is_empty() {
        name
    } else {
        format!("{parent}/{name}")
    }
}

fn open_dir_at(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The temporary name a file or symlink is created under before it is renamed into place;
/// the same on every run, so an interrupted restore's leftover is replaced by the next one.
fn temp_name(name: &[u8]) -> Vec<u8> {
    let hash = Id::hash(name).to_hex();
    format!(".store-restore-{}", &hash[..16]).into_bytes()
}

/// Checks the target directory: created if missing; refused if it holds anything, unless
/// existing entries may be kept or replaced.
fn prepare_target(target: &std::path::Path, overwrite: Option<Overwrite>) -> Result<OwnedFd> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if overwrite.is_none() && entries.next().is_some() {
                return Err(Error::Target {
                    path: target.to_path_buf(),
                    reason: "directory is not empty (use --overwrite never, if-changed or always \
                             to restore into it)"
                        .into(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).at(target)?;
        }
        Err(e) => return Err(Error::Target { path: target.to_path_buf(), reason: e.to_string() }),
    }
    rustix::fs::open(target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .at(target)
}

/// Which paths of a set a restore selects: components, then `--include` and `--exclude`.
struct Selection {
    include: Patterns,
    exclude: Patterns,
}

impl Selection {
    fn new(opts: &RestoreOptions) -> Result<Self> {
        Ok(Selection {
            include: Patterns::new(&opts.include, "include pattern")?,
            exclude: Patterns::new(&opts.exclude, "exclude pattern")?,
        })
    }
}

/// The components of `manifest` that `opts` selects, in the set's order.
///
/// # Errors
/// [`Error::InvalidOption`] naming a requested component the set does not have.
fn selected_components<'m>(
    manifest: &'m Manifest,
    opts: &RestoreOptions,
) -> Result<Vec<&'m Component>> {
    if let Some(missing) =
        opts.components.iter().find(|n| !manifest.components.iter().any(|c| c.name == **n))
    {
        let names: Vec<&str> = manifest.components.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::InvalidOption {
            option: "component",
            reason: format!("the set has no component {missing:?} (it has: {})", names.join(", ")),
        });
    }
    Ok(manifest
        .components
        .iter()
        .filter(|c| opts.components.is_empty() || opts.components.contains(&c.name))
        .collect())
}

/// What the selecting walk hands its entries to.
trait Sink {
    /// A directory of the output, created on first use.
    type Dir: Clone;
    /// Creates directory `node` (at `path`) in `parent`.
    fn make_dir(&mut self, parent: &Self::Dir, node: &Node, path: &str) -> Result<Self::Dir>;
    /// Restores a file, symlink or special file into `dir`.
    fn leaf(&mut self, dir: &Self::Dir, node: Node, path: String) -> Result<()>;
    /// Records a path that cannot be restored; the walk goes on.
    fn failure(&mut self, path: &str, error: &Error);
}

struct Frame<'r, D> {
    dir: Option<D>,
    node: Option<Node>,
    path: String,
    raw: Vec<u8>,
    entries: Box<dyn Iterator<Item = Result<Node>> + 'r>,
    included: bool,
    failed: bool,
}

/// The directory of the innermost frame, creating it and every missing ancestor: a
/// directory is created only once something below it is selected.
fn ensure_dir<S: Sink>(stack: &mut [Frame<'_, S::Dir>], sink: &mut S) -> Option<S::Dir> {
    let start = stack.iter().position(|f| f.dir.is_none()).unwrap_or(stack.len());
    for i in start..stack.len() {
        let (before, rest) = stack.split_at_mut(i);
        let frame = &mut rest[0];
        if frame.failed {
            return None;
        }
        let parent = before.last()?.dir.as_ref()?;
        let node = frame.node.as_ref()?;
        match sink.make_dir(parent, node, &frame.path) {
            Ok(dir) => frame.dir = Some(dir),
            Err(e) => {
                sink.failure(&frame.path, &e);
                frame.failed = true;
                return None;
            }
        }
    }
    stack.last()?.dir.clone()
}

/// Walks the selected paths of `components` depth first, in name order, handing directories
/// and leaves to `sink`. Memory: one page iterator per level of the current path.
///
/// # Errors
/// Only errors of `sink` stop the walk; damaged trees are handed to [`Sink::failure`].
fn walk_selected<S: Sink>(
    repo: &Repository,
    selection: &Selection,
    root: &S::Dir,
    components: &[&Component],
    sink: &mut S,
) -> Result<()> {
    for c in components {
        if !is_valid_name(c.name.as_bytes()) {
            sink.failure(
                &c.name,
                &Error::InvalidOption {
                    option: "component",
                    reason: "invalid component name".into(),
                },
            );
            continue;
        }
        let top = match component_node(repo, c) {
            Ok(node) => node,
            Err(e) => {
                sink.failure(&c.name, &e);
                continue;
            }
        };
        let mut stack = vec![Frame {
            dir: Some(root.clone()),
            node: None,
            path: String::new(),
            raw: Vec::new(),
            entries: Box::new(std::iter::once(Ok(top))),
            included: selection.include.is_empty(),
            failed: false,
        }];
        while let Some(frame) = stack.last_mut() {
            let node = match frame.entries.next() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(e)) => {
                    sink.failure(&frame.path, &e);
                    stack.pop();
                    continue;
                }
                Some(Ok(node)) => node,
            };
            let path = join(&frame.path, &node.name);
            if !is_valid_name(&node.name) {
                sink.failure(
                    &path,
                    &Error::InvalidOption { option: "name", reason: "invalid name in tree".into() },
                );
                continue;
            }
            let mut raw = frame.raw.clone();
            if !raw.is_empty() {
                raw.push(b'/');
            }
            raw.extend_from_slice(&node.name);
            if selection.exclude.matches(&raw, &node.name) {
                continue;
            }
            let included = frame.included || selection.include.matches(&raw, &node.name);
            if let Content::Dir { tree } = node.content {
                // A directory whose tree is damaged is still created (when selected), empty.
                let entries: Box<dyn Iterator<Item = Result<Node>>> = match dir_entries(repo, tree)
                {
                    Ok(entries) => Box::new(entries),
                    Err(e) => {
                        sink.failure(&path, &e);
                        Box::new(std::iter::empty())
                    }
                };
                stack.push(Frame {
                    dir: None,
                    node: Some(node),
                    path,
                    raw,
                    entries,
                    included,
                    failed: false,
                });
                if included {
                    ensure_dir(&mut stack, sink);
                }
            } else if included {
                if let Some(dir) = ensure_dir(&mut stack, sink) {
                    sink.leaf(&dir, node, path)?;
                }
            }
        }
    }
    Ok(())
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
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2)
    } else {
        opts.threads
    };
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
    let ctx = Ctx { repo, opts, as_root, shared: &shared, progress, decoders: &decoders, busy };
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
            as_root,
            shared: &shared,
        });
        let mut writer = Writer { ctx: &ctx, tx, batch: Vec::new(), fill: BatchFill::default() };
        let walked = walk_selected(repo, &selection, &root, &components, &mut writer);
        writer.flush();
        walked
    })?;
    let mut report = shared.into_inner().unwrap_or_default();
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
}

/// The restoring [`Sink`]: directories and small entries on the walking thread, files
/// queued in batches to the writer threads.
struct Writer<'c, 'a> {
    ctx: &'c Ctx<'a>,
    tx: Sender<Vec<FileJob<'a>>>,
    batch: Vec<FileJob<'a>>,
    fill: BatchFill,
}

/// How full the batch being gathered is.
#[derive(Debug, Default, Clone, Copy)]
struct BatchFill {
    files: usize,
    chunks: usize,
    bytes: u64,
}

impl BatchFill {
    /// Whether a file of `chunks` chunks and `bytes` bytes must start a new batch.
    fn must_flush_before(&self, chunks: usize, bytes: u64) -> bool {
        self.files > 0
            && (self.files >= BATCH_FILES
                || self.chunks + chunks > BATCH_CHUNKS
                || self.bytes.saturating_add(bytes) > BATCH_BYTES)
    }

    fn add(&mut self, chunks: usize, bytes: u64) {
        self.files += 1;
        self.chunks += chunks;
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// Files restored together, their blobs read in pack order: at most this many files (each
/// batch in flight holds their temporaries and parent directories open: with two writers and
/// one batch queued, a few hundred descriptors even when every file has its own directory)...
const BATCH_FILES: usize = 64;
/// ...and about this many chunks (a plan entry is about 100 bytes)...
const BATCH_CHUNKS: usize = 16_384;
/// ...and about this many bytes, so that large files spread over the writers: a batch is
/// written by one thread, and a MarkLogic forest (a few files of 100-300 MB) fit in one batch by
/// chunk count (restore at 99% CPU, 1.79 s, where per-file writers took 1.02 s).
const BATCH_BYTES: u64 = 32 << 20;

impl Writer<'_, '_> {
    fn flush(&mut self) {
        if !self.batch.is_empty() {
            // The writers only stop early when they panicked; the scope reports that.
            let _ = self.tx.send(std::mem::take(&mut self.batch));
            self.fill = BatchFill::default();
        }
    }
}

impl<'a> Sink for Writer<'_, 'a> {
    type Dir = Arc<DirHandle<'a>>;

    fn make_dir(&mut self, parent: &Self::Dir, node: &Node, path: &str) -> Result<Self::Dir> {
        let handle = make_dir(self.ctx, parent, node, path)?;
        Ok(Arc::new(handle))
    }

    fn leaf(&mut self, dir: &Self::Dir, node: Node, path: String) -> Result<()> {
        let ctx = self.ctx;
        match &node.content {
            Content::File { chunks, size } => {
                let n = match chunks {
                    ChunkRefs::Inline(ids) => ids.len(),
                    ChunkRefs::Lists(_) => BATCH_CHUNKS,
                };
                let size = *size;
                if self.fill.must_flush_before(n, size) {
                    self.flush();
                }
                self.batch.push(FileJob { dir: Arc::clone(dir), node, path });
                self.fill.add(n, size);
            }
            Content::Symlink { target } => match restore_symlink(ctx, dir, &node, target) {
                Ok(true) => count(ctx.shared, |r| r.symlinks += 1),
                Ok(false) => count(ctx.shared, |r| r.unchanged += 1),
                Err(e) => record(ctx.shared, &path, format!("cannot create symlink: {e}")),
            },
            Content::Special { rdev } => match restore_special(ctx, dir, &node, *rdev) {
                Ok(true) => count(ctx.shared, |r| r.specials += 1),
                Ok(false) => {}
                Err(e) => record(ctx.shared, &path, format!("cannot create special file: {e}")),
            },
            Content::Dir { .. } => {}
        }
        Ok(())
    }

    fn failure(&mut self, path: &str, error: &Error) {
        record(self.ctx.shared, path, error);
    }
}

/// Creates (or, when overwriting, reuses) directory `node` in `parent`. An existing entry that
/// is not a directory, a symlink included, is refused, never followed.
fn make_dir<'a>(
    ctx: &Ctx<'a>,
    parent: &DirHandle<'a>,
    node: &Node,
    path: &str,
) -> Result<DirHandle<'a>> {
    let name = node.name.as_slice();
    let existed = match rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => false,
        Err(Errno::EXIST) if ctx.opts.overwrite.is_some() => true,
        Err(e) => return Err(e).at(path),
    };
    let fd = open_dir_at(&parent.fd, name).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Error::Target {
            path: ctx.opts.target.join(path),
            reason: "exists and is not a directory (a symlink in the target is never followed)"
                .into(),
        },
        e => Error::Io { path: path.into(), cause: e.into() },
    })?;
    if !existed {
        count(ctx.shared, |r| r.dirs += 1);
    }
    let keep_as_is = existed && ctx.opts.overwrite == Some(Overwrite::Never);
    Ok(DirHandle {
        fd,
        meta: if keep_as_is { None } else { Some(node.meta) },
        path: path.to_owned(),
        as_root: parent.as_root,
        shared: parent.shared,
    })
}

/// What is at `name` in `dir` now (not following a symlink), if anything.
fn existing(dir: &DirHandle<'_>, name: &[u8]) -> rustix::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn file_type(st: &rustix::fs::Stat) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(st.st_mode)
}

/// Creates symlink `node`; returns false when an existing entry was kept.
fn restore_symlink(
    ctx: &Ctx<'_>,
    dir: &DirHandle<'_>,
    node: &Node,
    target: &[u8],
) -> rustix::io::Result<bool> {
    let name = node.name.as_slice();
    let final_name = match (existing(dir, name)?, ctx.opts.overwrite) {
        (None, _) => name.to_vec(),
        (Some(_), None | Some(Overwrite::Never)) => return Ok(false),
        (Some(st), Some(Overwrite::IfChanged))
            if file_type(&st) == rustix::fs::FileType::Symlink
                && rustix::fs::readlinkat(&dir.fd, name, Vec::new())?.as_bytes() == target =>
        {
            return Ok(false)
        }
        (Some(_), Some(_)) => temp_name(name),
    };
    if final_name != name {
        match rustix::fs::unlinkat(&dir.fd, final_name.as_slice(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::symlinkat(target, &dir.fd, final_name.as_slice())?;
    let meta = &node.meta;
    if dir.as_root {
        rustix::fs::chownat(
            &dir.fd,
            final_name.as_slice(),
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::fs::utimensat(
        &dir.fd,
        final_name.as_slice(),
        &timestamps(meta),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if final_name != name {
        rustix::fs::renameat(&dir.fd, final_name.as_slice(), &dir.fd, name)?;
    }
    Ok(true)
}

/// Creates a FIFO (always) or a device (as root); sockets are not recreated. Returns whether
/// something was created.
fn restore_special(
    ctx: &Ctx<'_>,
    dir: &DirHandle<'_>,
    node: &Node,
    rdev: u64,
) -> rustix::io::Result<bool> {
    use rustix::fs::FileType;
    let (name, meta) = (node.name.as_slice(), &node.meta);
    let kind = FileType::from_raw_mode(meta.mode);
    let allowed = match kind {
        FileType::Fifo => true,
        FileType::CharacterDevice | FileType::BlockDevice => dir.as_root,
        _ => false,
    };
    if !allowed {
        return Ok(false);
    }
    if let Some(st) = existing(dir, name)? {
        let same = file_type(&st) == kind && (kind == FileType::Fifo || st.st_rdev == rdev);
        match ctx.opts.overwrite {
            None | Some(Overwrite::Never) => return Ok(false),
            Some(Overwrite::IfChanged) if same => return Ok(false),
            Some(_) => rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty())?,
        }
    }
    rustix::fs::mknodat(&dir.fd, name, kind, Mode::from_raw_mode(0o600), rdev)?;
    // By name: opening a FIFO to use fchmod would block. The parent was opened with
    // O_NOFOLLOW and the node was just created by this process.
    if dir.as_root {
        rustix::fs::chownat(
            &dir.fd,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::fs::chmodat(&dir.fd, name, Mode::from_raw_mode(meta.mode & 0o777), AtFlags::empty())?;
    rustix::fs::utimensat(&dir.fd, name, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(true)
}

/// Reusable buffers of one writer thread.
#[derive(Default)]
struct Buffers {
    /// A `(frame, raw)` pair per blob of a decode window.
    window: Vec<(Vec<u8>, Vec<u8>)>,
    check: Vec<u8>,
}

/// What happened to one file.
enum FileOutcome {
    Written(u64),
    Unchanged(u64),
}

/// Writes batches of files handed over by the walker until the queue closes.
fn file_writer(ctx: &Ctx<'_>, jobs: &Receiver<Vec<FileJob<'_>>>) {
    let mut bufs = Buffers::default();
    for batch in jobs {
        ctx.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        restore_batch(ctx, &batch, &mut bufs);
        ctx.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts and reports what happened to one file.
fn report(ctx: &Ctx<'_>, job: &FileJob<'_>, outcome: std::result::Result<FileOutcome, String>) {
    match outcome {
        Ok(FileOutcome::Written(bytes)) => count(ctx.shared, |r| {
            r.files += 1;
            r.bytes += bytes;
        }),
        Ok(FileOutcome::Unchanged(bytes)) => {
            count(ctx.shared, |r| r.unchanged += 1);
            ctx.progress.add_bytes(bytes);
        }
        Err(e) => record(ctx.shared, &job.path, e),
    }
    ctx.progress.add_items(1);
}

/// A file of a batch being written under its temporary name.
struct Target<'j, 'a> {
    job: &'j FileJob<'a>,
    size: u64,
    chunks: &'j ChunkRefs,
    temp: Vec<u8>,
    file: File,
    error: Option<String>,
}

/// One chunk of one file of a batch: where to read it, where to write it.
struct Piece {
    loc: crate::index::Location,
    target: usize,
    at: u64,
}

/// Restores a batch of files: the chunks of all of them are sorted by pack and offset, each
/// blob is read and verified once, in pack order, and written to every place in the batch that
/// holds it. Files with chunk-list blobs (the largest) are written on their own, in order.
fn restore_batch(ctx: &Ctx<'_>, batch: &[FileJob<'_>], bufs: &mut Buffers) {
    let mut targets: Vec<Target<'_, '_>> = Vec::new();
    for job in batch {
        let Content::File { size, chunks } = &job.node.content else { continue };
        if matches!(chunks, ChunkRefs::Lists(_)) {
            report(ctx, job, restore_file(ctx, job, bufs).map_err(|e| e.to_string()));
            continue;
        }
        let prepared = prepare(ctx, job, *size, chunks, bufs).and_then(|keep| match keep {
            Some(outcome) => Ok(Err(outcome)),
            None => {
                let temp = temp_name(&job.node.name);
                open_temp(job, &temp).map(|file| Ok((temp, file)))
            }
        });
        match prepared {
            Ok(Ok((temp, file))) => {
                targets.push(Target { job, size: *size, chunks, temp, file, error: None });
            }
            Ok(Err(outcome)) => report(ctx, job, Ok(outcome)),
            Err(e) => report(ctx, job, Err(e.to_string())),
        }
    }
    let mut plan = Vec::new();
    for (t, target) in targets.iter_mut().enumerate() {
        let mut at = 0u64;
        let located = ctx.repo.index().and_then(|index| {
            for_each_chunk(ctx.repo, target.chunks, |id| {
                let loc = index.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
                plan.push(Piece { loc, target: t, at });
                at += u64::from(loc.entry.raw_len);
                Ok(())
            })
        });
        target.error = match located {
            Err(e) => Some(e.to_string()),
            Ok(()) if at != target.size => Some(
                Error::SizeMismatch {
                    path: target.job.path.clone(),
                    recorded: target.size,
                    found: at,
                }
                .to_string(),
            ),
            Ok(()) => None,
        };
    }
    plan.sort_unstable_by(|a, b| {
        (a.loc.pack.0.as_bytes(), a.loc.entry.offset)
            .cmp(&(b.loc.pack.0.as_bytes(), b.loc.entry.offset))
    });
    // A file alone in its batch (a large one) may have its blobs read, verified and written a
    // window at a time on the decoder threads (see `window_len`); otherwise one blob at a time.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < plan.len() {
        groups.clear();
        let window = if targets.len() == 1 { window_len(ctx) } else { 1 };
        while i < plan.len() && groups.len() < window {
            let loc = plan[i].loc;
            let same = plan[i..]
                .iter()
                .take_while(|p| p.loc.pack == loc.pack && p.loc.entry.offset == loc.entry.offset)
                .count();
            let pieces = i..i + same;
            i += same;
            if plan[pieces.clone()].iter().any(|p| targets[p.target].error.is_none()) {
                groups.push(pieces);
            }
        }
        let live = &targets;
        let done = in_window(ctx, &groups, &mut bufs.window, |pieces, frame, raw| {
            ctx.repo.read_located(&plan[pieces.start].loc, BlobKind::Data, frame, raw)?;
            let mut failed = Vec::new();
            for p in &plan[pieces.clone()] {
                let t = &live[p.target];
                if t.error.is_none() {
                    match write_sparse(&t.file, p.at, raw) {
                        Ok(()) => wrote(ctx, raw.len()),
                        Err(e) => failed.push((p.target, e)),
                    }
                }
            }
            Ok(failed)
        });
        for (pieces, result) in groups.iter().zip(done) {
            match result {
                Err(e) => {
                    let message = e.to_string();
                    for p in &plan[pieces.clone()] {
                        targets[p.target].error.get_or_insert_with(|| message.clone());
                    }
                }
                Ok(failed) => {
                    for (t, cause) in failed {
                        let t = &mut targets[t];
                        let e = Error::Io { path: t.job.path.clone().into(), cause };
                        t.error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
    drop(plan);
    for t in targets {
        let dir = &t.job.dir;
        let outcome = match t.error {
            Some(e) => Err(e),
            None => finish(ctx, t.job, &t.file, &t.temp, t.size, t.chunks, bufs)
                .map_err(|e| e.to_string()),
        };
        if outcome.is_err() {
            let _ = rustix::fs::unlinkat(&dir.fd, t.temp.as_slice(), AtFlags::empty());
        }
        report(ctx, t.job, outcome);
    }
}

/// Writes the content of file `node` to `out`, every chunk verified against its id; returns the
/// bytes written. (`store cat`.)
///
/// # Errors
/// [`Error::InvalidOption`] when `node` is not a regular file; damaged or missing data; write
/// errors on `out` (named `out_name`).
pub fn write_file_to(
    repo: &Repository,
    node: &Node,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<u64> {
    let Content::File { size, chunks } = &node.content else {
        return Err(Error::InvalidOption {
            option: "path",
            reason: format!("{} is not a regular file", escape_name(&node.name)),
        });
    };
    let (mut frame, mut raw) = (Vec::new(), Vec::new());
    let mut written = 0u64;
    for_each_chunk(repo, chunks, |id| {
        repo.read_blob_into(id, BlobKind::Data, &mut frame, &mut raw)?;
        out.write_all(&raw).at(out_name)?;
        written += raw.len() as u64;
        Ok(())
    })?;
    out.flush().at(out_name)?;
    if written != *size {
        return Err(Error::SizeMismatch {
            path: escape_name(&node.name),
            recorded: *size,
            found: written,
        });
    }
    Ok(written)
}

/// Decides what to do with an entry already at the file's name: `Some` when it is kept.
fn prepare(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<Option<FileOutcome>> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    let Some(st) = existing(dir, name).at(&job.path)? else { return Ok(None) };
    match ctx.opts.overwrite {
        None => Err(Error::Target {
            path: ctx.opts.target.join(&job.path),
            reason: "already exists".into(),
        }),
        Some(Overwrite::Never) => Ok(Some(FileOutcome::Unchanged(0))),
        Some(Overwrite::IfChanged)
            if file_type(&st) == rustix::fs::FileType::RegularFile
                && u64::try_from(st.st_size).ok() == Some(size) =>
        {
            let file = open_file_at(dir, name).at(&job.path)?;
            if content_matches(ctx.repo, &file, chunks, &mut bufs.check).at_path(&job.path)? {
                apply_meta(&file, &job.node.meta, ctx.as_root).at(&job.path)?;
                return Ok(Some(FileOutcome::Unchanged(size)));
            }
            Ok(None)
        }
        Some(_) => Ok(None),
    }
}

/// Creates the file's temporary, replacing the leftover of an interrupted restore.
fn open_temp(job: &FileJob<'_>, temp: &[u8]) -> Result<File> {
    match rustix::fs::unlinkat(&job.dir.fd, temp, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).at(&job.path),
    }
    let fd = rustix::fs::openat(
        &job.dir.fd,
        temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .at(&job.path)?;
    Ok(File::from(fd))
}

/// Completes a written temporary: length (a trailing hole), metadata, rename over the name,
/// and with `--verify` a read back.
fn finish(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    file: &File,
    temp: &[u8],
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<FileOutcome> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    file.set_len(size).at(&job.path)?;
    apply_meta(file, &job.node.meta, ctx.as_root).at(&job.path)?;
    rustix::fs::renameat(&dir.fd, temp, &dir.fd, name).map_err(|e| match e {
        Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => Error::Target {
            path: ctx.opts.target.join(&job.path),
            reason: "exists and is a directory".into(),
        },
        e => Error::Io { path: job.path.clone().into(), cause: e.into() },
    })?;
    if ctx.opts.verify {
        let file = open_file_at(dir, name).at(&job.path)?;
        if !content_matches(ctx.repo, &file, chunks, &mut bufs.check).at_path(&job.path)? {
            return Err(Error::RestoredDiffers { path: job.path.clone() });
        }
        count(ctx.shared, |r| r.verified += 1);
    }
    Ok(FileOutcome::Written(size))
}

/// Restores one file on its own, its chunks in file order (the largest files, whose chunk
/// lists are blobs themselves).
fn restore_file(ctx: &Ctx<'_>, job: &FileJob<'_>, bufs: &mut Buffers) -> Result<FileOutcome> {
    let Content::File { size, chunks } = &job.node.content else {
        return Ok(FileOutcome::Written(0));
    };
    if let Some(kept) = prepare(ctx, job, *size, chunks, bufs)? {
        return Ok(kept);
    }
    let temp = temp_name(&job.node.name);
    let written = open_temp(job, &temp).and_then(|file| {
        write_in_order(ctx, job, &file, *size, chunks, bufs)?;
        finish(ctx, job, &file, &temp, *size, chunks, bufs)
    });
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&job.dir.fd, temp.as_slice(), AtFlags::empty());
    }
    written
}

fn open_file_at(dir: &DirHandle<'_>, name: &[u8]) -> rustix::io::Result<File> {
    let fd = rustix::fs::openat(
        &dir.fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Blobs read, verified and written at once on the decoder threads: 16 (about 3 MiB at the
/// default 128 KiB chunks, at most 16 MiB) per writer in flight.
const DECODE_WINDOW: usize = 16;

/// Runs `work` (read a blob into the `(frame, raw)` pair it is given, verify it, write it) for
/// every item, on the decoder threads (a single item on this thread); `bufs` holds one pair per
/// item and is reused window after window. Returns each item's outcome, in order.
fn in_window<T: Sync, R: Send>(
    ctx: &Ctx<'_>,
    items: &[T],
    bufs: &mut Vec<(Vec<u8>, Vec<u8>)>,
    work: impl Fn(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    use rayon::prelude::*;
    if bufs.len() < items.len() {
        bufs.resize_with(items.len(), Default::default);
    }
    match (items, bufs.as_mut_slice()) {
        ([], _) => return Vec::new(),
        ([item], [(frame, raw), ..]) => return vec![work(item, frame, raw)],
        _ => {}
    }
    ctx.decoders.install(|| {
        items.par_iter().zip(bufs.par_iter_mut()).map(|(item, (f, r))| work(item, f, r)).collect()
    })
}

/// How many blobs of a large file go to the decoder threads at once: [`DECODE_WINDOW`] when this
/// writer is the only busy one (a dump restored alone, or the last file of a restore), else 1,
/// as the other writers keep the cores busy: with every writer on a large file, windows made a
/// MarkLogic restore 10% slower and doubled its peak RSS.
fn window_len(ctx: &Ctx<'_>) -> usize {
    if ctx.busy.load(std::sync::atomic::Ordering::Relaxed) <= 1 {
        DECODE_WINDOW
    } else {
        1
    }
}

/// Counts `n` restored bytes of one chunk.
fn wrote(ctx: &Ctx<'_>, n: usize) {
    ctx.progress.add_bytes(n as u64);
    crate::crash::point("restore", "chunk");
}

/// Writes the file's chunks (holes for zero blocks), a window at a time on the decoder threads,
/// each at the offset the sizes of the chunks before it give.
fn write_in_order(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    file: &File,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<()> {
    let index = ctx.repo.index()?;
    let mut at = 0u64;
    let mut window: Vec<(crate::index::Location, u64)> = Vec::with_capacity(DECODE_WINDOW);
    let mut write_window = |window: &mut Vec<(crate::index::Location, u64)>| -> Result<()> {
        let done = in_window(ctx, window, &mut bufs.window, |(loc, at), frame, raw| {
            ctx.repo.read_located(loc, BlobKind::Data, frame, raw)?;
            write_sparse(file, *at, raw).at(&job.path)?;
            wrote(ctx, raw.len());
            Ok(())
        });
        window.clear();
        done.into_iter().collect()
    };
    for_each_chunk(ctx.repo, chunks, |id| {
        let loc = index.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
        window.push((loc, at));
        at += u64::from(loc.entry.raw_len);
        if window.len() >= window_len(ctx) {
            write_window(&mut window)?;
        }
        Ok(())
    })?;
    write_window(&mut window)?;
    if at != size {
        return Err(Error::SizeMismatch { path: job.path.clone(), recorded: size, found: at });
    }
    Ok(())
}

const HOLE_BLOCK: u64 = 4096;

fn is_zero(block: &[u8]) -> bool {
    let mut words = block.chunks_exact(16);
    let head = words.by_ref().all(|w| w.iter().fold(0u8, |acc, &b| acc | b) == 0);
    head && words.remainder().iter().all(|&b| b == 0)
}

/// Writes `data` at `offset`, skipping whole file-system blocks of zeros (left as holes in
/// a new file).
fn write_sparse(file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut run: Option<usize> = None;
    let mut pos = 0usize;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let step = usize::try_from(HOLE_BLOCK - abs % HOLE_BLOCK).unwrap_or(data.len());
        let end = (pos + step).min(data.len());
        let whole_block = end - pos == step;
        let zero = whole_block && is_zero(&data[pos..end]);
        match (zero, run) {
            (false, None) => run = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&data[start..pos], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Whether `file` holds exactly the content of `chunks`: read chunk by chunk and hashed.
fn content_matches(
    repo: &Repository,
    file: &File,
    chunks: &ChunkRefs,
    buf: &mut Vec<u8>,
) -> Result<std::io::Result<bool>> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut outcome: std::io::Result<bool> = Ok(true);
    for_each_chunk(repo, chunks, |id| {
        if !matches!(outcome, Ok(true)) {
            return Ok(());
        }
        let loc = repo.index()?.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
        buf.resize(loc.entry.raw_len as usize, 0);
        outcome = match reader.read_exact(buf) {
            Ok(()) => Ok(Id::hash(buf) == id),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        };
        Ok(())
    })?;
    if matches!(outcome, Ok(true)) {
        let mut one = [0u8; 1];
        outcome = reader.read(&mut one).map(|n| n == 0);
    }
    Ok(outcome)
}

/// Turns the read-side result of [`content_matches`] into a crate error naming the file.
trait AtPath<T> {
    fn at_path(self, path: &str) -> Result<T>;
}

impl<T> AtPath<T> for Result<std::io::Result<T>> {
    fn at_path(self, path: &str) -> Result<T> {
        self?.at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds files of (chunks, bytes) through the batching rule; returns the batch sizes.
    fn batches(files: &[(usize, u64)]) -> Vec<usize> {
        let (mut fill, mut out) = (BatchFill::default(), Vec::new());
        for &(chunks, bytes) in files {
            if fill.must_flush_before(chunks, bytes) {
                out.push(fill.files);
                fill = BatchFill::default();
            }
            fill.add(chunks, bytes);
        }
        out.push(fill.files);
        out
    }

    #[test]
    fn batches_keep_small_files_together_and_spread_large_ones() {
        // 200 small documents: batches of 64 files.
        assert_eq!(batches(&[(1, 40 << 10); 200]), vec![64, 64, 64, 8]);
        // A forest: eight files of 1,000-2,000 chunks fit one batch by chunk count, but each
        // is a batch of its own by size, so every writer gets one.
        let forest: Vec<(usize, u64)> = (0..8)
            .map(|i| if i % 2 == 0 { (2000, 264 << 20) } else { (1400, 176 << 20) })
            .collect();
        assert_eq!(batches(&forest), vec![1; 8]);
        // Files of chunk lists, and anything bigger than a batch, are alone; an empty file
        // joins the batch before it.
        assert_eq!(batches(&[(1, 10), (BATCH_CHUNKS, 2 << 30), (1, 10), (0, 0)]), vec![1, 1, 2]);
    }

    #[test]
    fn zero_blocks_become_holes_and_the_content_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 64 * 1024];
        data[5000] = 1; // second block is data; the others are zero
        data[60_000..60_010].fill(7);
        // Written at an unaligned offset so block boundaries fall inside the buffer.
        write_sparse(&file, 100, &data).unwrap();
        file.set_len(100 + data.len() as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[100..], &data[..]);
        assert!(back[..100].iter().all(|&b| b == 0));
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 32 * 1024, "{allocated} bytes allocated for a mostly empty file");
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[3] = 9;
        assert!(!is_zero(&b));
        assert!(!is_zero(&[0, 0, 1]));
    }

    #[test]
    fn temp_names_are_short_and_stable() {
        let long = vec![b'x'; 255];
        assert_eq!(temp_name(&long), temp_name(&long));
        assert!(temp_name(&long).len() < 40);
        assert_ne!(temp_name(b"a"), temp_name(b"b"));
    }
}
