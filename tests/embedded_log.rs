//! The embedded log: round trips, reopening, crash recovery, corruption,
//! concurrency, consumer-group offsets and name checks.
//!
//! Randomized tests print their seed; replay one with `ACCRETE_SEED=<seed>`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use accrete::Error;
use accrete::event::EventId;
use accrete::log::{EmbeddedLog, Log, NewRecord, READ_BYTES, RecordBatch, SyncPolicy};

/// The seed for one randomized test: `ACCRETE_SEED` if set, else fresh.
fn seed(test: &str) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    let seed = std::env::var("ACCRETE_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| RandomState::new().hash_one(test));
    eprintln!("{test}: seed {seed} (replay with ACCRETE_SEED={seed})");
    seed
}

/// SplitMix64.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn for_test(test: &str) -> Self {
        Rng(seed(test))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }
}

/// A record read back, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owned {
    offset: u64,
    key: Vec<u8>,
    timestamp: i64,
    payload: Vec<u8>,
    origin: Option<EventId>,
}

fn owned(batch: &RecordBatch) -> Vec<Owned> {
    batch
        .iter()
        .map(|r| Owned {
            offset: r.offset,
            key: r.key.to_vec(),
            timestamp: r.timestamp,
            payload: r.payload.to_vec(),
            origin: r.origin,
        })
        .collect()
}

fn read(log: &impl Log, topic: &str, partition: u32, from: u64, max: usize) -> Vec<Owned> {
    let mut batch = RecordBatch::new();
    log.read(topic, partition, from, max, &mut batch).unwrap();
    owned(&batch)
}

fn read_all(log: &impl Log, topic: &str, partition: u32) -> Vec<Owned> {
    read(log, topic, partition, 0, usize::MAX)
}

/// The record the tests write at `offset`: its payload says which it is,
/// and its length varies, so a partial or misplaced record shows.
fn payload_for(partition: u32, offset: u64) -> Vec<u8> {
    let len = (offset * 7 + u64::from(partition) * 13) % 90;
    let mut p = format!("{partition}:{offset}:").into_bytes();
    p.extend((0..len).map(|i| (i as u8).wrapping_add(offset as u8)));
    p
}

fn record(payload: &[u8]) -> NewRecord<'_> {
    NewRecord {
        key: b"k",
        timestamp: 1,
        payload,
        origin: None,
    }
}

fn partition_file(dir: &Path, topic: &str, partition: u32) -> PathBuf {
    dir.join("topics")
        .join(topic)
        .join(format!("{partition}.log"))
}

#[test]
fn records_round_trip_with_and_without_origin() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    log.create_topic("t", 2).unwrap();
    let big = vec![0xab; 600 << 10]; // larger than one read chunk
    let origin = EventId {
        source: 0xdead_beef,
        partition: 7,
        offset: u64::MAX - 1,
    };
    let records = [
        NewRecord {
            key: b"a",
            timestamp: 0,
            payload: b"first",
            origin: None,
        },
        NewRecord {
            key: b"",
            timestamp: -1,
            payload: b"",
            origin: Some(origin),
        },
        NewRecord {
            key: &[0xff; 300],
            timestamp: i64::MAX,
            payload: &big,
            origin: None,
        },
        NewRecord {
            key: b"z",
            timestamp: i64::MIN,
            payload: b"last",
            origin: Some(origin),
        },
    ];
    assert_eq!(log.append("t", 1, &records[..1]).unwrap(), 0);
    assert_eq!(log.append("t", 1, &records[1..]).unwrap(), 1);
    assert_eq!(
        log.append("t", 1, &[]).unwrap(),
        4,
        "an empty append returns the end"
    );
    assert_eq!(log.end_offset("t", 1).unwrap(), 4);
    assert_eq!(log.end_offset("t", 0).unwrap(), 0);

    let expected: Vec<Owned> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Owned {
            offset: i as u64,
            key: r.key.to_vec(),
            timestamp: r.timestamp,
            payload: r.payload.to_vec(),
            origin: r.origin,
        })
        .collect();
    assert_eq!(read_all(&log, "t", 1), expected);
    for from in 0..=5 {
        for max in 0..=5 {
            let got = read(&log, "t", 1, from, max);
            let want: Vec<_> = expected
                .iter()
                .skip(from as usize)
                .take(max)
                .cloned()
                .collect();
            assert_eq!(got, want, "from {from} max {max}");
        }
    }
    assert!(read_all(&log, "t", 0).is_empty());

    let mut batch = RecordBatch::new();
    log.read("t", 1, 2, 2, &mut batch).unwrap();
    assert_eq!(batch.next_offset(), Some(4));
    log.read("t", 1, 4, 10, &mut batch).unwrap();
    assert!(batch.is_empty(), "a read replaces the batch's contents");
}

