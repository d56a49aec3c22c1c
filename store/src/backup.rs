//! The snapshot pipeline (DESIGN.md "Data flow of `store snapshot`").
//!
//! ```text
//! walker ──FileJob──► file workers: read (mmap for large files) → chunk → hash → dedup
//!   │                      │ new chunks
//!   │ WalkEvent            ▼
//!   ▼                 compressors (rayon) ──EncodedBlob──► packer: packs → index files
//! tree builder: waits for each file's chunk list in walk order, emits tree blobs ──┘
//! ```
//! Every hand-over is a bounded channel, so memory does not depend on the size of the
//! source; every byte of a file is read once. The manifest is written only after the packer
//! has made every pack durable and written the index files that list them.
//!
//! Components are captured one after the other, in the order given: the next component's
//! walk starts only when every file of the previous one has been read (the hot-backup order
//! of the Alfresco manual: index, then database, then content store).

mod pipeline;
mod source;
mod walk;

use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use self::pipeline::{compress_loop, pack_loop, Dedup, RawBlob, Shared};
use self::walk::{metadata_of, walk_dir, EntryKind, FileJob, FileOutcome, WalkEvent, WalkSinks};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::pack::BlobKind;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{Component, ComponentKind, Counts, Manifest, SetKind, SkippedPath};
use crate::tree::{
    encode_chunk_list, BlobSink, ChunkRefs, Content, Metadata, Node, TreeBuilder, INLINE_CHUNKS_MAX,
};

/// One source of a set.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    /// Component name, unique in the set.
    pub name: String,
    /// A directory or a file.
    pub path: PathBuf,
}

/// What to snapshot and how.
#[derive(Debug, Clone, Default)]
pub struct SnapshotOptions {
    /// The sources, captured in this order.
    pub sources: Vec<SourceSpec>,
    /// Tags recorded in the manifest.
    pub tags: Vec<String>,
    /// Host name recorded in the manifest.
    pub host: String,
    /// Worker threads per CPU-bound stage; the number of CPUs when 0.
    pub threads: usize,
    /// Walk the sources once more, metadata only, to report totals to the progress.
    pub scan_totals: bool,
}

/// The result of a committed snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// Id of the new manifest.
    pub id: SnapshotId,
    /// The manifest written.
    pub manifest: Manifest,
    /// Packs written.
    pub packs: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Per-component counters updated by the workers.
#[derive(Default)]
struct ComponentCounters {
    bytes_read: AtomicU64,
    chunks_new: AtomicU64,
}

/// Stores blobs built during the snapshot: dedup, then hand to the compressors.
struct Putter<'a> {
    dedup: &'a Dedup<'a>,
    tx: &'a Sender<RawBlob>,
    component: usize,
}

impl Putter<'_> {
    fn put_hashed(&self, id: Id, kind: BlobKind, data: &[u8]) -> Result<bool> {
        if !self.dedup.claim(&id)? {
            return Ok(false);
        }
        let raw = RawBlob { id, kind, data: data.to_vec(), component: self.component };
        self.tx.send(raw).map_err(|_| Error::Cancelled)?;
        Ok(true)
    }
}

