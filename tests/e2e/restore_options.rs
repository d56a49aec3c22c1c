//! Restore options and `cat`: one component, a dry run, one file to standard output.

use std::ffi::OsStr;

use crate::support::{assert_same_tree, random_bytes, write, Env, Run};

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

fn restore_args<'a>(target: &'a std::path::Path, extra: &[&'a str]) -> Vec<&'a OsStr> {
    let mut args = vec![OsStr::new("latest"), OsStr::new("--target"), target.as_os_str()];
    args.extend(extra.iter().map(|s| OsStr::new(*s)));
    args
}

/// Relative paths of every entry below `root`, sorted.
fn listing(root: &std::path::Path) -> Vec<String> {
    crate::support::snapshot_tree(root)
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[test]
fn partial_restore_by_glob_restores_exactly_the_selected_paths() {
    let env = Env::new();
    env.init();
    let content = env.path("contentstore");
    write(&content.join("2026/11/21/a.bin"), b"a");
    write(&content.join("2026/11/22/b.bin"), b"b");
    write(&content.join("2026/11/22/c.pdf"), b"c");
    write(&content.join("2026/10/01/d.pdf"), b"d");
    write(&content.join("2026/10/01/e.bin"), b"e");
    write(&content.join("2026/10/01/tmp/f.pdf"), b"f");
    env.snapshot(&[&content]);
    let out = env.path("out");
    let selection =
        ["--include", "contentstore/2026/11/22", "--include", "*.pdf", "--exclude", "tmp"];
    env.run("restore", &restore_args(&out, &selection)).ok();
    let expected = [
        "contentstore",
        "contentstore/2026",
        "contentstore/2026/10",
        "contentstore/2026/10/01",
        "contentstore/2026/10/01/d.pdf",
        "contentstore/2026/11",
        "contentstore/2026/11/22",
        "contentstore/2026/11/22/b.bin",
        "contentstore/2026/11/22/c.pdf",
    ];
    assert_eq!(listing(&out), expected, "no other path, no empty directory");
    assert_eq!(std::fs::read(out.join("contentstore/2026/10/01/d.pdf")).unwrap(), b"d");
    // Directories on the way keep their recorded metadata.
    let (src, dst) = (
        std::fs::metadata(content.join("2026/10")).unwrap(),
        std::fs::metadata(out.join("contentstore/2026/10")).unwrap(),
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!((src.mode(), src.mtime()), (dst.mode(), dst.mtime()));
    // The dry run selects the same paths.
    let mut dry = selection.to_vec();
    dry.extend(["--dry-run", "--json"]);
    let run = env.run("restore", &restore_args(&env.path("unused"), &dry)).ok();
    let planned: Vec<String> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .map(|p| p.trim_matches('"').to_owned())
        .collect();
    assert_eq!(planned, expected);
    let bad = env.run("restore", &restore_args(&env.path("bad"), &["--include", "a[b"]));
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("include pattern") && bad.stderr.contains("a[b"), "{}", bad.stderr);
    assert!(!env.path("bad").exists());
}

/// `store restore`, under temporary names when `named`, unnamed files otherwise.
fn restore_command(env: &Env, named: bool) -> std::process::Command {
    let mut cmd = std::process::Command::new(crate::support::bin());
    cmd.args(["restore", "--repo"]).arg(env.repo());
    cmd.env("STORE_RESTORE_NAMED_TEMPORARIES", if named { "1" } else { "0" });
    cmd
}

fn crash_restore(
    env: &Env,
    target: &std::path::Path,
    nth: u32,
    named: bool,
) -> std::process::Output {
    restore_command(env, named)
        .args(["latest", "--threads", "1", "--target"])
        .arg(target)
        .env("STORE_CRASH_AT", format!("restore_chunk@{nth}"))
        .output()
        .unwrap()
}

fn store_with(env: &Env, named: bool, args: &[&OsStr]) -> Run {
    Run::from(restore_command(env, named).args(args).output().unwrap())
}

// Written under temporary names (where unnamed files are not available): a partial file of the
// batch killed stays under its temporary name, and the next restore replaces it.
#[test]
fn interrupted_restore_completes_with_overwrite_if_changed() {
    interrupted_restore_completes(true);
}

// Written unnamed (`O_TMPFILE`, the default where the target allows it): the batch killed
// leaves nothing at all.
#[test]
fn interrupted_restore_of_unnamed_files_leaves_nothing_partial_and_completes() {
    interrupted_restore_completes(false);
}

fn interrupted_restore_completes(named: bool) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    // 300 files of one chunk each (smaller than the minimum chunk), so chunk N is file N: files
    // are restored in batches of 64, each batch finished (renamed) before the next starts.
    for i in 0..300u64 {
        let dir = if i < 150 { "a" } else { "b" };
        write(&src.join(format!("{dir}/f{i:03}.bin")), &random_bytes(i, 1000 + 97 * i as usize));
    }
    write(&src.join("zeros.img"), &vec![0u8; 3_000_000]);
    std::os::unix::fs::symlink("a/f000.bin", src.join("link")).unwrap();
    env.snapshot(&[&src]);
    let out = env.path("out");
    // Killed in the middle of the fourth batch: the first three batches' files are complete,
    // the fourth's are partial, under their temporary names.
    let crashed = crash_restore(&env, &out, 200, named);
    assert!(
        !crashed.status.success(),
        "the binary under test has no crash points: run the tests through `bash .ci/run` (it \
         builds with --features store-cli/crash-points)"
    );
    let temps = listing(&out).into_iter().filter(|p| p.contains(".store-restore-")).count();
    let complete = listing(&out)
        .iter()
        .filter(|p| p.ends_with(".bin") && !p.contains(".store-restore-"))
        .count();
    assert_eq!(complete, 192, "the first three batches are complete");
    if named {
        assert!(temps > 0, "the fourth batch is partial, under temporary names");
    } else {
        assert_eq!(temps, 0, "unnamed files of the fourth batch vanish with the process");
    }
    let link_done = std::fs::symlink_metadata(out.join("src/link")).is_ok();
    // A plain re-run refuses the non-empty target and says how to go on.
    let refused = env.run("restore", &restore_args(&out, &[]));
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("--overwrite"), "{}", refused.stderr);
    let resumed =
        store_with(&env, named, &restore_args(&out, &["--overwrite", "if-changed", "--json"])).ok();
    let report = resumed.json();
    let kept = complete as u64 + u64::from(link_done);
    assert_eq!(report["unchanged"].as_u64(), Some(kept), "complete entries are kept: {report}");
    assert_same_tree(&src, &out.join("src"));
    // Nothing left over.
    assert!(listing(&out).iter().all(|p| !p.contains(".store-restore-")));
    // The zero file is a hole.
    use std::os::unix::fs::MetadataExt;
    let zeros = std::fs::metadata(out.join("src/zeros.img")).unwrap();
    assert!(zeros.blocks() * 512 < 100_000, "{} bytes allocated", zeros.blocks() * 512);
}

