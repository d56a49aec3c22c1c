//! `dump`: a directory (or file) of a set as a tar or zip archive on a stream, streamed: one
//! file's chunks at a time, nothing of the tree held beyond the path being walked (and, for
//! hard links, the first path of each group met).
//!
//! A tar archive is what `restore` would write below its target: the same paths (from the
//! component's name), bytes, modes, owners, times with nanoseconds (PAX `mtime`), symlinks,
//! FIFOs and devices, hard links (a group's later names are link entries to its first), and
//! extended attributes and ACLs (PAX `SCHILY.xattr.*`, which GNU tar restores with `--xattrs
//! --xattrs-include='*'`). Sockets are not archived (tar has no type for them) and are counted.
//!
//! A zip archive (for people on other systems) keeps the paths, bytes, permission bits, symlinks
//! and times to two seconds (1980 to 2107); owners are not kept, each hard link is a copy, and
//! what zip cannot hold (FIFOs, devices, sockets, extended attributes, names that are not
//! UTF-8) is left out and named.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, IoContext, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{escape_name, Content, Metadata, Node, Time};
use crate::vfs::{find, walk, write_file_to};

/// The kind of archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// POSIX pax with GNU long names: everything `restore` writes.
    Tar,
    /// Zip (deflate), streamed: paths, bytes, permissions, symlinks, times to two seconds.
    Zip,
}

/// What an archive holds.
#[derive(Debug, Clone, Default)]
pub struct DumpReport {
    /// Regular files (each group of hard links once).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// FIFOs and devices.
    pub specials: u64,
    /// Names archived as hard links to a file archived before them.
    pub hard_links: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Entries the archive cannot hold (sockets; attributes whose names are not UTF-8), each
    /// with the reason.
    pub left_out: Vec<(String, String)>,
}

/// Writes `path` (`component/dir/...`) of set `id` and everything below it to `out` as an
/// archive of `format` (`out_name` in messages).
///
/// # Errors
/// [`Error::PathNotFound`], damaged or missing data (the archive is then incomplete: the error
/// says so), a failed write.
pub fn dump(
    repo: &Repository,
    (id, manifest): (SnapshotId, &Manifest),
    path: &[u8],
    format: ArchiveFormat,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<DumpReport> {
    let trimmed: Vec<u8> =
        path.split(|&b| b == b'/').filter(|p| !p.is_empty()).collect::<Vec<_>>().join(&b'/');
    let root = find(repo, id, manifest, &trimmed)?;
    if format == ArchiveFormat::Zip {
        return zip_dump(repo, &trimmed, &root, out, out_name);
    }
    let mut ar = tar::Builder::new(out);
    let mut report = DumpReport::default();
    // Per hard-link group: the first path archived.
    let mut groups: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    walk(repo, &trimmed, &root, &mut |p, node| {
        entry(repo, (&mut ar, out_name), p, node, &mut groups, &mut report)
    })?;
    ar.finish().at(out_name)?;
    ar.get_mut().flush().at(out_name)?;
    Ok(report)
}

/// The PAX value of a time: seconds and nanoseconds, `-` for times before 1970 (whose fraction
/// counts back from the second after).
fn pax_time(t: Time) -> String {
    if t.secs < 0 && t.nanos > 0 {
        format!("-{}.{:09}", -(t.secs + 1), 1_000_000_000 - t.nanos)
    } else {
        format!("{}.{:09}", t.secs, t.nanos)
    }
}

/// A header with the owner, mode and time of `meta`.
fn header(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode & 0o7777);
    h.set_uid(u64::from(meta.uid));
    h.set_gid(u64::from(meta.gid));
    h.set_mtime(u64::try_from(meta.mtime.secs).unwrap_or(0));
    h.set_size(0);
    h
}

