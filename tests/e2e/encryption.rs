//! Encryption at rest (issue 15): nothing readable leaks into the repository, tampering is
//! named and never restored as wrong bytes, two repositories share nothing, and passwords and
//! keys behave as an operator expects. Every other e2e test runs on an encrypted repository too
//! (the default of `store init`, with the suite's password).

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::integrity::{blobs_of, files_under, flip};
use crate::support::{assert_same_tree, random_bytes, write, Env, Run, PASSWORD};

/// Marker strings placed in contents, names, tags and commands: none may appear in an
/// encrypted repository.
const MARKERS: [&str; 6] = [
    "CONTENTMARKER-7f3a9c",
    "NAMEMARKER-51be0d",
    "TAGMARKER-c28e4a",
    "DUMPMARKER-9d0b17",
    "XATTRMARKER-3e6f21",
    "HOSTMARKER-a4d802",
];

/// A source tree holding every marker somewhere.
fn marked_source(env: &Env) -> PathBuf {
    let src = env.path("alf_data");
    // Text (zstd keeps literals of it), and the marker inside incompressible bytes (stored raw).
    let text = format!("{} quarterly report\n", MARKERS[0]).repeat(2000);
    write(&src.join("contentstore/2026/11/30/doc.txt"), text.as_bytes());
    let mut noise = random_bytes(1, 200_000);
    noise[100_000..100_000 + MARKERS[0].len()].copy_from_slice(MARKERS[0].as_bytes());
    write(&src.join("contentstore/2026/11/30/media.bin"), &noise);
    write(&src.join(format!("contentstore/{}.bin", MARKERS[1])), b"small document");
    let named = src.join("contentstore/2026/11/30/doc.txt");
    rustix::fs::lsetxattr(
        &named,
        "user.note",
        MARKERS[4].as_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    src
}

/// The files of `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle))
        .collect()
}

/// A set with every marker: a directory component, a command component, a tag and the host
/// name the set is recorded under.
fn marked_set(env: &Env, src: &Path) {
    let dump = format!("db=printf '{} row 1\\n%.0s' $(seq 1 500)", MARKERS[3]);
    let comp = format!("content={}", src.display());
    let args =
        ["--tag", MARKERS[2], "--host", MARKERS[5], "--component-cmd", &dump, "--component", &comp];
    env.run("snapshot", &args).ok();
}

#[test]
fn nothing_readable_is_written_into_an_encrypted_repository() {
    let env = Env::new();
    env.init();
    let src = marked_source(&env);
    marked_set(&env, &src);
    env.run("check", &["--read-data"]).ok();
    // A lock while it is held holds the host name and the command.
    let repo = crate::support::open_repo(&env.repo());
    let opts = store::LockOptions {
        wait: std::time::Duration::ZERO,
        stale_after: std::time::Duration::from_secs(60),
        command: format!("snapshot --tag {}", MARKERS[2]),
        interrupt: None,
    };
    let lock = repo.lock(store::LockKind::Shared, &opts, &mut |_| {}).unwrap();
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let locks = files_under(&env.repo().join("locks"));
    assert_eq!(locks.len(), 1);
    let lock_bytes = std::fs::read(&locks[0]).unwrap();
    assert!(lock_bytes.starts_with(b"STOREENC"), "the lock is sealed");
    assert!(!lock_bytes.windows(host.len()).any(|w| w == host.as_bytes()), "host name in the lock");
    for m in MARKERS {
        let found = files_containing(&env.repo(), m.as_bytes());
        assert!(found.is_empty(), "{m} is readable in {found:?}");
    }
    // Every object kind is sealed: manifests, index files, locks in an envelope; pack trailers
    // are not a plain list of ids (checked by the engine reading them only with the key).
    for dir in ["snapshots", "index", "locks"] {
        for f in files_under(&env.repo().join(dir)) {
            assert!(
                std::fs::read(&f).unwrap().starts_with(b"STOREENC"),
                "{} is sealed",
                f.display()
            );
        }
    }
    drop(lock);
    let out = env.path("out");
    env.restore("latest", &out);
    assert_same_tree(&src, &out.join("content"));

    // The same set in an unencrypted repository shows the markers: the search above finds
    // what is there.
    let plain = Env::new();
    plain.run("init", &["--encryption", "none"]).ok();
    marked_set(&plain, &src);
    for m in [MARKERS[0], MARKERS[1], MARKERS[2], MARKERS[4], MARKERS[5]] {
        assert!(!files_containing(&plain.repo(), m.as_bytes()).is_empty(), "{m} in a plain repo");
    }
}

