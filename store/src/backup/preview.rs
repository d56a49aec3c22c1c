//! `snapshot --dry-run`: what a snapshot would read, reuse and leave out, found by the same walk
//! against the same parent set, without reading a file or writing anything (no lock, no pack, no
//! index, no adopted pack). Command and standard-input components are not run.

#[allow(clippy::wildcard_imports, reason = "the parts of this module share its imports")]
use super::*;

/// What a snapshot with the same options would do now.
#[derive(Debug, Clone, Default)]
pub struct PreviewReport {
    /// The set it would build on (none: a full set).
    pub parent: Option<SnapshotId>,
    /// Per component, in capture order.
    pub components: Vec<ComponentPreview>,
    /// Exclude patterns that matched nothing.
    pub unmatched_excludes: Vec<String>,
    /// The repository's own directory or cache below a source (`component/path`): left out.
    pub left_out: Vec<String>,
    /// Files of write-once components changed in place (see
    /// [`SnapshotReport::changed_in_place`]).
    pub changed_in_place: (u64, Vec<String>),
    /// Directories of write-once components that would be reused whole, without being listed.
    pub dirs_reused: u64,
}

/// What a snapshot would do with one component.
#[derive(Debug, Clone, Default)]
pub struct ComponentPreview {
    /// The component's name.
    pub name: String,
    /// Directory, file, standard input or command (the last two are not run).
    pub kind: Option<ComponentKind>,
    /// Files not in the parent set: read.
    pub files_new: u64,
    /// Files in the parent set that are not provably unchanged: read again.
    pub files_changed: u64,
    /// Files unchanged since the parent set: reused, not read.
    pub files_unchanged: u64,
    /// Bytes of the new and changed files (what would be read).
    pub bytes_to_read: u64,
    /// Bytes of the unchanged files.
    pub bytes_unchanged: u64,
    /// Directories, the component's own included.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// FIFOs, sockets and devices.
    pub specials: u64,
    /// Paths an exclude pattern leaves out (a directory once, with all below it).
    pub excluded: u64,
    /// Paths that could not be listed or looked at (each reported to the progress).
    pub skipped: u64,
}

/// Walks the sources of `opts` against the set a snapshot would build on and reports what it
/// would read, reuse and leave out. Writes nothing; every file and path met is reported to
/// `progress` as a snapshot reports it (`file` when it wants files, `issue`).
///
/// # Errors
/// As [`snapshot`] for bad options and missing sources; repository read errors.
pub fn preview(
    repo: &Repository,
    opts: &SnapshotOptions,
    progress: &dyn Progress,
) -> Result<PreviewReport> {
    let (excludes, append_only) = check_options(repo, opts)?;
    let parent = resolve_parent(repo, opts)?;
    let ctx = Ctx::new(repo, opts, append_only, progress)?;
    let mut components = Vec::new();
    for (i, src) in opts.sources.iter().enumerate() {
        let SourceKind::Path(path) = &src.kind else {
            let kind = match src.kind {
                SourceKind::Stdin => ComponentKind::Stdin,
                _ => ComponentKind::Command,
            };
            components.push(ComponentPreview {
                name: src.name.clone(),
                kind: Some(kind),
                ..ComponentPreview::default()
            });
            continue;
        };
        if progress.interrupted() {
            return Err(Error::Interrupted);
        }
        progress.phase(&src.name);
        let parent_component =
            parent.as_ref().and_then(|(_, m)| m.components.iter().find(|c| c.name == src.name));
        let wo = write_once(&ctx, opts, src, parent.as_ref(), false)?;
        let parent = (parent_component, wo.as_ref());
        components.push(preview_path(&ctx, src, path, i, &excludes, parent)?);
    }
    Ok(PreviewReport {
        parent: parent.map(|(id, _)| id),
        components,
        unmatched_excludes: unmatched(&excludes, &ctx.shared),
        left_out: ctx.bounds.left_out.lock().map(|l| l.clone()).unwrap_or_default(),
        changed_in_place: changed_in_place(&ctx.shared),
        dirs_reused: ctx.shared.dirs_reused.load(Ordering::Relaxed),
    })
}

