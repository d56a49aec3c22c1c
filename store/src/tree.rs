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

/// Metadata of a file, directory, symlink or special file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Metadata {
    /// Permission bits and file type, as `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch (change detection).
    pub ctime_ns: i64,
    /// Inode number (change detection).
    pub ino: u64,
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

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The name, raw bytes.
    pub name: Vec<u8>,
    /// Its metadata.
    pub meta: Metadata,
    /// What it is.
    pub content: Content,
}

impl Node {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeBlob {
    /// Entries of a directory (all of them, or one page).
    Leaf(Vec<Node>),
    /// Pages of a large directory, in name order; each is a `Leaf`.
    Pages(Vec<TreeId>),
}

/// Whether restore may create an entry called `name` in a directory.
#[must_use]
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// `name` as text for messages: UTF-8 where it is, `\xNN` escapes elsewhere.
#[must_use]
pub fn escape_name(name: &[u8]) -> String {
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
    /// Encodes a tree blob.
    ///
    /// # Errors
    /// [`crate::Error::Encode`] for a tree larger than a reader accepts.
    pub fn encode(&self) -> Result<Vec<u8>> {
        encode_record(self, "tree")
    }

    /// Decodes a tree blob and checks names and order.
    ///
    /// # Errors
    /// Malformed bytes, an invalid name, or names out of order or repeated.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let tree: TreeBlob = decode_record(bytes, "tree")?;
        if let TreeBlob::Leaf(nodes) = &tree {
            check_names(nodes, None)?;
        }
        Ok(tree)
    }
}

/// Checks that every name is valid and that names strictly increase, starting after `after`.
pub(crate) fn check_names(nodes: &[Node], after: Option<&[u8]>) -> Result<(), Corruption> {
    let mut prev = after;
    for n in nodes {
        if !is_valid_name(&n.name) {
            return Err(Corruption::Invalid(format!("invalid name \"{}\"", escape_name(&n.name))));
        }
        if prev.is_some_and(|p| p >= n.name.as_slice()) {
            return Err(Corruption::Invalid(format!(
                "name \"{}\" is out of order or repeated",
                escape_name(&n.name)
            )));
        }
        prev = Some(&n.name);
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
}

const LEAF_TAG: u32 = 0;
const PAGES_TAG: u32 = 1;
const RECORD_PREFIX: usize = 12; // enum tag u32 + element count u64

impl TreeBuilder {
    /// A builder whose pages stay under `limit` bytes (unless one entry alone is larger).
    #[must_use]
    pub fn new(limit: usize) -> Self {
        TreeBuilder { page: Vec::new(), count: 0, pages: Vec::new(), limit, last_name: None }
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
        encode_record_into(node, "tree entry", &mut encoded)?;
        if self.count > 0 && RECORD_PREFIX + self.page.len() + encoded.len() > self.limit {
            self.flush_page(sink)?;
        }
        self.page.extend_from_slice(&encoded);
        self.count += 1;
        self.last_name = Some(node.name.clone());
        Ok(())
    }

    fn leaf_bytes(&mut self) -> Vec<u8> {
        // Same bytes as `encode_record(&TreeBlob::Leaf(nodes))`: the enum tag, the element
        // count, then each node's encoding (a test pins this equality).
        let mut out = Vec::with_capacity(RECORD_PREFIX + self.page.len());
        out.extend_from_slice(&LEAF_TAG.to_le_bytes());
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

    fn file(name: &[u8], n: u8) -> Node {
        Node {
            name: name.to_vec(),
            meta: Metadata { mode: 0o100_644, uid: 1, gid: 2, mtime_ns: 3, ctime_ns: 4, ino: 5 },
            content: Content::File {
                size: u64::from(n),
                chunks: ChunkRefs::Inline(vec![ChunkId(Id::hash(&[n]))]),
            },
        }
    }

    #[test]
    fn builder_bytes_equal_record_encoding() {
        let nodes = vec![file(b"a", 1), file(b"b\xff", 2), file(b"c", 3)];
        let mut sink = MemSink::default();
        let mut b = TreeBuilder::new(1 << 20);
        for n in &nodes {
            b.push(n, &mut sink).unwrap();
        }
        let id = b.finish(&mut sink).unwrap();
        let (kind, bytes) = &sink.0[&id.0];
        assert_eq!(*kind, BlobKind::Tree);
        assert_eq!(bytes, &TreeBlob::Leaf(nodes.clone()).encode().unwrap());
        assert_eq!(TreeBlob::decode(bytes).unwrap(), TreeBlob::Leaf(nodes));
    }

    #[test]
    fn equal_directories_give_equal_ids_and_large_ones_are_paged() {
        let build = |limit| {
            let mut sink = MemSink::default();
            let mut b = TreeBuilder::new(limit);
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
            let bytes = TreeBlob::Leaf(vec![file(bad, 1)]).encode().unwrap();
            let err = TreeBlob::decode(&bytes).unwrap_err();
            assert!(matches!(err, Corruption::Invalid(_)), "{bad:?}: {err:?}");
        }
        let dup = TreeBlob::Leaf(vec![file(b"a", 1), file(b"a", 2)]).encode().unwrap();
        assert!(TreeBlob::decode(&dup).is_err());
        let unordered = TreeBlob::Leaf(vec![file(b"b", 1), file(b"a", 2)]).encode().unwrap();
        assert!(TreeBlob::decode(&unordered).is_err());
    }

    #[test]
    fn truncated_trees_are_errors() {
        let bytes = TreeBlob::Leaf(vec![file(b"a", 1), file(b"b", 2)]).encode().unwrap();
        for n in 0..bytes.len() {
            assert!(TreeBlob::decode(&bytes[..n]).is_err());
        }
    }

    /// The record encoding spelled out in FORMAT.md §1 and §6, pinned byte for byte.
    #[test]
    fn node_encoding_matches_format_md() {
        let node = Node {
            name: b"a".to_vec(),
            meta: Metadata { mode: 0o100_644, uid: 1, gid: 2, mtime_ns: 3, ctime_ns: 4, ino: 5 },
            content: Content::Symlink { target: b"t".to_vec() },
        };
        let hex: String =
            encode_record(&node, "test").unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
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
        let leaf: String =
            TreeBlob::Leaf(vec![]).encode().unwrap().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(leaf, "000000000000000000000000");
        let refs = encode_record(&Some(ChunkRefs::Inline(vec![])), "test").unwrap();
        assert_eq!(refs, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn escape_name_is_lossless_for_display() {
        assert_eq!(escape_name(b"plain"), "plain");
        assert_eq!(escape_name(b"bad\xff\xfename"), "bad\\xff\\xfename");
        assert_eq!(escape_name(b"new\nline"), "new\\nline");
    }

    proptest::proptest! {
        #[test]
        fn node_round_trips(name in proptest::collection::vec(1u8..=255, 1..50), mode: u32, mtime: i64, size: u64) {
            proptest::prop_assume!(is_valid_name(&name));
            let node = Node {
                name,
                meta: Metadata { mode, mtime_ns: mtime, ..Metadata::default() },
                content: Content::File { size, chunks: ChunkRefs::Lists(vec![Id::hash(b"l")]) },
            };
            let tree = TreeBlob::Leaf(vec![node]);
            proptest::prop_assert_eq!(TreeBlob::decode(&tree.encode().unwrap()).unwrap(), tree);
        }
    }
}
