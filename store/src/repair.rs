//! Repairs: `repair index` rebuilds the index files and the cache from the pack trailers.
//!
//! Order, so that a crash at any point leaves a usable repository: (1) new index files are
//! written durably, listing every pack whose trailer reads back; (2) only then are the old index
//! files removed; (3) the cache is deleted and rebuilt from the new files. A crash after (1)
//! leaves old and new files side by side, which is harmless (the same blobs listed twice); the
//! next `repair index` finishes the job.

use crate::error::{IoContext, Result};
use crate::fs::fsync_dir;
use crate::id::{IndexId, PackId};
use crate::index::IndexedPack;
use crate::pack::PackReader;
use crate::progress::Progress;
use crate::repo::Repository;

/// Index files hold at most this many blobs.
const INDEX_FILE_BLOBS: usize = 50_000;

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
    let mut report = RepairIndexReport::default();
    let old: Vec<IndexId> = repo.list_index_files()?;
    let packs = repo.list_packs()?;
    progress.set_total(packs.len() as u64, 0);
    let mut written: Vec<IndexId> = Vec::new();
    let mut pending: Vec<IndexedPack> = Vec::new();
    let mut pending_blobs = 0usize;
    for pack in packs {
        progress.add_items(1);
        match PackReader::open(&repo.layout().pack(pack), pack) {
            Ok(reader) => {
                report.packs += 1;
                report.blobs += reader.entries().len() as u64;
                pending_blobs += reader.entries().len();
                pending.push(IndexedPack {
                    id: pack,
                    len: reader.len(),
                    entries: reader.entries().to_vec(),
                });
            }
            Err(e) => report.unreadable.push(UnreadablePack { pack, error: e.to_string() }),
        }
        if pending_blobs >= INDEX_FILE_BLOBS {
            written.push(repo.write_index_file(&pending)?);
            pending.clear();
            pending_blobs = 0;
        }
    }
    if !pending.is_empty() {
        written.push(repo.write_index_file(&pending)?);
    }
    report.index_files_written = written.len() as u64;
    crate::crash::point("repair_index", "new_files");
    for id in old.iter().filter(|id| !written.contains(id)) {
        let path = repo.layout().index_file(*id);
        std::fs::remove_file(&path).at(&path)?;
        report.index_files_removed += 1;
    }
    fsync_dir(&repo.layout().index_dir())?;
    let cache = repo.cache_dir();
    if cache.exists() {
        std::fs::remove_dir_all(cache).at(cache)?;
    }
    repo.index()?;
    Ok(report)
}
