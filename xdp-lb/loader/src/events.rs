//! Reading the datapath's sampled flow events (`xdp_lb_common::events`) from
//! the `FLOW_EVENTS` ring buffer, as a stream: `FlowEvents::next` waits up to
//! a timeout for the next one. Sampling is set by
//! `Config::flow_event_sampling` (0, the default, writes none).

use std::{
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    time::Duration,
};

use aya::maps::{Map, MapData, RingBuf};
use xdp_lb_common::{
    events::{EVENT_DROP, EVENT_NEW_FLOW, EVENT_REFUSED, FlowEvent as RawEvent},
    stats::Verdict,
};

use crate::{
    Datapath, Error,
    maps::{FLOW_EVENTS, map_err},
    net::{Protocol, socket},
};

/// What happened to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowEventKind {
    /// A new flow was given this backend.
    NewFlow {
        service_id: u32,
        backend_id: u32,
        backend: SocketAddr,
    },
    /// A packet was dropped for this reason.
    Drop { verdict: Verdict },
    /// A packet for a service without a backend (or without a free
    /// source-NAT port) was answered as this verdict says: a TCP reset, an
    /// ICMP port unreachable.
    Refused { verdict: Verdict },
}

/// One sampled event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEvent {
    /// `CLOCK_MONOTONIC_COARSE` when it happened, in ns.
    pub time_ns: u64,
    /// The client's end. For a dropped fragment of another protocol than
    /// TCP and UDP (`drop_fragment`) the client is unknown: `None`. A later
    /// TCP or UDP fragment (`drop_fragment_untracked`) names its client with
    /// port 0, or with its first fragment's port when that was found but its
    /// flow no longer is; an IPv6 one whose Fragment header names
    /// Destination Options, which only its first fragment carries, has no
    /// protocol until that first fragment is found: without it, `None`.
    pub client: Option<SocketAddr>,
    /// The frontend the packet was sent to (port 0 for a fragment of another
    /// protocol, and for a later fragment as for its client).
    pub frontend: SocketAddr,
    /// TCP or UDP; `None` for a fragment of another protocol, or of one not
    /// known (the IPv6 later fragment above).
    pub protocol: Option<Protocol>,
    pub kind: FlowEventKind,
}

impl FlowEvent {
    fn from_raw(raw: &RawEvent) -> Option<Self> {
        let protocol = Protocol::from_number(raw.proto);
        let kind = match raw.kind {
            EVENT_NEW_FLOW => FlowEventKind::NewFlow {
                service_id: raw.service_id,
                backend_id: raw.backend_id,
                backend: socket(&raw.backend, raw.backend_port_be),
            },
            EVENT_DROP => FlowEventKind::Drop {
                verdict: *Verdict::ALL.get(raw.verdict as usize)?,
            },
            EVENT_REFUSED => FlowEventKind::Refused {
                verdict: *Verdict::ALL.get(raw.verdict as usize)?,
            },
            _ => return None,
        };
        Some(Self {
            time_ns: raw.time_ns,
            client: protocol.map(|_| socket(&raw.client, raw.client_port_be)),
            frontend: socket(&raw.frontend, raw.frontend_port_be),
            protocol,
            kind,
        })
    }
}

/// A reader of the flow events, independent of the `Datapath` it came from
/// (it holds its own descriptor of the ring buffer). One reader at a time:
/// each event is read once.
pub struct FlowEvents {
    ring: RingBuf<MapData>,
    /// Events the ring held that this build cannot read (another build's
    /// kinds or verdicts), skipped.
    skipped: u64,
}

impl std::fmt::Debug for FlowEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowEvents")
            .field("skipped", &self.skipped)
            .finish_non_exhaustive()
    }
}

/// The ring buffer's descriptor: `poll` and `epoll` find it readable while
/// events wait, which is what an async reader waits on (tokio's `AsyncFd`).
/// The kernel wakes a waiter when it writes an event into a ring its reader
/// had emptied, not for every event: wait again only once `try_next` has
/// found the ring empty.
impl AsRawFd for FlowEvents {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Datapath {
    /// A reader of the sampled flow events.
    pub fn flow_events(&self) -> Result<FlowEvents, Error> {
        let Map::RingBuf(data) = self.map(FLOW_EVENTS)? else {
            return Err(Error::Corrupt {
                map: FLOW_EVENTS,
                reason: "the map does not have the type this build expects",
            });
        };
        let fd = data
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| Error::FlowEvents {
                call: "dup",
                source,
            })?;
        let owned = MapData::from_fd(fd).map_err(map_err(FLOW_EVENTS, "open"))?;
        let ring = RingBuf::try_from(Map::RingBuf(owned)).map_err(map_err(FLOW_EVENTS, "map"))?;
        Ok(FlowEvents { ring, skipped: 0 })
    }
}

impl FlowEvents {
    /// The next event, waiting up to `timeout` for one; `None` if none came.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<FlowEvent>, Error> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(event) = self.try_next() {
                return Ok(Some(event));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() || !self.wait(left)? {
                return Ok(self.try_next());
            }
        }
    }

    /// The next event if one is waiting.
    pub fn try_next(&mut self) -> Option<FlowEvent> {
        while let Some(item) = self.ring.next() {
            let event = (item.len() >= size_of::<RawEvent>())
                // SAFETY: at least a `RawEvent`'s bytes, which any bit
                // pattern is valid for; read unaligned.
                .then(|| unsafe { item.as_ptr().cast::<RawEvent>().read_unaligned() })
                .and_then(|raw| FlowEvent::from_raw(&raw));
            match event {
                Some(event) => return Some(event),
                None => self.skipped += 1,
            }
        }
        None
    }

    /// Events skipped because this build could not read them.
    pub const fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Waits until the ring buffer has data or `timeout` passes; true if it
    /// has data.
    fn wait(&self, timeout: Duration) -> Result<bool, Error> {
        let mut poll = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(Error::FlowEvents {
                call: "poll",
                source: error,
            });
        }
        Ok(ready > 0)
    }
}
