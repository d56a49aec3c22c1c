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
//!
//! Parts: `capture` (the components, in order), `walk` (a directory against the parent set),
//! `read` (files: chunk, hash, dedup), `pipeline` (compression, packs, index files), `build`
//! (trees, bottom-up, and the manifest's bounded list of problem paths), `adopt` (packs of an
//! interrupted run).

mod adopt;
mod build;
mod capture;
mod copy;
mod pipeline;
mod preview;
mod read;
mod walk;
mod writeonce;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use self::build::tree_loop;
use self::capture::{capture, scan_totals, CaptureSinks, ComponentResult};
pub use self::copy::{copy, CopiedSet, CopyOptions, CopyReport};
use self::pipeline::{run_stages, Dedup, How, RawBlob, Shared, Stages};
pub use self::preview::{preview, ComponentPreview, PreviewReport};
use self::read::file_worker;
use self::walk::{
    metadata_of, open_dir, walk_dir, EntryKind, EventBatcher, FileJob, FileOutcome, Freshness,
    Lstat, ParentDir, WalkEvent, WalkSinks, XattrsAt,
};
use self::writeonce::WriteOnce;
use crate::chunker::Chunker;
use crate::compress::{probe, Effort, LevelProbe};
use crate::error::{Error, Result};
use crate::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::pack::BlobKind;
use crate::pattern::Patterns;
use crate::progress::{FileEvent, Progress};
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
    /// Glob patterns (the rules of `excludes`) of files only ever appended to, such as
    /// MarkLogic journals: one that grew since the parent set (same inode), whose parent's last
    /// two chunks still read the same, keeps the parent's chunks and is read only from its
    /// last chunk on. A file of these patterns changed before its end is the operator's promise
    /// broken: the change is missed unless it reaches those last chunks (`--full` reads all).
    pub append_only: Vec<String>,
    /// Worker threads per CPU-bound stage; the number of CPUs when 0.
    pub threads: usize,
    /// Walk the sources once more, metadata only, to report totals to the progress.
    pub scan_totals: bool,
    /// Keep other file systems below a source as empty directories (their mount points), as
    /// pseudo file systems always are.
    pub one_file_system: bool,
    /// Fail, committing nothing, when a standard-input or command component yields no bytes.
    pub require_data: bool,
    /// The operator's note on the set (empty: none); format version 4 and later.
    pub note: String,
    /// Names of directory components that are write-once (an Alfresco content store: files
    /// are added, never changed in place): a directory whose own metadata is unchanged since
    /// the parent set is reused without listing it (its subdirectories are still visited). A
    /// file changed in place there is missed until `verify_write_once` or a full set.
    pub write_once: Vec<String>,
    /// Entries of write-once components changed less than this before the parent set began
    /// (at least a second) are looked at again: a file still being written then.
    pub write_once_settle: Duration,
    /// Reuse no directory of a write-once component: list and look at everything, and name
    /// the files that changed in place in directories the fast path would have reused.
    pub verify_write_once: bool,
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
    /// Exclude patterns that matched nothing (misspelt, or anchored wrongly?).
    pub unmatched_excludes: Vec<String>,
    /// Paths an exclude pattern left out (a directory counts once, with all below it).
    pub excluded: u64,
    /// The repository's own directory or cache met below a source (`component/path`): left out.
    pub left_out: Vec<String>,
    /// Files of write-once components found changed in place, or new in an unchanged
    /// directory (`verify_write_once`): how many, and the first of them as
    /// `component/path: what`.
    pub changed_in_place: (u64, Vec<String>),
    /// Directories of write-once components reused whole, without being listed.
    pub dirs_reused: u64,
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
    crypto: &'a crate::crypto::Crypto,
    /// How files are cut into chunks.
    chunker: &'a Chunker,
    /// Told of every byte chunked.
    progress: &'a dyn Progress,
}

impl<'a> Putter<'a> {
    fn new(ctx: &'a Ctx<'a>, tx: &'a Sender<RawBlob>, component: usize) -> Self {
        Putter::of(ctx.repo, &ctx.dedup, &ctx.chunker, ctx.progress, tx, component)
    }

