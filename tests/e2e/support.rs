//! Helpers: run the binary, build source trees, compare trees with metadata.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of the `store` binary under test.
pub fn bin() -> PathBuf {
    TEST_ENV.call_once(|| {
        // Every repository the tests make is encrypted (the default) with this password, and
        // with the cheapest key derivation a key file may ask for, so each command does not
        // spend a quarter of a second on it. Children inherit these; a test about passwords
        // removes them.
        std::env::set_var("STORE_PASSWORD", PASSWORD);
        std::env::set_var("STORE_KDF_MEMORY", "8");
        std::env::set_var("STORE_KDF_ITERATIONS", "1");
        for v in ["STORE_PASSWORD_FILE", "STORE_PASSWORD_COMMAND", "STORE_NEW_PASSWORD"] {
            std::env::remove_var(v);
        }
    });
    PathBuf::from(env!("CARGO_BIN_EXE_store"))
}

static TEST_ENV: std::sync::Once = std::sync::Once::new();

/// The password of every repository the tests make.
pub const PASSWORD: &str = "test password of the e2e suite";

/// Opens a repository the tests made, with [`PASSWORD`] when it is encrypted.
pub fn open_repo(path: &Path) -> store::Repository {
    let opts = store::OpenOptions {
        password: Some(store::crypto::Password::new(PASSWORD.as_bytes().to_vec())),
        ..Default::default()
    };
    store::Repository::open(path, &opts).expect("open the repository")
}

/// Result of one run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

/// Runs `store ARGS` with a clean environment (no STORE_REPO unless given).
pub fn store<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(bin()).args(args).env_remove("STORE_REPO").output().expect("run store");
    Run::from(out)
}

/// A scratch area with a repository path and helpers.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    /// `store init` on this env's repository.
    pub fn init(&self) {
        store([OsStr::new("init"), OsStr::new("--repo"), self.repo().as_os_str()]).ok();
    }

    /// Runs `store CMD --repo REPO ARGS...`.
    pub fn run<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Run {
        let mut all: Vec<std::ffi::OsString> =
            vec![cmd.into(), "--repo".into(), self.repo().into()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        store(all)
    }

    /// `restore SET --target TARGET`, which must succeed.
    #[track_caller]
    pub fn restore(&self, set: &str, target: &Path) {
        self.run("restore", &[OsStr::new(set), OsStr::new("--target"), target.as_os_str()]).ok();
    }

    /// `snapshot --json` of `paths`, returning the parsed document.
    #[track_caller]
    pub fn snapshot(&self, paths: &[&Path]) -> serde_json::Value {
        let mut args: Vec<&OsStr> = vec![OsStr::new("--json")];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        self.run("snapshot", &args).ok().json()
    }
}

/// Deterministic pseudo-random bytes (splitmix64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// What a tree holds, path by path: type, mode, owner, mtime with nanoseconds, content hash,
/// link target or device number, extended attributes (ACLs and capabilities among them), and
/// for a file with several links the first path of its hard-link group in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: char,
    pub mode: u32,
    pub mtime: (i64, i64),
    pub uid: u32,
    pub gid: u32,
    pub content: Vec<u8>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub link_group: Option<Vec<u8>>,
}

/// The extended attributes of `path` (not following a symlink), sorted.
pub fn xattrs_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; 1 << 16];
    let n = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => panic!("llistxattr {}: {e}", path.display()),
    };
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let mut value = vec![0u8; 1 << 16];
            let len = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut value[..])
                .unwrap_or_else(|e| panic!("lgetxattr {}: {e}", path.display()));
            value.truncate(len);
            (name.to_vec(), value)
        })
        .collect();
    out.sort();
    out
}

/// Walks `root` (not following symlinks) into a sorted map of relative raw paths.
pub fn snapshot_tree(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    // (dev, ino) of each file with several links -> the smallest of its paths in the tree.
    let mut groups: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    let mut linked: Vec<(Vec<u8>, (u64, u64))> = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let ft = m.file_type();
        let (kind, content) = if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ('d', Vec::new())
        } else if ft.is_symlink() {
            ('l', std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
        } else if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            ('f', blake3::hash(&data).as_bytes().to_vec())
        } else {
            ('s', Vec::new())
        };
        // A symlink's own mode is always 0777 on Linux.
        let mode = if kind == 'l' { 0 } else { m.mode() };
        if kind == 'f' && m.nlink() > 1 {
            let key = (m.dev(), m.ino());
            let first = groups.entry(key).or_insert_with(|| rel.clone());
            if rel < *first {
                first.clone_from(&rel);
            }
            linked.push((rel.clone(), key));
        }
        out.insert(
            rel,
            Entry {
                kind,
                mode,
                mtime: (m.mtime(), m.mtime_nsec()),
                uid: m.uid(),
                gid: m.gid(),
                content,
                rdev: if kind == 's' { m.rdev() } else { 0 },
                xattrs: xattrs_of(&p),
                link_group: None,
            },
        );
    }
    // Each group is named by its smallest path, so two trees compare whatever their inodes; a
    // file whose other links are all outside the tree is in no group.
    let mut members: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    for (_, key) in &linked {
        *members.entry(*key).or_default() += 1;
    }
    for (rel, key) in linked {
        if let Some(e) = out.get_mut(&rel).filter(|_| members[&key] > 1) {
            e.link_group = groups.get(&key).cloned();
        }
    }
    out
}

