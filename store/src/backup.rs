//! The snapshot pipeline (DESIGN.md "Data flow of `store snapshot`").
//!
//! ```text
//! walker ──FileJob──► file workers: read → chunk → hash → dedup
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

mod adopt;
mod pipeline;
mod walk;

use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use self::pipeline::{compress_loop, pack_loop, seal_loop, Dedup, How, RawBlob, Shared};
use self::walk::{
    metadata_of, walk_dir, EntryKind, EventBatcher, FileJob, FileOutcome, Freshness, ParentDir,
    WalkEvent, WalkSinks,
};
use crate::chunker::Chunker;
use crate::compress::{probe, Effort, LevelProbe};
use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::pack::BlobKind;
use crate::pattern::Patterns;
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::{Component, ComponentKind, Counts, IssueKind, Manifest, PathIssue, SetKind};
use crate::tree::{
    encode_chunk_list, BlobSink, ChunkRefs, Content, Metadata, Node, TreeBuilder, INLINE_CHUNKS_MAX,
};

/// Where a component's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory or a regular file.
    Path(PathBuf),
    /// Standard input, stored as one file.
    Stdin,
    /// The standard output of `sh -c COMMAND`, streamed into the set as one file; its
    /// standard error is passed through. A non-zero exit fails the whole set.
    Command(String),
}

/// One source of a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSpec {
    /// Component name, unique in the set.
    pub name: String,
    /// Where its data comes from.
    pub kind: SourceKind,
}

impl SourceSpec {
    /// A directory or file component.
    #[must_use]
    pub fn path(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        SourceSpec { name: name.into(), kind: SourceKind::Path(path.into()) }
    }

    fn describe(&self) -> Vec<u8> {
        match &self.kind {
            SourceKind::Path(p) => p.as_os_str().as_bytes().to_vec(),
            SourceKind::Stdin => b"<stdin>".to_vec(),
            SourceKind::Command(c) => c.as_bytes().to_vec(),
        }
    }
}

/// Which set a snapshot builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ParentChoice {
    /// The newest set of the same host with the same component names and tags, if any.
    #[default]
    Auto,
    /// This set.
    Set(SnapshotId),
    /// None: a full set, every file read again.
    Full,
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
    /// The set this one builds on.
    pub parent: ParentChoice,
    /// Glob patterns of paths to leave out (see `backup/exclude.rs` for the rules).
    pub excludes: Vec<String>,
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
    /// Packs of an interrupted run adopted into the index before reading (FORMAT.md §11).
    pub packs_adopted: u64,
    /// Wall time.
    pub duration: Duration,
}

/// Per-component counters updated by the workers.
#[derive(Default)]
struct ComponentCounters {
    bytes_read: AtomicU64,
    chunks_new: AtomicU64,
}

/// The newest set of `host` whose component names (in order) and tags equal these.
///
/// # Errors
/// [`Error::Io`] when `snapshots/` cannot be listed.
pub fn find_parent(
    repo: &Repository,
    host: &str,
    names: &[&str],
    tags: &[String],
) -> Result<Option<(SnapshotId, Manifest)>> {
    let mut tags_sorted = tags.to_vec();
    tags_sorted.sort();
    Ok(repo
        .list_snapshots()?
        .into_iter()
        .filter_map(|s| s.manifest.ok().map(|m| (s.id, m)))
        .filter(|(_, m)| {
            let mut t = m.tags.clone();
            t.sort();
            m.host == host
                && t == tags_sorted
                && m.components.iter().map(|c| c.name.as_str()).eq(names.iter().copied())
        })
        .max_by_key(|(id, m)| (m.time_ns, *id)))
}

/// Stores blobs built during the snapshot: dedup, then hand to the compressors.
struct Putter<'a> {
    dedup: &'a Dedup<'a>,
    tx: &'a Sender<RawBlob>,
    component: usize,
    level: i32,
}

impl<'a> Putter<'a> {
    fn new(ctx: &'a Ctx<'a>, tx: &'a Sender<RawBlob>, component: usize) -> Self {
        Putter { dedup: &ctx.dedup, tx, component, level: ctx.repo.config().compression_level }
    }

