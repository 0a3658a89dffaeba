//! The log: named topics of partitions of records, read by consumer groups.
//!
//! [`EmbeddedLog`] keeps it on local disk. With the feature `kafka`,
//! `log::kafka` reaches Apache Kafka; the cluster nodes use it through
//! consumer groups rather than through the [`Log`] trait, whose
//! offset-addressed reads fit the local workers.

mod embedded;
#[cfg(feature = "kafka")]
#[cfg_attr(
    not(feature = "mongodb"),
    allow(
        dead_code,
        reason = "producers and consumers serve the cluster (features kafka and mongodb)"
    )
)]
pub mod kafka;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod memory;

pub use embedded::{EmbeddedLog, SyncPolicy};

use crate::event::EventId;
use crate::{Error, Result};

/// A record to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// The routing key (decides the partition; kept with the record).
    pub key: &'a [u8],
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The encoded event.
    pub payload: &'a [u8],
    /// Where the event *first* entered a log, when it is re-appended
    /// (replayed from an export, forwarded from another topic). `None`: this
    /// append is its first entry, and its id is where it lands.
    pub origin: Option<EventId>,
}

/// One record read back, borrowing from a [`RecordBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its offset in the partition it was read from.
    pub offset: u64,
    /// The routing key.
    pub key: &'a [u8],
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The encoded event.
    pub payload: &'a [u8],
    /// Where it first entered a log, if not here.
    pub origin: Option<EventId>,
}

/// The bytes of keys and payloads after which a read stops (it takes one
/// record at least, of any size): a reader far behind on large records
/// holds about this much at once, not its batch size times their size.
pub const READ_BYTES: usize = 128 << 20;

/// Records read from one partition, stored contiguously: reading a batch
/// allocates nothing per record. Reuse one batch across reads.
#[derive(Debug, Default, Clone)]
pub struct RecordBatch {
    pub(crate) data: Vec<u8>,
    pub(crate) entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) timestamp: i64,
    /// Where the key starts in `data`; the payload follows it. 64 bits: a
    /// batch may hold more than 4 GiB (a reader far behind on large
    /// records), and 32-bit starts overflowed there (an attack, session 15).
    pub(crate) start: u64,
    pub(crate) key_len: u32,
    pub(crate) payload_len: u32,
    pub(crate) origin: Option<EventId>,
}

impl RecordBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
    }

    /// Empties the batch and gives back memory beyond about `bytes`, so a
    /// burst of large batches (a backfill) does not stay resident.
    pub fn clear_and_shrink(&mut self, bytes: usize) {
        self.clear();
        self.data.shrink_to(bytes);
        self.entries.shrink_to(bytes / 64);
    }

    /// Makes room for `records` more records of `bytes` keys and payloads
    /// in all.
    pub(crate) fn reserve(&mut self, records: usize, bytes: usize) {
        self.entries.reserve(records);
        self.data.reserve(bytes);
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of keys and payloads it holds.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Appends a record (used by log implementations). A batch holds any
    /// number of bytes; one key or payload is less than 4 GiB (a log reads
    /// no larger record: the embedded one's are at most
    /// [`EmbeddedLog::MAX_RECORD_BYTES`], Kafka's less than 2 GiB).
    ///
    /// # Panics
    ///
    /// If `key` or `payload` is 4 GiB or more.
    pub fn push(
        &mut self,
        offset: u64,
        key: &[u8],
        timestamp: i64,
        payload: &[u8],
        origin: Option<EventId>,
    ) {
        let len = |part: &[u8]| {
            u32::try_from(part.len()).expect("a record's key or payload is less than 4 GiB")
        };
        let (key_len, payload_len) = (len(key), len(payload));
        let start = self.data.len() as u64;
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(payload);
        self.entries.push(Entry {
            offset,
            timestamp,
            start,
            key_len,
            payload_len,
            origin,
        });
    }

    /// The records, in offset order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record<'_>> + '_ {
        self.entries.iter().map(|e| {
            let start = e.start as usize;
            let split = start + e.key_len as usize;
            Record {
                offset: e.offset,
                key: &self.data[start..split],
                timestamp: e.timestamp,
                payload: &self.data[split..split + e.payload_len as usize],
                origin: e.origin,
            }
        })
    }

    /// The offset after the last record, if any.
    pub fn next_offset(&self) -> Option<u64> {
        self.entries.last().map(|e| e.offset + 1)
    }
}

