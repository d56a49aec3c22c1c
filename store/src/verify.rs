//! `verify alfresco`: is a set restorable as a whole? Every content URL the set's database
//! references (`alf_content_url.content_url`, with `content_size`) must be a file of the set's
//! content store with that size.
//!
//! The database component is a `pg_dump`: plain SQL is parsed as it streams out of the
//! repository (the `COPY ... alf_content_url ... FROM stdin` block); a custom-format dump
//! (`PGDMP`) is streamed through `pg_restore --data-only --table=alf_content_url -f -` first.
//! Nothing holds the dump, or the list of URLs, in memory: each URL is looked up as it is read,
//! with the listing of the last directory kept (Alfresco's rows come in creation order, so
//! consecutive URLs share their per-minute directory).

use std::collections::HashMap;
use std::io::Write;

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::Repository;
use crate::snapshot::Manifest;
use crate::tree::{Content, Node};

/// Longest dump line kept while looking for the table (longer ones are skipped whole); a row of
/// the table longer than this is an error.
const MAX_LINE: usize = 1 << 20;

/// Problems listed by name in a report; beyond this they are only counted.
pub const MAX_LISTED: usize = 10_000;

/// Directories of at most this many entries are kept as a map while their URLs are checked.
const MAX_CACHED_DIR: usize = 200_000;

/// Which components of a set hold the database dump and the content store.
#[derive(Debug, Clone)]
pub struct AlfrescoOptions {
    /// The component holding the `pg_dump` of the Alfresco database.
    pub db: String,
    /// The component holding the content store (`alf_data/contentstore`).
    pub content: String,
    /// `pg_restore`, for custom-format dumps.
    pub pg_restore: String,
}

impl Default for AlfrescoOptions {
    fn default() -> Self {
        AlfrescoOptions {
            db: "db".into(),
            content: "content".into(),
            pg_restore: "pg_restore".into(),
        }
    }
}

/// A content URL the database references that the content store lacks, or holds with another
/// size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlProblem {
    /// The URL, as the database holds it.
    pub url: String,
    /// The size the database records (`content_size`), if any.
    pub expected: Option<u64>,
    /// The size of the file in the set; `None` when there is no such file.
    pub found: Option<u64>,
}

/// What `verify alfresco` found.
#[derive(Debug, Clone, Default)]
pub struct AlfrescoReport {
    /// Rows of `alf_content_url` read.
    pub urls: u64,
    /// URLs found with the recorded size.
    pub ok: u64,
    /// URLs with no file in the content store (at most [`MAX_LISTED`] listed).
    pub missing: Vec<UrlProblem>,
    /// How many URLs are missing.
    pub missing_count: u64,
    /// URLs whose file has another size (at most [`MAX_LISTED`] listed).
    pub wrong_size: Vec<UrlProblem>,
    /// How many URLs have the wrong size.
    pub wrong_size_count: u64,
    /// URLs of other stores than `store://` (content store connectors), not checked.
    pub other_stores: u64,
    /// Files in the content component.
    pub content_files: u64,
    /// Content files no row references (information: orphans Alfresco cleans up later).
    pub unreferenced: u64,
}

impl AlfrescoReport {
    /// Whether every URL was found with its size.
    #[must_use]
    pub fn is_consistent(&self) -> bool {
        self.missing_count == 0 && self.wrong_size_count == 0
    }
}