    /// A putter into `repo` through `dedup`, for blobs of `component`.
    fn of(
        repo: &'a Repository,
        dedup: &'a Dedup<'a>,
        chunker: &'a Chunker,
        progress: &'a dyn Progress,
        tx: &'a Sender<RawBlob>,
        component: usize,
    ) -> Self {
        Putter {
            dedup,
            tx,
            component,
            level: repo.config().compression_level,
            crypto: repo.crypto(),
            chunker,
            progress,
        }
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
        let id = self.crypto.id(&raw);
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
    /// The command a component is being captured from, killed when the snapshot is interrupted.
    children: Children,
    /// Per component: its files and bytes, once the scan for the progress counted them.
    totals: Vec<std::sync::OnceLock<(u64, u64)>>,
    /// The component being captured (`usize::MAX` before the first).
    current: std::sync::atomic::AtomicUsize,
    /// Where walks stop.
    bounds: walk::Bounds,
    /// Files only ever appended to ([`SnapshotOptions::append_only`]).
    append_only: Patterns,
    /// Names of the write-once components.
    write_once: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(
        repo: &'a Repository,
        opts: &SnapshotOptions,
        append_only: Patterns,
        progress: &'a dyn Progress,
    ) -> Result<Self> {
        Ok(Ctx {
            repo,
            dedup: Dedup::new(repo, repo.index()?),
            shared: Shared::new(),
            chunker: Chunker::new(&repo.chunker_params()),
            counters: opts.sources.iter().map(|_| ComponentCounters::default()).collect(),
            progress,
            children: Children::default(),
            totals: opts.sources.iter().map(|_| std::sync::OnceLock::new()).collect(),
            current: std::sync::atomic::AtomicUsize::new(usize::MAX),
            bounds: walk::Bounds::new(
                opts.one_file_system,
                &[repo.layout().root(), repo.cache_dir()],
            ),
            append_only,
            write_once: opts.write_once.clone(),
        })
    }
}

/// The namespace of write-once component `src`'s directory records.
fn write_once_ns(repo: &Repository, opts: &SnapshotOptions, src: &SourceSpec) -> [u8; 32] {
    writeonce::namespace(&writeonce::Options {
        host: &opts.host,
        name: &src.name,
        source: &src.describe(),
        excludes: &opts.excludes,
        append_only: &opts.append_only,
        one_file_system: opts.one_file_system,
        version: repo.version(),
    })
}

/// The write-once context of component `src` when `opts` makes it one, built on `parent`;
/// `record`: write directory records (not in a dry run).
fn write_once(
    ctx: &Ctx<'_>,
    opts: &SnapshotOptions,
    src: &SourceSpec,
    parent: Option<&(SnapshotId, Manifest)>,
    record: bool,
) -> Result<Option<WriteOnce>> {
    if !opts.write_once.contains(&src.name) {
        return Ok(None);
    }
    let parent = parent.and_then(|(id, m)| {
        let c = m.components.iter().find(|c| c.name == src.name && c.kind.is_dir())?;
        Some((*id, c, m.issues.as_slice()))
    });
    let ns = write_once_ns(ctx.repo, opts, src);
    let (settle, verify) = (opts.write_once_settle, opts.verify_write_once);
    WriteOnce::new(ctx.repo, ns, parent, settle, record, verify).map(Some)
}

/// The exclude patterns that matched nothing; none when a directory was reused without being
/// listed, as they may have matched something there.
fn unmatched(excludes: &Patterns, shared: &Shared) -> Vec<String> {
    if shared.unlisted.load(Ordering::Relaxed) {
        Vec::new()
    } else {
        excludes.unmatched()
    }
}

/// What the shared state says of files changed in place in write-once components.
fn changed_in_place(shared: &Shared) -> (u64, Vec<String>) {
    shared.broken_promises.lock().map(|b| b.clone()).unwrap_or_default()
}

/// The process group of the command a component is being captured from, while it runs.
#[derive(Default)]
struct Children(std::sync::Mutex<Option<rustix::process::Pid>>);

impl Children {
    fn set(&self, pid: Option<rustix::process::Pid>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = pid;
        }
    }

