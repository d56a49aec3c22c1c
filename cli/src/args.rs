//! Command-line arguments (clap derive). Doc comments are the help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A content-addressed, deduplicating backup store for content repositories.
#[derive(Debug, Parser)]
#[command(name = "store", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// The repository: a local directory, or S3-compatible object storage as
    /// `s3:https://HOST[:PORT]/BUCKET[/PREFIX]` (credentials from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` or `AWS_PROFILE`).
    #[arg(long, short = 'r', env = "STORE_REPO", global = true, value_name = "REPO", help_heading = GLOBAL)]
    pub repo: Option<std::ffi::OsString>,

    /// Where this host keeps its index cache (default: REPO/cache; for object storage, the
    /// cache and staging directory, default ~/.cache/store/<repository id>).
    #[arg(long, global = true, value_name = "DIR", help_heading = GLOBAL)]
    pub cache_dir: Option<PathBuf>,

    /// Most of the cache of a repository in object storage given to its trees and chunk
    /// lists (kept so they are not downloaded again; past it they are dropped and kept anew).
    /// The index itself is not counted (about 100 bytes per chunk): without it nothing
    /// deduplicates.
    #[arg(long, global = true, value_name = "SIZE", default_value = "4GiB", help_heading = GLOBAL)]
    pub cache_size: String,

    /// How long to wait for another process's conflicting lock (30s, 10m, 1h; 0s: fail at once).
    #[arg(long, global = true, value_name = "DURATION", default_value = "0s", help_heading = GLOBAL)]
    pub lock_wait: String,

    /// After how long without refresh another process's lock no longer blocks (locks are
    /// refreshed every minute while held; 0 is refused).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30m", help_heading = GLOBAL)]
    pub stale_lock_after: String,

    /// Print errors only: no progress, no summary, no warnings (paths that could not be backed
    /// up are still named). For cron, which mails what a job prints.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose", help_heading = GLOBAL)]
    pub quiet: bool,

    /// Name each file as it is handled: `snapshot` as new, changed or unchanged, `restore` as
    /// written.
    #[arg(long, short = 'v', global = true, help_heading = GLOBAL)]
    pub verbose: bool,

    /// Append what the command says (its start, summaries, warnings, errors, exit status) to
    /// FILE, each line with the time (UTC), process id and command; created 0600.
    #[arg(long, env = "STORE_LOG_FILE", global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub log_file: Option<PathBuf>,

    /// Read the password of an encrypted repository from the first line of FILE. Without it:
    /// STORE_PASSWORD_COMMAND (a shell command; the first line of its output), then
    /// STORE_PASSWORD, then a prompt on the terminal.
    #[arg(long, env = "STORE_PASSWORD_FILE", global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub password_file: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The heading of the options every command takes.
const GLOBAL: &str = "Global options";

