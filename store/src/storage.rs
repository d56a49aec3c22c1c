//! Where a repository's objects are kept: one interface for the engine ([`Storage`]), so the
//! rest of the engine never spells a file system path or a request of an object store.
//!
//! Objects are named by an id (the hash of their bytes, or a random one for locks) and grouped
//! in directories ([`ObjectDir`]): packs, manifests, index files, damage records, key files and
//! locks (FORMAT.md §3). Packs are written in a local staging directory, verified, then put in
//! place whole ([`Storage::put_file`]), and read at offsets ([`Storage::open_pack`]). [`LocalStorage`] keeps
//! them as files of a local directory with the discipline of FORMAT.md §13: written to `tmp/`,
//! fsynced, renamed (or linked, for a write that must not replace) into place, and the directory
//! fsynced before a write or removal returns.
//!
//! Two objects have names of their own ([`Named`]): the config and its copy.

use std::path::PathBuf;

use crate::error::{IoContext, Result};
pub mod s3;
use crate::id::Id;
use crate::pack::{LocalPack, PackSource};
use crate::repo::Layout;
pub use s3::{RequestStats, S3Location, S3Storage};

/// A directory of objects named by their id (64 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectDir {
    /// `packs/`: pack files (locally `packs/<first two hex digits>/<id>.pack`).
    Packs,
    /// `snapshots/`: manifests.
    Snapshots,
    /// `index/`: index files.
    Index,
    /// `damage/`: damage records (repositories older than them lack the directory).
    Damage,
    /// `verified/`: verification records (absent until a check records one).
    Verified,
    /// `keys/`: key files (unencrypted repositories lack the directory).
    Keys,
    /// `locks/`: lock records, named by a random id; the one kind of object that changes (its
    /// modification time is refreshed while held). A copy of a repository may lack the empty
    /// directory.
    Locks,
}

impl ObjectDir {
    /// Its name in the repository.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ObjectDir::Packs => "packs",
            ObjectDir::Snapshots => "snapshots",
            ObjectDir::Index => "index",
            ObjectDir::Damage => "damage",
            ObjectDir::Verified => "verified",
            ObjectDir::Keys => "keys",
            ObjectDir::Locks => "locks",
        }
    }

    /// Whether a repository may lack it: listing it is then empty, and the first write makes
    /// it. The others are made by `init`; one that is gone is an error, never an empty list.
    fn optional(self) -> bool {
        matches!(self, ObjectDir::Damage | ObjectDir::Verified | ObjectDir::Keys | ObjectDir::Locks)
    }
}

/// An object with a name of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// `config`: a repository exists once it does (written last by `init`).
    Config,
    /// `config.copy`: the same bytes, read when `config` is damaged.
    ConfigCopy,
}

impl Named {
    /// Its name in the repository.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Named::Config => "config",
            Named::ConfigCopy => "config.copy",
        }
    }
}

/// How an object is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Created, or replaced when it exists (its name is its hash: the same bytes).
    Replace,
    /// Created only when no object has the name; of several writers racing for one name
    /// exactly one succeeds, the others get an [`std::io::ErrorKind::AlreadyExists`] error.
    CreateNew,
}

