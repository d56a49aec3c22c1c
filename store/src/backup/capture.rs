//! Capturing the components of a set, in the order given: a directory or file (walked against
//! the parent set), standard input, or a command's output streamed in; each component is complete
//! (every file read, its root tree built) before the next one starts.

use super::read::{chunk_into, KeptChunks, ReadError};
#[allow(clippy::wildcard_imports, reason = "the parts of this module share its imports")]
use super::*;

/// What the tree builder reports for a finished component.
pub(super) struct ComponentResult {
    pub(super) root: TreeId,
    pub(super) counts: Counts,
    pub(super) issues: Vec<PathIssue>,
}

/// The channels the capturing thread feeds.
pub(super) struct CaptureSinks<'a> {
    pub(super) events: &'a EventBatcher,
    pub(super) jobs: &'a Sender<FileJob>,
    pub(super) raw: &'a Sender<RawBlob>,
    pub(super) roots: &'a Receiver<ComponentResult>,
}

pub(super) type Captured = (Vec<Component>, Vec<PathIssue>);

/// Captures the components in order; each is complete (every file read) before the next
/// starts, which is the order the operator asked for.
pub(super) fn capture(
    ctx: &Ctx<'_>,
    opts: &SnapshotOptions,
    excludes: &Patterns,
    parent: Option<&(SnapshotId, Manifest)>,
    sinks: &CaptureSinks<'_>,
) -> Result<Captured> {
    let mut components = Vec::new();
    let mut issues = Vec::new();
    for (i, src) in opts.sources.iter().enumerate() {
        // Each component has its own totals: unknown (0) until the scan counted them, and for a
        // stream (stdin, a command) until it ends.
        ctx.progress.phase(&src.name);
        ctx.progress.set_total(0, 0);
        ctx.current.store(i, Ordering::SeqCst);
        if let Some(&(files, bytes)) = ctx.totals.get(i).and_then(|t| t.get()) {
            ctx.progress.set_total(files, bytes);
        }
        let start_ns = now_ns();
        let parent_component =
            parent.and_then(|(_, m)| m.components.iter().find(|c| c.name == src.name));
        let (kind, meta) = match &src.kind {
            SourceKind::Path(path) => {
                let wo = write_once(ctx, opts, src, parent, true)?;
                let parent = (parent_component, wo.as_ref());
                capture_path(ctx, src, path, i, excludes, parent, sinks)?
            }
            SourceKind::Stdin => {
                let stdin = std::io::stdin();
                let meta = capture_stream(ctx, src, i, &mut stdin.lock(), sinks)?;
                (ComponentKind::Stdin, meta)
            }
            SourceKind::Command(cmd) => {
                (ComponentKind::Command, capture_command(ctx, src, i, cmd, sinks)?)
            }
        };
        // The tree builder finishes the component from the events it has: hand over the rest.
        if !sinks.events.flush() {
            return Err(Error::Cancelled);
        }
        let result = sinks.roots.recv().map_err(|_| Error::Cancelled)?;
        // An empty dump is most often a failed one whose status was lost in a pipe.
        if opts.require_data
            && !matches!(src.kind, SourceKind::Path(_))
            && result.counts.bytes_source == 0
        {
            return Err(Error::ComponentFailed {
                component: src.name.clone(),
                reason: "yielded no data, and --require-data asks for some; nothing was committed"
                    .into(),
            });
        }
        let c = &ctx.counters[i];
        let mut counts = result.counts;
        counts.bytes_read = c.bytes_read.load(Ordering::Relaxed);
        counts.chunks_new = c.chunks_new.load(Ordering::Relaxed);
        issues.extend(result.issues.into_iter().map(|mut s| {
            s.component.clone_from(&src.name);
            s
        }));
        components.push(Component {
            name: src.name.clone(),
            source: src.describe(),
            kind,
            root: result.root,
            meta,
            start_ns,
            end_ns: now_ns(),
            counts,
        });
    }
    Ok((components, issues))
}

