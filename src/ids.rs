//! Which events a state has absorbed: the exactly-once bookkeeping, written
//! in the same atomic write as the state.
//!
//! [`ForwardedIds`] is what the runtime keeps now: per model and upstream
//! partition, a bitmap of the forwarded ids applied, in chunks. [`Absorbed`]
//! is the per-key form records written before kept (and the MongoDB
//! backend's guard still keeps): it is read, and checked for forwarded
//! copies, but no longer grown. The rest of this paragraph describes it.
//!
//! Per `(source, partition)` a sorted list of disjoint half-open offset
//! ranges. In the common case it is one range per partition, whatever the
//! number of events: a partition is consumed in offset order by one owner at
//! a time, so after a batch `[a, b)` of partition `p` every offset below `b`
//! has been processed for every key, and a key touched by the batch absorbs
//! the whole prefix `[0, b)`. Events re-appended with their original id
//! (replays from an export, forwarded events) arrive out of order and are
//! recorded exactly, range by range; adjacent ranges merge.

use serde::{Deserialize, Serialize};

use crate::event::EventId;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Absorbed {
    /// Sorted by `(source, partition, start)`; per `(source, partition)`
    /// disjoint and non-adjacent. One flat list: one allocation per record.
    ranges: Vec<Range>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Range {
    source: u32,
    partition: u32,
    start: u64,
    end: u64,
}

impl Absorbed {
    /// The index range of the ranges of one `(source, partition)`.
    fn span(&self, source: u32, partition: u32) -> std::ops::Range<usize> {
        let lo = self
            .ranges
            .partition_point(|r| (r.source, r.partition) < (source, partition));
        let hi = lo
            + self.ranges[lo..].partition_point(|r| (r.source, r.partition) == (source, partition));
        lo..hi
    }

    /// Whether the event's effect is already in the state.
    pub(crate) fn contains(&self, id: EventId) -> bool {
        let part = &self.ranges[self.span(id.source, id.partition)];
        let i = part.partition_point(|r| r.end <= id.offset);
        part.get(i).is_some_and(|r| r.start <= id.offset)
    }

    /// Records one event; false if it was already absorbed.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, id: EventId) -> bool {
        if self.contains(id) {
            return false;
        }
        self.insert_range(id.source, id.partition, id.offset, id.offset + 1);
        true
    }

    /// Records every offset below `end` of a partition as absorbed.
    #[cfg(test)]
    pub(crate) fn absorb_prefix(&mut self, source: u32, partition: u32, end: u64) {
        if end > 0 {
            self.insert_range(source, partition, 0, end);
        }
    }

    /// The end of the absorbed prefix `[0, n)` of a partition (0 if none).
    #[cfg(test)]
    pub(crate) fn prefix(&self, source: u32, partition: u32) -> u64 {
        let span = self.span(source, partition);
        self.ranges[span]
            .first()
            .map_or(0, |r| if r.start == 0 { r.end } else { 0 })
    }

    /// How many ranges are kept, over all partitions: the size of the
    /// bookkeeping.
    #[cfg(test)]
    pub(crate) fn ranges(&self) -> usize {
        self.ranges.len()
    }

    /// Inserts `[start, end)`, merging overlapping and adjacent ranges.
    #[cfg(test)]
    fn insert_range(&mut self, source: u32, partition: u32, start: u64, end: u64) {
        let span = self.span(source, partition);
        let part = &self.ranges[span.clone()];
        let first = span.start + part.partition_point(|r| r.end < start);
        let last = span.start + part.partition_point(|r| r.start <= end);
        let new = if first == last {
            Range {
                source,
                partition,
                start,
                end,
            }
        } else {
            Range {
                source,
                partition,
                start: start.min(self.ranges[first].start),
                end: end.max(self.ranges[last - 1].end),
            }
        };
        self.ranges.splice(first..last, [new]);
    }
}

