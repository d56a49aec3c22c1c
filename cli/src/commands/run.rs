//! `store run PROFILE`: the job a profile describes, step by step, each step a `store` command
//! (so the log and a dry run show exactly what ran): hooks.before, snapshot, forget, prune,
//! check, then hooks.after or hooks.on_error. One exit status for the whole: the first failure's,
//! else 3 when a step was partial, else 0.

use std::ffi::{OsStr, OsString};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::args::RunArgs;
use crate::output::{stderr, summary};
use crate::profile::{subset, Config, Profile, Source, SourceTable};

/// One step: its name and its arguments to `store`.
struct Step {
    name: &'static str,
    args: Vec<OsString>,
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_os_string()
}

/// The arguments every step of `p` starts with, then `command`.
fn base(p: &Profile, command: &str) -> Vec<OsString> {
    let mut a = vec![os("--repo"), os(&p.repository)];
    if let Some(f) = &p.password_file {
        a.extend([os("--password-file"), os(f)]);
    }
    if let Some(d) = &p.cache_dir {
        a.extend([os("--cache-dir"), os(d)]);
    }
    if let Some(l) = &p.log_file {
        a.extend([os("--log-file"), os(l)]);
    }
    if let Some(w) = &p.lock_wait {
        a.extend([os("--lock-wait"), os(w)]);
    }
    a.push(os(command));
    a
}

/// The host and tags that scope `p`'s sets.
fn scope(p: &Profile, host: &str) -> Vec<OsString> {
    let mut a = vec![os("--host"), os(host)];
    for t in &p.tags {
        a.extend([os("--tag"), os(t)]);
    }
    a
}

/// The steps of `p` after its before hook.
fn steps(p: &Profile, host: &str, metrics_tmp: Option<&std::path::Path>) -> Result<Vec<Step>> {
    let mut snapshot = base(p, "snapshot");
    snapshot.extend(scope(p, host));
    for e in &p.exclude {
        snapshot.extend([os("--exclude"), os(e)]);
    }
    for a in &p.append_only {
        snapshot.extend([os("--append-only"), os(a)]);
    }
    if let Some(s) = &p.write_once_settle {
        snapshot.extend([os("--write-once-settle"), os(s)]);
    }
    if p.one_file_system {
        snapshot.push(os("--one-file-system"));
    }
    if p.require_data {
        snapshot.push(os("--require-data"));
    }
    if let Some(crate::profile::VerifyKind::Alfresco) = p.verify {
        snapshot.extend([os("--verify"), os("alfresco")]);
    }
    if let Some(m) = metrics_tmp {
        snapshot.extend([os("--metrics-file"), os(m)]);
    }
    for (name, source) in &p.components {
        let (flag, value) = match source.get_ref() {
            Source::Path(path) | Source::Table(SourceTable { path: Some(path), .. }) => {
                ("--component", path.as_os_str().to_os_string())
            }
            Source::Table(SourceTable { cmd: Some(cmd), .. }) => ("--component-cmd", os(cmd)),
            Source::Table(_) => anyhow::bail!("component {name}: no path and no cmd"),
        };
        let mut v = os(format!("{name}="));
        v.push(value);
        snapshot.extend([os(flag), v]);
        if let Source::Table(SourceTable { write_once: true, .. }) = source.get_ref() {
            snapshot.push(os("--write-once"));
        }
    }
    let mut out = vec![Step { name: "snapshot", args: snapshot }];
    if let Some(f) = &p.forget {
        let mut a = base(p, "forget");
        a.extend(scope(p, host));
        for (flag, v) in [
            ("--keep-last", f.keep_last),
            ("--keep-hourly", f.keep_hourly),
            ("--keep-daily", f.keep_daily),
            ("--keep-weekly", f.keep_weekly),
            ("--keep-monthly", f.keep_monthly),
            ("--keep-yearly", f.keep_yearly),
            ("--keep-full", f.keep_full),
        ] {
            if let Some(v) = v {
                a.extend([os(flag), os(v.to_string())]);
            }
        }
        if let Some(w) = &f.keep_within {
            a.extend([os("--keep-within"), os(w)]);
        }
        out.push(Step { name: "forget", args: a });
        let prune = p.prune.as_ref();
        if prune.is_none_or(|p| p.enabled) {
            let mut a = base(p, "prune");
            if let Some(m) = prune.and_then(|p| p.max_unused) {
                a.extend([os("--max-unused"), os(m.to_string())]);
            }
            out.push(Step { name: "prune", args: a });
        }
    }
    if let Some(c) = &p.check {
        let mut a = base(p, "check");
        if c.read_data {
            a.push(os("--read-data"));
            if let Some(age) = &c.max_age {
                a.extend([os("--max-age"), os(age)]);
            }
            if let Some(bytes) = &c.max_bytes {
                a.extend([os("--max-bytes"), os(bytes)]);
            }
        } else if let Some(s) = &c.read_data_subset {
            let day = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400);
            a.extend([os("--read-data-subset"), os(subset(s, day)?)]);
        }
        out.push(Step { name: "check", args: a });
    }
    Ok(out)
}

