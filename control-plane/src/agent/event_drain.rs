//! Drains the datapath's flow event ring into the agent's history
//! ([`EventHistory`]), whether anyone observes or not: every `/v1/events`
//! reader then reads the history from a cursor of its own (so each sees
//! every event), an observer that starts sees what happens from its start,
//! and the ring never fills with events nobody read, which would stop the
//! datapath writing new ones.
//!
//! The work is bounded, and nothing while no event comes: the drain waits on
//! the ring's descriptor (epoll, through tokio), takes at most
//! [`MAX_PER_DRAIN`] events, and then lets [`DRAIN_SPACING`] pass before it
//! looks again, so a busy datapath wakes it at most 20 times a second and
//! each wake-up decodes and copies at most that many 80-byte events, the
//! history's lock held only to append them. It runs only while the
//! datapath samples flow events (`--flow-event-sampling`, set when the
//! agent starts): with none there is nothing to read.

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};
use xdp_lb::{FlowEvent, FlowEvents};

use crate::admin::EventHistory;

/// The agent's recent flow events, shared by the drain and the admin API.
pub(crate) type FlowEventHistory = std::sync::Arc<Mutex<EventHistory<FlowEvent>>>;

/// The least time between two drains: also the most a new event waits on a
/// busy ring before a reader can see it (readers look every 50 ms as well).
const DRAIN_SPACING: Duration = Duration::from_millis(50);
/// The most events one drain takes off the ring: more than the ring holds
/// (256 KiB of 88-byte records, some 2 900), so one drain empties a full
/// ring. A full ring every [`DRAIN_SPACING`] is some 60 000 events a second
/// into the history; beyond that the ring fills, and the datapath writes no
/// more until a drain makes room.
const MAX_PER_DRAIN: usize = 4096;

/// Moves the ring's events into `history` as they come, until `stop`
/// completes.
pub(crate) async fn run(
    ring: FlowEvents,
    history: FlowEventHistory,
    stop: impl Future<Output = ()> + Send,
) {
    // SAFETY: `FlowEvents` owns the ring's descriptor (a duplicate of its
    // own, `Datapath::flow_events`), open as long as it lives, and
    // `as_raw_fd` always answers that one; the `AsyncFd` owns the reader.
    let registered = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) };
    let mut ring = match registered {
        Ok(ring) => ring,
        Err(error) => {
            tracing::error!(%error, "cannot wait on the flow event ring; xlb observe shows no events");
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        let mut ready = tokio::select! {
            () = &mut stop => return,
            ready = ring.readable_mut() => match ready {
                Ok(ready) => ready,
                Err(error) => {
                    tracing::error!(%error, "waiting on the flow event ring failed; xlb observe shows no new events");
                    return;
                }
            },
        };
        let taken = drain(ready.get_inner_mut(), &history, MAX_PER_DRAIN);
        // The kernel wakes the ring's waiters only when it writes into a
        // ring its reader had emptied: wait for that only once it is empty.
        // (A wake-up that came during the drain is kept: tokio clears only
        // the readiness this drain started from.)
        if taken < MAX_PER_DRAIN {
            ready.clear_ready();
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(DRAIN_SPACING) => {}
        }
    }
}

/// Moves at most `max` events from `ring` into `history`; how many.
fn drain(ring: &mut FlowEvents, history: &Mutex<EventHistory<FlowEvent>>, max: usize) -> usize {
    let batch: Vec<FlowEvent> = std::iter::from_fn(|| ring.try_next()).take(max).collect();
    let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
    for event in &batch {
        history.push(*event);
    }
    batch.len()
}
