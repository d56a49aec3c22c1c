//! `store ls`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RepoArg;
use crate::args::LsArgs;

pub(super) fn type_char(node: &store::Node) -> char {
    match node.content {
        store::Content::Dir { .. } => 'd',
        store::Content::File { .. } => '-',
        store::Content::Symlink { .. } => 'l',
        store::Content::Special { .. } => match node.meta.mode & 0o170_000 {
            0o010_000 => 'p',
            0o140_000 => 's',
            0o060_000 => 'b',
            _ => 'c',
        },
    }
}

fn perms(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub fn run(repo: &RepoArg, args: &LsArgs) -> Result<ExitCode> {
    let repo = repo.open()?;
    let (id, manifest) = repo
        .resolve_snapshot(&args.snapshot)
        .with_context(|| format!("finding snapshot {:?}", args.snapshot))?;
    let mut out = std::io::stdout().lock();
    let mut print = |path: &[u8], node: &store::Node| -> store::Result<()> {
        let shown = store::escape_name(path);
        let line = if args.json {
            let mut obj = serde_json::json!({
                "path": shown,
                "type": type_char(node).to_string(),
                "mode": node.meta.mode & 0o7777,
                "uid": node.meta.uid,
                "gid": node.meta.gid,
                "size": node.size(),
                "mtime": crate::output::file_time_rfc3339(node.meta.mtime),
            });
            if let (store::Content::Symlink { target }, Some(o)) =
                (&node.content, obj.as_object_mut())
            {
                o.insert("target".into(), store::escape_name(target).into());
            }
            if let Some(o) = obj.as_object_mut() {
                if !node.meta.xattrs.is_empty() {
                    let names: Vec<String> =
                        node.meta.xattrs.iter().map(|x| store::escape_name(&x.name)).collect();
                    o.insert("xattrs".into(), names.into());
                }
                if node.meta.link_group().is_some() {
                    o.insert("links".into(), node.meta.nlink.into());
                }
            }
            obj.to_string()
        } else {
            let mut line = format!(
                "{}{} {:>5}/{:<5} {:>12} {} {}",
                type_char(node),
                perms(node.meta.mode),
                node.meta.uid,
                node.meta.gid,
                node.size(),
                crate::output::file_time(node.meta.mtime),
                shown
            );
            if let store::Content::Symlink { target } = &node.content {
                line.push_str(" -> ");
                line.push_str(&store::escape_name(target));
            }
            line
        };
        writeln!(out, "{line}").map_err(|e| store::Error::Io { path: "<stdout>".into(), cause: e })
    };
    let listing = match &args.path {
        Some(p) => {
            let bytes = p.as_os_str().as_bytes();
            let trimmed: Vec<u8> = bytes.strip_suffix(b"/").unwrap_or(bytes).to_vec();
            store::vfs::find(&repo, id, &manifest, &trimmed)
                .and_then(|node| store::vfs::walk(&repo, &trimmed, &node, &mut print))
        }
        None => manifest.components.iter().try_for_each(|c| {
            let node = store::vfs::component_node(&repo, c)?;
            store::vfs::walk(&repo, c.name.as_bytes(), &node, &mut print)
        }),
    };
    listing.with_context(|| format!("listing snapshot {}", id.short()))?;
    super::report_notes(&repo);
    Ok(ExitCode::SUCCESS)
}
