//! Restoring files in batches: files go to the writer threads in batches whose chunks are read
//! once each, in pack order; a file alone in its batch is read, verified and written in
//! parallel windows on the decoder threads (the numbers are in the module documentation of
//! `restore`).

use super::target::{
    existing, finish, make_dir, open_staged, prepare, restore_special, restore_symlink, temp_name,
    write_sparse, Prepared, Special, Staging,
};
#[allow(clippy::wildcard_imports, reason = "the parts of restore share its imports")]
use super::*;

/// The restoring [`Sink`]: directories and small entries on the walking thread, files
/// queued in batches to the writer threads.
pub(super) struct Writer<'c, 'a> {
    pub(super) ctx: &'c Ctx<'a>,
    pub(super) tx: Sender<Vec<FileJob<'a>>>,
    pub(super) batch: Vec<FileJob<'a>>,
    pub(super) fill: BatchFill,
    /// The target's root, which hard links are made relative to.
    pub(super) root: Arc<DirHandle<'a>>,
    /// Per hard-link group restored so far: the path of its first file below the target.
    pub(super) links: std::collections::HashMap<(u64, u64), Vec<u8>>,
}

/// How full the batch being gathered is.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct BatchFill {
    pub(super) files: usize,
    pub(super) chunks: usize,
    pub(super) bytes: u64,
}

impl BatchFill {
    /// Whether a file of `chunks` chunks and `bytes` bytes must start a new batch.
    fn must_flush_before(&self, chunks: usize, bytes: u64) -> bool {
        self.files > 0
            && (self.files >= BATCH_FILES
                || self.chunks + chunks > BATCH_CHUNKS
                || self.bytes.saturating_add(bytes) > BATCH_BYTES)
    }

    fn add(&mut self, chunks: usize, bytes: u64) {
        self.files += 1;
        self.chunks += chunks;
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// Files restored together, their blobs read in pack order: at most this many files (each
/// batch in flight holds their temporaries and parent directories open: with two writers and
/// one batch queued, a few hundred descriptors even when every file has its own directory)...
pub(super) const BATCH_FILES: usize = 64;

/// ...and about this many chunks (a plan entry is about 100 bytes)...
pub(super) const BATCH_CHUNKS: usize = 16_384;

/// ...and about this many bytes, so that large files spread over the writers: a batch is
/// written by one thread, and a MarkLogic forest (a few files of 100-300 MB) fit in one batch by
/// chunk count (restore at 99% CPU, 1.79 s, where per-file writers took 1.02 s).
pub(super) const BATCH_BYTES: u64 = 32 << 20;

impl Writer<'_, '_> {
    pub(super) fn flush(&mut self) {
        if !self.batch.is_empty() {
            // The writers only stop early when they panicked; the scope reports that.
            let _ = self.tx.send(std::mem::take(&mut self.batch));
            self.fill = BatchFill::default();
        }
    }
}

impl<'a> Sink for Writer<'_, 'a> {
    type Dir = Arc<DirHandle<'a>>;

    fn make_dir(&mut self, parent: &Self::Dir, node: &Node, path: &str) -> Result<Self::Dir> {
        if self.ctx.is_full() {
            return Err(Error::TargetFull);
        }
        let handle = make_dir(self.ctx, parent, node, path);
        if let Err(e) = &handle {
            if self.ctx.note_if_full(e, path) {
                return Err(Error::TargetFull);
            }
        }
        Ok(Arc::new(handle?))
    }

    fn leaf(&mut self, dir: &Self::Dir, node: Node, path: String) -> Result<()> {
        let ctx = self.ctx;
        if ctx.progress.interrupted() {
            return Err(Error::Interrupted);
        }
        if ctx.is_full() {
            return Err(Error::TargetFull);
        }
        match &node.content {
            Content::File { .. } if node.meta.link_group().is_some() => {
                self.hard_link(dir, node, path);
            }
            Content::File { chunks, size } => {
                let n = match chunks {
                    ChunkRefs::Inline(ids) => ids.len(),
                    ChunkRefs::Lists(_) => BATCH_CHUNKS,
                };
                let size = *size;
                if self.fill.must_flush_before(n, size) {
                    self.flush();
                }
                self.batch.push(FileJob { dir: Arc::clone(dir), node, path });
                self.fill.add(n, size);
            }
            Content::Symlink { target } => {
                match restore_symlink(ctx, dir, (&node, &path), target) {
                    Ok(true) => count(ctx.shared, |r| r.symlinks += 1),
                    Ok(false) => count(ctx.shared, |r| r.unchanged += 1),
                    Err(e) => record(ctx.shared, &path, format!("cannot create symlink: {e}")),
                }
            }
            Content::Special { rdev } => match restore_special(ctx, dir, (&node, &path), *rdev) {
                Ok(Special::Created) => count(ctx.shared, |r| r.specials += 1),
                Ok(Special::Kept) => count(ctx.shared, |r| r.unchanged += 1),
                Ok(Special::NotRestored(why)) => not_restored(ctx.shared, &path, why),
                Err(e) => record(ctx.shared, &path, format!("cannot create special file: {e}")),
            },
            Content::Dir { .. } => {}
        }
        Ok(())
    }

    fn failure(&mut self, path: &str, error: &Error) {
        record(self.ctx.shared, path, error);
    }
}

impl<'a> Writer<'_, 'a> {
    /// Restores a file of a hard-link group: the group's first file restored is written here,
    /// at once (so it is complete before anything links to it); the others become links to it.
    /// A first file that fails leaves the next one of its group to be written instead.
    fn hard_link(&mut self, dir: &Arc<DirHandle<'a>>, node: Node, path: String) {
        let ctx = self.ctx;
        let Some(group) = node.meta.link_group() else { return };
        let raw = join_raw(&dir.raw, &node.name);
        let job = FileJob { dir: Arc::clone(dir), node, path };
        match self.links.get(&group) {
            Some(first) => match link_to(ctx, &self.root, first, &job) {
                Ok(true) => count(ctx.shared, |r| r.hard_links += 1),
                Ok(false) => count(ctx.shared, |r| r.unchanged += 1),
                Err(e) => record(ctx.shared, &job.path, e),
            },
            None => {
                let outcome = restore_file(ctx, &job, &mut Buffers::default());
                if let Err(e) = &outcome {
                    ctx.note_if_full(e, &job.path);
                }
                if outcome.is_ok() {
                    self.links.insert(group, raw);
                }
                report(ctx, &job, outcome.map_err(|e| e.to_string()));
            }
        }
    }
}

