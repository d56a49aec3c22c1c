//! Reading packs: single blobs by location, and whole packs through their trailer.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{
    decode_blob_header, decode_footer, decode_trailer, PackEntry, BLOB_HEADER_LEN, FOOTER_LEN,
};
use crate::compress::{decompress, Codec};
use crate::crypto::Crypto;
use crate::error::{Corruption, Error, IoContext, ObjectRef, Result};
use crate::id::{Id, PackId};

/// A pack open for reading at offsets, wherever it is kept.
pub trait PackSource: Send + Sync {
    /// Its length in bytes.
    fn size(&self) -> u64;

    /// Fills `buf` with the bytes from `offset` (`UnexpectedEof` past the end).
    ///
    /// # Errors
    /// The read fails, or the pack is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;

    /// Reads `offset..offset + len` once, in order, giving `each` the bytes a piece at a time
    /// (never the whole range at once: a local file in pieces of [`IN_ORDER_PIECE`], object
    /// storage as one GET whose body arrives). Nothing is kept for later reads.
    ///
    /// # Errors
    /// The read fails, or the pack is shorter (`UnexpectedEof`).
    fn read_in_order(
        &self,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let mut buf = vec![0u8; usize::try_from(len.min(IN_ORDER_PIECE)).unwrap_or(0)];
        let mut at = offset;
        let end = offset.saturating_add(len);
        while at < end {
            let n = usize::try_from(end - at).map_or(buf.len(), |left| left.min(buf.len()));
            self.read_exact_at(&mut buf[..n], at)?;
            each(&buf[..n]);
            at += n as u64;
        }
        Ok(())
    }
}

/// The pieces a local pack is read in order in ([`PackSource::read_in_order`]).
pub const IN_ORDER_PIECE: u64 = 1 << 20;

/// Bytes of a pack held in memory (one blob's frame, or a stretch of several), read as if at
/// `offset` of their pack; a read outside them is `UnexpectedEof`.
pub struct FrameAt<B = Vec<u8>> {
    /// Where the bytes are in their pack.
    pub offset: u64,
    /// The bytes: a frame (header and stored bytes), or several.
    pub bytes: B,
}

impl<B: AsRef<[u8]> + Send + Sync> PackSource for FrameAt<B> {
    fn size(&self) -> u64 {
        self.offset.saturating_add(self.bytes.as_ref().len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let from = offset.checked_sub(self.offset).and_then(|f| usize::try_from(f).ok());
        match from.and_then(|f| self.bytes.as_ref().get(f..f.checked_add(buf.len())?)) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => {
                Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "outside the frame"))
            }
        }
    }
}

/// A pack in a local file.
#[derive(Debug)]
pub struct LocalPack {
    file: File,
    size: u64,
}

impl LocalPack {
    /// Opens the pack file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] naming `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).at(path)?;
        let size = file.metadata().at(path)?.len();
        Ok(LocalPack { file, size })
    }
}

impl PackSource for LocalPack {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

/// The stored bytes of `frame` (header + stored bytes), once its header is the one `entry`
/// describes.
fn stored_part<'f>(frame: &'f [u8], entry: &PackEntry) -> Result<&'f [u8], Corruption> {
    let header = decode_blob_header(frame, entry.offset)?;
    if header.id != entry.id
        || header.kind != entry.kind
        || header.codec != entry.codec
        || header.stored_len != entry.stored_len
        || header.raw_len != entry.raw_len
    {
        return Err(Corruption::Invalid(format!(
            "blob header ({}, {:?}, {} bytes) does not match the index ({}, {:?}, {} bytes)",
            header.id, header.kind, header.stored_len, entry.id, entry.kind, entry.stored_len
        )));
    }
    let stored = frame.get(BLOB_HEADER_LEN..).unwrap_or_default();
    if stored.len() != entry.stored_len as usize {
        return Err(Corruption::Truncated {
            offset: entry.offset.saturating_add(BLOB_HEADER_LEN as u64),
            needed: u64::from(entry.stored_len),
            len: stored.len() as u64,
        });
    }
    Ok(stored)
}