impl BlobSink for Putter<'_> {
    fn put(&mut self, kind: BlobKind, raw: Vec<u8>) -> Result<Id> {
        let id = Id::hash(&raw);
        if self.dedup.claim(&id)? {
            let raw = RawBlob { id, kind, data: raw, component: self.component };
            self.tx.send(raw).map_err(|_| Error::Cancelled)?;
        }
        Ok(id)
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn check_sources(sources: &[SourceSpec]) -> Result<()> {
    if sources.is_empty() {
        return Err(Error::InvalidOption { option: "sources", reason: "no source given".into() });
    }
    for (i, s) in sources.iter().enumerate() {
        if !crate::tree::is_valid_name(s.name.as_bytes()) {
            return Err(Error::InvalidOption {
                option: "component name",
                reason: format!("{:?} is not a valid name (empty, `.`, `..`, or has `/`)", s.name),
            });
        }
        if sources[..i].iter().any(|o| o.name == s.name) {
            return Err(Error::InvalidOption {
                option: "component name",
                reason: format!("two sources are named {:?}; name them apart", s.name),
            });
        }
        match std::fs::symlink_metadata(&s.path) {
            Ok(m) if m.is_dir() || m.is_file() => {}
            Ok(_) => {
                return Err(Error::Source {
                    path: s.path.clone(),
                    reason: "not a directory or regular file".into(),
                })
            }
            Err(e) => return Err(Error::Source { path: s.path.clone(), reason: e.to_string() }),
        }
    }
    Ok(())
}

/// Snapshots `opts.sources` into `repo` as one set, and commits its manifest.
///
/// Files that cannot be read are left out and listed in the manifest's `skipped`; any other
/// failure (repository I/O, a missing source) returns an error and writes no manifest.
///
/// # Errors
/// [`Error::Source`], [`Error::InvalidOption`], and any repository error.
pub fn snapshot(
    repo: &Repository,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    check_sources(&opts.sources)?;
    repo.prepare_write()?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2)
    } else {
        opts.threads
    };
    let index = repo.index()?;
    let dedup = Dedup::new(index);
    let shared = Shared::new();
    let chunker = Chunker::new(&repo.config().chunker);
    let counters: Vec<ComponentCounters> =
        opts.sources.iter().map(|_| ComponentCounters::default()).collect();
    let added: Vec<AtomicU64> = opts.sources.iter().map(|_| AtomicU64::new(0)).collect();
    let time_ns = now_ns();

    let (job_tx, job_rx) = bounded::<FileJob>(64);
    let (event_tx, event_rx) = bounded::<WalkEvent>(1024);
    let (raw_tx, raw_rx) = bounded::<RawBlob>(2 * threads + 2);
    let (enc_tx, enc_rx) = bounded(8);
    let (root_tx, root_rx) = bounded::<ComponentResult>(1);

    let outcome = std::thread::scope(|s| {
        let packer = s.spawn(|| {
            let packed = pack_loop(repo, &enc_rx, &shared).map_err(|e| shared.fail(e)).ok();
            drop(enc_rx);
            packed
        });
        let compressors = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        let compressors = match compressors {
            Ok(pool) => pool,
            Err(e) => {
                shared.fail(Error::InvalidOption { option: "threads", reason: e.to_string() });
                return None;
            }
        };
        let level = repo.config().compression_level;
        {
            let (added, shared) = (&added, &shared);
            s.spawn(move || {
                let (rx, tx) = (&raw_rx, &enc_tx);
                compressors.scope(|cs| {
                    for _ in 0..threads {
                        cs.spawn(move |_| compress_loop(level, rx, tx, added, shared));
                    }
                });
            });
        }
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let raw_tx = raw_tx.clone();
            let (dedup, shared, chunker, counters) = (&dedup, &shared, &chunker, &counters);
            s.spawn(move || {
                file_worker(&job_rx, &raw_tx, dedup, shared, chunker, counters, progress)
            });
        }
        drop(job_rx);
        {
            let raw_tx = raw_tx.clone();
            let (dedup, shared) = (&dedup, &shared);
            let limit = repo.config().chunker.max as usize;
            s.spawn(move || tree_loop(&event_rx, &raw_tx, dedup, shared, &root_tx, limit));
        }
        drop(raw_tx);
        if opts.scan_totals {
            let sources = &opts.sources;
            s.spawn(move || scan_totals(sources, progress));
        }

        let components = capture(opts, &event_tx, &job_tx, &root_rx, &shared, &counters, progress);
        if components.is_err() {
            shared.cancel();
        }
        drop(event_tx);
        drop(job_tx);
        let packed = packer.join().map_err(|_| Error::WorkerPanicked);
        Some((components, packed))
    });

    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let (components, packed) = outcome.ok_or(Error::Cancelled)?;
    let (mut components, skipped) = components?;
    let packed = packed?.ok_or(Error::Cancelled)?;
    for (c, a) in components.iter_mut().zip(&added) {
        c.counts.bytes_added = a.load(Ordering::Relaxed);
    }
    let mut counts = Counts::default();
    for c in &components {
        let k = &c.counts;
        counts.files += k.files;
        counts.dirs += k.dirs;
        counts.symlinks += k.symlinks;
        counts.specials += k.specials;
        counts.bytes_source += k.bytes_source;
        counts.bytes_read += k.bytes_read;
        counts.bytes_added += k.bytes_added;
        counts.chunks_new += k.chunks_new;
    }
    let manifest = Manifest {
        time_ns,
        end_ns: now_ns(),
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        kind: SetKind::Full,
        parent: None,
        components,
        counts,
        skipped,
    };
    // Every pack is durable and indexed (pack_loop returned): now, and only now, the manifest.
    let id = repo.save_snapshot(&manifest)?;
    Ok(SnapshotReport { id, manifest, packs: packed.packs, duration: started.elapsed() })
}

