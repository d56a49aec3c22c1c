//! Write-once components (issue 20, "Write-once content stores: incrementals that do not stat
//! a million files"): an unchanged directory of `--component content=... --write-once` is
//! reused without being listed, from the parent set's tree and then from this host's
//! directory records; every change the promise allows (new files, new directories, deletions)
//! is in the next set, which restores exactly; a file changed in place is missed, and
//! `--verify-write-once` names it; a lost cache, a lost pack and a recent change each make the
//! directories concerned listed again.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::support::{assert_same_tree, write, Env, Run};

/// An Alfresco-shaped content store: `YYYY/M/D/H/M/<n>.bin`, 2 x 2 x 2 x 2 x 3 leaf
/// directories (48) of three files each; returns the number of directories below the root.
fn content_store(root: &Path) -> u64 {
    let mut n = 0u64;
    let mut dirs = 0u64;
    for y in ["2025", "2026"] {
        dirs += 1;
        for m in 1..=2 {
            dirs += 1;
            for d in 1..=2 {
                dirs += 1;
                for h in 0..2 {
                    dirs += 1;
                    for mi in 0..3 {
                        dirs += 1;
                        for _ in 0..3 {
                            let path = root.join(format!("{y}/{m}/{d}/{h}/{mi}/{n:05}.bin"));
                            write(
                                &path,
                                &crate::support::random_bytes(n, 200 + (n as usize * 37) % 5000),
                            );
                            n += 1;
                        }
                    }
                }
            }
        }
    }
    dirs
}

/// `snapshot --json --component content=SRC --write-once --write-once-settle 0s ARGS`.
fn snap(env: &Env, src: &Path, args: &[&str]) -> Run {
    let component = format!("content={}", src.display());
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("--json"),
        OsStr::new("--component"),
        OsStr::new(&component),
        OsStr::new("--write-once"),
        OsStr::new("--write-once-settle"),
        OsStr::new("0s"),
    ];
    all.extend(args.iter().map(OsStr::new));
    env.run("snapshot", &all)
}

fn u(doc: &serde_json::Value, key: &str) -> u64 {
    doc[key].as_u64().unwrap_or_else(|| panic!("{key} in {doc}"))
}

/// Restores set `doc` and compares it with `src`.
#[track_caller]
fn restores_as(env: &Env, doc: &serde_json::Value, src: &Path) {
    let id = doc["id"].as_str().unwrap();
    let out = env.path(&format!("restored-{id}"));
    env.restore(id, &out);
    assert_same_tree(src, &out.join("content"));
    std::fs::remove_dir_all(&out).unwrap();
}

/// Lets every entry made so far settle: the fast path trusts only entries changed at least a
/// second before the parent set began.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn root_of(doc: &serde_json::Value) -> &str {
    doc["components"][0]["root"].as_str().unwrap()
}

/// An initialised repository and a generated content store, settled, with its full set:
/// the scratch area, the store, its number of directories below the root, the set's document.
fn store_with_full_set() -> (Env, PathBuf, u64, serde_json::Value) {
    let env = Env::new();
    env.init();
    let src = env.path("contentstore");
    let dirs = content_store(&src);
    settle();
    let full = snap(&env, &src, &[]).ok().json();
    (env, src, dirs, full)
}

