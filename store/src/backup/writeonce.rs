//! Write-once components (`snapshot --write-once`): content stores whose files are never changed
//! in place, only added in new directories (an Alfresco content store).
//!
//! A directory of such a component whose own metadata (mtime, ctime, inode, mode, owner, link
//! count) is unchanged since the parent set cannot have gained or lost an entry, and by the
//! operator's promise none of its files changed: its tree is reused without listing it or
//! looking at its files. Its subdirectories are still visited, as a new file below them does
//! not touch its mtime; one that changed is listed, and the directory's tree is rebuilt from
//! the parent's listing with that subdirectory's new tree.
//!
//! Two ways to know what a directory holds without listing it:
//!
//! - the parent set's tree of it, read once (a `pread` of the tree blob): every file's chunks
//!   must still be stored in usable packs (DESIGN.md invariant 8), the directory and each of its
//!   entries must have been last changed a settling time (at least one second) before the
//!   parent set began (a file still being written when the parent read it, or an entry added
//!   within the directory's timestamp granularity, is looked at again), the parent set must
//!   have listed no problem below it, and the parent set must have been made with the same
//!   component options (a marker in the cache, written when a set commits);
//! - a directory record in this host's cache (RocksDB family `dirs`), written the first time
//!   the parent's tree served: the directory's metadata, tree id, entry counts, subdirectory
//!   names, and the packs holding its tree and its files' chunks. A record serves while the
//!   metadata is the same and every one of those packs is present with its indexed length and
//!   named by no damage record: then an unchanged directory costs one stat and one lookup.
//!
//! Every pack a reused directory depends on is checked again just before the manifest is
//! written, as every other pack the set uses (prune beside a running backup stays exact).
//! Records are keyed by a namespace: the host, the component's name and source, the exclude
//! and append-only patterns, `--one-file-system` and the format version; other options make
//! other records. The cache is disposable: records lost are made again from the parent's trees.

use std::cell::RefCell;
use std::collections::HashSet;

use rustix::fd::AsFd;
use serde::{Deserialize, Serialize};

use super::walk::{Boundary, DirFd, Lstat, WalkSinks};
use crate::error::{Error, Result};
use crate::id::{PackId, SnapshotId, TreeId};
use crate::snapshot::{Component, Counts, PathIssue};
use crate::tree::{Content, DirEntries, Metadata, Node, TreeBlob};

/// A reused directory's path from its nearest listed ancestor longer than this is listed
/// instead, so a child's path from that ancestor (at most 255 bytes more) always opens.
const MAX_FROM_ANCHOR: usize = 2048;

/// Entries changed less than this before the parent set began are looked at again, whatever
/// the settling time asked for: timestamps are taken from a coarse clock.
const MIN_SETTLE_NS: i64 = 1_000_000_000;

/// Files changed in place in write-once directories that `--verify-write-once` names at most;
/// the rest are counted.
const MAX_LISTED_BROKEN: usize = 1000;

/// A write-once component's context for the walk.
pub(crate) struct WriteOnce {
    ns: [u8; 32],
    /// The parent set was made with the same options (its marker is in the cache).
    parent_trusted: bool,
    /// When the parent set began capturing this component.
    parent_start_ns: i64,
    settle_ns: i64,
    /// Directories (below the component) where the parent set listed a problem.
    troubled: HashSet<Vec<u8>>,
    /// The parent set listed more problems than it names: none of its trees is trusted.
    all_troubled: bool,
    /// Write directory records (not in a dry run).
    record: bool,
    /// Reuse directories: there is a parent set, and this is no `--verify-write-once`.
    reuse: bool,
    /// `--verify-write-once`: reuse nothing, name the files changed in place.
    pub(crate) verify: bool,
}

