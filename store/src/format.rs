//! Byte conventions shared by every file format (FORMAT.md §1).
//!
//! - Fixed binary structures (pack headers, trailers, footers, index files) are read with
//!   [`ByteReader`], which never indexes out of bounds: a short input is a
//!   [`Corruption::Truncated`].
//! - Structured records (config body, trees, manifests) are bincode 2 with one configuration,
//!   [`encode_record`]/[`decode_record`]: little-endian, fixed-width integers, collection lengths
//!   as u64, enum tags as u32, `Option` as a u8 tag, and a decode limit that caps every
//!   allocation a length field can cause.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Corruption;
use crate::id::{Id, ID_LEN};

/// The repository format version this build writes.
pub const FORMAT_VERSION: u32 = 5;

/// The oldest repository format version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// The format versions this build reads: every version from the oldest it knows up to the one it
/// writes. A reader refuses anything else by number; it never reads an object of a version it
/// does not know (as empty, or otherwise).
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = MIN_FORMAT_VERSION..=FORMAT_VERSION;

#[cfg(test)]
thread_local! {
    /// The current version readers of this thread assume, for tests that read what an older
    /// version wrote with a reader of a newer one.
    static CURRENT: std::cell::Cell<u32> = const { std::cell::Cell::new(FORMAT_VERSION) };
}

/// The versions readers accept: [`SUPPORTED_VERSIONS`] (in tests, up to the version a test set
/// with [`with_current_version`]).
pub(crate) fn supported_versions() -> std::ops::RangeInclusive<u32> {
    #[cfg(test)]
    return MIN_FORMAT_VERSION..=CURRENT.with(std::cell::Cell::get);
    #[cfg(not(test))]
    SUPPORTED_VERSIONS
}

/// Runs `f` with readers of this thread taking `version` as the current version (tests only).
#[cfg(test)]
pub(crate) fn with_current_version<T>(version: u32, f: impl FnOnce() -> T) -> T {
    let old = CURRENT.with(|c| c.replace(version));
    let out = f();
    CURRENT.with(|c| c.set(old));
    out
}

/// Largest structured record (tree page, manifest, config) a decoder accepts: 64 MiB.
pub const MAX_RECORD_LEN: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_RECORD_LEN>()
}

