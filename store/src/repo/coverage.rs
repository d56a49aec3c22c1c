//! Reading and writing verification records (`verified/<id>`, FORMAT.md §8.4).
//!
//! A check adds what it verified by merging: it reads every record, adds its packs, leaves out
//! packs that are gone, writes one new record and only then removes the records it read. Two
//! checks merging at once each keep everything they read, so nothing recorded is lost; this
//! needs no exclusive lock, and the number of records stays small.

use std::collections::HashSet;

use crate::coverage::{decode_coverage_file, encode_coverage_file, Coverage};
use crate::error::{Error, ObjectRef, Result};
use crate::id::{Id, PackId};
use crate::repo::Repository;
use crate::storage::ObjectDir;

/// What the verification records of a repository say.
#[derive(Debug, Default)]
pub struct CoverageRecords {
    /// When each pack was last verified, from the readable records.
    pub coverage: Coverage,
    /// The records read.
    pub read: Vec<Id>,
    /// Records that could not be read, with why (their packs count as never verified).
    pub unreadable: Vec<(Id, String)>,
}

impl Repository {
    /// Reads every verification record. One that cannot be read is left out and returned
    /// with its error: its packs are read again by the next `check --max-age`, nothing worse.
    ///
    /// # Errors
    /// [`Error::Io`] when `verified/` exists but cannot be listed.
    pub fn coverage_records(&self) -> Result<CoverageRecords> {
        let mut records = CoverageRecords::default();
        for id in self.storage().list(ObjectDir::Verified)? {
            let read = self
                .read_sealed(
                    ObjectDir::Verified,
                    id,
                    crate::coverage::MAX_COVERAGE_FILE_LEN,
                    crate::crypto::FileKind::Verified,
                    ObjectRef::VerificationRecord(id),
                )
                .and_then(|plain| {
                    // Into a copy: a record that fails halfway adds nothing.
                    let mut one = Coverage::default();
                    decode_coverage_file(&plain, &mut one)
                        .map_err(|e| Error::corrupt(ObjectRef::VerificationRecord(id), e))?;
                    Ok(one)
                });
            match read {
                Ok(one) => {
                    for (pack, at) in one.entries() {
                        records.coverage.insert(pack, at);
                    }
                    records.read.push(id);
                }
                Err(e) => records.unreadable.push((id, e.to_string())),
            }
        }
        Ok(records)
    }

    /// Records that `packs` were verified whole at `at` (seconds since the Unix epoch), merged
    /// with every readable record into one new record (packs that are gone left out); the
    /// records merged are removed once it is written. Returns how many packs it lists.
    ///
    /// # Errors
    /// [`Error::Io`] when the record cannot be written or the packs cannot be listed.
    pub fn record_verified(&self, packs: &[PackId], at: i64) -> Result<u64> {
        let records = self.coverage_records()?;
        let mut coverage = records.coverage;
        for p in packs {
            coverage.insert(*p, at);
        }
        let live: HashSet<PackId> = self.list_packs()?.into_iter().collect();
        coverage.retain(|p| live.contains(p));
        let written = if coverage.is_empty() {
            None
        } else {
            let plain = encode_coverage_file(&coverage, self.version());
            Some(self.write_sealed(
                ObjectDir::Verified,
                crate::crypto::FileKind::Verified,
                plain,
                "verification record",
            )?)
        };
        let merged: Vec<Id> = records.read.into_iter().filter(|id| Some(*id) != written).collect();
        self.storage().remove(ObjectDir::Verified, &merged)?;
        Ok(coverage.len() as u64)
    }
}
