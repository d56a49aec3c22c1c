//! Writing into the restore target, safely (the safety rules in the module documentation of
//! `restore`): directories entered with `O_NOFOLLOW` relative to an open parent, files written
//! under a temporary name and renamed, symlinks and special files created, never followed,
//! metadata applied last on the descriptor, runs of zeros left as holes, and what is already in
//! the target compared with what the set holds (`--overwrite if-changed`).

use super::batch::{Buffers, FileOutcome};
#[allow(clippy::wildcard_imports, reason = "the parts of restore share its imports")]
use super::*;

pub(super) fn timespec(t: Time) -> Timespec {
    Timespec { tv_sec: t.secs, tv_nsec: t.nanos.into() }
}

pub(super) fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps { last_access: timespec(meta.mtime), last_modification: timespec(meta.mtime) }
}

/// What a file just created in a directory has without being told: its owner and mode, and
/// whether it may have inherited attributes (the directory has a default ACL).
#[derive(Debug, Clone, Copy)]
pub(super) struct Fresh {
    uid: u32,
    gid: u32,
    /// Its permission bits, when known.
    mode: Option<u32>,
    inherits: bool,
}

/// What files created in directory `dir` get: this process's owner (the directory's group
/// when it is set-group-id), and whether a default ACL hands them attributes (assumed when it
/// cannot be told).
fn fresh_in(dir: &OwnedFd) -> Option<Fresh> {
    let st = rustix::fs::fstat(dir).ok()?;
    let gid =
        if st.st_mode & 0o2000 != 0 { st.st_gid } else { rustix::process::getegid().as_raw() };
    let acl = rustix::fs::fgetxattr(dir, c"system.posix_acl_default", &mut [0u8; 0][..]);
    let inherits = !matches!(acl, Err(Errno::NODATA | Errno::NOTSUP));
    Some(Fresh { uid: rustix::process::geteuid().as_raw(), gid, mode: None, inherits })
}

/// This process's file mode creation mask, from `/proc/self/status` (none without it).
pub(super) fn process_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Applies ownership (as root), mode, extended attributes and times to an open file or
/// directory (`path` in messages). Attributes are set after the owner (a change of owner
/// clears a file capability) and each one that cannot be set is recorded; the rest is applied.
/// For a file this process just created (`fresh`), what it already has is not set again:
/// the owner, the mode, and no attribute to remove where nothing could be inherited.
pub(super) fn apply_meta(
    fd: impl AsFd,
    meta: &Metadata,
    as_root: bool,
    (shared, path): (&Shared, &str),
) -> rustix::io::Result<()> {
    apply_meta_fresh(fd, meta, (as_root, None), (shared, path))
}

fn apply_meta_fresh(
    fd: impl AsFd,
    meta: &Metadata,
    (as_root, fresh): (bool, Option<Fresh>),
    (shared, path): (&Shared, &str),
) -> rustix::io::Result<()> {
    let mut mode = meta.mode & 0o7777;
    if as_root {
        if fresh.is_none_or(|f| (f.uid, f.gid) != (meta.uid, meta.gid)) {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(meta.uid)),
                Some(rustix::fs::Gid::from_raw(meta.gid)),
            )?;
        }
    } else {
        mode &= 0o1777;
    }
    if fresh.and_then(|f| f.mode) != Some(mode) {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    }
    let mut failed = crate::xattr::apply(crate::xattr::On::Fd(&fd), &meta.xattrs);
    if meta.records_xattrs() && fresh.is_none_or(|f| f.inherits) {
        failed.extend(crate::xattr::remove_others(&fd, &meta.xattrs));
    }
    for failed in failed {
        not_restored(shared, path, failed);
    }
    rustix::fs::futimens(&fd, &timestamps(meta))
}

/// Sets the extended attributes of `name` in `dir`, a symlink or special file (not opened),
/// recording each one that cannot be set under `path`.
fn apply_xattrs_at(ctx: &Ctx<'_>, dir: &DirHandle<'_>, name: &[u8], xattrs: &[Xattr], path: &str) {
    use std::os::unix::ffi::OsStrExt;
    if xattrs.is_empty() {
        return;
    }
    let at = crate::xattr::entry_path(&dir.fd, name, || {
        ctx.opts.target.join(std::ffi::OsStr::from_bytes(&join_raw(&dir.raw, name)))
    });
    for failed in crate::xattr::apply::<&OwnedFd>(crate::xattr::On::Path(&at), xattrs) {
        not_restored(dir.shared, path, failed);
    }
}

