//! Byte layout of packs (FORMAT.md §5). Every offset and length here is normative.

use crate::compress::Codec;
use crate::crypto::Crypto;
use crate::error::Corruption;
use crate::format::{check_version, short_checksum, ByteReader};
use crate::id::{Id, ID_LEN};

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum BlobKind {
    /// File content.
    Data = 0,
    /// A directory listing, or one page of one (FORMAT.md §6).
    Tree = 1,
    /// A list of chunk ids of a large file (FORMAT.md §6.3).
    ChunkList = 2,
}

impl BlobKind {
    pub(crate) fn from_tag(tag: u8) -> Result<Self, Corruption> {
        match tag {
            0 => Ok(BlobKind::Data),
            1 => Ok(BlobKind::Tree),
            2 => Ok(BlobKind::ChunkList),
            t => Err(Corruption::Invalid(format!("unknown blob kind {t}"))),
        }
    }
}

/// Magic of a blob header: `sb`. Do not modify; a new layout gets a new magic.
pub(crate) const BLOB_MAGIC: [u8; 2] = *b"sb";
/// Magic of a pack footer: `STOREPAK`. Do not modify.
pub(crate) const PACK_MAGIC: [u8; 8] = *b"STOREPAK";

/// Bytes of a blob header.
pub const BLOB_HEADER_LEN: usize = 48;
/// Bytes of one trailer entry.
pub const TRAILER_ENTRY_LEN: usize = 56;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 64;

const _: () = assert!(BLOB_HEADER_LEN == 2 + 1 + 1 + 4 + 4 + ID_LEN + 4);
const _: () = assert!(TRAILER_ENTRY_LEN == ID_LEN + 8 + 4 + 4 + 1 + 1 + 6);
const _: () = assert!(FOOTER_LEN == 8 + 4 + 4 + 8 + ID_LEN + 8);

/// One blob in a pack, as listed in the trailer and in index files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// BLAKE3 of the raw bytes.
    pub id: Id,
    /// What the blob holds.
    pub kind: BlobKind,
    /// How the bytes are stored.
    pub codec: Codec,
    /// Offset of the blob's header in the pack.
    pub offset: u64,
    /// Bytes stored after the header.
    pub stored_len: u32,
    /// Bytes after decompression.
    pub raw_len: u32,
}

impl PackEntry {
    /// Offset just past the blob's stored bytes (saturating: a hostile offset near `u64::MAX`
    /// yields an end no file has, which the decoders refuse).
    #[must_use]
    pub fn end(&self) -> u64 {
        self.offset
            .saturating_add(BLOB_HEADER_LEN as u64)
            .saturating_add(u64::from(self.stored_len))
    }
}

/// Header + stored bytes of one blob, ready to append to a pack.
pub(crate) fn encode_blob(
    id: Id,
    kind: BlobKind,
    codec: Codec,
    raw_len: u32,
    stored: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOB_HEADER_LEN + stored.len());
    out.extend_from_slice(&blob_header(id, kind, codec, raw_len, stored.len()));
    out.extend_from_slice(stored);
    out
}

/// The header of a blob whose stored bytes are `stored_len` long.
pub(crate) fn blob_header(
    id: Id,
    kind: BlobKind,
    codec: Codec,
    raw_len: u32,
    stored_len: usize,
) -> [u8; BLOB_HEADER_LEN] {
    let mut out = [0u8; BLOB_HEADER_LEN];
    out[0..2].copy_from_slice(&BLOB_MAGIC);
    out[2] = kind as u8;
    out[3] = codec as u8;
    out[4..8].copy_from_slice(&u32::try_from(stored_len).unwrap_or(u32::MAX).to_le_bytes());
    out[8..12].copy_from_slice(&raw_len.to_le_bytes());
    out[12..44].copy_from_slice(id.as_bytes());
    let check = short_checksum(&out[..44]) as u32;
    out[44..48].copy_from_slice(&check.to_le_bytes());
    out
}

/// The fields of a blob header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    pub(crate) kind: BlobKind,
    pub(crate) codec: Codec,
    pub(crate) stored_len: u32,
    pub(crate) raw_len: u32,
    pub(crate) id: Id,
}

pub(crate) fn decode_blob_header(bytes: &[u8], offset: u64) -> Result<BlobHeader, Corruption> {
    let mut r = ByteReader::new(bytes, offset);
    let head = r.take(BLOB_HEADER_LEN - 4)?;
    let check = r.u32()?;
    if check != short_checksum(head) as u32 {
        return Err(Corruption::ChecksumMismatch { what: "blob header" });
    }
    let mut r = ByteReader::new(head, offset);
    r.magic(&BLOB_MAGIC)?;
    let kind = BlobKind::from_tag(r.u8()?)?;
    let codec = Codec::from_tag(r.u8()?)?;
    let stored_len = r.u32()?;
    let raw_len = r.u32()?;
    let id = r.id()?;
    Ok(BlobHeader { kind, codec, stored_len, raw_len, id })
}

/// Appends one trailer / index entry.
pub(crate) fn encode_entry(e: &PackEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(e.id.as_bytes());
    out.extend_from_slice(&e.offset.to_le_bytes());
    out.extend_from_slice(&e.stored_len.to_le_bytes());
    out.extend_from_slice(&e.raw_len.to_le_bytes());
    out.push(e.kind as u8);
    out.push(e.codec as u8);
    out.extend_from_slice(&[0u8; 6]);
}

