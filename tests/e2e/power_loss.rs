//! Simulated power loss. A snapshot runs under `strace`, which records every `fsync`, `mkdir` and
//! `rename` it makes. From that trace the test (1) checks the ordering the format relies on:
//! every file renamed into the repository was fsynced before the rename, the directory it was
//! renamed into is fsynced after it (before the next rename), and every directory created is
//! fsynced into its parent before anything is renamed into it; and (2) rebuilds the repository
//! as a power cut after each traced step would leave it (repository files are immutable, so the
//! image is the final repository minus what was not yet durable at that step) and checks each
//! image: `check --read-data` finds no damage, and every set it lists restores byte for byte.
//! `.ci/setup` installs strace; the test fails, not skips, without it.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{assert_same_tree, random_bytes, write, Env};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Sync(PathBuf),
    Mkdir(PathBuf),
    Rename { from: PathBuf, to: PathBuf },
}

/// The first double-quoted string after `start`, and where it ends.
fn quoted(s: &str, start: usize) -> Option<(String, usize)> {
    let open = s[start..].find('"')? + start + 1;
    let close = s[open..].find('"')? + open;
    Some((s[open..close].to_owned(), close + 1))
}

/// Parses `strace -f -y -qq` output: completed calls only (unfinished/resumed pairs joined).
fn parse_trace(text: &str, cwd: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    let abs = |p: &str| if p.starts_with('/') { PathBuf::from(p) } else { cwd.join(p) };
    for (_, call) in crate::support::strace_calls(text) {
        if !call.trim_end().ends_with("= 0") {
            continue;
        }
        if call.starts_with("fsync(") || call.starts_with("fdatasync(") {
            if let (Some(a), Some(b)) = (call.find('<'), call.find(">)")) {
                events.push(Event::Sync(PathBuf::from(&call[a + 1..b])));
            }
        } else if call.starts_with("mkdir(") {
            if let Some((p, _)) = quoted(&call, 0) {
                events.push(Event::Mkdir(abs(&p)));
            }
        } else if call.starts_with("rename") {
            if let Some((from, end)) = quoted(&call, 0) {
                if let Some((to, _)) = quoted(&call, end) {
                    events.push(Event::Rename { from: abs(&from), to: abs(&to) });
                }
            }
        }
    }
    events
}

