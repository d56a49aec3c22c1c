//! Restoring a snapshot into a directory (RELIABILITY.md "Restore: path traversal and symlink
//! races"; DESIGN.md invariant 5).
//!
//! Safety rules:
//! - every name comes from a tree that was checked on decode (not empty, not `.`/`..`, no `/`,
//!   no NUL) and is checked again here before use;
//! - directories are created with `mkdirat` relative to an open parent and entered with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)`, so a symlink, planted by the snapshot or by anyone
//!   else, is never traversed;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`; symlinks are created, never
//!   followed;
//! - metadata is applied last, on the open descriptor: ownership (as root only), then mode
//!   (setuid/setgid only as root), then times; a directory's when everything in it is done.
//!
//! Every blob is verified against its id as it is read. A file whose data cannot be read or
//! verified is removed and reported with the pack and blob at fault; the rest is restored.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};

use crate::error::{Error, IoContext, Result};
use crate::id::Id;
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{
    decode_chunk_list, escape_name, is_valid_name, ChunkRefs, Content, Metadata, Node,
};
use crate::vfs::dir_entries;

/// Where and how to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The target directory; created if missing, must be empty if present.
    pub target: PathBuf,
    /// Parallel file writers; the number of CPUs when 0.
    pub threads: usize,
    /// Only these components (all when empty).
    pub components: Vec<String>,
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
    /// Paths that could not be restored.
    pub failures: Vec<RestoreFailure>,
    /// Wall time.
    pub duration: Duration,
}

#[derive(Default)]
struct Tally {
    report: RestoreReport,
}

type Shared = Mutex<Tally>;

fn record(shared: &Shared, path: &str, error: impl std::fmt::Display) {
    if let Ok(mut t) = shared.lock() {
        t.report.failures.push(RestoreFailure { path: path.to_owned(), error: error.to_string() });
    }
}

fn count(shared: &Shared, f: impl FnOnce(&mut RestoreReport)) {
    if let Ok(mut t) = shared.lock() {
        f(&mut t.report);
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

/// Checks the target directory: created if missing, refused if it holds anything.
fn prepare_target(target: &std::path::Path) -> Result<OwnedFd> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Target {
                    path: target.to_path_buf(),
                    reason: "directory is not empty".into(),
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

/// Restores every component of `manifest` into `opts.target`, each as `TARGET/<name>`.
///
/// Damaged data does not stop the restore: the files affected are listed in
/// [`RestoreReport::failures`] and everything else is written.
///
/// # Errors
/// [`Error::Target`] when the target cannot be used; repository errors that stop everything.
pub fn restore(
    repo: &Repository,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let started = Instant::now();
    if let Some(missing) =
        opts.components.iter().find(|n| !manifest.components.iter().any(|c| c.name == **n))
    {
        let names: Vec<&str> = manifest.components.iter().map(|c| c.name.as_str()).collect();
        return Err(Error::InvalidOption {
            option: "component",
            reason: format!("the set has no component {missing:?} (it has: {})", names.join(", ")),
        });
    }
    let target_fd = prepare_target(&opts.target)?;
    repo.index()?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2)
    } else {
        opts.threads
    };
    let as_root = rustix::process::geteuid().is_root();
    progress.set_total(manifest.counts.files, manifest.counts.bytes_source);
    let shared: Shared = Mutex::default();
    std::thread::scope(|s| {
        let (tx, rx) = bounded::<FileJob<'_>>(256);
        for _ in 0..threads {
            let rx = rx.clone();
            let shared = &shared;
            s.spawn(move || file_writer(repo, &rx, as_root, shared, progress));
        }
        drop(rx);
        let root = Arc::new(DirHandle {
            fd: target_fd,
            meta: None,
            path: String::new(),
            as_root,
            shared: &shared,
        });
        for c in manifest
            .components
            .iter()
            .filter(|c| opts.components.is_empty() || opts.components.contains(&c.name))
        {
            progress.phase(&c.name);
            if !is_valid_name(c.name.as_bytes()) {
                record(&shared, &c.name, "invalid component name");
                continue;
            }
            if c.kind.is_dir() {
                let node = Node {
                    name: c.name.as_bytes().to_vec(),
                    meta: c.meta,
                    content: Content::Dir { tree: c.root },
                };
                restore_dir(repo, &root, &node, &tx, &shared);
            } else {
                walk_tree(repo, Arc::clone(&root), c.root, &tx, &shared);
            }
        }
        drop(root);
        drop(tx);
    });
    let mut report = shared.into_inner().map(|t| t.report).unwrap_or_default();
    report.duration = started.elapsed();
    Ok(report)
}

/// Creates directory `node` in `parent` and restores its contents.
fn restore_dir<'a>(
    repo: &Repository,
    parent: &Arc<DirHandle<'a>>,
    node: &Node,
    tx: &crossbeam_channel::Sender<FileJob<'a>>,
    shared: &'a Shared,
) {
    let Content::Dir { tree } = node.content else { return };
    let path = join(&parent.path, &node.name);
    match make_dir(parent, &node.name, &node.meta, &path) {
        Ok(handle) => walk_tree(repo, Arc::new(handle), tree, tx, shared),
        Err(e) => record(shared, &path, e),
    }
}

