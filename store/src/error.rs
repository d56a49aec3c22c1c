//! The engine's errors.
//!
//! Decoders of on-disk bytes return a [`Corruption`], which says what is wrong with the bytes;
//! the caller knows which object it was reading and wraps it in [`Error::Corrupt`], so every
//! report of damage names the object at fault (pack, blob, tree, manifest, config).

use std::fmt;
use std::path::PathBuf;

use crate::id::{DamageId, Id, IndexId, PackId, SnapshotId, TreeId};

/// The object a corruption was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRef {
    /// The repository's `config` file.
    Config,
    /// A pack file.
    Pack(PackId),
    /// One blob inside a pack.
    Blob {
        /// The pack holding the blob.
        pack: PackId,
        /// The blob's id.
        id: Id,
        /// Offset of the blob's header in the pack.
        offset: u64,
    },
    /// A tree blob (directory listing).
    Tree(TreeId),
    /// A snapshot manifest.
    Snapshot(SnapshotId),
    /// An index file.
    IndexFile(IndexId),
    /// A damage record.
    DamageFile(DamageId),
    /// A verification record (`verified/<id>`).
    VerificationRecord(Id),
    /// A chunk-list blob of a large file.
    ChunkList(Id),
    /// The local index cache.
    Cache,
    /// A lock file.
    Lock(PathBuf),
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Config => write!(f, "config"),
            ObjectRef::Pack(id) => write!(f, "pack {id}"),
            ObjectRef::Blob { pack, id, offset } => {
                write!(f, "blob {id} in pack {pack} at offset {offset}")
            }
            ObjectRef::Tree(id) => write!(f, "tree {id}"),
            ObjectRef::Snapshot(id) => write!(f, "snapshot {id}"),
            ObjectRef::IndexFile(id) => write!(f, "index file {id}"),
            ObjectRef::DamageFile(id) => write!(f, "damage record {id}"),
            ObjectRef::VerificationRecord(id) => write!(f, "verification record {id}"),
            ObjectRef::ChunkList(id) => write!(f, "chunk list {id}"),
            ObjectRef::Cache => write!(f, "index cache"),
            ObjectRef::Lock(path) => write!(f, "lock file {}", path.display()),
        }
    }
}

/// What is wrong with bytes read from the repository.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The bytes end before a field does.
    #[error("truncated: need {needed} bytes at offset {offset}, have {len}")]
    Truncated {
        /// Where the field starts.
        offset: u64,
        /// How many bytes the field needs.
        needed: u64,
        /// How many bytes there are.
        len: u64,
    },
    /// A magic number does not match.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found where the magic should be.
        found: Vec<u8>,
    },
    /// Content does not hash to its id.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    HashMismatch {
        /// The id the content should have.
        expected: Id,
        /// The hash of the content found.
        actual: Id,
    },
    /// A checksum over a structure (header, trailer, footer, config) does not match.
    #[error("{what} checksum mismatch")]
    ChecksumMismatch {
        /// Which structure.
        what: &'static str,
    },
    /// A structured record could not be decoded.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// Which record.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// A field holds a value that is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// Sealed bytes do not authenticate with the repository's key (damaged, moved, forged).
    #[error("{what} does not authenticate (damaged, or not written with this repository's key)")]
    AuthenticationFailed {
        /// What was sealed.
        what: &'static str,
    },
    /// The object was written by a format version this build does not read.
    #[error("format version {found} is not supported (this build reads {} to {})", supported.start(), supported.end())]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The versions this build reads.
        supported: std::ops::RangeInclusive<u32>,
    },
}

