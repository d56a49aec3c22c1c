//! `store-bench`: the macro benchmark harness (docs/BENCHMARKS.md; run it with
//! `bash benches/run.sh`).
//!
//! - `run`: a generated Alfresco (or MarkLogic) installation through init, full set, no-change
//!   incremental, one day of change, incremental, restore, check with data read, forget (the
//!   newest set) and prune, with `store`, restic and Borg in the same run, several runs, medians; plus
//!   references measured on the same bytes: reading them, `cp -r`, and the machine's limit
//!   (chunk + hash + compress + write, all cores).
//! - `metadata`: a million small files, full set then no-change incremental.
//! - `growth`: peak RSS of a snapshot into repositories already holding N blobs.
//! - `write-once`: a content store of a million files in per-minute directories, incrementals
//!   with the component write-once against the same component looked at whole.
//!
//! Every step runs under `/usr/bin/time` (wall, peak RSS, CPU). Output: a Markdown report on
//! stdout and in `--out`, and the same numbers as JSON beside it.

// A benchmark that cannot set up has nothing to measure: failing loudly is the right response.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;
use store_benches::datasets;

#[derive(Parser)]
#[command(about = "Macro benchmarks of store against restic and Borg")]
struct Cli {
    /// Scratch directory (data, repositories, restores); needs about 4x the data size free.
    #[arg(long, global = true, default_value = "/tmp/store-bench")]
    work: PathBuf,
    /// Where to write the reports (`<scenario>.md`, `<scenario>.json`).
    #[arg(long, global = true, default_value = "benches/results")]
    out: PathBuf,
    /// The `store` binary.
    #[arg(long, global = true, default_value = "target/release/store")]
    store: PathBuf,
    #[command(subcommand)]
    command: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// The nightly cycle on a generated installation, side by side with restic and Borg.
    Run {
        #[arg(long, value_enum, default_value = "alfresco")]
        dataset: Dataset,
        /// 1.0 is about 2.26 GB (Alfresco) or 2 GB (MarkLogic).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Tools to compare (those not installed are left out, and said so): store, store-plain
        /// (unencrypted), store-xchacha (sealed with XChaCha20-Poly1305), restic, borg.
        #[arg(long, value_delimiter = ',', default_value = "store,store-plain,restic,borg")]
        tools: Vec<String>,
        /// Page cache before each step: warm (sources read just before) or cold (dropped).
        #[arg(long, value_enum, default_value = "warm")]
        cache: Cache,
        /// Documents of the Alfresco content store: synthetic (a 26-word list, random media)
        /// or realistic (large-vocabulary text in office zips and PDFs, JPEG, PNG).
        #[arg(long, value_enum, default_value = "synthetic")]
        corpus: CorpusArg,
        /// Repositories in S3-compatible object storage below this location (`s3:http://...`;
        /// `store` and restic only), with credentials in `AWS_*`: each tool's repository is a
        /// new prefix of it. `.ci/s3-server start DIR` starts a local SeaweedFS.
        #[arg(long)]
        s3: Option<String>,
        /// With `--s3`: the server's Prometheus metrics (SeaweedFS's `-metricsPort`), read
        /// before and after each step for the requests it served.
        #[arg(long)]
        s3_metrics: Option<String>,
    },
    /// Each document class of the realistic corpus: zstd level 3's speed (MB/s a core, median
    /// of runs) and ratio, as `zstd -b3` reports them, beside the synthetic corpus's.
    Corpus {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Megabytes generated per class.
        #[arg(long, default_value_t = 32)]
        mb: usize,
    },
    /// A million small files: full set, then no-change incremental.
    Metadata {
        #[arg(long, default_value_t = 1_000_000)]
        files: u64,
        #[arg(long, value_delimiter = ',', default_value = "store,restic")]
        tools: Vec<String>,
    },
    /// The encryption choices on one core: XChaCha20-Poly1305 (what format 3 uses) against
    /// AES-256-GCM-SIV, sealing and opening 128 KiB pieces, with keyed and unkeyed BLAKE3 and
    /// zstd 3 as references measured in the same runs.
    Aead {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// A real PostgreSQL database (a throwaway cluster: `initdb`, `pg_ctl`), dumped with
    /// `pg_dump` (plain SQL), backed up; then per run 4,000 scattered rows updated, dumped again
    /// over the same file, and backed up: the bytes each tool adds.
    PgDump {
        /// Rows of `alf_node` (about 330 bytes of dump each).
        #[arg(long, default_value_t = 1_400_000)]
        rows: u64,
        #[arg(long, default_value_t = 4_000)]
        updates: u64,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, value_delimiter = ',', default_value = "store,restic,borg")]
        tools: Vec<String>,
    },
    /// CPU-seconds per GB of each stage of a snapshot (chunk, keyed id, zstd 3, seal, pre-seal
    /// verification), one core, on a generated content store of each corpus.
    Stages {
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Megabytes of content store generated per corpus.
        #[arg(long, default_value_t = 128)]
        mb: u64,
    },
    /// Restoring many small files into one directory: `store restore` writing unnamed files
    /// (`O_TMPFILE`, linked when complete) and under temporary names (renamed), against
    /// `cp -r` of the same files, in the same runs.
    SmallFiles {
        #[arg(long, default_value_t = 200_000)]
        files: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// An Alfresco content store of N files in per-minute directories (`YYYY/M/D/H/M/`):
    /// no-change incrementals, and incrementals after 0.1% new files, with the component
    /// write-once (unchanged directories reused unlisted) against the same component looked
    /// at whole, alternating in the same runs (two chains of one repository, by tag).
    WriteOnce {
        #[arg(long, default_value_t = 1_000_000)]
        files: u64,
        /// Files per minute directory.
        #[arg(long, default_value_t = 20)]
        per_dir: u64,
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Peak RSS of a snapshot as the repository grows (N blobs already stored).
    Growth {
        #[arg(long, value_delimiter = ',', default_value = "100000,5000000")]
        blobs: Vec<u64>,
    },
}

#[derive(Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Dataset {
    Alfresco,
    Marklogic,
}

#[derive(Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum CorpusArg {
    Synthetic,
    Realistic,
}

impl CorpusArg {
    fn corpus(self) -> datasets::Corpus {
        match self {
            CorpusArg::Synthetic => datasets::Corpus::Synthetic,
            CorpusArg::Realistic => datasets::Corpus::Realistic,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Cache {
    Warm,
    Cold,
}

/// What `/usr/bin/time` saw of one command (several commands of a step add up).
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Measured {
    wall_s: f64,
    peak_rss_kb: u64,
    cpu_s: f64,
}

impl Measured {
    fn then(self, other: Measured) -> Measured {
        Measured {
            wall_s: self.wall_s + other.wall_s,
            peak_rss_kb: self.peak_rss_kb.max(other.peak_rss_kb),
            cpu_s: self.cpu_s + other.cpu_s,
        }
    }
}

/// One command line, with its environment and working directory.
struct Cmd {
    argv: Vec<OsString>,
    env: Vec<(String, OsString)>,
    cwd: Option<PathBuf>,
}

fn cmd<I: IntoIterator<Item = S>, S: Into<OsString>>(argv: I) -> Cmd {
    Cmd { argv: argv.into_iter().map(Into::into).collect(), env: Vec::new(), cwd: None }
}

/// Runs `c` under `/usr/bin/time`; its output goes to `log`. Fails loudly on a non-zero exit.
fn timed(c: &Cmd, log: &Path) -> Measured {
    let times = log.with_extension("time");
    let logfile = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut command = Command::new("/usr/bin/time");
    command
        .args(["-f", "%e %M %U %S", "-o"])
        .arg(&times)
        .args(&c.argv)
        .stdin(Stdio::null())
        .stdout(logfile.try_clone().unwrap())
        .stderr(logfile);
    for (k, v) in &c.env {
        command.env(k, v);
    }
    if let Some(dir) = &c.cwd {
        command.current_dir(dir);
    }
    let status = command.status().unwrap();
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        panic!("{:?} failed ({status}); log {}:\n{}", c.argv, log.display(), tail.join("\n"));
    }
    let text = std::fs::read_to_string(&times).unwrap();
    let last = text.lines().last().unwrap_or_default();
    let f: Vec<f64> = last.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(f.len(), 4, "unexpected /usr/bin/time output {last:?}");
    Measured { wall_s: f[0], peak_rss_kb: f[1] as u64, cpu_s: f[2] + f[3] }
}

/// Sum of the sizes of the regular files below `path` (or of `path` itself).
fn bytes_of(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return 0 };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    std::fs::read_dir(path).unwrap().map(|e| bytes_of(&e.unwrap().path())).sum()
}

fn files_of(path: &Path, out: &mut Vec<PathBuf>) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_file() {
        out.push(path.to_path_buf());
    } else if meta.is_dir() {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            files_of(&e, out);
        }
    }
}

