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

    // A no-change incremental asks a bounded number of requests: the packs it builds on are
    // looked at in one listing (a request per thousand packs), not one request each.
    let same = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert_eq!(same["kind"], "incremental");
    let r = &same["requests"];
    let total: u64 =
        ["get", "put", "head", "list", "delete"].iter().map(|k| r[k].as_u64().unwrap()).sum();
    assert!(r["list"].as_u64().unwrap() <= 7 && r["head"].as_u64().unwrap() <= 8, "{r}");
    assert!(total <= 30, "{r}");

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
    {
        let args: Vec<OsString> = vec![
            "mount".into(),
            "--repo".into(),
            env.url.clone().into(),
            "--cache-dir".into(),
            env.path("cache").into(),
        ];
        let m = crate::mount::Mounted::start(env.path("mnt"), &args);
        let mounted = m.point.join("latest/src");
        assert!(
            std::fs::read(mounted.join("big/forest-stand")).unwrap()
                == std::fs::read(src.join("big/forest-stand")).unwrap()
        );
        assert_eq!(std::fs::read(mounted.join("d1/new")).unwrap(), b"a new document");
    }
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

/// SIGKILL at moments spread over snapshot and prune runs against the server, 24 times: every
/// set listed afterwards restores byte for byte, the last set known committed is never lost, and
/// `check --read-data` finds no damage.
#[test]
fn sigkill_during_snapshot_and_prune_on_object_storage_loses_no_committed_set() {
    let env = S3Env::new("sigkill");
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let src = env.path("src");
    tree(&src, 3, 30);
    let mut expected: BTreeMap<String, BTreeMap<PathBuf, Vec<u8>>> = BTreeMap::new();
    let first = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    expected.insert(first["id"].as_str().unwrap().to_owned(), contents(&src));
    let mut last_committed = first["id"].as_str().unwrap().to_owned();
    let listed = |env: &S3Env| -> Vec<String> {
        let doc = env.run("snapshots", &["--json"]).ok().json();
        doc.as_array().unwrap().iter().map(|s| s["id"].as_str().unwrap().to_owned()).collect()
    };
    let mut killed = 0;
    for round in 0..24u64 {
        let snapshot = round % 2 == 0;
        if snapshot {
            write(&src.join(format!("round/{round}")), &random_bytes(500 + round, 4_000_000));
        } else {
            env.run("forget", &["--keep-last", "3"]).ok();
        }
        let mut args: Vec<OsString> = vec![
            "--repo".into(),
            env.url.clone().into(),
            "--cache-dir".into(),
            env.path("cache").into(),
        ];
        if snapshot {
            args.extend(["snapshot".into(), "--json".into(), src.clone().into_os_string()]);
        } else {
            args.extend(["prune".into(), "--max-unused".into(), "0".into()]);
        }
        let child = std::process::Command::new(crate::support::bin())
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Spread over the run: from at once to after most runs have ended.
        std::thread::sleep(std::time::Duration::from_millis(round * 17 % 200));
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let out = child.wait_with_output().unwrap();
        if out.status.code().is_none() {
            killed += 1;
        }
        let now = listed(&env);
        if snapshot {
            if out.status.success() {
                let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                last_committed = doc["id"].as_str().unwrap().to_owned();
                assert!(now.contains(&last_committed), "round {round}: committed, then not listed");
            }
            // A set committed just before the kill is listed, and must be this round's.
            let new: Vec<String> =
                now.iter().filter(|id| !expected.contains_key(*id)).cloned().collect();
            for id in new {
                expected.insert(id.clone(), contents(&src));
                last_committed = id;
            }
        }
        assert!(now.contains(&last_committed), "round {round}: set {last_committed} lost");
        for id in &now {
            assert!(expected.contains_key(id), "round {round}: a set nobody made: {id}");
        }
    }
    assert!(killed >= 10, "most runs were killed mid-way ({killed} of 24)");
    for id in listed(&env) {
        let out = env.path(&format!("restored-{id}"));
        env.run("restore", &[OsStr::new(&id), OsStr::new("--target"), out.as_os_str()]).ok();
        assert!(contents(&out.join("src")) == expected[&id], "set {id} restores its files");
    }
    let checked = env.run("check", &["--read-data"]).ok();
    assert!(checked.stdout.contains("no damage"), "{}", checked.stdout);
}

