//! The agent's recent flow events, kept so that every `/v1/events` reader
//! sees every event: the agent drains the datapath's ring into an
//! [`EventHistory`] (one reader of the ring), and each admin reader reads the
//! history from a cursor of its own, a sequence number, instead of taking
//! events off the ring (which would share them out between readers).
//!
//! The history is bounded: once full, each new event pushes the oldest out.
//! A reader whose cursor points at an event pushed out is told how many it
//! missed and goes on from the oldest one kept, as `hubble observe` reports
//! lost events rather than stall the datapath or the other readers.
//!
//! Sequence numbers mean something only in the history that gave them, which
//! lives as long as the agent: each history draws a run id of its own, every
//! answer carries it, and a cursor sent back with another run's id (the
//! agent restarted in between) reads from the oldest event held, its answer
//! saying so ([`EventsView::restarted`]).
//!
//! [`SharedHistory`] is the history as the drain and the readers share it:
//! each append wakes the readers waiting for events, so none polls.

use std::{
    collections::VecDeque,
    hash::{BuildHasher, RandomState},
    sync::{Mutex, MutexGuard, PoisonError},
};

use tokio::sync::watch;

use crate::api::EventsView;

/// The most events the agent's history holds: twice
/// [`super::server::MAX_EVENTS`], the most one call answers, so a reader a
/// full answer behind still has a full answer's room (4 096 events) before
/// its next call misses any, even after one drain of a full datapath ring
/// (256 KiB of 88-byte records, some 2 900 events) comes in between. The agent keeps each event as the datapath
/// wrote it with the name of its service (`agent::event_names`), some 140
/// bytes: about 1 MiB once full.
pub const HISTORY_CAPACITY: usize = 8192;

/// A bounded history of events, each numbered in the order it was pushed
/// (from 0, one more per event, never reused while the history lives).
#[derive(Clone, Debug)]
pub struct EventHistory<T> {
    events: VecDeque<T>,
    capacity: usize,
    /// The number of `events[0]`, or of the next event while it is empty.
    first_seq: u64,
    /// Drawn at random when the history is made: which history a cursor's
    /// numbers belong to.
    run: u64,
    /// The source's running total of events it lost before they reached the
    /// history (for flow events, those the datapath could not write into its
    /// full ring), as last told ([`Self::set_lost_ring_full`]).
    lost_ring_full: u64,
}

/// Where a reader is: the `next_seq` of its last answer, and the `run` that
/// answer came from (`None` from a client that does not send it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
    pub run: Option<u64>,
}

impl Cursor {
    /// Where a reader goes on from after `answer`.
    pub fn after<E>(answer: &EventsView<E>) -> Self {
        Self {
            seq: answer.next_seq,
            run: Some(answer.run),
        }
    }
}

/// A cursor the history never gave: past its next event, with no run (or
/// this run's) to say it came from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "since_seq {since_seq} is past the agent's next flow event ({next_seq}): it came from \
     another run of the agent; read again without since_seq, or send the run it came with"
)]
pub struct CursorAhead {
    pub since_seq: u64,
    pub next_seq: u64,
}

impl<T: Clone> EventHistory<T> {
    /// An empty history of at most `capacity` events (at least one), with a
    /// run id of its own. Its memory grows with the events it holds: an
    /// agent that samples none holds none.
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            first_seq: 0,
            run: random_run(),
            lost_ring_full: 0,
        }
    }

    /// Appends `event`, pushing the oldest out when the history is full.
    pub fn push(&mut self, event: T) {
        if self.events.len() == self.capacity {
            self.events.pop_front();
            self.first_seq += 1;
        }
        self.events.push_back(event);
    }

    /// The number the next event pushed will have.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + self.events.len() as u64
    }

    /// Which history this is: every answer carries it, for the reader to
    /// send back with its cursor.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Records the source's total of events lost before they reached the
    /// history; every answer carries the last one recorded.
    pub fn set_lost_ring_full(&mut self, total: u64) {
        self.lost_ring_full = total;
    }

    /// At most `max` of the events `wanted` accepts, from `since` on.
    ///
    /// Without a cursor (a reader's first read) the read starts at the
    /// oldest event held and misses nothing, as the reader was not reading
    /// before. A cursor before the oldest event held reads from that one and
    /// counts the ones between as missed. A cursor of another run reads
    /// this run's events from the oldest held, `restarted`, its `missed`
    /// counting this run's events pushed out before it (what the other run
    /// had after the cursor is not known here). A cursor past the next event
    /// of this run, or of no run, is an error.
    pub fn read(
        &self,
        since: Option<Cursor>,
        max: usize,
        wanted: impl Fn(&T) -> bool,
    ) -> Result<EventsView<T>, CursorAhead> {
        let next_seq = self.next_seq();
        let (since_seq, restarted) = match since {
            None => (self.first_seq, false),
            // This run's numbers start at 0: it counts as missed what it
            // pushed out before this reader came back.
            Some(Cursor { run: Some(run), .. }) if run != self.run => (0, true),
            Some(Cursor { seq, .. }) if seq > next_seq => {
                return Err(CursorAhead {
                    since_seq: seq,
                    next_seq,
                });
            }
            Some(Cursor { seq, .. }) => (seq, false),
        };
        let start = since_seq.max(self.first_seq);
        let skip = usize::try_from(start - self.first_seq).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut looked_at = start;
        for event in self.events.iter().skip(skip) {
            if events.len() == max {
                break;
            }
            looked_at += 1;
            if wanted(event) {
                events.push(event.clone());
            }
        }
        Ok(EventsView {
            events,
            next_seq: looked_at,
            missed: start - since_seq,
            run: self.run,
            restarted,
            lost_ring_full: self.lost_ring_full,
        })
    }
}