/// The objects of one repository.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Where the repository is, for messages.
    fn location(&self) -> String;

    /// Where object `id` of `dir` is, for messages.
    fn describe(&self, dir: ObjectDir, id: Id) -> PathBuf;

    /// Where `name` is, for messages.
    fn describe_named(&self, name: Named) -> PathBuf;

    /// The bytes of `name`.
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when it is not there).
    fn read_named(&self, name: Named) -> Result<Vec<u8>>;

    /// Writes `name` whole or not at all, durably, as [`Storage::write`] does.
    ///
    /// # Errors
    /// [`Error::Io`]; with [`WriteMode::CreateNew`], `AlreadyExists` when it exists.
    fn write_named(&self, name: Named, bytes: &[u8], mode: WriteMode, label: &str) -> Result<()>;

    /// The ids of the objects in `dir`, sorted; names that are not ids are ignored.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` cannot be listed (or is missing and not optional).
    fn list(&self, dir: ObjectDir) -> Result<Vec<Id>>;

    /// The length of object `id` of `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn size(&self, dir: ObjectDir, id: Id) -> Result<u64>;

    /// The bytes of object `id` of `dir`, as stored (the caller verifies them).
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn read(&self, dir: ObjectDir, id: Id) -> Result<Vec<u8>>;

    /// The bytes of object `id` of `dir`, as stored, when it is at most `max_len` long;
    /// `Ok(Err(len))` when it is longer, and then nothing more is read. In as few requests as
    /// the storage allows (object storage: one GET, whose answer gives the length before the
    /// body).
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn read_at_most(
        &self,
        dir: ObjectDir,
        id: Id,
        max_len: u64,
    ) -> Result<std::result::Result<Vec<u8>, u64>> {
        let len = self.size(dir, id)?;
        if len > max_len {
            return Ok(Err(len));
        }
        self.read(dir, id).map(Ok)
    }

    /// The bytes of object `id` of `dir` and its [age](Storage::age), together (object
    /// storage: one GET, whose answer gives the time it was written).
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn read_with_age(&self, dir: ObjectDir, id: Id) -> Result<(Vec<u8>, std::time::Duration)> {
        let bytes = self.read(dir, id)?;
        Ok((bytes, self.age(dir, id)?))
    }

    /// Writes object `id` of `dir`: whole or not at all, durable when it returns. `label`
    /// names the crash points of the write (`<label>_synced`, `_renamed`, `_durable`).
    ///
    /// # Errors
    /// [`Error::Io`]; with [`WriteMode::CreateNew`], `AlreadyExists` when the name is taken.
    fn write(
        &self,
        dir: ObjectDir,
        id: Id,
        bytes: &[u8],
        mode: WriteMode,
        label: &str,
    ) -> Result<()>;

    /// Puts the complete local file `temp` (open as `file`, in the staging directory) in place
    /// as object `id` of `dir`, durably; the temp file is gone afterwards (renamed, or uploaded
    /// and removed). `label` names the crash points, as for [`Storage::write`].
    ///
    /// # Errors
    /// [`Error::Io`]; the temp file is then the caller's to remove.
    fn put_file(
        &self,
        dir: ObjectDir,
        id: Id,
        file: &std::fs::File,
        temp: &std::path::Path,
        label: &str,
    ) -> Result<()>;

    /// Opens pack `id` for reading at offsets.
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such pack).
    fn open_pack(&self, id: Id) -> Result<std::sync::Arc<dyn PackSource>>;

    /// Opens pack `id` for reading blobs at the offsets its index gives: as
    /// [`Storage::open_pack`], but a storage may leave finding its length (and whether it is
    /// there at all) to the first read (object storage: no HEAD before the first GET).
    ///
    /// # Errors
    /// As [`Storage::open_pack`], or none until the first read.
    fn open_pack_for_blobs(&self, id: Id) -> Result<std::sync::Arc<dyn PackSource>> {
        self.open_pack(id)
    }

    /// Removes objects `ids` of `dir`, durably when it returns. An id that is not there is no
    /// error (as object stores do not tell).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn remove(&self, dir: ObjectDir, ids: &[Id]) -> Result<()>;

    /// Time since object `id` of `dir` was written or last [touched](Storage::touch), by the
    /// clock of the storage (so hosts whose clocks differ agree on a lock's age).
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn age(&self, dir: ObjectDir, id: Id) -> Result<std::time::Duration>;

    /// Writes a new lock, object `id` of `dir` (a name never used before), as
    /// [`Storage::write`] does. A storage that has to be probed ([`Storage::conditional_writes`],
    /// and its clock for [`Storage::age`]) and was not yet probed by this process may probe on
    /// the lock itself rather than on an object of its own: object storage then asks one more
    /// request, not four. On error no lock is left.
    ///
    /// # Errors
    /// [`Error::Io`].
    fn write_lock(&self, dir: ObjectDir, id: Id, bytes: &[u8], label: &str) -> Result<()> {
        self.write(dir, id, bytes, WriteMode::Replace, label)
    }

    /// Makes object `id` of `dir` new again (its age 0), bytes unchanged: a lock's refresh.
    ///
    /// # Errors
    /// [`Error::Io`] (`NotFound` when there is no such object).
    fn touch(&self, dir: ObjectDir, id: Id) -> Result<()>;

    /// Whether a create ([`WriteMode::CreateNew`]) is refused when the object exists, so that
    /// of racing writers exactly one wins. Some S3-compatible servers ignore `If-None-Match`.
    ///
    /// # Errors
    /// [`Error::Io`] when the storage cannot be asked.
    fn conditional_writes(&self) -> Result<bool> {
        Ok(true)
    }

    /// Makes what writers need and a copy may lack (a local repository's empty directories:
    /// git does not keep them).
    ///
    /// # Errors
    /// [`Error::Io`].
    fn prepare(&self) -> Result<()> {
        Ok(())
    }

    /// Whether listing a directory of many objects is cheap (a local `readdir`), rather than
    /// a request per thousand objects.
    fn lists_cheaply(&self) -> bool {
        true
    }

    /// The requests made of a remote storage so far (`None` for a local one).
    fn requests(&self) -> Option<RequestStats> {
        None
    }

    /// Every pack with its length, from one listing, where that costs fewer requests than a
    /// look at each pack a set uses (object storage: a request per thousand packs); `None`
    /// where looking at each is cheap (a local `stat`).
    ///
    /// # Errors
    /// [`Error::Io`] when the packs cannot be listed.
    fn pack_sizes(&self) -> Result<Option<Vec<(Id, u64)>>> {
        Ok(None)
    }
}

