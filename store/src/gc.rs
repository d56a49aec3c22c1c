//! Garbage collection (`store prune`): delete or repack packs whose blobs no set references.
//!
//! Protocol (FORMAT.md §9.1), so that prune never runs for hours in anyone's way and never
//! deletes what a writer uses:
//!
//! 1. **Mark, under a shared lock** (writers keep running): every blob reachable from the sets
//!    that exist now is recorded in a temporary RocksDB (bounded memory, whatever the size of
//!    the repository).
//! 2. **Take the exclusive lock** (waits until no live writer holds a shared lock). Sets
//!    committed since step 1 are marked too, so only what was unreferenced before every live
//!    writer started is touched. Then the plan (`plan_packs`): one copy of every reachable
//!    blob is kept (a blob stored twice has one copy too many); a pack with no kept copy is
//!    deleted, one with more than `max_unused` of its bytes in copies not kept is repacked, and
//!    a pack's trailer and footer are overhead, never unused space, so a pack whose every blob
//!    is kept is never touched. Leftovers of dead writers (temp files, packs no index file
//!    lists) are collected now.
//! 3. **Execute, in this order**: repacked blobs are written to new packs (durable); new index
//!    files listing every remaining pack are written (durable); the old index files are
//!    removed; only then are the old packs deleted, and never one an index file lists. A crash
//!    at any step leaves every set readable; the next prune finishes the job.
//!
//! A writer whose shared lock went stale (paused longer than the stale time) may have been
//! overtaken by a prune; it checks, just before writing its manifest, that its lock never went
//! stale and that every pack it wrote or reused still exists, and fails cleanly otherwise.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rocksdb::{Options, WriteBatch, DB};

use crate::damage::DamageSet;
use crate::error::{Error, IoContext, Result};
use crate::id::{Id, PackId, SnapshotId};
use crate::index::IndexedPack;
use crate::lock::LockKind;
use crate::pack::{
    read_blob, EncodedBlob, PackEntry, PackWriter, BLOB_HEADER_LEN, FOOTER_LEN, TRAILER_ENTRY_LEN,
};
use crate::progress::Progress;
use crate::repo::{IndexRewrite, LockOptions, Repository};
use crate::vfs::walk_blobs;

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
    /// Packs with no kept blob: deleted.
    pub delete: Vec<PackId>,
    /// Packs with too many unused bytes (or a damaged copy): kept blobs copied, then deleted.
    pub repack: Vec<PackId>,
    /// Packs no index file lists (left by dead writers): deleted.
    pub unindexed: Vec<PackId>,
    /// Temp files of dead writers: deleted.
    pub temp_files: Vec<PathBuf>,
    /// Bytes of the `delete`, `repack` and `unindexed` packs.
    pub bytes_deleted: u64,
    /// Bytes of the kept blobs copied out of repacked packs (frames and trailer entries).
    pub bytes_copied: u64,
    /// Bytes of the new packs (planned: copied bytes and their footers; after the run: actual).
    pub bytes_written: u64,
    /// What the repository shrinks by: bytes deleted less bytes written.
    pub bytes_freed: u64,
}

/// What prune did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// The plan it executed (or would execute, with `dry_run`).
    pub plan: PrunePlan,
    /// New packs written by repacking.
    pub packs_written: u64,
    /// Packs deleted (repacked ones included).
    pub packs_deleted: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Wall time.
    pub duration: Duration,
}

/// The set of reachable blobs, spilled to a temporary RocksDB, and for each the pack whose copy
/// is kept (the **claim**): a blob stored in several packs (concurrent writers, healed damage,
/// adopted packs) is live in one of them only; its other copies are unused space.
///
/// Value of a key: empty while the blob is only marked, the 32-byte pack id once claimed.
pub(crate) struct Marks {
    db: Option<DB>,
    path: PathBuf,
    batch: WriteBatch,
    pending: HashMap<Id, Option<PackId>>,
}

