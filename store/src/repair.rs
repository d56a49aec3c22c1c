//! Repairs: `repair index` rebuilds the index files and the cache from the pack trailers;
//! `repair snapshots` writes copies of damaged sets without the data that is lost; `repair
//! packs` (in [`packs`]) moves the intact blobs out of damaged packs.
//!
//! Order, so that a crash at any point leaves a usable repository: (1) new index files are
//! written durably, listing every pack whose trailer reads back; (2) only then are the old index
//! files removed; (3) the cache is deleted and rebuilt from the new files. A crash after (1)
//! leaves old and new files side by side, which is harmless (the same blobs listed twice); the
//! next `repair index` finishes the job.

mod packs;

use std::collections::{HashMap, HashSet};

use crate::compress::Compressor;
use crate::error::{IoContext, Result};
use crate::id::{Id, PackId, SnapshotId, TreeId};
use crate::index::IndexedPack;
use crate::pack::{BlobKind, EncodedBlob, PackWriter};
use crate::progress::Progress;
use crate::repo::{IndexRewrite, Repository};
use crate::snapshot::{IssueKind, Manifest, PathIssue};
use crate::tree::{escape_name, BlobSink, ChunkRefs, Content, Node, TreeBuilder};
use crate::vfs::{
    chunk_batches, component_node, dir_entries, load_chunk_list, ChunkBatch, RepoDir,
};

pub use packs::{repair_packs, RepairPacksOptions, RepairPacksReport, RepairedPack};

/// A pack left out of the rebuilt index because its trailer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadablePack {
    /// The pack.
    pub pack: PackId,
    /// Why.
    pub error: String,
}

/// What `repair index` did.
#[derive(Debug, Clone, Default)]
pub struct RepairIndexReport {
    /// Packs indexed.
    pub packs: u64,
    /// Blobs indexed.
    pub blobs: u64,
    /// Index files written.
    pub index_files_written: u64,
    /// Old index files removed.
    pub index_files_removed: u64,
    /// Packs whose blobs are lost (their trailer is damaged).
    pub unreadable: Vec<UnreadablePack>,
}

/// Rebuilds the index files and this host's cache from the pack trailers.
///
/// The caller must hold the repository's exclusive lock, and this process must not have opened
/// the cache before.
///
/// # Errors
/// [`crate::Error::Io`] when packs cannot be listed or index files written.
pub fn repair_index(repo: &Repository, progress: &dyn Progress) -> Result<RepairIndexReport> {
    // Works whether `index/` is empty or gone altogether.
    repo.prepare_write()?;
    let mut report = RepairIndexReport::default();
    let mut rewrite = IndexRewrite::begin(repo)?;
    let packs = repo.list_packs()?;
    progress.set_total(packs.len() as u64, 0);
    for pack in packs {
        progress.add_items(1);
        match repo.pack_reader(pack) {
            Ok(reader) => {
                report.packs += 1;
                report.blobs += reader.entries().len() as u64;
                rewrite.add(IndexedPack {
                    id: pack,
                    len: reader.len(),
                    entries: reader.entries().to_vec(),
                })?;
            }
            Err(e) => report.unreadable.push(UnreadablePack { pack, error: e.to_string() }),
        }
    }
    report.index_files_written = rewrite.write()?;
    crate::crash::point("repair_index", "new_files");
    report.index_files_removed = rewrite.remove_old()?;
    let cache = repo.cache_dir();
    if cache.exists() {
        std::fs::remove_dir_all(cache).at(cache)?;
    }
    repo.index()?;
    Ok(report)
}

/// How to repair sets.
#[derive(Debug, Clone, Copy, Default)]
pub struct RepairSnapshotsOptions {
    /// Read and verify every blob the sets reference, not only that it is indexed and present.
    pub read_data: bool,
    /// Remove each damaged set once its repaired copy is durable.
    pub forget: bool,
    /// Report what would be done, write nothing.
    pub dry_run: bool,
}

