//! Trees: directory listings stored as blobs (FORMAT.md §6).
//!
//! A directory is one [`TreeBlob::Leaf`] holding its entries sorted by raw name bytes, or,
//! when that would exceed the page limit (the repository's maximum chunk size), several leaf
//! pages referenced by one [`TreeBlob::Pages`]. Encoding is canonical, so equal directories
//! (same names, metadata and content) give equal tree ids and cost nothing the second time.
//! Names are raw bytes: non-UTF-8 names round-trip. Decoding checks every name (not empty, not
//! `.` or `..`, no `/`, no NUL) and the order, so a hostile tree cannot name a path outside
//! its directory or list a name twice.

use serde::{Deserialize, Serialize};

use crate::error::{Corruption, Result};
use crate::format::{decode_record, encode_record, encode_record_into};
use crate::id::{ChunkId, Id, TreeId};
use crate::pack::BlobKind;

/// A point in time: seconds since the Unix epoch (UTC) and nanoseconds, `0 <= nanos < 10^9`.
/// It holds any time a file system can (version 1 kept i64 nanoseconds: 1677 to 2262).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Time {
    /// Whole seconds since the epoch (negative before 1970).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Time {
    /// `ns` nanoseconds since the epoch.
    #[must_use]
    pub fn from_ns(ns: i64) -> Self {
        // rem_euclid of 10^9 is in 0..10^9, so it fits a u32.
        Time { secs: ns.div_euclid(NANOS), nanos: ns.rem_euclid(NANOS) as u32 }
    }

    /// Seconds and nanoseconds as `stat` gives them (nanoseconds outside `0..10^9` carried
    /// into the seconds).
    #[must_use]
    pub fn new(secs: i64, nanos: i64) -> Self {
        Time {
            secs: secs.saturating_add(nanos.div_euclid(NANOS)),
            nanos: nanos.rem_euclid(NANOS) as u32,
        }
    }

    /// Nanoseconds since the epoch, clamped to what an i64 holds (1677 to 2262): what a
    /// version-1 record can keep.
    #[must_use]
    pub fn to_ns_saturating(self) -> i64 {
        let ns = i128::from(self.secs) * i128::from(NANOS) + i128::from(self.nanos);
        i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
    }

    /// Whether a version-1 record keeps this time exactly.
    #[must_use]
    pub fn fits_i64_ns(self) -> bool {
        Time::from_ns(self.to_ns_saturating()) == self
    }
}

const NANOS: i64 = 1_000_000_000;

/// One extended attribute (POSIX ACLs are the `system.posix_acl_*` ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    /// Its full name with namespace (`user.x`, `security.selinux`), raw bytes.
    pub name: Vec<u8>,
    /// Its value, raw bytes.
    pub value: Vec<u8>,
}

/// Longest extended attribute name Linux allows (`XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;

/// Metadata of a file, directory, symlink or special file (FORMAT.md §6.1, version 2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Time,
    /// Status change time (change detection).
    pub ctime: Time,
    /// Inode number (change detection; with `dev`, hard-link groups within a set).
    pub ino: u64,
    /// Device of the file system the entry was on when the set was taken.
    pub dev: u64,
    /// Number of hard links; files with more than one that share `dev` and `ino` in a set
    /// are one file (0 when not recorded: version 1).
    pub nlink: u64,
    /// Extended attributes, sorted by name, names unique.
    pub xattrs: Vec<Xattr>,
}

impl Metadata {
    /// The hard-link group of a regular file linked more than once: `(dev, ino)`.
    #[must_use]
    pub fn link_group(&self) -> Option<(u64, u64)> {
        let is_file = self.mode & 0o170_000 == 0o100_000;
        (is_file && self.nlink > 1).then_some((self.dev, self.ino))
    }
}