/// The umbrella error of the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes read from the repository are damaged.
    #[error("{object}: {reason}")]
    Corrupt {
        /// The damaged object.
        object: ObjectRef,
        /// What is wrong with it.
        reason: Box<Corruption>,
    },
    /// An I/O operation on a named path failed. (The OS error is part of the message, not a
    /// separate source, so reports do not repeat it.)
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// An object of the repository was written by a format version this build does not read.
    #[error("{object}: format version {found} is not supported (this build reads {} to {})", supported.start(), supported.end())]
    UnsupportedVersion {
        /// The object (the config, a pack, an index file, a manifest, ...).
        object: ObjectRef,
        /// The version found.
        found: u32,
        /// The versions this build reads.
        supported: std::ops::RangeInclusive<u32>,
    },
    /// The path is not a `store` repository.
    #[error("{}: not a store repository ({reason})", path.display())]
    NotARepository {
        /// The path given as repository.
        path: PathBuf,
        /// Why it is not one.
        reason: String,
    },
    /// The repository's `config` is missing while its copy `config.copy` is intact.
    #[error("{}: not a store repository: config is missing, but its copy {} is intact", path.display(), copy.display())]
    ConfigMissing {
        /// The path given as repository.
        path: PathBuf,
        /// The intact copy.
        copy: PathBuf,
    },
    /// `init` found a repository (or other files) already there.
    #[error("{}: {reason}", path.display())]
    AlreadyExists {
        /// The path given to `init`.
        path: PathBuf,
        /// What is in the way.
        reason: String,
    },
    /// A snapshot reference matches no snapshot.
    #[error("snapshot {reference:?} not found")]
    SnapshotNotFound {
        /// The reference given.
        reference: String,
    },
    /// A snapshot reference matches several snapshots.
    #[error("snapshot {reference:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot {
        /// The reference given.
        reference: String,
        /// How many snapshots it matches.
        count: usize,
    },
    /// A snapshot reference is malformed.
    #[error("invalid snapshot reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference given.
        reference: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A path does not exist inside a snapshot.
    #[error("{path}: no such path in snapshot {snapshot}")]
    PathNotFound {
        /// The path asked for.
        path: String,
        /// The snapshot searched.
        snapshot: SnapshotId,
    },
    /// A blob referenced by a tree or manifest is in no index file.
    #[error("blob {id} is not in the index")]
    BlobNotIndexed {
        /// The missing blob.
        id: Id,
    },
    /// The RocksDB index cache failed.
    #[error("index cache {}: {message}", path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// RocksDB's message.
        message: String,
    },
    /// A tree holds a name that restore must not write.
    #[error("invalid name {name:?} in tree {tree}")]
    InvalidName {
        /// The tree holding the name.
        tree: TreeId,
        /// The name, escaped.
        name: String,
    },
    /// An option or argument given by the caller is invalid.
    #[error("invalid {option}: {reason}")]
    InvalidOption {
        /// The option at fault.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// A source given to snapshot cannot be used.
    #[error("source {}: {reason}", path.display())]
    Source {
        /// The source path.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A component of a set failed; the set was not committed.
    #[error("component {component}: {reason}")]
    ComponentFailed {
        /// The component's name.
        component: String,
        /// What failed.
        reason: String,
    },
    /// The restore target cannot be used.
    #[error("restore target {}: {reason}", path.display())]
    Target {
        /// The target directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A restored file's chunks do not add up to the size its tree records.
    #[error("{path}: chunks hold {found} bytes, the tree records {recorded}")]
    SizeMismatch {
        /// The file, below the restore target.
        path: String,
        /// Size in the tree.
        recorded: u64,
        /// Bytes in its chunks.
        found: u64,
    },
    /// `restore --verify` read back a file that differs from the snapshot.
    #[error("{path}: the restored file differs from the snapshot when read back")]
    RestoredDiffers {
        /// The file, below the restore target.
        path: String,
    },
    /// Another process holds a conflicting lock.
    #[error("repository is locked: {holder}")]
    Locked {
        /// Who holds it.
        holder: String,
    },
    /// This process's lock was lost or went stale while it worked; nothing was committed.
    #[error("lock {} was lost: {reason}", path.display())]
    LockLost {
        /// The lock file.
        path: PathBuf,
        /// How.
        reason: String,
    },
    /// Data a writer relied on was deleted (by a prune that overtook a stale lock).
    #[error("pack {pack} that this set uses was deleted meanwhile (by a prune?)")]
    PackVanished {
        /// The pack.
        pack: PackId,
    },
    /// A lock file cannot be read.
    #[error("lock file {}: {reason}", path.display())]
    LockDamaged {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded, or would be too large for a reader: nothing was written.
    #[error("cannot write {what}: {reason}")]
    Encode {
        /// Which record.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The repository is encrypted and no password was given.
    #[error("{}: the repository is encrypted and no password was given", path.display())]
    PasswordRequired {
        /// The repository.
        path: PathBuf,
    },
    /// No key file of the repository opens with the password given.
    #[error("{}: wrong password or no key for it ({tried} key file{} tried{})", path.display(),
        if *tried == 1 { "" } else { "s" },
        damaged.iter().map(|d| format!("; {d}")).collect::<String>())]
    WrongPassword {
        /// The repository.
        path: PathBuf,
        /// How many key files were tried.
        tried: usize,
        /// Key files that could not be read, each named with why.
        damaged: Vec<String>,
    },
    /// A key operation was refused.
    #[error("key {key}: {reason}")]
    KeyRefused {
        /// The key named.
        key: String,
        /// Why.
        reason: String,
    },
    /// A set could not be copied (`store copy`): what was met at `path` of the source's set.
    #[error("set {set}: {path}: {cause}")]
    CopyFailed {
        /// The source's set.
        set: SnapshotId,
        /// Where in it (`component/dir/file`).
        path: String,
        /// What went wrong.
        cause: Box<Error>,
    },
    /// The operation stopped because another part of it failed.
    #[error("operation cancelled")]
    Cancelled,
    /// The restore target ran out of space; the restore stopped (see
    /// `RestoreReport::out_of_space`).
    #[error("the restore target ran out of space")]
    TargetFull,
    /// The operator asked the operation to stop ([`crate::Progress::interrupted`]).
    #[error("interrupted")]
    Interrupted,
    /// A worker thread of the pipeline panicked.
    #[error("internal error: a worker thread panicked")]
    WorkerPanicked,
}

impl Error {
    /// A corruption of `object` (or, for a version this build does not read,
    /// [`Error::UnsupportedVersion`] naming `object`).
    #[must_use]
    pub fn corrupt(object: ObjectRef, reason: Corruption) -> Self {
        match reason {
            Corruption::UnsupportedVersion { found, supported } => {
                Error::UnsupportedVersion { object, found, supported }
            }
            reason => Error::Corrupt { object, reason: Box::new(reason) },
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    /// Wraps the error in [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|cause| Error::Io { path: path.into(), cause })
    }
}

impl<T> IoContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::Io { path: path.into(), cause: e.into() })
    }
}
