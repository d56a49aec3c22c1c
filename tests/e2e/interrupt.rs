//! SIGINT and SIGTERM (Ctrl-C, systemd stopping a unit) in the middle of a snapshot and of a
//! prune (issue 17): the command stops, says so, exits 130 or 143, and leaves no lock, no
//! temporary file and no stray pack; `check` is clean and the next run works.

use std::ffi::OsStr;
use std::process::{Command, Stdio};

use rustix::process::Signal;

use crate::integrity::files_under;
use crate::support::{assert_same_tree, random_bytes, wait_until_stopped, write, Env};

/// Runs `store ARGS` paused at `point`, sends `signal`, resumes it; returns its exit code and
/// stderr.
fn interrupted_at(env: &Env, args: &[&OsStr], point: &str, signal: Signal) -> (i32, String) {
    let child = Command::new(crate::support::bin())
        .args(args)
        .arg("--repo")
        .arg(env.repo())
        .env("STORE_PAUSE_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until_stopped(child.id());
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, signal).unwrap();
    rustix::process::kill_process(pid, Signal::CONT).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// No lock, nothing in `tmp/`, and `check --read-data` without a finding of any kind.
#[track_caller]
fn assert_nothing_left(env: &Env, when: &str) {
    assert_eq!(files_under(&env.repo().join("locks")), Vec::<std::path::PathBuf>::new(), "{when}");
    assert_eq!(files_under(&env.repo().join("tmp")), Vec::<std::path::PathBuf>::new(), "{when}");
    let check = env.run("check", &["--read-data", "--json"]);
    assert_eq!(check.code, 0, "{when}: {}", check.stdout);
    let doc = check.json();
    assert!(doc["findings"].as_array().unwrap().is_empty(), "{when}: {doc}");
}

#[test]
fn sigint_and_sigterm_mid_snapshot_and_mid_prune_leave_nothing_behind() {
    for (signal, code) in [(Signal::INT, 130), (Signal::TERM, 143)] {
        let env = Env::new();
        env.run("init", &["--pack-size", "1MiB"]).ok();
        let src = env.path("data");
        for i in 0..4u64 {
            write(&src.join(format!("old{i}.bin")), &random_bytes(40 + i, 1 << 20));
        }
        env.snapshot(&[&src]);
        for i in 0..6u64 {
            write(&src.join(format!("new{i}.bin")), &random_bytes(50 + i, 1 << 20));
        }
        let packs_before = files_under(&env.repo().join("packs"));

        // Mid-snapshot: its first new pack is durable, no index file lists it yet.
        let snap = [OsStr::new("snapshot"), src.as_os_str()];
        let (got, stderr) = interrupted_at(&env, &snap, "pack_durable", signal);
        assert_eq!(got, code, "{signal:?}: {stderr}");
        assert!(
            stderr.contains("interrupted") && stderr.contains("nothing was committed"),
            "{stderr}"
        );
        assert_eq!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len(), 1);
        assert_eq!(files_under(&env.repo().join("packs")), packs_before, "its packs are removed");
        assert_nothing_left(&env, "after an interrupted snapshot");

        // Mid-prune: marking done, before the exclusive lock.
        env.snapshot(&[&src]);
        env.run("forget", &["--keep-last", "1"]).ok();
        let (got, stderr) = interrupted_at(&env, &[OsStr::new("prune")], "prune_marked", signal);
        assert_eq!(got, code, "{signal:?}: {stderr}");
        assert!(stderr.contains("interrupted"), "{stderr}");
        assert_nothing_left(&env, "after an interrupted prune");
        assert!(env.repo().join("reserve").exists(), "the reserve is back");

        // And the next runs work.
        env.run("prune", &[] as &[&str]).ok();
        let out = env.path("out");
        env.restore("latest", &out);
        assert_same_tree(&src, &out.join("data"));
    }
}

// See: issue 17 ("exit codes that let a script tell failures apart").
#[test]
fn exit_codes_tell_no_repository_and_locked_apart() {
    let env = Env::new();
    let run = env.run("snapshots", &[] as &[&str]);
    assert_eq!(run.code, 10, "no repository: {}", run.stderr);
    env.init();
    let src = env.path("data");
    write(&src.join("a"), b"a");
    env.snapshot(&[&src]);
    // A live exclusive lock: a snapshot is refused with 11, at once.
    let waiter = Command::new(crate::support::bin())
        .args(["repair", "index", "--repo"])
        .arg(env.repo())
        .env("STORE_PAUSE_AT", "repair_index_new_files")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until_stopped(waiter.id());
    let run = env.run("snapshot", &[src.as_os_str()]);
    assert_eq!(run.code, 11, "locked: {}", run.stderr);
    let pid = rustix::process::Pid::from_child(&waiter);
    rustix::process::kill_process(pid, Signal::CONT).unwrap();
    assert!(waiter.wait_with_output().unwrap().status.success());
    env.snapshot(&[&src]);
}
