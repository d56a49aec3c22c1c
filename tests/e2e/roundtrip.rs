//! Snapshot then restore: bytes, metadata, symlinks, odd names, big and many files.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::support::{assert_same_tree, random_bytes, set_mtime, store, write, Env};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with every kind of entry the foundation supports and awkward names and times.
fn build_odd_tree(src: &Path) {
    write(&src.join("plain.txt"), b"hello\n");
    write(&src.join("empty"), b"");
    write(&src.join("docs/report.pdf"), &random_bytes(1, 300_000));
    write(&src.join("docs/notes.txt"), &b"compressible line\n".repeat(50_000));
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    let odd = src.join(OsStr::from_bytes(b"latin1-\xe9t\xe9"));
    write(&odd.join(OsStr::from_bytes(b"\xff\xfe-file")), b"non-utf8");
    write(&src.join("new\nline"), b"newline in name");
    write(&src.join("-leading-dash"), b"dash");
    write(&src.join("x".repeat(255)), b"long name");
    write(&src.join("spaces and * stars"), b"glob chars");
    symlink("plain.txt", src.join("rel-link")).unwrap();
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    symlink("does/not/exist", src.join("dangling-link")).unwrap();
    symlink(OsStr::from_bytes(b"\xff-target"), src.join("non-utf8-link")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    chmod(&src.join("plain.txt"), 0o600);
    chmod(&src.join("docs/report.pdf"), 0o444);
    write(&src.join("bin/tool"), b"#!/bin/sh\necho hi\n");
    chmod(&src.join("bin/tool"), 0o755);
    // Times: nanoseconds, before 1970, after 2038.
    set_mtime(&src.join("plain.txt"), 1_700_000_000_123_456_789);
    set_mtime(&src.join("empty"), -1_000_000_000);
    set_mtime(&src.join("docs/notes.txt"), 4_102_444_800_000_000_001);
    set_mtime(&src.join("rel-link"), 1_600_000_000_000_000_000);
    // A read-only directory: its mode must be applied after its contents are written.
    write(&src.join("ro/inside"), b"inside a read-only dir");
    chmod(&src.join("ro"), 0o555);
    set_mtime(&src.join("docs"), 1_500_000_000_000_000_000);
    // Ownership is restored when running as root: give some entries another owner.
    if rustix::process::geteuid().is_root() {
        let (uid, gid) = (rustix::fs::Uid::from_raw(65534), rustix::fs::Gid::from_raw(65533));
        rustix::fs::chown(src.join("docs/notes.txt"), Some(uid), Some(gid)).unwrap();
        rustix::fs::chown(src.join("bin"), Some(uid), Some(gid)).unwrap();
        rustix::fs::chownat(
            rustix::fs::CWD,
            src.join("rel-link"),
            Some(uid),
            Some(gid),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
    }
}

#[test]
fn round_trip_keeps_bytes_metadata_symlinks_and_odd_names() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_odd_tree(&src);
    let doc = env.snapshot(&[&src]);
    assert_eq!(doc["files"], 11, "{doc}");
    assert_eq!(doc["symlinks"], 4);
    assert_eq!(doc["specials"], 1);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &out.join("src"));
    // The symlink was created, not followed.
    assert_eq!(std::fs::read_link(out.join("src/abs-link")).unwrap(), Path::new("/etc/passwd"));
    chmod(&src.join("ro"), 0o755);
    chmod(&out.join("src/ro"), 0o755);
}

#[test]
fn round_trip_of_a_100_mib_file_and_10000_small_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // 100 MiB: random halves around a compressible middle, so both codecs are exercised.
    let mut big = random_bytes(7, 40 << 20);
    big.extend(b"MarkLogic stand data ".repeat((20 << 20) / 21));
    big.extend(random_bytes(8, (100 << 20) - big.len()));
    write(&src.join("forest/stand.bin"), &big);
    for i in 0..10_000u32 {
        let dir = src.join(format!("contentstore/{:02}", i % 100));
        let data = format!("document {i}\n").repeat((i % 50) as usize + 1);
        write(&dir.join(format!("{i}.bin")), data.as_bytes());
    }
    let doc = env.snapshot(&[&src]);
    assert_eq!(doc["files"], 10_001);
    assert_eq!(doc["bytes_source"].as_u64().unwrap(), doc["bytes_read"].as_u64().unwrap());
    // Compression pays on the compressible part and the small text files.
    assert!(doc["bytes_added"].as_u64().unwrap() < doc["bytes_source"].as_u64().unwrap());
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn unchanged_second_snapshot_adds_under_one_percent() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..200u64 {
        write(&src.join(format!("d{}/f{i}", i % 7)), &random_bytes(i, 20_000 + (i as usize) * 500));
    }
    let first = env.snapshot(&[&src]);
    let second = env.snapshot(&[&src]);
    let source = second["bytes_source"].as_u64().unwrap();
    let added = second["bytes_added"].as_u64().unwrap();
    assert!(first["bytes_added"].as_u64().unwrap() > source / 2);
    assert!(added * 100 < source, "second snapshot added {added} of {source} bytes");
    assert_eq!(second["chunks_new"], 0);
    // Equal directories give equal trees: the component roots are identical.
    assert_eq!(first["components"][0]["root"], second["components"][0]["root"]);
    // One changed file costs about that file.
    write(&src.join("d0/f0"), &random_bytes(999, 20_000));
    let third = env.snapshot(&[&src]);
    let added = third["bytes_added"].as_u64().unwrap();
    assert!((20_000..30_000).contains(&added), "changing 20 KB added {added} bytes");
    assert_ne!(first["components"][0]["root"], third["components"][0]["root"]);
}

