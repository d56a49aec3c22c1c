//! The local RocksDB cache: blob id -> [`Location`] (FORMAT.md §8.2).
//!
//! Column families: `blobs` (key: 32-byte blob id, value: the 50-byte location), `packs` (key:
//! 32-byte pack id, value: the pack's length as u64), `ingested` (key: 32-byte id of an index
//! file or damage record, empty value), `dirs` (the directories of write-once components: see
//! `backup/writeonce.rs`; created when missing, so an older cache keeps its entries), and
//! `default` holding `repo_id` and `cache_version`.
//! Entries of one index file and its `ingested` marker go in one write batch, so a crash leaves
//! the cache at a prefix of whole index files. Copies of blobs that a damage record names are
//! never entered, and never returned. The cache is disposable: when it is damaged, of another
//! version, or belongs to another repository it is deleted and rebuilt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch, DB,
};

use super::file::IndexedPack;
use crate::compress::Codec;
use crate::damage::DamageSet;
use crate::error::{Corruption, Error, Result};
use crate::format::ByteReader;
use crate::id::{Id, IndexId, PackId};
use crate::pack::{BlobKind, PackEntry};

const CF_BLOBS: &str = "blobs";
const CF_PACKS: &str = "packs";
const CF_INGESTED: &str = "ingested";
const CF_DIRS: &str = "dirs";
/// Frames of tree and chunk-list blobs, kept for a repository in object storage (sealed as
/// the packs hold them), so incrementals and restores do not fetch them again.
const CF_FRAMES: &str = "frames";
const KEY_REPO_ID: &[u8] = b"repo_id";
const KEY_CACHE_VERSION: &[u8] = b"cache_version";
/// Key in the default family: the bytes of `frames` (keys and values, u64 LE), as counted by
/// [`ChunkIndex::frame_put`].
const KEY_FRAMES_BYTES: &[u8] = b"frames_bytes";

/// Most bytes of frames kept by default (`--cache-size`): the trees and chunk lists of some
/// 30 million files.
pub const DEFAULT_FRAMES_LIMIT: u64 = 4 << 30;
/// Layout version of the cache (not of the repository): 2 added the `packs` family and
/// damage filtering. A cache of another version is rebuilt.
const CACHE_VERSION: u32 = 2;
const LOCATION_LEN: usize = 50;
/// Block cache of the RocksDB cache: 64 MiB, whatever the number of blobs.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// The pack holding it.
    pub pack: PackId,
    /// Its entry in that pack.
    pub entry: PackEntry,
}

impl Location {
    fn encode(&self) -> [u8; LOCATION_LEN] {
        let mut out = [0u8; LOCATION_LEN];
        let e = &self.entry;
        let mut v = Vec::with_capacity(LOCATION_LEN);
        v.extend_from_slice(self.pack.0.as_bytes());
        v.extend_from_slice(&e.offset.to_le_bytes());
        v.extend_from_slice(&e.stored_len.to_le_bytes());
        v.extend_from_slice(&e.raw_len.to_le_bytes());
        v.push(e.kind as u8);
        v.push(e.codec as u8);
        out.copy_from_slice(&v);
        out
    }

    fn decode(id: Id, bytes: &[u8]) -> Result<Self, Corruption> {
        let mut r = ByteReader::new(bytes, 0);
        let pack = PackId(r.id()?);
        let offset = r.u64()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let kind = BlobKind::from_tag(r.u8()?)?;
        let codec = Codec::from_tag(r.u8()?)?;
        if r.remaining() != 0 {
            return Err(Corruption::Invalid("location has trailing bytes".into()));
        }
        Ok(Location { pack, entry: PackEntry { id, kind, codec, offset, stored_len, raw_len } })
    }
}

