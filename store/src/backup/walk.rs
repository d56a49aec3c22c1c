//! Walking a source: directories depth first, entries in raw-name order, iteratively (no
//! recursion, so nesting depth is bounded by memory, not the stack). Memory: the sorted
//! names of each directory on the current path, and the matching page of the parent set's
//! tree when there is a parent.
//!
//! With a parent set, each directory is walked side by side with the parent's listing of the
//! same directory (both are in name order). A regular file whose size, mtime, ctime, inode and
//! mode equal the parent's entry, and whose chunks are all still indexed, reuses the parent's
//! chunk list and is not read (DESIGN.md invariant 8).
//!
//! Every directory is opened relative to its parent, and its entries are looked at, listed and
//! opened relative to it (`openat`, `fstatat`, `readlinkat`): no path grows with the depth, so
//! paths of 4,096 bytes and more are backed up like any other. The open directories are those
//! of the current path and those whose files are waiting to be read.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::xattr::On;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::pipeline::Shared;
use super::writeonce::WriteOnce;
use crate::error::Result;
use crate::id::TreeId;
use crate::pattern::Patterns;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{Counts, IssueKind};
use crate::tree::{join_raw, ChunkRefs, Content, Metadata, Node, Time, Xattr};
use crate::vfs::{dir_entries, RepoDir};

/// An open directory of a source, shared by the walk and the reads of its files.
pub(crate) type DirFd = Arc<OwnedFd>;

/// Opens directory `name` in `at` (or the path `name` when `at` is `CWD`), never following a
/// symlink.
pub(crate) fn open_dir(at: impl AsFd, name: &Path) -> std::io::Result<DirFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(Arc::new(rustix::fs::openat(at, name, flags, Mode::empty())?))
}

/// Opens the directory at relative `path` below `at` one component at a time, each with
/// `O_NOFOLLOW`: a symlink anywhere on the way (a directory swapped for one since it was looked
/// at) fails the open instead of leading out of the source.
pub(crate) fn open_dir_beneath(at: impl AsFd, path: &Path) -> std::io::Result<DirFd> {
    let mut parts = path.as_os_str().as_bytes().split(|&b| b == b'/').filter(|p| !p.is_empty());
    let first =
        parts.next().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut dir = open_dir(at, Path::new(std::ffi::OsStr::from_bytes(first)))?;
    for part in parts {
        if part == b".." {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        dir = open_dir(dir.as_fd(), Path::new(std::ffi::OsStr::from_bytes(part)))?;
    }
    Ok(dir)
}

/// What `lstat` (or `fstat`) says of a path.
pub(crate) struct Lstat(rustix::fs::Stat);

impl Lstat {
    /// `name` in `dir`, not following a symlink.
    pub(crate) fn at(dir: impl AsFd, name: &Path) -> std::io::Result<Self> {
        Ok(Lstat(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?))
    }

    /// An open file.
    pub(crate) fn of(file: impl AsFd) -> std::io::Result<Self> {
        Ok(Lstat(rustix::fs::fstat(file)?))
    }

    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.0.st_mode)
    }

    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    pub(crate) fn len(&self) -> u64 {
        u64::try_from(self.0.st_size).unwrap_or(0)
    }

    pub(crate) fn dev(&self) -> u64 {
        self.0.st_dev
    }

    pub(crate) fn ino(&self) -> u64 {
        self.0.st_ino
    }

    fn rdev(&self) -> u64 {
        self.0.st_rdev
    }
}

/// Metadata of a path as `lstat` or `fstat` reports it.
pub(crate) fn metadata_of(m: &Lstat) -> Metadata {
    let s = &m.0;
    Metadata {
        mode: s.st_mode,
        uid: s.st_uid,
        gid: s.st_gid,
        mtime: Time::new(s.st_mtime, s.st_mtime_nsec as i64),
        ctime: Time::new(s.st_ctime, s.st_ctime_nsec as i64),
        ino: s.st_ino,
        dev: s.st_dev,
        nlink: s.st_nlink,
        xattrs: Vec::new(),
    }
}