/// Names the hard-link groups of `tree` again after paths left it: each group by its smallest
/// remaining path, and a file left alone in its group in none.
pub fn regroup_links(tree: &mut BTreeMap<Vec<u8>, Entry>) {
    let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (k, e) in tree.iter() {
        if let Some(g) = &e.link_group {
            groups.entry(g.clone()).or_default().push(k.clone());
        }
    }
    for paths in groups.into_values() {
        let first = if paths.len() > 1 { paths.iter().min().cloned() } else { None };
        for p in &paths {
            if let Some(e) = tree.get_mut(p) {
                e.link_group.clone_from(&first);
            }
        }
    }
}

/// Asserts that two trees hold the same paths, types, modes, mtimes, owners and bytes.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let a = snapshot_tree(expected);
    let b = snapshot_tree(actual);
    let a_keys: Vec<_> = a.keys().collect();
    let b_keys: Vec<_> = b.keys().collect();
    assert_eq!(a_keys.len(), b_keys.len(), "different number of entries");
    for (k, ea) in &a {
        let eb = b
            .get(k)
            .unwrap_or_else(|| panic!("{} missing from restore", String::from_utf8_lossy(k)));
        assert_eq!(ea, eb, "entry {} differs", String::from_utf8_lossy(k));
    }
}

/// Writes `data` to `path`, creating parents.
pub fn write(path: &Path, data: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, data).unwrap();
}

/// Sets a file's or directory's mtime (nanoseconds), not following symlinks.
pub fn set_mtime(path: &Path, ns: i64) {
    set_mtime_at(path, ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
}

/// Sets the mtime of `path` (not following a symlink) to `secs` and `nanos`, any year.
pub fn set_mtime_at(path: &Path, secs: i64, nanos: i64) {
    let ts = rustix::fs::Timespec { tv_sec: secs, tv_nsec: nanos as _ };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps { last_access: ts, last_modification: ts },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

/// A small tmpfs mounted for a test (as root), unmounted when dropped.
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `24m`) at a new directory `path`.
    pub fn mount(path: &Path, size: &str) -> Self {
        Self::mount_fs(path, "tmpfs", &format!("size={size}"))
    }

    /// Mounts a file system of type `fstype` (`proc`, `tmpfs`) with `options` at a new
    /// directory `path`; unmounted when dropped.
    pub fn mount_fs(path: &Path, fstype: &str, options: &str) -> Self {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts a file system and must run as root (CI does)"
        );
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", fstype, "-o", options, fstype])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "mount {fstype} at {}", path.display());
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The completed calls of an `strace -f -qq` log as `(thread, call text)`, an `<unfinished ...>`
/// call joined with its `<... resumed>` rest (strace pads short thread ids with spaces).
pub fn strace_calls(log: &str) -> Vec<(String, String)> {
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut calls = Vec::new();
    for line in log.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_owned(), head.to_owned());
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            calls.push((
                pid.to_owned(),
                format!("{}{tail}", pending.remove(pid).unwrap_or_default()),
            ));
        } else {
            calls.push((pid.to_owned(), rest.to_owned()));
        }
    }
    calls
}

/// Waits until process `pid` is stopped (it stopped itself at a pause point, `STORE_PAUSE_AT`),
/// or fails the test after a minute (or when the process exited instead).
#[track_caller]
pub fn wait_until_stopped(pid: u32) {
    let stat = format!("/proc/{pid}/stat");
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&stat).unwrap_or_default();
        // The state follows the command name, which is in parentheses.
        let state = text.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        match state {
            Some('T') => return,
            Some('Z') | None => panic!("process {pid} ended before its pause point"),
            _ => {}
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "{pid} never paused");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs `store ARGS` as the unprivileged user `nobody` when this process is root (root reads
/// every file, so unreadable sources need another user), else as ourselves.
/// Restores `set` into `out` (created) as `nobody`, the repository and `out` made nobody's.
pub fn restore_as_nobody(env: &Env, set: &str, out: &Path) -> Run {
    std::fs::create_dir_all(out).unwrap();
    for dir in [env.repo().as_path(), out] {
        let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(dir).status();
        assert!(chown.unwrap().success());
    }
    as_nobody(&[
        OsStr::new("restore"),
        OsStr::new(set),
        OsStr::new("--target"),
        out.as_os_str(),
        OsStr::new("--repo"),
        env.repo().as_os_str(),
    ])
}

pub fn as_nobody(args: &[&OsStr]) -> Run {
    let out = if rustix::process::geteuid().is_root() {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(bin())
            .args(args)
            .output()
            .unwrap()
    } else {
        Command::new(bin()).args(args).output().unwrap()
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