/// Reads every source file (warms the page cache); returns the bytes read.
fn read_all(sources: &[PathBuf]) -> u64 {
    let mut files = Vec::new();
    for s in sources {
        files_of(s, &mut files);
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        loop {
            let n = file.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    total
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    if std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_err() {
        eprintln!("store-bench: cannot drop the page cache (needs root); the run is not cold");
    }
}

/// The machine's limit for a snapshot of these bytes: chunk, hash, compress (zstd 3) and write
/// every chunk, on all cores, in this process; bytes per second.
fn machine_limit(sources: &[PathBuf], scratch: &Path) -> f64 {
    use rayon::prelude::*;
    use std::io::Write;
    let mut files = Vec::new();
    for s in sources {
        files_of(s, &mut files);
    }
    std::fs::create_dir_all(scratch).unwrap();
    let params = store::ChunkerParams::default_with_seed(1);
    let chunker = store::Chunker::new(&params);
    let started = Instant::now();
    let total: u64 = files
        .par_iter()
        .map_init(
            || {
                let i = rayon::current_thread_index().unwrap_or(0);
                let sink = std::fs::File::create(scratch.join(format!("pack-{i}"))).unwrap();
                (store::Compressor::new(3).unwrap(), Vec::new(), std::io::BufWriter::new(sink))
            },
            |(compressor, out, sink), f| {
                let data = std::fs::read(f).unwrap();
                chunker
                    .cut_all(&data, true, |chunk| {
                        std::hint::black_box(blake3::hash(chunk));
                        compressor.compress(chunk, out);
                        sink.write_all(out)
                    })
                    .unwrap();
                data.len() as u64
            },
        )
        .sum();
    let secs = started.elapsed().as_secs_f64();
    std::fs::remove_dir_all(scratch).unwrap();
    total as f64 / secs
}

/// The tools, as command lines.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Tool {
    /// `store` as `init` makes it: encrypted.
    Store,
    /// `store init --encryption none`: the cost of encryption, measured in the same runs.
    #[serde(rename = "store-plain")]
    StorePlain,
    /// `store init --encryption xchacha20-poly1305`: format 5 sealed as formats 3 and 4 were,
    /// the cost of the AEAD measured in the same runs.
    #[serde(rename = "store-xchacha")]
    StoreXChaCha,
    Restic,
    Borg,
}

impl Tool {
    fn parse(name: &str) -> Option<Tool> {
        match name {
            "store" => Some(Tool::Store),
            "store-plain" => Some(Tool::StorePlain),
            "store-xchacha" => Some(Tool::StoreXChaCha),
            "restic" => Some(Tool::Restic),
            "borg" => Some(Tool::Borg),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Tool::Store => "store",
            Tool::StorePlain => "store-plain",
            Tool::StoreXChaCha => "store-xchacha",
            Tool::Restic => "restic",
            Tool::Borg => "borg",
        }
    }

    fn installed(self, store: &Path) -> bool {
        match self {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => store.is_file(),
            Tool::Restic | Tool::Borg => !self.version(store).is_empty(),
        }
    }

    fn version(self, store: &Path) -> String {
        let out = match self {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => {
                Command::new(store).arg("--version").output()
            }
            Tool::Restic => Command::new("restic").arg("version").output(),
            Tool::Borg => Command::new("borg").arg("--version").output(),
        };
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
    }
}

/// One tool's repository in one run.
/// Object storage the repositories live in (`Run --s3`).
#[derive(Clone, Copy)]
struct Remote<'a> {
    url: &'a str,
    metrics: Option<&'a str>,
}

impl Remote<'_> {
    /// Requests the server has served so far (the sum of SeaweedFS's `s3_request_total`).
    fn requests(&self) -> Option<u64> {
        let url = self.metrics?;
        let out = Command::new("curl").args(["-sf", url]).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("SeaweedFS_s3_request_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        Some(total as u64)
    }
}

struct Repo {
    tool: Tool,
    path: PathBuf,
    /// Where requests are counted, for a repository in object storage.
    metrics: Option<String>,
    cache: PathBuf,
    store: PathBuf,
    sets: u32,
}

impl Repo {
    /// `tool`'s repository (and cache) in `work`, run with the `store` binary `store`.
    fn new(tool: Tool, work: &Path, store: &Path) -> Self {
        Repo {
            tool,
            path: work.join(format!("repo-{}", tool.name())),
            cache: work.join(format!("cache-{}", tool.name())),
            store: store.to_path_buf(),
            metrics: None,
            sets: 0,
        }
    }

    /// [`Repo::new`], in a new prefix of `remote` when given.
    fn at(tool: Tool, work: &Path, store: &Path, remote: Option<Remote>) -> Self {
        let mut repo = Repo::new(tool, work, store);
        if let Some(r) = remote {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            repo.path = PathBuf::from(format!("{}/bench-{}-{nanos}", r.url, tool.name()));
            repo.metrics = r.metrics.map(str::to_owned);
        }
        repo
    }

    fn with_env(&self, mut c: Cmd) -> Cmd {
        match self.tool {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => {
                // As restic's: a password in the environment (an unencrypted repository
                // ignores it); the cheapest is not used, the default KDF is part of the cost.
                c.env.push(("STORE_PASSWORD".into(), "bench".into()));
            }
            Tool::Restic => {
                c.env.push(("RESTIC_PASSWORD".into(), "bench".into()));
                c.env.push(("RESTIC_CACHE_DIR".into(), self.cache.clone().into()));
            }
            Tool::Borg => {
                c.env.push(("BORG_CACHE_DIR".into(), self.cache.clone().into()));
                c.env.push(("BORG_BASE_DIR".into(), self.cache.clone().into()));
                c.env.push(("BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK".into(), "yes".into()));
                c.env.push(("BORG_RELOCATED_REPO_ACCESS_IS_OK".into(), "yes".into()));
            }
        }
        c
    }

    fn store_cmd(&self, args: &[OsString]) -> Cmd {
        let mut argv: Vec<OsString> = vec![self.store.clone().into()];
        argv.extend(args.iter().cloned());
        argv.extend(["--repo".into(), self.path.clone().into()]);
        argv.extend(["--cache-dir".into(), self.cache.clone().into()]);
        cmd(argv)
    }

    fn init(&self) -> Vec<Cmd> {
        let c = match self.tool {
            Tool::Store => self.store_cmd(&["init".into()]),
            Tool::StorePlain => {
                self.store_cmd(&["init".into(), "--encryption".into(), "none".into()])
            }
            Tool::StoreXChaCha => {
                self.store_cmd(&["init".into(), "--encryption".into(), "xchacha20-poly1305".into()])
            }
            Tool::Restic => cmd([
                "restic".into(),
                "init".into(),
                "--repository-version".into(),
                "2".into(),
                "--repo".into(),
                OsString::from(&self.path),
            ]),
            Tool::Borg => cmd([
                "borg".into(),
                "init".into(),
                "-e".into(),
                "none".into(),
                OsString::from(&self.path),
            ]),
        };
        vec![self.with_env(c)]
    }

    fn backup(&mut self, sources: &[(&str, PathBuf)]) -> Vec<Cmd> {
        self.backup_with(sources, &[])
    }

    /// [`Repo::backup`], with `extra` arguments after each component (`store` only).
    fn backup_with(&mut self, sources: &[(&str, PathBuf)], extra: &[&str]) -> Vec<Cmd> {
        self.sets += 1;
        let c = match self.tool {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => {
                let mut args: Vec<OsString> =
                    vec!["snapshot".into(), "--host".into(), "bench".into()];
                for (name, path) in sources {
                    args.push("--component".into());
                    let mut spec = OsString::from(format!("{name}="));
                    spec.push(path);
                    args.push(spec);
                    args.extend(extra.iter().map(OsString::from));
                }
                self.store_cmd(&args)
            }
            Tool::Restic => {
                let mut argv: Vec<OsString> = vec![
                    "restic".into(),
                    "backup".into(),
                    "--compression".into(),
                    "auto".into(),
                    "--host".into(),
                    "bench".into(),
                    "--repo".into(),
                    self.path.clone().into(),
                ];
                argv.extend(sources.iter().map(|(_, p)| p.clone().into()));
                cmd(argv)
            }
            Tool::Borg => {
                let mut archive = self.path.clone().into_os_string();
                archive.push(format!("::set-{}", self.sets));
                let mut argv: Vec<OsString> = vec![
                    "borg".into(),
                    "create".into(),
                    "--compression".into(),
                    "zstd,3".into(),
                    archive,
                ];
                argv.extend(sources.iter().map(|(_, p)| p.clone().into()));
                cmd(argv)
            }
        };
        vec![self.with_env(c)]
    }

