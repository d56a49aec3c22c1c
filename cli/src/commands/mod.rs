//! One module per command: open the repository, build options, call the engine, render.

mod cat;
mod check;
mod copy;
mod diff;
mod find;
mod forget;
mod init;
mod key;
mod ls;
mod mount;
mod prune;
mod reference;
mod repair;
mod restore;
mod run;
mod snapshot;
mod snapshots;
mod stats;
mod tag;
mod unlock;
pub(crate) mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::args::{Cli, Command};
use crate::output::warning;

pub use reference::command;

/// Runs the parsed command line; `matches` gives the order of repeated options.
pub fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<ExitCode> {
    let lock_wait = crate::output::parse_duration(&cli.lock_wait)
        .with_context(|| format!("invalid --lock-wait {:?}", cli.lock_wait))?;
    let stale_after = crate::output::parse_duration(&cli.stale_lock_after)
        .with_context(|| format!("invalid --stale-lock-after {:?}", cli.stale_lock_after))?;
    crate::output::set_verbosity(cli.quiet, cli.verbose);
    if stale_after.is_zero() {
        anyhow::bail!("invalid --stale-lock-after 0: every lock would be stale at once");
    }
    // Long commands stop cleanly on SIGINT and SIGTERM (the mount handles its own).
    if matches!(
        cli.command,
        Command::Snapshot(_)
            | Command::Restore(_)
            | Command::Check(_)
            | Command::Prune(_)
            | Command::Repair(_)
            | Command::Forget(_)
            | Command::Stats(_)
            | Command::Copy(_)
    ) {
        crate::signals::install().context("installing the signal handlers")?;
    }
    let cache_size = crate::output::parse_size(&cli.cache_size)
        .with_context(|| format!("invalid --cache-size {:?}", cli.cache_size))?;
    let repo = RepoArg {
        path: cli.repo,
        cache_dir: cli.cache_dir,
        cache_size,
        lock_wait,
        stale_after,
        password_file: cli.password_file,
        password_env: "STORE",
    };
    match cli.command {
        Command::Init(a) => init::run(&repo, &a),
        Command::Snapshot(a) => {
            let sub = matches.subcommand_matches("snapshot").context("snapshot arguments")?;
            snapshot::run(&repo, &a, sub)
        }
        Command::Diff(a) => diff::run(&repo, &a),
        Command::Copy(a) => copy::run(repo, &a),
        Command::Check(a) => check::run(&repo, &a),
        Command::Repair(crate::args::RepairCommand::Index(a)) => repair::repair_index(&repo, &a),
        Command::Repair(crate::args::RepairCommand::Snapshots(a)) => {
            repair::repair_snapshots(&repo, &a)
        }
        Command::Repair(crate::args::RepairCommand::Packs(a)) => repair::repair_packs(&repo, &a),
        Command::Repair(crate::args::RepairCommand::Config) => repair::repair_config(&repo),
        Command::Unlock(a) => unlock::unlock(&repo, &a),
        Command::Key(a) => key::run(&repo, &a),
        Command::Verify(crate::args::VerifyCommand::Alfresco(a)) => verify::alfresco(&repo, &a),
        Command::Forget(a) => forget::forget(&repo, &a),
        Command::Prune(a) => prune::prune(&repo, &a),
        Command::Stats(a) => stats::stats(&repo, &a),
        Command::Cat(a) => cat::cat(&repo, &a),
        Command::Dump(a) => cat::dump(&repo, &a),
        Command::Mount(a) => mount::run(&repo, &a),
        Command::Snapshots(a) => snapshots::run(&repo, &a),
        Command::Ls(a) => ls::run(&repo, &a),
        Command::Find(a) => find::run(&repo, &a),
        Command::Run(a) => run::run(&a),
        Command::Tag(a) => tag::run(&repo, &a),
        Command::Restore(a) => restore::run(&repo, &a),
        Command::Completion(a) => reference::completion(&a),
        Command::Man(a) => reference::man(&a),
    }
}

