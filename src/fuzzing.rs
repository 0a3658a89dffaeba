//! Entry points for the fuzz targets under `fuzz/` and for the corpus replay
//! test (`tests/fuzz_corpus.rs`); only built with the `fuzzing` feature.
//!
//! Every function here takes bytes as they arrive from outside the process
//! (a log record, a stored value, an outbox row, a partition file) and runs
//! them through the crate's own decoder for a fixed set of concrete types.
//! None of them panics on its own: a decode that fails is
//! [`Failure::Rejected`], a decoded value that breaks an invariant the
//! crate relies on (it does not re-encode to something that decodes to the
//! same bytes, a recovered log does not read back what it counted) is
//! [`Failure::Broken`]. Any panic, hang or runaway allocation comes from the
//! code under test. [`check`] turns `Broken` into a panic for the fuzzers.
//!
//! [`seeds`] produces valid inputs with the real encoders, for the seed
//! corpora.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use accrete_monoids::{
    Average, Bloom, CausalContext, Count, CountMinSketch, DdSketch, GCounter, GSet, HyperLogLog,
    LastWriteWins, Map, Max, Min, Moments, Monoid, MultiValue, OrSet, PnCounter, Semigroup, Sum,
    TopK, TwoPhaseSet, Windowed,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::codec::{
    Range, StoredRecord, Written, decode_change, decode_change_payload, decode_record,
    encode_change, encode_record, record_version,
};
use crate::event::EventId;
use crate::ids::Absorbed;
use crate::log::{EmbeddedLog, Log, NewRecord, RecordBatch, SyncPolicy};

/// Why an input did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The decoder refused the input cleanly: the expected outcome for most
    /// fuzz inputs.
    Rejected(String),
    /// The input decoded, but what came out breaks an invariant: a bug.
    Broken(String),
}

/// What every entry point returns.
pub type Outcome = Result<(), Failure>;

/// Panics on [`Failure::Broken`] (so a fuzzer records the input); anything
/// else is fine.
///
/// # Panics
///
/// On a broken invariant.
pub fn check(outcome: Outcome) {
    if let Err(Failure::Broken(why)) = outcome {
        panic!("broken invariant: {why}");
    }
}

/// The fuzz targets, by name (the directories of `fuzz/corpus/`).
pub const TARGETS: [&str; 6] = [
    "event",
    "record",
    "change",
    "outbox",
    "log_frames",
    "sketches",
];

/// Runs the entry point of a target by name.
///
/// # Panics
///
/// On an unknown target name (a test's mistake, not an input's).
pub fn run(target: &str, bytes: &[u8]) -> Outcome {
    match target {
        "event" => event(bytes),
        "record" => record(bytes),
        "change" => change_input(bytes),
        "outbox" => outbox_row(bytes),
        "log_frames" => log_frames(bytes),
        "sketches" => sketch(bytes),
        other => panic!("no fuzz target {other:?}"),
    }
}

/// The outcome of decoding one input several ways: broken if any broke,
/// fine if any decoded, rejected otherwise.
fn any(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    let mut result = Err(Failure::Rejected("no decoder took it".into()));
    for outcome in outcomes {
        match outcome {
            Err(Failure::Broken(why)) => return Err(Failure::Broken(why)),
            Ok(()) => result = Ok(()),
            Err(Failure::Rejected(why)) => {
                if let Err(Failure::Rejected(all)) = &mut result {
                    *all = format!("{all}; {why}");
                }
            }
        }
    }
    result
}

fn rejected(e: impl std::fmt::Display) -> Failure {
    Failure::Rejected(e.to_string())
}

// ---------------------------------------------------------------------------
// Concrete types.

/// A recursive event type: every serde shape postcard has, nested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TreeEvent {
    /// A unit variant.
    Nothing,
    /// Integers of several widths.
    Ints(u8, i16, u32, i64, u128),
    /// Floats.
    Floats(f32, f64),
    /// A string and bytes.
    Text(String, Vec<u8>),
    /// A character and a boolean.
    Flag(char, bool),
    /// An event id.
    Id(EventId),
    /// An optional child.
    Maybe(Option<Box<TreeEvent>>),
    /// Two children.
    Pair(Box<TreeEvent>, Box<TreeEvent>),
    /// A list of children.
    List(Vec<TreeEvent>),
    /// A map of children.
    Map(BTreeMap<String, TreeEvent>),
    /// A struct variant with a flat event inside.
    Order {
        /// A flat struct.
        order: Order,
        /// Its follow-ups.
        then: Vec<TreeEvent>,
    },
}

/// A flat event, the kind a model usually has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The order number.
    pub id: u64,
    /// Who.
    pub customer: String,
    /// `(product, units)`.
    pub lines: Vec<(String, u32)>,
    /// Cents.
    pub cents: i64,
    /// Where it was forwarded from.
    pub origin: Option<EventId>,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
    /// A tuple and an array.
    pub extra: ((u16, bool), [u8; 4]),
}