/// One damaged set and what became of it.
#[derive(Debug, Clone)]
pub struct RepairedSet {
    /// The damaged set.
    pub old: SnapshotId,
    /// The repaired set written in its place (none with `dry_run`, or when the manifest itself
    /// is unreadable and the whole set is lost).
    pub new: Option<SnapshotId>,
    /// Paths left out of the repaired set, with why.
    pub lost: Vec<LostPath>,
    /// Whether the damaged set was removed.
    pub forgotten: bool,
}

/// A path of a set whose data is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostPath {
    /// Path, starting with the component name.
    pub path: String,
    /// What is missing or damaged.
    pub reason: String,
}

/// What `repair snapshots` did.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsReport {
    /// Sets that reference no lost data.
    pub intact: u64,
    /// Sets that did.
    pub repaired: Vec<RepairedSet>,
}

/// Stores the trees that repair builds: dedup against the index, one pack, one index file.
struct RepairSink<'r> {
    repo: &'r Repository,
    writer: Option<PackWriter>,
    written: HashSet<Id>,
    compressor: Compressor,
    dry_run: bool,
}

impl BlobSink for RepairSink<'_> {
    fn put(&mut self, kind: BlobKind, raw: Vec<u8>) -> Result<Id> {
        let id = self.repo.blob_id(&raw);
        if self.dry_run || self.written.contains(&id) || self.repo.index()?.contains(&id)? {
            return Ok(id);
        }
        let blob = EncodedBlob::encode(id, kind, &raw, &mut self.compressor, self.repo.crypto())?;
        let w = match self.writer.as_mut() {
            Some(w) => w,
            None => self.writer.insert(self.repo.new_pack()?),
        };
        w.add(&blob)?;
        self.written.insert(id);
        Ok(id)
    }
}

impl RepairSink<'_> {
    /// Seals the pack and writes its index file: the new trees are durable and indexed.
    fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let sealed = self.repo.seal_pack(w)?;
            self.repo.save_index_file(&[IndexedPack {
                id: sealed.id,
                len: sealed.len,
                entries: sealed.entries,
            }])?;
        }
        Ok(())
    }
}

/// Whether every blob of a file can be read; the reason when not.
struct Availability<'r> {
    repo: &'r Repository,
    packs: HashSet<PackId>,
    read_data: bool,
    frame: Vec<u8>,
    raw: Vec<u8>,
}

impl Availability<'_> {
    fn blob(&mut self, id: Id, kind: BlobKind) -> Result<Option<String>> {
        let Some(loc) = self.repo.index()?.get(&id)? else {
            return Ok(Some(format!("blob {id} is not indexed")));
        };
        if !self.packs.contains(&loc.pack) {
            return Ok(Some(format!("blob {id} is in missing pack {}", loc.pack)));
        }
        if self.read_data {
            if let Err(e) = self.repo.read_blob_into(id, kind, &mut self.frame, &mut self.raw) {
                return Ok(Some(e.to_string()));
            }
        }
        Ok(None)
    }

    fn file(&mut self, chunks: &ChunkRefs) -> Result<Option<String>> {
        for batch in chunk_batches(chunks) {
            let ids = match batch {
                ChunkBatch::Inline(ids) => ids.to_vec(),
                ChunkBatch::List(list) => {
                    if let Some(reason) = self.blob(list, BlobKind::ChunkList)? {
                        return Ok(Some(reason));
                    }
                    match load_chunk_list(self.repo, list) {
                        Ok(ids) => ids,
                        Err(e) => return Ok(Some(e.to_string())),
                    }
                }
            };
            for id in ids {
                if let Some(reason) = self.blob(id.0, BlobKind::Data)? {
                    return Ok(Some(reason));
                }
            }
        }
        Ok(None)
    }
}

struct Frame<'r> {
    entries: RepoDir<'r>,
    builder: TreeBuilder,
    path: String,
    node: Node,
}

