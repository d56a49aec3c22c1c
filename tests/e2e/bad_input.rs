//! Bad input: one clear line naming what is wrong, exit 1, nothing committed.

use std::ffi::OsStr;

use crate::support::{store, write, Env};

fn snapshot_count(env: &Env) -> usize {
    std::fs::read_dir(env.repo().join("snapshots")).unwrap().count()
}

#[track_caller]
fn assert_error(run: &crate::support::Run, needle: &str) {
    assert_error_code(run, 1, needle);
}

/// As [`assert_error`], with a documented exit status other than 1.
fn assert_error_code(run: &crate::support::Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "stdout: {}\nstderr: {}", run.stdout, run.stderr);
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
    // Exit 10: there is no repository there (scripts tell it from a failed backup).
    assert_error_code(&run, 10, "not a store repository");
    assert!(run.stderr.contains("repo"), "{}", run.stderr);
    assert!(!env.repo().exists(), "a failed command must not create the repository");

    std::fs::create_dir(env.repo()).unwrap();
    assert_error_code(&env.run("snapshots", &[] as &[&str]), 10, "no config file");
    write(&env.repo().join("config"), b"[core]\nbare = false\n");
    assert_error_code(&env.run("snapshots", &[] as &[&str]), 10, "not a store repository");
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
    let newer = store::FORMAT_VERSION + 1;
    bytes[8..12].copy_from_slice(&newer.to_le_bytes());
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert_error(
        &env.run("snapshots", &[] as &[&str]),
        &format!(
            "format version {newer} is not supported (this build reads 1 to {})",
            store::FORMAT_VERSION
        ),
    );
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

// See: issue 17 ("a repository on a read-only mount: ls, cat, restore, check fail unless
// --cache-dir is given, with no hint").
#[test]
fn a_read_only_repository_is_read_with_a_temporary_cache() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.txt"), b"on a read-only disk");
    env.snapshot(&[&src]);
    std::fs::remove_dir_all(env.repo().join("cache")).unwrap();
    // A read-only bind mount of the repository (CI runs as root).
    let ro = env.path("ro");
    std::fs::create_dir(&ro).unwrap();
    let mount = |args: &[&OsStr]| {
        assert!(std::process::Command::new("mount").args(args).status().unwrap().success())
    };
    mount(&[OsStr::new("--bind"), env.repo().as_os_str(), ro.as_os_str()]);
    let _unmount = Unmount(ro.clone());
    mount(&[OsStr::new("-o"), OsStr::new("remount,bind,ro"), ro.as_os_str()]);
    let run = |args: &[&OsStr]| {
        let mut all = vec![args[0], OsStr::new("--repo"), ro.as_os_str()];
        all.extend_from_slice(&args[1..]);
        store(all)
    };
    let ls = run(&[OsStr::new("ls"), OsStr::new("latest")]);
    assert_eq!(ls.code, 0, "{}", ls.stderr);
    assert!(ls.stdout.contains("data/a.txt"));
    assert!(ls.stderr.contains("temporary index cache"), "{}", ls.stderr);
    let cat = run(&[OsStr::new("cat"), OsStr::new("latest"), OsStr::new("data/a.txt")]);
    assert_eq!(cat.stdout, "on a read-only disk");
    let out = env.path("out");
    let restore = run(&[
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ]);
    assert_eq!(restore.code, 0, "{}", restore.stderr);
    assert_eq!(std::fs::read(out.join("data/a.txt")).unwrap(), b"on a read-only disk");
    assert_eq!(run(&[OsStr::new("check"), OsStr::new("--read-data")]).code, 0);
    assert_eq!(run(&[OsStr::new("stats")]).code, 0);
    assert!(!env.repo().join("cache").exists(), "nothing was written into the repository");
}