/// A run id: random, so that a restarted agent's (a new process, whose
/// sequence numbers start at 0 again) differs from the last one's. The
/// standard library's `RandomState` is seeded from the OS's randomness.
fn random_run() -> u64 {
    RandomState::new().hash_one(std::process::id())
}

/// An [`EventHistory`] shared by the one that fills it and its readers. Each
/// append sends the history's next sequence number on a watch channel, so a
/// reader waiting for events past its cursor wakes when they come rather
/// than reading the history again and again.
#[derive(Debug)]
pub struct SharedHistory<T> {
    history: Mutex<EventHistory<T>>,
    /// The history's `next_seq`, sent on every append that adds events.
    arrivals: watch::Sender<u64>,
}

impl<T: Clone> SharedHistory<T> {
    pub fn new(history: EventHistory<T>) -> Self {
        let (arrivals, _) = watch::channel(history.next_seq());
        Self {
            history: Mutex::new(history),
            arrivals,
        }
    }

    /// Appends `events`, and the source's total of events lost before they
    /// reached the history when it is known; then wakes the readers waiting
    /// for events (when there are new ones).
    pub fn append(&self, events: impl IntoIterator<Item = T>, lost_ring_full: Option<u64>) {
        let mut history = self.lock();
        for event in events {
            history.push(event);
        }
        if let Some(total) = lost_ring_full {
            history.set_lost_ring_full(total);
        }
        // Sent under the history's lock, so that the numbers sent only grow
        // whoever appends.
        let next_seq = history.next_seq();
        self.arrivals.send_if_modified(|sent| {
            let grew = *sent != next_seq;
            *sent = next_seq;
            grew
        });
    }

    /// [`EventHistory::run`].
    pub fn run(&self) -> u64 {
        self.lock().run()
    }

    /// [`EventHistory::read`], under the lock.
    pub fn read(
        &self,
        since: Option<Cursor>,
        max: usize,
        wanted: impl Fn(&T) -> bool,
    ) -> Result<EventsView<T>, CursorAhead> {
        self.lock().read(since, max, wanted)
    }

