//! Adopting the packs of an interrupted writer (FORMAT.md §11).
//!
//! A snapshot killed with no chance to clean up (SIGKILL, a power cut) leaves sealed, durable
//! packs that no index file lists yet. Before reading anything, the next writer indexes those
//! whose every blob verifies, so what they hold is not written again: an interrupted first
//! backup of a large content store resumes where it stopped. What nothing uses is deleted by
//! prune, as before.
//!
//! Only packs no live process can still own are adopted: the packs are listed first, then the
//! locks, and nothing is adopted while another process holds a lock that is neither stale nor
//! dead (a writer that started after the listing owns none of the packs listed; one that was
//! running holds its lock, and may still index or remove its own packs). A writer whose lock went
//! stale while paused removes nothing when it resumes (its lock check fails), so a pack adopted
//! from it stays. (This relies on writers holding the shared lock while they write, as the `store`
//! command does.)

use crate::error::{IoContext, Result};
use crate::id::PackId;
use crate::index::IndexedPack;
use crate::progress::Progress;
use crate::repo::Repository;

/// Blobs per index file written for adopted packs (as writers flush theirs).
const ADOPT_FLUSH_BLOBS: usize = 50_000;

/// What adoption did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Adopted {
    /// Packs indexed.
    pub(crate) packs: u64,
    /// Packs left alone because they do not verify (prune removes them).
    pub(crate) refused: u64,
}

/// This process, marked as a writer in the local directory of a repository in object storage
/// (`tmp/writer-<pid>.run`) until dropped; a mark left behind is a writer of this host that was
/// killed.
pub(crate) struct WriterMark {
    /// None for a local repository, whose packs are listed at every snapshot anyway.
    path: Option<std::path::PathBuf>,
    /// Whether a writer of this host was killed since the last run.
    pub(crate) killed_before: bool,
}

impl WriterMark {
    /// Marks this process, and looks for marks of writers that no longer run (removed).
    pub(crate) fn set(repo: &Repository) -> Result<Self> {
        if repo.storage().lists_cheaply() {
            return Ok(WriterMark { path: None, killed_before: false });
        }
        let tmp = repo.layout().tmp_dir();
        let mut killed_before = false;
        for entry in std::fs::read_dir(&tmp).at(&tmp)?.flatten() {
            let name = entry.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.strip_prefix("writer-"))
                .and_then(|n| n.strip_suffix(".run"))
                .and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|p| !crate::repo::process_exists(p)) {
                killed_before = true;
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let path = tmp.join(format!("writer-{}.run", std::process::id()));
        std::fs::File::create(&path).at(&path)?;
        Ok(WriterMark { path: Some(path), killed_before })
    }
}

impl Drop for WriterMark {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Indexes the unindexed packs that verify, when no other live process holds a lock. Where
/// listing every pack costs requests (object storage), only after a writer of this host was
/// killed (`killed_before`): the packs of another host's killed writer wait for that host's
/// next run, or prune.
pub(crate) fn adopt_packs(
    repo: &Repository,
    progress: &dyn Progress,
    killed_before: bool,
) -> Result<Adopted> {
    if !killed_before && !repo.storage().lists_cheaply() {
        return Ok(Adopted::default());
    }
    let index = repo.index()?;
    let mut orphans: Vec<PackId> = Vec::new();
    for pack in repo.list_packs()? {
        if index.pack_len(&pack)?.is_none() {
            orphans.push(pack);
        }
    }
    let mut done = Adopted::default();
    if orphans.is_empty() || repo.others_hold_locks()? {
        return Ok(done);
    }
    progress.phase("adopting packs of an interrupted run");
    orphans.sort();
    let mut pending: Vec<IndexedPack> = Vec::new();
    let mut pending_blobs = 0usize;
    for pack in orphans {
        if progress.interrupted() {
            return Err(crate::error::Error::Interrupted);
        }
        // Read whole, as `check --read-data` does: every blob and the pack's own hash.
        let verdict = repo.verify_pack(pack).ok().and_then(|(len, v)| v.ok().map(|v| (len, v)));
        match verdict {
            Some((len, v)) if v.bad.is_empty() && v.hash == pack.0 => {
                pending_blobs += v.entries.len();
                pending.push(IndexedPack { id: pack, len, entries: v.entries });
                done.packs += 1;
            }
            _ => done.refused += 1,
        }
        if pending_blobs >= ADOPT_FLUSH_BLOBS {
            repo.save_index_file(&std::mem::take(&mut pending))?;
            pending_blobs = 0;
        }
    }
    if !pending.is_empty() {
        repo.save_index_file(&pending)?;
    }
    Ok(done)
}
