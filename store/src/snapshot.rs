//! Snapshot manifests: one small file per backup set, `snapshots/<id>` (FORMAT.md §7).
//!
//! A manifest is written last, after every pack and index file it depends on is durable, by
//! temp file + fsync + rename + directory fsync; so a listed set is always complete. Its id is
//! the BLAKE3 of the file, so a damaged manifest no longer matches its name.

use serde::{Deserialize, Serialize};

use crate::error::Corruption;
use crate::format::{decode_record, encode_record, read_header, ByteReader};
use crate::id::{SnapshotId, TreeId};
use crate::tree::{Metadata, MetadataV1};

/// Magic of a manifest: `STORESNP`. Do not modify.
const MANIFEST_MAGIC: [u8; 8] = *b"STORESNP";

/// Whether a set stands alone or builds on a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetKind {
    /// Every file was read.
    Full,
    /// Unchanged files reuse the parent's chunk lists.
    Incremental,
}

impl SetKind {
    /// `full` or `incremental`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            SetKind::Full => "full",
            SetKind::Incremental => "incremental",
        }
    }
}

/// What a component was captured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComponentKind {
    /// A directory: restored as `TARGET/<name>/`.
    Dir,
    /// A single file: restored as `TARGET/<name>`.
    File,
    /// Standard input, stored as one file: restored as `TARGET/<name>`.
    Stdin,
    /// The standard output of a command (`sh -c`), stored as one file: `TARGET/<name>`.
    Command,
}

impl ComponentKind {
    /// Whether the component is a directory (otherwise one file).
    #[must_use]
    pub fn is_dir(&self) -> bool {
        matches!(self, ComponentKind::Dir)
    }

    /// `dir`, `file`, `stdin` or `command`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            ComponentKind::Dir => "dir",
            ComponentKind::File => "file",
            ComponentKind::Stdin => "stdin",
            ComponentKind::Command => "command",
        }
    }
}

/// Counts for a component or a whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    /// Regular files.
    pub files: u64,
    /// Directories (the component root included).
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// FIFOs, sockets and devices.
    pub specials: u64,
    /// Bytes of file content in the set.
    pub bytes_source: u64,
    /// Bytes of file content read from the source.
    pub bytes_read: u64,
    /// Bytes written to packs (headers and compressed data).
    pub bytes_added: u64,
    /// New data chunks stored.
    pub chunks_new: u64,
    /// Files not in the parent set (all files of a full set).
    pub files_new: u64,
    /// Files in the parent set that changed and were read again.
    pub files_changed: u64,
    /// Files unchanged since the parent set, whose chunk lists were reused without reading.
    pub files_unchanged: u64,
}

impl Counts {
    /// Adds `other` to these counts.
    pub fn add(&mut self, other: &Counts) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.symlinks += other.symlinks;
        self.specials += other.specials;
        self.bytes_source += other.bytes_source;
        self.bytes_read += other.bytes_read;
        self.bytes_added += other.bytes_added;
        self.chunks_new += other.chunks_new;
        self.files_new += other.files_new;
        self.files_changed += other.files_changed;
        self.files_unchanged += other.files_unchanged;
    }
}

/// One source of a set. `M` is how metadata is recorded ([`MetadataV1`] in version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component<M = Metadata> {
    /// Name, unique in the set: restore puts it at `TARGET/<name>`.
    pub name: String,
    /// The source path (raw bytes) or a description of the source.
    pub source: Vec<u8>,
    /// What it was captured from.
    pub kind: ComponentKind,
    /// For a directory, its listing; for a file, a tree with the one entry `name`.
    pub root: TreeId,
    /// Metadata of the source directory (for a file, of the file).
    pub meta: M,
    /// Capture start, nanoseconds since the Unix epoch.
    pub start_ns: i64,
    /// Capture end.
    pub end_ns: i64,
    /// Counts for this component.
    pub counts: Counts,
}

/// What went wrong with a source path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IssueKind {
    /// It could not be read (or vanished): the set does not contain it.
    Skipped,
    /// It kept changing while it was read, twice: the set holds what the second read saw.
    Changed,
    /// It was kept without some of its metadata (extended attributes that could not be read).
    /// Version 2 on; a version-1 manifest records it as `Changed`.
    Incomplete,
}

