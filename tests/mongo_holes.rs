//! Suspected holes of the Kafka + MongoDB backend (issue #10), each shown
//! against the real servers (`scripts/servers.sh start`; addresses from
//! `ACCRETE_KAFKA_BROKERS` and `ACCRETE_MONGODB_URI`). Without them the tests
//! fail, saying so.
//!
//! Each test starts one in-process node on its own topics and database,
//! submits a few events and checks what MongoDB, the dead letters and the
//! node's replica hold.
#![cfg(all(feature = "kafka", feature = "mongodb"))]

use accrete::Deployment;
use std::time::{Duration, Instant};

use accrete::cluster::{Node, NodeConfig};
use accrete::model::{Deltas, ReadModel};
use accrete::monoids::Sum;
use accrete::store::mongo::{MongoConfig, MongoStore};
use mongodb::bson::{Bson, doc};
use serde::{Deserialize, Serialize};

/// The servers' addresses; fails loudly when one does not answer.
fn servers() -> (String, String) {
    let brokers =
        std::env::var("ACCRETE_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let uri =
        std::env::var("ACCRETE_MONGODB_URI").unwrap_or_else(|_| "mongodb://127.0.0.1:27017".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let addr: std::net::SocketAddr = first
        .parse()
        .unwrap_or_else(|_| panic!("ACCRETE_KAFKA_BROKERS={brokers}: use ip:port"));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)).unwrap_or_else(|e| {
        panic!(
            "no Kafka broker answers at {brokers} ({e}): start one with `scripts/servers.sh \
             start`, or set ACCRETE_KAFKA_BROKERS"
        )
    });
    (brokers, uri)
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "holes-{tag}-{}-{}",
        std::process::id(),
        nanos % 1_000_000_000_000
    )
}

/// One partition (events are written in the order submitted), small batches.
fn config(tag: &str) -> NodeConfig {
    let (brokers, uri) = servers();
    let name = unique(tag);
    let mut c = NodeConfig::default();
    c.kafka.brokers = brokers;
    c.mongodb.uri = uri;
    c.mongodb.database = name.replace('-', "_");
    c.events_topic = format!("{name}.events");
    c.group_prefix = name;
    c.partitions = 1;
    c.batch_size = 1_000;
    c.flush_interval_ms = 20;
    c
}

fn start(tag: &str) -> (Node, MongoStore) {
    let config = config(tag);
    let node = Node::start(config.clone()).unwrap_or_else(|e| {
        panic!("these tests need Kafka and MongoDB (`scripts/servers.sh start`): {e}")
    });
    let store = MongoStore::connect(&config.mongodb).unwrap();
    (node, store)
}

/// The one event type: `n` for `key`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Add {
    key: u64,
    n: i64,
}

fn submit(node: &Node, events: &[Add]) {
    node.submit_batch(events.iter().map(|e| (e.key.to_be_bytes(), 0, e)))
        .unwrap();
}

