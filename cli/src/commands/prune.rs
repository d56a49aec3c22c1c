//! `store prune`.

use std::process::ExitCode;

use anyhow::{bail, Result};

use super::{print_json, RepoArg};
use crate::args::PruneArgs;
use crate::output::{size, summary};
use crate::progress::Bar;

pub fn prune(repo_arg: &RepoArg, args: &PruneArgs) -> Result<ExitCode> {
    if let Some(path) = &args.metrics_file {
        crate::metrics::want(path, "prune", &[]);
    }
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
        crate::output::stderr!("store: removed the lock of a process that no longer runs: {info}");
    };
    let report = Bar::run("prune", |bar| store::prune(&repo, &opts, bar, &mut removed));
    let report = match report {
        Ok(r) => r,
        Err(store::Error::Locked { holder }) if holder.contains("lock of `mount`") => {
            return Err(anyhow::Error::new(store::Error::Locked { holder }).context(
                "a `store mount` holds the repository: unmount it (fusermount3 -u MOUNTPOINT, or \
                 Ctrl-C in its terminal), or wait with --lock-wait DURATION",
            ))
        }
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
    for (name, help, v) in [
        ("prune_packs_deleted", "Packs deleted.", packs_deleted),
        ("prune_bytes_deleted", "Bytes of packs deleted.", p.bytes_deleted),
        ("prune_bytes_written", "Bytes written to new packs.", p.bytes_written),
        ("prune_bytes_freed", "Bytes freed.", p.bytes_freed),
    ] {
        crate::metrics::value(name, help, v as f64);
    }
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
        summary!(
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
