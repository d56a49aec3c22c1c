//! Data safety (issue 12): the defects found on data nobody here generated. Each test failed
//! before the fix it names.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::integrity::{blobs_of, files_under, flip};
use crate::support::{assert_same_tree, random_bytes, store, write, Env, Run};

/// Every pack file of the repository.
fn packs(env: &Env) -> Vec<PathBuf> {
    files_under(&env.repo().join("packs"))
}

fn pack_bytes(env: &Env) -> u64 {
    packs(env).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum()
}

fn sets(env: &Env) -> Vec<serde_json::Value> {
    env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().clone()
}

/// Restores set `set` into a fresh directory and returns it.
#[track_caller]
fn restored(env: &Env, set: &str) -> PathBuf {
    let out = env.path(&format!("out-{set}-{}", packs(env).len()));
    let _ = std::fs::remove_dir_all(&out);
    env.restore(set, &out);
    out
}

fn check_json(env: &Env, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = env.run("check", &all);
    (run.code, run.json())
}

fn finding_kinds(doc: &serde_json::Value) -> Vec<String> {
    doc["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().into()).collect()
}

/// `check --read-data` finds no damage (notices allowed).
#[track_caller]
fn assert_clean(env: &Env, when: &str) {
    let run = env.run("check", &["--read-data"]);
    assert_eq!(run.code, 0, "{when}: check found damage:\n{}{}", run.stdout, run.stderr);
}

// See: issue 12, defect 1 (prune deleted every pack of a set of small files).
#[test]
fn r12_prune_never_deletes_or_repacks_a_pack_whose_blobs_are_all_live() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    for i in 0..2000 {
        write(&src.join(format!("d{}/f{i}", i % 40)), format!("x{i}").as_bytes());
    }
    env.snapshot(&[&src]);
    let before = packs(&env);
    for args in [&["--json"][..], &["--json", "--max-unused", "0"][..]] {
        let report = env.run("prune", args).ok().json();
        assert_eq!(report["packs_deleted"], 0, "{args:?}: {report}");
        assert_eq!(report["packs_repacked"], 0, "{args:?}: {report}");
        assert_eq!(report["bytes_freed"], 0, "{args:?}: {report}");
        assert_eq!(packs(&env), before, "{args:?}: the packs are untouched");
    }
    assert_clean(&env, "after prune");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));

    // Mixed: a later set drops half the files; with a low threshold the mostly dead packs are
    // repacked, and everything the kept set holds survives.
    for i in (0..2000).step_by(2) {
        std::fs::remove_file(src.join(format!("d{}/f{i}", i % 40))).unwrap();
    }
    write(&src.join("big.bin"), &random_bytes(7, 2 << 20));
    env.run("snapshot", &[OsStr::new("--full"), src.as_os_str()]).ok();
    env.run("forget", &["--keep-last", "1"]).ok();
    let report = env.run("prune", &["--json", "--max-unused", "2"]).ok().json();
    assert!(report["packs_repacked"].as_u64().unwrap() >= 1, "{report}");
    assert_clean(&env, "after repacking");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
    let again = env.run("prune", &["--json", "--max-unused", "0"]).ok().json();
    assert_eq!(again["packs_deleted"], 0, "a second prune has nothing to do: {again}");
}

/// Writes a second copy of every blob of every pack, in new packs with their own index files,
/// as concurrent writers of the same data would.
fn duplicate_every_blob(env: &Env) {
    use store::{EncodedBlob, IndexedPack, PackReader, PackWriter};
    let repo = crate::support::open_repo(&env.repo());
    for path in packs(env) {
        let id: store::PackId = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let reader = PackReader::open(&path, id, repo.crypto()).unwrap();
        let mut w =
            PackWriter::create(&repo.layout().tmp_dir(), repo.config().version, repo.crypto())
                .unwrap();
        let (mut frame, mut raw) = (Vec::new(), Vec::new());
        // Reversed, so the copy is a different pack file holding the same blobs.
        for e in reader.entries().iter().rev() {
            store::read_blob(
                repo.crypto(),
                reader.file(),
                || path.clone(),
                id,
                e,
                &mut frame,
                &mut raw,
            )
            .unwrap();
            let stored = &frame[store::BLOB_HEADER_LEN..];
            w.add(&EncodedBlob::from_stored(e.id, e.kind, e.codec, e.raw_len, stored)).unwrap();
        }
        let layout = repo.layout().clone();
        let sealed = w.seal(|p| layout.pack(p)).unwrap();
        repo.save_index_file(&[IndexedPack {
            id: sealed.id,
            len: sealed.len,
            entries: sealed.entries,
        }])
        .unwrap();
    }
}

