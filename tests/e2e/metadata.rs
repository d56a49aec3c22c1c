//! What a set keeps of a file besides its bytes (issue 14, "Keep what the source has"): extended
//! attributes in every namespace (POSIX ACLs and file capabilities among them) on files,
//! directories and symlinks; hard-link groups; times of any year with nanoseconds; device
//! numbers. Each is compared after a snapshot, a restore and in the mount; a version-1
//! repository keeps working, written as version 1.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::mount::Mounted;
use crate::support::{assert_same_tree, set_mtime_at, snapshot_tree, write, xattrs_of, Env};

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {} (.ci/setup installs acl and libcap2-bin)",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `security.capability` for `cap_net_bind_service=ep` (VFS_CAP_REVISION_2, effective).
const CAP_NET_BIND_SERVICE: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// A tree with every kind of metadata a set must keep; returns its root.
pub(crate) fn crafted(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    write(&src.join("docs/a.txt"), b"document a");
    write(&src.join("docs/binary"), b"\x7fELF pretend binary");
    write(&src.join("other/outside-link"), b"linked from outside the source");
    std::fs::hard_link(src.join("other/outside-link"), env.path("elsewhere")).unwrap();
    // One file under three names in three directories.
    write(&src.join("docs/linked"), b"one file, three names");
    std::fs::hard_link(src.join("docs/linked"), src.join("other/linked-2")).unwrap();
    std::fs::hard_link(src.join("docs/linked"), src.join("linked-3")).unwrap();
    std::os::unix::fs::symlink("docs/a.txt", src.join("sym")).unwrap();
    sh(&format!("mkfifo {}", src.join("fifo").display()));
    sh(&format!("mknod {} c 1 3", src.join("null-dev").display()));

    // Extended attributes in the user, trusted and security namespaces, binary values. (The
    // owner first: a change of owner clears a file capability, on restore too.)
    std::os::unix::fs::lchown(src.join("docs/binary"), Some(1234), Some(5678)).unwrap();
    setxattr(&src.join("docs/a.txt"), "user.origin", b"alfresco\0with\xffbytes");
    setxattr(&src.join("docs/a.txt"), "user.empty", b"");
    setxattr(&src.join("docs"), "user.dir-label", b"contentstore");
    setxattr(&src, "user.root-label", b"the component's own directory");
    setxattr(&src.join("sym"), "trusted.on-a-symlink", b"symlinks have attributes too");
    setxattr(&src.join("docs/linked"), "user.shared", b"one inode, one set of attributes");
    setxattr(&src.join("docs/binary"), "security.capability", &CAP_NET_BIND_SERVICE);
    // POSIX ACLs: an access ACL on a file, a default ACL on a directory.
    sh(&format!("setfacl -m u:nobody:r,g:nogroup:rw {}", src.join("docs/a.txt").display()));
    sh(&format!("setfacl -d -m u:nobody:rx {}", src.join("other").display()));

    // Times no i64 of nanoseconds holds (2300 and 1500), with nanoseconds, and owners.
    set_mtime_at(&src.join("docs/a.txt"), 10_413_792_000, 123_456_789);
    set_mtime_at(&src.join("other/outside-link"), -14_831_769_600, 7);
    set_mtime_at(&src.join("docs"), 4_102_444_800, 999_999_999);
    src
}

