//! Read-only navigation of what a set references, the one place every reader goes through:
//! its components as top-level entries ([`component_node`]), directories listed lazily, page by
//! page ([`dir_entries`], [`walk`], [`find`]), a file's chunk ids expanded from chunk-list blobs
//! ([`for_each_chunk`]), and every blob a set references ([`walk_blobs`], for prune and stats).
//! Used by restore, check, mount, repair, diff, ls, prune, stats and the snapshot's parent walk.

use std::io::Write;

use crate::error::{Error, IoContext, ObjectRef, Result};
use crate::id::{ChunkId, Id, SnapshotId};
use crate::pack::{BlobKind, BLOB_HEADER_LEN};
use crate::repo::Repository;
use crate::snapshot::{Component, ComponentKind, Manifest};
use crate::tree::{decode_chunk_list, escape_name, ChunkRefs, Content, DirEntries, Node, TreeBlob};
use crate::TreeId;

/// The top-level entry of a component: its directory, or its single file.
///
/// # Errors
/// A damaged or missing root tree.
pub fn component_node(repo: &Repository, c: &Component) -> Result<Node> {
    match c.kind {
        ComponentKind::Dir => Ok(Node {
            name: c.name.as_bytes().to_vec(),
            meta: c.meta.clone(),
            content: Content::Dir { tree: c.root },
        }),
        ComponentKind::File | ComponentKind::Stdin | ComponentKind::Command => {
            let mut entries = dir_entries(repo, c.root)?;
            match entries.next() {
                Some(node) => node,
                None => Err(Error::corrupt(
                    crate::error::ObjectRef::Tree(c.root),
                    crate::error::Corruption::Invalid("file component has no entry".into()),
                )),
            }
        }
    }
}

/// The entries of a directory of a snapshot, loaded page by page from the repository.
pub type RepoDir<'a> = DirEntries<Box<dyn FnMut(TreeId) -> Result<TreeBlob> + 'a>>;

/// The entries of directory `tree`, loaded page by page.
///
/// # Errors
/// A damaged or missing tree.
pub fn dir_entries(repo: &Repository, tree: TreeId) -> Result<RepoDir<'_>> {
    DirEntries::open(Box::new(move |id| repo.load_tree(id)), tree)
}

/// Finds the entry at `path` (`component/dir/file`, raw bytes) in a snapshot.
///
/// # Errors
/// [`Error::PathNotFound`], or a damaged tree on the way.
pub fn find(repo: &Repository, id: SnapshotId, manifest: &Manifest, path: &[u8]) -> Result<Node> {
    let not_found = || Error::PathNotFound { path: crate::tree::escape_name(path), snapshot: id };
    let mut parts = path.split(|&b| b == b'/').filter(|p| !p.is_empty());
    let first = parts.next().ok_or_else(not_found)?;
    let component =
        manifest.components.iter().find(|c| c.name.as_bytes() == first).ok_or_else(not_found)?;
    let mut node = component_node(repo, component)?;
    for part in parts {
        let Content::Dir { tree } = node.content else { return Err(not_found()) };
        let mut found = None;
        for entry in dir_entries(repo, tree)? {
            let entry = entry?;
            if entry.name.as_slice() == part {
                found = Some(entry);
                break;
            }
        }
        node = found.ok_or_else(not_found)?;
    }
    Ok(node)
}

/// Calls `f` with the path and node of `root` (named `prefix`) and of everything below it, depth
/// first in name order. Memory: one page iterator per level of the current path.
///
/// # Errors
/// The first error from a tree or from `f`.
pub fn walk(
    repo: &Repository,
    prefix: &[u8],
    root: &Node,
    f: &mut dyn FnMut(&[u8], &Node) -> Result<()>,
) -> Result<()> {
    f(prefix, root)?;
    let Content::Dir { tree } = root.content else { return Ok(()) };
    let mut path = prefix.to_vec();
    let mut stack = vec![(dir_entries(repo, tree)?, path.len())];
    while let Some((entries, len)) = stack.last_mut() {
        let len = *len;
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let node = node?;
        path.truncate(len);
        path.push(b'/');
        path.extend_from_slice(&node.name);
        f(&path, &node)?;
        if let Content::Dir { tree } = node.content {
            stack.push((dir_entries(repo, tree)?, path.len()));
        }
    }
    Ok(())
}

/// A file's chunk ids as they are stored: inline in its node, or in one chunk-list blob.
pub(crate) enum ChunkBatch<'a> {
    /// Ids kept in the node itself.
    Inline(&'a [ChunkId]),
    /// The id of a chunk-list blob holding the next ids (read with [`load_chunk_list`]).
    List(Id),
}

/// The batches of a file's chunk ids, in order.
pub(crate) fn chunk_batches(refs: &ChunkRefs) -> Vec<ChunkBatch<'_>> {
    match refs {
        ChunkRefs::Inline(ids) => vec![ChunkBatch::Inline(ids)],
        ChunkRefs::Lists(lists) => lists.iter().map(|l| ChunkBatch::List(*l)).collect(),
    }
}

