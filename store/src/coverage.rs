//! Verification records: `verified/<id>`, when each pack's data was last read and verified
//! whole (FORMAT.md §8.4).
//!
//! Every `check --read-data*` records the packs it read in which every blob verified and the
//! file hashed to its name. The records are in the repository, so every host's checks count;
//! `check --read-data --max-age 30d` reads only the packs not verified within 30 days, oldest
//! first, and `stats` reports how many bytes were verified within 7, 30 and 90 days.
//!
//! Records only tell a check what it may skip: a build that does not know them reads every
//! pack (as `--read-data` always did), which is why they are an addition to every format
//! version rather than a new one.

use std::collections::HashMap;

use crate::error::Corruption;
use crate::format::{read_header, ByteReader};
use crate::id::PackId;

/// Magic of a verification record: `STOREVFY`. Do not modify.
const COVERAGE_MAGIC: [u8; 8] = *b"STOREVFY";
/// Bytes of one entry: pack id, time of verification.
const COVERAGE_ENTRY_LEN: usize = 32 + 8;
/// Largest verification record a reader accepts: 256 MiB (about 6.7 million packs).
pub const MAX_COVERAGE_FILE_LEN: u64 = 256 << 20;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// Encodes a verification record: each pack with the time (seconds since the Unix epoch, UTC)
/// it was last verified, in pack order.
#[must_use]
pub fn encode_coverage_file(coverage: &Coverage, version: u32) -> Vec<u8> {
    let entries = coverage.entries();
    let mut out = Vec::with_capacity(16 + entries.len() * COVERAGE_ENTRY_LEN);
    out.extend_from_slice(&COVERAGE_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (pack, at) in entries {
        out.extend_from_slice(pack.0.as_bytes());
        out.extend_from_slice(&at.to_le_bytes());
    }
    out
}

/// Decodes a verification record into `into` (a pack listed twice keeps its latest time). The
/// caller checks that the bytes hash to the file's name.
///
/// # Errors
/// Bad magic, a format version this build does not read, truncated or trailing bytes.
pub fn decode_coverage_file(bytes: &[u8], into: &mut Coverage) -> Result<u32, Corruption> {
    let mut r = ByteReader::new(bytes, 0);
    read_header(&mut r, &COVERAGE_MAGIC)?;
    let count = r.u32()?;
    if (count as usize).saturating_mul(COVERAGE_ENTRY_LEN) != r.remaining() {
        return Err(Corruption::Invalid(format!(
            "{count} entries need {} bytes, {} follow",
            u64::from(count) * COVERAGE_ENTRY_LEN as u64,
            r.remaining()
        )));
    }
    for _ in 0..count {
        let pack = PackId(r.id()?);
        let at = i64::from_le_bytes(r.array()?);
        into.insert(pack, at);
    }
    Ok(count)
}

/// When each pack was last verified (seconds since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    verified: HashMap<PackId, i64>,
}

impl Coverage {
    /// Records that `pack` was verified at `at`; an earlier time does not replace a later one.
    pub fn insert(&mut self, pack: PackId, at: i64) {
        let t = self.verified.entry(pack).or_insert(at);
        *t = (*t).max(at);
    }

    /// When `pack` was last verified, if it ever was.
    #[must_use]
    pub fn get(&self, pack: &PackId) -> Option<i64> {
        self.verified.get(pack).copied()
    }

    /// Keeps only the packs `keep` accepts (the others are gone).
    pub fn retain(&mut self, keep: impl Fn(&PackId) -> bool) {
        self.verified.retain(|p, _| keep(p));
    }

    /// Every pack with its time, in pack order.
    #[must_use]
    pub fn entries(&self) -> Vec<(PackId, i64)> {
        let mut all: Vec<(PackId, i64)> = self.verified.iter().map(|(p, t)| (*p, *t)).collect();
        all.sort_unstable();
        all
    }

    /// How many packs have a time.
    #[must_use]
    pub fn len(&self) -> usize {
        self.verified.len()
    }

    /// Whether no pack has a time.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.verified.is_empty()
    }

    /// Whether `pack` is due for verification at `now`: never verified, or not within
    /// `max_age` seconds.
    #[must_use]
    pub fn is_due(&self, pack: &PackId, now: i64, max_age: i64) -> bool {
        self.get(pack).is_none_or(|t| now.saturating_sub(t) >= max_age)
    }

    /// Of `packs` (id, length), the ones due at `now` (see [`Coverage::is_due`]), the least
    /// recently verified first (never verified before all, then by id), cut after `max_bytes`
    /// (at least one pack is kept, so that a bound smaller than a pack still makes progress).
    #[must_use]
    pub fn due(
        &self,
        packs: &[(PackId, u64)],
        now: i64,
        max_age: i64,
        max_bytes: Option<u64>,
    ) -> Vec<(PackId, u64)> {
        let mut due: Vec<(Option<i64>, PackId, u64)> = packs
            .iter()
            .filter(|(p, _)| self.is_due(p, now, max_age))
            .map(|&(p, len)| (self.get(&p), p, len))
            .collect();
        due.sort_unstable();
        let mut total = 0u64;
        let mut out = Vec::new();
        for (_, pack, len) in due {
            total = total.saturating_add(len);
            if !out.is_empty() && max_bytes.is_some_and(|max| total > max) {
                break;
            }
            out.push((pack, len));
        }
        out
    }
}