#[test]
fn reads_from_the_middle_of_a_large_partition_return_exactly_the_right_offsets() {
    let mut rng = Rng::for_test("reads_from_the_middle_of_a_large_partition");
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open_with(tmp.path(), SyncPolicy::Never).unwrap();
    log.create_topic("big", 1).unwrap();
    let n = 100_000_u64;
    let mut next = 0;
    while next < n {
        let count = rng.range(1, 3000).min(n - next);
        let payloads: Vec<_> = (next..next + count).map(|o| payload_for(0, o)).collect();
        let records: Vec<_> = payloads.iter().map(|p| record(p)).collect();
        assert_eq!(log.append("big", 0, &records).unwrap(), next);
        next += count;
    }

    let check = |log: &EmbeddedLog, rng: &mut Rng| {
        assert_eq!(log.end_offset("big", 0).unwrap(), n);
        let mut batch = RecordBatch::new();
        for _ in 0..200 {
            let from = rng.range(0, n + 10);
            let max = match rng.range(0, 20) {
                0..10 => rng.range(0, 5) as usize,
                10..19 => rng.range(0, 5000) as usize,
                _ => usize::MAX,
            };
            log.read("big", 0, from, max, &mut batch).unwrap();
            let expected = (n.saturating_sub(from) as usize).min(max);
            assert_eq!(batch.len(), expected, "from {from} max {max}");
            for (i, r) in batch.iter().enumerate() {
                assert_eq!(r.offset, from + i as u64);
                assert_eq!(r.payload, payload_for(0, r.offset), "offset {}", r.offset);
            }
        }
        // Sequential consumption in odd-sized steps sees every record once.
        let mut from = 0;
        while from < n {
            log.read("big", 0, from, 777, &mut batch).unwrap();
            assert!(!batch.is_empty());
            for r in batch.iter() {
                assert_eq!(r.offset, from);
                assert_eq!(r.payload, payload_for(0, from));
                from += 1;
            }
        }
    };
    check(&log, &mut rng);
    drop(log);
    // Reopened, the index is rebuilt by the scan.
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    check(&log, &mut rng);
}

/// A read of large records stops once it holds `READ_BYTES`, whatever its
/// `max`: a reader far behind holds about that much at once (it read its
/// whole batch, and past 4 GiB a batch's record starts overflowed: an
/// attack, session 15). The next read goes on from there.
#[test]
fn a_read_of_large_records_stops_at_its_byte_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open_with(tmp.path(), SyncPolicy::Never).unwrap();
    log.create_topic("large", 1).unwrap();
    let size = 8 << 20;
    let n = (READ_BYTES / size + 8) as u64;
    for offset in 0..n {
        let mut payload = vec![offset as u8; size];
        payload[..8].copy_from_slice(&offset.to_be_bytes());
        log.append("large", 0, &[record(&payload)]).unwrap();
    }
    let mut batch = RecordBatch::new();
    let mut from = 0;
    let mut reads = 0;
    while from < n {
        log.read("large", 0, from, usize::MAX, &mut batch).unwrap();
        reads += 1;
        assert!(!batch.is_empty(), "from {from}");
        let last = batch.iter().last().unwrap();
        let before_last = batch.bytes() - last.key.len() - last.payload.len();
        assert!(before_last < READ_BYTES, "a read went on past its budget");
        assert!(
            batch.bytes() >= READ_BYTES || last.offset + 1 == n,
            "a read stopped short of its budget at {}",
            batch.bytes()
        );
        for r in batch.iter() {
            assert_eq!(r.offset, from);
            assert_eq!(r.payload.len(), size);
            assert_eq!(r.payload[..8], from.to_be_bytes());
            from += 1;
        }
    }
    assert_eq!(reads, 2);
}

