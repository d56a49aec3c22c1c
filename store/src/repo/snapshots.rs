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
        Ok(self.storage.list(ObjectDir::Snapshots)?.into_iter().map(SnapshotId).collect())
    }

    /// Loads and verifies one manifest.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the snapshot, [`Error::UnsupportedVersion`].
    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Manifest> {
        let plain = self.read_sealed(
            ObjectDir::Snapshots,
            id.0,
            MAX_MANIFEST_FILE_LEN,
            crate::crypto::FileKind::Manifest,
            ObjectRef::Snapshot(id),
        )?;
        Manifest::decode(&plain).map_err(|reason| Error::corrupt(ObjectRef::Snapshot(id), reason))
    }

    /// Writes a manifest, last step of a snapshot: temp + fsync + rename + directory fsync.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_snapshot(&self, manifest: &Manifest) -> Result<SnapshotId> {
        self.check_lock()?;
        let plain = manifest.encode(self.version())?;
        let id = self.write_sealed(
            ObjectDir::Snapshots,
            crate::crypto::FileKind::Manifest,
            plain,
            "manifest",
        )?;
        Ok(SnapshotId(id))
    }

    /// Removes a manifest (the set's data stays until prune). Durable when it returns.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        self.storage.remove(ObjectDir::Snapshots, &[id.0])
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
            .list_snapshots()?
            .into_iter()
            .map(|s| s.id)
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