/// Makes `job`'s file a hard link to `first` (below the target's `root`). Returns false when an
/// entry already there was kept.
fn link_to(ctx: &Ctx<'_>, root: &DirHandle<'_>, first: &[u8], job: &FileJob<'_>) -> Result<bool> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    // The first file's directory, opened without following a symlink on the way: one swapped
    // in since the file was written is refused, never followed out of the target.
    let (parent, first_name) = match first.iter().rposition(|&b| b == b'/') {
        Some(i) => (&first[..i], &first[i + 1..]),
        None => (&b"."[..], first),
    };
    let parent = rustix::fs::openat2(
        &root.fd,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::BENEATH,
    )
    .at(&job.path)?;
    let link = |at: &[u8]| rustix::fs::linkat(&parent, first_name, &dir.fd, at, AtFlags::empty());
    let Some(st) = existing(dir, name).at(&job.path)? else {
        link(name).at(&job.path)?;
        return Ok(true);
    };
    let same_file = || {
        rustix::fs::statat(&parent, first_name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|f| (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino))
    };
    match ctx.opts.overwrite {
        None => Err(Error::Target {
            path: ctx.opts.target.join(&job.path),
            reason: "already exists".into(),
        }),
        Some(Overwrite::Never) => Ok(false),
        // Already a name of the first file: nothing to replace (and a rename of one name of a
        // file over another does nothing, which would leave the temporary link behind).
        Some(Overwrite::IfChanged | Overwrite::Always) if same_file() => Ok(false),
        Some(_) => {
            let temp = temp_name(name);
            match rustix::fs::unlinkat(&dir.fd, temp.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e).at(&job.path),
            }
            link(&temp).at(&job.path)?;
            let renamed = rustix::fs::renameat(&dir.fd, temp.as_slice(), &dir.fd, name);
            if let Err(e) = renamed {
                let _ = rustix::fs::unlinkat(&dir.fd, temp.as_slice(), AtFlags::empty());
                return Err(e).at(&job.path);
            }
            Ok(true)
        }
    }
}

