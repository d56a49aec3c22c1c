//! Garbage collection (`store prune`): delete or repack packs whose blobs no set references.
//!
//! Protocol (FORMAT.md §9.1), so that prune never runs for hours in anyone's way and never
//! deletes what a writer uses:
//!
//! 1. **Mark, under a shared lock** (writers keep running): every blob reachable from the sets
//!    that exist now is recorded in a temporary RocksDB (bounded memory, whatever the size of
//!    the repository). Packs whose blobs are all unreachable are planned for deletion; packs
//!    with more than `max_unused` of their bytes unreachable are planned for repacking.
//! 2. **Take the exclusive lock** (waits until no live writer holds a shared lock). Sets
//!    committed since step 1 are marked too and the plan is re-checked against them, so only
//!    what was unreferenced before every live writer started is touched. Leftovers of dead
//!    writers (temp files, packs no index file lists) are collected now.
//! 3. **Execute, in this order**: repacked blobs are written to new packs (durable); new index
//!    files listing every remaining pack are written (durable); the old index files are
//!    removed; only then are the old packs deleted. A crash at any step leaves every set
//!    readable; the next prune finishes the job.
//!
//! A writer whose shared lock went stale (paused longer than the stale time) may have been
//! overtaken by a prune; it checks, just before writing its manifest, that its lock never went
//! stale and that every pack it wrote or reused still exists, and fails cleanly otherwise.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rocksdb::{Options, WriteBatch, DB};

use crate::error::{Error, IoContext, Result};
use crate::id::{Id, PackId, SnapshotId, TreeId};
use crate::index::IndexedPack;
use crate::lock::LockKind;
use crate::pack::{read_blob, EncodedBlob, PackEntry, PackReader, PackWriter, BLOB_HEADER_LEN};
use crate::progress::Progress;
use crate::repo::{IndexRewrite, LockOptions, Repository};
use crate::tree::{decode_chunk_list, ChunkRefs, Content, TreeBlob};

/// Default: repack a pack when more than this fraction of its bytes is unused.
pub const DEFAULT_MAX_UNUSED: f64 = 0.25;

/// How to prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Repack packs with more than this fraction of unused bytes (0.0 to 1.0).
    pub max_unused: f64,
    /// Plan only; change nothing.
    pub dry_run: bool,
    /// How to take the locks.
    pub lock: LockOptions,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused: DEFAULT_MAX_UNUSED,
            dry_run: false,
            lock: LockOptions::default(),
        }
    }
}

/// What prune will do.
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// Sets whose data is kept.
    pub sets: u64,
    /// Packs in the index.
    pub packs: u64,
    /// Bytes of those packs.
    pub bytes: u64,
    /// Packs with no reachable blob: deleted.
    pub delete: Vec<PackId>,
    /// Packs with too many unreachable bytes: live blobs copied, then deleted.
    pub repack: Vec<PackId>,
    /// Packs no index file lists (left by dead writers): deleted.
    pub unindexed: Vec<PackId>,
    /// Temp files of dead writers: deleted.
    pub temp_files: Vec<PathBuf>,
    /// Bytes freed by deleting `delete`, `repack` and `unindexed` packs.
    pub bytes_freed: u64,
    /// Live bytes copied out of repacked packs.
    pub bytes_copied: u64,
}

/// What prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// The plan it executed (or would execute, with `dry_run`).
    pub plan: PrunePlan,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Wall time.
    pub duration: Duration,
}

/// The set of reachable blobs, spilled to a temporary RocksDB.
pub(crate) struct Marks {
    db: Option<DB>,
    path: PathBuf,
    batch: WriteBatch,
    pending: HashSet<Id>,
}

impl Marks {
    fn open(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.set_write_buffer_size(16 << 20);
        let db = DB::open(&opts, &path)
            .map_err(|e| Error::Cache { path: path.clone(), message: e.into_string() })?;
        Ok(Marks { db: Some(db), path, batch: WriteBatch::default(), pending: HashSet::new() })
    }

    fn db(&self) -> Result<&DB> {
        self.db.as_ref().ok_or(Error::Cancelled)
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Cache { path: self.path.clone(), message: e.into_string() }
    }