/// Rebuilds the tree of directory `root` (at `path`) without the entries whose data is lost.
/// Unchanged directories encode to their old ids, which the sink finds already stored.
fn rebuild(
    repo: &Repository,
    root: &Node,
    path: &str,
    avail: &mut Availability<'_>,
    intact: &mut HashMap<TreeId, bool>,
    sink: &mut RepairSink<'_>,
    lost: &mut Vec<LostPath>,
) -> Result<Option<TreeId>> {
    let Content::Dir { tree } = root.content else { return Ok(None) };
    let page = repo.config().chunker.max as usize;
    let open = |t: TreeId, path: &str, lost: &mut Vec<LostPath>| match dir_entries(repo, t) {
        Ok(e) => Some(e),
        Err(e) => {
            lost.push(LostPath { path: path.to_owned(), reason: e.to_string() });
            None
        }
    };
    let Some(entries) = open(tree, path, lost) else {
        // The whole listing is lost: the component becomes an empty directory.
        return TreeBuilder::new(page, repo.version()).finish(sink).map(Some);
    };
    let mut stack = vec![Frame {
        entries,
        builder: TreeBuilder::new(page, repo.version()),
        path: path.to_owned(),
        node: root.clone(),
    }];
    let mut result = None;
    while let Some(frame) = stack.last_mut() {
        match frame.entries.next() {
            None => {
                let Some(done) = stack.pop() else { break };
                let new = done.builder.finish(sink)?;
                if let Content::Dir { tree: old } = done.node.content {
                    intact.insert(old, new == old);
                }
                let node = Node { content: Content::Dir { tree: new }, ..done.node };
                match stack.last_mut() {
                    Some(parent) => parent.builder.push(&node, sink)?,
                    None => result = Some(new),
                }
            }
            Some(Err(e)) => {
                // The rest of this directory's listing is unreadable: keep what was read.
                lost.push(LostPath { path: format!("{}/…", frame.path), reason: e.to_string() });
                frame.entries = RepoDir::empty();
            }
            Some(Ok(node)) => {
                let child = format!("{}/{}", frame.path, escape_name(&node.name));
                match &node.content {
                    Content::File { chunks, .. } => match avail.file(chunks)? {
                        Some(reason) => lost.push(LostPath { path: child, reason }),
                        None => frame.builder.push(&node, sink)?,
                    },
                    Content::Dir { tree } if intact.get(tree) == Some(&true) => {
                        frame.builder.push(&node, sink)?;
                    }
                    Content::Dir { tree } => {
                        if let Some(entries) = open(*tree, &child, lost) {
                            stack.push(Frame {
                                entries,
                                builder: TreeBuilder::new(page, repo.version()),
                                path: child,
                                node,
                            });
                        }
                    }
                    _ => frame.builder.push(&node, sink)?,
                }
            }
        }
    }
    Ok(result)
}

