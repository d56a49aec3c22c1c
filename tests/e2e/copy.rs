//! `store copy`: sets moved into another repository (another key, another chunker seed) restore
//! byte for byte, a second copy writes nothing, a damaged set is named and left out, and a copy
//! killed at any durable step resumes and loses nothing.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::support::{assert_same_tree, random_bytes, store, write, Env, Run, PASSWORD};

/// The target's password: not the source's, so a copy really opens two keys.
const TARGET_PASSWORD: &str = "the target's own password";

struct Copy {
    env: Env,
}

impl Copy {
    fn new() -> Self {
        let env = Env::new();
        env.init();
        std::fs::write(env.path("target-password"), TARGET_PASSWORD).unwrap();
        Copy { env }
    }

    fn target(&self) -> PathBuf {
        self.env.path("target")
    }

    /// `store CMD --repo TARGET ARGS` with the target's password.
    fn on_target<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Run {
        let mut all: Vec<OsString> = vec![
            cmd.into(),
            "--repo".into(),
            self.target().into(),
            "--password-file".into(),
            self.env.path("target-password").into(),
        ];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        store(all)
    }

    fn init_target(&self, args: &[&str]) {
        self.on_target("init", args).ok();
    }

    /// `store copy --from SOURCE --to TARGET ARGS` (the source's password in
    /// `STORE_FROM_PASSWORD`).
    fn copy(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = std::process::Command::new(crate::support::bin());
        cmd.arg("copy")
            .arg("--from")
            .arg(self.env.repo())
            .arg("--to")
            .arg(self.target())
            .arg("--password-file")
            .arg(self.env.path("target-password"))
            .args(args)
            .env_remove("STORE_REPO")
            .env("STORE_FROM_PASSWORD", PASSWORD);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().unwrap())
    }

    /// The sets of a `snapshots --json` (which lists the newest first), oldest first.
    fn sets(run: Run) -> Vec<serde_json::Value> {
        run.ok().json().as_array().unwrap().iter().rev().cloned().collect()
    }
}

