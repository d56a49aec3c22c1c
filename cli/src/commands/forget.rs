//! `store forget`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::ForgetArgs;
use crate::output::{parse_span, summary};

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
        within: args
            .keep_within
            .as_deref()
            .map(parse_span)
            .transpose()
            .context("invalid --keep-within")?,
        tags: args.keep_tags.clone(),
        full: args.keep_full,
        time_zone: if args.utc { jiff::tz::TimeZone::UTC } else { jiff::tz::TimeZone::system() },
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
    let names = store::unique_names(manifests.iter().map(|(id, m)| (*id, m)));
    let name = |id: &store::SnapshotId| names.get(id).cloned().unwrap_or_default();
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
            summary!("keep   {} {}  ({})", k.id.short(), name(&k.id), why.join(", "));
        }
        for id in &plan.remove {
            summary!("remove {} {}", id.short(), name(id));
        }
    }
    if !args.dry_run {
        for id in &plan.remove {
            repo.remove_snapshot(*id).with_context(|| format!("removing set {id}"))?;
        }
    }
    if !args.json {
        let verb = if args.dry_run { "would remove" } else { "removed" };
        summary!(
            "{} sets kept, {verb} {}; run `store prune` to free their space",
            plan.keep.len(),
            plan.remove.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
