//! Reading and writing damage records (`damage/<id>`, FORMAT.md §8.3).
//!
//! Anyone may add a record (it is a new file, written atomically; `check` does so under a shared
//! lock). Only a holder of the exclusive lock rewrites them (prune and `repair packs`, once the
//! packs they name are gone), new file first, then the old ones removed, as index files are.

use crate::damage::{decode_damage_file, encode_damage_file, DamageSet, DamagedCopy};
use crate::error::{Error, ObjectRef, Result};
use crate::id::{DamageId, Id};
use crate::repo::Repository;
use crate::storage::ObjectDir;

impl Repository {
    /// The ids of every damage record (none when the repository has no `damage/` directory).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory exists but cannot be listed.
    pub fn list_damage_files(&self) -> Result<Vec<DamageId>> {
        Ok(self.storage().list(ObjectDir::Damage)?.into_iter().map(DamageId).collect())
    }

    /// Reads and verifies one damage record.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the record.
    pub fn load_damage_file(&self, id: DamageId) -> Result<Vec<DamagedCopy>> {
        let plain = self.read_sealed(
            ObjectDir::Damage,
            id.0,
            crate::damage::MAX_DAMAGE_FILE_LEN,
            crate::crypto::FileKind::Damage,
            ObjectRef::DamageFile(id),
        )?;
        decode_damage_file(&plain)
            .map_err(|reason| Error::corrupt(ObjectRef::DamageFile(id), reason))
    }

    /// Every damaged copy the readable records name, and the ids of those records. A record
    /// that cannot be read is left out (records only make readers more careful; every blob read
    /// is verified anyway) and returned with its error.
    ///
    /// # Errors
    /// [`Error::Io`] when `damage/` cannot be listed.
    pub fn damage_records(&self) -> Result<DamageRecords> {
        let mut records = DamageRecords::default();
        for id in self.list_damage_files()? {
            match self.load_damage_file(id) {
                Ok(copies) => {
                    for c in copies {
                        records.set.insert(c);
                    }
                    records.read.push(id);
                }
                Err(e) => records.unreadable.push((id, e.to_string())),
            }
        }
        Ok(records)
    }

    /// Every damaged copy the readable records name.
    ///
    /// # Errors
    /// As [`Repository::damage_records`].
    pub fn damage(&self) -> Result<DamageSet> {
        Ok(self.damage_records()?.set)
    }

    /// Records `copies` as damaged (those not recorded yet) in a new record; returns how many
    /// were new. Takes effect in every cache on its next open.
    ///
    /// # Errors
    /// [`Error::Io`] when the record cannot be written.
    pub fn record_damage(&self, copies: &[DamagedCopy]) -> Result<u64> {
        let known = self.damage()?;
        let mut new: Vec<DamagedCopy> = Vec::new();
        let mut seen = DamageSet::default();
        for c in copies {
            if !known.contains(c.pack, &c.blob) && seen.insert(*c) {
                new.push(*c);
            }
        }
        if new.is_empty() {
            return Ok(0);
        }
        new.sort();
        self.write_damage_file(&new)?;
        Ok(new.len() as u64)
    }

    fn write_damage_file(&self, copies: &[DamagedCopy]) -> Result<DamageId> {
        let plain = encode_damage_file(copies, self.version());
        let id =
            self.write_sealed(ObjectDir::Damage, crate::crypto::FileKind::Damage, plain, "damage")?;
        Ok(DamageId(id))
    }

    /// Replaces every damage record by one listing the recorded copies `keep` accepts (the
    /// others' packs are gone). The caller holds the exclusive lock. The new record is durable
    /// before the old ones are removed.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn rewrite_damage(&self, keep: impl Fn(&DamagedCopy) -> bool) -> Result<u64> {
        let records = self.damage_records()?;
        let all = records.set.copies();
        let kept: Vec<DamagedCopy> = all.iter().copied().filter(|c| keep(c)).collect();
        if kept.len() == all.len() && records.read.len() <= 1 {
            return Ok(0);
        }
        let written = if kept.is_empty() { None } else { Some(self.write_damage_file(&kept)?) };
        let gone: Vec<Id> =
            records.read.iter().filter(|id| Some(**id) != written).map(|id| id.0).collect();
        self.storage().remove(ObjectDir::Damage, &gone)?;
        Ok((all.len() - kept.len()) as u64)
    }
}

/// What the damage records of a repository say.
#[derive(Debug, Default)]
pub struct DamageRecords {
    /// Every damaged copy the readable records name.
    pub set: DamageSet,
    /// The records read.
    pub read: Vec<DamageId>,
    /// Records that could not be read, with why.
    pub unreadable: Vec<(DamageId, String)>,
}
