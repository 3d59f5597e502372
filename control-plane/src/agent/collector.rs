//! The conntrack collector: deletes every `GC_INTERVAL` the flows the
//! datapath treats as gone (expired, or given to a backend since retired or
//! to an ID since reused: syncs leave those to it) and clears every
//! `HINT_INTERVAL` the overflow hints no flow needs, each a walk of both
//! conntrack tables. It runs on a handle of the tables of its own
//! (`ConntrackTables`), not under the agent's lock: at a million flows the
//! two walks take some 200 and 350 ms (`docs/bench/notes.md`), which syncs,
//! admin calls and scrapes waited out when they held the lock.
//!
//! Walking beside the agent is as safe as walking beside the datapath,
//! which the walks were written for: every slot is read again right before
//! it is freed, and a hint is cleared by a compare-and-swap against the
//! value read before the walk.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::time::{MissedTickBehavior, interval};
use xdp_lb::{ConntrackTables, Error};

/// How often the conntrack entries the datapath treats as gone are collected.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How often the conntrack overflow hints no flow needs are cleared
/// (`ConntrackTables::clear_overflow_hints`): a walk of both tables, as the
/// expiry's is, for a smaller gain (a stale hint costs only a lookup that
/// misses a read of a second bucket), so less often.
const HINT_INTERVAL: Duration = Duration::from_secs(60);

/// The collector's two walks: `ConntrackTables`'s, or a test's.
pub(super) trait Walks: Send + Sync + 'static {
    /// Deletes the flows the datapath treats as gone; how many.
    fn expire_flows(&self) -> Result<usize, Error>;
    /// Clears the overflow hints no flow needs; how many.
    fn clear_overflow_hints(&self) -> Result<usize, Error>;
}

impl Walks for ConntrackTables {
    fn expire_flows(&self) -> Result<usize, Error> {
        Self::expire_flows(self)
    }

    fn clear_overflow_hints(&self) -> Result<usize, Error> {
        Self::clear_overflow_hints(self)
    }
}

/// Collects until `stop` resolves. A walk under way when it does finishes
/// first (it cannot be interrupted halfway through a table).
pub(super) async fn run<W: Walks>(tables: W, stop: impl Future<Output = ()>) {
    let tables = Arc::new(tables);
    let mut gc = interval(GC_INTERVAL);
    gc.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hints = interval(HINT_INTERVAL);
    hints.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = gc.tick() => {
                if let Some(expired) = walk(&tables, W::expire_flows).await
                    && expired > 0
                {
                    tracing::debug!(expired, "conntrack entries collected");
                }
            }
            _ = hints.tick() => {
                if let Some(cleared) = walk(&tables, W::clear_overflow_hints).await
                    && cleared > 0
                {
                    tracing::debug!(cleared, "conntrack overflow hints cleared");
                }
            }
        }
    }
}

/// Runs `step` on a blocking thread; logs its error (the next tick tries
/// again).
async fn walk<W: Walks>(tables: &Arc<W>, step: fn(&W) -> Result<usize, Error>) -> Option<usize> {
    let tables = Arc::clone(tables);
    match tokio::task::spawn_blocking(move || step(&tables)).await {
        Ok(Ok(count)) => Some(count),
        Ok(Err(error)) => {
            let error = crate::error_text::one_line(&error);
            tracing::error!(error, "conntrack collector step failed");
            None
        }
        Err(error) => {
            tracing::error!(error = %error, "conntrack collector step panicked");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts the walks; fails the first of each kind.
    #[derive(Default)]
    struct Counted {
        expiries: AtomicUsize,
        hint_walks: AtomicUsize,
    }

    struct Fake(Arc<Counted>);

    fn failing_first(count: &AtomicUsize) -> Result<usize, Error> {
        if count.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(Error::MissingMap { map: "CONNTRACK" });
        }
        Ok(1)
    }

    impl Walks for Fake {
        fn expire_flows(&self) -> Result<usize, Error> {
            failing_first(&self.0.expiries)
        }

        fn clear_overflow_hints(&self) -> Result<usize, Error> {
            failing_first(&self.0.hint_walks)
        }
    }

    /// On tokio's paused clock: each walk runs at once, then once per
    /// period, a failed one again on its next tick, until the collector is
    /// told to stop.
    #[tokio::test(start_paused = true)]
    async fn expires_every_ten_seconds_and_clears_hints_every_minute() {
        let counted = Arc::new(Counted::default());
        let stop_at = Duration::from_secs(125);
        run(Fake(Arc::clone(&counted)), tokio::time::sleep(stop_at)).await;
        let walks = (
            counted.expiries.load(Ordering::SeqCst),
            counted.hint_walks.load(Ordering::SeqCst),
        );
        // At 0, 10, …, 120 s; and at 0, 60 and 120 s.
        assert_eq!(walks, (13, 3));
    }
}
