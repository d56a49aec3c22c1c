//! The stages after reading: dedup, compression, packing, index files.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::compress::{Codec, Compressor, Effort};
use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use crate::index::{ChunkIndex, IndexedPack};
use crate::pack::{BlobKind, EncodedBlob, PackWriter};
use crate::repo::Repository;

/// Index files are written every this many blobs (about 2.8 MiB of index file).
const INDEX_FLUSH_BLOBS: usize = 50_000;

/// State shared by every stage of one snapshot.
pub(crate) struct Shared {
    error: Mutex<Option<Error>>,
    cancelled: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared { error: Mutex::new(None), cancelled: AtomicBool::new(false) }
    }

    /// Records the first error and tells every stage to stop. [`Error::Cancelled`] is the
    /// echo of another stage's failure and is not recorded.
    pub(crate) fn fail(&self, e: Error) {
        if !matches!(e, Error::Cancelled) {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert(e);
            }
        }
        self.cancel();
    }

    /// Tells every stage to stop.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    pub(crate) fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// Decides whether a blob must be stored: not seen in this session and not in the index.
/// Also remembers every pack the set will depend on (reused or written), so they can be checked
/// just before the manifest is written.
pub(crate) struct Dedup<'a> {
    seen: Mutex<HashSet<Id>>,
    index: &'a ChunkIndex,
    packs: Mutex<HashSet<PackId>>,
}

impl<'a> Dedup<'a> {
    pub(crate) fn new(index: &'a ChunkIndex) -> Self {
        Dedup { seen: Mutex::default(), index, packs: Mutex::default() }
    }

    /// Records that the set depends on `pack`.
    pub(crate) fn note_pack(&self, pack: PackId) {
        if let Ok(mut packs) = self.packs.lock() {
            packs.insert(pack);
        }
    }

