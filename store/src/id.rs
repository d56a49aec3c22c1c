//! Content ids: BLAKE3-256 of the raw bytes, and their typed wrappers.
//!
//! An [`Id`] is 32 bytes. Its text form is 64 lowercase hex characters ([`Id::to_hex`], also
//! `Display`); [`Id::short`] gives the first 8 for people. The typed wrappers ([`ChunkId`],
//! [`TreeId`], [`PackId`], [`SnapshotId`], [`IndexId`]) keep the kinds apart in signatures.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Length of an id in bytes.
pub const ID_LEN: usize = 32;

/// A 32-byte content id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Id([u8; ID_LEN]);

impl Id {
    /// The id with the given bytes.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
        Id(bytes)
    }

    /// The id's bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
        &self.0
    }

    /// BLAKE3-256 of `data`: the id of a blob whose raw bytes are `data`.
    #[must_use]
    pub fn hash(data: &[u8]) -> Self {
        Id(*blake3::hash(data).as_bytes())
    }

    /// The full id as 64 lowercase hex characters.
    #[must_use]
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(ID_LEN * 2);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        s
    }

    /// The first 8 hex characters, for people.
    #[must_use]
    pub fn short(&self) -> String {
        let mut s = self.to_hex();
        s.truncate(8);
        s
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Parsing an id from hex failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-character hex id: {0:?}")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != ID_LEN * 2 {
            return Err(ParseIdError(s.to_owned()));
        }
        let mut out = [0u8; ID_LEN];
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let hi = hex_val(pair[0]).ok_or_else(|| ParseIdError(s.to_owned()))?;
            let lo = hex_val(pair[1]).ok_or_else(|| ParseIdError(s.to_owned()))?;
            *o = (hi << 4) | lo;
        }
        Ok(Id(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// The untyped id.
            #[must_use]
            pub const fn id(&self) -> Id {
                self.0
            }

            /// The full id as 64 lowercase hex characters.
            #[must_use]
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }

            /// The first 8 hex characters, for people.
            #[must_use]
            pub fn short(&self) -> String {
                self.0.short()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse().map($name)
            }
        }

        impl From<$name> for Id {
            fn from(v: $name) -> Id {
                v.0
            }
        }
    };
}

typed_id!(
    /// Id of a data chunk: BLAKE3 of its raw bytes.
    ChunkId
);
typed_id!(
    /// Id of a tree blob (a directory listing, or one page of one).
    TreeId
);
typed_id!(
    /// Id of a pack file: BLAKE3 of the whole file.
    PackId
);
typed_id!(
    /// Id of a snapshot manifest: BLAKE3 of the manifest file.
    SnapshotId
);
typed_id!(
    /// Id of an index file: BLAKE3 of the whole file.
    IndexId
);
typed_id!(
    /// Id of a damage record: BLAKE3 of the whole file.
    DamageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_bad_text() {
        let id = Id::hash(b"hello");
        let text = id.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<Id>().unwrap(), id);
        assert_eq!(id.short(), &text[..8]);
        assert!("zz".parse::<Id>().is_err());
        assert!(text.to_uppercase().parse::<Id>().is_err());
        assert!(text[..63].parse::<Id>().is_err());
    }

    #[test]
    fn hash_is_blake3() {
        // BLAKE3 of the empty input, from the BLAKE3 test vectors.
        assert_eq!(
            Id::hash(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }
}