/// Files of every size class, a symlink, an empty directory, odd names and modes.
fn source(root: &Path, seed: u64) {
    write(&root.join("empty"), b"");
    write(&root.join("tiny"), b"x");
    for i in 0..40 {
        let len = [1, 100, 5_000, 70_000][i % 4] + i;
        write(&root.join(format!("d{}/f{i}", i % 5)), &random_bytes(seed * 100 + i as u64, len));
    }
    write(&root.join("big/stand"), &random_bytes(seed + 7, 3 << 20));
    write(&root.join("nl\nname \u{e9}"), b"odd name");
    std::os::unix::fs::symlink("big/stand", root.join("link")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::set_permissions(
        root.join("tiny"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

fn restore_from(run: impl Fn(&str, &[&OsStr]) -> Run, set: &str, out: &Path) {
    run("restore", &[OsStr::new(set), OsStr::new("--target"), out.as_os_str()]).ok();
}

fn files_in(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Asserts that two restores hold the same components (their own directories are made by the
/// restore, with its time).
#[track_caller]
fn same_restores(a: &Path, b: &Path) {
    let names = |d: &Path| -> BTreeSet<OsString> {
        std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect()
    };
    assert_eq!(names(a), names(b));
    for name in names(a) {
        assert_same_tree(&a.join(&name), &b.join(&name));
    }
}

/// The objects of a repository (packs, index files, manifests): what a copy writes.
fn objects(repo: &Path) -> BTreeSet<PathBuf> {
    ["packs", "index", "snapshots"].iter().flat_map(|d| files_in(&repo.join(d))).collect()
}

#[test]
fn copied_sets_restore_byte_for_byte_under_another_key_and_a_second_copy_writes_nothing() {
    let c = Copy::new();
    c.init_target(&[]);
    let src = c.env.path("src");
    source(&src, 1);
    c.env.snapshot(&[&src]);
    write(&src.join("d1/f1"), b"changed in the second set");
    c.env.snapshot(&[&src]);
    let doc = c.copy(&["--json"], &[]).ok().json();
    let copied = doc["sets"].as_array().unwrap().clone();
    assert_eq!(copied.len(), 2, "{doc}");
    assert!(copied.iter().all(|s| s["already"] == false && s["target"].is_string()), "{doc}");
    assert!(doc["packs"].as_u64().unwrap() >= 1);

    // Every set restores the same from both repositories, metadata included.
    for s in &copied {
        let (from, to) = (s["source"].as_str().unwrap(), s["target"].as_str().unwrap());
        let a = c.env.path(&format!("out-a-{from}"));
        let b = c.env.path(&format!("out-b-{from}"));
        restore_from(|cmd, args| c.env.run(cmd, args), from, &a);
        restore_from(|cmd, args| c.on_target(cmd, args), to, &b);
        same_restores(&a, &b);
    }
    let latest = c.env.path("out-b-latest");
    restore_from(|cmd, args| c.on_target(cmd, args), "latest", &latest);
    assert_same_tree(&src, &latest.join("src"));

    // Another key: other chunk ids, so other trees and other packs.
    let source_sets = Copy::sets(c.env.run("snapshots", &["--json"]));
    let target_sets = Copy::sets(c.on_target("snapshots", &["--json"]));
    assert_eq!(target_sets.len(), 2);
    for (a, b) in source_sets.iter().zip(&target_sets) {
        assert_eq!(a["time"], b["time"]);
        assert_eq!(a["host"], b["host"]);
        assert_eq!(a["kind"], b["kind"]);
        assert_ne!(a["components"][0]["root"], b["components"][0]["root"]);
    }
    // The copy of the incremental set names the copy of its parent.
    assert_eq!(target_sets[1]["parent"], target_sets[0]["id"]);
    let packs_a = files_in(&c.env.repo().join("packs"));
    let packs_b = files_in(&c.target().join("packs"));
    assert!(!packs_b.is_empty() && packs_a.is_disjoint(&packs_b));
    let check = c.on_target("check", &["--read-data", "--json"]).ok().json();
    assert_eq!(check["findings"].as_array().map_or(0, Vec::len), 0, "{check}");

    // A second copy, even after a set of the target was retagged, writes nothing.
    c.on_target("tag", &["latest", "--add", "offsite"]).ok();
    let before = objects(&c.target());
    let again = c.copy(&["--json"], &[]).ok().json();
    assert_eq!(again["packs"], 0, "{again}");
    assert!(again["sets"].as_array().unwrap().iter().all(|s| s["already"] == true), "{again}");
    let after = objects(&c.target());
    assert_eq!(before, after, "a copy with nothing to copy wrote something");

    // The next set: only what changed is read from the source (the files copied before are
    // remembered with their chunks in the target).
    write(&src.join("d2/new"), &random_bytes(77, 10_000));
    c.env.snapshot(&[&src]);
    let third = c.copy(&["--json"], &[]).ok().json();
    let last = third["sets"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["already"], false);
    assert_eq!(last["bytes_read"], 10_000, "{third}");
    let out = c.env.path("out-third");
    restore_from(|cmd, args| c.on_target(cmd, args), "latest", &out);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn a_named_set_is_copied_alone_and_a_dry_run_writes_nothing() {
    let c = Copy::new();
    c.init_target(&[]);
    let src = c.env.path("src");
    source(&src, 2);
    let first = c.env.snapshot(&[&src]);
    write(&src.join("tiny"), b"y");
    c.env.snapshot(&[&src]);
    let before = objects(&c.target());
    let dry = c.copy(&["--dry-run", "--json"], &[]).ok().json();
    assert_eq!(dry["sets"].as_array().unwrap().len(), 2);
    assert!(dry["sets"].as_array().unwrap().iter().all(|s| s["target"].is_null()), "{dry}");
    assert_eq!(before, objects(&c.target()));

    let id = first["id"].as_str().unwrap();
    let one = c.copy(&["--json", &id[..12]], &[]).ok().json();
    assert_eq!(one["sets"].as_array().unwrap().len(), 1, "{one}");
    assert_eq!(one["sets"][0]["source"], id);
    assert_eq!(Copy::sets(c.on_target("snapshots", &["--json"])).len(), 1);

    let unknown = c.copy(&["deadbeefdeadbeef"], &[]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("deadbeefdeadbeef"), "{}", unknown.stderr);
}

#[test]
fn host_and_tag_choose_the_sets_to_copy() {
    let c = Copy::new();
    c.init_target(&[]);
    let src = c.env.path("src");
    source(&src, 8);
    let snap = |args: &[&str]| {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([OsStr::new("--json"), src.as_os_str()]);
        c.env.run("snapshot", &all).ok().json()["id"].as_str().unwrap().to_owned()
    };
    let a = snap(&["--host", "alf01", "--tag", "daily"]);
    let _b = snap(&["--host", "alf01"]);
    let _c = snap(&["--host", "ml01", "--tag", "daily"]);
    let doc = c.copy(&["--json", "--host", "alf01", "--tag", "daily"], &[]).ok().json();
    let sets = doc["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 1, "{doc}");
    assert_eq!(sets[0]["source"], a.as_str());
    let hosts = c.copy(&["--json", "--host", "alf01"], &[]).ok().json();
    assert_eq!(hosts["sets"].as_array().unwrap().len(), 2, "{hosts}");
    assert_eq!(Copy::sets(c.on_target("snapshots", &["--json"])).len(), 2);
    let both = c.copy(&["--host", "ml01", &a[..12]], &[]);
    assert_eq!(both.code, 2, "naming sets and filtering is refused: {}", both.stderr);
}

// A set whose data is damaged in the source is left out and named; the next set, which holds a
// file that the failed copy had begun to store, is copied whole all the same.
#[test]
fn a_damaged_set_is_named_and_left_out_and_the_others_are_copied_whole() {
    let c = Copy::new();
    c.init_target(&[]);
    let src = c.env.path("src");
    let shared = random_bytes(6, 40_000);
    write(&src.join("a-shared"), &shared);
    write(&src.join("only"), &random_bytes(5, 2 << 20));
    let damaged = c.env.snapshot(&[&src]);
    // The one pack holds both files, `a-shared` first: damage the middle, in `only`.
    let packs = files_in(&c.env.repo().join("packs"));
    assert_eq!(packs.len(), 1);
    let pack = c.env.repo().join("packs").join(packs.iter().next().unwrap());
    let len = std::fs::metadata(&pack).unwrap().len();
    crate::integrity::flip(&pack, len / 2);
    // A later set of another directory holding the same first file.
    let other = c.env.path("other");
    write(&other.join("a-shared"), &shared);
    write(&other.join("b"), b"more");
    let good = c.env.snapshot(&[&other]);

    let run = c.copy(&["--json"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let id = damaged["id"].as_str().unwrap();
    assert!(run.stderr.contains(&id[..8]) && run.stderr.contains("src/only"), "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["failed"][0]["source"], id, "{doc}");
    assert_eq!(doc["sets"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["sets"][0]["source"], good["id"]);
    let sets = Copy::sets(c.on_target("snapshots", &["--json"]));
    assert_eq!(sets.len(), 1);
    let out = c.env.path("out");
    restore_from(|cmd, args| c.on_target(cmd, args), "latest", &out);
    assert_same_tree(&other, &out.join("other"));
    c.on_target("check", &["--read-data"]).ok();
}

#[test]
fn a_copy_killed_at_any_durable_step_resumes_and_loses_nothing() {
    for point in ["pack_written@2", "copy_before_manifest", "copy_before_manifest@2"] {
        let c = Copy::new();
        c.init_target(&["--pack-size", "1MiB"]);
        let src = c.env.path("src");
        source(&src, 3);
        c.env.snapshot(&[&src]);
        write(&src.join("big/second"), &random_bytes(31, 2 << 20));
        c.env.snapshot(&[&src]);
        let killed = c.copy(&[], &[("STORE_CRASH_AT", point)]);
        assert_ne!(killed.code, 0, "{point}: the crash point was not reached");
        let done = c.copy(&["--json"], &[]).ok().json();
        let sets = done["sets"].as_array().unwrap();
        assert_eq!(sets.len(), 2, "{point}: {done}");
        let out = c.env.path("out");
        restore_from(|cmd, args| c.on_target(cmd, args), "latest", &out);
        assert_same_tree(&src, &out.join("src"));
        c.on_target("check", &["--read-data"]).ok();
        assert_eq!(Copy::sets(c.on_target("snapshots", &["--json"])).len(), 2, "{point}");
    }
}

#[test]
fn copy_refuses_what_it_cannot_do_and_says_why() {
    let c = Copy::new();
    let src = c.env.path("src");
    source(&src, 4);
    c.env.snapshot(&[&src]);

    // No target repository yet.
    let none = c.copy(&[], &[]);
    assert_eq!(none.code, 10, "{}", none.stderr);
    assert!(none.stderr.contains("target"), "{}", none.stderr);

    // The same repository on both sides.
    let repo = c.env.repo();
    let same = store([
        OsStr::new("copy"),
        OsStr::new("--from"),
        repo.as_os_str(),
        OsStr::new("--to"),
        repo.as_os_str(),
    ]);
    assert_eq!(same.code, 1);
    assert!(same.stderr.contains("same repository"), "{}", same.stderr);

    // A target of an older format version than the source.
    c.init_target(&["--format-version", "1", "--encryption", "none"]);
    let old = c.copy(&[], &[]);
    assert_eq!(old.code, 1);
    assert!(old.stderr.contains("format version 1"), "{}", old.stderr);
    assert!(Copy::sets(c.on_target("snapshots", &["--json"])).is_empty());

    // The source's password: wrong (exit 12), or missing with no terminal (named).
    let wrong = c.copy(&[], &[("STORE_FROM_PASSWORD", "not it")]);
    assert_eq!(wrong.code, 12, "{}", wrong.stderr);
    let mut cmd = std::process::Command::new(crate::support::bin());
    cmd.args([OsStr::new("copy"), OsStr::new("--from"), repo.as_os_str()])
        .arg("--to")
        .arg(c.target())
        .env_remove("STORE_REPO")
        .env_remove("STORE_FROM_PASSWORD")
        .stdin(std::process::Stdio::null());
    let missing = Run::from(cmd.output().unwrap());
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("STORE_FROM_PASSWORD"), "{}", missing.stderr);
}

#[test]
fn the_committed_version_1_repository_is_copied_into_an_encrypted_one_byte_for_byte() {
    let env = Env::new();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/v1/repo");
    let from = env.path("v1");
    crate::compat::copy_tree(&fixture, &from);
    let target = env.path("target");
    store([OsStr::new("init"), OsStr::new("--repo"), target.as_os_str()]).ok();
    let doc = store([
        OsStr::new("copy"),
        OsStr::new("--from"),
        from.as_os_str(),
        OsStr::new("--to"),
        target.as_os_str(),
        OsStr::new("--json"),
    ])
    .ok()
    .json();
    let sets = doc["sets"].as_array().unwrap();
    assert!(!sets.is_empty());
    for s in sets {
        let (a, b) = (env.path("a"), env.path("b"));
        let _ = std::fs::remove_dir_all(&a);
        let _ = std::fs::remove_dir_all(&b);
        let restore = |repo: &Path, set: &str, out: &Path| {
            store([
                OsStr::new("restore"),
                OsStr::new("--repo"),
                repo.as_os_str(),
                OsStr::new(set),
                OsStr::new("--target"),
                out.as_os_str(),
            ])
            .ok();
        };
        restore(&from, s["source"].as_str().unwrap(), &a);
        restore(&target, s["target"].as_str().unwrap(), &b);
        same_restores(&a, &b);
    }
    let run = store([OsStr::new("check"), OsStr::new("--repo"), target.as_os_str()]);
    run.ok();
}
