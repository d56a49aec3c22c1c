//! Restore options and `cat`: one component, a dry run, one file to standard output.

use std::ffi::OsStr;

use crate::support::{assert_same_tree, random_bytes, write, Env};

fn repo_with_components(env: &Env) -> (std::path::PathBuf, Vec<u8>) {
    env.init();
    let content = env.path("alf_data/contentstore");
    write(&content.join("2026/11/21/a.bin"), &random_bytes(1, 300_000));
    write(&content.join("2026/11/22/b.bin"), b"second document");
    let dump = random_bytes(2, 700_000);
    write(&env.path("dump.bin"), &dump);
    let cmd = format!("db=cat {}", env.path("dump.bin").display());
    env.run("snapshot", &[OsStr::new("--component-cmd"), OsStr::new(&cmd), content.as_os_str()])
        .ok();
    (content, dump)
}

#[test]
fn cat_streams_one_file_verified() {
    let env = Env::new();
    let (content, dump) = repo_with_components(&env);
    let out = std::process::Command::new(crate::support::bin())
        .args(["cat", "--repo"])
        .arg(env.repo())
        .args(["latest", "db"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == dump, "cat of the command component differs");
    let run = env.run("cat", &["latest", "contentstore/2026/11/22/b.bin"]).ok();
    assert_eq!(run.stdout.as_bytes(), std::fs::read(content.join("2026/11/22/b.bin")).unwrap());
    let dir = env.run("cat", &["latest", "contentstore/2026"]);
    assert_eq!(dir.code, 1);
    assert!(dir.stderr.contains("not a regular file"), "{}", dir.stderr);
    let missing = env.run("cat", &["latest", "contentstore/nope"]);
    assert_eq!(missing.code, 1);
    assert!(missing.stderr.contains("contentstore/nope"), "{}", missing.stderr);
}

#[test]
fn restore_of_named_components_only_and_dry_run_writes_nothing() {
    let env = Env::new();
    let (content, dump) = repo_with_components(&env);
    let out = env.path("only-content");
    env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--component"),
            OsStr::new("contentstore"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["contentstore"]);
    assert_same_tree(&content, &out.join("contentstore"));
    let out = env.path("only-db");
    env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--component"),
            OsStr::new("db"),
            OsStr::new("--target"),
            out.as_os_str(),
        ],
    )
    .ok();
    assert!(std::fs::read(out.join("db")).unwrap() == dump);
    assert!(!out.join("contentstore").exists());
    let bad = env.run(
        "restore",
        &[
            OsStr::new("latest"),
            OsStr::new("--component"),
            OsStr::new("solr"),
            OsStr::new("--target"),
            env.path("x").as_os_str(),
        ],
    );
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("\"solr\"") && bad.stderr.contains("contentstore"),
        "{}",
        bad.stderr
    );
    assert!(!env.path("x").exists(), "nothing written for a bad component name");
    // A dry run lists every path it would write and writes nothing.
    let target = env.path("dry");
    let run = env
        .run(
            "restore",
            &[
                OsStr::new("latest"),
                OsStr::new("--dry-run"),
                OsStr::new("--json"),
                OsStr::new("--target"),
                target.as_os_str(),
            ],
        )
        .ok();
    let paths: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["path"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        paths.contains(&"db".to_owned())
            && paths.contains(&"contentstore/2026/11/21/a.bin".to_owned()),
        "{paths:?}"
    );
    assert!(!target.exists());
}