#[test]
fn overwrite_modes_and_verify() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("a.txt"), b"original a");
    write(&src.join("b.txt"), b"original b");
    write(&src.join("c/d.txt"), b"original d");
    env.snapshot(&[&src]);
    let out = env.path("out");
    env.restore("latest", &out);
    // Local edits: one file changed (same size), one removed.
    write(&out.join("src/a.txt"), b"EDITED   a");
    std::fs::remove_file(out.join("src/c/d.txt")).unwrap();
    let never =
        env.run("restore", &restore_args(&out, &["--overwrite", "never", "--json"])).ok().json();
    assert_eq!(std::fs::read(out.join("src/a.txt")).unwrap(), b"EDITED   a");
    assert_eq!(std::fs::read(out.join("src/c/d.txt")).unwrap(), b"original d");
    assert_eq!(never["files"], 1, "{never}");
    write(&out.join("src/c/d.txt"), b"changed");
    let changed = env
        .run("restore", &restore_args(&out, &["--overwrite", "if-changed", "--verify", "--json"]))
        .ok()
        .json();
    assert_eq!((changed["files"].as_u64(), changed["unchanged"].as_u64()), (Some(2), Some(1)));
    assert_eq!(changed["verified"], 2);
    assert_same_tree(&src, &out.join("src"));
    let always =
        env.run("restore", &restore_args(&out, &["--overwrite", "always", "--json"])).ok().json();
    assert_eq!(always["files"], 3);
    assert_same_tree(&src, &out.join("src"));
}

