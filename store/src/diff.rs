//! Comparing two sets: which paths were added, removed, or modified (content, or metadata
//! only), per component.
//!
//! Trees are walked side by side in name order; a directory whose tree id is the same in both
//! sets is skipped without being read, so the cost follows the size of the change, not of the
//! sets. Memory: one page iterator per side per level of the current path.

use crate::error::Result;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{Content, Node};
use crate::vfs::{component_node, dir_entries, walk, RepoDir};

/// How a path differs between the two sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Only in the second set.
    Added,
    /// Only in the first set.
    Removed,
    /// In both, with different content (file data, link target, or entry type).
    Modified,
    /// In both, same content, different mode, owner or modification time.
    MetadataOnly,
}

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Path, starting with the component name.
    pub path: Vec<u8>,
    /// How it differs.
    pub kind: ChangeKind,
    /// The entry in the first set.
    pub old: Option<Node>,
    /// The entry in the second set.
    pub new: Option<Node>,
}

/// Totals of a comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    /// Paths added.
    pub added: u64,
    /// Paths removed.
    pub removed: u64,
    /// Paths whose content differs.
    pub modified: u64,
    /// Paths whose metadata only differs.
    pub metadata_only: u64,
    /// File bytes only the second set has: added files, and the new size of modified ones.
    pub bytes_added: u64,
    /// File bytes only the first set has: removed files, and the old size of modified ones.
    pub bytes_removed: u64,
}

fn same_content(a: &Node, b: &Node) -> bool {
    match (&a.content, &b.content) {
        (Content::File { size: sa, chunks: ca }, Content::File { size: sb, chunks: cb }) => {
            sa == sb && ca == cb
        }
        (Content::Symlink { target: ta }, Content::Symlink { target: tb }) => ta == tb,
        (Content::Special { rdev: ra }, Content::Special { rdev: rb }) => {
            ra == rb && (a.meta.mode & 0o170_000) == (b.meta.mode & 0o170_000)
        }
        (Content::Dir { .. }, Content::Dir { .. }) => true,
        _ => false,
    }
}

fn same_meta(a: &Node, b: &Node) -> bool {
    let (x, y) = (&a.meta, &b.meta);
    x.mode == y.mode
        && x.uid == y.uid
        && x.gid == y.gid
        && x.mtime == y.mtime
        && x.xattrs == y.xattrs
}

struct Differ<'r, 'f> {
    repo: &'r Repository,
    stats: DiffStats,
    emit: &'f mut dyn FnMut(&Change) -> Result<()>,
}

impl Differ<'_, '_> {
    fn report(
        &mut self,
        path: &[u8],
        kind: ChangeKind,
        old: Option<&Node>,
        new: Option<&Node>,
    ) -> Result<()> {
        let size = |n: Option<&Node>| n.map_or(0, Node::size);
        match kind {
            ChangeKind::Added => {
                self.stats.added += 1;
                self.stats.bytes_added += size(new);
            }
            ChangeKind::Removed => {
                self.stats.removed += 1;
                self.stats.bytes_removed += size(old);
            }
            ChangeKind::Modified => {
                self.stats.modified += 1;
                self.stats.bytes_added += size(new);
                self.stats.bytes_removed += size(old);
            }
            ChangeKind::MetadataOnly => self.stats.metadata_only += 1,
        }
        let change = Change { path: path.to_vec(), kind, old: old.cloned(), new: new.cloned() };
        (self.emit)(&change)
    }

    /// Reports `node` at `path` and everything below it as added or removed.
    fn whole(&mut self, path: &[u8], node: &Node, kind: ChangeKind) -> Result<()> {
        let repo = self.repo;
        walk(repo, path, node, &mut |p, n| match kind {
            ChangeKind::Added => self.report(p, kind, None, Some(n)),
            _ => self.report(p, kind, Some(n), None),
        })
    }

