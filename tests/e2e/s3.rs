//! Repositories in S3-compatible object storage, against the real server `.ci/run` starts
//! (SeaweedFS on 127.0.0.1, `STORE_TEST_S3`, credentials in `AWS_*`). These tests fail, they do
//! not skip, when no server is given.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::support::{assert_same_tree, random_bytes, store, write, Run};

/// A repository below a prefix of its own in the test bucket, and this host's cache.
struct S3Env {
    dir: tempfile::TempDir,
    url: String,
}

impl S3Env {
    fn new(name: &str) -> Self {
        let base = std::env::var("STORE_TEST_S3").expect(
            "STORE_TEST_S3 is not set: the object-storage tests need the S3 server `.ci/run` \
             starts (by hand: eval \"$(bash .ci/s3-server start DIR)\")",
        );
        let dir = tempfile::tempdir().unwrap();
        let unique = dir.path().file_name().unwrap().to_string_lossy().to_lowercase();
        let url =
            format!("{base}/{name}-{}-{}", std::process::id(), unique.trim_start_matches('.'));
        S3Env { dir, url }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `store CMD --repo URL --cache-dir CACHE ARGS`, as host `host`'s cache.
    fn run_as<S: AsRef<OsStr>>(&self, cache: &str, cmd: &str, args: &[S]) -> Run {
        let mut all: Vec<OsString> = vec![
            cmd.into(),
            "--repo".into(),
            self.url.clone().into(),
            "--cache-dir".into(),
            self.path(cache).into(),
        ];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        store(all)
    }

    fn run<S: AsRef<OsStr>>(&self, cmd: &str, args: &[S]) -> Run {
        self.run_as("cache", cmd, args)
    }
}

fn tree(root: &Path, seed: u64, files: usize) {
    for i in 0..files {
        let len = [0, 1, 100, 5_000, 70_000][i % 5] + i;
        write(&root.join(format!("d{}/f{i}", i % 7)), &random_bytes(seed * 1000 + i as u64, len));
    }
}

#[test]
fn an_s3_repository_does_every_command_and_restores_byte_for_byte() {
    let env = S3Env::new("every-command");
    let doc = env.run("init", &["--json", "--pack-size", "40MiB"]).ok().json();
    assert_eq!(doc["path"], env.url.as_str());
    let again = env.run("init", &[] as &[&str]);
    assert_ne!(again.code, 0);
    assert!(
        again.stderr.contains(&env.url) && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );

    let src = env.path("src");
    tree(&src, 1, 60);
    // One file larger than a multipart upload's threshold, in a pack of its own size.
    write(&src.join("big/forest-stand"), &random_bytes(99, 30 << 20));
    let full = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!(full["kind"], "full");
    let requests = &full["requests"];
    assert!(requests["put"].as_u64().unwrap() > 4, "multipart parts counted: {requests}");

    // A no-change incremental asks a bounded number of requests: no listing of every pack.
    let same = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!(same["kind"], "incremental");
    let r = &same["requests"];
    let total: u64 =
        ["get", "put", "head", "list", "delete"].iter().map(|k| r[k].as_u64().unwrap()).sum();
    assert!(r["list"].as_u64().unwrap() <= 6 && total <= 40, "{r}");

    write(&src.join("d1/new"), b"a new document");
    std::fs::remove_file(src.join("d2/f2")).unwrap();
    env.run("snapshot", &[src.as_os_str()]).ok();

    let out = env.path("out");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]).ok();
    assert_same_tree(&src, &out.join("src"));
    let diff = env.run("diff", &[full["id"].as_str().unwrap(), "latest"]).ok();
    assert!(diff.stdout.contains("d1/new") && diff.stdout.contains("d2/f2"), "{}", diff.stdout);
    let ls = env.run("ls", &["latest"]).ok();
    assert!(ls.stdout.contains("src/big/forest-stand"), "{}", ls.stdout);
    let cat = env.run("cat", &["latest", "src/d1/new"]).ok();
    assert_eq!(cat.stdout, "a new document");
    env.run("stats", &[] as &[&str]).ok();
    let checked = env.run("check", &["--read-data"]).ok();
    assert!(checked.stdout.contains("no damage"), "{}", checked.stdout);

    // A full set on its own: forgetting the others frees their packs.
    env.run("snapshot", &[OsStr::new("--full"), src.as_os_str()]).ok();
    env.run("forget", &["--keep-last", "1"]).ok();
    env.run("prune", &[] as &[&str]).ok();
    let sets = env.run("snapshots", &["--json"]).ok().json();
    assert_eq!(sets.as_array().unwrap().len(), 1);
    assert!(env.run("check", &["--read-data"]).ok().stdout.contains("no damage"));

    // This host's cache lost: rebuilt from the repository, and the set still restores.
    std::fs::remove_dir_all(env.path("cache")).unwrap();
    let again = env.path("again");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), again.as_os_str()]).ok();
    assert_same_tree(&src, &again.join("src"));
}

