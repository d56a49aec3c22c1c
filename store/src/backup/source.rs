//! Reading one source file and cutting it into chunks: `read` for small files, windows of
//! `mmap` for large ones. Both feed the same chunker, so cut points are identical.

use std::fs::File;
use std::io::{self, Read};

use memmap2::{Advice, MmapOptions};

use crate::chunker::Chunker;

/// Files at least this large are mapped rather than read: 8 MiB.
pub(crate) const MMAP_MIN: u64 = 8 << 20;
/// Size of one mapped window: 8 MiB (at least twice the largest chunk). Mapped pages count in
/// the process's RSS while the window lives; 64 MiB windows put peak RSS of a 2 GB snapshot at
/// 96 MB, 8 MiB windows at about 40 MB, at the same speed (docs/BENCHMARKS.md).
const WINDOW: u64 = 8 << 20;

/// Cuts `file` (of `size` bytes at open) into chunks, calling `f` for each; returns the bytes
/// read. Small files are read to their end (a growing file yields what was there); large
/// files are mapped up to `size`.
pub(crate) fn chunk_file<E: From<io::Error>>(
    chunker: &Chunker,
    file: &mut File,
    size: u64,
    buf: &mut Vec<u8>,
    f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    if size >= MMAP_MIN && WINDOW >= 2 * chunker.max_len() as u64 {
        chunk_mapped(chunker, file, size, f)
    } else {
        chunker.chunk_reader(&mut file.take(u64::MAX), buf, f)
    }
}

fn chunk_mapped<E: From<io::Error>>(
    chunker: &Chunker,
    file: &File,
    size: u64,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<u64, E> {
    let page = rustix::param::page_size() as u64;
    let mut pos = 0u64;
    while pos < size {
        let start = pos / page * page;
        let end = size.min(start + WINDOW);
        let len = usize::try_from(end - start).map_err(|_| io::Error::other("window too large"))?;
        let map = map_window(file, start, len)?;
        let _ = map.advise(Advice::Sequential);
        let skip = usize::try_from(pos - start).unwrap_or(0);
        let data = map.get(skip..).unwrap_or_default();
        let used = chunker.cut_all(data, end == size, &mut f)?;
        if used == 0 {
            return Err(io::Error::other("chunker made no progress in a mapped window").into());
        }
        pos += used as u64;
    }
    Ok(pos)
}

/// Maps `len` bytes of `file` from `offset`, read-only.
#[allow(unsafe_code)]
fn map_window(file: &File, offset: u64, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: the mapping is read-only and private to this function's caller, which only reads
    // it as a byte slice. The remaining hazard of any file mapping is a concurrent truncation
    // of the source file, which makes reads past the new end fault (SIGBUS); contentstore
    // files are immutable once written and journals only grow, and small files, where
    // truncation is common, are read with `read` instead (see MMAP_MIN).
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}
