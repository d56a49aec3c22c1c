//! The index files of a repository (`index/<id>`, FORMAT.md §8.1) and this host's cache fed from
//! them: listing, reading and writing index files, the cache brought up to date on first use
//! (damage records applied, damaged index files skipped), and [`IndexRewrite`], which replaces
//! every index file without a moment when a blob is unlisted.

#[allow(clippy::wildcard_imports, reason = "the parts of repo share its imports")]
use super::*;

/// Index files hold at most this many blobs.
const INDEX_FILE_BLOBS: usize = 50_000;

/// Replaces all index files by new ones, in the order that keeps every blob listed at every
/// moment: the new files are written (durably) first, and only then are the old ones removed.
/// A crash in between leaves blobs listed twice, which is harmless.
pub(crate) struct IndexRewrite<'r> {
    repo: &'r Repository,
    old: Vec<IndexId>,
    written: Vec<IndexId>,
    pending: Vec<IndexedPack>,
    pending_blobs: usize,
}

impl<'r> IndexRewrite<'r> {
    /// Starts a rewrite; the index files present now are the ones it will remove.
    pub(crate) fn begin(repo: &'r Repository) -> Result<Self> {
        Ok(IndexRewrite {
            repo,
            old: repo.list_index_files()?,
            written: Vec::new(),
            pending: Vec::new(),
            pending_blobs: 0,
        })
    }

    /// The index files present when the rewrite began.
    pub(crate) fn old(&self) -> &[IndexId] {
        &self.old
    }

    /// The index files written so far.
    pub(crate) fn written(&self) -> &[IndexId] {
        &self.written
    }

    /// Lists `pack` in the new index files.
    pub(crate) fn add(&mut self, pack: IndexedPack) -> Result<()> {
        self.pending_blobs += pack.entries.len();
        self.pending.push(pack);
        if self.pending_blobs >= INDEX_FILE_BLOBS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            self.written.push(self.repo.write_index_file(&self.pending)?);
            self.pending.clear();
            self.pending_blobs = 0;
        }
        Ok(())
    }

    /// Writes the last new index file; returns how many were written.
    pub(crate) fn write(&mut self) -> Result<u64> {
        self.flush()?;
        Ok(self.written.len() as u64)
    }

    /// Removes the old index files (after [`IndexRewrite::write`]); returns how many.
    pub(crate) fn remove_old(self) -> Result<u64> {
        let gone: Vec<Id> =
            self.old.iter().filter(|id| !self.written.contains(id)).map(|id| id.0).collect();
        self.repo.storage.remove(ObjectDir::Index, &gone)?;
        Ok(gone.len() as u64)
    }
}

/// Entries ingested in one open beyond which the cache is compacted right away.
const BULK_INGEST: usize = 500_000;

/// An index file that could not be read and was left out of the cache: the blobs only it lists
/// are unknown to this process until `store repair index` rewrites the index from the packs.
#[derive(Debug, Clone)]
pub struct SkippedIndexFile {
    /// The index file.
    pub id: IndexId,
    /// Why it was skipped.
    pub error: String,
}

