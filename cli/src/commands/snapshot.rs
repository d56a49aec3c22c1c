//! `store snapshot`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::{manifest_json, print_json, RepoArg};
use crate::args::SnapshotArgs;
use crate::output::{rate, size};
use crate::progress::Bar;

/// A component named after the last element of `path` (resolved, so `.` works).
fn source_for(path: &Path) -> Result<store::SourceSpec> {
    let resolved = std::path::absolute(path)
        .and_then(|p| if p.file_name().is_some() { Ok(p) } else { p.canonicalize() })
        .with_context(|| format!("source {}", path.display()))?;
    let name = match resolved.file_name() {
        Some(n) => std::str::from_utf8(n.as_bytes())
            .with_context(|| {
                format!(
                    "source {}: its name is not UTF-8; rename it or back up its parent",
                    path.display()
                )
            })?
            .to_owned(),
        None => "root".to_owned(),
    };
    Ok(store::SourceSpec { name, path: path.to_path_buf() })
}

fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

pub fn run(repo: &RepoArg, args: &SnapshotArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let sources = args.paths.iter().map(|p| source_for(p)).collect::<Result<Vec<_>>>()?;
    let bar = Bar::new("snapshot");
    let opts = store::SnapshotOptions {
        sources,
        tags: args.tags.clone(),
        host: args.host.clone().unwrap_or_else(host_name),
        threads: args.threads.unwrap_or(0),
        scan_totals: bar.is_visible(),
    };
    let result = store::snapshot(&repo, &opts, &bar);
    bar.finish();
    let report = result.context("snapshot failed, nothing was committed")?;
    let m = &report.manifest;
    for s in &m.skipped {
        eprintln!("store: warning: {}/{}: {}", s.component, store::escape_name(&s.path), s.reason);
    }
    let secs = report.duration.as_secs_f64();
    if args.json {
        let mut doc = manifest_json(report.id, m);
        if let Some(o) = doc.as_object_mut() {
            o.insert("duration_s".into(), serde_json::json!(secs));
            o.insert("packs".into(), serde_json::json!(report.packs));
        }
        print_json(&doc)?;
    } else {
        println!(
            "snapshot {} saved: {} files, {} dirs, {} in {:.1} s ({})",
            report.id.short(),
            m.counts.files,
            m.counts.dirs,
            size(m.counts.bytes_source),
            secs,
            rate(m.counts.bytes_read, secs),
        );
        println!(
            "  read {}, added {} to the repository ({} new chunks, {} packs)",
            size(m.counts.bytes_read),
            size(m.counts.bytes_added),
            m.counts.chunks_new,
            report.packs,
        );
    }
    if m.skipped.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "store: {} paths could not be read; the set was committed without them",
            m.skipped.len()
        );
        Ok(ExitCode::from(crate::EXIT_PARTIAL))
    }
}
