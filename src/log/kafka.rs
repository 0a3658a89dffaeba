//! Apache Kafka as the log (feature `kafka`), through `rdkafka` (librdkafka
//! built from source): any Kafka-protocol broker.
//!
//! - Keys are hashed to partitions as the Java client does (murmur2), so
//!   other producers of the same topic agree with accrete on where a key
//!   lives.
//! - Producers are idempotent: a retried send is not written twice.
//! - Consumers use cooperative-sticky assignment, never auto-commit, and
//!   start a new group at the earliest offset.
//! - Anything librdkafka accepts (SASL, TLS, timeouts) passes through
//!   [`KafkaConfig::properties`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};

use crate::event::EventId;
use crate::{Error, Result};

/// How long a producer tries to deliver a record unless
/// `message.timeout.ms` says otherwise (librdkafka's own default is 300 s).
pub(crate) const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The header of a forwarded event's record: the id it first got, as 16
/// bytes (source, partition, offset; big-endian).
pub(crate) const ORIGIN_HEADER: &str = "accrete-origin";

fn encode_origin(o: EventId) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&o.source.to_be_bytes());
    out[4..8].copy_from_slice(&o.partition.to_be_bytes());
    out[8..].copy_from_slice(&o.offset.to_be_bytes());
    out
}

/// The id a record's event first got in another log, from its
/// [`ORIGIN_HEADER`]. A header of another length is ignored: the record is
/// then an event of this log, applied once at its own position.
pub(crate) fn origin_of(msg: &impl rdkafka::Message) -> Option<EventId> {
    use rdkafka::message::Headers as _;
    let headers = msg.headers()?;
    let value = headers.iter().find(|h| h.key == ORIGIN_HEADER)?.value?;
    let bytes: &[u8; 16] = value.try_into().ok()?;
    Some(EventId {
        source: u32::from_be_bytes(bytes[..4].try_into().ok()?),
        partition: u32::from_be_bytes(bytes[4..8].try_into().ok()?),
        offset: u64::from_be_bytes(bytes[8..].try_into().ok()?),
    })
}

/// How to reach the brokers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// librdkafka properties passed through to every client, e.g.
    /// `security.protocol = "SASL_SSL"`, `sasl.mechanisms = "PLAIN"`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`.
    pub properties: BTreeMap<String, String>,
    /// Replication factor of the topics accrete creates.
    pub replication_factor: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
            replication_factor: 1,
        }
    }
}

/// Waits for a future on this thread (the admin API is asynchronous; the
/// runtime is threads).
pub(crate) fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn hint(e: &KafkaError) -> &'static str {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure) => {
            " (is the broker running? `scripts/servers.sh start` starts one for development)"
        }
        _ => "",
    }
}

