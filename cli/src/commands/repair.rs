//! `store repair index | snapshots | packs | config`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::{RepairIndexArgs, RepairPacksArgs, RepairSnapshotsArgs};
use crate::output::out;
use crate::progress::Bar;

pub fn repair_index(repo_arg: &RepoArg, args: &RepairIndexArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Exclusive, "repair index", false)?;
    let report = Bar::run("repair index", |bar| store::repair_index(&repo, bar));
    let report = report.context("repair index failed")?;
    for u in &report.unreadable {
        crate::output::stderr!(
            "store: pack {} cannot be read, its blobs are lost: {}",
            u.pack,
            u.error
        );
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
    let copy = repo.storage().describe_named(store::storage::Named::ConfigCopy);
    for p in &rewritten {
        out!("rewrote {} from {}", p.display(), if *p == copy { "config" } else { "config.copy" });
    }
    out!("config intact ({} files rewritten)", rewritten.len());
    Ok(ExitCode::SUCCESS)
}
