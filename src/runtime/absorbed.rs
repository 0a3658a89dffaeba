//! Which events a key's state has absorbed: the exactly-once bookkeeping,
//! stored with the state and written in the same atomic write.
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
    pub(crate) fn insert(&mut self, id: EventId) -> bool {
        if self.contains(id) {
            return false;
        }
        self.insert_range(id.source, id.partition, id.offset, id.offset + 1);
        true
    }

    /// Records every offset below `end` of a partition as absorbed.
    pub(crate) fn absorb_prefix(&mut self, source: u32, partition: u32, end: u64) {
        if end > 0 {
            self.insert_range(source, partition, 0, end);
        }
    }

    /// The end of the absorbed prefix `[0, n)` of a partition (0 if none).
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

#[cfg(test)]
mod tests {
    use super::*;

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
            if x % 17 == 0 {
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
