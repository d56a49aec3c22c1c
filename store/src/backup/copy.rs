//! `store copy`: sets of one repository written into another (the off-site copy of a local
//! repository, or the way into an encrypted one).
//!
//! Two repositories never share chunk ids: each has its own chunker seed, and an encrypted one
//! keys its ids. So a copy reads every file of a set from the source (each chunk verified
//! against its id there), cuts it again with the target's chunker and stores only the chunks
//! the target lacks; trees are rebuilt with the target's ids. Directories already copied in
//! this run (the same source tree) are reused without being read again; a file copied before
//! (the same chunks in the source), in this run or an earlier one, keeps its chunks in the
//! target when they are all still indexed there (this host's cache remembers them, in the
//! directory records). So the next copy of a host's sets reads only what changed.
//!
//! A copied set keeps the source's host, times, components, tags and note, and names as its
//! parent the target's copy of the source's parent. The target holds a set already when one
//! has the same host, start and end time and components (names, kinds, sources, start times):
//! such sets are skipped, so a second copy transfers nothing, and a copy that was stopped
//! resumes where it stopped (the chunks it stored are reused). Each set is committed as a
//! snapshot is: its packs durable and indexed first, the manifest last.

use std::collections::HashMap;
use std::io::Read;

use super::read::{chunk_into, KeptChunks, ReadError};
#[allow(clippy::wildcard_imports, reason = "the parts of this module share its imports")]
use super::*;
use crate::tree::escape_name;
use crate::vfs::{chunk_batches, dir_entries, load_chunk_list, ChunkBatch, RepoDir};

/// What to copy and how.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// The source's sets to copy; empty: every set the target lacks (of `host`, with `tags`).
    pub sets: Vec<SnapshotId>,
    /// Only sets of this host (when no set is named).
    pub host: Option<String>,
    /// Only sets with every one of these tags (when no set is named).
    pub tags: Vec<String>,
    /// Compressor threads; the number of CPUs when 0.
    pub threads: usize,
    /// Say what would be copied, write nothing.
    pub dry_run: bool,
}

/// One set of the source and what became of it.
#[derive(Debug, Clone)]
pub struct CopiedSet {
    /// The source's set.
    pub source: SnapshotId,
    /// The target's copy (written now, or there already); none in a dry run.
    pub target: Option<SnapshotId>,
    /// Whether the target had it already (nothing was copied).
    pub already: bool,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Bytes stored in the target (compressed, in new blobs).
    pub bytes_added: u64,
    /// Chunks the target did not have.
    pub chunks_new: u64,
}

impl CopiedSet {
    /// A set not copied now: in the target already as `there`, or (a dry run) to be copied.
    fn not_copied(source: SnapshotId, there: Option<SnapshotId>) -> Self {
        CopiedSet {
            source,
            target: there,
            already: there.is_some(),
            bytes_read: 0,
            bytes_added: 0,
            chunks_new: 0,
        }
    }
}

/// What `copy` did.
#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// Every set asked for, oldest first.
    pub sets: Vec<CopiedSet>,
    /// Packs written into the target.
    pub packs: u64,
    /// Packs of an interrupted run adopted into the target's index first (FORMAT.md §11).
    pub packs_adopted: u64,
    /// Sets of the source that could not be copied (a manifest, tree or chunk that does not
    /// read), each with why; the others were copied all the same.
    pub failed: Vec<(SnapshotId, String)>,
}

/// Most source trees remembered with their copies in one run (about 25 MiB); past it the
/// memory starts again empty, and directories are copied again (their chunks deduplicated).
const MEMO_MAX: usize = 1 << 18;

/// Whether `a` and `b` are the same set: same host, times and components. Tags and notes may
/// have been changed since (`store tag`), and roots differ between repositories.
fn same_set(a: &Manifest, b: &Manifest) -> bool {
    a.host == b.host
        && a.time_ns == b.time_ns
        && a.end_ns == b.end_ns
        && a.components.len() == b.components.len()
        && a.components.iter().zip(&b.components).all(|(x, y)| {
            x.name == y.name && x.kind == y.kind && x.source == y.source && x.start_ns == y.start_ns
        })
}

