//! The runtime on the embedded default: backfill, bad input, changes,
//! status, rebuild, metrics.

mod common;

use accrete::Deployment;
use std::time::Duration;

use accrete::event::{EventId, source_id};
use accrete::log::NewRecord;
use accrete::model::ReadModel;
use accrete::monoids::{Max, Sum};
use accrete::runtime::{Config, Runtime};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config {
        partitions: 4,
        batch_size: 64,
        flush_interval: Duration::from_millis(1),
        ..Config::default()
    }
}

fn submit(rt: &Runtime, events: &[Payment]) {
    rt.submit_batch(events.iter().map(|e| (e.from.to_le_bytes(), e.at_ms, e)))
        .unwrap();
}

#[test]
fn a_model_added_mid_stream_converges_to_one_that_ran_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    let events = payments(&mut Rng(7), 3_000, 25);
    rt.add_model(Balances).unwrap();
    let (early, late) = events.split_at(1_000);
    submit(&rt, early);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();

    // Added while events keep arriving: it reads the log from the beginning.
    std::thread::scope(|s| {
        s.spawn(|| {
            for chunk in late.chunks(100) {
                submit(&rt, chunk);
            }
        });
        rt.add_model(Receipts).unwrap();
    });
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    let status = rt.wait_caught_up::<Receipts>(WAIT).unwrap();
    assert!(status.caught_up() && status.lag() == 0);
    assert_eq!(
        status.partitions.iter().map(|p| p.end).sum::<u64>(),
        events.len() as u64
    );
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
    assert_eq!(stored::<Receipts>(&rt), oracle(&Receipts, &events));
}

#[test]
fn bad_input_goes_to_the_dead_letters_and_the_partition_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(
        dir.path(),
        Config {
            partitions: 1,
            ..config()
        },
    )
    .unwrap();
    rt.add_model(Balances).unwrap();
    let good = Payment {
        id: 1,
        from: 1,
        to: 2,
        cents: 500,
        visitor: 0,
        at_ms: 0,
    };
    let zero = Payment {
        id: 2,
        cents: 0,
        ..good.clone()
    };
    rt.submit(b"a", 0, &good).unwrap();
    let garbage = [NewRecord {
        key: b"a",
        timestamp: 0,
        payload: b"\x01\x02not a payment",
        origin: None,
    }];
    let bad_offset = rt.log().append("events", 0, &garbage).unwrap();
    let failing = rt.submit(b"a", 0, &zero).unwrap();
    rt.submit(
        b"a",
        0,
        &Payment {
            id: 3,
            ..good.clone()
        },
    )
    .unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();

    // Everything else was applied.
    assert_eq!(rt.get::<Balances>(&1).unwrap(), Some(Sum(-1000)));
    assert_eq!(rt.get::<Balances>(&2).unwrap(), Some(Sum(1000)));
    let dead = rt.dead_letters::<Balances>().unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    // Events submitted here carry this store's source number.
    let events = failing.source;
    assert_ne!(
        events,
        source_id("events"),
        "not a hash of the topic's name alone"
    );
    assert_eq!(
        dead[0].event,
        EventId {
            source: events,
            partition: 0,
            offset: bad_offset
        }
    );
    assert!(
        dead[0].reason.contains("not an accrete event"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].payload, b"\x01\x02not a payment");
    assert_eq!(dead[1].event, failing);
    assert!(
        dead[1]
            .reason
            .contains("projection failed: payment 2 moves no money"),
        "{}",
        dead[1].reason
    );
}

#[test]
fn forwarded_copies_apply_once_and_changes_reach_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Balances).unwrap();
    let mut changes = rt.subscribe::<Balances>().unwrap();
    let upstream = source_id("upstream");
    let p = Payment {
        id: 9,
        from: 3,
        to: 4,
        cents: 70,
        visitor: 0,
        at_ms: 0,
    };
    let id = EventId {
        source: upstream,
        partition: 0,
        offset: 9,
    };
    // The same event forwarded three times (at-least-once upstream).
    rt.forward([(b"k", 0, &p, id), (b"k", 0, &p, id)]).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    rt.forward([(b"k", 0, &p, id)]).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(
        rt.get_versioned::<Balances>(&4).unwrap(),
        Some((1, Sum(70)))
    );

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let batch = changes.poll(WAIT).unwrap();
        assert!(!batch.is_empty(), "no change within {WAIT:?}");
        seen.extend(batch.into_iter().map(|c| (c.key, c.version, c.delta)));
    }
    seen.sort();
    assert_eq!(seen, vec![(3, 1, Sum(-70)), (4, 1, Sum(70))]);
    // The duplicates changed nothing, so they published nothing.
    assert!(changes.poll(Duration::from_millis(200)).unwrap().is_empty());
}

/// Max per key: a write that does not raise the maximum is not a change.
struct Highest;
impl ReadModel for Highest {
    const NAME: &'static str = "highest";
    const EXACTLY_ONCE: bool = false;
    type Event = Payment;
    type Key = u16;
    type State = Max<i64>;
    fn project(
        &self,
        p: &Payment,
        out: &mut accrete::model::Deltas<u16, Max<i64>>,
    ) -> Result<(), String> {
        out.push(p.to, Max(p.cents));
        Ok(())
    }
}

