//! Reading files: chunking, hashing and dedup of every byte read once, with a second read of a
//! file that changed meanwhile; a file that cannot be read is skipped and reported.

#[allow(clippy::wildcard_imports, reason = "the parts of this module share its imports")]
use super::*;

/// Reads files, cuts them into chunks and hands new chunks on, until the job queue closes.
pub(super) fn file_worker(ctx: &Ctx<'_>, jobs: &Receiver<FileJob>, raw_tx: &Sender<RawBlob>) {
    let mut buf = Vec::new();
    for job in jobs {
        if ctx.shared.is_cancelled() {
            continue;
        }
        let putter = Putter::new(ctx, raw_tx, job.component);
        let counter = &ctx.counters[job.component];
        match read_file(ctx, &job, &putter, counter, &mut buf) {
            Ok(outcome) => {
                ctx.progress.add_items(1);
                let _ = job.reply.send(outcome);
            }
            Err(e) => ctx.shared.fail(e),
        }
    }
}

/// Reading a file failed: a source problem (skip the file) or a pipeline failure (stop).
pub(super) enum ReadError {
    Source(std::io::Error),
    Fatal(Error),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Source(e)
    }
}

/// Opens the file of `job` in its directory, for reading, never following a symlink.
pub(super) fn open_source(job: &FileJob) -> std::io::Result<std::fs::File> {
    use rustix::fs::OFlags;
    let name = Path::new(std::ffi::OsStr::from_bytes(&job.name));
    let open = |flags: OFlags| {
        let flags = flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        rustix::fs::openat(&*job.dir, name, flags, rustix::fs::Mode::empty())
    };
    let fd = match open(OFlags::NOATIME) {
        // O_NOATIME is refused for files of other users unless running as root.
        Err(rustix::io::Errno::PERM) => open(OFlags::empty())?,
        other => other?,
    };
    Ok(std::fs::File::from(fd))
}

pub(super) type ChunkSink<'f> = &'f mut dyn FnMut(&[u8]) -> Result<(), ReadError>;

/// The chunks a file starts with, kept from the parent set (an append-only file that grew):
/// whole chunk-list blobs, then the ids of the list not yet full. Exactly the state a reading
/// of the whole file would be in after those chunks.
#[derive(Default)]
pub(super) struct KeptChunks {
    lists: Vec<Id>,
    ids: Vec<ChunkId>,
}

