//! Whole installations, as our users' manuals lay them out, and one day of change.
//!
//! - Alfresco (`alfresco/`): `alf_data/contentstore/` (about 64% of the bytes),
//!   `alf_data/contentstore.deleted/`, `alf_data/solr4Backup/alfresco/snapshot.*/` (index
//!   segments) and `alfresco.sql`, a `pg_dump`-style SQL text dump (about 22%). At scale 1:
//!   about 2.26 GB in some 12,000 files, the size of the set the benchmark issue quotes.
//! - MarkLogic (`marklogic/`): `Forests/Documents/<stand>/` with large stand files (tree data
//!   compresses, list data does not) and `Journals/` that grow by appends. About 2 GB at
//!   scale 1.
//!
//! [`mutate_alfresco`] and [`mutate_marklogic`] apply one day of change: new documents in new
//! date directories, new versions of existing documents, deletions moved into
//! `contentstore.deleted`, a dump with changed and new rows, a new Solr snapshot; a forest
//! merge (a stand rewritten with insertions and deletions that shift bytes) and journal appends.
//! Everything is deterministic in (seed, scale, day).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::{document_bytes, generate_contentstore, media_bytes, Generated};

fn mb(scale: f64, megabytes: f64) -> u64 {
    (scale * megabytes * 1_000_000.0) as u64
}

fn write_file(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::create(path)?.write_all(data)
}

fn add(total: &mut Generated, g: Generated) {
    total.files += g.files;
    total.bytes += g.bytes;
}

/// The paths of an Alfresco installation under `root`, in the order its manual backs them up:
/// the Solr backup, the database dump, the content store, the deleted content store.
#[must_use]
pub fn alfresco_sources(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        ("index", root.join("alf_data/solr4Backup")),
        ("db", root.join("alfresco.sql")),
        ("content", root.join("alf_data/contentstore")),
        ("deleted", root.join("alf_data/contentstore.deleted")),
    ]
}

/// The paths of a MarkLogic installation under `root`: forests, then journals.
#[must_use]
pub fn marklogic_sources(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![("forests", root.join("Forests")), ("journals", root.join("Journals"))]
}

/// Writes a SQL dump of `rows` rows of Alfresco's node tables, as `pg_dump` prints them; on
/// `day` > 0 about 1% of the rows carry that day's change and 2% more rows exist.
///
/// # Errors
/// I/O errors writing `path`.
pub fn write_dump(path: &Path, seed: u64, rows: u64, day: u32) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let header = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
                  SET client_encoding = 'UTF8';\n\n\
                  COPY public.alf_node (id, version, store_id, uuid, transaction_id, type_qname_id, \
                  locale_id, acl_id, audit_creator, audit_created, audit_modifier, audit_modified) \
                  FROM stdin;\n";
    out.write_all(header.as_bytes())?;
    let mut written = header.len() as u64;
    let total = rows + rows * u64::from(day) / 50;
    let users = ["admin", "jsmith", "mjones", "records", "system", "abeecher", "mjackson"];
    for i in 0..total {
        let key = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut rng = SmallRng::seed_from_u64(key);
        let mut changes = SmallRng::seed_from_u64(!key);
        let mut version = 1;
        for d in 1..=day {
            if changes.gen_ratio(1, 100) {
                version = d + 1;
            }
        }
        let uuid: u128 = rng.gen();
        let user = users[rng.gen_range(0..users.len())];
        let line = format!(
            "{i}\t{version}\t6\t{:08x}-{:04x}-{:04x}-{:04x}-{:012x}\t{}\t{}\t1\t{}\t{user}\t\
             2026-{:02}-{:02}T{:02}:{:02}:{:02}.000Z\t{user}\t2026-11-{:02}T10:00:00.000Z\n",
            (uuid >> 96) as u32,
            (uuid >> 80) as u16,
            (uuid >> 64) as u16,
            (uuid >> 48) as u16,
            uuid as u64 & 0xffff_ffff_ffff,
            i / 7 + u64::from(version) * 1000,
            rng.gen_range(20..80),
            rng.gen_range(1..5000),
            rng.gen_range(1..13),
            rng.gen_range(1..29),
            rng.gen_range(0..24),
            rng.gen_range(0..60),
            rng.gen_range(0..60),
            1 + version.min(28),
        );
        out.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    out.write_all(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n")?;
    out.flush()?;
    Ok(written + 44)
}

/// Rows of a dump of about `bytes`: the rows [`write_dump`] prints average 133 bytes. (The
/// first harness runs divided by 190, which made a 342 MB dump instead of 490 MB.)
fn dump_rows(bytes: u64) -> u64 {
    bytes / 133
}

/// Writes one Solr snapshot directory of about `bytes` in segment files.
fn write_solr_snapshot(dir: &Path, seed: u64, bytes: u64) -> std::io::Result<Generated> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut done = Generated::default();
    let mut n = 0;
    while done.bytes < bytes {
        let len = rng.gen_range(2_000_000..20_000_000).min(bytes - done.bytes + 1) as usize;
        // Stored fields compress, postings and term vectors much less.
        let (name, data) = if n % 2 == 0 {
            (format!("_{n}.fdt"), document_bytes(&mut rng, len))
        } else {
            (format!("_{n}.doc"), media_bytes(&mut rng, len))
        };
        write_file(&dir.join(name), &data)?;
        done.files += 1;
        done.bytes += data.len() as u64;
        n += 1;
    }
    write_file(&dir.join(format!("segments_{n}")), format!("segments {n}\n").as_bytes())?;
    done.files += 1;
    Ok(done)
}