/// What the tree builder reports for a finished component.
struct ComponentResult {
    root: TreeId,
    counts: Counts,
    skipped: Vec<SkippedPath>,
}

type Captured = (Vec<Component>, Vec<SkippedPath>);

/// Walks the components in order; waits for each to be fully read before the next.
fn capture(
    opts: &SnapshotOptions,
    events: &Sender<WalkEvent>,
    jobs: &Sender<FileJob>,
    roots: &Receiver<ComponentResult>,
    shared: &Shared,
    counters: &[ComponentCounters],
    progress: &dyn Progress,
) -> Result<Captured> {
    let mut components = Vec::new();
    let mut skipped = Vec::new();
    for (i, src) in opts.sources.iter().enumerate() {
        progress.phase(&src.name);
        let start_ns = now_ns();
        let m = std::fs::symlink_metadata(&src.path)
            .map_err(|e| Error::Source { path: src.path.clone(), reason: e.to_string() })?;
        let meta = metadata_of(&m);
        let sinks = WalkSinks { events, jobs, shared, component: i, root: &src.path };
        let name = src.name.as_bytes().to_vec();
        let kind = if m.is_dir() { ComponentKind::Dir } else { ComponentKind::File };
        if events.send(WalkEvent::Enter { name: name.clone(), meta }).is_err() {
            return Err(Error::Cancelled);
        }
        let walked = match kind {
            ComponentKind::Dir => walk_dir(&src.path, &sinks),
            ComponentKind::File => {
                sinks.entry(&src.path, name, &m) && events.send(WalkEvent::Leave).is_ok()
            }
        };
        if !walked {
            return Err(Error::Cancelled);
        }
        let result = roots.recv().map_err(|_| Error::Cancelled)?;
        let c = &counters[i];
        let mut counts = result.counts;
        counts.bytes_read = c.bytes_read.load(Ordering::Relaxed);
        counts.chunks_new = c.chunks_new.load(Ordering::Relaxed);
        skipped.extend(result.skipped.into_iter().map(|mut s| {
            s.component.clone_from(&src.name);
            s
        }));
        components.push(Component {
            name: src.name.clone(),
            source: src.path.as_os_str().as_bytes().to_vec(),
            kind,
            root: result.root,
            meta,
            start_ns,
            end_ns: now_ns(),
            counts,
        });
    }
    Ok((components, skipped))
}

