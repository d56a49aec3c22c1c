//! Reading and writing damage records (`damage/<id>`, FORMAT.md §8.3).
//!
//! Anyone may add a record (it is a new file, written atomically; `check` does so under a shared
//! lock). Only a holder of the exclusive lock rewrites them (prune and `repair packs`, once the
//! packs they name are gone), new file first, then the old ones removed, as index files are.

use crate::damage::{decode_damage_file, encode_damage_file, DamageSet, DamagedCopy};
use crate::error::{Corruption, Error, IoContext, ObjectRef, Result};
use crate::fs::{ensure_dir, write_atomic};
use crate::id::{DamageId, Id};
use crate::repo::Repository;

impl Repository {
    /// The ids of every damage record (none when the repository has no `damage/` directory).
    ///
    /// # Errors
    /// [`Error::Io`] when the directory exists but cannot be listed.
    pub fn list_damage_files(&self) -> Result<Vec<DamageId>> {
        let dir = self.layout().damage_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).at(&dir),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.at(&dir)?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<DamageId>().ok()) {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads and verifies one damage record.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the record.
    pub fn load_damage_file(&self, id: DamageId) -> Result<Vec<DamagedCopy>> {
        let path = self.layout().damage_file(id);
        let corrupt = |reason| Error::corrupt(ObjectRef::DamageFile(id), reason);
        let len = std::fs::metadata(&path).at(&path)?.len();
        if len > crate::damage::MAX_DAMAGE_FILE_LEN {
            return Err(corrupt(Corruption::Invalid(format!("{len} bytes is too large"))));
        }
        let bytes = std::fs::read(&path).at(&path)?;
        let actual = Id::hash(&bytes);
        if actual != id.0 {
            return Err(corrupt(Corruption::HashMismatch { expected: id.0, actual }));
        }
        let plain =
            self.crypto().open_file(crate::crypto::FileKind::Damage, &bytes).map_err(corrupt)?;
        decode_damage_file(&plain).map_err(corrupt)
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
        let dir = self.layout().damage_dir();
        ensure_dir(&dir)?;
        let bytes = self.seal_file(
            crate::crypto::FileKind::Damage,
            encode_damage_file(copies, self.version()),
        )?;
        let id = DamageId(Id::hash(&bytes));
        write_atomic(&self.layout().tmp_dir(), &self.layout().damage_file(id), &bytes, "damage")?;
        Ok(id)
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
        for id in records.read.iter().filter(|id| Some(**id) != written) {
            let path = self.layout().damage_file(*id);
            std::fs::remove_file(&path).at(&path)?;
        }
        crate::fs::fsync_dir(&self.layout().damage_dir())?;
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