/// Captures a directory or file component.
pub(super) fn capture_path(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    path: &Path,
    index: usize,
    excludes: &Patterns,
    (parent, write_once): (Option<&Component>, Option<&WriteOnce>),
    sinks: &CaptureSinks<'_>,
) -> Result<(ComponentKind, Metadata)> {
    let failed = |e: std::io::Error| Error::ComponentFailed {
        component: src.name.clone(),
        reason: format!("{}: {e}", path.display()),
    };
    let m = Lstat::at(rustix::fs::CWD, path).map_err(failed)?;
    let mut meta = metadata_of(&m);
    let walk = WalkSinks {
        events: sinks.events,
        jobs: sinks.jobs,
        shared: &ctx.shared,
        component: index,
        root: path,
        excludes,
        append_only: &ctx.append_only,
        repo: ctx.repo,
        dedup: &ctx.dedup,
        progress: ctx.progress,
        name: &src.name,
        bounds: &ctx.bounds,
        root_dev: m.dev(),
        write_once,
    };
    let name = src.name.as_bytes().to_vec();
    if m.is_dir() {
        // A file component's attributes are its entry's, read with it.
        let parent_meta = parent.filter(|c| c.kind.is_dir()).map(|c| &c.meta);
        meta.xattrs = walk.xattrs(XattrsAt::Root, walk.shown(b""), &meta, parent_meta);
    }
    if !sinks.events.send(WalkEvent::Enter { name: name.clone(), meta: meta.clone() }) {
        return Err(Error::Cancelled);
    }
    let (kind, walked) = if m.is_dir() {
        let parent_node = parent.filter(|c| c.kind.is_dir()).map(|c| Node {
            name: Vec::new(),
            meta: c.meta.clone(),
            content: Content::Dir { tree: c.root },
        });
        let parent_root = ParentDir::of(ctx.repo, parent_node.as_ref());
        let promised =
            write_once.is_some_and(|wo| wo.verify && wo.promised(b"", &meta, parent_node.as_ref()));
        (ComponentKind::Dir, walk_dir(path, parent_root, promised, &walk)?)
    } else {
        let parent_node = parent
            .filter(|c| c.kind == ComponentKind::File)
            .and_then(|c| crate::vfs::component_node(ctx.repo, c).ok());
        // The file, opened in its directory as files below a directory source are.
        let parent_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let on_disk = path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
        let dir = open_dir(rustix::fs::CWD, parent_dir).map_err(failed)?;
        let sent = walk.entry((&dir, &on_disk), name.clone(), &name, &m, parent_node.as_ref())?;
        (ComponentKind::File, sent && sinks.events.send(WalkEvent::Leave))
    };
    if walked {
        Ok((kind, meta))
    } else {
        Err(Error::Cancelled)
    }
}

/// Metadata recorded for a stream (stdin, command output): a 0600 file owned by this
/// process, modified at the end of the capture.
pub(super) fn stream_meta() -> Metadata {
    Metadata {
        mode: 0o100_600,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime: crate::tree::Time::from_ns(now_ns()),
        nlink: 1,
        ..Metadata::default()
    }
}

/// Chunks a stream into the set as the single file of component `index`.
pub(super) fn capture_stream(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    index: usize,
    reader: &mut dyn std::io::Read,
    sinks: &CaptureSinks<'_>,
) -> Result<Metadata> {
    let putter = Putter::new(ctx, sinks.raw, index);
    let counter = &ctx.counters[index];
    let mut buf = Vec::new();
    let read =
        chunk_into(&putter, counter, &mut buf, None, KeptChunks::default(), |chunker, buf, f| {
            chunker.chunk_reader(&mut *reader, buf, f)
        });
    let (size, chunks) = match read {
        Ok(v) => v,
        Err(ReadError::Fatal(e)) => return Err(e),
        Err(ReadError::Source(e)) => {
            return Err(Error::ComponentFailed {
                component: src.name.clone(),
                reason: format!("read failed: {e}"),
            })
        }
    };
    let meta = stream_meta();
    let name = src.name.as_bytes().to_vec();
    let (reply, rx) = bounded(1);
    let done =
        FileOutcome::Done { meta: meta.clone(), size, chunks, changed: false, incomplete: None };
    let _ = reply.send(done);
    let kind = EntryKind::File(rx, Freshness::New);
    let events = [
        WalkEvent::Enter { name: name.clone(), meta: meta.clone() },
        WalkEvent::Entry { name, meta: meta.clone(), kind },
        WalkEvent::Leave,
    ];
    if !events.into_iter().all(|e| sinks.events.send(e)) {
        return Err(Error::Cancelled);
    }
    ctx.progress.add_items(1);
    Ok(meta)
}