#[test]
fn reopening_sees_every_topic_and_record_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("a", 3).unwrap();
        log.create_topic("b.events-v2_x", 1).unwrap();
        for p in 0..3 {
            let payloads: Vec<_> = (0..u64::from(p) * 10).map(|o| payload_for(p, o)).collect();
            let records: Vec<_> = payloads.iter().map(|x| record(x)).collect();
            log.append("a", p, &records).unwrap();
        }
        log.append("b.events-v2_x", 0, &[record(b"one")]).unwrap();
    }
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.partitions("a").unwrap(), 3);
    assert_eq!(log.partitions("b.events-v2_x").unwrap(), 1);
    log.create_topic("a", 3).unwrap(); // still a no-op
    for p in 0..3 {
        let got = read_all(&log, "a", p);
        assert_eq!(got.len() as u64, u64::from(p) * 10);
        for r in &got {
            assert_eq!(r.payload, payload_for(p, r.offset));
        }
    }
    assert_eq!(log.append("a", 2, &[record(b"more")]).unwrap(), 20);
    assert_eq!(
        log.append("b.events-v2_x", 0, &[record(b"two")]).unwrap(),
        1
    );
    drop(log);
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(read(&log, "a", 2, 20, 10)[0].payload, b"more");
    let b: Vec<_> = read_all(&log, "b.events-v2_x", 0)
        .into_iter()
        .map(|r| r.payload)
        .collect();
    assert_eq!(b, [b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn a_torn_tail_is_cut_at_every_position_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = EventId {
        source: 1,
        partition: 2,
        offset: 3,
    };
    let records: Vec<_> = (0..5)
        .map(|i| NewRecord {
            key: b"key",
            timestamp: i,
            payload: b"some payload",
            origin: Some(origin),
        })
        .collect();
    let path = partition_file(tmp.path(), "t", 0);
    let (whole, last_start) = {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("t", 1).unwrap();
        log.append("t", 0, &records[..4]).unwrap();
        let last_start = fs::metadata(&path).unwrap().len();
        log.append("t", 0, &records[4..]).unwrap();
        (fs::read(&path).unwrap(), last_start as usize)
    };
    let expected: Vec<_> = {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        read_all(&log, "t", 0)
    };
    assert_eq!(expected.len(), 5);

    for cut in last_start..whole.len() {
        fs::write(&path, &whole[..cut]).unwrap();
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        assert_eq!(log.end_offset("t", 0).unwrap(), 4, "cut at {cut}");
        assert_eq!(read_all(&log, "t", 0), expected[..4], "cut at {cut}");
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            last_start,
            "the tail is cut off"
        );
        let next = NewRecord {
            key: b"new",
            timestamp: 9,
            payload: b"after the crash",
            origin: None,
        };
        assert_eq!(log.append("t", 0, &[next]).unwrap(), 4, "cut at {cut}");
        drop(log);
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        let got = read_all(&log, "t", 0);
        assert_eq!(got[..4], expected[..4]);
        assert_eq!(got.len(), 5);
        assert_eq!(
            (got[4].offset, &got[4].payload[..]),
            (4, &b"after the crash"[..])
        );
    }
}

#[test]
fn a_damaged_record_in_the_middle_is_corruption_not_data_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let path = partition_file(tmp.path(), "t", 0);
    let mut starts = Vec::new();
    {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("t", 1).unwrap();
        for i in 0..10 {
            starts.push(fs::metadata(&path).unwrap().len() as usize);
            log.append("t", 0, &[record(&payload_for(0, i))]).unwrap();
        }
    }
    let whole = fs::read(&path).unwrap();
    starts.push(whole.len());

    // Every byte of record 3, header included.
    for at in starts[3]..starts[4] {
        let mut bad = whole.clone();
        bad[at] ^= 0xff;
        fs::write(&path, &bad).unwrap();
        match EmbeddedLog::open(tmp.path()) {
            Err(Error::Corrupt { what, detail }) => {
                assert_eq!(what, "log partition");
                assert!(detail.contains(&path.display().to_string()), "{detail}");
                assert!(
                    detail.contains(&format!("record 3 at byte {}", starts[3])),
                    "{detail}"
                );
            }
            other => panic!("flip at byte {at}: expected corruption, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), bad, "nothing is truncated");
    }

    // Damage in the last record is a torn tail: cut, with the rest kept.
    let mut bad = whole.clone();
    bad[starts[9] + 10] ^= 0xff;
    fs::write(&path, &bad).unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.end_offset("t", 0).unwrap(), 9);
}

