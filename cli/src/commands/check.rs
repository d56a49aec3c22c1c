//! `store check`, `store repair index`, `store unlock`.

use crate::output::out;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::{CheckArgs, RepairIndexArgs, RepairPacksArgs, RepairSnapshotsArgs, UnlockArgs};
use crate::progress::Bar;

fn finding_kind(f: &store::Finding) -> &'static str {
    match f {
        store::Finding::DamagedSnapshot { .. } => "damaged_snapshot",
        store::Finding::DamagedConfig { .. } => "damaged_config",
        store::Finding::ConfigCopyMissing => "config_copy_missing",
        store::Finding::DamagedIndexFile { .. } => "damaged_index_file",
        store::Finding::MissingPack { .. } => "missing_pack",
        store::Finding::PackSize { .. } => "pack_size",
        store::Finding::DamagedPack { .. } => "damaged_pack",
        store::Finding::TrailerMismatch { .. } => "trailer_mismatch",
        store::Finding::DamagedBlob { .. } => "damaged_blob",
        store::Finding::DamagedTree { .. } => "damaged_tree",
        store::Finding::MissingBlob { .. } => "missing_blob",
        store::Finding::Affected { .. } => "affected_path",
        store::Finding::UnindexedPack { .. } => "unindexed_pack",
        store::Finding::UnusedDamagedBlob { .. } => "unused_damaged_blob",
        store::Finding::TempFile { .. } => "temp_file",
        store::Finding::DamagedDamageRecord { .. } => "damaged_damage_record",
    }
}

fn parse_subset(s: &str) -> Result<store::DataCheck> {
    let (n, m) = s.split_once('/').context("expected N/M, for example 1/7")?;
    let (n, m): (u32, u32) = (n.parse()?, m.parse()?);
    if m == 0 || n == 0 || n > m {
        bail!("N/M needs 1 <= N <= M, got {s}");
    }
    Ok(store::DataCheck::Subset { n, m })
}

pub fn run(repo_arg: &RepoArg, args: &CheckArgs) -> Result<ExitCode> {
    let read_data = match (&args.read_data_subset, args.read_data) {
        (Some(s), _) => {
            parse_subset(s).with_context(|| format!("invalid --read-data-subset {s:?}"))?
        }
        (None, true) => store::DataCheck::All,
        (None, false) => store::DataCheck::None,
    };
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "check", true)?;
    let report = Bar::run("check", |bar| {
        store::check(&repo, &store::CheckOptions { read_data, record_damage: true }, bar)
    });
    let report = report.context("the check could not run")?;
    if let Some(e) = &report.record_error {
        eprintln!("store: warning: the damage found could not be recorded ({e}); writers may build on it until it is");
    }
    let damaged = report.is_damaged();
    if args.json {
        let findings: Vec<serde_json::Value> = report
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "kind": finding_kind(f),
                    "severity": if f.is_damage() { "damage" } else { "notice" },
                    "message": f.to_string(),
                    "advice": f.advice(),
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "damaged": damaged,
            "snapshots": report.snapshots,
            "trees": report.trees,
            "packs": report.packs,
            "packs_read": report.packs_read,
            "blobs_read": report.blobs_read,
            "damage_recorded": report.damage_recorded,
            "findings": findings,
        }))?;
    } else {
        let mut advice: Vec<&str> = Vec::new();
        for f in &report.findings {
            let level = if f.is_damage() { "damage" } else { "notice" };
            out!("{level}: {f}");
            if f.is_damage() && !advice.contains(&f.advice()) {
                advice.push(f.advice());
            }
        }
        out!(
            "checked {} sets, {} trees, {} packs ({} read, {} blobs re-hashed): {}",
            report.snapshots,
            report.trees,
            report.packs,
            report.packs_read,
            report.blobs_read,
            if damaged { "DAMAGE FOUND" } else { "no damage" }
        );
        if report.damage_recorded > 0 {
            out!(
                "recorded {} damaged blob copies: no snapshot builds on them again",
                report.damage_recorded
            );
        }
        for a in advice {
            out!("next: {a}");
        }
    }
    Ok(if damaged { ExitCode::from(crate::EXIT_ERROR) } else { ExitCode::SUCCESS })
}