// See: issue 12, defect 4 (a second copy was never unused; prune's report misled).
#[test]
fn r12_prune_reclaims_duplicate_copies_and_reports_what_it_wrote() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.bin"), &random_bytes(1, 3 << 20));
    write(&src.join("b.bin"), &random_bytes(2, 3 << 20));
    env.snapshot(&[&src]);
    let single = pack_bytes(&env);
    duplicate_every_blob(&env);
    let doubled = pack_bytes(&env);
    assert!(doubled > 2 * single - 4096, "{doubled} vs {single}");
    let dry = env.run("prune", &["--json", "--dry-run"]).ok().json();
    assert!(dry["bytes_freed"].as_u64().unwrap() >= single - 4096, "{dry}");
    assert_eq!(pack_bytes(&env), doubled, "--dry-run deletes nothing");
    let report = env.run("prune", &["--json"]).ok().json();
    let after = pack_bytes(&env);
    let (deleted, written, freed) = (
        report["bytes_deleted"].as_u64().unwrap(),
        report["bytes_written"].as_u64().unwrap(),
        report["bytes_freed"].as_u64().unwrap(),
    );
    assert_eq!(freed, deleted - written, "{report}");
    assert_eq!(doubled - after, freed, "the report says what the disk lost: {report}");
    assert!(after <= single + 4096, "duplicates reclaimed: {after} left of {single}");
    assert_clean(&env, "after reclaiming duplicates");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));

    // Concurrent snapshots of the same data from two hosts, then one set forgotten: what is
    // left after `prune --max-unused 0` is one copy.
    let env = Env::new();
    env.init();
    let mut children: Vec<std::process::Child> = ["h1", "h2"]
        .iter()
        .map(|host| {
            Command::new(crate::support::bin())
                .args(["snapshot", "--host", host, "--repo"])
                .arg(env.repo())
                .arg(&src)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    let h1 = sets(&env).into_iter().find(|s| s["host"] == "h1").unwrap();
    env.run("forget", &[h1["id"].as_str().unwrap()]).ok();
    let report = env.run("prune", &["--json", "--max-unused", "0"]).ok().json();
    assert_eq!(
        report["bytes_freed"].as_u64().unwrap(),
        report["bytes_deleted"].as_u64().unwrap() - report["bytes_written"].as_u64().unwrap()
    );
    assert!(pack_bytes(&env) <= single + 4096, "{} left of {single}: {report}", pack_bytes(&env));
    assert_clean(&env, "after the concurrent sets");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
}

// See: issue 12, defect 2 (24,000 unreadable long paths committed a manifest no reader accepts).
#[test]
fn r12_a_set_with_more_problem_paths_than_a_manifest_lists_is_committed_readable() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = env.path("src");
    write(&src.join("readable.txt"), b"kept");
    let long = "n".repeat(200);
    let unreadable = 10_050;
    for i in 0..unreadable {
        let p = src.join(format!("d{}/{long}{i}", i % 50));
        write(&p, b"secret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let repo = env.repo();
    std::fs::create_dir(&repo).unwrap();
    if rustix::process::geteuid().is_root() {
        let nobody = Some(rustix::fs::Uid::from_raw(65534));
        rustix::fs::chown(&repo, nobody, Some(rustix::fs::Gid::from_raw(65534))).unwrap();
    }
    let r = |args: &[&str]| {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([OsStr::new("--repo"), repo.as_os_str()]);
        crate::support::as_nobody(&all)
    };
    assert_eq!(r(&["init"]).code, 0);
    let mut snap: Vec<&OsStr> = vec![OsStr::new("snapshot"), OsStr::new("--json")];
    snap.extend([src.as_os_str(), OsStr::new("--repo"), repo.as_os_str()]);
    let run = crate::support::as_nobody(&snap);
    assert_eq!(run.code, 3, "{}", &run.stderr[run.stderr.len().saturating_sub(2000)..]);
    // Every path is named on stderr, though the manifest lists a bounded number.
    assert_eq!(run.stderr.matches(": not backed up: ").count(), unreadable, "stderr names each");
    let doc = run.json();
    assert_eq!(doc["issues_reported"], unreadable);
    let listed = r(&["snapshots", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let sets = listed.json();
    assert_eq!(sets.as_array().unwrap().len(), 1);
    let issues = sets[0]["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 10_001, "10,000 listed and one summary");
    let summary = &issues[10_000];
    assert_eq!(summary["path"], "");
    assert!(summary["reason"].as_str().unwrap().contains("50 more paths"), "{summary}");
    let check = r(&["check"]);
    assert_eq!(check.code, 0, "the set is readable: {}", check.stdout);
    let out = env.path("out");
    let mut restore: Vec<&OsStr> = vec![OsStr::new("restore"), OsStr::new("latest")];
    restore.extend([OsStr::new("--target"), out.as_os_str()]);
    restore.extend([OsStr::new("--repo"), repo.as_os_str()]);
    std::fs::create_dir(&out).unwrap();
    if rustix::process::geteuid().is_root() {
        let nobody = Some(rustix::fs::Uid::from_raw(65534));
        rustix::fs::chown(&out, nobody, Some(rustix::fs::Gid::from_raw(65534))).unwrap();
    }
    assert_eq!(crate::support::as_nobody(&restore).code, 0);
    assert_eq!(std::fs::read(out.join("src/readable.txt")).unwrap(), b"kept");
}

/// A data blob of the pack holding the most data: (pack, offset of a byte inside its data).
fn a_data_byte(env: &Env) -> (PathBuf, u64) {
    let pack = packs(env).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0 && b.stored_len > 1000).unwrap();
    (pack, b.offset + 48 + b.stored_len / 2)
}

// See: issue 12, defect 3 (damaged chunks stayed in the index and were reused by every later
// set, `--full` included).
#[test]
fn r12_damage_found_by_check_is_recorded_and_the_next_snapshot_stores_it_anew() {
    for full in [false, true] {
        let env = Env::new();
        env.init();
        let src = env.path("data");
        write(&src.join("big.bin"), &random_bytes(3, 3 << 20));
        for i in 0..10 {
            write(&src.join(format!("doc{i}.txt")), format!("text {i}\n").repeat(300).as_bytes());
        }
        env.snapshot(&[&src]);
        let (pack, at) = a_data_byte(&env);
        flip(&pack, at);
        let (code, doc) = check_json(&env, &["--read-data"]);
        assert_eq!(code, 1, "{doc}");
        assert_eq!(doc["damage_recorded"], 1, "{doc}");
        // Before the fix this set reused the damaged chunk and was committed damaged.
        let mut args = vec![OsStr::new("--json")];
        if full {
            args.push(OsStr::new("--full"));
        }
        args.push(src.as_os_str());
        let snap = env.run("snapshot", &args).ok().json();
        assert!(snap["chunks_new"].as_u64().unwrap() >= 1, "{snap}");
        assert_same_tree(&src, &restored(&env, "latest").join("data"));
        // The older set reads the new copy too: nothing references the damaged copy any more.
        let first = sets(&env).last().unwrap()["id"].as_str().unwrap().to_owned();
        assert_same_tree(&src, &restored(&env, &first).join("data"));
        let (code, doc) = check_json(&env, &["--read-data"]);
        assert_eq!(code, 0, "healed: {doc}");
        assert!(finding_kinds(&doc).contains(&"unused_damaged_blob".to_owned()), "{doc}");
        // The record outlives a rebuilt index: the damaged copy is never used again.
        env.run("repair", &["index"]).ok();
        assert_same_tree(&src, &restored(&env, &first).join("data"));
        // `repair packs` moves the intact blobs out and removes the damaged pack.
        let repaired = env.run("repair", &["packs", "--json"]).ok().json();
        let packs_done = repaired["packs"].as_array().unwrap();
        assert_eq!(packs_done.len(), 1, "{repaired}");
        assert_eq!(packs_done[0]["lost"].as_array().unwrap().len(), 0, "{repaired}");
        assert!(!pack.exists(), "the damaged pack is gone");
        let (code, doc) = check_json(&env, &["--read-data"]);
        assert_eq!(code, 0, "{doc}");
        assert!(doc["findings"].as_array().unwrap().is_empty(), "nothing left to report: {doc}");
        assert!(files_under(&env.repo().join("damage")).is_empty(), "record dropped with the pack");
        for s in sets(&env) {
            assert_same_tree(&src, &restored(&env, s["id"].as_str().unwrap()).join("data"));
        }
    }
}

// See: issue 12, defect 3: damage with no intact copy anywhere is named, salvaged around, and
// dropped from the sets by the documented repairs.
#[test]
fn r12_damage_without_another_copy_is_repaired_and_the_rest_of_its_pack_salvaged() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("gone.bin"), &random_bytes(4, 2 << 20));
    write(&src.join("kept.bin"), &random_bytes(5, 1 << 20));
    // One worker: files are read, and their chunks packed, in name order.
    env.run("snapshot", &[OsStr::new("--threads"), OsStr::new("1"), src.as_os_str()]).ok();
    let pack = packs(&env).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    // The first data blob is the first chunk of gone.bin.
    let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0).unwrap();
    flip(&pack, b.offset + 48 + b.stored_len / 2);
    std::fs::remove_file(src.join("gone.bin")).unwrap();
    assert_eq!(env.run("check", &["--read-data"]).code, 1);
    env.snapshot(&[&src]);
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
    let (code, doc) = check_json(&env, &[]);
    assert_eq!(code, 1, "the old set still lost gone.bin: {doc}");
    let text = doc.to_string();
    assert!(text.contains("gone.bin"), "the lost path is named: {doc}");
    let repaired = env.run("repair", &["packs", "--json"]).ok().json();
    let lost = repaired["packs"][0]["lost"].as_array().unwrap();
    assert_eq!(lost.len(), 1, "{repaired}");
    assert!(repaired["packs"][0]["salvaged"].as_u64().unwrap() >= 2, "{repaired}");
    env.run("repair", &["snapshots", "--forget"]).ok();
    assert_clean(&env, "after repair packs and repair snapshots");
    for s in sets(&env) {
        let out = restored(&env, s["id"].as_str().unwrap());
        assert_eq!(std::fs::read(out.join("data/kept.bin")).unwrap(), random_bytes(5, 1 << 20));
    }
}

// See: issue 12, defect 3 (the writer's pre-commit check) and "one pack lost": a truncated or
// missing pack is never built upon; the next set stores its data again and is whole.
#[test]
fn r12_a_truncated_or_missing_pack_is_never_built_upon() {
    for damage in ["truncate", "delete"] {
        let env = Env::new();
        env.init();
        let src = env.path("data");
        write(&src.join("big.bin"), &random_bytes(6, 3 << 20));
        write(&src.join("small.txt"), b"small");
        env.snapshot(&[&src]);
        let pack =
            packs(&env).into_iter().max_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
        if damage == "truncate" {
            let len = std::fs::metadata(&pack).unwrap().len();
            std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644))
                .unwrap();
            std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 2).unwrap();
        } else {
            std::fs::remove_file(&pack).unwrap();
        }
        let run = env.run("snapshot", &["--json", src.to_str().unwrap()]);
        assert_eq!(run.code, 0, "{damage}: {}", run.stderr);
        assert!(run.json()["bytes_read"].as_u64().unwrap() >= 3 << 20, "{damage}: re-read");
        assert_same_tree(&src, &restored(&env, "latest").join("data"));
        let (code, doc) = check_json(&env, &[]);
        let whole_again = std::fs::read(&pack).is_ok_and(|bytes| {
            pack.file_stem().and_then(|s| s.to_str())
                == Some(blake3::hash(&bytes).to_hex().as_str())
        });
        if whole_again {
            // The new set stored the same blobs in the same order (the order blobs reach the
            // packer varies from run to run): the pack was written again byte for byte under
            // its name, its hash, so nothing is missing.
            assert_eq!(code, 0, "{damage}: the pack is back, whole: {doc}");
        } else {
            assert_eq!(code, 1, "{damage}: the first set is still damaged: {doc}");
            assert!(doc.to_string().contains("repair index"), "{damage}: {doc}");
        }
    }
}

