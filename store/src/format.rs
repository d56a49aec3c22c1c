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
pub const FORMAT_VERSION: u32 = 1;

/// The format versions this build reads.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 1..=1;

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

/// Reads the magic and version that open every repository file, and refuses versions this
/// build does not know.
pub(crate) fn check_version(version: u32) -> Result<(), crate::Error> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(crate::Error::UnsupportedVersion { found: version, supported: SUPPORTED_VERSIONS })
    }
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

    #[test]
    fn a_record_a_reader_would_refuse_is_never_encoded() {
        let big = vec![7u8; MAX_RECORD_LEN];
        let err = encode_record(&big, "test").unwrap_err();
        assert!(err.to_string().contains("more than the 64 MiB"), "{err}");
        let fits = vec![7u8; MAX_RECORD_LEN - 8];
        assert_eq!(encode_record(&fits, "test").unwrap().len(), MAX_RECORD_LEN);
    }
}