/// The RocksDB cache of one repository on this host.
pub struct ChunkIndex {
    db: DB,
    path: PathBuf,
    /// Opened read-only because another process holds the cache; entries of index files it
    /// has not ingested are kept in `overlay` for this process only.
    read_only: bool,
    overlay: Mutex<HashMap<Id, Location>>,
    overlay_packs: Mutex<HashMap<PackId, u64>>,
    /// Copies named by damage records: never entered, never returned.
    damaged: DamageSet,
    /// Why the cache was found damaged and created anew on open, if it was.
    rebuilt: Option<String>,
    /// Most bytes of `frames`; past it the family is emptied and filled again.
    frames_limit: u64,
    /// The bytes of `frames` now (as stored under [`KEY_FRAMES_BYTES`]).
    frames_bytes: Mutex<u64>,
}

/// Options of the database and of each column family, all sharing `cache` (one block cache per
/// open database: memory stays bounded by it whatever the number of blobs).
fn options(cache: &Cache) -> Options {
    let mut block = BlockBasedOptions::default();
    block.set_block_cache(cache);
    block.set_bloom_filter(10.0, false);
    block.set_cache_index_and_filter_blocks(true);
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_block_based_table_factory(&block);
    // Keys are hashes and values mostly hashes too: compression would only cost CPU.
    opts.set_compression_type(DBCompressionType::None);
    // Small memtables: a cache reopened after a crash replays at most this much of its log,
    // and a snapshot's new entries never need more.
    opts.set_write_buffer_size(8 << 20);
    opts.set_max_write_buffer_number(2);
    // The default column family (the repository id) is written once and never fills its
    // memtable; without a bound on the log, that unflushed entry kept every log file alive and
    // the next open re-read all of them (a bulk ingest of 5,000,000 blobs doubled the time of
    // the snapshot after it).
    opts.set_max_total_wal_size(32 << 20);
    opts.set_max_open_files(256);
    opts.set_keep_log_file_num(2);
    // Tables are opened at open on this thread: RocksDB's default of 16 threads per column
    // family made every open start and stop about 90 threads for a handful of files (20 to 40
    // ms of a no-change incremental).
    opts.set_max_file_opening_threads(1);
    // Nor read every table's properties to update statistics a cache does not use.
    opts.set_skip_stats_update_on_db_open(true);
    opts
}

fn descriptors(cache: &Cache) -> Vec<ColumnFamilyDescriptor> {
    [CF_BLOBS, CF_PACKS, CF_INGESTED, CF_DIRS, CF_FRAMES]
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, options(cache)))
        .collect()
}