/// Waits until `n` events of the model are folded (positions stored in
/// MongoDB): `false` after `timeout`.
fn folded(node: &Node, model: &str, n: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if node.folded(model).unwrap() >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn must_fold(node: &Node, model: &str, n: u64, what: &str) {
    assert!(
        folded(node, model, n, Duration::from_secs(40)),
        "{what}: {} of {n} events folded after 40 s: the partition is wedged (see the log: \
         `batch write failed` every 2 s)",
        node.folded(model).unwrap()
    );
}

fn raw(store: &MongoStore, model: &str, id: Bson) -> mongodb::bson::Document {
    store
        .database()
        .collection::<mongodb::bson::Document>(model)
        .find_one(doc! { "_id": id.clone() })
        .run()
        .unwrap()
        .unwrap_or_else(|| panic!("no document with _id {id} in {model}"))
}

fn all_raw(store: &MongoStore, model: &str) -> Vec<mongodb::bson::Document> {
    store
        .database()
        .collection::<mongodb::bson::Document>(model)
        .find(doc! {})
        .run()
        .unwrap()
        .map(|d| d.unwrap())
        .collect()
}

// ---- 1. tuple keys ----

/// Key `(shop, till)`: a tuple, whose BSON form is an array.
struct ByTill;

impl ReadModel for ByTill {
    const NAME: &'static str = "by_till";
    type Event = Add;
    type Key = (String, u32);
    type State = Sum<i64>;
    fn project(&self, e: &Add, out: &mut Deltas<(String, u32), Sum<i64>>) -> Result<(), String> {
        out.push((format!("shop{}", e.key % 2), (e.key % 3) as u32), Sum(e.n));
        Ok(())
    }
}

/// MongoDB refuses an array as `_id` (SecantusDB does not check: it stores
/// one). A tuple key must be stored under a document `_id`, and read back.
#[test]
fn tuple_keys_are_stored_under_a_document_id() {
    let (node, store) = start("tuple");
    node.add_model(ByTill).unwrap();
    let events: Vec<Add> = (0..12).map(|i| Add { key: i, n: 1 }).collect();
    submit(&node, &events);
    must_fold(&node, ByTill::NAME, 12, "tuple keys");
    let docs = all_raw(&store, ByTill::NAME);
    assert_eq!(docs.len(), 6, "{docs:?}");
    for d in &docs {
        assert!(
            matches!(d.get("_id"), Some(Bson::Document(_))),
            "a tuple key's `_id` must be a document (MongoDB refuses arrays): {d}"
        );
    }
    // Readable: the elements by position.
    let d = raw(
        &store,
        ByTill::NAME,
        doc! { "0": "shop1", "1": 1_i64 }.into(),
    );
    assert_eq!(d.get_i64("s").unwrap(), 2, "{d}");
    // Every reader decodes it.
    let key = ("shop1".to_string(), 1_u32);
    assert_eq!(store.get::<ByTill>(&key).unwrap(), Some(Sum(2)));
    let mut scanned = Vec::new();
    store
        .scan::<ByTill>(|k, s| {
            scanned.push((k, s));
            true
        })
        .unwrap();
    assert_eq!(scanned.len(), 6);
    assert!(scanned.iter().all(|(_, s)| *s == Sum(2)), "{scanned:?}");
    node.wait_caught_up::<ByTill>(Duration::from_secs(60))
        .unwrap();
    assert_eq!(node.get::<ByTill>(&key).unwrap(), Some(Sum(2)));
    // A node starting now loads its replica from these documents.
    let second = Node::start(node.config().clone()).unwrap();
    second.add_model(ByTill).unwrap();
    assert_eq!(second.get::<ByTill>(&key).unwrap(), Some(Sum(2)));
    second.shutdown();
    node.shutdown();
}

// ---- 2. u64 keys above i64::MAX ----

struct ByU64;

impl ReadModel for ByU64 {
    const NAME: &'static str = "by_u64";
    type Event = Add;
    type Key = u64;
    type State = Sum<i64>;
    fn project(&self, e: &Add, out: &mut Deltas<u64, Sum<i64>>) -> Result<(), String> {
        out.push(e.key, Sum(e.n));
        Ok(())
    }
}

/// A key without a BSON form (a `u64` above `i64::MAX`) must not wedge the
/// partition: its event goes to the dead letters, the rest of the batch is
/// written and published.
#[test]
fn a_u64_key_above_i64_max_goes_to_the_dead_letters() {
    let (node, store) = start("u64");
    node.add_model(ByU64).unwrap();
    let events = [
        Add { key: 1, n: 1 },
        Add {
            key: u64::MAX,
            n: 2,
        },
        Add { key: 2, n: 3 },
    ];
    submit(&node, &events);
    must_fold(&node, ByU64::NAME, 3, "a u64 key above i64::MAX");
    assert_eq!(store.get::<ByU64>(&1).unwrap(), Some(Sum(1)));
    assert_eq!(store.get::<ByU64>(&2).unwrap(), Some(Sum(3)));
    // Integer keys keep their stored form: an Int64 `_id`.
    assert_eq!(
        raw(&store, ByU64::NAME, Bson::Int64(2)).get("_id"),
        Some(&Bson::Int64(2))
    );
    let dead = store.dead_letters::<ByU64>().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.offset, 1);
    assert!(
        dead[0].reason.contains(&u64::MAX.to_string()) && dead[0].reason.contains("i64::MAX"),
        "the reason names the key and the cause: {}",
        dead[0].reason
    );
    assert_eq!(node.stats(ByU64::NAME).unwrap().dead_letters, 1);
    // Published: the replica has the other keys.
    node.wait_caught_up::<ByU64>(Duration::from_secs(60))
        .unwrap();
    assert_eq!(node.get::<ByU64>(&1).unwrap(), Some(Sum(1)));
    assert_eq!(node.get::<ByU64>(&2).unwrap(), Some(Sum(3)));
    assert_eq!(node.get::<ByU64>(&u64::MAX).unwrap(), None);
    node.shutdown();
}