    /// Compares two entries at the same path; directories are compared below, iteratively.
    fn compare(&mut self, path: &[u8], a: &Node, b: &Node) -> Result<()> {
        let mut stack: Vec<Frame<'_>> = Vec::new();
        self.step(path, a, b, &mut stack)?;
        while let Some(frame) = stack.last_mut() {
            let next = frame.next_pair()?;
            let Some((old, new)) = next else {
                stack.pop();
                continue;
            };
            let mut child = frame.path.clone();
            child.push(b'/');
            child.extend_from_slice(
                &old.as_ref().or(new.as_ref()).map(|n| n.name.clone()).unwrap_or_default(),
            );
            match (old, new) {
                (Some(o), Some(n)) => self.step(&child, &o, &n, &mut stack)?,
                (Some(o), None) => self.whole(&child, &o, ChangeKind::Removed)?,
                (None, Some(n)) => self.whole(&child, &n, ChangeKind::Added)?,
                (None, None) => {}
            }
        }
        Ok(())
    }

    fn step<'r>(
        &mut self,
        path: &[u8],
        a: &Node,
        b: &Node,
        stack: &mut Vec<Frame<'r>>,
    ) -> Result<()>
    where
        Self: 'r,
    {
        match (&a.content, &b.content) {
            (Content::Dir { tree: ta }, Content::Dir { tree: tb }) => {
                if ta != tb {
                    stack.push(Frame {
                        path: path.to_vec(),
                        old: dir_entries(self.repo, *ta)?,
                        new: dir_entries(self.repo, *tb)?,
                        old_peek: None,
                        new_peek: None,
                    });
                }
                Ok(())
            }
            (Content::Dir { .. }, _) | (_, Content::Dir { .. }) => {
                self.whole(path, a, ChangeKind::Removed)?;
                self.whole(path, b, ChangeKind::Added)
            }
            _ if !same_content(a, b) => self.report(path, ChangeKind::Modified, Some(a), Some(b)),
            _ if !same_meta(a, b) => self.report(path, ChangeKind::MetadataOnly, Some(a), Some(b)),
            _ => Ok(()),
        }
    }
}

/// Two listings of the same directory, merged by name.
struct Frame<'r> {
    path: Vec<u8>,
    old: RepoDir<'r>,
    new: RepoDir<'r>,
    old_peek: Option<Node>,
    new_peek: Option<Node>,
}

impl Frame<'_> {
    fn next_pair(&mut self) -> Result<Option<(Option<Node>, Option<Node>)>> {
        if self.old_peek.is_none() {
            self.old_peek = self.old.next().transpose()?;
        }
        if self.new_peek.is_none() {
            self.new_peek = self.new.next().transpose()?;
        }
        let pair = match (&self.old_peek, &self.new_peek) {
            (None, None) => return Ok(None),
            (Some(_), None) => (self.old_peek.take(), None),
            (None, Some(_)) => (None, self.new_peek.take()),
            (Some(o), Some(n)) => match o.name.cmp(&n.name) {
                std::cmp::Ordering::Less => (self.old_peek.take(), None),
                std::cmp::Ordering::Greater => (None, self.new_peek.take()),
                std::cmp::Ordering::Equal => (self.old_peek.take(), self.new_peek.take()),
            },
        };
        Ok(Some(pair))
    }
}

/// Compares set `a` (older) with set `b`, calling `emit` for each difference in path order
/// within each component; components are compared by name.
///
/// # Errors
/// A damaged or missing tree, or the first error from `emit`.
pub fn diff(
    repo: &Repository,
    a: &Manifest,
    b: &Manifest,
    emit: &mut dyn FnMut(&Change) -> Result<()>,
) -> Result<DiffStats> {
    let mut d = Differ { repo, stats: DiffStats::default(), emit };
    for cb in &b.components {
        let nb = component_node(repo, cb)?;
        match a.components.iter().find(|ca| ca.name == cb.name) {
            Some(ca) => {
                let na = component_node(repo, ca)?;
                d.compare(cb.name.as_bytes(), &na, &nb)?;
            }
            None => d.whole(cb.name.as_bytes(), &nb, ChangeKind::Added)?,
        }
    }
    for ca in a.components.iter().filter(|ca| !b.components.iter().any(|cb| cb.name == ca.name)) {
        let na = component_node(repo, ca)?;
        d.whole(ca.name.as_bytes(), &na, ChangeKind::Removed)?;
    }
    Ok(d.stats)
}