impl KafkaConfig {
    /// The client configuration every client starts from.
    pub(crate) fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // librdkafka drops lines below its level before they reach
        // `librdkafka_log`: let through what the subscriber wants.
        let level = if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
            RDKafkaLogLevel::Debug
        } else if tracing::enabled!(target: "librdkafka", tracing::Level::INFO) {
            RDKafkaLogLevel::Info
        } else {
            RDKafkaLogLevel::Warning
        };
        c.set_log_level(level);
        c
    }

    /// How long a fetch may wait for records, unless the properties say: 100
    /// ms rather than librdkafka's 500, since some brokers (tansu 0.6) hold
    /// a fetch for the whole wait even when records arrive, and hooks and
    /// replicas wait on it.
    pub(crate) fn fetch_defaults(&self, c: &mut ClientConfig) {
        if !self.properties.contains_key("fetch.wait.max.ms") {
            c.set("fetch.wait.max.ms", "100");
        }
    }

    /// Creates `topic` with `partitions`, or checks that it exists with
    /// that many.
    ///
    /// # Errors
    ///
    /// [`Error::TopicMismatch`] when it exists with another count (Kafka
    /// cannot shrink a topic, and accrete does not grow one: keys would move),
    /// [`Error::Kafka`] when the broker refuses or cannot be reached.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        crate::log::validate_name("topic", topic, 200)?;
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(|e| Error::kafka("create admin client", e))?;
        let new = NewTopic::new(
            topic,
            partitions as i32,
            TopicReplication::Fixed(self.replication_factor),
        );
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = block_on(admin.create_topics([&new], &opts)).map_err(|e| {
            Error::kafka_with("create topic", format!("{topic}: {e}{}", hint(&e)), e)
        })?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::kafka_msg("create topic", format!("{name}: {code}")));
                }
            }
        }
        let existing = self.partitions(topic)?;
        if existing != partitions {
            return Err(Error::TopicMismatch {
                topic: topic.into(),
                existing,
                requested: partitions,
            });
        }
        Ok(())
    }

    /// The partition count of `topic`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`], or [`Error::Kafka`] when the broker cannot be
    /// reached.
    pub fn partitions(&self, topic: &str) -> Result<u32> {
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .map_err(|e| Error::kafka("create client", e))?;
        for attempt in 0..50 {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .map_err(|e| Error::kafka_with("fetch metadata", format!("{e}{}", hint(&e)), e))?;
            if let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                && t.error().is_none()
                && !t.partitions().is_empty()
            {
                return Ok(t.partitions().len() as u32);
            }
            // A topic just created may take a moment to show up.
            if attempt < 49 {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err(Error::UnknownTopic(topic.into()))
    }

    /// The high watermarks (next offsets) of every partition of `topic`.
    pub(crate) fn end_offsets(&self, topic: &str, partitions: u32) -> Result<Vec<u64>> {
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .map_err(|e| Error::kafka("create client", e))?;
        (0..partitions as i32)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .map(|(_, high)| high.max(0) as u64)
                    .map_err(|e| {
                        Error::kafka_with("fetch watermarks", format!("{topic}/{p}: {e}"), e)
                    })
            })
            .collect()
    }

    /// How long a consumer may go without polling before librdkafka puts
    /// it out of its group: `max.poll.interval.ms` if configured (and
    /// readable), else librdkafka's default of 300 s. Batches are sized to
    /// take a tenth of it.
    pub(crate) fn max_poll_interval(&self) -> Duration {
        self.properties
            .get("max.poll.interval.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::from_secs(300), Duration::from_millis)
    }

    /// How long librdkafka tries to deliver a record (`message.timeout.ms`,
    /// [`DEFAULT_MESSAGE_TIMEOUT`] unless set).
    pub(crate) fn message_timeout(&self) -> Duration {
        self.properties
            .get("message.timeout.ms")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(DEFAULT_MESSAGE_TIMEOUT, Duration::from_millis)
    }

    /// A consumer in `group`: manual commits, cooperative-sticky assignment,
    /// earliest offset for a new group, committed records only; with `statistics`, its context's
    /// `stats` receives librdkafka's statistics every 250 ms (unless
    /// `statistics.interval.ms` is configured).
    pub(crate) fn consumer<C: ConsumerContext>(
        &self,
        group: &str,
        context: C,
        statistics: bool,
    ) -> Result<BaseConsumer<C>> {
        let mut c = self.client_config();
        if statistics && !self.properties.contains_key("statistics.interval.ms") {
            c.set("statistics.interval.ms", "250");
        }
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Never an aborted transaction's records (librdkafka's default,
            // kept whatever the properties say).
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky");
        if !self.properties.contains_key("session.timeout.ms") {
            c.set("session.timeout.ms", "6000");
        }
        if !self.properties.contains_key("heartbeat.interval.ms") {
            c.set("heartbeat.interval.ms", "1000");
        }
        self.fetch_defaults(&mut c);
        c.create_with_context(context)
            .map_err(|e| Error::kafka("create consumer", e))
    }

    /// A consumer outside any group (`group` is never joined), for reading
    /// one partition at a time
    /// from where it is assigned (see `cluster::placement`): committed
    /// records only, fetches as large as a record batch can be.
    pub(crate) fn probe(&self, group: &str) -> Result<BaseConsumer> {
        let mut c = self.client_config();
        c.set("group.id", group)
            // Placed below the partition's start (retention): an error, not
            // a jump to the end that would look like an empty gap.
            .set("auto.offset.reset", "error")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("max.partition.fetch.bytes", "52428800")
            .set("fetch.wait.max.ms", "10");
        c.create().map_err(|e| Error::kafka("create consumer", e))
    }

    /// A producer: idempotent, murmur2 partitioning, failures collected for
    /// [`Producer::flush`].
    pub(crate) fn producer(&self) -> Result<Producer> {
        let errors = Arc::new(Mutex::new(None));
        let ends = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let reported = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let waiters = Arc::new(Mutex::new(std::collections::HashMap::new()));
        let mut c = self.client_config();
        c.set("enable.idempotence", "true")
            .set("partitioner", "murmur2_random");
        if !self.properties.contains_key("linger.ms") {
            c.set("linger.ms", "5");
        }
        if !self.properties.contains_key("message.timeout.ms") {
            c.set(
                "message.timeout.ms",
                DEFAULT_MESSAGE_TIMEOUT.as_millis().to_string(),
            );
        }
        // Consumers read a partition again from up to 1 024 records before
        // their position (see cluster::materialize): keep batches smaller.
        c.set("batch.num.messages", "1000");
        let inner = c
            .create_with_context(Delivery {
                errors: errors.clone(),
                ends: ends.clone(),
                reported: reported.clone(),
                waiters: waiters.clone(),
            })
            .map_err(|e| Error::kafka("create producer", e))?;
        Ok(Producer {
            inner,
            errors,
            ends,
            sent: std::sync::atomic::AtomicU64::new(0),
            reported,
            waiters,
            next_waiter: std::sync::atomic::AtomicUsize::new(1),
            delivery_timeout: self.message_timeout() + Duration::from_secs(10),
        })
    }
}