// ---- 3. an `$inc` overflowing i64 ----

struct Total;

impl ReadModel for Total {
    const NAME: &'static str = "total";
    type Event = Add;
    type Key = String;
    type State = Sum<i64>;
    fn project(&self, e: &Add, out: &mut Deltas<String, Sum<i64>>) -> Result<(), String> {
        out.push(format!("k{}", e.key), Sum(e.n));
        Ok(())
    }
}

/// `Sum<i64>` wraps; MongoDB refuses an `$inc` that overflows an `i64`
/// ("Failed to apply $inc operations"). Across batches, the second write
/// must fall back to read-modify-write (as `src/store/pushdown.rs` says),
/// not wedge the model.
#[test]
fn an_inc_overflowing_i64_falls_back_to_read_modify_write() {
    let (node, store) = start("inc64");
    node.add_model(Total).unwrap();
    submit(
        &node,
        &[Add {
            key: 0,
            n: i64::MAX,
        }],
    );
    must_fold(&node, Total::NAME, 1, "the first write");
    // A second batch: the key's document exists, the write is an `$inc`.
    submit(&node, &[Add { key: 0, n: 1 }, Add { key: 1, n: 5 }]);
    must_fold(&node, Total::NAME, 3, "an $inc overflowing i64");
    let k = |s: &str| s.to_string();
    assert_eq!(store.get::<Total>(&k("k0")).unwrap(), Some(Sum(i64::MIN)));
    assert_eq!(store.get::<Total>(&k("k1")).unwrap(), Some(Sum(5)));
    // String keys keep their stored form.
    assert_eq!(
        raw(&store, Total::NAME, Bson::String("k1".into())).get("_id"),
        Some(&Bson::String("k1".into()))
    );
    // And back through the bound the other way, then a plain `$inc`.
    submit(&node, &[Add { key: 0, n: -1 }]);
    must_fold(&node, Total::NAME, 4, "an $inc overflowing i64 downwards");
    submit(&node, &[Add { key: 0, n: -1 }]);
    must_fold(&node, Total::NAME, 5, "an $inc after the fallback");
    assert_eq!(
        store.get::<Total>(&k("k0")).unwrap(),
        Some(Sum(i64::MAX - 1))
    );
    assert!(store.dead_letters::<Total>().unwrap().is_empty());
    node.wait_caught_up::<Total>(Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        node.get::<Total>(&k("k0")).unwrap(),
        Some(Sum(i64::MAX - 1))
    );
    assert_eq!(node.get::<Total>(&k("k1")).unwrap(), Some(Sum(5)));
    node.shutdown();
}

// ---- 4. Sum<i32> and Sum<u32> ----

struct Total32;

impl ReadModel for Total32 {
    const NAME: &'static str = "total32";
    type Event = Add;
    type Key = String;
    type State = Sum<i32>;
    fn project(&self, e: &Add, out: &mut Deltas<String, Sum<i32>>) -> Result<(), String> {
        out.push("k".into(), Sum(e.n as i32));
        Ok(())
    }
}

struct TotalU32;

impl ReadModel for TotalU32 {
    const NAME: &'static str = "total_u32";
    type Event = Add;
    type Key = String;
    type State = Sum<u32>;
    fn project(&self, e: &Add, out: &mut Deltas<String, Sum<u32>>) -> Result<(), String> {
        out.push("k".into(), Sum(e.n as u32));
        Ok(())
    }
}

