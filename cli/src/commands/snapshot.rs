//! `store snapshot`.

use crate::output::{summary, warning};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{lock, manifest_json, print_json, RepoArg};
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
                    "source {}: its name is not UTF-8; name the component with --component NAME=PATH",
                    path.display()
                )
            })?
            .to_owned(),
        None => "root".to_owned(),
    };
    Ok(store::SourceSpec::path(name, path))
}

/// Splits `NAME=VALUE`.
fn name_value<'a>(option: &str, s: &'a str) -> Result<(&'a str, &'a str)> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() && !value.is_empty() => Ok((name, value)),
        _ => bail!("invalid {option} {s:?}: expected NAME=VALUE"),
    }
}

/// The components in command-line order, whichever option named them, and the names of those
/// followed by `--write-once`.
fn ordered_sources(
    args: &SnapshotArgs,
    matches: &clap::ArgMatches,
) -> Result<(Vec<store::SourceSpec>, Vec<String>)> {
    let indices = |id: &str| -> Vec<usize> {
        matches.indices_of(id).map(Iterator::collect).unwrap_or_default()
    };
    let mut sources: Vec<(usize, store::SourceSpec)> = Vec::new();
    for (i, p) in indices("paths").into_iter().zip(&args.paths) {
        sources.push((i, source_for(p)?));
    }
    for (i, c) in indices("components").into_iter().zip(&args.components) {
        let (name, path) = name_value("--component", c)?;
        sources.push((i, store::SourceSpec::path(name, path)));
    }
    for (i, c) in indices("component_cmds").into_iter().zip(&args.component_cmds) {
        let (name, cmd) = name_value("--component-cmd", c)?;
        sources.push((
            i,
            store::SourceSpec { name: name.into(), kind: store::SourceKind::Command(cmd.into()) },
        ));
    }
    if let (Some(name), Some(i)) = (&args.stdin, indices("stdin").first()) {
        sources
            .push((*i, store::SourceSpec { name: name.clone(), kind: store::SourceKind::Stdin }));
    }
    if sources.is_empty() {
        bail!("nothing to back up: give PATHs, --component, --component-cmd or --stdin");
    }
    sources.sort_by_key(|(i, _)| *i);
    let mut write_once = Vec::new();
    // A count flag has a default value, with an index of its own: only occurrences count.
    let given = matches.value_source("write_once") == Some(clap::parser::ValueSource::CommandLine);
    for i in indices("write_once").into_iter().filter(|_| given).take(usize::from(args.write_once))
    {
        match sources.iter().rev().find(|(at, _)| *at < i).map(|(_, s)| s) {
            Some(s @ store::SourceSpec { kind: store::SourceKind::Path(_), .. }) => {
                if !write_once.contains(&s.name) {
                    write_once.push(s.name.clone());
                }
            }
            Some(s) => {
                bail!("--write-once follows component {:?}, which is not a directory", s.name)
            }
            None => bail!(
                "--write-once must follow the directory component it marks (--component \
                 content=/alf_data/contentstore --write-once)"
            ),
        }
    }
    Ok((sources.into_iter().map(|(_, s)| s).collect(), write_once))
}

/// Patterns from `--exclude` and every `--exclude-file`.
fn exclude_patterns(args: &SnapshotArgs) -> Result<Vec<String>> {
    let mut patterns = args.excludes.clone();
    for file in &args.exclude_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading exclude file {}", file.display()))?;
        patterns.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(patterns)
}

pub(super) fn host_name() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