/// A data blob of the largest pack: (pack, blob).
fn largest_pack(env: &Env) -> PathBuf {
    files_under(&env.repo().join("packs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

fn check_json(env: &Env, read_data: bool) -> (Run, String) {
    let args: &[&str] = if read_data { &["--json", "--read-data"] } else { &["--json"] };
    let run = env.run("check", args);
    let text = run.stdout.clone();
    (run, text)
}

/// Restores everything that can be restored and asserts that every file written has the bytes
/// of the source: damage is an error, never wrong bytes.
fn restore_never_wrong(env: &Env, src: &Path, name: &str) -> Run {
    let out = env.path(name);
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    let written = if out.exists() { files_under(&out) } else { Vec::new() };
    for f in written {
        let rel = f.strip_prefix(out.join("content")).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), std::fs::read(src.join(rel)).unwrap(), "{rel:?}");
    }
    run
}

#[test]
fn tampering_is_named_by_check_and_never_restored_as_wrong_bytes() {
    let setup = || {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        // Two files of the same size stored raw: blobs of the same length, to swap.
        write(&src.join("a.bin"), &random_bytes(11, 20_000));
        write(&src.join("b.bin"), &random_bytes(12, 20_000));
        write(&src.join("big.bin"), &random_bytes(13, 3_000_000));
        env.run(
            "snapshot",
            &[OsStr::new("--component"), OsStr::new(&format!("content={}", src.display()))],
        )
        .ok();
        (env, src)
    };

    // A flipped byte inside a data blob: `check --read-data` names the blob; restore fails
    // for that file (exit 1) and writes nothing wrong.
    let (env, src) = setup();
    let pack = largest_pack(&env);
    let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0 && b.stored_len > 100_000).unwrap();
    flip(&pack, b.offset + 48 + b.stored_len / 2);
    let (run, doc) = check_json(&env, true);
    assert_eq!(run.code, 1, "{doc}");
    assert!(doc.contains("authenticate"), "{doc}");
    let run = restore_never_wrong(&env, &src, "out-blob");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("big.bin"), "the file is named: {}", run.stderr);

    // Two blobs of the same length swapped: neither authenticates where it lies.
    let (env, src) = setup();
    let pack = largest_pack(&env);
    let same: Vec<_> =
        blobs_of(&pack).into_iter().filter(|b| b.kind == 0 && b.stored_len < 30_000).collect();
    let (x, y) = (same[0], same[1]);
    assert_eq!(x.stored_len, y.stored_len, "{same:?}");
    let mut bytes = std::fs::read(&pack).unwrap();
    let (xs, ys, n) = ((x.offset + 48) as usize, (y.offset + 48) as usize, x.stored_len as usize);
    let xb = bytes[xs..xs + n].to_vec();
    let yb = bytes[ys..ys + n].to_vec();
    bytes[xs..xs + n].copy_from_slice(&yb);
    bytes[ys..ys + n].copy_from_slice(&xb);
    std::fs::set_permissions(&pack, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();
    let (run, doc) = check_json(&env, true);
    assert_eq!(run.code, 1, "{doc}");
    assert_eq!(doc.matches("authenticate").count(), 2, "both swapped blobs are named: {doc}");
    let run = restore_never_wrong(&env, &src, "out-swap");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("a.bin") && run.stderr.contains("b.bin"), "{}", run.stderr);

    // A flipped byte in a pack trailer: `check` names the pack.
    let (env, _) = setup();
    let pack = largest_pack(&env);
    let len = std::fs::metadata(&pack).unwrap().len();
    flip(&pack, len - 64 - 20);
    let (run, doc) = check_json(&env, false);
    assert_eq!(run.code, 1, "{doc}");
    let name = pack.file_stem().unwrap().to_str().unwrap();
    assert!(doc.contains(name), "the pack is named: {doc}");

    // A flipped byte in an index file and in a manifest: each is named; the set whose manifest
    // is damaged cannot be restored, and nothing is restored wrong.
    for (dir, what) in [("index", "index file"), ("snapshots", "snapshot")] {
        let (env, src) = setup();
        let file = files_under(&env.repo().join(dir)).remove(0);
        let len = std::fs::metadata(&file).unwrap().len();
        flip(&file, len / 2);
        let (run, doc) = check_json(&env, false);
        assert_eq!(run.code, 1, "{dir}: {doc}");
        let name = file.file_name().unwrap().to_str().unwrap();
        assert!(doc.contains(&name[..8]) || doc.contains(name), "{what} is named: {doc}");
        if dir == "snapshots" {
            let run = restore_never_wrong(&env, &src, "out-manifest");
            assert_ne!(run.code, 0, "{}", run.stderr);
        }
    }

    // A flipped byte in the only key file: the repository does not open (exit 12), and the
    // damaged key file is named.
    let (env, _) = setup();
    let key = files_under(&env.repo().join("keys")).remove(0);
    flip(&key, 40);
    let run = env.run("snapshots", &[] as &[&str]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    let name = key.file_name().unwrap().to_str().unwrap();
    assert!(run.stderr.contains(&name[..8]) && run.stderr.contains("damaged"), "{}", run.stderr);
}