    /// Marks `id`; true when it was not marked before.
    fn insert(&mut self, id: Id) -> Result<bool> {
        if self.contains(&id)? {
            return Ok(false);
        }
        self.batch.put(id.as_bytes(), []);
        self.pending.insert(id);
        if self.pending.len() >= 100_000 {
            self.flush()?;
        }
        Ok(true)
    }

    fn contains(&self, id: &Id) -> Result<bool> {
        if self.pending.contains(id) {
            return Ok(true);
        }
        Ok(self.db()?.get_pinned(id.as_bytes()).map_err(|e| self.err(e))?.is_some())
    }

    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.db()?.write_without_wal(batch).map_err(|e| self.err(e))?;
        self.pending.clear();
        Ok(())
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Calls `visit` with every blob reachable from set `m`'s trees (trees, tree pages, chunk lists,
/// chunks); a tree or chunk list is descended into only when `visit` returns true for it. A
/// tree that cannot be read stops the walk: what it references is unknown.
/// Stored (header included) and raw bytes of a blob, 0 when it is not indexed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BlobSize {
    pub(crate) stored: u64,
    pub(crate) raw: u64,
}

pub(crate) fn walk_blobs(
    repo: &Repository,
    id: SnapshotId,
    m: &crate::snapshot::Manifest,
    visit: &mut dyn FnMut(Id, BlobSize) -> Result<bool>,
) -> Result<()> {
    let damaged = |e: Error| {
        Error::InvalidOption {
        option: "set",
        reason: format!("set {id} cannot be read completely ({e}); run `store check` and the repair it names first"),
    }
    };
    let index = repo.index()?;
    let stored = |blob: Id| -> Result<BlobSize> {
        Ok(index.get(&blob)?.map_or(BlobSize::default(), |l| BlobSize {
            stored: frame_len(&l.entry),
            raw: u64::from(l.entry.raw_len),
        }))
    };
    let mut stack: Vec<TreeId> = m.components.iter().map(|c| c.root).collect();
    while let Some(tree) = stack.pop() {
        if !visit(tree.0, stored(tree.0)?)? {
            continue;
        }
        let nodes = match repo.load_tree(tree).map_err(damaged)? {
            TreeBlob::Pages(pages) => {
                stack.extend(pages);
                continue;
            }
            TreeBlob::Leaf(nodes) => nodes,
        };
        for node in nodes {
            match node.content {
                Content::Dir { tree } => stack.push(tree),
                Content::File { chunks: ChunkRefs::Inline(ids), .. } => {
                    for c in ids {
                        visit(c.0, stored(c.0)?)?;
                    }
                }
                Content::File { chunks: ChunkRefs::Lists(lists), .. } => {
                    for list in lists {
                        if visit(list, stored(list)?)? {
                            let bytes = repo
                                .read_blob(list, crate::pack::BlobKind::ChunkList)
                                .map_err(damaged)?;
                            let ids = decode_chunk_list(&bytes).map_err(|reason| {
                                damaged(Error::corrupt(
                                    crate::error::ObjectRef::ChunkList(list),
                                    reason,
                                ))
                            })?;
                            for c in ids {
                                visit(c.0, stored(c.0)?)?;
                            }
                        }
                    }
                }
                Content::Symlink { .. } | Content::Special { .. } => {}
            }
        }
    }
    Ok(())
}

fn mark_set(
    repo: &Repository,
    id: SnapshotId,
    m: &crate::snapshot::Manifest,
    marks: &mut Marks,
) -> Result<()> {
    walk_blobs(repo, id, m, &mut |blob, _| marks.insert(blob))
}

/// Marks every set not marked yet; returns how many sets there are.
fn mark_all(
    repo: &Repository,
    marked: &mut HashSet<SnapshotId>,
    marks: &mut Marks,
    progress: &dyn Progress,
) -> Result<u64> {
    let mut sets = 0;
    for listed in repo.list_snapshots()? {
        let m = listed.manifest.map_err(|e| Error::InvalidOption {
            option: "prune",
            reason: format!(
                "set {} is damaged ({e}); run `store repair snapshots --forget` first",
                listed.id
            ),
        })?;
        sets += 1;
        if marked.insert(listed.id) {
            progress.phase(&format!("marking {}", listed.id.short()));
            mark_set(repo, listed.id, &m, marks)?;
        }
    }
    marks.flush()?;
    Ok(sets)
}