    fn restore(&self, target: &Path) -> Vec<Cmd> {
        std::fs::create_dir_all(target).unwrap();
        let c = match self.tool {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => self.store_cmd(&[
                "restore".into(),
                "latest".into(),
                "--target".into(),
                target.into(),
            ]),
            Tool::Restic => cmd([
                "restic".into(),
                "restore".into(),
                "latest".into(),
                "--target".into(),
                OsString::from(target),
                "--repo".into(),
                OsString::from(&self.path),
            ]),
            Tool::Borg => {
                let mut archive = self.path.clone().into_os_string();
                archive.push(format!("::set-{}", self.sets));
                let mut c = cmd(["borg".into(), "extract".into(), archive]);
                c.cwd = Some(target.to_path_buf());
                c
            }
        };
        vec![self.with_env(c)]
    }

    fn check(&self) -> Vec<Cmd> {
        let c = match self.tool {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => {
                self.store_cmd(&["check".into(), "--read-data".into()])
            }
            Tool::Restic => cmd([
                "restic".into(),
                "check".into(),
                "--read-data".into(),
                "--repo".into(),
                OsString::from(&self.path),
            ]),
            Tool::Borg => cmd([
                "borg".into(),
                "check".into(),
                "--verify-data".into(),
                OsString::from(&self.path),
            ]),
        };
        vec![self.with_env(c)]
    }

    /// Forgets the newest set (it has no dependents in any tool, so every tool frees the same
    /// data: what the day of change added) and frees its space.
    fn forget_prune(&self) -> Vec<Cmd> {
        let cs = match self.tool {
            Tool::Store | Tool::StorePlain | Tool::StoreXChaCha => vec![
                self.store_cmd(&["forget".into(), "latest".into()]),
                self.store_cmd(&["prune".into()]),
            ],
            Tool::Restic => {
                let listed = Command::new("restic")
                    .args(["snapshots", "--json", "--latest", "1", "--repo"])
                    .arg(&self.path)
                    .env("RESTIC_PASSWORD", "bench")
                    .env("RESTIC_CACHE_DIR", &self.cache)
                    .output()
                    .unwrap();
                let sets: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
                let newest = sets
                    .as_array()
                    .and_then(|a| a.iter().max_by_key(|s| s["time"].as_str().map(str::to_owned)))
                    .and_then(|s| s["id"].as_str())
                    .unwrap()
                    .to_owned();
                vec![cmd([
                    "restic".into(),
                    "forget".into(),
                    newest.into(),
                    "--prune".into(),
                    "--repo".into(),
                    OsString::from(&self.path),
                ])]
            }
            Tool::Borg => {
                let mut archive = self.path.clone().into_os_string();
                archive.push(format!("::set-{}", self.sets));
                vec![
                    cmd(["borg".into(), "delete".into(), archive]),
                    cmd(["borg".into(), "compact".into(), OsString::from(&self.path)]),
                ]
            }
        };
        cs.into_iter().map(|c| self.with_env(c)).collect()
    }
}

/// One step of one tool in one run.
#[derive(Debug, Clone, Serialize)]
struct StepRun {
    measured: Measured,
    /// Requests the object store served during the step, when counted.
    requests: Option<u64>,
    /// Bytes the step added to the repository (negative: freed).
    repo_delta: i64,
    repo_bytes: u64,
}

#[derive(Default, Serialize)]
struct Report {
    scenario: String,
    machine: BTreeMap<String, String>,
    settings: BTreeMap<String, String>,
    source_bytes: BTreeMap<String, u64>,
    /// step -> tool -> runs
    steps: Vec<(String, BTreeMap<String, Vec<StepRun>>)>,
    /// reference -> bytes per second, per run
    references: BTreeMap<String, Vec<f64>>,
    notes: Vec<String>,
}

impl Report {
    fn record(&mut self, step: &str, tool: Tool, run: StepRun) {
        if !self.steps.iter().any(|(s, _)| s == step) {
            self.steps.push((step.to_owned(), BTreeMap::new()));
        }
        let entry = self.steps.iter_mut().find(|(s, _)| s == step).unwrap();
        entry.1.entry(tool.name().to_owned()).or_default().push(run);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn machine() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model =
        cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1));
    m.insert("cpu".into(), model.unwrap_or("?").trim().to_owned());
    m.insert(
        "cores".into(),
        std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_default(),
    );
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    if let Some(l) = meminfo.lines().next() {
        m.insert("memory".into(), l.trim_start_matches("MemTotal:").trim().to_owned());
    }
    // The instructions the stages' libraries use when present: SHA-NI (restic's SHA-256),
    // AVX2 and AVX-512 (BLAKE3, ChaCha20), AES-NI and VAES (AES-GCM-SIV).
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split(':').nth(1))
        .map(|f| f.split_whitespace().collect())
        .unwrap_or_default();
    let wanted = ["sha_ni", "avx2", "avx512f", "avx512vl", "aes", "vaes"];
    let have: Vec<String> = wanted
        .iter()
        .map(|w| format!("{w} {}", if flags.contains(w) { "yes" } else { "no" }))
        .collect();
    m.insert("cpu features".into(), have.join(", "));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    m.insert("kernel".into(), kernel.trim().to_owned());
    m
}

fn run_step(
    report: &mut Report,
    step: &str,
    repo: &Repo,
    cmds: Vec<Cmd>,
    log: &Path,
    warm: &dyn Fn(),
) -> Measured {
    warm();
    let remote = repo.metrics.as_deref().map(|m| Remote { url: "", metrics: Some(m) });
    let requests_before = remote.and_then(|r| r.requests());
    let before = bytes_of(&repo.path);
    let measured = cmds.iter().fold(Measured::default(), |acc, c| acc.then(timed(c, log)));
    let after = bytes_of(&repo.path);
    let requests = remote.and_then(|r| r.requests()).zip(requests_before).map(|(a, b)| a - b);
    eprintln!(
        "  {step:<22} {:<7} {:>7.2} s  {:>6} MB RSS  repo {:>8.1} MB",
        repo.tool.name(),
        measured.wall_s,
        measured.peak_rss_kb / 1000,
        after as f64 / 1e6
    );
    report.record(
        step,
        repo.tool,
        StepRun { measured, requests, repo_delta: after as i64 - before as i64, repo_bytes: after },
    );
    measured
}

/// What `Run` measures.
#[derive(Clone, Copy)]
struct RunSpec<'a> {
    dataset: Dataset,
    scale: f64,
    runs: usize,
    cache: Cache,
    corpus: datasets::Corpus,
    remote: Option<Remote<'a>>,
}