/// A regular file to read: `name` in the open directory `dir`.
pub(crate) struct FileJob {
    pub(crate) dir: DirFd,
    pub(crate) name: Vec<u8>,
    /// Its size when the walk met it.
    pub(crate) size: u64,
    pub(crate) meta: Metadata,
    pub(crate) component: usize,
    pub(crate) reply: Sender<FileOutcome>,
    /// For a file of an append-only pattern that grew since the parent set: the parent's
    /// size and chunks, which the reader keeps when their end still reads the same.
    pub(crate) append: Option<(u64, ChunkRefs)>,
}

/// What reading a file gave.
pub(crate) enum FileOutcome {
    /// The file was read and chunked; `changed` when it kept changing during two reads.
    Done {
        meta: Metadata,
        size: u64,
        chunks: ChunkRefs,
        changed: bool,
        /// Why its extended attributes are not kept, when they could not be read.
        incomplete: Option<String>,
    },
    /// The file could not be read; the set goes on without it.
    Skipped { reason: String },
}

/// Where the walk reads an entry's extended attributes.
pub(crate) enum XattrsAt<'a> {
    /// An open directory (directories are opened to be listed).
    Open(BorrowedFd<'a>),
    /// A symlink, special file or mount point `name` in an open directory, not opened.
    Name(&'a DirFd, &'a [u8]),
    /// The component's own source path.
    Root,
}

/// The issue of an entry kept without its extended attributes, which could not be read.
pub(crate) fn incomplete(shown: &[u8], e: &std::io::Error) -> WalkEvent {
    WalkEvent::Issue {
        path: shown.to_vec(),
        kind: IssueKind::Incomplete,
        reason: format!("extended attributes not kept: {e}"),
    }
}

/// How a file relates to the parent set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Not in the parent set.
    New,
    /// In the parent set, but not provably unchanged: read again.
    Changed,
}

/// What an entry is, as the walker saw it.
pub(crate) enum EntryKind {
    /// A regular file, being read by a worker.
    File(Receiver<FileOutcome>, Freshness),
    /// A regular file unchanged since the parent set: its content is reused.
    Reused { size: u64, chunks: ChunkRefs },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A FIFO, socket or device.
    Special(u64),
}

/// The walk, as a stream of events in depth-first, name order.
pub(crate) enum WalkEvent {
    /// A directory's entries follow, until the matching `Leave`.
    Enter { name: Vec<u8>, meta: Metadata },
    /// A directory of a write-once component reused whole from `tree`, with the counts of its
    /// own entries (not its subdirectories'). Only its subdirectories follow, reused or
    /// listed, until the matching `Leave`; a listed one replaces its entry in `tree`.
    EnterReused { name: Vec<u8>, meta: Metadata, tree: TreeId, counts: Counts },
    /// A non-directory entry of the current directory.
    Entry { name: Vec<u8>, meta: Metadata, kind: EntryKind },
    /// The current directory is complete.
    Leave,
    /// A path that could not be walked (the set goes on without it), or was kept without some
    /// of its metadata.
    Issue { path: Vec<u8>, kind: IssueKind, reason: String },
}

/// Walk events handed to the tree builder per channel message. One message per entry put a
/// fifth of a no-change incremental of many small files into waking threads.
const EVENT_BATCH: usize = 256;

/// Sends walk events to the tree builder in batches of [`EVENT_BATCH`]. The walking thread
/// owns it; [`EventBatcher::flush`] must run before that thread waits for the tree builder
/// (a component's root tree), or the events it waits on would sit in the batch.
pub(crate) struct EventBatcher {
    tx: Sender<Vec<WalkEvent>>,
    batch: std::cell::RefCell<Vec<WalkEvent>>,
}

impl EventBatcher {
    pub(crate) fn new(tx: Sender<Vec<WalkEvent>>) -> Self {
        EventBatcher { tx, batch: std::cell::RefCell::new(Vec::with_capacity(EVENT_BATCH)) }
    }

    /// Queues `e`; false once the tree builder is gone.
    pub(crate) fn send(&self, e: WalkEvent) -> bool {
        let full = {
            let mut batch = self.batch.borrow_mut();
            batch.push(e);
            batch.len() >= EVENT_BATCH
        };
        !full || self.flush()
    }

