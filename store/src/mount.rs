//! A read-only file-system view of a repository, for `store mount` (the FUSE adapter is in the
//! CLI; this module knows nothing of FUSE).
//!
//! Layout:
//! - `snapshots/<name>/<component>/...`: every set by its sortable name (`YYYYMMDD-HHMMSS`,
//!   with `-<short id>` appended when two sets share a second), each component in its original
//!   layout (a file component as one file);
//! - `latest`: a symlink to the newest set; `tags/<tag>/<name>`: symlinks to the sets by tag.
//!
//! Sets written while mounted appear within [`MountOptions::refresh`]. Directories are listed
//! lazily from trees (pages decoded once and kept in a small cache); file reads fetch only the
//! chunks needed, through a chunk cache bounded in bytes; every chunk is verified against its
//! id, and a chunk that fails gives an error for that read, never wrong bytes.
//!
//! Inode numbers: fixed for the top directories; for everything else a hash of the parent's
//! number and the name, so listings and lookups agree without a table of every entry. The
//! table holds only the entries the kernel has looked up and not yet forgotten.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Corruption, Error, ObjectRef, Result};
use crate::id::{ChunkId, Id, SnapshotId, TreeId};
use crate::pack::BlobKind;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{ChunkRefs, Content, Node, Time, TreeBlob};
use crate::vfs::component_node;
use crate::vfs::for_each_chunk;

/// The root directory's inode number.
pub const ROOT_INO: u64 = 1;
const SNAPSHOTS_INO: u64 = 2;
const TAGS_INO: u64 = 3;
const LATEST_INO: u64 = 4;

/// Tuning of a mounted view.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Bytes of decompressed chunks kept in memory.
    pub chunk_cache_bytes: usize,
    /// How old the list of sets may get before it is read again.
    pub refresh: Duration,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { chunk_cache_bytes: 256 << 20, refresh: Duration::from_secs(1) }
    }
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A FIFO.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A socket.
    Socket,
}

/// The attributes of an entry, as `stat` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Type.
    pub kind: FileKind,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (a symlink's: the length of its target).
    pub size: u64,
    /// Modification time.
    pub mtime: Time,
    /// Status change time.
    pub ctime: Time,
    /// Link count.
    pub nlink: u32,
    /// Device number of a device file.
    pub rdev: u64,
    /// 512-byte blocks the content takes (`st_blocks`): a file's size less its runs of zeros
    /// (the holes a restore makes), so `cp -a` from the mount writes a sparse file sparse.
    pub blocks: u64,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'n> {
    /// Its inode number.
    pub ino: u64,
    /// The position after it, to continue the listing from.
    pub next: u64,
    /// Its type.
    pub kind: FileKind,
    /// Its name.
    pub name: &'n [u8],
}

#[derive(Clone)]
enum Kind {
    Root,
    Snapshots,
    Tags,
    Latest,
    Set(SnapshotId),
    Tag(String),
    TagLink(String),
    Entry(Arc<Node>),
}

struct Inode {
    kind: Kind,
    lookups: u64,
}

struct SetInfo {
    name: String,
    id: SnapshotId,
    manifest: Arc<Manifest>,
}

#[derive(Default)]
struct Sets {
    list: Arc<Vec<SetInfo>>,
    loaded: Option<Instant>,
}

/// A least-recently-used cache bounded by the summed weight of its values.
struct Lru<K, V> {
    map: HashMap<K, (V, u64, usize)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: usize,
    max: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    fn new(max: usize) -> Self {
        Lru { map: HashMap::new(), order: BTreeMap::new(), tick: 0, weight: 0, max }
    }

    fn get(&mut self, key: &K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        let (value, used, _) = self.map.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.clone());
        Some(value.clone())
    }

    fn insert(&mut self, key: K, value: V, weight: usize) {
        if self.map.contains_key(&key) {
            return;
        }
        while self.weight + weight > self.max {
            let Some((_, old)) = self.order.pop_first() else { break };
            if let Some((_, _, w)) = self.map.remove(&old) {
                self.weight -= w;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick, weight));
        self.weight += weight;
    }
}

/// An open file: where each chunk ends, to find the chunks of a read.
struct FileMap {
    ends: Vec<u64>,
    ids: Vec<Id>,
}

