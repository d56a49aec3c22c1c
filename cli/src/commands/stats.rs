//! `store stats`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::StatsArgs;
use crate::output::{out, size};
use crate::progress::Bar;

pub fn stats(repo_arg: &RepoArg, args: &StatsArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "stats", true)?;
    let st = Bar::run("stats", |bar| store::stats(&repo, bar));
    super::report_notes(&repo);
    let st = st.context("computing statistics")?;
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let dedup = ratio(st.bytes_source, st.bytes_unique_raw);
    let compression = ratio(st.bytes_unique_raw, st.bytes_stored);
    if args.json {
        print_json(&serde_json::json!({
            "bytes_on_disk": st.bytes_on_disk,
            "packs": st.packs,
            "blobs": st.blobs,
            "sets": st.sets,
            "bytes_source": st.bytes_source,
            "bytes_unique_raw": st.bytes_unique_raw,
            "bytes_stored": st.bytes_stored,
            "dedup_ratio": dedup,
            "compression_ratio": compression,
            "verified": {
                "within_7_days": st.coverage.within_7_days,
                "within_30_days": st.coverage.within_30_days,
                "within_90_days": st.coverage.within_90_days,
                "older": st.coverage.older,
                "never": st.coverage.never,
            },
            "per_set": st.per_set.iter().map(|s| serde_json::json!({
                "id": s.id.to_hex(), "bytes_source": s.bytes_source, "bytes_unique": s.bytes_unique,
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        out!("repository on disk: {} in {} packs", size(st.bytes_on_disk), st.packs);
        out!(
            "{} sets holding {} of files, {} distinct blobs",
            st.sets,
            size(st.bytes_source),
            st.blobs
        );
        out!("dedup {dedup:.2}x, compression {compression:.2}x (stored {})", size(st.bytes_stored));
        let c = &st.coverage;
        out!(
            "data verified by check: {} within 7 days, {} within 30, {} within 90; {} longer \
             ago, {} never",
            size(c.within_7_days),
            size(c.within_30_days),
            size(c.within_90_days),
            size(c.older),
            size(c.never)
        );
        for s in &st.per_set {
            out!(
                "  set {}: {} of files, {} held by this set alone",
                s.id.short(),
                size(s.bytes_source),
                size(s.bytes_unique)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
