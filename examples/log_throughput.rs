//! A rough throughput check of the embedded log, run by hand (not a test):
//! appends small records in batches, then reads them all back, and prints
//! records per second for both.
//!
//! ```text
//! cargo run --release --example log_throughput [records] [batch] [directory]
//! ```
//!
//! Defaults: 5,000,000 records of about 40 bytes (an 8-byte key, a 32-byte
//! payload), appended 1,000 per call with [`SyncPolicy::Never`], into a
//! temporary directory; reads ask for 10,000 records per call. The read pass
//! runs from the page cache, so it measures decoding, not the disk.
//!
//! On a shared machine wall-clock time includes waiting for a core, so on
//! Linux the thread's CPU time (`/proc/thread-self/schedstat`) is printed as
//! well: records per CPU-second is the cost of the log itself.

use std::time::Instant;

use accrete::log::{EmbeddedLog, Log, NewRecord, RecordBatch, SyncPolicy};

fn main() -> accrete::Result<()> {
    let mut args = std::env::args().skip(1);
    let records: u64 = args
        .next()
        .map_or(5_000_000, |a| a.parse().expect("records: a number"));
    let batch_size: u64 = args
        .next()
        .map_or(1_000, |a| a.parse().expect("batch: a number"));
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = args
        .next()
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);

    let log = EmbeddedLog::open_with(&dir, SyncPolicy::Never)?;
    log.create_topic("throughput", 1)?;

    let keys: Vec<[u8; 8]> = (0..batch_size)
        .map(|i| {
            *format!("user{:04}", i % 10_000)
                .as_bytes()
                .first_chunk()
                .unwrap()
        })
        .collect();
    let payload = [b'x'; 32];
    let batch: Vec<NewRecord<'_>> = keys
        .iter()
        .enumerate()
        .map(|(i, key)| NewRecord {
            key,
            timestamp: 1_700_000_000_000 + i as i64,
            payload: &payload,
            origin: None,
        })
        .collect();

    let (start, cpu) = (Instant::now(), cpu_time());
    let mut appended = 0;
    while appended < records {
        let n = batch_size.min(records - appended) as usize;
        log.append("throughput", 0, &batch[..n])?;
        appended += n as u64;
    }
    let append_secs = start.elapsed().as_secs_f64();
    let append_cpu = cpu_time().zip(cpu).map(|(b, a)| b - a);
    let bytes = std::fs::metadata(dir.join("topics/throughput/0.log")).map_or(0, |m| m.len());

    let (start, cpu) = (Instant::now(), cpu_time());
    let mut read = RecordBatch::new();
    let (mut from, mut checksum) = (0_u64, 0_u64);
    while from < records {
        log.read("throughput", 0, from, 10_000, &mut read)?;
        for r in read.iter() {
            checksum = checksum.wrapping_add(r.timestamp as u64 + r.payload.len() as u64);
        }
        from = read.next_offset().expect("records up to the end");
    }
    let read_secs = start.elapsed().as_secs_f64();
    let read_cpu = cpu_time().zip(cpu).map(|(b, a)| b - a);
    assert_eq!(from, records);

    let rate = |secs: f64| records as f64 / secs / 1e6;
    let cpu = |secs: Option<f64>| {
        secs.map_or(String::new(), |s| {
            format!("; CPU {s:.2} s, {:.2} M records per CPU-second", rate(s))
        })
    };
    println!(
        "{records} records, {:.1} MB on disk ({:.1} bytes per record)",
        bytes as f64 / 1e6,
        bytes as f64 / records as f64
    );
    println!(
        "append: {append_secs:.2} s, {:.2} M records/s (batches of {batch_size}){}",
        rate(append_secs),
        cpu(append_cpu)
    );
    println!(
        "read:   {read_secs:.2} s, {:.2} M records/s{}",
        rate(read_secs),
        cpu(read_cpu)
    );
    println!("(checksum {checksum})");
    Ok(())
}

/// This thread's CPU time in seconds (Linux), or `None`.
fn cpu_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(nanos as f64 / 1e9)
}