/// A read-only view of a repository as a directory tree.
pub struct MountView {
    repo: Arc<Repository>,
    opts: MountOptions,
    inodes: Mutex<HashMap<u64, Inode>>,
    sets: Mutex<Sets>,
    chunks: Mutex<Lru<Id, Arc<Vec<u8>>>>,
    trees: Mutex<Lru<TreeId, Arc<TreeBlob>>>,
    files: Mutex<HashMap<u64, Arc<FileMap>>>,
    next_fh: AtomicU64,
    uid: u32,
    gid: u32,
    started_ns: i64,
    /// The chunk a long run of zeros is cut into (this repository's chunker cuts zeros at one
    /// length, which depends on its seed), and its length.
    zero_chunk: (ChunkId, u64),
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| Error::WorkerPanicked)
}

fn child_ino(parent: u64, name: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(&parent.to_le_bytes());
    h.update(name);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    // The top bit keeps hashed numbers clear of the fixed ones.
    u64::from_le_bytes(b) | (1 << 63)
}

/// The inode number of an entry: one per hard-link group (the same file under several names
/// shows one inode), otherwise one per path.
fn entry_ino(parent: u64, node: &Node) -> u64 {
    let Some((dev, ino)) = node.meta.link_group() else { return child_ino(parent, &node.name) };
    // `dev`, `ino` and `ctime` name one state of one file: the same group in two sets shares a
    // number only when nothing about the file changed in between.
    let c = node.meta.ctime;
    let key = [
        dev.to_le_bytes(),
        ino.to_le_bytes(),
        c.secs.to_le_bytes(),
        u64::from(c.nanos).to_le_bytes(),
    ];
    child_ino(LINK_GROUP_PARENT, key.as_flattened())
}

/// The "parent" hashed with hard-link groups, so their numbers differ from any path's.
const LINK_GROUP_PARENT: u64 = u64::MAX;

fn node_kind(node: &Node) -> FileKind {
    match node.content {
        Content::Dir { .. } => FileKind::Dir,
        Content::File { .. } => FileKind::File,
        Content::Symlink { .. } => FileKind::Symlink,
        Content::Special { .. } => match rustix::fs::FileType::from_raw_mode(node.meta.mode) {
            rustix::fs::FileType::CharacterDevice => FileKind::CharDevice,
            rustix::fs::FileType::BlockDevice => FileKind::BlockDevice,
            rustix::fs::FileType::Socket => FileKind::Socket,
            _ => FileKind::Fifo,
        },
    }
}

impl MountView {
    /// A view of `repo`; nothing is read until asked.
    ///
    /// # Errors
    /// The index cache cannot be opened.
    pub fn new(repo: Arc<Repository>, opts: MountOptions) -> Result<Self> {
        repo.index()?;
        let chunks = Lru::new(opts.chunk_cache_bytes);
        let chunker = crate::chunker::Chunker::new(&repo.chunker_params());
        let zeros = vec![0u8; chunker.max_len()];
        let zero_len = chunker.cut(&zeros, false).unwrap_or(zeros.len()).min(zeros.len());
        let zero_chunk = (ChunkId(repo.blob_id(&zeros[..zero_len])), zero_len as u64);
        drop(zeros);
        Ok(MountView {
            repo,
            opts,
            inodes: Mutex::new(HashMap::new()),
            sets: Mutex::new(Sets::default()),
            chunks: Mutex::new(chunks),
            trees: Mutex::new(Lru::new(512)),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            started_ns: crate::time::now_ns(),
            zero_chunk,
        })
    }