/// A source path that could not be backed up as it was; the set was committed anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathIssue {
    /// The component it belongs to.
    pub component: String,
    /// The path inside the component, raw bytes.
    pub path: Vec<u8>,
    /// Left out, or kept as read while changing.
    pub kind: IssueKind,
    /// What happened.
    pub reason: String,
}

/// A snapshot manifest. `M` is how metadata is recorded ([`MetadataV1`] in version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest<M = Metadata> {
    /// Start of the set, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// End of the set.
    pub end_ns: i64,
    /// Host that wrote it.
    pub host: String,
    /// Tags given by the operator.
    pub tags: Vec<String>,
    /// Full or incremental.
    pub kind: SetKind,
    /// The set an incremental builds on.
    pub parent: Option<SnapshotId>,
    /// The sources, in capture order.
    pub components: Vec<Component<M>>,
    /// Totals over all components.
    pub counts: Counts,
    /// Paths that could not be read, or changed while read.
    pub issues: Vec<PathIssue>,
    /// The operator's note on the set (`tag --note`, `snapshot --note`); empty when none. From
    /// format version 4, a record of its own after the manifest's (FORMAT.md §7).
    #[serde(skip)]
    pub note: String,
}

/// Longest note a set may carry, in bytes.
pub const MAX_NOTE_LEN: usize = 4096;

/// The first format version that records a note on a set.
pub const NOTE_VERSION: u32 = 4;

/// Checks a note an operator gives a set: at most [`MAX_NOTE_LEN`] bytes, no control characters
/// but newlines and tabs (a note is printed on terminals).
///
/// # Errors
/// [`crate::Error::InvalidOption`] naming what is wrong.
pub fn validate_note(note: &str) -> Result<(), crate::Error> {
    let bad = |reason: String| crate::Error::InvalidOption { option: "note", reason };
    if note.len() > MAX_NOTE_LEN {
        return Err(bad(format!(
            "{} bytes, more than the {MAX_NOTE_LEN} a note may have",
            note.len()
        )));
    }
    if let Some(c) = note.chars().find(|c| c.is_control() && *c != '\n' && *c != '\t') {
        return Err(bad(format!("it holds the control character {c:?}")));
    }
    Ok(())
}

/// Refuses a note on a set of a repository whose format `version` cannot record one.
///
/// # Errors
/// [`crate::Error::InvalidOption`] naming the versions.
pub fn check_note_supported(note: &str, version: u32) -> Result<(), crate::Error> {
    if note.is_empty() || version >= NOTE_VERSION {
        return Ok(());
    }
    Err(crate::Error::InvalidOption {
        option: "note",
        reason: format!(
            "this repository is format version {version}; a note on a set needs version \
             {NOTE_VERSION} or later (a new repository made with `store init`)"
        ),
    })
}

/// The names of `sets`: each set's start time in UTC as `YYYYMMDD-HHMMSS`, and for the second,
/// third, ... set started in the same second (by start time, then id) `-2`, `-3`, ..., as
/// MarkLogic numbers its backup directories. A name therefore names one set.
pub fn unique_names<'a>(
    sets: impl IntoIterator<Item = (SnapshotId, &'a Manifest)>,
) -> std::collections::HashMap<SnapshotId, String> {
    let mut by_name: std::collections::BTreeMap<String, Vec<(i64, SnapshotId)>> =
        std::collections::BTreeMap::new();
    for (id, m) in sets {
        by_name.entry(m.name()).or_default().push((m.time_ns, id));
    }
    let mut out = std::collections::HashMap::new();
    for (name, mut same) in by_name {
        same.sort();
        for (k, (_, id)) in same.into_iter().enumerate() {
            out.insert(id, if k == 0 { name.clone() } else { format!("{name}-{}", k + 1) });
        }
    }
    out
}

impl<M> Manifest<M> {
    /// The same manifest with each component's metadata recorded as `f` makes it.
    fn map_meta<N>(self, f: impl Fn(M) -> N) -> Manifest<N> {
        let components = self
            .components
            .into_iter()
            .map(|c| Component {
                name: c.name,
                source: c.source,
                kind: c.kind,
                root: c.root,
                meta: f(c.meta),
                start_ns: c.start_ns,
                end_ns: c.end_ns,
                counts: c.counts,
            })
            .collect();
        Manifest {
            time_ns: self.time_ns,
            end_ns: self.end_ns,
            host: self.host,
            tags: self.tags,
            kind: self.kind,
            parent: self.parent,
            components,
            counts: self.counts,
            issues: self.issues,
            note: self.note,
        }
    }
}

