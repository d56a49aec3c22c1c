//! Format compatibility: repositories written by format versions 1 to 4 (committed under
//! `tests/fixtures/vN/`) must stay readable by every later build, byte for byte. The version-3
//! and version-4 fixtures are encrypted with the test suite's password (`support::PASSWORD`).
//!
//! To write fixture N anew (only when format version N is introduced, by the build that
//! introduces it): `STORE_WRITE_FIXTURE=N cargo test --release -p store-cli --test e2e compat`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{random_bytes, set_mtime, store, write};

fn fixture_dir() -> PathBuf {
    fixture_of(1)
}

pub(crate) fn fixture_of(version: u32) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../tests/fixtures/v{version}"))
}

/// The source tree the v1 fixture holds; deterministic, times included.
fn fixture_source(dir: &Path) {
    write(&dir.join("contentstore/2026/11/21/14/05/9f1c.bin"), &random_bytes(11, 600_000));
    write(
        &dir.join("contentstore/2026/11/21/14/05/a77e.bin"),
        &b"version 1 of a document\n".repeat(20_000),
    );
    write(&dir.join("contentstore/2026/11/21/14/06/empty.bin"), b"");
    std::os::unix::fs::symlink("2026/11/21", dir.join("contentstore/latest-day")).unwrap();
    for (i, p) in
        ["contentstore/2026/11/21/14/05/9f1c.bin", "contentstore/2026/11/21/14/05/a77e.bin"]
            .iter()
            .enumerate()
    {
        set_mtime(&dir.join(p), 1_763_700_000_000_000_000 + i as i64);
    }
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn v1_fixture_restores_byte_for_byte() {
    fixture_restores_byte_for_byte(1);
}

// See: issue 15 ("a test that reads what the previous version wrote").
#[test]
fn v2_fixture_restores_byte_for_byte() {
    fixture_restores_byte_for_byte(2);
}

// See: issue 18 (the note on a set is format version 4; a test reads what version 3 wrote).
#[test]
fn v3_fixture_restores_byte_for_byte() {
    fixture_restores_byte_for_byte(3);
}

// See: issue 19 (version 5 seals with XAES-256-GCM; a test reads what version 4 wrote, sealed
// with XChaCha20-Poly1305).
#[test]
fn v4_fixture_restores_byte_for_byte() {
    fixture_restores_byte_for_byte(4);
}

fn fixture_restores_byte_for_byte(version: u32) {
    let fixture = fixture_of(version).join("repo");
    if std::env::var("STORE_WRITE_FIXTURE").ok() == Some(version.to_string()) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("source");
        fixture_source(&src);
        let _ = std::fs::remove_dir_all(&fixture);
        let v = version.to_string();
        store([
            OsStr::new("init"),
            OsStr::new("--repo"),
            fixture.as_os_str(),
            OsStr::new("--format-version"),
            OsStr::new(&v),
        ])
        .ok();
        store([
            OsStr::new("snapshot"),
            OsStr::new("--repo"),
            fixture.as_os_str(),
            OsStr::new("--host"),
            OsStr::new("fixture"),
            src.join("contentstore").as_os_str(),
        ])
        .ok();
        std::fs::remove_dir_all(fixture.join("cache")).unwrap();
        // 4 MiB of zeros a repository works without: not committed.
        let _ = std::fs::remove_file(fixture.join("reserve"));
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    copy_tree(&fixture, &repo);
    let expected = tmp.path().join("expected");
    fixture_source(&expected);
    let out = tmp.path().join("out");
    let run = store([
        OsStr::new("restore"),
        OsStr::new("--repo"),
        repo.as_os_str(),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ]);
    let run = run.ok();
    assert!(run.stdout.contains("3 files"), "{}", run.stdout);
    for rel in
        ["2026/11/21/14/05/9f1c.bin", "2026/11/21/14/05/a77e.bin", "2026/11/21/14/06/empty.bin"]
    {
        let a = std::fs::read(expected.join("contentstore").join(rel)).unwrap();
        let b = std::fs::read(out.join("contentstore").join(rel)).unwrap();
        assert!(a == b, "{rel} differs from what format v{version} stored");
    }
    assert_eq!(
        std::fs::read_link(out.join("contentstore/latest-day")).unwrap(),
        Path::new("2026/11/21")
    );
    let listing = store([
        OsStr::new("snapshots"),
        OsStr::new("--json"),
        OsStr::new("--repo"),
        repo.as_os_str(),
    ])
    .ok()
    .json();
    assert_eq!(listing[0]["host"], "fixture");
}

// See: issue 13 ("a repository written by today's `main` (version 1) still restores, checks
// and mounts byte for byte").
#[test]
fn v1_fixture_checks_clean_and_mounts_byte_for_byte() {
    let env = crate::support::Env::new();
    copy_tree(&fixture_dir().join("repo"), &env.repo());
    let check = env.run("check", &["--read-data", "--json"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    // Written before `config.copy` existed: that absence is the only thing check mentions.
    let doc = check.json();
    let kinds: Vec<&str> =
        doc["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["config_copy_missing"], "{}", check.stdout);
    // Verification records are an addition to every version (FORMAT.md §8.4): the check above
    // recorded every pack of this version-1 repository, as a version-1 record.
    let due = env.run("check", &["--read-data", "--max-age", "30d", "--json"]).ok().json();
    assert_eq!((due["packs_due"].as_u64(), due["packs_read"].as_u64()), (Some(0), Some(0)));
    let record = std::fs::read_dir(env.repo().join("verified")).unwrap().next().unwrap().unwrap();
    let record = std::fs::read(record.path()).unwrap();
    assert_eq!((&record[..8], &record[8..12]), (&b"STOREVFY"[..], &1u32.to_le_bytes()[..]));
    let expected = env.path("expected");
    fixture_source(&expected);
    let m = crate::mount::Mounted::new(&env, "mount");
    let latest = m.point.join("latest/contentstore");
    for rel in
        ["2026/11/21/14/05/9f1c.bin", "2026/11/21/14/05/a77e.bin", "2026/11/21/14/06/empty.bin"]
    {
        let a = std::fs::read(expected.join("contentstore").join(rel)).unwrap();
        let b = std::fs::read(latest.join(rel)).unwrap();
        assert!(a == b, "{rel} read through the mount differs from what format v1 stored");
    }
    assert_eq!(std::fs::read_link(latest.join("latest-day")).unwrap(), Path::new("2026/11/21"));
}