impl ChunkIndex {
    /// Opens (or creates) the cache at `path` for the repository `repo_id`.
    ///
    /// A cache that does not open (damaged) or belongs to another repository is deleted and
    /// created empty. When another process holds the cache, it is opened read-only.
    ///
    /// # Errors
    /// [`Error::Cache`] when the cache can be neither opened nor recreated.
    pub fn open(path: &Path, repo_id: Id) -> Result<Self> {
        let cache_err =
            |e: rocksdb::Error| Error::Cache { path: path.to_path_buf(), message: e.into_string() };
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut rebuilt = None;
        let (db, read_only) =
            match DB::open_cf_descriptors(&options(&cache), path, descriptors(&cache)) {
                Ok(db) => (db, false),
                // An I/O error is what RocksDB reports when another process holds the cache
                // (its LOCK file): use a read-only view. While that process is still creating
                // the cache the view cannot open yet; wait for it, and never treat a cache in
                // use as damaged.
                Err(e) if e.kind() == rocksdb::ErrorKind::IOError => {
                    let mut attempt = 0;
                    loop {
                        match DB::open_cf_descriptors_read_only(
                            &options(&cache),
                            path,
                            descriptors(&cache),
                            false,
                        ) {
                            Ok(db) => break (db, true),
                            Err(e) if attempt >= 100 => return Err(cache_err(e)),
                            Err(_) => {
                                attempt += 1;
                                std::thread::sleep(std::time::Duration::from_millis(50));
                            }
                        }
                    }
                }
                // Damaged (a checksum mismatch, a bad CURRENT or MANIFEST), or of another
                // RocksDB: it is only a cache, start over from the index files.
                Err(e) => {
                    rebuilt = Some(e.into_string());
                    (Self::recreate(path, &cache)?, false)
                }
            };
        let new = |db: DB, rebuilt: Option<String>| ChunkIndex {
            db,
            path: path.to_path_buf(),
            read_only,
            overlay: Mutex::default(),
            overlay_packs: Mutex::default(),
            damaged: DamageSet::default(),
            rebuilt,
            frames_limit: DEFAULT_FRAMES_LIMIT,
            frames_bytes: Mutex::new(0),
        };
        let index = new(db, rebuilt);
        if let Ok(Some(v)) = index.db.get(KEY_FRAMES_BYTES) {
            if let (Ok(bytes), Ok(mut held)) =
                (<[u8; 8]>::try_from(v.as_slice()), index.frames_bytes.lock())
            {
                *held = u64::from_le_bytes(bytes);
            }
        }
        let stored = index.db.get(KEY_REPO_ID).map_err(cache_err)?;
        let version = index.db.get(KEY_CACHE_VERSION).map_err(cache_err)?;
        let current = version.as_deref() == Some(&CACHE_VERSION.to_le_bytes()[..]);
        let stamp = |db: &DB| -> Result<()> {
            db.put(KEY_REPO_ID, repo_id.as_bytes()).map_err(cache_err)?;
            db.put(KEY_CACHE_VERSION, CACHE_VERSION.to_le_bytes()).map_err(cache_err)
        };
        match stored {
            Some(v) if v.as_slice() == repo_id.as_bytes() && (current || read_only) => Ok(index),
            // Read-only view of a cache its owner is still creating: everything this process
            // needs is then ingested into its own overlay.
            None if read_only => Ok(index),
            None => {
                stamp(&index.db)?;
                Ok(index)
            }
            Some(_) if read_only => Err(Error::Cache {
                path: path.to_path_buf(),
                message: "cache is in use by another process and belongs to another repository"
                    .into(),
            }),
            // Another repository's cache, or one of another layout: start over.
            _ => {
                drop(index);
                let db = Self::recreate(path, &cache)?;
                stamp(&db)?;
                Ok(new(db, None))
            }
        }
    }

    /// Why the cache could not be opened and was created anew (it is then filled again from the
    /// index files), if it was.
    #[must_use]
    pub fn rebuilt_because(&self) -> Option<&str> {
        self.rebuilt.as_deref()
    }

    /// Passes by the copies `damaged` names from now on (set before anything is ingested).
    pub(crate) fn set_damaged(&mut self, damaged: DamageSet) {
        self.damaged = damaged;
    }

    fn recreate(path: &Path, cache: &Cache) -> Result<DB> {
        let _ = std::fs::remove_dir_all(path);
        DB::open_cf_descriptors(&options(cache), path, descriptors(cache))
            .map_err(|e| Error::Cache { path: path.to_path_buf(), message: e.into_string() })
    }

    fn err(&self, e: rocksdb::Error) -> Error {
        Error::Cache { path: self.path.clone(), message: e.into_string() }
    }

    fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Cache {
            path: self.path.clone(),
            message: format!("column family {name} is missing"),
        })
    }

    /// Whether the cache was opened read-only (another process holds it).
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The location of blob `id`, if indexed.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure; [`Error::Corrupt`] for an undecodable value.
    pub fn get(&self, id: &Id) -> Result<Option<Location>> {
        if self.read_only {
            if let Some(loc) = self.overlay.lock().ok().and_then(|m| m.get(id).copied()) {
                return Ok(Some(loc));
            }
        }
        let value =
            self.db.get_pinned_cf(self.cf(CF_BLOBS)?, id.as_bytes()).map_err(|e| self.err(e))?;
        let loc = value
            .map(|v| Location::decode(*id, &v))
            .transpose()
            .map_err(|reason| Error::corrupt(crate::error::ObjectRef::Cache, reason))?;
        Ok(loc.filter(|l| !self.damaged.contains(l.pack, id)))
    }

    /// [`ChunkIndex::get`] of every id of `ids`, in order, in one multi-get (a restore of
    /// small files looks up a batch's blobs at once: a lookup each was 8% of its CPU).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure; [`Error::Corrupt`] for an undecodable value.
    pub fn get_many(&self, ids: &[Id]) -> Result<Vec<Option<Location>>> {
        let values =
            self.db.batched_multi_get_cf(self.cf(CF_BLOBS)?, ids.iter().map(Id::as_bytes), false);
        let overlay = if self.read_only { self.overlay.lock().ok() } else { None };
        ids.iter()
            .zip(values)
            .map(|(id, value)| {
                if let Some(loc) = overlay.as_ref().and_then(|m| m.get(id).copied()) {
                    return Ok(Some(loc));
                }
                let loc = value
                    .map_err(|e| self.err(e))?
                    .map(|v| Location::decode(*id, &v))
                    .transpose()
                    .map_err(|reason| Error::corrupt(crate::error::ObjectRef::Cache, reason))?;
                Ok(loc.filter(|l| !self.damaged.contains(l.pack, id)))
            })
            .collect()
    }

    /// The length of pack `pack` as its index file records it, if indexed.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure; [`Error::Corrupt`] for an undecodable value.
    pub fn pack_len(&self, pack: &PackId) -> Result<Option<u64>> {
        if self.read_only {
            if let Some(len) = self.overlay_packs.lock().ok().and_then(|m| m.get(pack).copied()) {
                return Ok(Some(len));
            }
        }
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_PACKS)?, pack.0.as_bytes())
            .map_err(|e| self.err(e))?;
        value.map(|v| <[u8; 8]>::try_from(&v[..]).map(u64::from_le_bytes)).transpose().map_err(
            |_| {
                Error::corrupt(
                    crate::error::ObjectRef::Cache,
                    Corruption::Invalid(format!("length of pack {pack} is not 8 bytes")),
                )
            },
        )
    }

    /// Whether blob `id` is indexed.
    ///
    /// # Errors
    /// As [`ChunkIndex::get`].
    pub fn contains(&self, id: &Id) -> Result<bool> {
        Ok(self.get(id)?.is_some())
    }

    /// Whether the index file or damage record `id` has been ingested.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub fn is_ingested(&self, id: &Id) -> Result<bool> {
        let found =
            self.db.get_pinned_cf(self.cf(CF_INGESTED)?, id.as_bytes()).map_err(|e| self.err(e))?;
        Ok(found.is_some())
    }

    /// The index files and damage records this cache has ingested.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub fn ingested(&self) -> Result<Vec<Id>> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_INGESTED)?, rocksdb::IteratorMode::Start) {
            let (key, _) = item.map_err(|e| self.err(e))?;
            if let Ok(bytes) = <[u8; 32]>::try_from(&key[..]) {
                out.push(Id::from_bytes(bytes));
            }
        }
        Ok(out)
    }

    /// Deletes the cache at `path` (it is rebuilt from the index files on the next open).
    ///
    /// # Errors
    /// [`Error::Cache`] when it cannot be removed.
    pub fn destroy(self) -> Result<()> {
        let path = self.path.clone();
        drop(self);
        // Another process opening the cache read-only meanwhile may add a file (RocksDB's info
        // log) while it is removed: the removal then finds the directory not empty. Try again.
        let mut attempt = 0;
        loop {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempt < 20 => {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => return Err(Error::Cache { path, message: e.to_string() }),
            }
        }
    }

    /// Compacts the cache: after a bulk ingest (a rebuilt cache, millions of entries), so the
    /// compaction debt is paid now rather than by the next snapshot, whose time and memory it
    /// would otherwise inflate (docs/BENCHMARKS.md, growth scenario).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub fn compact(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.flush().map_err(|e| self.err(e))?;
        for name in [CF_BLOBS, CF_PACKS, CF_INGESTED, CF_DIRS, CF_FRAMES] {
            let cf = self.cf(name)?;
            self.db.flush_cf(cf).map_err(|e| self.err(e))?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Adds the entries of index file `id` in one batch, with its `ingested` marker.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub fn ingest(&self, id: &IndexId, packs: &[IndexedPack]) -> Result<()> {
        let usable = |p: &IndexedPack, e: &PackEntry| !self.damaged.contains(p.id, &e.id);
        if self.read_only {
            if let (Ok(mut overlay), Ok(mut lens)) =
                (self.overlay.lock(), self.overlay_packs.lock())
            {
                for p in packs {
                    lens.insert(p.id, p.len);
                    for e in p.entries.iter().filter(|e| usable(p, e)) {
                        overlay.insert(e.id, Location { pack: p.id, entry: *e });
                    }
                }
            }
            return Ok(());
        }
        let blobs = self.cf(CF_BLOBS)?;
        let lens = self.cf(CF_PACKS)?;
        let mut batch = WriteBatch::default();
        for p in packs {
            batch.put_cf(lens, p.id.0.as_bytes(), p.len.to_le_bytes());
            for e in p.entries.iter().filter(|e| usable(p, e)) {
                batch.put_cf(blobs, e.id.as_bytes(), Location { pack: p.id, entry: *e }.encode());
            }
        }
        batch.put_cf(self.cf(CF_INGESTED)?, id.0.as_bytes(), []);
        self.db.write(batch).map_err(|e| self.err(e))
    }

    /// Whether a damage record names a copy of any blob in `pack`.
    pub(crate) fn pack_damaged(&self, pack: &PackId) -> bool {
        self.damaged.touches_pack(pack)
    }

    /// The frame of metadata blob `id` kept here, if any (the caller verifies it).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn frame_get(&self, id: &Id) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(CF_FRAMES)?, id.as_bytes()).map_err(|e| self.err(e))
    }

    /// Bounds the frames kept to `limit` bytes (`--cache-size`).
    pub(crate) fn set_frames_limit(&mut self, limit: u64) {
        self.frames_limit = limit;
    }

    /// The bytes of frames kept now, as counted.
    #[must_use]
    pub fn frames_bytes(&self) -> u64 {
        self.frames_bytes.lock().map_or(0, |b| *b)
    }

    /// Keeps the frame of metadata blob `id` (nothing when read-only, or when the frame alone
    /// is larger than the bound). When the frames would pass their bound, every frame is
    /// forgotten first and the family fills again from this one: frames are a shortcut, each
    /// read again from its pack when missing.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn frame_put(&self, id: &Id, frame: &[u8]) -> Result<()> {
        let size = (id.as_bytes().len() + frame.len()) as u64;
        if self.read_only || size > self.frames_limit {
            return Ok(());
        }
        let cf = self.cf(CF_FRAMES)?;
        let mut bytes = self.frames_bytes.lock().map_err(|_| Error::WorkerPanicked)?;
        if *bytes + size > self.frames_limit {
            // Every key is an id of 32 bytes, below 33 bytes of 0xff.
            self.db.delete_range_cf(cf, &[][..], &[0xffu8; 33][..]).map_err(|e| self.err(e))?;
            self.db.put(KEY_FRAMES_BYTES, 0u64.to_le_bytes()).map_err(|e| self.err(e))?;
            *bytes = 0;
            // Give the disk space back now rather than at some later compaction.
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(cf, id.as_bytes(), frame);
        batch.put(KEY_FRAMES_BYTES, (*bytes + size).to_le_bytes());
        self.db.write(batch).map_err(|e| self.err(e))?;
        *bytes += size;
        Ok(())
    }

    /// Forgets the frame of `id` (it did not verify).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn frame_delete(&self, id: &Id) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.delete_cf(self.cf(CF_FRAMES)?, id.as_bytes()).map_err(|e| self.err(e))
    }

    /// The value stored under `key` in the directory records, if any.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn dir_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db.get_cf(self.cf(CF_DIRS)?, key).map_err(|e| self.err(e))
    }

    /// Stores `value` under `key` in the directory records (nothing when read-only: they are
    /// only a shortcut).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn dir_put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.put_cf(self.cf(CF_DIRS)?, key, value).map_err(|e| self.err(e))
    }

    /// Removes the directory record under `key`.
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn dir_delete(&self, key: &[u8]) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.delete_cf(self.cf(CF_DIRS)?, key).map_err(|e| self.err(e))
    }

    /// Records that the damage record `id` has been applied (its copies are passed by).
    ///
    /// # Errors
    /// [`Error::Cache`] on a RocksDB failure.
    pub(crate) fn mark_applied(&self, id: &Id) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.put_cf(self.cf(CF_INGESTED)?, id.as_bytes(), []).map_err(|e| self.err(e))
    }
}