/// Reusable buffers of one writer thread.
#[derive(Default)]
pub(super) struct Buffers {
    /// A `(frame, raw)` pair per blob of a decode window.
    pub(super) window: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) check: Vec<u8>,
    pub(super) span: Span,
}

/// A stretch of a pack read at once for the blobs of a batch that lie close together in it
/// (small files: one read for dozens of blobs instead of one each). Packs are immutable under
/// their name, and every blob read out of it is verified against its id as from the pack.
#[derive(Default)]
pub(super) struct Span {
    pack: Option<crate::id::PackId>,
    offset: u64,
    bytes: Vec<u8>,
}

/// A span is at most this long...
const SPAN_BYTES: u64 = 1 << 20;

/// ...and its blobs at most this far apart (what lies between them is read for nothing).
const SPAN_GAP: u64 = 16 << 10;

/// Where the frame of the blob at `loc` ends in its pack.
fn frame_end(loc: &crate::index::Location) -> u64 {
    let len = (crate::pack::BLOB_HEADER_LEN as u64) + u64::from(loc.entry.stored_len);
    loc.entry.offset.saturating_add(len)
}

impl Span {
    /// The span as the pack source of `loc`'s frame, when it holds that frame whole.
    fn holding(&self, loc: &crate::index::Location) -> Option<crate::pack::FrameAt<&[u8]>> {
        let end = self.offset.saturating_add(self.bytes.len() as u64);
        let held = self.pack == Some(loc.pack) && loc.entry.offset >= self.offset;
        (held && frame_end(loc) <= end)
            .then_some(crate::pack::FrameAt { offset: self.offset, bytes: self.bytes.as_slice() })
    }

    /// Reads the stretch of `plan[0]`'s pack from its frame on, over the frames of the pieces
    /// after it that lie in the same pack close behind it (pieces are in pack order), when
    /// that takes in more than one blob. Otherwise, or when the read fails (the blobs are then
    /// read one by one, and their errors named as usual), the span is left empty.
    fn fill(&mut self, ctx: &Ctx<'_>, plan: &[Piece]) {
        self.pack = None;
        let Some(first) = plan.first().map(|p| p.loc) else { return };
        let (start, mut end, mut blobs) = (first.entry.offset, frame_end(&first), 1);
        for p in plan.iter().skip(1).take_while(|p| p.loc.pack == first.pack) {
            let (offset, to) = (p.loc.entry.offset, frame_end(&p.loc));
            if offset > end.saturating_add(SPAN_GAP) || to.saturating_sub(start) > SPAN_BYTES {
                break;
            }
            if to > end {
                (end, blobs) = (to, blobs + 1);
            }
        }
        let Ok(len) = usize::try_from(end - start) else { return };
        if blobs < 2 {
            return;
        }
        self.bytes.resize(len, 0);
        if ctx.repo.read_pack_bytes(first.pack, start, &mut self.bytes).is_ok() {
            (self.pack, self.offset) = (Some(first.pack), start);
        }
    }
}

/// What happened to one file.
pub(super) enum FileOutcome {
    Written(u64),
    Unchanged(u64),
}