    /// Hands over what is queued; false once the tree builder is gone.
    pub(crate) fn flush(&self) -> bool {
        let batch =
            std::mem::replace(&mut *self.batch.borrow_mut(), Vec::with_capacity(EVENT_BATCH));
        batch.is_empty() || self.tx.send(batch).is_ok()
    }
}

/// Where the walker sends its work, and what it walks against.
pub(crate) struct WalkSinks<'a> {
    pub(crate) events: &'a EventBatcher,
    pub(crate) jobs: &'a Sender<FileJob>,
    pub(crate) shared: &'a Shared,
    pub(crate) component: usize,
    /// The component's source path; skipped paths are reported relative to it.
    pub(crate) root: &'a Path,
    pub(crate) excludes: &'a Patterns,
    /// Files only ever appended to: a grown one is read from its parent's last chunk on.
    pub(crate) append_only: &'a Patterns,
    pub(crate) repo: &'a Repository,
    pub(crate) dedup: &'a super::pipeline::Dedup<'a>,
    /// Told of each excluded path when it wants files (`-v`).
    pub(crate) progress: &'a dyn Progress,
    /// The component's name, for the progress.
    pub(crate) name: &'a str,
    /// Where the walk stops: other file systems, pseudo file systems, the repository.
    pub(crate) bounds: &'a Bounds,
    /// The device of the component's root.
    pub(crate) root_dev: u64,
    /// For a write-once component: how its unchanged directories are reused.
    pub(crate) write_once: Option<&'a WriteOnce>,
}

/// What a walk leaves out although it is below a source: the directories of other file systems
/// (with `--one-file-system`) and of pseudo file systems (`/proc`, `/sys`, ...), kept as empty
/// directories as mount points are; and the repository's own directory and its cache, left out.
pub(crate) struct Bounds {
    one_file_system: bool,
    /// Devices of pseudo file systems mounted now (from `/proc/self/mountinfo`).
    pseudo: std::collections::HashSet<u64>,
    /// `(dev, ino)` of the repository's directory and its cache directory, with their paths.
    own: Vec<((u64, u64), PathBuf)>,
    /// The own directories met, as `component/path`.
    pub(crate) left_out: std::sync::Mutex<Vec<String>>,
}

/// File system types that hold no data of the machine's own: never descended into unless named
/// as a source.
const PSEUDO_FS: [&str; 22] = [
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "configfs",
    "fusectl",
    "mqueue",
    "hugetlbfs",
    "autofs",
    "binfmt_misc",
    "efivarfs",
    "selinuxfs",
    "rpc_pipefs",
    "nsfs",
    "ramfs",
];

/// How the walk treats a directory.
pub(crate) enum Boundary {
    /// Walk into it.
    Descend,
    /// Keep it as an empty directory: a mount point of another or a pseudo file system.
    MountPoint,
    /// Leave it out: the repository's own directory or cache.
    Own,
}

impl Bounds {
    /// The bounds for a walk with `one_file_system`, leaving out `own` (the repository and its
    /// cache directory).
    pub(crate) fn new(one_file_system: bool, own: &[&Path]) -> Self {
        let pseudo = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| pseudo_devices(&text))
            .unwrap_or_default();
        let own = own
            .iter()
            .filter_map(|p| {
                std::fs::metadata(p).ok().map(|m| ((m.dev(), m.ino()), p.to_path_buf()))
            })
            .collect();
        Bounds { one_file_system, pseudo, own, left_out: std::sync::Mutex::default() }
    }

    pub(crate) fn boundary(&self, m: &Lstat, root_dev: u64) -> Boundary {
        if self.own.iter().any(|(id, _)| *id == (m.dev(), m.ino())) {
            return Boundary::Own;
        }
        if m.dev() != root_dev && (self.one_file_system || self.pseudo.contains(&m.dev())) {
            return Boundary::MountPoint;
        }
        Boundary::Descend
    }
}