// See: issue 12, defect 5 (several concurrent inits "created" repositories).
#[test]
fn r12_of_concurrent_inits_exactly_one_creates_the_repository() {
    for round in 0..6 {
        let env = Env::new();
        if round % 2 == 1 {
            std::fs::create_dir(env.repo()).unwrap(); // an existing empty directory
        }
        let children: Vec<std::process::Child> = (0..5)
            .map(|_| {
                Command::new(crate::support::bin())
                    .args(["init", "--json", "--repo"])
                    .arg(env.repo())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<std::process::Output> =
            children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let won: Vec<&std::process::Output> = outs.iter().filter(|o| o.status.success()).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one init succeeds");
        for o in outs.iter().filter(|o| !o.status.success()) {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("another `store init`")
                    || err.contains("not empty")
                    || err.contains("already exists"),
                "round {round}: {err}"
            );
        }
        let config = std::fs::read(env.repo().join("config")).unwrap();
        assert_eq!(std::fs::read(env.repo().join("config.copy")).unwrap(), config);
        let doc: serde_json::Value = serde_json::from_slice(&won[0].stdout).unwrap();
        let listed = env.run("snapshots", &["--json"]).ok();
        assert_eq!(listed.json().as_array().unwrap().len(), 0);
        assert!(doc["repo_id"].is_string());
    }
}

// See: issue 12, defect 6 (`--exclude /cache` dropped every `cache` directory at any depth).
#[test]
fn r12_a_leading_slash_anchors_snapshot_and_restore_patterns() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("cache/top"), b"1");
    write(&src.join("app/cache/deep"), b"2");
    write(&src.join("app/file"), b"3");
    env.run("snapshot", &[OsStr::new("--exclude"), OsStr::new("/cache"), src.as_os_str()]).ok();
    let listing = env.run("ls", &["latest"]).ok().stdout;
    assert!(!listing.contains("data/cache/top"), "{listing}");
    assert!(listing.contains("data/app/cache/deep"), "a deeper cache is kept: {listing}");
    let out = env.path("out");
    let target = out.as_os_str();
    env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--target"),
            target,
            OsStr::new("--exclude"),
            OsStr::new("/data/app/cache"),
        ],
    )
    .ok();
    assert!(out.join("data/app/file").exists());
    assert!(!out.join("data/app/cache").exists());
    let out2 = env.path("out2");
    env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--target"),
            out2.as_os_str(),
            OsStr::new("--include"),
            OsStr::new("/data/app"),
        ],
    )
    .ok();
    assert!(out2.join("data/app/cache/deep").exists());
}

