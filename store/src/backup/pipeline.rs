//! The stages after reading: dedup, compression, packing, index files.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::compress::{Codec, Compressor, Effort};
use crate::error::{Error, Result};
use crate::id::{Id, PackId};
use crate::index::{ChunkIndex, IndexedPack};
use crate::pack::{BlobKind, EncodedBlob, PackWriter};
use crate::repo::Repository;
use crate::tree::ChunkRefs;

/// Index files are written every this many blobs (about 2.8 MiB of index file).
const INDEX_FLUSH_BLOBS: usize = 50_000;

/// State shared by every stage of one snapshot.
pub(crate) struct Shared {
    error: Mutex<Option<Error>>,
    cancelled: AtomicBool,
    /// Paths left out by an exclude pattern (with what is below them, uncounted).
    pub(crate) excluded: std::sync::atomic::AtomicU64,
    /// Directories were reused whole without being listed: exclude patterns that matched
    /// nothing may have matched something there.
    pub(crate) unlisted: AtomicBool,
    /// Directories of write-once components reused whole, without being listed.
    pub(crate) dirs_reused: AtomicU64,
    /// Files of write-once directories found changed in place (`--verify-write-once`): how
    /// many, and the first of them named.
    pub(crate) broken_promises: Mutex<(u64, Vec<String>)>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Shared {
            error: Mutex::new(None),
            cancelled: AtomicBool::new(false),
            excluded: std::sync::atomic::AtomicU64::new(0),
            unlisted: AtomicBool::new(false),
            dirs_reused: AtomicU64::new(0),
            broken_promises: Mutex::default(),
        }
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
/// Also remembers every pack the set will depend on (reused or written), with its length, so they
/// can be checked just before the manifest is written.
///
/// A blob counts as stored only when its pack is usable: present, with the length its index file
/// records. A pack that is missing or truncated (lost, damaged, or deleted by hand) is never built
/// upon: its blobs are stored again, and the new set is whole.
pub(crate) struct Dedup<'a> {
    seen: Mutex<HashSet<Id>>,
    repo: &'a Repository,
    index: &'a ChunkIndex,
    /// Packs looked at: their length when usable, `None` when not.
    packs: Mutex<HashMap<PackId, Option<u64>>>,
    /// Where looking at each pack costs a request (object storage): every pack's length from
    /// one listing, made at the first look, and how many packs it held.
    listed: std::sync::OnceLock<Option<HashMap<PackId, u64>>>,
    /// Held while the listing is made, so the workers that need it first make it once.
    listing: Mutex<()>,
}

impl<'a> Dedup<'a> {
    pub(crate) fn new(repo: &'a Repository, index: &'a ChunkIndex) -> Self {
        Dedup {
            seen: Mutex::default(),
            repo,
            index,
            packs: Mutex::default(),
            listed: std::sync::OnceLock::new(),
            listing: Mutex::new(()),
        }
    }

    /// The length of `pack` now: from the listing where the storage gives one, else looked at.
    fn actual_len(&self, pack: PackId) -> Result<Option<u64>> {
        let listed = match self.listed.get() {
            Some(listed) => listed,
            None => {
                let _one = self.listing.lock().map_err(|_| Error::WorkerPanicked)?;
                match self.listed.get() {
                    Some(listed) => listed,
                    None => {
                        let listed = self.repo.listed_pack_sizes()?;
                        self.listed.get_or_init(|| listed)
                    }
                }
            }
        };
        Ok(match listed {
            Some(sizes) => sizes.get(&pack).copied(),
            None => self.repo.pack_len(pack).ok(),
        })
    }