thread_local! {
    /// The opened (decrypted) bytes of the last sealed blob this thread read.
    static OPENED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Opens `stored` (when sealed), decompresses it into `raw` and checks the result against
/// `entry`'s id.
fn decompressed_matches(
    crypto: &Crypto,
    entry: &PackEntry,
    stored: &[u8],
    raw: &mut Vec<u8>,
) -> Result<(), Corruption> {
    if crypto.is_encrypted() {
        OPENED.with(|cell| {
            let mut opened = cell.borrow_mut();
            let compressed = crypto.open_blob(
                entry.id,
                entry.kind as u8,
                entry.codec as u8,
                entry.raw_len,
                stored,
                &mut opened,
            )?;
            decompress(entry.codec, compressed, entry.raw_len, raw)
        })?;
    } else {
        decompress(entry.codec, stored, entry.raw_len, raw)?;
    }
    hash_matches(crypto, entry, raw)
}

fn hash_matches(crypto: &Crypto, entry: &PackEntry, raw: &[u8]) -> Result<(), Corruption> {
    let actual = crypto.id(raw);
    if actual != entry.id {
        return Err(Corruption::HashMismatch { expected: entry.id, actual });
    }
    Ok(())
}

/// Checks that `frame` (header + stored bytes) is the blob `entry` describes and that its raw
/// bytes hash to its id; leaves the raw bytes in `raw`.
pub(crate) fn verify_blob(
    crypto: &Crypto,
    frame: &[u8],
    entry: &PackEntry,
    raw: &mut Vec<u8>,
) -> Result<(), Corruption> {
    decompressed_matches(crypto, entry, stored_part(frame, entry)?, raw)
}

/// [`verify_blob`] for callers that do not need the raw bytes: a blob stored raw is hashed
/// where it lies instead of being copied first (media, stored raw, is a third of a
/// contentstore). `scratch` holds decompressed bytes.
pub(crate) fn check_blob(
    crypto: &Crypto,
    frame: &[u8],
    entry: &PackEntry,
    scratch: &mut Vec<u8>,
) -> Result<(), Corruption> {
    let stored = stored_part(frame, entry)?;
    if entry.codec == Codec::Raw && !crypto.is_encrypted() && stored.len() == entry.raw_len as usize
    {
        return hash_matches(crypto, entry, stored);
    }
    decompressed_matches(crypto, entry, stored, scratch)
}

/// Reads the blob `entry` from the open pack `file`, opens it with `crypto` (when sealed),
/// verifies it against its id, and leaves its raw bytes in `raw`. `frame` is a reusable read
/// buffer. `path` names the pack in an I/O error (made only then: a path per blob read was 2%
/// of a restore of small files).
///
/// # Errors
/// [`Error::Io`] when the read fails, [`Error::Corrupt`] naming the pack, blob and offset when
/// the bytes are short or do not verify.
pub fn read_blob(
    crypto: &Crypto,
    file: &dyn PackSource,
    path: impl FnOnce() -> std::path::PathBuf,
    pack: PackId,
    entry: &PackEntry,
    frame: &mut Vec<u8>,
    raw: &mut Vec<u8>,
) -> Result<()> {
    let corrupt = |reason| {
        Error::corrupt(ObjectRef::Blob { pack, id: entry.id, offset: entry.offset }, reason)
    };
    let len = BLOB_HEADER_LEN + entry.stored_len as usize;
    // Only new bytes are zeroed: zeroing the whole buffer for every blob cost 3% of a snapshot.
    if frame.len() < len {
        frame.resize(len, 0);
    } else {
        frame.truncate(len);
    }
    match file.read_exact_at(frame, entry.offset) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            let file_len = file.size();
            return Err(corrupt(Corruption::Truncated {
                offset: entry.offset,
                needed: len as u64,
                len: file_len.saturating_sub(entry.offset),
            }));
        }
        Err(e) => return Err(e).at(path()),
    }
    verify_blob(crypto, frame, entry, raw).map_err(corrupt)
}

/// Window of a pack held in memory while salvaging: 4 MiB, or one whole blob when larger.
const SALVAGE_WINDOW: usize = 4 << 20;

