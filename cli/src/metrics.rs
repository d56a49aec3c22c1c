//! `--metrics-file`: a Prometheus textfile-collector file (node_exporter's
//! `--collector.textfile.directory`) written atomically when the command ends, whatever its
//! outcome: when it ran, how long, its exit status, when it last succeeded, and what it did.
//!
//! A command asks for it with [`want`] and adds its figures with [`value`] as it learns them;
//! `main` calls [`finish`] with the exit status. One file per job (node_exporter reads every
//! `*.prom` of its directory): the last success time of a failed run is carried over from the
//! file the previous run wrote.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Record {
    path: PathBuf,
    labels: Vec<(&'static str, String)>,
    values: Vec<(String, String, f64)>,
}

static RECORD: Mutex<Option<Record>> = Mutex::new(None);

/// Asks for the metrics file `path` for this run of `command`, labelled with `labels` (the
/// command, and what tells jobs apart: the host, the tags).
pub fn want(path: &Path, command: &str, labels: &[(&'static str, String)]) {
    let mut all = vec![("command", command.to_owned())];
    // A step of `store run PROFILE` is labelled with its profile.
    if let Some(profile) = std::env::var("STORE_PROFILE").ok().filter(|_| command != "run") {
        all.push(("profile", profile));
    }
    all.extend(labels.iter().cloned());
    if let Ok(mut r) = RECORD.lock() {
        *r = Some(Record { path: path.to_path_buf(), labels: all, values: Vec::new() });
    }
}

/// Adds the figure `name` (`store_` is prefixed), described by `help`.
pub fn value(name: &'static str, help: &'static str, v: f64) {
    if let Ok(mut r) = RECORD.lock() {
        if let Some(r) = r.as_mut() {
            r.values.push((name.to_owned(), help.to_owned(), v));
        }
    }
}

/// Adds a figure another `store` process measured (a step of `store run`).
pub fn value_owned(name: String, v: f64) {
    if let Ok(mut r) = RECORD.lock() {
        if let Some(r) = r.as_mut() {
            r.values.push((name, "Measured by the snapshot step.".to_owned(), v));
        }
    }
}

/// A label value as the text format quotes it.
fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The last success time the file at `path` holds, if any.
fn last_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find(|l| l.starts_with("store_last_success_timestamp_seconds"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Writes the metrics file, if one was asked for: the run's figures, its exit status and
/// duration, and the time of the last success (now, when `status` is 0). Temp file in the same
/// directory, fsync, rename: a collector never reads half a file.
///
/// # Errors
/// The file cannot be written.
pub fn finish(status: u8, duration: std::time::Duration) -> std::io::Result<Option<PathBuf>> {
    let Some(record) = RECORD.lock().ok().and_then(|mut r| r.take()) else { return Ok(None) };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let success = if status == 0 { Some(now) } else { last_success(&record.path) };
    let labels: Vec<String> =
        record.labels.iter().map(|(k, v)| format!("{k}=\"{}\"", quote(v))).collect();
    let labels = format!("{{{}}}", labels.join(","));
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        text.push_str(&format!(
            "# HELP store_{name} {help}\n# TYPE store_{name} gauge\nstore_{name}{labels} {v}\n"
        ));
    };
    gauge("last_run_timestamp_seconds", "When the last run ended (Unix time).", now);
    if let Some(t) = success {
        gauge("last_success_timestamp_seconds", "When the last successful run ended.", t);
    }
    gauge("last_duration_seconds", "How long the last run took.", duration.as_secs_f64());
    gauge("last_exit_code", "The exit status of the last run (0: success).", f64::from(status));
    for (name, help, v) in &record.values {
        gauge(name, help, *v);
    }
    let dir = record.path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        record.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::File::create(&temp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, &record.path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(Some(record.path))
}
