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

/// The level a [`Compressor`] also offers, and that large inputs are probed with.
pub const FAST_LEVEL: i32 = 1;

/// Which of a [`Compressor`]'s two levels compresses a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Effort {
    /// The repository's configured level.
    #[default]
    Configured,
    /// [`FAST_LEVEL`].
    Fast,
}

/// Inputs (files, streams) at least this large are probed: 4 MiB. Smaller files, most of a
/// contentstore, are compressed at the configured level without a probe.
pub(crate) const PROBE_MIN: u64 = 4 << 20;
/// A large input is probed again every this many new chunks (8 MiB at the default 128 KiB),
/// so a dump that moves from one table to the next gets the level that suits each.
pub(crate) const PROBE_EVERY: u32 = 64;

/// The choice of level along one input: its first new chunk, and every [`PROBE_EVERY`]-th
/// after, is compressed at both levels ([`Compressor::probe`]); the chunks in between get the
/// level that made the smaller blob. The choice depends only on the input's bytes, so the same
/// input is always stored the same way.
#[derive(Debug, Clone, Default)]
pub(crate) struct LevelProbe {
    active: bool,
    since: u32,
    effort: Effort,
}

impl LevelProbe {
    /// A probe for an input of `size` bytes (`None`: a stream of unknown length).
    pub(crate) fn for_input(size: Option<u64>, level: i32) -> Self {
        let large = size.is_none_or(|s| s >= PROBE_MIN);
        LevelProbe { active: large && level > FAST_LEVEL, since: 0, effort: Effort::Configured }
    }

    /// `None` when the next new chunk must be probed, else the level to use for it.
    pub(crate) fn next(&mut self) -> Option<Effort> {
        if !self.active {
            return Some(Effort::Configured);
        }
        let probe = self.since.is_multiple_of(PROBE_EVERY);
        self.since = self.since.wrapping_add(1);
        if probe {
            None
        } else {
            Some(self.effort)
        }
    }

    /// The level the last probe chose.
    pub(crate) fn current(&self) -> Effort {
        self.effort
    }

    /// Records what the last probe chose.
    pub(crate) fn chose(&mut self, effort: Effort) {
        self.effort = effort;
    }
}

/// A reusable zstd compression context; one per worker thread.
pub struct Compressor {
    ctx: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Made on first use at [`FAST_LEVEL`].
    fast: Option<zstd::bulk::Compressor<'static>>,
}

impl Compressor {
    /// A context compressing at `level`.
    ///
    /// # Errors
    /// An invalid level.
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(Compressor { ctx: zstd::bulk::Compressor::new(level)?, level, fast: None })
    }

    /// Compresses `raw` into `out` (cleared first) and returns the codec used. When zstd saves
    /// less than 1/32 of the size, `out` gets the raw bytes and the codec is [`Codec::Raw`]:
    /// reading raw bytes back is free, and incompressible media is common in contentstores.
    pub fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Codec {
        self.compress_at(Effort::Configured, raw, out)
    }

    /// [`Compressor::compress`] at the level `effort` names.
    pub fn compress_at(&mut self, effort: Effort, raw: &[u8], out: &mut Vec<u8>) -> Codec {
        self.compress_after(effort, raw, out, 0)
    }

    /// [`Compressor::compress_at`] into `out` after its first `at` bytes, which are kept (a
    /// blob's header goes there, so the stored bytes are never copied into a frame). `out` is
    /// first cut or zero-filled to `at` bytes.
    pub fn compress_after(
        &mut self,
        effort: Effort,
        raw: &[u8],
        out: &mut Vec<u8>,
        at: usize,
    ) -> Codec {
        out.resize(at, 0);
        // The bound leaves room for an AEAD tag after raw bytes too: no second allocation.
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        if looks_incompressible(raw) {
            out.extend_from_slice(raw);
            return Codec::Raw;
        }
        let worthwhile = raw.len() - raw.len() / 32;
        let ctx = match effort {
            Effort::Fast if self.level != FAST_LEVEL => {
                if self.fast.is_none() {
                    self.fast = zstd::bulk::Compressor::new(FAST_LEVEL).ok();
                }
                self.fast.as_mut().unwrap_or(&mut self.ctx)
            }
            _ => &mut self.ctx,
        };
        let mut dest = std::io::Cursor::new(&mut *out);
        dest.set_position(at as u64);
        match ctx.compress_to_buffer(raw, &mut dest) {
            Ok(n) if n < worthwhile => Codec::Zstd,
            _ => {
                out.truncate(at);
                out.extend_from_slice(raw);
                Codec::Raw
            }
        }
    }

    /// Compresses `raw` at both levels and leaves the smaller result in `out`: the fast level's
    /// when they are the same size, since it also decompresses faster. `spare` is scratch.
    /// Returns the codec and the level that won.
    ///
    /// Measured on the generated Alfresco set (docs/BENCHMARKS.md): the `pg_dump` text of
    /// UUID-keyed tables is 4% smaller and compressed twice as fast at level 1 as at level 3,
    /// while documents are 2% larger at level 1 for no gain in speed; a fixed level loses on one
    /// of them.
    pub fn probe(&mut self, raw: &[u8], out: &mut Vec<u8>, spare: &mut Vec<u8>) -> (Codec, Effort) {
        let configured = self.compress_at(Effort::Configured, raw, spare);
        let fast = self.compress_at(Effort::Fast, raw, out);
        if out.len() <= spare.len() {
            (fast, Effort::Fast)
        } else {
            std::mem::swap(out, spare);
            (configured, Effort::Configured)
        }
    }
}

