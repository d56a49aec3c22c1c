//! Bad input: one clear line naming what is wrong, exit 1, nothing committed.

use std::ffi::OsStr;

use crate::support::{store, write, Env};

fn snapshot_count(env: &Env) -> usize {
    std::fs::read_dir(env.repo().join("snapshots")).unwrap().count()
}

#[track_caller]
fn assert_error(run: &crate::support::Run, needle: &str) {
    assert_eq!(run.code, 1, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "stderr lacks {needle:?}: {}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout should be empty: {}", run.stdout);
}

#[test]
fn missing_source_path_is_named_and_nothing_is_committed() {
    let env = Env::new();
    env.init();
    let good = env.path("good");
    write(&good.join("a"), b"a");
    let missing = env.path("no-such-dir");
    let run = env.run("snapshot", &[good.as_os_str(), missing.as_os_str()]);
    assert_error(&run, "no-such-dir");
    assert_eq!(snapshot_count(&env), 0);
    // No temp files are left behind either.
    assert_eq!(std::fs::read_dir(env.repo().join("tmp")).unwrap().count(), 0);
}

#[test]
fn repository_that_does_not_exist_or_is_not_a_repository() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    let run = env.run("snapshot", &[src.as_os_str()]);
    assert_error(&run, "not a store repository");
    assert!(run.stderr.contains("repo"), "{}", run.stderr);
    assert!(!env.repo().exists(), "a failed command must not create the repository");

    std::fs::create_dir(env.repo()).unwrap();
    assert_error(&env.run("snapshots", &[] as &[&str]), "no config file");
    write(&env.repo().join("config"), b"[core]\nbare = false\n");
    assert_error(&env.run("snapshots", &[] as &[&str]), "not a store repository");
}

#[test]
fn init_refuses_an_existing_repository_and_a_non_empty_directory() {
    let env = Env::new();
    env.init();
    let config = std::fs::read(env.repo().join("config")).unwrap();
    assert_error(&env.run("init", &[] as &[&str]), "already exists");
    assert_eq!(std::fs::read(env.repo().join("config")).unwrap(), config, "config untouched");
    let other = env.path("other");
    write(&other.join("file"), b"x");
    let run = store([OsStr::new("init"), OsStr::new("--repo"), other.as_os_str()]);
    assert_error(&run, "not empty");
}

#[test]
fn newer_format_version_is_refused_by_number() {
    let env = Env::new();
    env.init();
    let path = env.repo().join("config");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert_error(&env.run("snapshots", &[] as &[&str]), "format version 2 is not supported");
}

#[test]
fn config_damaged_together_with_its_copy_is_refused() {
    let env = Env::new();
    env.init();
    for name in ["config", "config.copy"] {
        let path = env.repo().join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_error(&env.run("snapshots", &[] as &[&str]), "config");
}

#[test]
fn snapshot_references_that_match_nothing_several_or_are_malformed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    assert_error(&env.run("ls", &["latest"]), "not found");
    let doc = env.snapshot(&[&src]);
    let id = doc["id"].as_str().unwrap().to_owned();
    // Full id and an 8-character prefix both work.
    env.run("ls", &[id.as_str()]).ok();
    env.run("ls", &[&id[..8]]).ok();
    assert_error(&env.run("ls", &["deadbeefdeadbeef"]), "not found");
    assert_error(&env.run("ls", &[&id[..7]]), "at least 8");
    assert_error(&env.run("ls", &["LATEST"]), "invalid snapshot reference");
    // A second manifest whose name shares the first 8 characters makes the prefix ambiguous.
    let snaps = env.repo().join("snapshots");
    let twin = format!("{}{}", &id[..8], "0".repeat(56));
    std::fs::copy(snaps.join(&id), snaps.join(&twin)).unwrap();
    assert_error(&env.run("ls", &[&id[..8]]), "ambiguous");
}

#[test]
fn missing_repo_argument_and_store_repo_variable() {
    let env = Env::new();
    env.init();
    let run = store(["snapshots"]);
    assert_error(&run, "STORE_REPO");
    let out = std::process::Command::new(crate::support::bin())
        .arg("snapshots")
        .env("STORE_REPO", env.repo())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn snapshot_path_inside_ls_that_does_not_exist() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    env.snapshot(&[&src]);
    assert_error(&env.run("ls", &["latest", "src/nope"]), "src/nope");
}