/// `Sum<i32>`/`Sum<u32>` wrap in Rust; MongoDB's `$inc` widens an `i32` to
/// an `i64` and takes a `u32` (stored as an `i64`) past `u32::MAX`: a
/// document no reader decodes. The stored state must be what `combine`
/// gives, in the type's stored form.
#[test]
fn sum_i32_and_u32_wrap_in_mongodb_as_in_combine() {
    let (node, store) = start("sum32");
    node.add_model(Total32).unwrap();
    node.add_model(TotalU32).unwrap();
    let k = "k".to_string();
    let step = i64::from(i32::MAX);
    let mut want_i32 = Sum(0_i32);
    let mut want_u32 = Sum(0_u32);
    // One event per batch: every write after the first is an `$inc`.
    for i in 1..=3_u64 {
        submit(&node, &[Add { key: i, n: step }]);
        must_fold(&node, Total32::NAME, i, "Sum<i32>");
        must_fold(&node, TotalU32::NAME, i, "Sum<u32>");
        want_i32.0 = want_i32.0.wrapping_add(step as i32);
        want_u32.0 = want_u32.0.wrapping_add(step as u32);
        let got_i32 = store.get::<Total32>(&k);
        assert!(
            matches!(&got_i32, Ok(Some(s)) if *s == want_i32),
            "Sum<i32> after {i} events: {got_i32:?}, combine gives {want_i32:?}; stored {}",
            raw(&store, Total32::NAME, Bson::String(k.clone()))
        );
        let got_u32 = store.get::<TotalU32>(&k);
        assert!(
            matches!(&got_u32, Ok(Some(s)) if *s == want_u32),
            "Sum<u32> after {i} events: {got_u32:?}, combine gives {want_u32:?}; stored {}",
            raw(&store, TotalU32::NAME, Bson::String(k.clone()))
        );
        // An i32 stays an Int32.
        let d = raw(&store, Total32::NAME, Bson::String(k.clone()));
        assert!(matches!(d.get("s"), Some(Bson::Int32(_))), "{d}");
    }
    assert!(store.dead_letters::<Total32>().unwrap().is_empty());
    node.wait_caught_up::<Total32>(Duration::from_secs(60))
        .unwrap();
    node.wait_caught_up::<TotalU32>(Duration::from_secs(60))
        .unwrap();
    assert_eq!(node.get::<Total32>(&k).unwrap(), Some(want_i32));
    assert_eq!(node.get::<TotalU32>(&k).unwrap(), Some(want_u32));
    node.shutdown();
}

/// The pushdown law at the integer bounds, without Kafka: every case ends
/// as `combine` says, pushed down or (where the `$inc` would leave the
/// type's range) finished by read-modify-write.
#[test]
fn the_pushdown_law_holds_at_the_integer_bounds() {
    let (_, uri) = servers();
    let store = MongoStore::connect(&MongoConfig {
        uri,
        database: unique("law").replace('-', "_"),
        ..MongoConfig::default()
    })
    .unwrap();
    let pushed = store
        .check_pushdown(
            "i64",
            [
                (Sum(i64::MAX), Sum(1)),
                (Sum(i64::MIN), Sum(-1)),
                (Sum(i64::MAX - 1), Sum(1)),
                (Sum(-5), Sum(i64::MIN)),
                (Sum(5), Sum(7)),
            ],
        )
        .unwrap();
    // In range (MAX - 1 + 1, 5 + 7): pushed down; the others overflow.
    assert_eq!(pushed, 2);
    store
        .check_pushdown(
            "i32",
            [
                (Sum(i32::MAX), Sum(1)),
                (Sum(i32::MIN), Sum(-1)),
                (Sum(i32::MAX), Sum(i32::MAX)),
                (Sum(1), Sum(2)),
            ],
        )
        .unwrap();
    store
        .check_pushdown(
            "u32",
            [
                (Sum(u32::MAX), Sum(1_u32)),
                (Sum(u32::MAX - 1), Sum(1)),
                (Sum(3), Sum(u32::MAX)),
            ],
        )
        .unwrap();
    store
        .check_pushdown(
            "u64",
            [(Sum(5_u64), Sum(7)), (Sum(0), Sum(i64::MAX as u64))],
        )
        .unwrap();
    store.database().drop().run().unwrap();
}

// ---- 5. forwarded copies ----