/// Writes, for each set that references lost data, a repaired set without the lost paths (same
/// time, host and components, tagged `repaired`, the lost paths recorded as issues), and reports
/// exactly what was lost. The damaged sets are kept unless `forget` is set.
///
/// # Errors
/// Repository errors; the caller holds the exclusive lock.
pub fn repair_snapshots(
    repo: &Repository,
    opts: &RepairSnapshotsOptions,
    progress: &dyn Progress,
) -> Result<RepairSnapshotsReport> {
    let mut report = RepairSnapshotsReport::default();
    let mut avail = Availability {
        repo,
        packs: repo.list_packs()?.into_iter().collect(),
        read_data: opts.read_data,
        frame: Vec::new(),
        raw: Vec::new(),
    };
    let mut sink = RepairSink {
        repo,
        writer: None,
        written: HashSet::new(),
        compressor: Compressor::new(repo.config().compression_level).map_err(|e| {
            crate::Error::InvalidOption { option: "compression level", reason: e.to_string() }
        })?,
        dry_run: opts.dry_run,
    };
    let mut intact: HashMap<TreeId, bool> = HashMap::new();
    let mut pending: Vec<(SnapshotId, Manifest, Vec<LostPath>)> = Vec::new();
    for listed in repo.list_snapshots()? {
        let m = match listed.manifest {
            Ok(m) => m,
            Err(e) => {
                // A manifest that cannot be read is lost whole; with `forget` it is removed.
                let forgotten =
                    opts.forget && !opts.dry_run && repo.remove_snapshot(listed.id).is_ok();
                let lost = vec![LostPath { path: String::new(), reason: e.to_string() }];
                report.repaired.push(RepairedSet { old: listed.id, new: None, lost, forgotten });
                continue;
            }
        };
        progress.phase(&listed.id.short());
        let mut lost = Vec::new();
        let mut repaired = m.clone();
        for c in &mut repaired.components {
            let node = match component_node(repo, c) {
                Ok(n) => n,
                Err(e) => {
                    lost.push(LostPath { path: c.name.clone(), reason: e.to_string() });
                    continue;
                }
            };
            if c.kind.is_dir() {
                if let Some(new) =
                    rebuild(repo, &node, &c.name, &mut avail, &mut intact, &mut sink, &mut lost)?
                {
                    c.root = new;
                }
            } else if let Content::File { chunks, .. } = &node.content {
                if let Some(reason) = avail.file(chunks)? {
                    lost.push(LostPath { path: c.name.clone(), reason });
                    // A file component whose data is lost becomes an empty listing.
                    c.root = TreeBuilder::new(repo.config().chunker.max as usize, repo.version())
                        .finish(&mut sink)?;
                }
            }
        }
        if lost.is_empty() {
            report.intact += 1;
        } else {
            pending.push((listed.id, repaired, lost));
        }
    }
    if !opts.dry_run {
        // The new trees are durable and indexed before any manifest names them.
        sink.flush()?;
    }
    for (old, mut m, lost) in pending {
        if !m.tags.iter().any(|t| t == "repaired") {
            m.tags.push("repaired".into());
        }
        m.issues.extend(lost.iter().map(|l| PathIssue {
            component: l.path.split('/').next().unwrap_or_default().to_owned(),
            path: l.path.split_once('/').map_or(Vec::new(), |(_, rest)| rest.as_bytes().to_vec()),
            kind: IssueKind::Skipped,
            reason: format!("lost: {}", l.reason),
        }));
        let (new, forgotten) = if opts.dry_run {
            (None, false)
        } else {
            let new = repo.save_snapshot(&m)?;
            crate::crash::point("repair_snapshots", "new_set");
            let forgotten = opts.forget && new != old && repo.remove_snapshot(old).is_ok();
            (Some(new), forgotten)
        };
        report.repaired.push(RepairedSet { old, new, lost, forgotten });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::testing::{flip, noise, reopen, repo_with};

    fn files() -> Vec<(String, Vec<u8>)> {
        (0..6).map(|i| (format!("f{i}.bin"), noise(i, 200_000))).collect()
    }

    /// Every blob of the cache: id -> (pack, offset).
    fn locations(repo: &Repository) -> Vec<(Id, PackId, u64)> {
        let mut out = Vec::new();
        for index in repo.list_index_files().unwrap() {
            for p in repo.load_index_file(index).unwrap() {
                for e in p.entries {
                    let loc = repo.index().unwrap().get(&e.id).unwrap().unwrap();
                    out.push((e.id, loc.pack, loc.entry.offset));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn repair_index_rebuilds_the_same_index_from_the_packs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        let before = locations(&repo);
        drop(repo);
        std::fs::remove_dir_all(dir.path().join("repo/index")).unwrap();
        std::fs::remove_dir_all(dir.path().join("repo/cache")).unwrap();
        let repo = reopen(dir.path());
        let report = repair_index(&repo, &NoProgress).unwrap();
        assert_eq!(report.packs, repo.list_packs().unwrap().len() as u64);
        assert!(report.unreadable.is_empty());
        drop(repo);
        assert_eq!(locations(&reopen(dir.path())), before);
    }

    #[test]
    fn repair_snapshots_writes_a_set_without_the_lost_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        let (old, _) = repo.resolve_snapshot("latest").unwrap();
        // Lose f3.bin's data: drop its first chunk from the index by recording its copy.
        let (_, m) = repo.resolve_snapshot("latest").unwrap();
        let node = crate::vfs::find(&repo, old, &m, b"data/f3.bin").unwrap();
        let Content::File { chunks: ChunkRefs::Inline(ids), .. } = node.content else { panic!() };
        let loc = repo.index().unwrap().get(&ids[0].0).unwrap().unwrap();
        repo.record_damage(&[crate::damage::DamagedCopy {
            pack: loc.pack,
            blob: ids[0].0,
            offset: loc.entry.offset,
        }])
        .unwrap();
        drop(repo);
        let repo = reopen(dir.path());
        let opts = RepairSnapshotsOptions { forget: true, ..RepairSnapshotsOptions::default() };
        let report = repair_snapshots(&repo, &opts, &NoProgress).unwrap();
        assert_eq!(report.repaired.len(), 1);
        let r = &report.repaired[0];
        assert_eq!(r.old, old);
        assert!(r.forgotten);
        assert_eq!(r.lost.iter().map(|l| l.path.as_str()).collect::<Vec<_>>(), vec!["data/f3.bin"]);
        let (new, m) = repo.resolve_snapshot("latest").unwrap();
        assert_eq!(Some(new), r.new);
        assert!(crate::vfs::find(&repo, new, &m, b"data/f3.bin").is_err());
        assert!(crate::vfs::find(&repo, new, &m, b"data/f4.bin").is_ok());
        assert!(m.tags.contains(&"repaired".to_owned()));
    }

    #[test]
    fn repair_packs_salvages_every_intact_blob_of_a_pack_whose_trailer_is_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        let pack = repo
            .list_packs()
            .unwrap()
            .into_iter()
            .max_by_key(|p| std::fs::metadata(repo.layout().pack(*p)).unwrap().len())
            .unwrap();
        let blobs = repo.pack_reader(pack).unwrap().entries().len();
        let len = std::fs::metadata(repo.layout().pack(pack)).unwrap().len();
        flip(&repo.layout().pack(pack), len - 64 - 10);
        let copies: Vec<crate::damage::DamagedCopy> =
            repo.pack_reader(pack).map(|_| Vec::new()).unwrap_or_else(|_| {
                // The trailer is unreadable: record every blob, as check does.
                let index = repo.list_index_files().unwrap();
                let listed = index.iter().flat_map(|i| repo.load_index_file(*i).unwrap());
                listed
                    .filter(|p| p.id == pack)
                    .flat_map(|p| p.entries)
                    .map(|e| crate::damage::DamagedCopy { pack, blob: e.id, offset: e.offset })
                    .collect()
            });
        assert_eq!(copies.len(), blobs);
        repo.record_damage(&copies).unwrap();
        let opts = RepairPacksOptions { packs: Vec::new(), dry_run: false };
        let report = repair_packs(&repo, &opts, &NoProgress).unwrap();
        assert_eq!(report.packs[0].salvaged, blobs as u64, "found by their headers");
        assert!(report.packs[0].lost.is_empty());
        // The salvaged pack is the pack as it was written: it is back under its own name, whole.
        let bytes = std::fs::read(repo.layout().pack(pack)).unwrap();
        assert_eq!(Id::hash(&bytes), pack.0);
        assert!(repo.damage().unwrap().is_empty(), "its records went with the damage");
        drop(repo);
        let repo = reopen(dir.path());
        let r = crate::check::check(
            &repo,
            &crate::check::CheckOptions { read_data: crate::check::DataCheck::All, record: false },
            &NoProgress,
        )
        .unwrap();
        assert!(!r.is_damaged(), "{:?}", r.findings);
    }
}
