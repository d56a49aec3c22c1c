//! `store forget` and `store prune`.

use crate::output::out;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::{ForgetArgs, PruneArgs, StatsArgs};
use crate::output::{parse_duration, size};
use crate::progress::Bar;

fn reason(r: &store::KeepReason) -> String {
    match r {
        store::KeepReason::Last => "last".into(),
        store::KeepReason::Hourly => "hourly".into(),
        store::KeepReason::Daily => "daily".into(),
        store::KeepReason::Weekly => "weekly".into(),
        store::KeepReason::Monthly => "monthly".into(),
        store::KeepReason::Yearly => "yearly".into(),
        store::KeepReason::Within => "within".into(),
        store::KeepReason::Tag(t) => format!("tag {t}"),
        store::KeepReason::Full => "full chain".into(),
        store::KeepReason::Chain(c) => format!("chain of {}", c.short()),
        store::KeepReason::NotSelected => "not selected".into(),
    }
}

pub fn forget(repo_arg: &RepoArg, args: &ForgetArgs) -> Result<ExitCode> {
    let policy = store::KeepPolicy {
        last: args.keep_last,
        hourly: args.keep_hourly,
        daily: args.keep_daily,
        weekly: args.keep_weekly,
        monthly: args.keep_monthly,
        yearly: args.keep_yearly,
        within_ns: args
            .keep_within
            .as_deref()
            .map(|d| parse_duration(d).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
            .transpose()
            .context("invalid --keep-within")?,
        tags: args.keep_tags.clone(),
        full: args.keep_full,
    };
    if args.snapshots.is_empty() && policy.is_empty() {
        bail!("nothing to forget: name SNAPSHOTs or give a --keep-* policy");
    }
    if !args.snapshots.is_empty() && !policy.is_empty() {
        bail!("give either SNAPSHOTs or a --keep-* policy, not both");
    }
    let repo = repo_arg.open()?;
    // On a full disk, the lock needs room: the reserve gives it (and is put back at the end).
    let _reserve = (!args.dry_run).then(|| repo.release_reserve());
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "forget", false)?;
    let mut manifests = std::collections::HashMap::new();
    let mut sets = Vec::new();
    for listed in repo.list_snapshots().context("listing snapshots")? {
        let Ok(m) = listed.manifest else { continue };
        let selected = args.host.as_ref().is_none_or(|h| *h == m.host)
            && args.tags.iter().all(|t| m.tags.contains(t));
        if selected {
            sets.push(store::SetInfo {
                id: listed.id,
                time_ns: m.time_ns,
                host: m.host.clone(),
                tags: m.tags.clone(),
                kind: m.kind,
                parent: m.parent,
            });
        }
        manifests.insert(listed.id, m);
    }
    let plan = if args.snapshots.is_empty() {
        store::plan_policy(&sets, &policy)
    } else {
        let mut ids = Vec::new();
        for r in &args.snapshots {
            ids.push(
                repo.resolve_snapshot(r).with_context(|| format!("finding snapshot {r:?}"))?.0,
            );
        }
        store::plan_explicit(&sets, &ids)
    };
    let name =
        |id: &store::SnapshotId| manifests.get(id).map(store::Manifest::name).unwrap_or_default();
    if args.json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "keep": plan.keep.iter().map(|k| serde_json::json!({
                "id": k.id.to_hex(), "name": name(&k.id),
                "reasons": k.reasons.iter().map(reason).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "remove": plan.remove.iter().map(|id| serde_json::json!({"id": id.to_hex(), "name": name(id)})).collect::<Vec<_>>(),
        }))?;
    } else {
        for k in &plan.keep {
            let why: Vec<String> = k.reasons.iter().map(reason).collect();
            out!("keep   {} {}  ({})", k.id.short(), name(&k.id), why.join(", "));
        }
        for id in &plan.remove {
            out!("remove {} {}", id.short(), name(id));
        }
    }
    if !args.dry_run {
        for id in &plan.remove {
            repo.remove_snapshot(*id).with_context(|| format!("removing set {id}"))?;
        }
    }
    if !args.json {
        let verb = if args.dry_run { "would remove" } else { "removed" };
        out!(
            "{} sets kept, {verb} {}; run `store prune` to free their space",
            plan.keep.len(),
            plan.remove.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn prune(repo_arg: &RepoArg, args: &PruneArgs) -> Result<ExitCode> {
    if !(0.0..=100.0).contains(&args.max_unused) {
        bail!("--max-unused must be a percentage between 0 and 100, got {}", args.max_unused);
    }
    let repo = repo_arg.open()?;
    let opts = store::PruneOptions {
        max_unused: args.max_unused / 100.0,
        dry_run: args.dry_run,
        lock: repo_arg.lock_options("prune"),
    };
    let mut removed = |info: &store::LockInfo| {
        eprintln!("store: removed the lock of a process that no longer runs: {info}");
    };
    let report = Bar::run("prune", |bar| store::prune(&repo, &opts, bar, &mut removed));
    let report = match report {
        Ok(r) => r,
        Err(e @ store::Error::Locked { .. }) => {
            return Err(anyhow::Error::new(e)
                .context("prune waits for running backups: use --lock-wait DURATION"))
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context("prune failed; nothing was deleted that any set uses"))
        }
    };
    let p = &report.plan;
    let packs_deleted = if args.dry_run {
        (p.delete.len() + p.repack.len() + p.unindexed.len()) as u64
    } else {
        report.packs_deleted
    };
    if args.json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "sets": p.sets,
            "packs": p.packs,
            "bytes": p.bytes,
            "packs_deleted": packs_deleted,
            "packs_repacked": p.repack.len(),
            "packs_unindexed": p.unindexed.len(),
            "packs_written": report.packs_written,
            "temp_files_removed": p.temp_files.len(),
            "bytes_deleted": p.bytes_deleted,
            "bytes_copied": p.bytes_copied,
            "bytes_written": p.bytes_written,
            "bytes_freed": p.bytes_freed,
            "duration_s": report.duration.as_secs_f64(),
        }))?;
    } else {
        let (verb, wrote) =
            if args.dry_run { ("would free", "would write") } else { ("freed", "wrote") };
        out!(
            "{verb} {}: deleted {packs_deleted} packs ({}; {} repacked, {} left by interrupted runs), {wrote} {} in {} new packs, {} leftovers removed, in {:.1} s",
            size(p.bytes_freed),
            size(p.bytes_deleted),
            p.repack.len(),
            p.unindexed.len(),
            size(p.bytes_written),
            if args.dry_run { p.bytes_written.div_ceil(u64::from(repo.config().pack_target).max(1)) } else { report.packs_written },
            p.temp_files.len(),
            report.duration.as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(repo_arg: &RepoArg, args: &StatsArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "stats", true)?;
    let st = Bar::run("stats", |bar| store::stats(&repo, bar));
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