/// Copies sets of `from` into `to` (see the module documentation). The caller holds a shared
/// lock on both. A set whose data cannot be read in the source is left out (named in
/// [`CopyReport::failed`], leaving nothing but unreferenced chunks in the target) and the others
/// are copied; any other failure stops the copy, the sets before it committed.
///
/// # Errors
/// [`Error::InvalidOption`] when `to` is of an older format version than `from`, or a set is
/// named twice; [`Error::CopyFailed`] naming the set and path that could not be read; any
/// repository error.
pub fn copy(
    from: &Repository,
    to: &Repository,
    opts: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    if to.version() < from.version() {
        return Err(Error::InvalidOption {
            option: "to",
            reason: format!(
                "the target is format version {}, the source {}: sets of a newer version may \
                 hold what an older one cannot (extended attributes, hard links, notes); copy \
                 into a repository made with `store init`",
                to.version(),
                from.version()
            ),
        });
    }
    let mut source_sets: Vec<(SnapshotId, Manifest)> = Vec::new();
    let mut unreadable = Vec::new();
    for listed in from.list_snapshots()? {
        match listed.manifest {
            Ok(manifest) => source_sets.push((listed.id, manifest)),
            Err(e) if opts.sets.is_empty() => unreadable.push((listed.id, e.to_string())),
            Err(e) => return Err(e),
        }
    }
    source_sets.sort_by_key(|(id, m)| (m.time_ns, *id));
    let by_id: HashMap<SnapshotId, &Manifest> =
        source_sets.iter().map(|(id, m)| (*id, m)).collect();
    if let Some(missing) = opts.sets.iter().find(|s| !by_id.contains_key(*s)) {
        return Err(Error::SnapshotNotFound { reference: missing.to_hex() });
    }
    let wanted: Vec<&(SnapshotId, Manifest)> = source_sets
        .iter()
        .filter(|(id, m)| {
            if opts.sets.is_empty() {
                opts.host.as_ref().is_none_or(|h| m.host == *h)
                    && opts.tags.iter().all(|t| m.tags.contains(t))
            } else {
                opts.sets.contains(id)
            }
        })
        .collect();
    // The target's sets by start time, the first part of a set's identity.
    let mut targets: HashMap<i64, Vec<(SnapshotId, Manifest)>> = HashMap::new();
    for listed in to.list_snapshots()? {
        // A set of the target that cannot be read is no copy of anything.
        if let Ok(m) = listed.manifest {
            targets.entry(m.time_ns).or_default().push((listed.id, m));
        }
    }
    let copy_of = |m: &Manifest, targets: &HashMap<i64, Vec<(SnapshotId, Manifest)>>| {
        targets.get(&m.time_ns)?.iter().find(|(_, t)| same_set(m, t)).map(|(id, _)| *id)
    };

    let mut report = CopyReport { failed: unreadable, ..CopyReport::default() };
    if opts.dry_run || wanted.iter().all(|(_, m)| copy_of(m, &targets).is_some()) {
        for (id, m) in wanted {
            report.sets.push(CopiedSet::not_copied(*id, copy_of(m, &targets)));
        }
        return Ok(report);
    }

    to.prepare_write()?;
    let mark = adopt::WriterMark::set(to)?;
    report.packs_adopted = adopt::adopt_packs(to, progress, mark.killed_before)?.packs;
    let threads = crate::threads_or_cpus(opts.threads);
    let mut dedup = Dedup::new(to, to.index()?);
    let chunker = Chunker::new(&to.chunker_params());
    let files = FileMemo::new(from, to)?;
    let mut memo: HashMap<TreeId, TreeId> = HashMap::new();
    for (id, m) in wanted {
        if let Some(there) = copy_of(m, &targets) {
            report.sets.push(CopiedSet::not_copied(*id, Some(there)));
            continue;
        }
        progress.phase(&format!("copying {}", id.short()));
        let parent = m.parent.and_then(|p| by_id.get(&p)).and_then(|pm| copy_of(pm, &targets));
        let set = SetCopy {
            from,
            to,
            dedup: &dedup,
            chunker: &chunker,
            progress,
            set: *id,
            files: &files,
        };
        let (manifest, packs) = match set.run(m, parent, threads, &mut memo) {
            Ok(done) => done,
            Err(Error::CopyFailed { set, path, cause }) => {
                report.failed.push((set, format!("{path}: {cause}")));
                // What this set claimed and remembered may not have been stored (its packs not
                // yet indexed were removed): the next set starts with neither.
                dedup = Dedup::new(to, to.index()?);
                memo.clear();
                continue;
            }
            Err(e) => return Err(e),
        };
        dedup.confirm_packs()?;
        crate::crash::point("copy", "before_manifest");
        if progress.interrupted() {
            return Err(Error::Interrupted);
        }
        let new = to.save_snapshot(&manifest)?;
        report.packs += packs;
        let sum = |f: fn(&Counts) -> u64| manifest.components.iter().map(|c| f(&c.counts)).sum();
        report.sets.push(CopiedSet {
            source: *id,
            target: Some(new),
            already: false,
            bytes_read: sum(|c| c.bytes_read),
            bytes_added: sum(|c| c.bytes_added),
            chunks_new: sum(|c| c.chunks_new),
        });
        targets.entry(manifest.time_ns).or_default().push((new, manifest));
    }
    Ok(report)
}