#[test]
fn damage_after_opening_is_reported_by_read() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    log.create_topic("t", 1).unwrap();
    let payloads: Vec<_> = (0..100).map(|o| payload_for(0, o)).collect();
    log.append(
        "t",
        0,
        &payloads.iter().map(|p| record(p)).collect::<Vec<_>>(),
    )
    .unwrap();
    let path = partition_file(tmp.path(), "t", 0);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    let mut batch = RecordBatch::new();
    let err = log.read("t", 0, 0, 1000, &mut batch).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // A file cut short under a running log is reported too.
    fs::write(&path, &bytes[..middle]).unwrap();
    let err = log.read("t", 0, 90, 1000, &mut batch).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn concurrent_appenders_and_a_tailing_reader_see_whole_records_once_in_order() {
    let rng = Rng::for_test("concurrent_appenders_and_a_tailing_reader");
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open_with(tmp.path(), SyncPolicy::Never).unwrap());
    let partitions = 2_u32;
    let per_partition = 60_000_u64;
    log.create_topic("t", partitions).unwrap();
    let done = Arc::new(AtomicBool::new(false));

    let reader = {
        let (log, done, mut rng) = (log.clone(), done.clone(), rng.clone());
        rng.0 ^= 0xffff;
        std::thread::spawn(move || {
            let mut next = vec![0_u64; partitions as usize];
            let mut batch = RecordBatch::new();
            let mut reads = 0_u64;
            while next.iter().any(|&n| n < per_partition) {
                let finished = done.load(Ordering::Acquire);
                let before = next.clone();
                for p in 0..partitions {
                    let max = rng.range(1, 2000) as usize;
                    log.read("t", p, next[p as usize], max, &mut batch).unwrap();
                    reads += 1;
                    for r in batch.iter() {
                        assert_eq!(r.offset, next[p as usize], "partition {p}");
                        assert_eq!(r.payload, payload_for(p, r.offset), "partition {p}");
                        next[p as usize] += 1;
                    }
                }
                // Once every append has returned, a pass must make progress.
                assert!(!finished || next != before, "stuck at {next:?}");
            }
            assert_eq!(next, vec![per_partition; partitions as usize]);
            reads
        })
    };
    // A second reader probes the very end, as soon as it is published.
    let prober = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut batch = RecordBatch::new();
            let mut probes = 0_u64;
            while !done.load(Ordering::Acquire) {
                for p in 0..partitions {
                    let end = log.end_offset("t", p).unwrap();
                    log.read("t", p, end.saturating_sub(1), 2, &mut batch)
                        .unwrap();
                    probes += 1;
                    assert!(
                        batch.len() >= usize::from(end > 0),
                        "partition {p} end {end}"
                    );
                    for r in batch.iter() {
                        assert_eq!(r.payload, payload_for(p, r.offset), "partition {p}");
                    }
                }
            }
            probes
        })
    };
    let writers: Vec<_> = (0..partitions)
        .map(|p| {
            let (log, mut rng) = (log.clone(), rng.clone());
            rng.0 ^= u64::from(p);
            std::thread::spawn(move || {
                // Prepared up front, so appending is most of what this thread does.
                let payloads: Vec<_> = (0..per_partition).map(|o| payload_for(p, o)).collect();
                let records: Vec<_> = payloads.iter().map(|x| record(x)).collect();
                let mut next = 0;
                while next < per_partition {
                    let count = rng.range(1, 500).min(per_partition - next);
                    let batch = &records[next as usize..(next + count) as usize];
                    assert_eq!(log.append("t", p, batch).unwrap(), next);
                    next += count;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let reads = reader.join().unwrap();
    let probes = prober.join().unwrap();
    eprintln!("the reader made {reads} reads, the prober {probes}");
    for p in 0..partitions {
        assert_eq!(log.end_offset("t", p).unwrap(), per_partition);
    }
}

#[test]
fn concurrent_appenders_to_one_partition_get_dense_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open_with(tmp.path(), SyncPolicy::Never).unwrap());
    log.create_topic("t", 1).unwrap();
    let threads = 4_u64;
    let batches = 500_u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for b in 0..batches {
                    let payloads: Vec<_> = (0..3)
                        .map(|i| format!("{t}:{b}:{i}").into_bytes())
                        .collect();
                    let records: Vec<_> = payloads.iter().map(|x| record(x)).collect();
                    log.append("t", 0, &records).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let got = read_all(&*log, "t", 0);
    assert_eq!(got.len() as u64, threads * batches * 3);
    let mut seen = vec![0_u64; threads as usize];
    for (i, chunk) in got.chunks(3).enumerate() {
        // Each append's records are contiguous; each thread's appends in order.
        let s = String::from_utf8(chunk[0].payload.clone()).unwrap();
        let (t, rest) = s.split_once(':').unwrap();
        let t: u64 = t.parse().unwrap();
        let b: u64 = rest.split_once(':').unwrap().0.parse().unwrap();
        assert_eq!(b, seen[t as usize]);
        seen[t as usize] += 1;
        for (j, r) in chunk.iter().enumerate() {
            assert_eq!(r.offset, (i * 3 + j) as u64);
            assert_eq!(r.payload, format!("{t}:{b}:{j}").into_bytes());
        }
    }
}

#[test]
fn create_topic_races_are_harmless() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(EmbeddedLog::open(tmp.path()).unwrap());
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || log.create_topic("raced", 5))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    assert_eq!(log.partitions("raced").unwrap(), 5);
    match log.create_topic("raced", 6) {
        Err(Error::TopicMismatch {
            existing: 5,
            requested: 6,
            ..
        }) => {}
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(matches!(log.create_topic("none", 0), Err(Error::Usage(_))));
    drop(log);
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.partitions("raced").unwrap(), 5);
}

#[test]
fn group_offsets_survive_reopening_and_reset() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("t", 3).unwrap();
        log.create_topic("u", 1).unwrap();
        assert_eq!(log.committed("g", "t", 0).unwrap(), 0, "unknown group");
        log.commit("g", "t", 0, 10).unwrap();
        log.commit("g", "t", 2, 7).unwrap();
        log.commit("g", "t", 0, 12).unwrap();
        log.commit("g", "u", 0, 99).unwrap();
        log.commit("other", "t", 1, 5).unwrap();
        assert_eq!(log.committed("g", "t", 0).unwrap(), 12);
        assert_eq!(log.committed("g", "t", 1).unwrap(), 0);
    }
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.committed("g", "t", 0).unwrap(), 12);
    assert_eq!(log.committed("g", "t", 1).unwrap(), 0);
    assert_eq!(log.committed("g", "t", 2).unwrap(), 7);
    assert_eq!(log.committed("g", "u", 0).unwrap(), 99);
    assert_eq!(log.committed("other", "t", 1).unwrap(), 5);

    log.reset_group("g", "t").unwrap();
    assert!(
        !tmp.path().join("groups/g/t").exists(),
        "the group's file is deleted"
    );
    for p in 0..3 {
        assert_eq!(log.committed("g", "t", p).unwrap(), 0);
    }
    assert_eq!(
        log.committed("g", "u", 0).unwrap(),
        99,
        "other topics keep theirs"
    );
    assert_eq!(
        log.committed("other", "t", 1).unwrap(),
        5,
        "other groups keep theirs"
    );
    log.reset_group("g", "t").unwrap(); // twice is fine
    log.reset_group("never", "t").unwrap();
    log.commit("g", "t", 1, 3).unwrap();
    drop(log);
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(
        (0..3)
            .map(|p| log.committed("g", "t", p).unwrap())
            .collect::<Vec<_>>(),
        [0, 3, 0]
    );

    assert!(matches!(
        log.commit("g", "nope", 0, 1),
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        log.committed("g", "nope", 0),
        Err(Error::UnknownTopic(_))
    ));
    assert!(matches!(
        log.commit("g", "t", 3, 1),
        Err(Error::UnknownPartition {
            partitions: 3,
            partition: 3,
            ..
        })
    ));
}

