//! Writing packs.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{encode_blob, encode_entry, encode_footer, BlobKind, Footer, PackEntry};
use super::reader::check_blob;
use crate::compress::{Codec, Compressor, Effort};
use crate::error::{Error, IoContext, ObjectRef, Result};
use crate::format::FORMAT_VERSION;
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
    /// Compresses `raw` (whose id is `id`) and frames it. `scratch` is reused between calls.
    #[must_use]
    pub fn encode(
        id: Id,
        kind: BlobKind,
        raw: &[u8],
        compressor: &mut Compressor,
        scratch: &mut Vec<u8>,
    ) -> Self {
        Self::encode_at(id, kind, raw, Effort::Configured, compressor, scratch)
    }

    /// [`EncodedBlob::encode`] at the level `effort` names.
    #[must_use]
    pub fn encode_at(
        id: Id,
        kind: BlobKind,
        raw: &[u8],
        effort: Effort,
        compressor: &mut Compressor,
        scratch: &mut Vec<u8>,
    ) -> Self {
        let codec = compressor.compress_at(effort, raw, scratch);
        let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
        Self::from_stored(id, kind, codec, raw_len, scratch)
    }

    /// Frames bytes already compressed with `codec` from `raw_len` raw bytes.
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
}

impl PackWriter {
    /// Starts a pack in a new temp file in `tmp_dir`.
    ///
    /// # Errors
    /// The temp file cannot be created.
    pub fn create(tmp_dir: &Path) -> Result<Self> {
        let (file, temp) = create_temp(tmp_dir, "pack")?;
        Ok(PackWriter {
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
    pub fn seal(mut self, dest: impl FnOnce(PackId) -> PathBuf) -> Result<SealedPack> {
        let mut trailer = Vec::with_capacity(self.entries.len() * super::TRAILER_ENTRY_LEN);
        for e in &self.entries {
            encode_entry(e, &mut trailer);
        }
        let footer = encode_footer(&Footer {
            version: FORMAT_VERSION,
            blob_count: u32::try_from(self.entries.len()).unwrap_or(u32::MAX),
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
        let mut buf = Vec::new();
        let mut raw = Vec::new();
        for e in &self.entries {
            let n = e.end().saturating_sub(e.offset) as usize;
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let frame = &mut buf[..n];
            self.file.read_exact_at(frame, e.offset).at(&self.temp)?;
            check_blob(frame, e, &mut raw).map_err(|reason| {
                Error::corrupt(ObjectRef::Blob { pack: id, id: e.id, offset: e.offset }, reason)
            })?;
        }

        crate::crash::point("pack", "verified");
        let dest = dest(id);
        if let Some(dir) = dest.parent() {
            ensure_dir(dir)?;
        }
        commit_temp(&self.file, &self.temp, &dest, "pack")?;
        self.sealed = true;
        Ok(SealedPack { id, len, entries: std::mem::take(&mut self.entries) })
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if !self.sealed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
