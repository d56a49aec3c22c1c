//! `store restore`.

use crate::output::{summary, warning};
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::RestoreArgs;
use crate::output::{rate, size};
use crate::progress::Bar;

pub fn run(repo: &RepoArg, args: &RestoreArgs) -> Result<ExitCode> {
    let repo_arg = repo;
    let repo = repo.open()?;
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "restore", true)?;
    let (id, manifest) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let opts = store::RestoreOptions {
        target: args.target.clone().unwrap_or_default(),
        threads: args.threads.unwrap_or(0),
        components: args.components.clone(),
        include: args.include.clone(),
        exclude: args.exclude.clone(),
        overwrite: args.overwrite.map(Into::into),
        verify: args.verify,
        // Unnamed files (`O_TMPFILE`) where the target allows them; this variable keeps the
        // temporary names (a file system that misreports its support, and the tests of that
        // path).
        named_temporaries: std::env::var_os("STORE_RESTORE_NAMED_TEMPORARIES")
            .is_some_and(|v| v == "1"),
    };
    if args.dry_run {
        return dry_run(&repo, id, &manifest, &opts, args.json);
    }
    let target = args.target.clone().context("--target DIR is required")?;
    crate::output::set_json(args.json);
    let result = Bar::run("restore", |bar| store::restore(&repo, &manifest, &opts, bar));
    super::report_notes(&repo);
    let report = result.with_context(|| format!("restoring snapshot {}", id.short()))?;
    for f in &report.failures {
        crate::output::stderr!("store: error: {}: {}", f.path, f.error);
    }
    // Named even under -q: the restored tree differs from the set there (exit 3).
    for f in &report.not_restored {
        crate::output::stderr!("store: warning: {}: {}", f.path, f.error);
    }
    for p in &report.unmatched_patterns {
        warning!("{p} matched nothing");
    }
    if let Some(path) = &report.out_of_space {
        anyhow::bail!(
            "the target ran out of space writing {path}: {} files ({}) were restored, nothing \
             after it; free space and resume with `store restore {} --target {} --overwrite \
             if-changed`",
            report.files,
            size(report.bytes),
            args.snapshot,
            target.display()
        );
    }
    let restored = report.files
        + report.dirs
        + report.symlinks
        + report.specials
        + report.hard_links
        + report.unchanged;
    if !args.include.is_empty() && restored == 0 {
        anyhow::bail!(
            "nothing of snapshot {} matches --include {}; nothing was restored",
            id.short(),
            args.include.join(", --include ")
        );
    }
    let secs = report.duration.as_secs_f64();
    if args.json {
        print_json(&serde_json::json!({
            "id": id.to_hex(),
            "target": target.display().to_string(),
            "files": report.files,
            "dirs": report.dirs,
            "symlinks": report.symlinks,
            "specials": report.specials,
            "hard_links": report.hard_links,
            "bytes": report.bytes,
            "unchanged": report.unchanged,
            "verified": report.verified,
            "duration_s": secs,
            "failures": report.failures.iter().map(|f| serde_json::json!({"path": f.path, "error": f.error})).collect::<Vec<_>>(),
            "not_restored": report.not_restored.iter().map(|f| serde_json::json!({"path": f.path, "reason": f.error})).collect::<Vec<_>>(),
        }))?;
    } else {
        summary!(
            "restored snapshot {} to {}: {} files, {} in {:.1} s ({})",
            id.short(),
            target.display(),
            report.files,
            size(report.bytes),
            secs,
            rate(report.bytes, secs)
        );
        if report.hard_links > 0 {
            summary!("{} more names linked to files restored with them", report.hard_links);
        }
        if report.unchanged > 0 {
            summary!("{} existing entries left as they were", report.unchanged);
        }
        if args.verify {
            summary!("{} files read back and verified", report.verified);
        }
    }
    if !report.failures.is_empty() {
        crate::output::stderr!("store: {} paths could not be restored", report.failures.len());
        Ok(ExitCode::from(crate::EXIT_ERROR))
    } else if !report.not_restored.is_empty() {
        crate::output::stderr!(
            "store: {} entries of the set were not made as they were (named above); the rest is \
             restored",
            report.not_restored.len()
        );
        Ok(ExitCode::from(crate::EXIT_PARTIAL))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// Lists what a restore would write (the same selection as the restore); writes nothing.
fn dry_run(
    repo: &store::Repository,
    id: store::SnapshotId,
    manifest: &store::Manifest,
    opts: &store::RestoreOptions,
    json: bool,
) -> Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let (mut files, mut bytes) = (0u64, 0u64);
    let failures = store::restore_plan(repo, manifest, opts, &mut |path, node| {
        let kind = match node.content {
            store::Content::File { .. } => {
                files += 1;
                bytes += node.size();
                "file"
            }
            store::Content::Dir { .. } => "dir",
            store::Content::Symlink { .. } => "symlink",
            store::Content::Special { .. } => "special",
        };
        let line = if json {
            serde_json::json!({"path": path, "type": kind, "size": node.size()}).to_string()
        } else {
            format!("would write {kind} {path}")
        };
        writeln!(out, "{line}").map_err(|e| store::Error::Io { path: "<stdout>".into(), cause: e })
    })
    .with_context(|| format!("listing set {}", id.short()))?;
    if !json {
        writeln!(out, "would restore {files} files, {}", size(bytes))?;
    }
    for f in &failures {
        crate::output::stderr!("store: error: {}: {}", f.path, f.error);
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(crate::EXIT_ERROR) })
}