/// Metadata as version 1 records it (FORMAT.md §6.1): no extended attributes or links, times
/// as i64 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MetadataV1 {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl From<MetadataV1> for Metadata {
    fn from(m: MetadataV1) -> Self {
        Metadata {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime: Time::from_ns(m.mtime_ns),
            ctime: Time::from_ns(m.ctime_ns),
            ino: m.ino,
            dev: 0,
            nlink: 0,
            xattrs: Vec::new(),
        }
    }
}

impl From<&Metadata> for MetadataV1 {
    fn from(m: &Metadata) -> Self {
        MetadataV1 {
            mode: m.mode,
            uid: m.uid,
            gid: m.gid,
            mtime_ns: m.mtime.to_ns_saturating(),
            ctime_ns: m.ctime.to_ns_saturating(),
            ino: m.ino,
        }
    }
}

impl Metadata {
    /// Whether the extended attributes are recorded (version 2, where every entry has a link
    /// count of at least 1; a version-1 entry reads with 0 and no attributes, which says nothing
    /// of what the source had).
    #[must_use]
    pub fn records_xattrs(&self) -> bool {
        self.nlink != 0
    }

    /// Whether a version-1 record keeps all of this (no extended attributes, no hard links,
    /// times within 1677 to 2262).
    #[must_use]
    pub fn fits_v1(&self) -> bool {
        self.xattrs.is_empty()
            && self.link_group().is_none()
            && self.mtime.fits_i64_ns()
            && self.ctime.fits_i64_ns()
    }

    /// Checks what a decoder must: nanoseconds below 10^9, extended attribute names valid,
    /// sorted and unique.
    pub(crate) fn validate(&self) -> Result<(), Corruption> {
        if self.mtime.nanos >= NANOS as u32 || self.ctime.nanos >= NANOS as u32 {
            return Err(Corruption::Invalid("a time has 10^9 or more nanoseconds".into()));
        }
        let valid = |n: &[u8]| !n.is_empty() && n.len() <= XATTR_NAME_MAX && !n.contains(&0);
        let names = self.xattrs.iter().map(|x| x.name.as_slice());
        check_sorted(names, None, valid, "extended attribute")
    }
}

/// Where a file's chunk ids are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkRefs {
    /// In the node itself (up to [`INLINE_CHUNKS_MAX`] ids).
    Inline(Vec<ChunkId>),
    /// In [`BlobKind::ChunkList`] blobs, in order, each listing up to [`INLINE_CHUNKS_MAX`] ids.
    Lists(Vec<Id>),
}

/// Most chunk ids kept in a node, and in one chunk-list blob: 8192 (256 KiB of ids).
pub const INLINE_CHUNKS_MAX: usize = 8192;

/// What an entry is, with what that kind needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Content {
    /// A regular file.
    File {
        /// Size in bytes (what was read).
        size: u64,
        /// Its chunks, in order.
        chunks: ChunkRefs,
    },
    /// A directory.
    Dir {
        /// Its listing.
        tree: TreeId,
    },
    /// A symbolic link; the target is stored verbatim and never followed.
    Symlink {
        /// The link target, raw bytes.
        target: Vec<u8>,
    },
    /// A FIFO, socket, or device (the file type is in `mode`).
    Special {
        /// Device number for devices.
        rdev: u64,
    },
}

/// One directory entry. `M` is how its metadata is recorded: [`Metadata`] (what the engine
/// works with, and version 2's record), or [`MetadataV1`] in version-1 records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node<M = Metadata> {
    /// The name, raw bytes.
    pub name: Vec<u8>,
    /// Its metadata.
    pub meta: M,
    /// What it is.
    pub content: Content,
}

impl<M> Node<M> {
    /// Size of a file's content; 0 for other kinds.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self.content {
            Content::File { size, .. } => size,
            _ => 0,
        }
    }
}

/// A tree blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeBlob {
    /// Entries of a directory (all of them, or one page).
    Leaf(Vec<Node>),
    /// Pages of a large directory, in name order; each is a `Leaf`.
    Pages(Vec<TreeId>),
}