/// The intact blobs of a pack, found without trusting its trailer: from offset 0, a blob header
/// that decodes (magic, kind, codec, checksum) and whose blob verifies (decompressed to its
/// length, hashed to its id) is taken and the scan moves past it; anywhere else the scan moves
/// one byte on, so blobs after a damaged stretch are found again. Calls `found` with each blob's
/// entry and frame (header and stored bytes, as a pack holds them). Memory: one window of [`SALVAGE_WINDOW`] bytes (or one blob).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read; what `found` returns.
pub(crate) fn salvage_blobs(
    crypto: &Crypto,
    file: &dyn PackSource,
    path: &Path,
    mut found: impl FnMut(&PackEntry, &[u8]) -> Result<()>,
) -> Result<()> {
    let len = file.size();
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = 0u64;
    let mut raw = Vec::new();
    // The bytes `[offset, offset + n)`, from the window (refilled as needed); `None` past the end.
    let mut bytes_at =
        |offset: u64, n: usize, window: &mut Vec<u8>| -> Result<Option<(usize, usize)>> {
            let end = offset.saturating_add(n as u64);
            if end > len {
                return Ok(None);
            }
            let inside = offset >= window_start && end <= window_start + window.len() as u64;
            if !inside {
                let size =
                    n.max(SALVAGE_WINDOW).min(usize::try_from(len - offset).unwrap_or(usize::MAX));
                window.resize(size, 0);
                file.read_exact_at(window, offset).at(path)?;
                window_start = offset;
            }
            let from = usize::try_from(offset - window_start).unwrap_or(usize::MAX);
            Ok(Some((from, from + n)))
        };
    let mut offset = 0u64;
    while let Some((a, b)) = bytes_at(offset, BLOB_HEADER_LEN, &mut window)? {
        let header = window.get(a..b).and_then(|h| decode_blob_header(h, offset).ok());
        let Some(header) = header else {
            offset += 1;
            continue;
        };
        let entry = PackEntry {
            id: header.id,
            kind: header.kind,
            codec: header.codec,
            offset,
            stored_len: header.stored_len,
            raw_len: header.raw_len,
        };
        let frame_len = BLOB_HEADER_LEN + header.stored_len as usize;
        let verified = match bytes_at(offset, frame_len, &mut window)? {
            Some((a, b)) => window
                .get(a..b)
                .filter(|f| verify_blob(crypto, f, &entry, &mut raw).is_ok())
                .map(|_| (a, b)),
            None => None,
        };
        match verified {
            Some((a, b)) => {
                found(&entry, window.get(a..b).unwrap_or_default())?;
                offset = entry.end();
            }
            None => offset += 1,
        }
    }
    Ok(())
}

/// The blobs listed by the trailer of a whole pack held in `bytes` (footer and trailer decoded
/// and checked as [`PackReader::open`] does).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn entries_in(bytes: &[u8], crypto: &Crypto) -> Result<Vec<PackEntry>, Corruption> {
    let len = bytes.len() as u64;
    let tail = bytes
        .len()
        .checked_sub(FOOTER_LEN)
        .and_then(|n| bytes.get(n..))
        .ok_or(Corruption::Truncated { offset: 0, needed: FOOTER_LEN as u64, len })?;
    let footer = decode_footer(tail, len, crypto.overhead())?;
    let trailer = bytes
        .get(footer.trailer_offset as usize..bytes.len() - FOOTER_LEN)
        .ok_or_else(|| Corruption::Invalid("trailer offset beyond the footer".into()))?;
    decode_trailer(trailer, &footer, crypto)
}