#[test]
fn a_write_that_changes_nothing_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Highest).unwrap();
    let mut changes = rt.subscribe::<Highest>().unwrap();
    let p = Payment {
        id: 1,
        from: 0,
        to: 5,
        cents: 100,
        visitor: 0,
        at_ms: 0,
    };
    rt.submit(b"x", 0, &p).unwrap();
    rt.wait_caught_up::<Highest>(WAIT).unwrap();
    assert_eq!(changes.poll(WAIT).unwrap().len(), 1);
    rt.submit(
        b"x",
        0,
        &Payment {
            cents: 40,
            ..p.clone()
        },
    )
    .unwrap();
    rt.wait_caught_up::<Highest>(WAIT).unwrap();
    assert!(changes.poll(Duration::from_millis(200)).unwrap().is_empty());
    assert_eq!(
        rt.get_versioned::<Highest>(&5).unwrap(),
        Some((1, Max(100)))
    );
}

#[test]
fn rebuild_refolds_from_the_beginning_with_live_events() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    let events = payments(&mut Rng(11), 2_000, 10);
    rt.add_model(Balances).unwrap();
    submit(&rt, &events[..1_000]);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    rt.rebuild::<Balances>().unwrap();
    submit(&rt, &events[1_000..]);
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
    assert!(
        rt.rebuild::<Receipts>().is_err(),
        "rebuilding a model that is not running is an error"
    );
}

#[test]
fn state_survives_a_restart_and_folding_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let events = payments(&mut Rng(5), 1_500, 12);
    {
        let rt = Runtime::open_with(dir.path(), config()).unwrap();
        rt.add_model(Balances).unwrap();
        submit(&rt, &events[..700]);
        rt.wait_caught_up::<Balances>(WAIT).unwrap();
    }
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    submit(&rt, &events[700..]);
    assert!(
        rt.status(Balances::NAME).unwrap().lag() > 0,
        "not running: it lags"
    );
    rt.add_model(Balances).unwrap();
    rt.wait_caught_up::<Balances>(WAIT).unwrap();
    assert_eq!(stored::<Balances>(&rt), oracle(&Balances, &events));
}

/// Balances under another name. The metrics recorder is global to the test
/// process and other tests run `balances`, so the metrics test needs its own
/// name; the misuse test needs a name that cannot be a file name.
macro_rules! balances_named {
    ($model:ident, $name:literal) => {
        struct $model;
        impl ReadModel for $model {
            const NAME: &'static str = $name;
            type Event = Payment;
            type Key = u16;
            type State = Sum<i64>;
            fn project(
                &self,
                p: &Payment,
                out: &mut accrete::model::Deltas<u16, Sum<i64>>,
            ) -> Result<(), String> {
                Balances.project(p, out)
            }
        }
    };
}
balances_named!(Metered, "metered");
balances_named!(BadlyNamed, "bad name/..");

#[test]
fn metrics_show_delivery_faults_being_absorbed() {
    let handle = accrete::observability::install_prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Metered).unwrap();
    let p = Payment {
        id: 1,
        from: 1,
        to: 2,
        cents: 5,
        visitor: 0,
        at_ms: 0,
    };
    let id = EventId {
        source: source_id("upstream"),
        partition: 0,
        offset: 1,
    };
    rt.forward([(b"k", 0, &p, id), (b"k", 0, &p, id), (b"k", 0, &p, id)])
        .unwrap();
    rt.submit(
        b"k",
        0,
        &Payment {
            cents: 0,
            ..p.clone()
        },
    )
    .unwrap();
    rt.wait_caught_up::<Metered>(WAIT).unwrap();
    // Metrics are recorded once a batch is committed, just after the
    // position `wait_caught_up` watches: give them a moment.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains("model=\"metered\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let deadline = std::time::Instant::now() + WAIT;
    let mut text = handle.render();
    // A batch records its events, then its other counters: wait until the
    // last event's batch is recorded whole (its events and its dead letter),
    // then take the figures once more.
    while (value(&text, "accrete_events_in_total") < 4.0
        || value(&text, "accrete_dead_letters_total") < 1.0)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
        text = handle.render();
    }
    std::thread::sleep(Duration::from_millis(50));
    text = handle.render();
    assert_eq!(value(&text, "accrete_events_in_total"), 4.0, "{text}");
    assert_eq!(
        value(&text, "accrete_duplicates_absorbed_total"),
        2.0,
        "two copies (counted per event, whatever keys it touches)\n{text}"
    );
    assert_eq!(value(&text, "accrete_dead_letters_total"), 1.0, "{text}");
    assert_eq!(
        value(&text, "accrete_changes_published_total"),
        2.0,
        "{text}"
    );
    assert!(
        accrete::observability::install_prometheus().is_err(),
        "a second recorder is refused"
    );
}

#[test]
fn misuse_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Balances).unwrap();
    let named = rt.add_model(BadlyNamed).unwrap_err().to_string();
    assert!(
        named.contains("invalid read model name") && named.contains("bad name/.."),
        "{named}"
    );
    let again = rt.add_model(Balances).unwrap_err().to_string();
    assert!(
        again.contains("balances") && again.contains("already running"),
        "{again}"
    );
    let bad = Config {
        partitions: 0,
        ..config()
    };
    assert!(
        Runtime::open_with(dir.path().join("other"), bad)
            .unwrap_err()
            .to_string()
            .contains("at least 1")
    );
    let locked = Runtime::open_with(dir.path(), config())
        .unwrap_err()
        .to_string();
    assert!(
        locked.contains("in use by another process") && locked.contains("read-only"),
        "a second runtime on the same directory: {locked}"
    );
}

#[test]
fn a_store_half_made_by_a_crash_is_made_again() {
    // A process killed while redb created the file used to leave a file
    // without a header that no later open accepted.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.redb~new"), b"").unwrap();
    let rt = Runtime::open_with(dir.path(), config()).unwrap();
    rt.add_model(Balances).unwrap();
    assert!(!dir.path().join("state.redb~new").exists());
    drop(rt);
    Runtime::open_with(dir.path(), config()).unwrap();
}
