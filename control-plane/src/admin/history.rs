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

use std::collections::VecDeque;

/// The most events the agent's history holds. Twice the datapath's ring
/// (256 KiB of 88-byte records, some 2 900 events), so one drain of a full
/// ring pushes out none a reader had not been offered yet; and twice
/// [`super::server::MAX_EVENTS`], the most one call answers, so a reader a
/// full answer behind still has a full answer's room (4 096 events) before
/// its next call misses any. At 120 bytes an event (the agent keeps
/// `xdp_lb::FlowEvent`s, named only when read), under 1 MiB once full.
pub const HISTORY_CAPACITY: usize = 8192;

/// A bounded history of events, each numbered in the order it was pushed
/// (from 0, one more per event, never reused while the history lives).
#[derive(Clone, Debug)]
pub struct EventHistory<T> {
    events: VecDeque<T>,
    capacity: usize,
    /// The number of `events[0]`, or of the next event while it is empty.
    first_seq: u64,
}

/// What one read of an [`EventHistory`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage<T> {
    /// The events read, oldest first.
    pub events: Vec<T>,
    /// The cursor to read from next: one past the last event looked at.
    pub next_seq: u64,
    /// Events between the cursor and the oldest one still held: pushed out
    /// before this reader read them.
    pub missed: u64,
}

/// A cursor the history never gave: past its next event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "since_seq {since_seq} is past the agent's next flow event ({next_seq}): it came from \
     another run of the agent; read again without since_seq"
)]
pub struct CursorAhead {
    pub since_seq: u64,
    pub next_seq: u64,
}

impl<T: Clone> EventHistory<T> {
    /// An empty history of at most `capacity` events (at least one). Its
    /// memory grows with the events it holds: an agent that samples none
    /// holds none.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            events: VecDeque::new(),
            capacity,
            first_seq: 0,
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

    /// At most `max` of the events `wanted` accepts, from `since_seq` on
    /// (from the oldest held when `None`: a reader's first read, which
    /// misses nothing, as it was not reading before). A cursor before the
    /// oldest event held reads from that one and counts the ones between
    /// as missed; one past the next event is an error.
    pub fn read(
        &self,
        since_seq: Option<u64>,
        max: usize,
        wanted: impl Fn(&T) -> bool,
    ) -> Result<HistoryPage<T>, CursorAhead> {
        let next_seq = self.next_seq();
        let since_seq = since_seq.unwrap_or(self.first_seq);
        if since_seq > next_seq {
            return Err(CursorAhead {
                since_seq,
                next_seq,
            });
        }
        let start = since_seq.max(self.first_seq);
        let missed = start - since_seq;
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
        Ok(HistoryPage {
            events,
            next_seq: looked_at,
            missed,
        })
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

    #[test]
    fn two_readers_each_read_every_event() {
        let mut history = history(8, 0..3);
        let first = history.read(None, 10, all).unwrap();
        let second = history.read(None, 10, all).unwrap();
        assert_eq!(first.events, [0, 1, 2]);
        assert_eq!(first, second);
        history.push(3);
        for page in [first, second] {
            let next = history.read(Some(page.next_seq), 10, all).unwrap();
            assert_eq!((next.events, next.next_seq, next.missed), (vec![3], 4, 0));
        }
    }

    #[test]
    fn a_reader_behind_the_oldest_event_is_told_how_many_it_missed() {
        let history = history(4, 0..10);
        // Events 0 to 5 were pushed out; the reader had read up to 2.
        let page = history.read(Some(3), 10, all).unwrap();
        assert_eq!(
            (page.events, page.next_seq, page.missed),
            (vec![6, 7, 8, 9], 10, 3)
        );
        // From its new cursor it misses nothing.
        let page = history.read(Some(page.next_seq), 10, all).unwrap();
        assert_eq!((page.events.len(), page.missed), (0, 0));
    }

    #[test]
    fn a_read_stops_at_max_and_goes_on_from_there() {
        let history = history(8, 0..5);
        let page = history.read(Some(1), 2, all).unwrap();
        assert_eq!((page.events, page.next_seq), (vec![1, 2], 3));
        let page = history.read(Some(page.next_seq), 2, all).unwrap();
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
        assert!(history.read(Some(2), 1, all).is_ok());
        assert_eq!(
            history.read(Some(3), 1, all),
            Err(CursorAhead {
                since_seq: 3,
                next_seq: 2
            })
        );
    }
}