/// The blobs listed by the trailer of `source`: its footer and trailer read and checked.
/// `Ok(Err(_))` when they do not decode.
fn read_tail(
    source: &dyn PackSource,
    crypto: &Crypto,
) -> std::io::Result<Result<Vec<PackEntry>, Corruption>> {
    let len = source.size();
    if len < FOOTER_LEN as u64 {
        return Ok(Err(Corruption::Truncated { offset: 0, needed: FOOTER_LEN as u64, len }));
    }
    let mut footer_bytes = [0u8; FOOTER_LEN];
    source.read_exact_at(&mut footer_bytes, len - FOOTER_LEN as u64)?;
    let footer = match decode_footer(&footer_bytes, len, crypto.overhead()) {
        Ok(f) => f,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut trailer = vec![0u8; (len - FOOTER_LEN as u64 - footer.trailer_offset) as usize];
    source.read_exact_at(&mut trailer, footer.trailer_offset)?;
    Ok(decode_trailer(&trailer, &footer, crypto))
}

/// Verifies pack `source` as [`verify_pack`] does a pack held whole, without holding it: the
/// footer and trailer are read first, then the file once from its start, in order
/// ([`PackSource::read_in_order`]), hashed as it goes, each blob verified as soon as its frame
/// is in. Only the frames of blobs not yet verified are held (a pack's blobs follow one
/// another, so about one at a time). `Ok(Err(_))`: the trailer cannot be read.
///
/// # Errors
/// A read fails.
pub(crate) fn verify_pack_in_order(
    source: &dyn PackSource,
    crypto: &Crypto,
) -> std::io::Result<Result<PackVerdict, Corruption>> {
    let entries = match read_tail(source, crypto)? {
        Ok(entries) => entries,
        Err(reason) => return Ok(Err(reason)),
    };
    let mut order: Vec<&PackEntry> = entries.iter().collect();
    order.sort_by_key(|e| e.offset);
    let mut pending = order.into_iter().peekable();
    let mut bad = Vec::new();
    let mut scratch = Vec::new();
    let mut hasher = blake3::Hasher::new();
    // `held` is the file from `held_from` to `pos`, kept while a pending blob starts in it.
    let (mut held, mut held_from, mut pos) = (Vec::new(), 0u64, 0u64);
    source.read_in_order(0, source.size(), &mut |piece| {
        hasher.update(piece);
        let start = pos;
        pos += piece.len() as u64;
        if let Some(first) = pending.peek().map(|e| e.offset) {
            if held.is_empty() {
                held_from = first.max(start);
            }
            let skip = usize::try_from(held_from.saturating_sub(start)).unwrap_or(usize::MAX);
            held.extend_from_slice(piece.get(skip..).unwrap_or_default());
        }
        while let Some(e) = pending.next_if(|e| e.end() <= pos) {
            let at = |offset: u64| offset.checked_sub(held_from).map(usize::try_from);
            let frame = match (at(e.offset), at(e.end())) {
                (Some(Ok(a)), Some(Ok(b))) => held.get(a..b).unwrap_or_default(),
                _ => &[],
            };
            if let Err(reason) = check_blob(crypto, frame, e, &mut scratch) {
                bad.push((*e, reason));
            }
        }
        match pending.peek().map(|e| e.offset) {
            Some(next) if next < pos => {
                held.drain(..usize::try_from(next - held_from).unwrap_or(0));
                held_from = next;
            }
            _ => held.clear(),
        }
    })?;
    // Blobs the trailer places past the end of the file: their frames are not there.
    for e in pending {
        if let Err(reason) = check_blob(crypto, &[], e, &mut scratch) {
            bad.push((*e, reason));
        }
    }
    Ok(Ok(PackVerdict { entries, bad, hash: Id::from_bytes(*hasher.finalize().as_bytes()) }))
}

/// A pack held in memory that gives its bytes in order in pieces of `piece` bytes (tests and
/// fuzzing: [`verify_pack_in_order`] must find what [`verify_pack`] does, however the bytes
/// arrive).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) struct InPieces<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) piece: usize,
}

#[cfg(any(test, feature = "fuzzing"))]
impl PackSource for InPieces<'_> {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let held = usize::try_from(offset).ok().and_then(|o| self.bytes.get(o..o + buf.len()));
        buf.copy_from_slice(held.ok_or(std::io::ErrorKind::UnexpectedEof)?);
        Ok(())
    }

    fn read_in_order(
        &self,
        offset: u64,
        len: u64,
        each: &mut dyn FnMut(&[u8]),
    ) -> std::io::Result<()> {
        let range = usize::try_from(offset).ok().zip(usize::try_from(offset + len).ok());
        let held = range.and_then(|(a, b)| self.bytes.get(a..b));
        held.ok_or(std::io::ErrorKind::UnexpectedEof)?.chunks(self.piece.max(1)).for_each(each);
        Ok(())
    }
}

