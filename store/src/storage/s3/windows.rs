//! The ranges of packs fetched from the bucket (or being fetched), shared by every open pack of
//! one storage and bounded in bytes all together.
//!
//! A read is served from the windows that cover it, one after another (a blob may straddle
//! two); what no window covers is fetched from the first uncovered byte, at least
//! [`MIN_WINDOW`], four times the window before it when the pack is being read in order (a
//! window of the same pack ends at most [`MAX_WINDOW`] before the read), up to [`MAX_WINDOW`].
//! A read that reaches the second half of a window fetches the next one ahead, so a pack read
//! in order (a restore, `check --read-data`) downloads while the blobs before are verified and
//! written, and two readers going through one pack at different places (two batches of a
//! restore) each keep their windows. Scattered reads (trees missing from the cache) fetch
//! little and nothing ahead.
//!
//! The windows are kept while they fit in [`BUDGET`], least recently used dropped first; a
//! reader holds its own handle on a window it uses, so dropping one never fails a read.

use crate::id::Id;

/// The first fetch of a pack at a place, and every scattered one: 1 MiB (at 256 KiB a restore
/// of the Alfresco 0.25 set made 185-190 requests and took 1.39-1.66 s, at 1 MiB 122-131
/// requests and 1.24-1.53 s, the same peak RSS; a scattered read of one blob fetches up to
/// 1 MiB, the time of a small GET from object storage).
pub(super) const MIN_WINDOW: u64 = 1 << 20;
/// The largest fetch of a pack read in order.
pub(super) const MAX_WINDOW: u64 = 4 << 20;
/// The bytes all windows of one storage may hold: two readers going through packs in order,
/// each with the window it reads and the one fetched ahead, and room for a third (at 5
/// windows a restore made 147 ranged GETs instead of 123).
pub(super) const BUDGET: u64 = 6 * MAX_WINDOW;

/// One window: `len` bytes of `pack` from `start`, and the handle (`F`) that gives them.
struct Slot<F> {
    pack: Id,
    start: u64,
    len: u64,
    fetch: F,
    used: u64,
    /// Where the last read it served ended.
    read_to: u64,
    /// Whether it has been read in order (a read starting where one before ended or later, or
    /// one going on from the window before it): only such windows grow and fetch ahead.
    in_order: bool,
}

impl<F> Slot<F> {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn covers(&self, pack: Id, at: u64) -> bool {
        self.pack == pack && self.start <= at && at < self.end()
    }
}

/// What serves one read: the windows covering it from its start, in order (each with where it
/// starts), the range to fetch for the rest (none when covered), and a range to fetch ahead.
pub(super) struct Lookup<F> {
    pub(super) pieces: Vec<(u64, F)>,
    pub(super) miss: Option<Fetch>,
    pub(super) ahead: Option<Fetch>,
}

/// A range of a pack to fetch and keep as a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fetch {
    pub(super) start: u64,
    pub(super) end: u64,
    /// Where the read that asked for it ends (its start for one fetched ahead).
    read_to: u64,
    /// Whether it goes on from a window read in order.
    in_order: bool,
}

/// The windows of one storage.
pub(super) struct Windows<F> {
    slots: Vec<Slot<F>>,
    bytes: u64,
    tick: u64,
}

impl<F> Default for Windows<F> {
    fn default() -> Self {
        Windows { slots: Vec::new(), bytes: 0, tick: 0 }
    }
}

impl<F: Clone> Windows<F> {
    /// How to serve a read of `offset..end` of `pack` (`size` bytes long; `end <= size`). A
    /// range it returns to fetch must be given to [`Windows::insert`] (or the read fails).
    pub(super) fn lookup(&mut self, pack: Id, offset: u64, end: u64, size: u64) -> Lookup<F> {
        self.tick += 1;
        let mut pieces = Vec::new();
        let mut at = offset;
        let mut last = None;
        while at < end {
            let Some(i) = self.slots.iter().position(|s| s.covers(pack, at)) else { break };
            let slot = &mut self.slots[i];
            slot.in_order |= at != offset || at >= slot.read_to;
            slot.read_to = end.min(slot.end());
            slot.used = self.tick;
            pieces.push((slot.start, slot.fetch.clone()));
            last = Some(i);
            at = slot.end();
        }
        if at < end {
            let grown = self
                .slots
                .iter()
                .filter(|s| s.pack == pack && s.in_order && s.read_to <= at)
                .filter(|s| at <= s.end() + MAX_WINDOW)
                .map(|s| s.len.saturating_mul(4))
                .max()
                .unwrap_or(MIN_WINDOW)
                .clamp(MIN_WINDOW, MAX_WINDOW);
            let fetch_end = end.max(at.saturating_add(grown)).min(size);
            let miss = Fetch { start: at, end: fetch_end, read_to: end, in_order: at != offset };
            return Lookup { pieces, miss: Some(miss), ahead: None };
        }
        // Read in order past the middle of its last window: the next one is fetched now.
        let ahead = last.map(|i| &self.slots[i]).and_then(|s| {
            let next = s.end();
            let wanted = s.in_order && end > s.start + s.len / 2 && next < size;
            let until = next.saturating_add((s.len * 4).min(MAX_WINDOW)).min(size);
            (wanted && !self.slots.iter().any(|t| t.covers(pack, next))).then_some(Fetch {
                start: next,
                end: until,
                read_to: next,
                in_order: true,
            })
        });
        Lookup { pieces, miss: None, ahead }
    }