/// A TCP proxy in front of the S3 server that misbehaves on half of the connections: answers
/// `503 Slow Down` without passing the request on (one in five), drops the connection within
/// the first 50 kB of upload (three in ten), or waits before passing anything on (one in ten).
struct FaultProxy {
    port: u16,
    faults: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl FaultProxy {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = std::sync::Arc::clone(&faults);
        std::thread::spawn(move || {
            for (n, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                let roll = u64::from_le_bytes(random_bytes(n as u64 + 1, 8).try_into().unwrap());
                let counted = std::sync::Arc::clone(&counted);
                std::thread::spawn(move || match roll % 10 {
                    0 | 1 => {
                        counted.fetch_add(1, Ordering::SeqCst);
                        slow_down(client);
                    }
                    2..=4 => {
                        let cut = 200 + (roll >> 8) % 50_000;
                        if forward(client, upstream, Some(cut)) {
                            counted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    5 => {
                        std::thread::sleep(std::time::Duration::from_millis(300));
                        forward(client, upstream, None);
                    }
                    _ => {
                        forward(client, upstream, None);
                    }
                });
            }
        });
        FaultProxy { port, faults }
    }
}

/// Reads the request's head and answers 503 Slow Down, closing the connection.
fn slow_down(mut client: std::net::TcpStream) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    slow_down_answer(&mut client);
}

/// Answers 503 Slow Down, as S3 does when asked to slow down.
fn slow_down_answer(client: &mut std::net::TcpStream) {
    use std::io::Write;
    let body =
        "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
    let _ = write!(
        client,
        "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Passes bytes both ways; with `cut`, drops both connections once that many bytes came from
/// the client. Returns whether it cut.
fn forward(client: std::net::TcpStream, upstream: std::net::SocketAddr, cut: Option<u64>) -> bool {
    use std::io::{Read, Write};
    let Ok(server) = std::net::TcpStream::connect(upstream) else { return false };
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut s_read, mut c_write) = (server, client);
    let back = std::thread::spawn(move || {
        let _ = std::io::copy(&mut s_read, &mut c_write);
        let _ = c_write.shutdown(std::net::Shutdown::Both);
    });
    let mut sent = 0u64;
    let mut buf = [0u8; 16384];
    let mut was_cut = false;
    loop {
        let n = match c_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let allowed = cut.map_or(n as u64, |c| (c - sent.min(c)).min(n as u64));
        if s_write.write_all(&buf[..allowed as usize]).is_err() {
            break;
        }
        sent += n as u64;
        if cut.is_some_and(|c| sent >= c) {
            was_cut = true;
            break;
        }
    }
    let _ = s_write.shutdown(std::net::Shutdown::Both);
    let _ = c_read.shutdown(std::net::Shutdown::Both);
    let _ = back.join();
    was_cut
}

/// Through a proxy that answers 503, drops connections mid-upload and delays answers, backups
/// commit (the requests are retried) or fail cleanly: every set listed afterwards restores byte
/// for byte and `check --read-data` finds no damage.
#[test]
fn backups_through_503s_dropped_connections_and_delays_commit_or_fail_cleanly() {
    let env = S3Env::new("faults");
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let base = std::env::var("STORE_TEST_S3").unwrap();
    let host_port = base.trim_start_matches("s3:http://").split('/').next().unwrap().to_owned();
    let upstream: std::net::SocketAddr = host_port.parse().unwrap();
    let proxy = FaultProxy::start(upstream);
    let through = env.url.replace(&host_port, &format!("127.0.0.1:{}", proxy.port));
    let src = env.path("src");
    tree(&src, 5, 20);
    let mut expected = BTreeMap::new();
    let mut committed = 0;
    for round in 0..6u64 {
        write(&src.join(format!("round/{round}")), &random_bytes(900 + round, 3_000_000));
        let run = store([
            OsStr::new("snapshot"),
            OsStr::new("--json"),
            OsStr::new("--repo"),
            OsStr::new(&through),
            OsStr::new("--cache-dir"),
            env.path("cache").as_os_str(),
            src.as_os_str(),
        ]);
        if run.code == 0 {
            committed += 1;
            expected.insert(run.json()["id"].as_str().unwrap().to_owned(), contents(&src));
        } else {
            assert!(run.stderr.contains("store: error"), "a failure is reported: {}", run.stderr);
        }
    }
    assert!(proxy.faults.load(std::sync::atomic::Ordering::SeqCst) >= 3, "faults were injected");
    assert!(committed >= 3, "retries carry most backups through ({committed} of 6)");
    let doc = env.run("snapshots", &["--json"]).ok().json();
    for set in doc.as_array().unwrap() {
        let id = set["id"].as_str().unwrap();
        let want = expected.get(id).unwrap_or_else(|| panic!("set {id} committed by a failed run"));
        let out = env.path(&format!("restored-{id}"));
        env.run("restore", &[OsStr::new(id), OsStr::new("--target"), out.as_os_str()]).ok();
        assert!(contents(&out.join("src")) == *want, "set {id}");
        // Through the proxy too: the packs' windows are fetched (and fetched ahead) through
        // 503s and delays; a restore completes byte for byte or fails naming the error.
        let out = env.path(&format!("through-{id}"));
        let run = store([
            OsStr::new("restore"),
            OsStr::new(id),
            OsStr::new("--repo"),
            OsStr::new(&through),
            OsStr::new("--cache-dir"),
            env.path("cache").as_os_str(),
            OsStr::new("--target"),
            out.as_os_str(),
        ]);
        if run.code == 0 {
            assert!(contents(&out.join("src")) == *want, "set {id} through the proxy");
        } else {
            assert!(run.stderr.contains("store: error"), "a failure is reported: {}", run.stderr);
        }
    }
    let checked = env.run("check", &["--read-data"]).ok();
    assert!(checked.stdout.contains("no damage"), "{}", checked.stdout);
}

/// A snapshot killed after some packs were uploaded, before any index file listed them: the
/// next snapshot of the same host adopts them (a killed writer's mark is found), while another
/// host's snapshot does not list the packs at all (no listing of every pack per run).
#[test]
fn the_packs_of_a_killed_snapshot_are_adopted_by_the_same_host_only() {
    let env = S3Env::new("adopt");
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let src = env.path("src");
    for i in 0..6u64 {
        write(&src.join(format!("f{i}.bin")), &random_bytes(40 + i, 2 << 20));
    }
    let out = std::process::Command::new(crate::support::bin())
        .args(["snapshot", "--repo", &env.url, "--cache-dir"])
        .arg(env.path("cache"))
        .arg(&src)
        .env("STORE_CRASH_AT", "pack_durable@4")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "the crash point aborts (built with crash-points)");
    let elsewhere = env.path("other-host");
    write(&elsewhere.join("doc"), b"another host's document");
    let other = env
        .run_as("cache-other", "snapshot", &[OsStr::new("--json"), elsewhere.as_os_str()])
        .ok()
        .json();
    assert_eq!(other["packs_adopted"], 0, "another host lists no packs: {other}");
    assert!(other["requests"]["list"].as_u64().unwrap() <= 6, "{other}");
    let same = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    assert!(same["packs_adopted"].as_u64().unwrap() >= 4, "{same}");
    assert!(
        same["bytes_added"].as_u64().unwrap() < 12 << 20,
        "adopted data not sent again: {same}"
    );
    let restored = env.path("restored");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), restored.as_os_str()]).ok();
    assert_same_tree(&src, &restored.join("src"));
}