    fn send(&self, id: Id, kind: BlobKind, data: Vec<u8>, how: How) -> Result<()> {
        let raw = RawBlob { id, kind, data, component: self.component, how };
        self.tx.send(raw).map_err(|_| Error::Cancelled)
    }

    fn put_hashed(&self, id: Id, kind: BlobKind, data: &[u8]) -> Result<bool> {
        if !self.dedup.claim(&id)? {
            return Ok(false);
        }
        self.send(id, kind, data.to_vec(), How::Compress(Effort::Configured))?;
        Ok(true)
    }

    /// [`Putter::put_hashed`] for a data chunk of an input whose level `levels` chooses.
    fn put_chunk(&self, id: Id, data: &[u8], levels: &mut LevelProbe) -> Result<bool> {
        if !self.dedup.claim(&id)? {
            return Ok(false);
        }
        let effort = match levels.next() {
            Some(effort) => effort,
            None => match probe(self.level, data) {
                Some((codec, stored, effort)) => {
                    levels.chose(effort);
                    let raw_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    self.send(id, BlobKind::Data, stored, How::Stored { codec, raw_len })?;
                    return Ok(true);
                }
                // No probing context could be made: compress as the last probe chose.
                None => levels.current(),
            },
        };
        self.send(id, BlobKind::Data, data.to_vec(), How::Compress(effort))?;
        Ok(true)
    }
}

impl BlobSink for Putter<'_> {
    fn put(&mut self, kind: BlobKind, raw: Vec<u8>) -> Result<Id> {
        let id = Id::hash(&raw);
        if self.dedup.claim(&id)? {
            self.send(id, kind, raw, How::Compress(Effort::Configured))?;
        }
        Ok(id)
    }
}

use crate::time::now_ns;

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
        let SourceKind::Path(path) = &s.kind else {
            if matches!(s.kind, SourceKind::Stdin)
                && sources[..i].iter().any(|o| o.kind == SourceKind::Stdin)
            {
                return Err(Error::InvalidOption {
                    option: "stdin",
                    reason: "standard input can be read by one component only".into(),
                });
            }
            continue;
        };
        let fail = |reason: String| Error::ComponentFailed { component: s.name.clone(), reason };
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() || m.is_file() => {}
            Ok(_) => {
                return Err(fail(format!("{}: not a directory or regular file", path.display())))
            }
            Err(e) => return Err(fail(format!("{}: {e}", path.display()))),
        }
    }
    Ok(())
}

/// Everything the stages of one snapshot share.
struct Ctx<'a> {
    repo: &'a Repository,
    dedup: Dedup<'a>,
    shared: Shared,
    chunker: Chunker,
    counters: Vec<ComponentCounters>,
    progress: &'a dyn Progress,
}

/// The set a snapshot builds on, per `choice`.
fn resolve_parent(
    repo: &Repository,
    opts: &SnapshotOptions,
) -> Result<Option<(SnapshotId, Manifest)>> {
    match opts.parent {
        ParentChoice::Full => Ok(None),
        ParentChoice::Set(id) => Ok(Some((id, repo.load_snapshot(id)?))),
        ParentChoice::Auto => {
            let names: Vec<&str> = opts.sources.iter().map(|s| s.name.as_str()).collect();
            find_parent(repo, &opts.host, &names, &opts.tags)
        }
    }
}