/// A derived read-model state with a field of most kinds.
#[derive(accrete_monoids::Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[monoid(crate = "accrete_monoids")]
pub struct Stats {
    /// Events.
    pub count: Count,
    /// A signed total.
    pub total: Sum<i64>,
    /// The largest value.
    pub largest: Max<i64>,
    /// The smallest value.
    pub smallest: Min<i64>,
    /// Distinct visitors.
    pub visitors: HyperLogLog<8>,
    /// The most frequent pages.
    pub pages: TopK<String, 4>,
    /// Per-tag totals.
    pub tags: Map<String, Sum<i64>>,
    /// Members.
    pub members: OrSet<String>,
    /// Latencies.
    pub latency: DdSketch<10, 64>,
}

/// Encodes a value as the crate writes it, postcard.
fn postcard_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    postcard::to_stdvec(value).map_err(|e| Failure::Broken(format!("re-encoding failed: {e}")))
}

/// The invariant of every decoder: what decoded re-encodes to bytes that
/// decode to a value with the same encoding.
fn postcard_round_trip<T: Serialize + DeserializeOwned>(value: &T, what: &str) -> Outcome {
    let bytes = postcard_bytes(value)?;
    let again: T = crate::event::from_bytes(&bytes).map_err(|e| {
        Failure::Broken(format!(
            "a decoded {what} re-encodes to bytes that do not decode: {e}"
        ))
    })?;
    if postcard_bytes(&again)? != bytes {
        return Err(Failure::Broken(format!(
            "a decoded {what} does not round-trip through postcard"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Event payloads.

/// An event payload, through [`crate::event::decode`], as a recursive
/// [`TreeEvent`] and as a flat [`Order`]; what decodes must round-trip
/// through [`crate::event::encode`].
///
/// # Errors
///
/// [`Failure`].
pub fn event(bytes: &[u8]) -> Outcome {
    any([event_as::<TreeEvent>(bytes), event_as::<Order>(bytes)])
}

fn event_as<E: Serialize + DeserializeOwned>(bytes: &[u8]) -> Outcome {
    let event: E = crate::event::decode(bytes).map_err(Failure::Rejected)?;
    let encoded = crate::event::encode(&event)
        .map_err(|e| Failure::Broken(format!("a decoded event does not encode: {e}")))?;
    let again: E = crate::event::decode(&encoded).map_err(|e| {
        Failure::Broken(format!(
            "a decoded event re-encodes to a payload that does not decode: {e}"
        ))
    })?;
    let twice = crate::event::encode(&again)
        .map_err(|e| Failure::Broken(format!("a decoded event does not encode: {e}")))?;
    if twice != encoded {
        return Err(Failure::Broken("an event does not round-trip".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Stored records.

/// A stored record (format byte, version, absorbed ids, state), through the
/// runtime's `decode_record`, with three state types: [`Stats`],
/// `Sum<i64>`, and `Map<String, Count>`. What decodes is combined with
/// itself, asked whether it absorbed a few ids, and must round-trip through
/// `encode_record`.
///
/// # Errors
///
/// [`Failure`].
pub fn record(bytes: &[u8]) -> Outcome {
    any([
        record_as::<Stats>(bytes),
        record_as::<Sum<i64>>(bytes),
        record_as::<Map<String, Count>>(bytes),
    ])
}

fn record_as<S: Monoid + Clone + Serialize + DeserializeOwned>(bytes: &[u8]) -> Outcome {
    let version = record_version(bytes);
    let record: StoredRecord<S> = decode_record(bytes).map_err(rejected)?;
    if record.version != version {
        return Err(Failure::Broken(format!(
            "record_version reads {version}, decode_record {}",
            record.version
        )));
    }
    probe_absorbed(&record.absorbed);
    let mut doubled = record.state.clone();
    doubled.combine(&record.state);
    let _ = doubled.is_identity();
    let mut buf = Vec::new();
    encode_record(&record, &mut buf)
        .map_err(|e| Failure::Broken(format!("a decoded record does not encode: {e}")))?;
    let again: StoredRecord<S> = decode_record(&buf).map_err(|e| {
        Failure::Broken(format!(
            "a decoded record re-encodes to bytes that do not decode: {e}"
        ))
    })?;
    let mut twice = Vec::new();
    encode_record(&again, &mut twice)
        .map_err(|e| Failure::Broken(format!("a decoded record does not encode: {e}")))?;
    if twice != buf {
        return Err(Failure::Broken("a record does not round-trip".into()));
    }
    // The combined state is what the runtime would write next.
    let next = StoredRecord {
        version: record.version.wrapping_add(1),
        absorbed: record.absorbed,
        state: doubled,
    };
    encode_record(&next, &mut buf)
        .map_err(|e| Failure::Broken(format!("a combined state does not encode: {e}")))?;
    decode_record::<S>(&buf).map_err(|e| {
        Failure::Broken(format!(
            "a decoded state combined with itself does not decode: {e}"
        ))
    })?;
    Ok(())
}

/// Asks a decoded (unvalidated) `Absorbed` about a few ids.
fn probe_absorbed(absorbed: &Absorbed) {
    for source in [0, 1, u32::MAX] {
        for partition in [0, 1, u32::MAX] {
            for offset in [0, 1, 1 << 32, u64::MAX] {
                let _ = absorbed.contains(EventId {
                    source,
                    partition,
                    offset,
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Changes.

/// Splits a fuzz input into a change's key and payload: the first byte is
/// the key's length (cut to what there is), the key follows, the rest is
/// the payload. Then [`change`].
///
/// # Errors
///
/// [`Failure`].
pub fn change_input(bytes: &[u8]) -> Outcome {
    let (key, payload) = split_change(bytes);
    change(key, payload)
}

fn split_change(bytes: &[u8]) -> (&[u8], &[u8]) {
    match bytes.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n).min(rest.len())),
        None => (&[], &[]),
    }
}

/// The inverse of [`split_change`], for the seeds.
fn join_change(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let n = u8::try_from(key.len()).expect("seed keys are short");
    let mut out = vec![n];
    out.extend_from_slice(key);
    out.extend_from_slice(payload);
    out
}

/// A record of a changes topic (key, `(version, delta)`), through the
/// runtime's `decode_change` (`String` keys with [`Stats`] deltas, `u64`
/// keys with `Sum<i64>`) and `decode_change_payload` (a hook's read of a
/// `Stats` delta). What decodes must re-encode as the runtime publishes it.
///
/// # Errors
///
/// [`Failure`].
pub fn change(key: &[u8], payload: &[u8]) -> Outcome {
    any([
        change_as::<String, Stats>(key, payload),
        change_as::<u64, Sum<i64>>(key, payload),
        decode_change_payload::<Stats>(payload)
            .map_err(rejected)
            .and_then(|change| postcard_round_trip(&change, "change payload")),
    ])
}

fn change_as<K, S>(key: &[u8], payload: &[u8]) -> Outcome
where
    K: Serialize + DeserializeOwned,
    S: Monoid + Clone + Serialize + DeserializeOwned,
{
    let (k, (version, written)) = decode_change::<K, S>(key, payload).map_err(rejected)?;
    let mut doubled = written.delta.clone();
    doubled.combine(&written.delta);
    postcard_round_trip(&k, "change key")?;
    // What the backends publish, decoded again, re-encodes to the same bytes.
    let encode = |version: u64, written: &Written<S>| {
        let mut bytes = Vec::new();
        encode_change(version, written, &mut bytes)
            .map_err(|e| Failure::Broken(format!("a decoded change does not encode: {e}")))?;
        Ok::<_, Failure>(bytes)
    };
    let bytes = encode(version, &written)?;
    let (v, w) = decode_change_payload::<S>(&bytes)
        .map_err(|e| Failure::Broken(format!("a change does not decode once re-encoded: {e}")))?;
    if encode(v, &w)? != bytes {
        return Err(Failure::Broken(
            "a published change does not round-trip".into(),
        ));
    }
    postcard_round_trip(&(version, written), "change")?;
    postcard_round_trip(&(version, doubled), "combined change")
}

// ---------------------------------------------------------------------------
// Outbox rows.

/// An outbox row as `Pipeline::recover` decodes it after a crash (the same
/// expression: postcard `Vec<(key, payload)>`), then every change in it as
/// [`change`] does.
///
/// # Errors
///
/// [`Failure`].
pub fn outbox_row(bytes: &[u8]) -> Outcome {
    // As in `Pipeline::recover` (src/runtime/worker.rs).
    let batch: Vec<(Vec<u8>, Vec<u8>)> = postcard::from_bytes(bytes).map_err(rejected)?;
    postcard_round_trip(&batch, "outbox row")?;
    // The changes in a row need not decode (a foreign row): only broken
    // invariants count.
    for (key, payload) in &batch {
        if let Err(Failure::Broken(why)) = change(key, payload) {
            return Err(Failure::Broken(why));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Log frames.

/// The topic the partition files are written to.
const LOG_TOPIC: &str = "fuzz";

/// How [`log_frames`] opens the log: the flag bits of the input's first
/// byte.
const LOG_READ_ONLY: u8 = 1;

/// A partition file: the input after its first byte becomes partition 0 of
/// a one-partition topic, and the log is opened (read-only if the first
/// byte's lowest bit is set, else repairing a torn tail) and read whole, in
/// batches of a size taken from the first byte. Opening may fail cleanly;
/// once open, every record it counted must read back, and (read-write) an
/// append must continue the log and survive reopening.
///
/// # Errors
///
/// [`Failure`].
pub fn log_frames(bytes: &[u8]) -> Outcome {
    let (flags, file) = bytes.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
    let dir = TempDir::new().map_err(|e| Failure::Rejected(format!("temp dir: {e}")))?;
    let topic = dir.0.join("topics").join(LOG_TOPIC);
    std::fs::create_dir_all(&topic).map_err(rejected)?;
    std::fs::create_dir_all(dir.0.join("groups")).map_err(rejected)?;
    std::fs::write(
        topic.join("meta"),
        "accrete log topic\nformat 1\npartitions 1\n",
    )
    .map_err(rejected)?;
    std::fs::write(topic.join("0.log"), file).map_err(rejected)?;

    let read_only = flags & LOG_READ_ONLY != 0;
    let max = [usize::MAX, 1, 3, 1000][usize::from(flags >> 1) & 3];
    let log = if read_only {
        EmbeddedLog::open_read_only(&dir.0)
    } else {
        EmbeddedLog::open_with(&dir.0, SyncPolicy::Never)
    }
    .map_err(rejected)?;
    let records = read_whole(&log, max)?;
    if read_only {
        return Ok(());
    }
    let new = NewRecord {
        key: b"key",
        payload: b"after recovery",
        timestamp: 7,
        origin: Some(EventId {
            source: 1,
            partition: 2,
            offset: 3,
        }),
    };
    let at = log
        .append(LOG_TOPIC, 0, std::slice::from_ref(&new))
        .map_err(|e| Failure::Broken(format!("append after recovery failed: {e}")))?;
    if at != records.len() as u64 {
        return Err(Failure::Broken(format!(
            "append after recovery got offset {at}, expected {}",
            records.len()
        )));
    }
    drop(log);
    let log = EmbeddedLog::open_with(&dir.0, SyncPolicy::Never)
        .map_err(|e| Failure::Broken(format!("reopening after an append failed: {e}")))?;
    let again = read_whole(&log, usize::MAX)?;
    let mut expected = records;
    expected.push(OwnedRecord {
        key: new.key.to_vec(),
        payload: new.payload.to_vec(),
        timestamp: new.timestamp,
        origin: new.origin,
    });
    if again != expected {
        return Err(Failure::Broken(
            "reopening after an append reads different records".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
struct OwnedRecord {
    key: Vec<u8>,
    payload: Vec<u8>,
    timestamp: i64,
    origin: Option<EventId>,
}

/// Every record of the partition, in reads of at most `max`.
fn read_whole(log: &EmbeddedLog, max: usize) -> Result<Vec<OwnedRecord>, Failure> {
    let end = log
        .end_offset(LOG_TOPIC, 0)
        .map_err(|e| Failure::Broken(format!("an opened topic has no end offset: {e}")))?;
    let mut batch = RecordBatch::new();
    let mut out = Vec::new();
    while (out.len() as u64) < end {
        let from = out.len() as u64;
        log.read(LOG_TOPIC, 0, from, max, &mut batch).map_err(|e| {
            Failure::Broken(format!(
                "the log opened with {end} records, but reading from {from} failed: {e}"
            ))
        })?;
        if batch.is_empty() {
            return Err(Failure::Broken(format!(
                "the log opened with {end} records, but a read from {from} returned none"
            )));
        }
        for (i, r) in batch.iter().enumerate() {
            if r.offset != from + i as u64 {
                return Err(Failure::Broken(format!(
                    "read from {from}: record {i} has offset {}",
                    r.offset
                )));
            }
            out.push(OwnedRecord {
                key: r.key.to_vec(),
                payload: r.payload.to_vec(),
                timestamp: r.timestamp,
                origin: r.origin,
            });
        }
    }
    Ok(out)
}

/// A directory removed on drop (the library has no `tempfile`).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("accrete-fuzz-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// Sketches and other monoids with their own decoders.

/// The codecs a monoid is stored with: postcard (the embedded store, log
/// records) and JSON (serde's other common text form).
#[derive(Debug, Clone, Copy)]
enum Codec {
    Postcard,
    Json,
}

/// The monoids [`sketch`] decodes, indexed by the input's first byte
/// (`byte >> 1`, modulo the count; the lowest bit picks JSON).
pub const SKETCHES: [&str; 22] = [
    "HyperLogLog<8>",
    "HyperLogLog<14>",
    "CountMinSketch<64, 4>",
    "CountMinSketch<2048, 5>",
    "Bloom<512, 3>",
    "Bloom<8192, 7>",
    "DdSketch<10, 2048>",
    "DdSketch<20, 16>",
    "TopK<String, 4>",
    "TopK<u64, 10>",
    "OrSet<String>",
    "GCounter",
    "PnCounter",
    "MultiValue<String>",
    "TwoPhaseSet<String>",
    "Map<String, Sum<i64>>",
    "Windowed<Count, 1000, 4>",
    "CausalContext",
    "Moments",
    "Average",
    "GSet<String>",
    "LastWriteWins<String>",
];

/// A monoid's serialized form: the first byte picks the type (see
/// [`SKETCHES`]) and the codec, the rest is decoded with it. What decodes
/// is queried, combined with itself (and, for idempotent types, must equal
/// itself then), and must round-trip through its codec, combined or not.
///
/// # Errors
///
/// [`Failure`].
pub fn sketch(bytes: &[u8]) -> Outcome {
    let Some((&selector, body)) = bytes.split_first() else {
        return Err(Failure::Rejected("empty".into()));
    };
    let codec = if selector & 1 == 0 {
        Codec::Postcard
    } else {
        Codec::Json
    };
    let kind = usize::from(selector >> 1) % SKETCHES.len();
    let what = SKETCHES[kind];
    match kind {
        0 => monoid::<HyperLogLog<8>>(body, codec, what, true, |h| {
            let _ = (h.estimate(), h.registers());
        }),
        1 => monoid::<HyperLogLog>(body, codec, what, true, |h| {
            let _ = (h.estimate(), h.registers());
        }),
        2 => monoid::<CountMinSketch<64, 4>>(body, codec, what, false, |s| {
            let _ = (s.estimate_hash(42), s.total(), s.counters());
        }),
        3 => monoid::<CountMinSketch>(body, codec, what, false, |s| {
            let _ = (s.estimate_hash(42), s.total(), s.counters());
        }),
        4 => monoid::<Bloom<512, 3>>(body, codec, what, true, |b| {
            let _ = (
                b.contains_hash(42),
                b.count_ones(),
                b.current_false_positive_rate(),
            );
        }),
        5 => monoid::<Bloom>(body, codec, what, true, |b| {
            let _ = (
                b.contains_hash(42),
                b.count_ones(),
                b.current_false_positive_rate(),
            );
        }),
        6 => monoid::<DdSketch>(body, codec, what, false, |d| {
            let _ = (d.quantile(0.0), d.quantile(0.5), d.quantile(1.0));
            let _ = (d.min(), d.max(), d.count(), d.bucket_count());
        }),
        7 => monoid::<DdSketch<20, 16>>(body, codec, what, false, |d| {
            let _ = (d.quantile(0.0), d.quantile(0.99), d.quantile(1.0));
            let _ = (d.min(), d.max(), d.count(), d.bucket_count());
        }),
        8 => monoid::<TopK<String, 4>>(body, codec, what, false, |t| {
            let _ = (t.top(), t.total(), t.error_bound(), t.estimate("a"));
        }),
        9 => monoid::<TopK<u64>>(body, codec, what, false, |t| {
            let _ = (t.top(), t.total(), t.error_bound(), t.estimate(&0));
        }),
        10 => monoid::<OrSet<String>>(body, codec, what, true, |s| {
            let _ = (
                s.len(),
                s.iter().count(),
                s.contains("a"),
                s.dots("a").len(),
            );
        }),
        11 => monoid::<GCounter>(body, codec, what, true, |c| {
            let _ = (c.value(), c.actors(), c.get(&0));
        }),
        12 => monoid::<PnCounter>(body, codec, what, true, |c| {
            let _ = (c.value(), c.value_i128());
        }),
        13 => monoid::<MultiValue<String>>(body, codec, what, true, |m| {
            let _ = (m.len(), m.values().count());
        }),
        14 => monoid::<TwoPhaseSet<String>>(body, codec, what, true, |s| {
            let _ = (
                s.len(),
                s.iter().count(),
                s.contains("a"),
                s.is_removed("a"),
            );
        }),
        15 => monoid::<Map<String, Sum<i64>>>(body, codec, what, false, |_| {}),
        16 => monoid::<Windowed<Count, 1000, 4>>(body, codec, what, false, |w| {
            let _ = (w.latest(), w.get(0), w.iter().count());
        }),
        17 => monoid::<CausalContext>(body, codec, what, true, |_| {}),
        18 => monoid::<Moments>(body, codec, what, false, |_| {}),
        19 => monoid::<Average>(body, codec, what, false, |_| {}),
        20 => monoid::<GSet<String>>(body, codec, what, true, |_| {}),
        _ => monoid::<LastWriteWins<String>>(body, codec, what, true, |_| {}),
    }
}

fn decode_with<T: DeserializeOwned>(bytes: &[u8], codec: Codec) -> Result<T, String> {
    match codec {
        Codec::Postcard => crate::event::from_bytes(bytes),
        Codec::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

fn encode_with<T: Serialize>(value: &T, codec: Codec) -> Result<Vec<u8>, String> {
    match codec {
        Codec::Postcard => postcard::to_stdvec(value).map_err(|e| e.to_string()),
        Codec::Json => serde_json::to_vec(value).map_err(|e| e.to_string()),
    }
}

fn monoid<T>(bytes: &[u8], codec: Codec, what: &str, idempotent: bool, query: fn(&T)) -> Outcome
where
    T: Monoid + Clone + Serialize + DeserializeOwned,
{
    let value: T = decode_with(bytes, codec).map_err(Failure::Rejected)?;
    query(&value);
    let _ = value.is_identity();
    let encoded = round_trip(&value, codec, what, "")?;
    let mut doubled = value.clone();
    doubled.combine(&value);
    query(&doubled);
    let doubled_bytes = round_trip(&doubled, codec, what, " combined with itself")?;
    if idempotent && doubled_bytes != encoded {
        return Err(Failure::Broken(format!(
            "a decoded {what} ({codec:?}) combined with itself changed, but it is idempotent"
        )));
    }
    let mut with_identity = T::identity();
    with_identity.combine(&value);
    if round_trip(&with_identity, codec, what, " combined into the identity")? != encoded {
        return Err(Failure::Broken(format!(
            "a decoded {what} ({codec:?}) combined into the identity changed"
        )));
    }
    // The other codec must take it too.
    let other = match codec {
        Codec::Postcard => Codec::Json,
        Codec::Json => Codec::Postcard,
    };
    let _ = encode_with(&value, other);
    Ok(())
}

/// Re-encodes a decoded value; the bytes must decode to a value that
/// encodes to the same bytes. Returns the bytes.
fn round_trip<T: Serialize + DeserializeOwned>(
    value: &T,
    codec: Codec,
    what: &str,
    how: &str,
) -> Result<Vec<u8>, Failure> {
    let bytes = encode_with(value, codec).map_err(|e| {
        Failure::Broken(format!(
            "a decoded {what}{how} ({codec:?}) does not encode: {e}"
        ))
    })?;
    let again: T = decode_with(&bytes, codec).map_err(|e| {
        Failure::Broken(format!(
            "a decoded {what}{how} ({codec:?}) re-encodes to bytes that do not decode: {e}"
        ))
    })?;
    let twice = encode_with(&again, codec).map_err(|e| {
        Failure::Broken(format!(
            "a decoded {what}{how} ({codec:?}) does not encode: {e}"
        ))
    })?;
    if twice != bytes {
        return Err(Failure::Broken(format!(
            "a decoded {what}{how} ({codec:?}) does not round-trip"
        )));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------
// Seeds.

/// Valid inputs for every target, made with the real encoders:
/// `(target, name, bytes)`. The seed corpora under `fuzz/corpus/` are these.
///
/// # Panics
///
/// If an encoder fails on these fixed values, or the temporary log for the
/// partition file seeds cannot be written.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let id = EventId {
        source: 0xdead_beef,
        partition: 3,
        offset: 1 << 40,
    };
    // Events.
    let order = Order {
        id: 17,
        customer: "ada".into(),
        lines: vec![("tea".into(), 2), ("cake".into(), 1)],
        cents: -1250,
        origin: Some(id),
        tags: [("via".to_string(), "web".to_string())].into(),
        extra: ((9, true), [1, 2, 3, 4]),
    };
    let trees = [
        TreeEvent::Nothing,
        TreeEvent::Ints(1, -2, 3, i64::MIN, u128::MAX),
        TreeEvent::Floats(1.5, f64::NAN),
        TreeEvent::Text("héllo".into(), vec![0, 255]),
        TreeEvent::Flag('∑', true),
        TreeEvent::Id(id),
        TreeEvent::Maybe(Some(Box::new(TreeEvent::Maybe(None)))),
        TreeEvent::Pair(
            Box::new(TreeEvent::List(vec![TreeEvent::Nothing; 3])),
            Box::new(TreeEvent::Map(
                [("k".to_string(), TreeEvent::Flag('x', false))].into(),
            )),
        ),
        TreeEvent::Order {
            order: order.clone(),
            then: vec![TreeEvent::Nothing],
        },
    ];
    for (i, tree) in trees.iter().enumerate() {
        out.push(("event", format!("tree-{i}"), encode_event(tree)));
    }
    out.push(("event", "order".into(), encode_event(&order)));

    // Records and changes.
    let stats = sample_stats();
    let absorbed = sample_absorbed(&[
        (1, 3, 0, 4),
        (id.source, id.partition, 0, 3),
        (id.source, id.partition, 5, 6),
        (id.source, id.partition, 1 << 33, (1 << 33) + 1),
    ]);
    let mut buf = Vec::new();
    let mut record_seed = |name: &str, bytes: Vec<u8>| out.push(("record", name.into(), bytes));
    encode_record(
        &StoredRecord {
            version: 3,
            absorbed: absorbed.clone(),
            state: stats.clone(),
        },
        &mut buf,
    )
    .expect("encode");
    record_seed("stats", buf.clone());
    encode_record(
        &StoredRecord {
            version: 1,
            absorbed: Absorbed::default(),
            state: Stats::identity(),
        },
        &mut buf,
    )
    .expect("encode");
    record_seed("stats-identity", buf.clone());
    encode_record(
        &StoredRecord {
            version: u64::MAX,
            absorbed,
            state: Sum(-42_i64),
        },
        &mut buf,
    )
    .expect("encode");
    record_seed("sum", buf.clone());
    let map: Map<String, Count> = [("a".to_string(), Count(1)), ("b".to_string(), Count(7))]
        .into_iter()
        .collect();
    encode_record(
        &StoredRecord {
            version: 2,
            absorbed: Absorbed::default(),
            state: map,
        },
        &mut buf,
    )
    .expect("encode");
    record_seed("map", buf.clone());

    fn published<S: Serialize>(version: u64, partition: u32, delta: S) -> Vec<u8> {
        let mut buf = Vec::new();
        let written = Written {
            ranges: vec![Range {
                partition,
                from: 10,
                end: 20,
            }],
            idempotent: version == 0,
            delta,
        };
        encode_change(version, &written, &mut buf).expect("encode");
        buf
    }
    let changes = [
        (
            postcard::to_stdvec("product-1").expect("encode"),
            published(4, 0, &stats),
        ),
        (
            postcard::to_stdvec(&99_u64).expect("encode"),
            published(1, 3, Sum(7_i64)),
        ),
        (
            postcard::to_stdvec("").expect("encode"),
            published(0, 1, Stats::identity()),
        ),
    ];
    for (i, (key, payload)) in changes.iter().enumerate() {
        out.push(("change", format!("change-{i}"), join_change(key, payload)));
    }
    // Outbox rows: what `Outbox` writes, the changes of a batch.
    out.push((
        "outbox",
        "rows-3".into(),
        postcard::to_stdvec(&changes.to_vec()).expect("encode"),
    ));
    out.push((
        "outbox",
        "rows-1".into(),
        postcard::to_stdvec(&changes[..1].to_vec()).expect("encode"),
    ));
    out.push((
        "outbox",
        "empty".into(),
        postcard::to_stdvec(&Vec::<(Vec<u8>, Vec<u8>)>::new()).expect("encode"),
    ));

    // Partition files, written by the log itself.
    for (name, records) in [("one", 1_usize), ("five", 5), ("forty", 40)] {
        let file = partition_file(records);
        out.push((
            "log_frames",
            format!("{name}-rw"),
            [&[0][..], &file].concat(),
        ));
        out.push((
            "log_frames",
            format!("{name}-ro-batch3"),
            [&[LOG_READ_ONLY | (2 << 1)][..], &file].concat(),
        ));
    }
    let mut torn = partition_file(3);
    torn.truncate(torn.len() - 5);
    out.push(("log_frames", "torn-tail".into(), [&[0][..], &torn].concat()));
    out.push(("log_frames", "empty".into(), vec![0]));

    // Sketches, each in both codecs.
    for (kind, name) in SKETCHES.iter().enumerate() {
        for codec in [Codec::Postcard, Codec::Json] {
            let bytes = sample_sketch(kind, codec);
            let selector = u8::try_from(kind << 1).expect("few kinds")
                | u8::from(matches!(codec, Codec::Json));
            let file = name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect::<String>();
            let file = format!(
                "{}-{}",
                file.trim_end_matches('-'),
                match codec {
                    Codec::Postcard => "postcard",
                    Codec::Json => "json",
                }
            );
            out.push(("sketches", file, [&[selector][..], &bytes].concat()));
        }
    }
    out
}

/// An `Absorbed` with these `(source, partition, start, end)` ranges,
/// through its serde form (its builders are for tests only).
fn sample_absorbed(ranges: &[(u32, u32, u64, u64)]) -> Absorbed {
    #[derive(Serialize)]
    struct Same<'a> {
        ranges: &'a [(u32, u32, u64, u64)],
    }
    let bytes = postcard::to_stdvec(&Same { ranges }).expect("encode");
    crate::event::from_bytes(&bytes).expect("the same shape")
}

fn encode_event<E: Serialize>(event: &E) -> Vec<u8> {
    crate::event::encode(event).expect("encode")
}

fn sample_stats() -> Stats {
    let mut stats = Stats::identity();
    for (i, page) in ["/", "/a", "/", "/b", "/c", "/", "/a"].iter().enumerate() {
        let i = i as i64;
        let mut one = Stats {
            count: Count(1),
            total: Sum(i * 10 - 30),
            largest: Max(i),
            smallest: Min(-i),
            visitors: HyperLogLog::new(),
            pages: TopK::of((*page).to_string()),
            tags: [(format!("t{}", i % 3), Sum(i))].into_iter().collect(),
            members: OrSet::new(),
            latency: DdSketch::of(1.5 * i as f64 + 0.25).expect("finite"),
        };
        one.visitors.insert(&(i % 4));
        one.members.add(i as u64 % 2, (*page).to_string());
        stats.combine(&one);
    }
    stats
}

fn sample_sketch(kind: usize, codec: Codec) -> Vec<u8> {
    fn enc<T: Serialize>(value: &T, codec: Codec) -> Vec<u8> {
        encode_with(value, codec).expect("encode")
    }
    let words = ["a", "b", "a", "c", "a", "b"];
    match kind {
        0 => {
            let mut h = HyperLogLog::<8>::new();
            (0..20).for_each(|i| h.insert(&i));
            enc(&h, codec)
        }
        1 => {
            let mut h = HyperLogLog::<14>::new();
            (0..20).for_each(|i| h.insert(&i));
            enc(&h, codec)
        }
        2 => {
            let mut s = CountMinSketch::<64, 4>::new();
            words.iter().for_each(|w| s.add(w, 2));
            enc(&s, codec)
        }
        3 => {
            let mut s = CountMinSketch::<2048, 5>::new();
            words.iter().for_each(|w| s.add(w, 1));
            enc(&s, codec)
        }
        4 => {
            let mut b = Bloom::<512, 3>::new();
            words.iter().for_each(|w| b.insert(w));
            enc(&b, codec)
        }
        5 => {
            let mut b = Bloom::<8192, 7>::new();
            words.iter().for_each(|w| b.insert(w));
            enc(&b, codec)
        }
        6 => {
            let mut d = DdSketch::<10, 2048>::identity();
            for x in [-3.0, 0.0, 0.5, 1.0, 1e9] {
                d.insert(x).expect("finite");
            }
            enc(&d, codec)
        }
        7 => {
            let mut d = DdSketch::<20, 16>::identity();
            for i in 0..100 {
                d.insert(f64::from(i) * 1.7 - 20.0).expect("finite");
            }
            enc(&d, codec)
        }
        8 => {
            let mut t = TopK::<String, 4>::identity();
            words.iter().for_each(|w| t.insert((*w).to_string()));
            t.insert_n("d".into(), 3);
            t.insert_n("e".into(), 1);
            enc(&t, codec)
        }
        9 => {
            let mut t = TopK::<u64>::identity();
            (0..30_u64).for_each(|i| t.insert(i % 13));
            enc(&t, codec)
        }
        10 => {
            let mut s = OrSet::<String>::new();
            s.add(1, "x".into());
            s.add(2, "y".into());
            s.add(1, "z".into());
            s.remove("y");
            enc(&s, codec)
        }
        11 => {
            let mut c = GCounter::new();
            c.increment(1, 5);
            c.increment(9, 2);
            enc(&c, codec)
        }
        12 => {
            let mut c = PnCounter::new();
            c.increment(1, 5);
            c.decrement(2, 8);
            enc(&c, codec)
        }
        13 => {
            let mut m = MultiValue::<String>::new();
            m.write(1, "one".into());
            let other = MultiValue::<String>::new().write_delta(2, "two".into());
            m.combine(&other);
            enc(&m, codec)
        }
        14 => {
            let mut s = TwoPhaseSet::<String>::new();
            s.add("a".into());
            s.add("b".into());
            s.remove("a".into());
            enc(&s, codec)
        }
        15 => {
            let m: Map<String, Sum<i64>> = [("x".to_string(), Sum(3)), ("y".to_string(), Sum(-1))]
                .into_iter()
                .collect();
            enc(&m, codec)
        }
        16 => {
            let mut w = Windowed::<Count, 1000, 4>::at(1500, Count(2));
            for t in [0, 2500, 9999, -1] {
                w.combine(&Windowed::at(t, Count(1)));
            }
            enc(&w, codec)
        }
        17 => {
            let mut s = OrSet::<String>::new();
            s.add(1, "x".into());
            s.add(1, "y".into());
            s.add(4, "x".into());
            enc(s.context(), codec)
        }
        18 => {
            let m = [1.0, 2.0, 4.5]
                .iter()
                .map(|&x| Moments::of(x))
                .fold(Moments::identity(), |a, b| a.combined(&b));
            enc(&m, codec)
        }
        19 => {
            let a = [1.0, 2.0, 4.5]
                .iter()
                .map(|&x| Average::of(x))
                .fold(Average::identity(), |a, b| a.combined(&b));
            enc(&a, codec)
        }
        20 => {
            let s: GSet<String> = ["a", "b"].iter().map(|s| (*s).to_string()).collect();
            enc(&s, codec)
        }
        _ => enc(&LastWriteWins::new(5, 2, "five".to_string()), codec),
    }
}

/// The bytes of partition 0 after appending `records` records, with and
/// without origins, keys and payloads of several sizes.
fn partition_file(records: usize) -> Vec<u8> {
    let dir = TempDir::new().expect("temp dir");
    let log = EmbeddedLog::open_with(&dir.0, SyncPolicy::Never).expect("open");
    log.create_topic(LOG_TOPIC, 1).expect("create");
    let payloads: Vec<Vec<u8>> = (0..records)
        .map(|i| crate::event::encode(&(i as u64, "x".repeat(i % 7))).expect("encode"))
        .collect();
    let keys: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; i % 3]).collect();
    let batch: Vec<NewRecord<'_>> = (0..records)
        .map(|i| NewRecord {
            key: &keys[i],
            payload: &payloads[i],
            timestamp: i as i64 * 1000 - 5,
            origin: (i % 2 == 1).then_some(EventId {
                source: 7,
                partition: i as u32,
                offset: i as u64 * 3,
            }),
        })
        .collect();
    log.append(LOG_TOPIC, 0, &batch).expect("append");
    drop(log);
    std::fs::read(dir.0.join("topics").join(LOG_TOPIC).join("0.log")).expect("read")
}

/// The directory of a target's seed corpus under a `fuzz/` directory.
pub fn corpus_dir(fuzz: &Path, target: &str) -> PathBuf {
    fuzz.join("corpus").join(target)
}

/// The directory of a target's kept crash and regression inputs.
pub fn regressions_dir(fuzz: &Path, target: &str) -> PathBuf {
    fuzz.join("regressions").join(target)
}
