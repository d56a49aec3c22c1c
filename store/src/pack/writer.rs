//! Writing packs.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{
    blob_header, encode_blob, encode_entry, encode_footer, trailer_aad, BlobKind, Footer, PackEntry,
};
use super::reader::check_blob;
use crate::compress::{Codec, Compressor, Effort};
use crate::crypto::Crypto;
use crate::error::{Corruption, Error, IoContext, ObjectRef, Result};
use crate::fs::{commit_temp, create_temp, ensure_dir};
use crate::id::{Id, PackId};

/// A blob compressed and framed with its header, ready to append to a pack.
pub struct EncodedBlob {
    /// BLAKE3 of the raw bytes.
    pub id: Id,
    /// What the blob holds.
    pub kind: BlobKind,
    /// How the bytes are stored.
    pub codec: Codec,
    /// Bytes before compression.
    pub raw_len: u32,
    /// Header followed by the stored bytes.
    pub bytes: Vec<u8>,
}

impl EncodedBlob {
    /// Compresses `raw` (whose id is `id`), seals it with `crypto` (when encrypted) and frames
    /// it.
    ///
    /// # Errors
    /// No random nonce could be had.
    pub fn encode(
        id: Id,
        kind: BlobKind,
        raw: &[u8],
        compressor: &mut Compressor,
        crypto: &Crypto,
    ) -> Result<Self> {
        Self::encode_at(id, kind, raw, Effort::Configured, compressor, crypto)
    }

    /// [`EncodedBlob::encode`] at the level `effort` names. The compressor writes straight
    /// after room left for the header (and the nonce), sealing works in place, and the header
    /// is filled in last.
    ///
    /// # Errors
    /// No random nonce could be had.
    pub fn encode_at(
        id: Id,
        kind: BlobKind,
        raw: &[u8],
        effort: Effort,
        compressor: &mut Compressor,
        crypto: &Crypto,
    ) -> Result<Self> {
        let mut bytes = Vec::new();
        let at = super::BLOB_HEADER_LEN + crypto.nonce_room();
        let codec = compressor.compress_after(effort, raw, &mut bytes, at);
        let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
        Self::finish_len(id, kind, codec, raw_len, bytes, crypto)
    }

    /// Seals (when encrypted) and frames bytes `compressed` with `codec` from `raw`.
    ///
    /// # Errors
    /// No random nonce could be had.
    pub fn from_compressed(
        id: Id,
        kind: BlobKind,
        codec: Codec,
        raw_len: u32,
        compressed: &[u8],
        crypto: &Crypto,
    ) -> Result<Self> {
        let at = super::BLOB_HEADER_LEN + crypto.nonce_room();
        let mut bytes = Vec::with_capacity(at + compressed.len() + crypto.overhead());
        bytes.resize(at, 0);
        bytes.extend_from_slice(compressed);
        Self::finish_len(id, kind, codec, raw_len, bytes, crypto)
    }

    /// `bytes`: room for the header and nonce, then the compressed bytes.
    fn finish_len(
        id: Id,
        kind: BlobKind,
        codec: Codec,
        raw_len: u32,
        mut bytes: Vec<u8>,
        crypto: &Crypto,
    ) -> Result<Self> {
        crypto.seal_blob(
            id,
            kind as u8,
            codec as u8,
            raw_len,
            &mut bytes,
            super::BLOB_HEADER_LEN,
        )?;
        let stored_len = bytes.len() - super::BLOB_HEADER_LEN;
        let header = blob_header(id, kind, codec, raw_len, stored_len);
        if let Some(room) = bytes.get_mut(..super::BLOB_HEADER_LEN) {
            room.copy_from_slice(&header);
        }
        Ok(EncodedBlob { id, kind, codec, raw_len, bytes })
    }

    /// Frames stored bytes (compressed with `codec` from `raw_len` raw bytes, and sealed when
    /// the repository is encrypted) as they are: what a repack copies from another pack.
    #[must_use]
    pub fn from_stored(id: Id, kind: BlobKind, codec: Codec, raw_len: u32, stored: &[u8]) -> Self {
        let bytes = encode_blob(id, kind, codec, raw_len, stored);
        EncodedBlob { id, kind, codec, raw_len, bytes }
    }

    /// Bytes stored after the header.
    #[must_use]
    pub fn stored_len(&self) -> u32 {
        u32::try_from(self.bytes.len() - super::BLOB_HEADER_LEN).unwrap_or(u32::MAX)
    }
}

