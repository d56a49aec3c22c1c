//! Extended attributes (POSIX ACLs among them) of source and target entries.
//!
//! Linux has no `*at` form of the xattr calls before 6.13, and `fgetxattr` does not work on an
//! `O_PATH` descriptor or a symlink. So an entry `name` in an open directory is named by the
//! path `/proc/self/fd/<dir>/<name>`: short whatever the depth of the directory, resolved
//! through the open descriptor (not a path that could have been swapped), and used with the
//! `l*` calls, which never follow a symlink that `name` is. Where `/proc` is not mounted, the
//! caller's full path is used instead.

use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::tree::Xattr;

/// Values larger than this are not kept (Linux allows 64 KiB; some file systems more).
pub(crate) const XATTR_VALUE_MAX: usize = 1 << 20;

/// Most bytes one list of names, or one value, may take before it is refused.
const READ_MAX: usize = 16 << 20;

/// Whether `/proc/self/fd` can name entries of open directories.
fn proc_fd_usable() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// The path that names `name` in the open directory `dir`: through `/proc/self/fd`, or
/// `fallback` (the entry's full path) when `/proc` is not mounted.
pub(crate) fn entry_path(
    dir: impl AsFd,
    name: &[u8],
    fallback: impl FnOnce() -> PathBuf,
) -> PathBuf {
    if proc_fd_usable() {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_fd().as_raw_fd()));
        p.push(OsStr::from_bytes(name));
        p
    } else {
        fallback()
    }
}

/// Whether an error means "this file system keeps no extended attributes".
fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP || e == Errno::NOSYS
}

/// Calls `query` with a buffer of 4 KiB (one call for the usual answer, empty or short), and
/// when that is too small asks `size` how large the answer is and calls it again with that much
/// (again when it grew in between); `Ok(None)` when the attribute vanished in between.
fn sized(
    mut size: impl FnMut() -> rustix::io::Result<usize>,
    mut query: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = 4096;
    for _ in 0..8 {
        let mut buf = vec![0u8; len];
        match query(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => {}
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        len = match size() {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if len > READ_MAX {
            return Err(std::io::Error::other(format!("{len} bytes of extended attributes")));
        }
    }
    Err(std::io::Error::other("extended attributes kept changing while read"))
}

/// The extended attributes of an open file or directory, or of a path (never following a
/// symlink it is), sorted by name. A file system without them gives none.
///
/// # Errors
/// Listing or reading failed (other than for lack of support, or an attribute removed while
/// read), or a value is larger than [`XATTR_VALUE_MAX`].
pub(crate) fn read<Fd: AsFd>(on: &On<'_, Fd>) -> std::io::Result<Vec<Xattr>> {
    let listed = match on {
        On::Fd(fd) => sized(|| rustix::fs::flistxattr_query(fd), |b| rustix::fs::flistxattr(fd, b)),
        On::Path(p) => {
            sized(|| rustix::fs::llistxattr_query(*p), |b| rustix::fs::llistxattr(*p, b))
        }
    };
    let names = match listed {
        Ok(Some(names)) => names,
        Ok(None) => return Ok(Vec::new()),
        Err(e) if e.raw_os_error().is_some_and(|n| unsupported(Errno::from_raw_os_error(n))) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let n = OsStr::from_bytes(name);
        let value = match on {
            On::Fd(fd) => {
                sized(|| rustix::fs::fgetxattr_query(fd, n), |b| rustix::fs::fgetxattr(fd, n, b))
            }
            On::Path(p) => {
                sized(|| rustix::fs::lgetxattr_query(*p, n), |b| rustix::fs::lgetxattr(*p, n, b))
            }
        }
        .map_err(|e| {
            std::io::Error::new(e.kind(), format!("{}: {e}", crate::tree::escape_name(name)))
        })?;
        let Some(value) = value else { continue };
        if value.len() > XATTR_VALUE_MAX {
            return Err(std::io::Error::other(format!(
                "{}: a value of {} bytes (at most {} are kept)",
                crate::tree::escape_name(name),
                value.len(),
                XATTR_VALUE_MAX
            )));
        }
        out.push(Xattr { name: name.to_vec(), value });
    }
    out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

/// Where attributes are set: an open file or directory, or a path (never following a symlink
/// it is: for symlinks and special files, which are not opened).
pub(crate) enum On<'a, Fd> {
    Fd(Fd),
    Path(&'a Path),
}

/// Removes from the open file or directory `fd` every attribute that is not in `keep`, except
/// `security.*` (labels the system gives new files, which a set without them has no say on):
/// an access ACL inherited from the default ACL of an existing directory, or attributes of the
/// entry a restore replaced. Returns a message for each one that could not be removed.
pub(crate) fn remove_others(fd: impl AsFd, keep: &[Xattr]) -> Vec<String> {
    let present = match read(&On::Fd(&fd)) {
        Ok(present) => present,
        Err(e) => return vec![format!("extended attributes not read: {e}")],
    };
    present
        .iter()
        .filter(|x| !x.name.starts_with(b"security.") && !keep.iter().any(|k| k.name == x.name))
        .filter_map(|x| {
            rustix::fs::fremovexattr(&fd, OsStr::from_bytes(&x.name)).err().map(|e| {
                format!(
                    "extended attribute {} not in the set, not removed: {}",
                    crate::tree::escape_name(&x.name),
                    std::io::Error::from(e)
                )
            })
        })
        .collect()
}

/// Sets every attribute of `xattrs`; returns a message for each one that could not be set.
pub(crate) fn apply<Fd: AsFd>(on: On<'_, Fd>, xattrs: &[Xattr]) -> Vec<String> {
    let flags = rustix::fs::XattrFlags::empty();
    xattrs
        .iter()
        .filter_map(|x| {
            let name = OsStr::from_bytes(&x.name);
            let set = match &on {
                On::Fd(fd) => rustix::fs::fsetxattr(fd, name, &x.value, flags),
                On::Path(path) => rustix::fs::lsetxattr(*path, name, &x.value, flags),
            };
            set.err().map(|e| {
                format!(
                    "extended attribute {} not restored: {}",
                    crate::tree::escape_name(&x.name),
                    std::io::Error::from(e)
                )
            })
        })
        .collect()
}