/// The repository named on the command line or in `STORE_REPO`.
pub struct RepoArg {
    path: Option<std::ffi::OsString>,
    cache_dir: Option<PathBuf>,
    cache_size: u64,
    lock_wait: std::time::Duration,
    stale_after: std::time::Duration,
    password_file: Option<PathBuf>,
    /// The prefix of the password variables: `STORE` (`STORE_PASSWORD`...), or `STORE_FROM`
    /// for the source of `store copy`.
    password_env: &'static str,
}

impl RepoArg {
    fn location(&self) -> Result<store::RepoLocation> {
        let arg = self
            .path
            .as_deref()
            .context("no repository given: use --repo REPO or set STORE_REPO")?;
        Ok(store::RepoLocation::parse(arg)?)
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        self.cache_dir.clone()
    }

    fn password_file(&self) -> Option<&std::path::Path> {
        self.password_file.as_deref()
    }

    fn lock_options(&self, command: &str) -> store::LockOptions {
        store::LockOptions {
            wait: self.lock_wait,
            stale_after: self.stale_after,
            command: command.to_owned(),
            interrupt: crate::signals::stop_flag(),
        }
    }

    fn open(&self) -> Result<store::Repository> {
        self.open_with(false)
    }

    /// Opens the repository; with `use_config_copy`, also when only `config.copy` is left.
    fn open_with(&self, use_config_copy: bool) -> Result<store::Repository> {
        let location = self.location()?;
        let mut opts = store::OpenOptions {
            cache_dir: self.cache_dir.clone(),
            use_config_copy,
            password: crate::password::given(self.password_file.as_deref(), self.password_env),
            cache_size: Some(self.cache_size),
        };
        let mut opened = store::Repository::open_at(&location, &opts);
        // A password that takes a command or a person is asked for only when the repository
        // turns out to be encrypted.
        if let Err(store::Error::PasswordRequired { .. }) = opened {
            let what = if self.password_env == "STORE" {
                "the repository".to_owned()
            } else {
                format!("the source repository {}", location)
            };
            opts.password = Some(crate::password::existing_as(
                self.password_file.as_deref(),
                self.password_env,
                &what,
            )?);
            opened = store::Repository::open_at(&location, &opts);
        }
        let repo = match opened {
            Ok(repo) => repo,
            Err(e @ store::Error::ConfigMissing { .. }) => {
                return Err(anyhow::Error::new(e)
                    .context("`store repair config` restores config from its copy"))
            }
            Err(e) => return Err(anyhow::Error::new(e).context("cannot open the repository")),
        };
        if let Some(damage) = repo.config_damage() {
            crate::output::stderr!(
                "store: warning: {damage}; using config.copy (run `store repair config`)"
            );
        }
        Ok(repo)
    }
}

/// Warns about a cache that was damaged and rebuilt, and about index files the cache had to
/// leave out (the blobs only they list look lost until `store repair index`).
fn report_notes(repo: &store::Repository) {
    if let Some(temp) = repo.temporary_cache().filter(|_| !crate::output::quiet()) {
        crate::output::stderr!(
            "store: note: {} cannot be written (a read-only repository?): a temporary index cache \
             was used ({}, removed at exit); --cache-dir DIR keeps one",
            repo.cache_dir().display(),
            temp.display()
        );
    }
    if let Some(why) = repo.cache_rebuilt() {
        crate::output::stderr!(
            "store: warning: the index cache {} was damaged ({why}); it was rebuilt from the \
             index files",
            repo.cache_dir().display()
        );
    }
    for s in repo.skipped_index_files() {
        crate::output::stderr!(
            "store: warning: index file {} was skipped ({}); what it lists is missing until \
             `store repair index` rebuilds the index from the packs",
            s.id.short(),
            s.error
        );
    }
}