/// Checks the content URLs of set `id` against its content store.
///
/// # Errors
/// [`Error::InvalidOption`] naming a component that is not in the set, or a dump without the
/// `alf_content_url` table; `pg_restore` failing; damaged data.
pub fn verify_alfresco(
    repo: &Repository,
    id: SnapshotId,
    manifest: &Manifest,
    opts: &AlfrescoOptions,
) -> Result<AlfrescoReport> {
    let component = |name: &str, option: &'static str| {
        manifest.components.iter().find(|c| c.name == name).ok_or_else(|| {
            let names: Vec<&str> = manifest.components.iter().map(|c| c.name.as_str()).collect();
            Error::InvalidOption {
                option,
                reason: format!(
                    "set {} has no component {name:?} (it has: {})",
                    id.short(),
                    names.join(", ")
                ),
            }
        })
    };
    let db = component(&opts.db, "db component")?;
    let content = component(&opts.content, "content component")?;
    let dump = crate::vfs::component_node(repo, db)?;
    let mut report =
        AlfrescoReport { content_files: content.counts.files, ..AlfrescoReport::default() };
    let mut lookup = Lookup { repo, id, manifest, content: &opts.content, dir: None };
    let mut check = |row: ContentUrl| -> Result<()> {
        report.urls += 1;
        let Some(rel) = row.url.strip_prefix("store://") else {
            report.other_stores += 1;
            return Ok(());
        };
        let found = lookup.size_of(rel)?;
        let problem = UrlProblem { url: row.url, expected: row.size, found };
        match found {
            None => {
                report.missing_count += 1;
                if report.missing.len() < MAX_LISTED {
                    report.missing.push(problem);
                }
            }
            Some(size) if row.size.is_some_and(|s| s != size) => {
                report.wrong_size_count += 1;
                if report.wrong_size.len() < MAX_LISTED {
                    report.wrong_size.push(problem);
                }
            }
            Some(_) => report.ok += 1,
        }
        Ok(())
    };
    let mut parser = CopyParser::new(&mut check);
    if is_custom_format(repo, &dump)? {
        through_pg_restore(repo, &dump, &opts.pg_restore, &mut parser)?;
    } else {
        let streamed = crate::vfs::write_file_to(repo, &dump, &mut parser, "the dump parser");
        parser.take_error()?;
        streamed?;
    }
    parser.finish()?;
    report.unreferenced = report.content_files.saturating_sub(report.ok + report.wrong_size_count);
    Ok(report)
}

/// Whether the dump is in `pg_dump`'s custom format (its first bytes are `PGDMP`).
fn is_custom_format(repo: &Repository, dump: &Node) -> Result<bool> {
    let Content::File { chunks, .. } = &dump.content else {
        return Err(Error::InvalidOption {
            option: "db component",
            reason: "it is a directory, not a pg_dump".into(),
        });
    };
    // Only the first chunk is read: its id is in the node, or first in the first chunk list.
    let first = match crate::vfs::chunk_batches(chunks).first() {
        None => return Ok(false),
        Some(crate::vfs::ChunkBatch::Inline(ids)) => ids.first().map(|c| c.0),
        Some(crate::vfs::ChunkBatch::List(list)) => {
            crate::vfs::load_chunk_list(repo, *list)?.first().map(|c| c.0)
        }
    };
    match first {
        Some(id) => Ok(repo.read_blob(id, crate::pack::BlobKind::Data)?.starts_with(b"PGDMP")),
        None => Ok(false),
    }
}

/// Streams the custom-format `dump` through `pg_restore` into `parser`.
fn through_pg_restore(
    repo: &Repository,
    dump: &Node,
    program: &str,
    parser: &mut CopyParser<'_>,
) -> Result<()> {
    let failed = |reason: String| Error::InvalidOption { option: "pg_restore", reason };
    let mut child = std::process::Command::new(program)
        .args(["--data-only", "--table=alf_content_url", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run {program:?} for a custom-format dump: {e}")))?;
    let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(failed("its pipes could not be opened".into()));
    };
    let (fed, copied, errors) = std::thread::scope(|s| {
        let feeder = s.spawn(move || crate::vfs::write_file_to(repo, dump, &mut stdin, program));
        let errors = s.spawn(move || {
            let mut text = Vec::new();
            let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
            text.truncate(64 << 10);
            text
        });
        let copied = std::io::copy(&mut stdout, parser);
        // A parser that stopped early closes the pipe: the feeder then ends with an error.
        drop(stdout);
        (feeder.join(), copied, errors.join().unwrap_or_default())
    });
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    parser.take_error()?;
    if !status.success() {
        return Err(failed(format!(
            "{program} exited with {status}: {}",
            String::from_utf8_lossy(&errors).trim()
        )));
    }
    copied.map_err(|e| failed(format!("reading its output: {e}")))?;
    match fed {
        Ok(result) => result.map(drop),
        Err(_) => Err(Error::WorkerPanicked),
    }
}

/// The sizes of a directory's files by name (`None` for an entry that is not a regular file).
type Listing = HashMap<Vec<u8>, Option<u64>>;

/// Looks content files up by their path below the content component, keeping the listing of
/// the last directory.
struct Lookup<'a> {
    repo: &'a Repository,
    id: SnapshotId,
    manifest: &'a Manifest,
    content: &'a str,
    /// The last directory looked in: its path, and its listing (`None` when too large to keep).
    dir: Option<(Vec<u8>, Option<Listing>)>,
}

