//! The manifests of a repository (`snapshots/<id>`, FORMAT.md §7): listing, loading (verified
//! against the name), writing (last, after the lock check), removing, and resolving what an
//! operator names (`latest`, a set name, an id or a prefix).

#[allow(clippy::wildcard_imports, reason = "the parts of repo share its imports")]
use super::*;

/// Largest manifest file a reader accepts: a record of at most [`crate::format::MAX_RECORD_LEN`]
/// and its headers; anything longer is damage, refused before it is read.
const MAX_MANIFEST_FILE_LEN: u64 = crate::format::MAX_RECORD_LEN as u64 + 4096;

/// A snapshot found in `snapshots/`, with its manifest or the reason it could not be loaded.
#[derive(Debug)]
pub struct ListedSnapshot {
    /// Its id (the file name).
    pub id: SnapshotId,
    /// The manifest, or why it is unreadable.
    pub manifest: Result<Manifest>,
}

impl Repository {
    /// Every snapshot in `snapshots/`, in no particular order.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn list_snapshots(&self) -> Result<Vec<ListedSnapshot>> {
        Ok(self
            .list_snapshot_ids()?
            .into_iter()
            .map(|id| ListedSnapshot { id, manifest: self.load_snapshot(id) })
            .collect())
    }

    /// The ids of every snapshot in `snapshots/`, in no particular order, without loading them.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let ids = self.storage.list(ObjectDir::Snapshots)?;
        if let Some(copies) = self.manifest_copies() {
            forget_copies_but(&copies, &ids);
        }
        Ok(ids.into_iter().map(SnapshotId).collect())
    }

    /// Loads and verifies one manifest (of a repository in object storage, from this host's
    /// copy when it has one, verified as the object is).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the snapshot, [`Error::UnsupportedVersion`].
    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Manifest> {
        let object = ObjectRef::Snapshot(id);
        let copies = self.manifest_copies();
        let sealed = match copies.as_deref().and_then(|dir| read_copy(dir, id.0)) {
            Some(bytes) => bytes,
            None => {
                let bytes = crate::storage::read_checked(
                    self.storage(),
                    ObjectDir::Snapshots,
                    id.0,
                    MAX_MANIFEST_FILE_LEN,
                )?
                .map_err(|reason| Error::corrupt(object.clone(), reason))?;
                if let Some(dir) = &copies {
                    self.keep_copy(dir, id.0, &bytes);
                }
                bytes
            }
        };
        let plain = self.open_sealed(crate::crypto::FileKind::Manifest, sealed, object.clone())?;
        Manifest::decode(&plain).map_err(|reason| Error::corrupt(object, reason))
    }

    /// Writes a manifest, last step of a snapshot: temp + fsync + rename + directory fsync.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_snapshot(&self, manifest: &Manifest) -> Result<SnapshotId> {
        self.check_lock()?;
        let plain = manifest.encode(self.version())?;
        let sealed = self.seal_file(crate::crypto::FileKind::Manifest, plain)?;
        let id = Id::hash(&sealed);
        self.storage.write(ObjectDir::Snapshots, id, &sealed, WriteMode::Replace, "manifest")?;
        if let Some(dir) = self.manifest_copies() {
            self.keep_copy(&dir, id, &sealed);
        }
        Ok(SnapshotId(id))
    }

    /// Removes a manifest (the set's data stays until prune). Durable when it returns.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.storage.remove(ObjectDir::Snapshots, &[id.0])?;
        if let Some(dir) = self.manifest_copies() {
            let _ = std::fs::remove_file(dir.join(id.0.to_hex()));
        }
        Ok(())
    }

    /// Where this host keeps copies of the manifests of a repository in object storage, so
    /// that each is downloaded once, not at every run (none for a local repository, whose
    /// manifests are as near as a copy; none for a check of the repository itself).
    fn manifest_copies(&self) -> Option<PathBuf> {
        let off = self.blob_cache_off.load(std::sync::atomic::Ordering::Relaxed);
        (!self.storage.lists_cheaply() && !off).then(|| self.layout.manifest_copies_dir())
    }

    /// Keeps a copy of manifest `id` (its sealed bytes): written under a temp name and
    /// renamed, not synced (a copy torn by a crash fails its hash and is downloaded again).
    /// Best effort: a copy that cannot be kept only costs a download next time.
    fn keep_copy(&self, dir: &Path, id: Id, sealed: &[u8]) {
        let kept = (|| {
            crate::fs::ensure_dir(dir)?;
            let (mut file, temp) = crate::fs::create_temp(&self.layout.tmp_dir(), "manifest")?;
            let done = std::io::Write::write_all(&mut file, sealed)
                .and_then(|()| std::fs::rename(&temp, dir.join(id.to_hex())));
            if done.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            done.at(dir)
        })();
        drop(kept);
    }

    /// Finds the snapshot `reference` names: `latest`, a set name (`YYYYMMDD-HHMMSS`, its start
    /// time in UTC), a full id, or a unique id prefix of at least 8 hex characters.
    ///
    /// # Errors
    /// [`Error::SnapshotNotFound`], [`Error::AmbiguousSnapshot`], [`Error::InvalidReference`].
    pub fn resolve_snapshot(&self, reference: &str) -> Result<(SnapshotId, Manifest)> {
        let not_found = || Error::SnapshotNotFound { reference: reference.to_owned() };
        if reference == "latest" {
            let newest = self
                .list_snapshots()?
                .into_iter()
                .filter_map(|s| s.manifest.ok().map(|m| (s.id, m)))
                .max_by_key(|(id, m)| (m.time_ns, *id));
            return newest.ok_or_else(not_found);
        }
        if crate::time::is_sortable_name(reference) {
            let sets: Vec<(SnapshotId, Manifest)> = self
                .list_snapshots()?
                .into_iter()
                .filter_map(|s| s.manifest.ok().map(|m| (s.id, m)))
                .collect();
            let names = crate::snapshot::unique_names(sets.iter().map(|(id, m)| (*id, m)));
            return sets
                .into_iter()
                .find(|(id, _)| names.get(id).map(String::as_str) == Some(reference))
                .ok_or_else(not_found);
        }
        let valid_hex = reference.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid_hex || reference.len() < 8 || reference.len() > 64 {
            return Err(Error::InvalidReference {
                reference: reference.to_owned(),
                reason:
                    "expected `latest`, a set name YYYYMMDD-HHMMSS, or at least 8 lowercase hex \
                         characters of an id",
            });
        }
        let matches: Vec<SnapshotId> = self
            .list_snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(reference))
            .collect();
        match matches.as_slice() {
            [] => Err(not_found()),
            [id] => Ok((*id, self.load_snapshot(*id)?)),
            _ => Err(Error::AmbiguousSnapshot {
                reference: reference.to_owned(),
                count: matches.len(),
            }),
        }
    }
}

/// This host's copy of manifest `id` in `dir`, when there is one that hashes to its name.
fn read_copy(dir: &Path, id: Id) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(dir.join(id.to_hex()))
        .ok()?
        .take(MAX_MANIFEST_FILE_LEN + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    let fits = bytes.len() as u64 <= MAX_MANIFEST_FILE_LEN;
    (fits && Id::hash(&bytes) == id).then_some(bytes)
}

/// Removes the copies in `dir` of manifests no longer listed (`listed`, sorted). Only copies
/// (files named by an id) are removed: whatever else is there is not ours. Best effort.
fn forget_copies_but(dir: &Path, listed: &[Id]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let id = name.to_str().and_then(|n| n.parse::<Id>().ok());
        if id.is_some_and(|id| listed.binary_search(&id).is_err()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