impl Manifest {
    /// The set's start time in UTC as `YYYYMMDD-HHMMSS` (the form of MarkLogic's backup
    /// directory names): its name, unless another set started in the same second
    /// ([`unique_names`]).
    #[must_use]
    pub fn name(&self) -> String {
        crate::time::sortable_name(self.time_ns)
    }

    /// Encodes the manifest file: magic, format version, bincode record (from version 4 followed
    /// by the note's).
    ///
    /// # Errors
    /// [`crate::Error::Encode`] when the manifest would be larger than a reader accepts (the
    /// snapshot then commits nothing: a set that cannot be read must never be written);
    /// [`crate::Error::InvalidOption`] for a note that `version` cannot record.
    pub fn encode(&self, version: u32) -> Result<Vec<u8>, crate::Error> {
        check_note_supported(&self.note, version)?;
        let mut out = Vec::new();
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        if version < 2 {
            let mut v1 = self.clone().map_meta(|m| MetadataV1::from(&m));
            for i in &mut v1.issues {
                if i.kind == IssueKind::Incomplete {
                    i.kind = IssueKind::Changed;
                }
            }
            out.extend_from_slice(&encode_record(&v1, "manifest")?);
        } else if version < NOTE_VERSION {
            out.extend_from_slice(&encode_record(self, "manifest")?);
        } else {
            out.extend_from_slice(&encode_record(&(self, &self.note), "manifest")?);
        }
        Ok(out)
    }