fn make_dir<'a>(
    parent: &DirHandle<'a>,
    name: &[u8],
    meta: &Metadata,
    path: &str,
) -> Result<DirHandle<'a>> {
    rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(0o700)).at(path)?;
    let fd = open_dir_at(&parent.fd, name).at(path)?;
    Ok(DirHandle {
        fd,
        meta: Some(*meta),
        path: path.to_owned(),
        as_root: parent.as_root,
        shared: parent.shared,
    })
}

/// Restores the entries of `tree` into `dir`, depth first; memory is one page iterator and
/// one open directory per level of the current path.
fn walk_tree<'a>(
    repo: &Repository,
    dir: Arc<DirHandle<'a>>,
    tree: crate::TreeId,
    tx: &crossbeam_channel::Sender<FileJob<'a>>,
    shared: &'a Shared,
) {
    let entries = match dir_entries(repo, tree) {
        Ok(e) => e,
        Err(e) => return record(shared, &dir.path, e),
    };
    let mut stack = vec![(dir, entries)];
    while let Some((dir, entries)) = stack.last_mut() {
        let node = match entries.next() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                record(shared, &dir.path, e);
                stack.pop();
                continue;
            }
            Some(Ok(node)) => node,
        };
        let path = join(&dir.path, &node.name);
        if !is_valid_name(&node.name) {
            record(shared, &path, "invalid name");
            continue;
        }
        match &node.content {
            Content::Dir { tree } => {
                let tree = *tree;
                let handle = match make_dir(dir, &node.name, &node.meta, &path) {
                    Ok(h) => h,
                    Err(e) => {
                        record(shared, &path, e);
                        continue;
                    }
                };
                count(shared, |r| r.dirs += 1);
                match dir_entries(repo, tree) {
                    Ok(entries) => stack.push((Arc::new(handle), entries)),
                    Err(e) => record(shared, &path, e),
                }
            }
            Content::File { .. } => {
                let job = FileJob { dir: Arc::clone(dir), node, path };
                if tx.send(job).is_err() {
                    return;
                }
            }
            Content::Symlink { target } => {
                match make_symlink(dir, &node.name, target, &node.meta) {
                    Ok(()) => count(shared, |r| r.symlinks += 1),
                    Err(e) => record(shared, &path, format!("cannot create symlink: {e}")),
                }
            }
            Content::Special { rdev } => match make_special(dir, &node.name, &node.meta, *rdev) {
                Ok(true) => count(shared, |r| r.specials += 1),
                Ok(false) => {}
                Err(e) => record(shared, &path, format!("cannot create special file: {e}")),
            },
        }
    }
}