#[test]
fn unchanged_directories_are_reused_unlisted_and_every_change_lands_in_the_next_set() {
    let (env, src, dirs, full) = store_with_full_set();
    assert_eq!(u(&full, "dirs_reused"), 0, "a full set lists everything");
    assert_eq!(u(&full, "files"), 144);
    // The first incremental trusts the full set's trees (made with the same options).
    let second = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&second, "dirs_reused"), dirs, "{second}");
    assert_eq!(u(&second, "files_unchanged"), 144);
    assert_eq!((u(&second, "files"), u(&second, "dirs")), (144, dirs + 1));
    assert_eq!(root_of(&second), root_of(&full));
    // The next from this host's directory records.
    let third = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&third, "dirs_reused"), dirs);
    assert_eq!(root_of(&third), root_of(&full));
    assert_eq!(u(&third, "bytes_read"), 0);
    // What it cost, seen by the kernel: one stat per directory, none per file, and no
    // directory below the root opened or listed.
    let (doc, calls) = traced_snap(&env, &src);
    assert_eq!(root_of(&doc), root_of(&full));
    let src_text = std::fs::canonicalize(&src).unwrap().display().to_string();
    let below = format!("{src_text}/");
    let listed = calls.iter().filter(|c| c.starts_with("getdents64(") && c.contains(&below));
    assert_eq!(listed.count(), 0, "a directory below the root was listed");
    let opened = calls.iter().filter(|c| c.starts_with("openat(") && c.contains(&below));
    assert_eq!(opened.count(), 0, "a directory below the root was opened");
    let stats = calls.iter().filter(|c| c.starts_with("newfstatat(") || c.starts_with("statx("));
    let of_files: Vec<&String> = stats.clone().filter(|c| c.contains(".bin\"")).collect();
    assert!(of_files.is_empty(), "files were looked at: {of_files:?}");
    let of_dirs = stats.filter(|c| c.contains(&below) || c.contains(&src_text)).count() as u64;
    assert!(of_dirs >= dirs && of_dirs <= dirs + 4, "{of_dirs} stats for {dirs} directories");

    // What a content store does: new files in a new minute directory of an existing hour,
    // a file added to an existing directory, a file and a whole directory removed (the
    // cleaner), a new year.
    write(&src.join("2026/2/2/1/3/new-a.bin"), b"new in a new minute");
    write(&src.join("2026/2/2/1/3/new-b.bin"), &crate::support::random_bytes(99, 70_000));
    write(&src.join("2025/1/1/0/0/late.bin"), b"added to an old minute");
    std::fs::remove_file(
        src.join("2025/2/1/1/2").read_dir().unwrap().next().unwrap().unwrap().path(),
    )
    .unwrap();
    std::fs::remove_dir_all(src.join("2026/1/2/0/1")).unwrap();
    write(&src.join("2027/1/1/0/0/first.bin"), b"a new year");
    let changed = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&changed, "files_new"), 4, "{changed}");
    assert_eq!(u(&changed, "files"), 144 + 4 - 1 - 3);
    assert!(u(&changed, "dirs_reused") > 0 && u(&changed, "dirs_reused") < dirs, "{changed}");
    restores_as(&env, &changed, &src);

    // Nothing changed since: entries changed just before the last set are looked at again,
    // everything else is reused; the set is the same.
    let after = snap(&env, &src, &[]).ok().json();
    assert_eq!(root_of(&after), root_of(&changed));
    assert_eq!(u(&after, "bytes_read"), 0);
    settle();
    let settled = snap(&env, &src, &[]).ok().json();
    assert_eq!(root_of(&settled), root_of(&changed));
    restores_as(&env, &settled, &src);
    env.run("check", &["--read-data"]).ok();
}

#[test]
fn a_file_changed_in_place_is_missed_and_verify_write_once_names_it() {
    let (env, src, _, _) = store_with_full_set();
    snap(&env, &src, &[]).ok();
    // The promise broken: a file rewritten in place, its directory untouched.
    let victim = src.join("2025/2/2/1/1").read_dir().unwrap().next().unwrap().unwrap().path();
    let before = std::fs::read(&victim).unwrap();
    write(&victim, b"rewritten in place");
    let missed = snap(&env, &src, &[]).ok().json();
    let out = env.path("missed");
    env.restore(missed["id"].as_str().unwrap(), &out);
    let rel = victim.strip_prefix(&src).unwrap();
    assert_eq!(std::fs::read(out.join("content").join(rel)).unwrap(), before, "what the docs say");

    // A dry run with --verify-write-once names it, exits 3 and writes nothing.
    let sets = || env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len();
    let count = sets();
    let dry = snap(&env, &src, &["--verify-write-once", "--dry-run"]);
    assert_eq!(dry.code, 3, "{}\n{}", dry.stdout, dry.stderr);
    let doc = dry.json();
    assert_eq!(u(&doc, "changed_in_place"), 1, "{doc}");
    let named = doc["changed_in_place_paths"][0].as_str().unwrap();
    assert!(named.contains(&rel.display().to_string()) && named.contains("changed in place"));
    assert!(dry.stderr.contains("changed in place"), "{}", dry.stderr);
    assert_eq!(u(&doc, "dirs_reused"), 0);
    assert_eq!(sets(), count);
    // For real: the set is committed with the file as it is now, and says so with exit 3.
    let verified = snap(&env, &src, &["--verify-write-once"]);
    assert_eq!(verified.code, 3, "{}", verified.stderr);
    let doc = verified.json();
    assert_eq!(u(&doc, "changed_in_place"), 1);
    assert_eq!(u(&doc, "files_changed"), 1);
    restores_as(&env, &doc, &src);
    // Verified, the promise holds again.
    settle();
    let clean = snap(&env, &src, &["--verify-write-once"]).ok().json();
    assert_eq!(u(&clean, "changed_in_place"), 0);
}