pub(crate) struct Delivery {
    errors: Arc<Mutex<Option<KafkaError>>>,
    /// The end (last offset + 1) of what was delivered, per partition.
    ends: Arc<Mutex<std::collections::HashMap<i32, i64>>>,
    /// How many delivery reports were handled (counted after their effect).
    reported: Arc<std::sync::atomic::AtomicU64>,
    /// Senders waiting for their record's report, by the record's opaque.
    waiters: Arc<Mutex<Waiters>>,
}

/// Where a waited-for record's report goes: its partition and offset, or
/// the broker's error.
type Waiters = std::collections::HashMap<usize, (usize, std::sync::mpsc::SyncSender<Report>)>;
/// A record's index in its caller's list, and its partition and offset or
/// the error.
type Report = (usize, std::result::Result<(i32, i64), KafkaError>);

/// A record for [`Producer::send_all_and_wait`].
pub(crate) struct Outgoing<'a> {
    pub(crate) key: &'a [u8],
    pub(crate) payload: &'a [u8],
    pub(crate) timestamp: Option<i64>,
    pub(crate) origin: Option<EventId>,
}

impl ClientContext for Delivery {
    log_through_tracing!();
}

/// The `log` and `error` methods of an rdkafka `ClientContext`, sending
/// librdkafka's lines through `tracing` (every context of accrete's uses it).
macro_rules! log_through_tracing {
    () => {
        fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
            $crate::log::kafka::librdkafka_log(level, fac, message);
        }
        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            $crate::log::kafka::librdkafka_error(&error, reason);
        }
    };
}
pub(crate) use log_through_tracing;

/// librdkafka's log lines, through `tracing` (target `librdkafka`) like the
/// rest of accrete's, rather than the `log` crate. Its debug contexts (the
/// `debug` property, e.g. `ACCRETE_KAFKA_PROPERTY_DEBUG=cgrp`) arrive at
/// the debug level.
pub(crate) fn librdkafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    use RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", fac, "{message}")
        }
        Warning => tracing::warn!(target: "librdkafka", fac, "{message}"),
        Notice | Info => tracing::info!(target: "librdkafka", fac, "{message}"),
        Debug => tracing::debug!(target: "librdkafka", fac, "{message}"),
    }
}

/// librdkafka's client errors (a broker down, a failed connection), through
/// `tracing`. It retries them itself.
pub(crate) fn librdkafka_error(error: &KafkaError, reason: &str) {
    tracing::warn!(target: "librdkafka", %error, "{reason}");
}

