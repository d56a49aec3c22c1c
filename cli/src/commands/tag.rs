//! `store tag`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::TagArgs;
use crate::output::summary;

pub fn run(repo_arg: &RepoArg, args: &TagArgs) -> Result<ExitCode> {
    if args.add.is_empty() && args.remove.is_empty() && args.note.is_none() {
        bail!("give --add TAG, --remove TAG or --note TEXT");
    }
    let repo = repo_arg.open()?;
    // Shared: a prune waits, so it never looks between the new manifests and the removal of the
    // old ones.
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "tag", false)?;
    let (id, _) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let change = store::TagChange {
        add: args.add.clone(),
        remove: args.remove.clone(),
        note: args.note.clone(),
    };
    let report = store::retag(&repo, id, &change)
        .with_context(|| format!("changing the tags of set {}", id.short()))?;
    super::report_notes(&repo);
    let new = report.new.unwrap_or(id);
    if args.json {
        print_json(&serde_json::json!({
            "old": id.to_hex(),
            "new": new.to_hex(),
            "tags": report.tags,
            "note": super::note_json(&report.note),
            "rechained": report.rechained.iter().map(|(o, n)| serde_json::json!({"old": o.to_hex(), "new": n.to_hex()})).collect::<Vec<_>>(),
        }))?;
    } else if new == id {
        summary!("set {}: tags and note unchanged ({})", id.short(), report.tags.join(", "));
    } else {
        summary!(
            "set {} is now {}, tags: {}{}{}",
            id.short(),
            new.short(),
            if report.tags.is_empty() { "none".to_owned() } else { report.tags.join(", ") },
            match &args.note {
                Some(n) if n.is_empty() => "; note removed".to_owned(),
                Some(_) => format!("; note: {}", crate::output::printable(&report.note)),
                None => String::new(),
            },
            match report.rechained.len() {
                0 => String::new(),
                n => format!("; {n} sets that build on it now name it"),
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