#[test]
fn a_location_that_is_not_a_repository_is_named() {
    let env = S3Env::new("not-a-repository");
    let run = env.run("snapshots", &[] as &[&str]);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert!(
        run.stderr.contains(&env.url) && run.stderr.contains("not a store repository"),
        "{}",
        run.stderr
    );
    let bad = store(["snapshots", "--repo", "s3:ftp://host/bucket"]);
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("s3:ftp://host/bucket") && bad.stderr.contains("not http"),
        "{}",
        bad.stderr
    );
    // A bucket that does not exist: named, nothing made.
    let base = std::env::var("STORE_TEST_S3").unwrap();
    let (endpoint, _) = base.rsplit_once('/').unwrap();
    let missing = format!("{endpoint}/no-such-bucket-{}", std::process::id());
    let run = store([
        OsStr::new("init"),
        OsStr::new("--repo"),
        OsStr::new(&missing),
        OsStr::new("--cache-dir"),
        env.path("c").as_os_str(),
    ]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("no-such-bucket"), "{}", run.stderr);
}

/// Two hosts back up into one bucket at once, each with its own cache, while `forget` and
/// `prune` run beside them: every set that was committed and kept restores byte for byte, and
/// `check --read-data` is clean.
#[test]
fn two_hosts_back_up_into_one_bucket_while_prune_runs() {
    let env = S3Env::new("two-hosts");
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let rounds = 4;
    let committed = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for host in ["alpha", "beta"] {
            let (env, committed) = (&env, &committed);
            s.spawn(move || {
                let src = env.path(&format!("src-{host}"));
                // Shared content (deduplicated across hosts) and the host's own.
                tree(&src.join("shared"), 7, 20);
                for round in 0..rounds {
                    write(
                        &src.join(format!("own/round-{round}")),
                        &random_bytes(round * 31 + host.len() as u64, 300_000),
                    );
                    let expected = contents(&src);
                    let doc = env
                        .run_as(
                            &format!("cache-{host}"),
                            "snapshot",
                            &[
                                OsStr::new("--json"),
                                OsStr::new("--host"),
                                OsStr::new(host),
                                OsStr::new("--lock-wait"),
                                OsStr::new("5m"),
                                src.as_os_str(),
                            ],
                        )
                        .ok()
                        .json();
                    let id = doc["id"].as_str().unwrap().to_owned();
                    committed.lock().unwrap().push((id, host, expected));
                }
            });
        }
        let env = &env;
        s.spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(std::time::Duration::from_millis(300));
                env.run_as("cache-pruner", "forget", &["--keep-last", "2", "--lock-wait", "5m"])
                    .ok();
                env.run_as("cache-pruner", "prune", &["--lock-wait", "5m", "--max-unused", "0"])
                    .ok();
            }
        });
    });
    let kept = env.run("snapshots", &["--json"]).ok().json();
    let kept: Vec<String> =
        kept.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect();
    assert!(kept.len() >= 4, "two per host at least: {kept:?}");
    let committed = committed.into_inner().unwrap();
    assert_eq!(committed.len(), 2 * rounds as usize);
    for (id, host, expected) in committed.iter().filter(|(id, ..)| kept.contains(id)) {
        let out = env.path(&format!("restored-{id}"));
        env.run("restore", &[OsStr::new(id), OsStr::new("--target"), out.as_os_str()]).ok();
        assert!(contents(&out.join(format!("src-{host}"))) == *expected, "set {id} of {host}");
    }
    let checked = env.run("check", &["--read-data"]).ok();
    assert!(checked.stdout.contains("no damage"), "{}", checked.stdout);
}

/// Every file below `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            for (rel, data) in contents(&p) {
                out.insert(Path::new(p.file_name().unwrap()).join(rel), data);
            }
        } else {
            out.insert(PathBuf::from(p.file_name().unwrap()), std::fs::read(&p).unwrap());
        }
    }
    out
}