pub fn run(repo: &RepoArg, args: &SnapshotArgs, matches: &clap::ArgMatches) -> Result<ExitCode> {
    if let Some(path) = &args.metrics_file {
        let host = args.host.clone().unwrap_or_else(host_name);
        crate::metrics::want(path, "snapshot", &[("host", host), ("tags", args.tags.join(","))]);
    }
    let (sources, write_once) = ordered_sources(args, matches)?;
    let write_once_settle = crate::output::parse_duration(&args.write_once_settle)
        .with_context(|| format!("invalid --write-once-settle {:?}", args.write_once_settle))?;
    if args.verify_write_once && write_once.is_empty() {
        bail!("--verify-write-once needs a component marked --write-once");
    }
    let verify = args.verify.as_ref().map(|_| store::AlfrescoOptions::default());
    if let Some(v) = &verify {
        for (name, what) in [(&v.db, "the pg_dump"), (&v.content, "the content store")] {
            if !sources.iter().any(|s| s.name == *name) {
                bail!(
                    "--verify alfresco needs a component named {name:?} holding {what} (e.g. \
                     --component-cmd db='pg_dump -Fc alfresco' --component \
                     content=/alf_data/contentstore)"
                );
            }
        }
    }
    let excludes = exclude_patterns(args)?;
    let repo_arg = repo;
    let repo = repo.open()?;
    // A dry run writes nothing, so it takes no lock (and works on a read-only repository).
    let _lock = if args.dry_run {
        None
    } else {
        lock(repo_arg, &repo, store::LockKind::Shared, "snapshot", false)?
    };
    let parent = match (&args.parent, args.full) {
        (_, true) => store::ParentChoice::Full,
        (Some(reference), false) => {
            let (id, _) = repo
                .resolve_snapshot(reference)
                .with_context(|| format!("finding parent snapshot {reference:?}"))?;
            store::ParentChoice::Set(id)
        }
        (None, false) => store::ParentChoice::Auto,
    };
    crate::output::set_json(args.json);
    let mut opts = store::SnapshotOptions {
        sources,
        tags: args.tags.clone(),
        host: args.host.clone().unwrap_or_else(host_name),
        parent,
        excludes,
        append_only: args.append_only.clone(),
        threads: args.threads.unwrap_or(0),
        scan_totals: false,
        one_file_system: args.one_file_system,
        require_data: args.require_data,
        note: args.note.clone().unwrap_or_default(),
        write_once,
        write_once_settle,
        verify_write_once: args.verify_write_once,
    };
    if args.dry_run {
        let result = Bar::run("dry run", |bar| store::preview(&repo, &opts, bar));
        super::report_notes(&repo);
        return dry_run_report(&repo, args, &result.context("dry run failed")?);
    }
    let (result, issues) = Bar::run("snapshot", |bar| {
        opts.scan_totals = bar.is_visible();
        (store::snapshot(&repo, &opts, bar), bar.issues())
    });
    super::report_notes(&repo);
    let report = match result {
        Ok(report) => report,
        Err(e @ store::Error::PackVanished { .. }) => {
            // Deleted by a prune that overtook this snapshot, or lost: say which to do.
            let pruning = repo.list_locks(repo_arg.stale_after).is_ok_and(|locks| {
                locks.iter().flatten().any(|l| l.record.command.starts_with("prune"))
            });
            let advice = if pruning {
                "a prune is running: take the snapshot again once it is done"
            } else {
                "no prune is running, so the pack was lost: run `store check`, then `store repair \
                 index`; the next snapshot stores its data again"
            };
            return Err(anyhow::Error::new(e)
                .context(advice)
                .context("snapshot failed, nothing was committed"));
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context("snapshot failed, nothing was committed"))
        }
    };
    let m = &report.manifest;
    let c = &m.counts;
    for (name, help, v) in [
        ("snapshot_files", "Files in the set.", c.files),
        ("snapshot_dirs", "Directories in the set.", c.dirs),
        ("snapshot_bytes_source", "Bytes of the files in the set.", c.bytes_source),
        ("snapshot_bytes_read", "Bytes read from the sources.", c.bytes_read),
        ("snapshot_bytes_added", "Bytes added to the repository.", c.bytes_added),
        ("snapshot_files_new", "Files new since the parent set.", c.files_new),
        ("snapshot_files_changed", "Files changed since the parent set.", c.files_changed),
        ("snapshot_issues", "Paths not backed up as they were.", m.issues.len() as u64),
        (
            "snapshot_changed_in_place",
            "Files of write-once components found changed in place (--verify-write-once).",
            report.changed_in_place.0,
        ),
    ] {
        crate::metrics::value(name, help, v as f64);
    }
    for p in &report.unmatched_excludes {
        warning!("--exclude {p:?} matched nothing");
    }
    if repo.config().version < 2 {
        warning!(
            "this repository is format version {}: it keeps no extended attributes, ACLs or hard \
             links, and times only from 1677 to 2262 (a repository made by `store init` keeps \
             them)",
            repo.config().version
        );
    }
    left_out_notes(&report.left_out);
    for c in m.components.iter().filter(|c| !c.kind.is_dir() && c.counts.bytes_source == 0) {
        if matches!(c.kind, store::ComponentKind::Stdin | store::ComponentKind::Command) {
            warning!(
                "component {} yielded no data (a failed dump in a pipe?); --require-data makes \
                 that an error",
                c.name
            );
        }
    }
    if report.packs_adopted > 0 && !crate::output::quiet() {
        crate::output::stderr!(
            "store: adopted {} packs an interrupted snapshot had written (verified), so their \
             data was not written again",
            report.packs_adopted
        );
    }
    let secs = report.duration.as_secs_f64();
    // Its name among the sets (a second set of the same second is `-2`).
    let name = repo
        .list_snapshots()
        .ok()
        .and_then(|listed| {
            let sets: Vec<(store::SnapshotId, store::Manifest)> =
                listed.into_iter().filter_map(|s| s.manifest.ok().map(|m| (s.id, m))).collect();
            store::unique_names(sets.iter().map(|(id, m)| (*id, m))).remove(&report.id)
        })
        .unwrap_or_else(|| m.name());
    // The set is committed: a verification that cannot run, or finds documents missing, is
    // reported and makes the exit status 3, and the set stays.
    let verified = verify.as_ref().map(|v| {
        store::verify_alfresco(&repo, report.id, m, v)
            .with_context(|| format!("verifying set {} as an Alfresco backup", report.id.short()))
    });
    let verified_ok = match &verified {
        None => true,
        Some(Ok(r)) => r.is_consistent(),
        Some(Err(e)) => {
            warning!("{e:#}");
            false
        }
    };
    if args.json {
        let mut doc = manifest_json(report.id, &name, m);
        if let Some(o) = doc.as_object_mut() {
            if let Some(Ok(r)) = &verified {
                o.insert("verify".into(), super::verify::report_json(report.id, m, r));
            }
            o.insert("duration_s".into(), serde_json::json!(secs));
            o.insert("packs".into(), serde_json::json!(report.packs));
            o.insert("issues_reported".into(), serde_json::json!(issues));
            o.insert("packs_adopted".into(), serde_json::json!(report.packs_adopted));
            o.insert("excluded".into(), serde_json::json!(report.excluded));
            o.insert("dirs_reused".into(), serde_json::json!(report.dirs_reused));
            // Of object storage: what this run asked of it (opening included).
            if let Some(requests) = repo.storage().requests() {
                o.insert("requests".into(), serde_json::json!(requests));
            }
            if args.verify_write_once {
                let (n, listed) = &report.changed_in_place;
                o.insert("changed_in_place".into(), serde_json::json!(n));
                o.insert("changed_in_place_paths".into(), serde_json::json!(listed));
            }
        }
        print_json(&doc)?;
    } else {
        let parent = m.parent.map(|p| format!(" on {}", p.short())).unwrap_or_default();
        summary!(
            "{} set {} ({}){parent} saved: {} files, {} dirs, {} in {:.1} s ({})",
            m.kind.as_str(),
            report.id.short(),
            name,
            m.counts.files,
            m.counts.dirs,
            size(m.counts.bytes_source),
            secs,
            if m.counts.bytes_read == 0 {
                "nothing to read".to_owned()
            } else {
                rate(m.counts.bytes_read, secs)
            },
        );
        let mut excluded = match report.excluded {
            0 => String::new(),
            n => format!(", {n} excluded"),
        };
        if report.dirs_reused > 0 {
            excluded
                .push_str(&format!(" ({} write-once dirs reused unlisted)", report.dirs_reused));
        }
        summary!(
            "  files: {} new, {} changed, {} unchanged{excluded}; read {}, added {} ({} new chunks, {} packs)",
            m.counts.files_new,
            m.counts.files_changed,
            m.counts.files_unchanged,
            size(m.counts.bytes_read),
            size(m.counts.bytes_added),
            m.counts.chunks_new,
            report.packs,
        );
    }
    if let (Some(Ok(r)), false) = (&verified, args.json) {
        super::verify::print_report(report.id, m, r, false)?;
    }
    if !verified_ok {
        crate::output::stderr!(
            "store: set {} was committed, but it is not restorable as a whole (see above)",
            report.id.short()
        );
        return Ok(ExitCode::from(crate::EXIT_PARTIAL));
    }
    if broken_promises(&report.changed_in_place) {
        return Ok(ExitCode::from(crate::EXIT_PARTIAL));
    }
    if issues == 0 && m.issues.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        crate::output::stderr!(
            "store: {} paths could not be backed up as they were (named above); the set was \
             committed",
            issues.max(m.issues.len() as u64)
        );
        Ok(ExitCode::from(crate::EXIT_PARTIAL))
    }
}