/// A pack that is durable under its final name.
#[derive(Debug, Clone)]
pub struct SealedPack {
    /// BLAKE3 of the whole pack file.
    pub id: PackId,
    /// Length of the pack file.
    pub len: u64,
    /// The blobs in it, in offset order.
    pub entries: Vec<PackEntry>,
}

/// Builds one pack in a temp file.
///
/// Durability contract: nothing is visible under a final name until [`PackWriter::seal`]
/// returns, and then the pack is fsynced and its directory entry is fsynced. Dropping an
/// unsealed writer removes its temp file.
pub struct PackWriter {
    file: File,
    temp: PathBuf,
    len: u64,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
    sealed: bool,
    version: u32,
    crypto: Crypto,
}

impl PackWriter {
    /// Starts a pack of format `version` (the repository's) in a new temp file in `tmp_dir`;
    /// its blobs are sealed with `crypto` (its trailer is sealed, and every blob verified, with
    /// it too).
    ///
    /// # Errors
    /// The temp file cannot be created.
    pub fn create(tmp_dir: &Path, version: u32, crypto: &Crypto) -> Result<Self> {
        let (file, temp) = create_temp(tmp_dir, "pack")?;
        Ok(PackWriter {
            version,
            crypto: crypto.clone(),
            file,
            temp,
            len: 0,
            hasher: blake3::Hasher::new(),
            entries: Vec::new(),
            sealed: false,
        })
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no blob was added.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends a blob.
    ///
    /// # Errors
    /// A failed write; the writer must then be dropped, not sealed.
    pub fn add(&mut self, blob: &EncodedBlob) -> Result<()> {
        self.file.write_all(&blob.bytes).at(&self.temp)?;
        self.hasher.update(&blob.bytes);
        self.entries.push(PackEntry {
            id: blob.id,
            kind: blob.kind,
            codec: blob.codec,
            offset: self.len,
            stored_len: blob.stored_len(),
            raw_len: blob.raw_len,
        });
        self.len += blob.bytes.len() as u64;
        Ok(())
    }

    /// Writes the trailer and footer, verifies every blob (read back, decompress, re-hash),
    /// then makes the pack durable under `dest(id)`: fsync the file, rename, fsync the directory.
    ///
    /// # Errors
    /// A failed write, fsync or rename, or a blob that does not verify.
    pub fn seal(self, dest: impl FnOnce(PackId) -> PathBuf) -> Result<SealedPack> {
        self.seal_with(|id, file, temp| {
            let dest = dest(id);
            if let Some(dir) = dest.parent() {
                ensure_dir(dir)?;
            }
            commit_temp(file, temp, &dest, "pack")
        })
    }

    /// As [`PackWriter::seal`], but the verified pack is put in place by `put(id, file, temp)`,
    /// which must make it durable (and take the temp file away) before it returns.
    ///
    /// # Errors
    /// A failed write, a blob that does not verify, or what `put` returns.
    pub fn seal_with(
        mut self,
        put: impl FnOnce(PackId, &File, &Path) -> Result<()>,
    ) -> Result<SealedPack> {
        let mut trailer = Vec::with_capacity(self.entries.len() * super::TRAILER_ENTRY_LEN);
        for e in &self.entries {
            encode_entry(e, &mut trailer);
        }
        let blob_count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        let aad = trailer_aad(self.version, blob_count, self.len);
        let trailer = self.crypto.seal_trailer(&aad, trailer)?;
        let footer = encode_footer(&Footer {
            version: self.version,
            blob_count,
            trailer_offset: self.len,
            trailer_hash: Id::hash(&trailer),
        });
        self.file.write_all(&trailer).at(&self.temp)?;
        self.file.write_all(&footer).at(&self.temp)?;
        self.hasher.update(&trailer);
        self.hasher.update(&footer);
        let len = self.len + trailer.len() as u64 + footer.len() as u64;
        let id = PackId(Id::from_bytes(*self.hasher.finalize().as_bytes()));

        // Read back what the file holds (from the page cache) and verify every blob before
        // the pack gets a name anything can reference.
        verify_written(&self.crypto, &self.file, &self.temp, &self.entries, id)?;

        crate::crash::point("pack", "verified");
        put(id, &self.file, &self.temp)?;
        self.sealed = true;
        Ok(SealedPack { id, len, entries: std::mem::take(&mut self.entries) })
    }
}

/// The pack is read back through mappings of at most this many bytes (a blob larger than that
/// gets a window of its own): mapped pages count in the process's RSS while mapped.
const VERIFY_WINDOW: u64 = 4 << 20;

/// Verifies every blob as the file holds it: decompressed and re-hashed against its id. The file
/// is mapped a window at a time rather than copied out with `pread` (the copy cost 1.8% of a
/// snapshot's CPU time).
fn verify_written(
    crypto: &Crypto,
    file: &File,
    temp: &Path,
    entries: &[PackEntry],
    pack: PackId,
) -> Result<()> {
    let page = rustix::param::page_size() as u64;
    let mut raw = Vec::new();
    let mut rest = entries;
    while let Some(first) = rest.first() {
        let start = first.offset / page * page;
        let n = rest.iter().take_while(|e| e.end() - start <= VERIFY_WINDOW).count().max(1);
        let (window, after) = rest.split_at(n);
        let end = window.last().map_or(start, PackEntry::end);
        let len = usize::try_from(end - start).unwrap_or(usize::MAX);
        let map = map_written(file, start, len).at(temp)?;
        for e in window {
            let at = |o: u64| usize::try_from(o - start).unwrap_or(usize::MAX);
            let bad = |reason| {
                Error::corrupt(ObjectRef::Blob { pack, id: e.id, offset: e.offset }, reason)
            };
            let frame = map
                .get(at(e.offset)..at(e.end()))
                .ok_or_else(|| bad(Corruption::Invalid("blob beyond the pack's end".into())))?;
            check_blob(crypto, frame, e, &mut raw).map_err(bad)?;
        }
        rest = after;
    }
    Ok(())
}

/// Maps `len` bytes of a pack this process has just written, read-only, from `offset`.
#[allow(unsafe_code)]
fn map_written(file: &File, offset: u64, len: usize) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and lives only while `verify_written` reads it as a byte
    // slice. The file is a temp file this writer created, wrote to the end and still holds
    // open; nothing else writes or truncates it (prune unlinks temp files, under the exclusive
    // lock, and unlinking leaves an open file whole), so every mapped byte stays backed by the
    // file for the mapping's life.
    unsafe { memmap2::MmapOptions::new().offset(offset).len(len).map(file) }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;