/// The ids of every blob the index files of `repo` list.
fn blob_ids(repo: &Path) -> BTreeSet<store::Id> {
    let repo = crate::support::open_repo(repo);
    let mut ids = BTreeSet::new();
    for f in files_under(&repo.layout().index_dir()) {
        let id: store::IndexId = f.file_name().unwrap().to_str().unwrap().parse().unwrap();
        for pack in repo.load_index_file(id).unwrap() {
            ids.extend(pack.entries.iter().map(|e| e.id));
        }
    }
    ids
}

#[test]
fn two_repositories_given_the_same_data_share_no_id_and_no_pack_bytes() {
    let src = Env::new();
    let data = src.path("data");
    write(&data.join("doc.txt"), &b"the same document in two repositories\n".repeat(5000));
    write(&data.join("media.bin"), &random_bytes(5, 2_000_000));
    let (a, b) = (Env::new(), Env::new());
    for env in [&a, &b] {
        env.init();
        env.snapshot(&[&data]);
    }
    let (ia, ib) = (blob_ids(&a.repo()), blob_ids(&b.repo()));
    assert!(ia.len() > 10 && ib.len() > 10, "{} {}", ia.len(), ib.len());
    assert!(ia.is_disjoint(&ib), "chunk ids are keyed per repository");
    let packs = |e: &Env| -> BTreeSet<Vec<u8>> {
        files_under(&e.repo().join("packs")).iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let (pa, pb) = (packs(&a), packs(&b));
    assert!(pa.is_disjoint(&pb));
    // Not one 64-byte stretch of stored data is shared between the two repositories.
    let windows = |set: &BTreeSet<Vec<u8>>| -> BTreeSet<Vec<u8>> {
        set.iter().flat_map(|p| p.chunks(64).map(<[u8]>::to_vec).collect::<Vec<_>>()).collect()
    };
    let shared: Vec<_> = windows(&pa).intersection(&windows(&pb)).take(3).cloned().collect();
    assert!(shared.iter().all(|w| w.iter().all(|&b| b == 0)), "shared bytes: {shared:?}");
    // Chunk boundaries differ too (the gear table is keyed): the sizes of the chunks cut from
    // the same files are not the same list.
    let sizes = |e: &Env| -> Vec<u64> {
        let repo = crate::support::open_repo(&e.repo());
        let mut s: Vec<u64> = blob_ids(&e.repo())
            .iter()
            .filter_map(|id| repo.index().unwrap().get(id).unwrap())
            .filter(|l| l.entry.kind == store::BlobKind::Data)
            .map(|l| u64::from(l.entry.raw_len))
            .collect();
        s.sort_unstable();
        s
    };
    assert_ne!(sizes(&a), sizes(&b), "chunk boundaries are keyed");
}

/// Runs `store ARGS --repo REPO` with `vars` set and no password from the suite.
fn run_with(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = std::process::Command::new(crate::support::bin());
    cmd.args(args).arg("--repo").arg(env.repo()).env_remove("STORE_PASSWORD");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Run::from(cmd.stdin(std::process::Stdio::null()).output().unwrap())
}

/// Every file of the repository with its bytes, but the index cache (a `snapshots` run may
/// open it).
fn repo_files(env: &Env) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(&env.repo())
        .into_iter()
        .filter(|p| !p.starts_with(env.repo().join("cache")))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Restores the latest set with `password` and checks the one file the password tests keep.
fn restores_kept_with(env: &Env, password: &str) {
    let out = env.path("out");
    let _ = std::fs::remove_dir_all(&out);
    let target = ["restore", "latest", "--target", out.to_str().unwrap()];
    run_with(env, &target, &[("STORE_PASSWORD", password)]).ok();
    assert_eq!(std::fs::read(out.join("src/f")).unwrap(), b"kept");
}

#[test]
fn passwords_keys_and_their_refusals() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("f"), b"kept");
    env.snapshot(&[&src]);
    let before = repo_files(&env);

    // No password and no terminal: refused at once, naming the ways to give one.
    let run = run_with(&env, &["snapshots"], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for way in ["--password-file", "STORE_PASSWORD_COMMAND", "STORE_PASSWORD"] {
        assert!(run.stderr.contains(way), "{way}: {}", run.stderr);
    }
    // A wrong password: exit 12, every key tried, nothing changed.
    let run = run_with(&env, &["snapshot", src.to_str().unwrap()], &[("STORE_PASSWORD", "wrong")]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(run.stderr.contains("wrong password or no key for it"), "{}", run.stderr);
    assert_eq!(repo_files(&env), before, "a refused command changes nothing");
    // The other sources: a file (first line) and a command.
    let pwfile = env.path("pw");
    write(&pwfile, format!("{PASSWORD}\nsecond line ignored\n").as_bytes());
    run_with(&env, &["snapshots", "--password-file", pwfile.to_str().unwrap()], &[]).ok();
    run_with(&env, &["snapshots"], &[("STORE_PASSWORD_FILE", pwfile.to_str().unwrap())]).ok();
    let cmd = format!("cat {}", pwfile.display());
    run_with(&env, &["snapshots"], &[("STORE_PASSWORD_COMMAND", &cmd)]).ok();
    let run = run_with(&env, &["snapshots"], &[("STORE_PASSWORD_COMMAND", "exit 3")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("STORE_PASSWORD_COMMAND"), "{}", run.stderr);

    // Keys: add one for a cron job; both open the repository.
    let cron = env.path("cron-pw");
    write(&cron, b"cron password\n");
    let added = env.run("key", &["add", "--new-password-file", cron.to_str().unwrap()]).ok();
    assert!(added.stdout.contains("added key"), "{}", added.stdout);
    let list = env.run("key", &["list", "--json"]).ok().json();
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1, "{list}");
    let mine =
        keys.iter().find(|k| k["current"] == true).unwrap()["id"].as_str().unwrap().to_owned();
    let theirs =
        keys.iter().find(|k| k["current"] == false).unwrap()["id"].as_str().unwrap().to_owned();
    run_with(&env, &["snapshots"], &[("STORE_PASSWORD", "cron password")]).ok();
    // The key in use is not removed; the other one is; then the last one is not.
    let run = env.run("key", &["remove", &mine[..12]]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("in use"), "{}", run.stderr);
    env.run("key", &["remove", &theirs[..12]]).ok();
    let run = run_with(&env, &["snapshots"], &[("STORE_PASSWORD", "cron password")]);
    assert_eq!(run.code, 12, "the removed key opens nothing: {}", run.stderr);
    let run =
        run_with(&env, &["key", "remove", &mine[..12]], &[("STORE_PASSWORD", "cron password")]);
    assert_eq!(run.code, 12);
    assert_eq!(env.run("key", &["list", "--json"]).ok().json().as_array().unwrap().len(), 1);
    // `key passwd`: the new password opens it, the old one no longer does.
    let new = env.path("new-pw");
    write(&new, b"new password\n");
    env.run("key", &["passwd", "--new-password-file", new.to_str().unwrap()]).ok();
    assert_eq!(env.run("snapshots", &[] as &[&str]).code, 12, "the old password is gone");
    restores_kept_with(&env, "new password");
    // The last key cannot be removed, even by prefix from another process.
    let only = files_under(&env.repo().join("keys")).remove(0);
    let only = only.file_name().unwrap().to_str().unwrap().to_owned();
    let run =
        run_with(&env, &["key", "remove", &only[..10]], &[("STORE_PASSWORD", "new password")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("in use"), "{}", run.stderr);
    // An empty new password is refused.
    write(&new, b"\n");
    let add = ["key", "add", "--new-password-file", new.to_str().unwrap()];
    let run = run_with(&env, &add, &[("STORE_PASSWORD", "new password")]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("empty"), "{}", run.stderr);
}

#[test]
fn a_key_file_asking_for_absurd_work_is_refused_before_any_is_done() {
    let env = Env::new();
    env.init();
    let key = files_under(&env.repo().join("keys")).remove(0);
    let good = std::fs::read(&key).unwrap();
    // 4 TiB of memory; then 2^32-1 passes. Each crafted file is named by its hash, as a key
    // file is, so only its parameters are wrong.
    for (at, value) in [(16usize, u32::MAX), (20, u32::MAX), (24, 1000)] {
        let mut bytes = good.clone();
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let name = blake3::hash(&bytes).to_hex().to_string();
        std::fs::remove_file(&key).ok();
        for f in files_under(&env.repo().join("keys")) {
            std::fs::remove_file(f).unwrap();
        }
        write(&env.repo().join("keys").join(&name), &bytes);
        let run = env.run("snapshots", &[] as &[&str]);
        assert_eq!(run.code, 12, "{}", run.stderr);
        assert!(run.stderr.contains(&name[..8]) && run.stderr.contains("KDF"), "{}", run.stderr);
    }
}

#[test]
fn unencrypted_and_older_repositories_keep_working_without_a_password() {
    for args in [&["--encryption", "none"][..], &["--format-version", "2"][..]] {
        let env = Env::new();
        let run = env.run("init", args).ok();
        assert!(run.stdout.contains("not encrypted"), "{}", run.stdout);
        assert!(!env.repo().join("keys").exists());
        let src = env.path("src");
        write(&src.join("f"), b"plain");
        let no_password = |a: &[&str]| run_with(&env, a, &[]);
        no_password(&["snapshot", src.to_str().unwrap()]).ok();
        let out = env.path("out");
        no_password(&["restore", "latest", "--target", out.to_str().unwrap()]).ok();
        assert_same_tree(&src, &out.join("src"));
        let run = no_password(&["key", "list"]);
        assert_eq!(run.code, 1);
        assert!(run.stderr.contains("not encrypted"), "{}", run.stderr);
        // A password given anyway is ignored, and a password file that does not read is no
        // error where none is needed.
        let missing = env.path("no-such-password-file");
        for vars in [
            &[("STORE_PASSWORD", "ignored")][..],
            &[("STORE_PASSWORD_FILE", missing.to_str().unwrap())][..],
        ] {
            run_with(&env, &["snapshots"], vars).ok();
        }
    }
    // Encrypted, a password file that does not read is named.
    let env = Env::new();
    env.init();
    let missing = env.path("no-such-password-file");
    let run = run_with(&env, &["snapshots"], &[("STORE_PASSWORD_FILE", missing.to_str().unwrap())]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot read the password file"), "{}", run.stderr);
    // Version 2 cannot be encrypted: said so.
    let env = Env::new();
    let run = env.run("init", &["--format-version", "2", "--encryption", "xchacha20-poly1305"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot be encrypted"), "{}", run.stderr);
}

// A crash at any step of `key passwd` leaves a key that opens the repository: the old one until
// the new key is durable, both after, never none.
#[test]
fn a_crash_during_key_passwd_never_leaves_the_repository_without_a_key() {
    for point in ["key_synced", "key_renamed", "key_durable", "key_added"] {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        write(&src.join("f"), b"kept");
        env.snapshot(&[&src]);
        let new = env.path("new-pw");
        write(&new, b"new password\n");
        let crashed = std::process::Command::new(crate::support::bin())
            .args(["key", "passwd", "--new-password-file", new.to_str().unwrap(), "--repo"])
            .arg(env.repo())
            .env("STORE_CRASH_AT", point)
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "{point}: the crash point was not reached");
        let opens = |pw: &str| run_with(&env, &["snapshots"], &[("STORE_PASSWORD", pw)]).code == 0;
        let (old, new_opens) = (opens(PASSWORD), opens("new password"));
        assert!(old, "{point}: the old key is removed only after the new one is durable");
        assert_eq!(new_opens, point != "key_synced", "{point}: the new key is there once renamed");
        let keys = files_under(&env.repo().join("keys")).len();
        assert_eq!(keys, if point == "key_synced" { 1 } else { 2 }, "{point}");
        // Running it again finishes the job: the new password opens, the old one no longer.
        env.run("key", &["passwd", "--new-password-file", new.to_str().unwrap()]).ok();
        assert!(opens("new password") && !opens(PASSWORD), "{point}");
        restores_kept_with(&env, "new password");
    }
}

/// The format version in the header of every file of `dir` (sealed files: `STOREENC` then the
/// version).
fn sealed_versions(dir: &Path) -> BTreeSet<u32> {
    files_under(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).unwrap();
            assert_eq!(&bytes[..8], b"STOREENC", "{}", f.display());
            u32::from_le_bytes(bytes[8..12].try_into().unwrap())
        })
        .collect()
}

// See: issue 19 (format version 5 seals with XAES-256-GCM, for speed) and the format policy: a
// test reads what version 4 wrote, and a version-4 repository keeps being written as version 4
// (XChaCha20-Poly1305) so the builds before 5 still read it.
#[test]
fn version_5_seals_with_xaes_and_a_version_4_repository_keeps_xchacha() {
    let env = Env::new();
    let src = env.path("src");
    write(&src.join("doc.txt"), &b"quarterly report, third draft\n".repeat(5000));
    write(&src.join("media.bin"), &random_bytes(5, 300_000));
    let restored = |repo: &Path, name: &str| {
        let out = env.path(name);
        let args = [OsStr::new("restore"), OsStr::new("--repo"), repo.as_os_str()];
        let args = args.into_iter().chain([OsStr::new("latest"), OsStr::new("--target")]);
        crate::support::store(args.chain([out.as_os_str()])).ok();
        assert_same_tree(&src, &out.join("src"));
        let check = [OsStr::new("check"), OsStr::new("--read-data"), OsStr::new("--repo")];
        crate::support::store(check.into_iter().chain([repo.as_os_str()])).ok();
    };

    // New repositories: version 5 with XAES-256-GCM, or XChaCha20-Poly1305 when asked.
    for (args, cipher) in [
        (&[][..], "xaes-256-gcm"),
        (&["--encryption", "xchacha20-poly1305"][..], "xchacha20-poly1305"),
    ] {
        let repo = env.path(cipher);
        let mut all = vec![OsStr::new("init"), OsStr::new("--json"), OsStr::new("--repo")];
        all.push(repo.as_os_str());
        all.extend(args.iter().map(OsStr::new));
        let init = crate::support::store(all).ok().json();
        assert_eq!(init["format_version"], 5);
        assert_eq!(init["encryption"], cipher);
        let snap = [OsStr::new("snapshot"), OsStr::new("--repo"), repo.as_os_str()];
        crate::support::store(snap.into_iter().chain([src.as_os_str()])).ok();
        restored(&repo, &format!("out-{cipher}"));
        assert_eq!(sealed_versions(&repo.join("snapshots")), BTreeSet::from([5]));
    }
    // The config decides the cipher: the XAES repository's config told (with a valid checksum)
    // that it is XChaCha20-Poly1305 opens nothing, and says so.
    let repo = env.path("xaes-256-gcm");
    let mut config = std::fs::read(repo.join("config")).unwrap();
    let at = config.len() - 36;
    assert_eq!(config[at..at + 4], 2u32.to_le_bytes(), "the encryption field ends the record");
    config[at] = 1;
    let sum = blake3::hash(&config[..at + 4]);
    config[at + 4..].copy_from_slice(sum.as_bytes());
    for name in ["config", "config.copy"] {
        let path = repo.join(name);
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false, reason = "a test damaging its repository")]
        perms.set_readonly(false);
        std::fs::set_permissions(&path, perms).unwrap();
        std::fs::write(&path, &config).unwrap();
    }
    let check = [OsStr::new("check"), OsStr::new("--repo"), repo.as_os_str()];
    let run = crate::support::store(check);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("does not authenticate"), "{}", run.stdout);
    // The committed version-4 repository (XChaCha20-Poly1305), written into by this build: it
    // stays version 4, its config unchanged, and both sets restore.
    let v4 = env.path("v4");
    crate::compat::copy_tree(&crate::compat::fixture_of(4).join("repo"), &v4);
    let config = std::fs::read(v4.join("config")).unwrap();
    let snap = [OsStr::new("snapshot"), OsStr::new("--repo"), v4.as_os_str()];
    crate::support::store(snap.into_iter().chain([src.as_os_str()])).ok();
    restored(&v4, "out-v4");
    assert_eq!(std::fs::read(v4.join("config")).unwrap(), config);
    assert_eq!(sealed_versions(&v4.join("snapshots")), BTreeSet::from([4]));
    assert_eq!(sealed_versions(&v4.join("index")), BTreeSet::from([4]));
    let listing = [OsStr::new("snapshots"), OsStr::new("--json"), OsStr::new("--repo")];
    let sets = crate::support::store(listing.into_iter().chain([v4.as_os_str()])).ok().json();
    assert_eq!(sets.as_array().map(Vec::len), Some(2), "{sets}");

    // Its sets copied into a new version-5 repository: read through XChaCha20-Poly1305,
    // sealed again with XAES-256-GCM, and restored byte for byte from there.
    let target = env.path("copied");
    crate::support::store([OsStr::new("init"), OsStr::new("--repo"), target.as_os_str()]).ok();
    let copy = std::process::Command::new(crate::support::bin())
        .args([OsStr::new("copy"), OsStr::new("--from"), v4.as_os_str()])
        .args([OsStr::new("--to"), target.as_os_str()])
        .env_remove("STORE_REPO")
        .env("STORE_FROM_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let copy = Run::from(copy).ok();
    assert!(copy.stdout.contains("2 sets") || copy.stderr.contains("2 sets"), "{}", copy.stdout);
    restored(&target, "out-copied");
    let sets = crate::support::store(listing.into_iter().chain([target.as_os_str()])).ok().json();
    assert_eq!(sets.as_array().map(Vec::len), Some(2), "{sets}");
    assert_eq!(sealed_versions(&target.join("snapshots")), BTreeSet::from([5]));

    // XAES-256-GCM cannot seal a version-4 repository: refused, naming the option, nothing made.
    let refused = env.path("refused");
    let run = crate::support::store([
        OsStr::new("init"),
        OsStr::new("--repo"),
        refused.as_os_str(),
        OsStr::new("--format-version"),
        OsStr::new("4"),
        OsStr::new("--encryption"),
        OsStr::new("xaes-256-gcm"),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("--encryption xaes-256-gcm needs format version 5"),
        "{}",
        run.stderr
    );
    assert!(!refused.exists());
}
