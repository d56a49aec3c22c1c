//! The command line as a reference (issue 17): completion scripts a shell accepts, manual pages
//! `man` renders, help whose defaults are the real ones, `--version` with the format versions,
//! `-q` and `-v`, and `snapshots` filters.

use std::ffi::OsStr;
use std::process::Command;

use crate::support::{store, write, Env};

// See: issue 17 ("`store completion bash|zsh|fish` (clap_complete) and `store man [DIR]`").
#[test]
fn completion_scripts_load_in_bash_and_man_renders_every_page() {
    let bash = store(["completion", "bash"]).ok().stdout;
    // Sourced by bash, the script registers a completion function for `store`.
    let out =
        Command::new("bash").arg("-c").arg(format!("{bash}\ncomplete -p store")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("complete") && stdout.contains(" store"), "{stdout}");
    assert!(bash.contains("--read-data-subset") && bash.contains("mount-restore"), "all of it");
    for shell in ["zsh", "fish"] {
        let script = store(["completion", shell]).ok().stdout;
        assert!(script.contains("snapshot") && script.contains("exclude"), "{shell}: {script}");
    }
    let run = store(["completion", "tcsh"]);
    assert_eq!(run.code, 2, "an unknown shell is a usage error: {}", run.stderr);

    let env = Env::new();
    let dir = env.path("man/man1");
    store([OsStr::new("man"), dir.as_os_str()]).ok();
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    for expected in ["store.1", "store-snapshot.1", "store-restore.1", "store-repair-index.1"] {
        assert!(pages.iter().any(|p| p == expected), "{expected} in {pages:?}");
    }
    assert!(pages.len() >= 18, "one page per command: {pages:?}");
    for (page, needles) in [
        ("store.1", &["Exit codes", "130", "--lock-wait"][..]),
        ("store-snapshot.1", &["--component-cmd", "Examples"][..]),
        ("store-forget.1", &["--keep-daily", "not used"][..]),
    ] {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join(page))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "man -l {page}: {}", String::from_utf8_lossy(&out.stderr));
        for n in needles {
            assert!(text.contains(n), "{page} lacks {n:?}:\n{text}");
        }
    }
}

// See: issue 17 ("`init --help` shows 256KiB/1MiB/4MiB as an example while the defaults are
// 32/128/512 KiB"; "global options under their own heading"; "`store --version` also prints the
// repository format versions it reads").
#[test]
fn help_shows_the_real_defaults_global_options_apart_and_the_format_versions() {
    let help = store(["init", "--help"]).ok().stdout;
    let env = Env::new();
    let init = env.run("init", &["--json"]).ok().json();
    let kib = |field: &str| format!("{}KiB", init[field].as_u64().unwrap() >> 10);
    let chunks =
        format!("[default: {}/{}/{}]", kib("chunk_min"), kib("chunk_avg"), kib("chunk_max"));
    assert!(help.contains(&chunks), "{chunks} in:\n{help}");
    let level = format!("[default: {}]", init["compression_level"]);
    assert!(help.contains(&level), "{level} in:\n{help}");
    let pack = format!("[default: {}MiB]", init["pack_size"].as_u64().unwrap() >> 20);
    assert!(help.contains(&pack), "{pack} in:\n{help}");
    // Global options stand apart from the command's own.
    let (own, global) = help.split_once("Global options:").expect("a heading of its own");
    assert!(own.contains("--chunk-sizes") && !own.contains("--lock-wait"), "{help}");
    assert!(global.contains("--lock-wait") && global.contains("--quiet"), "{help}");
    assert!(!global.contains("--chunk-sizes"), "{help}");
    let snapshot = store(["snapshot", "--help"]).ok().stdout;
    assert!(
        snapshot.contains("Examples:") && snapshot.contains("--component-cmd db="),
        "{snapshot}"
    );
    let version = store(["--version"]).ok().stdout;
    assert!(
        version.contains(env!("CARGO_PKG_VERSION"))
            && version.contains(&format!(
                "repository format: new repositories are version {0}; reads and writes versions \
                 1 to {0}",
                store::FORMAT_VERSION
            )),
        "{version}"
    );
}

