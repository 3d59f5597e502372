//! The admin API: HTTP/JSON on a Unix socket, served from whatever implements
//! [`Admin`] (the agent; a fake in tests), and the client `xlb` uses.

pub mod client;
pub mod server;

pub use client::{AdminClient, ClientError, DEFAULT_TIMEOUT};
pub use server::{AdminServer, GroupError, SOCKET_MODE, ServeError, resolve_group, router, serve};

use std::collections::BTreeMap;

use crate::api::{
    BackendView, DatapathLbView, DrainRequest, DrainView, FlowEventView, FlowView, HealthCheckView,
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
    /// The sampled flow events waiting now, at most `max`; none is an empty
    /// list (events are read once: two readers share them). It must not
    /// wait: the server waits between calls, off the blocking pool.
    fn events(&self, max: usize) -> Result<Vec<FlowEventView>, AdminError>;
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
