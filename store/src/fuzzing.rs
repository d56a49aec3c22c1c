//! Entry points for the fuzz targets (`fuzz/`): every decoder of bytes that come from disk,
//! with arbitrary input. Each returns whether the input was accepted; none may panic, hang or
//! allocate more than the input justifies (DESIGN.md invariant 7).

use crate::chunker::{Chunker, ChunkerParams};
use crate::config::RepoConfig;
use crate::index::decode_index_file;
use crate::lock::LockRecord;
use crate::pack::{check_blob, decode_blob_header, decode_footer, entries_in, verify_blob};
use crate::snapshot::Manifest;
use crate::tree::{decode_chunk_list, TreeBlob};

/// A whole pack file: footer, trailer, then every blob verified.
#[must_use]
pub fn pack(bytes: &[u8]) -> bool {
    let Ok(entries) = entries_in(bytes) else { return false };
    let (mut raw, mut scratch) = (Vec::new(), Vec::new());
    entries.iter().all(|e| {
        bytes.get(e.offset as usize..e.end() as usize).is_some_and(|f| {
            let verified = verify_blob(f, e, &mut raw).is_ok();
            // The check that skips copying raw blobs must agree with the full one.
            assert_eq!(verified, check_blob(f, e, &mut scratch).is_ok(), "check_blob disagrees");
            verified
        })
    })
}

/// The last 64 bytes of a pack.
#[must_use]
pub fn pack_footer(bytes: &[u8]) -> bool {
    decode_footer(bytes, bytes.len() as u64 + 1_000_000).is_ok()
}

/// One blob header.
#[must_use]
pub fn blob_header(bytes: &[u8]) -> bool {
    decode_blob_header(bytes, 0).is_ok()
}

/// An index file.
#[must_use]
pub fn index_file(bytes: &[u8]) -> bool {
    decode_index_file(bytes).is_ok()
}

/// Decodes a damage record (`damage/<id>`, FORMAT.md §8.3); true when it decodes.
#[must_use]
pub fn damage_file(bytes: &[u8]) -> bool {
    crate::damage::decode_damage_file(bytes).is_ok()
}

/// A tree blob, and the same bytes as a chunk list.
#[must_use]
pub fn tree(bytes: &[u8]) -> bool {
    TreeBlob::decode(bytes).is_ok() | decode_chunk_list(bytes).is_ok()
}

/// A snapshot manifest.
#[must_use]
pub fn manifest(bytes: &[u8]) -> bool {
    Manifest::decode(bytes).is_ok()
}

/// A config file.
#[must_use]
pub fn config(bytes: &[u8]) -> bool {
    RepoConfig::decode(bytes, std::path::Path::new("config")).is_ok()
}

/// A lock file.
#[must_use]
pub fn lock(bytes: &[u8]) -> bool {
    LockRecord::decode(bytes).is_ok()
}

/// The chunker with parameters taken from the first bytes: cut points within bounds and the
/// chunks concatenate to the input. Returns the number of chunks.
///
/// # Panics
/// When a chunker law is broken (that is the bug the target looks for).
#[must_use]
pub fn chunker(bytes: &[u8]) -> usize {
    let (head, data) = bytes.split_at(bytes.len().min(2));
    let shift = head.first().map_or(0, |b| u32::from(b % 8));
    let params = ChunkerParams {
        min: 64 << shift,
        avg: 256 << shift,
        max: 1024 << shift,
        seed: u64::from(head.get(1).copied().unwrap_or(0)),
    };
    let c = Chunker::new(&params);
    let mut total = 0usize;
    let mut count = 0usize;
    let used = c
        .cut_all(data, true, |chunk| {
            assert!(chunk.len() <= params.max as usize, "chunk above max");
            total += chunk.len();
            count += 1;
            Ok::<(), ()>(())
        })
        .unwrap_or(0);
    assert_eq!(used, data.len(), "chunks do not cover the input");
    assert_eq!(total, data.len());
    count
}