/// Reads chunk-list blob `list` and decodes its ids (verified; damage names the list).
///
/// # Errors
/// A missing or damaged chunk-list blob.
pub(crate) fn load_chunk_list(repo: &Repository, list: Id) -> Result<Vec<ChunkId>> {
    let bytes = repo.read_blob(list, BlobKind::ChunkList)?;
    decode_chunk_list(&bytes).map_err(|reason| Error::corrupt(ObjectRef::ChunkList(list), reason))
}

/// Calls `f` with each chunk id of a file, in order, loading chunk-list blobs as needed.
///
/// # Errors
/// A damaged or missing chunk-list blob, or the first error of `f`.
pub fn for_each_chunk(
    repo: &Repository,
    refs: &ChunkRefs,
    mut f: impl FnMut(Id) -> Result<()>,
) -> Result<()> {
    for batch in chunk_batches(refs) {
        match batch {
            ChunkBatch::Inline(ids) => ids.iter().try_for_each(|c| f(c.0))?,
            ChunkBatch::List(list) => {
                load_chunk_list(repo, list)?.iter().try_for_each(|c| f(c.0))?;
            }
        }
    }
    Ok(())
}

/// Stored (header included) and raw bytes of a blob, 0 when it is not indexed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BlobSize {
    pub(crate) stored: u64,
    pub(crate) raw: u64,
}

/// Calls `visit` with every blob reachable from set `m`'s trees (trees, tree pages, chunk lists,
/// chunks) and its size; a tree, page or chunk list is descended into only when `visit` returns
/// true for it (it was not met before). A tree or chunk list that cannot be read stops the walk:
/// what it references is unknown.
///
/// # Errors
/// [`Error::InvalidOption`] naming set `id` when it cannot be read completely; what `visit`
/// returns.
pub(crate) fn walk_blobs(
    repo: &Repository,
    id: SnapshotId,
    m: &Manifest,
    visit: &mut dyn FnMut(Id, BlobSize) -> Result<bool>,
) -> Result<()> {
    let damaged = |e: Error| Error::InvalidOption {
        option: "set",
        reason: format!(
            "set {id} cannot be read completely ({e}); run `store check` and the repair it names \
             first"
        ),
    };
    let index = repo.index()?;
    let stored = |blob: Id| -> Result<BlobSize> {
        Ok(index.get(&blob)?.map_or(BlobSize::default(), |l| BlobSize {
            stored: BLOB_HEADER_LEN as u64 + u64::from(l.entry.stored_len),
            raw: u64::from(l.entry.raw_len),
        }))
    };
    // Trees are walked blob by blob (not through `dir_entries`), as the pages of a paged
    // directory are blobs to visit too.
    let mut stack: Vec<TreeId> = m.components.iter().map(|c| c.root).collect();
    while let Some(tree) = stack.pop() {
        if !visit(tree.0, stored(tree.0)?)? {
            continue;
        }
        let nodes = match repo.load_tree(tree).map_err(damaged)? {
            TreeBlob::Pages(pages) => {
                stack.extend(pages);
                continue;
            }
            TreeBlob::Leaf(nodes) => nodes,
        };
        for node in nodes {
            match &node.content {
                Content::Dir { tree } => stack.push(*tree),
                Content::File { chunks, .. } => {
                    for batch in chunk_batches(chunks) {
                        match batch {
                            ChunkBatch::Inline(ids) => {
                                for c in ids {
                                    visit(c.0, stored(c.0)?)?;
                                }
                            }
                            ChunkBatch::List(list) => {
                                if visit(list, stored(list)?)? {
                                    for c in load_chunk_list(repo, list).map_err(damaged)? {
                                        visit(c.0, stored(c.0)?)?;
                                    }
                                }
                            }
                        }
                    }
                }
                Content::Symlink { .. } | Content::Special { .. } => {}
            }
        }
    }
    Ok(())
}

/// Writes the content of file `node` to `out`, every chunk verified against its id; returns the
/// bytes written. (`store cat`.)
///
/// # Errors
/// [`Error::InvalidOption`] when `node` is not a regular file; damaged or missing data; write
/// errors on `out` (named `out_name`).
pub fn write_file_to(
    repo: &Repository,
    node: &Node,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<u64> {
    let Content::File { size, chunks } = &node.content else {
        return Err(Error::InvalidOption {
            option: "path",
            reason: format!("{} is not a regular file", escape_name(&node.name)),
        });
    };
    let (mut frame, mut raw) = (Vec::new(), Vec::new());
    let mut written = 0u64;
    for_each_chunk(repo, chunks, |id| {
        repo.read_blob_into(id, BlobKind::Data, &mut frame, &mut raw)?;
        out.write_all(&raw).at(out_name)?;
        written += raw.len() as u64;
        Ok(())
    })?;
    out.flush().at(out_name)?;
    if written != *size {
        return Err(Error::SizeMismatch {
            path: escape_name(&node.name),
            recorded: *size,
            found: written,
        });
    }
    Ok(written)
}