/// Snapshots `opts.sources` into `repo` as one set, and commits its manifest.
///
/// Components are captured in order. Files that cannot be read are left out, and files that
/// keep changing while read are kept as read; both are listed in the manifest's `issues`. Any
/// other failure (a missing source, a command that fails, repository I/O) returns an error
/// and writes no manifest: a set is all or nothing.
///
/// # Errors
/// [`Error::ComponentFailed`], [`Error::InvalidOption`], and any repository error.
pub fn snapshot(
    repo: &Repository,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    let started = Instant::now();
    check_sources(&opts.sources)?;
    let excludes = Patterns::new(&opts.excludes, "exclude")?;
    repo.prepare_write()?;
    let parent = resolve_parent(repo, opts)?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2)
    } else {
        opts.threads
    };
    let adopted = adopt::adopt_packs(repo, progress)?;
    let ctx = Ctx {
        repo,
        dedup: Dedup::new(repo, repo.index()?),
        shared: Shared::new(),
        chunker: Chunker::new(&repo.config().chunker),
        counters: opts.sources.iter().map(|_| ComponentCounters::default()).collect(),
        progress,
    };
    let added: Vec<AtomicU64> = opts.sources.iter().map(|_| AtomicU64::new(0)).collect();
    let time_ns = now_ns();

    let (job_tx, job_rx) = bounded::<FileJob>(64);
    let (event_tx, event_rx) = bounded::<Vec<WalkEvent>>(4);
    let events = EventBatcher::new(event_tx);
    let (raw_tx, raw_rx) = bounded::<RawBlob>(2 * threads + 2);
    let (enc_tx, enc_rx) = bounded(8);
    let (root_tx, root_rx) = bounded::<ComponentResult>(1);
    let ctx = &ctx;

    let outcome = std::thread::scope(|s| {
        let (seal_tx, seal_rx) = bounded(1);
        s.spawn(move || {
            if let Err(e) = pack_loop(repo, &enc_rx, seal_tx, &ctx.shared) {
                ctx.shared.fail(e);
            }
            drop(enc_rx);
        });
        let packer = s.spawn(move || {
            let packed = seal_loop(repo, &seal_rx, &ctx.shared, &ctx.dedup)
                .map_err(|e| ctx.shared.fail(e))
                .ok();
            drop(seal_rx);
            packed
        });
        let compressors = rayon::ThreadPoolBuilder::new().num_threads(threads).build();
        let compressors = match compressors {
            Ok(pool) => pool,
            Err(e) => {
                ctx.shared.fail(Error::InvalidOption { option: "threads", reason: e.to_string() });
                return None;
            }
        };
        let level = repo.config().compression_level;
        {
            let added = &added;
            s.spawn(move || {
                let (rx, tx) = (&raw_rx, &enc_tx);
                compressors.scope(|cs| {
                    for _ in 0..threads {
                        cs.spawn(move |_| compress_loop(level, rx, tx, added, &ctx.shared));
                    }
                });
            });
        }
        for _ in 0..threads {
            let job_rx = job_rx.clone();
            let raw_tx = raw_tx.clone();
            s.spawn(move || file_worker(ctx, &job_rx, &raw_tx));
        }
        drop(job_rx);
        {
            let raw_tx = raw_tx.clone();
            let limit = repo.config().chunker.max as usize;
            let names: Vec<String> = opts.sources.iter().map(|s| s.name.clone()).collect();
            s.spawn(move || tree_loop(ctx, &event_rx, &raw_tx, &root_tx, &names, limit));
        }
        if opts.scan_totals {
            let sources = &opts.sources;
            s.spawn(move || scan_totals(sources, progress));
        }

        let sinks = CaptureSinks { events: &events, jobs: &job_tx, raw: &raw_tx, roots: &root_rx };
        let parent_manifest = parent.as_ref().map(|(_, m)| m);
        let components = capture(ctx, opts, &excludes, parent_manifest, &sinks);
        if components.is_err() {
            ctx.shared.cancel();
        }
        drop((events, job_tx, raw_tx));
        let packed = packer.join().map_err(|_| Error::WorkerPanicked);
        Some((components, packed))
    });

    if let Some(e) = ctx.shared.take_error() {
        return Err(e);
    }
    let (components, packed) = outcome.ok_or(Error::Cancelled)?;
    let (mut components, issues) = components?;
    let packed = packed?.ok_or(Error::Cancelled)?;
    let mut counts = Counts::default();
    for (c, a) in components.iter_mut().zip(&added) {
        c.counts.bytes_added = a.load(Ordering::Relaxed);
        counts.add(&c.counts);
    }
    let manifest = Manifest {
        time_ns,
        end_ns: now_ns(),
        host: opts.host.clone(),
        tags: opts.tags.clone(),
        kind: if parent.is_some() { SetKind::Incremental } else { SetKind::Full },
        parent: parent.map(|(id, _)| id),
        components,
        counts,
        issues,
    };
    // Every pack is durable and indexed (seal_loop returned). A prune that overtook a stale lock
    // may have deleted packs this set reuses, or one may have been cut short meanwhile: check
    // that each is still there with its length, then (and only then) write the manifest.
    for (pack, len) in ctx.dedup.packs() {
        match std::fs::metadata(repo.layout().pack(pack)) {
            Err(_) => return Err(Error::PackVanished { pack }),
            Ok(m) if m.len() != len => {
                return Err(Error::corrupt(
                    crate::error::ObjectRef::Pack(pack),
                    crate::error::Corruption::Invalid(format!(
                        "{} bytes, it had {len} when this set began to use it",
                        m.len()
                    )),
                ))
            }
            Ok(_) => {}
        }
    }
    crate::crash::point("snapshot", "before_manifest");
    let id = repo.save_snapshot(&manifest)?;
    crate::crash::point("snapshot", "committed");
    Ok(SnapshotReport {
        id,
        manifest,
        packs: packed.packs,
        packs_adopted: adopted.packs,
        duration: started.elapsed(),
    })
}

