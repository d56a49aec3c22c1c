//! Benchmark support for `store`: deterministic generators of the data our users back up.
//!
//! [`generate_contentstore`] writes an Alfresco-shaped `contentstore/YYYY/M/D/H/M/<uuid>.bin`
//! tree: lognormal file sizes (median tens of KiB, tail to tens of MiB), a mix of compressible
//! documents, incompressible media, and new versions of earlier documents with small edits
//! (Alfresco writes each version as a new file). The same seed gives the same bytes.
//! [`datasets`] builds whole Alfresco and MarkLogic installations from it and applies one day
//! of change to them.

pub mod datasets;
pub mod pg;
pub mod realistic;

use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// What a generator wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generated {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
}

const WORDS: &[&str] = &[
    "contract",
    "invoice",
    "alfresco",
    "workspace",
    "node",
    "version",
    "document",
    "policy",
    "customer",
    "approval",
    "the",
    "of",
    "and",
    "to",
    "in",
    "records",
    "retention",
    "site",
    "marklogic",
    "forest",
    "journal",
    "stand",
    "backup",
    "quarterly",
    "report",
    "draft",
];

/// Text that compresses like office documents (about 3-4x with zstd).
pub fn document_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let w = WORDS[rng.gen_range(0..WORDS.len())];
        out.extend_from_slice(w.as_bytes());
        out.push(if rng.gen_ratio(1, 12) { b'\n' } else { b' ' });
        if rng.gen_ratio(1, 40) {
            out.extend_from_slice(format!("{:08}", rng.gen::<u32>()).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Incompressible bytes (images, video, PDFs with compressed streams).
pub fn media_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    rng.fill_bytes(&mut out);
    out
}

/// A lognormal size with the given median, capped.
pub(crate) fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64, cap: u64) -> u64 {
    // Box-Muller
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    ((median.ln() + sigma * z).exp() as u64).clamp(1, cap)
}

/// The per-minute directory of Alfresco's content store for the `minute`-th minute (created):
/// `2026/M/D/H/M` below `root`.
pub(crate) fn minute_dir(root: &Path, minute: u32) -> std::io::Result<std::path::PathBuf> {
    let dir = root.join(format!(
        "2026/{}/{}/{}/{}",
        1 + (minute / 40_000) % 12,
        1 + (minute / 1440) % 28,
        (minute / 60) % 24,
        minute % 60
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Keeps `item` among the (at most 64) earlier documents that may get new versions, replacing
/// one at random when full.
pub(crate) fn remember<T>(rng: &mut SmallRng, previous: &mut Vec<T>, item: T) {
    if previous.len() >= 64 {
        let i = rng.gen_range(0..previous.len());
        previous.swap_remove(i);
    }
    previous.push(item);
}

/// Writes about `total_bytes` of contentstore under `root` (created); returns what it wrote.
///
/// # Errors
/// I/O errors writing the tree.
pub fn generate_contentstore(
    root: &Path,
    seed: u64,
    total_bytes: u64,
) -> std::io::Result<Generated> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut done = Generated::default();
    let mut previous: Vec<Vec<u8>> = Vec::new();
    let mut minute = 0u32;
    while done.bytes < total_bytes {
        let dir = minute_dir(root, minute)?;
        for _ in 0..rng.gen_range(1..12) {
            let size = lognormal(&mut rng, 40_000.0, 1.6, 40 << 20) as usize;
            let roll = rng.gen_range(0..10);
            let data = if roll < 2 && !previous.is_empty() {
                // A new version of an earlier document: a small edit somewhere in it.
                let mut v = previous[rng.gen_range(0..previous.len())].clone();
                let at = rng.gen_range(0..v.len().max(1));
                let edit = document_bytes(&mut rng, 200);
                v.splice(at..at.min(v.len()), edit);
                v
            } else if roll < 7 {
                document_bytes(&mut rng, size)
            } else {
                media_bytes(&mut rng, size)
            };
            let name = format!("{:032x}.bin", rng.gen::<u128>());
            std::io::Write::write_all(&mut std::fs::File::create(dir.join(name))?, &data)?;
            done.files += 1;
            done.bytes += data.len() as u64;
            if roll < 7 && data.len() < 1 << 20 {
                remember(&mut rng, &mut previous, data);
            }
        }
        minute += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic_and_reaches_its_size() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ga = generate_contentstore(a.path(), 5, 2 << 20).unwrap();
        let gb = generate_contentstore(b.path(), 5, 2 << 20).unwrap();
        assert!(ga.bytes >= 2 << 20);
        assert_eq!((ga.files, ga.bytes), (gb.files, gb.bytes));
    }
}
