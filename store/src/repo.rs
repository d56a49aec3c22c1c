//! Opening and creating repositories, and loading what they hold.
//!
//! [`Repository`] owns the layout, the config and (opened on first use) the index cache.
//! Operations live in their own modules (`backup`, `restore`) and take `&Repository`.

mod coverage;
mod damage;
mod index_files;
mod keys;
mod layout;
mod lock;
mod reserve;
mod snapshots;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use crate::config::{Encryption, IdHash, RepoConfig};
pub use coverage::CoverageRecords;
pub use damage::DamageRecords;
pub(crate) use index_files::IndexRewrite;
pub use index_files::SkippedIndexFile;
pub use keys::KeyEntry;
pub use layout::Layout;
pub(crate) use lock::process_exists;
pub use lock::{LockInfo, LockOptions, RepoLock, DEFAULT_STALE_AFTER};
pub use reserve::{Reserve, RESERVE_LEN};
pub use snapshots::ListedSnapshot;

use crate::chunker::{ChunkSizes, ChunkerParams};
use crate::compress::DEFAULT_LEVEL;
use crate::error::{Corruption, Error, IoContext, ObjectRef, Result};
use crate::fs::ensure_dir;
use crate::id::{Id, IndexId, SnapshotId, TreeId};
use crate::index::{
    decode_index_file, encode_index_file, ChunkIndex, IndexedPack, MAX_INDEX_FILE_LEN,
};
use crate::pack::{read_blob, BlobKind};
use crate::snapshot::Manifest;
use crate::storage::{LocalStorage, Named, ObjectDir, Storage, WriteMode};
use crate::tree::TreeBlob;
use std::os::unix::fs::DirBuilderExt;

/// Default pack target: 16 MiB.
pub const DEFAULT_PACK_TARGET: u32 = 16 << 20;

/// Choices made at `init`.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Chunk size bounds; the defaults of [`ChunkerParams::default_with_seed`] when `None`.
    /// The seed is always random.
    pub chunk_sizes: Option<ChunkSizes>,
    /// zstd level; [`DEFAULT_LEVEL`] when `None`.
    pub compression_level: Option<i32>,
    /// Pack target in bytes; [`DEFAULT_PACK_TARGET`] when `None`.
    pub pack_target: Option<u32>,
    /// Format version of the new repository; [`crate::FORMAT_VERSION`] when `None`. An older
    /// one makes a repository older builds can read (and write), keeping less metadata.
    pub format_version: Option<u32>,
    /// The first key of an encrypted repository (format version 3 or later); `None` makes an
    /// unencrypted one.
    pub encryption: Option<NewKey>,
}

/// The password and key derivation cost of a new key.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The password.
    pub password: crate::crypto::Password,
    /// Argon2id cost.
    pub kdf: crate::crypto::KdfParams,
    /// What seals the repository's objects; `None`: [`Encryption::default_for`] its version.
    pub cipher: Option<crate::config::Encryption>,
}

/// Where a repository is: a local directory, or a prefix of an S3 bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoLocation {
    /// A local directory.
    Local(PathBuf),
    /// S3-compatible object storage (`s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`).
    S3(crate::storage::S3Location),
}

impl RepoLocation {
    /// `s3:...` is object storage; anything else a local path.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming what is wrong with an `s3:` location.
    pub fn parse(arg: &std::ffi::OsStr) -> Result<Self> {
        match arg.to_str().filter(|a| a.starts_with("s3:")) {
            Some(url) => {
                crate::storage::S3Location::parse(url).map(RepoLocation::S3).map_err(|why| {
                    Error::InvalidOption { option: "repository", reason: format!("{url}: {why}") }
                })
            }
            None => Ok(RepoLocation::Local(PathBuf::from(arg))),
        }
    }
}

impl std::fmt::Display for RepoLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepoLocation::Local(path) => write!(f, "{}", path.display()),
            RepoLocation::S3(l) => write!(f, "{l}"),
        }
    }
}

/// Where this host keeps what it needs of a repository in object storage, by repository id:
/// `$XDG_CACHE_HOME/store`, or `~/.cache/store`.
///
/// # Errors
/// [`Error::InvalidOption`] when neither variable is set.
pub fn default_local_dir() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| Error::InvalidOption {
            option: "cache directory",
            reason: "neither XDG_CACHE_HOME nor HOME is set: give --cache-dir DIR".into(),
        })?;
    Ok(base.join("store"))
}