impl Drop for ChunkIndex {
    /// Flushes the memtables (the default column family's too), so the next open has no log
    /// to replay.
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.db.flush();
            for name in [CF_BLOBS, CF_PACKS, CF_INGESTED, CF_DIRS, CF_FRAMES] {
                if let Some(cf) = self.db.cf_handle(name) {
                    let _ = self.db.flush_cf(cf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: &[u8]) -> PackEntry {
        PackEntry {
            id: Id::hash(seed),
            kind: BlobKind::Data,
            codec: Codec::Zstd,
            offset: 4096,
            stored_len: 10,
            raw_len: 20,
        }
    }

    #[test]
    fn ingested_entries_are_found_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id::hash(b"repo");
        let pack =
            IndexedPack { id: PackId(Id::hash(b"p")), len: 9000, entries: vec![entry(b"x")] };
        let file = IndexId(Id::hash(b"index"));
        {
            let idx = ChunkIndex::open(dir.path(), repo).unwrap();
            assert!(!idx.is_ingested(&file.0).unwrap());
            idx.ingest(&file, std::slice::from_ref(&pack)).unwrap();
        }
        let idx = ChunkIndex::open(dir.path(), repo).unwrap();
        assert!(idx.is_ingested(&file.0).unwrap());
        let loc = idx.get(&Id::hash(b"x")).unwrap().unwrap();
        assert_eq!(loc, Location { pack: pack.id, entry: entry(b"x") });
        assert!(idx.get(&Id::hash(b"y")).unwrap().is_none());
    }

    #[test]
    fn frames_stay_within_their_bound_and_the_count_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id::hash(b"repo");
        let frame = |i: u32| vec![u8::try_from(i % 251).unwrap(); 300];
        let id = |i: u32| Id::hash(&i.to_le_bytes());
        {
            let mut idx = ChunkIndex::open(dir.path(), repo).unwrap();
            idx.set_frames_limit(1_000);
            for i in 0..3 {
                idx.frame_put(&id(i), &frame(i)).unwrap();
            }
            assert_eq!(idx.frames_bytes(), 3 * 332);
            assert_eq!(idx.frame_get(&id(0)).unwrap(), Some(frame(0)));
        }
        let mut idx = ChunkIndex::open(dir.path(), repo).unwrap();
        idx.set_frames_limit(1_000);
        assert_eq!(idx.frames_bytes(), 3 * 332, "the count is kept with the frames");
        // The fourth would pass the bound: the others are dropped, it is kept.
        idx.frame_put(&id(3), &frame(3)).unwrap();
        assert_eq!(idx.frames_bytes(), 332);
        assert_eq!(idx.frame_get(&id(0)).unwrap(), None);
        assert_eq!(idx.frame_get(&id(3)).unwrap(), Some(frame(3)));
        for i in 4..40 {
            idx.frame_put(&id(i), &frame(i)).unwrap();
            assert!(idx.frames_bytes() <= 1_000);
            assert_eq!(idx.frame_get(&id(i)).unwrap(), Some(frame(i)));
        }
        // A frame larger than the bound is not kept at all.
        idx.frame_put(&id(99), &[7u8; 2_000]).unwrap();
        assert_eq!(idx.frame_get(&id(99)).unwrap(), None);
    }