    /// Whether blob `id` is indexed; records its pack when it is.
    pub(crate) fn indexed(&self, id: &Id) -> Result<bool> {
        match self.index.get(id)? {
            Some(loc) => {
                self.note_pack(loc.pack);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Every pack the set depends on.
    pub(crate) fn packs(&self) -> Vec<PackId> {
        self.packs.lock().map(|p| p.iter().copied().collect()).unwrap_or_default()
    }

    /// Forgets blobs that are now in the index (their index file was ingested), so the session
    /// set only holds blobs between being claimed and being indexed: its size is bounded by
    /// [`INDEX_FLUSH_BLOBS`] plus what is in flight, whatever the size of the set.
    pub(crate) fn forget_indexed(&self, packs: &[IndexedPack]) -> Result<()> {
        let mut seen = self.seen.lock().map_err(|_| Error::WorkerPanicked)?;
        for p in packs {
            for e in &p.entries {
                seen.remove(&e.id);
            }
        }
        Ok(())
    }

    /// True exactly once for each blob that is in neither the session nor the index.
    pub(crate) fn claim(&self, id: &Id) -> Result<bool> {
        if self.seen.lock().map_err(|_| Error::WorkerPanicked)?.contains(id) {
            return Ok(false);
        }
        if self.indexed(id)? {
            return Ok(false);
        }
        Ok(self.seen.lock().map_err(|_| Error::WorkerPanicked)?.insert(*id))
    }
}

/// A blob to compress and store.
pub(crate) struct RawBlob {
    pub(crate) id: Id,
    pub(crate) kind: BlobKind,
    /// The raw bytes, or the stored bytes when `how` says they are compressed already.
    pub(crate) data: Vec<u8>,
    /// Index of the component it belongs to (for per-component byte counts).
    pub(crate) component: usize,
    pub(crate) how: How,
}

/// What the compressors do with a [`RawBlob`].
pub(crate) enum How {
    /// Compress at this level.
    Compress(Effort),
    /// Already compressed (a probed chunk): frame it as is.
    Stored { codec: Codec, raw_len: u32 },
}

/// Compresses blobs until the input closes; counts stored bytes per component.
pub(crate) fn compress_loop(
    level: i32,
    rx: &Receiver<RawBlob>,
    tx: &Sender<EncodedBlob>,
    added: &[AtomicU64],
    shared: &Shared,
) {
    let mut compressor = match Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            shared
                .fail(Error::InvalidOption { option: "compression level", reason: e.to_string() });
            return;
        }
    };
    for raw in rx {
        if shared.is_cancelled() {
            continue; // drain, so senders never block
        }
        let blob = match raw.how {
            How::Compress(effort) => {
                EncodedBlob::encode_at(raw.id, raw.kind, &raw.data, effort, &mut compressor)
            }
            How::Stored { codec, raw_len } => {
                EncodedBlob::from_stored(raw.id, raw.kind, codec, raw_len, &raw.data)
            }
        };
        if let Some(counter) = added.get(raw.component) {
            counter.fetch_add(blob.bytes.len() as u64, Ordering::Relaxed);
        }
        if tx.send(blob).is_err() {
            shared.cancel();
        }
    }
}

/// What the packer and sealer did.
#[derive(Debug, Default)]
pub(crate) struct PackerStats {
    pub(crate) packs: u64,
}

/// Appends blobs to packs and hands each pack that reaches the target size to the sealer, so
/// compression never waits for a pack's verification and fsync. Returns once the input closes;
/// the last, partly filled pack is handed over too.
pub(crate) fn pack_loop(
    repo: &Repository,
    rx: &Receiver<EncodedBlob>,
    seal_tx: Sender<PackWriter>,
    shared: &Shared,
) -> Result<()> {
    let mut writer: Option<PackWriter> = None;
    let target = u64::from(repo.config().pack_target);
    let tmp = repo.layout().tmp_dir();
    for blob in rx {
        if shared.is_cancelled() {
            // Drop the unsealed pack (its temp file goes with it) and drain.
            writer = None;
            continue;
        }
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PackWriter::create(&tmp)?),
        };
        w.add(&blob)?;
        if w.len() >= target {
            if let Some(w) = writer.take() {
                seal_tx.send(w).map_err(|_| Error::Cancelled)?;
            }
        }
    }
    if let Some(w) = writer.take().filter(|w| !w.is_empty() && !shared.is_cancelled()) {
        seal_tx.send(w).map_err(|_| Error::Cancelled)?;
    }
    Ok(())
}

/// Seals packs (verify every blob, fsync, rename, fsync the directory) and writes an index file
/// after every [`INDEX_FLUSH_BLOBS`] blobs and at the end. Returns once the input closes and
/// everything it received is durable and indexed.
pub(crate) fn seal_loop(
    repo: &Repository,
    rx: &Receiver<PackWriter>,
    shared: &Shared,
    dedup: &Dedup<'_>,
) -> Result<PackerStats> {
    let mut stats = PackerStats::default();
    let mut pending: Vec<IndexedPack> = Vec::new();
    let mut pending_blobs = 0usize;
    for writer in rx {
        if shared.is_cancelled() {
            continue; // dropping the writer removes its temp file
        }
        crate::crash::point("pack", "written");
        repo.check_lock()?;
        let sealed = writer.seal(|id: PackId| repo.layout().pack(id))?;
        dedup.note_pack(sealed.id);
        stats.packs += 1;
        pending_blobs += sealed.entries.len();
        pending.push(IndexedPack { id: sealed.id, len: sealed.len, entries: sealed.entries });
        if pending_blobs >= INDEX_FLUSH_BLOBS {
            repo.save_index_file(&pending)?;
            // Only once the cache has them (read-only caches keep them in memory).
            if !repo.index()?.is_read_only() {
                dedup.forget_indexed(&pending)?;
            }
            pending.clear();
            pending_blobs = 0;
        }
    }
    if !pending.is_empty() && !shared.is_cancelled() {
        repo.save_index_file(&pending)?;
    }
    Ok(stats)
}
