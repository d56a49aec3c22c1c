//! `tag`: changes the tags, and the note, of a set. Manifests are never modified (their name is their hash), so
//! the set gets a new manifest with the new tags, written first; the old one is removed only
//! after. Sets that chain to it (incrementals naming it as their parent, and theirs) get new
//! manifests naming the new one, so chains, and `forget`'s keeping of whole chains, are
//! unaffected. A crash in between leaves the old and the new manifest of a set, never neither;
//! running the same command again finishes the job (the new manifests come out the same).

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Manifest;

/// What a change of tags did.
#[derive(Debug, Clone, Default)]
pub struct TagReport {
    /// The set's manifest before and after (equal when the tags did not change).
    pub old: Option<SnapshotId>,
    /// Its new manifest.
    pub new: Option<SnapshotId>,
    /// The tags it has now.
    pub tags: Vec<String>,
    /// Its note now (empty: none).
    pub note: String,
    /// Sets that chain to it, rewritten to name its new manifest: `(old, new)`.
    pub rechained: Vec<(SnapshotId, SnapshotId)>,
}

/// A change to the tags and note of a set.
#[derive(Debug, Clone, Default)]
pub struct TagChange {
    /// Tags to add.
    pub add: Vec<String>,
    /// Tags to remove.
    pub remove: Vec<String>,
    /// The new note (empty: remove it); `None` keeps the note.
    pub note: Option<String>,
}

/// Applies `change` to set `id` (the caller holds a shared lock, so a prune cannot look between
/// the new manifests and the removal of the old ones).
///
/// # Errors
/// An invalid tag or note (or a note the repository's format version cannot record), an
/// unreadable manifest, a failed write. Nothing is removed unless every new manifest was written.
pub fn retag(repo: &Repository, id: SnapshotId, change: &TagChange) -> Result<TagReport> {
    let TagChange { add, remove, note } = change;
    if let Some(note) = note {
        crate::snapshot::validate_note(note)?;
        crate::snapshot::check_note_supported(note, repo.version())?;
    }
    if let Some(bad) = add.iter().find(|t| !crate::tree::is_valid_name(t.as_bytes())) {
        return Err(Error::InvalidOption {
            option: "tag",
            reason: format!("{bad:?}: a tag must be usable as a file name (no '/', not empty)"),
        });
    }
    let manifest = repo.load_snapshot(id)?;
    let mut tags: Vec<String> =
        manifest.tags.iter().filter(|t| !remove.contains(t)).cloned().collect();
    for t in add {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let note = note.clone().unwrap_or_else(|| manifest.note.clone());
    if tags == manifest.tags && note == manifest.note {
        return Ok(TagReport { old: Some(id), new: Some(id), tags, note, rechained: Vec::new() });
    }
    // Every set, to find those that chain to this one. One that cannot be read cannot be
    // rewritten: refuse before writing anything, as its chain would break.
    let mut all: Vec<(SnapshotId, Manifest)> = Vec::new();
    for s in repo.list_snapshots()? {
        all.push((s.id, s.manifest?));
    }
    let new =
        repo.save_snapshot(&Manifest { tags: tags.clone(), note: note.clone(), ..manifest })?;
    let mut renamed = vec![(id, new)];
    let mut next = 0;
    while let Some(&(old, replaced)) = renamed.get(next) {
        next += 1;
        for (child, m) in all.iter().filter(|(c, m)| m.parent == Some(old) && *c != old) {
            let rewritten =
                repo.save_snapshot(&Manifest { parent: Some(replaced), ..m.clone() })?;
            if !renamed.iter().any(|(o, _)| o == child) {
                renamed.push((*child, rewritten));
            }
        }
    }
    crate::crash::point("tag", "written");
    // The old manifests go only now, the chained ones before the set itself.
    for (old, _) in renamed.iter().rev() {
        repo.remove_snapshot(*old)?;
    }
    Ok(TagReport { old: Some(id), new: Some(new), tags, note, rechained: renamed[1..].to_vec() })
}
