//! Content-defined chunking: FastCDC with a Gear rolling hash and normalized chunking
//! (FORMAT.md §5, "Chunker").
//!
//! A cut point depends only on the bytes from the start of the chunk up to the cut, never on
//! how the input is fed: [`Chunker::cut`] is a pure function of the slice it is given, and it
//! answers "need more data" rather than guess when the slice ends before a decision. Callers
//! therefore get the same chunks from one big slice, from a read buffer of any size, or
//! byte by byte.
//!
//! The Gear table is derived from the repository's chunker seed with BLAKE3, so two
//! repositories with different seeds cut the same data at different places.

use serde::{Deserialize, Serialize};

/// Chunk size bounds and seed, fixed per repository at `init` (recorded in `config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk, except the last of an input (bytes).
    pub min: u32,
    /// Target average chunk size (bytes); a power of two.
    pub avg: u32,
    /// Largest chunk (bytes).
    pub max: u32,
    /// Seed of the Gear table.
    pub seed: u64,
}

/// Chunk size bounds chosen at `init`; the seed is always random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    /// Smallest chunk (bytes).
    pub min: u32,
    /// Target average (bytes); a power of two.
    pub avg: u32,
    /// Largest chunk (bytes).
    pub max: u32,
}

/// Smallest `min` accepted: 64 bytes (the Gear hash window).
pub const MIN_CHUNK_FLOOR: u32 = 64;
/// Largest `max` accepted: 64 MiB.
pub const MAX_CHUNK_CEILING: u32 = 64 << 20;

impl ChunkerParams {
    /// Defaults: 32 KiB / 128 KiB / 512 KiB. Measured on a 200 MiB incompressible forest stand
    /// with 50 insertions and deletions (docs/BENCHMARKS.md): the next set adds about 4% of the
    /// file, against about 8% with 64 KiB / 256 KiB / 1 MiB and 17.5% with 256 KiB / 1 MiB /
    /// 4 MiB, at the same throughput.
    #[must_use]
    pub fn default_with_seed(seed: u64) -> Self {
        ChunkerParams { min: 32 << 10, avg: 128 << 10, max: 512 << 10, seed }
    }

    /// Checks the bounds: `64 <= min < avg < max <= 64 MiB`, `avg` a power of two.
    ///
    /// # Errors
    /// A message naming the violated bound.
    pub fn validate(&self) -> Result<(), String> {
        if self.min < MIN_CHUNK_FLOOR {
            return Err(format!("minimum chunk size {} is below {MIN_CHUNK_FLOOR}", self.min));
        }
        if !(self.min < self.avg && self.avg < self.max) {
            return Err(format!(
                "chunk sizes must satisfy min < avg < max, got {}/{}/{}",
                self.min, self.avg, self.max
            ));
        }
        if self.max > MAX_CHUNK_CEILING {
            return Err(format!("maximum chunk size {} exceeds {MAX_CHUNK_CEILING}", self.max));
        }
        if !self.avg.is_power_of_two() {
            return Err(format!("average chunk size {} is not a power of two", self.avg));
        }
        Ok(())
    }
}

/// A FastCDC chunker for one set of parameters.
#[derive(Clone)]
pub struct Chunker {
    gear: [u64; 256],
    mask_small: u64,
    mask_large: u64,
    min: usize,
    avg: usize,
    max: usize,
}

/// Mask with `bits` one-bits at the top of a u64: the Gear hash's high bits depend on the most
/// recent 64 bytes, the low bits only on the last few.
fn top_mask(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else {
        u64::MAX << (64 - bits.min(64))
    }
}

/// Rolls the Gear hash over `data` from `hash`: `Ok(k)` when the hash after byte `k - 1` has
/// no bit of `mask` set (the cut falls after `k` bytes), else `Err` with the hash at the end.
///
/// Four bytes per step with the same result as one at a time: `h(i+4)` is
/// `(h(i) << 4) + (g0 << 3) + (g1 << 2) + (g2 << 1) + g3`, so only one shift and one add per
/// four bytes depend on the previous step, and the hashes in between are tested off that
/// chain, all four at once (docs/BENCHMARKS.md has the measurement).
#[inline(always)]
fn scan(gear: &[u64; 256], data: &[u8], mut hash: u64, mask: u64) -> Result<usize, u64> {
    let g = |b: u8| gear[usize::from(b)];
    let mut quads = data.chunks_exact(4);
    let mut at = 0usize;
    for q in &mut quads {
        let (g0, g1, g2, g3) = (g(q[0]), g(q[1]), g(q[2]), g(q[3]));
        let t1 = g0;
        let t2 = (g0 << 1).wrapping_add(g1);
        let t3 = (t2 << 1).wrapping_add(g2);
        let t4 = (t3 << 1).wrapping_add(g3);
        let h1 = (hash << 1).wrapping_add(t1);
        let h2 = (hash << 2).wrapping_add(t2);
        let h3 = (hash << 3).wrapping_add(t3);
        let h4 = (hash << 4).wrapping_add(t4);
        // `mask` is the top bits, so "some hash has none of them set" is "the least has none".
        if h1.min(h2).min(h3.min(h4)) & mask == 0 {
            let first = [h1, h2, h3, h4].iter().position(|h| h & mask == 0).unwrap_or(3);
            return Ok(at + first + 1);
        }
        hash = h4;
        at += 4;
    }
    for &b in quads.remainder() {
        hash = (hash << 1).wrapping_add(g(b));
        at += 1;
        if hash & mask == 0 {
            return Ok(at);
        }
    }
    Err(hash)
}