/// A tree blob as recorded (FORMAT.md §6.1): the variant says how its entries' metadata is
/// recorded, so a tree reads the same whatever pack or set it is found in.
#[derive(Deserialize)]
enum TreeRecord {
    Leaf(Vec<Node<MetadataV1>>),
    Pages(Vec<TreeId>),
    Entries(Vec<Node>),
}

/// Whether restore may create an entry called `name` in a directory.
#[must_use]
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// `name` below the relative path `parent` (raw bytes; the empty path is the top itself).
pub(crate) fn join_raw(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = parent.to_vec();
    if !out.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// `name` as text for messages: UTF-8 where it is, `\xNN` escapes elsewhere.
#[must_use]
pub fn escape_name(name: &[u8]) -> String {
    // Most names are printable ASCII that `escape_debug` leaves alone (one per restored file:
    // the general path below was 1% of a restore of small files).
    let plain = |b: &u8| (0x20..0x7f).contains(b) && !matches!(b, b'\\' | b'"' | b'\'');
    if name.iter().all(plain) {
        if let Ok(s) = std::str::from_utf8(name) {
            return s.to_owned();
        }
    }
    name.utf8_chunks()
        .flat_map(|chunk| {
            let mut s = chunk.valid().escape_debug().to_string();
            for b in chunk.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
            std::iter::once(s)
        })
        .collect()
}

impl TreeBlob {
    /// Encodes a tree blob as format `version` records it (version 1 drops what it cannot
    /// hold: see [`Metadata::fits_v1`]).
    ///
    /// # Errors
    /// [`crate::Error::Encode`] for a tree larger than a reader accepts.
    pub fn encode(&self, version: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        match self {
            TreeBlob::Leaf(nodes) => {
                out.extend_from_slice(&leaf_tag(version).to_le_bytes());
                out.extend_from_slice(&(nodes.len() as u64).to_le_bytes());
                for n in nodes {
                    encode_node(n, version, &mut out)?;
                }
            }
            TreeBlob::Pages(pages) => {
                out.extend_from_slice(&PAGES_TAG.to_le_bytes());
                out.extend_from_slice(&(pages.len() as u64).to_le_bytes());
                for p in pages {
                    out.extend_from_slice(p.0.as_bytes());
                }
            }
        }
        if out.len() > crate::format::MAX_RECORD_LEN {
            return Err(crate::Error::Encode {
                what: "tree",
                reason: format!("{} bytes, more than a reader accepts", out.len()),
            });
        }
        Ok(out)
    }

    /// Decodes a tree blob of either version and checks names, order and metadata.
    ///
    /// # Errors
    /// Malformed bytes, an invalid name, names out of order or repeated, invalid metadata.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let tree = match decode_record::<TreeRecord>(bytes, "tree")? {
            TreeRecord::Pages(pages) => return Ok(TreeBlob::Pages(pages)),
            TreeRecord::Leaf(nodes) => nodes
                .into_iter()
                .map(|n| Node { name: n.name, meta: n.meta.into(), content: n.content })
                .collect(),
            TreeRecord::Entries(nodes) => {
                for n in &nodes {
                    n.meta.validate()?;
                }
                nodes
            }
        };
        check_names(&tree, None)?;
        Ok(TreeBlob::Leaf(tree))
    }
}

/// Appends the record of one entry as format `version` writes it.
fn encode_node(node: &Node, version: u32, out: &mut Vec<u8>) -> Result<()> {
    if version < 2 {
        let v1 = Node::<MetadataV1> {
            name: node.name.clone(),
            meta: MetadataV1::from(&node.meta),
            content: node.content.clone(),
        };
        encode_record_into(&v1, "tree entry", out)
    } else {
        encode_record_into(node, "tree entry", out)
    }
}

