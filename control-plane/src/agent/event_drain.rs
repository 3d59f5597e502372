//! Drains the datapath's flow event ring into the agent's history
//! ([`EventHistory`]), whether anyone observes or not: every `/v1/events`
//! reader then reads the history from a cursor of its own (so each sees
//! every event), an observer that starts sees what happens from its start,
//! and the ring never fills with events nobody read, which would stop the
//! datapath writing new ones.
//!
//! The work is bounded: one read of the ring every [`DRAIN_INTERVAL`], of at
//! most [`MAX_PER_DRAIN`] events. An empty ring costs a read of its two
//! positions (memory the kernel shares with the agent, no system call), so
//! an idle drain is 20 wake-ups a second; a busy one decodes and copies 80
//! bytes an event, with the history's lock held only to append them. It
//! runs only while the datapath samples flow events (`--flow-event-sampling`,
//! set when the agent starts): with none there is nothing to read.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::{MissedTickBehavior, interval};
use xdp_lb::{FlowEvent, FlowEvents};

use crate::admin::EventHistory;

/// The agent's recent flow events, shared by the drain and the admin API.
pub(crate) type FlowEventHistory = Arc<Mutex<EventHistory<FlowEvent>>>;

/// How often the ring is drained: also the most a new event waits before a
/// reader can see it (readers look every 50 ms as well).
const DRAIN_INTERVAL: Duration = Duration::from_millis(50);
/// The most events one drain takes off the ring: more than the ring holds
/// (256 KiB of 88-byte records, some 2 900), so one drain empties a full
/// ring, and at most 80 000 events a second move into the history. Beyond
/// that the ring fills and the datapath writes no more until it has room.
const MAX_PER_DRAIN: usize = 4096;

/// Moves the ring's events into `history` every [`DRAIN_INTERVAL`] until
/// `stop` completes.
pub(crate) async fn run(
    ring: FlowEvents,
    history: FlowEventHistory,
    stop: impl Future<Output = ()> + Send,
) {
    let mut ring = Some(ring);
    let mut ticks = interval(DRAIN_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let Some(mut reader) = ring.take() else {
            return;
        };
        let into = Arc::clone(&history);
        // Decoding a full ring takes a while for an async worker: off it.
        match tokio::task::spawn_blocking(move || {
            drain(&mut reader, &into, MAX_PER_DRAIN);
            reader
        })
        .await
        {
            Ok(reader) => ring = Some(reader),
            Err(error) => {
                tracing::error!(%error, "the flow event drain failed; xlb observe shows no new events");
                return;
            }
        }
    }
}

/// Moves at most `max` events from `ring` into `history`.
fn drain(ring: &mut FlowEvents, history: &Mutex<EventHistory<FlowEvent>>, max: usize) {
    let batch: Vec<FlowEvent> = std::iter::from_fn(|| ring.try_next()).take(max).collect();
    let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
    for event in &batch {
        history.push(*event);
    }
}