#[test]
fn bad_names_are_rejected_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    let long = "x".repeat(201);
    for bad in [
        "", ".", "..", "a/b", "../etc", "a b", "tab\t", "ü", "a~tmp", "nul\0", &long,
    ] {
        match log.create_topic(bad, 1) {
            Err(e @ Error::InvalidName { kind: "topic", .. }) => {
                let message = e.to_string();
                assert!(message.contains("invalid topic name"), "{message}");
            }
            other => panic!("topic {bad:?}: expected InvalidName, got {other:?}"),
        }
    }
    let e = log.create_topic("a/b", 1).unwrap_err().to_string();
    assert!(e.contains("\"a/b\"") && e.contains("A-Z"), "{e}");

    let ok = "y".repeat(200);
    for good in ["a", "A.b_c-9", "...", ".hidden", &ok] {
        log.create_topic(good, 1).unwrap();
    }
    for bad in ["", "..", "g/h", &long] {
        assert!(matches!(
            log.commit(bad, "a", 0, 1),
            Err(Error::InvalidName { kind: "group", .. })
        ));
        assert!(matches!(
            log.committed(bad, "a", 0),
            Err(Error::InvalidName { kind: "group", .. })
        ));
        assert!(matches!(
            log.reset_group(bad, "a"),
            Err(Error::InvalidName { kind: "group", .. })
        ));
    }
    assert!(matches!(
        log.reset_group("g", "../a"),
        Err(Error::InvalidName { kind: "topic", .. })
    ));
    drop(log);
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.partitions(&ok).unwrap(), 1);
    assert_eq!(log.partitions("...").unwrap(), 1);
}