/// Renders what `snapshot --dry-run` found.
fn dry_run_report(
    repo: &store::Repository,
    args: &SnapshotArgs,
    report: &store::PreviewReport,
) -> Result<ExitCode> {
    for p in &report.unmatched_excludes {
        warning!("--exclude {p:?} matched nothing");
    }
    left_out_notes(&report.left_out);
    let broken = broken_promises(&report.changed_in_place);
    let done = if broken { ExitCode::from(crate::EXIT_PARTIAL) } else { ExitCode::SUCCESS };
    let kind_name = |k: Option<store::ComponentKind>| match k {
        Some(store::ComponentKind::Stdin) => "stdin",
        Some(store::ComponentKind::Command) => "command",
        Some(store::ComponentKind::File) => "file",
        _ => "dir",
    };
    let parent = report.parent.map(|p| {
        let name = repo.load_snapshot(p).map(|m| m.name()).unwrap_or_default();
        (p, name)
    });
    if args.json {
        let comps: Vec<serde_json::Value> = report
            .components
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "kind": kind_name(c.kind),
                    "files_new": c.files_new,
                    "files_changed": c.files_changed,
                    "files_unchanged": c.files_unchanged,
                    "bytes_to_read": c.bytes_to_read,
                    "bytes_unchanged": c.bytes_unchanged,
                    "dirs": c.dirs,
                    "symlinks": c.symlinks,
                    "specials": c.specials,
                    "excluded": c.excluded,
                    "skipped": c.skipped,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "dry_run": true,
            "kind": if parent.is_some() { "incremental" } else { "full" },
            "parent": parent.as_ref().map(|(p, _)| p.to_hex()),
            "components": comps,
            "bytes_to_read": report.components.iter().map(|c| c.bytes_to_read).sum::<u64>(),
            "unmatched_excludes": report.unmatched_excludes,
            "dirs_reused": report.dirs_reused,
            "changed_in_place": report.changed_in_place.0,
            "changed_in_place_paths": report.changed_in_place.1,
        }))?;
        return Ok(done);
    }
    match &parent {
        Some((p, name)) => summary!("dry run: an incremental set on {} ({name})", p.short()),
        None => summary!("dry run: a full set (no parent: every file is read)"),
    }
    for c in &report.components {
        match c.kind {
            Some(store::ComponentKind::Stdin | store::ComponentKind::Command) => {
                summary!("  {}: {}, not run in a dry run", c.name, kind_name(c.kind));
            }
            _ => summary!(
                "  {}: {} new, {} changed, {} unchanged files; would read {}, reuse {}; {} dirs, \
                 {} excluded, {} not readable",
                c.name,
                c.files_new,
                c.files_changed,
                c.files_unchanged,
                size(c.bytes_to_read),
                size(c.bytes_unchanged),
                c.dirs,
                c.excluded,
                c.skipped
            ),
        }
    }
    let total: u64 = report.components.iter().map(|c| c.bytes_to_read).sum();
    summary!("would read {}; nothing was written", size(total));
    Ok(done)
}

/// Names the files of write-once components found changed in place (`--verify-write-once`);
/// true when there are any.
fn broken_promises((count, listed): &(u64, Vec<String>)) -> bool {
    for p in listed {
        warning!("write-once: {p}");
    }
    if *count > listed.len() as u64 {
        warning!("write-once: {} more not named", count - listed.len() as u64);
    }
    if *count > 0 {
        crate::output::stderr!(
            "store: {count} files of write-once components changed in place or appeared in \
             unchanged directories: without --verify-write-once they would have been missed"
        );
    }
    *count > 0
}

/// Names the repository's own directories that a source contained (left out of the set).
fn left_out_notes(left_out: &[String]) {
    for p in left_out {
        if !crate::output::quiet() {
            crate::output::stderr!(
                "store: note: left out {p}: it is this repository (or its cache)"
            );
        }
    }
}