/// Archives one entry (its extended header, header and content).
fn entry<W: Write>(
    repo: &Repository,
    (ar, out_name): (&mut tar::Builder<W>, &str),
    path: &[u8],
    node: &Node,
    groups: &mut HashMap<(u64, u64), Vec<u8>>,
    report: &mut DumpReport,
) -> Result<()> {
    let shown = || escape_name(path);
    let meta = &node.meta;
    let name = Path::new(OsStr::from_bytes(path));
    // A later name of a hard-link group: the path archived first.
    let first = meta.link_group().and_then(|g| groups.get(&g)).cloned();
    let kind = match &node.content {
        Content::Dir { .. } => tar::EntryType::Directory,
        Content::File { .. } if first.is_some() => tar::EntryType::Link,
        Content::File { .. } => tar::EntryType::Regular,
        Content::Symlink { .. } => tar::EntryType::Symlink,
        Content::Special { .. } => match meta.mode & 0o170_000 {
            0o010_000 => tar::EntryType::Fifo,
            0o020_000 => tar::EntryType::Char,
            0o060_000 => tar::EntryType::Block,
            _ => {
                report.left_out.push((shown(), "a socket: tar has no entry for it".into()));
                return Ok(());
            }
        },
    };
    // Extended records first: they apply to the entry that follows.
    let mtime = pax_time(meta.mtime);
    let mut pax: Vec<(String, &[u8])> = vec![("mtime".into(), mtime.as_bytes())];
    for x in &meta.xattrs {
        match std::str::from_utf8(&x.name) {
            Ok(n) => pax.push((format!("SCHILY.xattr.{n}"), &x.value)),
            Err(_) => report.left_out.push((
                shown(),
                format!("extended attribute {} (its name is not UTF-8)", escape_name(&x.name)),
            )),
        }
    }
    ar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v))).at(out_name)?;
    let mut h = header(meta, kind);
    let no_name = |e: std::io::Error| Error::InvalidOption {
        option: "path",
        reason: format!("{} cannot be named in a tar archive: {e}", shown()),
    };
    match &node.content {
        Content::Dir { .. } => {
            report.dirs += 1;
            ar.append_data(&mut h, name, std::io::empty()).map_err(no_name)
        }
        Content::Symlink { target } => {
            report.symlinks += 1;
            ar.append_link(&mut h, name, Path::new(OsStr::from_bytes(target))).map_err(no_name)
        }
        Content::Special { rdev } => {
            report.specials += 1;
            let (major, minor) = (rustix::fs::major(*rdev), rustix::fs::minor(*rdev));
            h.set_device_major(major).map_err(no_name)?;
            h.set_device_minor(minor).map_err(no_name)?;
            ar.append_data(&mut h, name, std::io::empty()).map_err(no_name)
        }
        Content::File { size, .. } => {
            if let Some(first) = &first {
                report.hard_links += 1;
                let first = Path::new(OsStr::from_bytes(first));
                return ar.append_link(&mut h, name, first).map_err(no_name);
            }
            // The header (with the size), then the content streamed chunk by chunk into the
            // archive (verified; its length checked against the size), then the padding to the
            // next 512-byte block.
            h.set_size(*size);
            ar.append_data(&mut h, name, std::io::empty()).map_err(no_name)?;
            let written = write_file_to(repo, node, ar.get_mut(), out_name)?;
            let pad = (512 - written % 512) % 512;
            ar.get_mut().write_all(&[0u8; 512][..pad as usize]).at(out_name)?;
            report.files += 1;
            report.bytes += written;
            if let Some(g) = meta.link_group() {
                groups.insert(g, path.to_vec());
            }
            Ok(())
        }
    }
}

/// A zip archive of `root` (at `path`) on `out`.
fn zip_dump(
    repo: &Repository,
    path: &[u8],
    root: &Node,
    out: &mut dyn Write,
    out_name: &str,
) -> Result<DumpReport> {
    let mut zw = zip::ZipWriter::new_stream(out);
    let mut report = DumpReport::default();
    let zip_err = |e: zip::result::ZipError| -> Error {
        match e {
            zip::result::ZipError::Io(cause) => Error::Io { path: out_name.into(), cause },
            e => Error::InvalidOption { option: "archive", reason: e.to_string() },
        }
    };
    walk(repo, path, root, &mut |p, node| {
        let shown = escape_name(p);
        let Ok(name) = std::str::from_utf8(p) else {
            report.left_out.push((shown, "its name is not UTF-8, which zip needs".into()));
            return Ok(());
        };
        let meta = &node.meta;
        if !meta.xattrs.is_empty() {
            report.left_out.push((shown.clone(), "extended attributes (zip has no place)".into()));
        }
        let time = zip_time(meta.mtime).unwrap_or_default();
        let opts = zip::write::SimpleFileOptions::default()
            .unix_permissions(meta.mode & 0o7777)
            .last_modified_time(time);
        match &node.content {
            Content::Dir { .. } => {
                report.dirs += 1;
                zw.add_directory(format!("{name}/"), opts).map_err(zip_err)
            }
            Content::Symlink { target } => {
                report.symlinks += 1;
                zw.add_symlink(name, String::from_utf8_lossy(target), opts).map_err(zip_err)
            }
            Content::Special { .. } => {
                report.left_out.push((shown, "a FIFO, device or socket: zip has no entry".into()));
                Ok(())
            }
            Content::File { size, .. } => {
                let opts = opts
                    .compression_method(zip::CompressionMethod::Deflated)
                    .large_file(*size >= u64::from(u32::MAX));
                zw.start_file(name, opts).map_err(zip_err)?;
                report.bytes += write_file_to(repo, node, &mut zw, out_name)?;
                report.files += 1;
                Ok(())
            }
        }
    })?;
    zw.finish().map_err(zip_err)?.flush().at(out_name)?;
    Ok(report)
}

/// A time as zip keeps it (local time in the format, UTC here; two-second steps, 1980 to 2107).
fn zip_time(t: Time) -> Option<zip::DateTime> {
    let z = jiff::Timestamp::new(t.secs, 0).ok()?.to_zoned(jiff::tz::TimeZone::UTC);
    let byte = |v: i8| u8::try_from(v).ok();
    zip::DateTime::from_date_and_time(
        u16::try_from(z.year()).ok()?,
        byte(z.month())?,
        byte(z.day())?,
        byte(z.hour())?,
        byte(z.minute())?,
        byte(z.second())?,
    )
    .ok()
}