// Found while measuring restores: a relative `--cache-dir`, or one below directories that do
// not exist yet, was taken for unwritable (the probe looked at its parent only, "" for a
// relative name), so every run used a temporary cache, rebuilt it and kept nothing.
#[test]
fn a_cache_dir_given_relative_or_below_missing_directories_is_made_and_kept() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.txt"), b"kept");
    for (arg, made) in [("rel-cache", "rel-cache"), ("x/y/z/cache", "x/y/z/cache")] {
        let absolute = env.path("abs").join(arg);
        for (given, dir) in
            [(std::path::PathBuf::from(arg), env.path(made)), (absolute.clone(), absolute)]
        {
            let out = std::process::Command::new(crate::support::bin())
                .current_dir(env.dir.path())
                .env_remove("STORE_REPO")
                .arg("snapshot")
                .arg("--repo")
                .arg(env.repo())
                .arg("--cache-dir")
                .arg(&given)
                .arg(&src)
                .output()
                .unwrap();
            let run = crate::support::Run::from(out).ok();
            assert!(!run.stderr.contains("temporary"), "{given:?}: {}", run.stderr);
            assert!(dir.is_dir(), "{given:?}: the cache was not made at {dir:?}");
            assert!(std::fs::read_dir(&dir).unwrap().next().is_some(), "{given:?}: empty");
        }
    }
}

/// Unmounts a directory when dropped.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

// See: issue 17 ("`--tag ''` and `--tag 'x/y'` are accepted, and then `ls MOUNT/tags` fails";
// "`--stale-lock-after 0s` is accepted and then every snapshot fails").
#[test]
fn bad_tags_and_a_zero_stale_lock_age_are_refused_before_anything_is_written() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"a");
    for tag in ["", "x/y", ".", ".."] {
        let run = env.run("snapshot", &[OsStr::new("--tag"), OsStr::new(tag), src.as_os_str()]);
        assert_error(&run, "not a valid tag");
        assert!(run.stderr.contains(&format!("{tag:?}")), "names the tag: {}", run.stderr);
    }
    let run =
        env.run("snapshot", &[OsStr::new("--stale-lock-after"), OsStr::new("0s"), src.as_os_str()]);
    assert_error(&run, "--stale-lock-after 0");
    assert_eq!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().len(), 0);
    assert!(crate::integrity::files_under(&env.repo().join("packs")).is_empty());
    env.run("snapshot", &[OsStr::new("--tag"), OsStr::new("nightly-2026.11"), src.as_os_str()])
        .ok();
}

// See: issue 17 ("an `--include`/`--exclude` pattern that matched nothing is named on stderr;
// `0.0 s (0 MB/s)` on a no-change set says \"nothing to read\"").
#[test]
fn an_exclude_that_matched_nothing_is_named_and_a_set_that_read_nothing_says_so() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("cache/x"), b"cached");
    write(&src.join("doc.txt"), &crate::support::random_bytes(3, 3 << 20));
    let run = env
        .run(
            "snapshot",
            &[
                OsStr::new("--exclude"),
                OsStr::new("cache"),
                OsStr::new("--exclude"),
                OsStr::new("*.tmpp"),
                src.as_os_str(),
            ],
        )
        .ok();
    assert!(run.stderr.contains("--exclude \"*.tmpp\" matched nothing"), "{}", run.stderr);
    assert!(!run.stderr.contains("\"cache\" matched nothing"), "{}", run.stderr);
    // Rates and sizes in binary units, as the progress bar shows them.
    assert!(run.stdout.contains("MiB"), "{}", run.stdout);
    assert!(!run.stdout.contains(" MB"), "{}", run.stdout);
    // Nothing changed: nothing is read, and the summary says so instead of a rate of 0.
    let again =
        env.run("snapshot", &[OsStr::new("--exclude"), OsStr::new("cache"), src.as_os_str()]).ok();
    assert!(again.stdout.contains("nothing to read"), "{}", again.stdout);
    assert!(!again.stdout.contains("/s)"), "{}", again.stdout);
}
