//! `store mount` (also `mount-restore`): the engine's read-only [`store::mount::MountView`]
//! served through FUSE. Runs until Ctrl-C, SIGTERM, or `fusermount3 -u MOUNTPOINT`.

use std::ffi::OsStr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};
use store::mount::{Attr, FileKind, MountOptions, MountView};

use super::{lock, RepoArg};
use crate::args::MountArgs;

/// How long the kernel may cache attributes and entries; sets written meanwhile appear after
/// at most this long.
const TTL: Duration = Duration::from_secs(1);

/// Refuses a mountpoint that is not an empty directory, or that something is mounted on already
/// (mounting over it would hide what is there, or stack a second mount on the first).
fn check_mountpoint(dir: &std::path::Path) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("mountpoint {}: not a directory we can read", dir.display()))?;
    if entries.next().is_some() {
        anyhow::bail!("mountpoint {} is not empty: mount on an empty directory", dir.display());
    }
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Field 5 of each line is the mount point (spaces escaped as \040).
    let taken = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|p| std::path::Path::new(&p.replace("\\040", " ")) == canonical);
    if taken {
        anyhow::bail!(
            "mountpoint {} is already a mount point (unmount it first: fusermount3 -u {})",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

pub fn run(repo_arg: &RepoArg, args: &MountArgs) -> Result<ExitCode> {
    check_mountpoint(&args.mountpoint)?;
    let repo = Arc::new(repo_arg.open()?);
    // A shared lock for as long as the mount lives: prune cannot delete what is being read.
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "mount", true)?;
    let opts = MountOptions {
        chunk_cache_bytes: usize::try_from(args.memory_cache).unwrap_or(usize::MAX),
        ..MountOptions::default()
    };
    let view = MountView::new(Arc::clone(&repo), opts).context("cannot open the repository")?;
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("store:{}", repo.storage().location())),
        MountOption::Subtype("store".into()),
        MountOption::DefaultPermissions,
    ];
    if args.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(4);
    let mountpoint = &args.mountpoint;
    let session = fuser::Session::new(Fuse { view }, mountpoint, &config)
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handler")?;
    }
    let background = session.spawn().context("cannot start the FUSE session")?;
    crate::output::stderr!(
        "store: repository mounted read-only at {}; Ctrl-C or `fusermount3 -u {}` unmounts",
        mountpoint.display(),
        mountpoint.display()
    );
    loop {
        if stop.load(Ordering::SeqCst) {
            background
                .umount_and_join()
                .with_context(|| format!("unmounting {}", mountpoint.display()))?;
            break;
        }
        if background.guard.is_finished() {
            // Unmounted from outside (fusermount3 -u).
            background.join().context("the FUSE session failed")?;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::output::stderr!("store: unmounted {}", mountpoint.display());
    Ok(ExitCode::SUCCESS)
}

struct Fuse {
    view: MountView,
}

fn time(t: store::Time) -> SystemTime {
    let at = Duration::new(t.secs.unsigned_abs(), 0);
    let secs = if t.secs >= 0 { UNIX_EPOCH.checked_add(at) } else { UNIX_EPOCH.checked_sub(at) };
    secs.and_then(|s| s.checked_add(Duration::from_nanos(u64::from(t.nanos)))).unwrap_or(UNIX_EPOCH)
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Dir => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.mtime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.mtime),
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: u32::try_from(a.rdev).unwrap_or(0),
        blksize: 4096,
        flags: 0,
    }
}

/// Damage and read errors become EIO for that request only, and are named on stderr.
fn eio(what: &str, e: &store::Error) -> Errno {
    crate::output::stderr!("store: error: {what}: {e}");
    Errno::EIO
}

/// Answers an xattr request: the size when asked with `size` 0, the bytes when they fit,
/// `ERANGE` when they do not.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len <= size {
        reply.data(data);
    } else {
        reply.error(Errno::ERANGE);
    }
}

impl Filesystem for Fuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        use std::os::unix::ffi::OsStrExt;
        match self.view.lookup(u64::from(parent), name.as_bytes()) {
            Ok(Some(attr)) => reply.entry(&TTL, &file_attr(&attr), fuser::Generation(0)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(eio(&format!("lookup of {}", name.to_string_lossy()), &e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.view.forget(u64::from(ino), nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.getattr(u64::from(ino)) {
            Ok(Some(attr)) => reply.attr(&TTL, &file_attr(&attr)),
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(eio("getattr", &e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.readlink(u64::from(ino)) {
            Ok(Some(target)) => reply.data(&target),
            Ok(None) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(eio("readlink", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc_accmode() != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.view.open(u64::from(ino)) {
            // Set contents never change: the page cache may keep them across opens.
            Ok(Some(fh)) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
            Ok(None) => reply.error(Errno::EISDIR),
            Err(e) => reply.error(eio("open", &e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.view.read(fh.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(eio("read", &e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.view.release(fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        use std::os::unix::ffi::OsStrExt;
        let listed = self.view.readdir(u64::from(ino), offset, &mut |e| {
            reply.add(INodeNo(e.ino), e.next, file_type(e.kind), OsStr::from_bytes(e.name))
        });
        match listed {
            Ok(true) => reply.ok(),
            Ok(false) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(eio("readdir", &e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        use std::os::unix::ffi::OsStrExt;
        match self.view.xattrs(u64::from(ino)) {
            Ok(Some(xattrs)) => match xattrs.iter().find(|x| x.name == name.as_bytes()) {
                Some(x) => reply_sized(reply, size, &x.value),
                None => reply.error(Errno::NO_XATTR),
            },
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(eio("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.view.xattrs(u64::from(ino)) {
            Ok(Some(xattrs)) => {
                let mut names = Vec::new();
                for x in &xattrs {
                    names.extend_from_slice(&x.name);
                    names.push(0);
                }
                reply_sized(reply, size, &names);
            }
            Ok(None) => reply.error(Errno::ENOENT),
            Err(e) => reply.error(eio("listxattr", &e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }
}

/// O_WRONLY | O_RDWR: opening for writing is refused.
fn libc_accmode() -> i32 {
    rustix::fs::OFlags::WRONLY.bits() as i32 | rustix::fs::OFlags::RDWR.bits() as i32
}
