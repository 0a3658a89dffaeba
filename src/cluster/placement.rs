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
//! either a skip or the next record there is, and the reader's own consumer
//! cannot tell: on tansu it skipped the same records twice in a row, from
//! two different places (read again from before the gap, it delivered part
//! of the skipped batch and jumped to the same record). Taking that second
//! jump for a hole lost 40 events (`cluster_hooks_run_through_a_kill`,
//! 2026-12-07). So a gap is decided by a *probe*: a consumer of its own,
//! outside any group, that reads the one partition from before the gap with
//! nothing else fetched. What it finds in the gap is handed to the reader in
//! order, before the record that came after it; only a gap two probe reads
//! from different places both find empty is a hole. Without a verdict
//! (the broker slow, the probe's read not reaching back before the gap), the
//! partition is read again, and nothing is passed. Holes at the end of a
//! partition are passed by [`Placement::settle`], after the same check.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};

use crate::event::EventId;
use crate::log::kafka::KafkaConfig;
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

/// How long a probe read may take to reach the record after a gap.
const PROBE_WAIT: Duration = Duration::from_secs(5);

/// One record as a reader takes it: from its consumer, or from the probe
/// (records the consumer skipped).
pub(crate) struct Record<'a> {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    pub(crate) timestamp_ms: i64,
    pub(crate) origin: Option<EventId>,
}

impl<'a> Record<'a> {
    fn of(m: &'a impl Message) -> Self {
        Record {
            partition: m.partition() as u32,
            offset: m.offset() as u64,
            key: m.key().unwrap_or_default(),
            payload: m.payload().unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            origin: crate::log::kafka::origin_of(m),
        }
    }
}

/// What a probe read found between the expected offset and the record read
/// after it.
enum Gap {
    /// Nothing: the offsets hold nothing a consumer sees.
    Hole,
    /// Records the reader's consumer skipped, in order.
    Skipped(Vec<OwnedMessage>),
    /// No verdict.
    Unknown,
}

fn offsets_of(records: &[OwnedMessage]) -> Vec<i64> {
    records.iter().map(|m| m.offset()).collect()
}

/// What the reader does with a record its consumer delivered.
enum Admit {
    /// Drop it (read again, or not placed).
    No,
    /// Take it, after these records its consumer skipped (often none).
    After(Vec<OwnedMessage>),
}

/// The positions of one reader on one topic.
pub(crate) struct Placement {
    store: MongoStore,
    kafka: KafkaConfig,
    /// The probe's group id (never joined: librdkafka wants one to assign).
    probe_group: String,
    /// The name positions are kept under (a model, or `hook:<name>`).
    reader: String,
    topic: String,
    next: Mutex<HashMap<u32, Position>>,
    /// Reads a partition alone to tell a skip from a hole; made the first
    /// time a gap is seen.
    probe: Mutex<Option<BaseConsumer>>,
}