fn frame_len(e: &PackEntry) -> u64 {
    BLOB_HEADER_LEN as u64 + u64::from(e.stored_len)
}

/// Plans the packs: delete the dead, repack the mostly dead. Returns the packs that go.
fn plan_packs(
    repo: &Repository,
    marks: &Marks,
    max_unused: f64,
    plan: &mut PrunePlan,
) -> Result<HashSet<PackId>> {
    let mut seen: HashSet<PackId> = HashSet::new();
    let mut candidates = HashSet::new();
    let on_disk: HashSet<PackId> = repo.list_packs()?.into_iter().collect();
    for index in repo.list_index_files()? {
        for pack in repo.load_index_file(index)? {
            if !seen.insert(pack.id) {
                continue;
            }
            if !on_disk.contains(&pack.id) {
                return Err(Error::InvalidOption {
                    option: "prune",
                    reason: format!("pack {} is in the index but missing; run `store check`, then `store repair index`", pack.id),
                });
            }
            plan.packs += 1;
            plan.bytes += pack.len;
            let mut live = 0u64;
            let mut live_count = 0usize;
            for e in &pack.entries {
                if marks.contains(&e.id)? {
                    live += frame_len(e);
                    live_count += 1;
                }
            }
            let unused = pack.len.saturating_sub(live) as f64 / pack.len.max(1) as f64;
            if live_count == 0 {
                plan.delete.push(pack.id);
                plan.bytes_freed += pack.len;
                candidates.insert(pack.id);
            } else if unused > max_unused {
                plan.repack.push(pack.id);
                plan.bytes_freed += pack.len;
                plan.bytes_copied += live;
                candidates.insert(pack.id);
            }
        }
    }
    for pack in on_disk.difference(&seen) {
        plan.unindexed.push(*pack);
        plan.bytes_freed +=
            std::fs::metadata(repo.layout().pack(*pack)).map(|m| m.len()).unwrap_or(0);
    }
    Ok(candidates)
}

