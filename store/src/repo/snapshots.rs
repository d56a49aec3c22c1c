//! The manifests of a repository (`snapshots/<id>`, FORMAT.md §7): listing, loading (verified
//! against the name), writing (last, after the lock check), removing, and resolving what an
//! operator names (`latest`, a set name, an id or a prefix).

#[allow(clippy::wildcard_imports, reason = "the parts of repo share its imports")]
use super::*;

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
        let dir = self.layout.snapshots_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<SnapshotId>().ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Loads and verifies one manifest.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming the snapshot, [`Error::UnsupportedVersion`].
    pub fn load_snapshot(&self, id: SnapshotId) -> Result<Manifest> {
        let path = self.layout.snapshot(id);
        let corrupt = |reason| Error::corrupt(ObjectRef::Snapshot(id), reason);
        let bytes = std::fs::read(&path).at(&path)?;
        let actual = Id::hash(&bytes);
        if actual != id.0 {
            return Err(corrupt(Corruption::HashMismatch { expected: id.0, actual }));
        }
        let plain =
            self.crypto.open_file(crate::crypto::FileKind::Manifest, &bytes).map_err(corrupt)?;
        Manifest::decode(&plain).map_err(corrupt)
    }

    /// Writes a manifest, last step of a snapshot: temp + fsync + rename + directory fsync.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn save_snapshot(&self, manifest: &Manifest) -> Result<SnapshotId> {
        self.check_lock()?;
        let bytes =
            self.seal_file(crate::crypto::FileKind::Manifest, manifest.encode(self.version())?)?;
        let id = SnapshotId(Id::hash(&bytes));
        write_atomic(&self.layout.tmp_dir(), &self.layout.snapshot(id), &bytes, "manifest")?;
        Ok(id)
    }

    /// Removes a manifest (the set's data stays until prune). Durable when it returns.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_snapshot(&self, id: SnapshotId) -> Result<()> {
        let path = self.layout.snapshot(id);
        std::fs::remove_file(&path).at(&path)?;
        crate::fs::fsync_dir(&self.layout.snapshots_dir())
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