    /// Decodes a manifest file.
    ///
    /// # Errors
    /// Bad magic, a format version this build does not read, truncated or malformed bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Corruption> {
        let mut r = ByteReader::new(bytes, 0);
        let version = read_header(&mut r, &MANIFEST_MAGIC)?;
        let m: Manifest = if version < 2 {
            decode_record::<Manifest<MetadataV1>>(r.rest(), "manifest")?.map_meta(Metadata::from)
        } else {
            let m: Manifest = if version < NOTE_VERSION {
                decode_record(r.rest(), "manifest")?
            } else {
                let (m, note): (Manifest, String) = decode_record(r.rest(), "manifest")?;
                Manifest { note, ..m }
            };
            for c in &m.components {
                c.meta.validate()?;
            }
            m
        };
        let mut names: Vec<&str> = m.components.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(Corruption::Invalid("two components have the same name".into()));
        }
        if let Some(bad) =
            m.components.iter().find(|c| !crate::tree::is_valid_name(c.name.as_bytes()))
        {
            return Err(Corruption::Invalid(format!("invalid component name {:?}", bad.name)));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::FORMAT_VERSION;
    use crate::id::Id;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            time_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_001_000_000_000,
            host: "alf1".into(),
            tags: vec!["nightly".into()],
            kind: SetKind::Full,
            parent: None,
            components: vec![Component {
                name: "content".into(),
                source: b"/alf_data/contentstore".to_vec(),
                kind: ComponentKind::Dir,
                root: TreeId(Id::hash(b"root")),
                meta: Metadata::default(),
                start_ns: 1,
                end_ns: 2,
                counts: Counts { files: 3, ..Counts::default() },
            }],
            counts: Counts { files: 3, ..Counts::default() },
            issues: vec![],
            note: String::new(),
        }
    }

    // See: issue 17 ("two sets started in the same second are both named 20261130-025455").
    #[test]
    fn sets_started_in_the_same_second_get_numbered_names() {
        let at = |ns: i64| Manifest { time_ns: ns, ..sample() };
        let (a, b, c) = (
            at(1_700_000_000_100_000_000),
            at(1_700_000_000_900_000_000),
            at(1_700_000_001_000_000_000),
        );
        let ids =
            [SnapshotId(Id::hash(b"a")), SnapshotId(Id::hash(b"b")), SnapshotId(Id::hash(b"c"))];
        let names = unique_names([(ids[1], &b), (ids[0], &a), (ids[2], &c)]);
        assert_eq!(names[&ids[0]], "20231114-221320");
        assert_eq!(names[&ids[1]], "20231114-221320-2");
        assert_eq!(names[&ids[2]], "20231114-221321");
        assert!(crate::time::is_sortable_name("20231114-221320-2"));
        assert!(!crate::time::is_sortable_name("20231114-221320-"));
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode(FORMAT_VERSION).unwrap()).unwrap(), m);
    }

    // See: issue 18 ("a `--note` text on a set").
    #[test]
    fn notes_round_trip_from_version_4_and_are_refused_before() {
        let m = Manifest { note: "before the 23.2 upgrade\n\tticket OPS-1".into(), ..sample() };
        let v4 = m.encode(NOTE_VERSION).unwrap();
        assert_eq!(Manifest::decode(&v4).unwrap(), m);
        // Without a note, version 4 adds only the empty note's length to version 3's bytes.
        let plain = sample();
        let (v3, v4_plain) = (plain.encode(3).unwrap(), plain.encode(NOTE_VERSION).unwrap());
        assert_eq!(v4_plain.len(), v3.len() + 8);
        assert_eq!(v4_plain[12..v3.len()], v3[12..]);
        assert_eq!(Manifest::decode(&v3).unwrap(), plain);
        for old in 1..NOTE_VERSION {
            let err = m.encode(old).unwrap_err();
            assert!(err.to_string().contains("needs version 4"), "{err}");
        }
        // A version-4 manifest without its note record, or a version-3 one with one, is damage.
        let mut short = v4_plain[..v3.len()].to_vec();
        assert!(Manifest::decode(&short).is_err());
        short[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(Manifest::decode(&short).is_ok());
        let mut long = v4.clone();
        long[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(Manifest::decode(&long).is_err());
    }

    #[test]
    fn notes_are_bounded_and_printable() {
        assert!(validate_note("").is_ok());
        assert!(validate_note("kept for the audit\n\tsee OPS-1 ✓").is_ok());
        assert!(validate_note(&"x".repeat(MAX_NOTE_LEN)).is_ok());
        assert!(validate_note(&"x".repeat(MAX_NOTE_LEN + 1)).is_err());
        for bad in ["\u{1b}[2J", "a\rb", "nul\0", "\u{7f}"] {
            assert!(validate_note(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn version_1_manifests_keep_their_bytes_and_read_back() {
        let mut m = sample();
        m.components[0].meta.mtime = crate::tree::Time::from_ns(1_234_567_891);
        let v1 = m.encode(1).unwrap();
        assert_eq!(v1[8..12], 1u32.to_le_bytes());
        // A version-1 component's metadata is 40 bytes (FORMAT.md §7); version 2 records more.
        assert!(m.encode(2).unwrap().len() > v1.len());
        let back = Manifest::decode(&v1).unwrap();
        assert_eq!(back.components[0].meta.mtime, m.components[0].meta.mtime);
        assert_eq!(Manifest { components: vec![], ..back }, Manifest { components: vec![], ..m });
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_manifests_round_trip(
            host in ".{0,20}",
            tags in proptest::collection::vec("[a-z]{1,8}", 0..4),
            time_ns: i64,
            files: u64,
            source in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            skipped in proptest::collection::vec((proptest::collection::vec(proptest::num::u8::ANY, 1..20), ".{0,10}"), 0..3),
            note in ".{0,30}",
        ) {
            let mut m = sample();
            m.host = host;
            m.tags = tags;
            m.time_ns = time_ns;
            m.counts.files = files;
            m.components[0].source = source;
            m.parent = Some(SnapshotId(Id::hash(&time_ns.to_le_bytes())));
            m.note = note;
            m.issues = skipped
                .into_iter()
                .map(|(path, reason)| PathIssue {
                    component: "content".into(),
                    path,
                    kind: IssueKind::Changed,
                    reason,
                })
                .collect();
            proptest::prop_assert_eq!(Manifest::decode(&m.encode(FORMAT_VERSION).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn newer_version_is_refused_by_number_not_decoded() {
        let mut bytes = sample().encode(FORMAT_VERSION).unwrap();
        bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let err = Manifest::decode(&bytes).unwrap_err();
        assert!(
            matches!(err, Corruption::UnsupportedVersion { found, .. } if found == FORMAT_VERSION + 1),
            "{err:?}"
        );
    }

    #[test]
    fn damaged_manifests_are_errors() {
        let bytes = sample().encode(FORMAT_VERSION).unwrap();
        for n in 0..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut m = sample();
        m.components.push(m.components[0].clone());
        assert!(Manifest::decode(&m.encode(FORMAT_VERSION).unwrap()).is_err());
        let mut m = sample();
        m.components[0].name = "../etc".into();
        assert!(Manifest::decode(&m.encode(FORMAT_VERSION).unwrap()).is_err());
    }
}
