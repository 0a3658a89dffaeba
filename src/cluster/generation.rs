//! How a node's threads follow a model's generations (see
//! [`Deployment::rebuild`](crate::Deployment::rebuild)): each asks now and
//! then whether a rebuild started a newer one, and when it did, leaves the
//! old one and starts over on the new one. The node asks MongoDB at most
//! once a second per model, for all its threads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Shared;
use crate::Result;
use crate::store::mongo::Generation;

/// How often a node asks MongoDB whether a rebuild started a new
/// generation of a model's data, and how often each of its threads looks.
const GENERATION_EVERY: Duration = Duration::from_secs(1);

/// The generations a node last read, per model, and when.
#[derive(Default)]
pub(crate) struct Generations(Mutex<HashMap<String, (Instant, Generation)>>);

impl Generations {
    /// The model's generation as read at most [`GENERATION_EVERY`] ago.
    fn recent(&self, shared: &Shared, model: &str) -> Result<Generation> {
        if let Some((at, g)) = self.0.lock().get(model)
            && at.elapsed() < GENERATION_EVERY
        {
            return Ok(g.clone());
        }
        let g = shared.store.generation(model)?;
        self.0
            .lock()
            .insert(model.to_owned(), (Instant::now(), g.clone()));
        Ok(g)
    }

    /// Notes a generation this node started (its threads move at their
    /// next look).
    pub(crate) fn started(&self, model: &str, g: &Generation) {
        self.0
            .lock()
            .insert(model.to_owned(), (Instant::now(), g.clone()));
    }
}

/// A newer generation of the model's data than `current`, if a rebuild
/// started one (looked at most every [`GENERATION_EVERY`]).
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
    match shared.generations.recent(shared, model) {
        Ok(g) if g.n > current => Some(g),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(model, error = %e, "could not read the model's generation");
            None
        }
    }
}

/// Runs a thread on one generation of its model's data after another,
/// from the `first` (a generation and its parts, opened): `run` on the
/// parts of the generation until it returns a newer one
/// (`None`: the node stops), then `open` on that one, trying again (with
/// backoff, each failure passed to `failed`) until it succeeds or
/// `stopping` says to stop; `moved` is told of each generation opened.
pub(super) fn follow<T>(
    what: &str,
    first: (Generation, T),
    stopping: &dyn Fn() -> bool,
    failed: &dyn Fn(&crate::Error),
    mut run: impl FnMut(T, &Generation) -> Option<Generation>,
    mut open: impl FnMut(&Generation) -> Result<T>,
    mut moved: impl FnMut(&Generation),
) {
    let (mut generation, mut parts) = first;
    while let Some(next) = run(parts, &generation) {
        generation = next;
        let mut backoff = Duration::from_millis(100);
        parts = loop {
            if stopping() {
                return;
            }
            match open(&generation) {
                Ok(parts) => break parts,
                Err(e) => {
                    tracing::warn!(what, generation = generation.n, error = %e, retry_in = ?backoff,
                        "could not start on the model's new generation");
                    failed(&e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        tracing::info!(what, generation = generation.n, "moved to a new generation");
        moved(&generation);
    }
}