/// `Node::forward` re-appends events with the ids they first got: every
/// model applies each once, however many copies arrive, on whichever
/// partitions, read by whichever node. Before it existed the cluster
/// dropped origins, and the only way to re-append (`submit` again) applied
/// the event again. Two nodes share four partitions here, so copies of one
/// event are read by different nodes, in different batches or the same one.
/// Half the upstream ids come from a topic with this deployment's own name
/// (an export from another deployment: the name's hash must not make them
/// copies of ours), and ids of this deployment's own topic forwarded back
/// are copies of its own events: skipped.
#[test]
fn forwarded_copies_are_applied_once_on_the_cluster() {
    let mut config = config("forward");
    config.partitions = 4;
    let a = Node::start(config.clone()).unwrap_or_else(|e| {
        panic!("these tests need Kafka and MongoDB (`scripts/servers.sh start`): {e}")
    });
    let b = Node::start(config.clone()).unwrap();
    let store = MongoStore::connect(&config.mongodb).unwrap();
    a.add_model(Total).unwrap();
    b.add_model(Total).unwrap();
    let same_name = accrete::event::source_id(&config.events_topic);
    let upstream = accrete::event::source_id("upstream");
    let own = a.source_id();
    assert_eq!(own, b.source_id(), "one source number per topic");
    assert_ne!(own, same_name, "the source number is not the name's hash");
    let events: Vec<(Add, accrete::event::EventId)> = (0..300_u64)
        .map(|i| {
            let id = accrete::event::EventId {
                source: if i % 2 == 0 { same_name } else { upstream },
                partition: (i % 3) as u32,
                offset: if i == 7 { u64::MAX } else { i * 11 },
            };
            (
                Add {
                    key: i % 10,
                    n: i as i64 + 1,
                },
                id,
            )
        })
        .collect();
    let mut want = std::collections::BTreeMap::<String, i64>::new();
    for (e, _) in &events {
        *want.entry(format!("k{}", e.key)).or_default() += e.n;
    }
    // Three copies of each, routed by different keys (so to different
    // partitions), forwarded from both nodes in a scrambled order.
    let mut copies = Vec::new();
    for round in 0..3_u64 {
        for (i, (e, id)) in events.iter().enumerate() {
            let slot = (i as u64 * 7 + round * 13) % events.len() as u64;
            copies.push((slot, round, e, *id));
        }
    }
    copies.sort_by_key(|(slot, round, ..)| (*slot, *round));
    // Five copies per call (each call waits for the broker), so batches are
    // small and many, and the nodes often write the same key from two
    // partitions (which once re-applied skipped copies: `split_at_guards`).
    for (n, group) in copies.chunks(5).enumerate() {
        let node = if n % 2 == 0 { &a } else { &b };
        let routed: Vec<(String, &Add, accrete::event::EventId)> = group
            .iter()
            .map(|(_, round, e, id)| (format!("{}-{round}", e.key), *e, *id))
            .collect();
        node.forward(
            routed
                .iter()
                .map(|(route, e, id)| (route.as_bytes(), 0, *e, *id)),
        )
        .unwrap();
    }
    // Copies of this deployment's own events, forwarded back.
    let ours = Add {
        key: 3,
        n: 1_000_000,
    };
    let own_id = accrete::event::EventId {
        source: own,
        partition: 0,
        offset: 0,
    };
    a.forward([(b"3".as_slice(), 0, &ours, own_id)]).unwrap();
    let total = copies.len() as u64 + 1;
    must_fold(&a, Total::NAME, total, "forwarded copies");
    for (key, n) in &want {
        assert_eq!(
            store.get::<Total>(key).unwrap(),
            Some(Sum(*n)),
            "{key}: every forwarded event once, the copy of our own event not at all"
        );
    }
    assert!(store.dead_letters::<Total>().unwrap().is_empty());
    a.shutdown();
    b.shutdown();
    store.database().drop().run().unwrap();
}

// ---- 6. events topics written by other producers ----

