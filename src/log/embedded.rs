//! [`EmbeddedLog`]: the log in a directory on local disk.
//!
//! # Layout
//!
//! ```text
//! <dir>/topics/<topic>/meta          format version and partition count (text)
//! <dir>/topics/<topic>/<p>.log       partition p: append-only frames, one per record
//! <dir>/groups/<group>/<topic>       the group's committed offsets for the topic (text)
//! ```
//!
//! # Frames
//!
//! Every record is one frame; offsets are implicit (a record's offset is its
//! index in the partition file). All integers are little-endian.
//!
//! ```text
//! crc32    u32   CRC-32 (IEEE, crc32fast) of the next 4 + body_len bytes
//! body_len u32   length of the body
//! body:
//!   timestamp    i64
//!   key_len      varint (LEB128, u32)
//!   key          key_len bytes
//!   payload_len  varint (LEB128, u32)
//!   payload      payload_len bytes
//!   flags        u8: 0 = no origin, 1 = origin follows; other values are invalid
//!   origin       source u32, partition u32, offset u64 (only if flags = 1)
//! ```
//!
//! The checksum covers the length as well as the body, so a damaged length
//! is detected as such.
//!
//! # Recovery
//!
//! Opening scans every partition. A damaged or incomplete frame with no
//! valid frame after it is a torn write from a crash: it is cut off (with a
//! warning) and appends continue from the last whole record. A damaged frame
//! *followed by* a valid frame is corruption in the middle of the log:
//! opening fails with [`Error::Corrupt`] naming the file and byte, rather
//! than silently dropping the records after it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::{Log, NewRecord, READ_BYTES, RecordBatch, validate_name};
use crate::event::EventId;
use crate::{Error, Result};

/// The version of the partition file format, recorded in each topic's `meta`.
const FORMAT_VERSION: u32 = 1;
/// The first line of a topic's `meta` file.
const META_MAGIC: &str = "accrete log topic";
/// The first line of a group offsets file.
const GROUP_MAGIC: &str = "accrete group offsets";
/// The version of the group offsets file format.
const GROUP_FORMAT_VERSION: u32 = 1;

/// CRC and body length.
const HEADER: usize = 8;
/// Timestamp, two one-byte varints, flags.
const MIN_BODY: usize = 8 + 1 + 1 + 1;
/// Flags, origin, two five-byte varints, timestamp: the body beyond key and payload.
const MAX_OVERHEAD: usize = 1 + 16 + 5 + 5 + 8;
/// The largest body a frame may declare.
const MAX_BODY: usize = EmbeddedLog::MAX_RECORD_BYTES + MAX_OVERHEAD;
/// The flag for "an origin follows".
const HAS_ORIGIN: u8 = 1;
/// The sparse index keeps the file position of every `INDEX_EVERY`-th record.
const INDEX_EVERY: u64 = 1024;
/// Reads fetch up to this many bytes per `read_at` call.
const READ_CHUNK: usize = 256 << 10;
/// A read's first `read_at` call fetches at least this much.
const MIN_READ: usize = 16 << 10;
/// The most key and payload bytes a read reserves at once (a batch grows
/// beyond by doubling).
const RESERVE_BYTES: usize = 64 << 20;
/// The longest topic or group name.
const MAX_NAME: usize = 200;

/// When the log calls `fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Sync the partition file before each [`Log::append`] returns, and every
    /// offset commit and topic creation: an acknowledged write survives a
    /// power failure. The default.
    #[default]
    EveryAppend,
    /// Never sync; the operating system writes data back when it likes. A
    /// process crash loses nothing, a power failure may lose recent writes
    /// (and, with unlucky write-back ordering, damage records in the middle
    /// of a partition, which the next open reports as corruption). For
    /// benchmarks and tests.
    Never,
}

/// A durable log in a directory on local disk: topics of partitions, each
/// partition one append-only file, and consumer-group offsets.
///
/// It is `Send + Sync` and meant to be shared (in an `Arc`) by many threads:
/// appends to different partitions run in parallel, appends to one partition
/// are serialized, and reads never wait for appends. Readers see only whole
/// records: an append becomes visible when all its records are written (and
/// synced, under [`SyncPolicy::EveryAppend`]).
///
/// One `EmbeddedLog` at a time may use a directory: it is not locked, and
/// two instances (in one process or two) appending to the same files would
/// corrupt them.
///
/// Opening scans every partition file (to find the end, check checksums and
/// build the sparse index), so it takes time proportional to the data.
///
/// Unix only (positional reads and writes, directory `fsync`).
///
/// # Examples
///
/// ```
/// use accrete::log::{EmbeddedLog, Log, NewRecord, RecordBatch};
///
/// # fn main() -> accrete::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let log = EmbeddedLog::open(tmp.path())?;
/// log.create_topic("events", 4)?;
/// let record = NewRecord { key: b"user-1", timestamp: 1_700_000_000_000, payload: b"{}", origin: None };
/// let first = log.append("events", 2, &[record.clone(), record])?;
/// assert_eq!(first, 0);
///
/// let mut batch = RecordBatch::new();
/// log.read("events", 2, 0, 100, &mut batch)?;
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch.iter().nth(1).unwrap().offset, 1);
///
/// log.commit("materialize-views", "events", 2, batch.next_offset().unwrap())?;
/// assert_eq!(log.committed("materialize-views", "events", 2)?, 2);
/// # Ok(())
/// # }
/// ```
pub struct EmbeddedLog {
    dir: PathBuf,
    sync: SyncPolicy,
    /// Opened to inspect a log another process may be writing: nothing is
    /// written, repaired or created.
    read_only: bool,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Serializes topic creation.
    creating: Mutex<()>,
    /// Offsets per (group, topic), loaded on first use.
    groups: Mutex<HashMap<GroupTopic, Arc<Mutex<GroupOffsets>>>>,
}

