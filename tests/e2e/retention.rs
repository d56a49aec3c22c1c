//! Retention and garbage collection: forget + prune free exactly what no set references,
//! repack, prune beside running backups, a paused writer, crashes at every step of prune, and
//! a full disk.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{assert_same_tree, random_bytes, write, Env};

fn pack_bytes(repo: &Path) -> u64 {
    bytes_under(&repo.join("packs"))
}

/// The bytes of the files below `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                total += e.metadata().unwrap().len();
            }
        }
    }
    total
}

fn sets(env: &Env) -> Vec<serde_json::Value> {
    env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().clone()
}

/// Three full sets of disjoint data, in the component `data`.
fn three_sets(env: &Env) -> (PathBuf, Vec<serde_json::Value>) {
    let src = env.path("data");
    let mut docs = Vec::new();
    for i in 0..3u64 {
        let _ = std::fs::remove_dir_all(&src);
        write(&src.join(format!("set{i}.bin")), &random_bytes(100 + i, 3 << 20));
        docs.push(
            env.run("snapshot", &[OsStr::new("--json"), OsStr::new("--full"), src.as_os_str()])
                .ok()
                .json(),
        );
    }
    (src, docs)
}

/// `check --read-data` is clean and the latest set (of `src`, component `data`) restores to a
/// tree equal to `src`.
#[track_caller]
fn assert_intact(env: &Env, src: &std::path::Path, when: &str) {
    let check = env.run("check", &["--read-data"]);
    assert_eq!(check.code, 0, "{when}: {}", check.stdout);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(src, &out.join("data"));
}

#[test]
fn forget_and_prune_free_exactly_what_no_set_references() {
    let env = Env::new();
    env.init();
    let (src, docs) = three_sets(&env);
    let before = pack_bytes(&env.repo());
    // `stats` says what each set alone holds: what forgetting it frees.
    let stats = env.run("stats", &["--json"]).ok().json();
    assert_eq!(stats["sets"], 3);
    // What the repository takes: its packs, index files and manifests, as the storage lists them.
    let stored: u64 =
        ["packs", "index", "snapshots"].iter().map(|d| bytes_under(&env.repo().join(d))).sum();
    assert_eq!(stats["bytes_on_disk"], stored, "{stats}");
    assert!((stats["dedup_ratio"].as_f64().unwrap() - 1.0).abs() < 0.1, "{stats}");
    let per_set = stats["per_set"].as_array().unwrap();
    let unique_of_removed: u64 =
        per_set[1..].iter().map(|s| s["bytes_unique"].as_u64().unwrap()).sum();
    assert!(unique_of_removed > 6 << 20, "{stats}");
    let plan = env.run("forget", &["--keep-last", "1", "--dry-run", "--json"]).ok().json();
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    assert_eq!(sets(&env).len(), 3, "--dry-run removes nothing");
    env.run("forget", &["--keep-last", "1"]).ok();
    assert_eq!(sets(&env).len(), 1);
    assert_eq!(pack_bytes(&env.repo()), before, "forget deletes no data");
    let dry = env.run("prune", &["--dry-run", "--json"]).ok().json();
    assert_eq!(pack_bytes(&env.repo()), before, "prune --dry-run deletes nothing");
    let report = env.run("prune", &["--json"]).ok().json();
    assert_eq!(report["bytes_freed"], dry["bytes_freed"]);
    let after = pack_bytes(&env.repo());
    assert_eq!(before - after, report["bytes_freed"].as_u64().unwrap());
    let freed = report["bytes_freed"].as_u64().unwrap();
    assert!(
        freed >= unique_of_removed && freed < unique_of_removed + 64 * 1024,
        "freed {freed}, stats said {unique_of_removed}"
    );
    // What is left is the kept set's data: its bytes_added, plus trailers and footers.
    let kept_added = docs[2]["bytes_added"].as_u64().unwrap();
    assert!(
        after >= kept_added && after < kept_added + 64 * 1024,
        "left {after} for a set of {kept_added}"
    );
    assert_intact(&env, &src, "after prune");
    // A second prune has nothing to do.
    let again = env.run("prune", &["--json"]).ok().json();
    assert_eq!(again["bytes_freed"], 0);
}