// See: issue 17 ("`-q/--quiet` (errors only; cron mails nothing on success) and `-v/--verbose`").
#[test]
fn quiet_prints_nothing_on_success_and_verbose_names_each_file() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"a");
    write(&src.join("docs/b.txt"), b"b");
    let run = env.run("snapshot", &[OsStr::new("-q"), src.as_os_str()]).ok();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let run = env.run("forget", &["--keep-last", "5", "-q"]).ok();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));
    let run = env.run("check", &["--quiet"]).ok();
    assert_eq!((run.stdout.as_str(), run.stderr.as_str()), ("", ""));

    write(&src.join("a.txt"), b"a, edited");
    write(&src.join("new.txt"), b"new");
    let run = env.run("snapshot", &[OsStr::new("-v"), src.as_os_str()]).ok();
    let lines: Vec<&str> = run.stdout.lines().take(3).collect();
    assert_eq!(lines, ["changed   src/a.txt", "unchanged src/docs/b.txt", "new       src/new.txt"]);
    assert!(run.stdout.contains("saved"), "the summary follows: {}", run.stdout);
    // With --json, stdout is the document and the files go to stderr.
    let run = env.run("snapshot", &[OsStr::new("-v"), OsStr::new("--json"), src.as_os_str()]).ok();
    assert_eq!(run.json()["files_unchanged"], 3);
    assert!(run.stderr.contains("unchanged src/new.txt"), "{}", run.stderr);
    let out = env.path("out");
    let run = env
        .run(
            "restore",
            &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str(), OsStr::new("-v")],
        )
        .ok();
    let mut restored: Vec<&str> =
        run.stdout.lines().filter(|l| l.starts_with("restored  ")).collect();
    restored.sort_unstable();
    assert_eq!(
        restored,
        ["restored  src/a.txt", "restored  src/docs/b.txt", "restored  src/new.txt"]
    );

    // Quiet, but a path that could not be read is still named (exit 3 says why). Run as
    // `nobody` when root, who reads every file.
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = env.repo();
    std::fs::create_dir(&repo).unwrap();
    if rustix::process::geteuid().is_root() {
        let nobody = Some(rustix::fs::Uid::from_raw(65534));
        rustix::fs::chown(&repo, nobody, Some(rustix::fs::Gid::from_raw(65534))).unwrap();
    }
    let src = env.path("src");
    write(&src.join("readable.txt"), b"kept");
    write(&src.join("locked.txt"), b"secret");
    std::fs::set_permissions(src.join("locked.txt"), std::fs::Permissions::from_mode(0o000))
        .unwrap();
    let as_nobody = |args: &[&OsStr]| {
        let mut all = args.to_vec();
        all.extend([OsStr::new("--repo"), repo.as_os_str()]);
        crate::support::as_nobody(&all)
    };
    assert_eq!(as_nobody(&[OsStr::new("init"), OsStr::new("-q")]).code, 0);
    let run = as_nobody(&[OsStr::new("snapshot"), OsStr::new("-q"), src.as_os_str()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(run.stderr.contains("locked.txt: not backed up"), "{}", run.stderr);
}

// See: issue 17 ("`snapshots --host H --tag T --component C --latest N`").
#[test]
fn snapshots_filters_by_host_tag_component_and_latest() {
    let env = Env::new();
    env.init();
    let (docs, db) = (env.path("docs"), env.path("db"));
    write(&docs.join("a"), b"a");
    write(&db.join("dump"), b"dump");
    let snap = |host: &str, tag: &str, paths: &[&std::path::Path]| {
        let mut args =
            vec![OsStr::new("--host"), OsStr::new(host), OsStr::new("--tag"), OsStr::new(tag)];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        env.run("snapshot", &args).ok();
    };
    snap("alf1", "nightly", &[&docs, &db]);
    snap("alf1", "weekly", &[&docs]);
    snap("alf2", "nightly", &[&docs, &db]);
    snap("alf1", "nightly", &[&docs, &db]);
    let ids = |args: &[&str]| -> Vec<(String, String)> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        env.run("snapshots", &all)
            .ok()
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (s["host"].as_str().unwrap().to_owned(), s["tags"][0].as_str().unwrap().to_owned())
            })
            .collect()
    };
    assert_eq!(ids(&[]).len(), 4);
    assert_eq!(ids(&["--host", "alf2"]), [("alf2".to_owned(), "nightly".to_owned())]);
    assert_eq!(ids(&["--tag", "weekly"]), [("alf1".to_owned(), "weekly".to_owned())]);
    assert_eq!(ids(&["--component", "db"]).len(), 3);
    assert_eq!(ids(&["--host", "alf1", "--tag", "nightly"]).len(), 2);
    // The newest first: --latest 1 of alf1's nightly sets is the last one taken.
    let newest = env.run("snapshots", &["--json", "--host", "alf1", "--latest", "1"]).ok().json();
    let all = env.run("snapshots", &["--json"]).ok().json();
    assert_eq!(newest.as_array().unwrap().len(), 1);
    assert_eq!(newest[0]["id"], all[0]["id"]);
    let table = env.run("snapshots", &["--tag", "nightly", "--latest", "2"]).ok().stdout;
    assert!(table.trim_end().ends_with("2 of 4 sets"), "{table}");
    assert!(ids(&["--host", "nobody"]).is_empty());
}