/// Writes batches of files handed over by the walker until the queue closes.
pub(super) fn file_writer(ctx: &Ctx<'_>, jobs: &Receiver<Vec<FileJob<'_>>>) {
    let mut bufs = Buffers::default();
    for batch in jobs {
        if ctx.progress.interrupted() || ctx.is_full() {
            continue; // drain: the batches not started are not written at all
        }
        ctx.busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        restore_batch(ctx, &batch, &mut bufs);
        ctx.busy.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts and reports what happened to one file.
pub(super) fn report(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    outcome: std::result::Result<FileOutcome, String>,
) {
    match outcome {
        Ok(FileOutcome::Written(bytes)) => {
            count(ctx.shared, |r| {
                r.files += 1;
                r.bytes += bytes;
            });
            if ctx.progress.wants_files() {
                ctx.progress.file("", job.path.as_bytes(), crate::progress::FileEvent::Restored);
            }
        }
        Ok(FileOutcome::Unchanged(bytes)) => {
            count(ctx.shared, |r| r.unchanged += 1);
            ctx.progress.add_bytes(bytes);
        }
        Err(e) => {
            // Once the target is full, the files that fail after the first are not each
            // reported: the report says where the space ran out.
            let full = ctx.full.lock().ok().and_then(|f| f.clone());
            if full.as_deref().is_none_or(|p| p == job.path) {
                record(ctx.shared, &job.path, e);
            }
        }
    }
    ctx.progress.add_items(1);
}

/// A file of a batch being written under its temporary name.
pub(super) struct Target<'j, 'a> {
    pub(super) job: &'j FileJob<'a>,
    pub(super) size: u64,
    pub(super) chunks: &'j ChunkRefs,
    pub(super) staging: Staging,
    pub(super) file: File,
    pub(super) error: Option<String>,
}

/// One chunk of one file of a batch: where to read it, where to write it.
pub(super) struct Piece {
    pub(super) loc: crate::index::Location,
    pub(super) target: usize,
    pub(super) at: u64,
}

/// Restores a batch of files: the chunks of all of them are sorted by pack and offset, each
/// blob is read and verified once, in pack order, and written to every place in the batch that
/// holds it. Files with chunk-list blobs (the largest) are written on their own, in order.
pub(super) fn restore_batch(ctx: &Ctx<'_>, batch: &[FileJob<'_>], bufs: &mut Buffers) {
    let mut targets: Vec<Target<'_, '_>> = Vec::new();
    for job in batch {
        let Content::File { size, chunks } = &job.node.content else { continue };
        if matches!(chunks, ChunkRefs::Lists(_)) {
            let outcome = restore_file(ctx, job, bufs);
            if let Err(e) = &outcome {
                ctx.note_if_full(e, &job.path);
            }
            report(ctx, job, outcome.map_err(|e| e.to_string()));
            continue;
        }
        let prepared = prepare(ctx, job, *size, chunks, bufs).and_then(|p| match p {
            Prepared::Keep(outcome) => Ok(Err(outcome)),
            Prepared::Write { exists } => open_staged(ctx, job, exists).map(Ok),
        });
        match prepared {
            Ok(Ok((staging, file))) => {
                targets.push(Target { job, size: *size, chunks, staging, file, error: None });
            }
            Ok(Err(outcome)) => report(ctx, job, Ok(outcome)),
            Err(e) => {
                ctx.note_if_full(&e, &job.path);
                report(ctx, job, Err(e.to_string()));
            }
        }
    }
    // Every blob of the batch is looked up in one multi-get (its files' chunk lists are
    // inline: files with list blobs were restored on their own above).
    let ids: Vec<Id> = targets
        .iter()
        .flat_map(|t| match t.chunks {
            ChunkRefs::Inline(ids) => ids.as_slice(),
            ChunkRefs::Lists(_) => &[],
        })
        .map(|c| c.0)
        .collect();
    // A failed lookup fails every file of the batch.
    let (mut locs, failed) = match ctx.repo.index().and_then(|index| index.get_many(&ids)) {
        Ok(locs) => (locs.into_iter(), None),
        Err(e) => (Vec::new().into_iter(), Some(e.to_string())),
    };
    let mut plan = Vec::with_capacity(ids.len());
    for (t, target) in targets.iter_mut().enumerate() {
        let ChunkRefs::Inline(chunks) = target.chunks else {
            // Never here (such files were restored on their own above); never written empty.
            target.error = Some("a file with chunk-list blobs in a batch".into());
            continue;
        };
        if let Some(e) = &failed {
            target.error = Some(e.clone());
            continue;
        }
        let mut at = 0u64;
        let mut missing = None;
        for chunk in chunks {
            match locs.next().flatten() {
                Some(loc) => {
                    plan.push(Piece { loc, target: t, at });
                    at += u64::from(loc.entry.raw_len);
                }
                None => {
                    missing.get_or_insert(Error::BlobNotIndexed { id: chunk.0 });
                }
            }
        }
        target.error = match missing {
            Some(e) => Some(e.to_string()),
            None if at != target.size => Some(
                Error::SizeMismatch {
                    path: target.job.path.clone(),
                    recorded: target.size,
                    found: at,
                }
                .to_string(),
            ),
            None => None,
        };
    }
    plan.sort_unstable_by(|a, b| {
        (a.loc.pack.0.as_bytes(), a.loc.entry.offset)
            .cmp(&(b.loc.pack.0.as_bytes(), b.loc.entry.offset))
    });
    // A file alone in its batch (a large one) may have its blobs read, verified and written a
    // window at a time on the decoder threads (see `window_len`); otherwise one blob at a time.
    let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
    let mut i = 0;
    while i < plan.len() {
        groups.clear();
        let window = if targets.len() == 1 { window_len(ctx) } else { 1 };
        while i < plan.len() && groups.len() < window {
            let loc = plan[i].loc;
            let same = plan[i..]
                .iter()
                .take_while(|p| p.loc.pack == loc.pack && p.loc.entry.offset == loc.entry.offset)
                .count();
            let pieces = i..i + same;
            i += same;
            if plan[pieces.clone()].iter().any(|p| targets[p.target].error.is_none()) {
                groups.push(pieces);
            }
        }
        if let [one] = groups.as_slice() {
            if bufs.span.holding(&plan[one.start].loc).is_none() {
                bufs.span.fill(ctx, &plan[one.start..]);
            }
        }
        let (live, span) = (&targets, &bufs.span);
        let done = in_window(ctx, &groups, &mut bufs.window, |pieces, frame, raw| {
            let loc = &plan[pieces.start].loc;
            match span.holding(loc) {
                Some(bytes) => ctx.repo.read_located_in(loc, BlobKind::Data, &bytes, frame, raw)?,
                None => ctx.repo.read_located(loc, BlobKind::Data, frame, raw)?,
            }
            let mut failed = Vec::new();
            for p in &plan[pieces.clone()] {
                let t = &live[p.target];
                if t.error.is_none() {
                    match write_sparse(&t.file, p.at, raw) {
                        Ok(()) => wrote(ctx, raw.len()),
                        Err(e) => failed.push((p.target, e)),
                    }
                }
            }
            Ok(failed)
        });
        for (pieces, result) in groups.iter().zip(done) {
            match result {
                Err(e) => {
                    let message = e.to_string();
                    for p in &plan[pieces.clone()] {
                        targets[p.target].error.get_or_insert_with(|| message.clone());
                    }
                }
                Ok(failed) => {
                    for (t, cause) in failed {
                        let t = &mut targets[t];
                        let e = Error::Io { path: t.job.path.clone().into(), cause };
                        ctx.note_if_full(&e, &t.job.path);
                        t.error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
    }
    drop(plan);
    for t in targets {
        let dir = &t.job.dir;
        let outcome = match t.error {
            Some(e) => Err(e),
            None => finish(ctx, t.job, &t.file, &t.staging, t.size, t.chunks, bufs).map_err(|e| {
                ctx.note_if_full(&e, &t.job.path);
                e.to_string()
            }),
        };
        if outcome.is_err() {
            t.staging.discard(dir);
        }
        report(ctx, t.job, outcome);
    }
}

/// Restores one file on its own, its chunks in file order (the largest files, whose chunk
/// lists are blobs themselves).
pub(super) fn restore_file(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    bufs: &mut Buffers,
) -> Result<FileOutcome> {
    let Content::File { size, chunks } = &job.node.content else {
        return Ok(FileOutcome::Written(0));
    };
    let exists = match prepare(ctx, job, *size, chunks, bufs)? {
        Prepared::Keep(kept) => return Ok(kept),
        Prepared::Write { exists } => exists,
    };
    let (staging, file) = open_staged(ctx, job, exists)?;
    let written = write_in_order(ctx, job, &file, *size, chunks, bufs)
        .and_then(|()| finish(ctx, job, &file, &staging, *size, chunks, bufs));
    if written.is_err() {
        staging.discard(&job.dir);
    }
    written
}

/// Blobs read, verified and written at once on the decoder threads: 16 (about 3 MiB at the
/// default 128 KiB chunks, at most 16 MiB) per writer in flight.
pub(super) const DECODE_WINDOW: usize = 16;

/// Runs `work` (read a blob into the `(frame, raw)` pair it is given, verify it, write it) for
/// every item, on the decoder threads (a single item on this thread); `bufs` holds one pair per
/// item and is reused window after window. Returns each item's outcome, in order.
pub(super) fn in_window<T: Sync, R: Send>(
    ctx: &Ctx<'_>,
    items: &[T],
    bufs: &mut Vec<(Vec<u8>, Vec<u8>)>,
    work: impl Fn(&T, &mut Vec<u8>, &mut Vec<u8>) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    use rayon::prelude::*;
    if bufs.len() < items.len() {
        bufs.resize_with(items.len(), Default::default);
    }
    match (items, bufs.as_mut_slice()) {
        ([], _) => return Vec::new(),
        ([item], [(frame, raw), ..]) => return vec![work(item, frame, raw)],
        _ => {}
    }
    ctx.decoders.install(|| {
        items.par_iter().zip(bufs.par_iter_mut()).map(|(item, (f, r))| work(item, f, r)).collect()
    })
}

/// How many blobs of a large file go to the decoder threads at once: [`DECODE_WINDOW`] when this
/// writer is the only busy one (a dump restored alone, or the last file of a restore), else 1,
/// as the other writers keep the cores busy: with every writer on a large file, windows made a
/// MarkLogic restore 10% slower and doubled its peak RSS.
pub(super) fn window_len(ctx: &Ctx<'_>) -> usize {
    if ctx.busy.load(std::sync::atomic::Ordering::Relaxed) <= 1 {
        DECODE_WINDOW
    } else {
        1
    }
}

/// Counts `n` restored bytes of one chunk.
pub(super) fn wrote(ctx: &Ctx<'_>, n: usize) {
    ctx.progress.add_bytes(n as u64);
    crate::crash::point("restore", "chunk");
}

/// Writes the file's chunks (holes for zero blocks), a window at a time on the decoder threads,
/// each at the offset the sizes of the chunks before it give.
pub(super) fn write_in_order(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    file: &File,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<()> {
    let index = ctx.repo.index()?;
    let mut at = 0u64;
    let mut window: Vec<(crate::index::Location, u64)> = Vec::with_capacity(DECODE_WINDOW);
    let mut write_window = |window: &mut Vec<(crate::index::Location, u64)>| -> Result<()> {
        let done = in_window(ctx, window, &mut bufs.window, |(loc, at), frame, raw| {
            ctx.repo.read_located(loc, BlobKind::Data, frame, raw)?;
            write_sparse(file, *at, raw).at(&job.path)?;
            wrote(ctx, raw.len());
            Ok(())
        });
        window.clear();
        done.into_iter().collect()
    };
    for_each_chunk(ctx.repo, chunks, |id| {
        let loc = index.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
        window.push((loc, at));
        at += u64::from(loc.entry.raw_len);
        if window.len() >= window_len(ctx) {
            write_window(&mut window)?;
        }
        Ok(())
    })?;
    write_window(&mut window)?;
    if at != size {
        return Err(Error::SizeMismatch { path: job.path.clone(), recorded: size, found: at });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds files of (chunks, bytes) through the batching rule; returns the batch sizes.
    fn batches(files: &[(usize, u64)]) -> Vec<usize> {
        let (mut fill, mut out) = (BatchFill::default(), Vec::new());
        for &(chunks, bytes) in files {
            if fill.must_flush_before(chunks, bytes) {
                out.push(fill.files);
                fill = BatchFill::default();
            }
            fill.add(chunks, bytes);
        }
        out.push(fill.files);
        out
    }

    #[test]
    fn batches_keep_small_files_together_and_spread_large_ones() {
        // 200 small documents: batches of 64 files.
        assert_eq!(batches(&[(1, 40 << 10); 200]), vec![64, 64, 64, 8]);
        // A forest: eight files of 1,000-2,000 chunks fit one batch by chunk count, but each
        // is a batch of its own by size, so every writer gets one.
        let forest: Vec<(usize, u64)> = (0..8)
            .map(|i| if i % 2 == 0 { (2000, 264 << 20) } else { (1400, 176 << 20) })
            .collect();
        assert_eq!(batches(&forest), vec![1; 8]);
        // Files of chunk lists, and anything bigger than a batch, are alone; an empty file
        // joins the batch before it.
        assert_eq!(batches(&[(1, 10), (BATCH_CHUNKS, 2 << 30), (1, 10), (0, 0)]), vec![1, 1, 2]);
    }
}