#[test]
fn partly_used_packs_are_repacked() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    let keep = random_bytes(1, 2 << 20);
    write(&src.join("keep.bin"), &keep);
    write(&src.join("drop.bin"), &random_bytes(2, 6 << 20));
    env.snapshot(&[&src]);
    std::fs::remove_file(src.join("drop.bin")).unwrap();
    env.run("snapshot", &[OsStr::new("--full"), src.as_os_str()]).ok();
    env.run("forget", &["--keep-last", "1"]).ok();
    let report = env.run("prune", &["--json"]).ok().json();
    assert_eq!(report["packs_repacked"], 1, "{report}");
    assert!(report["bytes_copied"].as_u64().unwrap() >= 2 << 20);
    assert!(pack_bytes(&env.repo()) < (3 << 20), "the dropped file's bytes are gone");
    assert_eq!(env.run("check", &["--read-data"]).code, 0);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &out.join("data"));
}

#[test]
fn forget_by_id_takes_the_chain_and_keep_full_keeps_chains() {
    let env = Env::new();
    env.init();
    let src = env.path("Forests");
    write(&src.join("stand"), &random_bytes(3, 100_000));
    let full1 = env.snapshot(&[&src]);
    write(&src.join("journal"), b"day 1");
    let inc1 = env.snapshot(&[&src]);
    let full2 = env
        .run("snapshot", &[OsStr::new("--json"), OsStr::new("--full"), src.as_os_str()])
        .ok()
        .json();
    write(&src.join("journal"), b"day 2");
    let inc2 = env.snapshot(&[&src]);
    assert_eq!(inc1["parent"], full1["id"]);
    assert_eq!(inc2["parent"], full2["id"]);
    let plan = env.run("forget", &["--keep-full", "1", "--dry-run", "--json"]).ok().json();
    let removed: Vec<&str> =
        plan["remove"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(removed, [inc1["id"].as_str().unwrap(), full1["id"].as_str().unwrap()]);
    env.run("forget", &[full1["id"].as_str().unwrap()]).ok();
    let left: Vec<String> =
        sets(&env).iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(
        left,
        [inc2["id"].as_str().unwrap(), full2["id"].as_str().unwrap()],
        "the full set's incremental went with it"
    );
    assert_eq!(env.run("forget", &[] as &[&str]).code, 1, "no policy, no ids: refused");
}

#[test]
fn snapshots_and_prunes_running_together_lose_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    let mut expected: Vec<(String, Vec<u8>)> = Vec::new();
    for round in 0..8u64 {
        let content = random_bytes(round, (1 + round as usize % 3) << 20);
        write(&src.join("file.bin"), &content);
        let snap = Command::new(crate::support::bin())
            .args(["snapshot", "--json", "--full", "--lock-wait", "60s", "--repo"])
            .arg(env.repo())
            .arg(&src)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(round * 37 % 150));
        let prune = env.run("prune", &["--lock-wait", "60s"]);
        let snap = snap.wait_with_output().unwrap();
        assert!(snap.status.success(), "round {round}: {}", String::from_utf8_lossy(&snap.stderr));
        assert_eq!(prune.code, 0, "round {round}: {}", prune.stderr);
        let doc: serde_json::Value = serde_json::from_slice(&snap.stdout).unwrap();
        expected.push((doc["id"].as_str().unwrap().to_owned(), content));
        if round % 3 == 2 {
            env.run("forget", &["--keep-last", "2"]).ok();
            let kept: Vec<String> =
                sets(&env).iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
            expected.retain(|(id, _)| kept.contains(id));
        }
    }
    assert_eq!(env.run("check", &["--read-data"]).code, 0);
    for (n, (id, content)) in expected.iter().enumerate() {
        let out = env.path(&format!("out{n}"));
        env.restore(id, &out);
        assert!(std::fs::read(out.join("data/file.bin")).unwrap() == *content, "set {id}");
    }
}

