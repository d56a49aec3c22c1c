//! Profiles: named jobs in a TOML file (`--config FILE`, else `/etc/store/store.toml`, else
//! `~/.config/store/store.toml`) that `store run PROFILE` carries out: a snapshot of the
//! components in order, then forget and prune by the retention policy, then a check; with hooks
//! before, after and on error. See `docs/examples/store.toml`, which the tests load.
//!
//! A file that names an unknown key, a component path that does not exist, or a value of the
//! wrong kind is refused with its line, before anything runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use toml::Spanned;

/// The places a configuration is looked for when `--config` is not given, in order.
pub const DEFAULT_PLACES: [&str; 2] = ["/etc/store/store.toml", "~/.config/store/store.toml"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: std::collections::BTreeMap<String, Profile>,
}

/// One job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The repository.
    pub repository: PathBuf,
    /// The repository's password, from the first line of this file (`--password-file`).
    pub password_file: Option<PathBuf>,
    /// A command printing the repository's password (`STORE_PASSWORD_COMMAND`).
    pub password_command: Option<String>,
    /// This host's index cache.
    pub cache_dir: Option<PathBuf>,
    /// The host name the sets are taken as (default: the machine's).
    pub host: Option<String>,
    /// Tags of every set.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Exclude patterns.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Patterns of files only ever appended to (MarkLogic journals).
    #[serde(default)]
    pub append_only: Vec<String>,
    /// `snapshot --write-once-settle` for the write-once components.
    pub write_once_settle: Option<String>,
    /// Stay on each source's file system.
    #[serde(default)]
    pub one_file_system: bool,
    /// A stream component that yields nothing fails the set.
    #[serde(default)]
    pub require_data: bool,
    /// Checked right after the snapshot commits it (`snapshot --verify`): `alfresco`.
    pub verify: Option<VerifyKind>,
    /// How long to wait for another process's lock.
    pub lock_wait: Option<String>,
    /// Components, in capture order: `name = "/path"`, `name = { path = "/path" }` or
    /// `name = { cmd = "pg_dump -Fc alfresco" }`.
    #[serde(deserialize_with = "ordered")]
    pub components: Vec<(String, Spanned<Source>)>,
    /// Forget (and prune) after the snapshot.
    pub forget: Option<Forget>,
    /// Prune after forget (default: yes, at prune's default `--max-unused`).
    pub prune: Option<Prune>,
    /// Check after the rest.
    pub check: Option<Check>,
    /// Commands run around the job.
    #[serde(default)]
    pub hooks: Hooks,
    /// The log of every step.
    pub log_file: Option<PathBuf>,
    /// The Prometheus textfile of the job.
    pub metrics_file: Option<PathBuf>,
}

/// What `snapshot --verify` checks.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyKind {
    /// `store verify alfresco`: every content URL of the `db` component is in `content`.
    Alfresco,
}

/// Where a component comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Source {
    /// A directory or file.
    Path(PathBuf),
    /// `{ path = ... }` or `{ cmd = ... }`.
    Table(SourceTable),
}

/// The table form of a component.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTable {
    /// A directory or file.
    pub path: Option<PathBuf>,
    /// A command whose standard output is the component.
    pub cmd: Option<String>,
    /// A directory whose files are only ever added, never changed in place (`snapshot
    /// --write-once`).
    #[serde(default)]
    pub write_once: bool,
}

/// The retention policy (`store forget`'s `--keep-*`), applied to this profile's sets (its
/// host and tags).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forget {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_full: Option<u32>,
    pub keep_within: Option<String>,
}

/// Prune after forget.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prune {
    /// `--max-unused`, percent.
    pub max_unused: Option<f64>,
    /// Set false to forget without pruning.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The check after the job: structure only, every blob (`read_data = true`), or a slice:
/// `read_data_subset = "1/7"`, or `"auto/7"`, the slice of the day (all packs every 7 days).
/// With `read_data = true`, `max_age = "30d"` reads only the packs not verified within 30 days
/// and `max_bytes = "50G"` bounds each run (as `check --max-age` and `--max-bytes`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    #[serde(default)]
    pub read_data: bool,
    pub read_data_subset: Option<String>,
    pub max_age: Option<String>,
    pub max_bytes: Option<String>,
}

/// Commands (`sh -c`) run before the job (a failure aborts it, nothing committed), after it
/// when all went well, and on error. They see `STORE_PROFILE`, `STORE_OUTCOME` (`success`,
/// `partial`, `failure`), `STORE_EXIT_CODE` and `STORE_FAILED_STEP`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    pub on_error: Option<String>,
}