/// What the tree builder reports for a finished component.
struct ComponentResult {
    root: TreeId,
    counts: Counts,
    issues: Vec<PathIssue>,
}

/// The channels the capturing thread feeds.
struct CaptureSinks<'a> {
    events: &'a EventBatcher,
    jobs: &'a Sender<FileJob>,
    raw: &'a Sender<RawBlob>,
    roots: &'a Receiver<ComponentResult>,
}

type Captured = (Vec<Component>, Vec<PathIssue>);

/// Captures the components in order; each is complete (every file read) before the next
/// starts, which is the order the operator asked for.
fn capture(
    ctx: &Ctx<'_>,
    opts: &SnapshotOptions,
    excludes: &Patterns,
    parent: Option<&Manifest>,
    sinks: &CaptureSinks<'_>,
) -> Result<Captured> {
    let mut components = Vec::new();
    let mut issues = Vec::new();
    for (i, src) in opts.sources.iter().enumerate() {
        ctx.progress.phase(&src.name);
        let start_ns = now_ns();
        let parent_component =
            parent.and_then(|m| m.components.iter().find(|c| c.name == src.name));
        let (kind, meta) = match &src.kind {
            SourceKind::Path(path) => {
                capture_path(ctx, src, path, i, excludes, parent_component, sinks)?
            }
            SourceKind::Stdin => {
                let stdin = std::io::stdin();
                let meta = capture_stream(ctx, src, i, &mut stdin.lock(), sinks)?;
                (ComponentKind::Stdin, meta)
            }
            SourceKind::Command(cmd) => {
                (ComponentKind::Command, capture_command(ctx, src, i, cmd, sinks)?)
            }
        };
        // The tree builder finishes the component from the events it has: hand over the rest.
        if !sinks.events.flush() {
            return Err(Error::Cancelled);
        }
        let result = sinks.roots.recv().map_err(|_| Error::Cancelled)?;
        let c = &ctx.counters[i];
        let mut counts = result.counts;
        counts.bytes_read = c.bytes_read.load(Ordering::Relaxed);
        counts.chunks_new = c.chunks_new.load(Ordering::Relaxed);
        issues.extend(result.issues.into_iter().map(|mut s| {
            s.component.clone_from(&src.name);
            s
        }));
        components.push(Component {
            name: src.name.clone(),
            source: src.describe(),
            kind,
            root: result.root,
            meta,
            start_ns,
            end_ns: now_ns(),
            counts,
        });
    }
    Ok((components, issues))
}

/// Captures a directory or file component.
fn capture_path(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    path: &Path,
    index: usize,
    excludes: &Patterns,
    parent: Option<&Component>,
    sinks: &CaptureSinks<'_>,
) -> Result<(ComponentKind, Metadata)> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::ComponentFailed {
        component: src.name.clone(),
        reason: format!("{}: {e}", path.display()),
    })?;
    let meta = metadata_of(&m);
    let walk = WalkSinks {
        events: sinks.events,
        jobs: sinks.jobs,
        shared: &ctx.shared,
        component: index,
        root: path,
        excludes,
        repo: ctx.repo,
        dedup: &ctx.dedup,
    };
    let name = src.name.as_bytes().to_vec();
    if !sinks.events.send(WalkEvent::Enter { name: name.clone(), meta }) {
        return Err(Error::Cancelled);
    }
    let (kind, walked) = if m.is_dir() {
        let parent_root = parent.filter(|c| c.kind.is_dir()).and_then(|c| {
            let node =
                Node { name: Vec::new(), meta: c.meta, content: Content::Dir { tree: c.root } };
            ParentDir::of(ctx.repo, Some(&node))
        });
        (ComponentKind::Dir, walk_dir(path, parent_root, &walk)?)
    } else {
        let parent_node = parent
            .filter(|c| c.kind == ComponentKind::File)
            .and_then(|c| crate::vfs::component_node(ctx.repo, c).ok());
        let sent = walk.entry(path, name, &m, parent_node.as_ref())?;
        (ComponentKind::File, sent && sinks.events.send(WalkEvent::Leave))
    };
    if walked {
        Ok((kind, meta))
    } else {
        Err(Error::Cancelled)
    }
}