impl Lookup<'_> {
    /// The size of file `rel` (`YYYY/M/D/H/M/<uuid>.bin`), or `None` when the set has no such
    /// regular file.
    fn size_of(&mut self, rel: &str) -> Result<Option<u64>> {
        let rel = rel.as_bytes();
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        if self.dir.as_ref().is_none_or(|(d, _)| d.as_slice() != dir) {
            let listing = self.list(dir)?;
            self.dir = Some((dir.to_vec(), listing));
        }
        match self.dir.as_ref().and_then(|(_, l)| l.as_ref()) {
            Some(files) => Ok(files.get(name).copied().flatten()),
            None => self.find(rel),
        }
    }

    fn path(&self, rel: &[u8]) -> Vec<u8> {
        let mut path = self.content.as_bytes().to_vec();
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel);
        }
        path
    }

    /// The files of directory `dir`, when it exists and is small enough to keep.
    fn list(&self, dir: &[u8]) -> Result<Option<Listing>> {
        let node = match crate::vfs::find(self.repo, self.id, self.manifest, &self.path(dir)) {
            Ok(n) => n,
            Err(Error::PathNotFound { .. }) => return Ok(Some(HashMap::new())),
            Err(e) => return Err(e),
        };
        let Content::Dir { tree } = node.content else { return Ok(Some(HashMap::new())) };
        let mut files = HashMap::new();
        for entry in crate::vfs::dir_entries(self.repo, tree)? {
            let entry = entry?;
            if files.len() >= MAX_CACHED_DIR {
                return Ok(None);
            }
            let size = match entry.content {
                Content::File { size, .. } => Some(size),
                _ => None,
            };
            files.insert(entry.name, size);
        }
        Ok(Some(files))
    }

    /// The size of file `rel`, found by walking the trees (for directories too large to keep).
    fn find(&self, rel: &[u8]) -> Result<Option<u64>> {
        match crate::vfs::find(self.repo, self.id, self.manifest, &self.path(rel)) {
            Ok(Node { content: Content::File { size, .. }, .. }) => Ok(Some(size)),
            Ok(_) | Err(Error::PathNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// One row of `alf_content_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentUrl {
    url: String,
    size: Option<u64>,
}

/// Where the parser is in the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the table's `COPY` line.
    Seeking,
    /// In its rows: the positions of `content_url` and `content_size` (if any), and the column
    /// count.
    Rows { url: usize, size: Option<usize>, columns: usize },
    /// After its end (`\.`): the rest is read and ignored.
    Done,
}

/// Finds the rows of `alf_content_url` in plain `pg_dump` output fed to it in pieces of any
/// size (it is a [`Write`]), and hands each to `sink`.
pub(crate) struct CopyParser<'s> {
    sink: &'s mut dyn FnMut(ContentUrl) -> Result<()>,
    line: Vec<u8>,
    /// Bytes of an over-long line outside the table are being skipped.
    skipping: bool,
    state: State,
    error: Option<Error>,
    line_no: u64,
}

impl<'s> CopyParser<'s> {
    pub(crate) fn new(sink: &'s mut dyn FnMut(ContentUrl) -> Result<()>) -> Self {
        CopyParser {
            sink,
            line: Vec::new(),
            skipping: false,
            state: State::Seeking,
            error: None,
            line_no: 0,
        }
    }