#[test]
fn symlinks_already_in_the_target_are_never_followed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("docs/a.txt"), b"document");
    write(&src.join("file.txt"), b"file");
    env.snapshot(&[&src]);
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    write(&outside.join("keep.txt"), b"outside the target");
    let out = env.path("out");
    std::fs::create_dir_all(out.join("src")).unwrap();
    // A directory of the set and a file of the set, both planted as symlinks to the outside.
    std::os::unix::fs::symlink(&outside, out.join("src/docs")).unwrap();
    std::os::unix::fs::symlink(outside.join("keep.txt"), out.join("src/file.txt")).unwrap();
    // Kept as they are (`never`): the directory cannot be entered, and is named.
    let run = env.run("restore", &restore_args(&out, &["--overwrite", "never"]));
    assert_eq!(run.code, 1, "the directory that is a symlink cannot be restored");
    assert!(
        run.stderr.contains("src/docs") && run.stderr.contains("never followed"),
        "{}",
        run.stderr
    );
    assert!(!outside.join("a.txt").exists(), "nothing written through the symlink");
    // Replaced (`always`): each symlink is removed, not followed, and the set's entry made.
    env.run("restore", &restore_args(&out, &["--overwrite", "always"])).ok();
    assert_eq!(std::fs::read(outside.join("keep.txt")).unwrap(), b"outside the target");
    assert!(!outside.join("a.txt").exists(), "nothing written through the symlink");
    assert!(std::fs::symlink_metadata(out.join("src/docs")).unwrap().is_dir());
    assert_eq!(std::fs::read(out.join("src/docs/a.txt")).unwrap(), b"document");
    // The file that was a symlink is now the restored file itself.
    let file = out.join("src/file.txt");
    assert!(!std::fs::symlink_metadata(&file).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(&file).unwrap(), b"file");
}

/// `(thread, pack path, offset, length)` of every completed `pread64` of a pack in an
/// `strace -f -y -qq -e trace=pread64,pwrite64` log, and the threads that wrote files.
type PackRead = (String, String, u64, u64);
fn pack_reads(log: &str) -> (Vec<PackRead>, std::collections::HashSet<String>) {
    let (mut reads, mut writers) = (Vec::new(), std::collections::HashSet::new());
    for (pid, call) in crate::support::strace_calls(log) {
        if call.starts_with("pwrite64(") {
            writers.insert(pid);
        } else if let Some(args) = call.strip_prefix("pread64(") {
            let Some((args, _)) = args.rsplit_once(") =") else { continue };
            let path = args.split_once('<').and_then(|(_, p)| p.split_once('>')).map(|(p, _)| p);
            let mut last = args.rsplit(", ").map(|a| a.trim().parse::<u64>().ok());
            let (offset, len) = (last.next().flatten(), last.next().flatten());
            if let (Some(path), Some(offset), Some(len)) = (path, offset, len) {
                if path.contains("/packs/") {
                    reads.push((pid.clone(), path.to_owned(), offset, len));
                }
            }
        }
    }
    (reads, writers)
}

