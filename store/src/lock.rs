//! Lock files: the bytes of `locks/<id>` (FORMAT.md §9). The protocol is in `repo/lock.rs`.

use serde::{Deserialize, Serialize};

use crate::error::Corruption;
use crate::format::{decode_record, encode_record, read_header, ByteReader};

/// Magic of a lock file: `STORELCK`. Do not modify.
const LOCK_MAGIC: [u8; 8] = *b"STORELCK";

/// Shared (snapshot, restore, check) or exclusive (prune, repair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Any number of shared holders, no exclusive one.
    Shared,
    /// One holder, nobody else.
    Exclusive,
}

/// The content of a lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// Shared or exclusive.
    pub kind: LockKind,
    /// Host name of the holder (the machine's, not `--host`).
    pub host: String,
    /// Process id of the holder on that host.
    pub pid: u32,
    /// When the lock was taken, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// The command holding it (`snapshot`, `check`, …).
    pub command: String,
}

impl LockRecord {
    /// Encodes a lock file as format `version` (the repository's).
    ///
    /// # Errors
    /// [`crate::Error::Encode`] (a command name beyond 64 MiB).
    pub fn encode(&self, version: u32) -> Result<Vec<u8>, crate::Error> {
        let mut out = LOCK_MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&encode_record(self, "lock")?);
        Ok(out)
    }

    /// Decodes a lock file.
    ///
    /// # Errors
    /// Bad magic, unknown version, malformed record.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let mut r = ByteReader::new(bytes, 0);
        read_header(&mut r, &LOCK_MAGIC)?;
        decode_record(r.rest(), "lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_record_round_trips_and_damage_is_refused() {
        let r = LockRecord {
            kind: LockKind::Exclusive,
            host: "ml1".into(),
            pid: 42,
            start_ns: 7,
            command: "prune".into(),
        };
        let bytes = r.encode(crate::FORMAT_VERSION).unwrap();
        assert_eq!(LockRecord::decode(&bytes).unwrap(), r);
        for n in 0..bytes.len() {
            assert!(LockRecord::decode(&bytes[..n]).is_err());
        }
    }
}