/// The variant tag of a leaf in format `version`: `Leaf` (version 1) or `Entries`.
fn leaf_tag(version: u32) -> u32 {
    if version < 2 {
        LEAF_V1_TAG
    } else {
        ENTRIES_TAG
    }
}

/// Checks that every name is valid and that names strictly increase, starting after `after`.
pub(crate) fn check_names(nodes: &[Node], after: Option<&[u8]>) -> Result<(), Corruption> {
    check_sorted(nodes.iter().map(|n| n.name.as_slice()), after, is_valid_name, "name")
}

/// Checks that each of `names` (`what` in messages) is `valid` and that they strictly increase,
/// starting after `after`.
fn check_sorted<'a>(
    names: impl Iterator<Item = &'a [u8]>,
    after: Option<&'a [u8]>,
    valid: impl Fn(&[u8]) -> bool,
    what: &str,
) -> Result<(), Corruption> {
    let mut prev = after;
    for name in names {
        if !valid(name) {
            return Err(Corruption::Invalid(format!("invalid {what} \"{}\"", escape_name(name))));
        }
        if prev.is_some_and(|p| p >= name) {
            return Err(Corruption::Invalid(format!(
                "{what} \"{}\" is out of order or repeated",
                escape_name(name)
            )));
        }
        prev = Some(name);
    }
    Ok(())
}

/// Receives blobs built by the engine (trees, chunk lists) and stores them.
pub trait BlobSink {
    /// Stores `raw` as a blob of `kind` unless already stored; returns its id.
    ///
    /// # Errors
    /// Whatever storing fails with.
    fn put(&mut self, kind: BlobKind, raw: Vec<u8>) -> Result<Id>;
}

/// Builds the tree of one directory from entries given in name order, emitting a page blob
/// whenever the page would exceed the limit. Memory: one page, plus 32 bytes per page.
pub struct TreeBuilder {
    page: Vec<u8>,
    count: u64,
    pages: Vec<TreeId>,
    limit: usize,
    last_name: Option<Vec<u8>>,
    version: u32,
}

const LEAF_V1_TAG: u32 = 0;
const PAGES_TAG: u32 = 1;
const ENTRIES_TAG: u32 = 2;
const RECORD_PREFIX: usize = 12; // enum tag u32 + element count u64

impl TreeBuilder {
    /// A builder of format `version` trees whose pages stay under `limit` bytes (unless one
    /// entry alone is larger).
    #[must_use]
    pub fn new(limit: usize, version: u32) -> Self {
        TreeBuilder {
            page: Vec::new(),
            count: 0,
            pages: Vec::new(),
            limit,
            last_name: None,
            version,
        }
    }

    /// Adds the next entry; names must increase.
    ///
    /// # Errors
    /// A name that is invalid or not greater than the previous one, or a failing sink.
    pub fn push(&mut self, node: &Node, sink: &mut dyn BlobSink) -> Result<()> {
        check_names(std::slice::from_ref(node), self.last_name.as_deref()).map_err(|reason| {
            crate::Error::InvalidOption { option: "tree entry", reason: reason.to_string() }
        })?;
        let mut encoded = Vec::new();
        encode_node(node, self.version, &mut encoded)?;
        if self.count > 0 && RECORD_PREFIX + self.page.len() + encoded.len() > self.limit {
            self.flush_page(sink)?;
        }
        self.page.extend_from_slice(&encoded);
        self.count += 1;
        self.last_name = Some(node.name.clone());
        Ok(())
    }

