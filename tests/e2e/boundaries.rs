//! What a snapshot does not read although it is below a source (issue 14, "Do not read what is
//! not data"): other file systems with `--one-file-system`, pseudo file systems always, the
//! repository itself; and an empty dump is named, or refused with `--require-data`.

use std::ffi::OsStr;

use crate::support::{write, Env, Tmpfs};

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    n.sort();
    n
}

// See: issue 14 ("`store snapshot /` today reads `/proc/*/pagemap` (256 GiB each) for as long as
// you let it"; "`--one-file-system`").
#[test]
fn pseudo_file_systems_are_never_read_and_one_file_system_keeps_mount_points_empty() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    let _proc = Tmpfs::mount_fs(&src.join("proc"), "proc", "ro");
    let _other = Tmpfs::mount(&src.join("mnt"), "4m");
    write(&src.join("mnt/inner.txt"), b"on another file system");

    let doc = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!(doc["excluded"], 1, "only /proc: {doc}");
    let out = env.path("out");
    env.restore("latest", &out);
    assert_eq!(names(&out.join("src")), ["a.txt", "mnt", "proc"]);
    assert!(names(&out.join("src/proc")).is_empty(), "the mount point only, empty");
    assert_eq!(std::fs::read(out.join("src/mnt/inner.txt")).unwrap(), b"on another file system");

    let run = env.run("snapshot", &[OsStr::new("-x"), OsStr::new("-v"), src.as_os_str()]).ok();
    assert!(run.stdout.contains("excluded  src/mnt") && run.stdout.contains("excluded  src/proc"));
    let out = env.path("out-x");
    env.restore("latest", &out);
    assert_eq!(names(&out.join("src")), ["a.txt", "mnt", "proc"]);
    assert!(names(&out.join("src/mnt")).is_empty(), "another file system: its mount point only");
}

// See: issue 14 ("a source that contains the repository (or its cache) leaves them out and says
// so; today every set stores the repository's own packs again").
#[test]
fn a_source_that_contains_the_repository_leaves_it_out_and_says_so() {
    let env = Env::new();
    let src = env.path("data");
    write(&src.join("doc.txt"), b"document");
    let repo = src.join("backup/repo");
    let cache = src.join("cache-here");
    let cmd = |args: &[&OsStr]| {
        let mut all = vec![
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("--cache-dir"),
            cache.as_os_str(),
        ];
        all.extend_from_slice(args);
        crate::support::store(all)
    };
    cmd(&[OsStr::new("init")]).ok();
    cmd(&[OsStr::new("snapshot"), src.as_os_str()]).ok();
    let run = cmd(&[OsStr::new("snapshot"), OsStr::new("--json"), src.as_os_str()]).ok();
    assert!(
        run.stderr.contains("left out data/backup/repo")
            && run.stderr.contains("left out data/cache-here"),
        "{}",
        run.stderr
    );
    let doc = run.json();
    assert_eq!(doc["files"], 1, "only the document: {doc}");
    let out = env.path("out");
    cmd(&[OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()])
        .ok();
    assert_eq!(names(&out.join("data")), ["backup", "doc.txt"]);
    assert!(names(&out.join("data/backup")).is_empty());
}

// See: issue 14 ("`pg_dump ... | store snapshot --stdin db` without `pipefail` commits an empty
// dump with exit 0 today").
#[test]
fn an_empty_dump_is_named_and_refused_with_require_data() {
    let env = Env::new();
    env.init();
    let run = env.run("snapshot", &["--component-cmd", "db=true"]).ok();
    assert!(run.stderr.contains("component db yielded no data"), "{}", run.stderr);
    let run = env.run("snapshot", &["--require-data", "--component-cmd", "db=exit 0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("db") && run.stderr.contains("no data"), "{}", run.stderr);
    assert_eq!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len(), 1);
    // A dump with data is fine.
    env.run("snapshot", &["--require-data", "--component-cmd", "db=echo dump"]).ok();
    // Standard input, empty.
    let out = std::process::Command::new(crate::support::bin())
        .args(["snapshot", "--require-data", "--stdin", "db", "--repo"])
        .arg(env.repo())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len(), 2);
}

