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
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Part {
    source: u32,
    partition: u32,
    /// Sorted, disjoint, non-adjacent half-open ranges.
    ranges: Vec<(u64, u64)>,
}

impl Absorbed {
    fn part(&self, source: u32, partition: u32) -> Option<&Part> {
        self.parts
            .binary_search_by_key(&(source, partition), |p| (p.source, p.partition))
            .ok()
            .map(|i| &self.parts[i])
    }

    fn part_mut(&mut self, source: u32, partition: u32) -> &mut Part {
        match self
            .parts
            .binary_search_by_key(&(source, partition), |p| (p.source, p.partition))
        {
            Ok(i) => &mut self.parts[i],
            Err(i) => {
                self.parts.insert(
                    i,
                    Part {
                        source,
                        partition,
                        ranges: Vec::new(),
                    },
                );
                &mut self.parts[i]
            }
        }
    }

    /// Whether the event's effect is already in the state.
    pub(crate) fn contains(&self, id: EventId) -> bool {
        self.part(id.source, id.partition).is_some_and(|p| {
            let i = p.ranges.partition_point(|&(_, end)| end <= id.offset);
            p.ranges
                .get(i)
                .is_some_and(|&(start, _)| start <= id.offset)
        })
    }

    /// Records one event; false if it was already absorbed.
    pub(crate) fn insert(&mut self, id: EventId) -> bool {
        if self.contains(id) {
            return false;
        }
        self.part_mut(id.source, id.partition)
            .insert(id.offset, id.offset + 1);
        true
    }

    /// Records every offset below `end` of a partition as absorbed.
    pub(crate) fn absorb_prefix(&mut self, source: u32, partition: u32, end: u64) {
        if end > 0 {
            self.part_mut(source, partition).insert(0, end);
        }
    }

    /// The end of the absorbed prefix `[0, n)` of a partition (0 if none).
    pub(crate) fn prefix(&self, source: u32, partition: u32) -> u64 {
        self.part(source, partition)
            .and_then(|p| p.ranges.first())
            .map_or(0, |&(start, end)| if start == 0 { end } else { 0 })
    }

    /// How many ranges are kept, over all partitions: the size of the
    /// bookkeeping.
    #[cfg(test)]
    pub(crate) fn ranges(&self) -> usize {
        self.parts.iter().map(|p| p.ranges.len()).sum()
    }
}

impl Part {
    /// Inserts `[start, end)`, merging overlapping and adjacent ranges.
    fn insert(&mut self, start: u64, end: u64) {
        let first = self.ranges.partition_point(|&(_, e)| e < start);
        let last = self.ranges.partition_point(|&(s, _)| s <= end);
        if first == last {
            self.ranges.insert(first, (start, end));
            return;
        }
        let merged = (
            start.min(self.ranges[first].0),
            end.max(self.ranges[last - 1].1),
        );
        self.ranges.splice(first..last, [merged]);
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
        for _ in 0..5_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let offset = (x >> 33) % 300;
            if x % 17 == 0 {
                a.absorb_prefix(7, 1, offset);
                model.extend(0..offset);
            } else {
                assert_eq!(
                    a.insert(id(offset)),
                    model.insert(offset),
                    "offset {offset}"
                );
            }
        }
        for o in 0..300 {
            assert_eq!(a.contains(id(o)), model.contains(&o), "offset {o}");
        }
    }
}