/// The repository's files, except the index cache (a reader may touch it).
fn repository_state(env: &Env) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for dir in ["packs", "index", "snapshots", "locks", "tmp", "damage"] {
        let dir = env.repo().join(dir);
        if dir.exists() {
            all.extend(crate::integrity::files_under(&dir));
        }
    }
    all
}

// See: issue 17 ("`snapshot --dry-run`: what would be read, new, changed and excluded, without
// writing anything").
#[test]
fn snapshot_dry_run_reports_what_a_snapshot_would_do_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), &[b'a'; 1000]);
    write(&src.join("docs/b.txt"), &[b'b'; 2000]);
    write(&src.join("cache/x"), b"cached");
    let marker = env.path("command-ran");
    let cmd = format!("db=touch {}; echo dump", marker.display());
    let before = repository_state(&env);
    let doc = env
        .run(
            "snapshot",
            &[
                OsStr::new("--dry-run"),
                OsStr::new("--json"),
                OsStr::new("--exclude"),
                OsStr::new("cache"),
                src.as_os_str(),
                OsStr::new("--component-cmd"),
                OsStr::new(&cmd),
            ],
        )
        .ok()
        .json();
    assert_eq!(doc["kind"], "full");
    let c = &doc["components"][0];
    assert_eq!((c["files_new"].as_u64(), c["files_changed"].as_u64()), (Some(2), Some(0)));
    assert_eq!((c["bytes_to_read"].as_u64(), c["excluded"].as_u64()), (Some(3000), Some(1)));
    assert_eq!(doc["components"][1]["kind"], "command");
    assert!(!marker.exists(), "a dry run runs no command");
    assert_eq!(repository_state(&env), before, "a dry run writes nothing");
    assert!(env.run("snapshots", &["--json"]).ok().json().as_array().unwrap().is_empty());

    let args = |extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = extra.iter().map(|s| s.into()).collect();
        a.extend(["--exclude".into(), "cache".into(), src.clone().into_os_string()]);
        a
    };
    let first = env.run("snapshot", &args(&["--json"])).ok().json();
    write(&src.join("a.txt"), &[b'A'; 1500]);
    write(&src.join("new.txt"), &[b'n'; 700]);
    let before = repository_state(&env);
    let dry = env.run("snapshot", &args(&["--dry-run", "--json"])).ok().json();
    assert_eq!(dry["kind"], "incremental");
    assert_eq!(dry["parent"], first["id"]);
    let c = &dry["components"][0];
    let counts = ["files_new", "files_changed", "files_unchanged", "bytes_to_read", "excluded"]
        .map(|k| c[k].as_u64().unwrap());
    assert_eq!(counts, [1, 1, 1, 2200, 1]);
    // -v names each file as the snapshot would (the excluded directory too).
    let run = env.run("snapshot", &args(&["--dry-run", "-v"])).ok();
    let mut lines: Vec<&str> = run.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    lines.retain(|l| !l.starts_with("dry run") && !l.starts_with("would read"));
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "changed   src/a.txt",
            "excluded  src/cache",
            "new       src/new.txt",
            "unchanged src/docs/b.txt"
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("would read 2.1 KiB; nothing was written"), "{}", run.stdout);
    assert_eq!(repository_state(&env), before, "a dry run writes nothing");
    // And the snapshot then does what the dry run said.
    let real = env.run("snapshot", &args(&["--json"])).ok().json();
    let real_counts = ["files_new", "files_changed", "files_unchanged", "bytes_read", "excluded"]
        .map(|k| real[k].as_u64().unwrap());
    assert_eq!(real_counts, counts);
}
