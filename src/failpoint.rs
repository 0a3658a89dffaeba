//! Failpoints: named places in the pipeline where a crash test can kill the
//! process for real.
//!
//! `ACCRETE_FAILPOINT=<name>:<n>` aborts the process (no unwinding, no
//! destructors, as a `kill -9` would) on the n-th time the pipeline passes
//! `<name>`. Unset, a failpoint costs one relaxed atomic load.

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
