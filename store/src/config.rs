//! The repository's `config` file (FORMAT.md §4).

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::error::{Corruption, Error, ObjectRef, Result};
use crate::format::{check_version, decode_record, encode_record, ByteReader};
use crate::id::{Id, ID_LEN};

/// Magic of the config file: `STORECFG`. Do not modify.
const CONFIG_MAGIC: [u8; 8] = *b"STORECFG";

/// The function that turns raw bytes into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdHash {
    /// Unkeyed BLAKE3-256.
    Blake3,
    /// BLAKE3-256 keyed with a subkey of the master secret (encrypted repositories).
    KeyedBlake3,
}

/// How objects are sealed (format version 3 and later; FORMAT.md §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Encryption {
    /// Nothing is sealed.
    #[default]
    None,
    /// XChaCha20-Poly1305 with random 192-bit nonces; keys in `keys/`.
    XChaCha20Poly1305,
    /// XAES-256-GCM with random 192-bit nonces (format version 5 and later); keys in `keys/`
    /// (key files themselves stay XChaCha20-Poly1305).
    Xaes256Gcm,
}

impl Encryption {
    /// The first format version that may seal with it.
    #[must_use]
    pub fn since_version(self) -> u32 {
        match self {
            Encryption::None => 1,
            Encryption::XChaCha20Poly1305 => 3,
            Encryption::Xaes256Gcm => 5,
        }
    }

    /// What an encrypted repository of format `version` seals with unless told otherwise.
    #[must_use]
    pub fn default_for(version: u32) -> Self {
        if version >= Encryption::Xaes256Gcm.since_version() {
            Encryption::Xaes256Gcm
        } else {
            Encryption::XChaCha20Poly1305
        }
    }
}

/// Parameters fixed when the repository is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// The format version of the repository (from the header, not the record): what every
    /// object written into it is written as (FORMAT.md §14).
    #[serde(skip)]
    pub version: u32,
    /// Random id of this repository (caches are keyed by it).
    pub repo_id: Id,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: i64,
    /// The id function.
    pub id_hash: IdHash,
    /// Chunk size bounds and seed.
    pub chunker: ChunkerParams,
    /// zstd level for new blobs.
    pub compression_level: i32,
    /// Packs are sealed once they reach this size (bytes).
    pub pack_target: u32,
    /// Feature flags; a reader refuses a repository with a flag it does not know. None yet.
    pub features: u64,
    /// How objects are sealed: encoded after the record from version 3 on; always
    /// [`Encryption::None`] before.
    #[serde(skip)]
    pub encryption: Encryption,
}

impl RepoConfig {
    /// Whether objects are sealed and a password is needed.
    #[must_use]
    pub fn is_encrypted(&self) -> bool {
        self.encryption != Encryption::None
    }

