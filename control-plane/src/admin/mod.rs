//! The admin API: HTTP/JSON on a Unix socket, served from whatever implements
//! [`Admin`] (the agent; a fake in tests), and the client `xlb` uses.

pub mod client;
pub mod history;
pub mod server;

pub use client::{AdminClient, ClientError, DEFAULT_TIMEOUT};
pub use history::{Cursor, CursorAhead, EventHistory, HISTORY_CAPACITY, SharedHistory};
pub use server::{AdminServer, GroupError, SOCKET_MODE, ServeError, resolve_group, router, serve};

use std::collections::BTreeMap;

use tokio::sync::watch;

use crate::api::{
    BackendView, DatapathLbView, DrainRequest, DrainView, EventsView, FlowView, HealthCheckView,
    MaglevView, MapUsageView, ServiceView, SimulateRequest, SimulateView, StatsView, StatusView,
};

/// What the admin API can ask of the agent. Calls are synchronous and short
/// (map reads, one reconcile for a drain; `events` waits a bounded time); the
/// server runs them off the async executor.
pub trait Admin: Send + Sync + 'static {
    fn services(&self) -> Result<Vec<ServiceView>, AdminError>;
    fn backends(&self) -> Result<Vec<BackendView>, AdminError>;
    /// Every frontend of the datapath's maps with its table's backends, and
    /// the state no frontend reaches, read from the maps (not the model).
    fn datapath_lb(&self) -> Result<DatapathLbView, AdminError>;
    /// Tracked flows, only those of `service` when given.
    fn conntrack(&self, service: Option<&str>) -> Result<Vec<FlowView>, AdminError>;
    fn stats(&self) -> Result<StatsView, AdminError>;
    fn maps(&self) -> Result<Vec<MapUsageView>, AdminError>;
    fn maglev(&self, service: &str) -> Result<MaglevView, AdminError>;
    fn simulate(&self, request: &SimulateRequest) -> Result<SimulateView, AdminError>;
    /// Drains (`drain == true`) or undrains a backend.
    fn drain(&self, request: &DrainRequest, drain: bool) -> Result<DrainView, AdminError>;
    fn status(&self) -> Result<StatusView, AdminError>;
    /// The sampled flow events the agent's history holds now from the
    /// reader's cursor on (see [`EventHistory::read`]), at most `read.max`
    /// of those at `read.since_ns` or later. Reading takes nothing away:
    /// every reader, with a cursor of its own, reads every event. It must
    /// not wait: the server waits between calls, off the blocking pool, for
    /// [`Self::event_arrivals`].
    fn events(&self, read: &EventsRead) -> Result<EventsView, AdminError>;
    /// What wakes a waiting `/v1/events` reader: the `next_seq` of the
    /// history [`Self::events`] reads, sent each time events are added to
    /// it ([`SharedHistory::arrivals`]).
    fn event_arrivals(&self) -> watch::Receiver<u64>;
    /// The counters of `tc_probe_encap` (health probes through the DSR
    /// tunnel) by verdict name, packets only; `None` where no probe goes
    /// through the tunnel (`--dsr-health-probes direct`, or a fake).
    fn health_probe_stats(&self) -> Result<Option<BTreeMap<String, u64>>, AdminError> {
        Ok(None)
    }
    /// Every health check running, one per checked backend and check;
    /// none where nothing is checked (Kubernetes mode, or a fake).
    fn health_checks(&self) -> Result<Vec<HealthCheckView>, AdminError> {
        Ok(Vec::new())
    }
}

/// One read of the flow events: where a reader is and what it wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventsRead {
    /// The reader's cursor, the last answer's `next_seq`; `None` for its
    /// first read, from the oldest event held.
    pub since_seq: Option<u64>,
    /// The run of the answer `since_seq` came from (its `run`), when the
    /// reader sent it: a cursor of another run reads from the oldest event
    /// held, the answer saying the agent restarted.
    pub run: Option<u64>,
    /// Only events that happened then or later (`CLOCK_MONOTONIC_COARSE`,
    /// the datapath's clock for them, in ns): where a new reader starts.
    pub since_ns: u64,
    /// The most events to answer.
    pub max: usize,
}

impl EventsRead {
    /// The reader's cursor, if it has one.
    pub fn cursor(&self) -> Option<Cursor> {
        self.since_seq.map(|seq| Cursor { seq, run: self.run })
    }

    /// Reads `history` as `self` says, its events `time_ns` by `time_ns`;
    /// a cursor the history never gave is a bad request.
    pub fn from<T: Clone>(
        &self,
        history: &SharedHistory<T>,
        time_ns: impl Fn(&T) -> u64,
    ) -> Result<EventsView<T>, AdminError> {
        history
            .read(self.cursor(), self.max, |e| time_ns(e) >= self.since_ns)
            .map_err(|e| AdminError::BadRequest(e.to_string()))
    }
}

/// Why an admin call failed; the server maps each to an HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 404: no such service, backend or table.
    #[error("{0}")]
    NotFound(String),
    /// 400: the request itself is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// 500: the agent failed (a map read, a reconcile).
    #[error("{0}")]
    Internal(String),
}