/// Reads files, cuts them into chunks and hands new chunks on, until the job queue closes.
fn file_worker(
    jobs: &Receiver<FileJob>,
    raw_tx: &Sender<RawBlob>,
    dedup: &Dedup<'_>,
    shared: &Shared,
    chunker: &Chunker,
    counters: &[ComponentCounters],
    progress: &dyn Progress,
) {
    let mut buf = Vec::new();
    for job in jobs {
        if shared.is_cancelled() {
            continue;
        }
        let putter = Putter { dedup, tx: raw_tx, component: job.component };
        let counter = &counters[job.component];
        match read_file(&job, &putter, chunker, counter, &mut buf, progress) {
            Ok(outcome) => {
                progress.add_items(1);
                let _ = job.reply.send(outcome);
            }
            Err(e) => shared.fail(e),
        }
    }
}

/// Reading a file failed: a source problem (skip the file) or a pipeline failure (stop).
enum ReadError {
    Source(std::io::Error),
    Fatal(Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Source(e)
    }
}

fn open_source(path: &Path) -> std::io::Result<std::fs::File> {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NOATIME;
    match OpenOptions::new().read(true).custom_flags(flags.bits() as i32).open(path) {
        // O_NOATIME is refused for files of other users unless running as root.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => {
            OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
        }
        other => other,
    }
}

fn read_file(
    job: &FileJob,
    putter: &Putter<'_>,
    chunker: &Chunker,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
    progress: &dyn Progress,
) -> Result<FileOutcome> {
    let skipped = |reason: String| Ok(FileOutcome::Skipped { reason });
    let mut file = match open_source(&job.path) {
        Ok(f) => f,
        Err(e) => return skipped(format!("cannot open: {e}")),
    };
    let m = match file.metadata() {
        Ok(m) => m,
        Err(e) => return skipped(format!("cannot stat: {e}")),
    };
    if !m.is_file() {
        return skipped("changed type during backup".into());
    }
    let meta = metadata_of(&m);
    if meta.ino != job.meta.ino {
        return skipped("replaced during backup".into());
    }
    let mut ids: Vec<ChunkId> = Vec::new();
    let mut lists: Vec<Id> = Vec::new();
    let flush_list = |ids: &mut Vec<ChunkId>, lists: &mut Vec<Id>| -> Result<(), ReadError> {
        let bytes = encode_chunk_list(ids);
        let id = Id::hash(&bytes);
        putter.put_hashed(id, BlobKind::ChunkList, &bytes).map_err(ReadError::Fatal)?;
        lists.push(id);
        ids.clear();
        Ok(())
    };
    let result = source::chunk_file(chunker, &mut file, m.len(), buf, |chunk: &[u8]| {
        let id = Id::hash(chunk);
        counter.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        progress.add_bytes(chunk.len() as u64);
        if putter.put_hashed(id, BlobKind::Data, chunk).map_err(ReadError::Fatal)? {
            counter.chunks_new.fetch_add(1, Ordering::Relaxed);
        }
        ids.push(ChunkId(id));
        if ids.len() == INLINE_CHUNKS_MAX {
            flush_list(&mut ids, &mut lists)?;
        }
        Ok::<(), ReadError>(())
    });
    let size = match result {
        Ok(size) => size,
        Err(ReadError::Source(e)) => return skipped(format!("read failed: {e}")),
        Err(ReadError::Fatal(e)) => return Err(e),
    };
    let chunks = if lists.is_empty() {
        ChunkRefs::Inline(ids)
    } else {
        if !ids.is_empty() {
            match flush_list(&mut ids, &mut lists) {
                Ok(()) => {}
                Err(ReadError::Fatal(e)) => return Err(e),
                Err(ReadError::Source(e)) => return skipped(e.to_string()),
            }
        }
        ChunkRefs::Lists(lists)
    };
    Ok(FileOutcome::Done { meta, size, chunks })
}

struct DirState {
    name: Vec<u8>,
    meta: Metadata,
    builder: TreeBuilder,
}

