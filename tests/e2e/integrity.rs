//! Integrity: damage of every kind is found by `check` and named, never restored as wrong
//! bytes; `repair index`; crash points on every durable step of a snapshot; SIGKILL at random
//! moments; concurrent processes; locks; a full disk.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{assert_same_tree, random_bytes, write, Env, Run};

/// A blob as listed in a pack's trailer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Blob {
    pub(crate) offset: u64,
    pub(crate) stored_len: u64,
    pub(crate) kind: u8,
}

/// The blobs of a pack (FORMAT.md §5), found without the engine by walking the blob headers
/// (in the clear, sealed or not) from offset 0 up to the trailer the footer places.
pub(crate) fn blobs_of(pack: &Path) -> Vec<Blob> {
    let bytes = std::fs::read(pack).unwrap();
    let footer = &bytes[bytes.len() - 64..];
    let count = u32::from_le_bytes(footer[12..16].try_into().unwrap()) as usize;
    let trailer = u64::from_le_bytes(footer[16..24].try_into().unwrap());
    let mut out = Vec::new();
    let mut offset = 0u64;
    while offset < trailer {
        let h = &bytes[offset as usize..offset as usize + 48];
        assert_eq!(&h[..2], b"sb", "blob header at {offset} of {}", pack.display());
        let stored_len = u64::from(u32::from_le_bytes(h[4..8].try_into().unwrap()));
        out.push(Blob { offset, stored_len, kind: h[2] });
        offset += 48 + stored_len;
    }
    assert_eq!(out.len(), count, "the footer of {} counts its blobs", pack.display());
    out
}

pub(crate) fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn make_writable(p: &Path) {
    std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
}

pub(crate) fn flip(p: &Path, offset: u64) {
    make_writable(p);
    let mut bytes = std::fs::read(p).unwrap();
    bytes[offset as usize] ^= 0x20;
    std::fs::write(p, bytes).unwrap();
}

fn check(env: &Env, args: &[&str]) -> (Run, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let run = env.run("check", &all);
    let doc = run.json();
    (run, doc)
}