/// A step's arguments as a command line to show.
fn shown(args: &[OsString]) -> String {
    let quote = |a: &OsString| {
        let s = a.to_string_lossy();
        if s.chars().all(|c| c.is_ascii_alphanumeric() || "-_=/.,:@%+".contains(c)) {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    std::iter::once("store".to_owned()).chain(args.iter().map(quote)).collect::<Vec<_>>().join(" ")
}

/// Runs hook `cmd` with the job's outcome in its environment; its exit status.
fn hook(name: &str, cmd: &str, profile: &str, env: &[(&str, String)]) -> i32 {
    crate::output::log(&format!("hook {name}: {cmd}"));
    let status = Command::new("sh")
        .args(["-c", cmd])
        .env("STORE_PROFILE", profile)
        .env("STORE_HOOK", name)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status();
    match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            stderr!("store: error: hook {name} could not run: {e}");
            1
        }
    }
}

/// A child's exit status as a `store` status (killed by a signal: 1).
fn exit_of(s: std::process::ExitStatus) -> u8 {
    s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(crate::EXIT_ERROR)
}

/// The job's status so far and a step's: the first failure stays; partial beats success.
fn worse(so_far: u8, step: u8) -> u8 {
    match (so_far, step) {
        (0 | 3, 0) => so_far,
        (0, 3) => 3,
        (0 | 3, s) => s,
        (f, _) => f,
    }
}

