//! Blob compression: zstd, or the raw bytes when compression does not pay.

use serde::{Deserialize, Serialize};

use crate::error::Corruption;

/// How a blob's bytes are stored in a pack (FORMAT.md §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    /// The codec with this on-disk tag.
    pub(crate) fn from_tag(tag: u8) -> Result<Self, Corruption> {
        match tag {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            t => Err(Corruption::Invalid(format!("unknown codec {t}"))),
        }
    }
}

/// Default zstd level (see docs/BENCHMARKS.md for the measurement).
pub const DEFAULT_LEVEL: i32 = 3;

/// A reusable zstd compression context; one per worker thread.
pub struct Compressor {
    ctx: zstd::bulk::Compressor<'static>,
}

impl Compressor {
    /// A context compressing at `level`.
    ///
    /// # Errors
    /// An invalid level.
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(Compressor { ctx: zstd::bulk::Compressor::new(level)? })
    }

    /// Compresses `raw` into `out` (cleared first) and returns the codec used. When zstd saves
    /// less than 1/32 of the size, `out` gets the raw bytes and the codec is [`Codec::Raw`]:
    /// reading raw bytes back is free, and incompressible media is common in contentstores.
    pub fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Codec {
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        let worthwhile = raw.len() - raw.len() / 32;
        match self.ctx.compress_to_buffer(raw, out) {
            Ok(n) if n < worthwhile => Codec::Zstd,
            _ => {
                out.clear();
                out.extend_from_slice(raw);
                Codec::Raw
            }
        }
    }
}

thread_local! {
    /// One zstd decompression context per thread, made on first use: creating one per blob
    /// cost about 3% of a snapshot (its pack verification decompresses every blob).
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decompresses `stored` into `out` (cleared first); it must yield exactly `raw_len` bytes.
/// The output buffer is sized from `raw_len`, which bounds what a hostile frame can allocate.
///
/// # Errors
/// A frame that does not decode or decodes to another length.
pub fn decompress(
    codec: Codec,
    stored: &[u8],
    raw_len: u32,
    out: &mut Vec<u8>,
) -> Result<(), Corruption> {
    out.clear();
    match codec {
        Codec::Raw => {
            if stored.len() != raw_len as usize {
                return Err(Corruption::Invalid(format!(
                    "raw blob holds {} bytes, header says {raw_len}",
                    stored.len()
                )));
            }
            out.extend_from_slice(stored);
        }
        Codec::Zstd => {
            out.reserve(raw_len as usize);
            let n = DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    match slot.as_mut() {
                        Some(d) => d.decompress_to_buffer(stored, out),
                        None => Err(std::io::Error::other("no zstd context")),
                    }
                })
                .map_err(|e| Corruption::Decode { what: "zstd frame", message: e.to_string() })?;
            if n != raw_len as usize {
                return Err(Corruption::Invalid(format!(
                    "blob decompresses to {n} bytes, header says {raw_len}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_data_is_zstd_and_round_trips() {
        let raw = b"alfresco contentstore ".repeat(1000);
        let mut c = Compressor::new(3).unwrap();
        let mut stored = Vec::new();
        assert_eq!(c.compress(&raw, &mut stored), Codec::Zstd);
        assert!(stored.len() < raw.len() / 10);
        let mut back = Vec::new();
        decompress(Codec::Zstd, &stored, raw.len() as u32, &mut back).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let raw: Vec<u8> =
            (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let mut c = Compressor::new(3).unwrap();
        let mut stored = Vec::new();
        let codec = c.compress(&raw, &mut stored);
        if codec == Codec::Raw {
            assert_eq!(stored, raw);
        }
        let mut back = Vec::new();
        decompress(codec, &stored, raw.len() as u32, &mut back).unwrap();
        assert_eq!(back, raw);
    }

    #[test]
    fn wrong_lengths_and_garbage_are_errors() {
        let mut out = Vec::new();
        assert!(decompress(Codec::Raw, b"abc", 4, &mut out).is_err());
        assert!(decompress(Codec::Zstd, b"not zstd at all", 100, &mut out).is_err());
        let raw = vec![0u8; 10_000];
        let mut stored = Vec::new();
        Compressor::new(3).unwrap().compress(&raw, &mut stored);
        // A frame that decompresses to more than the header promises is refused.
        assert!(decompress(Codec::Zstd, &stored, 100, &mut out).is_err());
    }
}