impl Placement {
    pub(crate) fn new(
        store: MongoStore,
        config: &super::NodeConfig,
        reader: String,
        topic: String,
    ) -> Self {
        Placement {
            store,
            kafka: config.kafka.clone(),
            probe_group: crate::names::cluster_probe_group(&config.group_prefix),
            reader,
            topic,
            next: Mutex::new(HashMap::new()),
            probe: Mutex::new(None),
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
    }

    /// Hands `f` the record `msg` if it is its partition's next one, after
    /// the records the consumer skipped before it (read by the probe), if
    /// any; nothing if it was read again or came too early.
    pub(crate) fn take(&self, msg: &impl Message, mut f: impl FnMut(Record<'_>)) {
        if let Admit::After(skipped) = self.admit(msg.partition() as u32, msg.offset() as u64) {
            for m in &skipped {
                f(Record::of(m));
            }
            f(Record::of(msg));
        }
    }

    /// Whether the record at `offset` is the partition's next one (after
    /// what the consumer skipped).
    fn admit(&self, partition: u32, offset: u64) -> Admit {
        let mut next = self.next.lock();
        let Some(position) = next.get(&partition).copied() else {
            // Not placed: the partition is being revoked.
            return Admit::No;
        };
        let expected = match position {
            Position::At(e, _) => e,
            Position::Sought { at, .. } => at,
        };
        if offset == expected {
            next.insert(partition, Position::At(offset + 1, Instant::now()));
            return Admit::After(Vec::new());
        }
        if offset < expected {
            if let Position::Sought { at, .. } = position {
                // Reading again from before the position works: wait for it
                // as for any record (and read again if the partition idles).
                next.insert(partition, Position::At(at, Instant::now()));
            }
            return Admit::No;
        }
        let Position::At(at, _) = position else {
            // Beyond, before the position was reached: fetched before a
            // seek, or skipped to.
            return Admit::No;
        };
        // Skipped records, or a hole: the probe tells (without the lock: it
        // takes a while).
        drop(next);
        let gap = self.gap(partition, at, offset);
        let mut next = self.next.lock();
        if !matches!(next.get(&partition), Some(Position::At(e, _)) if *e == at) {
            // Revoked or placed again meanwhile.
            return Admit::No;
        }
        match gap {
            Gap::Hole => {
                tracing::debug!(reader = %self.reader, partition, expected, got = offset,
                    "a hole in the offsets (transaction markers or aborted records)");
                next.insert(partition, Position::At(offset + 1, Instant::now()));
                Admit::After(Vec::new())
            }
            Gap::Skipped(skipped) => {
                tracing::info!(reader = %self.reader, partition, expected, got = offset,
                    skipped = skipped.len(), "the consumer skipped records: taken from a read of their own");
                next.insert(partition, Position::At(offset + 1, Instant::now()));
                Admit::After(skipped)
            }
            Gap::Unknown => {
                // Nothing is passed without a verdict: the partition is read
                // again (after `RESEEK_AFTER`, not in a tight loop of
                // probes), and stays behind, visibly, while the probe
                // cannot tell.
                tracing::warn!(reader = %self.reader, partition, expected, got = offset,
                    "records skipped or a hole: the probe could not tell; reading again");
                next.insert(
                    partition,
                    Position::Sought {
                        at,
                        back: READ_BACK / 4,
                        since: Instant::now(),
                    },
                );
                Admit::No
            }
        }
    }

    /// Reads `partition` alone to see what lies in `[expected, got)`: a
    /// verdict needs two reads that find the same offsets there (none: a
    /// hole). The probe is a consumer too and could skip as the reader's
    /// did, so the reads start from different places before the gap (1 024,
    /// 4 096, … records back); near the partition's start, from its start
    /// and from halfway to the gap, and only if that fails from the start
    /// again.
    fn gap(&self, partition: u32, expected: u64, got: u64) -> Gap {
        let Some(low) = self.with_probe(|probe| {
            probe
                .fetch_watermarks(&self.topic, partition as i32, Duration::from_secs(10))
                .ok()
                .map(|(low, _)| low.max(0) as u64)
        }) else {
            return Gap::Unknown;
        };
        let mut starts: Vec<u64> = Vec::new();
        for back in [READ_BACK, 4 * READ_BACK, 16 * READ_BACK, 64 * READ_BACK] {
            let start = expected.saturating_sub(back).max(low);
            if !starts.contains(&start) {
                starts.push(start);
            }
        }
        if starts.len() == 1 {
            let halfway = low + expected.saturating_sub(low) / 2;
            if halfway != low {
                starts.push(halfway);
            }
            starts.push(low);
        }
        let mut seen: Option<Vec<OwnedMessage>> = None;
        for start in starts {
            let read =
                |probe: &BaseConsumer| self.probe_read(probe, partition, expected, got, start, low);
            let Some(found) = self.with_probe(read) else {
                continue;
            };
            match seen.take() {
                Some(first) if offsets_of(&first) == offsets_of(&found) => {
                    return if found.is_empty() {
                        Gap::Hole
                    } else {
                        Gap::Skipped(found)
                    };
                }
                // Disagreeing reads: the later one is compared with the next.
                _ => seen = Some(found),
            }
        }
        Gap::Unknown
    }

    /// Runs `f` with the probe consumer, made the first time.
    fn with_probe<T>(&self, f: impl FnOnce(&BaseConsumer) -> Option<T>) -> Option<T> {
        let mut slot = self.probe.lock();
        if slot.is_none() {
            match self.kafka.probe(&self.probe_group) {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(reader = %self.reader, error = %e, "cannot make a probe consumer");
                    return None;
                }
            }
        }
        f(slot.as_ref()?)
    }

    /// One probe read of `partition` from `start` up to `got`: the records
    /// in `[expected, got)`, or `None` if the read did not start before
    /// `expected` (a broker may answer a fetch inside a batch with the next
    /// one) or did not reach `got` in time.
    fn probe_read(
        &self,
        probe: &BaseConsumer,
        partition: u32,
        expected: u64,
        got: u64,
        start: u64,
        low: u64,
    ) -> Option<Vec<OwnedMessage>> {
        let p = partition as i32;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(start as i64))
            .ok()?;
        probe.assign(&tpl).ok()?;
        // From the partition's first offset, nothing can come before.
        let mut covered = start <= low;
        let mut found = Vec::new();
        let deadline = Instant::now() + PROBE_WAIT;
        let verdict = loop {
            if Instant::now() >= deadline {
                break None;
            }
            match probe.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let o = m.offset() as u64;
                    if o < expected {
                        covered = true;
                    } else if o >= got {
                        break covered.then_some(found);
                    } else if covered {
                        found.push(m.detach());
                    } else {
                        break None;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(reader = %self.reader, partition, error = %e, "probe read failed");
                    break None;
                }
                // Nothing more to read: passed `got` if the position (moved
                // past transaction markers) is there; so a hole at the end.
                None => {
                    let at = probe.position().ok().and_then(|tpl| {
                        tpl.find_partition(&self.topic, p)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o.max(0) as u64),
                                _ => None,
                            })
                    });
                    if covered && at.is_some_and(|at| at >= got) {
                        break Some(found);
                    }
                }
            }
        };
        let _ = probe.unassign();
        verdict
    }

    /// Passes holes at the end of partitions: for each partition read up to
    /// its expected offset whose consumer position (which librdkafka moves
    /// past transaction markers) is beyond it, for which `settled` says
    /// every record read is written, and where the probe finds nothing in
    /// between, the partition now expects that position. Returns those
    /// partitions and positions, to be stored.
    pub(crate) fn settle<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        settled: impl Fn(u32) -> bool,
    ) -> Vec<(u32, u64)> {
        let Ok(positions) = consumer.position() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in positions.elements_for_topic(&self.topic) {
            let (p, Offset::Offset(at)) = (e.partition() as u32, e.offset()) else {
                continue;
            };
            let at = at.max(0) as u64;
            let Some(Position::At(expected, _)) = self.next.lock().get(&p).copied() else {
                continue;
            };
            if at <= expected || !settled(p) {
                continue;
            }
            // The consumer's position can be stale after a seek: passed
            // only if the probe finds nothing there. One partition probed
            // per call: the caller's loop polls in between.
            if matches!(self.gap(p, expected, at), Gap::Hole) {
                let mut next = self.next.lock();
                if matches!(next.get(&p), Some(Position::At(e, _)) if *e == expected) {
                    next.insert(p, Position::At(at, Instant::now()));
                    out.push((p, at));
                }
            }
            break;
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
/// called before they leave. Every consumer is made cooperative-sticky
/// ([`crate::log::kafka`]), so assignments change incrementally. The
/// protocol is not asked of librdkafka here: `rebalance_protocol()` from
/// inside this callback can block forever while the consumer closes
/// (librdkafka issue #4041; an attack saw a node's `shutdown` hang on it
/// in a hook member's close).
pub(crate) fn rebalance<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    err: RDKafkaRespErr,
    tpl: &mut TopicPartitionList,
    placement: &Placement,
    revoke: impl FnOnce(&TopicPartitionList),
) {
    let result = match err {
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
            placement.place(consumer, tpl);
            consumer.incremental_assign(tpl)
        }
        RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
            revoke(tpl);
            for e in tpl.elements_for_topic(placement.topic()) {
                placement.forget(e.partition() as u32);
            }
            consumer.incremental_unassign(tpl)
        }
        other => {
            tracing::error!(error = ?other, "rebalance error");
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "could not apply a rebalance");
    }
}

