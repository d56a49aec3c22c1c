//! `repair packs`: moves the intact blobs out of damaged packs, then removes those packs.
//!
//! Order, so that a crash at any point loses nothing that was intact: (1) every blob of the
//! damaged packs that verifies, and has no intact copy elsewhere, is copied into new packs,
//! verified and durable; (2) new index files listing every pack but the damaged ones (and the new
//! ones) are written, then the old index files removed; (3) only then are the damaged packs
//! deleted and their damage records dropped. A crash before (2) leaves unindexed new packs
//! (removed by prune); between (2) and (3), unindexed damaged packs (removed by prune).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use crate::index::IndexedPack;
use crate::pack::{salvage_blobs, EncodedBlob, PackEntry, PackWriter, BLOB_HEADER_LEN};
use crate::progress::Progress;
use crate::repo::{IndexRewrite, Repository};

/// What to repair.
#[derive(Debug, Clone, Default)]
pub struct RepairPacksOptions {
    /// These packs; when empty, every pack with recorded damage (`check --read-data` records it).
    pub packs: Vec<PackId>,
    /// Report what would be done, write nothing.
    pub dry_run: bool,
}

/// What became of one damaged pack.
#[derive(Debug, Clone)]
pub struct RepairedPack {
    /// The pack.
    pub pack: PackId,
    /// Blobs that verified and were copied into new packs.
    pub salvaged: u64,
    /// Blobs that could not be salvaged but have a copy in a pack that stays (not lost).
    pub elsewhere: u64,
    /// Blobs its index entries list that could not be salvaged: lost, unless stored again by a
    /// later snapshot.
    pub lost: Vec<Id>,
}

/// What `repair packs` did.
#[derive(Debug, Clone, Default)]
pub struct RepairPacksReport {
    /// The damaged packs, each removed once its intact blobs were safe.
    pub packs: Vec<RepairedPack>,
    /// New packs written.
    pub packs_written: u64,
}

/// Repairs damaged packs (see the module documentation). The caller holds the exclusive lock.
///
/// # Errors
/// [`Error::InvalidOption`] naming a pack that is not in the repository; repository errors.
pub fn repair_packs(
    repo: &Repository,
    opts: &RepairPacksOptions,
    progress: &dyn Progress,
) -> Result<RepairPacksReport> {
    repo.prepare_write()?;
    let damage = repo.damage()?;
    let mut targets: Vec<PackId> = if opts.packs.is_empty() {
        damage.copies().iter().map(|c| c.pack).collect()
    } else {
        opts.packs.clone()
    };
    targets.sort();
    targets.dedup();
    if let Some(missing) = opts.packs.iter().find(|p| repo.pack_len(**p).is_err()) {
        return Err(Error::InvalidOption {
            option: "pack",
            reason: format!("pack {missing} is not in the repository"),
        });
    }
    targets.retain(|p| repo.pack_len(*p).is_ok());
    let target_set: HashSet<PackId> = targets.iter().copied().collect();
    // What the index says each damaged pack holds (its trailer may be what is damaged).
    let mut listed: HashMap<PackId, Vec<PackEntry>> = HashMap::new();
    for index in repo.list_index_files()? {
        for pack in repo.load_index_file(index)? {
            if target_set.contains(&pack.id) {
                listed.entry(pack.id).or_insert(pack.entries);
            }
        }
    }
    let index = repo.index()?;
    let mut report = RepairPacksReport::default();
    let mut new_packs: Vec<IndexedPack> = Vec::new();
    let mut writer: Option<PackWriter> = None;
    let mut copied: HashSet<Id> = HashSet::new();
    for pack in &targets {
        progress.phase(&format!("salvaging {}", pack.short()));
        let path = repo.pack_path(*pack);
        let file = repo.storage().open_pack(pack.0)?;
        let mut repaired =
            RepairedPack { pack: *pack, salvaged: 0, elsewhere: 0, lost: Vec::new() };
        let mut intact: HashSet<Id> = HashSet::new();
        salvage_blobs(repo.crypto(), file.as_ref(), &path, |entry, frame| {
            intact.insert(entry.id);
            // Every intact blob is copied, even when the cache knows another copy: that copy's
            // pack may be damaged too, and a second copy is harmless (prune reclaims it).
            if !copied.insert(entry.id) {
                return Ok(());
            }
            repaired.salvaged += 1;
            if opts.dry_run {
                return Ok(());
            }
            let stored = frame.get(BLOB_HEADER_LEN..).unwrap_or_default();
            let blob =
                EncodedBlob::from_stored(entry.id, entry.kind, entry.codec, entry.raw_len, stored);
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(repo.new_pack()?),
            };
            w.add(&blob)?;
            if w.len() >= u64::from(repo.config().pack_target) {
                if let Some(w) = writer.take() {
                    new_packs.push(seal(repo, w)?);
                }
            }
            Ok(())
        })?;
        for e in listed.get(pack).map_or(&[][..], Vec::as_slice) {
            if intact.contains(&e.id) || copied.contains(&e.id) {
                continue;
            }
            // Not salvaged here: lost, unless an intact copy lies in a pack that stays.
            let elsewhere = match index.get(&e.id)? {
                Some(l) if !target_set.contains(&l.pack) => {
                    let actual = repo.pack_len(l.pack);
                    actual.ok().is_some_and(|a| index.pack_len(&l.pack).ok().flatten() == Some(a))
                }
                _ => false,
            };
            if elsewhere {
                repaired.elsewhere += 1;
            } else {
                repaired.lost.push(e.id);
            }
        }
        report.packs.push(repaired);
    }
    if opts.dry_run || targets.is_empty() {
        return Ok(report);
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty()) {
        new_packs.push(seal(repo, w)?);
    }
    report.packs_written = new_packs.len() as u64;
    crate::crash::point("repair_packs", "salvaged");

    let mut rewrite = IndexRewrite::begin(repo)?;
    let mut kept: HashSet<PackId> = HashSet::new();
    for pack in new_packs {
        kept.insert(pack.id);
        rewrite.add(pack)?;
    }
    for old in rewrite.old().to_vec() {
        for pack in repo.load_index_file(old)? {
            if !target_set.contains(&pack.id) && kept.insert(pack.id) {
                rewrite.add(pack)?;
            }
        }
    }
    rewrite.write()?;
    crate::crash::point("repair_packs", "index_written");
    rewrite.remove_old()?;
    let gone: Vec<PackId> = targets.iter().copied().filter(|p| !kept.contains(p)).collect();
    repo.remove_packs(&gone)?;
    // The records of the repaired packs go, whether a pack is gone or was written again intact
    // under its own name (a pack whose trailer alone was damaged comes out byte for byte as it
    // was written).
    repo.rewrite_damage(|c| !target_set.contains(&c.pack))?;
    Ok(report)
}

fn seal(repo: &Repository, w: PackWriter) -> Result<IndexedPack> {
    let sealed = repo.seal_pack(w)?;
    Ok(IndexedPack { id: sealed.id, len: sealed.len, entries: sealed.entries })
}
