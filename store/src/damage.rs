//! Damage records: `damage/<id>`, the copies of blobs that were found damaged (FORMAT.md §8.3).
//!
//! Packs are never modified, so a damaged blob stays in its pack and in the index files that
//! list it. A damage record tells every reader to pass that copy by: the cache never points at a
//! recorded copy, so the next snapshot that meets the same chunk (on any host) stores it again
//! and the new set is whole, and a set that references the blob reads the new copy. Prune keeps a
//! damaged copy only while it is the last copy of a blob that some set references; `repair packs`
//! salvages the intact blobs of a damaged pack and removes it.
//!
//! Records only ever make readers more careful: a build that does not know them still verifies
//! every blob it reads (and so reports the same damage), which is why they are an addition to
//! format version 1 rather than a new version.

use std::collections::{HashMap, HashSet};

use crate::error::Corruption;
use crate::format::{read_header, ByteReader};
use crate::id::{Id, PackId};

/// Magic of a damage record: `STOREDMG`. Do not modify.
const DAMAGE_MAGIC: [u8; 8] = *b"STOREDMG";
/// Bytes of one record entry: pack id, blob id, offset.
const DAMAGE_ENTRY_LEN: usize = 32 + 32 + 8;
/// Largest damage record a reader accepts: 64 MiB (about 900,000 copies).
pub const MAX_DAMAGE_FILE_LEN: u64 = 64 << 20;

/// One damaged copy of a blob: the blob `blob` in pack `pack`, whose header is at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DamagedCopy {
    /// The pack holding the copy.
    pub pack: PackId,
    /// The blob's id.
    pub blob: Id,
    /// Offset of the blob's header in the pack.
    pub offset: u64,
}

/// Encodes a damage record listing `copies`.
#[must_use]
pub fn encode_damage_file(copies: &[DamagedCopy], version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + copies.len() * DAMAGE_ENTRY_LEN);
    out.extend_from_slice(&DAMAGE_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::try_from(copies.len()).unwrap_or(u32::MAX).to_le_bytes());
    for c in copies {
        out.extend_from_slice(c.pack.0.as_bytes());
        out.extend_from_slice(c.blob.as_bytes());
        out.extend_from_slice(&c.offset.to_le_bytes());
    }
    out
}

/// Decodes a damage record. The caller checks that the bytes hash to the file's name.
///
/// # Errors
/// Bad magic, a format version this build does not read, truncated or trailing bytes.
pub fn decode_damage_file(bytes: &[u8]) -> Result<Vec<DamagedCopy>, Corruption> {
    let mut r = ByteReader::new(bytes, 0);
    read_header(&mut r, &DAMAGE_MAGIC)?;
    let count = r.u32()?;
    if (count as usize).saturating_mul(DAMAGE_ENTRY_LEN) != r.remaining() {
        return Err(Corruption::Invalid(format!(
            "{count} entries need {} bytes, {} follow",
            u64::from(count) * DAMAGE_ENTRY_LEN as u64,
            r.remaining()
        )));
    }
    let mut copies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pack = PackId(r.id()?);
        let blob = r.id()?;
        let offset = r.u64()?;
        copies.push(DamagedCopy { pack, blob, offset });
    }
    Ok(copies)
}

/// Every damaged copy the repository's records name.
#[derive(Debug, Clone, Default)]
pub struct DamageSet {
    copies: HashSet<(PackId, Id)>,
    by_blob: HashMap<Id, Vec<DamagedCopy>>,
}

impl DamageSet {
    /// Adds `copy`; false when it was recorded already.
    pub fn insert(&mut self, copy: DamagedCopy) -> bool {
        if !self.copies.insert((copy.pack, copy.blob)) {
            return false;
        }
        self.by_blob.entry(copy.blob).or_default().push(copy);
        true
    }

    /// Whether `pack`'s copy of `blob` is recorded as damaged.
    #[must_use]
    pub fn contains(&self, pack: PackId, blob: &Id) -> bool {
        !self.copies.is_empty() && self.copies.contains(&(pack, *blob))
    }

    /// Whether a damaged copy of any blob is recorded in `pack`.
    #[must_use]
    pub fn touches_pack(&self, pack: &PackId) -> bool {
        self.copies.iter().any(|(p, _)| p == pack)
    }

    /// The recorded damaged copies of `blob`.
    #[must_use]
    pub fn of_blob(&self, blob: &Id) -> &[DamagedCopy] {
        self.by_blob.get(blob).map_or(&[], Vec::as_slice)
    }

    /// Every recorded copy, in a stable order.
    #[must_use]
    pub fn copies(&self) -> Vec<DamagedCopy> {
        let mut all: Vec<DamagedCopy> = self.by_blob.values().flatten().copied().collect();
        all.sort();
        all
    }

    /// Whether nothing is recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.copies.is_empty()
    }

    /// How many copies are recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        self.copies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<DamagedCopy> {
        vec![
            DamagedCopy { pack: PackId(Id::hash(b"p1")), blob: Id::hash(b"a"), offset: 0 },
            DamagedCopy { pack: PackId(Id::hash(b"p2")), blob: Id::hash(b"b"), offset: 4096 },
        ]
    }

    #[test]
    fn damage_file_round_trips_and_refuses_damage() {
        let bytes = encode_damage_file(&sample(), crate::FORMAT_VERSION);
        assert_eq!(bytes.len(), 16 + 2 * DAMAGE_ENTRY_LEN);
        assert_eq!(decode_damage_file(&bytes).unwrap(), sample());
        for n in 0..bytes.len() {
            assert!(decode_damage_file(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_damage_file(&longer).is_err());
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_damage_file(&huge).is_err());
    }

    #[test]
    fn a_newer_version_is_refused_by_number_not_read_as_empty() {
        let mut bytes = encode_damage_file(&sample(), crate::FORMAT_VERSION);
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        let err = decode_damage_file(&bytes).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    #[test]
    fn the_set_answers_by_copy_and_by_blob() {
        let mut set = DamageSet::default();
        for c in sample() {
            assert!(set.insert(c));
        }
        assert!(!set.insert(sample()[0]));
        assert_eq!(set.len(), 2);
        assert!(set.contains(PackId(Id::hash(b"p1")), &Id::hash(b"a")));
        assert!(!set.contains(PackId(Id::hash(b"p2")), &Id::hash(b"a")));
        assert_eq!(set.of_blob(&Id::hash(b"b")).len(), 1);
        assert_eq!(set.copies(), {
            let mut s = sample();
            s.sort();
            s
        });
    }
}