/// What the documents of a generated content store are like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corpus {
    /// The project's first generator: text from a 26-word list (zstd compresses it at some
    /// 540 MB/s a core) and random bytes for media ([`generate_contentstore`]).
    Synthetic,
    /// Large-vocabulary text in real containers: office zips, PDFs, JPEG, PNG
    /// ([`crate::realistic`]).
    Realistic,
}

impl Corpus {
    /// Writes about `bytes` of content store of this kind under `root`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn contentstore(self, root: &Path, seed: u64, bytes: u64) -> std::io::Result<Generated> {
        match self {
            Corpus::Synthetic => generate_contentstore(root, seed, bytes),
            Corpus::Realistic => crate::realistic::generate_contentstore(root, seed, bytes),
        }
    }
}

/// Writes an Alfresco installation of about 2.26 GB × `scale` under `root`.
///
/// # Errors
/// I/O errors.
pub fn generate_alfresco(root: &Path, seed: u64, scale: f64) -> std::io::Result<Generated> {
    generate_alfresco_of(root, seed, scale, Corpus::Synthetic)
}

/// [`generate_alfresco`] with a content store of `corpus`.
///
/// # Errors
/// I/O errors.
pub fn generate_alfresco_of(
    root: &Path,
    seed: u64,
    scale: f64,
    corpus: Corpus,
) -> std::io::Result<Generated> {
    let mut total = Generated::default();
    let alf = root.join("alf_data");
    add(&mut total, corpus.contentstore(&alf.join("contentstore"), seed, mb(scale, 1450.0))?);
    add(
        &mut total,
        corpus.contentstore(&alf.join("contentstore.deleted"), seed + 1, mb(scale, 120.0))?,
    );
    let solr = alf.join("solr4Backup/alfresco/snapshot.20261121");
    add(&mut total, write_solr_snapshot(&solr, seed + 2, mb(scale, 200.0))?);
    let dump = write_dump(&root.join("alfresco.sql"), seed + 3, dump_rows(mb(scale, 490.0)), 0)?;
    add(&mut total, Generated { files: 1, bytes: dump });
    Ok(total)
}