/// What the component options of a write-once component are, for its namespace.
pub(crate) struct Options<'a> {
    pub(crate) host: &'a str,
    pub(crate) name: &'a str,
    pub(crate) source: &'a [u8],
    pub(crate) excludes: &'a [String],
    pub(crate) append_only: &'a [String],
    pub(crate) one_file_system: bool,
    pub(crate) version: u32,
}

/// The namespace of the records and markers of a component made with `o`.
pub(crate) fn namespace(o: &Options<'_>) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("store 2026-11 write-once directory records");
    let mut field = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(o.host.as_bytes());
    field(o.name.as_bytes());
    field(o.source);
    for list in [o.excludes, o.append_only] {
        field(&(list.len() as u64).to_le_bytes());
        for p in list {
            field(p.as_bytes());
        }
    }
    field(&[u8::from(o.one_file_system)]);
    field(&o.version.to_le_bytes());
    *h.finalize().as_bytes()
}

fn record_key(ns: &[u8; 32], rel: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(33 + rel.len());
    key.push(b'd');
    key.extend_from_slice(ns);
    key.extend_from_slice(rel);
    key
}

fn marker_key(ns: &[u8; 32], set: SnapshotId) -> Vec<u8> {
    let mut key = Vec::with_capacity(65);
    key.push(b's');
    key.extend_from_slice(ns);
    key.extend_from_slice(set.0.as_bytes());
    key
}

/// Records in this host's cache that `set` was made with the options of namespace `ns`, so
/// the next set may trust its trees. Best effort: without it, the next set lists everything.
pub(crate) fn mark_set(repo: &crate::repo::Repository, ns: &[u8; 32], set: SnapshotId) {
    if let Ok(index) = repo.index() {
        let _ = index.dir_put(&marker_key(ns, set), &[]);
    }
}

impl WriteOnce {
    /// The context of a write-once component of namespace `ns`, built on `parent` (the parent
    /// set's id, component and problem paths).
    pub(crate) fn new(
        repo: &crate::repo::Repository,
        ns: [u8; 32],
        parent: Option<(SnapshotId, &Component, &[PathIssue])>,
        settle: std::time::Duration,
        record: bool,
        verify: bool,
    ) -> Result<Self> {
        let mut wo = WriteOnce {
            ns,
            parent_trusted: false,
            parent_start_ns: 0,
            settle_ns: i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX).max(MIN_SETTLE_NS),
            troubled: HashSet::new(),
            all_troubled: false,
            record: record && !repo.index()?.is_read_only(),
            reuse: parent.is_some() && !verify,
            verify,
        };
        if let Some((id, component, issues)) = parent {
            wo.parent_trusted =
                repo.index()?.dir_get(&marker_key(&ns, id)).ok().flatten().is_some();
            wo.parent_start_ns = component.start_ns;
            for issue in issues.iter().filter(|i| i.component == component.name) {
                if issue.path.is_empty() {
                    wo.all_troubled = true;
                }
                let dir = issue.path.iter().rposition(|&b| b == b'/');
                let dir = dir.map_or(&[][..], |at| &issue.path[..at]);
                wo.troubled.insert(dir.to_vec());
                wo.troubled.insert(issue.path.clone());
            }
        }
        Ok(wo)
    }

    /// Whether an entry with metadata `m` was last changed long enough before the parent set
    /// began to be trusted as it was then.
    pub(crate) fn settled(&self, m: &Metadata) -> bool {
        let changed = m.ctime.to_ns_saturating().max(m.mtime.to_ns_saturating());
        changed.saturating_add(self.settle_ns) <= self.parent_start_ns
    }

    fn trusts_parent_at(&self, rel: &[u8]) -> bool {
        self.parent_trusted && !self.all_troubled && !self.troubled.contains(rel)
    }

    /// Whether the directory at `rel`, with metadata `fresh` now and `parent` in the parent
    /// set, is one the fast path would reuse: what `--verify-write-once` looks inside.
    pub(crate) fn promised(&self, rel: &[u8], fresh: &Metadata, parent: Option<&Node>) -> bool {
        parent.is_some_and(|p| {
            matches!(p.content, Content::Dir { .. })
                && same_stat(fresh, &p.meta)
                && self.settled(&p.meta)
                && !self.all_troubled
                && !self.troubled.contains(rel)
        })
    }
}