    /// Incompressible blobs (stored raw), each `len` bytes.
    fn noise(seed: u8, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        blake3::Hasher::new().update(&[seed]).finalize_xof().fill(&mut v);
        v
    }

    fn writer_with(dir: &Path, blobs: &[Vec<u8>]) -> PackWriter {
        let plain = Crypto::plain();
        let mut w = PackWriter::create(dir, crate::FORMAT_VERSION, &plain).expect("temp pack");
        let mut c = Compressor::new(3).expect("level 3");
        for raw in blobs {
            let blob = EncodedBlob::encode(Id::hash(raw), BlobKind::Data, raw, &mut c, &plain)
                .expect("encode");
            w.add(&blob).expect("add");
        }
        w
    }

    #[test]
    fn seal_reads_back_every_window_and_refuses_a_damaged_blob() {
        // 14 blobs of 512 KiB span two verification windows; one of 5 MiB needs its own.
        let mut blobs: Vec<Vec<u8>> = (0..14).map(|i| noise(i, 512 << 10)).collect();
        blobs.push(noise(99, 5 << 20));
        let dir = tempfile::tempdir().expect("tempdir");
        let sealed = writer_with(dir.path(), &blobs)
            .seal(|id| dir.path().join(format!("{id}.pack")))
            .expect("an intact pack seals");
        assert_eq!(sealed.entries.len(), blobs.len());

        // The same blobs, with one byte of the file changed after it was written: in the second
        // window, then in the large blob. Each time the seal names that blob and leaves nothing.
        for victim in [10usize, 14] {
            let dir = tempfile::tempdir().expect("tempdir");
            let w = writer_with(dir.path(), &blobs);
            let e = w.entries[victim];
            let at = e.offset + BLOB_HEADER_LEN_U64 + u64::from(e.stored_len) / 2;
            let mut byte = [0u8];
            w.file.read_exact_at(&mut byte, at).expect("read");
            w.file.write_all_at(&[byte[0] ^ 0x40], at).expect("write");
            let err = w.seal(|id| dir.path().join(format!("{id}.pack"))).err();
            match err {
                Some(Error::Corrupt { object: ObjectRef::Blob { id, offset, .. }, .. }) => {
                    assert_eq!((id, offset), (e.id, e.offset), "victim {victim}");
                }
                other => panic!("victim {victim}: expected a corrupt blob, got {other:?}"),
            }
            let left = std::fs::read_dir(dir.path()).expect("list").count();
            assert_eq!(left, 0, "victim {victim}: no pack and no temp file is left");
        }
    }

    const BLOB_HEADER_LEN_U64: u64 = super::super::BLOB_HEADER_LEN as u64;
}