/// Blobs at least this long are sampled before zstd is tried ([`looks_incompressible`]).
const SAMPLED_MIN: usize = 16 << 10;
/// The length of one sample.
const SAMPLE_LEN: usize = 2 << 10;
/// At most this many samples, spread evenly from the first byte to the last.
const SAMPLES: usize = 8;

/// Whether `raw` looks like bytes zstd cannot shrink by the 1/32 [`Compressor::compress`] asks
/// for: up to eight 2 KiB samples spread over it, each with its bytes, and the differences of
/// neighbouring bytes, spread nearly as evenly over the 256 values as random bytes are. That is
/// what deflate streams (zip-based office files, PDF content streams, PNG rows), JPEG scans and
/// encrypted data look like; text, markup, database pages and dumps, uncompressed images and
/// ramps of numbers all fail it in their first sample. Such blobs are stored raw without zstd's
/// attempt, which costs as much as compressing text on PDF and PNG streams (docs/BENCHMARKS.md).
///
/// The bound: each sample's Shannon entropy of single bytes is at least 7.7 bits (a sample of
/// 2 KiB of random bytes measures 7.91, short of 8 by the small sample), so coding bytes one by
/// one saves at most 3.75% of it, about what zstd must save for its frame to be kept. What it
/// cannot see is a repeat between samples (the same 8 KiB of media twice in one chunk) or
/// structure spread thinner than the samples; that costs size, never correctness. Blobs under
/// 16 KiB are left to zstd. The answer depends only on the bytes.
#[must_use]
pub fn looks_incompressible(raw: &[u8]) -> bool {
    if raw.len() < SAMPLED_MIN {
        return false;
    }
    let samples = (raw.len() / SAMPLE_LEN).min(SAMPLES);
    let span = raw.len() - SAMPLE_LEN;
    (0..samples).all(|i| {
        let at = span * i / (samples - 1);
        flat(&raw[at..at + SAMPLE_LEN])
    })
}

/// `c * log2(c)` for every count a sample's histogram can hold.
fn count_log_count() -> &'static [f32; SAMPLE_LEN + 1] {
    static TABLE: std::sync::OnceLock<Box<[f32; SAMPLE_LEN + 1]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0f32; SAMPLE_LEN + 1]);
        for (c, v) in t.iter_mut().enumerate().skip(1) {
            *v = c as f32 * (c as f32).log2();
        }
        t
    })
}