#[test]
fn restore_reads_each_blob_once_in_pack_order() {
    let env = Env::new();
    env.init();
    // Thirty documents, packed in this order by the first set.
    let first = env.path("first");
    let docs: Vec<Vec<u8>> = (0..30u64).map(|i| random_bytes(500 + i, 9000)).collect();
    for (i, d) in docs.iter().enumerate() {
        write(&first.join(format!("f{i:02}")), d);
    }
    env.snapshot(&[&first]);
    // A second set holding the same documents twice, named in the reverse order: its 60 files
    // (one batch) visit the packed blobs backwards, and each blob twice.
    let second = env.path("second");
    for (i, d) in docs.iter().rev().enumerate() {
        write(&second.join(format!("a{i:02}")), d);
        write(&second.join(format!("b{i:02}")), d);
    }
    env.snapshot(&[&second]);
    let out = env.path("out");
    let log = env.path("strace.log");
    let status = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=pread64,pwrite64", "-o"])
        .arg(&log)
        .arg(crate::support::bin())
        .args(["restore", "--repo"])
        .arg(env.repo())
        .args(["latest", "--threads", "1", "--target"])
        .arg(&out)
        .status()
        .expect("strace (.ci/setup installs it)");
    assert!(status.success());
    assert_same_tree(&second, &out.join("second"));
    let (reads, writers) = pack_reads(&std::fs::read_to_string(&log).unwrap());
    let data: Vec<&PackRead> = reads.iter().filter(|(pid, ..)| writers.contains(pid)).collect();
    let ranges: Vec<(u64, u64)> = data.iter().map(|(_, _, o, n)| (*o, *n)).collect();
    // The packed blobs lie next to each other: read in stretches of several (not one read
    // each), every blob in exactly one read.
    for pack in crate::integrity::files_under(&env.repo().join("packs")) {
        let name = pack.to_string_lossy().into_owned();
        for b in crate::integrity::blobs_of(&pack).into_iter().filter(|b| b.kind == 0) {
            let (from, to) = (b.offset, b.offset + 48 + b.stored_len);
            let holding =
                data.iter().filter(|(_, p, o, n)| *p == name && *o <= from && to <= o + n);
            assert_eq!(holding.count(), 1, "the blob at {from} of {name} read once: {ranges:?}");
        }
    }
    assert!(data.len() < 30, "stretches of blobs, not one read each: {ranges:?}");
    for w in data.windows(2) {
        if w[0].1 == w[1].1 {
            assert!(w[0].2 + w[0].3 <= w[1].2, "reads of a pack in offset order: {ranges:?}");
        }
    }
    let packs: Vec<&String> = data.iter().map(|(_, p, ..)| p).collect();
    let mut sorted = packs.clone();
    sorted.dedup();
    let mut unique = sorted.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(sorted.len(), unique.len(), "each pack visited once");
}

#[test]
fn restore_keeps_few_descriptors_open_when_every_file_has_its_own_directory() {
    let env = Env::new();
    env.init();
    // Alfresco's minute directories often hold a single document.
    let src = env.path("src");
    for i in 0..1500u64 {
        write(&src.join(format!("m{i:04}/doc.bin")), &random_bytes(i, 200));
    }
    env.snapshot(&[&src]);
    let out = env.path("out");
    let cmd = format!(
        "ulimit -n 512 && exec {} restore --repo {} latest --target {}",
        crate::support::bin().display(),
        env.repo().display(),
        out.display()
    );
    let run = std::process::Command::new("sh").args(["-c", &cmd]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_same_tree(&src, &out.join("src"));
}

// See: issue 17 ("restore into a full file system goes on and prints one ENOSPC line per file:
// stop at the first ENOSPC, say how much was restored").
#[test]
fn a_restore_into_a_full_file_system_stops_at_the_first_enospc_and_says_how_far_it_got() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    for i in 0..400u64 {
        write(&src.join(format!("d{}/f{i}.bin", i % 10)), &random_bytes(i, 60_000));
    }
    env.snapshot(&[&src]);
    let mnt = env.path("small");
    let _tmpfs = crate::support::Tmpfs::mount(&mnt, "8m");
    let target = mnt.join("out");
    let run =
        env.run("restore", &[OsStr::new("latest"), OsStr::new("--target"), target.as_os_str()]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("ran out of space"), "{}", run.stderr);
    assert!(
        run.stderr.contains("files (") && run.stderr.contains("were restored"),
        "{}",
        run.stderr
    );
    let lines = run.stderr.lines().count();
    assert!(lines < 10, "one line per file no more: {lines} lines\n{}", run.stderr);
    assert_eq!(env.run("check", &["--read-data"]).code, 0, "the repository is untouched");
}

