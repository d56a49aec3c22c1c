//! Append-only files (issue 20, "MarkLogic journals and other append-only files"): a journal
//! that grew since the parent set is read from the parent's last chunk on, and gives the very
//! chunks a reading of the whole file would; one rewritten from the middle on, or not named
//! append-only, is read whole; every set restores byte for byte.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;

use crate::support::{open_repo, random_bytes, Env};

const MIB: u64 = 1 << 20;

/// Appends `blocks` blocks of 8 MiB of pseudo-random bytes (seeded by the block's number).
fn append_blocks(path: &Path, blocks: std::ops::Range<u64>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for b in blocks {
        f.write_all(&random_bytes(1_000 + b, 8 << 20)).unwrap();
    }
}

/// Whether two files have the same bytes, compared 8 MiB at a time.
fn same_bytes(a: &Path, b: &Path) -> bool {
    let (mut a, mut b) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    let (mut x, mut y) = (vec![0u8; 8 << 20], vec![0u8; 8 << 20]);
    loop {
        let n = read_full(&mut a, &mut x);
        let m = read_full(&mut b, &mut y);
        if n != m || x[..n] != y[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).unwrap() {
            0 => break,
            k => n += k,
        }
    }
    n
}

/// `snapshot --json` of `src` with `args`.
fn snap(env: &Env, src: &Path, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
    all.extend(args.iter().map(OsStr::new));
    all.push(src.as_os_str());
    env.run("snapshot", &all).ok().json()
}

/// Restores set `id` and compares its copy of `rel` (below the component) with `expected`.
fn restores_exactly(env: &Env, doc: &serde_json::Value, rel: &str, expected: &Path) {
    let id = doc["id"].as_str().unwrap();
    let out = env.path(&format!("restored-{id}"));
    env.restore(id, &out);
    assert!(same_bytes(&out.join("Journals").join(rel), expected), "set {id}: {rel} differs");
    std::fs::remove_dir_all(&out).unwrap();
}

fn u(doc: &serde_json::Value, key: &str) -> u64 {
    doc[key].as_u64().unwrap_or_else(|| panic!("{key} in {doc}"))
}

// See: issue 20 ("a 1 GiB journal with 8 MiB appended reads at most a few tens of MiB; a
// journal rewritten in the middle is read whole and restores exactly").
#[test]
fn a_grown_journal_is_read_from_its_last_chunk_and_one_rewritten_from_the_middle_whole() {
    let env = Env::new();
    env.init();
    let src = env.path("Journals");
    let journal = src.join("Journal1");
    append_blocks(&journal, 0..128);
    crate::support::write(&src.join("Label"), b"forest label");
    let opts = ["--append-only", "Journal*"];
    let first = snap(&env, &src, &opts);
    assert!(u(&first, "bytes_read") >= 1024 * MIB);

    append_blocks(&journal, 128..129);
    let second = snap(&env, &src, &opts);
    let read = u(&second, "bytes_read");
    assert!((8 * MIB..24 * MIB).contains(&read), "read {read} bytes of a journal 8 MiB longer");
    assert_eq!((u(&second, "files_changed"), u(&second, "files_unchanged")), (1, 1));
    // The chunks a whole reading gives: a set that reads everything stores nothing new.
    let full = snap(&env, &src, &["--full"]);
    assert!(u(&full, "bytes_read") >= 1032 * MIB);
    assert_eq!(u(&full, "chunks_new"), 0, "{full}");
    restores_exactly(&env, &second, "Journal1", &journal);

    // Rewritten from the middle on (and longer than before): the parent's last chunks differ,
    // so the whole file is read; what the middle kept is still deduplicated.
    let f = std::fs::OpenOptions::new().write(true).open(&journal).unwrap();
    f.set_len(512 * MIB).unwrap();
    drop(f);
    append_blocks(&journal, 200..266);
    let rewritten = snap(&env, &src, &opts);
    assert!(u(&rewritten, "bytes_read") >= 1040 * MIB, "{rewritten}");
    assert!(u(&rewritten, "bytes_added") < 600 * MIB, "{rewritten}");
    restores_exactly(&env, &rewritten, "Journal1", &journal);

    // Not named append-only: a grown file is read whole, as always.
    append_blocks(&journal, 300..301);
    let plain = snap(&env, &src, &[]);
    assert!(u(&plain, "bytes_read") >= 1048 * MIB, "{plain}");
}

// The parent's chunks as chunk-list blobs: the last list holding only the last chunk (the one
// before it ends a full list), then lists of every length, appended in rounds of every size;
// every set restores byte for byte and matches a whole reading.
#[test]
fn grown_journals_keep_their_chunk_lists_exactly_whatever_the_list_boundaries() {
    let env = Env::new();
    env.run("init", &["--chunk-sizes", "64/256/1024"]).ok();
    let src = env.path("Journals");
    let journal = src.join("Journal1");
    let data = random_bytes(77, 10 << 20);
    // Where chunk 8,192 ends: 8,192 chunk ids fill a chunk-list blob exactly.
    let repo = open_repo(&env.repo());
    let chunker = store::Chunker::new(&repo.chunker_params());
    drop(repo);
    let mut cuts = Vec::new();
    let mut at = 0usize;
    chunker
        .cut_all(&data, true, |c| {
            at += c.len();
            cuts.push(at);
            Ok::<_, ()>(())
        })
        .unwrap();
    assert!(cuts.len() > 2 * 8192, "{} chunks", cuts.len());
    let full_list = cuts[8191];
    // 8,192 chunks and a tail of 10 bytes (under the minimum: never cut) as its own chunk.
    let mut ends = vec![full_list + 10];
    let mut state = 5u64;
    while *ends.last().unwrap() < data.len() {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let step = [1usize, 63, 64, 1000, 4096, 70_000, 600_000][(state >> 33) as usize % 7];
        ends.push((ends.last().unwrap() + step).min(data.len()));
    }
    let opts = ["--append-only", "Journal*"];
    std::fs::create_dir_all(&src).unwrap();
    let mut written = 0usize;
    for (round, end) in ends.iter().enumerate() {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&journal).unwrap();
        f.write_all(&data[written..*end]).unwrap();
        drop(f);
        written = *end;
        let doc = snap(&env, &src, &opts);
        if round > 0 {
            assert!(u(&doc, "bytes_read") < (*end - ends[round - 1] + 4096) as u64, "{doc}");
        }
        restores_exactly(&env, &doc, "Journal1", &journal);
    }
    let full = snap(&env, &src, &["--full"]);
    assert_eq!(u(&full, "chunks_new"), 0, "{full}");
}