impl Chunker {
    /// A chunker for `params`, which must have passed [`ChunkerParams::validate`].
    #[must_use]
    pub fn new(params: &ChunkerParams) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key("store 2026 chunker gear table v1");
        hasher.update(&params.seed.to_le_bytes());
        let mut xof = hasher.finalize_xof();
        let mut gear = [0u64; 256];
        let mut word = [0u8; 8];
        for g in &mut gear {
            xof.fill(&mut word);
            *g = u64::from_le_bytes(word);
        }
        let bits = params.avg.trailing_zeros();
        Chunker {
            gear,
            // Normalized chunking, level 2: harder to cut before the average, easier after.
            mask_small: top_mask(bits + 2),
            mask_large: top_mask(bits.saturating_sub(2)),
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
        }
    }

    /// Largest chunk this chunker cuts.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Length of the chunk that starts at `data[0]`.
    ///
    /// `eof` says that `data` holds the rest of the input. Returns `None` when `data` ends
    /// before the cut is decided (fewer than `max` bytes and no cut found, and not `eof`); the
    /// caller then supplies more bytes. An empty input at `eof` has no chunk: `None`.
    #[must_use]
    pub fn cut(&self, data: &[u8], eof: bool) -> Option<usize> {
        let n = data.len();
        if n == 0 {
            return None;
        }
        if n <= self.min {
            return if eof { Some(n) } else { None };
        }
        let limit = n.min(self.max);
        let normal = self.avg.min(limit);
        let mut hash: u64 = 0;
        // Slices are bounded by `limit`, so the scans index without checks.
        let small = data.get(self.min..normal).unwrap_or_default();
        match scan(&self.gear, small, hash, self.mask_small) {
            Ok(at) => return Some(self.min + at),
            Err(h) => hash = h,
        }
        let large = data.get(normal..limit).unwrap_or_default();
        if let Ok(at) = scan(&self.gear, large, hash, self.mask_large) {
            return Some(normal + at);
        }
        if limit == self.max || eof {
            Some(limit)
        } else {
            None
        }
    }

    /// Cuts every chunk that `data` decides, calling `f` for each in order, and returns the
    /// number of bytes consumed; the rest must be presented again with more bytes behind it.
    ///
    /// # Errors
    /// The first error returned by `f`.
    pub fn cut_all<E>(
        &self,
        data: &[u8],
        eof: bool,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, E> {
        let mut pos = 0;
        while let Some(rest) = data.get(pos..) {
            match self.cut(rest, eof) {
                Some(len) => {
                    f(rest.get(..len).unwrap_or_default())?;
                    pos += len;
                }
                None => break,
            }
        }
        Ok(pos)
    }

    /// Chunks everything `reader` yields, calling `f` for each chunk; returns the bytes read.
    ///
    /// `buf` is reused between calls to avoid allocation; it grows to about `2 * max`.
    ///
    /// # Errors
    /// Read errors, and the first error returned by `f`.
    pub fn chunk_reader<E: From<std::io::Error>, R: std::io::Read + ?Sized>(
        &self,
        reader: &mut R,
        buf: &mut Vec<u8>,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let cap = (2 * self.max).max(1 << 20);
        // Grown once and reused: zeroing 1 MiB for every small file cost 3% of a snapshot.
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            while !eof && filled < cap {
                let n = match reader.read(buf.get_mut(filled..).unwrap_or_default()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    eof = true;
                } else {
                    filled += n;
                    total += n as u64;
                }
            }
            let used = self.cut_all(buf.get(..filled).unwrap_or_default(), eof, &mut f)?;
            buf.copy_within(used..filled, 0);
            filled -= used;
            if eof && filled == 0 {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small_params() -> ChunkerParams {
        ChunkerParams { min: 256, avg: 1024, max: 4096, seed: 7 }
    }

    use crate::testing::noise as random_bytes;

    fn chunks_of(chunker: &Chunker, data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let used = chunker
            .cut_all(data, true, |c| {
                out.push(c.len());
                Ok::<_, ()>(())
            })
            .unwrap();
        assert_eq!(used, data.len());
        out
    }

    /// Feeds the input through a reader that returns at most `step` bytes per read.
    fn chunks_fed_by(chunker: &Chunker, data: &[u8], step: usize) -> Vec<usize> {
        struct Dribble<'a>(&'a [u8], usize);
        impl std::io::Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        let mut buf = Vec::new();
        chunker
            .chunk_reader::<std::io::Error, _>(&mut Dribble(data, step), &mut buf, |c| {
                out.push(c.len());
                Ok(())
            })
            .unwrap();
        out
    }

    /// The Gear roll one byte at a time, as FORMAT.md §5 defines it.
    fn scan_bytewise(
        gear: &[u64; 256],
        data: &[u8],
        mut hash: u64,
        mask: u64,
    ) -> Result<usize, u64> {
        for (i, &b) in data.iter().enumerate() {
            hash = (hash << 1).wrapping_add(gear[usize::from(b)]);
            if hash & mask == 0 {
                return Ok(i + 1);
            }
        }
        Err(hash)
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input_within_bounds(seed in any::<u64>(), len in 0usize..40_000) {
            let p = small_params();
            let c = Chunker::new(&p);
            let data = random_bytes(seed, len);
            let sizes = chunks_of(&c, &data);
            prop_assert_eq!(sizes.iter().sum::<usize>(), len);
            for (i, s) in sizes.iter().enumerate() {
                prop_assert!(*s <= p.max as usize);
                if i + 1 < sizes.len() {
                    prop_assert!(*s >= p.min as usize, "chunk {} of {} is {} bytes", i, sizes.len(), s);
                }
            }
        }

        #[test]
        fn four_bytes_per_step_cut_as_one(seed in any::<u64>(), len in 0usize..4_000, start in any::<u64>(), bits in 1u32..12) {
            let chunker = Chunker::new(&small_params());
            let data = random_bytes(seed, len);
            let mask = top_mask(bits);
            // Every alignment of the bytes against the four-byte steps gives the same answer.
            for skip in 0..4.min(len) {
                let d = &data[skip..];
                prop_assert_eq!(scan(&chunker.gear, d, start, mask), scan_bytewise(&chunker.gear, d, start, mask));
            }
        }

        #[test]
        fn cut_points_do_not_depend_on_feeding(seed in any::<u64>(), len in 0usize..30_000, step in 1usize..5_000) {
            let c = Chunker::new(&small_params());
            let data = random_bytes(seed, len);
            prop_assert_eq!(chunks_of(&c, &data), chunks_fed_by(&c, &data, step));
        }
    }

    #[test]
    fn small_input_is_one_chunk() {
        let c = Chunker::new(&small_params());
        assert_eq!(chunks_of(&c, &[5u8; 100]), vec![100]);
        assert_eq!(chunks_of(&c, &[]), Vec::<usize>::new());
    }

    #[test]
    fn insertion_near_start_changes_only_nearby_chunks() {
        let c = Chunker::new(&small_params());
        let data = random_bytes(1, 200_000);
        let mut edited = data.clone();
        edited.splice(500..500, b"inserted bytes".iter().copied());
        let ends = |sizes: Vec<usize>, shift: usize| -> std::collections::BTreeSet<usize> {
            sizes
                .iter()
                .scan(0, |acc, s| {
                    *acc += s;
                    Some(*acc - shift)
                })
                .collect()
        };
        let before = ends(chunks_of(&c, &data), 0);
        let after = ends(chunks_of(&c, &edited), 14);
        let common = before.intersection(&after).count();
        // All but the first few cut points survive the insertion.
        assert!(common + 3 >= before.len(), "{common} of {} cut points kept", before.len());
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = random_bytes(3, 100_000);
        let a = chunks_of(&Chunker::new(&small_params()), &data);
        let b = chunks_of(&Chunker::new(&ChunkerParams { seed: 8, ..small_params() }), &data);
        assert_ne!(a, b);
    }

    #[test]
    fn average_is_near_target() {
        let p = ChunkerParams::default_with_seed(0);
        let c = Chunker::new(&p);
        let data = random_bytes(4, 64 << 20);
        let sizes = chunks_of(&c, &data);
        let avg = data.len() / sizes.len();
        let target = p.avg as usize;
        assert!((target * 7 / 10..target * 14 / 10).contains(&avg), "average chunk {avg}");
    }

    /// Golden cut points: changing them silently would break dedup against every existing
    /// repository (FORMAT.md §5).
    #[test]
    fn golden_cut_points() {
        let c = Chunker::new(&small_params());
        let data = random_bytes(42, 20_000);
        let sizes = chunks_of(&c, &data);
        assert_eq!(sizes, GOLDEN_SIZES.to_vec(), "cut points changed: {sizes:?}");
    }

    const GOLDEN_SIZES: [usize; 20] = [
        1092, 1078, 462, 1188, 1217, 1044, 536, 544, 1118, 1167, 1129, 1138, 1467, 1126, 1409, 454,
        1181, 1288, 1214, 148,
    ];

    #[test]
    fn params_validation_names_the_bound() {
        assert!(small_params().validate().is_ok());
        assert!(ChunkerParams { avg: 1000, ..small_params() }
            .validate()
            .unwrap_err()
            .contains("power of two"));
        assert!(ChunkerParams { min: 10, ..small_params() }.validate().is_err());
        assert!(ChunkerParams { max: 512, ..small_params() }.validate().is_err());
    }
}