    /// Encodes the config file: magic, version, bincode record, BLAKE3 of all that.
    ///
    /// # Errors
    /// [`Error::Encode`] (not for any config `init` accepts).
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&CONFIG_MAGIC);
        out.extend_from_slice(&self.version.to_le_bytes());
        if self.version >= 3 {
            out.extend_from_slice(&encode_record(&(self, self.encryption), "config")?);
        } else {
            out.extend_from_slice(&encode_record(self, "config")?);
        }
        let sum = Id::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        Ok(out)
    }

    /// Decodes a config file.
    ///
    /// # Errors
    /// [`Error::NotARepository`] for a wrong magic, [`Error::UnsupportedVersion`],
    /// [`Error::Corrupt`] for a bad checksum or record.
    pub fn decode(bytes: &[u8], path: &std::path::Path) -> Result<Self> {
        let corrupt = |reason| Error::corrupt(ObjectRef::Config, reason);
        let mut r = ByteReader::new(bytes, 0);
        if r.magic(&CONFIG_MAGIC).is_err() {
            return Err(Error::NotARepository {
                path: path.to_path_buf(),
                reason: "config file has no store signature".into(),
            });
        }
        let version = r.u32().map_err(corrupt)?;
        check_version(version).map_err(corrupt)?;
        let body_end = bytes.len().checked_sub(ID_LEN).filter(|&n| n >= 12).ok_or_else(|| {
            corrupt(Corruption::Truncated {
                offset: 12,
                needed: ID_LEN as u64,
                len: bytes.len() as u64,
            })
        })?;
        let (signed, sum) = bytes.split_at(body_end);
        if Id::hash(signed).as_bytes() != sum {
            return Err(corrupt(Corruption::ChecksumMismatch { what: "config" }));
        }
        let record = signed.get(12..).unwrap_or_default();
        let mut config: RepoConfig = if version >= 3 {
            let (mut c, encryption): (RepoConfig, Encryption) =
                decode_record(record, "config").map_err(corrupt)?;
            c.encryption = encryption;
            c
        } else {
            decode_record(record, "config").map_err(corrupt)?
        };
        config.version = version;
        let keyed = config.id_hash == IdHash::KeyedBlake3;
        if keyed != config.is_encrypted() {
            return Err(corrupt(Corruption::Invalid(format!(
                "id hash {:?} with encryption {:?}",
                config.id_hash, config.encryption
            ))));
        }
        if config.encryption.since_version() > version {
            return Err(corrupt(Corruption::Invalid(format!(
                "encryption {:?} in a repository of format version {version} (it needs {})",
                config.encryption,
                config.encryption.since_version()
            ))));
        }
        if config.features != 0 {
            return Err(corrupt(Corruption::Invalid(format!(
                "unknown feature flags {:#x}",
                config.features
            ))));
        }
        config.chunker.validate().map_err(|m| corrupt(Corruption::Invalid(m)))?;
        if config.pack_target < 1 << 20 {
            return Err(corrupt(Corruption::Invalid(format!(
                "pack target {} is below 1 MiB",
                config.pack_target
            ))));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FORMAT_VERSION;
    use std::path::Path;

    fn sample() -> RepoConfig {
        RepoConfig {
            version: FORMAT_VERSION,
            repo_id: Id::hash(b"r"),
            created_ns: 5,
            id_hash: IdHash::Blake3,
            chunker: ChunkerParams::default_with_seed(9),
            compression_level: 3,
            pack_target: 16 << 20,
            features: 0,
            encryption: Encryption::None,
        }
    }

    #[test]
    fn config_round_trips() {
        let c = sample();
        assert_eq!(RepoConfig::decode(&c.encode().unwrap(), Path::new("config")).unwrap(), c);
        let e = RepoConfig {
            id_hash: IdHash::KeyedBlake3,
            encryption: Encryption::XChaCha20Poly1305,
            ..sample()
        };
        assert_eq!(RepoConfig::decode(&e.encode().unwrap(), Path::new("config")).unwrap(), e);
        // Versions before 3 have no encryption field: their bytes are what they were.
        for version in [1, 2] {
            let old = RepoConfig { version, ..sample() };
            let bytes = old.encode().unwrap();
            assert_eq!(bytes.len(), c.encode().unwrap().len() - 4);
            assert_eq!(RepoConfig::decode(&bytes, Path::new("config")).unwrap(), old);
        }
        // XAES-256-GCM from version 5 on; in an earlier version's config it is refused.
        let x = RepoConfig {
            id_hash: IdHash::KeyedBlake3,
            encryption: Encryption::Xaes256Gcm,
            ..sample()
        };
        assert_eq!(RepoConfig::decode(&x.encode().unwrap(), Path::new("config")).unwrap(), x);
        for version in [3, 4] {
            let early = RepoConfig { version, ..x.clone() };
            let err =
                RepoConfig::decode(&early.encode().unwrap(), Path::new("config")).unwrap_err();
            assert!(err.to_string().contains("needs 5"), "{err}");
        }
        // A keyed id hash without encryption (or the reverse) is refused.
        let odd = RepoConfig { id_hash: IdHash::KeyedBlake3, ..sample() };
        assert!(RepoConfig::decode(&odd.encode().unwrap(), Path::new("config")).is_err());
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let bytes = sample().encode().unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(RepoConfig::decode(&b, Path::new("config")).is_err(), "bit {i}");
        }
    }

    #[test]
    fn newer_version_is_refused_by_number() {
        let mut bytes = sample().encode().unwrap();
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let err = RepoConfig::decode(&bytes, Path::new("config")).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { object: ObjectRef::Config, found: 7, .. }),
            "got {err:?}"
        );
    }

    #[test]
    fn foreign_file_is_not_a_repository() {
        let err = RepoConfig::decode(b"[core]\nrepositoryformatversion = 0\n", Path::new("config"))
            .unwrap_err();
        assert!(matches!(err, Error::NotARepository { .. }), "got {err:?}");
    }
}