/// The `store_snapshot_*` lines of the snapshot step's metrics (its figures).
fn snapshot_figures(path: &std::path::Path) -> Vec<(String, f64)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter(|l| l.starts_with("store_snapshot_"))
        .filter_map(|l| {
            let name = l.split(['{', ' ']).next()?.strip_prefix("store_")?;
            Some((name.to_owned(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

pub fn run(args: &RunArgs) -> Result<ExitCode> {
    let config = Config::load(args.config.as_deref())?;
    let p = config.profile(&args.profile)?;
    let name = args.profile.as_str();
    let host = p.host.clone().unwrap_or_else(super::snapshot::host_name);
    if let Some(log) = &p.log_file {
        if !crate::output::logging() {
            crate::output::open_log(log, "run")
                .with_context(|| format!("cannot open the log file {}", log.display()))?;
            crate::output::log(&format!("started: store run {name} ({})", config.path.display()));
        }
    }
    let exe = std::env::current_exe().context("cannot find the store binary to run the steps")?;
    if args.dry_run {
        return dry_run(p, &host, &exe);
    }
    let metrics_file = args.metrics_file.as_ref().or(p.metrics_file.as_ref());
    if let Some(m) = metrics_file {
        crate::metrics::want(m, "run", &[("profile", name.to_owned()), ("host", host.clone())]);
    }
    let metrics_tmp = metrics_file.map(|m| {
        let mut t = m.as_os_str().to_os_string();
        t.push(format!(".snapshot.{}", std::process::id()));
        std::path::PathBuf::from(t)
    });
    let mut status = 0u8;
    let mut failed = String::new();
    let mut results: Vec<serde_json::Value> = Vec::new();
    if let Some(cmd) = &p.hooks.before {
        let code = hook("before", cmd, name, &[]);
        if code != 0 {
            stderr!("store: error: profile {name}: the before hook exited {code}; nothing was run");
            status = crate::EXIT_ERROR;
            failed = "before".into();
        }
    }
    if status == 0 {
        for mut step in steps(p, &host, metrics_tmp.as_deref())? {
            if args.json {
                step.args.push(os("--json"));
            }
            crate::output::log(&format!("step {}: {}", step.name, shown(&step.args)));
            let mut child = Command::new(&exe);
            child.args(&step.args).env("STORE_PROFILE", name);
            if let Some(cmd) = &p.password_command {
                child.env("STORE_PASSWORD_COMMAND", cmd);
            }
            let (code, result) = if args.json {
                // The step's JSON document is its standard output; its stderr stays the job's.
                match child.stderr(std::process::Stdio::inherit()).output() {
                    Ok(out) => (
                        exit_of(out.status),
                        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
                    ),
                    Err(_) => (crate::EXIT_ERROR, serde_json::Value::Null),
                }
            } else {
                (child.status().map_or(crate::EXIT_ERROR, exit_of), serde_json::Value::Null)
            };
            if args.json {
                crate::output::log(&format!("step {}: json {result}", step.name));
                results.push(serde_json::json!({
                    "step": step.name,
                    "command": shown(&step.args),
                    "exit_code": code,
                    "result": result,
                }));
            }
            crate::output::log(&format!("step {}: exit {code}", step.name));
            status = worse(status, code);
            if code != 0 && code != crate::EXIT_PARTIAL {
                failed = step.name.into();
                break; // a failed step stops the job: no forget or prune after a failed set
            }
        }
    }
    if let Some(t) = &metrics_tmp {
        for (name, v) in snapshot_figures(t) {
            crate::metrics::value_owned(name, v);
        }
        let _ = std::fs::remove_file(t);
    }
    let outcome = match status {
        0 => "success",
        3 => "partial",
        _ => "failure",
    };
    let env = [
        ("STORE_OUTCOME", outcome.to_owned()),
        ("STORE_EXIT_CODE", status.to_string()),
        ("STORE_FAILED_STEP", failed.clone()),
    ];
    let (which, cmd) = if failed.is_empty() {
        ("after", p.hooks.after.as_ref())
    } else {
        ("on_error", p.hooks.on_error.as_ref())
    };
    if let Some(cmd) = cmd {
        let code = hook(which, cmd, name, &env);
        if code != 0 {
            stderr!("store: error: profile {name}: the {which} hook exited {code}");
            status = worse(status, crate::EXIT_ERROR);
        }
    }
    if args.json {
        let failed_step =
            if failed.is_empty() { serde_json::Value::Null } else { failed.clone().into() };
        super::print_json(&serde_json::json!({
            "profile": name,
            "outcome": outcome,
            "exit_code": status,
            "failed_step": failed_step,
            "steps": results,
        }))?;
    } else {
        summary!(
            "profile {name}: {outcome} (exit {status}){}",
            if failed.is_empty() { String::new() } else { format!(", {failed} failed") }
        );
    }
    Ok(ExitCode::from(status))
}

/// Shows each step and runs what can run without changing anything: the snapshot, forget and
/// prune with `--dry-run`.
fn dry_run(p: &Profile, host: &str, exe: &std::path::Path) -> Result<ExitCode> {
    let mut status = 0u8;
    if let Some(cmd) = &p.hooks.before {
        summary!("hook before (not run): {cmd}");
    }
    for step in steps(p, host, None)? {
        summary!("step {}: {}", step.name, shown(&step.args));
        if step.name == "check" {
            summary!("  (not run in a dry run)");
            continue;
        }
        let mut child = Command::new(exe);
        if let Some(cmd) = &p.password_command {
            child.env("STORE_PASSWORD_COMMAND", cmd);
        }
        let code =
            child.args(&step.args).arg("--dry-run").status().map_or(crate::EXIT_ERROR, exit_of);
        status = worse(status, code);
    }
    for (which, cmd) in [("after", &p.hooks.after), ("on_error", &p.hooks.on_error)] {
        if let Some(cmd) = cmd {
            summary!("hook {which} (not run): {cmd}");
        }
    }
    Ok(ExitCode::from(status))
}