/// The devices of the pseudo file systems listed in `mountinfo` text (`/proc/self/mountinfo`:
/// the third field is `major:minor`, the first after ` - ` the type).
fn pseudo_devices(mountinfo: &str) -> std::collections::HashSet<u64> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (head, tail) = line.split_once(" - ")?;
            let fstype = tail.split(' ').next()?;
            if !PSEUDO_FS.contains(&fstype) {
                return None;
            }
            let (major, minor) = head.split(' ').nth(2)?.split_once(':')?;
            Some(rustix::fs::makedev(major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

/// The parent set's listing of the directory being walked, consumed in name order.
pub(crate) struct ParentDir<'a> {
    entries: RepoDir<'a>,
    peeked: Option<Node>,
}

impl<'a> ParentDir<'a> {
    /// The parent's listing of `node`, if it is a readable directory. A parent tree that
    /// cannot be read only means that the files below it are read again.
    pub(crate) fn of(repo: &'a Repository, node: Option<&Node>) -> Option<Self> {
        match node.map(|n| &n.content) {
            Some(Content::Dir { tree }) => {
                dir_entries(repo, *tree).ok().map(|entries| ParentDir { entries, peeked: None })
            }
            _ => None,
        }
    }

    /// The parent's listing of directory `tree`, if readable.
    pub(crate) fn of_tree(repo: &'a Repository, tree: TreeId) -> Option<Self> {
        dir_entries(repo, tree).ok().map(|entries| ParentDir { entries, peeked: None })
    }

    /// The parent's entry called `name`; names must be asked for in increasing order.
    fn find(&mut self, name: &[u8]) -> Result<Option<Node>> {
        loop {
            if self.peeked.is_none() {
                self.peeked = self.entries.next().transpose()?;
            }
            match &self.peeked {
                None => return Ok(None),
                Some(n) if n.name.as_slice() < name => self.peeked = None,
                Some(n) if n.name.as_slice() == name => return Ok(self.peeked.take()),
                Some(_) => return Ok(None),
            }
        }
    }
}

impl WalkSinks<'_> {
    fn event(&self, e: WalkEvent) -> bool {
        self.events.send(e) && !self.shared.is_cancelled()
    }

    /// The extended attributes of an entry (`shown` names it in messages) whose lstat metadata
    /// is `meta`: the parent set's when inode and ctime are unchanged (setting or removing one
    /// changes the ctime), otherwise read from `at`. Attributes that cannot be read are
    /// reported, and the entry is kept without them. Version-1 repositories keep none.
    pub(crate) fn xattrs(
        &self,
        at: XattrsAt<'_>,
        shown: &[u8],
        meta: &Metadata,
        parent: Option<&Metadata>,
    ) -> Vec<Xattr> {
        if self.repo.version() < 2 {
            return Vec::new();
        }
        if let Some(p) = parent.filter(|p| p.ino == meta.ino && p.ctime == meta.ctime) {
            return p.xattrs.clone();
        }
        let read = match at {
            XattrsAt::Open(fd) => crate::xattr::read(&On::Fd(fd)),
            XattrsAt::Name(dir, on_disk) => {
                let path = crate::xattr::entry_path(dir.as_fd(), on_disk, || {
                    // Without /proc: the full path (a file component's root is the file).
                    if self.root.is_dir() {
                        self.root.join(std::ffi::OsStr::from_bytes(shown))
                    } else {
                        self.root.to_path_buf()
                    }
                });
                crate::xattr::read::<BorrowedFd<'_>>(&On::Path(&path))
            }
            XattrsAt::Root => crate::xattr::read::<BorrowedFd<'_>>(&On::Path(self.root)),
        };
        read.unwrap_or_else(|e| {
            self.event(incomplete(shown, &e));
            Vec::new()
        })
    }

    /// Whether `parent`'s file content can stand for the file with lstat metadata `m`: same
    /// size, mtime, ctime, inode and mode, and every chunk still indexed.
    fn reusable(&self, parent: &Node, m: &Lstat, meta: &Metadata) -> Result<Option<ChunkRefs>> {
        let Content::File { chunks, .. } = &parent.content else { return Ok(None) };
        if !unchanged_file(parent, m, meta) {
            return Ok(None);
        }
        Ok(self.dedup.all_stored(chunks)?.then(|| chunks.clone()))
    }

    /// Sends a non-directory entry, `on_disk` in `dir`, as `name` (`shown` in messages), with
    /// its lstat metadata.
    pub(crate) fn entry(
        &self,
        (dir, on_disk): (&DirFd, &[u8]),
        name: Vec<u8>,
        shown: &[u8],
        m: &Lstat,
        parent: Option<&Node>,
    ) -> Result<bool> {
        let mut meta = metadata_of(m);
        let ft = m.file_type();
        if ft != FileType::RegularFile {
            let at = XattrsAt::Name(dir, on_disk);
            meta.xattrs = self.xattrs(at, shown, &meta, parent.map(|p| &p.meta));
        }
        let kind = if ft == FileType::RegularFile {
            let reuse = match parent {
                Some(p) => self.reusable(p, m, &meta)?,
                None => None,
            };
            if let Some(chunks) = reuse {
                // Unchanged, ctime included: so are its attributes. A file that is read gets
                // them from the reader, which has it open.
                meta.xattrs = parent.map(|p| p.meta.xattrs.clone()).unwrap_or_default();
                EntryKind::Reused { size: m.len(), chunks }
            } else {
                let (reply, rx) = bounded(1);
                let append = match parent.map(|p| (&p.meta, &p.content)) {
                    Some((p, Content::File { size, chunks }))
                        if p.ino == meta.ino
                            // The same file system (`dev` is 0 in version-1 sets).
                            && (p.dev == meta.dev || p.dev == 0)
                            && m.len() > *size
                            && self.append_only.matches(shown, on_disk) =>
                    {
                        Some((*size, chunks.clone()))
                    }
                    _ => None,
                };
                let job = FileJob {
                    dir: Arc::clone(dir),
                    name: on_disk.to_vec(),
                    size: m.len(),
                    meta: meta.clone(),
                    component: self.component,
                    reply,
                    append,
                };
                if self.jobs.send(job).is_err() {
                    return Ok(false);
                }
                let freshness = if parent.is_some() { Freshness::Changed } else { Freshness::New };
                EntryKind::File(rx, freshness)
            }
        } else if ft == FileType::Symlink {
            let on_disk = Path::new(std::ffi::OsStr::from_bytes(on_disk));
            match rustix::fs::readlinkat(dir.as_fd(), on_disk, Vec::new()) {
                Ok(target) => EntryKind::Symlink(target.into_bytes()),
                Err(e) => return Ok(self.skip(shown, &std::io::Error::from(e).to_string())),
            }
        } else if matches!(
            ft,
            FileType::Fifo | FileType::Socket | FileType::BlockDevice | FileType::CharacterDevice
        ) {
            EntryKind::Special(m.rdev())
        } else {
            return Ok(self.skip(shown, "unknown file type"));
        };
        Ok(self.event(WalkEvent::Entry { name, meta, kind }))
    }

    /// Counts an excluded path (`rel`, below the component).
    fn excluded(&self, rel: &[u8]) {
        self.shared.excluded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.progress.wants_files() {
            self.progress.file(self.name, rel, crate::progress::FileEvent::Excluded);
        }
    }

    /// Reports `shown` (a path below the component, or the source's name) as skipped.
    fn skip(&self, shown: &[u8], reason: &str) -> bool {
        self.event(WalkEvent::Issue {
            path: shown.to_vec(),
            kind: IssueKind::Skipped,
            reason: reason.to_owned(),
        })
    }

    /// The name a path below the component is shown with: `rel`, or for the component's own
    /// root the last element of its source path.
    pub(crate) fn shown<'p>(&'p self, rel: &'p [u8]) -> &'p [u8] {
        if rel.is_empty() {
            self.root.file_name().map_or(rel, |n| n.as_bytes())
        } else {
            rel
        }
    }
}

