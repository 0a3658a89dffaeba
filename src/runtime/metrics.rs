//! Counters per read model and partition, through the `metrics` facade:
//! install any recorder (see [`crate::observability`]) to collect them.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `accrete_events_in_total` | counter | model, partition |
//! | `accrete_deltas_out_total` | counter | model |
//! | `accrete_duplicates_absorbed_total` | counter | model |
//! | `accrete_dead_letters_total` | counter | model |
//! | `accrete_store_writes_total` | counter | model |
//! | `accrete_changes_published_total` | counter | model |
//! | `accrete_batches_total` | counter | model |
//! | `accrete_batch_errors_total` | counter | model |
//! | `accrete_batch_seconds` | histogram | model |

use std::time::Duration;

use crate::fold::BatchOutcome;

pub(crate) fn events_in(model: &'static str, partition: u32, events: u64) {
    metrics::counter!("accrete_events_in_total", "model" => model, "partition" => partition.to_string())
        .increment(events);
}

pub(crate) fn batch(model: &'static str, o: &BatchOutcome, took: Duration) {
    metrics::counter!("accrete_deltas_out_total", "model" => model).increment(o.deltas);
    metrics::counter!("accrete_duplicates_absorbed_total", "model" => model)
        .increment(o.duplicates);
    metrics::counter!("accrete_dead_letters_total", "model" => model).increment(o.dead_letters);
    metrics::counter!("accrete_store_writes_total", "model" => model).increment(o.writes);
    metrics::counter!("accrete_changes_published_total", "model" => model).increment(o.changes);
    metrics::counter!("accrete_batches_total", "model" => model).increment(1);
    metrics::histogram!("accrete_batch_seconds", "model" => model).record(took.as_secs_f64());
}

pub(crate) fn error(model: &'static str) {
    metrics::counter!("accrete_batch_errors_total", "model" => model).increment(1);
}
