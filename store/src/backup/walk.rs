//! Walking a source: directories depth first, entries in raw-name order, iteratively (no
//! recursion, so nesting depth is bounded by memory, not the stack). Memory: the sorted
//! names of each directory on the current path.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::pipeline::Shared;
use crate::tree::Metadata;

/// Metadata of a path as `lstat` or `fstat` reports it.
pub(crate) fn metadata_of(m: &std::fs::Metadata) -> Metadata {
    Metadata {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()),
        ctime_ns: m.ctime().saturating_mul(1_000_000_000).saturating_add(m.ctime_nsec()),
        ino: m.ino(),
    }
}

/// A regular file to read.
pub(crate) struct FileJob {
    pub(crate) path: PathBuf,
    pub(crate) meta: Metadata,
    pub(crate) component: usize,
    pub(crate) reply: Sender<FileOutcome>,
}

/// What reading a file gave.
pub(crate) enum FileOutcome {
    /// The file was read and chunked.
    Done { meta: Metadata, size: u64, chunks: crate::tree::ChunkRefs },
    /// The file could not be read; the set goes on without it.
    Skipped { reason: String },
}

/// What an entry is, as the walker saw it.
pub(crate) enum EntryKind {
    /// A regular file, being read by a worker.
    File(Receiver<FileOutcome>),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A FIFO, socket or device.
    Special(u64),
}

/// The walk, as a stream of events in depth-first, name order.
pub(crate) enum WalkEvent {
    /// A directory's entries follow, until the matching `Leave`.
    Enter { name: Vec<u8>, meta: Metadata },
    /// A non-directory entry of the current directory.
    Entry { name: Vec<u8>, meta: Metadata, kind: EntryKind },
    /// The current directory is complete.
    Leave,
    /// A path that could not be walked; the set goes on without it.
    Skipped { path: Vec<u8>, reason: String },
}

/// Where the walker sends its work.
pub(crate) struct WalkSinks<'a> {
    pub(crate) events: &'a Sender<WalkEvent>,
    pub(crate) jobs: &'a Sender<FileJob>,
    pub(crate) shared: &'a Shared,
    pub(crate) component: usize,
    /// The component's source path; skipped paths are reported relative to it.
    pub(crate) root: &'a Path,
}

impl WalkSinks<'_> {
    fn event(&self, e: WalkEvent) -> bool {
        self.events.send(e).is_ok() && !self.shared.is_cancelled()
    }

    /// Sends a non-directory entry (named `name`, at `path`) with its lstat metadata.
    pub(crate) fn entry(&self, path: &Path, name: Vec<u8>, m: &std::fs::Metadata) -> bool {
        let meta = metadata_of(m);
        let ft = m.file_type();
        let kind = if ft.is_file() {
            let (reply, rx) = bounded(1);
            let job = FileJob { path: path.to_path_buf(), meta, component: self.component, reply };
            if self.jobs.send(job).is_err() {
                return false;
            }
            EntryKind::File(rx)
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => EntryKind::Symlink(target.into_os_string().into_vec()),
                Err(e) => return self.skip(path, &e.to_string()),
            }
        } else if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            EntryKind::Special(m.rdev())
        } else {
            return self.skip(path, "unknown file type");
        };
        self.event(WalkEvent::Entry { name, meta, kind })
    }

    fn skip(&self, path: &Path, reason: &str) -> bool {
        let rel = path.strip_prefix(self.root).ok().filter(|r| !r.as_os_str().is_empty());
        let shown = rel.or_else(|| path.file_name().map(Path::new)).unwrap_or(path);
        self.event(WalkEvent::Skipped {
            path: shown.as_os_str().as_bytes().to_vec(),
            reason: reason.to_owned(),
        })
    }
}

fn sorted_names(dir: &Path) -> std::io::Result<Vec<OsString>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name());
    }
    names.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

struct Frame {
    path: PathBuf,
    names: std::vec::IntoIter<OsString>,
}

/// Walks the directory `root` (whose own `Enter` the caller has sent) and sends every entry
/// below it, ending with the `Leave` of `root`. Returns false when the walk was cancelled.
pub(crate) fn walk_dir(root: &Path, sinks: &WalkSinks<'_>) -> bool {
    let names = match sorted_names(root) {
        Ok(n) => n,
        Err(e) => {
            return sinks.skip(root, &format!("cannot list directory: {e}"))
                && sinks.event(WalkEvent::Leave)
        }
    };
    let mut stack = vec![Frame { path: root.to_path_buf(), names: names.into_iter() }];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            if !sinks.event(WalkEvent::Leave) {
                return false;
            }
            continue;
        };
        let path = frame.path.join(&name);
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                if !sinks.skip(&path, &format!("vanished or unreadable: {e}")) {
                    return false;
                }
                continue;
            }
        };
        let name = name.into_vec();
        let ok = if m.is_dir() {
            match sorted_names(&path) {
                Ok(names) => {
                    let ok = sinks.event(WalkEvent::Enter { name, meta: metadata_of(&m) });
                    stack.push(Frame { path, names: names.into_iter() });
                    ok
                }
                Err(e) => sinks.skip(&path, &format!("cannot list directory: {e}")),
            }
        } else {
            sinks.entry(&path, name, &m)
        };
        if !ok {
            return false;
        }
    }
    true
}