    /// Kills the running command's process group, if there is one.
    fn kill(&self) {
        if let Some(pid) = self.0.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
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

/// Checks the sources, tags and note of `opts` (for `repo`), and compiles its exclude and its
/// append-only patterns.
fn check_options(repo: &Repository, opts: &SnapshotOptions) -> Result<(Patterns, Patterns)> {
    check_sources(&opts.sources)?;
    crate::snapshot::validate_note(&opts.note)?;
    crate::snapshot::check_note_supported(&opts.note, repo.version())?;
    // Tags name directories of the mount (`tags/<tag>/`): the rule of names applies.
    if let Some(bad) = opts.tags.iter().find(|t| !crate::tree::is_valid_name(t.as_bytes())) {
        return Err(Error::InvalidOption {
            option: "tag",
            reason: format!("{bad:?} is not a valid tag (empty, `.`, `..`, or has `/` or NUL)"),
        });
    }
    for name in &opts.write_once {
        match opts.sources.iter().find(|s| s.name == *name).map(|s| &s.kind) {
            Some(SourceKind::Path(p)) if p.is_dir() => {}
            Some(_) => {
                return Err(Error::InvalidOption {
                    option: "write-once",
                    reason: format!("component {name:?} is not a directory"),
                })
            }
            None => {
                return Err(Error::InvalidOption {
                    option: "write-once",
                    reason: format!("there is no component named {name:?}"),
                })
            }
        }
    }
    Ok((
        Patterns::new(&opts.excludes, "exclude")?,
        Patterns::new(&opts.append_only, "append-only")?,
    ))
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
    let (excludes, append_only) = check_options(repo, opts)?;
    repo.prepare_write()?;
    let parent = resolve_parent(repo, opts)?;
    let threads = crate::threads_or_cpus(opts.threads);
    let mark = adopt::WriterMark::set(repo)?;
    let adopted = adopt::adopt_packs(repo, progress, mark.killed_before)?;
    let ctx = Ctx::new(repo, opts, append_only, progress)?;
    let added: Vec<AtomicU64> = opts.sources.iter().map(|_| AtomicU64::new(0)).collect();
    let time_ns = now_ns();

    let (job_tx, job_rx) = bounded::<FileJob>(64);
    let (event_tx, event_rx) = bounded::<Vec<WalkEvent>>(4);
    let events = EventBatcher::new(event_tx);
    let (root_tx, root_rx) = bounded::<ComponentResult>(1);
    let ctx = &ctx;
    let interrupted = || ctx.progress.interrupted();
    // A running command's group is killed when the operator asks to stop.
    let kill = || ctx.children.kill();
    let stages = Stages {
        repo,
        dedup: &ctx.dedup,
        shared: &ctx.shared,
        threads,
        added: &added,
        interrupted: &interrupted,
        on_interrupt: &kill,
    };
    let (components, packed) = run_stages(&stages, |s, raw_tx| {
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
            s.spawn(move || scan_totals(ctx, sources));
        }
        let sinks = CaptureSinks { events: &events, jobs: &job_tx, raw: &raw_tx, roots: &root_rx };
        let components = capture(ctx, opts, &excludes, parent.as_ref(), &sinks);
        drop((events, job_tx, raw_tx));
        components
    })?;
    let (mut components, issues) = components;
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
        note: opts.note.clone(),
    };
    // Every pack is durable and indexed (the stages returned); each it builds on still there.
    ctx.dedup.confirm_packs()?;
    crate::crash::point("snapshot", "before_manifest");
    if ctx.progress.interrupted() {
        return Err(Error::Interrupted);
    }
    let id = repo.save_snapshot(&manifest)?;
    crate::crash::point("snapshot", "committed");
    for src in opts.sources.iter().filter(|s| opts.write_once.contains(&s.name)) {
        writeonce::mark_set(repo, &write_once_ns(repo, opts, src), id);
    }
    Ok(SnapshotReport {
        id,
        manifest,
        packs: packed.packs,
        packs_adopted: adopted.packs,
        unmatched_excludes: unmatched(&excludes, &ctx.shared),
        excluded: ctx.shared.excluded.load(Ordering::Relaxed),
        left_out: ctx.bounds.left_out.lock().map(|l| l.clone()).unwrap_or_default(),
        changed_in_place: changed_in_place(&ctx.shared),
        dirs_reused: ctx.shared.dirs_reused.load(Ordering::Relaxed),
        duration: started.elapsed(),
    })
}
