//! Where a consumer group member reads each of its partitions, kept in
//! MongoDB rather than trusted to the broker.
//!
//! A reader (a materializer, a cluster hook) keeps its position per
//! partition in MongoDB, written after its effects. When a partition is
//! assigned, the reader places the consumer a little *before* that
//! position and drops records below it: some brokers (tansu 0.6) answer a
//! fetch that starts inside a producer's record batch with the next batch,
//! silently skipping records, or with nothing when it is the last batch.
//! A first record beyond the position means the consumer skipped ahead: it
//! is placed again, further back.
//!
//! The offsets of a topic written by other producers may have holes: a
//! transactional producer's commit and abort markers, an aborted
//! transaction's records. A record beyond the expected offset is therefore
//! either a skip or the next record there is. The partition is read again
//! from before the expected offset; if the same record follows it again, the
//! offsets between hold nothing a consumer sees, and reading goes on from
//! it. (Accepting the first such record outright lost records on tansu:
//! sequential fetches skip too.) Holes at the end of a partition are passed
//! by [`Placement::settle`], from the consumer's own position, so a topic
//! ending in a marker is not one record behind forever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::store::mongo::MongoStore;

/// How far before its position a partition is read again when placed;
/// accrete's producers keep record batches below this.
pub(crate) const READ_BACK: u64 = 1_024;

/// How long a placed partition may go without reaching its position before
/// it is placed again, further back.
const RESEEK_AFTER: Duration = Duration::from_secs(2);

/// How long a partition may go without a record before it is read again
/// from a little earlier: a consumer stopped inside the last record batch
/// gets nothing from such a broker until more records arrive.
const IDLE_RESEEK: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
enum Position {
    /// Expect this offset next (the last record came at the instant).
    At(u64, Instant),
    /// Placed `back` records before `at`, waiting for it.
    Sought { at: u64, back: u64, since: Instant },
}

/// The positions of one reader on one topic.
pub(crate) struct Placement {
    store: MongoStore,
    /// The name positions are kept under (a model, or `hook:<name>`).
    reader: String,
    topic: String,
    next: Mutex<HashMap<u32, Position>>,
    /// Per partition, the first record read beyond a suspected hole: a
    /// hole once read again after the same offsets.
    holes: Mutex<HashMap<u32, u64>>,
}