    /// Checks, just before a manifest is written, that every pack the set depends on is still
    /// there with the length it had when the set began to use it: a prune that overtook a
    /// stale lock may have deleted packs this set reuses, or one may have been cut short
    /// meanwhile. Where a listing is cheaper than a look at each pack, a fresh listing.
    ///
    /// # Errors
    /// [`Error::PackVanished`], or a corruption error naming the pack whose length changed.
    pub(crate) fn confirm_packs(&self) -> Result<()> {
        let packs = self.packs();
        let listed = self.listed.get().and_then(Option::as_ref).map_or(0, HashMap::len);
        let fresh = if listed > 0 && (listed as u64).div_ceil(1000) < packs.len() as u64 {
            self.repo.listed_pack_sizes()?
        } else {
            None
        };
        for (pack, len) in packs {
            let actual = match &fresh {
                Some(sizes) => sizes.get(&pack).copied(),
                None => self.repo.pack_len(pack).ok(),
            };
            match actual {
                None => return Err(Error::PackVanished { pack }),
                Some(actual) if actual != len => {
                    return Err(Error::corrupt(
                        crate::error::ObjectRef::Pack(pack),
                        crate::error::Corruption::Invalid(format!(
                            "{actual} bytes, it had {len} when this set began to use it"
                        )),
                    ))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Records that the set depends on `pack`, written by this snapshot with length `len`.
    pub(crate) fn note_pack(&self, pack: PackId, len: u64) {
        if let Ok(mut packs) = self.packs.lock() {
            packs.insert(pack, Some(len));
        }
    }

    /// Whether `pack` can be built upon: present with its indexed length (looked at once).
    fn pack_usable(&self, pack: PackId) -> Result<bool> {
        if let Some(state) = self.packs.lock().map_err(|_| Error::WorkerPanicked)?.get(&pack) {
            return Ok(state.is_some());
        }
        let actual = self.actual_len(pack)?;
        let usable = match (actual, self.index.pack_len(&pack)?) {
            (Some(actual), Some(expected)) => (actual == expected).then_some(actual),
            (actual, None) => actual,
            (None, Some(_)) => None,
        };
        self.packs.lock().map_err(|_| Error::WorkerPanicked)?.insert(pack, usable);
        Ok(usable.is_some())
    }

    /// Whether blob `id` is indexed in a usable pack; records that pack when it is.
    pub(crate) fn indexed(&self, id: &Id) -> Result<bool> {
        Ok(self.located(id)?.is_some())
    }

    /// The usable pack blob `id` is indexed in, if any (recorded as one the set depends on).
    pub(crate) fn located(&self, id: &Id) -> Result<Option<PackId>> {
        match self.index.get(id)? {
            Some(loc) if self.pack_usable(loc.pack)? => Ok(Some(loc.pack)),
            _ => Ok(None),
        }
    }

    /// Whether `pack` can stand for every blob the index once placed in it: indexed, present
    /// with its indexed length, and named by no damage record. Recorded as one the set depends
    /// on when it is.
    pub(crate) fn pack_whole(&self, pack: PackId) -> Result<bool> {
        Ok(self.index.pack_len(&pack)?.is_some()
            && !self.index.pack_damaged(&pack)
            && self.pack_usable(pack)?)
    }

    /// Whether every chunk of a file's `chunks`, and every chunk-list blob holding them, is
    /// indexed in a usable pack (recording those packs): what a new set may reuse without
    /// reading the file. A lost chunk or an unreadable chunk list must not spread into the new
    /// set: false, and the file is read.
    ///
    /// # Errors
    /// Cache errors.
    pub(crate) fn all_stored(&self, chunks: &ChunkRefs) -> Result<bool> {
        self.all_stored_into(chunks, &mut HashSet::new())
    }

    /// [`Dedup::all_stored`], adding the packs holding them to `packs`.
    ///
    /// # Errors
    /// Cache errors.
    pub(crate) fn all_stored_into(
        &self,
        chunks: &ChunkRefs,
        packs: &mut HashSet<PackId>,
    ) -> Result<bool> {
        let mut stored =
            |id: Id| -> Result<bool> { Ok(self.located(&id)?.map(|p| packs.insert(p)).is_some()) };
        let listed = crate::vfs::for_each_chunk(self.repo, chunks, |id| {
            if stored(id)? {
                Ok(())
            } else {
                Err(Error::BlobNotIndexed { id })
            }
        });
        match listed {
            Ok(()) => {}
            Err(Error::BlobNotIndexed { .. } | Error::Corrupt { .. } | Error::Io { .. }) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
        if let ChunkRefs::Lists(lists) = chunks {
            for list in lists {
                if !stored(*list)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Every usable pack the set depends on, with the length it had when first looked at.
    pub(crate) fn packs(&self) -> Vec<(PackId, u64)> {
        self.packs
            .lock()
            .map(|p| p.iter().filter_map(|(id, len)| len.map(|l| (*id, l))).collect())
            .unwrap_or_default()
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
    crypto: &crate::crypto::Crypto,
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
                EncodedBlob::encode_at(raw.id, raw.kind, &raw.data, effort, &mut compressor, crypto)
            }
            How::Stored { codec, raw_len } => {
                EncodedBlob::from_compressed(raw.id, raw.kind, codec, raw_len, &raw.data, crypto)
            }
        };
        let blob = match blob {
            Ok(b) => b,
            Err(e) => {
                shared.fail(e);
                continue;
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
    for blob in rx {
        if shared.is_cancelled() {
            // Drop the unsealed pack (its temp file goes with it) and drain.
            writer = None;
            continue;
        }
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(repo.new_pack()?),
        };
        w.add(&blob)?;
        repo.keep_frame(&blob.id, blob.kind, &blob.bytes)?;
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
///
/// When the snapshot fails (here or in another stage), the packs it sealed that no index file
/// lists yet are removed again: nothing can use them (other writers only build on indexed blobs,
/// and never adopt a pack younger than a live lock), and on a full disk they would make every
/// later snapshot fail too. Packs already indexed stay: another writer may build on them, and a
/// retried snapshot reuses them. When this process's lock was lost meanwhile, nothing is
/// removed (another process may have adopted them); prune collects what is left.
///
/// `interrupted` is asked before every index file: once the operator asked to stop, what is not
/// indexed yet is removed rather than indexed.
///
/// With object storage, [`REMOTE_SEALERS`] sealers run at once, each with its own packs and
/// index files, so the upload of one pack does not hold up the next.
pub(crate) fn seal_loop(
    repo: &Repository,
    rx: &Receiver<PackWriter>,
    shared: &Shared,
    dedup: &Dedup<'_>,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<PackerStats> {
    let sealers = if repo.storage().lists_cheaply() { 1 } else { REMOTE_SEALERS };
    let one = || {
        let mut pending: Vec<IndexedPack> = Vec::new();
        let result = seal_all(repo, rx, shared, dedup, &mut pending, interrupted);
        if (result.is_err() || shared.is_cancelled()) && repo.check_lock().is_ok() {
            discard_packs(repo, &pending);
        }
        if result.is_err() {
            // The other sealers stop too (the error itself is returned).
            shared.cancel();
        }
        result
    };
    if sealers == 1 {
        return one();
    }
    let results: Vec<Result<PackerStats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..sealers).map(|_| s.spawn(one)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(Error::WorkerPanicked))).collect()
    });
    let mut stats = PackerStats::default();
    for r in results {
        stats.packs += r?.packs;
    }
    Ok(stats)
}

/// Packs sealed and uploaded at once for a repository in object storage.
const REMOTE_SEALERS: usize = 3;

fn seal_all(
    repo: &Repository,
    rx: &Receiver<PackWriter>,
    shared: &Shared,
    dedup: &Dedup<'_>,
    pending: &mut Vec<IndexedPack>,
    interrupted: &(dyn Fn() -> bool + Sync),
) -> Result<PackerStats> {
    let stop = || {
        if interrupted() {
            shared.fail(Error::Interrupted);
        }
        shared.is_cancelled()
    };
    let mut stats = PackerStats::default();
    let mut pending_blobs = 0usize;
    for writer in rx {
        if shared.is_cancelled() {
            continue; // dropping the writer removes its temp file
        }
        crate::crash::point("pack", "written");
        repo.check_lock()?;
        let sealed = repo.seal_pack(writer)?;
        dedup.note_pack(sealed.id, sealed.len);
        stats.packs += 1;
        pending_blobs += sealed.entries.len();
        pending.push(IndexedPack { id: sealed.id, len: sealed.len, entries: sealed.entries });
        if pending_blobs >= INDEX_FLUSH_BLOBS && !stop() {
            let indexed = index_pending(repo, pending)?;
            // Only once the cache has them (read-only caches keep them in memory).
            if !repo.index()?.is_read_only() {
                dedup.forget_indexed(&indexed)?;
            }
            pending_blobs = 0;
        }
    }
    if !pending.is_empty() && !stop() {
        index_pending(repo, pending)?;
    }
    Ok(stats)
}

/// Writes the index file listing `pending` and feeds it to the cache. Once the file is written
/// its packs are no longer this process's to remove, so they leave `pending` before the cache is
/// fed (which may fail).
fn index_pending(repo: &Repository, pending: &mut Vec<IndexedPack>) -> Result<Vec<IndexedPack>> {
    let id = repo.write_index_file(pending)?;
    let indexed = std::mem::take(pending);
    repo.index()?.ingest(&id, &indexed)?;
    Ok(indexed)
}

/// Removes packs this process sealed and no index file lists (best effort: what is left is an
/// unindexed pack, which `check` notes and prune removes).
fn discard_packs(repo: &Repository, packs: &[IndexedPack]) {
    for p in packs {
        let _ = repo.remove_packs(&[p.id]);
    }
}

/// What every caller of [`run_stages`] shares with the stages.
pub(crate) struct Stages<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) dedup: &'a Dedup<'a>,
    pub(crate) shared: &'a Shared,
    /// Compressors.
    pub(crate) threads: usize,
    /// Stored bytes, per component.
    pub(crate) added: &'a [AtomicU64],
    /// Asked every 50 ms; once true, the stages fail with [`Error::Interrupted`].
    pub(crate) interrupted: &'a (dyn Fn() -> bool + Sync),
    /// Called once when interrupted (a snapshot kills the command it reads from).
    pub(crate) on_interrupt: &'a (dyn Fn() + Sync),
}

/// Runs the stages after reading (compressors, packer, sealers) while `produce` feeds them
/// blobs through the sender it is given, on this thread; `produce` may spawn helpers on the
/// scope. Returns once every blob it sent is sealed, durable and indexed, or the first error
/// of any stage (packs not indexed yet are removed, see [`seal_loop`]).
pub(crate) fn run_stages<'env, T>(
    st: &'env Stages<'env>,
    produce: impl for<'scope> FnOnce(
        &'scope std::thread::Scope<'scope, 'env>,
        Sender<RawBlob>,
    ) -> Result<T>,
) -> Result<(T, PackerStats)> {
    let Stages { repo, dedup, shared, threads, added, interrupted, on_interrupt } = *st;
    // The watcher looks for an interrupt every 50 ms, and stops the moment `stop_watching` is
    // dropped (when the stages are over, or unwinding), not at its next look: the scope
    // waits for it.
    let (stop_watching, watching) = crossbeam_channel::bounded::<()>(0);
    let (raw_tx, raw_rx) = crossbeam_channel::bounded::<RawBlob>(2 * threads + 2);
    let (enc_tx, enc_rx) = crossbeam_channel::bounded(8);
    let outcome = std::thread::scope(|s| {
        let _stop_watching = stop_watching;
        // Stops everything when the operator asks (SIGINT, SIGTERM): the stages fail as on any
        // error (packs not indexed yet are removed).
        s.spawn(move || {
            let tick = std::time::Duration::from_millis(50);
            while !interrupted() {
                if !matches!(watching.recv_timeout(tick), Err(RecvTimeoutError::Timeout)) {
                    return;
                }
            }
            shared.fail(Error::Interrupted);
            on_interrupt();
        });
        let (seal_tx, seal_rx) = crossbeam_channel::bounded(1);
        s.spawn(move || {
            if let Err(e) = pack_loop(repo, &enc_rx, seal_tx, shared) {
                shared.fail(e);
            }
            drop(enc_rx);
        });
        let packer = s.spawn(move || {
            let packed = seal_loop(repo, &seal_rx, shared, dedup, interrupted)
                .map_err(|e| shared.fail(e))
                .ok();
            drop(seal_rx);
            packed
        });
        let compressors = match rayon::ThreadPoolBuilder::new().num_threads(threads).build() {
            Ok(pool) => pool,
            Err(e) => {
                shared.fail(Error::InvalidOption { option: "threads", reason: e.to_string() });
                drop((raw_rx, enc_tx));
                return None;
            }
        };
        let level = repo.config().compression_level;
        s.spawn(move || {
            let (rx, tx) = (&raw_rx, &enc_tx);
            compressors.scope(|cs| {
                for _ in 0..threads {
                    cs.spawn(move |_| compress_loop(level, repo.crypto(), rx, tx, added, shared));
                }
            });
        });
        let produced = produce(s, raw_tx);
        if produced.is_err() {
            shared.cancel();
        }
        let packed = packer.join().map_err(|_| Error::WorkerPanicked);
        Some((produced, packed))
    });
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let (produced, packed) = outcome.ok_or(Error::Cancelled)?;
    let produced = produced?;
    Ok((produced, packed?.ok_or(Error::Cancelled)?))
}