/// Upstream offsets per chunk of the forwarded-id bitmap.
pub(crate) const CHUNK_OFFSETS: u64 = 4096;

/// Chunks kept per upstream partition: 4M offsets, at most 512 KiB.
pub(crate) const MAX_CHUNKS: u64 = 1024;

/// The forwarded ids a model has applied, checked and recorded within one
/// write transaction of the embedded store: per upstream `(source,
/// partition)`, one bit per offset, in chunks of [`CHUNK_OFFSETS`] (a chunk
/// whose every bit is set is stored as nothing but its key). Kept once per
/// model, not per key: the embedded store writes every key of a batch in
/// one transaction, so one record of an event id serves every key it
/// touched, and no key's record grows with forwarded events.
///
/// Any order of arrival is exact while at most [`MAX_CHUNKS`] chunks are
/// kept: ids arriving from several of this log's partitions, shuffled,
/// repeated, extreme. Beyond that the lowest chunks are forgotten, so that
/// nothing grows without bound; an id below the lowest chunk kept is
/// reported ([`Seen::BelowHorizon`]), to go to the dead letters: never
/// applied twice, never dropped silently.
#[derive(Default)]
pub(crate) struct ForwardedIds {
    /// Per `(source, partition)`: the chunk below which ids are forgotten,
    /// and how many chunks are kept.
    spans: std::collections::HashMap<(u32, u32), (u64, u64), foldhash::fast::RandomState>,
    /// Chunks read in this transaction, and whether they changed.
    chunks: std::collections::HashMap<(u32, u32, u64), (Chunk, bool), foldhash::fast::RandomState>,
}

/// One chunk of the bitmap.
#[derive(Clone)]
pub(crate) enum Chunk {
    Bits(Box<[u8; (CHUNK_OFFSETS / 8) as usize]>),
    Full,
}

impl Chunk {
    fn empty() -> Self {
        Chunk::Bits(Box::new([0; (CHUNK_OFFSETS / 8) as usize]))
    }

    /// A stored chunk: its bytes (none: full).
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.is_empty() {
            return Some(Chunk::Full);
        }
        let bits: [u8; (CHUNK_OFFSETS / 8) as usize] = bytes.try_into().ok()?;
        Some(Chunk::Bits(Box::new(bits)))
    }

    pub(crate) fn encode(&self) -> &[u8] {
        match self {
            Chunk::Bits(b) => &b[..],
            Chunk::Full => &[],
        }
    }

    /// Sets the bit; false if it was set.
    fn set(&mut self, at: u64) -> bool {
        let Chunk::Bits(bits) = self else {
            return false;
        };
        let (byte, bit) = ((at / 8) as usize, 1_u8 << (at % 8));
        if bits[byte] & bit != 0 {
            return false;
        }
        bits[byte] |= bit;
        if bits.iter().all(|b| *b == 0xFF) {
            *self = Chunk::Full;
        }
        true
    }
}

/// Where [`ForwardedIds`] keeps its chunks: the model's table in the write
/// transaction.
pub(crate) trait ChunkStore {
    /// The span `(horizon chunk, chunks kept)` of an upstream partition.
    fn span(&self, source: u32, partition: u32) -> crate::Result<Option<(u64, u64)>>;
    fn put_span(&mut self, source: u32, partition: u32, span: (u64, u64)) -> crate::Result<()>;
    fn chunk(&self, source: u32, partition: u32, chunk: u64) -> crate::Result<Option<Chunk>>;
    fn put_chunk(
        &mut self,
        source: u32,
        partition: u32,
        chunk: u64,
        c: &Chunk,
    ) -> crate::Result<()>;
    /// Deletes the `n` lowest chunks; returns the chunk after the last one
    /// deleted (the new horizon).
    fn drop_lowest(&mut self, source: u32, partition: u32, n: u64) -> crate::Result<u64>;
}