/// Encodes a structured record (`what` names it in errors) with the repository's bincode
/// configuration. A record larger than [`MAX_RECORD_LEN`] is an error: a reader would refuse it,
/// so it must never be written.
///
/// # Errors
/// [`crate::Error::Encode`] when the record cannot be encoded or is too large.
pub(crate) fn encode_record<T: Serialize>(
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, crate::Error> {
    let bytes = bincode::serde::encode_to_vec(value, config())
        .map_err(|e| crate::Error::Encode { what, reason: e.to_string() })?;
    if bytes.len() > MAX_RECORD_LEN {
        return Err(crate::Error::Encode {
            what,
            reason: format!(
                "{} bytes, more than the {} MiB a reader accepts",
                bytes.len(),
                MAX_RECORD_LEN >> 20
            ),
        });
    }
    Ok(bytes)
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode_record_into<T: Serialize>(
    value: &T,
    what: &'static str,
    out: &mut Vec<u8>,
) -> Result<(), crate::Error> {
    out.extend_from_slice(&encode_record(value, what)?);
    Ok(())
}

/// Decodes a structured record; the whole input must be consumed.
pub(crate) fn decode_record<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, Corruption> {
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| Corruption::Decode { what, message: e.to_string() })?;
    if used != bytes.len() {
        return Err(Corruption::Decode {
            what,
            message: format!("{} trailing bytes", bytes.len() - used),
        });
    }
    Ok(value)
}

/// A bounds-checked little-endian reader over a byte slice.
pub(crate) struct ByteReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes[0]` in the file, for error messages.
    base: u64,
}

impl<'a> ByteReader<'a> {
    /// A reader over `bytes`, which start at `base` in their file.
    pub(crate) fn new(bytes: &'a [u8], base: u64) -> Self {
        ByteReader { bytes, pos: 0, base }
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Corruption> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.bytes.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(Corruption::Truncated {
                offset: self.base + self.pos as u64,
                needed: n as u64,
                len: (self.bytes.len() - self.pos.min(self.bytes.len())) as u64,
            }),
        }
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], Corruption> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Corruption> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Corruption> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Corruption> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn id(&mut self) -> Result<Id, Corruption> {
        Ok(Id::from_bytes(self.array::<ID_LEN>()?))
    }

    /// Checks that the next bytes are `magic`.
    pub(crate) fn magic(&mut self, magic: &[u8]) -> Result<(), Corruption> {
        let found = self.take(magic.len())?;
        if found == magic {
            Ok(())
        } else {
            Err(Corruption::BadMagic { found: found.to_vec() })
        }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.pos..).unwrap_or_default()
    }
}

/// Refuses a format version this build does not read.
///
/// # Errors
/// [`Corruption::UnsupportedVersion`], which [`crate::Error::corrupt`] turns into
/// [`crate::Error::UnsupportedVersion`] naming the object.
pub(crate) fn check_version(version: u32) -> Result<(), Corruption> {
    let supported = supported_versions();
    if supported.contains(&version) {
        Ok(())
    } else {
        Err(Corruption::UnsupportedVersion { found: version, supported })
    }
}

/// Reads the header that opens every versioned repository object (config, pack footer, index
/// file, manifest, lock, damage record): `magic`, then the format version as u32 LE, which must
/// be one this build reads. Returns the version.
///
/// # Errors
/// [`Corruption::BadMagic`], [`Corruption::Truncated`], [`Corruption::UnsupportedVersion`].
pub(crate) fn read_header(r: &mut ByteReader<'_>, magic: &[u8]) -> Result<u32, Corruption> {
    r.magic(magic)?;
    let version = r.u32()?;
    check_version(version)?;
    Ok(version)
}

/// The first 8 bytes of BLAKE3 over `data`, as a u64: a cheap checksum for fixed headers.
pub(crate) fn short_checksum(data: &[u8]) -> u64 {
    let h = blake3::hash(data);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_reader_reports_truncation_with_offsets() {
        let mut r = ByteReader::new(&[1, 2, 3], 100);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u8().unwrap(), 2);
        let err = r.u32().unwrap_err();
        assert_eq!(err, Corruption::Truncated { offset: 102, needed: 4, len: 1 });
    }

    #[test]
    fn records_refuse_trailing_bytes_and_huge_lengths() {
        let mut bytes = encode_record(&vec![1u32, 2, 3], "test").unwrap();
        assert_eq!(decode_record::<Vec<u32>>(&bytes, "test").unwrap(), vec![1, 2, 3]);
        bytes.push(0);
        assert!(decode_record::<Vec<u32>>(&bytes, "test").is_err());
        // A length field claiming 2^60 elements must fail, not allocate.
        let mut huge = (1u64 << 60).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(decode_record::<Vec<u64>>(&huge, "test").is_err());
    }

    /// What decoding one kind of object gave: `Ok`, or the version it refused.
    type Decoded = Result<(), u32>;

    /// One kind of object: its name, its bytes, where its version lies, its reader.
    type Kind = (&'static str, Vec<u8>, usize, Box<dyn Fn(&[u8]) -> Decoded>);

    /// Every versioned object kind: its bytes as this build writes them (version 1), where its
    /// version lies, and its reader. Each reader returns the refused version, and panics on any
    /// other error (a refusal must be by number, never a decode of unknown bytes).
    fn every_kind() -> Vec<Kind> {
        use crate::error::Error;
        fn refused(e: &Corruption) -> u32 {
            match e {
                Corruption::UnsupportedVersion { found, .. } => *found,
                other => panic!("refused for another reason than its version: {other:?}"),
            }
        }
        let config = crate::config::RepoConfig {
            version: 1,
            repo_id: Id::hash(b"r"),
            created_ns: 1,
            id_hash: crate::config::IdHash::Blake3,
            chunker: crate::chunker::ChunkerParams::default_with_seed(3),
            compression_level: 3,
            pack_target: 16 << 20,
            features: 0,
            encryption: crate::config::Encryption::None,
        };
        let pack = crate::index::IndexedPack {
            id: crate::id::PackId(Id::hash(b"p")),
            len: 64,
            entries: Vec::new(),
        };
        let manifest = crate::snapshot::Manifest {
            time_ns: 1,
            end_ns: 2,
            host: "h".into(),
            tags: vec![],
            kind: crate::snapshot::SetKind::Full,
            parent: None,
            components: vec![],
            counts: crate::snapshot::Counts::default(),
            issues: vec![],
            note: String::new(),
        };
        let lock = crate::lock::LockRecord {
            kind: crate::lock::LockKind::Shared,
            host: "h".into(),
            pid: 1,
            start_ns: 1,
            command: "snapshot".into(),
        };
        let copy = crate::damage::DamagedCopy { pack: pack.id, blob: Id::hash(b"b"), offset: 0 };
        let mut verified = crate::coverage::Coverage::default();
        verified.insert(pack.id, 1_700_000_000);
        vec![
            (
                "config",
                config.encode().unwrap(),
                8,
                Box::new(|b: &[u8]| {
                    match crate::config::RepoConfig::decode(b, std::path::Path::new("config")) {
                        Ok(_) => Ok(()),
                        Err(Error::UnsupportedVersion { found, .. }) => Err(found),
                        Err(e) => panic!("config: {e}"),
                    }
                }),
            ),
            (
                "index file",
                crate::index::encode_index_file(&[pack], 1),
                8,
                Box::new(|b: &[u8]| {
                    crate::index::decode_index_file(b).map(drop).map_err(|e| refused(&e))
                }),
            ),
            (
                "manifest",
                manifest.encode(1).unwrap(),
                8,
                Box::new(|b: &[u8]| {
                    crate::snapshot::Manifest::decode(b).map(drop).map_err(|e| refused(&e))
                }),
            ),
            (
                "lock",
                lock.encode(1).unwrap(),
                8,
                Box::new(|b: &[u8]| {
                    crate::lock::LockRecord::decode(b).map(drop).map_err(|e| refused(&e))
                }),
            ),
            (
                "damage record",
                crate::damage::encode_damage_file(&[copy], 1),
                8,
                Box::new(|b: &[u8]| {
                    crate::damage::decode_damage_file(b).map(drop).map_err(|e| refused(&e))
                }),
            ),
            (
                "verification record",
                crate::coverage::encode_coverage_file(&verified, 1),
                8,
                Box::new(|b: &[u8]| {
                    let mut into = crate::coverage::Coverage::default();
                    crate::coverage::decode_coverage_file(b, &mut into)
                        .map(drop)
                        .map_err(|e| refused(&e))
                }),
            ),
        ]
    }

    /// A pack written as format `version`.
    fn pack_as_version(
        dir: &std::path::Path,
        version: u32,
    ) -> (std::path::PathBuf, crate::id::PackId) {
        let plain = crate::crypto::Crypto::plain();
        let mut w = crate::pack::PackWriter::create(dir, version, &plain).unwrap();
        let mut c = crate::compress::Compressor::new(3).unwrap();
        let raw = b"a blob".to_vec();
        w.add(
            &crate::pack::EncodedBlob::encode(
                Id::hash(&raw),
                crate::pack::BlobKind::Data,
                &raw,
                &mut c,
                &plain,
            )
            .unwrap(),
        )
        .unwrap();
        let sealed = w.seal(|id| dir.join(format!("{id}.pack"))).unwrap();
        (dir.join(format!("{}.pack", sealed.id)), sealed.id)
    }

    // See: issue 13 ("the day the current version becomes 2 every version-1 manifest and lock is
    // refused, and a version-1 index file decodes as an empty pack list").
    #[test]
    fn objects_of_every_kind_written_as_version_1_are_read_when_the_current_version_is_2() {
        for (kind, bytes, at, decode) in every_kind() {
            assert_eq!(decode(&bytes), Ok(()), "{kind} as written");
            let version = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
            assert_eq!(version, 1, "{kind} is written as version 1");
            assert_eq!(with_current_version(2, || decode(&bytes)), Ok(()), "{kind} read by v2");
            // A version above the current one is refused by number, never read (as empty).
            for (current, newer) in [(1, 2), (2, 3), (1, u32::MAX)] {
                let mut b = bytes.clone();
                b[at..at + 4].copy_from_slice(&newer.to_le_bytes());
                let got = with_current_version(current, || decode(&b));
                assert_eq!(got, Err(newer), "{kind}: version {newer} read by {current}");
            }
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
            assert_eq!(decode(&b), Err(0), "{kind}: version 0 predates every version");
        }
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = pack_as_version(dir.path(), 1);
        with_current_version(2, || {
            crate::pack::PackReader::open(&path, id, &crate::crypto::Crypto::plain())
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (path, id) = pack_as_version(dir.path(), 2);
        let err = with_current_version(1, || {
            crate::pack::PackReader::open(&path, id, &crate::crypto::Crypto::plain())
        })
        .err()
        .unwrap();
        assert!(
            matches!(
                &err,
                crate::Error::UnsupportedVersion { object: crate::ObjectRef::Pack(p), found: 2, supported }
                    if *p == id && *supported == (1..=1)
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!("pack {id}: format version 2 is not supported")),
            "{err}"
        );
        with_current_version(2, || {
            crate::pack::PackReader::open(&path, id, &crate::crypto::Crypto::plain())
        })
        .unwrap();
    }

    #[test]
    fn a_record_a_reader_would_refuse_is_never_encoded() {
        let big = vec![7u8; MAX_RECORD_LEN];
        let err = encode_record(&big, "test").unwrap_err();
        assert!(err.to_string().contains("more than the 64 MiB"), "{err}");
        let fits = vec![7u8; MAX_RECORD_LEN - 8];
        assert_eq!(encode_record(&fits, "test").unwrap().len(), MAX_RECORD_LEN);
    }
}
