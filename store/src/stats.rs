//! Repository statistics (`store stats`): size on disk, raw size of the sets, dedup and
//! compression ratios, and per set the bytes it alone holds (what forgetting it would free).
//!
//! Every set is walked once; for each blob a temporary RocksDB records how many sets reference
//! it and which one last did, so memory stays bounded whatever the number of blobs.

use std::path::PathBuf;

use rocksdb::{Options, DB};

use crate::error::{Error, Result};
use crate::id::{Id, SnapshotId};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::storage::ObjectDir;
use crate::vfs::{walk_blobs, BlobSize};

/// Statistics of one set.
#[derive(Debug, Clone, Default)]
pub struct SetStats {
    /// The set.
    pub id: SnapshotId,
    /// Bytes of file content in it.
    pub bytes_source: u64,
    /// Stored bytes of blobs no other set references: what forgetting it (and pruning) frees.
    pub bytes_unique: u64,
}

/// Statistics of a repository.
#[derive(Debug, Clone, Default)]
pub struct RepoStats {
    /// Bytes of packs, index files and manifests on disk.
    pub bytes_on_disk: u64,
    /// Pack files.
    pub packs: u64,
    /// Distinct blobs referenced by the sets.
    pub blobs: u64,
    /// Sets.
    pub sets: u64,
    /// Sum over the sets of their file bytes.
    pub bytes_source: u64,
    /// Stored bytes of the distinct blobs the sets reference.
    pub bytes_stored: u64,
    /// Raw (uncompressed) bytes of the distinct data chunks the sets reference.
    pub bytes_unique_raw: u64,
    /// Per set, newest first.
    pub per_set: Vec<SetStats>,
    /// Bytes of packs by when `check` last read and verified them (FORMAT.md §8.4).
    pub coverage: crate::coverage::CoverageSummary,
}

/// The bytes of the objects of `dirs`, as the storage lists them (an object gone meanwhile
/// counts nothing).
fn stored_bytes(repo: &Repository, dirs: &[ObjectDir]) -> Result<u64> {
    let mut total = 0;
    for &dir in dirs {
        for id in repo.storage().list(dir)? {
            total += repo.storage().size(dir, id).unwrap_or(0);
        }
    }
    Ok(total)
}

/// Reference counts per blob: `count u32 (saturating at 2) || last set u32 || stored u64 ||
/// raw u64`.
const VALUE_LEN: usize = 24;

struct Counts {
    db: Option<DB>,
    path: PathBuf,
}

impl Counts {
    fn open(path: PathBuf) -> Result<Self> {
        let _ = std::fs::remove_dir_all(&path);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        let db = DB::open(&opts, &path)
            .map_err(|e| Error::Cache { path: path.clone(), message: e.into_string() })?;
        Ok(Counts { db: Some(db), path })
    }

    fn db(&self) -> Result<&DB> {
        self.db.as_ref().ok_or(Error::Cancelled)
    }

    /// Records that set `set` references `id`; true the first time this set does.
    fn visit(&self, id: Id, set: u32, size: BlobSize) -> Result<bool> {
        let db = self.db()?;
        let err =
            |e: rocksdb::Error| Error::Cache { path: self.path.clone(), message: e.into_string() };
        let (count, last) = match db.get_pinned(id.as_bytes()).map_err(err)? {
            Some(v) if v.len() == VALUE_LEN => {
                let count = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                let last = u32::from_le_bytes([v[4], v[5], v[6], v[7]]);
                (count, Some(last))
            }
            _ => (0, None),
        };
        if last == Some(set) {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(VALUE_LEN);
        value.extend_from_slice(&(count + 1).min(2).to_le_bytes());
        value.extend_from_slice(&set.to_le_bytes());
        value.extend_from_slice(&size.stored.to_le_bytes());
        value.extend_from_slice(&size.raw.to_le_bytes());
        db.put(id.as_bytes(), value).map_err(err)?;
        Ok(true)
    }
}

impl Drop for Counts {
    fn drop(&mut self) {
        drop(self.db.take());
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Computes the statistics of `repo`.
///
/// # Errors
/// A set that cannot be read completely; cache and I/O errors.
pub fn stats(repo: &Repository, progress: &dyn Progress) -> Result<RepoStats> {
    let layout = repo.layout();
    let mut st = RepoStats {
        bytes_on_disk: stored_bytes(repo, &[ObjectDir::Index, ObjectDir::Snapshots])?,
        ..RepoStats::default()
    };
    let verified = repo.coverage_records()?.coverage;
    let now = crate::time::now_ns().div_euclid(1_000_000_000);
    for pack in repo.list_packs()? {
        // A pack gone meanwhile counts nothing.
        let len = repo.pack_len(pack).unwrap_or(0);
        st.packs += 1;
        st.bytes_on_disk += len;
        st.coverage.add(len, verified.get(&pack), now);
    }
    drop(verified);
    // Fails only on a read-only repository, whose scratch goes elsewhere (below).
    let _ = repo.prepare_write();
    // A read-only repository keeps its scratch database in the system's temp directory.
    let counts = match Counts::open(layout.scratch("stats")) {
        Ok(c) => c,
        Err(_) => {
            Counts::open(std::env::temp_dir().join(format!("store-stats-{}", std::process::id())))?
        }
    };
    let mut sets: Vec<(SnapshotId, crate::snapshot::Manifest)> = repo
        .list_snapshots()?
        .into_iter()
        .filter_map(|s| s.manifest.ok().map(|m| (s.id, m)))
        .collect();
    sets.sort_by_key(|(id, m)| std::cmp::Reverse((m.time_ns, *id)));
    for (n, (id, m)) in sets.iter().enumerate() {
        progress.phase(&id.short());
        let set = u32::try_from(n).unwrap_or(u32::MAX);
        walk_blobs(repo, *id, m, &mut |blob, size| counts.visit(blob, set, size))?;
        st.bytes_source += m.counts.bytes_source;
        st.per_set.push(SetStats { id: *id, bytes_source: m.counts.bytes_source, bytes_unique: 0 });
    }
    st.sets = sets.len() as u64;
    for item in counts.db()?.iterator(rocksdb::IteratorMode::Start) {
        let (_, v) =
            item.map_err(|e| Error::Cache { path: counts.path.clone(), message: e.into_string() })?;
        let mut r = crate::format::ByteReader::new(&v, 0);
        let (Ok(count), Ok(last), Ok(stored), Ok(raw)) = (r.u32(), r.u32(), r.u64(), r.u64())
        else {
            continue;
        };
        let last = last as usize;
        st.blobs += 1;
        st.bytes_stored += stored;
        st.bytes_unique_raw += raw;
        if count == 1 {
            if let Some(s) = st.per_set.get_mut(last) {
                s.bytes_unique += stored;
            }
        }
    }
    Ok(st)
}
