//! Failpoints: named places in the pipeline where a crash test can kill the
//! process for real, or make a step fail.
//!
//! `ACCRETE_FAILPOINT=<name>:<n>` aborts the process (no unwinding, no
//! destructors, as a `kill -9` would) on the n-th time the pipeline passes
//! `<name>`. Unset, a failpoint costs one relaxed atomic load.
//!
//! `ACCRETE_FAULTS=<name>:<every>,…` makes the step at each fault point
//! named ([`FAULTS`]) fail with an injected error on every `<every>`-th
//! pass (2 or more), as a store, broker or network outage would: the
//! pipeline and the hook members retry, on both backends alike.

// The lists are public through `accrete::testing` only.
#![cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The places the pipeline can be crashed at, in the order a batch passes them.
pub const FAILPOINTS: [&str; 4] = [
    "before_store_write",
    "after_store_write",
    "after_publish",
    "after_commit",
];

/// The places a rebuild can be crashed at: before the state is cleared,
/// and between clearing it and resetting the model's consumer group (on a
/// cluster: before and after the new generation starts).
pub const REBUILD_FAILPOINTS: [&str; 2] = ["rebuild_before_clear", "rebuild_after_clear"];

/// The places a cluster hook's member can be crashed at: after a batch's
/// runs are planned (recorded, not yet made), and after its runs and
/// recorded outcomes, before its position is committed.
pub const HOOK_FAILPOINTS: [&str; 2] = ["hook_after_plan", "hook_before_commit"];

/// The places the pipeline and a hook member can be made to fail (not
/// crash) at: the read of the events (a fetch error); the store write refused; the store write applied but
/// reported failed (an ambiguous outcome, as a timeout after the server
/// applied it); the publication of the changes; the commit of the
/// positions; a hook's planning of its runs; the record of its outcomes.
pub const FAULTS: [&str; 7] = [
    "log_read",
    "store_write",
    "store_write_applied",
    "publish",
    "commit",
    "hook_plan",
    "hook_record",
];

struct Fault {
    name: String,
    every: u64,
    passes: AtomicU64,
}

fn faults() -> &'static [Fault] {
    static FAULTS_PLANNED: OnceLock<Vec<Fault>> = OnceLock::new();
    FAULTS_PLANNED.get_or_init(|| {
        let Ok(spec) = std::env::var("ACCRETE_FAULTS") else {
            return Vec::new();
        };
        spec.split(',')
            .filter_map(|f| {
                let (name, every) = f.split_once(':')?;
                let every: u64 = every.trim().parse().ok().filter(|e| *e >= 2)?;
                Some(Fault {
                    name: name.trim().to_string(),
                    every,
                    passes: AtomicU64::new(0),
                })
            })
            .collect()
    })
}

/// Passes the fault point `name`: an injected error if the plan says this
/// pass fails.
#[inline]
pub(crate) fn fault(name: &'static str) -> crate::Result<()> {
    for f in faults() {
        if f.name == name && (f.passes.fetch_add(1, Ordering::Relaxed) + 1) % f.every == 0 {
            eprintln!("accrete: fault point `{name}` injects an error (ACCRETE_FAULTS)");
            return Err(crate::Error::Store {
                op: "an injected fault",
                source: format!("fault point `{name}` (ACCRETE_FAULTS)").into(),
            });
        }
    }
    Ok(())
}

struct Plan {
    name: String,
    remaining: AtomicU64,
}

fn plan() -> Option<&'static Plan> {
    static PLAN: OnceLock<Option<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let spec = std::env::var("ACCRETE_FAILPOINT").ok()?;
        let (name, n) = spec.split_once(':')?;
        Some(Plan {
            name: name.to_string(),
            remaining: AtomicU64::new(n.trim().parse().ok()?),
        })
    })
    .as_ref()
}

/// Passes the failpoint `name`: aborts the process if the plan says so.
#[inline]
pub(crate) fn hit(name: &'static str) {
    if let Some(plan) = plan()
        && plan.name == name
        && plan.remaining.fetch_sub(1, Ordering::Relaxed) == 1
    {
        eprintln!("accrete: failpoint `{name}` reached: aborting the process (ACCRETE_FAILPOINT)");
        std::process::abort();
    }
}