/// A repository in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    layout: Layout,
}

impl LocalStorage {
    /// The objects of the repository laid out as `layout`.
    #[must_use]
    pub fn new(layout: Layout) -> Self {
        LocalStorage { layout }
    }

    fn dir(&self, dir: ObjectDir) -> PathBuf {
        self.layout.root().join(dir.name())
    }

    fn path(&self, dir: ObjectDir, id: Id) -> PathBuf {
        match dir {
            ObjectDir::Packs => self.layout.pack(crate::id::PackId(id)),
            _ => self.dir(dir).join(id.to_hex()),
        }
    }

    /// Writes `dest` through a temp file in `tmp/` (FORMAT.md §13).
    fn write_path(
        &self,
        dest: &std::path::Path,
        bytes: &[u8],
        mode: WriteMode,
        label: &str,
    ) -> Result<()> {
        // A copied repository may lack the empty directories (git does not keep them).
        let tmp = self.layout.tmp_dir();
        crate::fs::ensure_dir(&tmp)?;
        match mode {
            WriteMode::Replace => crate::fs::write_atomic(&tmp, dest, bytes, label),
            WriteMode::CreateNew => crate::fs::write_new(&tmp, dest, bytes, label),
        }
    }

    /// Makes the directory object `id` of `dir` goes in, when it may be missing.
    fn ensure_parent(&self, dir: ObjectDir, id: Id) -> Result<()> {
        if dir.optional() {
            crate::fs::ensure_dir(&self.dir(dir))?;
        }
        if dir == ObjectDir::Packs {
            if let Some(shard) = self.path(dir, id).parent() {
                crate::fs::ensure_dir(shard)?;
            }
        }
        Ok(())
    }