fn make_symlink(
    dir: &DirHandle<'_>,
    name: &[u8],
    target: &[u8],
    meta: &Metadata,
) -> rustix::io::Result<()> {
    rustix::fs::symlinkat(target, &dir.fd, name)?;
    if dir.as_root {
        rustix::fs::chownat(
            &dir.fd,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::fs::utimensat(&dir.fd, name, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)
}

/// Creates a FIFO (always) or a device (as root); sockets are not recreated. Returns whether
/// something was created.
fn make_special(
    dir: &DirHandle<'_>,
    name: &[u8],
    meta: &Metadata,
    rdev: u64,
) -> rustix::io::Result<bool> {
    use rustix::fs::FileType;
    let kind = FileType::from_raw_mode(meta.mode);
    let allowed = match kind {
        FileType::Fifo => true,
        FileType::CharacterDevice | FileType::BlockDevice => dir.as_root,
        _ => false,
    };
    if !allowed {
        return Ok(false);
    }
    rustix::fs::mknodat(&dir.fd, name, kind, Mode::from_raw_mode(0o600), rdev)?;
    // By name: the directory was created by this restore with mode 0700, so nobody else can
    // have replaced the node (opening a FIFO to use fchmod would block).
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

/// Writes files handed over by the walker until the queue closes.
fn file_writer(
    repo: &Repository,
    jobs: &Receiver<FileJob<'_>>,
    as_root: bool,
    shared: &Shared,
    progress: &dyn Progress,
) {
    let mut frame = Vec::new();
    let mut raw = Vec::new();
    for job in jobs {
        match write_file(repo, &job, as_root, &mut frame, &mut raw, progress) {
            Ok(bytes) => count(shared, |r| {
                r.files += 1;
                r.bytes += bytes;
            }),
            Err(e) => {
                let _ =
                    rustix::fs::unlinkat(&job.dir.fd, job.node.name.as_slice(), AtFlags::empty());
                record(shared, &job.path, e);
            }
        }
        progress.add_items(1);
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

/// Calls `f` with each chunk id of a file, in order, loading chunk-list blobs as needed.
///
/// # Errors
/// A damaged or missing chunk-list blob, or the first error of `f`.
pub fn for_each_chunk(
    repo: &Repository,
    refs: &ChunkRefs,
    mut f: impl FnMut(Id) -> Result<()>,
) -> Result<()> {
    match refs {
        ChunkRefs::Inline(ids) => ids.iter().try_for_each(|c| f(c.0)),
        ChunkRefs::Lists(lists) => {
            for list in lists {
                let bytes = repo.read_blob(*list, BlobKind::ChunkList)?;
                let ids = decode_chunk_list(&bytes).map_err(|reason| {
                    Error::corrupt(crate::error::ObjectRef::ChunkList(*list), reason)
                })?;
                ids.iter().try_for_each(|c| f(c.0))?;
            }
            Ok(())
        }
    }
}

fn write_file(
    repo: &Repository,
    job: &FileJob<'_>,
    as_root: bool,
    frame: &mut Vec<u8>,
    raw: &mut Vec<u8>,
    progress: &dyn Progress,
) -> Result<u64> {
    let Content::File { size, chunks } = &job.node.content else { return Ok(0) };
    let fd = rustix::fs::openat(
        &job.dir.fd,
        job.node.name.as_slice(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .at(&job.path)?;
    let mut file = File::from(fd);
    let mut written = 0u64;
    for_each_chunk(repo, chunks, |id| {
        repo.read_blob_into(id, BlobKind::Data, frame, raw)?;
        file.write_all(raw).at(&job.path)?;
        written += raw.len() as u64;
        progress.add_bytes(raw.len() as u64);
        Ok(())
    })?;
    if written != *size {
        return Err(Error::SizeMismatch {
            path: job.path.clone(),
            recorded: *size,
            found: written,
        });
    }
    apply_meta(&file, &job.node.meta, as_root).at(&job.path)?;
    Ok(written)
}
