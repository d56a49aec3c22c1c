//! Index files: `index/<id>`, listing which blobs a writer put into which packs.

use crate::error::Corruption;
use crate::format::{read_header, ByteReader};
use crate::id::PackId;
use crate::pack::{decode_entry, encode_entry, PackEntry, TRAILER_ENTRY_LEN};

/// Magic of an index file: `STOREIDX`. Do not modify.
const INDEX_MAGIC: [u8; 8] = *b"STOREIDX";
/// Largest index file a reader accepts: 256 MiB (writers stay far below).
pub const MAX_INDEX_FILE_LEN: u64 = 256 << 20;

/// One pack as listed in an index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack's id.
    pub id: PackId,
    /// The pack file's length.
    pub len: u64,
    /// Its blobs, as in its trailer.
    pub entries: Vec<PackEntry>,
}

/// Encodes an index file listing `packs`.
#[must_use]
pub fn encode_index_file(packs: &[IndexedPack], version: u32) -> Vec<u8> {
    let blobs: usize = packs.iter().map(|p| p.entries.len()).sum();
    let mut out = Vec::with_capacity(16 + packs.len() * 48 + blobs * TRAILER_ENTRY_LEN);
    out.extend_from_slice(&INDEX_MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&u32::try_from(packs.len()).unwrap_or(u32::MAX).to_le_bytes());
    for p in packs {
        out.extend_from_slice(p.id.0.as_bytes());
        out.extend_from_slice(&p.len.to_le_bytes());
        out.extend_from_slice(&u32::try_from(p.entries.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for e in &p.entries {
            encode_entry(e, &mut out);
        }
    }
    out
}

/// Decodes an index file. The caller checks that the bytes hash to the file's name.
///
/// # Errors
/// Truncated or malformed bytes, a format version this build does not read.
pub fn decode_index_file(bytes: &[u8]) -> Result<Vec<IndexedPack>, Corruption> {
    let mut r = ByteReader::new(bytes, 0);
    read_header(&mut r, &INDEX_MAGIC)?;
    let pack_count = r.u32()?;
    let mut packs = Vec::new();
    for _ in 0..pack_count {
        let id = PackId(r.id()?);
        let len = r.u64()?;
        let blob_count = r.u32()?;
        if r.u32()? != 0 {
            return Err(Corruption::Invalid("reserved field of a pack record is not zero".into()));
        }
        // Each entry needs TRAILER_ENTRY_LEN bytes: refuse counts the input cannot hold
        // before allocating for them.
        if (blob_count as usize).saturating_mul(TRAILER_ENTRY_LEN) > r.remaining() {
            return Err(Corruption::Truncated {
                offset: (bytes.len() - r.remaining()) as u64,
                needed: u64::from(blob_count) * TRAILER_ENTRY_LEN as u64,
                len: r.remaining() as u64,
            });
        }
        let mut entries = Vec::with_capacity(blob_count as usize);
        for _ in 0..blob_count {
            let e = decode_entry(&mut r)?;
            if e.end() > len {
                return Err(Corruption::Invalid(format!(
                    "blob {} ends at {} beyond the end of pack {id} ({len})",
                    e.id,
                    e.end()
                )));
            }
            entries.push(e);
        }
        packs.push(IndexedPack { id, len, entries });
    }
    if r.remaining() != 0 {
        return Err(Corruption::Invalid(format!("{} trailing bytes", r.remaining())));
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Codec;
    use crate::id::Id;
    use crate::pack::BlobKind;

    fn sample() -> Vec<IndexedPack> {
        vec![IndexedPack {
            id: PackId(Id::hash(b"pack")),
            len: 1000,
            entries: vec![
                PackEntry {
                    id: Id::hash(b"a"),
                    kind: BlobKind::Data,
                    codec: Codec::Zstd,
                    offset: 0,
                    stored_len: 100,
                    raw_len: 300,
                },
                PackEntry {
                    id: Id::hash(b"b"),
                    kind: BlobKind::Tree,
                    codec: Codec::Raw,
                    offset: 148,
                    stored_len: 50,
                    raw_len: 50,
                },
            ],
        }]
    }

    #[test]
    fn index_file_round_trips() {
        let bytes = encode_index_file(&sample(), crate::FORMAT_VERSION);
        assert_eq!(bytes.len(), 16 + 48 + 2 * 56);
        assert_eq!(decode_index_file(&bytes).unwrap(), sample());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_index_files_round_trip(
            packs in proptest::collection::vec(
                (proptest::num::u64::ANY, proptest::collection::vec((0u32..1 << 20, 1u32..1 << 20, 0u8..3, proptest::bool::ANY), 0..20)),
                0..5,
            )
        ) {
            let packs: Vec<IndexedPack> = packs
                .into_iter()
                .map(|(seed, blobs)| {
                    let mut offset = 0u64;
                    let entries: Vec<PackEntry> = blobs
                        .into_iter()
                        .map(|(stored_len, raw, kind, zstd)| {
                            let e = PackEntry {
                                id: Id::hash(&offset.to_le_bytes()),
                                kind: BlobKind::from_tag(kind).unwrap(),
                                codec: if zstd { Codec::Zstd } else { Codec::Raw },
                                offset,
                                stored_len,
                                raw_len: if zstd { raw } else { stored_len },
                            };
                            offset = e.end();
                            e
                        })
                        .collect();
                    IndexedPack { id: PackId(Id::hash(&seed.to_le_bytes())), len: offset + 64, entries }
                })
                .collect();
            let bytes = encode_index_file(&packs, crate::FORMAT_VERSION);
            proptest::prop_assert_eq!(decode_index_file(&bytes).unwrap(), packs);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_index_file(&sample(), crate::FORMAT_VERSION);
        for n in 0..bytes.len() {
            assert!(decode_index_file(&bytes[..n]).is_err(), "prefix of {n} bytes accepted");
        }
    }

    /// Found by the `index_file` fuzz target: an entry offset near `u64::MAX` overflowed the
    /// end computation (a panic with overflow checks).
    #[test]
    fn entry_offset_near_the_end_of_u64_is_refused() {
        let mut packs = sample();
        packs[0].entries[1].offset = u64::MAX - 20;
        let err = decode_index_file(&encode_index_file(&packs, crate::FORMAT_VERSION)).unwrap_err();
        assert!(matches!(err, Corruption::Invalid(_)), "got {err:?}");
    }

    #[test]
    fn huge_blob_count_is_refused_without_allocating() {
        let mut bytes = encode_index_file(&sample(), crate::FORMAT_VERSION);
        // blob_count field of the first pack record.
        bytes[16 + 40..16 + 44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_index_file(&bytes), Err(Corruption::Truncated { .. })));
    }
}