impl fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.dir)
            .field("sync", &self.sync)
            .finish_non_exhaustive()
    }
}

struct Topic {
    partitions: Vec<Partition>,
}

struct Partition {
    path: PathBuf,
    /// One handle for positional reads and writes, shared by all threads.
    file: File,
    /// The offset after the last published record.
    end: AtomicU64,
    /// The byte length of the published records.
    len: AtomicU64,
    /// `index[i]`: the file position of record `i * INDEX_EVERY`.
    index: RwLock<Vec<u64>>,
    writer: Mutex<Writer>,
}

struct Writer {
    /// Encoded frames of the append in progress (reused).
    buf: Vec<u8>,
    /// Index positions found while encoding (reused).
    marks: Vec<u64>,
    /// Set when a failed write could not be undone or a sync failed: the
    /// file's state is unknown, so appends stop until the log is reopened.
    broken: Option<io::ErrorKind>,
}

/// A consumer group and a topic.
type GroupTopic = (String, String);

/// A group's committed offsets for one topic, by partition.
#[derive(Default)]
struct GroupOffsets {
    loaded: bool,
    offsets: BTreeMap<u32, u64>,
}

impl EmbeddedLog {
    /// The largest key plus payload of one record, in bytes (64 MiB).
    pub const MAX_RECORD_BYTES: usize = 64 << 20;

