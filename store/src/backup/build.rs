//! Building the trees of a set bottom-up from the walk's events, in walk order, and the bounded
//! list of problem paths that goes into the manifest.

use super::capture::ComponentResult;
#[allow(clippy::wildcard_imports, reason = "the parts of this module share its imports")]
use super::*;

pub(super) struct DirState {
    pub(super) name: Vec<u8>,
    pub(super) meta: Metadata,
    pub(super) builder: TreeBuilder,
    /// A directory reused whole (write-once): its tree in the parent set, and the entries
    /// that replace their namesakes there (subdirectories that changed), in name order.
    pub(super) reused: Option<(TreeId, Vec<Node>)>,
}

impl DirState {
    /// Adds `node`, an entry that differs from the parent set's when this directory is
    /// reused.
    fn push(&mut self, node: Node, putter: &mut Putter<'_>) -> Result<()> {
        match &mut self.reused {
            Some((_, changed)) => {
                changed.push(node);
                Ok(())
            }
            None => self.builder.push(&node, putter),
        }
    }

    /// The directory's tree, and whether it is the parent set's unchanged.
    fn finish(self, repo: &Repository, putter: &mut Putter<'_>) -> Result<(TreeId, bool)> {
        let (tree, changed) = match self.reused {
            None => return Ok((self.builder.finish(putter)?, false)),
            Some((tree, changed)) if changed.is_empty() => return Ok((tree, true)),
            Some(reused) => reused,
        };
        // The parent's listing, merged with the entries that replace their namesakes.
        let mut builder = self.builder;
        let mut changed = changed.into_iter().peekable();
        for node in crate::vfs::dir_entries(repo, tree)? {
            let node = node?;
            while let Some(c) = changed.next_if(|c| c.name < node.name) {
                builder.push(&c, putter)?;
            }
            match changed.next_if(|c| c.name == node.name) {
                Some(c) => builder.push(&c, putter)?,
                None => builder.push(&node, putter)?,
            }
        }
        for c in changed {
            builder.push(&c, putter)?;
        }
        Ok((builder.finish(putter)?, false))
    }
}

/// At most this many problem paths are listed in a manifest; the rest are counted. A set of
/// tens of thousands of unreadable files must still commit a manifest every reader accepts.
pub const MAX_LISTED_ISSUES: usize = 10_000;

/// Bytes of paths and reasons listed in a manifest at most: 16 MiB, a quarter of what a reader
/// accepts (FORMAT.md §7).
pub(super) const MAX_ISSUE_BYTES: usize = 16 << 20;

/// The problem paths of a set, bounded by [`MAX_LISTED_ISSUES`] and [`MAX_ISSUE_BYTES`]. Each
/// component's paths beyond the bound are counted, and summed up by one last issue with an empty
/// path (every path is still reported to the progress as it is met).
#[derive(Default)]
pub(super) struct IssueList {
    pub(super) listed: Vec<PathIssue>,
    pub(super) count: usize,
    pub(super) bytes: usize,
    pub(super) omitted_skipped: u64,
    pub(super) omitted_changed: u64,
}

impl IssueList {
    fn push(&mut self, issue: PathIssue) {
        let size = issue.path.len() + issue.reason.len() + issue.component.len() + 32;
        if self.count >= MAX_LISTED_ISSUES || self.bytes + size > MAX_ISSUE_BYTES {
            match issue.kind {
                IssueKind::Skipped => self.omitted_skipped += 1,
                IssueKind::Changed | IssueKind::Incomplete => self.omitted_changed += 1,
            }
            return;
        }
        self.count += 1;
        self.bytes += size;
        self.listed.push(issue);
    }

    /// The current component's issues, with the summary of those not listed.
    fn take_component(&mut self) -> Vec<PathIssue> {
        let mut out = std::mem::take(&mut self.listed);
        let (skipped, changed) = (self.omitted_skipped, self.omitted_changed);
        if skipped + changed > 0 {
            out.push(PathIssue {
                component: out.first().map(|i| i.component.clone()).unwrap_or_default(),
                path: Vec::new(),
                kind: if skipped > 0 { IssueKind::Skipped } else { IssueKind::Changed },
                reason: format!(
                    "{} more paths not listed ({skipped} not backed up, {changed} changed while \
                     read): a set lists at most {MAX_LISTED_ISSUES}",
                    skipped + changed
                ),
            });
        }
        self.omitted_skipped = 0;
        self.omitted_changed = 0;
        out
    }
}