/// A mark's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// No set references the blob.
    Unmarked,
    /// Referenced; no copy chosen yet.
    Marked,
    /// Referenced; the copy in this pack is the one kept.
    Claimed(PackId),
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
        Ok(Marks { db: Some(db), path, batch: WriteBatch::default(), pending: HashMap::new() })
    }

    fn db(&self) -> Result<&DB> {
        self.db.as_ref().ok_or(Error::Cancelled)
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Cache { path: self.path.clone(), message: e.into_string() }
    }

    fn get(&self, id: &Id) -> Result<Mark> {
        if let Some(state) = self.pending.get(id) {
            return Ok(state.map_or(Mark::Marked, Mark::Claimed));
        }
        let value = self.db()?.get_pinned(id.as_bytes()).map_err(|e| self.err(e))?;
        Ok(match value {
            None => Mark::Unmarked,
            Some(v) => match <[u8; 32]>::try_from(&v[..]) {
                Ok(pack) => Mark::Claimed(PackId(Id::from_bytes(pack))),
                Err(_) => Mark::Marked,
            },
        })
    }

    fn put(&mut self, id: Id, claim: Option<PackId>) -> Result<()> {
        match claim {
            Some(pack) => self.batch.put(id.as_bytes(), pack.0.as_bytes()),
            None => self.batch.put(id.as_bytes(), []),
        }
        self.pending.insert(id, claim);
        if self.pending.len() >= 100_000 {
            self.flush()?;
        }
        Ok(())
    }

    /// Marks `id` as referenced; true when it was not marked before.
    fn insert(&mut self, id: Id) -> Result<bool> {
        if self.get(&id)? != Mark::Unmarked {
            return Ok(false);
        }
        self.put(id, None)?;
        Ok(true)
    }

    /// Chooses `pack`'s copy of the referenced blob `id` when no copy is chosen yet; true when
    /// it was chosen.
    fn claim(&mut self, id: Id, pack: PackId) -> Result<bool> {
        if self.get(&id)? != Mark::Marked {
            return Ok(false);
        }
        self.put(id, Some(pack))?;
        Ok(true)
    }

    /// Whether `pack`'s copy of `id` is the one kept.
    fn claimed_by(&self, id: &Id, pack: PackId) -> Result<bool> {
        Ok(self.get(id)? == Mark::Claimed(pack))
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
        if progress.interrupted() {
            return Err(Error::Interrupted);
        }
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

/// Bytes a blob takes in its pack: its frame (header and stored bytes) and its trailer entry.
/// A pack is its blobs' footprints and a footer; the footer is overhead, never unused space.
fn footprint(e: &PackEntry) -> u64 {
    frame_len(e) + TRAILER_ENTRY_LEN as u64
}

/// Calls `f` with every pack the index files list, once each, in a fixed order (index files by
/// id, packs as listed). Returns the packs seen. A damaged index file stops prune: the packs
/// only it lists would look unindexed and be deleted.
fn for_each_indexed_pack(
    repo: &Repository,
    mut f: impl FnMut(&IndexedPack) -> Result<()>,
) -> Result<HashSet<PackId>> {
    let mut files = repo.list_index_files()?;
    files.sort();
    let mut seen = HashSet::new();
    for index in files {
        let packs = repo.load_index_file(index).map_err(|e| Error::InvalidOption {
            option: "prune",
            reason: format!("{e}; run `store repair index` first"),
        })?;
        for pack in packs {
            if seen.insert(pack.id) {
                f(&pack)?;
            }
        }
    }
    Ok(seen)
}

/// A pack that prune deletes (`kept == 0`) or repacks.
struct Candidate {
    len: u64,
    /// Footprints of the blobs kept in it.
    live: u64,
    /// How many blobs are kept in it (copied out before it is deleted).
    kept: usize,
}

/// Plans the packs: delete the dead, repack the mostly dead. Returns the packs that go, each
/// with the number of kept blobs that must be copied out of it first (0 for those deleted).
///
/// One pass over the index files (in order of their ids) chooses, for every referenced blob, the
/// copy that is kept: the first intact one met. A pack with no kept copy is deleted; one whose
/// copies that are not kept (unreferenced, duplicates, damaged) take more than `max_unused` of
/// it, or that holds a damaged copy, is repacked, its kept copies moved to new packs. A pack
/// whose blobs are all kept has no unused space and is never touched. Then, when the only copies
/// of a referenced blob are damaged, one is kept and its pack is left whole (`repair packs`
/// salvages it).
fn plan_packs(
    repo: &Repository,
    marks: &mut Marks,
    damaged: &DamageSet,
    max_unused: f64,
    plan: &mut PrunePlan,
) -> Result<HashMap<PackId, usize>> {
    let on_disk: HashSet<PackId> = repo.list_packs()?.into_iter().collect();
    let mut candidates: HashMap<PackId, Candidate> = HashMap::new();
    let mut order: Vec<PackId> = Vec::new();
    let mut damaged_copies: Vec<(PackId, Id)> = Vec::new();
    let indexed = for_each_indexed_pack(repo, |pack| {
        if !on_disk.contains(&pack.id) {
            return Err(Error::InvalidOption {
                option: "prune",
                reason: format!(
                    "pack {} is in the index but missing; run `store check`, then `store repair index`",
                    pack.id
                ),
            });
        }
        plan.packs += 1;
        plan.bytes += pack.len;
        let (mut live, mut kept, mut has_damage) = (0u64, 0usize, false);
        for e in &pack.entries {
            if damaged.contains(pack.id, &e.id) {
                has_damage = true;
                damaged_copies.push((pack.id, e.id));
            } else if marks.claim(e.id, pack.id)? {
                live += footprint(e);
                kept += 1;
            }
        }
        // Beside its blobs' footprints a pack holds its footer (and a sealed trailer's nonce
        // and tag): not unused space.
        let fixed = (FOOTER_LEN + repo.crypto().overhead()) as u64;
        let unused = pack.len.saturating_sub(live + fixed);
        let too_much = unused as f64 / pack.len.max(1) as f64 > max_unused;
        if kept == 0 || (unused > 0 && (has_damage || too_much)) {
            candidates.insert(pack.id, Candidate { len: pack.len, live, kept });
            order.push(pack.id);
        }
        Ok(())
    })?;
    // The last copy of a referenced blob, damaged as it is, stays where it is, with its pack.
    for (pack, id) in damaged_copies {
        if marks.claim(id, pack)? {
            candidates.remove(&pack);
        }
    }
    for id in order {
        let Some(c) = candidates.get(&id) else { continue };
        plan.bytes_deleted += c.len;
        if c.kept == 0 {
            plan.delete.push(id);
        } else {
            plan.repack.push(id);
            plan.bytes_copied += c.live;
        }
    }
    for pack in on_disk.difference(&indexed) {
        plan.unindexed.push(*pack);
        plan.bytes_deleted += repo.pack_len(*pack).unwrap_or(0);
    }
    plan.unindexed.sort();
    // New packs hold the copied footprints, plus a footer per pack target (or part of one).
    let target = u64::from(repo.config().pack_target).max(1);
    let new_packs = plan.bytes_copied.div_ceil(target);
    plan.bytes_written =
        plan.bytes_copied + new_packs * (FOOTER_LEN + repo.crypto().overhead()) as u64;
    plan.bytes_freed = plan.bytes_deleted.saturating_sub(plan.bytes_written);
    Ok(candidates.into_iter().map(|(id, c)| (id, c.kept)).collect())
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
    let _reserve = (!opts.dry_run).then(|| repo.release_reserve());
    repo.prepare_write()?;
    let mut report = PruneReport::default();
    let mut marks = Marks::open(repo.layout().scratch("prune-marks"))?;
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
    // Until the new index files are written, stopping changes nothing; from there on prune
    // finishes (each of its last steps is quick, and stopping between them is crash-safe anyway).
    let stop = || if progress.interrupted() { Err(Error::Interrupted) } else { Ok(()) };
    stop()?;

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
    let damaged = repo.damage()?;
    let candidates = plan_packs(repo, &mut marks, &damaged, opts.max_unused, &mut plan)?;
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
    stop()?;

    // 3a. Repack: the kept copies of the repacked packs into new packs, durable.
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut writer: Option<PackWriter> = None;
    let target = u64::from(repo.config().pack_target);
    let (mut frame, mut raw) = (Vec::new(), Vec::new());
    progress.phase("repacking");
    progress.set_total(0, 0);
    progress.set_total(plan.repack.len() as u64, plan.bytes_copied);
    for id in &plan.repack {
        if let Err(e) = stop() {
            // The packs repacked so far are listed nowhere and used by no one: remove them.
            let ids: Vec<PackId> = new_packs.iter().map(|p| p.id).collect();
            let _ = repo.remove_packs(&ids);
            return Err(e);
        }
        let path = repo.pack_path(*id);
        let reader = repo.pack_reader(*id)?;
        progress.phase(&format!("repacking {}", id.short()));
        let mut copied = HashSet::new();
        for e in reader.entries() {
            if !marks.claimed_by(&e.id, *id)? || !copied.insert(e.id) {
                continue;
            }
            read_blob(repo.crypto(), reader.file(), || path.clone(), *id, e, &mut frame, &mut raw)?;
            let blob = EncodedBlob {
                id: e.id,
                kind: e.kind,
                codec: e.codec,
                raw_len: e.raw_len,
                bytes: frame.clone(),
            };
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(repo.new_pack()?),
            };
            w.add(&blob)?;
            progress.add_bytes(blob.bytes.len() as u64);
            if w.len() >= target {
                if let Some(w) = writer.take() {
                    new_packs.push(seal(repo, w)?);
                }
            }
        }
        progress.add_items(1);
        // The claims came from the index; the copies from the pack's own trailer. Should they
        // disagree, a kept blob would be left behind in a pack about to be deleted: stop now,
        // before anything is deleted.
        let planned = candidates.get(id).copied().unwrap_or(0);
        if copied.len() != planned {
            return Err(Error::InvalidOption {
                option: "prune",
                reason: format!(
                    "pack {id}: its trailer lists {} of the {planned} blobs its index file says \
                     are kept there; nothing was deleted; run `store check`, then `store repair \
                     index`",
                    copied.len()
                ),
            });
        }
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
        new_packs.push(seal(repo, w)?);
    }
    report.packs_written = new_packs.len() as u64;
    let bytes_written: u64 = new_packs.iter().map(|p| p.len).sum();
    crate::crash::point("prune", "repacked");

    // 3b. New index files: every pack that stays, and the new ones; then the old files go.
    let mut rewrite = IndexRewrite::begin(repo)?;
    let mut listed: HashSet<PackId> = new_packs.iter().map(|p| p.id).collect();
    for pack in new_packs {
        rewrite.add(pack)?;
    }
    for index in rewrite.old().to_vec() {
        for pack in repo.load_index_file(index)? {
            if !candidates.contains_key(&pack.id) && listed.insert(pack.id) {
                rewrite.add(pack)?;
            }
        }
    }
    report.index_files_written = rewrite.write()?;
    let written = rewrite.written().to_vec();
    crate::crash::point("prune", "index_written");
    rewrite.remove_old()?;
    crate::crash::point("prune", "old_index_removed");

    // 3c. Only now, delete, and never a pack that an index file lists: not one prune wrote
    // (a repacked pack can come out byte for byte the same, under the same name), and not one
    // an index file that appeared meanwhile lists (a writer that outlived its lock).
    for index in repo.list_index_files()? {
        if !written.contains(&index) {
            listed.extend(repo.load_index_file(index)?.into_iter().map(|p| p.id));
        }
    }
    let doomed = plan.delete.iter().chain(&plan.repack).chain(&plan.unindexed);
    let (mut doomed_present, mut bytes_deleted) = (Vec::new(), 0u64);
    for id in doomed.filter(|id| !listed.contains(id)) {
        // One that is gone already (a prune before this one died midway) is not counted.
        if let Ok(len) = repo.pack_len(*id) {
            doomed_present.push(*id);
            bytes_deleted += len;
        }
    }
    let deleted = doomed_present.len() as u64;
    if deleted > 0 {
        crate::crash::point("prune", "deleting");
        repo.remove_packs(&doomed_present)?;
    }
    // Damage records of packs that are gone say nothing any more.
    repo.rewrite_damage(|c| repo.pack_len(c.pack).is_ok())?;
    for t in &plan.temp_files {
        let _ = if t.is_dir() { std::fs::remove_dir_all(t) } else { std::fs::remove_file(t) };
    }
    drop(marks);
    report.packs_deleted = deleted;
    plan.bytes_deleted = bytes_deleted;
    plan.bytes_written = bytes_written;
    plan.bytes_freed = bytes_deleted.saturating_sub(bytes_written);
    report.plan = plan;
    report.duration = started.elapsed();
    Ok(report)
}