/// Walks one directory or file component: the walker runs here, a second thread counts its
/// events, a third takes the file jobs (each one a file that would be read) and sums their
/// sizes.
fn preview_path(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    path: &Path,
    index: usize,
    excludes: &Patterns,
    parent: (Option<&Component>, Option<&WriteOnce>),
) -> Result<ComponentPreview> {
    let (job_tx, job_rx) = bounded::<FileJob>(64);
    let (event_tx, event_rx) = bounded::<Vec<WalkEvent>>(4);
    let (raw_tx, _raw_rx) = bounded::<RawBlob>(1);
    let (_root_tx, root_rx) = bounded::<ComponentResult>(1);
    let events = EventBatcher::new(event_tx);
    ctx.shared.excluded.store(0, Ordering::Relaxed);
    let (walked, counted, to_read) = std::thread::scope(|s| {
        let counter = s.spawn(|| count_events(ctx, &src.name, &event_rx));
        let sizer = s.spawn(|| job_rx.iter().map(|job| job.size).sum::<u64>());
        let sinks = CaptureSinks { events: &events, jobs: &job_tx, raw: &raw_tx, roots: &root_rx };
        let walked = super::capture::capture_path(ctx, src, path, index, excludes, parent, &sinks)
            .map(|(kind, _)| kind)
            .and_then(|kind| if events.flush() { Ok(kind) } else { Err(Error::Cancelled) });
        drop((events, job_tx));
        (walked, counter.join(), sizer.join())
    });
    let kind = walked?;
    let mut counted = counted.map_err(|_| Error::WorkerPanicked)?;
    counted.bytes_to_read = to_read.map_err(|_| Error::WorkerPanicked)?;
    counted.kind = Some(kind);
    counted.excluded = ctx.shared.excluded.load(Ordering::Relaxed);
    Ok(counted)
}

/// Counts the walk's events of component `name`, and names each file to the progress.
fn count_events(ctx: &Ctx<'_>, name: &str, events: &Receiver<Vec<WalkEvent>>) -> ComponentPreview {
    let verbose = ctx.progress.wants_files();
    let mut c = ComponentPreview { name: name.to_owned(), ..ComponentPreview::default() };
    // Directory names from the component down; the first is the component's own.
    let mut stack: Vec<Vec<u8>> = Vec::new();
    for event in events.iter().flatten() {
        match event {
            WalkEvent::Enter { name, .. } => {
                c.dirs += 1;
                stack.push(name);
            }
            WalkEvent::EnterReused { name, counts, .. } => {
                c.dirs += 1;
                c.files_unchanged += counts.files;
                c.bytes_unchanged += counts.bytes_source;
                c.symlinks += counts.symlinks;
                c.specials += counts.specials;
                stack.push(name);
            }
            WalkEvent::Leave => {
                stack.pop();
            }
            WalkEvent::Entry { name: leaf, kind, .. } => {
                let what = match kind {
                    EntryKind::File(_, Freshness::New) => {
                        c.files_new += 1;
                        FileEvent::New
                    }
                    EntryKind::File(_, Freshness::Changed) => {
                        c.files_changed += 1;
                        FileEvent::Changed
                    }
                    EntryKind::Reused { size, .. } => {
                        c.files_unchanged += 1;
                        c.bytes_unchanged += size;
                        FileEvent::Unchanged
                    }
                    EntryKind::Symlink(_) => {
                        c.symlinks += 1;
                        continue;
                    }
                    EntryKind::Special(_) => {
                        c.specials += 1;
                        continue;
                    }
                };
                if verbose {
                    let path =
                        super::build::path_below_root(stack.iter().map(Vec::as_slice), &leaf);
                    ctx.progress.file(name, &path, what);
                }
            }
            WalkEvent::Issue { path, kind, reason } => {
                if kind == IssueKind::Skipped {
                    c.skipped += 1;
                }
                ctx.progress.issue(&PathIssue { component: name.to_owned(), path, kind, reason });
            }
        }
    }
    c
}
