//! `store diff`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::DiffArgs;
use crate::output::size;

fn kind_str(k: store::ChangeKind) -> &'static str {
    match k {
        store::ChangeKind::Added => "added",
        store::ChangeKind::Removed => "removed",
        store::ChangeKind::Modified => "modified",
        store::ChangeKind::MetadataOnly => "metadata",
    }
}

pub fn run(repo: &RepoArg, args: &DiffArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let find =
        |r: &str| repo.resolve_snapshot(r).with_context(|| format!("finding snapshot {r:?}"));
    let ((ida, a), (idb, b)) = match &args.b {
        Some(b) => (find(&args.a)?, find(b)?),
        None => {
            let (id, set) = find(&args.a)?;
            let parent = set.parent.with_context(|| {
                format!("set {} is a full set: it builds on no other set", id.short())
            })?;
            let older = repo.load_snapshot(parent).with_context(|| {
                format!("loading the parent {} of set {}", parent.short(), id.short())
            })?;
            ((parent, older), (id, set))
        }
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        // Streamed as one document, so a large difference is never held in memory.
        write!(out, "{{\"a\":\"{}\",\"b\":\"{}\",\"changes\":[", ida.to_hex(), idb.to_hex())?;
    }
    let mut first = true;
    let stats = store::diff(&repo, &a, &b, &mut |c| {
        let path = store::escape_name(&c.path);
        let line = if args.json {
            let obj = serde_json::json!({
                "path": path,
                "change": kind_str(c.kind),
                "old_size": c.old.as_ref().map(store::Node::size),
                "new_size": c.new.as_ref().map(store::Node::size),
            });
            let sep = if first { "" } else { "," };
            first = false;
            format!("{sep}\n{obj}")
        } else {
            let mark = match c.kind {
                store::ChangeKind::Added => '+',
                store::ChangeKind::Removed => '-',
                store::ChangeKind::Modified => 'M',
                store::ChangeKind::MetadataOnly => 'U',
            };
            format!("{mark} {path}\n")
        };
        out.write_all(line.as_bytes())
            .map_err(|e| store::Error::Io { path: "<stdout>".into(), cause: e })
    })
    .context("comparing the sets")?;
    if args.json {
        writeln!(
            out,
            "\n],\"added\":{},\"removed\":{},\"modified\":{},\"metadata_only\":{},\"bytes_added\":{},\"bytes_removed\":{}}}",
            stats.added, stats.removed, stats.modified, stats.metadata_only, stats.bytes_added, stats.bytes_removed
        )?;
    } else {
        writeln!(
            out,
            "{} added, {} removed, {} modified, {} metadata only; {} added, {} removed",
            stats.added,
            stats.removed,
            stats.modified,
            stats.metadata_only,
            size(stats.bytes_added),
            size(stats.bytes_removed)
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
