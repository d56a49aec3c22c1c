//! Durable writes to the local repository (FORMAT.md §13, "Assumptions about storage").
//!
//! Every repository file is written to `REPO/tmp/`, fsynced, renamed to its final name, and
//! the directory holding the final name is fsynced: only then does the file exist for readers
//! and for anything that references it. A crash before the rename leaves a temp file that no
//! reader looks at; a crash after it leaves a complete file.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{IoContext, Result};

/// Mode of files in the repository: read-only once written (packs, indexes, manifests).
pub(crate) const FILE_MODE: u32 = 0o444;
/// Mode of directories in the repository.
pub(crate) const DIR_MODE: u32 = 0o700;

/// Fsyncs a directory, making the creation, rename or removal of its entries durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// A unique name for a temp file in this process.
pub(crate) fn temp_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:08x}.tmp", std::process::id())
}

/// Creates a new temp file in `tmp_dir` for writing.
pub(crate) fn create_temp(tmp_dir: &Path, prefix: &str) -> Result<(File, PathBuf)> {
    let path = tmp_dir.join(temp_name(prefix));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .at(&path)?;
    Ok((file, path))
}

/// Makes a written temp file durable under `dest`: fsync the file, set it read-only, rename,
/// fsync the destination directory. `dest`'s directory must exist (see [`ensure_dir`]).
/// `label` names the crash points (`<label>_synced`, `<label>_renamed`, `<label>_durable`).
pub(crate) fn commit_temp(file: &File, temp: &Path, dest: &Path, label: &str) -> Result<()> {
    file.sync_all().at(temp)?;
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE)).at(temp)?;
    crate::crash::point(label, "synced");
    fs::rename(temp, dest).at(dest)?;
    crate::crash::point(label, "renamed");
    fsync_dir(dest.parent().unwrap_or(Path::new(".")))?;
    crate::crash::point(label, "durable");
    Ok(())
}

/// Writes `bytes` to `dest` atomically and durably (temp file in `tmp_dir`, fsync, rename,
/// directory fsync). On error the temp file is removed and `dest` is untouched. `label` names
/// the crash points, as for [`commit_temp`].
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8], label: &str) -> Result<()> {
    let (mut file, temp) = create_temp(tmp_dir, label)?;
    let result =
        file.write_all(bytes).at(&temp).and_then(|()| commit_temp(&file, &temp, dest, label));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes `bytes` to `dest` durably like [`write_atomic`], but only if `dest` does not exist:
/// the temp file is hard-linked to its final name, which fails when the name is taken, so of
/// several writers racing for one name exactly one succeeds. The loser gets an
/// [`std::io::ErrorKind::AlreadyExists`] error naming `dest`; `dest` is untouched.
pub(crate) fn write_new(tmp_dir: &Path, dest: &Path, bytes: &[u8], label: &str) -> Result<()> {
    let (mut file, temp) = create_temp(tmp_dir, label)?;
    let result = file.write_all(bytes).at(&temp).and_then(|()| {
        file.sync_all().at(&temp)?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE)).at(&temp)?;
        crate::crash::point(label, "synced");
        fs::hard_link(&temp, dest).at(dest)?;
        crate::crash::point(label, "renamed");
        fsync_dir(dest.parent().unwrap_or(Path::new(".")))?;
        crate::crash::point(label, "durable");
        Ok(())
    });
    let _ = fs::remove_file(&temp);
    result
}

/// Creates `dir` (one level) if missing, durably: a new directory is fsynced in its parent.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => fsync_dir(dir.parent().unwrap_or(Path::new("."))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e).at(dir),
    }
}

use std::os::unix::fs::DirBuilderExt;