// See: issue 16 (`copy` local to S3 and back: the copies restore byte for byte; a second `copy`
// transfers nothing).
#[test]
fn copy_local_to_s3_and_back_restores_byte_for_byte_and_a_second_copy_transfers_nothing() {
    let env = S3Env::new("copy");
    let local = env.path("local");
    let back = env.path("back");
    store([OsStr::new("init"), OsStr::new("--repo"), local.as_os_str()]).ok();
    store([OsStr::new("init"), OsStr::new("--repo"), back.as_os_str()]).ok();
    env.run("init", &[] as &[&str]).ok();
    let src = env.path("src");
    tree(&src, 7, 40);
    write(&src.join("big/stand"), &random_bytes(70, 20 << 20));
    let snapshot = || {
        store([OsStr::new("snapshot"), OsStr::new("--repo"), local.as_os_str(), src.as_os_str()])
            .ok();
    };
    snapshot();
    write(&src.join("d1/f1"), b"changed");
    snapshot();
    let copy = |from: &OsStr, from_cache: Option<&Path>, to: &OsStr, to_cache: Option<&Path>| {
        let mut args: Vec<OsString> =
            vec!["copy".into(), "--from".into(), from.into(), "--to".into(), to.into()];
        if let Some(c) = from_cache {
            args.extend(["--from-cache-dir".into(), c.as_os_str().to_owned()]);
        }
        if let Some(c) = to_cache {
            args.extend(["--cache-dir".into(), c.as_os_str().to_owned()]);
        }
        args.push("--json".into());
        let mut cmd = std::process::Command::new(crate::support::bin());
        cmd.args(&args)
            .env_remove("STORE_REPO")
            .env("STORE_FROM_PASSWORD", crate::support::PASSWORD);
        let run = Run::from(cmd.output().unwrap()).ok();
        run.json()
    };
    let url = OsString::from(&env.url);
    let cache = env.path("cache");
    let up = copy(local.as_os_str(), None, &url, Some(&cache));
    assert_eq!(up["sets"].as_array().unwrap().len(), 2, "{up}");
    assert!(up["sets"].as_array().unwrap().iter().all(|s| s["already"] == false), "{up}");
    assert!(up["requests"]["from"].is_null() && up["requests"]["to"]["put"].as_u64() > Some(0));
    let again = copy(local.as_os_str(), None, &url, Some(&cache));
    assert_eq!(again["packs"], 0, "{again}");
    // Nothing is sent: the only objects written are the lock's (and the probe's).
    let sent = again["requests"]["to"]["bytes_up"].as_u64().unwrap();
    assert!(sent < 4096, "{again}");
    assert!(again["sets"].as_array().unwrap().iter().all(|s| s["already"] == true), "{again}");

    let down = copy(&url, Some(&cache), back.as_os_str(), None);
    assert_eq!(down["sets"].as_array().unwrap().len(), 2, "{down}");
    for s in down["sets"].as_array().unwrap() {
        assert_eq!(s["already"], false, "{down}");
    }
    let out = env.path("out");
    store([
        OsStr::new("restore"),
        OsStr::new("--repo"),
        back.as_os_str(),
        OsStr::new("latest"),
        OsStr::new("--target"),
        out.as_os_str(),
    ])
    .ok();
    assert_same_tree(&src, &out.join("src"));
    let from_s3 = env.path("out-s3");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), from_s3.as_os_str()]).ok();
    assert_same_tree(&src, &from_s3.join("src"));
    env.run("check", &["--read-data"]).ok();
}