fn scenario_run(cli: &Cli, spec: RunSpec, tools: &[Tool]) -> Report {
    let RunSpec { dataset, scale, runs, cache, corpus, remote } = spec;
    let mut report = Report {
        scenario: format!(
            "{}-{scale}{}",
            match dataset {
                Dataset::Alfresco => "alfresco",
                Dataset::Marklogic => "marklogic",
            },
            if corpus == datasets::Corpus::Realistic { "-realistic" } else { "" }
        ) + if remote.is_some() { "-s3" } else { "" },
        machine: machine(),
        ..Report::default()
    };
    report.settings.insert("scale".into(), scale.to_string());
    report.settings.insert("corpus".into(), format!("{corpus:?}").to_lowercase());
    if let Some(r) = remote {
        report.settings.insert(
            "repositories".into(),
            format!("object storage below {} (a new prefix per tool and run)", r.url),
        );
    }
    report.settings.insert("runs".into(), runs.to_string());
    report.settings.insert(
        "page cache".into(),
        match cache {
            Cache::Warm => "warm (sources read just before each step)".into(),
            Cache::Cold => "cold (dropped before each step)".into(),
        },
    );
    for t in tools {
        report.settings.insert(format!("{} version", t.name()), t.version(&cli.store));
    }
    report.settings.insert("restic options".into(), "--compression auto (repository v2)".into());
    report.settings.insert("borg options".into(), "-e none, --compression zstd,3".into());
    let work = &cli.work;
    let data = work.join("data");
    let log = work.join("log.txt");
    for run in 0..runs {
        eprintln!("run {}/{runs}: generating", run + 1);
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(&data).unwrap();
        let sources = match dataset {
            Dataset::Alfresco => {
                datasets::generate_alfresco_of(&data, 42, scale, corpus).unwrap();
                datasets::alfresco_sources(&data)
            }
            Dataset::Marklogic => {
                datasets::generate_marklogic_of(&data, 42, scale, corpus).unwrap();
                datasets::marklogic_sources(&data)
            }
        };
        let paths: Vec<PathBuf> = sources.iter().map(|(_, p)| p.clone()).collect();
        // Dirty pages of the previous step are written back first, so that step's writeback
        // does not run during (and get charged to) the next tool's step.
        let warm = || match cache {
            Cache::Warm => {
                let _ = Command::new("sync").status();
                read_all(&paths);
            }
            Cache::Cold => drop_caches(),
        };
        let size = paths.iter().map(|p| bytes_of(p)).sum::<u64>();
        report.source_bytes.insert("initial".into(), size);
        let mut repos: Vec<Repo> =
            tools.iter().map(|&tool| Repo::at(tool, work, &cli.store, remote)).collect();
        // Each run starts with another tool, so no tool always follows the same one (the file
        // system's state after a tool's deletions affects the next one's restore).
        let first = run % repos.len();
        repos.rotate_left(first);
        for r in &repos {
            for c in r.init() {
                timed(&c, &log);
            }
        }
        for r in &mut repos {
            let cmds = r.backup(&sources);
            run_step(&mut report, "full set", r, cmds, &log, &warm);
        }
        for r in &mut repos {
            let cmds = r.backup(&sources);
            run_step(&mut report, "incremental, no change", r, cmds, &log, &warm);
        }
        match dataset {
            Dataset::Alfresco => datasets::mutate_alfresco_of(&data, 42, scale, 1, corpus).unwrap(),
            Dataset::Marklogic => {
                datasets::mutate_marklogic_of(&data, 42, scale, 1, corpus).unwrap()
            }
        };
        let size = paths.iter().map(|p| bytes_of(p)).sum::<u64>();
        report.source_bytes.insert("after one day".into(), size);
        for r in &mut repos {
            let cmds = r.backup(&sources);
            run_step(&mut report, "incremental, one day", r, cmds, &log, &warm);
        }
        for r in &repos {
            let target = work.join(format!("restore-{}", r.tool.name()));
            let cmds = r.restore(&target);
            run_step(&mut report, "restore", r, cmds, &log, &warm);
            let restored = bytes_of(&target);
            assert_eq!(restored, size, "{} restored {restored} bytes, not {size}", r.tool.name());
            std::fs::remove_dir_all(&target).unwrap();
        }
        for r in &repos {
            run_step(&mut report, "check, all data read", r, r.check(), &log, &warm);
        }
        for r in &repos {
            run_step(&mut report, "forget newest + prune", r, r.forget_prune(), &log, &warm);
        }
        // References on the same bytes, same run.
        warm();
        let started = Instant::now();
        let read = read_all(&paths);
        report
            .references
            .entry("read (page cache)".into())
            .or_default()
            .push(read as f64 / started.elapsed().as_secs_f64());
        let target = work.join("cp");
        std::fs::create_dir_all(&target).unwrap();
        let mut argv: Vec<OsString> = vec!["cp".into(), "-r".into()];
        argv.extend(paths.iter().map(|p| p.clone().into()));
        argv.push(target.clone().into());
        warm();
        let m = timed(&cmd(argv), &log);
        report.references.entry("cp -r".into()).or_default().push(size as f64 / m.wall_s);
        std::fs::remove_dir_all(&target).unwrap();
        warm();
        let limit = machine_limit(&paths, &work.join("limit"));
        report
            .references
            .entry("limit: chunk + hash + zstd 3 + write, all cores".into())
            .or_default()
            .push(limit);
    }
    for t in [Tool::Restic, Tool::Borg] {
        if !tools.contains(&t) {
            report.notes.push(format!("{} not run (not asked for, or not installed)", t.name()));
        }
    }
    report
}

fn write_rows(md: &mut String, report: &Report, bytes_for: &dyn Fn(&str) -> u64) {
    use std::fmt::Write;
    if report.steps.is_empty() {
        return;
    }
    let tools: Vec<String> = {
        let mut t: Vec<String> = report.steps.iter().flat_map(|(_, m)| m.keys().cloned()).collect();
        t.sort_by_key(|n| (n != "store", n.clone()));
        t.dedup();
        t
    };
    let peers: Vec<&String> = tools.iter().filter(|t| *t != "store").collect();
    let _ = write!(md, "| step | tool | time (median) | MB/s | peak RSS | CPU | repo +MB |");
    for p in &peers {
        let _ = write!(md, " {p} time / store time |");
    }
    md.push('\n');
    md.push_str(&"|---".repeat(7 + peers.len()));
    md.push_str("|\n");
    for (step, by_tool) in &report.steps {
        let med = |tool: &str, f: &dyn Fn(&StepRun) -> f64| {
            by_tool.get(tool).map(|runs| median(runs.iter().map(f).collect())).unwrap_or(f64::NAN)
        };
        for tool in &tools {
            if !by_tool.contains_key(tool) {
                continue;
            }
            let wall = med(tool, &|r| r.measured.wall_s);
            let rss = med(tool, &|r| r.measured.peak_rss_kb as f64) / 1000.0;
            let cpu = med(tool, &|r| r.measured.cpu_s / r.measured.wall_s.max(0.01) * 100.0);
            let delta = med(tool, &|r| r.repo_delta as f64) / 1e6;
            let mbps = bytes_for(step) as f64 / 1e6 / wall;
            let _ = write!(
                md,
                "| {step} | {tool} | {wall:.2} s | {mbps:.0} | {rss:.0} MB | {cpu:.0}% | {delta:+.1} |"
            );
            for p in &peers {
                if tool == "store" {
                    let _ = write!(md, " {:.2}x |", med(p, &|r| r.measured.wall_s) / wall);
                } else {
                    md.push_str(" |");
                }
            }
            md.push('\n');
        }
    }
}

