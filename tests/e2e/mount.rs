//! `store mount` through FUSE: the mounted sets equal their sources (`diff -r`, random reads,
//! mmap), sets written while mounted appear, damaged chunks give EIO for their files only, and
//! SIGTERM, SIGINT and `fusermount3 -u` unmount cleanly. `.ci/setup` installs fuse3.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::integrity::{blobs_of, files_under, flip};
use crate::support::{random_bytes, write, Env};

/// A running `store mount`; unmounted (SIGTERM) when dropped.
pub(crate) struct Mounted {
    child: Option<Child>,
    pub(crate) point: PathBuf,
}

fn is_mounted(point: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let point = point.canonicalize().unwrap_or_else(|_| point.to_path_buf());
    mounts.lines().any(|l| l.split(' ').nth(1) == Some(point.to_str().unwrap()))
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

impl Mounted {
    pub(crate) fn new(env: &Env, command: &str) -> Self {
        let args = [command.into(), "--repo".into(), env.repo().into_os_string()];
        Self::start(env.path("mnt"), &args)
    }

    /// `store ARGS POINT`, once the mount appears.
    pub(crate) fn start(point: PathBuf, args: &[std::ffi::OsString]) -> Self {
        std::fs::create_dir_all(&point).unwrap();
        let child = Command::new(crate::support::bin())
            .args(args)
            .arg(&point)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut m = Mounted { child: Some(child), point };
        let started = Instant::now();
        while !m.point.join("snapshots").is_dir() {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let out = m.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "store mount exited with {status}: {}  (FUSE needs /dev/fuse and fusermount3: \
                     .ci/setup installs fuse3)",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(started.elapsed() < Duration::from_secs(20), "the mount did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Stops the mount with `sig` and returns what it printed; asserts a clean exit.
    fn stop(mut self, sig: rustix::process::Signal) -> String {
        let child = self.child.take().unwrap();
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
        assert!(!is_mounted(&self.point), "still mounted after the signal");
        stderr
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::TERM);
            let _ = child.wait();
        }
        if is_mounted(&self.point) {
            let _ = Command::new("fusermount3").arg("-u").arg(&self.point).status();
        }
    }
}

fn diff_r(a: &Path, b: &Path) {
    let out =
        Command::new("diff").arg("-r").arg("--no-dereference").arg(a).arg(b).output().unwrap();
    assert!(
        out.status.success(),
        "diff -r {} {}:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mounted_sets_equal_their_sources_and_new_sets_appear() {
    let env = Env::new();
    env.init();
    let content = env.path("alf_data/contentstore");
    let big = random_bytes(7, 100 << 20);
    write(&content.join("2026/11/21/14/05/big.bin"), &big);
    for i in 0..50u64 {
        write(
            &content.join(format!("2026/11/21/15/{:02}/{i}.bin", i % 7)),
            &random_bytes(i, (i as usize * 7919) % 200_000),
        );
    }
    write(&content.join("empty.bin"), b"");
    // A directory of several tree pages, listed across many readdir calls.
    for i in 0..15_000u32 {
        write(&content.join(format!("many/{i:05}")), &i.to_le_bytes());
    }
    std::os::unix::fs::symlink("2026/11/21/14/05/big.bin", content.join("link")).unwrap();
    let solr = env.path("alf_data/solr4Backup");
    write(&solr.join("snapshot.1/segments_2"), &random_bytes(99, 10_000));
    let dump = env.path("dump.sql");
    write(&dump, "COPY alf_node FROM stdin;\n1\tx\n".repeat(10_000).as_bytes());
    env.run(
        "snapshot",
        &[
            "--tag".into(),
            "nightly".into(),
            "--component".into(),
            format!("index={}", solr.display()),
            "--component-cmd".into(),
            format!("db=cat {}", dump.display()),
            "--component".into(),
            format!("content={}", content.display()),
        ],
    )
    .ok();
    let m = Mounted::new(&env, "mount");
    let latest = m.point.join("latest");
    diff_r(&content, &latest.join("content"));
    assert_eq!(std::fs::read_dir(latest.join("content/many")).unwrap().count(), 15_000);
    diff_r(&solr, &latest.join("index"));
    assert!(std::fs::read(latest.join("db")).unwrap() == std::fs::read(&dump).unwrap());
    // Sizes, modes, times and symlinks are exact.
    use std::os::unix::fs::MetadataExt;
    for rel in ["2026/11/21/14/05/big.bin", "2026/11/21", "empty.bin"] {
        let (a, b) = (
            std::fs::metadata(content.join(rel)).unwrap(),
            std::fs::metadata(latest.join("content").join(rel)).unwrap(),
        );
        // (A directory's size is the file system's business, not recorded.)
        let size = |m: &std::fs::Metadata| if m.is_dir() { 0 } else { m.len() };
        assert_eq!(
            (size(&a), a.mode(), a.mtime(), a.mtime_nsec(), a.uid()),
            (size(&b), b.mode(), b.mtime(), b.mtime_nsec(), b.uid()),
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read_link(latest.join("content/link")).unwrap(),
        PathBuf::from("2026/11/21/14/05/big.bin")
    );
    // The set is reachable by name and by tag.
    let names: Vec<String> = std::fs::read_dir(m.point.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1);
    assert!(m.point.join("tags/nightly").join(&names[0]).join("content/empty.bin").is_file());
    // Copy tools and find behave as on a normal tree: cp -a and rsync -a keep bytes, modes,
    // times and symlinks; find lists every path.
    let copy = env.path("copied");
    let cp = Command::new("cp").arg("-a").arg(latest.join("content")).arg(&copy).status().unwrap();
    assert!(cp.success());
    crate::support::assert_same_tree(&content, &copy);
    let synced = env.path("rsynced/");
    let rsync = Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", latest.join("content").display()))
        .arg(&synced)
        .status()
        .expect("rsync (.ci/setup installs it)");
    assert!(rsync.success());
    crate::support::assert_same_tree(&content, &synced);
    let found = Command::new("find").arg(latest.join("content/")).output().unwrap();
    let listed = String::from_utf8_lossy(&found.stdout).lines().count();
    assert_eq!(listed, crate::support::snapshot_tree(&content).len(), "find lists every path");
    // Random reads of the 100 MiB file.
    let file = std::fs::File::open(latest.join("content/2026/11/21/14/05/big.bin")).unwrap();
    let mut state = 12345u64;
    for _ in 0..200 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let offset = (state >> 16) as usize % big.len();
        let len = ((state >> 8) as usize % (1 << 20)).min(big.len() - offset);
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset as u64).unwrap();
        assert!(buf == big[offset..offset + len], "read of {len} bytes at {offset} differs");
    }
    // And through mmap, as MarkLogic's restore reads its backup directory.
    // SAFETY: the file is on a read-only mount and never changes while mapped.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    assert!(map[..] == big[..], "the mapped file differs");
    drop(map);
    drop(file);
    // A set written while mounted appears without remounting.
    write(&content.join("2026/11/22/new.bin"), b"written while mounted");
    env.snapshot(&[&content]);
    let started = Instant::now();
    while std::fs::read_dir(m.point.join("snapshots")).unwrap().count() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "the new set did not appear");
        std::thread::sleep(Duration::from_millis(200));
    }
    let second = std::fs::read_dir(m.point.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    assert_eq!(
        std::fs::read(second.join("contentstore/2026/11/22/new.bin")).unwrap(),
        b"written while mounted"
    );
    let said = m.stop(rustix::process::Signal::TERM);
    assert!(said.contains("unmounted"), "{said}");
}

#[test]
fn damaged_chunk_gives_eio_for_its_file_only_and_fusermount_unmounts() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("bad.bin"), &random_bytes(1, 2 << 20));
    write(&src.join("good.txt"), b"an intact document\n");
    env.snapshot(&[&src]);
    // Flip a byte in the middle of a large data blob: one of bad.bin's random chunks.
    let (pack, blob) = files_under(&env.repo().join("packs"))
        .into_iter()
        .flat_map(|p| blobs_of(&p).into_iter().map(move |b| (p.clone(), b)))
        .find(|(_, b)| b.kind == 0 && b.stored_len > 32 * 1024)
        .expect("a large data blob");
    flip(&pack, blob.offset + blob.stored_len / 2);
    let m = Mounted::new(&env, "mount-restore");
    let latest = m.point.join("latest/src");
    assert_eq!(std::fs::read(latest.join("good.txt")).unwrap(), b"an intact document\n");
    let err = std::fs::read(latest.join("bad.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO, never wrong bytes: {err}");
    // Unmounted from outside: the command notices and exits cleanly.
    let status = Command::new("fusermount3").arg("-u").arg(&m.point).status().unwrap();
    assert!(status.success());
    let mut m = m;
    let out = m.child.take().unwrap().wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("bad.bin") || stderr.contains("hash") || stderr.contains("authenticate"),
        "the damage is named: {stderr}"
    );
    assert!(!is_mounted(&m.point));
}