// The packs a set builds on are checked in one listing on object storage: a pack deleted from the
// bucket behind the index's back is seen there, and its blobs are stored again.
#[test]
fn a_pack_deleted_from_the_bucket_is_never_built_upon() {
    let env = S3Env::new("vanished");
    env.run("init", &["--pack-size", "1MiB"]).ok();
    let src = env.path("src");
    tree(&src, 11, 30);
    write(&src.join("big/stand"), &random_bytes(12, 3 << 20));
    let full = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    let full_added = full["bytes_added"].as_u64().unwrap();

    let location = store::RepoLocation::parse(OsStr::new(&env.url)).unwrap();
    let opts = store::OpenOptions {
        cache_dir: Some(env.path("cache")),
        password: Some(store::crypto::Password::new(crate::support::PASSWORD.as_bytes().to_vec())),
        ..Default::default()
    };
    let repo = store::Repository::open_at(&location, &opts).unwrap();
    let packs = repo.list_packs().unwrap();
    assert!(packs.len() > 2, "{packs:?}");
    repo.storage().remove(store::storage::ObjectDir::Packs, &[packs[0].0]).unwrap();
    drop(repo);

    let doc = env.run("snapshot", &[OsStr::new("--json"), src.as_os_str()]).ok().json();
    // The lost pack's blobs are stored again, and only they: the other packs are listed.
    let added = doc["bytes_added"].as_u64().unwrap();
    assert!(added > 0 && added < full_added / 2, "{added} of {full_added}: {doc}");
    let out = env.path("out");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]).ok();
    assert_same_tree(&src, &out.join("src"));
}