/// Prunes the repository (see the module documentation for the protocol).
///
/// # Errors
/// [`Error::Locked`] when the exclusive lock cannot be had in time; [`Error::InvalidOption`]
/// naming the damage when the repository is not consistent enough to prune safely; I/O errors.
pub fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    progress: &dyn Progress,
    removed: &mut dyn FnMut(&crate::repo::LockInfo),
) -> Result<PruneReport> {
    let started = Instant::now();
    // The reserve file goes first, so that on a full disk prune has room for its locks, its
    // marks and its new index files; it is put back however prune ends.
    let _reserve = (!opts.dry_run).then(|| Reserve::release(repo.layout().root().join("reserve")));
    repo.prepare_write()?;
    let mut report = PruneReport::default();
    let mut marks =
        Marks::open(repo.layout().tmp_dir().join(format!("prune-marks-{}", std::process::id())))?;
    let mut marked = HashSet::new();

    // 1. Mark under a shared lock.
    let shared = repo.lock(
        LockKind::Shared,
        &LockOptions { command: "prune (mark)".into(), ..opts.lock.clone() },
        removed,
    )?;
    mark_all(repo, &mut marked, &mut marks, progress)?;
    crate::crash::point("prune", "marked");
    drop(shared);

    // 2. Exclusive: mark what was committed meanwhile, then plan for real.
    let _exclusive = repo.lock(
        LockKind::Exclusive,
        &LockOptions { command: "prune".into(), ..opts.lock.clone() },
        removed,
    )?;
    repo.refresh_index()?;
    let mut plan = PrunePlan {
        sets: mark_all(repo, &mut marked, &mut marks, progress)?,
        ..PrunePlan::default()
    };
    let candidates = plan_packs(repo, &marks, opts.max_unused, &mut plan)?;
    let own_marks = marks.path.clone();
    plan.temp_files = std::fs::read_dir(repo.layout().tmp_dir())
        .at(repo.layout().tmp_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| *p != own_marks)
        .collect();
    if opts.dry_run {
        report.plan = plan;
        report.duration = started.elapsed();
        return Ok(report);
    }
    crate::crash::point("prune", "planned");

    // 3a. Repack: live blobs of the repacked packs into new packs, durable.
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut writer: Option<PackWriter> = None;
    let target = u64::from(repo.config().pack_target);
    let (mut frame, mut raw) = (Vec::new(), Vec::new());
    for id in &plan.repack {
        let path = repo.layout().pack(*id);
        let reader = PackReader::open(&path, *id)?;
        progress.phase(&format!("repacking {}", id.short()));
        for e in reader.entries() {
            if !marks.contains(&e.id)? {
                continue;
            }
            read_blob(reader.file(), &path, *id, e, &mut frame, &mut raw)?;
            let blob = EncodedBlob {
                id: e.id,
                kind: e.kind,
                codec: e.codec,
                raw_len: e.raw_len,
                bytes: frame.clone(),
            };
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(PackWriter::create(&repo.layout().tmp_dir())?),
            };
            w.add(&blob)?;
            if w.len() >= target {
                if let Some(w) = writer.take() {
                    let sealed = w.seal(|p| repo.layout().pack(p))?;
                    new_packs.push(IndexedPack {
                        id: sealed.id,
                        len: sealed.len,
                        entries: sealed.entries,
                    });
                }
            }
        }
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
        let sealed = w.seal(|p| repo.layout().pack(p))?;
        new_packs.push(IndexedPack { id: sealed.id, len: sealed.len, entries: sealed.entries });
    }
    report.packs_written = new_packs.len() as u64;
    crate::crash::point("prune", "repacked");

    // 3b. New index files: every pack that stays, and the new ones; then the old files go.
    let gone = candidates;
    let mut rewrite = IndexRewrite::begin(repo)?;
    let mut kept: HashSet<PackId> = new_packs.iter().map(|p| p.id).collect();
    for pack in new_packs {
        rewrite.add(pack)?;
    }
    for index in rewrite.old().to_vec() {
        for pack in repo.load_index_file(index)? {
            if !gone.contains(&pack.id) && kept.insert(pack.id) {
                rewrite.add(pack)?;
            }
        }
    }
    report.index_files_written = rewrite.write()?;
    crate::crash::point("prune", "index_written");
    rewrite.remove_old()?;
    crate::crash::point("prune", "old_index_removed");

    // 3c. Only now, delete: nothing listed by an index file refers to these packs any more.
    let mut dirs: HashSet<PathBuf> = HashSet::new();
    for (n, id) in plan.delete.iter().chain(&plan.repack).chain(&plan.unindexed).enumerate() {
        let path = repo.layout().pack(*id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { path, cause: e }),
        }
        if let Some(d) = path.parent() {
            dirs.insert(d.to_path_buf());
        }
        if n == 0 {
            crate::crash::point("prune", "deleting");
        }
    }
    for d in dirs {
        crate::fs::fsync_dir(&d)?;
    }
    for t in &plan.temp_files {
        let _ = if t.is_dir() { std::fs::remove_dir_all(t) } else { std::fs::remove_file(t) };
    }
    drop(marks);
    report.plan = plan;
    report.duration = started.elapsed();
    Ok(report)
}

/// The reserve file, released while prune runs and written again when it ends.
struct Reserve(PathBuf);

impl Reserve {
    fn release(path: PathBuf) -> Self {
        let _ = std::fs::remove_file(&path);
        Reserve(path)
    }
}

impl Drop for Reserve {
    fn drop(&mut self) {
        write_reserve(&self.0);
    }
}

/// Size of the reserve file that prune releases first on a full disk: 4 MiB.
pub const RESERVE_LEN: u64 = 4 << 20;

/// (Re)creates the reserve file; failing to (a full disk) only means there is none.
pub(crate) fn write_reserve(path: &Path) {
    let ok = std::fs::File::create(path).and_then(|f| {
        std::io::Write::write_all(&mut &f, &vec![0u8; RESERVE_LEN as usize])
            .and_then(|()| f.sync_all())
    });
    if ok.is_err() {
        let _ = std::fs::remove_file(path);
    }
}
