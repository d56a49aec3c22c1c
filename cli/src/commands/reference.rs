//! `store completion` and `store man`: the shell completion scripts and the manual pages, both
//! generated from the same definition as `--help`.

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::args::{Cli, CompletionArgs, ManArgs};
use crate::output::out;

/// The command line as `--help` shows it, with the long version.
pub fn command() -> clap::Command {
    Cli::command().long_version(long_version())
}

/// `store --version`: the build, and the repository format versions it reads and writes.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let (oldest, newest) = (store::SUPPORTED_VERSIONS.start(), store::SUPPORTED_VERSIONS.end());
        format!(
            "{}\nrepository format: new repositories are version {}; reads and writes versions \
             {oldest} to {newest}",
            env!("CARGO_PKG_VERSION"),
            store::FORMAT_VERSION
        )
    })
}

pub fn completion(args: &CompletionArgs) -> Result<ExitCode> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command(), "store", &mut script);
    let script = String::from_utf8(script).context("the completion script is not UTF-8")?;
    out!("{}", script.trim_end());
    Ok(ExitCode::SUCCESS)
}

pub fn man(args: &ManArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    clap_mangen::generate_to(command(), &args.dir)
        .with_context(|| format!("writing the manual pages into {}", args.dir.display()))?;
    let mut pages: Vec<String> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("listing {}", args.dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("store") && n.ends_with(".1"))
        .collect();
    pages.sort();
    out!("wrote {} manual pages into {}: {}", pages.len(), args.dir.display(), pages.join(" "));
    Ok(ExitCode::SUCCESS)
}