/// Bytes of packs by when they were last verified. The windows are cumulative: a pack verified
/// yesterday counts in all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoverageSummary {
    /// Bytes verified within the last 7 days.
    pub within_7_days: u64,
    /// Within the last 30 days.
    pub within_30_days: u64,
    /// Within the last 90 days.
    pub within_90_days: u64,
    /// Verified, but more than 90 days ago.
    pub older: u64,
    /// Never verified (by a build that records it).
    pub never: u64,
}

impl CoverageSummary {
    /// Counts a pack of `len` bytes, verified at `at` (if ever), as of `now`.
    pub fn add(&mut self, len: u64, at: Option<i64>, now: i64) {
        let Some(at) = at else {
            self.never += len;
            return;
        };
        let age = now.saturating_sub(at);
        if age <= 90 * DAY {
            self.within_90_days += len;
            if age <= 30 * DAY {
                self.within_30_days += len;
            }
            if age <= 7 * DAY {
                self.within_7_days += len;
            }
        } else {
            self.older += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;

    fn pack(n: u8) -> PackId {
        PackId(Id::hash(&[n]))
    }

    #[test]
    fn a_record_round_trips_and_refuses_damage() {
        let mut c = Coverage::default();
        c.insert(pack(1), 1_000);
        c.insert(pack(2), -5);
        c.insert(pack(1), 900);
        assert_eq!(c.get(&pack(1)), Some(1_000), "the later time stays");
        let bytes = encode_coverage_file(&c, crate::FORMAT_VERSION);
        assert_eq!(bytes.len(), 16 + 2 * COVERAGE_ENTRY_LEN);
        let mut back = Coverage::default();
        assert_eq!(decode_coverage_file(&bytes, &mut back).unwrap(), 2);
        assert_eq!(back, c);
        for n in 0..bytes.len() {
            assert!(
                decode_coverage_file(&bytes[..n], &mut Coverage::default()).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_coverage_file(&longer, &mut Coverage::default()).is_err());
        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_coverage_file(&huge, &mut Coverage::default()).is_err());
        let mut newer = bytes;
        newer[8..12].copy_from_slice(&9u32.to_le_bytes());
        let err = decode_coverage_file(&newer, &mut Coverage::default()).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    #[test]
    fn due_packs_come_never_verified_first_then_oldest_and_stop_at_the_byte_bound() {
        let now = 100 * DAY;
        let mut c = Coverage::default();
        c.insert(pack(1), now - 40 * DAY);
        c.insert(pack(2), now - DAY);
        c.insert(pack(3), now - 60 * DAY);
        let packs = [(pack(1), 10), (pack(2), 10), (pack(3), 10), (pack(4), 10)];
        let due: Vec<PackId> =
            c.due(&packs, now, 30 * DAY, None).into_iter().map(|p| p.0).collect();
        assert_eq!(due, vec![pack(4), pack(3), pack(1)]);
        let bounded = c.due(&packs, now, 30 * DAY, Some(25));
        assert_eq!(bounded.len(), 2, "10 + 10 fit in 25, a third does not");
        assert_eq!(c.due(&packs, now, 30 * DAY, Some(1)).len(), 1, "one pack at least");
        assert_eq!(c.due(&packs, now, 0, None).len(), 4, "max age 0: every pack");
        assert!(c.due(&[(pack(2), 10)], now, 30 * DAY, None).is_empty());
    }

    #[test]
    fn the_summary_counts_cumulative_windows_and_the_rest() {
        let now = 1_000 * DAY;
        let mut s = CoverageSummary::default();
        s.add(1, Some(now - DAY), now);
        s.add(10, Some(now - 20 * DAY), now);
        s.add(100, Some(now - 80 * DAY), now);
        s.add(1_000, Some(now - 200 * DAY), now);
        s.add(10_000, None, now);
        assert_eq!(
            s,
            CoverageSummary {
                within_7_days: 1,
                within_30_days: 11,
                within_90_days: 111,
                older: 1_000,
                never: 10_000,
            }
        );
    }
}