impl ForwardedIds {
    /// Checks and records one forwarded id.
    pub(crate) fn insert(&mut self, store: &impl ChunkStore, id: EventId) -> crate::Result<Seen> {
        let chunk = id.offset / CHUNK_OFFSETS;
        let span = match self.spans.get_mut(&(id.source, id.partition)) {
            Some(s) => s,
            None => {
                let s = store.span(id.source, id.partition)?.unwrap_or((0, 0));
                self.spans.entry((id.source, id.partition)).or_insert(s)
            }
        };
        if chunk < span.0 {
            return Ok(Seen::BelowHorizon(span.0 * CHUNK_OFFSETS));
        }
        let entry = match self.chunks.entry((id.source, id.partition, chunk)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let c = match store.chunk(id.source, id.partition, chunk)? {
                    Some(c) => c,
                    None => {
                        span.1 += 1;
                        Chunk::empty()
                    }
                };
                e.insert((c, false))
            }
        };
        if entry.0.set(id.offset % CHUNK_OFFSETS) {
            entry.1 = true;
            Ok(Seen::New)
        } else {
            Ok(Seen::Duplicate)
        }
    }

    /// Writes what changed, forgetting the lowest chunks beyond
    /// [`MAX_CHUNKS`].
    pub(crate) fn save(self, store: &mut impl ChunkStore) -> crate::Result<()> {
        for (&(s, p, chunk), (c, dirty)) in &self.chunks {
            if *dirty {
                store.put_chunk(s, p, chunk, c)?;
            }
        }
        for ((source, partition), (mut horizon, mut kept)) in self.spans {
            if kept > MAX_CHUNKS {
                horizon = store.drop_lowest(source, partition, kept - MAX_CHUNKS)?;
                kept = MAX_CHUNKS;
            }
            store.put_span(source, partition, (horizon, kept))?;
        }
        Ok(())
    }
}

/// A bounded set of 64-bit ids that arrive roughly in order: the change
/// versions of one key that a cluster hook has covered (a key's versions
/// come nearly in order: only changes written by two workers at once can
/// swap).
///
/// Exact above a horizon: sorted, disjoint, non-adjacent inclusive ranges.
/// Upstream delivery that is roughly in order keeps them few (gaps close as
/// late ids arrive). So that nothing grows without bound, when more than
/// [`IdSet::MAX_RANGES`] are kept the lowest half are folded into the
/// horizon: below it the set can no longer tell an applied id from one that
/// never came, and such an id goes to the dead letters (never applied twice,
/// never silently dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdSet {
    /// Ids at or below it (when set) are unknown.
    horizon: Option<u64>,
    /// Inclusive `(first, last)` ranges above the horizon.
    ranges: Vec<(u64, u64)>,
}

/// What [`IdSet::insert_span`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Covers {
    /// None of the ids were in the set.
    New,
    /// All of them were.
    Duplicate,
    /// Some were, some were not (all are now).
    Partial,
    /// It starts at or below the horizon: cannot tell.
    BelowHorizon(u64),
}

/// What [`IdSet::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not applied before: recorded now.
    New,
    /// Applied before.
    Duplicate,
    /// At or below the horizon: cannot tell.
    BelowHorizon(u64),
}

impl IdSet {
    /// The most ranges kept before the lowest half fold into the horizon.
    pub(crate) const MAX_RANGES: usize = 1024;

    /// Records `offset`; says whether it was new.
    #[cfg(test)]
    pub(crate) fn insert(&mut self, offset: u64) -> Seen {
        match self.insert_span(offset, offset) {
            Covers::New => Seen::New,
            Covers::Duplicate => Seen::Duplicate,
            Covers::BelowHorizon(h) => Seen::BelowHorizon(h),
            Covers::Partial => unreachable!("one id is in the set or not"),
        }
    }