/// Whether the bytes of `sample` (of [`SAMPLE_LEN`]), and their differences, each have at
/// least 7.7 bits of entropy a byte ([`looks_incompressible`]).
fn flat(sample: &[u8]) -> bool {
    // Four tables (bytes and differences, at even and odd positions), so that neighbouring
    // bytes never wait on the same counter (1.35x the speed of one table each, measured).
    let mut h = [[0u16; 256]; 4];
    let mut prev = 0u8;
    for pair in sample.chunks_exact(2) {
        let (a, b) = (pair[0], pair[1]);
        h[0][usize::from(a)] += 1;
        h[1][usize::from(b)] += 1;
        h[2][usize::from(a.wrapping_sub(prev))] += 1;
        h[3][usize::from(b.wrapping_sub(a))] += 1;
        prev = b;
    }
    let [e0, e1, d0, d1] = &h;
    let mut bytes = [0u16; 256];
    let mut deltas = [0u16; 256];
    for i in 0..256 {
        bytes[i] = e0[i] + e1[i];
        deltas[i] = d0[i] + d1[i];
    }
    let table = count_log_count();
    // Entropy = log2(n) - sum(c log2 c) / n with n = 2048: at least 7.7 bits when the sum is
    // at most (11 - 7.7) * 2048.
    const _: () = assert!(SAMPLE_LEN == 1 << 11);
    const MAX_SUM: f32 = (11.0 - 7.7) * SAMPLE_LEN as f32;
    let sum = |h: &[u16; 256]| h.iter().map(|&c| table[usize::from(c)]).sum::<f32>();
    sum(&bytes) <= MAX_SUM && sum(&deltas) <= MAX_SUM
}

thread_local! {
    /// The context [`probe`] compresses with, made on first use (file workers probe the
    /// chunks they cut themselves, so the choice does not depend on thread timing).
    static PROBER: std::cell::RefCell<Option<Compressor>> = const { std::cell::RefCell::new(None) };
}

