//! `store check`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::CheckArgs;
use crate::output::{out, summary};
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
        store::Finding::UnreadableVerificationRecord { .. } => "unreadable_verification_record",
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

/// Which packs to read, from the options.
fn data_check(args: &CheckArgs) -> Result<store::DataCheck> {
    if let Some(s) = &args.read_data_subset {
        return parse_subset(s).with_context(|| format!("invalid --read-data-subset {s:?}"));
    }
    if !args.read_data {
        return Ok(store::DataCheck::None);
    }
    if args.max_age.is_none() && args.max_bytes.is_none() {
        return Ok(store::DataCheck::All);
    }
    let max_age = match &args.max_age {
        Some(s) => crate::output::parse_duration(s).context("invalid --max-age")?,
        None => std::time::Duration::ZERO,
    };
    let max_bytes = match &args.max_bytes {
        Some(s) => Some(crate::output::parse_size(s).context("invalid --max-bytes")?),
        None => None,
    };
    Ok(store::DataCheck::Due { max_age, max_bytes })
}

pub fn run(repo_arg: &RepoArg, args: &CheckArgs) -> Result<ExitCode> {
    if let Some(path) = &args.metrics_file {
        let data = match (&args.read_data_subset, args.read_data) {
            (Some(s), _) => s.clone(),
            (None, true) if args.max_age.is_some() || args.max_bytes.is_some() => "due".into(),
            (None, true) => "all".into(),
            (None, false) => "none".into(),
        };
        crate::metrics::want(path, "check", &[("read_data", data)]);
    }
    let read_data = data_check(args)?;
    let repo = repo_arg.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "check", true)?;
    let report = Bar::run("check", |bar| {
        store::check(&repo, &store::CheckOptions { read_data, record: true }, bar)
    });
    super::report_notes(&repo);
    let report = report.context("the check could not run")?;
    if let Some(e) = &report.record_error {
        crate::output::stderr!("store: warning: the damage found could not be recorded ({e}); writers may build on it until it is");
    }
    if let Some(e) = &report.coverage_error {
        crate::output::warning!(
            "the packs verified could not be recorded ({e}); the next `check --max-age` reads \
             them again"
        );
    }
    let damaged = report.is_damaged();
    let due = matches!(read_data, store::DataCheck::Due { .. });
    let (due_packs, due_bytes) = if due {
        (serde_json::json!(report.due.0), serde_json::json!(report.due.1))
    } else {
        (serde_json::Value::Null, serde_json::Value::Null)
    };
    let damage = report.findings.iter().filter(|f| f.is_damage()).count();
    crate::metrics::value("check_damage_findings", "Findings of damage.", damage as f64);
    crate::metrics::value("check_blobs_read", "Blobs read and verified.", report.blobs_read as f64);
    crate::metrics::value(
        "check_packs_verified",
        "Packs read whole and found intact by this check (recorded in the repository).",
        report.verified_recorded as f64,
    );
    if matches!(read_data, store::DataCheck::Due { .. }) {
        crate::metrics::value(
            "check_bytes_due",
            "Bytes of packs not verified within --max-age when the check started.",
            report.due.1 as f64,
        );
    }
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
            "packs_due": due_packs,
            "bytes_due": due_bytes,
            "verified_recorded": report.verified_recorded,
            "findings": findings,
        }))?;
    } else {
        let mut advice: Vec<&str> = Vec::new();
        for f in &report.findings {
            if f.is_damage() {
                out!("damage: {f}");
            } else {
                summary!("notice: {f}");
            }
            if f.is_damage() && !advice.contains(&f.advice()) {
                advice.push(f.advice());
            }
        }
        let line = format!(
            "checked {} sets, {} trees, {} packs ({} read, {} blobs re-hashed): {}",
            report.snapshots,
            report.trees,
            report.packs,
            report.packs_read,
            report.blobs_read,
            if damaged { "DAMAGE FOUND" } else { "no damage" }
        );
        if damaged {
            out!("{line}");
        } else {
            summary!("{line}");
        }
        if due {
            summary!(
                "{} packs ({}) were due for verification; {} read",
                report.due.0,
                crate::output::size(report.due.1),
                report.packs_read
            );
        }
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