/// Takes a lock for `command`. Locks of dead processes on this host are removed with a message.
/// With `best_effort`, a repository where no lock can be written (read-only) is used unlocked.
fn lock(
    repo_arg: &RepoArg,
    repo: &store::Repository,
    kind: store::LockKind,
    command: &str,
    best_effort: bool,
) -> Result<Option<store::RepoLock>> {
    let opts = repo_arg.lock_options(command);
    let mut removed = |info: &store::LockInfo| {
        crate::output::stderr!("store: removed the lock of a process that no longer runs: {info}");
    };
    match repo.lock(kind, &opts, &mut removed) {
        Ok(lock) => Ok(Some(lock)),
        Err(store::Error::Io { path, cause: source })
            if best_effort
                && matches!(
                    source.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
                ) =>
        {
            warning!("cannot write a lock ({}: {source}); going on without", path.display());
            Ok(None)
        }
        Err(e @ store::Error::Locked { .. }) => Err(anyhow::Error::new(e)
            .context("wait with --lock-wait DURATION, or remove a stale lock with `store unlock`")),
        Err(e @ store::Error::LockDamaged { .. }) => {
            Err(anyhow::Error::new(e).context("remove it with `store unlock`"))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes a JSON document and a newline to stdout (a reader that went away is no error, as for
/// [`crate::output::write_line`]).
fn print_json(value: &serde_json::Value) -> Result<()> {
    crate::output::write_line(format_args!("{}", serde_json::to_string_pretty(value)?))?;
    Ok(())
}

/// Counts as JSON fields.
fn counts_json(c: &store::Counts) -> serde_json::Map<String, serde_json::Value> {
    let serde_json::Value::Object(map) = serde_json::json!({
        "files": c.files,
        "dirs": c.dirs,
        "symlinks": c.symlinks,
        "specials": c.specials,
        "bytes_source": c.bytes_source,
        "bytes_read": c.bytes_read,
        "bytes_added": c.bytes_added,
        "chunks_new": c.chunks_new,
        "files_new": c.files_new,
        "files_changed": c.files_changed,
        "files_unchanged": c.files_unchanged,
    }) else {
        return serde_json::Map::new();
    };
    map
}

/// A manifest, named `name`, as the JSON object `snapshots --json` and `snapshot --json` share.
/// A set's note in JSON: `null` when it has none.
fn note_json(note: &str) -> serde_json::Value {
    if note.is_empty() {
        serde_json::Value::Null
    } else {
        note.into()
    }
}

fn manifest_json(id: store::SnapshotId, name: &str, m: &store::Manifest) -> serde_json::Value {
    let components: Vec<serde_json::Value> = m
        .components
        .iter()
        .map(|c| {
            let mut obj = serde_json::json!({
                "name": c.name,
                "source": store::escape_name(&c.source),
                "kind": c.kind.as_str(),
                "root": c.root.to_hex(),
                "start": crate::output::time_rfc3339(c.start_ns),
                "end": crate::output::time_rfc3339(c.end_ns),
            });
            if let Some(o) = obj.as_object_mut() {
                o.extend(counts_json(&c.counts));
            }
            obj
        })
        .collect();
    let mut obj = serde_json::json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "name": name,
        "time": crate::output::time_rfc3339(m.time_ns),
        "end_time": crate::output::time_rfc3339(m.end_ns),
        "host": m.host,
        "tags": m.tags,
        "note": note_json(&m.note),
        "kind": m.kind.as_str(),
        "parent": m.parent.map(|p| p.to_hex()),
        "components": components,
        "issues": m.issues.iter().map(|s| serde_json::json!({
            "component": s.component,
            "path": store::escape_name(&s.path),
            "kind": match s.kind {
                store::IssueKind::Skipped => "skipped",
                store::IssueKind::Changed => "changed",
                store::IssueKind::Incomplete => "incomplete",
            },
            "reason": s.reason,
        })).collect::<Vec<_>>(),
    });
    if let Some(o) = obj.as_object_mut() {
        o.extend(counts_json(&m.counts));
    }
    obj
}