#[test]
fn unknown_topics_and_partitions_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    log.create_topic("t", 2).unwrap();
    let mut batch = RecordBatch::new();
    let unknown_topic = |r: Result<(), Error>| match r {
        Err(Error::UnknownTopic(t)) => assert_eq!(t, "x"),
        other => panic!("expected UnknownTopic, got {other:?}"),
    };
    unknown_topic(log.partitions("x").map(drop));
    unknown_topic(log.append("x", 0, &[record(b"p")]).map(drop));
    unknown_topic(log.read("x", 0, 0, 10, &mut batch));
    unknown_topic(log.end_offset("x", 0).map(drop));
    let unknown_partition = |r: Result<(), Error>| match r {
        Err(e @ Error::UnknownPartition { .. }) => {
            assert_eq!(
                e.to_string(),
                "topic `t` has 2 partitions; partition 2 does not exist"
            );
        }
        other => panic!("expected UnknownPartition, got {other:?}"),
    };
    unknown_partition(log.append("t", 2, &[record(b"p")]).map(drop));
    unknown_partition(log.read("t", 2, 0, 10, &mut batch));
    unknown_partition(log.end_offset("t", 2).map(drop));
}

#[test]
fn an_unfinished_topic_creation_is_ignored_and_can_be_redone() {
    let tmp = tempfile::tempdir().unwrap();
    drop(EmbeddedLog::open(tmp.path()).unwrap());
    // A crash after the directory and files were made, before `meta`.
    fs::create_dir_all(tmp.path().join("topics/half")).unwrap();
    fs::write(partition_file(tmp.path(), "half", 0), b"").unwrap();
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert!(matches!(
        log.partitions("half"),
        Err(Error::UnknownTopic(_))
    ));
    log.create_topic("half", 2).unwrap();
    log.append("half", 1, &[record(b"p")]).unwrap();
    drop(log);
    let log = EmbeddedLog::open(tmp.path()).unwrap();
    assert_eq!(log.partitions("half").unwrap(), 2);
    assert_eq!(log.end_offset("half", 1).unwrap(), 1);
}

#[test]
fn a_newer_format_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    EmbeddedLog::open(tmp.path())
        .unwrap()
        .create_topic("t", 1)
        .unwrap();
    let meta = tmp.path().join("topics/t/meta");
    let text = fs::read_to_string(&meta).unwrap();
    assert_eq!(text, "accrete log topic\nformat 1\npartitions 1\n");
    fs::write(&meta, text.replace("format 1", "format 2")).unwrap();
    let err = EmbeddedLog::open(tmp.path()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corrupt {
                what: "topic meta",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn oversized_records_are_refused_and_nothing_is_appended() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open_with(tmp.path(), SyncPolicy::Never).unwrap();
    log.create_topic("t", 1).unwrap();
    let huge = vec![0_u8; EmbeddedLog::MAX_RECORD_BYTES + 1];
    let err = log
        .append("t", 0, &[record(b"fine"), record(&huge)])
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err}");
    assert_eq!(log.end_offset("t", 0).unwrap(), 0);
    assert_eq!(log.append("t", 0, &[record(b"fine")]).unwrap(), 0);
}