fn copy_tree(from: &Path, to: &Path, skip: &HashSet<PathBuf>) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let path = e.path();
        if skip.contains(&path) || e.file_name() == "cache" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_tree(&path, &to.join(e.file_name()), skip);
        } else {
            std::fs::copy(&path, to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn power_loss_after_any_step_leaves_a_consistent_repository() {
    let strace = Command::new("strace").arg("-V").output();
    assert!(strace.is_ok_and(|o| o.status.success()), "strace is missing: run `bash .ci/setup`");
    let env = Env::new();
    env.init();
    let repo = std::fs::canonicalize(env.repo()).unwrap();
    let src = env.path("src");
    write(&src.join("a.bin"), &random_bytes(1, 3 << 20));
    let first = env.snapshot(&[&src]);
    // The second set adds enough data for several packs.
    for i in 0..6u64 {
        write(&src.join(format!("new/{i}.bin")), &random_bytes(10 + i, 7 << 20));
    }
    let traced_snapshot = |attempt: u32| {
        let trace = env.path(&format!("trace-{attempt}.txt"));
        let out = Command::new("strace")
            .args([
                "-f",
                "-y",
                "-qq",
                "-e",
                "trace=fsync,fdatasync,mkdir,mkdirat,rename,renameat,renameat2",
                "-o",
            ])
            .arg(&trace)
            .arg(crate::support::bin())
            .args(["snapshot", "--json", "--repo"])
            .arg(&repo)
            .arg(&src)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let text = std::fs::read_to_string(&trace).unwrap_or_default();
        let events = parse_trace(&text, &std::env::current_dir().unwrap());
        (doc, events, text, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (second, events, text, stderr) = traced_snapshot(0);
    assert!(!events.is_empty(), "nothing parsed from the trace:\n{text}\nstrace stderr: {stderr}");
    assert!(second["packs"].as_u64().unwrap() >= 2, "{second}");
    let ours = |p: &Path| p.starts_with(&repo) && !p.starts_with(repo.join("cache"));

    // (1) Ordering.
    let mut renames = 0;
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Rename { from, to } if ours(to) => {
                renames += 1;
                let synced = events[..i].iter().any(|x| *x == Event::Sync(from.clone()));
                assert!(
                    synced,
                    "{} renamed to {} without an fsync first",
                    from.display(),
                    to.display()
                );
                let dir = to.parent().unwrap().to_path_buf();
                let next_rename = events[i + 1..]
                    .iter()
                    .position(|x| matches!(x, Event::Rename { to, .. } if ours(to)))
                    .map_or(events.len(), |n| i + 1 + n);
                let dir_synced =
                    events[i + 1..next_rename].iter().any(|x| *x == Event::Sync(dir.clone()));
                assert!(
                    dir_synced,
                    "rename into {} is not followed by an fsync of that directory",
                    dir.display()
                );
                for (j, m) in events[..i].iter().enumerate() {
                    if let Event::Mkdir(created) = m {
                        if to.starts_with(created) {
                            let parent = created.parent().unwrap().to_path_buf();
                            assert!(
                                events[j + 1..i].iter().any(|x| *x == Event::Sync(parent.clone())),
                                "{} created but its parent not fsynced before use",
                                created.display()
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    assert!(renames >= 4, "expected packs, an index file, a manifest and a lock: {events:?}");

    // (2) A power cut after each step: what was not durable yet is gone.
    let created: Vec<(usize, PathBuf)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match e {
            Event::Rename { to, .. } if ours(to) => Some((i, to.clone())),
            _ => None,
        })
        .collect();
    let durable_at = |i: usize, path: &Path| -> usize {
        let dir = path.parent().unwrap().to_path_buf();
        events[i..]
            .iter()
            .position(|x| *x == Event::Sync(dir.clone()))
            .map_or(usize::MAX, |n| i + n)
    };
    let b_id = second["id"].as_str().unwrap().to_owned();
    for cut in 0..=events.len() {
        let lost: HashSet<PathBuf> = created
            .iter()
            .filter(|(i, p)| durable_at(*i, p) >= cut)
            .map(|(_, p)| p.clone())
            .collect();
        let image = env.path(&format!("image-{cut}"));
        copy_tree(&repo, &image, &lost);
        let run = crate::support::store([
            OsStr::new("check"),
            OsStr::new("--read-data"),
            OsStr::new("--repo"),
            image.as_os_str(),
        ]);
        assert_eq!(run.code, 0, "power cut after step {cut}: {}\n{}", run.stdout, run.stderr);
        let out = env.path(&format!("restore-{cut}"));
        let restore = |id: &str, dest: &Path| {
            crate::support::store([
                OsStr::new("restore"),
                OsStr::new("--repo"),
                image.as_os_str(),
                OsStr::new(id),
                OsStr::new("--target"),
                dest.as_os_str(),
            ])
            .ok();
        };
        restore(first["id"].as_str().unwrap(), &out.join("a"));
        assert!(std::fs::read(out.join("a/src/a.bin")).unwrap() == random_bytes(1, 3 << 20));
        if image.join("snapshots").join(&b_id).exists() {
            restore(&b_id, &out.join("b"));
            assert_same_tree(&src, &out.join("b/src"));
        }
        let _ = std::fs::remove_dir_all(&image);
        let _ = std::fs::remove_dir_all(&out);
    }
}

/// The trace parser handles strace's padded short pids and split (unfinished/resumed) calls.
#[test]
fn trace_parser_reads_padded_pids_and_resumed_calls() {
    let text = "984   fsync(3</r/tmp/a.tmp>) = 0\n\
                984   rename(\"/r/tmp/a.tmp\", \"/r/packs/aa/a.pack\") = 0\n\
                12345 fsync(4</r/packs/aa> <unfinished ...>\n\
                12346 mkdir(\"/r/packs/bb\", 0700) = -1 EEXIST (File exists)\n\
                12345 <... fsync resumed>) = 0\n";
    let events = parse_trace(text, Path::new("/"));
    assert_eq!(
        events,
        vec![
            Event::Sync(PathBuf::from("/r/tmp/a.tmp")),
            Event::Rename {
                from: PathBuf::from("/r/tmp/a.tmp"),
                to: PathBuf::from("/r/packs/aa/a.pack")
            },
            Event::Sync(PathBuf::from("/r/packs/aa")),
        ]
    );
}
