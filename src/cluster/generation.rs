//! How a node's threads follow a model's generations (see
//! [`Deployment::rebuild`](crate::Deployment::rebuild)): each asks MongoDB
//! now and then whether a rebuild started a newer one, and when it did,
//! leaves the old one and starts over on the new one.

use std::time::{Duration, Instant};

use super::Shared;
use crate::Result;
use crate::store::mongo::Generation;

/// How often a materializer, a replica or a hook member asks MongoDB
/// whether a rebuild started a new generation of its model's data.
const GENERATION_EVERY: Duration = Duration::from_secs(1);

/// A newer generation of the model's data than `current`, if a rebuild
/// started one (asked at most every [`GENERATION_EVERY`]).
pub(super) fn newer(
    shared: &Shared,
    model: &str,
    current: u64,
    checked: &mut Instant,
) -> Option<Generation> {
    if checked.elapsed() < GENERATION_EVERY {
        return None;
    }
    *checked = Instant::now();
    match shared.store.generation(model) {
        Ok(g) if g.n > current => Some(g),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(model, error = %e, "could not read the model's generation");
            None
        }
    }
}

/// Opens a thread's parts for a new generation, trying again (with
/// backoff, each failure passed to `failed`) until it succeeds or
/// `stopping` says to stop (`None`).
pub(super) fn reopen<T>(
    what: &str,
    generation: &Generation,
    stopping: &dyn Fn() -> bool,
    failed: &dyn Fn(&crate::Error),
    mut open: impl FnMut() -> Result<T>,
) -> Option<T> {
    let mut backoff = Duration::from_millis(100);
    loop {
        if stopping() {
            return None;
        }
        match open() {
            Ok(parts) => {
                tracing::info!(what, generation = generation.n, "moved to a new generation");
                return Some(parts);
            }
            Err(e) => {
                tracing::warn!(what, generation = generation.n, error = %e, retry_in = ?backoff,
                    "could not start on the model's new generation");
                failed(&e);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