// See: issue 14 ("xattrs/ACLs, hard links, mtimes past 2262 ... dropped silently"; "a crafted
// tree with every case above round-trips through snapshot, restore and the mount").
#[test]
fn xattrs_acls_capabilities_hard_links_and_any_time_round_trip_and_show_in_the_mount() {
    let env = Env::new();
    env.init();
    let src = crafted(&env);
    let before = snapshot_tree(&src);
    // The tree really has what the test is about.
    let has = |path: &[u8], name: &[u8]| before[path].xattrs.iter().any(|(n, _)| n == name);
    assert!(has(b"docs/a.txt", b"system.posix_acl_access"));
    assert!(has(b"docs/binary", b"security.capability"));
    assert!(has(b"other", b"system.posix_acl_default"));
    assert_eq!(before[&b"docs/a.txt"[..]].mtime, (10_413_792_000, 123_456_789));
    assert_eq!(before[&b"linked-3"[..]].link_group.as_deref(), Some(&b"docs/linked"[..]));
    assert_eq!(before[&b"other/outside-link"[..]].link_group, None);

    let doc = env.snapshot(&[&src]);
    assert_eq!(doc["issues_reported"], 0, "{doc}");
    let ls = env.run("ls", &[OsStr::new("latest"), OsStr::new("--json")]).ok().stdout;
    let line = |path: &str| -> serde_json::Value {
        let found = ls.lines().find(|l| l.contains(&format!("\"path\":\"{path}\"")));
        serde_json::from_str(found.unwrap_or_else(|| panic!("{path} not in:\n{ls}"))).unwrap()
    };
    assert_eq!(line("src/docs/a.txt")["xattrs"][1], "user.empty", "{ls}");
    assert_eq!(line("src/other/linked-2")["links"], 3, "{ls}");
    let out = env.path("out");
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    run.ok();
    assert_same_tree(&src, &out.join("src"));
    let m = std::fs::metadata(out.join("src/docs/linked")).unwrap();
    assert_eq!(m.nlink(), 3, "three names, one inode");
    // Restoring over it again: the links stay links, and no temporary name is left behind.
    let run = env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--target"),
            out.as_os_str(),
            OsStr::new("--overwrite"),
            OsStr::new("always"),
        ],
    );
    run.ok();
    assert_same_tree(&src, &out.join("src"));
    let leftovers: Vec<_> = crate::integrity::files_under(&out)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".store-restore-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let getcap = Command::new("getcap").arg(out.join("src/docs/binary")).output().unwrap();
    assert!(
        String::from_utf8_lossy(&getcap.stdout).contains("cap_net_bind_service=ep"),
        "{getcap:?}"
    );

    // The mount shows the same: attributes, one inode per hard-link group, any time.
    let mnt = Mounted::new(&env, "mount");
    let set = mnt.point.join("latest/src");
    assert_same_tree(&src, &set);
    let (a, b) = (
        std::fs::metadata(set.join("docs/linked")).unwrap(),
        std::fs::metadata(set.join("other/linked-2")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 3));
    assert_eq!(xattrs_of(&set.join("sym")), xattrs_of(&src.join("sym")));
    drop(mnt);

    // A partial restore links what it restores together.
    let part = env.path("part");
    let run = env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--target"),
            part.as_os_str(),
            OsStr::new("--include"),
            OsStr::new("src/other"),
            OsStr::new("--include"),
            OsStr::new("src/linked-3"),
        ],
    );
    run.ok();
    let (a, b) = (
        std::fs::metadata(part.join("src/other/linked-2")).unwrap(),
        std::fs::metadata(part.join("src/linked-3")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert!(!part.join("src/docs").exists());
}

// See: issue 14 ("restored where the target allows, each failure named (exit 3 on a restore
// that could not apply them)").
#[test]
fn attributes_the_target_refuses_are_named_and_the_restore_exits_3() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f.txt"), b"file");
    setxattr(&src.join("f.txt"), "trusted.only-root-sets-this", b"v");
    env.snapshot(&[&src]);
    // As `nobody`, the trusted namespace cannot be written.
    let out = env.path("out");
    let run = crate::support::restore_as_nobody(&env, "latest", &out);
    let stderr = run.stderr;
    assert_eq!(run.code, 3, "{stderr}");
    assert!(
        stderr.contains("src/f.txt") && stderr.contains("trusted.only-root-sets-this"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(out.join("src/f.txt")).unwrap(), b"file");
}

/// The format version in the header of every versioned file under `dir`.
fn header_versions(dir: &Path) -> Vec<u32> {
    crate::integrity::files_under(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            let at = if f.extension() == Some(OsStr::new("pack")) { bytes.len() - 56 } else { 8 };
            u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
        })
        .collect()
}