/// Choices made when opening.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Where the index cache lives; `REPO/cache` when `None`.
    pub cache_dir: Option<PathBuf>,
    /// Open with `config.copy` when `config` is missing (for `repair config`, which then writes
    /// `config` again). Otherwise a missing `config` means "not a repository", copy or not.
    pub use_config_copy: bool,
    /// The password of an encrypted repository (ignored for an unencrypted one).
    pub password: Option<crate::crypto::Password>,
    /// Most bytes of trees and chunk lists this host keeps in its cache for a repository in
    /// object storage (`--cache-size`); [`crate::DEFAULT_FRAMES_LIMIT`] when `None`. The index
    /// itself is not counted: without it nothing deduplicates.
    pub cache_size: Option<u64>,
}

/// Open pack files kept for reading; beyond this many the set is emptied.
const OPEN_PACKS_MAX: usize = 64;

/// An open repository.
pub struct Repository {
    layout: Layout,
    /// Where its manifests, index files, damage records and keys are kept.
    storage: Arc<dyn Storage>,
    config: RepoConfig,
    /// How ids are made and objects sealed.
    crypto: crate::crypto::Crypto,
    /// The key this process opened an encrypted repository with.
    unlocked: Option<(Id, crate::crypto::Unlocked)>,
    /// Why `config` could not be used (its copy was), if it could not.
    config_damaged: Option<String>,
    cache_dir: PathBuf,
    /// Most bytes of frames the cache keeps ([`OpenOptions::cache_size`]).
    frames_limit: u64,
    index: OnceLock<ChunkIndex>,
    open_packs: Mutex<HashMap<crate::id::PackId, Arc<dyn crate::pack::PackSource>>>,
    /// The lock this process took last, checked before a manifest is written.
    held_lock: Mutex<Option<Arc<lock::LockState>>>,
    /// Index files left out of the cache because they cannot be read.
    skipped_index: Mutex<Vec<SkippedIndexFile>>,
    /// Why the cache was found damaged and rebuilt, if it was.
    cache_rebuilt: Mutex<Option<String>>,
    /// A temporary cache directory in use (the configured one cannot be written), removed on
    /// drop.
    temp_cache: Mutex<Option<PathBuf>>,
    /// Whether metadata blobs are read from their packs only (`check`).
    blob_cache_off: std::sync::atomic::AtomicBool,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// 32 bytes from the operating system's random source (`getrandom(2)`): a repository id, a
/// chunker seed.
pub(crate) fn random_id() -> Result<Id> {
    let mut bytes = [0u8; crate::id::ID_LEN];
    crate::crypto::random_bytes(&mut bytes)?;
    Ok(Id::from_bytes(bytes))
}

impl Drop for Repository {
    /// Closes the cache, and removes it when it was a temporary one.
    fn drop(&mut self) {
        let temp = self.temp_cache.get_mut().ok().and_then(Option::take);
        drop(self.index.take());
        if let Some(dir) = temp {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Repository {
    /// Creates a repository at `location`: a local directory that does not exist or is empty,
    /// or a bucket prefix that holds nothing. With object storage, this host's cache and
    /// staging directory is `cache_dir` (default [`default_local_dir`]).
    ///
    /// # Errors
    /// As [`Repository::init`]; [`Error::Io`] naming the bucket when it cannot be listed.
    pub fn init_at(
        location: &RepoLocation,
        opts: &InitOptions,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self> {
        match location {
            RepoLocation::Local(path) => Self::init(path, opts),
            RepoLocation::S3(l) => {
                let storage = crate::storage::S3Storage::open(l)?;
                let here = PathBuf::from(l.to_string());
                if storage.read_named(Named::Config).is_ok() {
                    return Err(Error::AlreadyExists {
                        path: here,
                        reason: "a repository already exists there".into(),
                    });
                }
                if !storage.is_empty()? {
                    return Err(Error::AlreadyExists {
                        path: here,
                        reason: "objects are stored below this prefix already".into(),
                    });
                }
                let (config, master) = Self::new_config(opts)?;
                let storage: Arc<dyn Storage> = Arc::new(storage);
                let unlocked = Self::write_new(storage.as_ref(), &config, master, &here)?;
                let layout = Self::local_layout(&config, cache_dir)?;
                Ok(Self::with_config(
                    layout,
                    storage,
                    config,
                    None,
                    &OpenOptions::default(),
                    unlocked,
                ))
            }
        }
    }

    /// Opens the repository at `location`; with object storage, this host's cache and staging
    /// directory is `opts.cache_dir` (default [`default_local_dir`]).
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub fn open_at(location: &RepoLocation, opts: &OpenOptions) -> Result<Self> {
        match location {
            RepoLocation::Local(path) => Self::open(path, opts),
            RepoLocation::S3(l) => {
                let storage = Arc::new(crate::storage::S3Storage::open(l)?);
                let local = OpenOptions { cache_dir: None, ..opts.clone() };
                Self::open_storage(storage, &local, |config| {
                    Self::local_layout(config, opts.cache_dir.clone())
                })
            }
        }
    }

    /// The local directory of a repository in object storage: its index cache (`cache/`) and
    /// the staging of packs (`tmp/`), made when missing.
    fn local_layout(config: &RepoConfig, dir: Option<PathBuf>) -> Result<Layout> {
        let root = match dir {
            Some(dir) => dir,
            None => default_local_dir()?.join(config.repo_id.to_hex()),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::fs::DIR_MODE)
            .create(&root)
            .at(&root)?;
        let layout = Layout::new(&root);
        ensure_dir(&layout.tmp_dir())?;
        Ok(layout)
    }

    /// A new repository's config, from `opts` (checked), and its first key when encrypted.
    fn new_config(
        opts: &InitOptions,
    ) -> Result<(RepoConfig, Option<(crate::crypto::KeyFile, crate::crypto::Unlocked)>)> {
        let version = opts.format_version.unwrap_or(crate::FORMAT_VERSION);
        if !crate::SUPPORTED_VERSIONS.contains(&version) {
            return Err(Error::InvalidOption {
                option: "format version",
                reason: format!(
                    "{version} is not one this build writes ({} to {})",
                    crate::SUPPORTED_VERSIONS.start(),
                    crate::SUPPORTED_VERSIONS.end()
                ),
            });
        }
        if opts.encryption.is_some() && version < 3 {
            return Err(Error::InvalidOption {
                option: "format version",
                reason: format!("version {version} cannot be encrypted (3 and later can)"),
            });
        }
        let cipher = match &opts.encryption {
            Some(new) => {
                let cipher = new.cipher.unwrap_or(Encryption::default_for(version));
                if cipher == Encryption::None || cipher.since_version() > version {
                    return Err(Error::InvalidOption {
                        option: "encryption",
                        reason: format!(
                            "{cipher:?} cannot seal a repository of format version {version} \
                             (it needs {})",
                            cipher.since_version()
                        ),
                    });
                }
                cipher
            }
            None => Encryption::None,
        };
        let seed = u64::from_le_bytes(random_id()?.as_bytes()[..8].try_into().unwrap_or([0; 8]));
        let chunker = match opts.chunk_sizes {
            Some(c) => ChunkerParams { min: c.min, avg: c.avg, max: c.max, seed },
            None => ChunkerParams::default_with_seed(seed),
        };
        chunker
            .validate()
            .map_err(|reason| Error::InvalidOption { option: "chunk sizes", reason })?;
        let compression_level = opts.compression_level.unwrap_or(DEFAULT_LEVEL);
        if !(1..=19).contains(&compression_level) {
            return Err(Error::InvalidOption {
                option: "compression level",
                reason: format!("{compression_level} is not between 1 and 19"),
            });
        }
        let pack_target = opts.pack_target.unwrap_or(DEFAULT_PACK_TARGET);
        if !(1 << 20..=1 << 30).contains(&pack_target) {
            return Err(Error::InvalidOption {
                option: "pack size",
                reason: format!("{pack_target} bytes is not between 1 MiB and 1 GiB"),
            });
        }
        let mut config = RepoConfig {
            version,
            repo_id: random_id()?,
            created_ns: now_ns(),
            id_hash: IdHash::Blake3,
            chunker,
            compression_level,
            pack_target,
            features: 0,
            encryption: crate::config::Encryption::None,
        };
        let master = match &opts.encryption {
            Some(new) => {
                // The gear seed comes from the key: the config holds none.
                config.chunker.seed = 0;
                config.id_hash = IdHash::KeyedBlake3;
                config.encryption = cipher;
                Some(crate::crypto::new_master(
                    &new.password,
                    new.kdf,
                    version,
                    config.repo_id,
                    cipher,
                )?)
            }
            None => None,
        };
        Ok((config, master))
    }

    /// Writes a new repository's first key and its config into `storage`. The key before the
    /// config: a repository exists once `config` does, and an encrypted one without a key
    /// could never be opened. Of several `init`s racing at `here`, one wins.
    fn write_new(
        storage: &dyn Storage,
        config: &RepoConfig,
        master: Option<(crate::crypto::KeyFile, crate::crypto::Unlocked)>,
        here: &Path,
    ) -> Result<Option<(Id, crate::crypto::Unlocked)>> {
        let unlocked = match master {
            Some((key, unlocked)) => Some((keys::write_key(storage, &key)?, unlocked)),
            None => None,
        };
        // The copy first: `config` is written last, as a repository exists once it does. Both
        // are created, never replaced, so `config.copy` always holds the bytes of `config`.
        let bytes = config.encode()?;
        for (name, label) in [(Named::ConfigCopy, "config_copy"), (Named::Config, "config")] {
            match storage.write_named(name, &bytes, WriteMode::CreateNew, label) {
                Err(Error::Io { cause, .. })
                    if cause.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    return Err(Error::AlreadyExists {
                        path: here.to_path_buf(),
                        reason: "another `store init` is creating a repository there".into(),
                    })
                }
                other => other?,
            }
        }
        Ok(unlocked)
    }

    /// Creates a repository at `path`: the directory must not exist or be empty.
    ///
    /// The config is written last, so a crash during `init` leaves no repository.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`], [`Error::InvalidOption`], [`Error::Io`].
    pub fn init(path: &Path, opts: &InitOptions) -> Result<Self> {
        let layout = Layout::new(path);
        if layout.config().exists() {
            return Err(Error::AlreadyExists {
                path: path.to_path_buf(),
                reason: "a repository already exists there".into(),
            });
        }
        match std::fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::AlreadyExists {
                        path: path.to_path_buf(),
                        reason: "directory is not empty".into(),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(path),
        }
        let (config, master) = Self::new_config(opts)?;
        if !path.exists() {
            std::fs::create_dir_all(path).at(path)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                crate::fs::fsync_dir(parent)?;
            }
        }
        // Of several `init`s racing on one directory, the one that creates `tmp/` owns it; the
        // others stop here, before writing anything.
        match std::fs::DirBuilder::new().mode(crate::fs::DIR_MODE).create(layout.tmp_dir()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists {
                    path: path.to_path_buf(),
                    reason: "another `store init` is creating a repository there".into(),
                })
            }
            Err(e) => return Err(e).at(layout.tmp_dir()),
        }
        for dir in layout.skeleton() {
            ensure_dir(&dir)?;
        }
        reserve::write_reserve(&layout.reserve());
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(layout.clone()));
        let unlocked = Self::write_new(storage.as_ref(), &config, master, path)?;
        Ok(Self::with_config(layout, storage, config, None, &OpenOptions::default(), unlocked))
    }