/// Whether the file `parent` recorded is unchanged by its metadata now (`m`, `meta`): same
/// size, mtime, ctime, inode and mode.
fn unchanged_file(parent: &Node, m: &Lstat, meta: &Metadata) -> bool {
    let Content::File { size, .. } = &parent.content else { return false };
    let p = &parent.meta;
    *size == m.len()
        && p.mtime == meta.mtime
        && p.ctime == meta.ctime
        && p.ino == meta.ino
        && p.mode == meta.mode
}

/// The names in the open directory `dir`, sorted by their bytes.
fn sorted_names(dir: &DirFd) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir.as_fd())? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name));
        }
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// A directory on the walk's current path.
enum Frame<'a> {
    /// Listed: each of its entries is looked at.
    Listed {
        dir: DirFd,
        /// Path below the component root, for exclude matching.
        rel: Vec<u8>,
        names: std::vec::IntoIter<OsString>,
        parent: Option<ParentDir<'a>>,
        /// A write-once directory unchanged since the parent set, listed for
        /// `--verify-write-once`: each of its files should be unchanged too.
        promised: bool,
    },
    /// Reused whole (write-once): only its subdirectories are visited.
    Reused {
        /// The nearest listed directory above it, and its path from there.
        anchor: DirFd,
        from_anchor: Vec<u8>,
        rel: Vec<u8>,
        tree: TreeId,
        subdirs: std::vec::IntoIter<(Vec<u8>, Lstat)>,
        /// The parent set's listing of it, opened when a subdirectory has no record.
        listing: Option<Option<ParentDir<'a>>>,
        /// A directory below it is listed, so its tree is rebuilt, unlike its record's.
        rebuilt: bool,
    },
}

