//! Read-only navigation of a snapshot: its components as top-level entries, directories
//! listed lazily from trees. Used by `ls` (and later by `mount`).

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::{Component, ComponentKind, Manifest};
use crate::tree::{Content, DirEntries, Node, TreeBlob};
use crate::TreeId;

/// The top-level entry of a component: its directory, or its single file.
///
/// # Errors
/// A damaged or missing root tree.
pub fn component_node(repo: &Repository, c: &Component) -> Result<Node> {
    match c.kind {
        ComponentKind::Dir => Ok(Node {
            name: c.name.as_bytes().to_vec(),
            meta: c.meta,
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