/// Each run's peer time / store time per step (runs are paired by their order: the tools take
/// turns within a run), so the spread behind a median is in the report too.
fn write_per_run(md: &mut String, report: &Report) {
    use std::fmt::Write;
    let mut peers: Vec<&String> =
        report.steps.iter().flat_map(|(_, m)| m.keys()).filter(|t| *t != "store").collect();
    peers.sort();
    peers.dedup();
    let runs = report.steps.iter().filter_map(|(_, m)| m.get("store")).map(Vec::len).max();
    if peers.is_empty() || runs.unwrap_or(0) < 2 {
        return;
    }
    let _ = writeln!(md, "\nPer run, peer time / store time (runs in order):\n");
    let _ = write!(md, "| step |");
    for p in &peers {
        let _ = write!(md, " {p} |");
    }
    let _ = writeln!(md, "\n{}|", "|---".repeat(1 + peers.len()));
    for (step, by_tool) in &report.steps {
        let Some(store) = by_tool.get("store") else { continue };
        let _ = write!(md, "| {step} |");
        for p in &peers {
            let ratios: Vec<String> = by_tool
                .get(*p)
                .map(|runs| {
                    runs.iter()
                        .zip(store)
                        .map(|(r, s)| {
                            format!("{:.2}x", r.measured.wall_s / s.measured.wall_s.max(0.01))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(md, " {} |", ratios.join(", "));
        }
        md.push('\n');
    }
}

/// Requests the object store served per step (median of runs), when they were counted.
fn write_requests(md: &mut String, report: &Report) {
    use std::fmt::Write;
    let counted = |runs: &Vec<StepRun>| runs.iter().all(|r| r.requests.is_some());
    if !report.steps.iter().any(|(_, m)| m.values().any(|r| !r.is_empty() && counted(r))) {
        return;
    }
    let _ = writeln!(md, "\nRequests served by the object store per step (median of runs):\n");
    let _ = writeln!(
        md,
        "| step | tool | requests | peer requests / store requests |\n|---|---|---|---|"
    );
    for (step, by_tool) in &report.steps {
        let med = |tool: &str| {
            by_tool.get(tool).filter(|r| counted(r)).map(|runs| {
                median(runs.iter().filter_map(|r| r.requests).map(|n| n as f64).collect())
            })
        };
        let store = med("store");
        for tool in by_tool.keys() {
            let Some(n) = med(tool) else { continue };
            let ratio = match store {
                Some(s) if tool != "store" && s > 0.0 => format!("{:.1}x", n / s),
                _ => String::new(),
            };
            let _ = writeln!(md, "| {step} | {tool} | {n:.0} | {ratio} |");
        }
    }
}

fn markdown(report: &Report) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "## Scenario `{}`\n", report.scenario);
    for (k, v) in report.machine.iter().chain(&report.settings) {
        let _ = writeln!(md, "- {k}: {v}");
    }
    for (k, v) in &report.source_bytes {
        let _ = writeln!(md, "- source bytes, {k}: {:.1} MB", *v as f64 / 1e6);
    }
    md.push('\n');
    let initial = report.source_bytes.get("initial").copied().unwrap_or(0);
    let later = report.source_bytes.get("after one day").copied().unwrap_or(initial);
    write_rows(&mut md, report, &|step| {
        if step.contains("one day")
            || step.starts_with("restore")
            || step.starts_with("check")
            || step.starts_with("forget")
        {
            later
        } else {
            initial
        }
    });
    write_per_run(&mut md, report);
    write_requests(&mut md, report);
    if !report.references.is_empty() {
        let _ = writeln!(md, "\nReferences on the same bytes, same runs (median):\n");
        let _ = writeln!(md, "| reference | MB/s |\n|---|---|");
        for (k, v) in &report.references {
            let _ = writeln!(md, "| {k} | {:.0} |", median(v.clone()) / 1e6);
        }
    }
    for n in &report.notes {
        let _ = writeln!(md, "\nNote: {n}");
    }
    md
}

fn scenario_metadata(cli: &Cli, files: u64, tools: &[Tool]) -> Report {
    let mut report =
        Report { scenario: format!("metadata-{files}"), machine: machine(), ..Report::default() };
    let work = &cli.work;
    let _ = std::fs::remove_dir_all(work);
    let data = work.join("files");
    eprintln!("generating {files} files");
    let per_dir = 1000;
    for i in 0..files {
        let dir = data.join(format!("{:04}", i / per_dir));
        if i % per_dir == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(
            dir.join(format!("{:07}.txt", i)),
            format!("document {i}\n").repeat(1 + (i % 7) as usize),
        )
        .unwrap();
    }
    let size = bytes_of(&data);
    report.source_bytes.insert("initial".into(), size);
    report.settings.insert("files".into(), files.to_string());
    let sources = vec![("files", data.clone())];
    let log = work.join("log.txt");
    let paths = vec![data.clone()];
    let warm = || {
        read_all(&paths);
    };
    for &tool in tools {
        let mut r = Repo::new(tool, work, &cli.store);
        for c in r.init() {
            timed(&c, &log);
        }
        let cmds = r.backup(&sources);
        run_step(&mut report, "full set", &r, cmds, &log, &warm);
        let cmds = r.backup(&sources);
        run_step(&mut report, "incremental, no change", &r, cmds, &log, &warm);
    }
    report
}

fn scenario_pg_dump(cli: &Cli, rows: u64, updates: u64, runs: usize, tools: &[Tool]) -> Report {
    let mut report = Report { scenario: "pg-dump".into(), machine: machine(), ..Report::default() };
    let work = &cli.work;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let pg = store_benches::pg::Cluster::start(&work.join("pg"));
    // Alfresco-shaped rows: a node table with properties and a content URL table.
    let _ = pg.psql(
        "postgres",
        &format!(
            "CREATE TABLE alf_node (id bigint PRIMARY KEY, uuid text, type_qname text, \
         props text, modified timestamptz); \
         INSERT INTO alf_node SELECT g, md5(g::text), 'cm:content', \
         'name=' || md5((g * 7)::text) || '.pdf title=' || md5((g * 13)::text) || \
         ' description=' || repeat(md5((g * 31)::text), 2), \
         timestamptz '2026-11-21' + g * interval '1 second' FROM generate_series(1, {rows}) g; \
         CREATE TABLE alf_content_url (id bigint PRIMARY KEY, content_url text, \
         content_size bigint); INSERT INTO alf_content_url SELECT g, \
         'store://2026/11/21/' || (g % 24) || '/' || (g % 60) || '/' || md5(g::text) || '.bin', \
         1000 + g * 37 % 5000000 FROM generate_series(1, {rows}) g;"
        ),
    );
    let dumps = work.join("dump");
    std::fs::create_dir_all(&dumps).unwrap();
    let file = dumps.join("alfresco.sql");
    pg.dump("postgres", &file);
    let size = bytes_of(&file);
    report.source_bytes.insert("initial".into(), size);
    report.settings.insert("rows".into(), rows.to_string());
    report.settings.insert("updates per run".into(), updates.to_string());
    let log = work.join("log.txt");
    let paths = vec![dumps.clone()];
    let warm = || {
        read_all(&paths);
    };
    let sources = vec![("db", dumps.clone())];
    let mut repos: Vec<Repo> =
        tools.iter().map(|&tool| Repo::new(tool, work, &cli.store)).collect();
    for r in &mut repos {
        for c in r.init() {
            timed(&c, &log);
        }
        let cmds = r.backup(&sources);
        run_step(&mut report, "full set", r, cmds, &log, &warm);
    }
    let step = format!("second dump, {updates} scattered rows updated");
    let stride = (rows / updates.max(1)).max(1);
    for run in 0..runs {
        let _ = pg.psql(
            "postgres",
            &format!(
                "UPDATE alf_node SET props = props || ' v{run}', \
             modified = modified + interval '1 day' WHERE id % {stride} = {}",
                run as u64 % stride
            ),
        );
        pg.dump("postgres", &file);
        for r in &mut repos {
            let cmds = r.backup(&sources);
            run_step(&mut report, &step, r, cmds, &log, &warm);
        }
    }
    let added = |tool: Tool| -> Vec<f64> {
        report
            .steps
            .iter()
            .find(|(s, _)| *s == step)
            .and_then(|(_, t)| t.get(tool.name()))
            .map(|runs| runs.iter().map(|r| r.repo_delta as f64).collect())
            .unwrap_or_default()
    };
    let store_added = added(Tool::Store);
    for peer in [Tool::Restic, Tool::Borg] {
        let theirs = added(peer);
        if theirs.is_empty() {
            continue;
        }
        let each: Vec<String> =
            store_added.iter().zip(&theirs).map(|(s, t)| format!("{:.2}", s / t)).collect();
        report.notes.push(format!(
            "{step}: store adds {} the bytes {} adds (per run)",
            each.join(", "),
            peer.name()
        ));
    }
    report
}

fn scenario_stages(cli: &Cli, runs: usize, mb: u64) -> Report {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    let mut report = Report { scenario: "stages".into(), machine: machine(), ..Report::default() };
    report.settings.insert("runs".into(), runs.to_string());
    let key = [7u8; 32];
    let aead = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
    let nonce = chacha20poly1305::XNonce::default();
    let chunker = store::Chunker::new(&store::ChunkerParams::default_with_seed(7));
    for corpus in [datasets::Corpus::Synthetic, datasets::Corpus::Realistic] {
        let name = format!("{corpus:?}").to_lowercase();
        let root = cli.work.join(format!("stages-{name}"));
        let _ = std::fs::remove_dir_all(&root);
        eprintln!("generating {mb} MB of {name} content store");
        corpus.contentstore(&root, 5, mb << 20).unwrap();
        let mut files = Vec::new();
        files_of(&root, &mut files);
        files.sort();
        let mut data = Vec::new();
        for f in &files {
            data.extend(std::fs::read(f).unwrap());
        }
        std::fs::remove_dir_all(&root).unwrap();
        report.source_bytes.insert(name.clone(), data.len() as u64);
        let mut cuts = Vec::new();
        let mut at = 0usize;
        chunker
            .cut_all(&data, true, |c| {
                cuts.push(at..at + c.len());
                at += c.len();
                Ok::<_, ()>(())
            })
            .unwrap();
        let chunks: Vec<&[u8]> = cuts.iter().map(|r| &data[r.clone()]).collect();
        let mut compressor = store::Compressor::new(3).unwrap();
        let mut stored: Vec<(store::Codec, Vec<u8>)> = Vec::with_capacity(chunks.len());
        let mut per_stage: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut unsampled = zstd::bulk::Compressor::new(3).unwrap();
        let mut unsampled_s = Vec::new();
        let gb = data.len() as f64 / 1e9;
        for _ in 0..runs {
            let mut time = |stage: &'static str, f: &mut dyn FnMut()| {
                let t = Instant::now();
                f();
                per_stage.entry(stage).or_default().push(t.elapsed().as_secs_f64() / gb);
            };
            time("1 chunk (FastCDC)", &mut || {
                chunker.cut_all(&data, true, black_box_len).unwrap();
            });
            time("2 id (keyed BLAKE3)", &mut || {
                for c in &chunks {
                    black_box_len(blake3::keyed_hash(&key, c).as_bytes()).unwrap();
                }
            });
            stored.clear();
            time("3 compress (zstd 3)", &mut || {
                for c in &chunks {
                    let mut out = Vec::new();
                    let codec = compressor.compress(c, &mut out);
                    stored.push((codec, out));
                }
            });
            time("4 seal (XChaCha20-Poly1305)", &mut || {
                for (_, s) in &mut stored {
                    let tag = aead.encrypt_in_place_detached(&nonce, b"aad", s).unwrap();
                    s.extend_from_slice(&tag);
                }
            });
            // The same blobs through zstd without sampling first (before `looks_incompressible`),
            // outside the total: what sampling saves, measured in the same runs.
            let t = Instant::now();
            for c in &chunks {
                let _ = std::hint::black_box(unsampled.compress(c));
            }
            unsampled_s.push(t.elapsed().as_secs_f64() / gb);
            let mut raw = Vec::new();
            time("5 verify (open, decompress, id)", &mut || {
                for ((codec, s), c) in stored.iter_mut().zip(&chunks) {
                    let tag = s.split_off(s.len() - 16);
                    aead.decrypt_in_place_detached(&nonce, b"aad", s, tag.as_slice().into())
                        .unwrap();
                    let len = u32::try_from(c.len()).unwrap();
                    store::decompress(*codec, s, len, &mut raw).unwrap();
                    black_box_len(blake3::keyed_hash(&key, &raw).as_bytes()).unwrap();
                }
            });
        }
        let stored_bytes: usize = stored.iter().map(|(_, s)| s.len()).sum();
        let mut total = 0.0;
        let mut parts = Vec::new();
        for (stage, v) in &per_stage {
            let m = median(v.clone());
            total += m;
            let each: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
            parts.push(format!("{stage} {m:.2} ({})", each.join(", ")));
            report.references.entry(format!("{name}: {stage}")).or_default().push(1e9 / m);
        }
        report.notes.push(format!(
            "{name} ({:.0} MB, {} chunks, zstd 3 stores {:.1}%): CPU-seconds per GB, one core \
             (median; per run): {}; all stages {total:.2}",
            data.len() as f64 / 1e6,
            chunks.len(),
            100.0 * stored_bytes as f64 / data.len() as f64,
            parts.join("; ")
        ));
        let sampled = per_stage.get("3 compress (zstd 3)").cloned().unwrap_or_default();
        let ratios: Vec<String> =
            unsampled_s.iter().zip(&sampled).map(|(u, s)| format!("{:.2}", u / s)).collect();
        report.notes.push(format!(
            "{name}: compress without sampling (zstd 3 tried on every blob) {:.2} CPU-seconds \
             per GB against {:.2} sampled; unsampled / sampled per run: {}",
            median(unsampled_s),
            median(sampled),
            ratios.join(", ")
        ));
    }
    report
}

/// Keeps the optimizer from dropping a computed value.
fn black_box_len(v: &[u8]) -> Result<(), ()> {
    std::hint::black_box(v.len());
    Ok(())
}

fn scenario_small_files(cli: &Cli, files: u64, runs: usize) -> Report {
    let mut report = Report {
        scenario: format!("small-files-{files}"),
        machine: machine(),
        ..Report::default()
    };
    let work = &cli.work;
    let _ = std::fs::remove_dir_all(work);
    let data = work.join("docs");
    std::fs::create_dir_all(&data).unwrap();
    eprintln!("generating {files} files in one directory");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..files {
        // 200 to 3,000 bytes of incompressible bytes each.
        let len = 200 + (i.wrapping_mul(7919) % 2800) as usize;
        let mut bytes = Vec::with_capacity(len + 8);
        while bytes.len() < len {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            bytes.extend_from_slice(&(state >> 17).to_le_bytes());
        }
        bytes.truncate(len);
        std::fs::write(data.join(format!("{i:07}.bin")), bytes).unwrap();
    }
    let size = bytes_of(&data);
    report.source_bytes.insert("initial".into(), size);
    report.settings.insert("files".into(), files.to_string());
    report.settings.insert("work".into(), work.display().to_string());
    let log = work.join("log.txt");
    let paths = vec![data.clone()];
    let warm = || {
        read_all(&paths);
    };
    let mut r = Repo::new(Tool::Store, work, &cli.store);
    for c in r.init() {
        timed(&c, &log);
    }
    for c in r.backup(&[("docs", data.clone())]) {
        timed(&c, &log);
    }
    let mut ratios: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        eprintln!("run {}", run + 1);
        let target = work.join("cp");
        warm();
        let cp = timed(
            &cmd([
                "cp".into(),
                "-r".into(),
                data.clone().into_os_string(),
                target.clone().into_os_string(),
            ]),
            &log,
        );
        report.references.entry("cp -r".into()).or_default().push(size as f64 / cp.wall_s);
        std::fs::remove_dir_all(&target).unwrap();
        for (step, named) in [("restore, unnamed files", false), ("restore, temporary names", true)]
        {
            let target = work.join("restored");
            let mut cmds = r.restore(&target);
            if named {
                for c in &mut cmds {
                    c.env.push(("STORE_RESTORE_NAMED_TEMPORARIES".into(), "1".into()));
                }
            }
            let restore = run_step(&mut report, step, &r, cmds, &log, &warm);
            ratios.entry(step).or_default().push(restore.wall_s / cp.wall_s);
            let restored = bytes_of(&target);
            assert_eq!(restored, size, "restored {restored} bytes, not {size}");
            std::fs::remove_dir_all(&target).unwrap();
        }
    }
    for (step, r) in ratios {
        let each: Vec<String> = r.iter().map(|x| format!("{x:.2}")).collect();
        report.notes.push(format!(
            "{step}: {:.2}x the time of `cp -r` (median; per run {})",
            median(r.clone()),
            each.join(", ")
        ));
    }
    report
}