    /// Records the ids `first..=last`; says whether none, all or some of
    /// them were in the set before.
    pub(crate) fn insert_span(&mut self, first: u64, last: u64) -> Covers {
        debug_assert!(first <= last);
        if let Some(h) = self.horizon
            && first <= h
        {
            return Covers::BelowHorizon(h);
        }
        // The ranges that overlap or touch `first..=last`: `i..j`.
        let i = self
            .ranges
            .partition_point(|&(_, l)| l.checked_add(1).is_some_and(|n| n < first));
        let j = self
            .ranges
            .partition_point(|&(f, _)| last.checked_add(1).is_none_or(|n| f <= n));
        let overlap: u64 = self.ranges[i..j]
            .iter()
            .map(|&(f, l)| {
                let (a, b) = (f.max(first), l.min(last));
                if a <= b { b - a + 1 } else { 0 }
            })
            .sum();
        let seen = if overlap == 0 {
            Covers::New
        } else if overlap == last - first + 1 {
            return Covers::Duplicate;
        } else {
            Covers::Partial
        };
        let merged = match (
            self.ranges.get(i),
            j.checked_sub(1).and_then(|k| self.ranges.get(k)),
        ) {
            (Some(&(f, _)), Some(&(_, l))) if i < j => (f.min(first), l.max(last)),
            _ => (first, last),
        };
        self.ranges.splice(i..j, [merged]);
        if self.ranges.len() > Self::MAX_RANGES {
            let fold = self.ranges.len() / 2;
            self.horizon = Some(self.ranges[fold - 1].1);
            self.ranges.drain(..fold);
        }
        seen
    }