/// Metadata recorded for a stream (stdin, command output): a 0600 file owned by this
/// process, modified at the end of the capture.
fn stream_meta() -> Metadata {
    Metadata {
        mode: 0o100_600,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime_ns: now_ns(),
        ctime_ns: 0,
        ino: 0,
    }
}

/// Chunks a stream into the set as the single file of component `index`.
fn capture_stream(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    index: usize,
    reader: &mut dyn std::io::Read,
    sinks: &CaptureSinks<'_>,
) -> Result<Metadata> {
    let putter = Putter::new(ctx, sinks.raw, index);
    let counter = &ctx.counters[index];
    let mut buf = Vec::new();
    let read = chunk_into(ctx, &putter, counter, &mut buf, None, |chunker, buf, f| {
        chunker.chunk_reader(&mut *reader, buf, f)
    });
    let (size, chunks) = match read {
        Ok(v) => v,
        Err(ReadError::Fatal(e)) => return Err(e),
        Err(ReadError::Source(e)) => {
            return Err(Error::ComponentFailed {
                component: src.name.clone(),
                reason: format!("read failed: {e}"),
            })
        }
    };
    let meta = stream_meta();
    let name = src.name.as_bytes().to_vec();
    let (reply, rx) = bounded(1);
    let _ = reply.send(FileOutcome::Done { meta, size, chunks, changed: false });
    let kind = EntryKind::File(rx, Freshness::New);
    let events = [
        WalkEvent::Enter { name: name.clone(), meta },
        WalkEvent::Entry { name, meta, kind },
        WalkEvent::Leave,
    ];
    if !events.into_iter().all(|e| sinks.events.send(e)) {
        return Err(Error::Cancelled);
    }
    ctx.progress.add_items(1);
    Ok(meta)
}

/// Runs `sh -c cmd` in its own process group and captures its standard output; its standard
/// error goes to ours. A non-zero exit, a signal, or a failure of the set kills the group and
/// fails the component.
fn capture_command(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    index: usize,
    cmd: &str,
    sinks: &CaptureSinks<'_>,
) -> Result<Metadata> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let fail = |reason: String| Error::ComponentFailed { component: src.name.clone(), reason };
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start `sh -c {cmd}`: {e}")))?;
    let kill_group = |child: &std::process::Child| {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    };
    let captured = match child.stdout.take() {
        Some(mut out) => capture_stream(ctx, src, index, &mut out, sinks),
        None => Err(fail("command has no standard output".into())),
    };
    if captured.is_err() {
        kill_group(&child);
    }
    let status = child.wait().map_err(|e| fail(format!("waiting for the command: {e}")));
    let meta = captured?;
    let status = status?;
    if status.success() {
        Ok(meta)
    } else if let Some(sig) = status.signal() {
        Err(fail(format!("command `{cmd}` was killed by signal {sig}")))
    } else {
        Err(fail(format!("command `{cmd}` exited with status {}", status.code().unwrap_or(-1))))
    }
}