/// Writes files `range` of a generated content store into per-minute directories of `per_dir`
/// files (`YYYY/M/D/H/M/<n>.bin`, from 2026-01-01 00:00 on), 100 to 2,000 bytes each.
fn content_store_files(root: &Path, range: std::ops::Range<u64>, per_dir: u64) {
    let mut made = None;
    for i in range {
        let minute = i / per_dir;
        let (h, mi) = (minute / 60 % 24, minute % 60);
        let day = minute / 1440;
        let (m, d) = (1 + day / 28 % 12, 1 + day % 28);
        let y = 2026 + day / 336;
        let dir = root.join(format!("{y}/{m}/{d}/{h}/{mi}"));
        if made.as_ref() != Some(&dir) {
            std::fs::create_dir_all(&dir).unwrap();
            made = Some(dir.clone());
        }
        let len = 100 + (i.wrapping_mul(7919) % 1900) as usize;
        let text = format!("content {i:012} ").repeat(len / 21 + 1);
        std::fs::write(dir.join(format!("{i:012x}.bin")), &text.as_bytes()[..len]).unwrap();
    }
}

/// Looks at every entry below `root` (metadata only): the inode and dentry caches warm, as
/// a content store on a busy server keeps them, whatever a step reads.
fn stat_all(root: &Path) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                let _ = e.metadata();
            }
        }
    }
}

fn scenario_write_once(cli: &Cli, files: u64, per_dir: u64, runs: usize) -> Report {
    let mut report =
        Report { scenario: format!("write-once-{files}"), machine: machine(), ..Report::default() };
    let work = &cli.work;
    let _ = std::fs::remove_dir_all(work);
    let data = work.join("contentstore");
    eprintln!("generating {files} files, {per_dir} per minute directory");
    content_store_files(&data, 0..files, per_dir);
    report.source_bytes.insert("initial".into(), bytes_of(&data));
    report.settings.insert("files".into(), files.to_string());
    report.settings.insert("files per directory".into(), per_dir.to_string());
    report.settings.insert("work".into(), work.display().to_string());
    let log = work.join("log.txt");
    let warm = || stat_all(&data);
    let sources = vec![("content", data.clone())];
    let plain: &[&str] = &["--tag", "whole"];
    let write_once: &[&str] = &["--tag", "write-once", "--write-once", "--write-once-settle", "0s"];
    let mut r = Repo::new(Tool::Store, work, &cli.store);
    for c in r.init() {
        timed(&c, &log);
    }
    let cmds = r.backup_with(&sources, plain);
    run_step(&mut report, "full set, looked at whole", &r, cmds, &log, &warm);
    let cmds = r.backup_with(&sources, write_once);
    run_step(&mut report, "full set, write-once", &r, cmds, &log, &warm);
    // Entries are trusted once they are older than the settling time (a second here) at the
    // start of the set they were last seen by.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let cmds = r.backup_with(&sources, write_once);
    run_step(&mut report, "first write-once incremental (parent trees)", &r, cmds, &log, &warm);
    let mut ratios: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    let mut next = files;
    let new_files = (files / 1000).max(1);
    for run in 0..runs {
        eprintln!("run {}", run + 1);
        for (step, add) in [("no change", 0), ("0.1% new files", new_files)] {
            if add > 0 {
                content_store_files(&data, next..next + add, per_dir);
                next += add;
            }
            let whole_step = format!("{step}, looked at whole");
            let cmds = r.backup_with(&sources, plain);
            let whole = run_step(&mut report, &whole_step, &r, cmds, &log, &warm);
            let wo_step = format!("{step}, write-once");
            let cmds = r.backup_with(&sources, write_once);
            let wo = run_step(&mut report, &wo_step, &r, cmds, &log, &warm);
            ratios
                .entry(step)
                .or_default()
                .push((wo.wall_s / whole.wall_s, wo.peak_rss_kb as f64 / whole.peak_rss_kb as f64));
        }
    }
    for (step, target) in [("no change", 0.2), ("0.1% new files", 1.0 / 3.0)] {
        let r = ratios.remove(step).unwrap_or_default();
        let time: Vec<f64> = r.iter().map(|x| x.0).collect();
        let rss: Vec<f64> = r.iter().map(|x| x.1).collect();
        let each: Vec<String> = time.iter().map(|x| format!("{x:.3}")).collect();
        let t = median(time.clone());
        report.notes.push(format!(
            "{step}: write-once takes {t:.3}x the time of looking at every file (median; per run \
             {}; target <= {target:.2}: {}); peak RSS {:.2}x",
            each.join(", "),
            if t <= target { "met" } else { "NOT met" },
            median(rss)
        ));
    }
    report
}