#[test]
fn a_tail_of_zeros_or_garbage_after_a_power_failure_is_cut() {
    let mut rng = Rng::for_test("a_tail_of_zeros_or_garbage_after_a_power_failure_is_cut");
    let tmp = tempfile::tempdir().unwrap();
    let path = partition_file(tmp.path(), "t", 0);
    {
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("t", 1).unwrap();
        let payloads: Vec<_> = (0..1000).map(|o| payload_for(0, o)).collect();
        log.append(
            "t",
            0,
            &payloads.iter().map(|p| record(p)).collect::<Vec<_>>(),
        )
        .unwrap();
    }
    let whole = fs::read(&path).unwrap();
    // The file's size was updated but its last blocks never written (zeros),
    // or written with junk: either way no valid record follows the damage.
    let zeros = vec![0_u8; 4 << 20];
    let garbage: Vec<u8> = (0..4 << 20).map(|_| rng.next_u64() as u8).collect();
    for tail in [zeros, garbage] {
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&tail);
        fs::write(&path, &bytes).unwrap();
        let started = std::time::Instant::now();
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        eprintln!("recovered in {:?}", started.elapsed());
        assert_eq!(log.end_offset("t", 0).unwrap(), 1000);
        assert_eq!(fs::read(&path).unwrap(), whole);
        assert_eq!(log.append("t", 0, &[record(b"next")]).unwrap(), 1000);
        drop(log);
        fs::write(&path, &whole).unwrap();
    }
}

/// A torn tail is cut whatever the torn record's payload holds, even bytes
/// that are themselves a valid frame of this log (a log record carried as a
/// payload: an export, a forwarded batch): the frame inside the torn record
/// is not a record that follows it.
#[test]
fn a_torn_tail_is_cut_whatever_its_payload_holds() {
    let mut rng = Rng::for_test("a_torn_tail_is_cut_whatever_its_payload_holds");
    // Payloads: random bytes, and whole frames of another log.
    let frames = {
        let tmp = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(tmp.path()).unwrap();
        log.create_topic("inner", 1).unwrap();
        for i in 0..3_u64 {
            let payload = payload_for(0, i);
            log.append("inner", 0, &[record(&payload)]).unwrap();
        }
        fs::read(partition_file(tmp.path(), "inner", 0)).unwrap()
    };
    for round in 0..40 {
        let tmp = tempfile::tempdir().unwrap();
        let path = partition_file(tmp.path(), "t", 0);
        let payload: Vec<u8> = match round % 3 {
            0 => frames.clone(),
            1 => {
                let from = rng.range(0, frames.len() as u64 / 2) as usize;
                let mut p: Vec<u8> = (0..rng.range(0, 50))
                    .map(|_| rng.range(0, 256) as u8)
                    .collect();
                p.extend(&frames[from..]);
                p
            }
            _ => (0..rng.range(1, 300))
                .map(|_| rng.range(0, 256) as u8)
                .collect(),
        };
        let (whole, last_start) = {
            let log = EmbeddedLog::open(tmp.path()).unwrap();
            log.create_topic("t", 1).unwrap();
            log.append("t", 0, &[record(b"first"), record(b"second")])
                .unwrap();
            let last_start = fs::metadata(&path).unwrap().len() as usize;
            log.append("t", 0, &[record(&payload)]).unwrap();
            (fs::read(&path).unwrap(), last_start)
        };
        for cut in last_start..whole.len() {
            fs::write(&path, &whole[..cut]).unwrap();
            let log = EmbeddedLog::open(tmp.path())
                .unwrap_or_else(|e| panic!("round {round}, cut at {cut}: {e}"));
            assert_eq!(
                log.end_offset("t", 0).unwrap(),
                2,
                "round {round}, cut at {cut}"
            );
            let got = read_all(&log, "t", 0);
            assert_eq!(&got[1].payload[..], b"second");
        }
        // A power failure: the file has the record's length, but its end
        // was never written (zeros).
        for zeros_from in (last_start + 20..whole.len()).step_by(7) {
            let mut torn = whole.clone();
            torn[zeros_from..].fill(0);
            if torn == whole {
                continue; // the record ended in zeros anyway: it is whole
            }
            fs::write(&path, &torn).unwrap();
            let log = EmbeddedLog::open(tmp.path())
                .unwrap_or_else(|e| panic!("round {round}, zeros from {zeros_from}: {e}"));
            assert_eq!(
                log.end_offset("t", 0).unwrap(),
                2,
                "round {round}, zeros from {zeros_from}"
            );
        }
    }
}