// See: issue 16 (the local cache is bounded by `--cache-size`).
#[test]
fn the_cache_of_trees_stays_within_cache_size_and_every_command_still_works() {
    let env = S3Env::new("cache-size");
    env.run("init", &[] as &[&str]).ok();
    let src = env.path("src");
    tree(&src, 21, 300);
    let bounded = |args: &[&OsStr]| -> Vec<OsString> {
        let mut all: Vec<OsString> = vec!["--cache-size".into(), "8KiB".into()];
        all.extend(args.iter().map(|a| a.to_os_string()));
        all
    };
    for round in 0..3 {
        write(&src.join(format!("d{round}/new")), &random_bytes(round, 1000));
        env.run("snapshot", &bounded(&[src.as_os_str()])).ok();
    }
    let out = env.path("out");
    env.run("restore", &bounded(&[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]))
        .ok();
    assert_same_tree(&src, &out.join("src"));
    env.run("check", &bounded(&[OsStr::new("--read-data")])).ok();

    let open = |size: Option<u64>| {
        let location = store::RepoLocation::parse(OsStr::new(&env.url)).unwrap();
        let password = crate::support::PASSWORD.as_bytes().to_vec();
        let opts = store::OpenOptions {
            cache_dir: Some(env.path("cache")),
            password: Some(store::crypto::Password::new(password)),
            cache_size: size,
            ..Default::default()
        };
        store::Repository::open_at(&location, &opts).unwrap()
    };
    let frames = open(Some(8 << 10)).index().unwrap().frames_bytes();
    assert!(frames > 0 && frames <= 8 << 10, "{frames} bytes of frames");
    // Without the bound the same sets keep more: the bound did something.
    let unbounded = env.path("out-2");
    env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), unbounded.as_os_str()]).ok();
    assert!(open(None).index().unwrap().frames_bytes() > 8 << 10);
}

/// What [`one_request_proxy`] does with a request.
#[derive(Clone, Copy)]
enum Answer {
    /// Passes it on, and the server's answer back.
    Pass,
    /// Answers 503 Slow Down (after reading the whole request), passing nothing on.
    SlowDown,
    /// Passes it on, and answers a create the server refused (412 Precondition Failed) with
    /// 200, as a server that ignores conditional writes (some S3-compatible servers do).
    IgnoreConditions,
}