/// An open directory of the target; its metadata is applied when the last user drops it,
/// that is after everything inside it has been written.
pub(super) struct DirHandle<'a> {
    pub(super) fd: OwnedFd,
    pub(super) meta: Option<Metadata>,
    /// Below the target, as shown in messages.
    pub(super) path: String,
    /// Below the target, raw bytes (to link to a file in it).
    pub(super) raw: Vec<u8>,
    pub(super) as_root: bool,
    pub(super) shared: &'a Shared,
    /// What files created in it get unasked (looked at once, on first need).
    pub(super) inherited: std::sync::OnceLock<Option<Fresh>>,
}

impl DirHandle<'_> {
    fn fresh(&self) -> Option<Fresh> {
        *self.inherited.get_or_init(|| fresh_in(&self.fd))
    }
}

impl Drop for DirHandle<'_> {
    fn drop(&mut self) {
        if let Some(meta) = &self.meta {
            if let Err(e) = apply_meta(&self.fd, meta, self.as_root, (self.shared, &self.path)) {
                record(self.shared, &self.path, format!("cannot set metadata: {e}"));
            }
        }
    }
}

pub(super) fn open_dir_at(dir: impl AsFd, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The temporary name a file or symlink is created under before it is renamed into place;
/// the same on every run, so an interrupted restore's leftover is replaced by the next one.
pub(super) fn temp_name(name: &[u8]) -> Vec<u8> {
    let hash = Id::hash(name).to_hex();
    format!(".store-restore-{}", &hash[..16]).into_bytes()
}

/// Checks the target directory: created if missing; refused if it holds anything, unless
/// existing entries may be kept or replaced.
pub(super) fn prepare_target(
    target: &std::path::Path,
    overwrite: Option<Overwrite>,
) -> Result<OwnedFd> {
    match std::fs::read_dir(target) {
        Ok(mut entries) => {
            if overwrite.is_none() && entries.next().is_some() {
                return Err(Error::Target {
                    path: target.to_path_buf(),
                    reason: "directory is not empty (use --overwrite never, if-changed or always \
                             to restore into it)"
                        .into(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).at(target)?;
        }
        Err(e) => return Err(Error::Target { path: target.to_path_buf(), reason: e.to_string() }),
    }
    rustix::fs::open(target, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .at(target)
}

/// Creates (or, when overwriting, reuses) directory `node` in `parent`. An existing entry that
/// is not a directory, a symlink included, is refused, never followed.
pub(super) fn make_dir<'a>(
    ctx: &Ctx<'a>,
    parent: &DirHandle<'a>,
    node: &Node,
    path: &str,
) -> Result<DirHandle<'a>> {
    let name = node.name.as_slice();
    let mkdir = || rustix::fs::mkdirat(&parent.fd, name, Mode::from_raw_mode(0o700));
    let existed = match mkdir() {
        Ok(()) => false,
        // A file, symlink or special file where the set has a directory: with `always` or
        // `if-changed` it is replaced (removed, never followed), then the directory is made.
        Err(Errno::EXIST) if replaces(ctx) && !is_dir_at(parent, name) => {
            rustix::fs::unlinkat(&parent.fd, name, AtFlags::empty()).at(path)?;
            mkdir().at(path)?;
            false
        }
        Err(Errno::EXIST) if ctx.opts.overwrite.is_some() => true,
        Err(e) => return Err(e).at(path),
    };
    let fd = open_dir_at(&parent.fd, name).map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => Error::Target {
            path: ctx.opts.target.join(path),
            reason: "exists and is not a directory (a symlink in the target is never followed)"
                .into(),
        },
        e => Error::Io { path: path.into(), cause: e.into() },
    })?;
    if !existed {
        count(ctx.shared, |r| r.dirs += 1);
    }
    let keep_as_is = existed && ctx.opts.overwrite == Some(Overwrite::Never);
    Ok(DirHandle {
        fd,
        meta: if keep_as_is { None } else { Some(node.meta.clone()) },
        path: path.to_owned(),
        raw: join_raw(&parent.raw, name),
        as_root: parent.as_root,
        shared: parent.shared,
        inherited: std::sync::OnceLock::new(),
    })
}

/// Whether an entry that is in the way may be replaced (`--overwrite always` or `if-changed`).
fn replaces(ctx: &Ctx<'_>) -> bool {
    matches!(ctx.opts.overwrite, Some(Overwrite::Always | Overwrite::IfChanged))
}

/// Whether `name` in `dir` is a directory itself (a symlink to one is not).
fn is_dir_at(dir: &DirHandle<'_>, name: &[u8]) -> bool {
    rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| file_type(&st) == rustix::fs::FileType::Directory)
}