/// The copy of one set.
struct SetCopy<'a> {
    from: &'a Repository,
    to: &'a Repository,
    dedup: &'a Dedup<'a>,
    chunker: &'a Chunker,
    progress: &'a dyn Progress,
    set: SnapshotId,
    files: &'a FileMemo<'a>,
}

/// The target's chunk refs of files copied before, in this host's cache of the target.
struct FileMemo<'a> {
    index: &'a crate::index::ChunkIndex,
    namespace: [u8; 32],
}

impl<'a> FileMemo<'a> {
    fn new(from: &Repository, to: &'a Repository) -> Result<Self> {
        let mut h = blake3::Hasher::new_derive_key("store 2026-12 copied file records");
        h.update(from.config().repo_id.as_bytes());
        Ok(FileMemo { index: to.index()?, namespace: *h.finalize().as_bytes() })
    }

    /// The record key of a source file of `size` bytes with chunk refs `refs`.
    fn key(&self, size: u64, refs: &ChunkRefs) -> Result<Vec<u8>> {
        let encoded = crate::format::encode_record(&(size, refs), "chunk refs")?;
        let mut key = b"c".to_vec();
        key.extend_from_slice(&self.namespace);
        key.extend_from_slice(blake3::hash(&encoded).as_bytes());
        Ok(key)
    }

    /// The target's refs recorded under `key`, if any (a damaged record is none).
    fn get(&self, key: &[u8]) -> Option<ChunkRefs> {
        let value = self.index.dir_get(key).ok()??;
        crate::format::decode_record(&value, "chunk refs").ok()
    }

    /// Records the target's `refs` under `key` (best effort: it is only a shortcut).
    fn put(&self, key: &[u8], refs: &ChunkRefs) {
        if let Ok(value) = crate::format::encode_record(refs, "chunk refs") {
            let _ = self.index.dir_put(key, &value);
        }
    }
}

