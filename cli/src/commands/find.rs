//! `store find`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::FindArgs;
use crate::output::{file_time, file_time_rfc3339, size, summary, warning};

pub fn run(repo: &RepoArg, args: &FindArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let mut sets = Vec::new();
    if args.sets.is_empty() {
        for s in repo.list_snapshots().context("listing snapshots")? {
            match s.manifest {
                Ok(m) => sets.push((s.id, m)),
                Err(e) => warning!("snapshot {} is damaged and was not searched: {e}", s.id),
            }
        }
    } else {
        for reference in &args.sets {
            let found = repo
                .resolve_snapshot(reference)
                .with_context(|| format!("finding snapshot {reference:?}"))?;
            if !sets.iter().any(|(id, _)| *id == found.0) {
                sets.push(found);
            }
        }
    }
    if let Some(host) = &args.host {
        sets.retain(|(_, m)| m.host == *host);
    }
    let names = store::unique_names(sets.iter().map(|(id, m)| (*id, m)));
    let mut out = std::io::stdout().lock();
    let mut print = |f: &store::Found<'_>| -> store::Result<()> {
        let set = names.get(&f.set).cloned().unwrap_or_default();
        let path = store::escape_name(f.path);
        let kind = super::ls::type_char(f.node);
        let line = if args.json {
            serde_json::json!({
                "set": set,
                "id": f.set.to_hex(),
                "host": f.manifest.host,
                "path": path,
                "type": kind.to_string(),
                "size": f.node.size(),
                "mtime": file_time_rfc3339(f.node.meta.mtime),
            })
            .to_string()
        } else {
            format!(
                "{set:<17} {kind} {:>10} {} {path}",
                size(f.node.size()),
                file_time(f.node.meta.mtime)
            )
        };
        writeln!(out, "{line}").map_err(|e| store::Error::Io { path: "<stdout>".into(), cause: e })
    };
    let report =
        store::find(&repo, &sets, &args.patterns, &mut print).context("searching the sets")?;
    super::report_notes(&repo);
    for u in &report.unread {
        crate::output::stderr!(
            "store: warning: {} of set {}: not searched: {}",
            u.path,
            u.set.short(),
            u.error
        );
    }
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if !args.json {
        summary!(
            "{} in {} ({} read)",
            plural(report.matches, "match", "matches"),
            plural(report.sets, "set", "sets"),
            plural(report.dirs_read, "directory", "directories")
        );
    }
    if report.matches == 0 {
        anyhow::bail!(
            "no set holds a path matching {} ({} sets searched)",
            args.patterns.join(" or "),
            report.sets
        );
    }
    for p in report.unmatched.iter().filter(|_| args.patterns.len() > 1) {
        warning!("pattern {p:?} matched nothing");
    }
    if report.unread.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(crate::EXIT_PARTIAL))
    }
}