#[test]
fn several_sources_become_components_and_file_sources_restore_as_files() {
    let env = Env::new();
    env.init();
    let index = env.path("alf_data/solr4Backup");
    let content = env.path("alf_data/contentstore");
    let dump = env.path("dumps/alfresco.sql");
    write(&index.join("core/segments_1"), b"solr");
    write(&content.join("2026/11/21/doc.bin"), &random_bytes(3, 70_000));
    write(&dump, b"COPY alf_node FROM stdin;\n1\tworkspace\n\\.\n");
    let doc = env.snapshot(&[&index, &dump, &content]);
    let names: Vec<&str> =
        doc["components"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["solr4Backup", "alfresco.sql", "contentstore"]);
    assert_eq!(doc["components"][1]["kind"], "file");
    let starts: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["start"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort_unstable();
    assert_eq!(starts, sorted, "components are captured in the order given");
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&index, &out.join("solr4Backup"));
    assert_same_tree(&content, &out.join("contentstore"));
    assert_eq!(std::fs::read(out.join("alfresco.sql")).unwrap(), std::fs::read(&dump).unwrap());

    // Two sources with the same last element are refused, and nothing is committed.
    let other = env.path("elsewhere/contentstore");
    write(&other.join("x"), b"x");
    let before = std::fs::read_dir(env.repo().join("snapshots")).unwrap().count();
    let run = env.run("snapshot", &[content.as_os_str(), other.as_os_str()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("contentstore"), "{}", run.stderr);
    assert_eq!(std::fs::read_dir(env.repo().join("snapshots")).unwrap().count(), before);
}

#[test]
fn restore_refuses_a_non_empty_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.snapshot(&[&src]);
    let out = env.path("out");
    write(&out.join("precious"), b"keep me");
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not empty"), "{}", run.stderr);
    assert_eq!(std::fs::read(out.join("precious")).unwrap(), b"keep me");
    assert!(!out.join("src").exists());
}

#[test]
fn unreadable_file_is_named_and_gives_exit_3_with_the_set_committed() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("ok.txt"), b"readable");
    write(&src.join("secret.txt"), b"unreadable");
    chmod(&src.join("secret.txt"), 0o000);
    let as_root = rustix::process::geteuid().is_root();
    // Root reads everything: run the snapshot as `nobody` then, with a repository it owns.
    let run = if as_root {
        chmod(env.dir.path(), 0o755);
        let repo = env.repo();
        std::fs::create_dir(&repo).unwrap();
        rustix::fs::chown(
            &repo,
            Some(rustix::fs::Uid::from_raw(65534)),
            Some(rustix::fs::Gid::from_raw(65534)),
        )
        .unwrap();
        let as_nobody = |args: &[&OsStr]| {
            let out = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(crate::support::bin())
                .args(args)
                .output()
                .unwrap();
            (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let (code, err) = as_nobody(&[OsStr::new("init"), OsStr::new("--repo"), repo.as_os_str()]);
        assert_eq!(code, 0, "{err}");
        as_nobody(&[
            OsStr::new("snapshot"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            src.as_os_str(),
        ])
    } else {
        env.init();
        let r = env.run("snapshot", &[src.as_os_str()]);
        (r.code, r.stderr)
    };
    let (code, stderr) = run;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("src/secret.txt"), "{stderr}");
    let listed = store([
        OsStr::new("snapshots"),
        OsStr::new("--json"),
        OsStr::new("--repo"),
        env.repo().as_os_str(),
    ])
    .ok();
    let sets = listed.json();
    assert_eq!(sets.as_array().unwrap().len(), 1);
    assert_eq!(sets[0]["files"], 1);
    assert_eq!(sets[0]["issues"][0]["path"], "secret.txt");
    assert_eq!(sets[0]["issues"][0]["kind"], "skipped");
}

#[test]
fn directory_with_200000_entries_is_paged_and_round_trips() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let big = src.join("contentstore.deleted");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..200_000u32 {
        let name = format!("{i:08x}-2f1e4c7a-9d3b-4c1e-8f6a-{i:012x}.bin");
        std::fs::File::create(big.join(name)).unwrap();
    }
    write(&big.join("zz-last-with-data.bin"), b"payload");
    let doc = env.snapshot(&[&src]);
    assert_eq!(doc["files"], 200_001);
    let out = env.path("out");
    env.restore("latest", &out);
    let restored = std::fs::read_dir(out.join("src/contentstore.deleted")).unwrap().count();
    assert_eq!(restored, 200_001);
    assert_eq!(
        std::fs::read(out.join("src/contentstore.deleted/zz-last-with-data.bin")).unwrap(),
        b"payload"
    );
    // `ls` of the paged directory lists every entry once, in name order.
    let ls = env.run("ls", &["latest", "src/contentstore.deleted"]).ok();
    let names: Vec<&str> =
        ls.stdout.lines().skip(1).map(|l| l.rsplit('/').next().unwrap()).collect();
    assert_eq!(names.len(), 200_001);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "entries out of order");
}