impl Repository {
    /// The index cache, opened and brought up to date with `index/` on first use.
    ///
    /// # Errors
    /// [`Error::Cache`], or a damaged index file.
    pub fn index(&self) -> Result<&ChunkIndex> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let damage = self.damage_records()?;
        let cache_dir = self.usable_cache_dir()?;
        let mut index = ChunkIndex::open(&cache_dir, self.config.repo_id)?;
        if let (Some(why), Ok(mut note)) = (index.rebuilt_because(), self.cache_rebuilt.lock()) {
            *note = Some(why.to_owned());
        }
        let on_disk = self.list_index_files()?;
        // The cache may only hold whole index files that still exist: when one is gone (prune,
        // repair, or lost), rebuild the cache from what is there. A new damage record may hide
        // copies the cache points at, while other index files list intact copies of the same
        // blobs: rebuild too, so those are found (damage is rare; a rebuild is cheap next to it).
        if !index.is_read_only() {
            let known: HashSet<Id> =
                on_disk.iter().map(|i| i.0).chain(damage.read.iter().map(|d| d.0)).collect();
            let mut rebuild = index.ingested()?.iter().any(|id| !known.contains(id));
            for d in &damage.read {
                rebuild |= !index.is_ingested(&d.0)?;
            }
            if rebuild {
                index.destroy()?;
                index = ChunkIndex::open(&cache_dir, self.config.repo_id)?;
            }
        }
        index.set_damaged(damage.set);
        index.set_frames_limit(self.frames_limit);
        let ingested = self.ingest_new(&index, on_disk)?;
        for d in &damage.read {
            index.mark_applied(&d.0)?;
        }
        if ingested >= BULK_INGEST {
            index.compact()?;
        }
        Ok(self.index.get_or_init(|| index))
    }

    /// Feeds the index files of `on_disk` that `index` has not ingested yet to it; returns how
    /// many entries that was. A damaged index file must not make the whole repository
    /// unreadable: it is skipped (and reported by [`Repository::skipped_index_files`]), what the
    /// other index files list is still found, and `repair index` restores the rest.
    fn ingest_new(&self, index: &ChunkIndex, on_disk: Vec<IndexId>) -> Result<usize> {
        let mut ingested = 0usize;
        for id in on_disk {
            if index.is_ingested(&id.0)? {
                continue;
            }
            match self.load_index_file(id) {
                Ok(packs) => {
                    ingested += packs.iter().map(|p| p.entries.len()).sum::<usize>();
                    index.ingest(&id, &packs)?;
                }
                Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                    let mut skipped =
                        self.skipped_index.lock().map_err(|_| Error::WorkerPanicked)?;
                    if !skipped.iter().any(|s| s.id == id) {
                        skipped.push(SkippedIndexFile { id, error: e.to_string() });
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ingested)
    }

    /// The cache's directory: the configured one, or, when that cannot be written (a repository
    /// on a read-only mount, with the cache in it), a temporary one removed when the repository
    /// is dropped ([`Repository::temporary_cache`] says so).
    fn usable_cache_dir(&self) -> Result<std::path::PathBuf> {
        let dir = &self.cache_dir;
        // The directory, or the nearest of its ancestors that exists (it is made below that):
        // a relative one's last ancestor is "", the working directory.
        let here = std::path::Path::new(".");
        let probe = dir
            .ancestors()
            .map(|a| if a.as_os_str().is_empty() { here } else { a })
            .find(|a| a.exists())
            .unwrap_or(here);
        if rustix::fs::access(probe, rustix::fs::Access::WRITE_OK).is_ok() {
            return Ok(dir.clone());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let temp = std::env::temp_dir().join(format!("store-cache-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&temp).at(&temp)?;
        if let Ok(mut t) = self.temp_cache.lock() {
            *t = Some(temp.clone());
        }
        Ok(temp)
    }

    /// The temporary cache in use because the configured one cannot be written, if any.
    #[must_use]
    pub fn temporary_cache(&self) -> Option<std::path::PathBuf> {
        self.temp_cache.lock().ok().and_then(|t| t.clone())
    }

    /// Why this host's cache could not be opened and was rebuilt from the index files, if it
    /// was (after [`Repository::index`]).
    #[must_use]
    pub fn cache_rebuilt(&self) -> Option<String> {
        self.cache_rebuilt.lock().ok().and_then(|n| n.clone())
    }

    /// Index files the cache left out because they cannot be read (see [`SkippedIndexFile`]).
    #[must_use]
    pub fn skipped_index_files(&self) -> Vec<SkippedIndexFile> {
        self.skipped_index.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Ingests index files written since the cache was opened (by other processes).
    ///
    /// # Errors
    /// [`Error::Cache`], or a damaged index file.
    pub fn refresh_index(&self) -> Result<()> {
        let index = self.index()?;
        self.ingest_new(index, self.list_index_files()?)?;
        Ok(())
    }

    /// The ids of every index file in `index/`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn list_index_files(&self) -> Result<Vec<IndexId>> {
        Ok(self.storage.list(ObjectDir::Index)?.into_iter().map(IndexId).collect())
    }

    /// Reads and verifies one index file.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the file, [`Error::UnsupportedVersion`].
    pub fn load_index_file(&self, id: IndexId) -> Result<Vec<IndexedPack>> {
        let plain = self.read_sealed(
            ObjectDir::Index,
            id.0,
            MAX_INDEX_FILE_LEN,
            crate::crypto::FileKind::Index,
            ObjectRef::IndexFile(id),
        )?;
        decode_index_file(&plain).map_err(|reason| Error::corrupt(ObjectRef::IndexFile(id), reason))
    }

    /// Writes an index file listing `packs` (which must be durable) and feeds it to the cache.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Cache`].
    pub fn save_index_file(&self, packs: &[IndexedPack]) -> Result<IndexId> {
        let id = self.write_index_file(packs)?;
        self.index()?.ingest(&id, packs)?;
        Ok(id)
    }

    /// Writes an index file listing `packs` durably, without touching the cache.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_index_file(&self, packs: &[IndexedPack]) -> Result<IndexId> {
        let plain = encode_index_file(packs, self.version());
        let id =
            self.write_sealed(ObjectDir::Index, crate::crypto::FileKind::Index, plain, "index")?;
        Ok(IndexId(id))
    }
}