    /// The ranges kept: the size of the bookkeeping.
    #[cfg(test)]
    pub(crate) fn ranges(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Chunks(std::collections::BTreeMap<(u32, u32, u64), Vec<u8>>);
    impl ChunkStore for Chunks {
        fn span(&self, s: u32, p: u32) -> crate::Result<Option<(u64, u64)>> {
            Ok(self.0.get(&(s, p, u64::MAX)).map(|v| {
                (
                    u64::from_be_bytes(v[..8].try_into().unwrap()),
                    u64::from_be_bytes(v[8..].try_into().unwrap()),
                )
            }))
        }
        fn put_span(&mut self, s: u32, p: u32, (lo, hi): (u64, u64)) -> crate::Result<()> {
            let mut v = lo.to_be_bytes().to_vec();
            v.extend(hi.to_be_bytes());
            self.0.insert((s, p, u64::MAX), v);
            Ok(())
        }
        fn chunk(&self, s: u32, p: u32, c: u64) -> crate::Result<Option<Chunk>> {
            Ok(self.0.get(&(s, p, c)).map(|v| Chunk::decode(v).unwrap()))
        }
        fn put_chunk(&mut self, s: u32, p: u32, c: u64, chunk: &Chunk) -> crate::Result<()> {
            self.0.insert((s, p, c), chunk.encode().to_vec());
            Ok(())
        }
        fn drop_lowest(&mut self, s: u32, p: u32, n: u64) -> crate::Result<u64> {
            let lowest: Vec<(u32, u32, u64)> = self
                .0
                .keys()
                .filter(|k| k.0 == s && k.1 == p && k.2 != u64::MAX)
                .take(n as usize)
                .copied()
                .collect();
            for k in &lowest {
                self.0.remove(k);
            }
            Ok(lowest.last().map_or(0, |k| k.2 + 1))
        }
    }

    /// Spans of ids against a set of ids: the classification is exact and
    /// the ranges stay sorted, disjoint and non-adjacent, at the extremes too.
    #[test]
    fn spans_match_a_set_of_ids() {
        let mut x = 7_u64;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for base in [0, u64::MAX - 300] {
            let mut set = IdSet::default();
            let mut model = std::collections::BTreeSet::new();
            for _ in 0..3_000 {
                let first = base + next(280);
                let last = first + next(12);
                let before = (first..=last).filter(|i| model.contains(i)).count() as u64;
                let expected = match before {
                    0 => Covers::New,
                    b if b == last - first + 1 => Covers::Duplicate,
                    _ => Covers::Partial,
                };
                assert_eq!(set.insert_span(first, last), expected, "{first}..={last}");
                model.extend(first..=last);
                for w in set.ranges.windows(2) {
                    assert!(w[0].1.checked_add(1).is_some_and(|n| n < w[1].0), "{w:?}");
                }
                let held: u64 = set.ranges.iter().map(|(f, l)| l - f + 1).sum();
                assert_eq!(held, model.len() as u64);
            }
        }
        let mut set = IdSet::default();
        assert_eq!(set.insert_span(u64::MAX, u64::MAX), Covers::New);
        assert_eq!(set.insert_span(0, 0), Covers::New);
        assert_eq!(set.insert_span(1, u64::MAX - 1), Covers::New);
        assert_eq!(set.ranges, vec![(0, u64::MAX)]);
        assert_eq!(set.insert_span(5, 9), Covers::Duplicate);
    }

    /// Checks ids in transactions of `per_txn`, as the store does.
    fn check_all(store: &mut Chunks, ids: &[EventId], per_txn: usize) -> Vec<Seen> {
        let mut out = Vec::new();
        for txn in ids.chunks(per_txn) {
            let mut f = ForwardedIds::default();
            for id in txn {
                out.push(f.insert(store, *id).unwrap());
            }
            f.save(store).unwrap();
        }
        out
    }

    #[test]
    fn forwarded_ids_match_a_set_in_any_order_and_stay_bounded() {
        let mut x = 99_u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        // Shuffled, repeated, over three upstream partitions, extremes too.
        let mut ids: Vec<EventId> = (0..60_000)
            .map(|i| EventId {
                source: 7,
                partition: (i % 3) as u32,
                offset: [i / 3, u64::MAX - i / 3][usize::from(i % 7 == 0)],
            })
            .collect();
        let copies: Vec<EventId> = ids.iter().step_by(5).copied().collect();
        ids.extend(copies);
        for i in (1..ids.len()).rev() {
            ids.swap(i, next() as usize % (i + 1));
        }
        let mut store = Chunks::default();
        let mut model = std::collections::BTreeSet::new();
        for (id, seen) in ids.iter().zip(check_all(&mut store, &ids, 777)) {
            let new = model.insert(*id);
            // The extremes are far beyond the horizon of the low ids: those
            // arriving after an extreme may be reported, never applied twice.
            match seen {
                Seen::New => assert!(new, "{id:?} applied twice"),
                Seen::Duplicate => assert!(!new, "{id:?} dropped"),
                Seen::BelowHorizon(_) => {}
            }
        }
        // Without extremes: exact, whatever the order.
        let mut ids: Vec<EventId> = (0..200_000_u64)
            .map(|i| EventId {
                source: 1,
                partition: (i % 2) as u32,
                offset: i / 2,
            })
            .collect();
        let copies: Vec<EventId> = ids.iter().step_by(3).copied().collect();
        ids.extend(copies);
        for i in (1..ids.len()).rev() {
            ids.swap(i, next() as usize % (i + 1));
        }
        let mut store = Chunks::default();
        let mut model = std::collections::BTreeSet::new();
        for (id, seen) in ids.iter().zip(check_all(&mut store, &ids, 1000)) {
            assert_eq!(seen == Seen::New, model.insert(*id), "{id:?}");
            assert_ne!(seen, Seen::BelowHorizon(0));
        }
        // Bounded: ids spread over more chunks than are kept forget the
        // lowest ones.
        let far: Vec<EventId> = (0..2 * MAX_CHUNKS)
            .map(|i| EventId {
                source: 1,
                partition: 0,
                offset: 100_000_000 + i * CHUNK_OFFSETS,
            })
            .collect();
        check_all(&mut store, &far, 100);
        assert!(store.0.len() <= 2 * (MAX_CHUNKS as usize + 1));
        let old = EventId {
            source: 1,
            partition: 0,
            offset: 5,
        };
        assert!(matches!(
            check_all(&mut store, &[old], 1)[0],
            Seen::BelowHorizon(_)
        ));
    }

    #[test]
    fn forwarded_ids_in_any_order_stay_exact_and_bounded() {
        let mut f = IdSet::default();
        assert_eq!(f.insert(u64::MAX), Seen::New);
        assert_eq!(f.insert(u64::MAX), Seen::Duplicate);
        assert_eq!(f.insert(0), Seen::New);
        assert_eq!(f.insert(u64::MAX - 1), Seen::New);
        assert_eq!(f.ranges(), 2);
        // A shuffled window closes its gaps: one range per gap-free prefix.
        let mut f = IdSet::default();
        let mut x = 7_u64;
        let mut ids: Vec<u64> = (0..100_000).collect();
        for w in ids.chunks_mut(512) {
            for i in (1..w.len()).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                w.swap(i, (x >> 33) as usize % (i + 1));
            }
        }
        for &id in &ids {
            assert_eq!(f.insert(id), Seen::New);
            assert!(f.ranges() <= 512);
        }
        assert_eq!(f.ranges(), 1);
        for id in (0..100_000).step_by(997) {
            assert_eq!(f.insert(id), Seen::Duplicate);
        }
        // Ids that never close their gaps: bounded by the horizon, and an
        // id below it is reported, not applied and not dropped silently.
        let mut f = IdSet::default();
        for id in (0..10_000).map(|i| i * 2) {
            assert_eq!(f.insert(id), Seen::New);
            assert!(f.ranges() <= IdSet::MAX_RANGES);
        }
        assert!(matches!(f.insert(1), Seen::BelowHorizon(_)));
        assert_eq!(f.insert(19_998), Seen::Duplicate);
        assert_eq!(f.insert(19_997), Seen::New);
    }