/// What the walk does after one step in the directory on top.
enum Step<'a> {
    /// Go on in the same directory.
    Next,
    /// Descend into this directory.
    Push(Box<Frame<'a>>),
    /// The directory on top is complete.
    Pop,
    /// The walk was cancelled.
    Stop,
}

impl<'a> Step<'a> {
    /// `Next` when the walk goes on, `Stop` when the event was not taken.
    fn next_if(ok: bool) -> Self {
        if ok {
            Step::Next
        } else {
            Step::Stop
        }
    }
}

/// Walks the directory `root` (whose own `Enter` the caller has sent) and sends every entry
/// below it, ending with the `Leave` of `root`. `parent` is the parent set's listing of the
/// same directory; `promised` says it is an unchanged write-once directory whose files
/// `--verify-write-once` looks at. Returns false when the walk was cancelled.
pub(crate) fn walk_dir<'a>(
    root: &Path,
    parent: Option<ParentDir<'a>>,
    promised: bool,
    sinks: &WalkSinks<'a>,
) -> Result<bool> {
    let listed = open_dir(rustix::fs::CWD, root).and_then(|dir| Ok((sorted_names(&dir)?, dir)));
    let (names, dir) = match listed {
        Ok(v) => v,
        Err(e) => {
            return Ok(sinks.skip(sinks.shown(b""), &format!("cannot list directory: {e}"))
                && sinks.event(WalkEvent::Leave))
        }
    };
    let names = names.into_iter();
    let mut stack = vec![Frame::Listed { dir, rel: Vec::new(), names, parent, promised }];
    while let Some(frame) = stack.last_mut() {
        let step = match frame {
            Frame::Listed { dir, rel, names, parent, promised } => {
                let Some(name) = names.next() else {
                    stack.pop();
                    if !sinks.event(WalkEvent::Leave) {
                        return Ok(false);
                    }
                    continue;
                };
                sinks.listed_entry((dir, rel, parent, *promised), name.into_vec())?
            }
            Frame::Reused { anchor, from_anchor, rel, tree, subdirs, listing, .. } => {
                match subdirs.next() {
                    Some((name, m)) => {
                        let at = (&*anchor, from_anchor.as_slice(), rel.as_slice());
                        sinks.reused_subdir(at, (*tree, listing), name, &m)?
                    }
                    None => Step::Pop,
                }
            }
        };
        match step {
            Step::Next => {}
            Step::Push(f) => {
                if matches!(*f, Frame::Listed { .. }) {
                    // The reused directories above it get new trees: their records, which
                    // name the old ones, go (made again from this set's trees next time).
                    for frame in stack.iter_mut().rev() {
                        match frame {
                            Frame::Reused { rebuilt: true, .. } | Frame::Listed { .. } => break,
                            Frame::Reused { rel, rebuilt, .. } => {
                                sinks.forget_record(rel);
                                *rebuilt = true;
                            }
                        }
                    }
                }
                stack.push(*f);
            }
            Step::Pop => {
                stack.pop();
                if !sinks.event(WalkEvent::Leave) {
                    return Ok(false);
                }
            }
            Step::Stop => return Ok(false),
        }
    }
    Ok(true)
}

