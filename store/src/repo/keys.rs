//! The keys of an encrypted repository (`keys/<id>`, FORMAT.md §15.2): opening with a
//! password, and adding, listing and removing keys.

#[allow(clippy::wildcard_imports, reason = "the parts of repo share its imports")]
use super::*;

use crate::crypto::{try_key, KdfParams, KeyFile, Password, Unlocked};

/// A key file of the repository.
#[derive(Debug)]
pub struct KeyEntry {
    /// Its id (the file name: BLAKE3 of its bytes).
    pub id: Id,
    /// The key file, or why it cannot be read.
    pub key: std::result::Result<KeyFile, Corruption>,
    /// Whether this process opened the repository with it.
    pub current: bool,
}

/// Largest key file a reader accepts (they are 140 bytes).
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Reads and decodes key file `id`.
fn read_key(storage: &dyn Storage, id: Id) -> Result<std::result::Result<KeyFile, Corruption>> {
    Ok(crate::storage::read_checked(storage, ObjectDir::Keys, id, MAX_KEY_FILE_LEN)?
        .and_then(|bytes| KeyFile::decode(&bytes)))
}

/// Tries `password` on every key file once, in name order. Key files that cannot be read are
/// named in the error when none opens.
pub(super) fn unlock(
    storage: &dyn Storage,
    config: &RepoConfig,
    password: &Password,
) -> Result<(Id, Unlocked)> {
    let repo_id = config.repo_id;
    let mut damaged = Vec::new();
    let ids = storage.list(ObjectDir::Keys)?;
    for &id in &ids {
        match read_key(storage, id)? {
            Ok(key) => {
                if let Some(unlocked) = try_key(&key, password, repo_id, config.encryption)? {
                    return Ok((id, unlocked));
                }
            }
            Err(why) => damaged.push(format!("key file {} is damaged: {why}", id.short())),
        }
    }
    Err(Error::WrongPassword { path: storage.location().into(), tried: ids.len(), damaged })
}

/// Writes key file `key` (create, never replace); returns its id.
pub(super) fn write_key(storage: &dyn Storage, key: &KeyFile) -> Result<Id> {
    let bytes = key.encode();
    let id = Id::hash(&bytes);
    storage.write(ObjectDir::Keys, id, &bytes, WriteMode::CreateNew, "key")?;
    Ok(id)
}

impl Repository {
    /// The key this process opened the repository with, and its master secret.
    fn unlocked(&self) -> Result<&(Id, Unlocked)> {
        self.unlocked.as_ref().ok_or_else(|| Error::KeyRefused {
            key: "-".into(),
            reason: "the repository is not encrypted: it has no keys".into(),
        })
    }

    /// Every key file, with the one in use marked.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        let current = self.unlocked.as_ref().map(|(id, _)| *id);
        self.storage
            .list(ObjectDir::Keys)?
            .into_iter()
            .map(|id| {
                Ok(KeyEntry {
                    id,
                    key: read_key(self.storage(), id)?,
                    current: current == Some(id),
                })
            })
            .collect()
    }

    /// Adds a key for `password` that opens the repository as the key in use does.
    ///
    /// # Errors
    /// [`Error::KeyRefused`] for an unencrypted repository, [`Error::InvalidOption`] for KDF
    /// parameters out of bounds, [`Error::Io`].
    pub fn add_key(&self, password: &Password, kdf: KdfParams) -> Result<Id> {
        let (_, unlocked) = self.unlocked()?;
        let key = unlocked.wrap_for(password, kdf, self.version(), self.config.repo_id)?;
        write_key(self.storage(), &key)
    }

    /// The id of the key file `reference` names: a full id or a unique prefix of at least 8 hex
    /// characters.
    ///
    /// # Errors
    /// [`Error::KeyRefused`] when none or several match.
    pub fn resolve_key(&self, reference: &str) -> Result<Id> {
        let refused =
            |reason: &str| Error::KeyRefused { key: reference.into(), reason: reason.into() };
        if reference.len() < 8 {
            return Err(refused("give at least 8 hex characters of its id"));
        }
        let ids: Vec<Id> = self
            .storage
            .list(ObjectDir::Keys)?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(reference))
            .collect();
        match ids.as_slice() {
            [id] => Ok(*id),
            [] => Err(refused("no such key (see `store key list`)")),
            _ => Err(refused("several keys match; give more of the id")),
        }
    }

    /// Removes key file `id`. The last key that opens the repository, and the key in use, are
    /// never removed (add another first, or open the repository with another key).
    ///
    /// # Errors
    /// [`Error::KeyRefused`], [`Error::Io`].
    pub fn remove_key(&self, id: Id) -> Result<()> {
        let (current, _) = self.unlocked()?;
        let refused = |reason: &str| Error::KeyRefused { key: id.short(), reason: reason.into() };
        if id == *current {
            return Err(refused(
                "it is the key in use; open the repository with another key to remove it \
                 (or use `store key passwd`)",
            ));
        }
        let others_intact = self
            .storage
            .list(ObjectDir::Keys)?
            .into_iter()
            .filter(|&k| k != id)
            .filter(|&k| read_key(self.storage(), k).is_ok_and(|r| r.is_ok()))
            .count();
        if others_intact == 0 {
            return Err(refused("it is the last intact key; removing it would lose every set"));
        }
        self.remove_key_file(id)
    }

    fn remove_key_file(&self, id: Id) -> Result<()> {
        self.storage.remove(ObjectDir::Keys, &[id])
    }

    /// Replaces the key in use by one for `password`: the new key is durable before the old
    /// one is removed, so a crash leaves one of the two (or both), never none. Returns the new
    /// key's id.
    ///
    /// # Errors
    /// As [`Repository::add_key`].
    pub fn change_password(&self, password: &Password, kdf: KdfParams) -> Result<Id> {
        let (old, _) = self.unlocked()?;
        let new = self.add_key(password, kdf)?;
        crate::crash::point("key", "added");
        self.remove_key_file(*old)?;
        Ok(new)
    }
}