#[test]
fn ctrl_c_unmounts() {
    let env = Env::new();
    env.init();
    write(&env.path("src/a.txt"), b"a");
    env.snapshot(&[&env.path("src")]);
    let m = Mounted::new(&env, "mount");
    assert_eq!(std::fs::read(m.point.join("latest/src/a.txt")).unwrap(), b"a");
    m.stop(rustix::process::Signal::INT);
}

// See: issue 17 ("mounts over a non-empty or already-mounted directory without a word").
#[test]
fn mounting_on_a_non_empty_or_already_mounted_directory_is_refused() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a"), b"a");
    env.snapshot(&[&src]);
    let busy = env.path("busy");
    write(&busy.join("x"), b"x");
    let run = env.run("mount", &[busy.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is not empty"), "{}", run.stderr);
    let taken = env.path("taken");
    let _tmpfs = crate::support::Tmpfs::mount(&taken, "1m");
    let run = env.run("mount", &[taken.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("already a mount point"), "{}", run.stderr);
}

// See: issue 17 ("a running `mount` makes prune fail with \"prune waits for running backups\":
// name the mount").
#[test]
fn prune_beside_a_mount_names_the_mount_and_exits_locked() {
    let env = Env::new();
    env.init();
    write(&env.path("src/a.txt"), b"a");
    env.snapshot(&[&env.path("src")]);
    let m = Mounted::new(&env, "mount");
    let run = env.run("prune", &[] as &[&str]);
    assert_eq!(run.code, 11, "{}", run.stderr);
    assert!(
        run.stderr.contains("store mount") && run.stderr.contains("fusermount3 -u"),
        "{}",
        run.stderr
    );
    m.stop(rustix::process::Signal::TERM);
    env.run("prune", &[] as &[&str]).ok();
}

// See: issue 17 ("the mount reports full `st_blocks` for sparse files (`cp -a` from the mount
// writes them fully allocated)").
#[test]
fn a_sparse_file_is_sparse_in_the_mount_and_in_a_copy_out_of_it() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    // 40 MiB: data, a 32 MiB hole, data.
    let sparse = src.join("forest.img");
    let f = std::fs::File::create(&sparse).unwrap();
    f.write_all_at(&random_bytes(7, 4 << 20), 0).unwrap();
    f.write_all_at(&random_bytes(8, 4 << 20), 36 << 20).unwrap();
    drop(f);
    write(&src.join("dense.bin"), &random_bytes(9, 3 << 20));
    env.snapshot(&[&src]);
    let m = Mounted::new(&env, "mount");
    let mounted = std::fs::metadata(m.point.join("latest/src/forest.img")).unwrap();
    assert_eq!(mounted.len(), 40 << 20);
    let allocated = mounted.blocks() * 512;
    assert!(allocated <= 9 << 20, "the hole is not counted: {allocated} bytes");
    assert!(allocated >= 8 << 20, "the data is: {allocated} bytes");
    let dense = std::fs::metadata(m.point.join("latest/src/dense.bin")).unwrap();
    assert_eq!(dense.blocks() * 512, 3 << 20);
    // `cp -a` (sparse=auto) writes the copy sparse, and byte for byte.
    let copy = env.path("copy.img");
    let status = Command::new("cp")
        .arg("-a")
        .arg(m.point.join("latest/src/forest.img"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(std::fs::metadata(&copy).unwrap().blocks() * 512 <= 10 << 20, "the copy is sparse");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&sparse).unwrap());
}