    /// Opens (creating if needed) the log in `dir`, syncing every append
    /// ([`SyncPolicy::EveryAppend`]).
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Corrupt`] if a partition is damaged other than
    /// at its end, or a `meta` file is unreadable or of a newer format.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, SyncPolicy::default())
    }

    /// Opens (creating if needed) the log in `dir` with a sync policy.
    ///
    /// Every partition is scanned: a torn tail left by a crash is cut off,
    /// with a warning (`tracing`).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open).
    pub fn open_with(dir: impl AsRef<Path>, sync: SyncPolicy) -> Result<Self> {
        Self::open_mode(dir.as_ref(), sync, false)
    }

    /// Opens the log in `dir` to look at it, while another process may be
    /// appending to it: nothing is written, and a torn tail (or an append in
    /// flight) is left alone, not cut off. It shows the log as it was when
    /// opened. Appends, commits, topic creation and group resets fail with
    /// [`Error::Usage`].
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); a missing directory is an I/O error.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_mode(dir.as_ref(), SyncPolicy::Never, true)
    }

    fn refuse_write(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::Usage(format!(
                "cannot {what}: the log at {} was opened read-only",
                self.dir.display()
            )));
        }
        Ok(())
    }

    fn open_mode(dir: &Path, sync: SyncPolicy, read_only: bool) -> Result<Self> {
        let dir = dir.to_path_buf();
        let topics_dir = dir.join("topics");
        let groups_dir = dir.join("groups");
        if !read_only {
            for d in [&topics_dir, &groups_dir] {
                fs::create_dir_all(d).map_err(|e| Error::io("creating the log directory", d, e))?;
            }
            if sync == SyncPolicy::EveryAppend {
                sync_dir(&dir)?;
            }
        }
        let log = EmbeddedLog {
            dir,
            sync,
            read_only,
            topics: RwLock::new(HashMap::new()),
            creating: Mutex::new(()),
            groups: Mutex::new(HashMap::new()),
        };

        let entries =
            fs::read_dir(&topics_dir).map_err(|e| Error::io("listing topics", &topics_dir, e))?;
        let mut topics = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("listing topics", &topics_dir, e))?;
            let path = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "log: ignoring a topic directory whose name is not UTF-8");
                continue;
            };
            if validate_name("topic", &name, MAX_NAME).is_err() {
                tracing::warn!(path = %path.display(), "log: ignoring a file that is not a topic");
                continue;
            }
            let Some(partitions) = read_meta(&path.join("meta"))? else {
                tracing::warn!(
                    path = %path.display(),
                    "log: ignoring a topic directory without `meta` (its creation did not finish)"
                );
                continue;
            };
            let topic = log.open_topic(&path, partitions, false)?;
            topics.insert(name, Arc::new(topic));
        }
        *write(&log.topics) = topics;
        Ok(log)
    }

    /// The directory the log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sync policy it was opened with.
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync
    }

    fn synced(&self) -> bool {
        self.sync == SyncPolicy::EveryAppend
    }

    /// Opens (`create`: creating missing files of) a topic's partitions.
    fn open_topic(&self, dir: &Path, partitions: u32, create: bool) -> Result<Topic> {
        let mut scratch = Vec::new();
        let mut parts = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let path = dir.join(format!("{p}.log"));
            let file = OpenOptions::new()
                .read(true)
                .write(!self.read_only)
                .create(create)
                .truncate(false)
                .open(&path)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => Error::Corrupt {
                        what: "log topic",
                        detail: format!("{} is missing", path.display()),
                    },
                    _ => Error::io("opening a log partition", &path, e),
                })?;
            parts.push(Partition::recover(
                path,
                file,
                self.synced(),
                !self.read_only,
                &mut scratch,
            )?);
        }
        Ok(Topic { partitions: parts })
    }

    fn topic(&self, topic: &str) -> Result<Arc<Topic>> {
        read(&self.topics)
            .get(topic)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))
    }

    /// Runs `f` on a partition, without holding the topic map's lock.
    fn with_partition<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&Partition) -> Result<T>,
    ) -> Result<T> {
        let t = self.topic(topic)?;
        let p = t
            .partitions
            .get(partition as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: topic.to_owned(),
                partitions: t.partitions.len() as u32,
                partition,
            })?;
        f(p)
    }

    fn group_state(&self, group: &str, topic: &str) -> Arc<Mutex<GroupOffsets>> {
        lock(&self.groups)
            .entry((group.to_owned(), topic.to_owned()))
            .or_default()
            .clone()
    }

    fn group_path(&self, group: &str, topic: &str) -> PathBuf {
        self.dir.join("groups").join(group).join(topic)
    }

    /// Checks the names, the topic and the partition; returns the group's
    /// (loaded) offsets for the topic.
    fn group_offsets(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Mutex<GroupOffsets>>> {
        validate_name("group", group, MAX_NAME)?;
        self.with_partition(topic, partition, |_| Ok(()))?;
        Ok(self.group_state(group, topic))
    }

    fn load_group(&self, state: &mut GroupOffsets, group: &str, topic: &str) -> Result<()> {
        if !state.loaded {
            state.offsets = read_group_file(&self.group_path(group, topic))?;
            state.loaded = true;
        }
        Ok(())
    }
}

impl Log for EmbeddedLog {
    fn create_topic(&self, topic: &str, partitions: u32) -> Result<()> {
        validate_name("topic", topic, MAX_NAME)?;
        if partitions == 0 {
            return Err(Error::Usage(format!(
                "topic `{topic}`: a topic needs at least one partition"
            )));
        }
        let existing = |t: &Topic| {
            let existing = t.partitions.len() as u32;
            if existing == partitions {
                Ok(())
            } else {
                Err(Error::TopicMismatch {
                    topic: topic.to_owned(),
                    existing,
                    requested: partitions,
                })
            }
        };
        if let Ok(t) = self.topic(topic) {
            return existing(&t);
        }
        self.refuse_write("create a topic")?;
        let _creating = lock(&self.creating);
        if let Ok(t) = self.topic(topic) {
            return existing(&t);
        }
        // The topic exists once its `meta` does: create the directory and the
        // partition files first, then write `meta` atomically.
        let topics_dir = self.dir.join("topics");
        let dir = topics_dir.join(topic);
        fs::create_dir_all(&dir).map_err(|e| Error::io("creating a topic directory", &dir, e))?;
        if self.synced() {
            sync_dir(&topics_dir)?;
        }
        let t = self.open_topic(&dir, partitions, true)?;
        let meta = format!("{META_MAGIC}\nformat {FORMAT_VERSION}\npartitions {partitions}\n");
        write_atomically(&dir, "meta", meta.as_bytes(), self.synced())?;
        write(&self.topics).insert(topic.to_owned(), Arc::new(t));
        Ok(())
    }

    fn partitions(&self, topic: &str) -> Result<u32> {
        Ok(self.topic(topic)?.partitions.len() as u32)
    }

    fn append(&self, topic: &str, partition: u32, records: &[NewRecord<'_>]) -> Result<u64> {
        self.refuse_write("append")?;
        self.with_partition(topic, partition, |p| p.append(records, self.synced()))
    }

    fn read(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        batch: &mut RecordBatch,
    ) -> Result<()> {
        batch.clear();
        self.with_partition(topic, partition, |p| p.read(from, max, batch))
    }

    fn end_offset(&self, topic: &str, partition: u32) -> Result<u64> {
        self.with_partition(topic, partition, |p| Ok(p.end.load(Ordering::Acquire)))
    }

    fn committed(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        let state = self.group_offsets(group, topic, partition)?;
        let mut state = lock(&state);
        self.load_group(&mut state, group, topic)?;
        Ok(state.offsets.get(&partition).copied().unwrap_or(0))
    }

    fn commit(&self, group: &str, topic: &str, partition: u32, offset: u64) -> Result<()> {
        self.refuse_write("commit")?;
        let state = self.group_offsets(group, topic, partition)?;
        let mut state = lock(&state);
        self.load_group(&mut state, group, topic)?;
        if state.offsets.get(&partition) == Some(&offset) {
            return Ok(()); // already durable
        }
        let mut offsets = state.offsets.clone();
        offsets.insert(partition, offset);

        let groups_dir = self.dir.join("groups");
        let dir = groups_dir.join(group);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)
                .map_err(|e| Error::io("creating a group directory", &dir, e))?;
            if self.synced() {
                sync_dir(&groups_dir)?;
            }
        }
        let mut text = format!("{GROUP_MAGIC}\nformat {GROUP_FORMAT_VERSION}\n");
        for (p, o) in &offsets {
            let _ = writeln!(text, "{p} {o}");
        }
        write_atomically(&dir, topic, text.as_bytes(), self.synced())?;
        state.offsets = offsets;
        Ok(())
    }

    fn reset_group(&self, group: &str, topic: &str) -> Result<()> {
        self.refuse_write("reset a group")?;
        validate_name("group", group, MAX_NAME)?;
        validate_name("topic", topic, MAX_NAME)?;
        let state = self.group_state(group, topic);
        let mut state = lock(&state);
        let path = self.group_path(group, topic);
        match fs::remove_file(&path) {
            Ok(()) => {
                if self.synced() {
                    sync_dir(path.parent().unwrap_or(&self.dir))?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("deleting group offsets", &path, e)),
        }
        state.offsets.clear();
        state.loaded = true;
        Ok(())
    }
}

impl Partition {
    /// Scans the file: finds the end, builds the index, cuts a torn tail.
    /// Without `repair` (a read-only open), a torn tail is left in place.
    fn recover(
        path: PathBuf,
        file: File,
        sync: bool,
        repair: bool,
        scratch: &mut Vec<u8>,
    ) -> Result<Self> {
        let file_len = file
            .metadata()
            .map_err(|e| Error::io("reading log partition metadata", &path, e))?
            .len();
        let mut index = Vec::new();
        let mut count = 0_u64;
        let mut frames = Frames::new(&file, scratch, 0, file_len, READ_CHUNK);
        let end_pos = loop {
            let next = frames
                .next(decode)
                .map_err(|e| Error::io("scanning a log partition", &path, e))?;
            let (pos, why) = match next {
                Next::Frame(_, pos) => {
                    if count.is_multiple_of(INDEX_EVERY) {
                        index.push(pos);
                    }
                    count += 1;
                    continue;
                }
                Next::End(_) => break file_len,
                Next::Short(pos) => (pos, "incomplete record"),
                Next::Bad(pos, why) => (pos, why),
            };
            // A record cut short whose own layout agrees with its length is
            // the write a crash interrupted: frames inside it are its payload
            // (a log record carried as an event), not records after it.
            let torn = why == "incomplete record"
                && torn_write(&file, pos, file_len)
                    .map_err(|e| Error::io("scanning a log partition", &path, e))?;
            // A whole record that fails its checksum but whose layout agrees
            // with its length (a write the disk did not finish): frames are
            // looked for after it, not inside it.
            let after = if why == "checksum mismatch" {
                let mut window = Window {
                    file: &file,
                    start: pos,
                    buf: Vec::new(),
                    end: file_len,
                };
                plausible_frame(&mut window, pos)
                    .map_err(|e| Error::io("scanning a log partition", &path, e))?
                    .map_or(pos + 1, |len| pos + len as u64)
            } else {
                pos + 1
            };
            if torn {
                // Cut below.
            } else if let Some(valid) = find_frame(&file, after, file_len)
                .map_err(|e| Error::io("scanning a log partition", &path, e))?
            {
                return Err(Error::Corrupt {
                    what: "log partition",
                    detail: format!(
                        "{}: record {count} at byte {pos} is damaged ({why}), but a valid record follows at byte \
                         {valid}; refusing to drop the records after it",
                        path.display()
                    ),
                });
            }
            if !repair {
                break pos;
            }
            tracing::warn!(
                path = %path.display(),
                byte = pos,
                dropped_bytes = file_len - pos,
                records = count,
                reason = why,
                "log: cutting off a torn tail (a write interrupted by a crash)"
            );
            file.set_len(pos)
                .map_err(|e| Error::io("truncating a torn log tail", &path, e))?;
            if sync {
                file.sync_all()
                    .map_err(|e| Error::io("syncing a log partition", &path, e))?;
            }
            break pos;
        };
        Ok(Partition {
            path,
            file,
            end: AtomicU64::new(count),
            len: AtomicU64::new(end_pos),
            index: RwLock::new(index),
            writer: Mutex::new(Writer {
                buf: Vec::new(),
                marks: Vec::new(),
                broken: None,
            }),
        })
    }

    fn append(&self, records: &[NewRecord<'_>], sync: bool) -> Result<u64> {
        let mut w = lock(&self.writer);
        let w = &mut *w;
        if let Some(kind) = w.broken {
            return Err(Error::io(
                "appending to a log partition",
                &self.path,
                io::Error::new(kind, "an earlier write or sync failed; reopen the log"),
            ));
        }
        // Only this writer changes `end` and `len`.
        let first = self.end.load(Ordering::Relaxed);
        let start = self.len.load(Ordering::Relaxed);
        if records.is_empty() {
            return Ok(first);
        }
        w.buf.clear();
        w.marks.clear();
        for (i, r) in records.iter().enumerate() {
            if (first + i as u64).is_multiple_of(INDEX_EVERY) {
                w.marks.push(start + w.buf.len() as u64);
            }
            encode(&mut w.buf, r)?;
        }
        if let Err(e) = self.file.write_all_at(&w.buf, start) {
            // Undo a partial write, or stop appending if that fails too.
            if self.file.set_len(start).is_err() {
                w.broken = Some(e.kind());
            }
            return Err(Error::io("appending to a log partition", &self.path, e));
        }
        if sync && let Err(e) = self.file.sync_data() {
            // After a failed fsync the page cache cannot be trusted.
            w.broken = Some(e.kind());
            let _ = self.file.set_len(start);
            return Err(Error::io("syncing a log partition", &self.path, e));
        }
        if !w.marks.is_empty() {
            write(&self.index).extend_from_slice(&w.marks);
        }
        // Publish: bytes first, then the offset readers go by.
        self.len
            .store(start + w.buf.len() as u64, Ordering::Release);
        self.end
            .store(first + records.len() as u64, Ordering::Release);
        if w.buf.capacity() > 16 << 20 {
            w.buf = Vec::new();
        }
        Ok(first)
    }

    fn read(&self, from: u64, max: usize, batch: &mut RecordBatch) -> Result<()> {
        let end = self.end.load(Ordering::Acquire);
        let len = self.len.load(Ordering::Acquire);
        if from >= end || max == 0 {
            return Ok(());
        }
        let want = (end - from).min(max as u64) as usize;
        let block = from / INDEX_EVERY;
        let pos = read(&self.index)[block as usize];
        let mut offset = block * INDEX_EVERY;
        // A guess at the bytes needed, so small reads read little.
        let avg = len / end.max(1) + 1;
        let guess = (from - offset + want as u64)
            .saturating_mul(avg)
            .saturating_add(HEADER as u64);
        let first_read = (guess.min(READ_CHUNK as u64) as usize).max(MIN_READ);
        // Room for the whole read at once: a large batch grown by doubling
        // copies itself over and over. The bytes at most `RESERVE_BYTES`:
        // the partition's average may be far above this read's (a few huge
        // records, then small ones), and an allocation beyond memory aborts.
        let bytes = (want as u64).saturating_mul(avg).min(RESERVE_BYTES as u64);
        batch.reserve(want, bytes as usize);

        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let mut frames = Frames::new(&self.file, &mut scratch, pos, len, first_read);
            let result = (|| {
                while offset < from {
                    let next = frames.next(peek).map_err(|e| self.read_error(e))?;
                    self.expect_frame(&next, offset)?;
                    offset += 1;
                }
                while batch.len() < want && batch.bytes() < READ_BYTES {
                    // Fast path: whole, valid frames already in the buffer.
                    offset += frames.decode_into(batch, offset, want);
                    if batch.len() == want || batch.bytes() >= READ_BYTES {
                        break;
                    }
                    // Slow path: read more, or report damage.
                    let next = frames.next(decode).map_err(|e| self.read_error(e))?;
                    let f = self.expect_frame(&next, offset)?;
                    batch.push(
                        offset,
                        frames.slice(f.key),
                        f.timestamp,
                        frames.slice(f.payload),
                        f.origin,
                    );
                    offset += 1;
                }
                Ok(())
            })();
            frames.release();
            result
        })
    }

    fn expect_frame<'n>(&self, next: &'n Next, offset: u64) -> Result<&'n Frame> {
        match next {
            Next::Frame(f, _) => Ok(f),
            Next::Bad(pos, why) => Err(Error::Corrupt {
                what: "log partition",
                detail: format!(
                    "{}: record {offset} at byte {pos} is damaged ({why})",
                    self.path.display()
                ),
            }),
            Next::Short(pos) | Next::End(pos) => Err(Error::Corrupt {
                what: "log partition",
                detail: format!(
                    "{}: record {offset} at byte {pos} was written but the file ends inside or before it",
                    self.path.display()
                ),
            }),
        }
    }

    fn read_error(&self, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::Corrupt {
                what: "log partition",
                detail: format!(
                    "{}: the file is shorter than the records written to it",
                    self.path.display()
                ),
            }
        } else {
            Error::io("reading a log partition", &self.path, e)
        }
    }
}

thread_local! {
    /// Each thread's read buffer, reused across reads.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A decoded frame; key and payload are ranges of the buffer it came from.
#[derive(Debug, Clone, Copy)]
struct Frame {
    len: usize,
    timestamp: i64,
    key: (usize, usize),
    payload: (usize, usize),
    origin: Option<EventId>,
}

enum Decode {
    Frame(Frame),
    /// The buffer ends inside the frame, which is this long in all
    /// (`HEADER` if the header itself is cut).
    Short(usize),
    Bad(&'static str),
}

/// Checks a frame's header only (for skipping records): the returned
/// frame's fields other than `len` are empty.
#[inline]
fn peek(buf: &[u8]) -> Decode {
    let Some(header) = buf.get(..HEADER) else {
        return Decode::Short(HEADER);
    };
    let body = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if !(MIN_BODY..=MAX_BODY).contains(&body) {
        return Decode::Bad("impossible length");
    }
    let len = HEADER + body;
    if buf.len() < len {
        return Decode::Short(len);
    }
    Decode::Frame(Frame {
        len,
        timestamp: 0,
        key: (0, 0),
        payload: (0, 0),
        origin: None,
    })
}

/// Decodes and checks the frame at the start of `buf`.
#[inline]
fn decode(buf: &[u8]) -> Decode {
    let len = match peek(buf) {
        Decode::Frame(f) => f.len,
        other => return other,
    };
    let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if crc32fast::hash(&buf[4..len]) != crc {
        return Decode::Bad("checksum mismatch");
    }
    match decode_body(&buf[..len]) {
        Some(f) => Decode::Frame(f),
        None => Decode::Bad("malformed record"),
    }
}

#[inline]
fn decode_body(frame: &[u8]) -> Option<Frame> {
    let mut at = HEADER;
    let timestamp = i64::from_le_bytes(frame.get(at..at + 8)?.try_into().ok()?);
    at += 8;
    let field = |at: &mut usize| -> Option<(usize, usize)> {
        let (n, used) = read_varint(frame.get(*at..)?)?;
        let start = *at + used;
        let end = start.checked_add(n as usize)?;
        frame.get(start..end)?;
        *at = end;
        Some((start, n as usize))
    };
    let key = field(&mut at)?;
    let payload = field(&mut at)?;
    let flags = *frame.get(at)?;
    at += 1;
    let origin = match flags {
        0 => None,
        HAS_ORIGIN => {
            let o = frame.get(at..at + 16)?;
            at += 16;
            Some(EventId {
                source: u32::from_le_bytes(o[0..4].try_into().ok()?),
                partition: u32::from_le_bytes(o[4..8].try_into().ok()?),
                offset: u64::from_le_bytes(o[8..16].try_into().ok()?),
            })
        }
        _ => return None,
    };
    (at == frame.len()).then_some(Frame {
        len: frame.len(),
        timestamp,
        key,
        payload,
        origin,
    })
}

fn read_varint(buf: &[u8]) -> Option<(u32, usize)> {
    let mut value = 0_u32;
    for (i, &b) in buf.iter().take(5).enumerate() {
        if i == 4 && b > 0x0f {
            return None;
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends one frame to `out`.
fn encode(out: &mut Vec<u8>, r: &NewRecord<'_>) -> Result<()> {
    let size = r.key.len() + r.payload.len();
    if size > EmbeddedLog::MAX_RECORD_BYTES {
        return Err(Error::Encode {
            what: "log record",
            detail: format!(
                "key and payload are {size} bytes; the embedded log's limit is {}",
                EmbeddedLog::MAX_RECORD_BYTES
            ),
        });
    }
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    out.extend_from_slice(&r.timestamp.to_le_bytes());
    write_varint(out, r.key.len() as u32);
    out.extend_from_slice(r.key);
    write_varint(out, r.payload.len() as u32);
    out.extend_from_slice(r.payload);
    match r.origin {
        None => out.push(0),
        Some(o) => {
            out.push(HAS_ORIGIN);
            out.extend_from_slice(&o.source.to_le_bytes());
            out.extend_from_slice(&o.partition.to_le_bytes());
            out.extend_from_slice(&o.offset.to_le_bytes());
        }
    }
    let body = (out.len() - start - HEADER) as u32;
    out[start + 4..start + HEADER].copy_from_slice(&body.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// What [`Frames::next`] found at a file position.
enum Next {
    Frame(Frame, u64),
    /// Nothing left before the limit: the position.
    End(u64),
    /// The limit cuts the frame at this position.
    Short(u64),
    /// A damaged frame at this position.
    Bad(u64, &'static str),
}

/// Frames read sequentially from `[pos, limit)` of a file through a buffer:
/// `read_at` calls of up to `READ_CHUNK` bytes, no per-record allocation.
struct Frames<'a> {
    file: &'a File,
    buf: &'a mut Vec<u8>,
    /// The file position of `buf[0]`.
    base: u64,
    /// `buf[at..filled]` is read but not yet consumed.
    at: usize,
    filled: usize,
    limit: u64,
    /// The size of the next `read_at` call.
    chunk: usize,
}

impl<'a> Frames<'a> {
    fn new(file: &'a File, buf: &'a mut Vec<u8>, pos: u64, limit: u64, first_read: usize) -> Self {
        if buf.len() < READ_CHUNK {
            buf.resize(READ_CHUNK, 0);
        }
        Frames {
            file,
            buf,
            base: pos,
            at: 0,
            filled: 0,
            limit,
            chunk: first_read,
        }
    }

    /// The next frame, decoded by `decode` (or [`peek`]); its ranges are
    /// valid for [`slice`](Self::slice) until the next call.
    #[inline]
    fn next(&mut self, decode: impl Fn(&[u8]) -> Decode) -> io::Result<Next> {
        loop {
            match decode(&self.buf[self.at..self.filled]) {
                Decode::Frame(mut f) => {
                    let pos = self.base + self.at as u64;
                    f.key.0 += self.at;
                    f.payload.0 += self.at;
                    self.at += f.len;
                    return Ok(Next::Frame(f, pos));
                }
                Decode::Bad(why) => return Ok(Next::Bad(self.base + self.at as u64, why)),
                Decode::Short(need) => {
                    if !self.fill(need)? {
                        let pos = self.base + self.at as u64;
                        return Ok(if self.at == self.filled {
                            Next::End(pos)
                        } else {
                            Next::Short(pos)
                        });
                    }
                }
            }
        }
    }

    /// Decodes the whole, valid frames in the buffer into `batch`, the first
    /// at `offset`, until it holds `want` records; returns how many it
    /// added. Stops at anything else, for [`next`](Self::next) to handle.
    #[inline]
    fn decode_into(&mut self, batch: &mut RecordBatch, offset: u64, want: usize) -> u64 {
        let mut added = 0;
        while batch.len() < want && batch.bytes() < READ_BYTES {
            let Decode::Frame(f) = decode(&self.buf[self.at..self.filled]) else {
                break;
            };
            let frame = &self.buf[self.at..self.at + f.len];
            batch.push(
                offset + added,
                &frame[f.key.0..f.key.0 + f.key.1],
                f.timestamp,
                &frame[f.payload.0..f.payload.0 + f.payload.1],
                f.origin,
            );
            self.at += f.len;
            added += 1;
        }
        added
    }

    fn slice(&self, (start, len): (usize, usize)) -> &[u8] {
        &self.buf[start..start + len]
    }

    /// Reads more, keeping the unconsumed bytes (the start of a frame
    /// `need` bytes long); false at the limit.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        let pos = self.base + self.filled as u64;
        if pos >= self.limit {
            return Ok(false);
        }
        if self.at > 0 {
            self.buf.copy_within(self.at..self.filled, 0);
            self.base += self.at as u64;
            self.filled -= self.at;
            self.at = 0;
        }
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let room = self.buf.len() - self.filled;
        let n =
            (self.limit - pos).min(room.min(self.chunk.max(need - self.filled)) as u64) as usize;
        self.chunk = READ_CHUNK;
        let mut got = 0;
        while got == 0 {
            match self
                .file
                .read_at(&mut self.buf[self.filled..self.filled + n], pos)
            {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(k) => got = k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.filled += got;
        Ok(true)
    }

    /// Gives back memory a huge record made the buffer take.
    fn release(self) {
        if self.buf.len() > 4 * READ_CHUNK {
            self.buf.truncate(READ_CHUNK);
            self.buf.shrink_to(READ_CHUNK);
        }
    }
}

/// The position of the first valid frame starting in `[from, end)`, if any:
/// whether a damaged frame is a torn tail (no valid frame after it) or
/// damage in the middle. It tries every byte position, so it only runs when
/// a partition is damaged; a position is checked cheaply first (the lengths
/// inside the body must add up to the body's length) and only then read
/// whole and checksummed.
fn find_frame(file: &File, from: u64, end: u64) -> io::Result<Option<u64>> {
    let mut window = Window {
        file,
        start: from,
        buf: Vec::new(),
        end,
    };
    let mut frame = Vec::new();
    let mut q = from;
    while q + (HEADER + MIN_BODY) as u64 <= end {
        if let Some(len) = plausible_frame(&mut window, q)? {
            let bytes = match window.slice(q, len) {
                Some(bytes) => bytes,
                None => {
                    frame.resize(len, 0);
                    file.read_exact_at(&mut frame, q)?;
                    &frame[..]
                }
            };
            if let Decode::Frame(_) = decode(bytes) {
                return Ok(Some(q));
            }
        }
        q += 1;
    }
    Ok(None)
}

/// Whether the incomplete frame at `pos` (its claimed length runs past
/// `end`) is a write cut short rather than a damaged length: the lengths
/// inside its body, as far as they are in the file, add up to the length
/// its header claims. A record whose length was damaged was whole before,
/// so its inner lengths are all in the file and disagree with the damaged
/// one; a torn record's agree, or are themselves cut off.
fn torn_write(file: &File, pos: u64, end: u64) -> io::Result<bool> {
    let available = (end - pos).min((HEADER + 8 + 10) as u64) as usize;
    let mut head = vec![0; available];
    file.read_exact_at(&mut head, pos)?;
    if head.len() < HEADER {
        return Ok(true);
    }
    let body = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as u64;
    if !(MIN_BODY as u64..=MAX_BODY as u64).contains(&body) {
        return Ok(false);
    }
    let frame_end = pos + HEADER as u64 + body;
    // The key's length, then (past the key) the payload's.
    let at_key = pos + (HEADER + 8) as u64;
    let varint_at = |at: u64| -> io::Result<Option<Option<(u32, usize)>>> {
        if at >= end {
            return Ok(None); // cut off before it: cannot disagree
        }
        let mut buf = vec![0; (end - at).min(5) as usize];
        file.read_exact_at(&mut buf, at)?;
        Ok(Some(read_varint(&buf)))
    };
    let Some(key) = varint_at(at_key)? else {
        return Ok(true);
    };
    let Some((key, used)) = key else {
        // A varint cut by the end of the file, or malformed.
        return Ok(at_key + 5 > end);
    };
    let at_payload = at_key + used as u64 + u64::from(key);
    if at_payload >= frame_end {
        return Ok(false);
    }
    let Some(payload) = varint_at(at_payload)? else {
        return Ok(true);
    };
    let Some((payload, used)) = payload else {
        return Ok(at_payload + 5 > end);
    };
    let at_flags = at_payload + used as u64 + u64::from(payload);
    Ok(at_flags + 1 == frame_end || at_flags + 1 + 16 == frame_end)
}

/// The length of the frame at `q` if its header and layout are consistent
/// (its checksum unchecked).
fn plausible_frame(window: &mut Window<'_>, q: u64) -> io::Result<Option<usize>> {
    let header = window.read(q)?;
    let body = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let frame_end = q + (HEADER + body) as u64;
    if !(MIN_BODY..=MAX_BODY).contains(&body) || frame_end > window.end {
        return Ok(None);
    }
    // Each step's position is before `frame_end`, and the probe stops there.
    let at_key = q + (HEADER + 8) as u64;
    let Some((key, used)) = read_varint(&window.probe(at_key, frame_end)?) else {
        return Ok(None);
    };
    let at_payload = at_key + used as u64 + u64::from(key);
    if at_payload >= frame_end {
        return Ok(None);
    }
    let Some((payload, used)) = read_varint(&window.probe(at_payload, frame_end)?) else {
        return Ok(None);
    };
    let at_flags = at_payload + used as u64 + u64::from(payload);
    if at_flags >= frame_end {
        return Ok(None);
    }
    let origin = match window.probe(at_flags, frame_end)?[0] {
        0 => 0,
        HAS_ORIGIN => 16,
        _ => return Ok(None),
    };
    Ok((at_flags + 1 + origin == frame_end).then_some(HEADER + body))
}

/// A sliding window over `[start, end)` of a file for [`find_frame`]: it
/// moves forward sequentially; probes elsewhere are small direct reads.
struct Window<'a> {
    file: &'a File,
    start: u64,
    buf: Vec<u8>,
    end: u64,
}

impl Window<'_> {
    const SIZE: usize = 1 << 20;

    /// `[at, at + HEADER)`, moving the window there if needed.
    fn read(&mut self, at: u64) -> io::Result<&[u8]> {
        if self.slice(at, HEADER).is_none() {
            let n = (Self::SIZE as u64).min(self.end - at) as usize;
            self.buf.resize(n, 0);
            self.file.read_exact_at(&mut self.buf, at)?;
            self.start = at;
        }
        Ok(self.slice(at, HEADER).expect("just read"))
    }

    /// Up to 5 bytes from `at` (at least one), not past `limit`.
    fn probe(&self, at: u64, limit: u64) -> io::Result<Vec<u8>> {
        let n = (limit - at).min(5) as usize;
        if let Some(bytes) = self.slice(at, n) {
            return Ok(bytes.to_vec());
        }
        let mut bytes = vec![0; n];
        self.file.read_exact_at(&mut bytes, at)?;
        Ok(bytes)
    }

    fn slice(&self, at: u64, len: usize) -> Option<&[u8]> {
        let off = usize::try_from(at.checked_sub(self.start)?).ok()?;
        self.buf.get(off..off.checked_add(len)?)
    }
}

/// A topic's partition count from its `meta`; `None` if there is no `meta`.
fn read_meta(path: &Path) -> Result<Option<u32>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading topic meta", path, e)),
    };
    let corrupt = |detail: String| Error::Corrupt {
        what: "topic meta",
        detail: format!("{}: {detail}", path.display()),
    };
    let mut lines = text.lines();
    if lines.next() != Some(META_MAGIC) {
        return Err(corrupt("not a topic meta file".into()));
    }
    let mut format = None;
    let mut partitions = None;
    for line in lines {
        match line.split_once(' ') {
            Some(("format", v)) => format = v.parse::<u32>().ok(),
            Some(("partitions", v)) => partitions = v.parse::<u32>().ok(),
            _ => return Err(corrupt(format!("unexpected line {line:?}"))),
        }
    }
    match (format, partitions) {
        (Some(FORMAT_VERSION), Some(p)) if p > 0 => Ok(Some(p)),
        (Some(f), Some(_)) if f != FORMAT_VERSION => Err(corrupt(format!(
            "partition format {f}, but this build reads format {FORMAT_VERSION}"
        ))),
        _ => Err(corrupt(
            "missing or invalid `format` or `partitions`".into(),
        )),
    }
}

fn read_group_file(path: &Path) -> Result<BTreeMap<u32, u64>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(Error::io("reading group offsets", path, e)),
    };
    let corrupt = |detail: String| Error::Corrupt {
        what: "group offsets",
        detail: format!("{}: {detail}", path.display()),
    };
    let mut lines = text.lines();
    if lines.next() != Some(GROUP_MAGIC) {
        return Err(corrupt("not a group offsets file".into()));
    }
    match lines.next().and_then(|l| l.strip_prefix("format ")) {
        Some(v) if v.parse() == Ok(GROUP_FORMAT_VERSION) => {}
        other => return Err(corrupt(format!("unknown format {other:?}"))),
    }
    let mut offsets = BTreeMap::new();
    for line in lines {
        let parsed = line
            .split_once(' ')
            .and_then(|(p, o)| Some((p.parse::<u32>().ok()?, o.parse::<u64>().ok()?)));
        let Some((p, o)) = parsed else {
            return Err(corrupt(format!("unexpected line {line:?}")));
        };
        offsets.insert(p, o);
    }
    Ok(offsets)
}

/// Replaces `dir/name` with `contents` atomically: a temporary file (whose
/// name has a `~`, which no topic or group name has), synced, renamed over,
/// then the directory synced.
fn write_atomically(dir: &Path, name: &str, contents: &[u8], sync: bool) -> Result<()> {
    let tmp = dir.join(format!("{name}~tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| Error::io("creating a temporary file", &tmp, e))?;
    f.write_all(contents)
        .map_err(|e| Error::io("writing a temporary file", &tmp, e))?;
    if sync {
        f.sync_all()
            .map_err(|e| Error::io("syncing a temporary file", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, &dst)
        .map_err(|e| Error::io("renaming a temporary file into place", &dst, e))?;
    if sync {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing a directory", dir, e))
}

// The locks guard no invariant a panic could break half-way (appends publish
// only at the end), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX / 2, u32::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(read_varint(&buf), Some((v, buf.len())));
        }
        assert_eq!(read_varint(&[0x80, 0x80, 0x80, 0x80, 0x10]), None);
        assert_eq!(read_varint(&[0x80]), None);
    }

    #[test]
    fn a_frame_round_trips_and_every_damage_is_seen() {
        let origin = EventId {
            source: 7,
            partition: 3,
            offset: 1 << 40,
        };
        let r = NewRecord {
            key: b"key",
            timestamp: -5,
            payload: b"payload",
            origin: Some(origin),
        };
        let mut buf = Vec::new();
        encode(&mut buf, &r).unwrap();
        let Decode::Frame(f) = decode(&buf) else {
            panic!("valid frame rejected")
        };
        assert_eq!(f.len, buf.len());
        assert_eq!((f.timestamp, f.origin), (-5, Some(origin)));
        assert_eq!(&buf[f.key.0..f.key.0 + f.key.1], b"key");
        assert_eq!(&buf[f.payload.0..f.payload.0 + f.payload.1], b"payload");
        for cut in 0..buf.len() {
            assert!(
                matches!(decode(&buf[..cut]), Decode::Short(_)),
                "cut at {cut}"
            );
        }
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    !matches!(decode(&bad), Decode::Frame(_)),
                    "flip at byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn zeros_are_not_a_frame() {
        assert!(matches!(decode(&[0; 64]), Decode::Bad(_)));
    }
}