    /// Keeps the window `range` of `pack`, given by `fetch`, dropping the least recently used
    /// windows (never this one) while the windows hold more than [`BUDGET`].
    pub(super) fn insert(&mut self, pack: Id, range: Fetch, fetch: F) {
        self.tick += 1;
        let Fetch { start, end, read_to, in_order } = range;
        let len = end - start;
        while self.bytes + len > BUDGET && !self.slots.is_empty() {
            let oldest = (0..self.slots.len()).min_by_key(|&i| self.slots[i].used).unwrap_or(0);
            let dropped = self.slots.swap_remove(oldest);
            self.bytes -= dropped.len;
        }
        self.bytes += len;
        let read_to = read_to.clamp(start, end);
        self.slots.push(Slot { pack, start, len, fetch, used: self.tick, read_to, in_order });
    }

    /// Forgets the window of `pack` from `start` (its fetch failed: the next read asks again),
    /// or every window of `pack` (it was removed).
    pub(super) fn forget(&mut self, pack: Id, start: Option<u64>) {
        let bytes = &mut self.bytes;
        self.slots.retain(|s| {
            let keep = !(s.pack == pack && start.is_none_or(|start| s.start == start));
            if !keep {
                *bytes -= s.len;
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACK: u64 = 16 << 20;

    /// Serves reads as a pack would, with fetches as ranges (the handle is the range itself),
    /// counting fetches and checking every byte read comes from a window that holds it.
    #[derive(Default)]
    struct Reader {
        windows: Windows<(u64, u64)>,
        fetched: Vec<(Id, u64, u64)>,
    }

    impl Reader {
        fn read(&mut self, pack: Id, offset: u64, len: u64) {
            let end = (offset + len).min(PACK);
            let found = self.windows.lookup(pack, offset, end, PACK);
            let mut at = offset;
            for (start, (s, e)) in &found.pieces {
                assert_eq!(*start, *s);
                assert!(*s <= at && at < *e, "window {s}..{e} does not hold {at}");
                at = *e;
            }
            if let Some(f) = found.miss {
                let (s, e) = (f.start, f.end);
                assert_eq!(s, at.min(end), "the fetch starts at the first byte not held");
                assert!(e >= end && e <= PACK && e - s >= MIN_WINDOW.min(PACK - s));
                self.windows.insert(pack, f, (s, e));
                self.fetched.push((pack, s, e));
            } else {
                assert!(at >= end, "covered");
            }
            if let Some(f) = found.ahead {
                let (s, e) = (f.start, f.end);
                assert!(e - s <= MAX_WINDOW && e <= PACK);
                self.windows.insert(pack, f, (s, e));
                self.fetched.push((pack, s, e));
            }
            assert!(self.windows.bytes <= BUDGET.max(end - offset));
            assert_eq!(self.windows.bytes, self.windows.slots.iter().map(|s| s.len).sum::<u64>());
        }
    }

    #[test]
    fn a_pack_read_in_order_is_fetched_in_few_growing_windows_and_ahead_of_the_reads() {
        let mut r = Reader::default();
        let pack = Id::hash(b"pack");
        let mut at = 0;
        while at < PACK {
            r.read(pack, at, 100_000);
            at += 100_000;
        }
        // 256 KiB, 1 MiB, then 4 MiB windows: 16 MiB in 7 fetches, no byte twice.
        assert!(r.fetched.len() <= 7, "{:?}", r.fetched);
        let fetched: u64 = r.fetched.iter().map(|(_, s, e)| e - s).sum();
        assert_eq!(fetched, PACK, "{:?}", r.fetched);
    }

    #[test]
    fn two_readers_going_through_one_pack_at_different_places_keep_their_windows() {
        let mut r = Reader::default();
        let pack = Id::hash(b"pack");
        let (mut a, mut b) = (0, 8 << 20);
        while b < PACK {
            r.read(pack, a, 130_000);
            r.read(pack, b, 130_000);
            a += 130_000;
            b += 130_000;
        }
        let fetched: u64 = r.fetched.iter().map(|(_, s, e)| e - s).sum();
        assert!(r.fetched.len() <= 14, "{:?}", r.fetched);
        assert!(fetched <= PACK + 2 * MAX_WINDOW, "{fetched}");
    }

    #[test]
    fn scattered_reads_fetch_little_and_nothing_ahead_and_the_budget_holds() {
        let mut r = Reader::default();
        let mut x = 12_345u64;
        for i in 0..2_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let pack = Id::hash(&(i % 50).to_le_bytes());
            let offset = (x >> 20) % (PACK - 5_000);
            r.read(pack, offset, 4_000);
        }
        // A few reads land after another in one window and count as in order; nearly all
        // fetch the least.
        let fetched: u64 = r.fetched.iter().map(|(_, s, e)| e - s).sum();
        assert!(fetched <= 2_000 * MIN_WINDOW * 11 / 10, "{fetched}");
        // A whole pack read at once gets its window, the oldest others dropped for it.
        r.read(Id::hash(b"big"), 0, PACK);
        assert!(r.windows.slots.iter().any(|s| s.len == PACK));
    }

    #[test]
    fn a_forgotten_window_is_fetched_again() {
        let mut r = Reader::default();
        let pack = Id::hash(b"pack");
        r.read(pack, 0, 1000);
        r.windows.forget(pack, Some(1));
        assert_ne!(r.windows.bytes, 0, "no window starts there");
        r.windows.forget(pack, Some(0));
        assert_eq!(r.windows.bytes, 0);
        r.read(pack, 0, 1000);
        assert_eq!(r.fetched.len(), 2);
        r.read(Id::hash(b"other"), 0, 1000);
        r.windows.forget(pack, None);
        assert_eq!(r.windows.slots.len(), 1, "the other pack's window is kept");
    }
}