/// Whether a directory's metadata `now` is what `then` recorded (extended attributes aside:
/// changing them changes the ctime). A `dev` of 0 is a version-1 set's, which kept none.
pub(crate) fn same_stat(now: &Metadata, then: &Metadata) -> bool {
    now.mode == then.mode
        && now.uid == then.uid
        && now.gid == then.gid
        && now.mtime == then.mtime
        && now.ctime == then.ctime
        && now.ino == then.ino
        && now.nlink == then.nlink
        && (now.dev == then.dev || then.dev == 0)
}

/// What a directory record holds (its encoding is bincode, as every record of the format,
/// with a leading version byte).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DirRecord {
    meta: Metadata,
    tree: TreeId,
    files: u64,
    bytes: u64,
    symlinks: u64,
    specials: u64,
    packs: Vec<PackId>,
    subdirs: Vec<Vec<u8>>,
}

const RECORD_VERSION: u8 = 1;

impl DirRecord {
    fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![RECORD_VERSION];
        crate::format::encode_record_into(self, "directory record", &mut out)?;
        Ok(out)
    }

    /// A record of this version, or nothing (another version, or damaged: it is made again).
    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => {
                crate::format::decode_record(rest, "directory record").ok()
            }
            _ => None,
        }
    }

    fn counts(&self) -> Counts {
        Counts {
            files: self.files,
            files_unchanged: self.files,
            bytes_source: self.bytes,
            symlinks: self.symlinks,
            specials: self.specials,
            ..Counts::default()
        }
    }
}

/// A directory reused whole, as the walk hands it on.
pub(crate) struct ReusedDir {
    /// Its metadata now, with the extended attributes it had.
    pub(crate) meta: Metadata,
    pub(crate) tree: TreeId,
    /// Its files, bytes, symlinks and special files (not those of its subdirectories).
    pub(crate) counts: Counts,
    /// Its subdirectories, in name order, as they are now.
    pub(crate) subdirs: Vec<(Vec<u8>, Lstat)>,
}

