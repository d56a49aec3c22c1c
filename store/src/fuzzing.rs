//! Entry points for the fuzz targets (`fuzz/`): every decoder of bytes that come from disk,
//! with arbitrary input. Each returns whether the input was accepted; none may panic, hang or
//! allocate more than the input justifies (DESIGN.md invariant 7).

use crate::chunker::{Chunker, ChunkerParams};
use crate::config::RepoConfig;
use crate::crypto::{Crypto, FileKind, KeyFile, SEAL_OVERHEAD};
use crate::index::decode_index_file;
use crate::lock::LockRecord;
use crate::pack::{
    check_blob, decode_blob_header, decode_footer, entries_in, streamed_agrees, verify_blob,
};
use crate::snapshot::Manifest;
use crate::tree::{decode_chunk_list, TreeBlob};

/// A whole pack file: footer, trailer, then every blob verified.
#[must_use]
pub fn pack(bytes: &[u8]) -> bool {
    pack_with(bytes, &Crypto::plain())
}

fn pack_with(bytes: &[u8], crypto: &Crypto) -> bool {
    // Read in order in pieces (as `check` reads a pack), the same findings as whole.
    streamed_agrees(bytes, crypto, 1 + bytes.len() % 61);
    let Ok(entries) = entries_in(bytes, crypto) else { return false };
    let (mut raw, mut scratch) = (Vec::new(), Vec::new());
    entries.iter().all(|e| {
        bytes.get(e.offset as usize..e.end() as usize).is_some_and(|f| {
            let verified = verify_blob(crypto, f, e, &mut raw).is_ok();
            // The check that skips copying raw blobs must agree with the full one.
            let checked = check_blob(crypto, f, e, &mut scratch).is_ok();
            assert_eq!(verified, checked, "check_blob disagrees");
            verified
        })
    })
}

/// The last 64 bytes of a pack (with a plain and a sealed trailer).
#[must_use]
pub fn pack_footer(bytes: &[u8]) -> bool {
    let len = bytes.len() as u64 + 1_000_000;
    decode_footer(bytes, len, 0).is_ok() | decode_footer(bytes, len, SEAL_OVERHEAD).is_ok()
}

/// A key file (`keys/<id>`, FORMAT.md §15.2): decoded and its KDF parameters bounded. The KDF
/// itself is not run (its cost is what the bounds limit).
#[must_use]
pub fn key_file(bytes: &[u8]) -> bool {
    KeyFile::decode(bytes).is_ok()
}

/// Sealed objects of an encrypted repository (fixed test keys): the first byte picks a sealed
/// file of kind 1 to 4, a sealed blob (5), or a whole sealed pack (6), and the cipher (XAES-256-GCM
/// of format version 5 or XChaCha20-Poly1305 of versions 3 and 4); the rest is the input.
#[must_use]
pub fn sealed(bytes: &[u8]) -> bool {
    let (head, rest) = bytes.split_at(bytes.len().min(1));
    let head = head.first().copied().unwrap_or(0);
    let cipher = if head / 7 % 2 == 0 {
        crate::config::Encryption::Xaes256Gcm
    } else {
        crate::config::Encryption::XChaCha20Poly1305
    };
    let crypto = Crypto::for_tests_sealed_with(b"fuzz", cipher);
    match head % 7 {
        k @ 1..=4 => {
            let kind = [FileKind::Index, FileKind::Manifest, FileKind::Lock, FileKind::Damage]
                [usize::from(k - 1)];
            crypto.open_file(kind, rest).is_ok()
        }
        5 => {
            let mut out = Vec::new();
            let id = crypto.id(b"fuzz");
            crypto.open_blob(id, 0, 1, 100, rest, &mut out).is_ok()
        }
        6 => pack_with(rest, &crypto),
        _ => crypto.open_trailer(b"aad", rest).is_ok(),
    }
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

/// Decodes a verification record (`verified/<id>`, FORMAT.md §8.4); true when it decodes.
#[must_use]
pub fn coverage_file(bytes: &[u8]) -> bool {
    crate::coverage::decode_coverage_file(bytes, &mut crate::coverage::Coverage::default()).is_ok()
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