fn kinds(doc: &serde_json::Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A repository with three sets: one with a big random file and text files, then two more.
fn healthy_repo() -> (Env, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("contentstore");
    write(&src.join("2026/11/19/big.bin"), &random_bytes(1, 3 << 20));
    for i in 0..20u64 {
        write(
            &src.join(format!("2026/11/19/doc{i}.txt")),
            format!("document {i}\n").repeat(500).as_bytes(),
        );
    }
    env.snapshot(&[&src]);
    write(&src.join("2026/11/20/new.bin"), &random_bytes(2, 500_000));
    env.snapshot(&[&src]);
    write(&src.join("2026/11/21/newer.bin"), &random_bytes(3, 400_000));
    env.snapshot(&[&src]);
    (env, src)
}

/// The pack holding the big file's first chunk: the first data blob of the first pack written.
fn first_pack(env: &Env) -> PathBuf {
    files_under(&env.repo().join("packs"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

/// Restores the latest set; every file that is restored must equal the source.
fn restore_never_wrong(env: &Env, src: &Path) -> Run {
    let out = env.path("restore-out");
    let _ = std::fs::remove_dir_all(&out);
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    for f in files_under(&out.join("contentstore")) {
        let rel = f.strip_prefix(out.join("contentstore")).unwrap();
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(src.join(rel)).unwrap(),
            "{} restored with wrong bytes",
            rel.display()
        );
    }
    run
}

#[test]
fn healthy_repository_checks_clean_with_and_without_data() {
    let (env, _) = healthy_repo();
    let (run, doc) = check(&env, &[]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(doc["damaged"], false);
    assert_eq!(doc["snapshots"], 3);
    let (run, doc) = check(&env, &["--read-data"]);
    assert_eq!(run.code, 0);
    assert!(doc["blobs_read"].as_u64().unwrap() > 20);
    // Slices cover every pack exactly once.
    let mut read = 0;
    for n in 1..=3 {
        let (run, doc) = check(&env, &["--read-data-subset", &format!("{n}/3")]);
        assert_eq!(run.code, 0);
        read += doc["packs_read"].as_u64().unwrap();
    }
    assert_eq!(read, doc["packs"].as_u64().unwrap());
    assert_eq!(env.run("check", &["--read-data-subset", "4/3"]).code, 1);
}

// See: issue 20 ("verified coverage"): nightly bounded checks cover the repository in turn, and
// every check's verification counts (it is recorded in the repository).
#[test]
fn bounded_checks_cover_every_pack_in_turn_and_stats_shows_the_coverage() {
    let (env, _) = healthy_repo();
    let packs = files_under(&env.repo().join("packs"));
    let n = packs.len() as u64;
    let pack_bytes: u64 = packs.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert!(n >= 3, "a pack per set");
    let verified = |env: &Env| env.run("stats", &["--json"]).ok().json()["verified"].clone();
    let v = verified(&env);
    assert_eq!((v["never"].as_u64(), v["within_90_days"].as_u64()), (Some(pack_bytes), Some(0)));

    for night in 0..n {
        let (run, doc) = check(&env, &["--read-data", "--max-age", "30d", "--max-bytes", "1"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(doc["packs_due"], n - night, "night {night}");
        assert_eq!(doc["packs_read"], 1, "a bound below a pack still reads one");
        assert_eq!(doc["verified_recorded"], 1);
    }
    let (_, doc) = check(&env, &["--read-data", "--max-age", "30d"]);
    assert_eq!((doc["packs_due"].as_u64(), doc["packs_read"].as_u64()), (Some(0), Some(0)));
    let human = env.run("check", &["--read-data", "--max-age", "30d"]).ok();
    assert!(
        human.stdout.contains("0 packs (0 B) were due for verification; 0 read"),
        "{}",
        human.stdout
    );
    let v = verified(&env);
    assert_eq!((v["within_7_days"].as_u64(), v["never"].as_u64()), (Some(pack_bytes), Some(0)));
    assert!(env.run("stats", &[] as &[&str]).ok().stdout.contains("data verified by check:"));
    // The checks merged their records into one, sealed like every other object.
    let records = files_under(&env.repo().join("verified"));
    assert_eq!(records.len(), 1, "{records:?}");
    let bytes = std::fs::read(&records[0]).unwrap();
    assert_eq!(&bytes[..8], b"STOREENC");

    // Whole-repository and subset reads record too: a new pack is the only one due.
    write(&env.path("contentstore/2026/11/22/x.bin"), &random_bytes(9, 300_000));
    env.snapshot(&[&env.path("contentstore")]);
    let (_, doc) = check(&env, &["--read-data", "--max-age", "30d"]);
    assert_eq!((doc["packs_due"].as_u64(), doc["packs_read"].as_u64()), (Some(1), Some(1)));
    assert_eq!(check(&env, &["--read-data-subset", "1/1"]).1["verified_recorded"], n + 1);

    // The options need --read-data, and bad values are named.
    let run = env.run("check", &["--max-age", "30d"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--read-data"), "{}", run.stderr);
    for (opt, bad) in [("--max-age", "3mo"), ("--max-bytes", "12 parsecs")] {
        let run = env.run("check", &["--read-data", opt, bad]);
        assert_ne!(run.code, 0);
        assert!(run.stderr.contains(&format!("invalid {opt}")), "{}", run.stderr);
    }
}

#[test]
fn every_kind_of_damage_is_found_and_named() {
    type Damage = fn(&Env, &Path) -> String;
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "flipped bit in a data blob",
            |env, _| {
                let pack = first_pack(env);
                let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0).unwrap();
                flip(&pack, b.offset + 48 + b.stored_len / 2);
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "damaged_blob",
        ),
        (
            "flipped bit in a blob header",
            |env, _| {
                let pack = first_pack(env);
                let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0).unwrap();
                flip(&pack, b.offset + 6);
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "damaged_blob",
        ),
        (
            "flipped bit in a trailer",
            |env, _| {
                let pack = first_pack(env);
                let len = std::fs::metadata(&pack).unwrap().len();
                flip(&pack, len - 64 - 20);
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "damaged_pack",
        ),
        (
            "flipped bit in a footer",
            |env, _| {
                let pack = first_pack(env);
                let len = std::fs::metadata(&pack).unwrap().len();
                flip(&pack, len - 30);
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "damaged_pack",
        ),
        (
            "truncated pack",
            |env, _| {
                let pack = first_pack(env);
                make_writable(&pack);
                let len = std::fs::metadata(&pack).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&pack)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "pack_size",
        ),
        (
            "zero-length pack",
            |env, _| {
                let pack = first_pack(env);
                make_writable(&pack);
                std::fs::write(&pack, b"").unwrap();
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "pack_size",
        ),
        (
            "garbage appended to a pack",
            |env, _| {
                let pack = first_pack(env);
                make_writable(&pack);
                let mut f = std::fs::OpenOptions::new().append(true).open(&pack).unwrap();
                std::io::Write::write_all(&mut f, b"garbage").unwrap();
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "pack_size",
        ),
        (
            "missing pack",
            |env, _| {
                let pack = first_pack(env);
                std::fs::remove_file(&pack).unwrap();
                pack.file_stem().unwrap().to_string_lossy().into_owned()
            },
            "missing_pack",
        ),
        (
            "missing index file",
            |env, _| {
                let index = files_under(&env.repo().join("index")).into_iter().next().unwrap();
                std::fs::remove_file(&index).unwrap();
                String::new()
            },
            "missing_blob",
        ),
        (
            "flipped bit in a tree",
            |env, _| {
                let pack = files_under(&env.repo().join("packs"))
                    .into_iter()
                    .find(|p| blobs_of(p).iter().any(|b| b.kind == 1 && b.stored_len > 100))
                    .unwrap();
                let b = blobs_of(&pack)
                    .into_iter()
                    .find(|b| b.kind == 1 && b.stored_len > 100)
                    .unwrap();
                flip(&pack, b.offset + 48 + b.stored_len / 2);
                String::new()
            },
            "damaged_tree",
        ),
        (
            "flipped bit in a manifest",
            |env, _| {
                let manifest =
                    files_under(&env.repo().join("snapshots")).into_iter().next().unwrap();
                flip(&manifest, 40);
                manifest.file_name().unwrap().to_string_lossy().into_owned()
            },
            "damaged_snapshot",
        ),
    ];
    for (name, damage, expected) in cases {
        let (env, src) = healthy_repo();
        let object = damage(&env, &src);
        let (run, doc) = check(&env, &["--read-data"]);
        assert_eq!(run.code, 1, "{name}: check must report damage: {}", run.stdout);
        let found = kinds(&doc);
        assert!(
            found.iter().any(|k| k == expected),
            "{name}: expected {expected}, found {found:?}"
        );
        let messages = run.stdout;
        assert!(messages.contains(&object), "{name}: findings do not name {object}: {messages}");
        if expected != "damaged_snapshot" {
            assert!(
                found.iter().any(|k| k == "affected_path"),
                "{name}: no affected sets/paths named: {found:?}"
            );
        }
        // The human output says what to do next.
        let human = env.run("check", &["--read-data"]);
        assert!(human.stdout.contains("next: "), "{name}: {}", human.stdout);
        // Restore: never a panic, never wrong bytes; damaged files are named.
        let restored = restore_never_wrong(&env, &src);
        assert!(!restored.stderr.contains("panicked"), "{name}: {}", restored.stderr);
    }
}

#[test]
fn damaged_blob_is_named_on_restore_and_the_rest_is_restored() {
    let (env, src) = healthy_repo();
    let pack = first_pack(&env);
    let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0 && b.stored_len > 60_000).unwrap();
    flip(&pack, b.offset + 48 + 1000);
    let run = restore_never_wrong(&env, &src);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(pack.file_stem().unwrap().to_str().unwrap()),
        "pack not named: {}",
        run.stderr
    );
    assert!(run.stderr.contains("big.bin"), "file not named: {}", run.stderr);
    let out = env.path("restore-out/contentstore");
    assert!(!out.join("2026/11/19/big.bin").exists(), "a damaged file must not be left behind");
    assert_eq!(
        std::fs::read(out.join("2026/11/21/newer.bin")).unwrap(),
        std::fs::read(src.join("2026/11/21/newer.bin")).unwrap()
    );
}

#[test]
fn a_large_file_restored_alone_is_read_in_parallel_windows_and_damage_is_named() {
    // Alone in its batch, big.bin (24 chunks) has its blobs read a window of 16 at a time on the
    // decoder threads: restored whole while intact, refused and named once a blob is damaged.
    let (env, src) = healthy_repo();
    let restore_big = |out: &Path| {
        let include = [OsStr::new("--include"), OsStr::new("big.bin")];
        let target = [OsStr::new("--target"), out.as_os_str()];
        env.run("restore", &[&[OsStr::new("latest")][..], &include, &target].concat())
    };
    let out = env.path("alone");
    restore_big(&out).ok();
    let rel = "contentstore/2026/11/19/big.bin";
    assert!(std::fs::read(out.join(rel)).unwrap() == std::fs::read(src.join(&rel[13..])).unwrap());
    assert_eq!(files_under(&out).len(), 1, "only the included file");

    let pack = first_pack(&env);
    let damaged: Vec<_> = blobs_of(&pack).into_iter().filter(|b| b.kind == 0).collect();
    // A blob past the first window of the file's chunks, so the damage is found in a later one.
    let b = damaged.iter().rev().find(|b| b.stored_len > 60_000).unwrap();
    flip(&pack, b.offset + 48 + 1000);
    let out = env.path("alone-damaged");
    let run = restore_big(&out);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(pack.file_stem().unwrap().to_str().unwrap()), "{}", run.stderr);
    assert!(run.stderr.contains("big.bin"), "file not named: {}", run.stderr);
    assert!(!out.join(rel).exists(), "a damaged file must not be left behind");
    assert!(files_under(&out).is_empty(), "nor its temporary: {:?}", files_under(&out));
}

#[test]
fn small_files_are_read_a_stretch_of_their_pack_at_once_and_damage_or_a_cut_is_named_per_file() {
    // Sixty small files: restored in batches whose blobs lie next to each other in one pack,
    // read a stretch at a time; each blob is still verified on its own.
    let env = Env::new();
    env.init();
    let src = env.path("docs");
    for i in 0..60u64 {
        write(
            &src.join(format!("f{i:02}.bin")),
            &random_bytes(100 + i, 200 + (i as usize * 97) % 2800),
        );
    }
    env.snapshot(&[&src]);
    // A second set with one more file: its trees go to a pack of their own, so the first pack
    // holds only the sixty files' blobs and its tree of the first set.
    write(&src.join("g.bin"), &random_bytes(99, 5000));
    env.snapshot(&[&src]);
    let restore = |name: &str| {
        let out = env.path(name);
        let run =
            env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
        let restored = files_under(&out.join("docs"));
        for f in &restored {
            let rel = f.strip_prefix(out.join("docs")).unwrap();
            assert!(
                std::fs::read(f).unwrap() == std::fs::read(src.join(rel)).unwrap(),
                "{name}: {rel:?} wrong"
            );
        }
        let names: Vec<String> = restored
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        (run, names)
    };
    let (run, names) = restore("intact");
    run.ok();
    assert_same_tree(&src, &env.path("intact/docs"));
    assert_eq!(names.len(), 61);

    // The pack of the files' blobs, and its data blobs in pack order.
    let (pack, data) = files_under(&env.repo().join("packs"))
        .into_iter()
        .map(|p| {
            let data: Vec<Blob> = blobs_of(&p).into_iter().filter(|b| b.kind == 0).collect();
            (p, data)
        })
        .max_by_key(|(_, data)| data.len())
        .unwrap();
    assert_eq!(data.len(), 60, "one pack holds every file's blob");
    let original = std::fs::read(&pack).unwrap();

    // One blob in the middle of a stretch damaged: its file alone is named and left out.
    flip(&pack, data[30].offset + 48 + 5);
    let (run, names) = restore("damaged");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(names.len(), 60, "every other file restored: {}", run.stderr);
    let missing: Vec<String> =
        (0..60).map(|i| format!("f{i:02}.bin")).filter(|n| !names.contains(n)).collect();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(run.stderr.contains(&missing[0]), "{} not named: {}", missing[0], run.stderr);
    assert!(run.stderr.contains(pack.file_stem().unwrap().to_str().unwrap()), "{}", run.stderr);

    // The pack cut in the middle of its data blobs: a stretch cannot be read whole, so its
    // blobs are read one by one; those before the cut are restored, each file after it named.
    std::fs::write(&pack, &original[..(data[40].offset + 48 + 5) as usize]).unwrap();
    let (run, names) = restore("cut");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert_eq!(names.len(), 41, "the files whose blobs are whole, and g.bin: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn damaged_config_is_replaced_by_its_copy_and_repaired() {
    let (env, src) = healthy_repo();
    flip(&env.repo().join("config"), 30);
    let listed = env.run("snapshots", &[] as &[&str]).ok();
    assert!(listed.stderr.contains("config.copy"), "{}", listed.stderr);
    let (run, doc) = check(&env, &[]);
    assert_eq!(run.code, 1, "{doc}");
    assert!(kinds(&doc).contains(&"damaged_config".to_owned()), "{doc}");
    assert!(env.run("check", &[] as &[&str]).stdout.contains("store repair config"));
    env.run("repair", &["config"]).ok();
    let (run, doc) = check(&env, &["--read-data"]);
    assert_eq!(run.code, 0, "{doc}");
    assert_eq!(doc["findings"].as_array().unwrap().len(), 0, "{doc}");
    let run = restore_never_wrong(&env, &src);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // A lost copy is a notice, and the same repair writes it again.
    std::fs::remove_file(env.repo().join("config.copy")).unwrap();
    let (run, doc) = check(&env, &[]);
    assert_eq!(run.code, 0);
    assert!(kinds(&doc).contains(&"config_copy_missing".to_owned()), "{doc}");
    env.run("repair", &["config"]).ok();
    assert!(env.repo().join("config.copy").exists());
}

#[test]
fn repair_index_rebuilds_index_files_and_cache_from_packs() {
    let (env, src) = healthy_repo();
    let index_dir = env.repo().join("index");
    let before = files_under(&index_dir).len();
    std::fs::remove_dir_all(&index_dir).unwrap();
    std::fs::create_dir(&index_dir).unwrap();
    std::fs::remove_dir_all(env.repo().join("cache")).unwrap();
    let (run, _) = check(&env, &[]);
    assert_eq!(run.code, 1, "check must notice the lost index: {}", run.stdout);
    let repaired = env.run("repair", &["index", "--json"]).ok().json();
    assert!(repaired["packs"].as_u64().unwrap() >= 1);
    assert_eq!(repaired["unreadable_packs"].as_array().unwrap().len(), 0);
    assert!(!files_under(&index_dir).is_empty() && before >= 1);
    let (run, _) = check(&env, &["--read-data"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let run = restore_never_wrong(&env, &src);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_same_tree(&src, &env.path("restore-out/contentstore"));
}

/// The crash points on the durable steps of a snapshot, in order (FORMAT.md §12).
pub(crate) const SNAPSHOT_CRASH_POINTS: &[&str] = &[
    "pack_written",
    "pack_verified",
    "pack_synced",
    "pack_renamed",
    "pack_durable",
    "index_synced",
    "index_renamed",
    "index_durable",
    "snapshot_before_manifest",
    "manifest_synced",
    "manifest_renamed",
    "manifest_durable",
    "snapshot_committed",
];

fn crash_points_compiled_in(env: &Env, src: &Path) -> bool {
    let out = Command::new(crate::support::bin())
        .args(["snapshot", "--repo"])
        .arg(env.repo())
        .arg(src)
        .env("STORE_CRASH_AT", "snapshot_before_manifest")
        .output()
        .unwrap();
    out.status.code().is_none()
}

/// Every durable step of a snapshot, crashed with abort(): earlier sets restore, `check` finds
/// no damage (only notices), and the next snapshot succeeds.
#[test]
fn crash_at_every_durable_step_of_a_snapshot_loses_nothing() {
    for &point in SNAPSHOT_CRASH_POINTS {
        let env = Env::new();
        env.init();
        let src = env.path("src");
        write(&src.join("a/one.bin"), &random_bytes(1, 600_000));
        let first = env.snapshot(&[&src]);
        let committed = std::fs::read_dir(env.repo().join("snapshots")).unwrap().count();
        if point == SNAPSHOT_CRASH_POINTS[0] {
            assert!(crash_points_compiled_in(&env, &src), "the binary under test has no crash points: run the tests through `bash .ci/run` (it builds with --features store-cli/crash-points)");
        }
        write(&src.join("b/two.bin"), &random_bytes(2, 900_000));
        let crashed = Command::new(crate::support::bin())
            .args(["snapshot", "--repo"])
            .arg(env.repo())
            .arg(&src)
            .env("STORE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(crashed.status.code(), None, "{point}: the snapshot must crash there");
        let listed = std::fs::read_dir(env.repo().join("snapshots")).unwrap().count();
        assert!(
            listed == committed
                || (listed == committed + 1 && point.starts_with("manifest_")
                    || point == "snapshot_committed"),
            "{point}: {listed} sets"
        );
        let (run, doc) = check(&env, &["--read-data"]);
        assert_eq!(run.code, 0, "{point}: check after the crash: {doc}");
        let out = env.path("out-first");
        env.run(
            "restore",
            &[OsStr::new(first["id"].as_str().unwrap()), OsStr::new("--target"), out.as_os_str()],
        )
        .ok();
        assert!(
            std::fs::read(out.join("src/a/one.bin")).unwrap() == random_bytes(1, 600_000),
            "{point}"
        );
        // Prune removes the debris: afterwards not even a notice is left.
        env.run("prune", &[] as &[&str]).ok();
        let (run, doc) = check(&env, &["--read-data"]);
        assert_eq!(run.code, 0, "{point}: {doc}");
        assert_eq!(
            doc["findings"].as_array().unwrap().len(),
            0,
            "{point}: debris left after prune: {doc}"
        );
        // The next snapshot succeeds and restores byte for byte.
        let next = env.snapshot(&[&src]);
        let out = env.path("out-next");
        env.run(
            "restore",
            &[OsStr::new(next["id"].as_str().unwrap()), OsStr::new("--target"), out.as_os_str()],
        )
        .ok();
        assert_same_tree(&src, &out.join("src"));
    }
}

type FileContents = Vec<(PathBuf, Vec<u8>)>;

/// Snapshots killed with SIGKILL at random moments, 50 times on one repository.
#[test]
fn sigkill_at_random_moments_never_damages_the_repository() {
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64;
    eprintln!("sigkill loop seed: {seed}");
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    // (set id, the source's files and bytes when it was committed)
    let mut committed: Vec<(String, FileContents)> = Vec::new();
    for i in 0..50u64 {
        // Change some content each round.
        write(
            &src.join(format!("f{}.bin", i % 7)),
            &random_bytes(seed ^ i, 200_000 + (next() % 4_000_000) as usize),
        );
        let mut child = Command::new(crate::support::bin())
            .args(["snapshot", "--json", "--repo"])
            .arg(env.repo())
            .arg(&src)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(next() % 120));
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let files = files_under(&src)
                .into_iter()
                .map(|p| {
                    let data = std::fs::read(&p).unwrap();
                    (p, data)
                })
                .collect();
            committed.push((doc["id"].as_str().unwrap().to_owned(), files));
        }
        let run = env.run("check", &[] as &[&str]);
        assert_eq!(run.code, 0, "seed {seed}, round {i}: {}", run.stdout);
    }
    let run = env.run("check", &["--read-data"]);
    assert_eq!(run.code, 0, "seed {seed}: {}", run.stdout);
    // Every committed set restores to what the source held when it was taken.
    let last = env.snapshot(&[&src]);
    committed.push((
        last["id"].as_str().unwrap().to_owned(),
        files_under(&src)
            .into_iter()
            .map(|p| {
                let d = std::fs::read(&p).unwrap();
                (p, d)
            })
            .collect(),
    ));
    for (n, (id, files)) in committed.iter().enumerate() {
        let out = env.path(&format!("out{n}"));
        env.restore(id, &out);
        for (path, data) in files {
            let rel = path.strip_prefix(&src).unwrap();
            assert!(
                std::fs::read(out.join("src").join(rel)).unwrap() == *data,
                "seed {seed}: set {id} {}",
                rel.display()
            );
        }
    }
}

#[test]
fn concurrent_snapshots_restore_and_check_all_succeed() {
    let env = Env::new();
    env.init();
    let a = env.path("a");
    let b = env.path("b");
    write(&a.join("x.bin"), &random_bytes(1, 8 << 20));
    write(&b.join("y.bin"), &random_bytes(2, 8 << 20));
    env.snapshot(&[&a]);
    let spawn = |args: Vec<std::ffi::OsString>| {
        Command::new(crate::support::bin())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let repo = env.repo();
    let r =
        |v: &[&OsStr]| -> Vec<std::ffi::OsString> { v.iter().map(|s| s.to_os_string()).collect() };
    let children = vec![
        spawn(r(&[
            OsStr::new("snapshot"),
            OsStr::new("--json"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            b.as_os_str(),
        ])),
        spawn(r(&[
            OsStr::new("snapshot"),
            OsStr::new("--json"),
            OsStr::new("--host"),
            OsStr::new("other"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            a.as_os_str(),
            b.as_os_str(),
        ])),
        spawn(r(&[
            OsStr::new("restore"),
            OsStr::new("--repo"),
            repo.as_os_str(),
            OsStr::new("latest"),
            OsStr::new("--target"),
            env.path("concurrent-restore").as_os_str(),
        ])),
        spawn(r(&[OsStr::new("check"), OsStr::new("--repo"), repo.as_os_str()])),
    ];
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let sets = env.run("snapshots", &["--json"]).ok().json();
    assert_eq!(sets.as_array().unwrap().len(), 3);
    for set in sets.as_array().unwrap() {
        let out = env.path(&format!("out-{}", set["short_id"].as_str().unwrap()));
        env.run(
            "restore",
            &[OsStr::new(set["id"].as_str().unwrap()), OsStr::new("--target"), out.as_os_str()],
        )
        .ok();
        for c in set["components"].as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            assert_same_tree(&env.path(name), &out.join(name));
        }
    }
    assert_eq!(env.run("check", &["--read-data"]).code, 0);
}

#[test]
fn a_lock_whose_temp_file_a_prune_clears_is_written_again() {
    // Prune clears `tmp/` under the exclusive lock. A process taking its lock at that moment
    // loses the temp file it was about to rename into `locks/`: it must write it again, not fail
    // (a snapshot paused there failed with "locks/<id>: No such file or directory").
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    env.init();
    let repo = crate::support::open_repo(&env.repo());
    let (stop, caught) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let clearer = {
        let (stop, caught, tmp) = (stop.clone(), caught.clone(), env.repo().join("tmp"));
        // Like prune, it removes what it finds, a few times; then the lock must go through.
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && caught.load(Ordering::Relaxed) < 3 {
                for entry in std::fs::read_dir(&tmp).unwrap().flatten() {
                    let lock_temp = entry.file_name().to_string_lossy().starts_with("lock-");
                    if lock_temp && std::fs::remove_file(entry.path()).is_ok() {
                        caught.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    let opts = store::LockOptions { command: "test".into(), ..Default::default() };
    let mut taken = 0;
    while caught.load(Ordering::Relaxed) < 3 && taken < 2000 {
        let lock = repo.lock(store::LockKind::Shared, &opts, &mut |_| {});
        let lock = lock.unwrap_or_else(|e| panic!("lock {taken} failed: {e}"));
        assert!(lock.path().exists());
        drop(lock);
        taken += 1;
    }
    stop.store(true, Ordering::Relaxed);
    clearer.join().unwrap();
    assert!(caught.load(Ordering::Relaxed) >= 1, "no temp file was cleared in {taken} locks");
}

#[test]
fn locks_conflict_clear_when_dead_and_refuse_when_damaged() {
    let (env, src) = healthy_repo();
    let locks = env.repo().join("locks");
    // Lock objects are named by an id (64 hex digits); other names in `locks/` are not locks.
    let name = |n: &str| store::Id::hash(n.as_bytes()).to_hex();
    // A shared lock of a live process (this test) blocks the exclusive `repair index`.
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let repo = crate::support::open_repo(&env.repo());
    // A lock record as FORMAT.md §9 lays it out, sealed as the repository seals its locks.
    let record = |pid: u32, kind: u32| {
        let mut b = b"STORELCK".to_vec();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&kind.to_le_bytes()); // 0 shared, 1 exclusive
        b.extend_from_slice(&(host.len() as u64).to_le_bytes());
        b.extend_from_slice(host.as_bytes());
        b.extend_from_slice(&pid.to_le_bytes());
        b.extend_from_slice(&1_700_000_000_000_000_000i64.to_le_bytes());
        b.extend_from_slice(&8u64.to_le_bytes());
        b.extend_from_slice(b"snapshot");
        repo.crypto().seal_file(store::crypto::FileKind::Lock, 1, b).unwrap()
    };
    write(&locks.join(name("live")), &record(std::process::id(), 0));
    let run = env.run("repair", &["index"]);
    assert_eq!(run.code, 11, "a live lock exits 11 (locked): {}", run.stderr);
    assert!(
        run.stderr.contains("locked")
            && run.stderr.contains(&format!("pid {}", std::process::id())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("store unlock"), "{}", run.stderr);
    // A shared lock does not block another shared one (snapshot).
    env.snapshot(&[&src]);
    // With --lock-wait, repair waits until the lock goes away: it stops itself where it meets
    // the lock and waits (a pause point), and finishes only once the lock is gone.
    let waiter = Command::new(crate::support::bin())
        .args(["repair", "index", "--lock-wait", "60s", "--repo"])
        .arg(env.repo())
        .env("STORE_PAUSE_AT", "lock_waiting")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    crate::support::wait_until_stopped(waiter.id());
    assert!(locks.join(name("live")).exists(), "the lock it waits for is still there");
    std::fs::remove_file(locks.join(name("live"))).unwrap();
    let pid = rustix::process::Pid::from_child(&waiter);
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An exclusive lock of a dead process on this host is removed with a message.
    write(&locks.join(name("dead")), &record(4_000_000, 1));
    let run = env.run("snapshot", &[src.as_os_str()]).ok();
    assert!(run.stderr.contains("no longer runs"), "{}", run.stderr);
    assert!(!locks.join(name("dead")).exists());
    // A damaged lock file is refused with the way out, and `unlock` removes it.
    write(&locks.join(name("junk")), b"not a lock");
    let run = env.run("snapshot", &[src.as_os_str()]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&name("junk")) && run.stderr.contains("store unlock"),
        "{}",
        run.stderr
    );
    env.run("unlock", &[] as &[&str]).ok();
    assert_eq!(std::fs::read_dir(&locks).unwrap().count(), 0);
    env.run("snapshot", &[src.as_os_str()]).ok();
}

/// A snapshot into a repository on a small tmpfs fails cleanly; after space is freed, the
/// repository checks clean and accepts the snapshot.
#[test]
fn full_disk_fails_cleanly_and_recovers() {
    let env = Env::new();
    let mnt = env.path("small");
    let _tmpfs = crate::support::Tmpfs::mount(&mnt, "24m");
    let repo = mnt.join("repo");
    crate::support::store([OsStr::new("init"), OsStr::new("--repo"), repo.as_os_str()]).ok();
    // Other data on the same disk, which the operator deletes to make room.
    write(&mnt.join("filler"), &vec![0u8; 10 << 20]);
    let src = env.path("src");
    write(&src.join("small.bin"), &random_bytes(1, 1 << 20));
    let cmd = |args: &[&OsStr]| {
        let mut all = vec![OsStr::new("--repo"), repo.as_os_str()];
        all.extend_from_slice(args);
        crate::support::store(all)
    };
    cmd(&[OsStr::new("snapshot"), src.as_os_str()]).ok();
    write(&src.join("big.bin"), &random_bytes(2, 40 << 20));
    let run = cmd(&[OsStr::new("snapshot"), src.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("No space left on device"), "{}", run.stderr);
    assert!(
        run.stderr.contains(repo.to_str().unwrap()),
        "the path at fault is named: {}",
        run.stderr
    );
    let sets = cmd(&[OsStr::new("snapshots"), OsStr::new("--json")]).ok().json();
    assert_eq!(sets.as_array().unwrap().len(), 1, "nothing committed");
    let run = cmd(&[OsStr::new("check"), OsStr::new("--read-data")]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    std::fs::remove_file(src.join("big.bin")).unwrap();
    std::fs::remove_file(mnt.join("filler")).unwrap();
    write(&src.join("medium.bin"), &random_bytes(3, 4 << 20));
    cmd(&[OsStr::new("snapshot"), src.as_os_str()]).ok();
    let out = env.path("out");
    cmd(&[OsStr::new("restore"), OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()])
        .ok();
    assert_same_tree(&src, &out.join("src"));
}

/// The documented repair (`repair index`, then `repair snapshots --read-data --forget`) brings
/// `check` back to clean and reports exactly what was lost.
#[test]
fn documented_repairs_bring_check_back_to_clean_and_report_losses() {
    type Damage = fn(&Env) -> bool; // returns whether data (not only index) is lost
    let cases: Vec<(&str, Damage)> = vec![
        ("missing pack", |env| {
            std::fs::remove_file(first_pack(env)).unwrap();
            true
        }),
        ("flipped data blob", |env| {
            let pack = first_pack(env);
            let b = blobs_of(&pack).into_iter().find(|b| b.kind == 0).unwrap();
            flip(&pack, b.offset + 48 + b.stored_len / 2);
            true
        }),
        ("missing index file", |env| {
            for index in files_under(&env.repo().join("index")) {
                std::fs::remove_file(index).unwrap();
            }
            false
        }),
        ("flipped trailer", |env| {
            let pack = first_pack(env);
            let len = std::fs::metadata(&pack).unwrap().len();
            flip(&pack, len - 64 - 20);
            true
        }),
        ("truncated pack", |env| {
            let pack = first_pack(env);
            make_writable(&pack);
            let len = std::fs::metadata(&pack).unwrap().len();
            std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 2).unwrap();
            true
        }),
        ("flipped tree", |env| {
            let pack = files_under(&env.repo().join("packs"))
                .into_iter()
                .find(|p| blobs_of(p).iter().any(|b| b.kind == 1 && b.stored_len > 100))
                .unwrap();
            let b =
                blobs_of(&pack).into_iter().find(|b| b.kind == 1 && b.stored_len > 100).unwrap();
            flip(&pack, b.offset + 48 + b.stored_len / 2);
            true
        }),
        ("flipped manifest", |env| {
            let manifest = files_under(&env.repo().join("snapshots")).into_iter().next().unwrap();
            flip(&manifest, 40);
            true
        }),
    ];
    for (name, damage) in cases {
        let (env, src) = healthy_repo();
        let latest =
            env.run("snapshots", &["--json"]).ok().json()[0]["id"].as_str().unwrap().to_owned();
        let data_lost = damage(&env);
        assert_eq!(env.run("check", &["--read-data"]).code, 1, "{name}");
        env.run("repair", &["index"]).ok();
        let report =
            env.run("repair", &["snapshots", "--read-data", "--forget", "--json"]).ok().json();
        let repaired = report["repaired"].as_array().unwrap();
        let lost_in = |set: &serde_json::Value| -> Vec<String> {
            set["lost"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["path"].as_str().unwrap().to_owned())
                .collect()
        };
        let all_lost: Vec<String> = repaired.iter().flat_map(lost_in).collect();
        assert_eq!(!all_lost.is_empty(), data_lost, "{name}: lost {all_lost:?}");
        let (run, doc) = check(&env, &["--read-data"]);
        assert_eq!(run.code, 0, "{name}: check after repair: {doc}");
        // The latest set restores, and what was reported lost from it is exactly what is missing.
        let lost: Vec<String> =
            repaired.iter().filter(|r| r["old"] == latest.as_str()).flat_map(lost_in).collect();
        let run = restore_never_wrong(&env, &src);
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        let out = env.path("restore-out");
        // (A lost manifest takes its whole set: the latest restorable set is an older one.)
        for f in files_under(&src).into_iter().filter(|_| name != "flipped manifest") {
            let rel = Path::new("contentstore").join(f.strip_prefix(&src).unwrap());
            let reported = lost.iter().any(|l| rel.starts_with(l));
            assert_eq!(
                !out.join(&rel).exists(),
                reported,
                "{name}: {} missing without being reported ({lost:?})",
                rel.display()
            );
        }
        let sets = env.run("snapshots", &["--json"]).ok().json();
        let expected = if name == "flipped manifest" { 2 } else { 3 };
        assert_eq!(
            sets.as_array().unwrap().len(),
            expected,
            "{name}: damaged sets replaced, not added"
        );
    }
}

/// Crashes in the middle of both repairs: rerunning the repair finishes the job.
#[test]
fn crashed_repairs_finish_when_run_again() {
    let (env, src) = healthy_repo();
    assert!(
        crash_points_compiled_in(&env, &src),
        "the binary under test has no crash points: run the tests through `bash .ci/run`"
    );
    std::fs::remove_file(first_pack(&env)).unwrap();
    let crash = |args: &[&str], point: &str| {
        let out = Command::new(crate::support::bin())
            .args(args)
            .arg("--repo")
            .arg(env.repo())
            .env("STORE_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "{point}: must crash there");
    };
    crash(&["repair", "index"], "repair_index_new_files");
    // Old and new index files side by side: the sets still read as before.
    assert_eq!(env.run("check", &[] as &[&str]).code, 1, "the lost pack is still lost");
    env.run("repair", &["index"]).ok();
    crash(&["repair", "snapshots", "--forget"], "repair_snapshots_new_set");
    env.run("repair", &["snapshots", "--forget"]).ok();
    let (run, doc) = check(&env, &["--read-data"]);
    assert_eq!(run.code, 0, "{doc}");
    let run = restore_never_wrong(&env, &src);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

// See: issue 13 ("cache errors by substring"): a damaged cache is rebuilt from the index files,
// with a message, and the command does its work.
#[test]
fn a_damaged_cache_is_rebuilt_with_a_message() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    write(&src.join("a.bin"), &random_bytes(31, 400_000));
    env.snapshot(&[&src]);
    std::fs::write(env.repo().join("cache/CURRENT"), b"\x00garbage").unwrap();
    let out = env.path("out");
    let run = env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), out.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("was damaged") && run.stderr.contains("rebuilt"), "{}", run.stderr);
    assert_same_tree(&src, &out.join("data"));
    let again = env.run("check", &[] as &[&str]);
    assert_eq!(again.code, 0);
    assert!(!again.stderr.contains("was damaged"), "rebuilt once: {}", again.stderr);
}
