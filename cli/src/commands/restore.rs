//! `store restore`.

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
    let opts =
        store::RestoreOptions { target: args.target.clone(), threads: args.threads.unwrap_or(0) };
    let result = Bar::run("restore", |bar| store::restore(&repo, &manifest, &opts, bar));
    let report = result.with_context(|| format!("restoring snapshot {}", id.short()))?;
    for f in &report.failures {
        eprintln!("store: error: {}: {}", f.path, f.error);
    }
    let secs = report.duration.as_secs_f64();
    if args.json {
        print_json(&serde_json::json!({
            "id": id.to_hex(),
            "target": args.target.display().to_string(),
            "files": report.files,
            "dirs": report.dirs,
            "symlinks": report.symlinks,
            "specials": report.specials,
            "bytes": report.bytes,
            "duration_s": secs,
            "failures": report.failures.iter().map(|f| serde_json::json!({"path": f.path, "error": f.error})).collect::<Vec<_>>(),
        }))?;
    } else {
        println!(
            "restored snapshot {} to {}: {} files, {} in {:.1} s ({})",
            id.short(),
            args.target.display(),
            report.files,
            size(report.bytes),
            secs,
            rate(report.bytes, secs)
        );
    }
    if report.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("store: {} paths could not be restored", report.failures.len());
        Ok(ExitCode::from(crate::EXIT_ERROR))
    }
}
