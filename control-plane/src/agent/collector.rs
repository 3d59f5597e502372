//! The conntrack collector: deletes every `GC_INTERVAL` the flows the
//! datapath treats as gone (expired, or given to a backend since retired or
//! to an ID since reused: syncs leave those to it) and clears every
//! `HINT_INTERVAL` the overflow hints no flow needs, each a walk of both
//! conntrack tables. It runs on a handle of the tables of its own
//! (`ConntrackTables`), not under the agent's lock: at a million flows the
//! two walks take some 200 and 350 ms (`docs/bench/notes.md`), which syncs,
//! admin calls and scrapes waited out when they held the lock.
//!
//! After each expiry it counts what both tables hold (`ConntrackTables::
//! usage`, a walk too) and publishes the count ([`ConntrackCount`]): the
//! admin API's `/v1/maps` and the metrics read that, at most one period
//! old, instead of walking the tables under the lock on every scrape.
//!
//! Walking beside the agent is as safe as walking beside the datapath,
//! which the walks were written for: every slot is read again right before
//! it is freed, and a hint is cleared by a compare-and-swap against the
//! value read before the walk.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::time::{MissedTickBehavior, interval};
use xdp_lb::{ConntrackTables, Error, MapUsage};

/// How often the conntrack entries the datapath treats as gone are
/// collected, and the tables counted.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How often the conntrack overflow hints no flow needs are cleared
/// (`ConntrackTables::clear_overflow_hints`): a walk of both tables, as the
/// expiry's is, for a smaller gain (a stale hint costs only a lookup that
/// misses a read of a second bucket), so less often.
const HINT_INTERVAL: Duration = Duration::from_secs(60);

/// How full the conntrack tables were at the collector's last count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counted {
    /// `CONNTRACK`, then `CONNTRACK_REPLY` (`ConntrackTables::usage`).
    pub usage: [MapUsage; 2],
    /// When the count ended.
    pub at: Instant,
}

/// The collector's last count of the conntrack tables, shared with the
/// admin API: set once per period, read by each `/v1/maps` call and scrape
/// (a lock held only to copy it).
#[derive(Debug, Default)]
pub(crate) struct ConntrackCount(Mutex<Option<Counted>>);

impl ConntrackCount {
    /// The last count; `None` until the first one (the collector's first
    /// pass starts with the agent) or while every count has failed.
    pub(crate) fn get(&self) -> Option<Counted> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, counted: Counted) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(counted);
    }
}

/// The collector's walks: `ConntrackTables`'s, or a test's.
pub(super) trait Walks: Send + Sync + 'static {
    /// Deletes the flows the datapath treats as gone; how many.
    fn expire_flows(&self) -> Result<usize, Error>;
    /// Clears the overflow hints no flow needs; how many.
    fn clear_overflow_hints(&self) -> Result<usize, Error>;
    /// Counts the used slots of both tables.
    fn usage(&self) -> Result<[MapUsage; 2], Error>;
}

impl Walks for ConntrackTables {
    fn expire_flows(&self) -> Result<usize, Error> {
        Self::expire_flows(self)
    }

    fn clear_overflow_hints(&self) -> Result<usize, Error> {
        Self::clear_overflow_hints(self)
    }

    fn usage(&self) -> Result<[MapUsage; 2], Error> {
        Self::usage(self)
    }
}

/// Collects, and publishes each count in `count`, until `stop` resolves. A
/// walk under way when it does finishes first (it cannot be interrupted
/// halfway through a table).
pub(super) async fn run<W: Walks>(
    tables: W,
    count: Arc<ConntrackCount>,
    stop: impl Future<Output = ()>,
) {
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
                // After the expiry: what the tables hold once it is done.
                if let Some(usage) = walk(&tables, W::usage).await {
                    count.set(Counted { usage, at: Instant::now() });
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
async fn walk<W: Walks, T: Send + 'static>(
    tables: &Arc<W>,
    step: fn(&W) -> Result<T, Error>,
) -> Option<T> {
    let tables = Arc::clone(tables);
    match tokio::task::spawn_blocking(move || step(&tables)).await {
        Ok(Ok(found)) => Some(found),
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
    struct Walked {
        expiries: AtomicUsize,
        hint_walks: AtomicUsize,
        counts: AtomicUsize,
    }

    struct Fake(Arc<Walked>);

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

        /// The nth count finds n flows and 2n reply entries.
        fn usage(&self) -> Result<[MapUsage; 2], Error> {
            failing_first(&self.0.counts)?;
            let nth = self.0.counts.load(Ordering::SeqCst) as u64;
            let usage = |name, entries| MapUsage {
                name,
                entries,
                capacity: 1_024,
            };
            Ok([usage("CONNTRACK", nth), usage("CONNTRACK_REPLY", 2 * nth)])
        }
    }

    /// Runs the collector on a fake until `stop_at` on tokio's paused clock:
    /// the walks it made and the count it published.
    async fn run_until(stop_at: Duration) -> (Arc<Walked>, Option<Counted>) {
        let walked = Arc::new(Walked::default());
        let count = Arc::new(ConntrackCount::default());
        run(
            Fake(Arc::clone(&walked)),
            Arc::clone(&count),
            tokio::time::sleep(stop_at),
        )
        .await;
        (walked, count.get())
    }

    /// Each walk runs at once, then once per period, a failed one again on
    /// its next tick, until the collector is told to stop.
    #[tokio::test(start_paused = true)]
    async fn expires_and_counts_every_ten_seconds_and_clears_hints_every_minute() {
        let (walked, counted) = run_until(Duration::from_secs(125)).await;
        let walks = (
            walked.expiries.load(Ordering::SeqCst),
            walked.counts.load(Ordering::SeqCst),
            walked.hint_walks.load(Ordering::SeqCst),
        );
        // At 0, 10, …, 120 s; and at 0, 60 and 120 s.
        assert_eq!(walks, (13, 13, 3));
        // The last count is the one published.
        let entries = counted.map(|c| c.usage.map(|u| (u.name, u.entries)));
        assert_eq!(entries, Some([("CONNTRACK", 13), ("CONNTRACK_REPLY", 26)]));
    }

    /// Until a count succeeds there is none to read: no made-up zero.
    #[tokio::test(start_paused = true)]
    async fn a_failed_count_publishes_nothing() {
        let (walked, counted) = run_until(Duration::from_secs(5)).await;
        assert_eq!(walked.counts.load(Ordering::SeqCst), 1);
        assert_eq!(counted, None);
    }
}
