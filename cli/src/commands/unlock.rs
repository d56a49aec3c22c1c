//! `store unlock`.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::UnlockArgs;
use crate::output::{out, summary};

pub fn unlock(repo_arg: &RepoArg, args: &UnlockArgs) -> Result<ExitCode> {
    let repo = repo_arg.open()?;
    let removed = repo.unlock(repo_arg.stale_after, args.all).context("removing locks")?;
    for r in &removed {
        out!("removed {r}");
    }
    summary!("{} locks removed", removed.len());
    Ok(ExitCode::SUCCESS)
}
