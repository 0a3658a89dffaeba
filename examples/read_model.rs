//! A read model on the embedded default, start to finish: the program to
//! copy. `cargo run --example read_model`
//!
//! 1. Events are plain serde types.
//! 2. A read model names its state (a commutative monoid) and projects each
//!    event to `(key, delta)` pairs.
//! 3. The runtime folds the deltas into the store — each event's effect
//!    exactly once, whatever the log redelivers — and publishes a change for
//!    every key whose state really changed.

use std::time::Duration;

use accrete::monoids::{Count, Max, Monoid, Sum};
use accrete::prelude::*;
use accrete::runtime::Runtime;
use serde::{Deserialize, Serialize};

/// 1. An event: something that happened.
#[derive(Debug, Serialize, Deserialize)]
enum OrderEvent {
    Placed {
        order: u64,
        customer: String,
        cents: i64,
        at_ms: i64,
    },
    Refunded {
        order: u64,
        customer: String,
        cents: i64,
    },
}

/// The state of one customer. Every field is a monoid, so the struct is one
/// (`#[derive(Monoid)]`); every field is commutative, so it is too.
#[derive(Monoid, Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Customer {
    orders: Count,
    spent_cents: Sum<i64>,
    last_order_ms: Max<i64>,
}

/// 2. The read model: per customer, orders, money spent, last order.
struct Customers;

impl ReadModel for Customers {
    const NAME: &'static str = "customers";
    type Event = OrderEvent;
    type Key = String;
    type State = Customer;

    fn project(&self, e: &OrderEvent, out: &mut Deltas<String, Customer>) -> Result<(), String> {
        match e {
            OrderEvent::Placed {
                customer,
                cents,
                at_ms,
                ..
            } => out.push(
                customer.clone(),
                Customer {
                    orders: Count::one(),
                    spent_cents: Sum(*cents),
                    last_order_ms: Max(*at_ms),
                },
            ),
            OrderEvent::Refunded { order, cents, .. } if *cents <= 0 => {
                // An error sends the event to the dead letters; the rest goes on.
                return Err(format!("refund of order {order} is not positive"));
            }
            OrderEvent::Refunded {
                customer, cents, ..
            } => out.push(
                customer.clone(),
                Customer {
                    spent_cents: Sum(-cents),
                    ..Customer::identity()
                },
            ),
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("accrete-example-{}", std::process::id()));
    let runtime = Runtime::open(&dir)?;
    runtime.add_model(Customers)?;
    let mut changes = runtime.subscribe::<Customers>()?;

    // 3. Submit events; the key routes them to a partition (one customer's
    // events stay in order, though the model does not need it).
    let events = [
        OrderEvent::Placed {
            order: 1,
            customer: "ana".into(),
            cents: 4_200,
            at_ms: 1_000,
        },
        OrderEvent::Placed {
            order: 2,
            customer: "bo".into(),
            cents: 1_500,
            at_ms: 1_100,
        },
        OrderEvent::Placed {
            order: 3,
            customer: "ana".into(),
            cents: 800,
            at_ms: 1_200,
        },
        OrderEvent::Refunded {
            order: 1,
            customer: "ana".into(),
            cents: 4_200,
        },
        OrderEvent::Refunded {
            order: 2,
            customer: "bo".into(),
            cents: -5,
        },
    ];
    for e in &events {
        let customer = match e {
            OrderEvent::Placed { customer, .. } | OrderEvent::Refunded { customer, .. } => customer,
        };
        runtime.submit(customer, 0, e)?;
    }
    runtime.wait_caught_up::<Customers>(Duration::from_secs(10))?;

    // Query: one key, or all of them.
    let ana = runtime
        .get::<Customers>(&"ana".to_string())?
        .unwrap_or_else(Customer::identity);
    println!(
        "ana: {} orders, spent {} cents, last order at {}",
        ana.orders.get(),
        ana.spent_cents.0,
        ana.last_order_ms.0
    );
    runtime.scan::<Customers>(|name, c| {
        println!("  {name}: {c:?}");
        true
    })?;

    // Changes: one per write that changed a key, with its version.
    for change in changes.poll(Duration::from_secs(1))? {
        println!(
            "change: {} v{} {:?}",
            change.key, change.version, change.delta
        );
    }
    for letter in runtime.dead_letters::<Customers>()? {
        println!("dead letter {}: {}", letter.event, letter.reason);
    }

    runtime.shutdown();
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