#[test]
fn a_lost_cache_a_lost_pack_and_recent_changes_make_directories_listed_again() {
    let (env, src, dirs, _) = store_with_full_set();
    assert_eq!(u(&snap(&env, &src, &[]).ok().json(), "dirs_reused"), dirs);

    // The cache (index, directory records, markers) lost: nothing is trusted, everything is
    // listed, the set is whole; the next one trusts it again.
    let cache = env.repo().join("cache");
    assert!(cache.is_dir());
    std::fs::remove_dir_all(&cache).unwrap();
    let relisted = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&relisted, "dirs_reused"), 0);
    restores_as(&env, &relisted, &src);
    assert_eq!(u(&snap(&env, &src, &[]).ok().json(), "dirs_reused"), dirs);

    // A pack lost: no directory whose files it held is reused; their files are read and
    // stored again, and the new set is whole.
    let packs: Vec<PathBuf> = crate::integrity::files_under(&env.repo().join("packs"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    assert_eq!(packs.len(), 1, "one pack holds this small store");
    std::fs::remove_file(&packs[0]).unwrap();
    let refilled = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&refilled, "dirs_reused"), 0, "{refilled}");
    assert_eq!(u(&refilled, "files_unchanged"), 0);
    restores_as(&env, &refilled, &src);

    // The settling time: with the default hour, entries made just now are not trusted.
    let component = format!("content={}", src.display());
    let args = ["--json", "--component", &component, "--write-once"];
    let cautious = env.run("snapshot", &args).ok().json();
    assert_eq!(u(&cautious, "dirs_reused"), 0);
    restores_as(&env, &cautious, &src);
}

// See: issue 20 and issue 16 ("prune stays exact beside running backups"): prune repacks the
// packs directory records name; the next set falls back for what moved, reuses the rest, and
// is whole.
#[test]
fn after_a_prune_repacks_the_records_packs_the_next_set_is_whole() {
    let (env, src, dirs, full) = store_with_full_set();
    let second = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&second, "dirs_reused"), dirs);
    // Half of one year removed (the cleaner), a set taken, the older sets forgotten: their
    // pack is partly unused, and prune with --max-unused 0 repacks what is still used.
    std::fs::remove_dir_all(src.join("2025/1")).unwrap();
    settle();
    snap(&env, &src, &[]).ok();
    env.run("forget", &[full["id"].as_str().unwrap(), second["id"].as_str().unwrap()]).ok();
    let before = crate::integrity::files_under(&env.repo().join("packs"));
    env.run("prune", &["--max-unused", "0"]).ok();
    let after = crate::integrity::files_under(&env.repo().join("packs"));
    assert!(before.iter().any(|p| !after.contains(p)), "prune repacked nothing");
    let next = snap(&env, &src, &[]).ok().json();
    assert_eq!(u(&next, "files"), 144 - 36);
    restores_as(&env, &next, &src);
    // And the one after reuses every directory again, from records made anew.
    let again = snap(&env, &src, &[]).ok().json();
    // 2025/1 held 19 directories: a month, 2 days, 4 hours and 12 minutes.
    assert_eq!(u(&again, "dirs_reused"), dirs - 19, "{again}");
    assert_eq!(root_of(&again), root_of(&next));
    env.run("check", &["--read-data"]).ok();
}

#[test]
fn write_once_options_are_checked_and_named() {
    let env = Env::new();
    env.init();
    let src = env.path("contentstore");
    write(&src.join("a/b.bin"), b"x");
    let first = env.run("snapshot", &[OsStr::new("--write-once"), src.as_os_str()]);
    assert_ne!(first.code, 0);
    assert!(first.stderr.contains("--write-once must follow"), "{}", first.stderr);
    let cmd = env.run("snapshot", &["--component-cmd", "db=echo hi", "--write-once"]);
    assert_ne!(cmd.code, 0);
    assert!(cmd.stderr.contains("\"db\", which is not a directory"), "{}", cmd.stderr);
    let verify = env.run("snapshot", &[OsStr::new("--verify-write-once"), src.as_os_str()]);
    assert_ne!(verify.code, 0);
    assert!(verify.stderr.contains("--verify-write-once needs"), "{}", verify.stderr);
    let component = format!("content={}", src.display());
    let settle = ["--component", &component, "--write-once", "--write-once-settle", "soon"];
    let bad = env.run("snapshot", &settle);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("invalid --write-once-settle \"soon\""), "{}", bad.stderr);
    // Nothing was committed by any of them.
    assert_eq!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len(), 0);
}