/// Runs `store ARGS` with stdout a pipe whose reading end is already closed.
fn with_closed_stdout(args: &[&OsStr]) -> Run {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(crate::support::bin())
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// See: issue 12, defect 7 (`store check | head -1` panicked).
#[test]
fn r12_no_command_panics_on_a_closed_stdout_and_exit_codes_stay_true() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.bin"), &random_bytes(8, 300_000));
    env.snapshot(&[&src]);
    let repo = env.repo();
    let commands: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["check", "--json"],
        vec!["stats"],
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["diff", "latest", "latest"],
        vec!["forget", "--keep-last", "1", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["unlock"],
        vec!["restore", "latest", "--dry-run"],
        vec!["snapshot", src.to_str().unwrap()],
    ];
    for cmd in &commands {
        let mut args: Vec<&OsStr> = cmd.iter().map(OsStr::new).collect();
        args.extend([OsStr::new("--repo"), repo.as_os_str()]);
        let run = with_closed_stdout(&args);
        assert!(!run.stderr.contains("panicked"), "{cmd:?}: {}", run.stderr);
        assert_eq!(run.code, 0, "{cmd:?}: {}", run.stderr);
    }
    // A damaged repository still exits 1 with nobody reading the report.
    let (pack, at) = a_data_byte(&env);
    flip(&pack, at);
    let run = with_closed_stdout(&[
        OsStr::new("check"),
        OsStr::new("--read-data"),
        OsStr::new("--repo"),
        repo.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
}

// See: issue 12, "recovery that says what to do": a deleted config with an intact copy.
#[test]
fn r12_a_missing_config_is_named_and_restored_from_its_copy() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.txt"), b"a");
    env.snapshot(&[&src]);
    let config = std::fs::read(env.repo().join("config")).unwrap();
    std::fs::remove_file(env.repo().join("config")).unwrap();
    for cmd in [&["snapshots"][..], &["check"], &["restore", "latest", "--dry-run"]] {
        let run = env.run(cmd[0], &cmd[1..]);
        assert_eq!(run.code, 10, "{cmd:?}: not a repository exits 10");
        assert!(run.stderr.contains("not a store repository"), "{cmd:?}: {}", run.stderr);
        assert!(run.stderr.contains("config.copy"), "{cmd:?} names the copy: {}", run.stderr);
        assert!(run.stderr.contains("store repair config"), "{cmd:?}: {}", run.stderr);
    }
    let run = env.run("repair", &["config"]).ok();
    assert!(run.stdout.contains("config.copy"), "{}", run.stdout);
    assert_eq!(std::fs::read(env.repo().join("config")).unwrap(), config);
    assert_clean(&env, "after repair config");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
    // With no copy either, nothing is re-created.
    std::fs::remove_file(env.repo().join("config")).unwrap();
    std::fs::remove_file(env.repo().join("config.copy")).unwrap();
    let run = env.run("repair", &["config"]);
    assert_eq!(run.code, 10);
    assert!(run.stderr.contains("not a store repository"), "{}", run.stderr);
    assert!(!env.repo().join("config").exists());
}

// See: issue 12, "a damaged index file with no cache: restore restores nothing".
#[test]
fn r12_a_damaged_index_file_is_skipped_and_what_the_others_list_restores() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("one.bin"), &random_bytes(9, 1 << 20));
    env.snapshot(&[&src]);
    let first_index = files_under(&env.repo().join("index"));
    write(&src.join("two.bin"), &random_bytes(10, 1 << 20));
    env.snapshot(&[&src]);
    assert_eq!(first_index.len(), 1);
    flip(&first_index[0], 40);
    std::fs::remove_dir_all(env.repo().join("cache")).unwrap();
    let out = env.path("out");
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    assert_eq!(run.code, 1, "one.bin is unreadable until the index is repaired");
    assert!(run.stderr.contains("repair index"), "{}", run.stderr);
    assert_eq!(std::fs::read(out.join("data/two.bin")).unwrap(), random_bytes(10, 1 << 20));
    env.run("repair", &["index"]).ok();
    assert_clean(&env, "after repair index");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
}