impl Placement {
    pub(crate) fn new(store: MongoStore, reader: String, topic: String) -> Self {
        Placement {
            store,
            reader,
            topic,
            next: Mutex::new(HashMap::new()),
            holes: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Sets where each newly assigned partition starts.
    pub(crate) fn place<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        for p in partitions {
            let low = consumer
                .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                .map_or(0, |(low, _)| low.max(0) as u64);
            let at = match self.store.position(&self.reader, p as u32) {
                Ok(Some(next)) => next.max(low),
                Ok(None) => low,
                Err(e) => {
                    // Unknown: from the beginning; re-reading is harmless.
                    tracing::warn!(reader = %self.reader, partition = p, error = %e,
                        "cannot read the stored position");
                    low
                }
            };
            let back = if at > low { READ_BACK } else { 0 };
            let start = at.saturating_sub(back).max(low);
            if let Err(e) = tpl.set_partition_offset(&self.topic, p, Offset::Offset(start as i64)) {
                tracing::warn!(reader = %self.reader, partition = p, error = %e,
                    "cannot place the partition");
            }
            self.next.lock().insert(
                p as u32,
                Position::Sought {
                    at,
                    back,
                    since: Instant::now(),
                },
            );
        }
    }

    /// Starts a partition the caller assigned itself: expects `at`, the
    /// consumer having been placed `READ_BACK` records before it.
    pub(crate) fn start_at(&self, partition: u32, at: u64) {
        self.next.lock().insert(
            partition,
            Position::Sought {
                at,
                back: READ_BACK,
                since: Instant::now(),
            },
        );
    }

    /// The partition left this member.
    pub(crate) fn forget(&self, partition: u32) {
        self.next.lock().remove(&partition);
        self.holes.lock().remove(&partition);
    }

    /// Whether the record at `offset` is the partition's next one.
    pub(crate) fn accept(&self, partition: u32, offset: u64) -> bool {
        let mut next = self.next.lock();
        let Some(position) = next.get(&partition).copied() else {
            // Not placed: the partition is being revoked.
            return false;
        };
        let expected = match position {
            Position::At(e, _) => e,
            Position::Sought { at, .. } => at,
        };
        if offset == expected {
            next.insert(partition, Position::At(offset + 1, Instant::now()));
            return true;
        }
        if offset < expected {
            if let Position::Sought { at, .. } = position {
                // Reading again from before the position works: wait for it
                // as for any record (and read again if the partition idles).
                next.insert(partition, Position::At(at, Instant::now()));
            }
            return false;
        }
        if let Position::At(at, _) = position {
            let mut holes = self.holes.lock();
            if holes.get(&partition) == Some(&offset) {
                // The same record follows `at` when read again from
                // before it: the offsets between hold nothing a consumer
                // sees (transaction markers, aborted records; or records
                // retention deleted before they were read).
                holes.remove(&partition);
                tracing::debug!(reader = %self.reader, partition, expected, got = offset,
                    "a hole in the offsets (transaction markers or aborted records)");
                next.insert(partition, Position::At(offset + 1, Instant::now()));
                return true;
            }
            // Skipped records (some brokers skip part of a batch), or a
            // hole: read again from before `at` to tell.
            holes.insert(partition, offset);
            tracing::debug!(reader = %self.reader, partition, expected, got = offset,
                "the consumer skipped records, or the offsets have a hole: reading again");
            next.insert(
                partition,
                Position::Sought {
                    at,
                    back: READ_BACK / 4,
                    since: Instant::now() - RESEEK_AFTER,
                },
            );
        }
        // Below: read again after a placement. Beyond, before the position
        // was reached: fetched before a seek, or skipped to.
        false
    }

    /// Passes holes at the end of partitions: for each partition read up to
    /// its expected offset whose consumer position (which librdkafka moves
    /// past transaction markers) is beyond it, and for which `settled`
    /// says every record read is written, the partition now expects that
    /// position. Returns those partitions and positions, to be stored.
    pub(crate) fn settle<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        settled: impl Fn(u32) -> bool,
    ) -> Vec<(u32, u64)> {
        let Ok(positions) = consumer.position() else {
            return Vec::new();
        };
        let mut next = self.next.lock();
        let mut out = Vec::new();
        for e in positions.elements_for_topic(&self.topic) {
            let (p, Offset::Offset(at)) = (e.partition() as u32, e.offset()) else {
                continue;
            };
            let at = at.max(0) as u64;
            if let Some(Position::At(expected, _)) = next.get(&p).copied()
                && at > expected
                && settled(p)
            {
                next.insert(p, Position::At(at, Instant::now()));
                out.push((p, at));
            }
        }
        out
    }

    /// Whether a partition this reader holds has records at or beyond its
    /// next expected offset, by the `ends` (per partition) that fetch
    /// responses reported; stale ends only understate it. The consumer's own
    /// position is no guide: placement seeks it back to read again.
    pub(crate) fn behind(&self, ends: &[std::sync::atomic::AtomicU64]) -> bool {
        self.next.lock().iter().any(|(p, pos)| {
            let expected = match pos {
                Position::At(e, _) => *e,
                Position::Sought { at, .. } => *at,
            };
            ends.get(*p as usize)
                .is_some_and(|end| end.load(std::sync::atomic::Ordering::Acquire) > expected)
        })
    }