/// Builds trees bottom-up from the walk events, waiting for each file's outcome in order.
pub(super) fn tree_loop(
    ctx: &Ctx<'_>,
    events: &Receiver<Vec<WalkEvent>>,
    raw_tx: &Sender<RawBlob>,
    roots: &Sender<ComponentResult>,
    names: &[String],
    page_limit: usize,
) {
    let mut component = 0usize;
    let mut stack: Vec<DirState> = Vec::new();
    let mut counts = Counts::default();
    let mut issues = IssueList::default();
    let issue = |issues: &mut IssueList, component: usize, path, kind, reason| {
        let name = names.get(component).cloned().unwrap_or_default();
        let issue = PathIssue { component: name, path, kind, reason };
        ctx.progress.issue(&issue);
        issues.push(issue);
    };
    let verbose = ctx.progress.wants_files();
    let note = |component: usize, stack: &[DirState], name: &[u8], what| {
        if verbose {
            let component = names.get(component).map_or("", String::as_str);
            ctx.progress.file(component, &rel_path(stack, name), what);
        }
    };
    let mut run = || -> Result<()> {
        for event in events.iter().flatten() {
            if ctx.shared.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let mut putter = Putter::new(ctx, raw_tx, component);
            match event {
                WalkEvent::Enter { name, meta } => {
                    counts.dirs += 1;
                    stack.push(DirState {
                        name,
                        meta,
                        builder: TreeBuilder::new(page_limit, ctx.repo.version()),
                        reused: None,
                    });
                }
                WalkEvent::EnterReused { name, meta, tree, counts: own } => {
                    counts.dirs += 1;
                    counts.add(&own);
                    stack.push(DirState {
                        name,
                        meta,
                        builder: TreeBuilder::new(page_limit, ctx.repo.version()),
                        reused: Some((tree, Vec::new())),
                    });
                }
                WalkEvent::Entry { name, meta, kind } => {
                    let node = match kind {
                        EntryKind::File(rx, freshness) => {
                            match rx.recv().map_err(|_| Error::Cancelled)? {
                                FileOutcome::Done { meta, size, chunks, changed, incomplete } => {
                                    if let Some(reason) = incomplete {
                                        let path = rel_path(&stack, &name);
                                        issue(
                                            &mut issues,
                                            component,
                                            path,
                                            IssueKind::Incomplete,
                                            reason,
                                        );
                                    }
                                    counts.files += 1;
                                    counts.bytes_source += size;
                                    let what = match freshness {
                                        Freshness::New => {
                                            counts.files_new += 1;
                                            FileEvent::New
                                        }
                                        Freshness::Changed => {
                                            counts.files_changed += 1;
                                            FileEvent::Changed
                                        }
                                    };
                                    note(component, &stack, &name, what);
                                    if changed {
                                        issue(
                                            &mut issues,
                                            component,
                                            rel_path(&stack, &name),
                                            IssueKind::Changed,
                                            "changed while it was read, twice; kept as read".into(),
                                        );
                                    }
                                    Node { name, meta, content: Content::File { size, chunks } }
                                }
                                FileOutcome::Skipped { reason } => {
                                    let path = rel_path(&stack, &name);
                                    issue(&mut issues, component, path, IssueKind::Skipped, reason);
                                    continue;
                                }
                            }
                        }
                        EntryKind::Reused { size, chunks } => {
                            note(component, &stack, &name, FileEvent::Unchanged);
                            counts.files += 1;
                            counts.files_unchanged += 1;
                            counts.bytes_source += size;
                            Node { name, meta, content: Content::File { size, chunks } }
                        }
                        EntryKind::Symlink(target) => {
                            counts.symlinks += 1;
                            Node { name, meta, content: Content::Symlink { target } }
                        }
                        EntryKind::Special(rdev) => {
                            counts.specials += 1;
                            Node { name, meta, content: Content::Special { rdev } }
                        }
                    };
                    top(&mut stack)?.push(node, &mut putter)?;
                }
                WalkEvent::Leave => {
                    let mut dir = stack.pop().ok_or(Error::Cancelled)?;
                    let (name, meta) =
                        (std::mem::take(&mut dir.name), std::mem::take(&mut dir.meta));
                    let reused = dir.reused.is_some();
                    let (tree, unchanged) = dir.finish(ctx.repo, &mut putter).map_err(|e| {
                        if !reused || matches!(e, Error::Cancelled) {
                            return e;
                        }
                        let path = rel_path(&stack, &name);
                        Error::ComponentFailed {
                            component: names.get(component).cloned().unwrap_or_default(),
                            reason: format!(
                                "directory {} is reused from the parent set (write-once), whose \
                                 listing of it cannot be read ({e}); run `store check`, or \
                                 snapshot with --full",
                                crate::tree::escape_name(&path),
                            ),
                        }
                    })?;
                    if let Some(parent) = stack.last_mut() {
                        // An unchanged directory in a reused one is its parent's entry as is.
                        if !(unchanged && parent.reused.is_some()) {
                            let node = Node { name, meta, content: Content::Dir { tree } };
                            parent.push(node, &mut putter)?;
                        }
                    } else {
                        let result = ComponentResult {
                            root: tree,
                            counts: std::mem::take(&mut counts),
                            issues: issues.take_component(),
                        };
                        roots.send(result).map_err(|_| Error::Cancelled)?;
                        component += 1;
                    }
                }
                WalkEvent::Issue { path, kind, reason } => {
                    issue(&mut issues, component, path, kind, reason);
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        ctx.shared.fail(e);
    }
}

pub(super) fn top(stack: &mut [DirState]) -> Result<&mut DirState> {
    stack.last_mut().ok_or(Error::Cancelled)
}

/// Path of `name` below the component root, from the names of the open directories.
pub(super) fn rel_path(stack: &[DirState], name: &[u8]) -> Vec<u8> {
    path_below_root(stack.iter().map(|d| d.name.as_slice()), name)
}

/// `name` below the directories `dirs` (from the component's own, which is left out) joined
/// with `/`: the path below the component.
pub(super) fn path_below_root<'a>(dirs: impl Iterator<Item = &'a [u8]>, name: &[u8]) -> Vec<u8> {
    let mut path = Vec::new();
    for dir in dirs.skip(1) {
        path.extend_from_slice(dir);
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest_with(issues: Vec<PathIssue>) -> Manifest {
        Manifest {
            time_ns: 1,
            end_ns: 2,
            host: "h".into(),
            tags: vec![],
            kind: SetKind::Full,
            parent: None,
            components: vec![],
            counts: Counts::default(),
            issues,
            note: String::new(),
        }
    }

    fn issue(path: &[u8], kind: IssueKind, reason: &str) -> PathIssue {
        PathIssue { component: "c".into(), path: path.to_vec(), kind, reason: reason.into() }
    }

    // See: issue 12, defect 2 (a manifest listing 24,000 long unreadable paths was over the
    // decode limit, so the set could never be read).
    #[test]
    fn problem_paths_beyond_the_bound_are_counted_not_listed() {
        let mut list = IssueList::default();
        for i in 0..MAX_LISTED_ISSUES + 30 {
            let kind = if i % 3 == 0 { IssueKind::Changed } else { IssueKind::Skipped };
            list.push(issue(format!("p{i}").as_bytes(), kind, "cannot open"));
        }
        let out = list.take_component();
        assert_eq!(out.len(), MAX_LISTED_ISSUES + 1);
        let summary = out.last().unwrap();
        assert!(summary.path.is_empty());
        assert!(summary.reason.starts_with("30 more paths not listed"), "{}", summary.reason);
        // The next component starts its own count of omitted paths; the bound is per set.
        list.push(issue(b"late", IssueKind::Skipped, "x"));
        let next = list.take_component();
        assert_eq!(next.len(), 1);
        assert!(next[0].path.is_empty() && next[0].reason.starts_with("1 more"));
    }

    #[test]
    fn long_problem_paths_are_bounded_by_bytes_and_the_manifest_stays_readable() {
        let mut list = IssueList::default();
        let long = vec![b'n'; 4000];
        for _ in 0..9000 {
            list.push(issue(&long, IssueKind::Skipped, "Permission denied (os error 13)"));
        }
        let issues = list.take_component();
        let listed_bytes: usize = issues.iter().map(|i| i.path.len()).sum();
        assert!(listed_bytes <= MAX_ISSUE_BYTES, "{listed_bytes}");
        assert!(issues.len() < 9000);
        let m = manifest_with(issues);
        let bytes = m.encode(crate::FORMAT_VERSION).unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn a_manifest_a_reader_would_refuse_is_never_encoded() {
        let huge = PathIssue {
            component: "c".into(),
            path: vec![b'x'; crate::format::MAX_RECORD_LEN],
            kind: IssueKind::Skipped,
            reason: String::new(),
        };
        let m = manifest_with(vec![huge]);
        let err = m.encode(crate::FORMAT_VERSION).unwrap_err();
        assert!(matches!(err, Error::Encode { what: "manifest", .. }), "{err}");
    }
}