/// Fills a repository with `n` small unique data blobs, as packs and index files written by
/// the engine itself.
fn inflate(repo_path: &Path, cache: &Path, n: u64) {
    let repo = store::Repository::open(
        repo_path,
        &store::OpenOptions {
            cache_dir: Some(cache.to_path_buf()),
            password: Some(store::crypto::Password::new(b"bench".to_vec())),
            ..Default::default()
        },
    )
    .unwrap();
    let mut compressor = store::Compressor::new(3).unwrap();
    let layout = repo.layout().clone();
    let crypto = repo.crypto().clone();
    let mut pack =
        store::PackWriter::create(&layout.tmp_dir(), repo.config().version, &crypto).unwrap();
    for i in 0..n {
        let raw = format!("synthetic blob {i:012} of the growth benchmark");
        let id = repo.blob_id(raw.as_bytes());
        let blob = store::EncodedBlob::encode(
            id,
            store::BlobKind::Data,
            raw.as_bytes(),
            &mut compressor,
            &crypto,
        )
        .unwrap();
        pack.add(&blob).unwrap();
        if pack.len() > 16 << 20 || i + 1 == n {
            let full = std::mem::replace(
                &mut pack,
                store::PackWriter::create(&layout.tmp_dir(), repo.config().version, &crypto)
                    .unwrap(),
            );
            let sealed = full.seal(|id| layout.pack(id)).unwrap();
            repo.save_index_file(&[store::IndexedPack {
                id: sealed.id,
                len: sealed.len,
                entries: sealed.entries,
            }])
            .unwrap();
        }
    }
    // As after a rebuilt cache: the bulk ingest's compaction is done before measuring.
    repo.index().unwrap().compact().unwrap();
}

/// Bytes per second of `f` over `data` (one pass).
fn rate(data: &[u8], mut f: impl FnMut(&[u8])) -> f64 {
    let t = std::time::Instant::now();
    for piece in data.chunks(128 << 10) {
        f(piece);
    }
    data.len() as f64 / t.elapsed().as_secs_f64()
}

/// zstd level 3 on each document class, in 128 KiB pieces as `store` compresses blobs: speed
/// (bytes per second, one core) in the report's references, ratio in its notes.
fn scenario_corpus(runs: usize, mb: usize) -> Report {
    use rand::SeedableRng;
    use store_benches::realistic::{sample, Class, Vocabulary};
    let mut report = Report { scenario: "corpus".into(), machine: machine(), ..Report::default() };
    let bytes = mb << 20;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
    let vocabulary = Vocabulary::new(11);
    let mut classes: Vec<(String, Vec<u8>)> = vec![
        ("synthetic: text of 26 words".into(), store_benches::document_bytes(&mut rng, bytes)),
        ("synthetic: media (random)".into(), store_benches::media_bytes(&mut rng, bytes)),
    ];
    for class in Class::ALL {
        let mut data = Vec::with_capacity(bytes + (1 << 20));
        while data.len() < bytes {
            data.extend(sample(&mut rng, &vocabulary, class, 300_000));
        }
        data.truncate(bytes);
        classes.push((format!("realistic: {}", class.name()), data));
    }
    report.source_bytes.insert("per class".into(), bytes as u64);
    report.settings.insert("runs".into(), runs.to_string());
    for (name, data) in &classes {
        let packed: usize = data
            .chunks(128 << 10)
            .map(|p| zstd::bulk::compress(p, 3).map_or(p.len(), |c| c.len().min(p.len())))
            .sum();
        report.notes.push(format!(
            "{name}: zstd -3 ratio {:.2} (stored/raw {:.1}%)",
            data.len() as f64 / packed as f64,
            100.0 * packed as f64 / data.len() as f64
        ));
        // What sampling before zstd (`store::looks_incompressible`) skips, and what zstd would
        // have saved on the pieces it skips.
        let (mut skipped, mut lost) = (0usize, 0usize);
        for p in data.chunks(128 << 10).filter(|p| store::looks_incompressible(p)) {
            skipped += 1;
            // Only a frame that saves 1/32 is kept (`store::Compressor::compress`).
            let z = zstd::bulk::compress(p, 3).map_or(p.len(), |c| c.len());
            if z < p.len() - p.len() / 32 {
                lost += p.len() - z;
            }
        }
        report.notes.push(format!(
            "{name}: {skipped} of {} pieces sampled as incompressible (stored raw without zstd), \
             zstd would have saved {lost} bytes on them ({:.2}% of the class)",
            data.len().div_ceil(128 << 10),
            100.0 * lost as f64 / data.len() as f64
        ));
        let mut ctx = zstd::bulk::Compressor::new(3).unwrap();
        let mut store_ctx = store::Compressor::new(3).unwrap();
        let mut out = Vec::new();
        for _ in 0..runs {
            let speed = rate(data, |p| {
                let _ = ctx.compress(p);
            });
            report.references.entry(format!("zstd -3 on {name}")).or_default().push(speed);
            let speed = rate(data, |p| {
                let _ = store_ctx.compress(p, &mut out);
            });
            report
                .references
                .entry(format!("store (sampled, zstd -3) on {name}"))
                .or_default()
                .push(speed);
        }
    }
    report
}