/// Seals a pack of repacked blobs (verified, durable) and returns its index entry.
fn seal(repo: &Repository, w: PackWriter) -> Result<IndexedPack> {
    let sealed = repo.seal_pack(w)?;
    Ok(IndexedPack { id: sealed.id, len: sealed.len, entries: sealed.entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::damage::DamagedCopy;
    use crate::progress::NoProgress;
    use crate::restore::{restore, RestoreOptions};

    /// A repository holding one set of `files` tiny files, in `dir`.
    fn repo_of_tiny_files(dir: &std::path::Path, files: usize) -> Repository {
        let files: Vec<(String, Vec<u8>)> = (0..files)
            .map(|i| (format!("d{}/f{i}", i % 20), format!("x{i}").into_bytes()))
            .collect();
        crate::testing::repo_with(dir, &files)
    }

    fn prune_at(repo: &Repository, max_unused: f64) -> PruneReport {
        let opts = PruneOptions { max_unused, ..PruneOptions::default() };
        prune(repo, &opts, &NoProgress, &mut |_| {}).unwrap()
    }

    fn restores_whole(repo: &Repository, dir: &std::path::Path, name: &str) {
        let (_, m) = repo.resolve_snapshot("latest").unwrap();
        let target = dir.join(name);
        let opts = RestoreOptions { target: target.clone(), ..RestoreOptions::default() };
        let report = restore(repo, &m, &opts, &NoProgress).unwrap();
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert_eq!(std::fs::read(target.join("data/d7/f7")).unwrap(), b"x7");
    }

    // See: issue 12, defect 1.
    #[test]
    fn a_pack_whose_blobs_are_all_kept_is_never_repacked_however_small_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_tiny_files(dir.path(), 600);
        let before = repo.list_packs().unwrap();
        for max_unused in [0.0, 0.25, 1.0] {
            let report = prune_at(&repo, max_unused);
            assert!(report.plan.delete.is_empty() && report.plan.repack.is_empty(), "{max_unused}");
            assert_eq!(report.packs_deleted, 0);
            assert_eq!(report.plan.bytes_freed, 0);
            assert_eq!(repo.list_packs().unwrap(), before);
        }
        restores_whole(&repo, dir.path(), "out");
    }

    fn pack_bytes(repo: &Repository) -> u64 {
        let packs = repo.list_packs().unwrap();
        packs.iter().map(|p| std::fs::metadata(repo.layout().pack(*p)).unwrap().len()).sum()
    }

    /// Writes a second copy of every blob, in new packs with their own index file.
    fn duplicate_every_blob(repo: &Repository) {
        for id in repo.list_packs().unwrap() {
            let path = repo.layout().pack(id);
            let reader = repo.pack_reader(id).unwrap();
            let mut w = PackWriter::create(&repo.layout().tmp_dir(), repo.version(), repo.crypto())
                .unwrap();
            let (mut frame, mut raw) = (Vec::new(), Vec::new());
            for e in reader.entries().iter().rev() {
                read_blob(
                    repo.crypto(),
                    reader.file(),
                    || path.clone(),
                    id,
                    e,
                    &mut frame,
                    &mut raw,
                )
                .unwrap();
                let stored = &frame[BLOB_HEADER_LEN..];
                w.add(&EncodedBlob::from_stored(e.id, e.kind, e.codec, e.raw_len, stored)).unwrap();
            }
            let new = seal(repo, w).unwrap();
            repo.save_index_file(&[new]).unwrap();
        }
    }

    // See: issue 12, defect 4.
    #[test]
    fn of_a_blob_stored_twice_one_copy_is_kept_and_the_other_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_tiny_files(dir.path(), 300);
        let once = pack_bytes(&repo);
        duplicate_every_blob(&repo);
        assert!(pack_bytes(&repo) >= 2 * once - 64);
        let report = prune_at(&repo, 0.25);
        let p = &report.plan;
        assert_eq!(p.bytes_freed, p.bytes_deleted - p.bytes_written);
        assert_eq!(pack_bytes(&repo), once, "one copy of each blob is left: {p:?}");
        drop(repo);
        let repo = crate::testing::reopen(dir.path());
        restores_whole(&repo, dir.path(), "out");
    }

    // See: issue 12, defect 3: when the only copy of a referenced blob is recorded as damaged,
    // prune keeps it, with its pack whole, whatever the threshold (`repair packs` salvages it).
    #[test]
    fn the_damaged_last_copy_of_a_referenced_blob_keeps_its_pack() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_of_tiny_files(dir.path(), 50);
        let pack = repo.list_packs().unwrap()[0];
        let reader = repo.pack_reader(pack).unwrap();
        let e = reader.entries()[0];
        repo.record_damage(&[DamagedCopy { pack, blob: e.id, offset: e.offset }]).unwrap();
        drop(repo);
        let repo = crate::testing::reopen(dir.path());
        let report = prune_at(&repo, 0.0);
        assert!(!report.plan.delete.contains(&pack) && !report.plan.repack.contains(&pack));
        assert!(repo.layout().pack(pack).exists());
        assert_eq!(repo.damage().unwrap().len(), 1, "the record stays with its pack");
    }
}
