//! `store snapshots`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{manifest_json, print_json, RepoArg};
use crate::args::SnapshotsArgs;
use crate::output::{size, time};

pub fn run(repo: &RepoArg, args: &SnapshotsArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let listed = repo.list_snapshots().context("listing snapshots")?;
    let mut good = Vec::new();
    let mut damaged = Vec::new();
    for s in listed {
        match s.manifest {
            Ok(m) => good.push((s.id, m)),
            Err(e) => damaged.push((s.id, e)),
        }
    }
    good.sort_by_key(|(id, m)| std::cmp::Reverse((m.time_ns, *id)));
    let names = store::unique_names(good.iter().map(|(id, m)| (*id, m)));
    let name = |id: &store::SnapshotId| names.get(id).cloned().unwrap_or_default();
    for (id, e) in &damaged {
        crate::output::stderr!("store: warning: snapshot {id} is damaged: {e}");
    }
    // Each set chains to a full one through its parents; incrementals are shown under it.
    let by_id: std::collections::HashMap<store::SnapshotId, &store::Manifest> =
        good.iter().map(|(id, m)| (*id, m)).collect();
    let chain_of = |mut id: store::SnapshotId| -> store::SnapshotId {
        let mut steps = 0;
        while let Some(parent) = by_id.get(&id).and_then(|m| m.parent) {
            if !by_id.contains_key(&parent) || steps > by_id.len() {
                break;
            }
            id = parent;
            steps += 1;
        }
        id
    };
    // The filters choose what is shown; names and chains are those of the whole repository.
    let filtered = args.host.is_some()
        || !args.tags.is_empty()
        || !args.components.is_empty()
        || args.latest.is_some();
    let shown: Vec<&(store::SnapshotId, store::Manifest)> = good
        .iter()
        .filter(|(_, m)| args.host.as_ref().is_none_or(|h| m.host == *h))
        .filter(|(_, m)| args.tags.iter().all(|t| m.tags.contains(t)))
        .filter(|(_, m)| args.components.iter().all(|c| m.components.iter().any(|k| k.name == *c)))
        .take(args.latest.unwrap_or(usize::MAX))
        .collect();
    let damaged = if filtered { &[][..] } else { &damaged[..] };
    if args.json {
        let mut arr: Vec<serde_json::Value> = shown
            .iter()
            .map(|(id, m)| {
                let mut doc = manifest_json(*id, &name(id), m);
                if let Some(o) = doc.as_object_mut() {
                    o.insert("chain".into(), chain_of(*id).to_hex().into());
                }
                doc
            })
            .collect();
        arr.extend(damaged.iter().map(|(id, e)| {
            serde_json::json!({ "id": id.to_hex(), "short_id": id.short(), "damaged": e.to_string() })
        }));
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<10} {:<17} {:<19} {:<10} {:<12} {:>10}  {:<16} components",
        "id", "name", "time (UTC)", "host", "kind", "size", "tags"
    )?;
    let row = |out: &mut std::io::StdoutLock<'_>,
               id: &store::SnapshotId,
               m: &store::Manifest,
               indent: &str| {
        let comps: Vec<&str> = m.components.iter().map(|c| c.name.as_str()).collect();
        writeln!(
            out,
            "{indent}{:<width$} {:<17} {:<19} {:<10} {:<12} {:>10}  {:<16} {}",
            id.short(),
            name(id),
            time(m.time_ns),
            m.host,
            m.kind.as_str(),
            size(m.counts.bytes_source),
            m.tags.join(","),
            comps.join(" "),
            width = 10 - indent.chars().count(),
        )?;
        if !m.note.is_empty() {
            writeln!(out, "{:10} note: {}", "", crate::output::printable(&m.note))?;
        }
        Ok::<(), std::io::Error>(())
    };
    // Chains ordered by their newest set; within a chain the root first, then the rest newest
    // first, indented.
    let mut chains: Vec<(store::SnapshotId, Vec<&(store::SnapshotId, store::Manifest)>)> =
        Vec::new();
    for entry in shown.iter().copied() {
        let root = chain_of(entry.0);
        match chains.iter_mut().find(|(r, _)| *r == root) {
            Some((_, members)) => members.push(entry),
            None => chains.push((root, vec![entry])),
        }
    }
    for (root, members) in &chains {
        if let Some((id, m)) = members.iter().find(|e| e.0 == *root).map(|e| (&e.0, &e.1)) {
            row(&mut out, id, m, "")?;
        }
        for (id, m) in members.iter().map(|e| (&e.0, &e.1)).filter(|(id, _)| *id != root) {
            row(&mut out, id, m, "└ ")?;
        }
    }
    for (id, _) in damaged {
        writeln!(out, "{:<10} (damaged)", id.short())?;
    }
    if filtered {
        writeln!(out, "{} of {} sets", shown.len(), good.len())?;
    } else {
        writeln!(out, "{} sets", good.len() + damaged.len())?;
    }
    Ok(ExitCode::SUCCESS)
}