/// What is at `name` in `dir` now (not following a symlink), if anything.
pub(super) fn existing(
    dir: &DirHandle<'_>,
    name: &[u8],
) -> rustix::io::Result<Option<rustix::fs::Stat>> {
    match rustix::fs::statat(&dir.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) fn file_type(st: &rustix::fs::Stat) -> rustix::fs::FileType {
    rustix::fs::FileType::from_raw_mode(st.st_mode)
}

/// Creates symlink `node`; returns false when an existing entry was kept.
pub(super) fn restore_symlink(
    ctx: &Ctx<'_>,
    dir: &DirHandle<'_>,
    (node, path): (&Node, &str),
    target: &[u8],
) -> rustix::io::Result<bool> {
    let name = node.name.as_slice();
    let final_name = match (existing(dir, name)?, ctx.opts.overwrite) {
        (None, _) => name.to_vec(),
        (Some(_), None | Some(Overwrite::Never)) => return Ok(false),
        (Some(st), Some(Overwrite::IfChanged))
            if file_type(&st) == rustix::fs::FileType::Symlink
                && rustix::fs::readlinkat(&dir.fd, name, Vec::new())?.as_bytes() == target =>
        {
            return Ok(false)
        }
        (Some(_), Some(_)) => temp_name(name),
    };
    if final_name != name {
        match rustix::fs::unlinkat(&dir.fd, final_name.as_slice(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    rustix::fs::symlinkat(target, &dir.fd, final_name.as_slice())?;
    let meta = &node.meta;
    if dir.as_root {
        rustix::fs::chownat(
            &dir.fd,
            final_name.as_slice(),
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    apply_xattrs_at(ctx, dir, &final_name, &meta.xattrs, path);
    rustix::fs::utimensat(
        &dir.fd,
        final_name.as_slice(),
        &timestamps(meta),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    if final_name != name {
        rustix::fs::renameat(&dir.fd, final_name.as_slice(), &dir.fd, name)?;
    }
    Ok(true)
}

/// What became of a FIFO, socket or device of the set.
pub(super) enum Special {
    /// Made.
    Created,
    /// An entry already there was kept (`--overwrite never`, or `if-changed` and the same).
    Kept,
    /// Not made, for this reason (a socket; a device without root).
    NotRestored(&'static str),
}

/// Creates a FIFO (always) or a device (as root); sockets are not recreated.
pub(super) fn restore_special(
    ctx: &Ctx<'_>,
    dir: &DirHandle<'_>,
    (node, path): (&Node, &str),
    rdev: u64,
) -> rustix::io::Result<Special> {
    use rustix::fs::FileType;
    let (name, meta) = (node.name.as_slice(), &node.meta);
    let kind = FileType::from_raw_mode(meta.mode);
    match kind {
        FileType::Fifo => {}
        FileType::CharacterDevice | FileType::BlockDevice if dir.as_root => {}
        FileType::CharacterDevice | FileType::BlockDevice => {
            return Ok(Special::NotRestored("a device node needs root to be made; not restored"))
        }
        FileType::Socket => {
            return Ok(Special::NotRestored(
                "a socket is made by the program that listens on it; not restored",
            ))
        }
        _ => return Ok(Special::NotRestored("an unknown kind of special file; not restored")),
    }
    if let Some(st) = existing(dir, name)? {
        let same = file_type(&st) == kind && (kind == FileType::Fifo || st.st_rdev == rdev);
        match ctx.opts.overwrite {
            None | Some(Overwrite::Never) => return Ok(Special::Kept),
            Some(Overwrite::IfChanged) if same => return Ok(Special::Kept),
            Some(_) => rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty())?,
        }
    }
    rustix::fs::mknodat(&dir.fd, name, kind, Mode::from_raw_mode(0o600), rdev)?;
    // By name: opening a FIFO to use fchmod would block. The parent was opened with
    // O_NOFOLLOW and the node was just created by this process.
    if dir.as_root {
        rustix::fs::chownat(
            &dir.fd,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }
    rustix::fs::chmodat(&dir.fd, name, Mode::from_raw_mode(meta.mode & 0o777), AtFlags::empty())?;
    apply_xattrs_at(ctx, dir, name, &meta.xattrs, path);
    rustix::fs::utimensat(&dir.fd, name, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(Special::Created)
}

/// What to do with a file of the set.
pub(super) enum Prepared {
    /// What is at its name stays (`--overwrite never`, or the same content): done.
    Keep(FileOutcome),
    /// Write it; `exists` when something is at its name now (to be replaced).
    Write { exists: bool },
}

/// Decides what to do with an entry already at the file's name.
pub(super) fn prepare(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<Prepared> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    // Into an empty target (every directory in it made by this restore), unnamed files are
    // linked to their name, which fails on an entry there (`finish`): no need to look first.
    if ctx.opts.overwrite.is_none() && ctx.unnamed.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(Prepared::Write { exists: false });
    }
    let Some(st) = existing(dir, name).at(&job.path)? else {
        return Ok(Prepared::Write { exists: false });
    };
    let write = Ok(Prepared::Write { exists: true });
    match ctx.opts.overwrite {
        None => Err(Error::Target {
            path: ctx.opts.target.join(&job.path),
            reason: "already exists".into(),
        }),
        Some(Overwrite::Never) => Ok(Prepared::Keep(FileOutcome::Unchanged(0))),
        Some(Overwrite::IfChanged)
            if file_type(&st) == rustix::fs::FileType::RegularFile
                && u64::try_from(st.st_size).ok() == Some(size) =>
        {
            let file = open_file_at(dir, name).at(&job.path)?;
            if content_matches(ctx.repo, &file, chunks, &mut bufs.check).at_path(&job.path)? {
                apply_meta(&file, &job.node.meta, ctx.as_root, (ctx.shared, &job.path))
                    .at(&job.path)?;
                return Ok(Prepared::Keep(FileOutcome::Unchanged(size)));
            }
            write
        }
        Some(_) => write,
    }
}

/// Where a file is written before it gets its name.
pub(super) enum Staging {
    /// An unnamed file (`O_TMPFILE`), linked to its name when complete: one directory
    /// insertion, and nothing left behind by an interrupted restore. Nobody else can open it
    /// before then, so it is created with its mode; with what it got unasked, when known.
    Unnamed(Option<Fresh>),
    /// A temporary name, renamed over the name when complete.
    Named(Vec<u8>),
}

impl Staging {
    /// Removes what a file that failed left behind (its temporary name, if it has one).
    pub(super) fn discard(&self, dir: &DirHandle<'_>) {
        if let Staging::Named(temp) = self {
            let _ = rustix::fs::unlinkat(&dir.fd, temp.as_slice(), AtFlags::empty());
        }
    }
}

/// Creates the file `job` is written into: unnamed where nothing is at its name (`exists`
/// false) and the target allows it, else under its temporary name.
pub(super) fn open_staged(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    exists: bool,
) -> Result<(Staging, File)> {
    use std::sync::atomic::Ordering;
    if !exists && ctx.unnamed.load(Ordering::Relaxed) {
        // A target restored into again may hold the leftover of an interrupted restore that
        // wrote under temporary names.
        if ctx.opts.overwrite.is_some() {
            let temp = temp_name(&job.node.name);
            match rustix::fs::unlinkat(&job.dir.fd, temp.as_slice(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e).at(&job.path),
            }
        }
        let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
        // Without a default ACL in the directory, the mask alone decides the mode it gets.
        let mut fresh = job.dir.fresh();
        let requested = match (&mut fresh, ctx.umask) {
            (Some(f), Some(umask)) if !f.inherits => {
                let requested = job.node.meta.mode & 0o777;
                f.mode = Some(requested & !umask);
                requested
            }
            _ => 0o600,
        };
        match rustix::fs::openat(&job.dir.fd, c".", flags, Mode::from_raw_mode(requested)) {
            Ok(fd) => return Ok((Staging::Unnamed(fresh), File::from(fd))),
            // A file system without unnamed files (a directory below may be another mount).
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {}
            Err(e) => return Err(e).at(&job.path),
        }
    }
    let temp = temp_name(&job.node.name);
    open_temp(job, &temp).map(|file| (Staging::Named(temp), file))
}

/// Gives the unnamed file `file` the name `name` in `dir`: by its descriptor, or through
/// `/proc/self/fd` without the capability that needs.
fn link_unnamed(file: &File, dir: impl AsFd, name: &[u8]) -> rustix::io::Result<()> {
    match rustix::fs::linkat(file, c"", &dir, name, AtFlags::EMPTY_PATH) {
        Err(Errno::NOENT | Errno::PERM | Errno::ACCESS) => {
            let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
            let follow = AtFlags::SYMLINK_FOLLOW;
            rustix::fs::linkat(rustix::fs::CWD, proc.as_str(), &dir, name, follow)
        }
        other => other,
    }
}

/// Whether unnamed files can be created and named in `target` (probed once per restore,
/// with a name of its own, removed at once).
pub(super) fn unnamed_files_work(target: &OwnedFd) -> bool {
    let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(target, c".", flags, Mode::from_raw_mode(0o600)) else {
        return false;
    };
    let file = File::from(fd);
    let probe = format!(".store-restore-probe-{}", std::process::id());
    let linked = link_unnamed(&file, target, probe.as_bytes()).is_ok();
    if linked {
        let _ = rustix::fs::unlinkat(target, probe.as_str(), AtFlags::empty());
    }
    linked
}

/// Creates the file's temporary, replacing the leftover of an interrupted restore.
pub(super) fn open_temp(job: &FileJob<'_>, temp: &[u8]) -> Result<File> {
    match rustix::fs::unlinkat(&job.dir.fd, temp, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e).at(&job.path),
    }
    let fd = rustix::fs::openat(
        &job.dir.fd,
        temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .at(&job.path)?;
    Ok(File::from(fd))
}

/// Completes a written file: length (a trailing hole), metadata, its name (linked, or renamed
/// over it), and with `--verify` a read back.
pub(super) fn finish(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    file: &File,
    staging: &Staging,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<FileOutcome> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    // The file was made empty and written from its start: its last byte was written unless
    // its last block is a whole 4 KiB block of zeros, left as a hole (`write_sparse`).
    if size.is_multiple_of(HOLE_BLOCK) && size > 0 {
        file.set_len(size).at(&job.path)?;
    }
    let fresh = match staging {
        Staging::Unnamed(fresh) => *fresh,
        Staging::Named(_) => None,
    };
    let meta = &job.node.meta;
    apply_meta_fresh(file, meta, (ctx.as_root, fresh), (ctx.shared, &job.path)).at(&job.path)?;
    let temp = match staging {
        Staging::Named(temp) => temp.clone(),
        Staging::Unnamed(_) => match link_unnamed(file, &dir.fd, name) {
            Ok(()) => return verified(ctx, job, size, chunks, bufs),
            // An entry at the name (into an empty target: put there by someone else since).
            Err(Errno::EXIST) if ctx.opts.overwrite.is_none() => {
                return Err(Error::Target {
                    path: ctx.opts.target.join(&job.path),
                    reason: "already exists".into(),
                });
            }
            Err(Errno::EXIST) if ctx.opts.overwrite == Some(Overwrite::Never) => {
                return Ok(FileOutcome::Unchanged(0));
            }
            // Something took the name since it was looked at: replace it as if it had been
            // there, through the temporary name.
            Err(Errno::EXIST) => {
                let temp = temp_name(name);
                match rustix::fs::unlinkat(&dir.fd, temp.as_slice(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e).at(&job.path),
                }
                link_unnamed(file, &dir.fd, &temp).at(&job.path)?;
                temp
            }
            Err(e) => return Err(e).at(&job.path),
        },
    };
    let placed = place(ctx, job, &temp);
    if placed.is_err() && matches!(staging, Staging::Unnamed(_)) {
        let _ = rustix::fs::unlinkat(&dir.fd, temp.as_slice(), AtFlags::empty());
    }
    placed?;
    verified(ctx, job, size, chunks, bufs)
}

/// Renames the complete file `temp` over the file's name.
fn place(ctx: &Ctx<'_>, job: &FileJob<'_>, temp: &[u8]) -> Result<()> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    let rename = || rustix::fs::renameat(&dir.fd, temp, &dir.fd, name);
    let renamed = match rename() {
        // A directory where the set has a file: with `always` or `if-changed` an empty one is
        // replaced; one with anything in it is kept, and named.
        Err(Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST) if replaces(ctx) => {
            match rustix::fs::unlinkat(&dir.fd, name, AtFlags::REMOVEDIR) {
                Ok(()) => rename(),
                Err(Errno::NOTEMPTY | Errno::EXIST) => Err(Errno::NOTEMPTY),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    renamed.map_err(|e| match e {
        Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => Error::Target {
            path: ctx.opts.target.join(&job.path),
            reason: "exists and is a directory that is not empty".into(),
        },
        e => Error::Io { path: job.path.clone().into(), cause: e.into() },
    })
}

/// A file now under its name: with `--verify`, read back and compared with the set.
fn verified(
    ctx: &Ctx<'_>,
    job: &FileJob<'_>,
    size: u64,
    chunks: &ChunkRefs,
    bufs: &mut Buffers,
) -> Result<FileOutcome> {
    let (dir, name) = (&job.dir, job.node.name.as_slice());
    if ctx.opts.verify {
        let file = open_file_at(dir, name).at(&job.path)?;
        if !content_matches(ctx.repo, &file, chunks, &mut bufs.check).at_path(&job.path)? {
            return Err(Error::RestoredDiffers { path: job.path.clone() });
        }
        count(ctx.shared, |r| r.verified += 1);
    }
    Ok(FileOutcome::Written(size))
}

pub(super) fn open_file_at(dir: &DirHandle<'_>, name: &[u8]) -> rustix::io::Result<File> {
    let fd = rustix::fs::openat(
        &dir.fd,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

pub(super) const HOLE_BLOCK: u64 = 4096;

pub(super) fn is_zero(block: &[u8]) -> bool {
    let mut words = block.chunks_exact(16);
    let head = words.by_ref().all(|w| w.iter().fold(0u8, |acc, &b| acc | b) == 0);
    head && words.remainder().iter().all(|&b| b == 0)
}

/// Writes `data` at `offset`, skipping whole file-system blocks of zeros (left as holes in
/// a new file).
pub(super) fn write_sparse(file: &File, offset: u64, data: &[u8]) -> std::io::Result<()> {
    let mut run: Option<usize> = None;
    let mut pos = 0usize;
    while pos < data.len() {
        let abs = offset + pos as u64;
        let step = usize::try_from(HOLE_BLOCK - abs % HOLE_BLOCK).unwrap_or(data.len());
        let end = (pos + step).min(data.len());
        let whole_block = end - pos == step;
        let zero = whole_block && is_zero(&data[pos..end]);
        match (zero, run) {
            (false, None) => run = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&data[start..pos], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

/// Whether `file` holds exactly the content of `chunks`: read chunk by chunk and hashed.
pub(super) fn content_matches(
    repo: &Repository,
    file: &File,
    chunks: &ChunkRefs,
    buf: &mut Vec<u8>,
) -> Result<std::io::Result<bool>> {
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut outcome: std::io::Result<bool> = Ok(true);
    for_each_chunk(repo, chunks, |id| {
        if !matches!(outcome, Ok(true)) {
            return Ok(());
        }
        let loc = repo.index()?.get(&id)?.ok_or(Error::BlobNotIndexed { id })?;
        buf.resize(loc.entry.raw_len as usize, 0);
        outcome = match reader.read_exact(buf) {
            Ok(()) => Ok(repo.blob_id(buf) == id),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        };
        Ok(())
    })?;
    if matches!(outcome, Ok(true)) {
        let mut one = [0u8; 1];
        outcome = reader.read(&mut one).map(|n| n == 0);
    }
    Ok(outcome)
}

/// Turns the read-side result of [`content_matches`] into a crate error naming the file.
pub(super) trait AtPath<T> {
    fn at_path(self, path: &str) -> Result<T>;
}

impl<T> AtPath<T> for Result<std::io::Result<T>> {
    fn at_path(self, path: &str) -> Result<T> {
        self?.at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn zero_blocks_become_holes_and_the_content_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 64 * 1024];
        data[5000] = 1; // second block is data; the others are zero
        data[60_000..60_010].fill(7);
        // Written at an unaligned offset so block boundaries fall inside the buffer.
        write_sparse(&file, 100, &data).unwrap();
        file.set_len(100 + data.len() as u64).unwrap();
        let back = std::fs::read(&path).unwrap();
        assert_eq!(&back[100..], &data[..]);
        assert!(back[..100].iter().all(|&b| b == 0));
        use std::os::unix::fs::MetadataExt;
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 32 * 1024, "{allocated} bytes allocated for a mostly empty file");
    }

    #[test]
    fn zero_detection() {
        assert!(is_zero(&[0u8; 4096]));
        let mut b = [0u8; 4096];
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[3] = 9;
        assert!(!is_zero(&b));
        assert!(!is_zero(&[0, 0, 1]));
    }

    #[test]
    fn temp_names_are_short_and_stable() {
        let long = vec![b'x'; 255];
        assert_eq!(temp_name(&long), temp_name(&long));
        assert!(temp_name(&long).len() < 40);
        assert_ne!(temp_name(b"a"), temp_name(b"b"));
    }
}