/// Leaves the consumer's group before it is dropped: its partitions move
/// to the other members now rather than once its session times out, and
/// the revoke runs in a poll here rather than inside the consumer's close.
/// Gives up after 5 s.
pub(crate) fn leave_group<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && consumer.assignment().is_ok_and(|a| a.count() > 0) {
        let _ = consumer.poll(Duration::from_millis(50));
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
    use super::*;

    /// The broker the integration tests use (`scripts/test.sh` starts one);
    /// fails loudly when none answers.
    fn kafka() -> KafkaConfig {
        let brokers =
            std::env::var("ACCRETE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let first = brokers.split(',').next().unwrap_or_default();
        let addr: std::net::SocketAddr = first.parse().expect("ACCRETE_KAFKA_BROKERS: ip:port");
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
            panic!("no Kafka broker at {brokers} ({e}): run `scripts/servers.sh start`")
        });
        KafkaConfig {
            brokers,
            ..KafkaConfig::default()
        }
    }

    fn mongo() -> MongoStore {
        let uri = std::env::var("ACCRETE_MONGODB_URI")
            .unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
        MongoStore::connect(&crate::store::mongo::MongoConfig {
            uri,
            database: "accrete_placement_test".into(),
            collection_prefix: String::new(),
        })
        .expect("no MongoDB server: run `scripts/servers.sh start`")
    }

    fn offsets(admit: Admit) -> Option<Vec<u64>> {
        match admit {
            Admit::No => None,
            Admit::After(skipped) => Some(skipped.iter().map(|m| m.offset() as u64).collect()),
        }
    }

    /// The regression of 2026-12-07: the consumer jumped over records that
    /// are there (twice in a row, on tansu), and the jump was taken for a
    /// hole. A gap is now read by the probe: the records in it are handed
    /// over before the record after it, and nothing is lost.
    #[test]
    fn records_the_consumer_skipped_are_taken_from_the_probe() {
        let kafka = kafka();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let topic = format!(
            "placement-gap-{}-{}",
            std::process::id(),
            nanos % 1_000_000_000
        );
        kafka.create_topic(&topic, 1).unwrap();
        let producer = kafka.producer().unwrap();
        // Three record batches: 0..10, 10..20, 20..30.
        for batch in 0..3_u8 {
            let records: Vec<Vec<u8>> = (0..10).map(|i| vec![batch * 10 + i]).collect();
            producer
                .send_all_and_wait(
                    &topic,
                    records.iter().map(|r| crate::log::kafka::Outgoing {
                        key: b"k",
                        payload: r,
                        timestamp: None,
                        origin: None,
                    }),
                )
                .unwrap();
        }
        let config = super::super::NodeConfig {
            kafka,
            ..super::super::NodeConfig::default()
        };
        let placement = Placement::new(mongo(), &config, "gap".into(), topic);
        placement.start_at(0, 12);
        // Read again from before the position: dropped, then expected.
        assert_eq!(offsets(placement.admit(0, 3)), None);
        // The consumer jumps from 12 to 25: 12..25 are there.
        assert_eq!(
            offsets(placement.admit(0, 25)),
            Some((12..25).collect()),
            "the skipped records, in order, before 25"
        );
        assert_eq!(offsets(placement.admit(0, 26)), Some(vec![]));
        // What came before is not taken twice.
        assert_eq!(offsets(placement.admit(0, 20)), None);
        assert!(matches!(
            placement.next.lock().get(&0),
            Some(Position::At(27, _))
        ));
    }

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