    /// Places again, further back, partitions that have not reached their
    /// position in time.
    pub(crate) fn reseek<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) {
        let due: Vec<(u32, u64, u64)> = self
            .next
            .lock()
            .iter()
            .filter_map(|(p, pos)| match pos {
                Position::Sought { at, back, since } if since.elapsed() >= RESEEK_AFTER => {
                    // Further back each time, never before the start (a
                    // partition with nothing to read is sought again and
                    // again: the factor must not overflow).
                    let back = back
                        .saturating_mul(4)
                        .clamp(READ_BACK, (*at).max(READ_BACK));
                    Some((*p, *at, back))
                }
                Position::At(at, last) if last.elapsed() >= IDLE_RESEEK => {
                    Some((*p, *at, READ_BACK))
                }
                _ => None,
            })
            .collect();
        for (p, at, back) in due {
            let start = at.saturating_sub(back);
            if let Err(e) = consumer.seek(
                &self.topic,
                p as i32,
                Offset::Offset(start as i64),
                Duration::from_secs(10),
            ) {
                tracing::warn!(reader = %self.reader, partition = p, error = %e,
                    "seek failed; will retry");
            }
            self.next.lock().insert(
                p,
                Position::Sought {
                    at,
                    back,
                    since: Instant::now(),
                },
            );
        }
    }
}
/// Takes what has arrived, up to `max` records: waits up to 50 ms for the
/// first, then not at all. Consumer errors are logged and skipped.
pub(crate) fn drain<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    max: usize,
    reader: &str,
    mut f: impl FnMut(&BorrowedMessage<'_>),
) {
    let mut timeout = Duration::from_millis(50);
    for _ in 0..max {
        let Some(msg) = consumer.poll(timeout) else {
            break;
        };
        timeout = Duration::ZERO;
        match msg {
            Ok(m) => f(&m),
            Err(e) => tracing::warn!(reader, error = %e, "consumer error"),
        }
    }
}

/// rdkafka's rebalance, with partitions placed on assignment and `revoke`
/// called before they leave.
pub(crate) fn rebalance<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    err: RDKafkaRespErr,
    tpl: &mut TopicPartitionList,
    placement: &Placement,
    revoke: impl FnOnce(&TopicPartitionList),
) {
    let cooperative = matches!(
        consumer.rebalance_protocol(),
        RebalanceProtocol::Cooperative
    );
    let result = match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            placement.place(consumer, tpl);
            if cooperative {
                consumer.incremental_assign(tpl)
            } else {
                consumer.assign(tpl)
            }
        }
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
            revoke(tpl);
            for e in tpl.elements_for_topic(placement.topic()) {
                placement.forget(e.partition() as u32);
            }
            if cooperative {
                consumer.incremental_unassign(tpl)
            } else {
                consumer.unassign()
            }
        }
        other => {
            tracing::error!(error = ?other, "rebalance error");
            if cooperative {
                Ok(())
            } else {
                consumer.unassign()
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "could not apply a rebalance");
    }
}

/// How often a member records what it holds and compares with the others.
const AUDIT_EVERY: Duration = Duration::from_secs(2);
/// A claim older than this is a member's that is gone (longer than the
/// session timeout, after which the group reassigns a dead member's share).
const CLAIM_FRESH: Duration = Duration::from_secs(8);
/// How long the members may disagree before they rejoin: a rebalance in
/// progress, or a dead member's claim not yet stale, looks the same for a
/// few seconds.
const DISAGREE_FOR: Duration = Duration::from_secs(15);

/// Checks, across the nodes, that a consumer group's members hold every
/// partition exactly once, and rejoins when they have disagreed for a while.
///
/// Each member records the partitions its consumer holds in MongoDB every
/// few seconds. A broker's group coordinator can leave members with
/// assignments from different generations: tansu 0.6, when a dead leader is
/// replaced twice in quick succession, lets two members each run the
/// assignor and never tells the first that the second one's assignment
/// superseded its own, so some partitions are read by two members and
/// others by none until something else triggers a rebalance (minutes). A
/// member that sees partitions held by none or by two for
/// [`DISAGREE_FOR`] leaves the group and subscribes again: its partitions
/// are written and revoked first, as in any rebalance, and every member
/// sees the same disagreement, so all of them rejoin. Claims are stamped
/// with each node's clock: nodes' clocks must agree within a few seconds.
pub(crate) struct Audit {
    store: MongoStore,
    reader: String,
    node: String,
    topic: String,
    partitions: u32,
    next: Instant,
    disagree_since: Option<Instant>,
}