    fn leaf_bytes(&mut self) -> Vec<u8> {
        // Same bytes as `TreeBlob::Leaf(nodes).encode(version)`: the enum tag, the element
        // count, then each node's encoding (a test pins this equality).
        let mut out = Vec::with_capacity(RECORD_PREFIX + self.page.len());
        out.extend_from_slice(&leaf_tag(self.version).to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.append(&mut self.page);
        self.count = 0;
        out
    }

    fn flush_page(&mut self, sink: &mut dyn BlobSink) -> Result<()> {
        let bytes = self.leaf_bytes();
        let id = sink.put(BlobKind::Tree, bytes)?;
        self.pages.push(TreeId(id));
        Ok(())
    }

    /// Emits the last page (and the page list, for a paged directory); returns the tree id.
    ///
    /// # Errors
    /// A failing sink.
    pub fn finish(mut self, sink: &mut dyn BlobSink) -> Result<TreeId> {
        if self.pages.is_empty() {
            let bytes = self.leaf_bytes();
            return sink.put(BlobKind::Tree, bytes).map(TreeId);
        }
        if self.count > 0 {
            self.flush_page(sink)?;
        }
        let mut out = Vec::with_capacity(RECORD_PREFIX + self.pages.len() * 32);
        out.extend_from_slice(&PAGES_TAG.to_le_bytes());
        out.extend_from_slice(&(self.pages.len() as u64).to_le_bytes());
        for p in &self.pages {
            out.extend_from_slice(p.0.as_bytes());
        }
        sink.put(BlobKind::Tree, out).map(TreeId)
    }
}

/// The entries of one directory, in name order, across its pages; pages are loaded lazily.
pub struct DirEntries<L> {
    load: L,
    pages: std::vec::IntoIter<TreeId>,
    current: std::vec::IntoIter<Node>,
    last_name: Option<Vec<u8>>,
}

impl<L: FnMut(TreeId) -> Result<TreeBlob>> DirEntries<L> {
    /// Opens the directory `tree`, loading blobs with `load`.
    ///
    /// # Errors
    /// Whatever `load` fails with; a page list that names another page list.
    pub fn open(mut load: L, tree: TreeId) -> Result<Self> {
        let (pages, current) = match load(tree)? {
            TreeBlob::Leaf(nodes) => (Vec::new(), nodes),
            TreeBlob::Pages(pages) => (pages, Vec::new()),
        };
        Ok(DirEntries {
            load,
            pages: pages.into_iter(),
            current: current.into_iter(),
            last_name: None,
        })
    }