/// [`Compressor::probe`] with this thread's context at `level`: the codec, the stored bytes and
/// the level that won. `None` when no context can be made (the caller compresses as usual).
pub(crate) fn probe(level: i32, raw: &[u8]) -> Option<(Codec, Vec<u8>, Effort)> {
    PROBER.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|c| c.level != level) {
            *slot = Compressor::new(level).ok();
        }
        let c = slot.as_mut()?;
        let (mut out, mut spare) = (Vec::new(), Vec::new());
        let (codec, effort) = c.probe(raw, &mut out, &mut spare);
        Some((codec, out, effort))
    })
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
    fn compress_after_keeps_the_prefix_and_stores_what_compress_stores() {
        let mut next = xorshift(9);
        let noise: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
        let text = prose(70_000);
        let mut c = Compressor::new(3).unwrap();
        for (raw, codec) in [(&text, Codec::Zstd), (&noise, Codec::Raw)] {
            let mut alone = Vec::new();
            assert_eq!(c.compress(raw, &mut alone), codec);
            // A longer buffer is cut to the prefix, a shorter one zero-filled up to it.
            for start in [vec![7u8; 100], vec![7u8; 20]] {
                let mut out = start.clone();
                assert_eq!(c.compress_after(Effort::Configured, raw, &mut out, 48), codec);
                let keep = start.len().min(48);
                assert_eq!(&out[..keep], &start[..keep]);
                assert!(out[keep..48].iter().all(|&b| b == 0));
                assert_eq!(&out[48..], &alone[..], "{codec:?}");
            }
        }
    }

    #[test]
    fn compressed_looking_blobs_are_stored_raw_without_zstd_and_others_are_not() {
        let mut next = xorshift(5);
        let noise: Vec<u8> = (0..200_000).map(|_| next() as u8).collect();
        assert!(looks_incompressible(&noise));
        let mut c = Compressor::new(3).unwrap();
        let mut out = vec![1, 2, 3];
        assert_eq!(c.compress_after(Effort::Configured, &noise, &mut out, 2), Codec::Raw);
        assert_eq!((&out[..2], &out[2..]), (&[1u8, 2][..], &noise[..]));
        // Deflated text, as zip, PDF and PNG hold it.
        let deflated = zstd::bulk::compress(&prose(600_000), 19).unwrap();
        assert!(deflated.len() > SAMPLED_MIN);
        assert!(looks_incompressible(&deflated));
        // What compresses fails the check, wherever the compressible part lies: text, a ramp
        // of bytes (flat histogram, constant differences), noise with text where a sample
        // lies, and repeated short noise (flat bytes, but every difference repeats).
        let ramp: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut patched = noise.clone();
        patched[100_000..120_000].copy_from_slice(&prose(20_000));
        let short: Vec<u8> = noise[..300].iter().copied().cycle().take(100_000).collect();
        for (name, raw) in [("text", prose(100_000)), ("ramp", ramp), ("patched", patched)] {
            assert!(!looks_incompressible(&raw), "{name}");
            assert_eq!(c.compress(&raw, &mut out), Codec::Zstd, "{name}");
        }
        assert_eq!(c.compress(&short, &mut out), Codec::Zstd);
        // Small blobs are left to zstd.
        assert!(!looks_incompressible(&noise[..SAMPLED_MIN - 1]));
    }

    /// Deterministic xorshift bytes for the inputs below.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Words drawn from a vocabulary: level 3 compresses this better than level 1.
    fn prose(len: usize) -> Vec<u8> {
        let mut next = xorshift(1);
        let words: Vec<String> =
            (0..2000).map(|i| format!("w{i}{}", &"abcdefgh"[..(i % 7) + 1])).collect();
        let mut out = Vec::new();
        while out.len() < len {
            out.extend_from_slice(words[(next() % 2000) as usize].as_bytes());
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    /// `pg_dump` rows keyed by UUIDs: level 1 compresses this better than level 3.
    fn uuid_rows(len: usize) -> Vec<u8> {
        let mut next = xorshift(2);
        let mut out = Vec::new();
        let mut i = 0u64;
        while out.len() < len {
            let (a, b) = (next(), next());
            let row = format!(
                "{i}\t1\t6\t{a:016x}-{b:016x}\t1000\t{}\tadmin\t2026-03-27T17:32:47.000Z\n",
                a % 97
            );
            out.extend_from_slice(row.as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn stored_len(c: &mut Compressor, effort: Effort, raw: &[u8]) -> usize {
        let mut out = Vec::new();
        c.compress_at(effort, raw, &mut out);
        out.len()
    }

    #[test]
    fn probe_keeps_the_smaller_level_and_the_fast_one_on_a_tie() {
        let mut c = Compressor::new(3).unwrap();
        let random: Vec<u8> = {
            let mut next = xorshift(3);
            (0..131_072).map(|_| next() as u8).collect()
        };
        for (raw, winner) in [
            (prose(131_072), Effort::Configured),
            (uuid_rows(131_072), Effort::Fast),
            // Both store it raw: the same size, so the fast level.
            (random, Effort::Fast),
        ] {
            let sizes = (
                stored_len(&mut c, Effort::Configured, &raw),
                stored_len(&mut c, Effort::Fast, &raw),
            );
            let (mut out, mut spare) = (Vec::new(), Vec::new());
            let (codec, effort) = c.probe(&raw, &mut out, &mut spare);
            assert_eq!(effort, winner, "sizes (configured, fast) {sizes:?}");
            assert_eq!(out.len(), sizes.0.min(sizes.1));
            let mut back = Vec::new();
            decompress(codec, &out, raw.len() as u32, &mut back).unwrap();
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn level_probe_runs_on_large_inputs_every_so_many_chunks() {
        // Small files and a level that is already the fast one are never probed.
        for mut p in [LevelProbe::for_input(Some(PROBE_MIN - 1), 3), LevelProbe::for_input(None, 1)]
        {
            assert!((0..200).all(|_| p.next() == Some(Effort::Configured)));
        }
        // A stream is probed at its first new chunk and every PROBE_EVERY after; the chunks in
        // between get what the last probe chose.
        let mut p = LevelProbe::for_input(None, 3);
        let mut probed = Vec::new();
        for i in 0..(2 * PROBE_EVERY + 1) {
            match p.next() {
                None => {
                    probed.push(i);
                    p.chose(if i == 0 { Effort::Fast } else { Effort::Configured });
                }
                Some(e) => {
                    let want = if i < PROBE_EVERY { Effort::Fast } else { Effort::Configured };
                    assert_eq!(e, want, "chunk {i}");
                }
            }
        }
        assert_eq!(probed, vec![0, PROBE_EVERY, 2 * PROBE_EVERY]);
        assert!(LevelProbe::for_input(Some(PROBE_MIN), 3).next().is_none());
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