// See: issue 14 ("the format change goes into ... its own version ...; version-1 repositories
// keep restoring"). A repository made with `--format-version 1` is written as version 1 (so
// builds before version 2 keep reading it) and keeps what version 1 can.
#[test]
fn a_version_1_repository_keeps_being_written_as_version_1() {
    let env = Env::new();
    let init = env.run("init", &[OsStr::new("--format-version"), OsStr::new("1")]).ok();
    assert!(init.stdout.contains("format version 1"), "{}", init.stdout);
    let src = crafted(&env);
    let run = env.run("snapshot", &[src.as_os_str()]).ok();
    assert!(
        run.stderr.contains("format version 1: it keeps no extended attributes"),
        "{}",
        run.stderr
    );
    write(&src.join("docs/new.txt"), b"second set");
    env.snapshot(&[&src]);
    let repo = env.repo();
    for dir in ["snapshots", "index", "packs"] {
        let versions = header_versions(&repo.join(dir));
        assert!(!versions.is_empty() && versions.iter().all(|&v| v == 1), "{dir}: {versions:?}");
    }
    assert_eq!(std::fs::read(repo.join("config")).unwrap()[8..12], 1u32.to_le_bytes());
    let out = env.path("out");
    env.restore("latest", &out);
    let (a, b) = (snapshot_tree(&src), snapshot_tree(&out.join("src")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, e) in &a {
        // Bytes, modes and owners are kept; the rest of version 2's metadata is not.
        assert_eq!(
            (e.kind, e.mode, e.uid, &e.content),
            (b[k].kind, b[k].mode, b[k].uid, &b[k].content)
        );
    }
    env.run("check", &[OsStr::new("--read-data")]).ok();
    let other = env.path("other");
    let newer = (store::FORMAT_VERSION + 1).to_string();
    let bad = crate::support::store([
        OsStr::new("--repo"),
        other.as_os_str(),
        OsStr::new("init"),
        OsStr::new("--format-version"),
        OsStr::new(&newer),
    ]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("format version") && bad.stderr.contains(&newer), "{}", bad.stderr);
    assert!(!other.exists(), "nothing is created for a refused version");
}

// See: issue 14 ("the real system trees (`/usr/lib/x86_64-linux-gnu`, `/etc`) round-trip with
// hard links and capabilities intact").
#[test]
fn system_trees_round_trip_with_hard_links_and_attributes() {
    let env = Env::new();
    env.init();
    let roots: Vec<&Path> = ["/usr/lib/x86_64-linux-gnu", "/etc"]
        .iter()
        .map(Path::new)
        .filter(|p| p.is_dir())
        .collect();
    assert!(!roots.is_empty(), "neither system tree exists");
    env.snapshot(&roots);
    let out = env.path("out");
    env.restore("latest", &out);
    for root in roots {
        let name = root.file_name().unwrap();
        assert_same_tree(root, &out.join(name));
    }
}

/// A file's mode bits, owner, group and extended attributes.
type FileMeta = (u32, u32, u32, Vec<(Vec<u8>, Vec<u8>)>);

/// Mode, owner and attributes of every regular file below `root`, by path below it.
fn file_meta(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, FileMeta> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let rel = p.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, (m.mode() & 0o7777, m.uid(), m.gid(), xattrs_of(&p)));
            }
        }
    }
    out
}

// See: issue 20 ("Restoring many small files ... keeping ... the safety rules and their tests
// intact"): an unnamed file is created with its mode, and its owner, mode and attributes are
// set only where what it got unasked differs. Whatever the umask, a default ACL or a
// set-group-id directory in the target hands a new file, the restored files carry exactly the
// set's mode, owner and attributes.
#[test]
fn restored_files_have_the_sets_mode_owner_and_attributes_whatever_the_target_hands_new_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let modes = [0o644, 0o600, 0o755, 0o640, 0o444, 0o4755, 0o2750, 0o1644, 0o000, 0o777];
    for (i, mode) in modes.iter().enumerate() {
        let p = src.join(format!("d{}/f{i}", i % 3));
        write(&p, format!("file {i}").as_bytes());
        if i % 2 == 1 {
            std::os::unix::fs::lchown(&p, Some(65534), Some(65534)).unwrap();
        }
        if i == 3 {
            setxattr(&p, "user.kept", b"only this one");
        }
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(*mode)).unwrap();
    }
    let expected = file_meta(&src);
    assert_eq!(expected.len(), modes.len());
    let set = env.snapshot(&[&src])["id"].as_str().unwrap().to_owned();

    // Targets: plain; under a default ACL; set-group-id with another group.
    let acl = env.path("acl");
    std::fs::create_dir(&acl).unwrap();
    sh(&format!("setfacl -d -m u:nobody:rwx,g::r-x,o::--- {}", acl.display()));
    let sgid = env.path("sgid");
    std::fs::create_dir(&sgid).unwrap();
    std::os::unix::fs::lchown(&sgid, None, Some(65534)).unwrap();
    std::fs::set_permissions(&sgid, std::os::unix::fs::PermissionsExt::from_mode(0o2775)).unwrap();
    let plain = env.path("plain");
    std::fs::create_dir(&plain).unwrap();
    for (parent, umask) in
        [(&plain, "022"), (&plain, "077"), (&plain, "000"), (&acl, "022"), (&sgid, "002")]
    {
        let out = parent.join(format!("out-{umask}"));
        let cmd = format!(
            "umask {umask}; exec '{}' restore {set} --repo '{}' --target '{}'",
            crate::support::bin().display(),
            env.repo().display(),
            out.display()
        );
        let run = Command::new("sh").args(["-c", &cmd]).env_remove("STORE_REPO").output().unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let restored = file_meta(&out.join("src"));
        for (path, want) in &expected {
            assert_eq!(restored.get(path), Some(want), "{} in {}", path.display(), out.display());
        }
        assert_eq!(restored.len(), expected.len());
    }
}