impl<'a> WalkSinks<'a> {
    /// Looks at entry `name` of the listed directory `dir` at `rel` (`parent`: the parent
    /// set's listing of it; `promised`: see [`Frame::Listed`]).
    fn listed_entry(
        &self,
        (dir, rel, parent, promised): (&DirFd, &[u8], &mut Option<ParentDir<'a>>, bool),
        name: Vec<u8>,
    ) -> Result<Step<'a>> {
        let dir = Arc::clone(dir);
        let on_disk = Path::new(std::ffi::OsStr::from_bytes(&name));
        let rel = join_raw(rel, &name);
        if self.excludes.matches(&rel, &name) {
            self.excluded(&rel);
            return Ok(Step::Next);
        }
        let parent_node = match parent.as_mut().map(|p| p.find(&name)) {
            Some(Ok(node)) => node,
            Some(Err(_)) => {
                // A damaged page of the parent's listing: read the rest of this directory.
                *parent = None;
                None
            }
            None => None,
        };
        let m = match Lstat::at(dir.as_fd(), on_disk) {
            Ok(m) => m,
            Err(e) => {
                return Ok(Step::next_if(self.skip(&rel, &format!("vanished or unreadable: {e}"))))
            }
        };
        if !m.is_dir() {
            if promised && m.is_file() {
                match &parent_node {
                    None => self.broken_promise(&rel, true),
                    Some(p) if !unchanged_file(p, &m, &metadata_of(&m)) => {
                        self.broken_promise(&rel, false);
                    }
                    Some(_) => {}
                }
            }
            let on_disk = name.clone();
            return Ok(Step::next_if(self.entry(
                (&dir, &on_disk),
                name,
                &rel,
                &m,
                parent_node.as_ref(),
            )?));
        }
        let mut meta = metadata_of(&m);
        match self.bounds.boundary(&m, self.root_dev) {
            Boundary::Descend => {}
            Boundary::Own => {
                self.excluded(&rel);
                if let Ok(mut left) = self.bounds.left_out.lock() {
                    left.push(format!("{}/{}", self.name, String::from_utf8_lossy(&rel)));
                }
                return Ok(Step::Next);
            }
            Boundary::MountPoint => {
                self.excluded(&rel);
                let parent = parent_node.as_ref().map(|p| &p.meta);
                meta.xattrs = self.xattrs(XattrsAt::Name(&dir, &name), &rel, &meta, parent);
                return Ok(Step::next_if(
                    self.event(WalkEvent::Enter { name, meta }) && self.event(WalkEvent::Leave),
                ));
            }
        }
        if let Some(reused) = self.reuse_dir((&dir, &name), &rel, &meta, parent_node.as_ref())? {
            return Ok(self.enter_reused(name.clone(), reused, (dir, name), rel));
        }
        let promised = self
            .write_once
            .is_some_and(|wo| wo.verify && wo.promised(&rel, &meta, parent_node.as_ref()));
        let on_disk = PathBuf::from(std::ffi::OsString::from_vec(name.clone()));
        Ok(self.enter_listed((&dir, &on_disk), name, rel, meta, parent_node, promised))
    }