    /// The sets, read again when older than the refresh interval.
    fn sets(&self) -> Result<Arc<Vec<SetInfo>>> {
        let mut sets = lock(&self.sets)?;
        if sets.loaded.is_some_and(|t| t.elapsed() < self.opts.refresh) {
            return Ok(Arc::clone(&sets.list));
        }
        let known: HashMap<SnapshotId, Arc<Manifest>> =
            sets.list.iter().map(|s| (s.id, Arc::clone(&s.manifest))).collect();
        let mut fresh = false;
        let mut list = Vec::new();
        for id in self.repo.list_snapshot_ids()? {
            let manifest = match known.get(&id) {
                Some(m) => Arc::clone(m),
                None => match self.repo.load_snapshot(id) {
                    Ok(m) => {
                        fresh = true;
                        Arc::new(m)
                    }
                    // An unreadable manifest is left out; `check` names it.
                    Err(_) => continue,
                },
            };
            list.push(SetInfo { name: String::new(), id, manifest });
        }
        if fresh {
            // New sets bring new packs.
            self.repo.refresh_index()?;
        }
        let names = crate::snapshot::unique_names(list.iter().map(|s| (s.id, &*s.manifest)));
        for s in &mut list {
            s.name = names.get(&s.id).cloned().unwrap_or_else(|| s.manifest.name());
        }
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.0.cmp(&b.id.0)));
        sets.list = Arc::new(list);
        sets.loaded = Some(Instant::now());
        Ok(Arc::clone(&sets.list))
    }

    fn tree(&self, id: TreeId) -> Result<Arc<TreeBlob>> {
        if let Some(t) = lock(&self.trees)?.get(&id) {
            return Ok(t);
        }
        let tree = Arc::new(self.repo.load_tree(id)?);
        lock(&self.trees)?.insert(id, Arc::clone(&tree), 1);
        Ok(tree)
    }

    fn page(&self, id: TreeId) -> Result<Arc<TreeBlob>> {
        let page = self.tree(id)?;
        match *page {
            TreeBlob::Leaf(_) => Ok(page),
            TreeBlob::Pages(_) => Err(Error::corrupt(
                ObjectRef::Tree(id),
                Corruption::Invalid("a page of a directory is itself paged".into()),
            )),
        }
    }

    /// Calls `f` with the entries of directory `tree` from position `skip` on, until it
    /// returns true.
    fn tree_entries(
        &self,
        tree: TreeId,
        mut skip: usize,
        f: &mut dyn FnMut(&Node) -> Result<bool>,
    ) -> Result<()> {
        let root = self.tree(tree)?;
        let pages: Vec<TreeId> = match &*root {
            TreeBlob::Leaf(_) => vec![tree],
            TreeBlob::Pages(pages) => pages.clone(),
        };
        for id in pages {
            let page = if id == tree { Arc::clone(&root) } else { self.page(id)? };
            let TreeBlob::Leaf(nodes) = &*page else { continue };
            if skip >= nodes.len() {
                skip -= nodes.len();
                continue;
            }
            for node in &nodes[skip..] {
                if f(node)? {
                    return Ok(());
                }
            }
            skip = 0;
        }
        Ok(())
    }

    /// The entry `name` of directory `tree` (pages are sorted: a binary search in each).
    fn tree_lookup(&self, tree: TreeId, name: &[u8]) -> Result<Option<Node>> {
        let root = self.tree(tree)?;
        let find = |nodes: &[Node]| {
            nodes.binary_search_by(|n| n.name.as_slice().cmp(name)).ok().map(|i| nodes[i].clone())
        };
        match &*root {
            TreeBlob::Leaf(nodes) => Ok(find(nodes)),
            TreeBlob::Pages(pages) => {
                for id in pages {
                    let page = self.page(*id)?;
                    let TreeBlob::Leaf(nodes) = &*page else { continue };
                    if nodes.last().is_some_and(|last| last.name.as_slice() < name) {
                        continue;
                    }
                    return Ok(find(nodes));
                }
                Ok(None)
            }
        }
    }

    fn kind_of(&self, ino: u64) -> Result<Option<Kind>> {
        Ok(match ino {
            ROOT_INO => Some(Kind::Root),
            SNAPSHOTS_INO => Some(Kind::Snapshots),
            TAGS_INO => Some(Kind::Tags),
            LATEST_INO => Some(Kind::Latest),
            _ => lock(&self.inodes)?.get(&ino).map(|i| i.kind.clone()),
        })
    }

    fn dir_attr(&self, ino: u64, mtime_ns: i64) -> Attr {
        let mtime = Time::from_ns(mtime_ns);
        Attr {
            ino,
            kind: FileKind::Dir,
            perm: 0o555,
            uid: self.uid,
            gid: self.gid,
            size: 0,
            mtime,
            ctime: mtime,
            nlink: 2,
            rdev: 0,
            blocks: 0,
        }
    }

    fn link_attr(&self, ino: u64, target: &[u8], mtime_ns: i64) -> Attr {
        Attr {
            kind: FileKind::Symlink,
            perm: 0o777,
            size: target.len() as u64,
            nlink: 1,
            blocks: (target.len() as u64).div_ceil(512),
            ..self.dir_attr(ino, mtime_ns)
        }
    }

    fn newest_ns(&self, sets: &[SetInfo]) -> i64 {
        sets.iter().map(|s| s.manifest.time_ns).max().unwrap_or(self.started_ns)
    }

    /// Bytes of `node`'s content in chunks that are all zeros, as a long run of zeros is cut.
    /// Counted for files whose chunk ids are in the node (up to 8,192 chunks); a file with chunk
    /// lists counts as fully allocated, since looking costs reads.
    fn zero_bytes(&self, node: &Node) -> u64 {
        let Content::File { chunks: ChunkRefs::Inline(ids), .. } = &node.content else {
            return 0;
        };
        let (zero, len) = self.zero_chunk;
        ids.iter().filter(|id| **id == zero).count() as u64 * len
    }

    /// The attributes of an entry of a set (no need for the list of sets).
    fn entry_attr(&self, ino: u64, node: &Node) -> Attr {
        let kind = node_kind(node);
        let size = match &node.content {
            Content::File { size, .. } => *size,
            Content::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        let rdev = match node.content {
            Content::Special { rdev } => rdev,
            _ => 0,
        };
        Attr {
            ino,
            kind,
            perm: (node.meta.mode & 0o7777) as u16,
            uid: node.meta.uid,
            gid: node.meta.gid,
            size,
            mtime: node.meta.mtime,
            ctime: node.meta.ctime,
            nlink: match kind {
                FileKind::Dir => 2,
                // The links the source had (a version-1 set records none).
                _ => u32::try_from(node.meta.nlink.max(1)).unwrap_or(u32::MAX),
            },
            rdev,
            blocks: size.saturating_sub(self.zero_bytes(node)).div_ceil(512),
        }
    }

    fn attr_of(&self, ino: u64, kind: &Kind) -> Result<Option<Attr>> {
        if let Kind::Entry(node) = kind {
            return Ok(Some(self.entry_attr(ino, node)));
        }
        let sets = self.sets()?;
        Ok(Some(match kind {
            Kind::Root | Kind::Snapshots | Kind::Tags => self.dir_attr(ino, self.newest_ns(&sets)),
            Kind::Tag(_) => self.dir_attr(ino, self.newest_ns(&sets)),
            Kind::Set(id) => {
                let Some(set) = sets.iter().find(|s| s.id == *id) else { return Ok(None) };
                self.dir_attr(ino, set.manifest.time_ns)
            }
            Kind::Latest => {
                let Some(target) = self.readlink_kind(kind)? else { return Ok(None) };
                self.link_attr(ino, &target, self.newest_ns(&sets))
            }
            Kind::TagLink(name) => {
                let Some(set) = sets.iter().find(|s| s.name == *name) else { return Ok(None) };
                let target = format!("../../snapshots/{name}");
                self.link_attr(ino, target.as_bytes(), set.manifest.time_ns)
            }
            Kind::Entry(node) => self.entry_attr(ino, node),
        }))
    }

    /// The attributes of `ino`, or `None` when it is unknown or gone.
    ///
    /// # Errors
    /// The repository cannot be read.
    pub fn getattr(&self, ino: u64) -> Result<Option<Attr>> {
        match self.kind_of(ino)? {
            Some(kind) => self.attr_of(ino, &kind),
            None => Ok(None),
        }
    }

    /// The child kind of `name` in directory `parent`.
    fn child(&self, parent: &Kind, name: &[u8]) -> Result<Option<Kind>> {
        // Inside a set, the list of sets is not needed (the common case: lookups in trees).
        if let Kind::Entry(node) = parent {
            return Ok(match node.content {
                Content::Dir { tree } => {
                    self.tree_lookup(tree, name)?.map(|n| Kind::Entry(Arc::new(n)))
                }
                _ => None,
            });
        }
        let sets = self.sets()?;
        let text = std::str::from_utf8(name).ok();
        Ok(match parent {
            Kind::Root => match name {
                b"snapshots" => Some(Kind::Snapshots),
                b"tags" => Some(Kind::Tags),
                b"latest" if !sets.is_empty() => Some(Kind::Latest),
                _ => None,
            },
            Kind::Snapshots => {
                sets.iter().find(|s| Some(s.name.as_str()) == text).map(|s| Kind::Set(s.id))
            }
            Kind::Tags => text
                .filter(|t| sets.iter().any(|s| s.manifest.tags.iter().any(|x| x == t)))
                .map(|t| Kind::Tag(t.to_owned())),
            Kind::Tag(tag) => sets
                .iter()
                .find(|s| Some(s.name.as_str()) == text && s.manifest.tags.contains(tag))
                .map(|s| Kind::TagLink(s.name.clone())),
            Kind::Set(id) => {
                let Some(set) = sets.iter().find(|s| s.id == *id) else { return Ok(None) };
                match set.manifest.components.iter().find(|c| c.name.as_bytes() == name) {
                    Some(c) => Some(Kind::Entry(Arc::new(component_node(&self.repo, c)?))),
                    None => None,
                }
            }
            Kind::Entry(_) | Kind::Latest | Kind::TagLink(_) => None,
        })
    }

    fn ino_of(parent: u64, kind: &Kind, name: &[u8]) -> u64 {
        match kind {
            Kind::Root => ROOT_INO,
            Kind::Snapshots => SNAPSHOTS_INO,
            Kind::Tags => TAGS_INO,
            Kind::Latest => LATEST_INO,
            // An entry's node carries the name it was looked up by.
            Kind::Entry(node) => entry_ino(parent, node),
            _ => child_ino(parent, name),
        }
    }

    /// Looks up `name` in directory `parent`; the kernel now holds one more reference to the
    /// returned inode (see [`MountView::forget`]).
    ///
    /// # Errors
    /// The repository cannot be read (a damaged tree on the way).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Attr>> {
        let Some(parent_kind) = self.kind_of(parent)? else { return Ok(None) };
        let Some(kind) = self.child(&parent_kind, name)? else { return Ok(None) };
        let ino = Self::ino_of(parent, &kind, name);
        let Some(attr) = self.attr_of(ino, &kind)? else { return Ok(None) };
        if ino > LATEST_INO {
            let mut inodes = lock(&self.inodes)?;
            inodes.entry(ino).or_insert(Inode { kind, lookups: 0 }).lookups += 1;
        }
        Ok(Some(attr))
    }

    /// The extended attributes of `ino` as the set recorded them (none for the mount's own
    /// directories and links), or `None` when `ino` is unknown.
    ///
    /// # Errors
    /// The repository cannot be read.
    pub fn xattrs(&self, ino: u64) -> Result<Option<Vec<crate::tree::Xattr>>> {
        Ok(match self.kind_of(ino)? {
            Some(Kind::Entry(node)) => Some(node.meta.xattrs.clone()),
            Some(_) => Some(Vec::new()),
            None => None,
        })
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if let Ok(mut inodes) = self.inodes.lock() {
            if let Some(inode) = inodes.get_mut(&ino) {
                inode.lookups = inode.lookups.saturating_sub(n);
                if inode.lookups == 0 {
                    inodes.remove(&ino);
                }
            }
        }
    }

    fn readlink_kind(&self, kind: &Kind) -> Result<Option<Vec<u8>>> {
        Ok(match kind {
            Kind::Latest => {
                let sets = self.sets()?;
                sets.iter()
                    .max_by_key(|s| (s.manifest.time_ns, s.name.clone()))
                    .map(|s| format!("snapshots/{}", s.name).into_bytes())
            }
            Kind::TagLink(name) => Some(format!("../../snapshots/{name}").into_bytes()),
            Kind::Entry(node) => match &node.content {
                Content::Symlink { target } => Some(target.clone()),
                _ => None,
            },
            _ => None,
        })
    }

    /// The target of symlink `ino`.
    ///
    /// # Errors
    /// The repository cannot be read.
    pub fn readlink(&self, ino: u64) -> Result<Option<Vec<u8>>> {
        match self.kind_of(ino)? {
            Some(kind) => self.readlink_kind(&kind),
            None => Ok(None),
        }
    }

    /// Lists directory `ino` from position `offset` (0 is `.`, 1 is `..`), calling `add` with
    /// each entry until it returns true (the reply is full). Returns false when `ino` is not a
    /// directory.
    ///
    /// # Errors
    /// The repository cannot be read.
    pub fn readdir(
        &self,
        ino: u64,
        offset: u64,
        add: &mut dyn FnMut(Listed<'_>) -> bool,
    ) -> Result<bool> {
        let Some(kind) = self.kind_of(ino)? else { return Ok(false) };
        let mut pos = offset;
        for (i, dot) in [b".".as_slice(), b"..".as_slice()].into_iter().enumerate() {
            if pos == i as u64 {
                if add(Listed { ino, next: pos + 1, kind: FileKind::Dir, name: dot }) {
                    return Ok(true);
                }
                pos += 1;
            }
        }
        let skip = usize::try_from(pos.saturating_sub(2)).unwrap_or(usize::MAX);
        let sets = self.sets()?;
        let mut listed: Vec<(u64, FileKind, Vec<u8>)> = Vec::new();
        match &kind {
            Kind::Root => {
                listed.push((SNAPSHOTS_INO, FileKind::Dir, b"snapshots".to_vec()));
                listed.push((TAGS_INO, FileKind::Dir, b"tags".to_vec()));
                if !sets.is_empty() {
                    listed.push((LATEST_INO, FileKind::Symlink, b"latest".to_vec()));
                }
            }
            Kind::Snapshots => {
                for s in sets.iter() {
                    let name = s.name.as_bytes();
                    listed.push((child_ino(ino, name), FileKind::Dir, name.to_vec()));
                }
            }
            Kind::Tags => {
                // A tag that cannot be a file name (written before tags were checked) is left
                // out; the sets are still under `snapshots/`.
                let tags: std::collections::BTreeSet<&String> = sets
                    .iter()
                    .flat_map(|s| s.manifest.tags.iter())
                    .filter(|t| crate::tree::is_valid_name(t.as_bytes()))
                    .collect();
                for t in tags {
                    listed.push((
                        child_ino(ino, t.as_bytes()),
                        FileKind::Dir,
                        t.as_bytes().to_vec(),
                    ));
                }
            }
            Kind::Tag(tag) => {
                for s in sets.iter().filter(|s| s.manifest.tags.contains(tag)) {
                    let name = s.name.as_bytes();
                    listed.push((child_ino(ino, name), FileKind::Symlink, name.to_vec()));
                }
            }
            Kind::Set(id) => {
                let Some(set) = sets.iter().find(|s| s.id == *id) else { return Ok(true) };
                for c in &set.manifest.components {
                    let name = c.name.as_bytes();
                    let (child, kind) = if c.kind.is_dir() {
                        (child_ino(ino, name), FileKind::Dir)
                    } else {
                        let node = component_node(&self.repo, c)?;
                        (entry_ino(ino, &node), node_kind(&node))
                    };
                    listed.push((child, kind, name.to_vec()));
                }
            }
            Kind::Entry(node) => {
                let Content::Dir { tree } = node.content else { return Ok(false) };
                let mut next = pos;
                self.tree_entries(tree, skip, &mut |n| {
                    next += 1;
                    let child = entry_ino(ino, n);
                    Ok(add(Listed { ino: child, next, kind: node_kind(n), name: &n.name }))
                })?;
                return Ok(true);
            }
            Kind::Latest | Kind::TagLink(_) => return Ok(false),
        }
        for (next, (child, kind, name)) in (pos + 1..).zip(listed.iter().skip(skip)) {
            if add(Listed { ino: *child, next, kind: *kind, name }) {
                break;
            }
        }
        Ok(true)
    }

    /// Opens regular file `ino` for reading; returns a handle for [`MountView::read`], or
    /// `None` when `ino` is not a regular file.
    ///
    /// # Errors
    /// A chunk of the file is not indexed, or a chunk list is damaged.
    pub fn open(&self, ino: u64) -> Result<Option<u64>> {
        let Some(Kind::Entry(node)) = self.kind_of(ino)? else { return Ok(None) };
        let Content::File { size, chunks } = &node.content else { return Ok(None) };
        let index = self.repo.index()?;
        let (mut ends, mut ids) = (Vec::new(), Vec::new());
        let mut end = 0u64;
        for_each_chunk(&self.repo, chunks, |id| {
            let loc = index.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
            end += u64::from(loc.entry.raw_len);
            ends.push(end);
            ids.push(id);
            Ok(())
        })?;
        if end != *size {
            return Err(Error::SizeMismatch {
                path: crate::tree::escape_name(&node.name),
                recorded: *size,
                found: end,
            });
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files)?.insert(fh, Arc::new(FileMap { ends, ids }));
        Ok(Some(fh))
    }

    /// Forgets handle `fh`.
    pub fn release(&self, fh: u64) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(&fh);
        }
    }

    fn chunk(&self, id: Id) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = lock(&self.chunks)?.get(&id) {
            return Ok(c);
        }
        let data = Arc::new(self.repo.read_blob(id, BlobKind::Data)?);
        lock(&self.chunks)?.insert(id, Arc::clone(&data), data.len());
        Ok(data)
    }

    /// Up to `len` bytes of open file `fh` from `offset` (fewer only at the end of the file).
    ///
    /// # Errors
    /// An unknown handle; a chunk that cannot be read or fails verification.
    pub fn read(&self, fh: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let map = lock(&self.files)?.get(&fh).cloned().ok_or(Error::InvalidOption {
            option: "file handle",
            reason: format!("{fh} is not open"),
        })?;
        let size = map.ends.last().copied().unwrap_or(0);
        let end = offset.saturating_add(len as u64).min(size);
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(offset)).unwrap_or(0));
        let mut pos = offset;
        let mut i = map.ends.partition_point(|&e| e <= pos);
        while pos < end && i < map.ids.len() {
            let start = if i == 0 { 0 } else { map.ends[i - 1] };
            let data = self.chunk(map.ids[i])?;
            let from = usize::try_from(pos - start).unwrap_or(usize::MAX);
            let to = usize::try_from(end.min(map.ends[i]) - start).unwrap_or(usize::MAX);
            let piece = data.get(from..to).ok_or_else(|| {
                Error::corrupt(
                    ObjectRef::Cache,
                    Corruption::Invalid(format!("chunk {} is shorter than indexed", map.ids[i])),
                )
            })?;
            out.extend_from_slice(piece);
            pos = start + to as u64;
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_the_least_recently_used_within_its_weight() {
        let mut lru = Lru::new(10);
        lru.insert(1, "a", 4);
        lru.insert(2, "b", 4);
        assert_eq!(lru.get(&1), Some("a"));
        lru.insert(3, "c", 4); // evicts 2, the least recently used
        assert_eq!(lru.get(&2), None);
        assert_eq!((lru.get(&1), lru.get(&3)), (Some("a"), Some("c")));
        assert!(lru.weight <= 10);
        lru.insert(4, "big", 20); // larger than the bound: everything else goes
        assert_eq!(lru.map.len(), 1);
    }

    /// The names `readdir` lists in `ino`, without `.` and `..`.
    fn names(view: &MountView, ino: u64) -> Vec<String> {
        let mut out = Vec::new();
        view.readdir(ino, 0, &mut |l| {
            out.push(String::from_utf8_lossy(l.name).into_owned());
            false
        })
        .unwrap();
        out.retain(|n| n != "." && n != "..");
        out
    }

    // See: issue 17 ("`--tag ''` and `--tag 'x/y'` are accepted, and then `ls MOUNT/tags` fails
    // with EIO for every tag: ... the mount skips a bad one").
    #[test]
    fn a_tag_that_cannot_be_a_name_is_left_out_of_the_tags_directory() {
        let dir = tempfile::tempdir().unwrap();
        let repo = crate::testing::repo_with(dir.path(), &[("a.txt".into(), b"a".to_vec())]);
        let listed = repo.list_snapshots().unwrap();
        let mut m = repo.load_snapshot(listed[0].id).unwrap();
        // Written before tags were checked (snapshot refuses these now).
        m.tags = vec!["good".into(), String::new(), "x/y".into(), "..".into()];
        repo.save_snapshot(&m).unwrap();
        let view = MountView::new(Arc::new(repo), MountOptions::default()).unwrap();
        let tags = view.lookup(ROOT_INO, b"tags").unwrap().unwrap();
        assert_eq!(names(&view, tags.ino), ["good"]);
        let good = view.lookup(tags.ino, b"good").unwrap().unwrap();
        assert_eq!(names(&view, good.ino).len(), 1, "the set under its good tag");
    }

    #[test]
    fn hashed_inode_numbers_are_stable_and_clear_of_the_fixed_ones() {
        assert_eq!(child_ino(5, b"x"), child_ino(5, b"x"));
        assert_ne!(child_ino(5, b"x"), child_ino(6, b"x"));
        assert!(child_ino(1, b"snapshots") > LATEST_INO);
    }
}