/// Feeds the chunks that `feed` produces through hashing and dedup, after the chunks `kept`,
/// collecting the file's chunk refs (moving long lists into chunk-list blobs). Returns what
/// `feed` returns (the bytes read).
pub(super) fn chunk_into(
    putter: &Putter<'_>,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
    size: Option<u64>,
    kept: KeptChunks,
    feed: impl FnOnce(&Chunker, &mut Vec<u8>, ChunkSink<'_>) -> Result<u64, ReadError>,
) -> Result<(u64, ChunkRefs), ReadError> {
    let mut levels = LevelProbe::for_input(size, putter.level);
    let KeptChunks { mut lists, mut ids } = kept;
    let flush_list = |ids: &mut Vec<ChunkId>, lists: &mut Vec<Id>| -> Result<(), ReadError> {
        let bytes = encode_chunk_list(ids).map_err(ReadError::Fatal)?;
        let id = putter.crypto.id(&bytes);
        putter.put_hashed(id, BlobKind::ChunkList, &bytes).map_err(ReadError::Fatal)?;
        lists.push(id);
        ids.clear();
        Ok(())
    };
    let mut on_chunk = |chunk: &[u8]| -> Result<(), ReadError> {
        let id = putter.crypto.id(chunk);
        counter.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        putter.progress.add_bytes(chunk.len() as u64);
        if putter.put_chunk(id, chunk, &mut levels).map_err(ReadError::Fatal)? {
            counter.chunks_new.fetch_add(1, Ordering::Relaxed);
        }
        ids.push(ChunkId(id));
        if ids.len() == INLINE_CHUNKS_MAX {
            flush_list(&mut ids, &mut lists)?;
        }
        Ok(())
    };
    let size = feed(putter.chunker, buf, &mut on_chunk)?;
    let refs = if lists.is_empty() {
        ChunkRefs::Inline(ids)
    } else {
        if !ids.is_empty() {
            flush_list(&mut ids, &mut lists)?;
        }
        ChunkRefs::Lists(lists)
    };
    Ok((size, refs))
}

/// Whether a file changed between two `fstat`s: size or modification time differ.
pub(super) fn changed_since(before: &Metadata, before_len: u64, after: &Lstat) -> bool {
    let a = metadata_of(after);
    after.len() != before_len || a.mtime != before.mtime
}

/// Largest end of a file read to check an append-only file's last two chunks: 256 MiB (two
/// chunks of the largest size a repository allows, 64 MiB, fit many times).
const MAX_APPEND_CHECK: u64 = 256 << 20;

/// For a file that grew from `before` bytes (chunked as `refs` in the parent set) to `now`:
/// where to read from (the start of the parent's last chunk) and the chunks kept before it.
/// `None` (read it all) unless the file had at least two chunks, every one still stored, and
/// the parent's last two chunks read the same from the file now. The last was cut by the end
/// of the file and may grow; the one before ends at a content-defined cut that a reading of
/// the whole file finds again, so the chunks are those a full read would give.
fn appended_from(
    ctx: &Ctx<'_>,
    counter: &ComponentCounters,
    file: &std::fs::File,
    before: u64,
    refs: &ChunkRefs,
    now: u64,
) -> Result<Option<(u64, KeptChunks)>, ReadError> {
    use std::os::unix::fs::FileExt;
    if now <= before {
        return Ok(None);
    }
    let repo = ctx.repo;
    let fatal = ReadError::Fatal;
    // Every chunk (and chunk list) must still be stored, as for a file reused whole.
    if !ctx.dedup.all_stored(refs).map_err(fatal)? {
        return Ok(None);
    }
    // The chunks kept (all but the last) and the last two.
    let (kept, last_two) = match refs {
        ChunkRefs::Inline(ids) => match ids.as_slice() {
            [.., prev, last] => (
                KeptChunks { lists: Vec::new(), ids: ids[..ids.len() - 1].to_vec() },
                [*prev, *last],
            ),
            _ => return Ok(None),
        },
        ChunkRefs::Lists(lists) => {
            let load = |id: &Id| crate::vfs::load_chunk_list(repo, *id).ok();
            let Some((last_list, full)) = lists.split_last() else { return Ok(None) };
            let Some(ids) = load(last_list) else { return Ok(None) };
            match ids.as_slice() {
                [.., prev, last] => (
                    KeptChunks { lists: full.to_vec(), ids: ids[..ids.len() - 1].to_vec() },
                    [*prev, *last],
                ),
                [last] => {
                    // The one before ends the previous list, which is full: kept whole.
                    let prev = full.last().and_then(load).and_then(|l| l.last().copied());
                    let Some(prev) = prev else { return Ok(None) };
                    (KeptChunks { lists: full.to_vec(), ids: Vec::new() }, [prev, *last])
                }
                [] => return Ok(None),
            }
        }
    };
    let index = repo.index().map_err(fatal)?;
    let raw_len = |c: &ChunkId| -> Result<Option<u64>, ReadError> {
        Ok(index.get(&c.0).map_err(fatal)?.map(|loc| u64::from(loc.entry.raw_len)))
    };
    let (Some(prev_len), Some(last_len)) = (raw_len(&last_two[0])?, raw_len(&last_two[1])?) else {
        return Ok(None);
    };
    let Some(from) = before.checked_sub(last_len) else { return Ok(None) };
    let Some(start) = from.checked_sub(prev_len) else { return Ok(None) };
    let Ok(len) = usize::try_from(before - start) else { return Ok(None) };
    if before - start > MAX_APPEND_CHECK {
        return Ok(None);
    }
    let mut tail = vec![0u8; len];
    // Shorter than that now (truncated since it was looked at): read it all, as any change.
    if file.read_exact_at(&mut tail, start).is_err() {
        return Ok(None);
    }
    counter.bytes_read.fetch_add(before - start, Ordering::Relaxed);
    let (prev, last) = tail.split_at(usize::try_from(prev_len).unwrap_or(len).min(len));
    if repo.blob_id(prev) != last_two[0].0 || repo.blob_id(last) != last_two[1].0 {
        return Ok(None);
    }
    Ok(Some((from, kept)))
}

pub(super) fn read_file(
    ctx: &Ctx<'_>,
    job: &FileJob,
    putter: &Putter<'_>,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
) -> Result<FileOutcome> {
    let skipped = |reason: String| Ok(FileOutcome::Skipped { reason });
    let mut file = match open_source(job) {
        Ok(f) => f,
        Err(e) => return skipped(format!("cannot open: {e}")),
    };
    // A file that changes while it is read is read once more; if it changes again, what the
    // second read saw is kept and the path is reported.
    for attempt in 0..2 {
        let m = match Lstat::of(&file) {
            Ok(m) => m,
            Err(e) => return skipped(format!("cannot stat: {e}")),
        };
        if !m.is_file() {
            return skipped("changed type during backup".into());
        }
        let meta = metadata_of(&m);
        if meta.ino != job.meta.ino {
            return skipped("replaced during backup".into());
        }
        if attempt > 0 {
            if let Err(e) = std::io::Seek::rewind(&mut file) {
                return skipped(format!("cannot read again: {e}"));
            }
        }
        // A grown append-only file: the parent's chunks but its last, when the end of them
        // still reads the same, and the rest read from there (the first attempt only).
        let append = job.append.as_ref().filter(|_| attempt == 0);
        let (from, kept) = match append {
            Some((before, refs)) => {
                match appended_from(ctx, counter, &file, *before, refs, m.len()) {
                    Ok(found) => found.unwrap_or_default(),
                    Err(ReadError::Source(e)) => return skipped(format!("read failed: {e}")),
                    Err(ReadError::Fatal(e)) => return Err(e),
                }
            }
            None => (0, KeptChunks::default()),
        };
        if from > 0 {
            if let Err(e) = std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(from)) {
                return skipped(format!("cannot read: {e}"));
            }
        }
        let read = chunk_into(putter, counter, buf, Some(m.len()), kept, |chunker, buf, f| {
            chunker.chunk_reader(&mut file, buf, f).map(|n| from + n)
        });
        let (size, chunks) = match read {
            Ok(v) => v,
            Err(ReadError::Source(e)) => return skipped(format!("read failed: {e}")),
            Err(ReadError::Fatal(e)) => return Err(e),
        };
        let changed = match Lstat::of(&file) {
            Ok(after) => changed_since(&meta, m.len(), &after) || size != m.len(),
            Err(_) => true,
        };
        if !changed || attempt == 1 {
            // Its attributes, from the open file (cheaper than by name; the walk left them
            // to the read).
            let mut meta = meta;
            let mut incomplete = None;
            if ctx.repo.version() >= 2 {
                match crate::xattr::read(&crate::xattr::On::Fd(&file)) {
                    Ok(x) => meta.xattrs = x,
                    Err(e) => incomplete = Some(format!("extended attributes not kept: {e}")),
                }
            }
            return Ok(FileOutcome::Done { meta, size, chunks, changed, incomplete });
        }
    }
    skipped("unreachable: read loop ended".into())
}
