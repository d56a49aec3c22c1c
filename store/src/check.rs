//! Verification of a repository (`store check`): structure, and optionally the data.
//!
//! Structure: every index file decodes and matches its name; every pack an index file lists
//! exists with the recorded length and a trailer equal to the index's entries; every set's trees
//! load and verify; every blob a set references is indexed in a pack that is present. With
//! data checking, every blob of the selected packs is read, decompressed and re-hashed.
//!
//! Findings are data ([`Finding`]): each names the object at fault; a second, targeted pass
//! names the sets and paths that damage affects. An `Err` from [`check`] means the check could
//! not run, not that it found damage. Memory: one entry per distinct tree (its verdict), per
//! pack, and per damaged object, never one per blob.
//!
//! Kept in one file (about 800 lines): the structural pass, the data pass and the pass naming
//! affected paths share one set of findings and read best side by side.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use rayon::prelude::*;

use crate::damage::{DamageSet, DamagedCopy};
use crate::error::{Error, Result};
use crate::id::{DamageId, Id, IndexId, PackId, SnapshotId, TreeId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{escape_name, Content, Node};
use crate::vfs::{component_node, dir_entries, for_each_chunk};

/// Which packs have their data read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataCheck {
    /// Structure only.
    #[default]
    None,
    /// Every pack.
    All,
    /// The `n`-th (1-based) of `m` slices of the packs, by pack id: `m` runs cover everything.
    Subset {
        /// Which slice, 1..=m.
        n: u32,
        /// How many slices.
        m: u32,
    },
    /// The packs the verification records (FORMAT.md §8.4) do not show verified within
    /// `max_age`, least recently verified first (never verified before all), up to `max_bytes`
    /// (at least one pack).
    Due {
        /// How recent a verification must be for a pack to be skipped (zero: every pack).
        max_age: std::time::Duration,
        /// How many bytes of packs to read at most.
        max_bytes: Option<u64>,
    },
}

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Data reading.
    pub read_data: DataCheck,
    /// Record in the repository what the check found: the damaged blobs (FORMAT.md §8.3), so
    /// that no writer builds on them again and the next snapshot of the same data stores it
    /// anew, and the packs read and found intact (§8.4), so that [`DataCheck::Due`] skips them.
    pub record: bool,
}

/// One thing `check` found.
// The fields are named after the object they hold (`pack`, `blob`, `snapshot`, `error`); the
// variant's doc says what it means.
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The config is damaged; its copy is in use.
    DamagedConfig { error: String },
    /// The config has no intact copy (a notice: only a second damage would be fatal).
    ConfigCopyMissing,
    /// A manifest cannot be read or does not match its name.
    DamagedSnapshot { snapshot: SnapshotId, error: String },
    /// An index file cannot be read or does not match its name.
    DamagedIndexFile { index: IndexId, error: String },
    /// A pack listed in an index file does not exist.
    MissingPack { pack: PackId, index: IndexId },
    /// A pack's length differs from the one its index file records.
    PackSize { pack: PackId, expected: u64, actual: u64 },
    /// A pack's footer or trailer is damaged.
    DamagedPack { pack: PackId, error: String },
    /// A pack's trailer lists other blobs than its index file says.
    TrailerMismatch { pack: PackId, index: IndexId },
    /// A blob's bytes do not verify.
    DamagedBlob { pack: PackId, blob: Id, offset: u64, error: String },
    /// A tree cannot be loaded.
    DamagedTree { tree: TreeId, error: String },
    /// A blob a set references is in no index file.
    MissingBlob { blob: Id },
    /// A path of a set that damage makes unrestorable.
    Affected { snapshot: SnapshotId, path: String, cause: String },
    /// A damaged blob that no set needs (unreferenced, or an intact copy exists elsewhere): a
    /// notice, not damage.
    UnusedDamagedBlob { pack: PackId, blob: Id, error: String },
    /// A damage record cannot be read: the copies it names may be used again.
    DamagedDamageRecord { record: DamageId, error: String },
    /// A verification record cannot be read: its packs count as never verified (a notice).
    UnreadableVerificationRecord { record: Id, error: String },
    /// A pack no index file lists (left by an interrupted snapshot): a notice, not damage.
    UnindexedPack { pack: PackId },
    /// A leftover temp file: a notice.
    TempFile { path: PathBuf },
}