/// `store --help`: the exit codes (README "Exit codes").
const EXIT_CODES: &str = "\
Exit codes:
  0        done
  1        error, nothing committed (check: damage found; restore --include: nothing matched)
  3        the set was committed, but some source files could not be read (named on stderr);
           restore: done, but some entries could not be made (a socket; a device without root)
  10       there is no repository there
  11       the repository is locked by another process
  12       wrong password (no key of the repository opens with it)
  130, 143 interrupted by SIGINT or SIGTERM at a safe point: nothing committed";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty repository.
    Init(InitArgs),
    /// Back up directories and files as one set.
    Snapshot(Box<SnapshotArgs>),
    /// List the sets in the repository, newest first.
    Snapshots(SnapshotsArgs),
    /// List the contents of a set.
    Ls(LsArgs),
    /// Which sets hold paths that match a pattern, newest set first.
    Find(FindArgs),
    /// Run the job a profile of the configuration describes: snapshot, forget, prune, check.
    Run(RunArgs),
    /// Add or remove tags of a set.
    Tag(TagArgs),
    /// Restore a set, or part of it, into a directory.
    Restore(RestoreArgs),
    /// Show what changed between two sets.
    Diff(DiffArgs),
    /// Copy sets from another repository into this one (--repo or --to): only the chunks this
    /// one lacks are stored; sets it has already are skipped.
    Copy(CopyArgs),
    /// Verify the repository: structure, and with --read-data every blob.
    Check(CheckArgs),
    /// Repair the repository.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Remove stale locks (of dead processes, or not refreshed for 30 minutes).
    Unlock(UnlockArgs),
    /// Manage the keys (passwords) of an encrypted repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Check that a set is restorable as a whole (Alfresco: every content URL the database
    /// references is in the content store, with its size).
    #[command(subcommand)]
    Verify(VerifyCommand),
    /// Remove sets by id or by a retention policy (their data stays until prune).
    Forget(ForgetArgs),
    /// Delete the data no set references any more.
    Prune(PruneArgs),
    /// Sizes, dedup and compression ratios, and what each set alone holds.
    Stats(StatsArgs),
    /// Write one file of a set to standard output (e.g. `store cat latest db | pg_restore ...`).
    Cat(CatArgs),
    /// Write a directory (or file) of a set to standard output as a tar archive.
    Dump(DumpArgs),
    /// Mount the repository read-only through FUSE, to browse sets and copy files out.
    #[command(visible_alias = "mount-restore")]
    Mount(MountArgs),
    /// Print a shell completion script (`store completion bash > /etc/bash_completion.d/store`).
    Completion(CompletionArgs),
    /// Write the manual pages, one per command (`store man /usr/local/share/man/man1`).
    Man(ManArgs),
}

/// `store completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `store man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `store.1`, `store-snapshot.1`, ... into (created if missing).
    #[arg(value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// `store mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// An existing empty directory to mount on.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Memory for decompressed chunks (e.g. 256MiB). (The global --cache-size bounds what is
    /// kept on disk for a repository in object storage.)
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = crate::output::parse_size)]
    pub memory_cache: u64,
    /// Let other users (and root) read the mount; needs `user_allow_other` in /etc/fuse.conf
    /// unless run as root. File permissions recorded in the sets still apply.
    #[arg(long)]
    pub allow_other: bool,
}

/// `store cat`.
#[derive(Debug, Args)]
pub struct CatArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The file: `component` for a file component, or `component/dir/file`.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