impl ProducerContext for Delivery {
    /// 0, or the key of a sender waiting for this record's report.
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, waiter: usize) {
        use rdkafka::Message;
        let waiter = (waiter != 0)
            .then(|| self.waiters.lock().remove(&waiter))
            .flatten();
        match result {
            Ok(m) => {
                let mut ends = self.ends.lock();
                let end = ends.entry(m.partition()).or_insert(0);
                *end = (*end).max(m.offset() + 1);
                drop(ends);
                if let Some((i, w)) = waiter {
                    let _ = w.try_send((i, Ok((m.partition(), m.offset()))));
                }
            }
            Err((e, _)) => {
                if let Some((i, w)) = waiter {
                    // The sender hears of it; `flush` need not.
                    let _ = w.try_send((i, Err(e.clone())));
                } else {
                    let mut slot = self.errors.lock();
                    if slot.is_none() {
                        *slot = Some(e.clone());
                    }
                }
            }
        }
        self.reported
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// An idempotent producer whose delivery failures surface at
/// [`flush`](Producer::flush).
pub(crate) struct Producer {
    inner: ThreadedProducer<Delivery>,
    errors: Arc<Mutex<Option<KafkaError>>>,
    ends: Arc<Mutex<std::collections::HashMap<i32, i64>>>,
    /// Records queued, and delivery reports handled: librdkafka's flush
    /// returns once the broker acknowledged everything, possibly before the
    /// last reports reached [`Delivery`], so [`Producer::flush`] waits for
    /// these to meet.
    sent: std::sync::atomic::AtomicU64,
    reported: Arc<std::sync::atomic::AtomicU64>,
    waiters: Arc<Mutex<Waiters>>,
    next_waiter: std::sync::atomic::AtomicUsize,
    /// librdkafka's `message.timeout.ms`, and a little more: by then every
    /// record has been reported.
    delivery_timeout: Duration,
}

impl Producer {
    /// Queues a record; waits while librdkafka's queue is full.
    pub(crate) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
    ) -> Result<()> {
        self.queue(topic, partition, key, payload, timestamp, None, 0)
    }

    /// Sends records and waits for the broker to acknowledge each: their
    /// partitions and offsets, in order. The reports come to this call
    /// alone (another caller's failure is never this one's, nor the
    /// reverse); the first failure is the error, once every report is in.
    /// librdkafka reports every record within `message.timeout.ms`, so the
    /// wait is bounded by it; a record reported failed may still have been
    /// written (Kafka cannot tell), so a retry is at-least-once.
    pub(crate) fn send_all_and_wait<'r>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Outgoing<'r>>,
    ) -> Result<Vec<(u32, u64)>> {
        use std::sync::atomic::Ordering;
        let records: Vec<Outgoing<'r>> = records.into_iter().collect();
        let (tx, rx) = std::sync::mpsc::sync_channel(records.len().max(1));
        let mut ids = Vec::with_capacity(records.len());
        let mut queued = Ok(());
        for r in &records {
            let waiter = self.next_waiter.fetch_add(1, Ordering::Relaxed).max(1);
            self.waiters.lock().insert(waiter, (ids.len(), tx.clone()));
            if let Err(e) = self.queue(topic, None, r.key, r.payload, r.timestamp, r.origin, waiter)
            {
                self.waiters.lock().remove(&waiter);
                queued = Err(e);
                break;
            }
            ids.push(waiter);
        }
        drop(tx);
        let mut out = vec![(0, 0); ids.len()];
        let mut first_error = None;
        let deadline = std::time::Instant::now() + self.delivery_timeout;
        for _ in 0..ids.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, Ok((p, o)))) => out[i] = (p.max(0) as u32, o.max(0) as u64),
                Ok((_, Err(e))) => {
                    first_error.get_or_insert(e);
                }
                // Late reports find no receiver and are dropped: never
                // another caller's error.
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "the broker did not acknowledge records sent to {topic} within \
                         {:?} (`message.timeout.ms`): they may or may not have been written",
                        self.delivery_timeout
                    )));
                }
            }
        }
        queued?;
        match first_error {
            Some(e) => Err(Error::kafka_with("produce", format!("{topic}: {e}"), e)),
            None => Ok(out),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: &[u8],
        timestamp: Option<i64>,
        origin: Option<EventId>,
        waiter: usize,
    ) -> Result<()> {
        let mut record = BaseRecord::with_opaque_to(topic, waiter)
            .key(key)
            .payload(payload);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        if let Some(o) = origin {
            let value = encode_origin(o);
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: ORIGIN_HEADER,
                value: Some(&value[..]),
            }));
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => {
                    self.sent.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.inner.poll(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(Error::kafka_with("produce", format!("{topic}: {e}"), e));
                }
            }
        }
    }

    /// The ends of what was delivered since the last call, per partition
    /// (for a producer that writes one topic).
    pub(crate) fn take_ends(&self) -> Vec<(u32, u64)> {
        self.ends
            .lock()
            .drain()
            .map(|(p, e)| (p as u32, e.max(0) as u64))
            .collect()
    }

    /// Waits until everything sent is acknowledged; the first failure since
    /// the last flush is the error.
    pub(crate) fn flush(&self, timeout: Duration) -> Result<()> {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + timeout;
        self.inner
            .flush(timeout)
            .map_err(|e| Error::kafka_with("flush", format!("{e}{}", hint(&e)), e))?;
        // Acknowledged is not yet reported: wait for every report, so that
        // the errors and ends read next are complete.
        while self.reported.load(Ordering::Acquire) < self.sent.load(Ordering::Acquire) {
            if std::time::Instant::now() >= deadline {
                return Err(Error::kafka_msg(
                    "flush",
                    "delivery reports did not arrive in time",
                ));
            }
            self.inner.poll(Duration::from_millis(1));
        }
        match self.errors.lock().take() {
            Some(e) => Err(Error::kafka("produce", e)),
            None => Ok(()),
        }
    }
}