/// CRC-32C (Castagnoli), as record batches carry it.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A zigzag varint, as records inside a batch encode their fields.
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Appends a transaction's commit marker to `topic`'s partition 0 with a
/// Produce request (v3) of one control batch, as a transaction
/// coordinator writes it: an offset that holds no record a consumer sees.
/// (tansu 0.6 has no transaction coordinator, so `EndTxn` from a real
/// transactional producer is refused; the broker stores the batch.)
fn append_commit_marker(brokers: &str, topic: &str) {
    use std::io::{Read, Write};
    let mut record = Vec::new();
    record.push(0); // attributes
    varint(&mut record, 0); // timestamp delta
    varint(&mut record, 0); // offset delta
    varint(&mut record, 4);
    record.extend_from_slice(&0_i16.to_be_bytes()); // control record version
    record.extend_from_slice(&1_i16.to_be_bytes()); // 1: commit
    varint(&mut record, 6);
    record.extend_from_slice(&0_i16.to_be_bytes());
    record.extend_from_slice(&0_i32.to_be_bytes()); // coordinator epoch
    varint(&mut record, 0); // headers
    let mut framed = Vec::new();
    varint(&mut framed, record.len() as i64);
    framed.extend_from_slice(&record);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut tail = Vec::new();
    tail.extend_from_slice(&0x30_i16.to_be_bytes()); // transactional | control
    tail.extend_from_slice(&0_i32.to_be_bytes()); // last offset delta
    tail.extend_from_slice(&now.to_be_bytes());
    tail.extend_from_slice(&now.to_be_bytes());
    tail.extend_from_slice(&4242_i64.to_be_bytes()); // producer id
    tail.extend_from_slice(&0_i16.to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1_i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&1_i32.to_be_bytes()); // records
    tail.extend_from_slice(&framed);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0_i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&((4 + 1 + 4 + tail.len()) as i32).to_be_bytes());
    batch.extend_from_slice(&(-1_i32).to_be_bytes()); // leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    let mut req = Vec::new();
    req.extend_from_slice(&0_i16.to_be_bytes()); // Produce
    req.extend_from_slice(&3_i16.to_be_bytes()); // v3
    req.extend_from_slice(&7_i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&4_i16.to_be_bytes());
    req.extend_from_slice(b"test");
    req.extend_from_slice(&(-1_i16).to_be_bytes()); // no transactional id
    req.extend_from_slice(&(-1_i16).to_be_bytes()); // acks: all
    req.extend_from_slice(&10_000_i32.to_be_bytes());
    req.extend_from_slice(&1_i32.to_be_bytes());
    req.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    req.extend_from_slice(topic.as_bytes());
    req.extend_from_slice(&1_i32.to_be_bytes());
    req.extend_from_slice(&0_i32.to_be_bytes()); // partition 0
    req.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    req.extend_from_slice(&batch);
    let addr = brokers.split(',').next().unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut size = [0; 4];
    conn.read_exact(&mut size).unwrap();
    let mut resp = vec![0; i32::from_be_bytes(size) as usize];
    conn.read_exact(&mut resp).unwrap();
    // correlation id, 1 topic (name), 1 partition: index, error code.
    let name_len = i16::from_be_bytes([resp[8], resp[9]]) as usize;
    let at = 10 + name_len + 4 + 4;
    let error = i16::from_be_bytes([resp[at], resp[at + 1]]);
    assert_eq!(
        error, 0,
        "the broker refused the control batch (error {error})"
    );
}

/// An events topic also written by a transactional producer: each commit
/// takes an offset of its own (a control record no consumer sees). The
/// model must hold every event once, and still catch up: a position that
/// stops at the last record read, below a marker, leaves a lag forever.
#[test]
fn transaction_markers_in_the_events_topic_leave_no_lag() {
    let (node, store) = start("markers");
    node.add_model(Total).unwrap();
    let brokers = node.config().kafka.brokers.clone();
    let topic = node.config().events_topic.clone();
    let mut want = 0;
    for round in 0..3 {
        let events: Vec<Add> = (0..5)
            .map(|i| Add {
                key: 1,
                n: round * 10 + i,
            })
            .collect();
        want += events.iter().map(|e| e.n).sum::<i64>();
        submit(&node, &events);
        append_commit_marker(&brokers, &topic);
    }
    let status = node
        .wait_caught_up::<Total>(Duration::from_secs(60))
        .unwrap_or_else(|e| {
            panic!("a topic ending in a transaction marker must not leave a lag: {e}")
        });
    assert_eq!(status.lag(), 0);
    assert_eq!(
        store.get::<Total>(&"k1".to_string()).unwrap(),
        Some(Sum(want)),
        "every event once"
    );
    assert!(store.dead_letters::<Total>().unwrap().is_empty());
    node.shutdown();
    store.database().drop().run().unwrap();
}
