//! `automerge/counter_increment` (feature `automerge`), for reference: 10k
//! increments of one counter in one [`AutomergeDoc`], one transaction each,
//! through [`AutomergeDoc::edit`]; next to the same transactions made on the
//! inner `Automerge` directly, which shows what `edit` itself costs.

mod common;

use std::hint::black_box;

use accrete_monoids::{AutomergeDoc, Monoid};
use automerge::transaction::Transactable;
use automerge::{ActorId, ROOT, ReadDoc, ScalarValue};
use criterion::{BatchSize, SamplingMode, Throughput, criterion_group, criterion_main};

const INCREMENTS: usize = 10_000;

fn actor() -> ActorId {
    ActorId::from(&[1_u8][..])
}

/// A document holding the counter `"n"` at 0.
fn fresh() -> AutomergeDoc {
    let mut doc = AutomergeDoc::identity();
    doc.edit(actor(), |tx| tx.put(ROOT, "n", ScalarValue::counter(0)))
        .expect("put a counter");
    doc
}

fn counter(doc: &AutomergeDoc) -> i64 {
    let (value, _) = doc
        .doc()
        .get(ROOT, "n")
        .expect("read the counter")
        .expect("the counter exists");
    value.as_i64().expect("a counter")
}

fn through_edit(mut doc: AutomergeDoc) -> AutomergeDoc {
    for _ in 0..INCREMENTS {
        doc.edit(actor(), |tx| tx.increment(ROOT, "n", 1))
            .expect("increment");
    }
    doc
}

fn raw_transactions(mut doc: AutomergeDoc) -> AutomergeDoc {
    let inner = doc.doc_mut();
    inner.set_actor(actor());
    for _ in 0..INCREMENTS {
        let mut tx = inner.transaction();
        tx.increment(ROOT, "n", 1).expect("increment");
        tx.commit();
    }
    doc
}

fn counter_increment(c: &mut criterion::Criterion) {
    // Deterministic: no random input, but print the seed like every bench.
    common::seed("automerge (no random input)");
    assert_eq!(counter(&through_edit(fresh())), INCREMENTS as i64);
    assert_eq!(counter(&raw_transactions(fresh())), INCREMENTS as i64);

    let mut group = c.benchmark_group("automerge/counter_increment");
    group
        .throughput(Throughput::Elements(INCREMENTS as u64))
        .sampling_mode(SamplingMode::Flat);
    group.bench_function("edit", |b| {
        b.iter_batched(
            fresh,
            |doc| through_edit(black_box(doc)),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("raw_transaction", |b| {
        b.iter_batched(
            fresh,
            |doc| raw_transactions(black_box(doc)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = counter_increment
}
criterion_main!(benches);