/// Every regular file below `dir`, sorted (deterministic choices need a stable order).
fn files_below(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What one day of change did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mutation {
    /// Bytes written to new files or rewritten.
    pub bytes_written: u64,
    /// Files created.
    pub files_new: u64,
    /// Files moved or deleted.
    pub files_removed: u64,
}

/// Day `day` (1, 2, ...) of change in an Alfresco installation made by [`generate_alfresco`].
///
/// # Errors
/// I/O errors.
pub fn mutate_alfresco(root: &Path, seed: u64, scale: f64, day: u32) -> std::io::Result<Mutation> {
    mutate_alfresco_of(root, seed, scale, day, Corpus::Synthetic)
}

/// [`mutate_alfresco`], the day's new documents of `corpus`.
///
/// # Errors
/// I/O errors.
pub fn mutate_alfresco_of(
    root: &Path,
    seed: u64,
    scale: f64,
    day: u32,
    corpus: Corpus,
) -> std::io::Result<Mutation> {
    let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(day) << 32));
    let mut m = Mutation::default();
    let content = root.join("alf_data/contentstore");
    let deleted = root.join("alf_data/contentstore.deleted");
    let existing = files_below(&content)?;
    // New documents, in a new date directory (2027/1/<day>/...).
    let new_dir = content.join(format!("2027/1/{day}"));
    let g = corpus.contentstore(&new_dir, seed ^ 0xd0c ^ u64::from(day), mb(scale, 15.0))?;
    m.files_new += g.files;
    m.bytes_written += g.bytes;
    // New versions of existing documents: a copy with a small edit, under a new name.
    let versions = ((existing.len() as f64) * 0.01) as usize + 1;
    for i in 0..versions {
        let src = &existing[rng.gen_range(0..existing.len())];
        let mut data = std::fs::read(src)?;
        let at = rng.gen_range(0..=data.len());
        let edit_len = rng.gen_range(10..400);
        let edit = document_bytes(&mut rng, edit_len);
        data.splice(at..at, edit);
        let dst = new_dir.join(format!("versions/{i:05}-{:032x}.bin", rng.gen::<u128>()));
        write_file(&dst, &data)?;
        m.files_new += 1;
        m.bytes_written += data.len() as u64;
    }
    // Deletions: the content cleaner moves orphaned content into contentstore.deleted.
    let removals = ((existing.len() as f64) * 0.005) as usize + 1;
    for _ in 0..removals {
        let src = &existing[rng.gen_range(0..existing.len())];
        if !src.exists() {
            continue;
        }
        let rel = src.strip_prefix(&content).unwrap_or(src);
        let dst = deleted.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(src, &dst)?;
        m.files_removed += 1;
    }
    // Tonight's dump: some rows changed, some added.
    m.bytes_written +=
        write_dump(&root.join("alfresco.sql"), seed + 3, dump_rows(mb(scale, 490.0)), day)?;
    // A new Solr snapshot replaces the previous one: most segments unchanged, one new.
    let solr = root.join("alf_data/solr4Backup/alfresco");
    let old = std::fs::read_dir(&solr)?
        .filter_map(std::result::Result::ok)
        .map(|e| e.path())
        .max()
        .unwrap_or_else(|| solr.join("snapshot.20261121"));
    let new = solr.join(format!("snapshot.202612{day:02}"));
    std::fs::rename(&old, &new)?;
    let g = write_solr_snapshot(&new.join("new"), seed ^ 0x501 ^ u64::from(day), mb(scale, 8.0))?;
    m.files_new += g.files;
    m.bytes_written += g.bytes;
    Ok(m)
}

/// Writes a MarkLogic data directory of about 2 GB × `scale` under `root`.
///
/// # Errors
/// I/O errors.
pub fn generate_marklogic(root: &Path, seed: u64, scale: f64) -> std::io::Result<Generated> {
    generate_marklogic_of(root, seed, scale, Corpus::Synthetic)
}

impl Corpus {
    /// `len` bytes of document text of this corpus: the 26-word list, or large-vocabulary prose
    /// (the vocabulary of `seed`).
    fn text(self, rng: &mut SmallRng, seed: u64, len: usize) -> Vec<u8> {
        match self {
            Corpus::Synthetic => document_bytes(rng, len),
            Corpus::Realistic => crate::realistic::Vocabulary::new(seed).text(rng, len),
        }
    }
}

/// [`generate_marklogic`] with the stands' tree data and the journals written in the text of
/// `corpus` (the list data, indexes, stays random).
///
/// # Errors
/// I/O errors.
pub fn generate_marklogic_of(
    root: &Path,
    seed: u64,
    scale: f64,
    corpus: Corpus,
) -> std::io::Result<Generated> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut total = Generated::default();
    let forest = root.join("Forests/Documents");
    for stand in 0..4u32 {
        let dir = forest.join(format!("{:016x}", 0x1000 + stand));
        let each = mb(scale, 440.0) as usize;
        // TreeData compresses (documents), ListData (indexes) does not.
        let tree = corpus.text(&mut rng, seed, each * 6 / 10);
        let list = media_bytes(&mut rng, each * 4 / 10);
        write_file(&dir.join("TreeData"), &tree)?;
        write_file(&dir.join("ListData"), &list)?;
        write_file(&dir.join("Timestamps"), &media_bytes(&mut rng, 64 << 10))?;
        write_file(&dir.join("Label"), format!("stand {stand}\n").as_bytes())?;
        total.files += 4;
        total.bytes += (tree.len() + list.len() + (64 << 10)) as u64;
    }
    for j in 0..2 {
        let data = corpus.text(&mut rng, seed, mb(scale, 120.0) as usize);
        write_file(&root.join(format!("Journals/Journal-{j}")), &data)?;
        total.files += 1;
        total.bytes += data.len() as u64;
    }
    Ok(total)
}