    /// Bytes of write-ahead log in the cache directory.
    fn log_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    }

    #[test]
    fn a_closed_cache_leaves_no_log_to_replay() {
        // The repository id sits alone in the default column family; if its memtable were
        // not flushed, every log file written since would be kept and re-read by the next open
        // (with 5,000,000 blobs that doubled the next snapshot's time).
        let dir = tempfile::tempdir().unwrap();
        let repo = Id::hash(b"repo");
        // A new cache filled in one go, as when it is built for an existing repository.
        let idx = ChunkIndex::open(dir.path(), repo).unwrap();
        for round in 0..3u32 {
            let entries = (0..20_000u32)
                .map(|i| entry(format!("{round}/{i}").as_bytes()))
                .collect::<Vec<_>>();
            let pack = IndexedPack { id: PackId(Id::hash(&round.to_le_bytes())), len: 1, entries };
            idx.ingest(&IndexId(Id::hash(&[round as u8])), &[pack]).unwrap();
        }
        drop(idx);
        // 60,000 entries (3 MB) were written; what is left of the log is nothing to speak of.
        assert!(log_bytes(dir.path()) < 64 << 10, "{} bytes of log left", log_bytes(dir.path()));
        let idx = ChunkIndex::open(dir.path(), repo).unwrap();
        assert!(idx.get(&Id::hash(b"2/19999")).unwrap().is_some());
    }

    #[test]
    fn cache_of_another_repository_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let pack =
            IndexedPack { id: PackId(Id::hash(b"p")), len: 9000, entries: vec![entry(b"x")] };
        {
            let idx = ChunkIndex::open(dir.path(), Id::hash(b"one")).unwrap();
            idx.ingest(&IndexId(Id::hash(b"i")), &[pack]).unwrap();
        }
        let idx = ChunkIndex::open(dir.path(), Id::hash(b"two")).unwrap();
        assert!(idx.get(&Id::hash(b"x")).unwrap().is_none());
    }

    // See: issue 13 ("a damaged cache gets retries and an error instead of a rebuild"): a cache
    // that does not open because it is damaged is created anew, saying why; one in use by
    // another process is opened read-only, never taken for damaged.
    #[test]
    fn a_damaged_cache_is_rebuilt_and_says_why() {
        type Damage = (&'static str, fn(&Path));
        let damages: [Damage; 3] = [
            ("garbage CURRENT", |dir| {
                #[allow(clippy::disallowed_methods, reason = "damaging the cache on purpose")]
                std::fs::write(dir.join("CURRENT"), b"\x00\x01garbage").unwrap();
            }),
            ("flipped MANIFEST", |dir| {
                let manifest = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("MANIFEST"))
                    .unwrap();
                let mut bytes = std::fs::read(&manifest).unwrap();
                for b in bytes.iter_mut().skip(10).step_by(7) {
                    *b ^= 0x5a;
                }
                #[allow(clippy::disallowed_methods, reason = "damaging the cache on purpose")]
                std::fs::write(&manifest, bytes).unwrap();
            }),
            ("truncated table file", |dir| {
                let sst = std::fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.extension().is_some_and(|x| x == "sst"))
                    .unwrap();
                let len = std::fs::metadata(&sst).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&sst)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }),
        ];
        for (name, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            let repo = Id::hash(b"repo");
            {
                let idx = ChunkIndex::open(dir.path(), repo).unwrap();
                let pack = IndexedPack {
                    id: PackId(Id::hash(b"p")),
                    len: 9000,
                    entries: vec![entry(b"x")],
                };
                idx.ingest(&IndexId(Id::hash(b"i")), &[pack]).unwrap();
                assert!(idx.rebuilt_because().is_none());
            }
            damage(dir.path());
            let idx = ChunkIndex::open(dir.path(), repo)
                .unwrap_or_else(|e| panic!("{name}: not rebuilt: {e}"));
            assert!(!idx.is_read_only(), "{name}");
            assert!(idx.rebuilt_because().is_some(), "{name}: the rebuild says why");
            assert!(idx.ingested().unwrap().is_empty(), "{name}: created anew, to be refilled");
        }
    }

    #[test]
    fn second_opener_gets_a_read_only_view() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Id::hash(b"repo");
        let first = ChunkIndex::open(dir.path(), repo).unwrap();
        let second = ChunkIndex::open(dir.path(), repo).unwrap();
        assert!(!first.is_read_only());
        assert!(second.is_read_only());
        let pack =
            IndexedPack { id: PackId(Id::hash(b"p")), len: 9000, entries: vec![entry(b"z")] };
        second.ingest(&IndexId(Id::hash(b"i")), &[pack]).unwrap();
        assert!(second.contains(&Id::hash(b"z")).unwrap());
    }
}