impl WalkSinks<'_> {
    /// Whether the directory at `rel` (reached as `path` from the open directory `anchor`),
    /// whose metadata is `fresh` now and whose entry in the parent set is `parent` (unknown
    /// inside a reused directory), can be reused whole, and how.
    pub(crate) fn reuse_dir(
        &self,
        (anchor, path): (&DirFd, &[u8]),
        rel: &[u8],
        fresh: &Metadata,
        parent: Option<&Node>,
    ) -> Result<Option<ReusedDir>> {
        let Some(wo) = self.write_once else { return Ok(None) };
        if !wo.reuse || path.len() > MAX_FROM_ANCHOR {
            return Ok(None);
        }
        let index = self.repo.index()?;
        let key = record_key(&wo.ns, rel);
        let parent_tree = match parent.map(|p| &p.content) {
            Some(Content::Dir { tree }) => Some(*tree),
            _ => None,
        };
        // A cache that cannot be read only means the directory is looked at.
        if let Some(bytes) = index.dir_get(&key).ok().flatten() {
            match DirRecord::decode(&bytes) {
                Some(rec)
                    if same_stat(fresh, &rec.meta)
                        && parent_tree.is_none_or(|t| t == rec.tree)
                        && parent.is_none_or(|p| p.meta.xattrs == rec.meta.xattrs) =>
                {
                    if self.packs_whole(&rec.packs)? {
                        let Some(subdirs) = self.stat_subdirs((anchor, path), &rec.subdirs) else {
                            return Ok(None);
                        };
                        let mut meta = fresh.clone();
                        meta.xattrs.clone_from(&rec.meta.xattrs);
                        let counts = rec.counts();
                        return Ok(Some(ReusedDir { meta, tree: rec.tree, counts, subdirs }));
                    }
                }
                // Of a directory that changed since, or unreadable: made again when it serves.
                _ => {
                    if wo.record {
                        let _ = index.dir_delete(&key);
                    }
                }
            }
        }
        let (Some(node), Some(tree)) = (parent, parent_tree) else { return Ok(None) };
        if !wo.trusts_parent_at(rel) || !same_stat(fresh, &node.meta) || !wo.settled(&node.meta) {
            return Ok(None);
        }
        let Some(mut rec) = self.listing_record(wo, tree)? else { return Ok(None) };
        let Some(subdirs) = self.stat_subdirs((anchor, path), &rec.subdirs) else {
            return Ok(None);
        };
        rec.meta = fresh.clone();
        rec.meta.xattrs.clone_from(&node.meta.xattrs);
        if wo.record {
            if let Ok(bytes) = rec.encode() {
                let _ = index.dir_put(&key, &bytes);
            }
        }
        let counts = rec.counts();
        Ok(Some(ReusedDir { meta: rec.meta, tree, counts, subdirs }))
    }

    /// Removes the record of the directory at `rel`, whose tree in this set is not its
    /// record's.
    pub(crate) fn forget_record(&self, rel: &[u8]) {
        if let Some(wo) = self.write_once.filter(|wo| wo.record) {
            if let Ok(index) = self.repo.index() {
                let _ = index.dir_delete(&record_key(&wo.ns, rel));
            }
        }
    }

    /// Whether every pack of `packs` can be built upon: present with its indexed length, and
    /// named by no damage record (each is then checked again before the manifest is written).
    fn packs_whole(&self, packs: &[PackId]) -> Result<bool> {
        for p in packs {
            if !self.dedup.pack_whole(*p)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The record of the parent set's directory `tree`, when every entry of it can be trusted
    /// as it is: each file's chunks all stored in usable packs, and every entry settled.
    /// `meta` is left for the caller.
    fn listing_record(&self, wo: &WriteOnce, tree: TreeId) -> Result<Option<DirRecord>> {
        let packs = RefCell::new(HashSet::new());
        let load = |id: TreeId| -> Result<TreeBlob> {
            match self.dedup.located(&id.0)? {
                Some(pack) => {
                    packs.borrow_mut().insert(pack);
                    self.repo.load_tree(id)
                }
                None => Err(Error::BlobNotIndexed { id: id.0 }),
            }
        };
        let mut rec = DirRecord {
            meta: Metadata::default(),
            tree,
            files: 0,
            bytes: 0,
            symlinks: 0,
            specials: 0,
            packs: Vec::new(),
            subdirs: Vec::new(),
        };
        let Ok(entries) = DirEntries::open(load, tree) else { return Ok(None) };
        for node in entries {
            // A listing that cannot be read is listed from the source instead.
            let Ok(node) = node else { return Ok(None) };
            match &node.content {
                Content::Dir { .. } => {
                    rec.subdirs.push(node.name);
                    continue;
                }
                Content::File { size, chunks } => {
                    if !self.dedup.all_stored_into(chunks, &mut packs.borrow_mut())? {
                        return Ok(None);
                    }
                    rec.files += 1;
                    rec.bytes += size;
                }
                Content::Symlink { .. } => rec.symlinks += 1,
                Content::Special { .. } => rec.specials += 1,
            }
            if !wo.settled(&node.meta) {
                return Ok(None);
            }
        }
        let mut packs: Vec<PackId> = packs.into_inner().into_iter().collect();
        packs.sort_unstable();
        rec.packs = packs;
        Ok(Some(rec))
    }

    /// The subdirectories `names` of the directory at `path` from `anchor`, looked at now:
    /// nothing when one is gone, no longer a directory, or a boundary of the walk (a mount
    /// point, the repository), as the directory is then listed.
    fn stat_subdirs(
        &self,
        (anchor, path): (&DirFd, &[u8]),
        names: &[Vec<u8>],
    ) -> Option<Vec<(Vec<u8>, Lstat)>> {
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let full = crate::tree::join_raw(path, name);
            let on_disk = std::path::Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&full),
            );
            let m = Lstat::at(anchor.as_fd(), on_disk).ok()?;
            if !m.is_dir() || !matches!(self.bounds.boundary(&m, self.root_dev), Boundary::Descend)
            {
                return None;
            }
            out.push((name.clone(), m));
        }
        Some(out)
    }

    /// Notes a file of a write-once directory that changed in place (`new`: that appeared in
    /// an unchanged directory), for `--verify-write-once`.
    pub(crate) fn broken_promise(&self, rel: &[u8], new: bool) {
        let what = if new { "new in an unchanged directory" } else { "changed in place" };
        let path = format!("{}/{}: {what}", self.name, crate::tree::escape_name(rel));
        if let Ok(mut broken) = self.shared.broken_promises.lock() {
            broken.0 += 1;
            if broken.1.len() < MAX_LISTED_BROKEN {
                broken.1.push(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> DirRecord {
        DirRecord {
            meta: Metadata { mode: 0o40755, ino: 7, nlink: 3, ..Metadata::default() },
            tree: TreeId(crate::id::Id::from_bytes([3; 32])),
            files: 2,
            bytes: 10,
            symlinks: 1,
            specials: 0,
            packs: vec![PackId(crate::id::Id::from_bytes([9; 32]))],
            subdirs: vec![b"a".to_vec(), b"b".to_vec()],
        }
    }

    #[test]
    fn records_round_trip_and_damaged_ones_are_nothing() {
        let rec = record();
        let bytes = rec.encode().unwrap();
        assert_eq!(DirRecord::decode(&bytes), Some(rec));
        for cut in 0..bytes.len() {
            assert_eq!(DirRecord::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(DirRecord::decode(&other), None);
    }

    #[test]
    fn every_option_that_shapes_a_tree_makes_another_namespace() {
        let excludes = vec!["*.tmp".to_string()];
        let base = Options {
            host: "h",
            name: "content",
            source: b"/alf_data/contentstore",
            excludes: &[],
            append_only: &[],
            one_file_system: false,
            version: 4,
        };
        let ns = namespace(&base);
        let others = [
            Options { host: "g", ..base },
            Options { name: "c", ..base },
            Options { source: b"/other", ..base },
            Options { excludes: &excludes, ..base },
            Options { append_only: &excludes, ..base },
            Options { one_file_system: true, ..base },
            Options { version: 3, ..base },
        ];
        for o in &others {
            assert_ne!(namespace(o), ns);
        }
        assert_eq!(namespace(&Options { ..base }), ns);
    }

    #[test]
    fn entries_changed_within_the_settling_time_are_not_trusted() {
        let wo = WriteOnce {
            ns: [0; 32],
            parent_trusted: true,
            parent_start_ns: 100_000_000_000,
            settle_ns: MIN_SETTLE_NS,
            troubled: HashSet::new(),
            all_troubled: false,
            record: false,
            reuse: true,
            verify: false,
        };
        let at = |s: i64, ns: i64| Metadata {
            mtime: crate::tree::Time::new(s, 0),
            ctime: crate::tree::Time::new(s, ns),
            ..Metadata::default()
        };
        assert!(wo.settled(&at(99, 0)));
        assert!(!wo.settled(&at(99, 1)));
        assert!(!wo.settled(&at(100, 0)));
        // The mtime counts too (set forward by a tool).
        let mut m = at(50, 0);
        m.mtime = crate::tree::Time::new(120, 0);
        assert!(!wo.settled(&m));
    }
}
