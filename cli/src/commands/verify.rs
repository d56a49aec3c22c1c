//! `store verify`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{lock, print_json, RepoArg};
use crate::args::VerifyAlfrescoArgs;
use crate::output::{out, summary};

pub fn alfresco(repo_arg: &RepoArg, args: &VerifyAlfrescoArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    // Best effort: a read-only repository can still be verified.
    let _lock = lock(repo_arg, &repo, store::LockKind::Shared, "verify alfresco", true)?;
    let (id, manifest) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let opts = store::AlfrescoOptions {
        db: args.db.clone(),
        content: args.content.clone(),
        ..store::AlfrescoOptions::default()
    };
    let report = store::verify_alfresco(&repo, id, &manifest, &opts)
        .with_context(|| format!("verifying set {} as an Alfresco backup", id.short()))?;
    super::report_notes(&repo);
    print_report(id, &manifest, &report, args.json)?;
    Ok(if report.is_consistent() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// What `verify alfresco` found, as JSON.
pub fn report_json(
    id: store::SnapshotId,
    manifest: &store::Manifest,
    r: &store::AlfrescoReport,
) -> serde_json::Value {
    let problem = |p: &store::UrlProblem| serde_json::json!({ "url": p.url, "expected_size": p.expected, "found_size": p.found });
    serde_json::json!({
        "id": id.to_hex(),
        "name": manifest.name(),
        "consistent": r.is_consistent(),
        "urls": r.urls,
        "ok": r.ok,
        "missing_count": r.missing_count,
        "missing": r.missing.iter().map(problem).collect::<Vec<_>>(),
        "wrong_size_count": r.wrong_size_count,
        "wrong_size": r.wrong_size.iter().map(problem).collect::<Vec<_>>(),
        "other_stores": r.other_stores,
        "content_files": r.content_files,
        "unreferenced": r.unreferenced,
    })
}

/// Prints what `verify alfresco` found, as text or JSON.
pub fn print_report(
    id: store::SnapshotId,
    manifest: &store::Manifest,
    r: &store::AlfrescoReport,
    json: bool,
) -> Result<()> {
    if json {
        return print_json(&report_json(id, manifest, r));
    }
    let printable = crate::output::printable;
    for p in &r.missing {
        out!("missing: {}", printable(&p.url));
    }
    for p in &r.wrong_size {
        out!(
            "wrong size: {} (the database records {} bytes, the set holds {})",
            printable(&p.url),
            p.expected.unwrap_or_default(),
            p.found.unwrap_or_default()
        );
    }
    let listed = (r.missing.len() + r.wrong_size.len()) as u64;
    if r.missing_count + r.wrong_size_count > listed {
        out!("... and {} more not listed", r.missing_count + r.wrong_size_count - listed);
    }
    summary!(
        "set {} ({}): {} content URLs, {} found with their size, {} missing, {} of another size{}; \
         {} content files, {} referenced by no row (orphans, not an error)",
        id.short(),
        manifest.name(),
        r.urls,
        r.ok,
        r.missing_count,
        r.wrong_size_count,
        match r.other_stores {
            0 => String::new(),
            n => format!(", {n} of other stores not checked"),
        },
        r.content_files,
        r.unreferenced
    );
    if r.is_consistent() {
        summary!(
            "the set is consistent: its content store holds every document its database references"
        );
    }
    Ok(())
}