impl Finding {
    /// Whether this finding means data is damaged or missing (otherwise it is a notice).
    #[must_use]
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            Finding::UnindexedPack { .. }
                | Finding::TempFile { .. }
                | Finding::UnusedDamagedBlob { .. }
                | Finding::UnreadableVerificationRecord { .. }
                | Finding::ConfigCopyMissing
        )
    }

    /// What to do about it.
    #[must_use]
    pub fn advice(&self) -> &'static str {
        match self {
            Finding::DamagedIndexFile { .. } | Finding::TrailerMismatch { .. } => {
                "run `store repair index` to rebuild the index from the packs"
            }
            Finding::MissingBlob { .. }
            | Finding::MissingPack { .. }
            | Finding::PackSize { .. } => {
                "run `store repair index`; then snapshot the same sources again, which stores \
                 the missing data anew (the sets listed as affected stay damaged)"
            }
            Finding::DamagedPack { .. }
            | Finding::DamagedBlob { .. }
            | Finding::DamagedTree { .. } => {
                "the damage is recorded, so the next snapshot of the same sources stores that \
                 data anew; `store repair packs` moves the intact blobs out of damaged packs, \
                 then `store repair snapshots --forget` drops what the affected sets lost"
            }
            Finding::DamagedDamageRecord { .. } => {
                "remove the record and run `store check --read-data`, which records the damage \
                 it finds again"
            }
            Finding::DamagedSnapshot { .. } => {
                "run `store repair snapshots --forget` to drop it; take a new snapshot"
            }
            Finding::DamagedConfig { .. } | Finding::ConfigCopyMissing => {
                "run `store repair config` to rewrite the config from the intact copy"
            }
            Finding::Affected { .. } => "restore the other paths of the set; they are intact",
            Finding::UnindexedPack { .. } | Finding::TempFile { .. } => {
                "nothing to do: left by an interrupted command, removed by prune"
            }
            Finding::UnusedDamagedBlob { .. } => {
                "nothing to do: no set needs this copy; prune or `store repair packs` removes it"
            }
            Finding::UnreadableVerificationRecord { .. } => {
                "remove the record; the packs it names are read by the next \
                 `store check --read-data --max-age`"
            }
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::DamagedSnapshot { snapshot, error } => {
                write!(f, "snapshot {snapshot}: {error}")
            }
            Finding::DamagedConfig { error } => {
                write!(f, "{error} (its copy config.copy is in use)")
            }
            Finding::ConfigCopyMissing => {
                write!(f, "config.copy is missing or differs from config")
            }
            Finding::DamagedIndexFile { index, error } => write!(f, "index file {index}: {error}"),
            Finding::MissingPack { pack, index } => {
                write!(f, "pack {pack}: missing (listed in index file {})", index.short())
            }
            Finding::PackSize { pack, expected, actual } => {
                write!(f, "pack {pack}: {actual} bytes, the index says {expected}")
            }
            Finding::DamagedPack { pack, error } => write!(f, "pack {pack}: {error}"),
            Finding::TrailerMismatch { pack, index } => {
                write!(f, "pack {pack}: trailer disagrees with index file {}", index.short())
            }
            Finding::DamagedBlob { pack, blob, offset, error } => {
                write!(f, "blob {blob} in pack {pack} at offset {offset}: {error}")
            }
            Finding::DamagedTree { tree, error } => write!(f, "tree {tree}: {error}"),
            Finding::MissingBlob { blob } => write!(f, "blob {blob}: referenced but not indexed"),
            Finding::Affected { snapshot, path, cause } => {
                write!(f, "set {} path {path}: {cause}", snapshot.short())
            }
            Finding::UnindexedPack { pack } => write!(f, "pack {pack}: not in any index file"),
            Finding::UnusedDamagedBlob { pack, blob, error } => {
                write!(f, "blob {blob} in pack {pack}: {error} (no set needs this copy)")
            }
            Finding::DamagedDamageRecord { record, error } => {
                write!(f, "damage record {record}: {error}")
            }
            Finding::UnreadableVerificationRecord { record, error } => {
                write!(f, "verification record {record}: {error}")
            }
            Finding::TempFile { path } => write!(f, "temp file {}", path.display()),
        }
    }
}

/// What `check` found and how much it looked at.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Everything found, damage and notices.
    pub findings: Vec<Finding>,
    /// Sets checked.
    pub snapshots: u64,
    /// Distinct trees checked.
    pub trees: u64,
    /// Packs whose structure was checked.
    pub packs: u64,
    /// Packs whose data was read.
    pub packs_read: u64,
    /// Blobs read and re-hashed.
    pub blobs_read: u64,
    /// Damaged copies newly recorded (with [`CheckOptions::record`]).
    pub damage_recorded: u64,
    /// Why recording the damage failed (a read-only repository), if it did.
    pub record_error: Option<String>,
    /// With [`DataCheck::Due`]: the packs that were due, and their bytes (the packs read are
    /// the first of them, up to the byte bound).
    pub due: (u64, u64),
    /// Packs read and found intact, recorded as verified now (with [`CheckOptions::record`]).
    pub verified_recorded: u64,
    /// Why recording the verified packs failed, if it did.
    pub coverage_error: Option<String>,
}