    /// The error that stopped the parser, if one did.
    fn take_error(&mut self) -> Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// Ends the input: the table must have been found, and ended.
    pub(crate) fn finish(mut self) -> Result<()> {
        self.take_error()?;
        // A last line without its newline ends a dump only outside the table's rows.
        if !self.line.is_empty() && !self.skipping && self.state == State::Seeking {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line)?;
        }
        match self.state {
            State::Done => Ok(()),
            State::Seeking => Err(Error::InvalidOption {
                option: "db component",
                reason: "the dump holds no data of table alf_content_url (a `COPY \
                         alf_content_url ... FROM stdin` block): is it a pg_dump of the Alfresco \
                         database, made without --inserts?"
                    .into(),
            }),
            State::Rows { .. } => Err(Error::InvalidOption {
                option: "db component",
                reason: "the dump ends inside the rows of alf_content_url: it is cut short".into(),
            }),
        }
    }

    fn bad(&self, reason: String) -> Error {
        Error::InvalidOption {
            option: "db component",
            reason: format!("line {} of the dump: {reason}", self.line_no),
        }
    }

    fn on_line(&mut self, line: &[u8]) -> Result<()> {
        self.line_no += 1;
        match self.state {
            State::Done => Ok(()),
            State::Seeking => {
                if let Some(state) = copy_header(line) {
                    self.state = state.ok_or_else(|| {
                        self.bad("alf_content_url has no content_url column".into())
                    })?;
                }
                Ok(())
            }
            State::Rows { url, size, columns } => {
                if line == b"\\." {
                    self.state = State::Done;
                    return Ok(());
                }
                let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                if fields.len() != columns {
                    return Err(self.bad(format!(
                        "a row of alf_content_url has {} fields, not {columns}",
                        fields.len()
                    )));
                }
                let text = |i: usize| -> Option<String> {
                    fields
                        .get(i)
                        .and_then(|f| unescape(f))
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                };
                let Some(url) = text(url) else { return Ok(()) };
                let size = match size.and_then(text) {
                    None => None,
                    Some(s) => Some(
                        s.parse::<u64>()
                            .map_err(|_| self.bad(format!("content_size {s:?} is not a size")))?,
                    ),
                };
                (self.sink)(ContentUrl { url, size })
            }
        }
    }

    fn feed(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            let (piece, rest, ended) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], &buf[i + 1..], true),
                None => (buf, &buf[buf.len()..], false),
            };
            buf = rest;
            if !self.skipping {
                if self.line.len() + piece.len() > MAX_LINE {
                    if matches!(self.state, State::Rows { .. }) {
                        return Err(self.bad(format!("a row longer than {MAX_LINE} bytes")));
                    }
                    self.skipping = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            if ended {
                if self.skipping {
                    self.skipping = false;
                    self.line_no += 1;
                } else {
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line)?;
                    self.line = line;
                    self.line.clear();
                }
            }
        }
        Ok(())
    }
}

