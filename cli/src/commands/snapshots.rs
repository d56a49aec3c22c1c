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
    for (id, e) in &damaged {
        eprintln!("store: warning: snapshot {id} is damaged: {e}");
    }
    if args.json {
        let mut arr: Vec<serde_json::Value> =
            good.iter().map(|(id, m)| manifest_json(*id, m)).collect();
        arr.extend(damaged.iter().map(|(id, e)| {
            serde_json::json!({ "id": id.to_hex(), "short_id": id.short(), "damaged": e.to_string() })
        }));
        print_json(&serde_json::Value::Array(arr))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8}  {:<19}  {:<12}  {:<11}  {:>10}  {:<20}  components",
        "id", "time (UTC)", "host", "kind", "size", "tags"
    )?;
    for (id, m) in &good {
        let comps: Vec<&str> = m.components.iter().map(|c| c.name.as_str()).collect();
        writeln!(
            out,
            "{:<8}  {:<19}  {:<12}  {:<11}  {:>10}  {:<20}  {}",
            id.short(),
            time(m.time_ns),
            m.host,
            m.kind.as_str(),
            size(m.counts.bytes_source),
            m.tags.join(","),
            comps.join(" "),
        )?;
    }
    for (id, _) in &damaged {
        writeln!(out, "{:<8}  (damaged)", id.short())?;
    }
    writeln!(out, "{} sets", good.len() + damaged.len())?;
    Ok(ExitCode::SUCCESS)
}
