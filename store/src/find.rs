//! `find`: which sets hold paths that match a pattern, newest set first: the question asked when
//! a document went missing ("when did `content/2026/11/21/.../x.bin` last exist?").
//!
//! Every set is walked from its components down, in name order. Most directories are the same
//! tree in set after set (unchanged directories encode to the same id), so a directory found to
//! hold no match is remembered by its tree id and path and not read again in older sets. That
//! memory is bounded ([`BARREN_MAX`]); past it, it starts over, which only costs reads.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::{SnapshotId, TreeId};
use crate::pattern::Patterns;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{Content, Node};
use crate::vfs::{component_node, dir_entries, RepoDir};

/// Directories remembered as holding no match, at most (about 40 bytes each).
const BARREN_MAX: usize = 4 << 20;

/// One entry of a set whose path matches.
pub struct Found<'a> {
    /// The set.
    pub set: SnapshotId,
    /// Its manifest.
    pub manifest: &'a Manifest,
    /// The entry's path: the component's name, then the path below it.
    pub path: &'a [u8],
    /// The entry.
    pub node: &'a Node,
}

/// A directory of a set that could not be read; the search went on without it.
#[derive(Debug, Clone)]
pub struct Unread {
    /// The set.
    pub set: SnapshotId,
    /// The directory, as `component/path`.
    pub path: String,
    /// Why.
    pub error: String,
}

/// What a search did.
#[derive(Debug, Clone, Default)]
pub struct FindReport {
    /// Sets searched.
    pub sets: u64,
    /// Entries that matched.
    pub matches: u64,
    /// Directories read (a directory skipped as known to hold no match is not counted).
    pub dirs_read: u64,
    /// Directories that could not be read.
    pub unread: Vec<Unread>,
    /// Patterns that matched nothing.
    pub unmatched: Vec<String>,
}

/// Calls `found` for every entry of `sets` whose path matches one of `patterns` (the patterns
/// of `restore --include`: with a `/` they match the path from the component's name, without
/// one an entry's name at any depth). Sets are searched newest first, entries in name order.
///
/// # Errors
/// An invalid pattern, or the first error of `found`; a directory that cannot be read is
/// reported in [`FindReport::unread`] and the search goes on.
pub fn find(
    repo: &Repository,
    sets: &[(SnapshotId, Manifest)],
    patterns: &[String],
    found: &mut dyn FnMut(&Found<'_>) -> Result<()>,
) -> Result<FindReport> {
    let patterns = Patterns::new(patterns, "pattern")?;
    let mut order: Vec<&(SnapshotId, Manifest)> = sets.iter().collect();
    order.sort_by_key(|(id, m)| std::cmp::Reverse((m.time_ns, *id)));
    let mut report = FindReport::default();
    let mut barren: HashSet<(TreeId, u64)> = HashSet::new();
    for (id, manifest) in order {
        report.sets += 1;
        let mut search = Search { repo, set: *id, manifest, patterns: &patterns, found };
        for c in &manifest.components {
            match component_node(repo, c) {
                Ok(node) => search.walk(&node, &mut barren, &mut report)?,
                Err(e) => report.unread.push(Unread {
                    set: *id,
                    path: c.name.clone(),
                    error: e.to_string(),
                }),
            }
        }
    }
    report.unmatched = patterns.unmatched();
    Ok(report)
}

struct Search<'s, 'f> {
    repo: &'s Repository,
    set: SnapshotId,
    manifest: &'s Manifest,
    patterns: &'s Patterns,
    found: &'f mut dyn FnMut(&Found<'_>) -> Result<()>,
}

/// A directory being listed: its entries, where its path ends, its tree, and the matches
/// counted before it was entered.
struct Frame<'r> {
    entries: RepoDir<'r>,
    len: usize,
    key: (TreeId, u64),
    matches_before: u64,
}

/// The key a directory is remembered by: its tree and (a hash of) its path, as a path pattern's
/// match depends on where the tree is.
fn barren_key(tree: TreeId, path: &[u8]) -> (TreeId, u64) {
    let h = blake3::hash(path);
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    (tree, u64::from_le_bytes(b))
}

impl<'s> Search<'s, '_> {
    fn visit(&mut self, path: &[u8], node: &Node, report: &mut FindReport) -> Result<()> {
        if self.patterns.matches(path, &node.name) {
            report.matches += 1;
            (self.found)(&Found { set: self.set, manifest: self.manifest, path, node })?;
        }
        Ok(())
    }

    /// Walks a component (its node named by the component) and everything below it.
    fn walk(
        &mut self,
        root: &Node,
        barren: &mut HashSet<(TreeId, u64)>,
        report: &mut FindReport,
    ) -> Result<()> {
        let mut path = root.name.clone();
        self.visit(&path, root, report)?;
        let Content::Dir { tree } = root.content else { return Ok(()) };
        let mut stack: Vec<Frame<'s>> = Vec::new();
        self.enter(tree, &path, barren, report, &mut stack);
        while let Some(frame) = stack.last_mut() {
            let len = frame.len;
            let Some(next) = frame.entries.next() else {
                if let Some(done) = stack.pop() {
                    if report.matches == done.matches_before {
                        if barren.len() >= BARREN_MAX {
                            barren.clear();
                        }
                        barren.insert(done.key);
                    }
                }
                continue;
            };
            path.truncate(len);
            let node = match next {
                Ok(node) => node,
                Err(e) => {
                    // The rest of this listing is lost (a damaged page): say so, go on.
                    report.unread.push(Unread {
                        set: self.set,
                        path: crate::tree::escape_name(&path),
                        error: e.to_string(),
                    });
                    stack.pop();
                    continue;
                }
            };
            path.push(b'/');
            path.extend_from_slice(&node.name);
            self.visit(&path, &node, report)?;
            if let Content::Dir { tree } = node.content {
                self.enter(tree, &path, barren, report, &mut stack);
            }
        }
        Ok(())
    }

    /// Starts listing directory `tree` at `path`, unless it is known to hold no match.
    fn enter(
        &self,
        tree: TreeId,
        path: &[u8],
        barren: &HashSet<(TreeId, u64)>,
        report: &mut FindReport,
        stack: &mut Vec<Frame<'s>>,
    ) {
        let key = barren_key(tree, path);
        if barren.contains(&key) {
            return;
        }
        match dir_entries(self.repo, tree) {
            Ok(entries) => {
                report.dirs_read += 1;
                stack.push(Frame { entries, len: path.len(), key, matches_before: report.matches });
            }
            Err(e) => report.unread.push(Unread {
                set: self.set,
                path: crate::tree::escape_name(path),
                error: e.to_string(),
            }),
        }
    }
}
