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
//! each wake-up decodes and copies at most that many 80-byte events. Each
//! batch is named there (`event_names`: the service each event was for, as
//! it was named then) and the datapath's count of events lost to a full
//! ring read, under the agent's lock once per batch rather than once per
//! reader's read; the history's lock is held only to append them, which
//! wakes the readers waiting for events. It runs only while the datapath
//! samples flow events (`--flow-event-sampling`, set when the agent
//! starts): with none there is nothing to read.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError, TryLockError},
    time::Duration,
};

use tokio::io::{Interest, unix::AsyncFd};
use xdp_lb::{FlowEvent, FlowEventOutcome, FlowEvents};

use super::{core::Core, event_names};
use crate::admin::{HISTORY_CAPACITY, SharedHistory};

pub(crate) use event_names::NamedEvent;

/// The agent's recent flow events, shared by the drain and the admin API.
pub(crate) type FlowEventHistory = Arc<SharedHistory<NamedEvent>>;

/// The least time between two drains: also the most a new event waits on a
/// busy ring before a waiting reader is woken for it.
const DRAIN_SPACING: Duration = Duration::from_millis(50);
/// The most events one drain takes off the ring: more than the ring holds
/// (256 KiB of 88-byte records, some 2 900), so one drain empties a full
/// ring. A full ring every [`DRAIN_SPACING`] is some 60 000 events a second
/// into the history; beyond that the ring fills, and the datapath writes no
/// more until a drain makes room.
const MAX_PER_DRAIN: usize = 4096;

/// Moves the ring's events into `history` as they come, named from `core`,
/// until `stop` completes.
pub(crate) async fn run(
    ring: FlowEvents,
    core: Arc<Mutex<Core>>,
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
    let mut recorder = Recorder::default();
    // The loss count as it stands before any event: the datapath's outlives
    // agents (its maps are pinned), and a history that told 0 until its
    // first batch would have an observer take the whole count for new
    // losses then.
    tokio::task::block_in_place(|| recorder.record(&core, &history, true));
    loop {
        // With events waiting for the agent's lock, look again after the
        // spacing even if the ring stays quiet.
        let ready = tokio::select! {
            () = &mut stop => return,
            ready = ring.readable_mut() => match ready {
                Ok(ready) => Some(ready),
                Err(error) => {
                    tracing::error!(%error, "waiting on the flow event ring failed; xlb observe shows no new events");
                    return;
                }
            },
            () = tokio::time::sleep(DRAIN_SPACING), if !recorder.pending.is_empty() => None,
        };
        if let Some(mut ready) = ready {
            let before = recorder.pending.len();
            recorder.pending.extend(
                std::iter::from_fn(|| ready.get_inner_mut().try_next()).take(MAX_PER_DRAIN),
            );
            // The kernel wakes the ring's waiters only when it writes into a
            // ring its reader had emptied: wait for that only once it is
            // empty. (A wake-up that came during the drain is kept: tokio
            // clears only the readiness this drain started from.)
            if recorder.pending.len() - before < MAX_PER_DRAIN {
                ready.clear_ready();
            }
        }
        if !recorder.pending.is_empty() {
            // Waits for the agent's lock only with a history's worth of
            // events held (off the runtime's worker, as the agent's own
            // steps do); else tries it, and keeps the events for the next
            // round while a sync holds it.
            let wait = recorder.pending.len() >= HISTORY_CAPACITY;
            tokio::task::block_in_place(|| recorder.record(&core, &history, wait));
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(DRAIN_SPACING) => {}
        }
    }
}

/// Events taken off the ring and not yet in the history, which they enter
/// named: naming reads the agent's state, under its lock, which a sync may
/// hold for a while. The ring is emptied all the same meanwhile, so that a
/// long sync does not make the datapath lose events to a full ring.
#[derive(Debug, Default)]
struct Recorder {
    pending: Vec<FlowEvent>,
    /// Whether the last read of the loss counter failed: its warning is
    /// logged once, not with every batch (up to 20 a second).
    losses_unreadable: bool,
}

impl Recorder {
    /// Names the pending events as the agent's state names its services now,
    /// and appends them to `history` with the datapath's count of events
    /// lost to a full ring; unless the agent's lock is held and not `wait`,
    /// when they stay pending.
    ///
    /// Reading that count here, with events, is enough: an event is lost only
    /// while the ring is full, and a full ring wakes the drain, which empties
    /// it and reads the count after; so the count appended last is at most
    /// one drain (some 50 ms) behind, or behind by the time a sync holds the
    /// lock.
    fn record(&mut self, core: &Mutex<Core>, history: &SharedHistory<NamedEvent>, wait: bool) {
        // Names only read the state: a step that panicked halfway through a
        // sync leaves them readable.
        let core = if wait {
            core.lock().unwrap_or_else(PoisonError::into_inner)
        } else {
            match core.try_lock() {
                Ok(core) => core,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            }
        };
        let named = event_names::name(std::mem::take(&mut self.pending), &core.reconciler);
        let lost = match core.datapath.flow_event_stats() {
            Ok(stats) => {
                if std::mem::take(&mut self.losses_unreadable) {
                    tracing::info!("the flow event counters are readable again");
                }
                Some(stats.get(FlowEventOutcome::LostRingFull).packets)
            }
            Err(error) => {
                if !std::mem::replace(&mut self.losses_unreadable, true) {
                    tracing::warn!(%error, "reading the flow event counters failed; xlb observe's count of events lost to a full ring stays as it was until they can be read again");
                }
                None
            }
        };
        drop(core);
        history.append(named, lost);
    }
}