/// [`snap`] under `strace -f -y`: its document and the calls that looked at paths.
fn traced_snap(env: &Env, src: &Path) -> (serde_json::Value, Vec<String>) {
    let strace = std::process::Command::new("strace").arg("-V").output();
    assert!(strace.is_ok_and(|o| o.status.success()), "strace is missing: run `bash .ci/setup`");
    let trace = env.path("trace.txt");
    let component = format!("content={}", src.display());
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=openat,getdents64,newfstatat,statx", "-o"])
        .arg(&trace)
        .arg(crate::support::bin())
        .args(["snapshot", "--json", "--write-once-settle", "0s", "--component", &component])
        .arg("--write-once")
        .arg("--repo")
        .arg(env.repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls = crate::support::strace_calls(&text).into_iter().map(|(_, c)| c).collect();
    (doc, calls)
}

/// Every directory (with `root`) and every regular file below `root`.
fn entries(root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut dirs, mut files) = (vec![root.to_path_buf()], Vec::new());
    let mut i = 0;
    while i < dirs.len() {
        let mut found: Vec<PathBuf> =
            std::fs::read_dir(&dirs[i]).unwrap().map(|e| e.unwrap().path()).collect();
        found.sort();
        for p in found {
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
        i += 1;
    }
    (dirs, files)
}

// See: issue 20 ("A file changed in place in such a component is the operator's promise
// broken"): everything else an operator's tools do to a write-once store (files added to old
// and new directories, files and whole trees removed, directories moved and their modes
// changed), at random, with and without time to settle: every set restores exactly as the
// store was, and the fast path served along the way.
#[test]
fn random_changes_that_keep_the_promise_restore_exactly_from_every_set() {
    for seed in [11u64, 12] {
        let env = Env::new();
        env.init();
        let src = env.path("contentstore");
        content_store(&src);
        settle();
        let mut rng = crate::model::Rng(seed);
        let mut reused = 0;
        let mut made = 0u64;
        for step in 0..12 {
            for _ in 0..1 + rng.below(3) {
                let (dirs, files) = entries(&src);
                let dirs_below: Vec<PathBuf> = dirs[1..].to_vec();
                made += 1;
                match rng.below(6) {
                    0 => {
                        let dir = rng.pick(&dirs).unwrap();
                        let data = crate::support::random_bytes(
                            seed * 1000 + made,
                            rng.below(9000) as usize,
                        );
                        write(&dir.join(format!("added-{made}.bin")), &data);
                    }
                    1 => {
                        let dir = rng.pick(&dirs).unwrap();
                        let deep = dir.join(format!("n{made}/m{}", rng.below(3)));
                        write(&deep.join("first.bin"), &crate::support::random_bytes(made, 700));
                    }
                    2 => {
                        if let Some(f) = rng.pick(&files) {
                            std::fs::remove_file(f).unwrap();
                        }
                    }
                    3 => {
                        if let Some(d) = rng.pick(&dirs_below) {
                            std::fs::remove_dir_all(d).unwrap();
                        }
                    }
                    4 => {
                        let (Some(from), Some(to)) = (rng.pick(&dirs_below), rng.pick(&dirs))
                        else {
                            continue;
                        };
                        if !to.starts_with(from) {
                            std::fs::rename(from, to.join(format!("moved-{made}"))).unwrap();
                        }
                    }
                    _ => {
                        if let Some(d) = rng.pick(&dirs_below) {
                            let mode = if rng.below(2) == 0 { 0o750 } else { 0o755 };
                            std::fs::set_permissions(
                                d,
                                std::os::unix::fs::PermissionsExt::from_mode(mode),
                            )
                            .unwrap();
                        }
                    }
                }
            }
            if step % 3 == 2 {
                settle();
            }
            let doc = snap(&env, &src, &[]).ok().json();
            reused += u(&doc, "dirs_reused");
            restores_as(&env, &doc, &src);
        }
        assert!(reused > 0, "seed {seed}: the fast path never served");
        env.run("check", &["--read-data"]).ok();
    }
}