/// Reads files, cuts them into chunks and hands new chunks on, until the job queue closes.
fn file_worker(ctx: &Ctx<'_>, jobs: &Receiver<FileJob>, raw_tx: &Sender<RawBlob>) {
    let mut buf = Vec::new();
    for job in jobs {
        if ctx.shared.is_cancelled() {
            continue;
        }
        let putter = Putter::new(ctx, raw_tx, job.component);
        let counter = &ctx.counters[job.component];
        match read_file(ctx, &job, &putter, counter, &mut buf) {
            Ok(outcome) => {
                ctx.progress.add_items(1);
                let _ = job.reply.send(outcome);
            }
            Err(e) => ctx.shared.fail(e),
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

type ChunkSink<'f> = &'f mut dyn FnMut(&[u8]) -> Result<(), ReadError>;

/// Feeds the chunks that `feed` produces through hashing and dedup, collecting the file's
/// chunk refs (moving long lists into chunk-list blobs). Returns the bytes read.
fn chunk_into(
    ctx: &Ctx<'_>,
    putter: &Putter<'_>,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
    size: Option<u64>,
    feed: impl FnOnce(&Chunker, &mut Vec<u8>, ChunkSink<'_>) -> Result<u64, ReadError>,
) -> Result<(u64, ChunkRefs), ReadError> {
    let mut levels = LevelProbe::for_input(size, putter.level);
    let mut ids: Vec<ChunkId> = Vec::new();
    let mut lists: Vec<Id> = Vec::new();
    let flush_list = |ids: &mut Vec<ChunkId>, lists: &mut Vec<Id>| -> Result<(), ReadError> {
        let bytes = encode_chunk_list(ids).map_err(ReadError::Fatal)?;
        let id = Id::hash(&bytes);
        putter.put_hashed(id, BlobKind::ChunkList, &bytes).map_err(ReadError::Fatal)?;
        lists.push(id);
        ids.clear();
        Ok(())
    };
    let mut on_chunk = |chunk: &[u8]| -> Result<(), ReadError> {
        let id = Id::hash(chunk);
        counter.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        ctx.progress.add_bytes(chunk.len() as u64);
        if putter.put_chunk(id, chunk, &mut levels).map_err(ReadError::Fatal)? {
            counter.chunks_new.fetch_add(1, Ordering::Relaxed);
        }
        ids.push(ChunkId(id));
        if ids.len() == INLINE_CHUNKS_MAX {
            flush_list(&mut ids, &mut lists)?;
        }
        Ok(())
    };
    let size = feed(&ctx.chunker, buf, &mut on_chunk)?;
    let refs = if lists.is_empty() {
        ChunkRefs::Inline(ids)
    } else {
        if !ids.is_empty() {
            flush_list(&mut ids, &mut lists)?;
        }
        ChunkRefs::Lists(lists)
    };
    Ok((size, refs))
}

/// Whether a file changed between two `fstat`s: size or modification time differ.
fn changed_since(before: &Metadata, before_len: u64, after: &std::fs::Metadata) -> bool {
    let a = metadata_of(after);
    after.len() != before_len || a.mtime_ns != before.mtime_ns
}

fn read_file(
    ctx: &Ctx<'_>,
    job: &FileJob,
    putter: &Putter<'_>,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
) -> Result<FileOutcome> {
    let skipped = |reason: String| Ok(FileOutcome::Skipped { reason });
    let mut file = match open_source(&job.path) {
        Ok(f) => f,
        Err(e) => return skipped(format!("cannot open: {e}")),
    };
    // A file that changes while it is read is read once more; if it changes again, what the
    // second read saw is kept and the path is reported.
    for attempt in 0..2 {
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
        if attempt > 0 {
            if let Err(e) = std::io::Seek::rewind(&mut file) {
                return skipped(format!("cannot read again: {e}"));
            }
        }
        let read = chunk_into(ctx, putter, counter, buf, Some(m.len()), |chunker, buf, f| {
            chunker.chunk_reader(&mut file, buf, f)
        });
        let (size, chunks) = match read {
            Ok(v) => v,
            Err(ReadError::Source(e)) => return skipped(format!("read failed: {e}")),
            Err(ReadError::Fatal(e)) => return Err(e),
        };
        let changed = match file.metadata() {
            Ok(after) => changed_since(&meta, m.len(), &after) || size != m.len(),
            Err(_) => true,
        };
        if !changed || attempt == 1 {
            return Ok(FileOutcome::Done { meta, size, chunks, changed });
        }
    }
    skipped("unreachable: read loop ended".into())
}

struct DirState {
    name: Vec<u8>,
    meta: Metadata,
    builder: TreeBuilder,
}

/// At most this many problem paths are listed in a manifest; the rest are counted. A set of
/// tens of thousands of unreadable files must still commit a manifest every reader accepts.
pub const MAX_LISTED_ISSUES: usize = 10_000;
/// Bytes of paths and reasons listed in a manifest at most: 16 MiB, a quarter of what a reader
/// accepts (FORMAT.md §7).
const MAX_ISSUE_BYTES: usize = 16 << 20;

/// The problem paths of a set, bounded by [`MAX_LISTED_ISSUES`] and [`MAX_ISSUE_BYTES`]. Each
/// component's paths beyond the bound are counted, and summed up by one last issue with an empty
/// path (every path is still reported to the progress as it is met).
#[derive(Default)]
struct IssueList {
    listed: Vec<PathIssue>,
    count: usize,
    bytes: usize,
    omitted_skipped: u64,
    omitted_changed: u64,
}

impl IssueList {
    fn push(&mut self, issue: PathIssue) {
        let size = issue.path.len() + issue.reason.len() + issue.component.len() + 32;
        if self.count >= MAX_LISTED_ISSUES || self.bytes + size > MAX_ISSUE_BYTES {
            match issue.kind {
                IssueKind::Skipped => self.omitted_skipped += 1,
                IssueKind::Changed => self.omitted_changed += 1,
            }
            return;
        }
        self.count += 1;
        self.bytes += size;
        self.listed.push(issue);
    }

    /// The current component's issues, with the summary of those not listed.
    fn take_component(&mut self) -> Vec<PathIssue> {
        let mut out = std::mem::take(&mut self.listed);
        let (skipped, changed) = (self.omitted_skipped, self.omitted_changed);
        if skipped + changed > 0 {
            out.push(PathIssue {
                component: out.first().map(|i| i.component.clone()).unwrap_or_default(),
                path: Vec::new(),
                kind: if skipped > 0 { IssueKind::Skipped } else { IssueKind::Changed },
                reason: format!(
                    "{} more paths not listed ({skipped} not backed up, {changed} changed while \
                     read): a set lists at most {MAX_LISTED_ISSUES}",
                    skipped + changed
                ),
            });
        }
        self.omitted_skipped = 0;
        self.omitted_changed = 0;
        out
    }
}

/// Builds trees bottom-up from the walk events, waiting for each file's outcome in order.
fn tree_loop(
    ctx: &Ctx<'_>,
    events: &Receiver<Vec<WalkEvent>>,
    raw_tx: &Sender<RawBlob>,
    roots: &Sender<ComponentResult>,
    names: &[String],
    page_limit: usize,
) {
    let mut component = 0usize;
    let mut stack: Vec<DirState> = Vec::new();
    let mut counts = Counts::default();
    let mut issues = IssueList::default();
    let issue = |issues: &mut IssueList, component: usize, path, kind, reason| {
        let name = names.get(component).cloned().unwrap_or_default();
        let issue = PathIssue { component: name, path, kind, reason };
        ctx.progress.issue(&issue);
        issues.push(issue);
    };
    let mut run = || -> Result<()> {
        for event in events.iter().flatten() {
            if ctx.shared.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let mut putter = Putter::new(ctx, raw_tx, component);
            match event {
                WalkEvent::Enter { name, meta } => {
                    counts.dirs += 1;
                    stack.push(DirState { name, meta, builder: TreeBuilder::new(page_limit) });
                }
                WalkEvent::Entry { name, meta, kind } => {
                    let node = match kind {
                        EntryKind::File(rx, freshness) => {
                            match rx.recv().map_err(|_| Error::Cancelled)? {
                                FileOutcome::Done { meta, size, chunks, changed } => {
                                    counts.files += 1;
                                    counts.bytes_source += size;
                                    match freshness {
                                        Freshness::New => counts.files_new += 1,
                                        Freshness::Changed => counts.files_changed += 1,
                                    }
                                    if changed {
                                        issue(
                                            &mut issues,
                                            component,
                                            rel_path(&stack, &name),
                                            IssueKind::Changed,
                                            "changed while it was read, twice; kept as read".into(),
                                        );
                                    }
                                    Node { name, meta, content: Content::File { size, chunks } }
                                }
                                FileOutcome::Skipped { reason } => {
                                    let path = rel_path(&stack, &name);
                                    issue(&mut issues, component, path, IssueKind::Skipped, reason);
                                    continue;
                                }
                            }
                        }
                        EntryKind::Reused { size, chunks } => {
                            counts.files += 1;
                            counts.files_unchanged += 1;
                            counts.bytes_source += size;
                            Node { name, meta, content: Content::File { size, chunks } }
                        }
                        EntryKind::Symlink(target) => {
                            counts.symlinks += 1;
                            Node { name, meta, content: Content::Symlink { target } }
                        }
                        EntryKind::Special(rdev) => {
                            counts.specials += 1;
                            Node { name, meta, content: Content::Special { rdev } }
                        }
                    };
                    top(&mut stack)?.builder.push(&node, &mut putter)?;
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
                            issues: issues.take_component(),
                        };
                        roots.send(result).map_err(|_| Error::Cancelled)?;
                        component += 1;
                    }
                }
                WalkEvent::Skipped { path, reason } => {
                    issue(&mut issues, component, path, IssueKind::Skipped, reason);
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        ctx.shared.fail(e);
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
        let SourceKind::Path(path) = &s.kind else { continue };
        let Ok(m) = std::fs::symlink_metadata(path) else { continue };
        if m.is_file() {
            files += 1;
            bytes += m.len();
            continue;
        }
        let mut stack: Vec<std::fs::ReadDir> = std::fs::read_dir(path).into_iter().collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(issues: Vec<PathIssue>) -> Manifest {
        Manifest {
            time_ns: 1,
            end_ns: 2,
            host: "h".into(),
            tags: vec![],
            kind: SetKind::Full,
            parent: None,
            components: vec![],
            counts: Counts::default(),
            issues,
        }
    }

    fn issue(path: &[u8], kind: IssueKind, reason: &str) -> PathIssue {
        PathIssue { component: "c".into(), path: path.to_vec(), kind, reason: reason.into() }
    }

    // See: issue 12, defect 2 (a manifest listing 24,000 long unreadable paths was over the
    // decode limit, so the set could never be read).
    #[test]
    fn problem_paths_beyond_the_bound_are_counted_not_listed() {
        let mut list = IssueList::default();
        for i in 0..MAX_LISTED_ISSUES + 30 {
            let kind = if i % 3 == 0 { IssueKind::Changed } else { IssueKind::Skipped };
            list.push(issue(format!("p{i}").as_bytes(), kind, "cannot open"));
        }
        let out = list.take_component();
        assert_eq!(out.len(), MAX_LISTED_ISSUES + 1);
        let summary = out.last().unwrap();
        assert!(summary.path.is_empty());
        assert!(summary.reason.starts_with("30 more paths not listed"), "{}", summary.reason);
        // The next component starts its own count of omitted paths; the bound is per set.
        list.push(issue(b"late", IssueKind::Skipped, "x"));
        let next = list.take_component();
        assert_eq!(next.len(), 1);
        assert!(next[0].path.is_empty() && next[0].reason.starts_with("1 more"));
    }

    #[test]
    fn long_problem_paths_are_bounded_by_bytes_and_the_manifest_stays_readable() {
        let mut list = IssueList::default();
        let long = vec![b'n'; 4000];
        for _ in 0..9000 {
            list.push(issue(&long, IssueKind::Skipped, "Permission denied (os error 13)"));
        }
        let issues = list.take_component();
        let listed_bytes: usize = issues.iter().map(|i| i.path.len()).sum();
        assert!(listed_bytes <= MAX_ISSUE_BYTES, "{listed_bytes}");
        assert!(issues.len() < 9000);
        let m = manifest_with(issues);
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn a_manifest_a_reader_would_refuse_is_never_encoded() {
        let huge = PathIssue {
            component: "c".into(),
            path: vec![b'x'; crate::format::MAX_RECORD_LEN],
            kind: IssueKind::Skipped,
            reason: String::new(),
        };
        let m = manifest_with(vec![huge]);
        let err = m.encode().unwrap_err();
        assert!(matches!(err, Error::Encode { what: "manifest", .. }), "{err}");
    }
}
