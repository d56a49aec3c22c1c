//! Pack files: blobs appended with a small header each, then a trailer listing every blob, then
//! a fixed-size footer (FORMAT.md §5).
//!
//! Only this module knows pack bytes. [`PackWriter`] builds a pack in a temp file, verifies
//! every blob by decompressing and re-hashing it, and makes it durable under its final name;
//! [`read_blob`] and [`PackReader`] read blobs back, verifying each against its id.

mod format;
mod reader;
mod writer;

#[cfg(feature = "fuzzing")]
pub(crate) use format::decode_blob_header;
#[cfg(feature = "fuzzing")]
pub(crate) use format::decode_footer;
pub(crate) use format::{decode_entry, encode_entry};
pub use format::{BlobKind, PackEntry, BLOB_HEADER_LEN, FOOTER_LEN, TRAILER_ENTRY_LEN};
#[cfg(feature = "fuzzing")]
pub(crate) use reader::{check_blob, entries_in, streamed_agrees, verify_blob};
pub use reader::{read_blob, LocalPack, PackReader, PackSource};
pub(crate) use reader::{salvage_blobs, verify_pack_in_order, FrameAt, PackVerdict};
pub use writer::{EncodedBlob, PackWriter, SealedPack};

#[cfg(test)]
// The tests damage pack files on purpose, bypassing `write_atomic`.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::compress::{Codec, Compressor};
    use crate::crypto::Crypto;
    use crate::error::{Corruption, Error};
    use crate::id::Id;

    /// Writes the golden pack as format `version`: two data chunks (one compressible, one not)
    /// and one tree.
    fn write_golden(dir: &std::path::Path, version: u32) -> SealedPack {
        write_golden_with(dir, version, &Crypto::plain())
    }

    fn write_golden_with(dir: &std::path::Path, version: u32, crypto: &Crypto) -> SealedPack {
        let mut w = PackWriter::create(dir, version, crypto).unwrap();
        let mut c = Compressor::new(3).unwrap();
        let text = b"store golden pack: compressible text. ".repeat(40);
        let mut noise = vec![0u8; 300];
        blake3::Hasher::new().update(b"noise").finalize_xof().fill(&mut noise);
        let tree = crate::tree::TreeBlob::Leaf(vec![]).encode(version).unwrap();
        for (kind, raw) in
            [(BlobKind::Data, &text[..]), (BlobKind::Data, &noise[..]), (BlobKind::Tree, &tree[..])]
        {
            w.add(&EncodedBlob::encode(crypto.id(raw), kind, raw, &mut c, crypto).unwrap())
                .unwrap();
        }
        w.seal(|id| dir.join(format!("{id}.pack"))).unwrap()
    }

    /// The bytes of a small pack are pinned: any change to blob headers, trailer, footer or
    /// compression settings changes this id and must come with a format version bump.
    #[test]
    fn golden_pack_bytes_do_not_change() {
        let dir = tempfile::tempdir().unwrap();
        for (version, golden) in
            [(1, GOLDEN_PACK_ID_V1), (2, GOLDEN_PACK_ID_V2), (3, GOLDEN_PACK_ID)]
        {
            assert_eq!(
                write_golden(dir.path(), version).id.to_hex(),
                golden,
                "version {version}: pack bytes changed; if intended, bump the format version and \
                 update docs/FORMAT.md"
            );
        }
        let sealed = write_golden(dir.path(), crate::FORMAT_VERSION);
        assert_eq!(sealed.entries.len(), 3);
        assert_eq!(sealed.entries[0].codec, Codec::Zstd);
        assert_eq!(sealed.entries[1].codec, Codec::Raw);
    }

    // Depends on the zstd library producing the same frame for the same input and level, which
    // Cargo.lock pins; a zstd upgrade that changes it changes stored bytes, not the format.
    const GOLDEN_PACK_ID_V1: &str =
        "562eb932a6a8defca143fe0547eb9b39c372c7b9cd3e66a0e4dfbe3fc4e2974d";
    /// Version 2: the footer's version, and the tree blob's variant (`Entries`).
    const GOLDEN_PACK_ID_V2: &str =
        "a7fb650217961a1b6996161cb5a631672b23eb5fcbf3781db84db622169b0a76";
    /// Version 3, unencrypted: the footer's version.
    const GOLDEN_PACK_ID: &str = "19a5bce2f6c3e65f34e2e7f6511fb6cd5cb3c620d6c1c0574a1ea7b4685359c2";

    #[test]
    fn pack_round_trips_through_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = write_golden(dir.path(), crate::FORMAT_VERSION);
        let path = dir.path().join(format!("{}.pack", sealed.id));
        let reader = PackReader::open(&path, sealed.id, &Crypto::plain()).unwrap();
        assert_eq!(reader.entries(), sealed.entries.as_slice());
        assert_eq!(reader.len(), sealed.len);
        let (mut frame, mut raw) = (Vec::new(), Vec::new());
        for e in reader.entries() {
            read_blob(
                &Crypto::plain(),
                reader.file(),
                || path.clone(),
                sealed.id,
                e,
                &mut frame,
                &mut raw,
            )
            .unwrap();
            assert_eq!(Id::hash(&raw), e.id);
        }
        // Sealed, the same blobs read back with the keys, and with no others.
        let keys = Crypto::for_tests(b"k");
        let sealed = write_golden_with(dir.path(), crate::FORMAT_VERSION, &keys);
        let path = dir.path().join(format!("{}.pack", sealed.id));
        let reader = PackReader::open(&path, sealed.id, &keys).unwrap();
        assert_eq!(reader.entries(), sealed.entries.as_slice());
        for e in reader.entries() {
            read_blob(&keys, reader.file(), || path.clone(), sealed.id, e, &mut frame, &mut raw)
                .unwrap();
            assert_eq!(keys.id(&raw), e.id);
            assert!(e.stored_len as usize >= crate::crypto::SEAL_OVERHEAD);
        }
        for other in [Crypto::plain(), Crypto::for_tests(b"other")] {
            assert!(PackReader::open(&path, sealed.id, &other).is_err(), "{other:?}");
        }
        // The temp file was renamed away, nothing is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn arbitrary_blobs_round_trip_through_a_pack(
            blobs in proptest::collection::vec((proptest::collection::vec(0u8..4, 0..5000), 0u8..3), 1..12),
            encrypted in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let crypto = if encrypted { Crypto::for_tests(b"p") } else { Crypto::plain() };
            let mut w = PackWriter::create(dir.path(), crate::FORMAT_VERSION, &crypto).unwrap();
            let mut c = Compressor::new(3).unwrap();
            for (raw, kind) in &blobs {
                let kind = BlobKind::from_tag(*kind).unwrap();
                w.add(&EncodedBlob::encode(crypto.id(raw), kind, raw, &mut c, &crypto).unwrap()).unwrap();
            }
            let sealed = w.seal(|id| dir.path().join(format!("{id}.pack"))).unwrap();
            let path = dir.path().join(format!("{}.pack", sealed.id));
            let reader = PackReader::open(&path, sealed.id, &crypto).unwrap();
            proptest::prop_assert_eq!(reader.entries(), sealed.entries.as_slice());
            let (mut frame, mut raw) = (Vec::new(), Vec::new());
            for (e, (expected, _)) in reader.entries().iter().zip(&blobs) {
                read_blob(&crypto, reader.file(), || path.clone(), sealed.id, e, &mut frame, &mut raw).unwrap();
                proptest::prop_assert_eq!(&raw, expected);
            }
        }
    }

    #[test]
    fn every_flipped_byte_of_a_pack_is_detected() {
        every_flipped_byte_is_detected(&Crypto::plain());
        every_flipped_byte_is_detected(&Crypto::for_tests(b"flip"));
    }

    fn every_flipped_byte_is_detected(crypto: &Crypto) {
        let dir = tempfile::tempdir().unwrap();
        let sealed = write_golden_with(dir.path(), crate::FORMAT_VERSION, crypto);
        let path = dir.path().join(format!("{}.pack", sealed.id));
        let good = std::fs::read(&path).unwrap();
        // Read in order in pieces of any size (as `check` reads packs), the same findings as
        // holding the pack whole: for the intact pack and for every flipped byte below.
        for piece in [1, 7, 100, good.len()] {
            assert!(reader::streamed_agrees(&good, crypto, piece));
            let source = reader::InPieces { bytes: &good, piece };
            let verdict = reader::verify_pack_in_order(&source, crypto).unwrap().unwrap();
            assert_eq!(verdict.hash, sealed.id.0);
        }
        let damaged = dir.path().join("damaged.pack");
        for i in 0..good.len() {
            let mut bytes = good.clone();
            bytes[i] ^= 0x04;
            for piece in [1, 7, 100] {
                reader::streamed_agrees(&bytes, crypto, piece);
            }
            std::fs::write(&damaged, &bytes).unwrap();
            // Either the trailer/footer is refused, or the blob covering byte i fails to verify.
            let detected = match PackReader::open(&damaged, sealed.id, crypto) {
                Err(Error::Corrupt { .. }) => true,
                Err(e) => panic!("byte {i}: unexpected error {e}"),
                Ok(r) => {
                    let (mut frame, mut raw) = (Vec::new(), Vec::new());
                    r.entries().iter().any(|e| {
                        read_blob(
                            crypto,
                            r.file(),
                            || damaged.clone(),
                            sealed.id,
                            e,
                            &mut frame,
                            &mut raw,
                        )
                        .is_err()
                    })
                }
            };
            assert!(detected, "flipping byte {i} of {} went unnoticed", good.len());
            // The sealing check (raw blobs hashed in place) catches a flip inside any blob,
            // the raw one included, and agrees with the full verification everywhere.
            let (mut raw, mut scratch) = (Vec::new(), Vec::new());
            for e in &sealed.entries {
                let frame = &bytes[e.offset as usize..e.end() as usize];
                let checked = reader::check_blob(crypto, frame, e, &mut scratch).is_ok();
                let verified = reader::verify_blob(crypto, frame, e, &mut raw).is_ok();
                assert_eq!(checked, verified, "byte {i}");
                let inside = (e.offset as usize..e.end() as usize).contains(&i);
                assert!(!(inside && checked), "byte {i} in blob {} ({:?}) passed", e.id, e.codec);
            }
        }
    }

    #[test]
    fn truncated_and_empty_packs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sealed = write_golden(dir.path(), crate::FORMAT_VERSION);
        let path = dir.path().join(format!("{}.pack", sealed.id));
        let good = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.pack");
        for n in [0, 1, FOOTER_LEN - 1, FOOTER_LEN, good.len() / 2, good.len() - 1] {
            std::fs::write(&cut, &good[..n]).unwrap();
            let err = PackReader::open(&cut, sealed.id, &Crypto::plain()).err().unwrap();
            assert!(matches!(err, Error::Corrupt { .. }), "{n} bytes: {err}");
        }
        std::fs::write(&cut, [good.clone(), b"garbage".to_vec()].concat()).unwrap();
        let err = PackReader::open(&cut, sealed.id, &Crypto::plain()).err().unwrap();
        assert!(
            matches!(&err, Error::Corrupt { reason, .. } if matches!(**reason, Corruption::BadMagic { .. })),
            "{err}"
        );
    }
}