impl Write for CopyParser<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.error.is_some() {
            return Err(std::io::Error::other("the dump parser stopped"));
        }
        match self.feed(buf) {
            Ok(()) => Ok(buf.len()),
            Err(e) => {
                self.error = Some(e);
                Err(std::io::Error::other("the dump parser stopped"))
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// For a `COPY [schema.]alf_content_url (columns) FROM stdin;` line: the state of its rows
/// (`None` inside when it has no `content_url` column). `None` for any other line.
fn copy_header(line: &[u8]) -> Option<Option<State>> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("COPY ")?;
    let (table, rest) = rest.split_once(' ')?;
    let table = table.rsplit('.').next()?.trim_matches('"');
    if table != "alf_content_url" {
        return None;
    }
    let columns = rest.strip_prefix('(')?.split_once(')')?.0;
    let names: Vec<&str> = columns.split(',').map(|c| c.trim().trim_matches('"')).collect();
    let url = names.iter().position(|&c| c == "content_url");
    let size = names.iter().position(|&c| c == "content_size");
    Some(url.map(|url| State::Rows { url, size, columns: names.len() }))
}

/// A field of `COPY`'s text format: `None` for `\N` (null), else its bytes with backslash
/// escapes resolved.
fn unescape(field: &[u8]) -> Option<Vec<u8>> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&b) = field.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let Some(&e) = field.get(i) else { break };
        i += 1;
        out.push(match e {
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                u8::try_from(v & 0xff).unwrap_or(0)
            }
            other => other,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &[u8] = b"--\n-- PostgreSQL database dump\n--\n\
COPY public.alf_node (id, version) FROM stdin;\n1\t1\n\\.\n\
COPY public.alf_content_url (id, version, content_url, content_url_short, content_url_crc, content_size, orphan_time, content_url_key_id) FROM stdin;\n\
1\t0\tstore://2026/11/21/14/5/a.bin\ta.bin\t1\t600000\t\\N\t\\N\n\
2\t0\tstore://2026/11/21/14/5/tab\\there.bin\tx\t2\t\\N\t\\N\t\\N\n\
3\t0\ts3://bucket/x.bin\tx\t3\t10\t\\N\t\\N\n\
\\.\n\
COPY public.alf_other (id) FROM stdin;\n9\n\\.\n";

    fn parse(pieces: &[&[u8]]) -> Result<Vec<ContentUrl>> {
        let mut rows = Vec::new();
        let mut sink = |r: ContentUrl| {
            rows.push(r);
            Ok(())
        };
        let mut p = CopyParser::new(&mut sink);
        for piece in pieces {
            if p.write_all(piece).is_err() {
                p.take_error()?;
            }
        }
        p.finish()?;
        Ok(rows)
    }

    #[test]
    fn rows_of_alf_content_url_are_found_in_pieces_of_any_size() {
        let whole = parse(&[DUMP]).unwrap();
        assert_eq!(
            whole,
            vec![
                ContentUrl { url: "store://2026/11/21/14/5/a.bin".into(), size: Some(600_000) },
                ContentUrl { url: "store://2026/11/21/14/5/tab\there.bin".into(), size: None },
                ContentUrl { url: "s3://bucket/x.bin".into(), size: Some(10) },
            ]
        );
        for step in [1, 2, 3, 7, 64] {
            let pieces: Vec<&[u8]> = DUMP.chunks(step).collect();
            assert_eq!(parse(&pieces).unwrap(), whole, "pieces of {step}");
        }
    }

    #[test]
    fn a_dump_without_the_table_or_cut_short_or_with_bad_rows_is_refused() {
        let err = parse(&[b"COPY public.alf_node (id) FROM stdin;\n1\n\\.\n"]).unwrap_err();
        assert!(err.to_string().contains("no data of table alf_content_url"), "{err}");
        let cut = &DUMP[..DUMP.len() - 60];
        let err = parse(&[cut]).unwrap_err();
        assert!(err.to_string().contains("cut short"), "{err}");
        let bad = b"COPY alf_content_url (id, content_url, content_size) FROM stdin;\n1\tstore://a\tbig\n\\.\n";
        let err = parse(&[bad]).unwrap_err();
        assert!(err.to_string().contains("line 2") && err.to_string().contains("\"big\""), "{err}");
        let short = b"COPY alf_content_url (id, content_url) FROM stdin;\n1\n\\.\n";
        assert!(parse(&[short]).unwrap_err().to_string().contains("1 fields, not 2"));
        // An over-long line outside the table is skipped, not held.
        let mut long = vec![b'x'; MAX_LINE + 10];
        long.push(b'\n');
        long.extend_from_slice(b"COPY alf_content_url (content_url) FROM stdin;\nstore://z\n\\.\n");
        assert_eq!(parse(&[&long]).unwrap().len(), 1);
    }

    #[test]
    fn copy_text_escapes_are_resolved() {
        assert_eq!(unescape(b"\\N"), None);
        assert_eq!(unescape(b"a\\\\b\\tc\\nd\\101").unwrap(), b"a\\b\tc\ndA");
        assert_eq!(unescape(b"ends\\").unwrap(), b"ends");
    }
}