    fn next_page(&mut self) -> Result<bool> {
        let Some(page) = self.pages.next() else { return Ok(false) };
        let nodes = match (self.load)(page)? {
            TreeBlob::Leaf(nodes) => nodes,
            TreeBlob::Pages(_) => {
                return Err(crate::Error::corrupt(
                    crate::error::ObjectRef::Tree(page),
                    Corruption::Invalid("a page of a directory is itself paged".into()),
                ))
            }
        };
        check_names(&nodes, self.last_name.as_deref())
            .map_err(|reason| crate::Error::corrupt(crate::error::ObjectRef::Tree(page), reason))?;
        self.current = nodes.into_iter();
        Ok(true)
    }
}

impl<'a> DirEntries<Box<dyn FnMut(TreeId) -> Result<TreeBlob> + 'a>> {
    /// A listing with no entries that loads nothing (for a directory whose listing broke off).
    #[must_use]
    pub fn empty() -> Self {
        DirEntries {
            load: Box::new(|_| Ok(TreeBlob::Leaf(Vec::new()))),
            pages: Vec::new().into_iter(),
            current: Vec::new().into_iter(),
            last_name: None,
        }
    }
}

impl<L: FnMut(TreeId) -> Result<TreeBlob>> Iterator for DirEntries<L> {
    type Item = Result<Node>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(node) = self.current.next() {
                if self.current.len() == 0 {
                    self.last_name = Some(node.name.clone());
                }
                return Some(Ok(node));
            }
            match self.next_page() {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    self.pages = Vec::new().into_iter();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Encodes a chunk-list blob.
///
/// # Errors
/// [`crate::Error::Encode`] (never for the at most 8192 ids a list holds).
pub fn encode_chunk_list(ids: &[ChunkId]) -> Result<Vec<u8>> {
    encode_record(&ids, "chunk list")
}

/// Decodes a chunk-list blob.
///
/// # Errors
/// Malformed bytes.
pub fn decode_chunk_list(bytes: &[u8]) -> Result<Vec<ChunkId>, Corruption> {
    decode_record(bytes, "chunk list")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct MemSink(HashMap<Id, (BlobKind, Vec<u8>)>);
    impl BlobSink for MemSink {
        fn put(&mut self, kind: BlobKind, raw: Vec<u8>) -> Result<Id> {
            let id = Id::hash(&raw);
            self.0.insert(id, (kind, raw));
            Ok(id)
        }
    }

    /// The metadata of FORMAT.md's example node: mode 0100644, uid 1, gid 2, mtime 3 ns,
    /// ctime 4 ns, inode 5.
    fn example_meta() -> Metadata {
        Metadata {
            mode: 0o100_644,
            uid: 1,
            gid: 2,
            mtime: Time::from_ns(3),
            ctime: Time::from_ns(4),
            ino: 5,
            ..Metadata::default()
        }
    }

    fn file(name: &[u8], n: u8) -> Node {
        Node {
            name: name.to_vec(),
            meta: example_meta(),
            content: Content::File {
                size: u64::from(n),
                chunks: ChunkRefs::Inline(vec![ChunkId(Id::hash(&[n]))]),
            },
        }
    }

    #[test]
    fn builder_bytes_equal_record_encoding() {
        let nodes = vec![file(b"a", 1), file(b"b\xff", 2), file(b"c", 3)];
        for version in [1, 2] {
            let mut sink = MemSink::default();
            let mut b = TreeBuilder::new(1 << 20, version);
            for n in &nodes {
                b.push(n, &mut sink).unwrap();
            }
            let id = b.finish(&mut sink).unwrap();
            let (kind, bytes) = &sink.0[&id.0];
            assert_eq!(*kind, BlobKind::Tree);
            assert_eq!(bytes, &TreeBlob::Leaf(nodes.clone()).encode(version).unwrap());
            assert_eq!(TreeBlob::decode(bytes).unwrap(), TreeBlob::Leaf(nodes.clone()));
        }
    }

    // See: issue 14 (xattrs, hard links and times past 2262 were dropped or clamped).
    #[test]
    fn version_2_keeps_xattrs_links_and_any_time_and_version_1_reads_as_before() {
        let mut node = file(b"f", 1);
        node.meta.mtime = Time { secs: 11_000_000_000, nanos: 999_999_999 }; // year 2318
        node.meta.ctime = Time { secs: -5, nanos: 1 };
        node.meta.dev = 7;
        node.meta.nlink = 3;
        node.meta.xattrs = vec![
            Xattr { name: b"security.capability".to_vec(), value: vec![1, 0, 0, 2] },
            Xattr { name: b"user.x".to_vec(), value: b"\0binary\xff".to_vec() },
        ];
        assert!(!node.meta.fits_v1());
        let tree = TreeBlob::Leaf(vec![node.clone()]);
        assert_eq!(TreeBlob::decode(&tree.encode(2).unwrap()).unwrap(), tree);
        // Version 1 keeps what it can: the time clamped, the rest dropped.
        let TreeBlob::Leaf(v1) = TreeBlob::decode(&tree.encode(1).unwrap()).unwrap() else {
            panic!("leaf")
        };
        assert_eq!(v1[0].meta.mtime.to_ns_saturating(), i64::MAX);
        assert!(v1[0].meta.xattrs.is_empty() && v1[0].meta.nlink == 0);
        assert_eq!((v1[0].meta.ino, v1[0].meta.mode), (node.meta.ino, node.meta.mode));
        assert!(file(b"g", 2).meta.fits_v1());
    }

    #[test]
    fn bad_version_2_metadata_is_refused_by_the_decoder() {
        let with = |f: &dyn Fn(&mut Metadata)| {
            let mut n = file(b"a", 1);
            f(&mut n.meta);
            let bytes = TreeBlob::Leaf(vec![n]).encode(2).unwrap();
            TreeBlob::decode(&bytes)
        };
        assert!(with(&|_| ()).is_ok());
        assert!(with(&|m| m.mtime.nanos = 1_000_000_000).is_err());
        let x = |n: &[u8]| Xattr { name: n.to_vec(), value: vec![] };
        assert!(with(&|m| m.xattrs = vec![x(b"")]).is_err());
        assert!(with(&|m| m.xattrs = vec![x(b"user.a\0b")]).is_err());
        assert!(with(&|m| m.xattrs = vec![x(&[b'u'; 256])]).is_err());
        assert!(with(&|m| m.xattrs = vec![x(b"user.b"), x(b"user.a")]).is_err());
        assert!(with(&|m| m.xattrs = vec![x(b"user.a"), x(b"user.a")]).is_err());
        assert!(with(&|m| m.xattrs = vec![x(b"user.a"), x(b"user.b")]).is_ok());
    }

    #[test]
    fn times_convert_exactly_within_the_i64_range() {
        for ns in [0, 1, -1, 999_999_999, -1_000_000_001, i64::MAX, i64::MIN] {
            let t = Time::from_ns(ns);
            assert!(t.nanos < 1_000_000_000);
            assert_eq!(t.to_ns_saturating(), ns);
        }
        assert_eq!(Time::new(5, -1), Time { secs: 4, nanos: 999_999_999 });
        assert_eq!(Time { secs: i64::MIN, nanos: 0 }.to_ns_saturating(), i64::MIN);
    }

    #[test]
    fn equal_directories_give_equal_ids_and_large_ones_are_paged() {
        let build = |limit| {
            let mut sink = MemSink::default();
            let mut b = TreeBuilder::new(limit, 2);
            for i in 0..2000u32 {
                b.push(&file(format!("f{i:05}").as_bytes(), (i % 251) as u8), &mut sink).unwrap();
            }
            (b.finish(&mut sink).unwrap(), sink)
        };
        let (a, _) = build(4096);
        let (b, sink) = build(4096);
        assert_eq!(a, b);
        let TreeBlob::Pages(pages) = TreeBlob::decode(&sink.0[&a.0].1).unwrap() else {
            panic!("expected pages");
        };
        assert!(pages.len() > 10);
        let mut names = Vec::new();
        for p in pages {
            let bytes = &sink.0[&p.0].1;
            assert!(bytes.len() <= 4096);
            let TreeBlob::Leaf(nodes) = TreeBlob::decode(bytes).unwrap() else { panic!() };
            names.extend(nodes.into_iter().map(|n| n.name));
        }
        assert_eq!(names.len(), 2000);
        assert!(names.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn hostile_names_are_refused_by_the_decoder() {
        for bad in [&b""[..], b".", b"..", b"a/b", b"/etc", b"x\0y"] {
            let bytes = TreeBlob::Leaf(vec![file(bad, 1)]).encode(2).unwrap();
            let err = TreeBlob::decode(&bytes).unwrap_err();
            assert!(matches!(err, Corruption::Invalid(_)), "{bad:?}: {err:?}");
        }
        let dup = TreeBlob::Leaf(vec![file(b"a", 1), file(b"a", 2)]).encode(1).unwrap();
        assert!(TreeBlob::decode(&dup).is_err());
        let unordered = TreeBlob::Leaf(vec![file(b"b", 1), file(b"a", 2)]).encode(2).unwrap();
        assert!(TreeBlob::decode(&unordered).is_err());
    }

    #[test]
    fn truncated_trees_are_errors() {
        for version in [1, 2] {
            let bytes = TreeBlob::Leaf(vec![file(b"a", 1), file(b"b", 2)]).encode(version).unwrap();
            for n in 0..bytes.len() {
                assert!(TreeBlob::decode(&bytes[..n]).is_err());
            }
        }
    }

    /// The record encodings spelled out in FORMAT.md §1 and §6, pinned byte for byte.
    #[test]
    fn node_encoding_matches_format_md() {
        let hex = |b: Vec<u8>| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mut node = Node {
            name: b"a".to_vec(),
            meta: example_meta(),
            content: Content::Symlink { target: b"t".to_vec() },
        };
        let leaf = |node: &Node, version| {
            let bytes = TreeBlob::Leaf(vec![node.clone()]).encode(version).unwrap();
            hex(bytes[12..].to_vec())
        };
        assert_eq!(
            leaf(&node, 1),
            concat!(
                "0100000000000000",
                "61", // name: u64 length, bytes
                "a4810000",
                "01000000",
                "02000000", // mode, uid, gid (u32)
                "0300000000000000",
                "0400000000000000",
                "0500000000000000", // mtime, ctime, ino
                "02000000",         // Content variant 2 = Symlink (u32)
                "0100000000000000",
                "74", // target
            )
        );
        node.meta.mtime = Time { secs: 1, nanos: 3 };
        node.meta.dev = 6;
        node.meta.nlink = 1;
        node.meta.xattrs = vec![Xattr { name: b"user.k".to_vec(), value: b"v".to_vec() }];
        assert_eq!(
            leaf(&node, 2),
            concat!(
                "0100000000000000",
                "61", // name
                "a4810000",
                "01000000",
                "02000000", // mode, uid, gid
                "0100000000000000",
                "03000000", // mtime: secs i64, nanos u32
                "0000000000000000",
                "04000000",         // ctime
                "0500000000000000", // ino
                "0600000000000000", // dev
                "0100000000000000", // nlink
                "0100000000000000", // one xattr
                "0600000000000000",
                "757365722e6b", // name "user.k"
                "0100000000000000",
                "76",       // value "v"
                "02000000", // Content variant 2 = Symlink
                "0100000000000000",
                "74", // target
            )
        );
        assert_eq!(hex(TreeBlob::Leaf(vec![]).encode(1).unwrap()), "000000000000000000000000");
        assert_eq!(hex(TreeBlob::Leaf(vec![]).encode(2).unwrap()), "020000000000000000000000");
        let refs = encode_record(&Some(ChunkRefs::Inline(vec![])), "test").unwrap();
        assert_eq!(refs, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn escape_name_is_lossless_for_display() {
        assert_eq!(escape_name(b"plain"), "plain");
        // The printable-ASCII shortcut says what `escape_debug` says, for every ASCII byte.
        for b in 0u8..0x80 {
            let name = [b'a', b, b'z'];
            let expected = std::str::from_utf8(&name).unwrap().escape_debug().to_string();
            assert_eq!(escape_name(&name), expected, "byte {b:#04x}");
        }
        assert_eq!(escape_name(b"it's \"q\" \\ ~"), "it\\'s \\\"q\\\" \\\\ ~");
        assert_eq!(escape_name(b"bad\xff\xfename"), "bad\\xff\\xfename");
        assert_eq!(escape_name(b"new\nline"), "new\\nline");
    }

    proptest::proptest! {
        #[test]
        fn node_round_trips(name in proptest::collection::vec(1u8..=255, 1..50), mode: u32, secs: i64, nanos in 0u32..1_000_000_000, size: u64) {
            proptest::prop_assume!(is_valid_name(&name));
            let node = Node {
                name,
                meta: Metadata { mode, mtime: Time { secs, nanos }, ..Metadata::default() },
                content: Content::File { size, chunks: ChunkRefs::Lists(vec![Id::hash(b"l")]) },
            };
            let tree = TreeBlob::Leaf(vec![node]);
            proptest::prop_assert_eq!(TreeBlob::decode(&tree.encode(2).unwrap()).unwrap(), tree);
        }
    }
}