    /// The pack ids in `packs/<shard>/`.
    fn list_packs(&self) -> Result<Vec<Id>> {
        let dir = self.dir(ObjectDir::Packs);
        let mut out = Vec::new();
        for shard in std::fs::read_dir(&dir).at(&dir)? {
            let shard = shard.at(&dir)?.path();
            if !shard.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&shard).at(&shard)? {
                let name = entry.at(&shard)?.file_name();
                let id = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(".pack"))
                    .and_then(|n| n.parse::<Id>().ok());
                out.extend(id);
            }
        }
        out.sort_unstable();
        Ok(out)
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.layout.root().display().to_string()
    }

    fn prepare(&self) -> Result<()> {
        self.layout.skeleton().iter().try_for_each(|d| crate::fs::ensure_dir(d))
    }

    fn describe(&self, dir: ObjectDir, id: Id) -> PathBuf {
        self.path(dir, id)
    }

    fn describe_named(&self, name: Named) -> PathBuf {
        self.layout.root().join(name.name())
    }

    fn read_named(&self, name: Named) -> Result<Vec<u8>> {
        let path = self.describe_named(name);
        std::fs::read(&path).at(&path)
    }

    fn write_named(&self, name: Named, bytes: &[u8], mode: WriteMode, label: &str) -> Result<()> {
        self.write_path(&self.describe_named(name), bytes, mode, label)
    }

    fn list(&self, dir: ObjectDir) -> Result<Vec<Id>> {
        if dir == ObjectDir::Packs {
            return self.list_packs();
        }
        let path = self.dir(dir);
        let entries = match std::fs::read_dir(&path) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.optional() => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e).at(&path),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry.at(&path)?.file_name();
            out.extend(name.to_str().and_then(|n| n.parse::<Id>().ok()));
        }
        out.sort_unstable();
        Ok(out)
    }

    fn size(&self, dir: ObjectDir, id: Id) -> Result<u64> {
        let path = self.path(dir, id);
        Ok(std::fs::metadata(&path).at(&path)?.len())
    }

    fn read(&self, dir: ObjectDir, id: Id) -> Result<Vec<u8>> {
        let path = self.path(dir, id);
        std::fs::read(&path).at(&path)
    }

    fn write(
        &self,
        dir: ObjectDir,
        id: Id,
        bytes: &[u8],
        mode: WriteMode,
        label: &str,
    ) -> Result<()> {
        self.ensure_parent(dir, id)?;
        self.write_path(&self.path(dir, id), bytes, mode, label)
    }

    fn put_file(
        &self,
        dir: ObjectDir,
        id: Id,
        file: &std::fs::File,
        temp: &std::path::Path,
        label: &str,
    ) -> Result<()> {
        self.ensure_parent(dir, id)?;
        crate::fs::commit_temp(file, temp, &self.path(dir, id), label)
    }

    fn open_pack(&self, id: Id) -> Result<std::sync::Arc<dyn PackSource>> {
        Ok(std::sync::Arc::new(LocalPack::open(&self.path(ObjectDir::Packs, id))?))
    }

    fn remove(&self, dir: ObjectDir, ids: &[Id]) -> Result<()> {
        let mut parents: Vec<PathBuf> = Vec::new();
        for id in ids {
            let path = self.path(dir, *id);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&path),
            }
            if let Some(parent) = path.parent().filter(|p| !parents.iter().any(|q| q == p)) {
                parents.push(parent.to_path_buf());
            }
        }
        parents.iter().try_for_each(|p| crate::fs::fsync_dir(p))
    }

    fn age(&self, dir: ObjectDir, id: Id) -> Result<std::time::Duration> {
        let path = self.path(dir, id);
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).at(&path)?;
        Ok(std::time::SystemTime::now().duration_since(modified).unwrap_or_default())
    }

    fn touch(&self, dir: ObjectDir, id: Id) -> Result<()> {
        let path = self.path(dir, id);
        let now = rustix::fs::Timespec { tv_sec: 0, tv_nsec: rustix::fs::UTIME_NOW };
        let ts = rustix::fs::Timestamps { last_access: now, last_modification: now };
        rustix::fs::utimensat(rustix::fs::CWD, &path, &ts, rustix::fs::AtFlags::empty())
            .map_err(std::io::Error::from)
            .at(&path)
    }
}

