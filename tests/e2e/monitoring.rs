//! Unattended runs (issue 18, "Monitoring"): `--log-file` keeps what each run said, with times,
//! under `-q` too; `--metrics-file` writes a Prometheus textfile-collector file whatever the
//! outcome, parsed here with a Prometheus text-format parser.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use crate::support::{write, Env};

/// Metric name -> (value, labels) of a textfile-collector file.
fn metrics(path: &Path) -> HashMap<String, (f64, HashMap<String, String>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    assert!(!scrape.samples.is_empty(), "{text}");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Gauge(v) => v,
                other => panic!("{}: not a gauge: {other:?}", s.metric),
            };
            let labels = s.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            (s.metric, (v, labels))
        })
        .collect()
}

// See: issue 18 ("`--log-file FILE` (timestamped lines, appended)"; "`--metrics-file FILE` ...
// written atomically at the end: last success time, duration, bytes read and added, files, exit
// code, labelled by profile or tag. A test parses it with a Prometheus text-format parser").
#[test]
fn log_and_metrics_files_tell_what_each_unattended_run_did() {
    let env = Env::new();
    env.init();
    let src = env.path("content");
    write(&src.join("a.bin"), &[7u8; 5000]);
    write(&src.join("b.bin"), b"b");
    let log = env.path("logs/store.log");
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let prom = env.path("textfile/store-nightly.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let snapshot = |source: &Path| {
        env.run(
            "snapshot",
            &[
                OsStr::new("-q"),
                OsStr::new("--log-file"),
                log.as_os_str(),
                OsStr::new("--tag"),
                OsStr::new("nightly"),
                OsStr::new("--metrics-file"),
                prom.as_os_str(),
                source.as_os_str(),
            ],
        )
    };
    let run = snapshot(&src);
    assert_eq!((run.code, run.stdout.as_str(), run.stderr.as_str()), (0, "", ""), "-q is silent");
    let m = metrics(&prom);
    assert_eq!(m["store_last_exit_code"].0, 0.0);
    assert_eq!(m["store_snapshot_files"].0, 2.0);
    assert_eq!(m["store_snapshot_bytes_read"].0, 5001.0);
    assert!(m["store_snapshot_bytes_added"].0 > 0.0);
    let ok_at = m["store_last_success_timestamp_seconds"].0;
    assert_eq!(ok_at, m["store_last_run_timestamp_seconds"].0);
    let labels = &m["store_last_exit_code"].1;
    assert_eq!((labels["command"].as_str(), labels["tags"].as_str()), ("snapshot", "nightly"));
    let leftovers: Vec<_> = std::fs::read_dir(prom.parent().unwrap()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temp file left beside the metrics");

    // A failed run: its status and time, and the last success carried over.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let run = snapshot(&env.path("no-such-source"));
    assert_eq!(run.code, 1);
    let m = metrics(&prom);
    assert_eq!(m["store_last_exit_code"].0, 1.0);
    assert_eq!(m["store_last_success_timestamp_seconds"].0, ok_at);
    assert!(m["store_last_run_timestamp_seconds"].0 > ok_at);
    assert!(!m.contains_key("store_snapshot_files"), "no figures for a run that did nothing");

    // The log: both runs, each line with its time, pid and command, the summary despite -q.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("20") && l.contains(" store[") && l.contains("] snapshot: ")),
        "{text}"
    );
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
    };
    assert!(pos("started: ") < pos("saved: 2 files"));
    assert!(pos("saved: 2 files") < pos("finished: exit 0"));
    assert!(pos("finished: exit 0") < pos("store: error: "));
    assert!(pos("no-such-source") < pos("finished: exit 1"));

    // check and prune write theirs too.
    let check_prom = env.path("textfile/check.prom");
    env.run(
        "check",
        &[OsStr::new("--read-data"), OsStr::new("--metrics-file"), check_prom.as_os_str()],
    )
    .ok();
    let m = metrics(&check_prom);
    assert_eq!(m["store_check_damage_findings"].0, 0.0);
    assert!(m["store_check_blobs_read"].0 >= 3.0);
    assert_eq!(m["store_last_exit_code"].1["read_data"], "all");
    assert!(m["store_check_packs_verified"].0 >= 1.0);
    // A check of what is due: everything was verified just now.
    env.run(
        "check",
        &[
            OsStr::new("--read-data"),
            OsStr::new("--max-age"),
            OsStr::new("30d"),
            OsStr::new("--metrics-file"),
            check_prom.as_os_str(),
        ],
    )
    .ok();
    let m = metrics(&check_prom);
    assert_eq!(m["store_last_exit_code"].1["read_data"], "due");
    assert_eq!((m["store_check_bytes_due"].0, m["store_check_packs_verified"].0), (0.0, 0.0));
    let prune_prom = env.path("textfile/prune.prom");
    env.run("prune", &[OsStr::new("--metrics-file"), prune_prom.as_os_str()]).ok();
    assert_eq!(metrics(&prune_prom)["store_last_exit_code"].0, 0.0);
}