/// A writer paused (SIGSTOP) beyond the stale time while a prune runs either commits a set
/// that restores byte for byte or fails cleanly; never a set that references deleted data.
#[test]
fn a_paused_writer_never_commits_a_set_with_deleted_data() {
    let env = Env::new();
    env.init();
    let (src, _) = three_sets(&env);
    // Garbage for prune to delete, and new data for the writer.
    env.run("forget", &["--keep-last", "1"]).ok();
    for i in 0..6u64 {
        write(&src.join(format!("new{i}.bin")), &random_bytes(500 + i, 4 << 20));
    }
    // The writer stops itself just before sealing its first pack (a pause point), as a
    // suspended laptop would.
    let writer = Command::new(crate::support::bin())
        .args(["snapshot", "--json", "--stale-lock-after", "2s", "--repo"])
        .arg(env.repo())
        .arg(&src)
        .env("STORE_PAUSE_AT", "pack_written")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = rustix::process::Pid::from_child(&writer);
    crate::support::wait_until_stopped(writer.id());
    // As far as anyone else can tell, its lock has not been refreshed for a minute: stale.
    let a_minute_ago = (std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for lock in std::fs::read_dir(env.repo().join("locks")).unwrap() {
        crate::support::set_mtime(&lock.unwrap().path(), a_minute_ago);
    }
    // The paused writer's lock is stale now: prune goes ahead (and removes its unindexed packs).
    let prune = env.run("prune", &["--stale-lock-after", "2s", "--json"]);
    assert_eq!(prune.code, 0, "{}", prune.stderr);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let out = writer.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("paused writer: {:?}: {stderr}", out.status);
    if out.status.success() {
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let target = env.path("out");
        env.run(
            "restore",
            &[OsStr::new(doc["id"].as_str().unwrap()), OsStr::new("--target"), target.as_os_str()],
        )
        .ok();
        assert_same_tree(&src, &target.join("data"));
    } else {
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("nothing was committed"), "{stderr}");
        assert_eq!(sets(&env).len(), 1, "nothing committed");
    }
    let check = env.run("check", &["--read-data"]);
    assert_eq!(check.code, 0, "{}", check.stdout);
    // And the next snapshot works.
    let next = env.snapshot(&[&src]);
    let target = env.path("out-next");
    env.run(
        "restore",
        &[OsStr::new(next["id"].as_str().unwrap()), OsStr::new("--target"), target.as_os_str()],
    )
    .ok();
    assert_same_tree(&src, &target.join("data"));
}

/// The crash points on the steps of prune, in order (FORMAT.md §12).
pub(crate) const PRUNE_CRASH_POINTS: &[&str] = &[
    "prune_marked",
    "prune_planned",
    "prune_repacked",
    "prune_index_written",
    "prune_old_index_removed",
    "prune_deleting",
];

#[test]
fn crash_at_every_step_of_prune_loses_nothing_and_the_next_prune_finishes() {
    for &point in PRUNE_CRASH_POINTS {
        let env = Env::new();
        env.init();
        let (src, docs) = three_sets(&env);
        env.run("forget", &["--keep-last", "1"]).ok();
        let crashed = Command::new(crate::support::bin())
            .args(["prune", "--repo"])
            .arg(env.repo())
            .env("STORE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            crashed.status.code(),
            None,
            "{point}: prune must crash there (built with crash points?)"
        );
        assert_intact(&env, &src, point);
        env.run("prune", &[] as &[&str]).ok();
        let left = pack_bytes(&env.repo());
        let kept_added = docs[2]["bytes_added"].as_u64().unwrap();
        assert!(
            left < kept_added + 64 * 1024,
            "{point}: the next prune did not finish the job ({left})"
        );
        assert_eq!(env.run("check", &["--read-data"]).code, 0, "{point}");
    }
}

#[test]
fn prune_works_on_a_full_disk_thanks_to_the_reserve() {
    let env = Env::new();
    let mnt = env.path("small");
    let _tmpfs = crate::support::Tmpfs::mount(&mnt, "32m");
    let repo = mnt.join("repo");
    let store = |args: &[&OsStr]| {
        let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
        all.extend_from_slice(args);
        crate::support::store(all)
    };
    store(&[OsStr::new("init")]).ok();
    assert!(repo.join("reserve").exists());
    let src = env.path("data");
    for i in 0..3u64 {
        let _ = std::fs::remove_dir_all(&src);
        write(&src.join(format!("f{i}.bin")), &random_bytes(i, 5 << 20));
        store(&[OsStr::new("snapshot"), OsStr::new("--full"), src.as_os_str()]).ok();
    }
    store(&[OsStr::new("forget"), OsStr::new("--keep-last"), OsStr::new("1")]).ok();
    // Fill the disk to the last byte.
    let mut filler = std::fs::File::create(mnt.join("filler")).unwrap();
    let block = vec![0u8; 1 << 16];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let run = store(&[OsStr::new("prune")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    assert_eq!(store(&[OsStr::new("check"), OsStr::new("--read-data")]).code, 0);
    let out = env.path("out");
    store(&[OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()])
        .ok();
    assert_same_tree(&src, &out.join("data"));
}