/// Reads object `id` of `dir` from `storage` and checks it: at most `max_len` bytes, and
/// hashing to its name. `Ok(Err(_))` is damage, for the caller to name.
///
/// # Errors
/// [`Error::Io`] when it cannot be read.
pub(crate) fn read_checked(
    storage: &dyn Storage,
    dir: ObjectDir,
    id: Id,
    max_len: u64,
) -> Result<std::result::Result<Vec<u8>, crate::error::Corruption>> {
    use crate::error::Corruption;
    let bytes = match storage.read_at_most(dir, id, max_len)? {
        Ok(bytes) => bytes,
        Err(len) => return Ok(Err(Corruption::Invalid(format!("{len} bytes is too large")))),
    };
    let actual = Id::hash(&bytes);
    if actual != id {
        return Ok(Err(Corruption::HashMismatch { expected: id, actual }));
    }
    Ok(Ok(bytes))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::{Corruption, Error};

    /// What every [`Storage`] must do, whatever keeps the objects; `storage` starts empty, with
    /// the directories `init` makes; packs are staged in `staging`.
    pub(crate) fn conformance(
        storage: &dyn Storage,
        staging: &std::path::Path,
        clock_resolution: std::time::Duration,
    ) {
        let (a, b) = (b"object a".to_vec(), b"object b, longer".to_vec());
        let (ida, idb) = (Id::hash(&a), Id::hash(&b));
        assert!(storage.list(ObjectDir::Snapshots).unwrap().is_empty());
        assert!(storage.list(ObjectDir::Damage).unwrap().is_empty(), "optional: empty when absent");
        for (id, bytes) in [(idb, &b), (ida, &a)] {
            storage.write(ObjectDir::Snapshots, id, bytes, WriteMode::Replace, "test").unwrap();
        }
        let mut both = vec![ida, idb];
        both.sort_unstable();
        assert_eq!(storage.list(ObjectDir::Snapshots).unwrap(), both, "sorted");
        assert_eq!(storage.size(ObjectDir::Snapshots, idb).unwrap(), b.len() as u64);
        assert_eq!(storage.read(ObjectDir::Snapshots, ida).unwrap(), a);
        // Written again with the same bytes: still one object.
        storage.write(ObjectDir::Snapshots, ida, &a, WriteMode::Replace, "test").unwrap();
        assert_eq!(storage.list(ObjectDir::Snapshots).unwrap().len(), 2);
        // Objects of one directory are not seen in another.
        assert!(storage.list(ObjectDir::Index).unwrap().is_empty());
        let missing = storage.read(ObjectDir::Index, ida).unwrap_err();
        assert!(
            matches!(&missing, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound),
            "{missing}"
        );

        // A checked read names damage: a wrong hash, or more bytes than allowed.
        assert_eq!(read_checked(storage, ObjectDir::Snapshots, ida, 100).unwrap().unwrap(), a);
        let too_long = read_checked(storage, ObjectDir::Snapshots, idb, 4).unwrap();
        assert!(matches!(too_long, Err(Corruption::Invalid(_))), "{too_long:?}");
        assert_eq!(storage.read_at_most(ObjectDir::Snapshots, idb, 16).unwrap(), Ok(b.clone()));
        assert_eq!(storage.read_at_most(ObjectDir::Snapshots, idb, 15).unwrap(), Err(16));
        let gone = storage.read_at_most(ObjectDir::Index, ida, 100).unwrap_err();
        assert!(
            matches!(&gone, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound),
            "{gone}"
        );
        let wrong = Id::hash(b"something else");
        storage.write(ObjectDir::Snapshots, wrong, &a, WriteMode::Replace, "test").unwrap();
        let mismatch = read_checked(storage, ObjectDir::Snapshots, wrong, 100).unwrap();
        assert!(matches!(mismatch, Err(Corruption::HashMismatch { .. })), "{mismatch:?}");

        // Of 16 writers racing to create one name, exactly one wins; the object is whole.
        let key = b"a key file".to_vec();
        let idk = Id::hash(&key);
        let wins = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    match storage.write(ObjectDir::Keys, idk, &key, WriteMode::CreateNew, "key") {
                        Ok(()) => {
                            wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Err(Error::Io { cause, .. })
                            if cause.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => panic!("a losing writer must see AlreadyExists: {e}"),
                    }
                });
            }
        });
        assert_eq!(wins.into_inner(), 1);
        assert_eq!(storage.read(ObjectDir::Keys, idk).unwrap(), key);

        // The config is created once, never twice; replaced only when asked to.
        let missing = storage.read_named(Named::Config).unwrap_err();
        assert!(
            matches!(&missing, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound),
            "{missing}"
        );
        storage.write_named(Named::Config, b"one", WriteMode::CreateNew, "config").unwrap();
        let taken = storage.write_named(Named::Config, b"two", WriteMode::CreateNew, "config");
        assert!(
            matches!(&taken, Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists),
            "{taken:?}"
        );
        assert_eq!(storage.read_named(Named::Config).unwrap(), b"one");
        storage.write_named(Named::Config, b"three", WriteMode::Replace, "config").unwrap();
        assert_eq!(storage.read_named(Named::Config).unwrap(), b"three");
        assert!(storage.read_named(Named::ConfigCopy).is_err());

        // A pack is put from a complete local file, listed, and read at offsets.
        let pack: Vec<u8> = (0..800_000u32).flat_map(u32::to_le_bytes).collect();
        let idp = Id::hash(&pack);
        let (mut file, temp) = crate::fs::create_temp(staging, "pack").unwrap();
        std::io::Write::write_all(&mut file, &pack).unwrap();
        storage.put_file(ObjectDir::Packs, idp, &file, &temp, "pack").unwrap();
        assert!(!temp.exists(), "the staged file is taken away");
        assert_eq!(storage.list(ObjectDir::Packs).unwrap(), vec![idp]);
        assert_eq!(storage.size(ObjectDir::Packs, idp).unwrap(), pack.len() as u64);
        let source = storage.open_pack(idp).unwrap();
        assert_eq!(source.size(), pack.len() as u64);
        let mut buf = [0u8; 8];
        source.read_exact_at(&mut buf, 3_199_992).unwrap();
        assert_eq!(buf, pack[3_199_992..]);
        let past = source.read_exact_at(&mut buf, 3_199_996).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
        // Read in order by two threads at once at two places, in pieces that straddle any
        // window a storage keeps: every byte as stored.
        std::thread::scope(|s| {
            for from in [0, pack.len() / 2] {
                let (source, pack) = (&source, &pack);
                s.spawn(move || {
                    let (mut at, mut buf) = (from, vec![0u8; 7_777]);
                    while at < pack.len() {
                        let n = buf.len().min(pack.len() - at);
                        source.read_exact_at(&mut buf[..n], at as u64).unwrap();
                        assert!(buf[..n] == pack[at..at + n], "at {at}");
                        at += n;
                    }
                });
            }
        });
        // Read once in order (a check): every byte as stored, in pieces smaller than the pack;
        // a range past the end is cut short.
        let mut streamed = Vec::new();
        let mut largest = 0;
        source
            .read_in_order(0, pack.len() as u64, &mut |piece| {
                largest = largest.max(piece.len());
                streamed.extend_from_slice(piece);
            })
            .unwrap();
        assert!(streamed == pack, "read in order");
        assert!(largest < pack.len(), "never the whole pack at once");
        let mut middle = Vec::new();
        source.read_in_order(1000, 5000, &mut |p| middle.extend_from_slice(p)).unwrap();
        assert!(middle == pack[1000..6000]);
        let past = source.read_in_order(3_199_000, 2000, &mut |_| {}).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof, "{past}");
        // Opened to read blobs (a storage may not look at it before the first read): the same
        // bytes, its length, and the end, whether or not its length was known before.
        let lazy = storage.open_pack_for_blobs(idp).unwrap();
        let past = lazy.read_exact_at(&mut buf, 3_199_996).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof, "{past}");
        let lazy = storage.open_pack_for_blobs(idp).unwrap();
        let mut head = [0u8; 10];
        lazy.read_exact_at(&mut head, 5).unwrap();
        assert_eq!(head, pack[5..15]);
        assert_eq!(lazy.size(), pack.len() as u64);
        let past = lazy.read_exact_at(&mut buf, 3_199_996).unwrap_err();
        assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof, "{past}");
        storage.remove(ObjectDir::Packs, &[idp]).unwrap();
        assert!(storage.list(ObjectDir::Packs).unwrap().is_empty());
        assert!(storage.open_pack(idp).is_err());
        let gone = storage.open_pack_for_blobs(idp).and_then(|p| {
            p.read_exact_at(&mut buf, 0).map_err(|cause| Error::Io { path: "pack".into(), cause })
        });
        assert!(gone.is_err(), "a removed pack does not read");

        // A lock's age runs from its write, and a touch makes it new again.
        let lock = Id::hash(b"a lock");
        storage.write_lock(ObjectDir::Locks, lock, b"held", "lock").unwrap();
        std::thread::sleep(clock_resolution);
        let old = storage.age(ObjectDir::Locks, lock).unwrap();
        assert!(old >= std::time::Duration::from_secs(1), "{old:?}");
        let (held, age) = storage.read_with_age(ObjectDir::Locks, lock).unwrap();
        assert_eq!(held, b"held");
        assert!(age >= old && age < old + std::time::Duration::from_secs(2), "{age:?}, {old:?}");
        storage.touch(ObjectDir::Locks, lock).unwrap();
        assert!(storage.age(ObjectDir::Locks, lock).unwrap() < old);
        assert_eq!(storage.read(ObjectDir::Locks, lock).unwrap(), b"held");
        storage.remove(ObjectDir::Locks, &[lock]).unwrap();
        assert!(storage.touch(ObjectDir::Locks, lock).is_err(), "a removed lock is not refreshed");

        storage.remove(ObjectDir::Snapshots, &[ida, wrong]).unwrap();
        assert_eq!(storage.list(ObjectDir::Snapshots).unwrap(), vec![idb]);
        storage.remove(ObjectDir::Snapshots, &[]).unwrap();
        storage.remove(ObjectDir::Snapshots, &[ida]).unwrap();
        assert_eq!(
            storage.list(ObjectDir::Snapshots).unwrap(),
            vec![idb],
            "removing twice is no error"
        );
    }

    fn local() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        for d in layout.skeleton() {
            std::fs::create_dir_all(d).unwrap();
        }
        (dir, LocalStorage::new(layout))
    }

    #[test]
    fn local_storage_conforms() {
        let (dir, storage) = local();
        conformance(&storage, &dir.path().join("tmp"), std::time::Duration::from_millis(1100));
    }

    #[test]
    #[allow(clippy::disallowed_methods, reason = "stray files put there on purpose")]
    fn local_storage_ignores_stray_names_and_refuses_a_missing_required_directory() {
        let (dir, storage) = local();
        std::fs::write(dir.path().join("snapshots/notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("snapshots").join(Id::hash(b"x").to_hex() + ".tmp"), b"x")
            .unwrap();
        assert!(storage.list(ObjectDir::Snapshots).unwrap().is_empty());
        std::fs::remove_dir_all(dir.path().join("index")).unwrap();
        assert!(storage.list(ObjectDir::Index).is_err(), "a lost index/ is not an empty one");
        // Written objects are read-only files, and no temp file is left behind.
        let id = Id::hash(b"m");
        storage.write(ObjectDir::Snapshots, id, b"m", WriteMode::Replace, "manifest").unwrap();
        let mode = std::fs::metadata(dir.path().join("snapshots").join(id.to_hex()))
            .unwrap()
            .permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o444);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