    /// A receiver of the history's `next_seq`, which changes as events are
    /// appended: a reader whose cursor is at `seq` waits for a value past it.
    pub fn arrivals(&self) -> watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    /// The history itself. A panic while it was held leaves nothing half
    /// done that a reader could trip on (a push is whole or not made).
    fn lock(&self) -> MutexGuard<'_, EventHistory<T>> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(capacity: usize, events: impl IntoIterator<Item = u32>) -> EventHistory<u32> {
        let mut history = EventHistory::new(capacity);
        for event in events {
            history.push(event);
        }
        history
    }

    fn all(_: &u32) -> bool {
        true
    }

    /// A cursor at `seq` from a client that sends no run.
    fn at(seq: u64) -> Option<Cursor> {
        Some(Cursor { seq, run: None })
    }

    #[test]
    fn two_readers_each_read_every_event() {
        let mut history = history(8, 0..3);
        let first = history.read(None, 10, all).unwrap();
        let second = history.read(None, 10, all).unwrap();
        assert_eq!(first.events, [0, 1, 2]);
        assert_eq!(first, second);
        history.push(3);
        for page in [first, second] {
            let next = history.read(Some(Cursor::after(&page)), 10, all).unwrap();
            assert_eq!(
                (next.events, next.next_seq, next.missed, next.restarted),
                (vec![3], 4, 0, false)
            );
        }
    }

    #[test]
    fn a_reader_behind_the_oldest_event_is_told_how_many_it_missed() {
        let history = history(4, 0..10);
        // Events 0 to 5 were pushed out; the reader had read up to 2.
        let page = history.read(at(3), 10, all).unwrap();
        assert_eq!(
            (page.events, page.next_seq, page.missed),
            (vec![6, 7, 8, 9], 10, 3)
        );
        // From its new cursor it misses nothing.
        let page = history.read(at(page.next_seq), 10, all).unwrap();
        assert_eq!((page.events.len(), page.missed), (0, 0));
    }

    #[test]
    fn a_read_stops_at_max_and_goes_on_from_there() {
        let history = history(8, 0..5);
        let page = history.read(at(1), 2, all).unwrap();
        assert_eq!((page.events, page.next_seq), (vec![1, 2], 3));
        let page = history.read(at(page.next_seq), 2, all).unwrap();
        assert_eq!((page.events, page.next_seq), (vec![3, 4], 5));
    }

    #[test]
    fn unwanted_events_are_passed_over_and_not_read_again() {
        let history = history(8, 0..6);
        let page = history.read(None, 2, |&e| e >= 3).unwrap();
        assert_eq!((page.events, page.next_seq), (vec![3, 4], 5));
        let page = history.read(None, 10, |&e| e >= 100).unwrap();
        assert_eq!((page.events.len(), page.next_seq), (0, 6));
    }

    #[test]
    fn a_cursor_past_the_next_event_is_refused() {
        let history = history(4, 0..2);
        assert!(history.read(at(2), 1, all).is_ok());
        let this_run = Some(Cursor {
            seq: 3,
            run: Some(history.run()),
        });
        for cursor in [at(3), this_run] {
            assert_eq!(
                history.read(cursor, 1, all),
                Err(CursorAhead {
                    since_seq: 3,
                    next_seq: 2
                })
            );
        }
    }

    #[test]
    fn a_cursor_of_another_run_reads_this_run_from_its_oldest_event_and_says_so() {
        // The reader had read 3 events of the last run; this run pushed 10
        // into a history of 4, so the first 6 of this run are gone.
        let last_run = history(8, 0..3);
        let this_run = history(4, 10..20);
        assert_ne!(last_run.run(), this_run.run());
        let cursor = Cursor {
            seq: 3,
            run: Some(last_run.run()),
        };
        let page = this_run.read(Some(cursor), 10, all).unwrap();
        assert_eq!(
            (&page.events[..], page.next_seq, page.missed, page.restarted),
            (&[16, 17, 18, 19][..], 10, 6, true)
        );
        assert_eq!(page.run, this_run.run());
        // Past this run's next event, as a cursor of another run may well
        // be: not an error either.
        let cursor = Cursor {
            seq: 99,
            run: Some(last_run.run()),
        };
        let page = this_run.read(Some(cursor), 10, all).unwrap();
        assert_eq!((page.events.len(), page.restarted), (4, true));
        // From the cursor this answer gives, reading goes on as usual.
        let page = this_run.read(Some(Cursor::after(&page)), 10, all).unwrap();
        assert_eq!(
            (page.events.len(), page.missed, page.restarted),
            (0, 0, false)
        );
    }

    #[test]
    fn an_answer_carries_the_last_lost_total_recorded() {
        let mut history = history(4, 0..2);
        assert_eq!(history.read(None, 10, all).unwrap().lost_ring_full, 0);
        history.set_lost_ring_full(7);
        assert_eq!(history.read(None, 10, all).unwrap().lost_ring_full, 7);
    }

    #[test]
    fn an_append_of_events_wakes_the_waiting_readers() {
        let shared = SharedHistory::new(history(4, 0..2));
        let mut arrivals = shared.arrivals();
        assert_eq!(*arrivals.borrow_and_update(), 2);
        // A lost total alone brings no event to read: nobody is woken.
        shared.append([], Some(3));
        assert!(!arrivals.has_changed().unwrap());
        assert_eq!(shared.read(None, 10, all).unwrap().lost_ring_full, 3);
        shared.append([2, 3, 4], None);
        assert!(arrivals.has_changed().unwrap());
        assert_eq!(*arrivals.borrow_and_update(), 5);
        // The history of 4 pushed event 0 out: the number still grows.
        let page = shared.read(at(1), 10, all).unwrap();
        assert_eq!(
            (page.events, page.missed, page.lost_ring_full),
            (vec![1, 2, 3, 4], 0, 3)
        );
    }
}
