//! Working with sets (issue 18): `store find` (which sets hold a path, newest first) and
//! `store dump` (a directory of a set as a tar archive).

use std::collections::BTreeSet;
use std::ffi::OsStr;

use crate::support::{assert_same_tree, write, Env};

/// `(set, path)` of every JSON line on stdout.
fn matches(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["set"].as_str().unwrap().to_owned(), v["path"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The names of the sets, newest first.
fn set_names(env: &Env) -> Vec<String> {
    let doc = env.run("snapshots", &["--json"]).ok().json();
    // Names are the start times, YYYYMMDD-HHMMSS: they sort as the sets do.
    let mut names: Vec<String> =
        doc.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names.reverse();
    names
}

// See: issue 18 ("`store find PATTERN [--set S] [--json]`: which sets hold a path (glob), with
// size and time, newest first").
#[test]
fn find_names_the_sets_that_hold_a_path_newest_first() {
    let env = Env::new();
    env.init();
    let src = env.path("content");
    for i in 0..2_000 {
        write(
            &src.join(format!("big/{:02}/f{i:04}.txt", i % 40)),
            format!("unchanged {i}").as_bytes(),
        );
    }
    write(&src.join("2026/11/21/14/05/doc1.bin"), b"the document that went missing");
    write(&src.join("2026/11/22/09/00/doc2.bin"), b"another");
    env.snapshot(&[&src]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write(&src.join("2026/11/23/10/00/doc3.bin"), b"a third");
    env.snapshot(&[&src]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::remove_file(src.join("2026/11/21/14/05/doc1.bin")).unwrap();
    env.snapshot(&[&src]);
    let names = set_names(&env);
    assert_eq!(names.len(), 3);

    // When did the document last exist? In the two older sets, the newer one first.
    let run = env.run("find", &["content/2026/**/doc1.bin", "--json"]).ok();
    let doc1 = "content/2026/11/21/14/05/doc1.bin".to_owned();
    assert_eq!(matches(&run.stdout), [(names[1].clone(), doc1.clone()), (names[2].clone(), doc1)]);
    let first: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["size"], 30);
    assert_eq!(first["type"], "-");
    assert!(first["mtime"].as_str().unwrap().starts_with("20"), "{first}");

    // A name pattern finds what listing every set finds, and skips the unchanged directories
    // of older sets (40 of them hold no match).
    let run = env.run("find", &["*.bin", "--json"]).ok();
    let found: BTreeSet<(String, String)> = matches(&run.stdout).into_iter().collect();
    let mut listed = BTreeSet::new();
    for name in &names {
        let ls = env.run("ls", &[name.as_str(), "--json"]).ok().stdout;
        for l in ls.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let path = v["path"].as_str().unwrap();
            if path.ends_with(".bin") {
                listed.insert((name.clone(), path.to_owned()));
            }
        }
    }
    assert_eq!(found, listed);
    assert_eq!(found.len(), 2 + 3 + 2);
    let text = env.run("find", &["*.bin"]).ok().stdout;
    let summary = text.lines().last().unwrap();
    let read: u64 = summary
        .split('(')
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(summary.starts_with("7 matches in 3 sets"), "{summary}");
    // A set has 55 directories (41 of them unchanged in every set): 165 read without skipping,
    // 55 for the newest set and the 14 on changed paths for each older one with it.
    assert!(read <= 55 + 2 * 14, "unchanged directories are read once: {summary}");

    // --set and --host narrow the search; nothing found is exit 1, naming the pattern.
    let latest = env.run("find", &["doc*.bin", "--set", "latest", "--json"]).ok();
    assert_eq!(matches(&latest.stdout).len(), 2);
    let none = env.run("find", &["*.bin", "--host", "elsewhere"]);
    assert_eq!(none.code, 1, "{}", none.stderr);
    assert!(none.stderr.contains("no set holds a path matching *.bin"), "{}", none.stderr);
    let bad = env.run("find", &[OsStr::new("[")]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("\"[\""), "{}", bad.stderr);
}

/// Runs `store dump ARGS` with stdout into `archive`; returns the exit code and stderr.
fn dump_to(env: &Env, args: &[&str], archive: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(crate::support::bin())
        .arg("--repo")
        .arg(env.repo())
        .arg("dump")
        .args(args)
        .stdout(std::fs::File::create(archive).unwrap())
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

// See: issue 18 ("`store dump SET PATH [--format tar|zip]`: a directory of a set as an archive
// on stdout"; "the archive extracts to the same bytes and metadata as `restore`").
#[test]
fn dump_writes_an_archive_that_extracts_to_what_restore_writes() {
    let env = Env::new();
    env.init();
    let src = crate::metadata::crafted(&env);
    write(&src.join("docs/deep/".repeat(30).trim_end_matches('/')).join("long-named-file"), b"x");
    env.snapshot(&[&src]);
    let archive = env.path("set.tar");
    let (code, stderr) = dump_to(&env, &["latest", "src"], &archive);
    assert_eq!(code, 0, "{stderr}");
    let x = env.path("x");
    std::fs::create_dir(&x).unwrap();
    let tar = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(tar.status.success(), "{}", String::from_utf8_lossy(&tar.stderr));
    let y = env.path("y");
    env.restore("latest", &y);
    // Bytes, types, modes, owners, times with nanoseconds (2300 and 1500 among them), device
    // numbers, attributes, ACLs, a capability, and hard-link groups.
    assert_same_tree(&y.join("src"), &x.join("src"));
    assert_same_tree(&src, &x.join("src"));

    // A part of a set; a path the set does not hold is named.
    let part = env.path("part.tar");
    assert_eq!(dump_to(&env, &["latest", "src/other"], &part).0, 0);
    let list = std::process::Command::new("tar").arg("-tf").arg(&part).output().unwrap();
    let names = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(names.lines().all(|l| l.starts_with("src/other")), "{names}");
    assert!(names.contains("src/other/linked-2"), "{names}");
    let (code, stderr) = dump_to(&env, &["latest", "src/no-such"], &part);
    assert_eq!(code, 1);
    assert!(stderr.contains("src/no-such"), "{stderr}");
}

// See: issue 18 ("`store dump SET PATH [--format tar|zip]`").
#[test]
fn dump_as_zip_keeps_paths_bytes_permissions_and_names_what_zip_cannot_hold() {
    let env = Env::new();
    env.init();
    let src = crate::metadata::crafted(&env);
    env.snapshot(&[&src]);
    let archive = env.path("docs.zip");
    let (code, stderr) = dump_to(&env, &["latest", "src", "--format", "zip"], &archive);
    // The FIFO, the device and the extended attributes cannot be in a zip: named, exit 3.
    assert_eq!(code, 3, "{stderr}");
    for named in [
        "src/fifo: not in the archive",
        "src/null-dev: not in the archive",
        "src/docs/a.txt: not in the archive: extended attributes",
    ] {
        assert!(stderr.contains(named), "{named:?} not in:\n{stderr}");
    }
    let x = env.path("x");
    let unzip = std::process::Command::new("unzip")
        .arg("-q")
        .arg(&archive)
        .arg("-d")
        .arg(&x)
        .output()
        .unwrap();
    assert!(unzip.status.success(), "{}", String::from_utf8_lossy(&unzip.stderr));
    let (zipped, source) =
        (crate::support::snapshot_tree(&x.join("src")), crate::support::snapshot_tree(&src));
    for (path, e) in &source {
        let name = String::from_utf8_lossy(path);
        if e.kind == 's' {
            assert!(!zipped.contains_key(path), "{name} should be left out");
            continue;
        }
        let z = zipped.get(path).unwrap_or_else(|| panic!("{name} missing from the zip"));
        // Bytes, type and permission bits (owners, attributes and links zip does not keep).
        assert_eq!((z.kind, &z.content), (e.kind, &e.content), "{name}");
        if e.kind == 'f' {
            assert_eq!(z.mode & 0o7777, e.mode & 0o7777, "{name}");
        }
    }
    assert_eq!(zipped.len() + 2, source.len(), "only the FIFO and the device are left out");
}