pub fn repair_index(repo_arg: &RepoArg, args: &RepairIndexArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "repair index", false)?;
    let report = Bar::run("repair index", |bar| store::repair_index(&repo, bar));
    let report = report.context("repair index failed")?;
    for u in &report.unreadable {
        eprintln!("store: pack {} cannot be read, its blobs are lost: {}", u.pack, u.error);
    }
    if args.json {
        print_json(&serde_json::json!({
            "packs": report.packs,
            "blobs": report.blobs,
            "index_files_written": report.index_files_written,
            "index_files_removed": report.index_files_removed,
            "unreadable_packs": report.unreadable.iter().map(|u| serde_json::json!({"pack": u.pack.to_hex(), "error": u.error})).collect::<Vec<_>>(),
        }))?;
    } else {
        out!(
            "index rebuilt from {} packs ({} blobs): {} index files written, {} removed, {} packs unreadable",
            report.packs,
            report.blobs,
            report.index_files_written,
            report.index_files_removed,
            report.unreadable.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn unlock(repo_arg: &RepoArg, args: &UnlockArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let removed = repo.unlock(repo_arg.stale_after, args.all).context("removing locks")?;
    for r in &removed {
        out!("removed {r}");
    }
    out!("{} locks removed", removed.len());
    Ok(ExitCode::SUCCESS)
}

pub fn repair_snapshots(repo_arg: &RepoArg, args: &RepairSnapshotsArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "repair snapshots", false)?;
    let opts = store::RepairSnapshotsOptions {
        read_data: args.read_data,
        forget: args.forget,
        dry_run: args.dry_run,
    };
    let report = Bar::run("repair snapshots", |bar| store::repair_snapshots(&repo, &opts, bar));
    let report = report.context("repair snapshots failed")?;
    if args.json {
        let sets: Vec<serde_json::Value> = report
            .repaired
            .iter()
            .map(|r| {
                serde_json::json!({
                    "old": r.old.to_hex(),
                    "new": r.new.map(|n| n.to_hex()),
                    "forgotten": r.forgotten,
                    "lost": r.lost.iter().map(|l| serde_json::json!({"path": l.path, "reason": l.reason})).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(
            &serde_json::json!({ "intact": report.intact, "repaired": sets, "dry_run": args.dry_run }),
        )?;
    } else {
        for r in &report.repaired {
            let new = r.new.map_or_else(|| "(dry run)".to_owned(), |n| n.short());
            out!(
                "set {} -> repaired set {new}{}",
                r.old.short(),
                if r.forgotten { " (damaged set removed)" } else { "" }
            );
            for l in &r.lost {
                out!("  lost {}: {}", l.path, l.reason);
            }
        }
        out!("{} sets intact, {} repaired", report.intact, report.repaired.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn repair_packs(repo_arg: &RepoArg, args: &RepairPacksArgs) -> Result<ExitCode> {
    let mut packs = Vec::new();
    for p in &args.packs {
        packs.push(p.parse::<store::PackId>().with_context(|| format!("invalid pack id {p:?}"))?);
    }
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "repair packs", false)?;
    let opts = store::RepairPacksOptions { packs, dry_run: args.dry_run };
    let report = Bar::run("repair packs", |bar| store::repair_packs(&repo, &opts, bar));
    let report = report.context("repair packs failed")?;
    let lost: usize = report.packs.iter().map(|p| p.lost.len()).sum();
    if args.json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "packs_written": report.packs_written,
            "packs": report.packs.iter().map(|p| serde_json::json!({
                "pack": p.pack.to_hex(),
                "salvaged": p.salvaged,
                "kept_elsewhere": p.elsewhere,
                "lost": p.lost.iter().map(|b| b.to_hex()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        for p in &report.packs {
            out!(
                "pack {}: {} blobs salvaged, {} kept elsewhere, {} lost{}",
                p.pack.short(),
                p.salvaged,
                p.elsewhere,
                p.lost.len(),
                if args.dry_run { " (dry run)" } else { ", pack removed" }
            );
            for b in &p.lost {
                out!("  lost blob {b}");
            }
        }
        out!(
            "{} damaged packs {}, {} new packs, {lost} blobs lost",
            report.packs.len(),
            if args.dry_run { "would be repaired" } else { "repaired" },
            report.packs_written
        );
        if lost > 0 && !args.dry_run {
            out!(
                "next: `store check` names the sets and paths that lost data; `store repair \
                 snapshots --forget` drops them; a new snapshot of the same sources stores them anew"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn repair_config(repo_arg: &RepoArg) -> Result<ExitCode> {
    let repo = repo_arg.open_with(true)?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "repair config", false)?;
    let rewritten = repo.repair_config().context("repair config failed")?;
    let copy = repo.layout().config_copy();
    for p in &rewritten {
        out!("rewrote {} from {}", p.display(), if *p == copy { "config" } else { "config.copy" });
    }
    out!("config intact ({} files rewritten)", rewritten.len());
    Ok(ExitCode::SUCCESS)
}
