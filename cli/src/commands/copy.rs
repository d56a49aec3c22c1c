//! `store copy`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::CopyArgs;
use crate::output::{size, summary};
use crate::progress::Bar;

pub fn run(repo_arg: RepoArg, args: &CopyArgs) -> Result<ExitCode> {
    let to_arg = RepoArg { path: args.to.clone().or(repo_arg.path.clone()), ..repo_arg };
    if to_arg.path.is_none() {
        bail!("no target repository given: use --to REPO, --repo REPO or set STORE_REPO");
    }
    let from_arg = RepoArg {
        path: Some(args.from.clone()),
        cache_dir: args.from_cache_dir.clone(),
        password_file: args.from_password_file.clone(),
        password_env: "STORE_FROM",
        ..to_arg
    };
    let from_location = from_arg.location().context("--from")?;
    let to_location = to_arg.location().context("--to")?;
    if from_location.to_string() == to_location.to_string() {
        bail!("--from and --to are the same repository ({to_location})");
    }
    let from = from_arg.open().with_context(|| format!("source {from_location}"))?;
    let to = to_arg.open().with_context(|| format!("target {to_location}"))?;
    let _from_lock = lock(&from_arg, &from, store::LockKind::Shared, "copy (source)", true)?;
    let _to_lock = if args.dry_run {
        None
    } else {
        lock(&to_arg, &to, store::LockKind::Shared, "copy", false)?
    };
    let mut sets = Vec::new();
    for reference in &args.snapshots {
        let (id, _) = from
            .resolve_snapshot(reference)
            .with_context(|| format!("finding snapshot {reference:?} in {from_location}"))?;
        if !sets.contains(&id) {
            sets.push(id);
        }
    }
    let opts = store::CopyOptions {
        sets,
        host: args.host.clone(),
        tags: args.tags.clone(),
        threads: args.threads.unwrap_or(0),
        dry_run: args.dry_run,
    };
    crate::output::set_json(args.json);
    let result = Bar::run("copy", |bar| store::copy(&from, &to, &opts, bar));
    super::report_notes(&from);
    super::report_notes(&to);
    let report =
        result.with_context(|| format!("copying from {from_location} to {to_location}"))?;
    if args.json {
        print_json(&serde_json::json!({
            "from": from_location.to_string(),
            "to": to_location.to_string(),
            "dry_run": args.dry_run,
            "sets": report.sets.iter().map(|s| serde_json::json!({
                "source": s.source.to_hex(),
                "target": s.target.map(|t| t.to_hex()),
                "already": s.already,
                "bytes_read": s.bytes_read,
                "bytes_added": s.bytes_added,
                "chunks_new": s.chunks_new,
            })).collect::<Vec<_>>(),
            "packs": report.packs,
            "packs_adopted": report.packs_adopted,
            "failed": report.failed.iter().map(|(id, why)| serde_json::json!({
                "source": id.to_hex(),
                "error": why,
            })).collect::<Vec<_>>(),
            // The requests made of each repository in object storage (null for a local one).
            "requests": {
                "from": from.storage().requests(),
                "to": to.storage().requests(),
            },
        }))?;
        return Ok(exit(&report));
    }
    let mut copied = 0;
    for s in &report.sets {
        match (s.target, s.already) {
            (Some(t), true) => {
                summary!("set {}: in the target already as {}", s.source.short(), t.short())
            }
            (Some(t), false) => {
                copied += 1;
                summary!(
                    "set {} copied as {}: {} read, {} added ({} new chunks)",
                    s.source.short(),
                    t.short(),
                    size(s.bytes_read),
                    size(s.bytes_added),
                    s.chunks_new
                );
            }
            (None, _) => summary!("set {} would be copied", s.source.short()),
        }
    }
    if !args.dry_run {
        summary!(
            "{copied} of {} sets copied, {} packs written{}",
            report.sets.len() + report.failed.len(),
            report.packs,
            match report.packs_adopted {
                0 => String::new(),
                n => format!(", {n} packs of an interrupted run adopted"),
            }
        );
    }
    Ok(exit(&report))
}

/// 1 when a set could not be copied (each is named on stderr), else 0.
fn exit(report: &store::CopyReport) -> ExitCode {
    for (id, why) in &report.failed {
        crate::output::stderr!("store: error: set {} was not copied: {why}", id.short());
    }
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_ERROR)
    }
}