/// Reads one trailer / index entry.
pub(crate) fn decode_entry(r: &mut ByteReader<'_>) -> Result<PackEntry, Corruption> {
    let id = r.id()?;
    let offset = r.u64()?;
    let stored_len = r.u32()?;
    let raw_len = r.u32()?;
    let kind = BlobKind::from_tag(r.u8()?)?;
    let codec = Codec::from_tag(r.u8()?)?;
    let reserved = r.take(6)?;
    if reserved.iter().any(|&b| b != 0) {
        return Err(Corruption::Invalid("reserved bytes of an entry are not zero".into()));
    }
    // A raw blob stores its raw bytes, sealed or not.
    let sealed_len = u64::from(raw_len) + crate::crypto::SEAL_OVERHEAD as u64;
    if codec == Codec::Raw && stored_len != raw_len && u64::from(stored_len) != sealed_len {
        return Err(Corruption::Invalid(format!(
            "raw blob {id} has stored length {stored_len} and raw length {raw_len}"
        )));
    }
    Ok(PackEntry { id, kind, codec, offset, stored_len, raw_len })
}

/// The footer's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Footer {
    pub(crate) version: u32,
    pub(crate) blob_count: u32,
    pub(crate) trailer_offset: u64,
    pub(crate) trailer_hash: Id,
}

pub(crate) fn encode_footer(f: &Footer) -> [u8; FOOTER_LEN] {
    let mut out = Vec::with_capacity(FOOTER_LEN);
    out.extend_from_slice(&PACK_MAGIC);
    out.extend_from_slice(&f.version.to_le_bytes());
    out.extend_from_slice(&f.blob_count.to_le_bytes());
    out.extend_from_slice(&f.trailer_offset.to_le_bytes());
    out.extend_from_slice(f.trailer_hash.as_bytes());
    let check = short_checksum(&out);
    out.extend_from_slice(&check.to_le_bytes());
    let mut arr = [0u8; FOOTER_LEN];
    arr.copy_from_slice(&out);
    arr
}

/// Decodes a footer: the last [`FOOTER_LEN`] bytes of a pack of `pack_len` bytes, whose trailer
/// is `overhead` bytes longer than its entries (sealed: [`crate::crypto::SEAL_OVERHEAD`]).
pub(crate) fn decode_footer(
    bytes: &[u8],
    pack_len: u64,
    overhead: usize,
) -> Result<Footer, Corruption> {
    let base = pack_len.saturating_sub(FOOTER_LEN as u64);
    let mut r = ByteReader::new(bytes, base);
    let body = r.take(FOOTER_LEN - 8)?;
    let check = r.u64()?;
    let mut r = ByteReader::new(body, base);
    r.magic(&PACK_MAGIC)?;
    if check != short_checksum(body) {
        return Err(Corruption::ChecksumMismatch { what: "pack footer" });
    }
    let version = r.u32()?;
    check_version(version)?;
    let blob_count = r.u32()?;
    let trailer_offset = r.u64()?;
    let trailer_hash = r.id()?;
    let trailer_len = u64::from(blob_count) * TRAILER_ENTRY_LEN as u64 + overhead as u64;
    if trailer_offset.checked_add(trailer_len) != Some(base) {
        return Err(Corruption::Invalid(format!(
            "footer places {blob_count} trailer entries at offset {trailer_offset}, \
             which does not end at the footer ({base})"
        )));
    }
    Ok(Footer { version, blob_count, trailer_offset, trailer_hash })
}

/// What a sealed trailer is bound to: the footer's version, blob count and trailer offset.
pub(crate) fn trailer_aad(version: u32, blob_count: u32, trailer_offset: u64) -> [u8; 24] {
    let mut aad = [0u8; 24];
    aad[..8].copy_from_slice(&PACK_MAGIC);
    aad[8..12].copy_from_slice(&version.to_le_bytes());
    aad[12..16].copy_from_slice(&blob_count.to_le_bytes());
    aad[16..].copy_from_slice(&trailer_offset.to_le_bytes());
    aad
}

/// Decodes and checks a trailer (opened first when sealed): entries in offset order,
/// contiguous from offset 0 up to the trailer, so every blob lies inside the pack and no two
/// overlap.
pub(crate) fn decode_trailer(
    stored: &[u8],
    footer: &Footer,
    crypto: &Crypto,
) -> Result<Vec<PackEntry>, Corruption> {
    let actual = Id::hash(stored);
    if actual != footer.trailer_hash {
        return Err(Corruption::ChecksumMismatch { what: "pack trailer" });
    }
    let aad = trailer_aad(footer.version, footer.blob_count, footer.trailer_offset);
    let bytes = crypto.open_trailer(&aad, stored)?;
    let mut r = ByteReader::new(&bytes, footer.trailer_offset);
    let mut entries = Vec::with_capacity(footer.blob_count.min(1 << 16) as usize);
    let mut next = 0u64;
    for _ in 0..footer.blob_count {
        let e = decode_entry(&mut r)?;
        if e.offset != next {
            return Err(Corruption::Invalid(format!(
                "trailer entry for blob {} starts at {}, expected {next}",
                e.id, e.offset
            )));
        }
        next = e.end();
        entries.push(e);
    }
    if next != footer.trailer_offset || r.remaining() != 0 {
        return Err(Corruption::Invalid("trailer entries do not cover the pack".into()));
    }
    Ok(entries)
}