/// Runs `sh -c cmd` in its own process group and captures its standard output; its standard
/// error goes to ours. A non-zero exit, a signal, or a failure of the set kills the group and
/// fails the component.
pub(super) fn capture_command(
    ctx: &Ctx<'_>,
    src: &SourceSpec,
    index: usize,
    cmd: &str,
    sinks: &CaptureSinks<'_>,
) -> Result<Metadata> {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let fail = |reason: String| Error::ComponentFailed { component: src.name.clone(), reason };
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|e| fail(format!("cannot start `sh -c {cmd}`: {e}")))?;
    let group = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
    // An interrupted snapshot kills the group while it runs (its output is then cut short).
    ctx.children.set(group);
    let captured = match child.stdout.take() {
        Some(mut out) => capture_stream(ctx, src, index, &mut out, sinks),
        None => Err(fail("command has no standard output".into())),
    };
    ctx.children.set(None);
    if captured.is_err() {
        if let Some(pid) = group {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    let status = child.wait().map_err(|e| fail(format!("waiting for the command: {e}")));
    if ctx.progress.interrupted() {
        return Err(Error::Interrupted);
    }
    let meta = captured?;
    let status = status?;
    if status.success() {
        Ok(meta)
    } else if let Some(sig) = status.signal() {
        Err(fail(format!("command `{cmd}` was killed by signal {sig}")))
    } else {
        Err(fail(format!("command `{cmd}` exited with status {}", status.code().unwrap_or(-1))))
    }
}

/// Counts files and bytes of each directory or file component (metadata only) for the
/// progress display, and hands each component's totals to the progress while it is captured.
/// Memory: one open directory iterator per level of the current path.
pub(super) fn scan_totals(ctx: &Ctx<'_>, sources: &[SourceSpec]) {
    for (i, s) in sources.iter().enumerate() {
        let SourceKind::Path(path) = &s.kind else { continue };
        // Counting would look at every file the fast path passes by.
        if ctx.write_once.contains(&s.name) {
            continue;
        }
        if ctx.shared.is_cancelled() {
            return;
        }
        let totals = count_files(path);
        // Set first, then looked at: the capture sets `current` first, then looks at the
        // totals, so one of the two hands them over.
        if ctx.totals.get(i).is_some_and(|t| t.set(totals).is_ok())
            && ctx.current.load(Ordering::SeqCst) == i
        {
            ctx.progress.set_total(totals.0, totals.1);
        }
    }
}

/// The regular files below `path` (or `path` itself) and their bytes.
fn count_files(path: &Path) -> (u64, u64) {
    let Ok(m) = std::fs::symlink_metadata(path) else { return (0, 0) };
    if m.is_file() {
        return (1, m.len());
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack: Vec<std::fs::ReadDir> = std::fs::read_dir(path).into_iter().collect();
    while let Some(dir) = stack.last_mut() {
        let Some(entry) = dir.next() else {
            stack.pop();
            continue;
        };
        let Ok(entry) = entry else { continue };
        match entry.file_type() {
            Ok(t) if t.is_dir() => stack.extend(std::fs::read_dir(entry.path())),
            Ok(t) if t.is_file() => {
                files += 1;
                bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
            _ => {}
        }
    }
    (files, bytes)
}