/// Reads a component table in document order.
fn ordered<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Spanned<Source>)>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(String, Spanned<Source>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a table of components: name = \"/path\" or name = { cmd = \"...\" }")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = m.next_entry::<String, Spanned<Source>>()? {
                out.push((k, v));
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

/// A loaded configuration: its text (for line numbers) and profiles.
pub struct Config {
    pub path: PathBuf,
    text: String,
    profiles: std::collections::BTreeMap<String, Profile>,
}

/// Expands a leading `~/` with `$HOME`.
fn expand(place: &str) -> PathBuf {
    match (place.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(place),
    }
}

impl Config {
    /// Loads `path`, or the first of [`DEFAULT_PLACES`] that exists.
    ///
    /// # Errors
    /// No file, or one that does not parse (the message has the line and column).
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => DEFAULT_PLACES.iter().map(|p| expand(p)).find(|p| p.exists()).with_context(
                || {
                    format!(
                        "no configuration: give --config FILE, or write {}",
                        DEFAULT_PLACES.join(" or ")
                    )
                },
            )?,
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the configuration {}", path.display()))?;
        let file: File =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Config { path, text, profiles: file.profiles })
    }

    /// The line of byte offset `at`.
    fn line(&self, at: usize) -> usize {
        self.text.get(..at).map_or(0, |t| t.matches('\n').count()) + 1
    }

    /// Profile `name`, checked: at least one component, each with exactly one of a path that
    /// exists and a command, valid names; a readable check schedule.
    ///
    /// # Errors
    /// An unknown profile (the known ones named), or what is wrong with it, with its line.
    pub fn profile(&self, name: &str) -> Result<&Profile> {
        let Some(p) = self.profiles.get(name) else {
            let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
            bail!(
                "{}: no profile {name:?} (it has: {})",
                self.path.display(),
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            );
        };
        let at = |span: std::ops::Range<usize>| {
            format!("{}, line {}: profile {name}", self.path.display(), self.line(span.start))
        };
        if p.components.is_empty() {
            bail!("{}: profile {name}: no components", self.path.display());
        }
        if p.password_file.is_some() && p.password_command.is_some() {
            bail!(
                "{}: profile {name}: give one of password_file and password_command",
                self.path.display()
            );
        }
        if let Some(f) = p.password_file.as_ref().filter(|f| !f.is_file()) {
            bail!(
                "{}: profile {name}: password_file {} is not a file",
                self.path.display(),
                f.display()
            );
        }
        for (cname, source) in &p.components {
            let whence = at(source.span());
            if !store::is_valid_name(cname.as_bytes()) {
                bail!("{whence}: {cname:?} cannot be a component name");
            }
            match source.get_ref() {
                Source::Path(path)
                | Source::Table(SourceTable { path: Some(path), cmd: None, .. }) => {
                    if std::fs::symlink_metadata(path).is_err() {
                        bail!("{whence}: component {cname}: {} does not exist", path.display());
                    }
                }
                Source::Table(SourceTable { write_once: true, .. }) => {
                    bail!("{whence}: component {cname}: write_once is for a directory path")
                }
                Source::Table(SourceTable { path: None, cmd: Some(cmd), .. })
                    if !cmd.trim().is_empty() => {}
                Source::Table(_) => {
                    bail!("{whence}: component {cname}: give exactly one of path and cmd")
                }
            }
        }
        if let Some(c) = &p.check {
            let key = |k: &str| format!("{}: profile {name}: check.{k}", self.path.display());
            if let Some(s) = &c.read_data_subset {
                subset(s, 0).with_context(|| key("read_data_subset"))?;
            }
            for (k, given) in [("max_age", &c.max_age), ("max_bytes", &c.max_bytes)] {
                if given.is_some() && !c.read_data {
                    bail!("{} needs read_data = true", key(k));
                }
            }
            if let Some(s) = &c.max_age {
                crate::output::parse_duration(s).with_context(|| key("max_age"))?;
            }
            if let Some(s) = &c.max_bytes {
                crate::output::parse_size(s).with_context(|| key("max_bytes"))?;
            }
        }
        Ok(p)
    }
}

/// `N/M`, or `auto/M` (the slice of day number `day`: all packs every M days).
///
/// # Errors
/// Anything else.
pub fn subset(s: &str, day: u64) -> Result<String> {
    let (n, m) = s.split_once('/').with_context(|| format!("{s:?}: expected N/M or auto/M"))?;
    let m: u64 = m.parse().with_context(|| format!("{s:?}: M is not a number"))?;
    if m == 0 {
        bail!("{s:?}: M must be at least 1");
    }
    let n = if n == "auto" {
        day % m + 1
    } else {
        n.parse().with_context(|| format!("{s:?}: N is not a number"))?
    };
    if n == 0 || n > m {
        bail!("{s:?}: N must be between 1 and M");
    }
    Ok(format!("{n}/{m}"))
}