/// Day `day` of change in a MarkLogic directory made by [`generate_marklogic`]: the oldest
/// stand is merged into a new one (50 insertions and deletions of 1-4 KiB shift its bytes),
/// and the newest journal grows by about 1% of the data.
///
/// # Errors
/// I/O errors.
pub fn mutate_marklogic(root: &Path, seed: u64, scale: f64, day: u32) -> std::io::Result<Mutation> {
    mutate_marklogic_of(root, seed, scale, day, Corpus::Synthetic)
}

/// [`mutate_marklogic`] of a directory made by [`generate_marklogic_of`] with `corpus`.
///
/// # Errors
/// I/O errors.
pub fn mutate_marklogic_of(
    root: &Path,
    seed: u64,
    scale: f64,
    day: u32,
    corpus: Corpus,
) -> std::io::Result<Mutation> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x4d4c ^ (u64::from(day) << 32));
    let mut m = Mutation::default();
    let forest = root.join("Forests/Documents");
    let mut stands: Vec<PathBuf> =
        std::fs::read_dir(&forest)?.filter_map(std::result::Result::ok).map(|e| e.path()).collect();
    stands.sort();
    if let Some(old) = stands.first() {
        let new = forest.join(format!("{:016x}", 0x2000 + day));
        std::fs::create_dir_all(&new)?;
        for name in ["TreeData", "ListData", "Timestamps", "Label"] {
            let mut data = std::fs::read(old.join(name))?;
            if data.len() > 1 << 20 {
                for _ in 0..25 {
                    let at = rng.gen_range(0..data.len());
                    let len = rng.gen_range(1024..4096).min(data.len() - at);
                    if rng.gen() {
                        data.drain(at..at + len);
                    } else {
                        let insert = media_bytes(&mut rng, len);
                        data.splice(at..at, insert);
                    }
                }
            }
            write_file(&new.join(name), &data)?;
            m.bytes_written += data.len() as u64;
            m.files_new += 1;
        }
        std::fs::remove_dir_all(old)?;
        m.files_removed += 4;
    }
    let journal = root.join("Journals/Journal-1");
    let mut f = std::fs::OpenOptions::new().append(true).open(journal)?;
    let data = corpus.text(&mut rng, seed, mb(scale, 20.0) as usize);
    f.write_all(&data)?;
    m.bytes_written += data.len() as u64;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(root: &Path) -> Vec<(PathBuf, blake3::Hash)> {
        files_below(root)
            .unwrap()
            .into_iter()
            .map(|p| {
                let h = blake3::hash(&std::fs::read(&p).unwrap());
                (p.strip_prefix(root).unwrap().to_path_buf(), h)
            })
            .collect()
    }

    #[test]
    fn installations_and_their_changes_are_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for dir in [a.path(), b.path()] {
            generate_alfresco(&dir.join("alfresco"), 3, 0.002).unwrap();
            generate_marklogic(&dir.join("marklogic"), 3, 0.002).unwrap();
        }
        assert_eq!(digest(a.path()), digest(b.path()));
        let before = digest(a.path());
        for dir in [a.path(), b.path()] {
            mutate_alfresco(&dir.join("alfresco"), 3, 0.002, 1).unwrap();
            mutate_marklogic(&dir.join("marklogic"), 3, 0.002, 1).unwrap();
        }
        let after = digest(a.path());
        assert_eq!(after, digest(b.path()));
        assert_ne!(before, after);
        // Deletions moved content into contentstore.deleted; the dump grew.
        let deleted = |d: &[(PathBuf, blake3::Hash)]| {
            d.iter()
                .filter(|(p, _)| p.starts_with("alfresco/alf_data/contentstore.deleted"))
                .count()
        };
        assert!(deleted(&after) > deleted(&before));
        let dump = std::fs::read_to_string(a.path().join("alfresco/alfresco.sql")).unwrap();
        assert!(
            dump.starts_with("--\n-- PostgreSQL database dump")
                && dump.contains("COPY public.alf_node")
        );
    }

    #[test]
    fn the_dump_changes_a_little_from_day_to_day() {
        let d = tempfile::tempdir().unwrap();
        let (p0, p1) = (d.path().join("0.sql"), d.path().join("1.sql"));
        write_dump(&p0, 1, 5000, 0).unwrap();
        write_dump(&p1, 1, 5000, 1).unwrap();
        let (a, b) = (std::fs::read_to_string(&p0).unwrap(), std::fs::read_to_string(&p1).unwrap());
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
        assert!(lb.len() > la.len());
        let changed = la.iter().zip(&lb).filter(|(x, y)| x != y).count();
        assert!(changed > 0 && changed < la.len() / 20, "{changed} of {} rows changed", la.len());
    }
}
