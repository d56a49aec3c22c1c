//! `store cat`.

use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::CatArgs;

pub fn cat(repo: &RepoArg, args: &CatArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let (id, manifest) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let bytes = args.path.as_os_str().as_bytes();
    let path = bytes.strip_suffix(b"/").unwrap_or(bytes);
    let node = store::vfs::find(&repo, id, &manifest, path)?;
    let mut out = std::io::stdout().lock();
    store::write_file_to(&repo, &node, &mut out, "<stdout>")
        .with_context(|| format!("writing {} of set {}", store::escape_name(path), id.short()))?;
    super::report_notes(&repo);
    Ok(ExitCode::SUCCESS)
}