impl Audit {
    pub(crate) fn new(
        store: MongoStore,
        reader: String,
        node: String,
        topic: String,
        partitions: u32,
    ) -> Self {
        Audit {
            store,
            reader,
            node,
            topic,
            partitions,
            next: Instant::now(),
            disagree_since: None,
        }
    }

    /// Records what `consumer` holds and compares with the other members;
    /// every [`AUDIT_EVERY`], a no-op in between.
    pub(crate) fn check<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + AUDIT_EVERY;
        let held: Vec<u32> = match consumer.assignment() {
            Ok(tpl) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition() as u32)
                .collect(),
            Err(_) => return,
        };
        let now = crate::event::now_ms();
        let fresh = now - CLAIM_FRESH.as_millis() as i64;
        let claims = self
            .store
            .claim(&self.reader, &self.node, &held, now)
            .and_then(|()| self.store.claims(&self.reader, fresh));
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(reader = %self.reader, error = %e, "could not compare held partitions");
                return;
            }
        };
        let (missing, doubled) = disagreement(&claims, self.partitions);
        if missing.is_empty() && doubled.is_empty() {
            self.disagree_since = None;
            return;
        }
        let since = *self.disagree_since.get_or_insert_with(Instant::now);
        if since.elapsed() < DISAGREE_FOR {
            return;
        }
        tracing::warn!(reader = %self.reader, node = %self.node, ?missing, ?doubled, ?claims,
            "the consumer group's members disagree on who holds which partitions: rejoining");
        self.disagree_since = None;
        consumer.unsubscribe();
        if let Err(e) = consumer.subscribe(&[&self.topic]) {
            tracing::error!(reader = %self.reader, error = %e, "could not subscribe again");
        }
    }

    /// Withdraws this member's claim (it leaves the group).
    pub(crate) fn release(&self) {
        if let Err(e) = self.store.release(&self.reader, &self.node) {
            tracing::debug!(reader = %self.reader, error = %e, "could not withdraw the held partitions");
        }
    }
}

/// The partitions no member holds, and those two or more hold.
fn disagreement(claims: &[(String, Vec<u32>)], partitions: u32) -> (Vec<u32>, Vec<u32>) {
    let mut count = vec![0_u32; partitions as usize];
    for (_, held) in claims {
        for p in held {
            if let Some(c) = count.get_mut(*p as usize) {
                *c += 1;
            }
        }
    }
    let missing = (0..partitions)
        .filter(|p| count[*p as usize] == 0)
        .collect();
    let doubled = (0..partitions).filter(|p| count[*p as usize] > 1).collect();
    (missing, doubled)
}

#[cfg(test)]
mod tests {
    use super::disagreement;

    #[test]
    fn disagreement_finds_partitions_held_by_none_or_by_two() {
        let claims = vec![
            ("n4".to_string(), vec![2, 5]),
            ("n5".to_string(), vec![0, 2, 4]),
        ];
        assert_eq!(disagreement(&claims, 6), (vec![1, 3], vec![2]));
        let agree = vec![
            ("a".to_string(), vec![0, 1, 2]),
            ("b".to_string(), vec![3, 4, 5]),
        ];
        assert_eq!(disagreement(&agree, 6), (vec![], vec![]));
        // Partitions beyond the count (a stale claim) are ignored.
        assert_eq!(
            disagreement(&[("a".to_string(), vec![0, 9])], 1),
            (vec![], vec![])
        );
    }
}