    /// Opens the repository at `path`.
    ///
    /// # Errors
    /// [`Error::NotARepository`] when there is no repository, [`Error::UnsupportedVersion`]
    /// for a newer format, [`Error::Corrupt`] for a damaged config.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let layout = Layout::new(path);
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::NotARepository {
                    path: path.to_path_buf(),
                    reason: "not a directory".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotARepository {
                    path: path.to_path_buf(),
                    reason: "no such directory; create one with `store init`".into(),
                })
            }
            Err(e) => return Err(e).at(path),
        }
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(layout.clone()));
        Self::open_storage(storage, opts, |_| Ok(layout))
    }

    /// Opens the repository kept in `storage`, whose local directory `layout` gives.
    fn open_storage(
        storage: Arc<dyn Storage>,
        opts: &OpenOptions,
        layout: impl FnOnce(&RepoConfig) -> Result<Layout>,
    ) -> Result<Self> {
        let here = PathBuf::from(storage.location());
        let config_path = storage.describe_named(Named::Config);
        let copy = storage.describe_named(Named::ConfigCopy);
        let read_copy =
            || storage.read_named(Named::ConfigCopy).map(|b| RepoConfig::decode(&b, &copy));
        let bytes = match storage.read_named(Named::Config) {
            Ok(b) => b,
            Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
                // `config` is written last by `init`: without it there is no repository, even
                // with an intact copy, until `repair config` restores it from that copy.
                return match read_copy().ok() {
                    Some(Ok(config)) if opts.use_config_copy => {
                        let unlocked = Self::open_key(storage.as_ref(), &config, opts)?;
                        Ok(Self::with_config(
                            layout(&config)?,
                            storage,
                            config,
                            Some(format!("{} is missing", config_path.display())),
                            opts,
                            unlocked,
                        ))
                    }
                    Some(Ok(_)) => Err(Error::ConfigMissing { path: here, copy }),
                    _ => Err(Error::NotARepository { path: here, reason: "no config file".into() }),
                };
            }
            Err(e) => return Err(e),
        };
        // A damaged config is replaced by its copy when the copy verifies (`store repair
        // config` then rewrites it); a newer version or a foreign file is never second-guessed.
        let (config, config_damaged) = match RepoConfig::decode(&bytes, &config_path) {
            Ok(c) => (c, None),
            Err(e @ Error::Corrupt { .. }) => match read_copy() {
                Ok(Ok(c)) => (c, Some(e.to_string())),
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let unlocked = Self::open_key(storage.as_ref(), &config, opts)?;
        Ok(Self::with_config(layout(&config)?, storage, config, config_damaged, opts, unlocked))
    }

    /// Opens a key of an encrypted repository with the password of `opts`.
    fn open_key(
        storage: &dyn Storage,
        config: &RepoConfig,
        opts: &OpenOptions,
    ) -> Result<Option<(Id, crate::crypto::Unlocked)>> {
        if !config.is_encrypted() {
            return Ok(None);
        }
        let password = opts
            .password
            .as_ref()
            .ok_or_else(|| Error::PasswordRequired { path: storage.location().into() })?;
        keys::unlock(storage, config, password).map(Some)
    }

    fn with_config(
        layout: Layout,
        storage: Arc<dyn Storage>,
        config: RepoConfig,
        config_damaged: Option<String>,
        opts: &OpenOptions,
        unlocked: Option<(Id, crate::crypto::Unlocked)>,
    ) -> Self {
        let cache_dir = opts.cache_dir.clone().unwrap_or_else(|| layout.default_cache_dir());
        let crypto =
            unlocked.as_ref().map_or_else(crate::crypto::Crypto::plain, |(_, u)| u.crypto.clone());
        Repository {
            layout,
            storage,
            config,
            crypto,
            unlocked,
            config_damaged,
            cache_dir,
            frames_limit: opts.cache_size.unwrap_or(crate::index::DEFAULT_FRAMES_LIMIT),
            index: OnceLock::new(),
            open_packs: Mutex::default(),
            held_lock: Mutex::default(),
            skipped_index: Mutex::default(),
            cache_rebuilt: Mutex::default(),
            temp_cache: Mutex::default(),
            blob_cache_off: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The paths of this repository.
    #[must_use]
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Where its manifests, index files, damage records, keys and locks are kept.
    #[must_use]
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Reads object `id` of `dir` (at most `max_len` bytes, hashing to its name) and opens it
    /// as a sealed file of `kind` when the repository is encrypted. Damage is named as `object`.
    fn read_sealed(
        &self,
        dir: ObjectDir,
        id: Id,
        max_len: u64,
        kind: crate::crypto::FileKind,
        object: ObjectRef,
    ) -> Result<Vec<u8>> {
        let bytes = crate::storage::read_checked(self.storage(), dir, id, max_len)?
            .map_err(|reason| Error::corrupt(object.clone(), reason))?;
        self.open_sealed(kind, bytes, object)
    }

    /// The plaintext of `bytes`, a file of `kind` as stored (opened when the repository is
    /// encrypted). Damage is named as `object`.
    fn open_sealed(
        &self,
        kind: crate::crypto::FileKind,
        bytes: Vec<u8>,
        object: ObjectRef,
    ) -> Result<Vec<u8>> {
        // Unencrypted, the plaintext is the stored bytes themselves: no copy.
        let opened = match self.crypto.open_file(kind, &bytes) {
            Ok(std::borrow::Cow::Owned(plain)) => Some(plain),
            Ok(std::borrow::Cow::Borrowed(_)) => None,
            Err(reason) => return Err(Error::corrupt(object, reason)),
        };
        Ok(opened.unwrap_or(bytes))
    }

    /// Seals `plain` as a file of `kind` (when encrypted) and writes it as object `dir/<hash>`;
    /// returns the hash.
    fn write_sealed(
        &self,
        dir: ObjectDir,
        kind: crate::crypto::FileKind,
        plain: Vec<u8>,
        label: &str,
    ) -> Result<Id> {
        let bytes = self.seal_file(kind, plain)?;
        let id = Id::hash(&bytes);
        self.storage.write(dir, id, &bytes, WriteMode::Replace, label)?;
        Ok(id)
    }

    /// Its config.
    #[must_use]
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// How ids are made and objects sealed in this repository.
    #[must_use]
    pub fn crypto(&self) -> &crate::crypto::Crypto {
        &self.crypto
    }

    /// The id of a blob whose raw bytes are `raw` (keyed BLAKE3 when encrypted).
    #[must_use]
    pub fn blob_id(&self, raw: &[u8]) -> Id {
        self.crypto.id(raw)
    }

    /// The chunker's parameters: the config's, with the gear seed derived from the key when
    /// encrypted (the config holds none then).
    #[must_use]
    pub fn chunker_params(&self) -> ChunkerParams {
        ChunkerParams {
            seed: self.crypto.gear_seed(self.config.chunker.seed),
            ..self.config.chunker
        }
    }

    /// `plain` (an object's encoding) as the file to write: sealed when encrypted.
    pub(crate) fn seal_file(
        &self,
        kind: crate::crypto::FileKind,
        plain: Vec<u8>,
    ) -> Result<Vec<u8>> {
        self.crypto.seal_file(kind, self.version(), plain)
    }

    /// The repository's format version: what every object written into it is written as.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.config.version
    }

    /// When `config` is damaged and its copy is in use: what is wrong with it.
    #[must_use]
    pub fn config_damage(&self) -> Option<&str> {
        self.config_damaged.as_deref()
    }

    /// Rewrites `config` and `config.copy` from the config in use (after a damaged one was
    /// replaced by its copy, or for a repository without a copy). Returns what was rewritten.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn repair_config(&self) -> Result<Vec<PathBuf>> {
        let bytes = self.config.encode()?;
        let mut rewritten = Vec::new();
        for name in [Named::ConfigCopy, Named::Config] {
            if self.storage.read_named(name).ok().as_deref() != Some(bytes.as_slice()) {
                self.storage.write_named(name, &bytes, WriteMode::Replace, "config")?;
                rewritten.push(self.storage.describe_named(name));
            }
        }
        Ok(rewritten)
    }

    /// Makes sure the directories writers need exist (a copied repository may lack empty
    /// ones, as git does not keep them).
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn prepare_write(&self) -> Result<()> {
        ensure_dir(&self.layout.tmp_dir())?;
        self.storage.prepare()
    }

    /// The ids of every pack, sorted.
    ///
    /// # Errors
    /// [`Error::Io`] when the packs cannot be listed.
    pub fn list_packs(&self) -> Result<Vec<crate::id::PackId>> {
        Ok(self.storage.list(ObjectDir::Packs)?.into_iter().map(crate::id::PackId).collect())
    }

    /// Every pack's length from one listing, where the storage lists cheaper than it looks at
    /// each pack ([`crate::storage::Storage::pack_sizes`]); `None` elsewhere.
    ///
    /// # Errors
    /// [`Error::Io`] when the packs cannot be listed.
    pub(crate) fn listed_pack_sizes(
        &self,
    ) -> Result<Option<std::collections::HashMap<crate::id::PackId, u64>>> {
        Ok(self
            .storage
            .pack_sizes()?
            .map(|v| v.into_iter().map(|(id, len)| (crate::id::PackId(id), len)).collect()))
    }

    /// The length of pack `id`.
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when it is not there).
    pub fn pack_len(&self, id: crate::id::PackId) -> Result<u64> {
        self.storage.size(ObjectDir::Packs, id.0)
    }

    /// Where pack `id` is, for messages.
    #[must_use]
    pub fn pack_path(&self, id: crate::id::PackId) -> PathBuf {
        self.storage.describe(ObjectDir::Packs, id.0)
    }

    /// Opens pack `id` and reads its trailer.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] for a bad footer or trailer.
    pub fn pack_reader(&self, id: crate::id::PackId) -> Result<crate::pack::PackReader> {
        let source = self.storage.open_pack(id.0)?;
        crate::pack::PackReader::new(source, &self.pack_path(id), id, &self.crypto)
    }

    /// Reads pack `id` once, in order, and verifies it: every blob its trailer lists, and its
    /// content hash (never held whole: see [`crate::pack::verify_pack_in_order`]). Its length,
    /// and what was found (`Err`: the trailer cannot be read).
    ///
    /// # Errors
    /// [`Error::Io`] naming the pack when it cannot be read.
    pub(crate) fn verify_pack(
        &self,
        id: crate::id::PackId,
    ) -> Result<(u64, std::result::Result<crate::pack::PackVerdict, Corruption>)> {
        let source = self.storage.open_pack(id.0)?;
        let verdict = crate::pack::verify_pack_in_order(source.as_ref(), &self.crypto)
            .at(self.pack_path(id))?;
        Ok((source.size(), verdict))
    }

    /// Starts a pack of this repository (its format version, sealed with its keys) in the
    /// staging directory, `tmp/`, where packs are written and verified before they are put in
    /// place by [`Repository::seal_pack`].
    ///
    /// # Errors
    /// The temp file cannot be created.
    pub fn new_pack(&self) -> Result<crate::pack::PackWriter> {
        crate::pack::PackWriter::create(&self.layout.tmp_dir(), self.version(), &self.crypto)
    }

    /// Seals `writer`'s pack (verifying every blob) and puts it in place, durably.
    ///
    /// # Errors
    /// As [`crate::pack::PackWriter::seal_with`].
    pub fn seal_pack(&self, writer: crate::pack::PackWriter) -> Result<crate::pack::SealedPack> {
        writer.seal_with(|id, file, temp| {
            self.storage.put_file(ObjectDir::Packs, id.0, file, temp, "pack")
        })
    }

    /// Removes packs `ids`, durably when it returns.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn remove_packs(&self, ids: &[crate::id::PackId]) -> Result<()> {
        let ids: Vec<Id> = ids.iter().map(|p| p.0).collect();
        self.storage.remove(ObjectDir::Packs, &ids)
    }

    /// Where this host's index cache is.
    #[must_use]
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Fails when this process took a lock that it no longer holds, or that went without a
    /// refresh for half the stale time (a prune may have run meanwhile; FORMAT.md §9.1).
    /// Writers call it before each step that makes data durable.
    ///
    /// # Errors
    /// [`Error::LockLost`].
    pub fn check_lock(&self) -> Result<()> {
        match self.held_lock.lock().map_err(|_| Error::WorkerPanicked)?.as_ref() {
            Some(lock) => lock.check(self.storage()),
            None => Ok(()),
        }
    }

    fn open_pack(&self, id: crate::id::PackId) -> Result<Arc<dyn crate::pack::PackSource>> {
        let mut packs = self.open_packs.lock().map_err(|_| Error::WorkerPanicked)?;
        if let Some(f) = packs.get(&id) {
            return Ok(Arc::clone(f));
        }
        let file = self.storage.open_pack_for_blobs(id.0)?;
        if packs.len() >= OPEN_PACKS_MAX {
            packs.clear();
        }
        packs.insert(id, Arc::clone(&file));
        Ok(file)
    }

    /// Reads blob `id`, which must be of `kind`, verified against its id; raw bytes go to
    /// `raw`. `frame` is a reusable read buffer.
    ///
    /// # Errors
    /// [`Error::BlobNotIndexed`], [`Error::Io`], [`Error::Corrupt`] naming pack and blob.
    pub fn read_blob_into(
        &self,
        id: Id,
        kind: BlobKind,
        frame: &mut Vec<u8>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        let loc = self.index()?.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
        self.read_located(&loc, kind, frame, raw)
    }

    /// Reads the blob at `loc`, which must be of `kind`, verified against its id (as
    /// [`Repository::read_blob_into`], for a caller that already looked it up).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corrupt`] naming pack and blob.
    pub fn read_located(
        &self,
        loc: &crate::index::Location,
        kind: BlobKind,
        frame: &mut Vec<u8>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        let id = loc.entry.id;
        referenced_as(loc, kind)?;
        // A repository in object storage: trees and chunk lists come from this host's cache
        // when it has them (verified as from a pack; one that does not verify is forgotten and
        // read from its pack), and are kept there once read.
        let cached = kind != BlobKind::Data
            && !self.storage.lists_cheaply()
            && !self.blob_cache_off.load(std::sync::atomic::Ordering::Relaxed);
        if cached {
            let index = self.index()?;
            if let Some(bytes) = index.frame_get(&id)? {
                let source = crate::pack::FrameAt { offset: loc.entry.offset, bytes };
                if self.read_from(&source, loc, frame, raw).is_ok() {
                    return Ok(());
                }
                index.frame_delete(&id)?;
            }
        }
        self.read_from(self.open_pack(loc.pack)?.as_ref(), loc, frame, raw)?;
        if cached {
            self.index()?.frame_put(&id, frame)?;
        }
        Ok(())
    }

    /// Reads the bytes of pack `pack` from `offset` into `buf`, as they are: a stretch of the
    /// pack holding several blobs, each then read out of it with
    /// [`Repository::read_located_in`] (one read for many small blobs, not one each).
    ///
    /// # Errors
    /// [`Error::Io`] naming the pack (also when it is shorter).
    pub(crate) fn read_pack_bytes(
        &self,
        pack: crate::id::PackId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        self.open_pack(pack)?.read_exact_at(buf, offset).at(self.pack_path(pack))
    }

    /// [`Repository::read_located`] for a blob whose frame `span` holds (bytes of its pack read
    /// with [`Repository::read_pack_bytes`]): verified against its id the same way.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming pack and blob (also when `span` does not hold it whole).
    pub(crate) fn read_located_in(
        &self,
        loc: &crate::index::Location,
        kind: BlobKind,
        span: &crate::pack::FrameAt<&[u8]>,
        frame: &mut Vec<u8>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        referenced_as(loc, kind)?;
        self.read_from(span, loc, frame, raw)
    }

    /// Reads the blob at `loc` out of `source` (its pack, or bytes of it held in memory),
    /// verified against its id; an I/O error names the pack.
    fn read_from(
        &self,
        source: &dyn crate::pack::PackSource,
        loc: &crate::index::Location,
        frame: &mut Vec<u8>,
        raw: &mut Vec<u8>,
    ) -> Result<()> {
        read_blob(
            &self.crypto,
            source,
            || self.pack_path(loc.pack),
            loc.pack,
            &loc.entry,
            frame,
            raw,
        )
    }

    /// Reads metadata blobs from their packs only, never from this host's cache of them (a
    /// check of the repository itself).
    pub fn bypass_blob_cache(&self) {
        self.blob_cache_off.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Keeps the frame of a metadata blob just packed, for a repository in object storage.
    pub(crate) fn keep_frame(&self, id: &Id, kind: BlobKind, frame: &[u8]) -> Result<()> {
        if kind != BlobKind::Data && !self.storage.lists_cheaply() {
            self.index()?.frame_put(id, frame)?;
        }
        Ok(())
    }

    /// Reads blob `id` of `kind` into a new buffer.
    ///
    /// # Errors
    /// As [`Repository::read_blob_into`].
    pub fn read_blob(&self, id: Id, kind: BlobKind) -> Result<Vec<u8>> {
        let mut frame = Vec::new();
        let mut raw = Vec::new();
        self.read_blob_into(id, kind, &mut frame, &mut raw)?;
        Ok(raw)
    }

    /// Loads and decodes a tree blob.
    ///
    /// # Errors
    /// As [`Repository::read_blob_into`], and [`Error::Corrupt`] naming the tree.
    pub fn load_tree(&self, id: TreeId) -> Result<TreeBlob> {
        let raw = self.read_blob(id.0, BlobKind::Tree)?;
        TreeBlob::decode(&raw).map_err(|reason| Error::corrupt(ObjectRef::Tree(id), reason))
    }
}

/// Fails unless the blob at `loc` is of the `kind` it is referenced as.
fn referenced_as(loc: &crate::index::Location, kind: BlobKind) -> Result<()> {
    if loc.entry.kind == kind {
        return Ok(());
    }
    Err(Error::corrupt(
        ObjectRef::Blob { pack: loc.pack, id: loc.entry.id, offset: loc.entry.offset },
        Corruption::Invalid(format!("blob is a {:?} blob, referenced as {kind:?}", loc.entry.kind)),
    ))
}