/// Panics unless [`verify_pack_in_order`], given `bytes` in pieces of `piece` bytes, finds
/// what [`verify_pack`] finds holding them whole. Whether every blob verifies.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn streamed_agrees(bytes: &[u8], crypto: &Crypto, piece: usize) -> bool {
    let whole = verify_pack(bytes, crypto);
    let streamed = verify_pack_in_order(&InPieces { bytes, piece }, crypto);
    let bad = |v: &PackVerdict| {
        let mut bad: Vec<_> = v.bad.iter().map(|(e, r)| (e.offset, e.id, r.to_string())).collect();
        bad.sort();
        bad
    };
    match (whole, streamed) {
        (Ok(a), Ok(Ok(b))) => {
            assert_eq!((a.hash, &a.entries, bad(&a)), (b.hash, &b.entries, bad(&b)));
            a.bad.is_empty()
        }
        (Err(a), Ok(Err(b))) => {
            assert_eq!(a.to_string(), b.to_string());
            false
        }
        (a, b) => {
            panic!("whole: {:?}, in pieces: {:?}", a.map(|v| v.hash), b.map(|v| v.map(|v| v.hash)))
        }
    }
}

/// What reading a whole pack found (see [`verify_pack`]).
pub(crate) struct PackVerdict {
    /// The blobs its trailer lists.
    pub(crate) entries: Vec<PackEntry>,
    /// Those that do not verify, with why.
    pub(crate) bad: Vec<(PackEntry, Corruption)>,
    /// BLAKE3 of the whole file (its id, when intact).
    pub(crate) hash: Id,
}

/// Verifies a whole pack held in `bytes`: footer and trailer, then every blob (raw blobs hashed
/// where they lie). An error means the trailer cannot be read. (What
/// [`verify_pack_in_order`] must find without holding the pack.)
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn verify_pack(bytes: &[u8], crypto: &Crypto) -> Result<PackVerdict, Corruption> {
    let entries = entries_in(bytes, crypto)?;
    let mut bad = Vec::new();
    let mut scratch = Vec::new();
    for e in &entries {
        let frame = usize::try_from(e.offset)
            .ok()
            .zip(usize::try_from(e.end()).ok())
            .and_then(|(a, b)| bytes.get(a..b))
            .unwrap_or_default();
        if let Err(reason) = check_blob(crypto, frame, e, &mut scratch) {
            bad.push((*e, reason));
        }
    }
    Ok(PackVerdict { entries, bad, hash: Id::hash(bytes) })
}

/// An open pack whose footer and trailer have been read and checked.
pub struct PackReader {
    source: std::sync::Arc<dyn PackSource>,
    entries: Vec<PackEntry>,
}

impl PackReader {
    /// Opens the pack file at `path`, expected to have id `id`, and reads its trailer.
    ///
    /// # Errors
    /// As [`PackReader::new`].
    pub fn open(path: &Path, id: PackId, crypto: &Crypto) -> Result<Self> {
        Self::new(std::sync::Arc::new(LocalPack::open(path)?), path, id, crypto)
    }

    /// Reads and checks the footer and trailer of `source`, pack `id` (at `path`, for errors).
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the pack for a bad footer or trailer; [`Error::Io`].
    pub fn new(
        source: std::sync::Arc<dyn PackSource>,
        path: &Path,
        id: PackId,
        crypto: &Crypto,
    ) -> Result<Self> {
        let entries = read_tail(source.as_ref(), crypto)
            .at(path)?
            .map_err(|reason| Error::corrupt(ObjectRef::Pack(id), reason))?;
        Ok(PackReader { source, entries })
    }

    /// The blobs in the pack, in offset order.
    #[must_use]
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }

    /// Length of the pack.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.source.size()
    }

    /// Whether the pack holds no blobs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The open pack.
    #[must_use]
    pub fn file(&self) -> &dyn PackSource {
        self.source.as_ref()
    }
}