/// `store dump`.
#[derive(Debug, Args)]
#[command(after_help = "\
The archive holds what `store restore` writes below its target: the same paths (from the
component's name), bytes, modes, owners, times with nanoseconds, symlinks, FIFOs and devices,
hard links, and extended attributes and ACLs (extract them with GNU tar's `--xattrs
--xattrs-include='*'`). Sockets are left out and named.

Examples:
  store dump latest content/2026/11 > november.tar
  store dump latest content/2026/11/21 --format zip > documents.zip
  store dump 20261120-050000 content | ssh other 'tar -xpf - -C /srv/restore'")]
pub struct DumpArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// What to archive: `component` or `component/dir/...`.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Archive format: tar (POSIX pax with GNU long names: everything restore writes) or zip
    /// (paths, bytes, permissions, symlinks, times to two seconds; the rest is named).
    #[arg(long, value_name = "FORMAT", default_value = "tar", value_parser = ["tar", "zip"])]
    pub format: String,
}

/// `store stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print the statistics as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store forget`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each --keep-* option left at 0 is not used; sets any one of them keeps are kept.

Examples:
  store forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  store forget --tag nightly --keep-full 4      # four full sets and their incrementals
  store forget 20261120-050000                  # one set, with its incrementals
  store prune                                   # then free the space")]
pub struct ForgetArgs {
    /// Sets to forget (with every incremental chained to them).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the N newest sets of each host and tag group.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest set of each of the N newest hours (UTC) that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// … days.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// … weeks (Monday to Sunday).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// … months.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// … years.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Keep sets at most DURATION older than the newest of their group (14d, 2w, 1y6mo).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep sets tagged T (repeatable).
    #[arg(long = "keep-tag", value_name = "T")]
    pub keep_tags: Vec<String>,
    /// Keep the N newest full sets and every incremental chained to them.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_full: u32,
    /// Count hours, days, weeks, months and years in UTC (default: this machine's local time,
    /// as restic and Borg do).
    #[arg(long)]
    pub utc: bool,
    /// Only consider sets tagged T (repeatable).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only consider sets of host H.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Show what would be kept and removed, and why; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the decision as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Repack packs with more than this percentage of unused bytes (0: every pack with any).
    #[arg(long, value_name = "PERCENT", default_value_t = store::DEFAULT_MAX_UNUSED * 100.0)]
    pub max_unused: f64,
    /// Print the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a Prometheus textfile-collector file (node_exporter) when the command ends,
    /// whatever its outcome: last run and last success time, duration, exit status and figures.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Read, decompress and re-hash every blob.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Read the N-th of M slices of the packs (a week of nightly `1/7` … `7/7` covers all).
    #[arg(long, value_name = "N/M")]
    pub read_data_subset: Option<String>,
    /// With --read-data: read only the packs no check (of any host) verified within this long
    /// (`30d`, `2w`), the least recently verified first. Every check that reads data records
    /// what it verified in the repository.
    #[arg(long, value_name = "DURATION", requires = "read_data")]
    pub max_age: Option<String>,
    /// With --read-data: read at most this many bytes of packs (`50G`), the least recently
    /// verified first (at least one pack), so that nightly runs cover the repository in turn.
    #[arg(long, value_name = "SIZE", requires = "read_data")]
    pub max_bytes: Option<String>,
    /// Write a Prometheus textfile-collector file (node_exporter) when the command ends,
    /// whatever its outcome: last run and last success time, duration, exit status and figures.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Print the findings as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store key`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List the keys; the one this command opened the repository with is marked.
    List(KeyListArgs),
    /// Add a key (a password for a person, a cron job) that opens the repository.
    Add(NewPasswordArgs),
    /// Remove a key by its id (not the last, and not the one in use).
    Remove(KeyRemoveArgs),
    /// Change the password: add a key for the new password, then remove the one in use.
    Passwd(NewPasswordArgs),
}

/// `store key list`.
#[derive(Debug, Args)]
pub struct KeyListArgs {
    /// Print the keys as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store key remove`.
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The key's id, or a unique prefix of at least 8 hex characters (`store key list`).
    #[arg(value_name = "ID")]
    pub id: String,
}

/// The new password of `key add`, `key passwd`.
#[derive(Debug, Args)]
pub struct NewPasswordArgs {
    /// Read the new password from the first line of FILE (without it: STORE_NEW_PASSWORD, then
    /// a prompt on the terminal, asked twice).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub kdf: KdfArgs,
}

/// The cost of deriving a key from a password (Argon2id).
#[derive(Debug, Args, Clone)]
pub struct KdfArgs {
    /// Memory for the key derivation, in MiB (8 to 2048): more makes guessing passwords
    /// slower, and opening the repository too.
    #[arg(long, env = "STORE_KDF_MEMORY", value_name = "MIB", default_value_t = store::crypto::KdfParams::DEFAULT.memory_kib >> 10)]
    pub kdf_memory: u32,
    /// Passes of the key derivation over its memory (1 to 20).
    #[arg(long, env = "STORE_KDF_ITERATIONS", value_name = "N", default_value_t = store::crypto::KdfParams::DEFAULT.iterations)]
    pub kdf_iterations: u32,
}

/// `store repair`.
#[derive(Debug, Subcommand)]
pub enum RepairCommand {
    /// Rebuild the index files and this host's cache from the pack trailers.
    Index(RepairIndexArgs),
    /// Write repaired copies of sets that reference lost data, without the lost paths.
    Snapshots(RepairSnapshotsArgs),
    /// Move the intact blobs out of damaged packs into new ones, then remove the damaged packs
    /// (those `check --read-data` recorded, or the ones named).
    Packs(RepairPacksArgs),
    /// Rewrite a damaged config (or its missing copy) from the intact one.
    Config,
}

/// `store repair snapshots`.
#[derive(Debug, Args)]
pub struct RepairSnapshotsArgs {
    /// Also read and verify every blob the sets use (finds damaged data, not only missing).
    #[arg(long)]
    pub read_data: bool,
    /// Remove each damaged set once its repaired copy is written.
    #[arg(long)]
    pub forget: bool,
    /// Report what would be lost; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store repair packs`.
#[derive(Debug, Args)]
pub struct RepairPacksArgs {
    /// Packs to repair (full ids); default: every pack with recorded damage.
    #[arg(value_name = "PACK")]
    pub packs: Vec<String>,
    /// Report what would be salvaged and lost; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store repair index`.
#[derive(Debug, Args)]
pub struct RepairIndexArgs {
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store unlock`.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// Remove every lock, also live ones (only when no other store process runs).
    #[arg(long)]
    pub all: bool,
}

/// `store init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Chunk sizes as MIN/AVG/MAX; AVG must be a power of two (larger chunks: a smaller index,
    /// less dedup of edited files).
    #[arg(long, value_name = "MIN/AVG/MAX", default_value = "32KiB/128KiB/512KiB")]
    pub chunk_sizes: String,
    /// zstd compression level for new data (1-19).
    #[arg(long, value_name = "LEVEL", default_value_t = store::DEFAULT_LEVEL)]
    pub compression_level: i32,
    /// Target size of pack files.
    #[arg(long, value_name = "SIZE", default_value = "16MiB")]
    pub pack_size: String,
    /// Repository format version: 5 seals with XAES-256-GCM; 4 makes a repository that builds
    /// before 5 can read and write, and records a note on a set; 3 one that builds before 4
    /// can; 3 to 5 can be encrypted; 2 one that builds before 3 can, unencrypted; 1 one that
    /// builds before 2 can, without extended attributes, ACLs, hard links and times outside
    /// 1677-2262.
    #[arg(long, value_name = "N", default_value_t = store::FORMAT_VERSION)]
    pub format_version: u32,
    /// Everything in the repository encrypted and authenticated with a key from the password:
    /// `xaes-256-gcm` (the default from format version 5 on; fastest where the processor has
    /// AES instructions) or `xchacha20-poly1305` (the default of versions 3 and 4; fast on any
    /// processor). `none`: not encrypted, readable by anyone who can read its files (the
    /// default, and only choice, before 3).
    #[arg(
        long,
        value_name = "MODE",
        value_parser = ["xaes-256-gcm", "xchacha20-poly1305", "none"]
    )]
    pub encryption: Option<String>,
    #[command(flatten)]
    pub kdf: KdfArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store snapshot`.
///
/// Components are captured in the order they are given on the command line, whatever the
/// option that names them.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  store snapshot /srv/documents                  # one component, named documents
  store snapshot --tag nightly \\
    --component index=/alf_data/solr4Backup \\
    --component-cmd db='pg_dump -Fc alfresco' \\
    --component content=/alf_data/contentstore   # one set of three, in this order
  store snapshot --full --tag weekly /srv/documents
  store snapshot --exclude '*.tmp' --exclude /cache /srv/documents")]
pub struct SnapshotArgs {
    /// Directories or files to back up; each becomes a component named after its last path
    /// element.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// A directory or file as the component NAME (repeatable).
    #[arg(long = "component", value_name = "NAME=PATH")]
    pub components: Vec<String>,
    /// The standard output of `sh -c COMMAND` as the file component NAME, streamed, never staged
    /// on disk; a non-zero exit fails the whole set (repeatable).
    #[arg(long = "component-cmd", value_name = "NAME=COMMAND")]
    pub component_cmds: Vec<String>,
    /// Standard input as the file component NAME.
    #[arg(long = "stdin", value_name = "NAME")]
    pub stdin: Option<String>,
    /// Leave out paths matching GLOB inside each component: a pattern without `/` matches a name
    /// at any depth, one with `/` the path below the component; a leading `/` anchors it there
    /// (`/cache` is only the top-level `cache`) (repeatable).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub excludes: Vec<String>,
    /// Read exclude patterns from FILE, one per line (`#` starts a comment).
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Files matching GLOB (the rules of --exclude) are only ever appended to, like MarkLogic
    /// journals: one that grew since the parent set keeps the parent's chunks and is read from
    /// its last chunk on, when the parent's last two chunks still read the same. A change
    /// before them is missed: promise it only for such files (--full reads all) (repeatable).
    #[arg(long = "append-only", value_name = "GLOB")]
    pub append_only: Vec<String>,
    /// The directory component given just before is write-once, as an Alfresco content store
    /// is (files are added in new directories, never changed in place): a directory whose own
    /// mtime, ctime and inode are unchanged since the parent set is reused without listing it
    /// or looking at its files (its subdirectories are still visited). A file changed in place
    /// there is missed until --verify-write-once or --full (repeatable, once per component).
    #[arg(long = "write-once", action = clap::ArgAction::Count)]
    pub write_once: u8,
    /// Entries of write-once components changed less than this before the parent set began
    /// are looked at again (a file still being written then).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub write_once_settle: String,
    /// Reuse no directory of a write-once component: look at every file, and name those that
    /// changed in place where the fast path would have missed them (exit 3). With --dry-run it
    /// reads and writes nothing.
    #[arg(long)]
    pub verify_write_once: bool,
    /// Build on this set (default: the newest set of this host with the same component names
    /// and tags).
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "full")]
    pub parent: Option<String>,
    /// Read every file again and start a new chain of incrementals.
    #[arg(long)]
    pub full: bool,
    /// Tag the set (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A note on the set (free text, up to 4 KiB; shown by `snapshots`, changed with `tag`).
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// After the set is committed, check that it is restorable as a whole: `alfresco` runs
    /// `store verify alfresco` on it (components `db` and `content`); an inconsistent set stays
    /// committed and the command exits 3, naming each missing document.
    #[arg(long, value_name = "KIND", value_parser = ["alfresco"])]
    pub verify: Option<String>,
    /// Host name to record (default: this machine's).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Worker threads per stage (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Do not descend into other file systems below a source: keep their mount points as empty
    /// directories (pseudo file systems such as /proc and /sys always are).
    #[arg(long, short = 'x')]
    pub one_file_system: bool,
    /// Fail, committing nothing, when a --stdin or --component-cmd component yields no bytes
    /// (a dump that failed inside a pipe).
    #[arg(long)]
    pub require_data: bool,
    /// Report what would be read (new, changed), reused (unchanged) and excluded, against the
    /// set it would build on; read no file, write nothing, run no --component-cmd (with -v:
    /// each file).
    #[arg(long)]
    pub dry_run: bool,
    /// Write a Prometheus textfile-collector file (node_exporter) when the command ends,
    /// whatever its outcome: last run and last success time, duration, exit status and figures.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// Only sets of host H.
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    /// Only sets tagged T (repeatable: sets with every one of them).
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Only sets with a component named NAME (repeatable: with every one of them).
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
    /// Only the N newest of the sets that match.
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
    /// Print the sets as a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Only this path and what is below it (`component/dir/...`).
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// Print one JSON object per entry (JSON lines) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store tag`.
#[derive(Debug, Args)]
#[command(after_help = "\
The set gets a new manifest with the new tags (a manifest is never modified; its id is its
hash), written before the old one is removed; sets that chain to it are rewritten to name the
new one, so chains and forget are unaffected. After a crash in between, run the same command
again with the old id to finish.

Examples:
  store tag 20261120-050000 --add keep --add audit-2026
  store tag latest --remove nightly --add monthly
  store tag 20261120-050000 --note 'last set before the 23.2 upgrade'")]
pub struct TagArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// A tag to add; may be repeated.
    #[arg(long, value_name = "TAG")]
    pub add: Vec<String>,
    /// A tag to remove; may be repeated.
    #[arg(long, value_name = "TAG")]
    pub remove: Vec<String>,
    /// Set the set's note (free text, up to 4 KiB; `--note ''` removes it). Format version 4
    /// and later.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store copy`.
#[derive(Debug, Args)]
#[command(after_help = "\
The source's password: --from-password-file FILE, STORE_FROM_PASSWORD_FILE,
STORE_FROM_PASSWORD_COMMAND or STORE_FROM_PASSWORD; the target's: the global options.
A set is in the target already when one there has the same host, times and components
(tags and notes may differ): it is skipped. Each set is read from the source, every chunk
verified, cut again with the target's chunker and committed as a snapshot is (its data
first, its manifest last), so a copy that stops resumes where it stopped.")]
pub struct CopyArgs {
    /// The source repository (a directory or `s3:...`).
    #[arg(long, value_name = "REPO")]
    pub from: std::ffi::OsString,
    /// The target repository (default: --repo / STORE_REPO).
    #[arg(long, value_name = "REPO")]
    pub to: Option<std::ffi::OsString>,
    /// The source's password file (first line).
    #[arg(long, env = "STORE_FROM_PASSWORD_FILE", value_name = "FILE")]
    pub from_password_file: Option<PathBuf>,
    /// The source's cache directory (see --cache-dir).
    #[arg(long, value_name = "DIR")]
    pub from_cache_dir: Option<PathBuf>,
    /// Sets of the source to copy: `latest`, a name (YYYYMMDD-HHMMSS), an id or a unique id
    /// prefix; every set the target lacks by default.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Only sets of host H (instead of naming sets).
    #[arg(long, value_name = "H", conflicts_with = "snapshots")]
    pub host: Option<String>,
    /// Only sets tagged T (repeatable: sets with every one of them; instead of naming sets).
    #[arg(long = "tag", value_name = "T", conflicts_with = "snapshots")]
    pub tags: Vec<String>,
    /// Say which sets would be copied; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compressor threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store run`.
#[derive(Debug, Args)]
#[command(after_help = "\
The configuration (--config, else /etc/store/store.toml, else ~/.config/store/store.toml)
names profiles; docs/examples/store.toml is a complete, commented one. A file with an unknown
key or a component path that does not exist is refused with its line, before anything runs.

Exit status: the first failing step's, else 3 when a step was partial, else 0.

Examples:
  store run alfresco              # the nightly job
  store run alfresco --dry-run    # what each step would do; nothing written")]
pub struct RunArgs {
    /// The profile.
    #[arg(value_name = "PROFILE")]
    pub profile: String,
    /// The configuration file.
    #[arg(long, env = "STORE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Show each step and run the snapshot, forget and prune with --dry-run: nothing written,
    /// no hook run.
    #[arg(long)]
    pub dry_run: bool,
    /// Run each step with --json and print one JSON document on stdout: the outcome, and per
    /// step its command line, exit status and JSON result (each also a line of the log file).
    #[arg(long, conflicts_with = "dry_run")]
    pub json: bool,
    /// Write the job's Prometheus textfile-collector file here (instead of the profile's
    /// `metrics_file`).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// `store verify`.
#[derive(Debug, Subcommand)]
pub enum VerifyCommand {
    /// Every `store://` content URL of the set's database (`alf_content_url`) must be a file of
    /// its content store with the recorded size.
    Alfresco(VerifyAlfrescoArgs),
}

/// `store verify alfresco`.
#[derive(Debug, Args)]
#[command(after_help = "\
The database component is a pg_dump: plain SQL is read as it is; a custom-format dump (-Fc) is
read through `pg_restore --data-only --table=alf_content_url -f -` (pg_restore must be on the
PATH). Nothing is restored to disk, and neither the dump nor the URLs are held in memory.

Exit status: 0 when every URL is found with its size (content files no row references are
counted, not an error: Alfresco's orphans), 1 when some are missing or of another size (each
named), 1 for a set without the components.

Examples:
  store verify alfresco latest
  store verify alfresco 20261121-020000 --db db --content content --json")]
pub struct VerifyAlfrescoArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// The component holding the pg_dump of the Alfresco database.
    #[arg(long, value_name = "COMPONENT", default_value = "db")]
    pub db: String,
    /// The component holding the content store.
    #[arg(long, value_name = "COMPONENT", default_value = "content")]
    pub content: String,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store find`.
#[derive(Debug, Args)]
#[command(after_help = "\
Patterns are those of `restore --include`: with a `/` they match the path from the component's
name, without one an entry's name at any depth; `*` and `?` stop at `/`, `**` does not.

Examples:
  store find 'content/2026/11/21/**/1f3a*.bin'   # when did this document last exist?
  store find '*.docx' --set latest               # the Word documents of the newest set
  store find db --host alf1 --json               # the database dumps of one host's sets")]
pub struct FindArgs {
    /// Glob patterns; an entry matching any of them is listed.
    #[arg(value_name = "PATTERN", required = true)]
    pub patterns: Vec<String>,
    /// Only this set (`latest`, a name, an id or a unique id prefix); may be repeated.
    #[arg(long = "set", value_name = "SNAPSHOT")]
    pub sets: Vec<String>,
    /// Only the sets of this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Print one JSON object per match (JSON lines) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `store restore`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  store restore latest --target /restore                       # every component
  store restore latest --component content --target /srv/test  # one component
  store restore 20261120-050000 --include 'content/2026/11/**' --target /tmp/docs
  store restore latest --target /restore --overwrite if-changed --verify   # resume, check")]
pub struct RestoreArgs {
    /// The set: `latest`, its name (YYYYMMDD-HHMMSS), an id, or a unique id prefix (8+ chars).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Directory to restore into (created if missing; must be empty unless --overwrite).
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    pub target: Option<PathBuf>,
    /// Only this component (repeatable); every component of the set by default.
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
    /// Only paths matching GLOB, and everything below a matching directory (repeatable).
    /// Matched against `component/path`; a pattern without `/` matches a name at any depth, a
    /// leading `/` anchors it at the component names (`/content/cache`).
    #[arg(long = "include", value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip paths matching GLOB, and everything below them (repeatable; wins over --include).
    #[arg(long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Restore into a non-empty target: `never` keeps existing entries, `if-changed` replaces
    /// only those that differ (content hashed; resumes an interrupted restore), `always`
    /// replaces all.
    #[arg(long, value_name = "WHEN")]
    pub overwrite: Option<OverwriteArg>,
    /// Read every written file back and check it against the set.
    #[arg(long)]
    pub verify: bool,
    /// List what would be written (with --json: one JSON object per path); write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parallel file writers (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `restore --overwrite`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OverwriteArg {
    /// Keep every existing entry.
    Never,
    /// Replace entries that differ from the set.
    IfChanged,
    /// Replace every entry.
    Always,
}

impl From<OverwriteArg> for store::Overwrite {
    fn from(a: OverwriteArg) -> Self {
        match a {
            OverwriteArg::Never => store::Overwrite::Never,
            OverwriteArg::IfChanged => store::Overwrite::IfChanged,
            OverwriteArg::Always => store::Overwrite::Always,
        }
    }
}

/// `store diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older set (with --parent: the set, compared with the set it builds on).
    #[arg(value_name = "SNAPSHOT_A")]
    pub a: String,
    /// The newer set.
    #[arg(value_name = "SNAPSHOT_B", required_unless_present = "parent")]
    pub b: Option<String>,
    /// Compare SNAPSHOT_A with its parent, the set it builds on (`store diff --parent latest`).
    #[arg(long, conflicts_with = "b")]
    pub parent: bool,
    /// Print the result as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}
