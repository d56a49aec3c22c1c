//! `store cat`.

use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::{CatArgs, DumpArgs};
use crate::output::warning;

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

pub fn dump(repo: &RepoArg, args: &DumpArgs) -> Result<ExitCode> {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        anyhow::bail!(
            "store dump writes a {} archive to standard output, which is a terminal: redirect it \
             to a file or a pipe",
            args.format
        );
    }
    let repo = repo.open()?;
    let (id, manifest) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let path = args.path.as_os_str().as_bytes();
    let format =
        if args.format == "zip" { store::ArchiveFormat::Zip } else { store::ArchiveFormat::Tar };
    let mut out = std::io::stdout().lock();
    let report = store::dump(&repo, (id, &manifest), path, format, &mut out, "<stdout>")
        .with_context(|| {
            format!(
                "archiving {} of set {} (the archive on standard output is incomplete)",
                store::escape_name(path),
                id.short()
            )
        })?;
    super::report_notes(&repo);
    for (path, why) in &report.left_out {
        crate::output::stderr!("store: warning: {path}: not in the archive: {why}");
    }
    if !report.left_out.is_empty() {
        return Ok(ExitCode::from(crate::EXIT_PARTIAL));
    }
    if report.files + report.dirs + report.symlinks + report.specials == 0 {
        warning!("the archive is empty");
    }
    Ok(ExitCode::SUCCESS)
}