// See: issue 17 ("`restore --overwrite always` fails where an entry changed type (file where a
// directory should be, and the reverse): replace a plain file or an empty directory, never
// follow anything").
#[test]
fn overwrite_replaces_entries_that_changed_type_and_never_follows_a_symlink() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("was_dir"), b"a file now");
    write(&src.join("was_file/inner.txt"), b"a directory now");
    write(&src.join("was_link/x"), b"under a directory");
    write(&src.join("full_dir"), b"a file where a full directory stands");
    env.snapshot(&[&src]);
    let out = env.path("out");
    let root = out.join("src");
    std::fs::create_dir_all(root.join("was_dir")).unwrap(); // empty directory: replaced
    write(&root.join("was_file"), b"old file"); // file: replaced by the directory
    let victim = env.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, root.join("was_link")).unwrap(); // never followed
    write(&root.join("full_dir/keep.txt"), b"kept"); // a directory with content: kept, named
    let run = env.run("restore", &restore_args(&out, &["--overwrite", "always"]));
    assert_eq!(run.code, 1, "the full directory is named: {}", run.stderr);
    assert!(run.stderr.contains("full_dir") && run.stderr.contains("not empty"), "{}", run.stderr);
    assert_eq!(std::fs::read(root.join("was_dir")).unwrap(), b"a file now");
    assert_eq!(std::fs::read(root.join("was_file/inner.txt")).unwrap(), b"a directory now");
    assert!(!std::fs::symlink_metadata(root.join("was_link")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(root.join("was_link/x")).unwrap(), b"under a directory");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0, "nothing written through the link");
    assert_eq!(std::fs::read(root.join("full_dir/keep.txt")).unwrap(), b"kept");
}

// See: issue 17 ("a `restore` whose includes restored nothing exits 1 (today: \"0 files\", exit 0)").
#[test]
fn includes_that_match_nothing_are_named_and_restoring_nothing_fails() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    write(&src.join("docs/a.pdf"), b"pdf");
    write(&src.join("docs/b.txt"), b"txt");
    env.snapshot(&[&src]);
    let out = env.path("out");
    let run = env.run("restore", &restore_args(&out, &["--include", "src/docs/*.docx"]));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing was restored") && run.stderr.contains("src/docs/*.docx"),
        "{}",
        run.stderr
    );
    // One include that matches and one that does not: the restore is done, the other named.
    let run = env
        .run(
            "restore",
            &restore_args(&out, &["--include", "src/docs/*.pdf", "--include", "src/nope"]),
        )
        .ok();
    assert!(run.stderr.contains("--include") && run.stderr.contains("src/nope"), "{}", run.stderr);
    assert!(run.stderr.contains("matched nothing"), "{}", run.stderr);
    assert!(!run.stderr.contains("*.pdf"), "{}", run.stderr);
    assert_eq!(std::fs::read(out.join("src/docs/a.pdf")).unwrap(), b"pdf");
    assert!(!out.join("src/docs/b.txt").exists());
}

// Files end where the set says whatever their last block holds: a whole last block of zeros is
// left as a hole and the length set; every other last block is written (the length follows).
#[test]
fn files_ending_in_zero_blocks_or_not_restore_with_their_length_unnamed_or_named() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let mut zero_tail = random_bytes(1, 4096);
    zero_tail.extend_from_slice(&[0u8; 8192]);
    let mut byte_after_zeros = vec![0u8; 4096];
    byte_after_zeros.push(7);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one-zero-block", vec![0u8; 4096]),
        ("zero-tail", zero_tail),
        ("byte-after-zeros", byte_after_zeros),
        ("partial-zero-block", vec![0u8; 5000]),
        ("plain", random_bytes(2, 4096 * 3)),
    ];
    for (name, data) in &cases {
        write(&src.join(name), data);
    }
    env.snapshot(&[&src]);
    for named in [false, true] {
        let out = env.path(if named { "out-named" } else { "out-unnamed" });
        store_with(&env, named, &restore_args(&out, &[])).ok();
        for (name, data) in &cases {
            let restored = std::fs::read(out.join("src").join(name)).unwrap();
            assert!(restored == *data, "{name} (named temporaries: {named})");
        }
        assert_same_tree(&src, &out.join("src"));
    }
}