    fn id(offset: u64) -> EventId {
        EventId {
            source: 7,
            partition: 1,
            offset,
        }
    }

    #[test]
    fn in_order_batches_keep_one_range() {
        let mut a = Absorbed::default();
        for end in [100, 250, 900, 10_000] {
            a.absorb_prefix(7, 1, end);
        }
        assert_eq!(a.ranges(), 1);
        assert_eq!(a.prefix(7, 1), 10_000);
        assert!(a.contains(id(0)) && a.contains(id(9_999)) && !a.contains(id(10_000)));
    }

    #[test]
    fn out_of_order_ids_merge_when_adjacent() {
        let mut a = Absorbed::default();
        assert!(a.insert(id(5)));
        assert!(a.insert(id(3)));
        assert!(!a.insert(id(5)));
        assert_eq!(a.ranges(), 2);
        assert!(a.insert(id(4)));
        assert_eq!(a.ranges(), 1);
        a.absorb_prefix(7, 1, 3);
        assert_eq!(a.prefix(7, 1), 6);
        assert!(!a.contains(EventId { source: 8, ..id(4) }));
    }

    #[test]
    fn matches_a_set_model() {
        let mut a = Absorbed::default();
        let mut model = std::collections::BTreeSet::new();
        let mut x = 12345_u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let offset = (x >> 33) % 300;
            let (source, partition) = [(7, 1), (7, 2), (3, 1)][((x >> 20) % 3) as usize];
            let id = EventId {
                source,
                partition,
                offset,
            };
            if x.is_multiple_of(17) {
                a.absorb_prefix(source, partition, offset);
                model.extend((0..offset).map(|o| (source, partition, o)));
            } else {
                assert_eq!(
                    a.insert(id),
                    model.insert((source, partition, offset)),
                    "{id:?}"
                );
            }
        }
        for (source, partition) in [(7, 1), (7, 2), (3, 1), (9, 9)] {
            for offset in 0..301 {
                let id = EventId {
                    source,
                    partition,
                    offset,
                };
                assert_eq!(
                    a.contains(id),
                    model.contains(&(source, partition, offset)),
                    "{id:?}"
                );
            }
        }
    }
}
