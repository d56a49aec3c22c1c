//! `--json` output: one document on stdout with the documented fields; `ls` listings.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::support::{write, Env};

#[test]
fn snapshot_json_has_the_documented_fields() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a/b.txt"), b"hello");
    let doc = env.snapshot(&[&src]);
    for key in [
        "id",
        "time",
        "kind",
        "parent",
        "tags",
        "files",
        "dirs",
        "bytes_source",
        "bytes_read",
        "bytes_added",
        "chunks_new",
        "duration_s",
        "host",
        "components",
    ] {
        assert!(doc.get(key).is_some(), "snapshot --json lacks {key}: {doc}");
    }
    assert_eq!(doc["kind"], "full");
    assert!(doc["parent"].is_null());
    assert_eq!(doc["files"], 1);
    assert_eq!(doc["dirs"], 2);
    assert_eq!(doc["bytes_source"], 5);
    assert_eq!(doc["id"].as_str().unwrap().len(), 64);
}

#[test]
fn snapshots_json_lists_manifests_newest_first() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a"), b"1");
    let first = env.snapshot(&[&src]);
    write(&src.join("a"), b"2");
    let tagged = env
        .run(
            "snapshot",
            &[
                OsStr::new("--json"),
                OsStr::new("--tag"),
                OsStr::new("nightly"),
                OsStr::new("--host"),
                OsStr::new("alf1"),
                src.as_os_str(),
            ],
        )
        .ok()
        .json();
    let list = env.run("snapshots", &["--json"]).ok().json();
    let arr = list.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["id"], tagged["id"]);
    assert_eq!(arr[1]["id"], first["id"]);
    assert_eq!(arr[0]["tags"], serde_json::json!(["nightly"]));
    assert_eq!(arr[0]["host"], "alf1");
    for key in ["id", "time", "kind", "tags", "host", "components"] {
        assert!(arr[0].get(key).is_some(), "snapshots --json lacks {key}");
    }
    let c = &arr[0]["components"][0];
    assert_eq!(c["name"], "src");
    assert!(c["source"].as_str().unwrap().ends_with("/src"));
    assert_eq!(c["root"].as_str().unwrap().len(), 64);
}

#[test]
fn ls_lists_every_path_with_escaped_names() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("dir/file.txt"), b"12345");
    write(&src.join(OsStr::from_bytes(b"caf\xe9")), b"x");
    std::os::unix::fs::symlink("dir/file.txt", src.join("link")).unwrap();
    env.snapshot(&[&src]);
    let run = env.run("ls", &["latest"]).ok();
    let paths: Vec<&str> =
        run.stdout.lines().map(|l| l.rsplit_once(' ').map_or(l, |(_, p)| p)).collect();
    assert!(run.stdout.contains(" src/dir/file.txt\n"), "{}", run.stdout);
    assert!(run.stdout.contains(" src/caf\\xe9\n"), "{}", run.stdout);
    assert!(run.stdout.contains("src/link -> dir/file.txt"), "{}", run.stdout);
    assert!(paths.len() >= 5, "{paths:?}");
    let sub = env.run("ls", &["--json", "latest", "src/dir"]).ok();
    let lines: Vec<serde_json::Value> =
        sub.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["path"], "src/dir/file.txt");
    assert_eq!(lines[1]["size"], 5);
}
