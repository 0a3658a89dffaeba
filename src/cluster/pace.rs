//! Batches bounded in time: how many items the next batch may take, from
//! how long the last ones took.
//!
//! A consumer that does not poll for `max.poll.interval.ms` (300 s by
//! default) is put out of its group by librdkafka, and its partitions move
//! while it is still writing. A node does not poll while it writes a batch
//! to MongoDB or runs a batch's hooks, so each batch must take a bounded
//! time however slow the store or the hook is. [`Pace`] starts small, grows
//! while batches finish well within the target, and shrinks in proportion
//! when one takes longer: like TCP's slow start, it finds the size the store
//! sustains without knowing it in advance. Bigger batches pre-aggregate
//! more, so on a fast store the limit climbs to the configured maximum.

use std::time::Duration;

/// The time a batch is sized to take, given the consumer's
/// `max.poll.interval.ms`: a tenth of it (30 s by default), so a store that
/// turns ten times slower within one batch still keeps the node in its
/// group.
pub(crate) fn batch_target(max_poll_interval: Duration) -> Duration {
    max_poll_interval / 10
}

/// The adaptive size limit of one reader's batches.
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    limit: usize,
    min: usize,
    max: usize,
    target: Duration,
}

impl Pace {
    /// A pace that starts at `start` items (within `[min, max]`) and sizes
    /// batches to take `target`.
    pub(crate) fn new(start: usize, min: usize, max: usize, target: Duration) -> Self {
        let min = min.clamp(1, max.max(1));
        let max = max.max(min);
        Pace {
            limit: start.clamp(min, max),
            min,
            max,
            target,
        }
    }

    /// The most items the next batch may take.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Learns from a batch of `items` that took `took`: over the target,
    /// the limit falls to what would have fit; well under it (a full batch
    /// in less than half the target), it doubles. A batch smaller than the
    /// limit that was quick says nothing about bigger ones.
    pub(crate) fn observe(&mut self, items: usize, took: Duration) {
        if items == 0 {
            return;
        }
        if took > self.target {
            let fits = (items as f64 * self.target.as_secs_f64() / took.as_secs_f64()) as usize;
            self.limit = fits.clamp(self.min, self.max);
        } else if took * 2 <= self.target && items.saturating_mul(2) >= self.limit {
            self.limit = self.limit.saturating_mul(2).clamp(self.min, self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn a_slow_store_shrinks_the_batch_to_what_fits_in_the_target() {
        let mut p = Pace::new(100_000, 100, 100_000, T);
        // 100 000 items in 40 s: a quarter would have fit.
        p.observe(100_000, Duration::from_secs(40));
        assert_eq!(p.limit(), 25_000);
        // Slower still: never below the floor.
        p.observe(25_000, Duration::from_secs(10_000));
        assert_eq!(p.limit(), 100);
    }

    #[test]
    fn a_fast_store_grows_the_batch_up_to_the_maximum() {
        let mut p = Pace::new(1_000, 100, 10_000, T);
        p.observe(1_000, Duration::from_secs(1));
        assert_eq!(p.limit(), 2_000);
        // A small batch, however quick, is no evidence about bigger ones.
        p.observe(10, Duration::from_millis(1));
        assert_eq!(p.limit(), 2_000);
        for _ in 0..10 {
            let l = p.limit();
            p.observe(l, Duration::from_secs(1));
        }
        assert_eq!(p.limit(), 10_000);
        // Between half the target and the target: kept.
        p.observe(10_000, Duration::from_secs(7));
        assert_eq!(p.limit(), 10_000);
    }

    #[test]
    fn bounds_are_sane_whatever_the_arguments() {
        let p = Pace::new(0, 0, 0, T);
        assert_eq!(p.limit(), 1);
        let mut p = Pace::new(50, 10, 5, T);
        assert_eq!(p.limit(), 5);
        p.observe(usize::MAX, Duration::from_nanos(1));
        assert_eq!(p.limit(), 5);
        p.observe(0, Duration::from_secs(100));
        assert_eq!(p.limit(), 5);
        assert_eq!(
            batch_target(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
    }
}