impl SetCopy<'_> {
    /// Stores every tree and chunk of set `m` the target lacks, and returns the target's
    /// manifest (not written yet) and the packs written.
    fn run(
        &self,
        m: &Manifest,
        parent: Option<SnapshotId>,
        threads: usize,
        memo: &mut HashMap<TreeId, TreeId>,
    ) -> Result<(Manifest, u64)> {
        let shared = Shared::new();
        let added: Vec<AtomicU64> = m.components.iter().map(|_| AtomicU64::new(0)).collect();
        let counters: Vec<ComponentCounters> =
            m.components.iter().map(|_| ComponentCounters::default()).collect();
        let interrupted = || self.progress.interrupted();
        let stages = Stages {
            repo: self.to,
            dedup: self.dedup,
            shared: &shared,
            threads,
            added: &added,
            interrupted: &interrupted,
            on_interrupt: &|| {},
        };
        let (roots, packed) = run_stages(&stages, |_, raw_tx| {
            let mut roots = Vec::with_capacity(m.components.len());
            for (i, c) in m.components.iter().enumerate() {
                let mut putter =
                    Putter::of(self.to, self.dedup, self.chunker, self.progress, &raw_tx, i);
                let walk = TreeCopy { copy: self, shared: &shared, counter: &counters[i] };
                roots.push(walk.tree(c.root, &c.name, &mut putter, memo)?);
            }
            Ok(roots)
        })?;
        let mut manifest = m.clone();
        manifest.parent = parent;
        manifest.counts = Counts::default();
        for (((c, root), a), n) in
            manifest.components.iter_mut().zip(roots).zip(&added).zip(&counters)
        {
            c.root = root;
            c.counts.bytes_added = a.load(Ordering::Relaxed);
            c.counts.chunks_new = n.chunks_new.load(Ordering::Relaxed);
            c.counts.bytes_read = n.bytes_read.load(Ordering::Relaxed);
            manifest.counts.add(&c.counts);
        }
        Ok((manifest, packed.packs))
    }

    /// `cause`, met at `path` of this set.
    fn failed(&self, path: &str, cause: Error) -> Error {
        match cause {
            e @ (Error::Cancelled | Error::Interrupted | Error::CopyFailed { .. }) => e,
            cause => {
                Error::CopyFailed { set: self.set, path: path.to_owned(), cause: Box::new(cause) }
            }
        }
    }
}

/// The walk of one component's trees.
struct TreeCopy<'a> {
    copy: &'a SetCopy<'a>,
    shared: &'a Shared,
    counter: &'a ComponentCounters,
}

/// A directory being copied.
struct Frame<'r> {
    entries: RepoDir<'r>,
    builder: TreeBuilder,
    /// The source's tree, and the entry naming it in its parent (none for the root).
    old: TreeId,
    node: Option<Node>,
    path: String,
}

impl TreeCopy<'_> {
    /// The target's tree for the source's tree `root` (at `path`), depth first, bottom up.
    fn tree(
        &self,
        root: TreeId,
        path: &str,
        putter: &mut Putter<'_>,
        memo: &mut HashMap<TreeId, TreeId>,
    ) -> Result<TreeId> {
        let (from, to) = (self.copy.from, self.copy.to);
        if let Some(done) = memo.get(&root) {
            return Ok(*done);
        }
        let page = to.config().chunker.max as usize;
        let open = |tree: TreeId, path: &str| {
            dir_entries(from, tree).map_err(|e| self.copy.failed(path, e))
        };
        let mut stack = vec![Frame {
            entries: open(root, path)?,
            builder: TreeBuilder::new(page, to.version()),
            old: root,
            node: None,
            path: path.to_owned(),
        }];
        let mut buf = Vec::new();
        loop {
            if self.shared.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let Some(frame) = stack.last_mut() else {
                return Err(Error::Cancelled);
            };
            match frame.entries.next() {
                None => {
                    let Some(done) = stack.pop() else { return Err(Error::Cancelled) };
                    let new = done.builder.finish(putter)?;
                    if memo.len() >= MEMO_MAX {
                        memo.clear();
                    }
                    memo.insert(done.old, new);
                    let Some(node) = done.node else { return Ok(new) };
                    let node = Node { content: Content::Dir { tree: new }, ..node };
                    match stack.last_mut() {
                        Some(parent) => parent.builder.push(&node, putter)?,
                        None => return Ok(new),
                    }
                }
                Some(Err(e)) => return Err(self.copy.failed(&frame.path, e)),
                Some(Ok(node)) => {
                    let child = format!("{}/{}", frame.path, escape_name(&node.name));
                    match &node.content {
                        Content::File { size, chunks } => {
                            let refs = self.file(chunks, *size, &child, putter, &mut buf)?;
                            let content = Content::File { size: *size, chunks: refs };
                            frame.builder.push(&Node { content, ..node }, putter)?;
                            self.copy.progress.add_items(1);
                        }
                        Content::Dir { tree } => match memo.get(tree) {
                            Some(done) => {
                                let content = Content::Dir { tree: *done };
                                frame.builder.push(&Node { content, ..node }, putter)?;
                            }
                            None => {
                                let entries = open(*tree, &child)?;
                                let old = *tree;
                                stack.push(Frame {
                                    entries,
                                    builder: TreeBuilder::new(page, to.version()),
                                    old,
                                    node: Some(node),
                                    path: child,
                                });
                            }
                        },
                        Content::Symlink { .. } | Content::Special { .. } => {
                            frame.builder.push(&node, putter)?;
                        }
                    }
                }
            }
        }
    }

    /// Reads a file of the source and stores it in the target: its chunk refs there.
    fn file(
        &self,
        chunks: &ChunkRefs,
        size: u64,
        path: &str,
        putter: &Putter<'_>,
        buf: &mut Vec<u8>,
    ) -> Result<ChunkRefs> {
        let memo = self.copy.files;
        let key = memo.key(size, chunks)?;
        if let Some(known) = memo.get(&key) {
            // Copied before, and every chunk still indexed in a usable pack of the target.
            if self.copy.dedup.all_stored(&known)? {
                return Ok(known);
            }
        }
        let mut content = SourceFile::new(self.copy.from, chunks);
        let read = chunk_into(
            putter,
            self.counter,
            buf,
            Some(size),
            KeptChunks::default(),
            |c, buf, f| c.chunk_reader(&mut content, buf, f),
        );
        let (read, refs) = match read {
            Ok(done) => done,
            Err(ReadError::Fatal(e)) => return Err(self.copy.failed(path, e)),
            Err(ReadError::Source(e)) => {
                let cause = match content.error.take() {
                    Some(e) => e,
                    None => Error::Io { path: path.into(), cause: e },
                };
                return Err(self.copy.failed(path, cause));
            }
        };
        if read != size {
            let cause = Error::SizeMismatch { path: path.to_owned(), recorded: size, found: read };
            return Err(self.copy.failed(path, cause));
        }
        memo.put(&key, &refs);
        Ok(refs)
    }
}