// See: issue 12, "`repair index` fails when the `index/` directory itself is gone".
#[test]
fn r12_repair_index_rebuilds_without_an_index_directory() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.bin"), &random_bytes(11, 500_000));
    env.snapshot(&[&src]);
    std::fs::remove_dir_all(env.repo().join("index")).unwrap();
    std::fs::remove_dir_all(env.repo().join("cache")).unwrap();
    let report = env.run("repair", &["index", "--json"]).ok().json();
    assert_eq!(report["packs"].as_u64().unwrap(), packs(&env).len() as u64);
    assert_clean(&env, "after rebuilding a deleted index directory");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
}

// See: issue 12, "a snapshot that fails on a full disk leaves its sealed packs", and "on a full
// disk let forget and prune still work".
#[test]
fn r12_a_snapshot_failing_on_a_full_disk_leaves_no_packs_and_forget_still_works() {
    let env = Env::new();
    let mnt = env.path("small");
    let _tmpfs = crate::support::Tmpfs::mount(&mnt, "48m");
    let repo = mnt.join("repo");
    let cmd = |args: &[&OsStr]| {
        let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
        all.extend_from_slice(args);
        store(all)
    };
    cmd(&[OsStr::new("init")]).ok();
    let src = env.path("src");
    write(&src.join("a.bin"), &random_bytes(12, 4 << 20));
    cmd(&[OsStr::new("snapshot"), src.as_os_str()]).ok();
    write(&mnt.join("filler"), &vec![0u8; 24 << 20]);
    let before = files_under(&repo.join("packs"));
    write(&src.join("big.bin"), &random_bytes(13, 40 << 20));
    let run = cmd(&[OsStr::new("snapshot"), src.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    assert_eq!(files_under(&repo.join("packs")), before, "the failed run's packs are removed");
    // Without a prune, a snapshot that fits succeeds.
    std::fs::remove_file(src.join("big.bin")).unwrap();
    write(&src.join("b.bin"), &random_bytes(14, 4 << 20));
    cmd(&[OsStr::new("snapshot"), src.as_os_str()]).ok();
    // Disk full to the last byte: forget and prune still run.
    let mut filler = std::fs::OpenOptions::new().append(true).open(mnt.join("filler")).unwrap();
    let block = vec![0u8; 1 << 16];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let run = cmd(&[OsStr::new("forget"), OsStr::new("--keep-last"), OsStr::new("1")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = cmd(&[OsStr::new("prune")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    std::fs::remove_file(mnt.join("filler")).unwrap();
    assert_eq!(cmd(&[OsStr::new("check"), OsStr::new("--read-data")]).code, 0);
    let out = env.path("out");
    cmd(&[OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()])
        .ok();
    assert_same_tree(&src, &out.join("src"));
}

// See: issue 12, "a snapshot killed with SIGKILL leaves sealed packs that no index lists; the
// next snapshot writes the same data again".
#[test]
fn r12_the_packs_of_a_killed_snapshot_are_adopted_and_the_backup_resumes() {
    let env = Env::new();
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let src = env.path("data");
    for i in 0..6u64 {
        write(&src.join(format!("f{i}.bin")), &random_bytes(20 + i, 2 << 20));
    }
    // Killed right after its fifth pack became durable, before any index file listed it.
    let out = Command::new(crate::support::bin())
        .args(["snapshot", "--repo"])
        .arg(env.repo())
        .arg(&src)
        .env("STORE_CRASH_AT", "pack_durable@5")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "the crash point must abort (built with crash-points)");
    let orphans = packs(&env).len();
    assert!(orphans >= 5, "{orphans} packs left");
    assert!(files_under(&env.repo().join("index")).is_empty(), "none indexed");
    let run = env.run("snapshot", &["--json", src.to_str().unwrap()]).ok();
    let doc = run.json();
    assert!(doc["packs_adopted"].as_u64().unwrap() >= 5, "{doc}");
    assert!(run.stderr.contains("adopted"), "{}", run.stderr);
    let added = doc["bytes_added"].as_u64().unwrap();
    assert!(added < (12 << 20) - (4 << 20), "the adopted data is not written again: {added}");
    assert_clean(&env, "after adopting");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));

    // A real SIGKILL mid-run: the next run adopts what was sealed, and the result is whole.
    let env = Env::new();
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let mut child = Command::new(crate::support::bin())
        .args(["snapshot", "--threads", "1", "--repo"])
        .arg(env.repo())
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while packs(&env).len() < 3 && start.elapsed() < std::time::Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
    }
    let _ = child.kill();
    let _ = child.wait();
    env.run("snapshot", &[src.as_os_str()]).ok();
    assert_clean(&env, "after a killed first backup");
    assert_same_tree(&src, &restored(&env, "latest").join("data"));
}