// See: issue 14 ("Sockets are never restored and device nodes are skipped when not root, with
// exit 0 and no word: name each skipped entry (exit 3)").
#[test]
fn sockets_and_devices_a_restore_cannot_make_are_named_and_exit_3() {
    use rustix::fs::{FileType, Mode, CWD};
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    let mode = Mode::from_raw_mode(0o644);
    rustix::fs::mknodat(CWD, src.join("fifo"), FileType::Fifo, mode, 0).unwrap();
    rustix::fs::mknodat(
        CWD,
        src.join("null"),
        FileType::CharacterDevice,
        mode,
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let listener = std::os::unix::net::UnixListener::bind(src.join("sock")).unwrap();
    env.snapshot(&[&src]);
    drop(listener);

    // As root: everything but the socket.
    let out = env.path("out");
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("src/sock: a socket is made by the program"), "{}", run.stderr);
    assert!(!run.stderr.contains("src/null"), "{}", run.stderr);
    let ft = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().file_type();
    assert!(ft(&out.join("src/fifo")).is_fifo() && ft(&out.join("src/null")).is_char_device());
    assert!(!out.join("src/sock").exists());

    // Without root: the device is named too; the rest is restored.
    let out = env.path("out-nobody");
    let run = crate::support::restore_as_nobody(&env, "latest", &out);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("src/null: a device node needs root"), "{}", run.stderr);
    assert!(run.stderr.contains("src/sock"), "{}", run.stderr);
    assert!(ft(&out.join("src/fifo")).is_fifo());
    assert_eq!(std::fs::read(out.join("src/a.txt")).unwrap(), b"a");
    assert!(!out.join("src/null").exists());
}

/// Opens (creating when `create`) the chain of directories `names` below `root`, one `openat`
/// at a time, so no path is longer than one name; returns the deepest.
fn open_chain(root: &std::path::Path, names: &[String], create: bool) -> rustix::fd::OwnedFd {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut dir = rustix::fs::open(root, flags, Mode::empty()).unwrap();
    for n in names {
        if create {
            rustix::fs::mkdirat(&dir, n.as_str(), Mode::from_raw_mode(0o755)).unwrap();
        }
        dir = rustix::fs::openat(&dir, n.as_str(), flags, Mode::empty()).unwrap();
    }
    dir
}

// See: issue 14 ("everything below 4,096 bytes of path is skipped today (ENAMETOOLONG) because
// the walker stats full paths; walk with directory descriptors").
#[test]
fn paths_longer_than_4096_bytes_are_backed_up_and_restored() {
    use rustix::fs::{Mode, OFlags};
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let names: Vec<String> = (0..24).map(|i| format!("{i:02}{}", "d".repeat(230))).collect();
    let deep = open_chain(&src, &names, true);
    let file_flags = OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&deep, "deep.txt", file_flags, Mode::from_raw_mode(0o644)).unwrap();
    rustix::io::write(&fd, b"five and a half kilobytes down").unwrap();
    drop(fd);
    rustix::fs::symlinkat("deep.txt", &deep, "link").unwrap();
    let path_len: usize = names.iter().map(|n| n.len() + 1).sum::<usize>() + "deep.txt".len();
    assert!(path_len > 5000, "{path_len}");

    let doc = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!((doc["files"].as_u64(), doc["symlinks"].as_u64()), (Some(1), Some(1)), "{doc}");
    assert!(doc["issues"].as_array().unwrap().is_empty(), "{doc}");
    let out = env.path("out");
    env.restore("latest", &out);
    let restored = open_chain(&out.join("src"), &names, false);
    let fd = rustix::fs::openat(&restored, "deep.txt", OFlags::RDONLY, Mode::empty()).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::io::read(&fd, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"five and a half kilobytes down");
    let target = rustix::fs::readlinkat(&restored, "link", Vec::new()).unwrap();
    assert_eq!(target.as_bytes(), b"deep.txt");
    // Unchanged: the next set reads nothing again.
    let doc = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!(doc["files_unchanged"], 1);
}