/// A proxy that decides per request, from its head, what to do with it. Each connection carries
/// one request (the server is asked to close it after), so every request passes through here.
fn one_request_proxy(upstream: std::net::SocketAddr, decide: fn(&str) -> Answer) -> u16 {
    use std::io::{Read, Write};
    fn head_of(stream: &mut std::net::TcpStream) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = head.split_off(at + 4);
                return Some((head, rest));
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            std::thread::spawn(move || {
                let Some((head, mut rest)) = head_of(&mut client) else { return };
                let text = String::from_utf8_lossy(&head).into_owned();
                let answer = decide(&text);
                if let Answer::SlowDown = answer {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length").then(|| value.trim())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let mut buf = [0u8; 16384];
                    while rest.len() < len {
                        match client.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => rest.extend_from_slice(&buf[..n]),
                        }
                    }
                    slow_down_answer(&mut client);
                    return;
                }
                let Ok(mut server) = std::net::TcpStream::connect(upstream) else { return };
                // Not a signed header: the request's signature still holds.
                let mut head = head[..head.len() - 2].to_vec();
                head.extend_from_slice(b"Connection: close\r\n\r\n");
                if server.write_all(&head).and_then(|()| server.write_all(&rest)).is_err() {
                    return;
                }
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let Some((reply, body)) = head_of(&mut server) else { return };
                if matches!(answer, Answer::IgnoreConditions) && reply.starts_with(b"HTTP/1.1 412")
                {
                    let _ = client.write_all(
                        b"HTTP/1.1 200 OK\r\nETag: \"ignored\"\r\nContent-Length: 0\r\n\
                          Connection: close\r\n\r\n",
                    );
                } else if client.write_all(&reply).and_then(|()| client.write_all(&body)).is_ok() {
                    let _ = std::io::copy(&mut server, &mut client);
                }
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}

/// The test server's address, and `url` through a proxy at `port` instead.
fn upstream_and(url: &str, port: u16) -> (std::net::SocketAddr, String) {
    let base = std::env::var("STORE_TEST_S3").unwrap();
    let host_port = base.trim_start_matches("s3:http://").split('/').next().unwrap().to_owned();
    (host_port.parse().unwrap(), url.replace(&host_port, &format!("127.0.0.1:{port}")))
}

// See: issue 16 (after giving up, the error names the object, the operation and the HTTP status,
// and nothing is committed).
#[test]
fn an_upload_that_keeps_failing_names_object_operation_and_status_and_commits_nothing() {
    let env = S3Env::new("gives-up");
    env.run("init", &[] as &[&str]).ok();
    let (upstream, _) = upstream_and(&env.url, 0);
    let port = one_request_proxy(upstream, |head| {
        if head.starts_with("PUT ") && head.lines().next().is_some_and(|l| l.contains("/packs/")) {
            Answer::SlowDown
        } else {
            Answer::Pass
        }
    });
    let (_, through) = upstream_and(&env.url, port);
    let src = env.path("src");
    tree(&src, 41, 10);
    let run = store([
        OsStr::new("snapshot"),
        OsStr::new("--repo"),
        OsStr::new(&through),
        OsStr::new("--cache-dir"),
        env.path("cache").as_os_str(),
        src.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("/packs/")
            && run.stderr.contains("PUT")
            && run.stderr.contains("503")
            && run.stderr.contains("after 10 retries"),
        "{}",
        run.stderr
    );
    let sets = env.run("snapshots", &["--json"]).ok().json();
    assert_eq!(sets.as_array().unwrap().len(), 0, "nothing committed");
    env.run("check", &[] as &[&str]).ok();
}

// See: issue 16 (where a server does not honour conditional writes, refuse to run two writers
// at once and say why).
#[test]
fn a_server_that_ignores_conditional_writes_gets_one_process_at_a_time() {
    let env = S3Env::new("no-conditions");
    let (upstream, _) = upstream_and(&env.url, 0);
    let port = one_request_proxy(upstream, |_| Answer::IgnoreConditions);
    let (_, through) = upstream_and(&env.url, port);
    let run = |cache: &str, args: &[&OsStr]| {
        let mut all: Vec<OsString> = vec![
            "--repo".into(),
            through.clone().into(),
            "--cache-dir".into(),
            env.path(cache).into(),
        ];
        all.extend(args.iter().map(|a| a.to_os_string()));
        all
    };
    store(run("cache", &[OsStr::new("init")])).ok();
    let src = env.path("src");
    tree(&src, 31, 20);
    let first = std::process::Command::new(crate::support::bin())
        .arg("snapshot")
        .args(run("cache", &[src.as_os_str()]))
        .env_remove("STORE_REPO")
        .env("STORE_PAUSE_AT", "pack_written")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::wait_until_stopped(first.id());
    // A second writer, of another host, is refused while the first holds its lock, and told why.
    let mut second = vec![OsString::from("snapshot"), "--host".into(), "other".into()];
    second.extend(run("cache-2", &[src.as_os_str()]));
    let refused = store(second);
    assert_eq!(refused.code, 11, "{}", refused.stderr);
    assert!(refused.stderr.contains("ignores conditional writes"), "{}", refused.stderr);
    let resumed = std::process::Command::new("kill")
        .args(["-CONT", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(resumed.success());
    let done = Run::from(first.wait_with_output().unwrap()).ok();
    assert!(done.stderr.is_empty() || !done.stderr.contains("error"), "{}", done.stderr);
    let out = env.path("out");
    let target =
        [OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()];
    store(run("cache", &target)).ok();
    assert_same_tree(&src, &out.join("src"));
}