/// Builds trees bottom-up from the walk events, waiting for each file's outcome in order.
fn tree_loop(
    events: &Receiver<WalkEvent>,
    raw_tx: &Sender<RawBlob>,
    dedup: &Dedup<'_>,
    shared: &Shared,
    roots: &Sender<ComponentResult>,
    page_limit: usize,
) {
    let mut component = 0usize;
    let mut stack: Vec<DirState> = Vec::new();
    let mut counts = Counts::default();
    let mut skipped = Vec::new();
    let mut run = || -> Result<()> {
        for event in events {
            if shared.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let mut putter = Putter { dedup, tx: raw_tx, component };
            match event {
                WalkEvent::Enter { name, meta } => {
                    counts.dirs += 1;
                    stack.push(DirState { name, meta, builder: TreeBuilder::new(page_limit) });
                }
                WalkEvent::Entry { name, meta, kind } => {
                    let content = match kind {
                        EntryKind::File(rx) => match rx.recv().map_err(|_| Error::Cancelled)? {
                            FileOutcome::Done { meta: read_meta, size, chunks } => {
                                counts.files += 1;
                                counts.bytes_source += size;
                                let node = Node {
                                    name,
                                    meta: read_meta,
                                    content: Content::File { size, chunks },
                                };
                                top(&mut stack)?.builder.push(&node, &mut putter)?;
                                continue;
                            }
                            FileOutcome::Skipped { reason } => {
                                let path = rel_path(&stack, &name);
                                skipped.push(SkippedPath {
                                    component: String::new(),
                                    path,
                                    reason,
                                });
                                continue;
                            }
                        },
                        EntryKind::Symlink(target) => {
                            counts.symlinks += 1;
                            Content::Symlink { target }
                        }
                        EntryKind::Special(rdev) => {
                            counts.specials += 1;
                            Content::Special { rdev }
                        }
                    };
                    top(&mut stack)?.builder.push(&Node { name, meta, content }, &mut putter)?;
                }
                WalkEvent::Leave => {
                    let dir = stack.pop().ok_or(Error::Cancelled)?;
                    let tree = dir.builder.finish(&mut putter)?;
                    if let Some(parent) = stack.last_mut() {
                        let node =
                            Node { name: dir.name, meta: dir.meta, content: Content::Dir { tree } };
                        parent.builder.push(&node, &mut putter)?;
                    } else {
                        let result = ComponentResult {
                            root: tree,
                            counts: std::mem::take(&mut counts),
                            skipped: std::mem::take(&mut skipped),
                        };
                        roots.send(result).map_err(|_| Error::Cancelled)?;
                        component += 1;
                    }
                }
                WalkEvent::Skipped { path, reason } => {
                    skipped.push(SkippedPath { component: String::new(), path, reason });
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        shared.fail(e);
    }
}

fn top(stack: &mut [DirState]) -> Result<&mut DirState> {
    stack.last_mut().ok_or(Error::Cancelled)
}

/// Path of `name` below the component root, from the names of the open directories.
fn rel_path(stack: &[DirState], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::new();
    for dir in stack.iter().skip(1) {
        path.extend_from_slice(&dir.name);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Counts files and bytes of the sources (metadata only) for the progress display.
/// Memory: one open directory iterator per level of the current path.
fn scan_totals(sources: &[SourceSpec], progress: &dyn Progress) {
    let (mut files, mut bytes) = (0u64, 0u64);
    for s in sources {
        let Ok(m) = std::fs::symlink_metadata(&s.path) else { continue };
        if m.is_file() {
            files += 1;
            bytes += m.len();
            continue;
        }
        let mut stack: Vec<std::fs::ReadDir> = std::fs::read_dir(&s.path).into_iter().collect();
        while let Some(dir) = stack.last_mut() {
            let Some(entry) = dir.next() else {
                stack.pop();
                continue;
            };
            let Ok(entry) = entry else { continue };
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.extend(std::fs::read_dir(entry.path())),
                Ok(t) if t.is_file() => {
                    files += 1;
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    progress.set_total(files, bytes);
}