impl CheckReport {
    /// Whether any finding is damage.
    #[must_use]
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(Finding::is_damage)
    }
}

fn in_slice(pack: &PackId, data: DataCheck) -> bool {
    match data {
        DataCheck::None => false,
        // Chosen after every pack is listed, by the verification records.
        DataCheck::All | DataCheck::Due { .. } => true,
        DataCheck::Subset { n, m } => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&pack.0.as_bytes()[..8]);
            u64::from_le_bytes(b) % u64::from(m.max(1)) == u64::from(n.saturating_sub(1))
        }
    }
}

/// State shared by the passes.
struct Checker<'r> {
    repo: &'r Repository,
    report: CheckReport,
    /// Packs that are missing or unreadable: every blob in them is lost.
    bad_packs: HashSet<PackId>,
    /// Blobs that are referenced but not indexed (each named once).
    bad_blobs: HashSet<Id>,
    /// Packs listed by the index files (the authoritative index).
    indexed: HashSet<PackId>,
    /// Damaged or missing blobs that some set references.
    referenced_bad: HashSet<Id>,
    /// Verdict per tree: true when it and everything below it is intact.
    trees: HashMap<TreeId, bool>,
    /// Copies recorded as damaged (the cache passes them by).
    damage: DamageSet,
}

impl Checker<'_> {
    fn find(&mut self, f: Finding) {
        self.report.findings.push(f);
    }

    /// Whether blob `id` can be read: indexed, in a present pack, and not found damaged.
    fn blob_ok(&mut self, id: Id) -> Result<bool> {
        let ok = self.blob_status(id)?;
        if !ok {
            self.referenced_bad.insert(id);
        }
        Ok(ok)
    }

    fn blob_status(&mut self, id: Id) -> Result<bool> {
        if self.bad_blobs.contains(&id) {
            return Ok(false);
        }
        match self.repo.index()?.get(&id)? {
            Some(loc) if !self.indexed.contains(&loc.pack) => {
                self.bad_blobs.insert(id);
                self.find(Finding::MissingBlob { blob: id });
                Ok(false)
            }
            // The copy the cache names was found damaged (and could not be passed by: the
            // damage could not be recorded, so the cache still points at it).
            Some(loc) if self.damage.contains(loc.pack, &id) => Ok(false),
            Some(loc) if !self.bad_packs.contains(&loc.pack) => Ok(true),
            Some(_) => Ok(false),
            None => {
                self.bad_blobs.insert(id);
                // Its only copies are recorded as damaged: named as such already.
                if self.damage.of_blob(&id).is_empty() {
                    self.find(Finding::MissingBlob { blob: id });
                }
                Ok(false)
            }
        }
    }

    /// Whether every chunk of a file can be read.
    fn file_ok(&mut self, node: &Node) -> Result<bool> {
        let Content::File { chunks, .. } = &node.content else { return Ok(true) };
        let mut ids = Vec::new();
        let listed = for_each_chunk(self.repo, chunks, |id| {
            ids.push(id);
            Ok(())
        });
        if let Err(e) = listed {
            if matches!(e, Error::Cache { .. }) {
                return Err(e);
            }
            return Ok(false);
        }
        let mut ok = true;
        for id in ids {
            ok &= self.blob_ok(id)?;
        }
        Ok(ok)
    }

    /// Checks the tree `root` and everything below it, once per distinct tree, iteratively.
    fn check_tree(&mut self, root: TreeId) -> Result<bool> {
        if let Some(v) = self.trees.get(&root) {
            return Ok(*v);
        }
        let repo = self.repo;
        let mut stack = match dir_entries(repo, root) {
            Ok(entries) => vec![(root, entries, true)],
            Err(e) => return self.tree_failed(root, &e),
        };
        while let Some((tree, entries, clean)) = stack.last_mut() {
            let tree = *tree;
            match entries.next() {
                None => {
                    let verdict = *clean;
                    stack.pop();
                    self.trees.insert(tree, verdict);
                    self.report.trees += 1;
                    if let Some(parent) = stack.last_mut() {
                        parent.2 &= verdict;
                    }
                }
                Some(Err(e)) => {
                    *clean = false;
                    stack.pop();
                    self.tree_failed(tree, &e)?;
                    if let Some(parent) = stack.last_mut() {
                        parent.2 = false;
                    }
                }
                Some(Ok(node)) => match &node.content {
                    Content::Dir { tree: sub } => {
                        if let Some(v) = self.trees.get(sub) {
                            *clean &= *v;
                        } else {
                            match dir_entries(repo, *sub) {
                                Ok(e) => stack.push((*sub, e, true)),
                                Err(e) => {
                                    *clean = false;
                                    self.tree_failed(*sub, &e)?;
                                }
                            }
                        }
                    }
                    Content::File { .. } => {
                        let ok = self.file_ok(&node)?;
                        if let Some(top) = stack.last_mut() {
                            top.2 &= ok;
                        }
                    }
                    _ => {}
                },
            }
        }
        Ok(self.trees.get(&root).copied().unwrap_or(false))
    }

    fn tree_failed(&mut self, tree: TreeId, e: &Error) -> Result<bool> {
        if matches!(e, Error::Cache { .. }) {
            return Err(Error::Cache { path: PathBuf::new(), message: e.to_string() });
        }
        self.trees.insert(tree, false);
        self.referenced_bad.insert(tree.0);
        if let Error::Corrupt { object, .. } = e {
            match object {
                crate::error::ObjectRef::Tree(t) => {
                    self.referenced_bad.insert(t.0);
                }
                crate::error::ObjectRef::Blob { id, .. } => {
                    self.referenced_bad.insert(*id);
                }
                _ => {}
            }
        }
        match e {
            Error::BlobNotIndexed { id } if !self.damage.of_blob(id).is_empty() => {
                let packs: Vec<String> =
                    self.damage.of_blob(id).iter().map(|c| c.pack.short()).collect();
                let error = format!("its only copies are damaged (in pack {})", packs.join(", "));
                self.find(Finding::DamagedTree { tree, error });
            }
            Error::BlobNotIndexed { id } => {
                if self.bad_blobs.insert(*id) {
                    self.find(Finding::MissingBlob { blob: *id });
                }
            }
            _ => self.find(Finding::DamagedTree { tree, error: e.to_string() }),
        }
        Ok(false)
    }

    /// Names the paths of set `id` that damage reaches, descending only into damaged trees.
    fn affected(&mut self, id: SnapshotId, m: &Manifest) -> Result<()> {
        for c in &m.components {
            let Ok(node) = component_node(self.repo, c) else {
                self.find(Finding::Affected {
                    snapshot: id,
                    path: c.name.clone(),
                    cause: format!("tree {}", c.root),
                });
                continue;
            };
            let mut stack = vec![(c.name.clone(), node)];
            while let Some((path, node)) = stack.pop() {
                match &node.content {
                    Content::Dir { tree } => {
                        if self.trees.get(tree).copied().unwrap_or(true) {
                            continue;
                        }
                        match dir_entries(self.repo, *tree) {
                            Ok(entries) => {
                                for child in entries {
                                    match child {
                                        Ok(child) => {
                                            let p = format!("{path}/{}", escape_name(&child.name));
                                            stack.push((p, child));
                                        }
                                        Err(e) => {
                                            self.find(Finding::Affected {
                                                snapshot: id,
                                                path: path.clone(),
                                                cause: e.to_string(),
                                            });
                                            break;
                                        }
                                    }
                                }
                            }
                            Err(e) => self.find(Finding::Affected {
                                snapshot: id,
                                path,
                                cause: e.to_string(),
                            }),
                        }
                    }
                    Content::File { .. } if !self.file_ok(&node)? => {
                        self.find(Finding::Affected {
                            snapshot: id,
                            path,
                            cause: "file data lost or damaged".into(),
                        });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Packs read in parallel at a time; their findings are merged in order after each batch.
const READ_BATCH: usize = 64;

/// What reading one pack found.
struct PackRead {
    pack: PackId,
    /// The file was read.
    read: bool,
    /// The pack cannot be read, or its trailer no longer decodes: none of its blobs count.
    damaged: bool,
    blobs: u64,
    bad_blobs: Vec<DamagedCopy>,
    findings: Vec<Finding>,
}

/// Reads pack `pack` once, in order, and verifies every blob its trailer lists, and its content
/// hash.
fn read_pack(repo: &Repository, pack: PackId) -> PackRead {
    let mut r = PackRead {
        pack,
        read: false,
        damaged: false,
        blobs: 0,
        bad_blobs: Vec::new(),
        findings: Vec::new(),
    };
    let damaged = |r: &mut PackRead, error: String| {
        r.damaged = true;
        r.findings.push(Finding::DamagedPack { pack, error });
    };
    let verdict = match repo.verify_pack(pack) {
        Ok((_, v)) => v,
        Err(e) => {
            damaged(&mut r, e.to_string());
            return r;
        }
    };
    r.read = true;
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            damaged(&mut r, e.to_string());
            return r;
        }
    };
    r.blobs = verdict.entries.len() as u64;
    for (e, reason) in verdict.bad {
        r.bad_blobs.push(DamagedCopy { pack, blob: e.id, offset: e.offset });
        r.findings.push(Finding::DamagedBlob {
            pack,
            blob: e.id,
            offset: e.offset,
            error: reason.to_string(),
        });
    }
    if verdict.hash != pack.0 && r.bad_blobs.is_empty() {
        // Every blob verifies but the file does not hash to its name: bytes outside the blobs
        // (headers of no blob, padding) changed, or the pack was renamed. Its blobs still
        // read, so the pack is not counted as lost.
        r.findings.push(Finding::DamagedPack {
            pack,
            error: format!("content hashes to {}", verdict.hash),
        });
    }
    r
}

/// Checks the repository.
///
/// # Errors
/// Only when the check cannot run (the repository cannot be listed, the cache fails).
pub fn check(
    repo: &Repository,
    opts: &CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport> {
    // The repository's own bytes are checked, never this host's copies of its trees.
    repo.bypass_blob_cache();
    let mut c = Checker {
        repo,
        report: CheckReport::default(),
        bad_packs: HashSet::new(),
        bad_blobs: HashSet::new(),
        indexed: HashSet::new(),
        referenced_bad: HashSet::new(),
        trees: HashMap::new(),
        damage: DamageSet::default(),
    };
    let layout = repo.layout();
    let records = repo.damage_records()?;
    for (record, error) in records.unreadable {
        c.find(Finding::DamagedDamageRecord { record, error });
    }
    c.damage = records.set;
    let coverage = repo.coverage_records()?;
    for (record, error) in coverage.unreadable {
        c.find(Finding::UnreadableVerificationRecord { record, error });
    }
    let now = crate::time::now_ns().div_euclid(1_000_000_000);
    // Damaged copies found by this check, to record.
    let mut found: Vec<DamagedCopy> = Vec::new();

    if let Some(error) = repo.config_damage() {
        c.find(Finding::DamagedConfig { error: error.to_owned() });
    } else if repo.storage().read_named(crate::storage::Named::ConfigCopy).ok()
        != repo.storage().read_named(crate::storage::Named::Config).ok()
    {
        c.find(Finding::ConfigCopyMissing);
    }
    progress.phase("temp files");
    if let Ok(entries) = std::fs::read_dir(layout.tmp_dir()) {
        for e in entries.flatten() {
            c.find(Finding::TempFile { path: e.path() });
        }
    }

    progress.phase("index and packs");
    let mut indexed: HashSet<PackId> = HashSet::new();
    // Packs to read: id and length only (the entries come from each pack's own trailer when
    // it is read), so memory does not grow with the number of blobs.
    let mut to_read: Vec<(PackId, u64)> = Vec::new();
    for id in repo.list_index_files()? {
        let packs = match repo.load_index_file(id) {
            Ok(p) => p,
            Err(e) => {
                c.find(Finding::DamagedIndexFile { index: id, error: e.to_string() });
                continue;
            }
        };
        for pack in packs {
            if !indexed.insert(pack.id) {
                continue;
            }
            c.report.packs += 1;
            let actual = match repo.pack_len(pack.id) {
                Ok(len) => len,
                Err(_) => {
                    c.bad_packs.insert(pack.id);
                    c.find(Finding::MissingPack { pack: pack.id, index: id });
                    continue;
                }
            };
            if actual != pack.len {
                c.bad_packs.insert(pack.id);
                c.find(Finding::PackSize { pack: pack.id, expected: pack.len, actual });
                continue;
            }
            match repo.pack_reader(pack.id) {
                Ok(reader) if reader.entries() == pack.entries.as_slice() => {}
                Ok(_) => {
                    c.bad_packs.insert(pack.id);
                    c.find(Finding::TrailerMismatch { pack: pack.id, index: id });
                    continue;
                }
                Err(e) => {
                    c.bad_packs.insert(pack.id);
                    c.find(Finding::DamagedPack { pack: pack.id, error: e.to_string() });
                    // Its trailer is unreadable: none of its blobs can be trusted.
                    found.extend(pack.entries.iter().map(|e| DamagedCopy {
                        pack: pack.id,
                        blob: e.id,
                        offset: e.offset,
                    }));
                    continue;
                }
            }
            if in_slice(&pack.id, opts.read_data) {
                to_read.push((pack.id, pack.len));
            }
        }
    }
    for pack in repo.list_packs()? {
        if !indexed.contains(&pack) {
            c.find(Finding::UnindexedPack { pack });
        }
    }
    c.indexed = indexed;
    if let DataCheck::Due { max_age, max_bytes } = opts.read_data {
        let max_age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        let due = coverage.coverage.due(&to_read, now, max_age, None);
        c.report.due = (due.len() as u64, due.iter().map(|p| p.1).sum());
        to_read = coverage.coverage.due(&to_read, now, max_age, max_bytes);
    }
    drop(coverage.coverage);

    let mut read_packs: HashSet<PackId> = HashSet::new();
    // Packs read whole and found intact: recorded as verified (also when interrupted).
    let mut verified: Vec<PackId> = Vec::new();
    if opts.read_data != DataCheck::None {
        progress.phase("reading data");
        progress.set_total(to_read.len() as u64, to_read.iter().map(|p| p.1).sum());
        // Packs are read and verified on every core, a batch at a time; what each found is
        // merged in pack order, so the report does not depend on thread timing.
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::InvalidOption { option: "threads", reason: e.to_string() })?;
        for batch in to_read.chunks(READ_BATCH) {
            if progress.interrupted() {
                if opts.record && !verified.is_empty() {
                    // What was read stays read: the next run goes on from there.
                    let _ = repo.record_verified(&verified, now);
                }
                return Err(Error::Interrupted);
            }
            let read: Vec<PackRead> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|&(pack, len)| {
                        let r = read_pack(repo, pack);
                        progress.add_items(1);
                        progress.add_bytes(len);
                        r
                    })
                    .collect()
            });
            for r in read {
                c.report.blobs_read += r.blobs;
                c.report.packs_read += u64::from(r.read);
                read_packs.insert(r.pack);
                if r.read && !r.damaged && r.findings.is_empty() {
                    verified.push(r.pack);
                }
                found.extend(r.bad_blobs);
                if r.damaged {
                    c.bad_packs.insert(r.pack);
                }
                c.report.findings.extend(r.findings);
            }
        }
    }

    // Damage recorded by earlier checks, in packs this one did not read again.
    for copy in c.damage.copies() {
        if c.indexed.contains(&copy.pack) && !read_packs.contains(&copy.pack) {
            c.find(Finding::DamagedBlob {
                pack: copy.pack,
                blob: copy.blob,
                offset: copy.offset,
                error: "recorded as damaged by an earlier check".into(),
            });
        }
    }
    // Record what was found, before the sets are checked: the cache then passes those copies by
    // (it is rebuilt when it opens and meets a new record), so a blob that has an intact copy
    // elsewhere is found there, and one that has none counts as lost for the sets using it.
    for copy in &found {
        c.damage.insert(*copy);
    }
    if opts.record && !found.is_empty() {
        match repo.record_damage(&found) {
            Ok(n) => c.report.damage_recorded = n,
            Err(e) => c.report.record_error = Some(e.to_string()),
        }
    }
    if opts.record && !verified.is_empty() {
        match repo.record_verified(&verified, now) {
            Ok(_) => c.report.verified_recorded = verified.len() as u64,
            Err(e) => c.report.coverage_error = Some(e.to_string()),
        }
    }

    progress.phase("sets");
    let mut sets = Vec::new();
    for listed in repo.list_snapshots()? {
        match listed.manifest {
            Ok(m) => sets.push((listed.id, m)),
            Err(e) => {
                c.find(Finding::DamagedSnapshot { snapshot: listed.id, error: e.to_string() })
            }
        }
    }
    let mut damaged_sets = Vec::new();
    for (id, m) in &sets {
        if progress.interrupted() {
            return Err(Error::Interrupted);
        }
        c.report.snapshots += 1;
        let mut clean = true;
        for comp in &m.components {
            clean &= c.check_tree(comp.root)?;
        }
        if !clean {
            damaged_sets.push((*id, m));
        }
    }
    for (id, m) in damaged_sets {
        c.affected(id, m)?;
    }
    // Damage in blobs that no set uses does not hurt any set: report it as a notice.
    let referenced = std::mem::take(&mut c.referenced_bad);
    for f in &mut c.report.findings {
        if let Finding::DamagedBlob { pack, blob, error, .. } = f {
            if !referenced.contains(blob) {
                *f = Finding::UnusedDamagedBlob {
                    pack: *pack,
                    blob: *blob,
                    error: std::mem::take(error),
                };
            }
        }
    }
    Ok(c.report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::testing::{flip, noise, reopen, repo_with, snap};

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![("big.bin".into(), noise(1, 600_000)), ("small.txt".into(), b"hello".to_vec())]
    }

    fn run(repo: &Repository, read_data: DataCheck) -> CheckReport {
        check(repo, &CheckOptions { read_data, record: true }, &NoProgress).unwrap()
    }

    fn kinds(r: &CheckReport) -> Vec<&'static str> {
        r.findings
            .iter()
            .map(|f| match f {
                Finding::DamagedBlob { .. } => "damaged_blob",
                Finding::UnusedDamagedBlob { .. } => "unused_damaged_blob",
                Finding::Affected { .. } => "affected",
                Finding::MissingPack { .. } => "missing_pack",
                Finding::UnindexedPack { .. } => "unindexed_pack",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_healthy_repository_has_no_findings_with_or_without_reading_data() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        for data in [DataCheck::None, DataCheck::All] {
            let r = run(&repo, data);
            assert!(r.findings.is_empty(), "{:?}", r.findings);
            assert_eq!(r.snapshots, 1);
        }
        assert!(run(&repo, DataCheck::All).blobs_read >= 3);
    }

    // See: issue 12, defect 3: what check finds is recorded, and a later set heals the blob.
    #[test]
    fn a_damaged_blob_is_named_traced_to_its_path_recorded_and_healed_by_a_new_set() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        let pack = repo.list_packs().unwrap()[0];
        let reader = repo.pack_reader(pack).unwrap();
        let e = reader.entries().iter().find(|e| e.stored_len > 1000).copied().unwrap();
        flip(&repo.layout().pack(pack), e.offset + 100);
        let r = run(&repo, DataCheck::All);
        assert!(r.is_damaged());
        assert!(
            kinds(&r).contains(&"damaged_blob") && kinds(&r).contains(&"affected"),
            "{:?}",
            r.findings
        );
        assert!(r
            .findings
            .iter()
            .any(|f| matches!(f, Finding::Affected { path, .. } if path == "data/big.bin")));
        assert_eq!(r.damage_recorded, 1);
        assert_eq!(repo.damage().unwrap().len(), 1);
        // Structure-only check (a new process): the recorded damage is still reported.
        drop(repo);
        let repo = reopen(dir.path());
        assert!(run(&repo, DataCheck::None).is_damaged());
        // A new set stores the chunk anew: nothing needs the damaged copy any more.
        snap(&repo, dir.path());
        drop(repo);
        let repo = reopen(dir.path());
        let r = run(&repo, DataCheck::All);
        assert!(!r.is_damaged(), "{:?}", r.findings);
        assert!(kinds(&r).contains(&"unused_damaged_blob"));
    }

    // See: issue 20 ("verified coverage").
    #[test]
    fn checks_record_what_they_verified_and_a_due_check_reads_the_rest_oldest_first() {
        use crate::storage::ObjectDir;
        const DAY: u64 = 86_400;
        let due = |days: u64, max_bytes: Option<u64>| DataCheck::Due {
            max_age: std::time::Duration::from_secs(days * DAY),
            max_bytes,
        };
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        for seed in 2..4 {
            #[allow(clippy::disallowed_methods, reason = "a source file")]
            std::fs::write(dir.path().join(format!("src/more{seed}.bin")), noise(seed, 300_000))
                .unwrap();
            snap(&repo, dir.path());
        }
        let mut packs = repo.list_packs().unwrap();
        packs.sort();
        let n = packs.len() as u64;
        assert!(n >= 3, "a pack per set");
        // Nothing recorded: every pack is due, and is recorded once read.
        let r = run(&repo, due(30, None));
        assert_eq!((r.due.0, r.packs_read, r.verified_recorded), (n, n, n));
        let r = run(&repo, due(30, None));
        assert_eq!((r.due, r.packs_read), ((0, 0), 0), "verified within 30 days: none due");
        assert!(r.findings.is_empty(), "{:?}", r.findings);
        assert_eq!(run(&repo, due(0, None)).packs_read, n, "a max age of 0: every pack");
        assert_eq!(repo.storage().list(ObjectDir::Verified).unwrap().len(), 1, "merged");

        // Older records: packs[0] 40 days ago, packs[1] 60 days ago, the rest yesterday.
        let now = crate::time::now_ns() / 1_000_000_000;
        let ids = repo.storage().list(ObjectDir::Verified).unwrap();
        repo.storage().remove(ObjectDir::Verified, &ids).unwrap();
        let day = DAY as i64;
        repo.record_verified(&packs[2..], now - day).unwrap();
        repo.record_verified(&packs[..1], now - 40 * day).unwrap();
        repo.record_verified(&packs[1..2], now - 60 * day).unwrap();
        let at = |p: &PackId| repo.coverage_records().unwrap().coverage.get(p).unwrap();
        // A bound of one byte reads one pack: the least recently verified.
        let r = run(&repo, due(30, Some(1)));
        assert_eq!((r.due.0, r.packs_read), (2, 1));
        assert!(at(&packs[1]) >= now, "the 60-day-old pack is read first");
        assert_eq!(at(&packs[0]), now - 40 * day);
        assert_eq!(run(&repo, due(30, None)).packs_read, 1);
        assert!(at(&packs[0]) >= now);
        assert_eq!(run(&repo, due(30, None)).packs_read, 0);

        // A pack found damaged is not recorded as verified.
        let ids = repo.storage().list(ObjectDir::Verified).unwrap();
        repo.storage().remove(ObjectDir::Verified, &ids).unwrap();
        repo.record_verified(&packs, now - 10 * day).unwrap();
        let bad = packs
            .iter()
            .copied()
            .find(|p| repo.pack_reader(*p).unwrap().entries().iter().any(|e| e.stored_len > 1000))
            .unwrap();
        let e =
            repo.pack_reader(bad).unwrap().entries().iter().find(|e| e.stored_len > 1000).copied();
        flip(&repo.layout().pack(bad), e.unwrap().offset + 100);
        let r = run(&repo, due(0, None));
        assert!(r.is_damaged());
        assert_eq!(r.verified_recorded, n - 1);
        assert_eq!(at(&bad), now - 10 * day, "the damaged pack keeps its old time");
        assert!(packs.iter().filter(|p| **p != bad).all(|p| at(p) >= now));

        // An unreadable record is a notice; its packs count as never verified.
        let junk = Id::hash(b"junk");
        repo.storage()
            .write(ObjectDir::Verified, junk, b"junk", crate::storage::WriteMode::Replace, "t")
            .unwrap();
        let r = run(&repo, DataCheck::None);
        let notice = r
            .findings
            .iter()
            .find(|f| matches!(f, Finding::UnreadableVerificationRecord { .. }))
            .unwrap();
        assert!(!notice.is_damage());
        assert!(notice.to_string().contains(&junk.to_string()), "{notice}");
    }

    /// Interrupted once `after` packs were read.
    struct StopAfter {
        read: std::sync::atomic::AtomicU64,
        after: u64,
    }

    impl Progress for StopAfter {
        fn add_items(&self, n: u64) {
            self.read.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
        fn interrupted(&self) -> bool {
            self.read.load(std::sync::atomic::Ordering::SeqCst) >= self.after
        }
    }

    // See: issue 20 ("a nightly run covers the whole repository within a month"): a check
    // stopped by the operator keeps what it verified before it stopped.
    #[test]
    fn an_interrupted_check_records_the_packs_it_read_before_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..80u64 {
            #[allow(clippy::disallowed_methods, reason = "a source file")]
            std::fs::write(src.join(format!("f{i}")), noise(100 + i, 1_200_000)).unwrap();
        }
        let opts = crate::repo::InitOptions {
            pack_target: Some(1 << 20),
            ..crate::repo::InitOptions::default()
        };
        let repo = Repository::init(&dir.path().join("repo"), &opts).unwrap();
        snap(&repo, dir.path());
        let n = repo.list_packs().unwrap().len() as u64;
        assert!(n > READ_BATCH as u64, "{n} packs: more than one batch");
        let stop = StopAfter { read: 0.into(), after: 1 };
        let due =
            DataCheck::Due { max_age: std::time::Duration::from_secs(86_400), max_bytes: None };
        let stopped = check(&repo, &CheckOptions { read_data: due, record: true }, &stop);
        assert!(matches!(stopped, Err(Error::Interrupted)), "{stopped:?}");
        let recorded = repo.coverage_records().unwrap().coverage.len() as u64;
        assert_eq!(recorded, READ_BATCH as u64, "the first batch was read and recorded");
        // The next run reads only the rest.
        let r = run(&repo, due);
        assert_eq!((r.due.0, r.packs_read), (n - recorded, n - recorded));
        assert_eq!(run(&repo, due).packs_read, 0);
    }

    #[test]
    fn a_missing_pack_is_named_with_what_it_takes_and_an_unindexed_one_is_a_notice() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo_with(dir.path(), &files());
        let pack = repo.list_packs().unwrap()[0];
        let path = repo.layout().pack(pack);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let r = run(&repo, DataCheck::None);
        assert!(kinds(&r).contains(&"missing_pack") && kinds(&r).contains(&"affected"));
        // Put it back under another name no index lists: a notice only.
        let other = PackId(Id::hash(b"somewhere else"));
        std::fs::create_dir_all(repo.layout().pack(other).parent().unwrap()).unwrap();
        #[allow(clippy::disallowed_methods, reason = "planting a stray pack")]
        std::fs::write(repo.layout().pack(other), &bytes).unwrap();
        #[allow(clippy::disallowed_methods, reason = "restoring the pack")]
        std::fs::write(&path, &bytes).unwrap();
        let r = run(&repo, DataCheck::None);
        assert!(!r.is_damaged(), "{:?}", r.findings);
        assert_eq!(kinds(&r), vec!["unindexed_pack"]);
    }
}