    /// Lists directory `on_disk` of `at` and descends into it as `name` (at `rel`, with
    /// metadata `meta` and `parent_node` its entry in the parent set).
    fn enter_listed(
        &self,
        (at, on_disk): (&DirFd, &Path),
        name: Vec<u8>,
        rel: Vec<u8>,
        mut meta: Metadata,
        parent_node: Option<Node>,
        promised: bool,
    ) -> Step<'a> {
        let opened = open_dir_beneath(at.as_fd(), on_disk);
        match opened.and_then(|sub| Ok((sorted_names(&sub)?, sub))) {
            Ok((names, sub)) => {
                let parent = parent_node.as_ref().map(|p| &p.meta);
                meta.xattrs = self.xattrs(XattrsAt::Open(sub.as_fd()), &rel, &meta, parent);
                if !self.event(WalkEvent::Enter { name, meta }) {
                    return Step::Stop;
                }
                let parent = ParentDir::of(self.repo, parent_node.as_ref());
                Step::Push(Box::new(Frame::Listed {
                    dir: sub,
                    rel,
                    names: names.into_iter(),
                    parent,
                    promised,
                }))
            }
            Err(e) => Step::next_if(self.skip(&rel, &format!("cannot list directory: {e}"))),
        }
    }

    /// Descends into a directory reused whole: `name` at `rel`, reached as `from_anchor` from
    /// the listed directory `anchor`.
    fn enter_reused(
        &self,
        name: Vec<u8>,
        reused: super::writeonce::ReusedDir,
        (anchor, from_anchor): (DirFd, Vec<u8>),
        rel: Vec<u8>,
    ) -> Step<'a> {
        self.shared.unlisted.store(true, std::sync::atomic::Ordering::Relaxed);
        self.shared.dirs_reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tree, subdirs) = (reused.tree, reused.subdirs.into_iter());
        let event = WalkEvent::EnterReused { name, meta: reused.meta, tree, counts: reused.counts };
        if !self.event(event) {
            return Step::Stop;
        }
        let listing = None;
        Step::Push(Box::new(Frame::Reused {
            anchor,
            from_anchor,
            rel,
            tree,
            subdirs,
            listing,
            rebuilt: false,
        }))
    }

    /// Visits subdirectory `name` (looked at now: `m`) of the reused directory `tree` at
    /// `rel`, reached as `from_anchor` from `anchor`: reused in turn (from its record, or from
    /// its entry in `listing`, the parent set's listing of `tree`, opened on first need and
    /// read in name order), or listed. One that cannot be listed keeps its entry of the parent
    /// set, and is reported.
    fn reused_subdir(
        &self,
        (anchor, from_anchor, rel): (&DirFd, &[u8], &[u8]),
        (tree, listing): (TreeId, &mut Option<Option<ParentDir<'a>>>),
        name: Vec<u8>,
        m: &Lstat,
    ) -> Result<Step<'a>> {
        let rel = join_raw(rel, &name);
        let path = join_raw(from_anchor, &name);
        let meta = metadata_of(m);
        if let Some(reused) = self.reuse_dir((anchor, &path), &rel, &meta, None)? {
            return Ok(self.enter_reused(name, reused, (Arc::clone(anchor), path), rel));
        }
        let listing = listing.get_or_insert_with(|| ParentDir::of_tree(self.repo, tree));
        let node = listing.as_mut().and_then(|l| l.find(&name).ok().flatten());
        if let Some(n) = &node {
            if let Some(reused) = self.reuse_dir((anchor, &path), &rel, &meta, Some(n))? {
                return Ok(self.enter_reused(name, reused, (Arc::clone(anchor), path), rel));
            }
        }
        let on_disk = Path::new(std::ffi::OsStr::from_bytes(&path));
        Ok(self.enter_listed((anchor, on_disk), name, rel, meta, node, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_anywhere_on_a_path_from_a_listed_directory_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::create_dir_all(root.join("outside/c")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("a/swapped")).unwrap();
        let at = open_dir(rustix::fs::CWD, root).unwrap();
        let ino = |fd: &DirFd| Lstat::of(fd.as_fd()).unwrap().ino();
        let opened = open_dir_beneath(at.as_fd(), Path::new("a/b/c")).unwrap();
        assert_eq!(ino(&opened), std::fs::metadata(root.join("a/b/c")).unwrap().ino());
        for bad in ["a/swapped/c", "a/swapped", "a/../outside/c", ""] {
            assert!(open_dir_beneath(at.as_fd(), Path::new(bad)).is_err(), "{bad}");
        }
    }
}