/// A durable, partitioned, append-only log with consumer-group offsets.
///
/// Offsets are dense per partition, starting at 0. Consumer groups store a
/// committed offset per partition: the next offset to read.
pub trait Log: Send + Sync + 'static {
    /// Creates a topic with `partitions` partitions; a no-op if it exists
    /// with that count.
    ///
    /// # Errors
    ///
    /// [`Error::TopicMismatch`] if it exists
    /// with another count; I/O errors.
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<()>;

    /// The partition count of a topic.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTopic`].
    fn partitions(&self, topic: &str) -> Result<u32>;

    /// Appends records to one partition, durably (per the log's sync policy),
    /// returning the offset of the first.
    ///
    /// # Errors
    ///
    /// Unknown topic or partition; I/O errors (nothing is appended then).
    fn append(&self, topic: &str, partition: u32, records: &[NewRecord<'_>]) -> Result<u64>;

    /// Reads records from `from` on, at most `max` of them (fewer at the end
    /// of the partition, or once their keys and payloads reach
    /// [`READ_BYTES`], one record at least), replacing `batch`'s contents.
    ///
    /// # Errors
    ///
    /// Unknown topic or partition; I/O errors; corruption.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        batch: &mut RecordBatch,
    ) -> Result<()>;

    /// The offset the next append to the partition will get.
    ///
    /// # Errors
    ///
    /// Unknown topic or partition.
    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64>;

    /// The group's committed offset for a partition (the next to read), 0
    /// if it never committed.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64>;

    /// Commits the group's offset for a partition, durably.
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()>;

    /// Forgets a group's offsets for a topic (the next read starts at 0).
    ///
    /// # Errors
    ///
    /// I/O errors.
    fn reset_group(&self, group: &str, topic: &str) -> Result<()>;
}

/// Names that become file and table names (topics, groups, read models):
/// 1 to `max` of `[A-Za-z0-9._-]`, not `.` or `..`.
pub(crate) fn validate_name(kind: &'static str, name: &str, max: usize) -> Result<()> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > max {
        Some("it is too long")
    } else if name == "." || name == ".." {
        Some("it is a special directory name")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it contains a character other than letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The partition of a key: a stable hash, the same in every process.
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (accrete_monoids::hash::stable_hash(key) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::RecordBatch;

    /// Past 4 GiB the records still read back whole (32-bit starts
    /// overflowed there). 5 GiB of memory: `cargo test --lib -- --ignored`.
    #[test]
    #[ignore = "allocates 5 GiB"]
    fn a_batch_holds_more_than_4_gib() {
        let mut batch = RecordBatch::new();
        let big = vec![7_u8; 1 << 30];
        for offset in 0..5_u64 {
            batch.push(offset, &offset.to_be_bytes(), 0, &big, None);
        }
        batch.push(5, b"last", 0, b"tail", None);
        assert!(batch.bytes() > 5 << 30);
        for (i, r) in batch.iter().enumerate() {
            assert_eq!(r.offset, i as u64);
            if i < 5 {
                assert_eq!(r.key, (i as u64).to_be_bytes());
                assert_eq!(r.payload.len(), 1 << 30);
                assert!(r.payload.iter().all(|b| *b == 7));
            } else {
                assert_eq!((r.key, r.payload), (&b"last"[..], &b"tail"[..]));
            }
        }
    }
}