/// A file's content in the source, read chunk by chunk, each verified against its id.
struct SourceFile<'r> {
    repo: &'r Repository,
    /// The chunk ids still to read, batch by batch.
    batches: std::vec::IntoIter<Batch>,
    ids: std::vec::IntoIter<ChunkId>,
    frame: Vec<u8>,
    chunk: Vec<u8>,
    at: usize,
    /// The repository error behind the last failed read (`Read` can only carry I/O errors).
    error: Option<Error>,
}

/// Chunk ids in a node, or a chunk-list blob to load.
enum Batch {
    Ids(Vec<ChunkId>),
    List(Id),
}

impl<'r> SourceFile<'r> {
    fn new(repo: &'r Repository, refs: &ChunkRefs) -> Self {
        let batches: Vec<Batch> = chunk_batches(refs)
            .into_iter()
            .map(|b| match b {
                ChunkBatch::Inline(ids) => Batch::Ids(ids.to_vec()),
                ChunkBatch::List(id) => Batch::List(id),
            })
            .collect();
        SourceFile {
            repo,
            batches: batches.into_iter(),
            ids: Vec::new().into_iter(),
            frame: Vec::new(),
            chunk: Vec::new(),
            at: 0,
            error: None,
        }
    }

    /// Loads the next chunk; false at the end.
    fn next_chunk(&mut self) -> Result<bool> {
        loop {
            if let Some(id) = self.ids.next() {
                self.repo.read_blob_into(id.0, BlobKind::Data, &mut self.frame, &mut self.chunk)?;
                self.at = 0;
                return Ok(true);
            }
            match self.batches.next() {
                None => return Ok(false),
                Some(Batch::Ids(ids)) => self.ids = ids.into_iter(),
                Some(Batch::List(list)) => self.ids = load_chunk_list(self.repo, list)?.into_iter(),
            }
        }
    }
}

impl Read for SourceFile<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.next_chunk() {
                Ok(true) => {}
                Ok(false) => return Ok(0),
                Err(e) => {
                    let shown = std::io::Error::other(e.to_string());
                    self.error = Some(e);
                    return Err(shown);
                }
            }
        }
        let rest = self.chunk.get(self.at..).unwrap_or_default();
        let n = rest.len().min(out.len());
        for (o, r) in out.iter_mut().zip(rest) {
            *o = *r;
        }
        self.at += n;
        Ok(n)
    }
}
