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

/// Feeds the chunks that `feed` produces through hashing and dedup, collecting the file's
/// chunk refs (moving long lists into chunk-list blobs). Returns the bytes read.
pub(super) fn chunk_into(
    ctx: &Ctx<'_>,
    putter: &Putter<'_>,
    counter: &ComponentCounters,
    buf: &mut Vec<u8>,
    size: Option<u64>,
    feed: impl FnOnce(&Chunker, &mut Vec<u8>, ChunkSink<'_>) -> Result<u64, ReadError>,
) -> Result<(u64, ChunkRefs), ReadError> {
    let mut levels = LevelProbe::for_input(size, putter.level);
    let mut ids: Vec<ChunkId> = Vec::new();
    let mut lists: Vec<Id> = Vec::new();
    let flush_list = |ids: &mut Vec<ChunkId>, lists: &mut Vec<Id>| -> Result<(), ReadError> {
        let bytes = encode_chunk_list(ids).map_err(ReadError::Fatal)?;
        let id = ctx.repo.blob_id(&bytes);
        putter.put_hashed(id, BlobKind::ChunkList, &bytes).map_err(ReadError::Fatal)?;
        lists.push(id);
        ids.clear();
        Ok(())
    };
    let mut on_chunk = |chunk: &[u8]| -> Result<(), ReadError> {
        let id = ctx.repo.blob_id(chunk);
        counter.bytes_read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        ctx.progress.add_bytes(chunk.len() as u64);
        if putter.put_chunk(id, chunk, &mut levels).map_err(ReadError::Fatal)? {
            counter.chunks_new.fetch_add(1, Ordering::Relaxed);
        }
        ids.push(ChunkId(id));
        if ids.len() == INLINE_CHUNKS_MAX {
            flush_list(&mut ids, &mut lists)?;
        }
        Ok(())
    };
    let size = feed(&ctx.chunker, buf, &mut on_chunk)?;
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
        let read = chunk_into(ctx, putter, counter, buf, Some(m.len()), |chunker, buf, f| {
            chunker.chunk_reader(&mut file, buf, f)
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