fn scenario_aead(runs: usize) -> Report {
    use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
    use rand::SeedableRng;
    let mut report = Report { scenario: "aead".into(), machine: machine(), ..Report::default() };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    let media = store_benches::media_bytes(&mut rng, 256 << 20);
    let docs = store_benches::document_bytes(&mut rng, 64 << 20);
    report.source_bytes.insert("initial".into(), media.len() as u64);
    let key = [7u8; 32];
    let chacha = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
    let siv = aes_gcm_siv::Aes256GcmSiv::new(&key.into());
    let xnonce = chacha20poly1305::XNonce::default();
    let nonce = aes_gcm_siv::Nonce::default();
    let mut buf = Vec::with_capacity((128 << 10) + 16);
    let mut compressor = store::Compressor::new(3).unwrap();
    let mut out = Vec::new();
    for _ in 0..runs {
        let mut add =
            |name: &str, v: f64| report.references.entry(name.into()).or_default().push(v);
        let mut seal_open = |seal: &dyn Fn(&mut Vec<u8>), open: &dyn Fn(&mut Vec<u8>)| {
            let s = rate(&media, |p| {
                buf.clear();
                buf.extend_from_slice(p);
                seal(&mut buf);
            });
            let o = rate(&media, |p| {
                buf.clear();
                buf.extend_from_slice(p);
                seal(&mut buf);
                open(&mut buf);
            });
            // Opening is measured as seal + open minus seal.
            let open_rate = 1.0 / (1.0 / o - 1.0 / s).max(1e-12);
            (s, open_rate)
        };
        let (s, o) = seal_open(
            &|b| {
                let tag = chacha.encrypt_in_place_detached(&xnonce, b"aad", b).unwrap();
                b.extend_from_slice(&tag);
            },
            &|b| {
                let tag = b.split_off(b.len() - 16);
                chacha
                    .decrypt_in_place_detached(&xnonce, b"aad", b, tag.as_slice().into())
                    .unwrap();
            },
        );
        add("seal XChaCha20-Poly1305 (format 3)", s);
        add("open XChaCha20-Poly1305 (format 3)", o);
        let (s, o) = seal_open(
            &|b| {
                let tag = siv.encrypt_in_place_detached(&nonce, b"aad", b).unwrap();
                b.extend_from_slice(&tag);
            },
            &|b| {
                let tag = b.split_off(b.len() - 16);
                siv.decrypt_in_place_detached(&nonce, b"aad", b, tag.as_slice().into()).unwrap();
            },
        );
        add("seal AES-256-GCM-SIV", s);
        add("open AES-256-GCM-SIV", o);
        // The same XChaCha20-Poly1305 bytes through ring's assembly: HChaCha20 for the subkey,
        // then ChaCha20-Poly1305 with the nonce's last 8 bytes.
        let ring_key = || {
            let sub = chacha20::hchacha::<chacha20::cipher::consts::U10>(
                &key.into(),
                chacha20::cipher::generic_array::GenericArray::from_slice(&[0u8; 16]),
            );
            ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &sub).unwrap(),
            )
        };
        // ring's AEADs under a key made per message by `key`, as the formats seal.
        let mut ring_pair = |name: &str, key: &dyn Fn() -> ring::aead::LessSafeKey| {
            let nonce = || ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
            let aad = || ring::aead::Aad::from(b"aad");
            let (s, o) = seal_open(
                &|b| {
                    let tag = key().seal_in_place_separate_tag(nonce(), aad(), b).unwrap();
                    b.extend_from_slice(tag.as_ref());
                },
                &|b| {
                    key().open_in_place(nonce(), aad(), b).unwrap();
                },
            );
            add(&format!("seal {name}"), s);
            add(&format!("open {name}"), o);
        };
        ring_pair("XChaCha20-Poly1305 (ring)", &ring_key);
        // XAES-256-GCM (C2SP): AES-256-GCM under a key derived per message from the 192-bit
        // nonce's first 12 bytes with two AES-256 blocks, as ring's AES-256-GCM (AES-NI, VAES).
        let xaes_key = || {
            use aes::cipher::{BlockEncrypt, KeyInit as _};
            let aes = aes::Aes256::new(&key.into());
            let mut l = aes::Block::default();
            aes.encrypt_block(&mut l);
            // K1 = L doubled in GF(2^128), as CMAC's first subkey.
            let mut k1 = aes::Block::default();
            for i in 0..16 {
                k1[i] = (l[i] << 1) | l.get(i + 1).map_or(0, |n| n >> 7);
            }
            if l[0] & 0x80 != 0 {
                k1[15] ^= 0x87;
            }
            let mut sub = [0u8; 32];
            for (i, half) in sub.chunks_exact_mut(16).enumerate() {
                let mut m = aes::Block::default();
                m[1] = i as u8 + 1;
                m[2] = b'X';
                for (a, b) in m.iter_mut().zip(k1.iter()) {
                    *a ^= b;
                }
                aes.encrypt_block(&mut m);
                half.copy_from_slice(&m);
            }
            ring::aead::LessSafeKey::new(
                ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &sub).unwrap(),
            )
        };
        ring_pair("XAES-256-GCM (ring)", &xaes_key);
        add(
            "BLAKE3 keyed (format 3 ids)",
            rate(&media, |p| {
                std::hint::black_box(blake3::keyed_hash(&key, p));
            }),
        );
        add(
            "BLAKE3 unkeyed",
            rate(&media, |p| {
                std::hint::black_box(blake3::hash(p));
            }),
        );
        add(
            "zstd 3, documents",
            rate(&docs, |p| {
                std::hint::black_box(compressor.compress(p, &mut out));
            }),
        );
    }
    report.notes.push(
        "one core, 128 KiB pieces (the average chunk), 256 MiB of incompressible bytes; open = \
         (seal + open) - seal"
            .into(),
    );
    report
}

fn scenario_growth(cli: &Cli, blobs: &[u64]) -> Report {
    let mut report = Report { scenario: "growth".into(), machine: machine(), ..Report::default() };
    let work = &cli.work;
    let _ = std::fs::remove_dir_all(work);
    let data = work.join("data");
    let g = store_benches::generate_contentstore(&data, 7, 500_000_000).unwrap();
    report.source_bytes.insert("initial".into(), g.bytes);
    let log = work.join("log.txt");
    let paths = vec![data.clone()];
    let warm = || {
        read_all(&paths);
    };
    for &n in blobs {
        let mut r = Repo {
            tool: Tool::Store,
            path: work.join(format!("repo-{n}")),
            cache: work.join(format!("cache-{n}")),
            store: cli.store.clone(),
            metrics: None,
            sets: 0,
        };
        for c in r.init() {
            timed(&c, &log);
        }
        eprintln!("inflating a repository with {n} blobs");
        let started = Instant::now();
        inflate(&r.path, &r.cache, n);
        report.notes.push(format!(
            "{n} blobs written (packs, index files, cache) in {:.0} s; repository {:.0} MB",
            started.elapsed().as_secs_f64(),
            bytes_of(&r.path) as f64 / 1e6
        ));
        let sources = vec![("content", data.clone())];
        let cmds = r.backup(&sources);
        run_step(
            &mut report,
            &format!("full set, {n} blobs in the repository"),
            &r,
            cmds,
            &log,
            &warm,
        );
        let cmds = r.backup(&sources);
        run_step(&mut report, &format!("incremental, no change, {n} blobs"), &r, cmds, &log, &warm);
        std::fs::remove_dir_all(&r.path).unwrap();
        std::fs::remove_dir_all(&r.cache).unwrap();
    }
    report
}

fn main() {
    let cli = Cli::parse();
    let report = match &cli.command {
        Scenario::Run { dataset, scale, runs, tools, cache, corpus, s3, s3_metrics } => {
            let mut tools = usable(&cli, tools);
            if s3.is_some() {
                tools.retain(|t| *t != Tool::Borg);
            }
            let remote = s3.as_deref().map(|url| Remote { url, metrics: s3_metrics.as_deref() });
            let spec = RunSpec {
                dataset: *dataset,
                scale: *scale,
                runs: *runs,
                cache: *cache,
                corpus: corpus.corpus(),
                remote,
            };
            scenario_run(&cli, spec, &tools)
        }
        Scenario::Corpus { runs, mb } => scenario_corpus(*runs, *mb),
        Scenario::Metadata { files, tools } => {
            let tools = usable(&cli, tools);
            scenario_metadata(&cli, *files, &tools)
        }
        Scenario::Growth { blobs } => scenario_growth(&cli, blobs),
        Scenario::SmallFiles { files, runs } => scenario_small_files(&cli, *files, *runs),
        Scenario::WriteOnce { files, per_dir, runs } => {
            scenario_write_once(&cli, *files, *per_dir, *runs)
        }
        Scenario::Stages { runs, mb } => scenario_stages(&cli, *runs, *mb),
        Scenario::PgDump { rows, updates, runs, tools } => {
            let tools = usable(&cli, tools);
            scenario_pg_dump(&cli, *rows, *updates, *runs, &tools)
        }
        Scenario::Aead { runs } => scenario_aead(*runs),
    };
    let md = markdown(&report);
    print!("{md}");
    std::fs::create_dir_all(&cli.out).unwrap();
    std::fs::write(cli.out.join(format!("{}.md", report.scenario)), &md).unwrap();
    std::fs::write(
        cli.out.join(format!("{}.json", report.scenario)),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
}

fn usable(cli: &Cli, names: &[String]) -> Vec<Tool> {
    let mut out = Vec::new();
    for n in names {
        match Tool::parse(n) {
            Some(t) if t.installed(&cli.store) => out.push(t),
            Some(t) => eprintln!("store-bench: {} is not installed: left out", t.name()),
            None => panic!("unknown tool {n:?} (store, store-plain, store-xchacha, restic, borg)"),
        }
    }
    assert!(out.contains(&Tool::Store), "the store binary {} is missing", cli.store.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(wall_s: f64) -> StepRun {
        StepRun {
            measured: Measured { wall_s, peak_rss_kb: 1, cpu_s: 1.0 },
            requests: None,
            repo_delta: 0,
            repo_bytes: 0,
        }
    }

    #[test]
    fn the_report_lists_every_runs_ratio_to_store() {
        let mut report = Report { scenario: "t".into(), ..Report::default() };
        for (s, r) in [(4.0, 10.0), (5.0, 10.0), (4.0, 12.0)] {
            report.record("full set", Tool::Store, run(s));
            report.record("full set", Tool::Restic, run(r));
        }
        let md = markdown(&report);
        assert!(md.contains("| full set | 2.50x, 2.00x, 3.00x |"), "{md}");
        // The median table keeps the ratio of medians.
        assert!(md.contains("| full set | store | 4.00 s |"), "{md}");
        assert!(md.contains(" 2.50x |"), "{md}");

        // A single run has no spread to show.
        let mut one = Report { scenario: "t".into(), ..Report::default() };
        one.record("full set", Tool::Store, run(4.0));
        one.record("full set", Tool::Restic, run(10.0));
        assert!(!markdown(&one).contains("Per run"));
    }
}
