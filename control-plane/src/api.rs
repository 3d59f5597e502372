//! The admin API's JSON documents: what the agent serves on its Unix socket
//! and what `xlb` prints with `-o json`. Field names are stable for scripts;
//! add fields, never rename them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

use crate::model::{BackendState, FrontendKind, Mode, Protocol};

/// `GET /v1/services`: one entry per service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// The datapath's service ID (stable across reloads and restarts).
    pub id: u32,
    pub name: String,
    pub protocol: Protocol,
    pub mode: Mode,
    pub frontends: Vec<FrontendView>,
    /// Seconds a ClientIP affinity lasts; absent without affinity.
    pub affinity_timeout_seconds: Option<u64>,
    /// Maglev table size M (0 while the service has no usable backend).
    pub table_size: u32,
    pub backends: Vec<ServiceBackendView>,
    /// Packets and bytes the datapath translated for this service.
    pub packets: u64,
    pub bytes: u64,
}

/// A frontend of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendView {
    pub address: SocketAddr,
    pub protocol: Protocol,
    pub kind: FrontendKind,
}

/// A backend as one service sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBackendView {
    pub id: u32,
    pub address: SocketAddr,
    pub weight: u32,
    pub status: BackendStatus,
    /// Maglev slots this backend holds in the service's table.
    pub slots: u32,
}

/// What a backend is doing right now: the desired state with health overlaid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendStatus {
    /// In the table, healthy or unchecked.
    Active,
    /// Drained: keeps established flows, gets no new ones.
    Draining,
    /// Terminating: keeps established flows, gets no new ones.
    Terminating,
    /// Failed its health check, or waits for its first probe (health
    /// `pending`): out of the table, its flows re-selected.
    Down,
}

impl BackendStatus {
    /// The status of a backend in `state`, `healthy` or not.
    pub const fn of(state: BackendState, healthy: bool) -> Self {
        match (state, healthy) {
            (_, false) => Self::Down,
            (BackendState::Active, true) => Self::Active,
            (BackendState::Draining, true) => Self::Draining,
            (BackendState::Terminating, true) => Self::Terminating,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Draining => "draining",
            Self::Terminating => "terminating",
            Self::Down => "down",
        }
    }
}

/// `GET /v1/backends`: one entry per backend ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendView {
    pub id: u32,
    pub address: SocketAddr,
    pub protocol: Protocol,
    /// Bumped each time the ID is given to a new backend; conntrack entries of
    /// an older generation are treated as gone.
    pub generation: u32,
    /// The best status any of its services gives it: `active` while at
    /// least one of them sends it new flows, even if others drain it (a
    /// drain can be per service). `status_by_service` has each service's.
    pub status: BackendStatus,
    /// Health-check state over the services that check it: `down` when any
    /// finds it down, else `pending` when one has not probed it yet, `up`
    /// when every one finds it up, `unchecked` when none checks it.
    /// `health_by_service` says which service finds which.
    pub health: String,
    /// How each service that checks it does, by service name: the path
    /// its probes take and the verdict that service acts on. A backend of a
    /// `dsr` and a NAT service is probed through the tunnel for the first
    /// and directly for the second, and may be down in one only. Empty when
    /// no service checks it, and from agents that predate it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub health_by_service: BTreeMap<String, ServiceHealthView>,
    /// Names of the services this backend serves.
    pub services: Vec<String>,
    /// Its status in each of `services`, by service name. Empty from
    /// agents that predate it.
    #[serde(default)]
    pub status_by_service: BTreeMap<String, BackendStatus>,
    /// Who drains it, in each service that does, by service name: the
    /// configuration file (`state: draining`), the admin API (`xlb
    /// drain`), or both. A drain holds whatever its status shows (a down
    /// or terminating backend may be drained too). Empty when nothing
    /// drains it, and from agents that predate it.
    #[serde(default)]
    pub drained_by: BTreeMap<String, Vec<DrainSource>>,
    pub packets: u64,
    pub bytes: u64,
}

/// How one service checks one backend, in [`BackendView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealthView {
    /// How its probes reach the backend.
    pub path: ProbePathView,
    /// `up`, `pending` (not probed yet) or `down`: the verdict of the
    /// probes on that path, which the service acts on.
    pub health: String,
}

/// Who drained a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainSource {
    /// The configuration file says `state: draining`: only an edit of the
    /// file undrains it.
    File,
    /// `xlb drain` (`POST /v1/drain`): kept across reloads and agent
    /// restarts until `xlb undrain`.
    Admin,
}

impl DrainSource {
    /// The name `xlb` tables use: the file, or the command that drained it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Admin => "xlb drain",
        }
    }
}

/// `GET /v1/datapath/lb` (`xlb bpf lb list`): what the datapath's
/// load-balancing maps hold, read from the maps themselves (not from the
/// agent's model): each frontend with its table, and then the state no
/// frontend reaches: what an interrupted sync or a bug leaves behind, and
/// the records of draining and terminating backends.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathLbView {
    /// One entry per frontend (what `GET /v1/datapath/services` answers),
    /// sorted by service ID, then frontend.
    pub services: Vec<DatapathServiceView>,
    /// The Maglev tables whose service ID no frontend names, by ID: no new
    /// flow reaches them.
    pub tables_without_frontend: Vec<DatapathTableView>,
    /// The active backend records no Maglev table names (of a frontend or
    /// not), by ID: no new flow goes to them, while their tracked flows
    /// still do (what a draining or terminating backend is for).
    pub active_backends_without_table: Vec<DatapathRecordView>,
    /// The `ADDRESSES` entries whose address no frontend has, by address.
    pub addresses_without_frontend: Vec<DatapathAddressView>,
}

/// `GET /v1/datapath/services`: one entry per frontend of the datapath's
/// `SERVICES` map, read from the maps themselves (not from the agent's
/// model): what the datapath forwards now, including state an earlier agent
/// pinned and this one has not replaced yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathServiceView {
    pub frontend: SocketAddr,
    pub protocol: Protocol,
    /// What the `ADDRESSES` map says the frontend's address is; absent when
    /// it has no entry there (the datapath then passes its packets).
    pub kind: Option<FrontendKind>,
    /// The service ID the frontend maps to.
    pub service_id: u32,
    /// The service's name when the agent's model has a service of that ID;
    /// absent otherwise (pinned state of an earlier agent, a model not
    /// loaded yet).
    pub service: Option<String>,
    pub mode: Mode,
    /// Seconds a ClientIP affinity lasts; absent without affinity.
    pub affinity_timeout_seconds: Option<u64>,
    /// The size M of the service's Maglev table; 0 without a table (new
    /// flows find no backend).
    pub table_size: u32,
    /// Each backend ID the table names, by ID.
    pub backends: Vec<DatapathBackendView>,
}

/// A backend ID named by a Maglev table, with its record in the `BACKENDS` map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathBackendView {
    pub id: u32,
    /// The record's address; absent when `status` is `missing`.
    pub address: Option<SocketAddr>,
    /// The record's generation; absent when `status` is `missing`.
    pub generation: Option<u32>,
    pub status: DatapathBackendStatus,
    /// Maglev slots naming this ID.
    pub slots: u32,
}

/// A Maglev table whose service ID no frontend names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathTableView {
    pub service_id: u32,
    /// The service's name when the agent's model has a service of that ID
    /// (a sync failed before it wrote the service's frontends); absent
    /// otherwise.
    pub service: Option<String>,
    /// The table's size M.
    pub table_size: u32,
    /// Each backend ID the table names, by ID.
    pub backends: Vec<DatapathBackendView>,
}

/// An active record of the `BACKENDS` map that no Maglev table names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathRecordView {
    pub id: u32,
    pub address: SocketAddr,
    pub generation: u32,
    /// The backend's status in each service of the agent's model that has
    /// it, by service name, when the agent holds this record as that
    /// backend's; empty otherwise (not a backend of its model, or a record
    /// it does not hold).
    pub status_by_service: BTreeMap<String, BackendStatus>,
}

/// An `ADDRESSES` entry whose address no frontend has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathAddressView {
    pub address: IpAddr,
    /// What the entry declares the address to be. The datapath drops new
    /// flows to a VIP without a frontend on their port
    /// (`drop_unknown_port`), so here every one; a node address passes them.
    pub kind: FrontendKind,
}

/// What the `BACKENDS` map holds for a backend ID a table names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathBackendStatus {
    /// An active record: new flows hashed to its slots go to it.
    Active,
    /// A retired record: new flows hashed to its slots find no backend, and
    /// its tracked flows are re-selected. The agent retires a backend only once no
    /// table names it, so this is a table the agent has not rewritten yet.
    Retired,
    /// No record at all: new flows hashed to its slots find no backend. The
    /// agent writes a record before any table names it, so this is a
    /// datapath written by something else, or damaged.
    Missing,
}

impl DatapathBackendStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Missing => "missing",
        }
    }
}

/// `GET /v1/conntrack`: one tracked flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowView {
    pub protocol: Protocol,
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    pub backend_id: u32,
    /// The backend's address, when the ID still names a live backend of the
    /// flow's generation.
    pub backend: Option<SocketAddr>,
    /// The source the flow was given by source NAT (what the backend sees
    /// and answers); absent when the backend sees the client's own address
    /// and port, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat: Option<SocketAddr>,
    /// The service owning the frontend, if it still exists.
    pub service: Option<String>,
    /// TCP state (`syn`, `established`, `closing`) or `udp`.
    pub state: String,
    /// Seconds since the datapath last refreshed the entry.
    pub idle_seconds: u64,
}

/// `GET /v1/health`: one health check of one backend on one probe path, as
/// the agent's checker runs it: how it probes, what it found, and why its
/// last probe failed. A backend of a `dsr` and a NAT service under one
/// check has two: through the tunnel and direct.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckView {
    /// The backend checked: the address its traffic goes to.
    pub backend: SocketAddr,
    /// The services that list it with this check.
    pub services: Vec<String>,
    /// `tcp`, or `http GET PATH`.
    pub probe: String,
    pub path: ProbePathView,
    /// The address each probe connects to.
    pub probe_address: SocketAddr,
    /// The socket mark of a probe through the tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<u32>,
    /// `up`, `pending` (not probed yet) or `down`.
    pub health: String,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    /// Why the most recent failed probe failed, kept after a recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// How a health check's probes reach its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbePathView {
    /// To the backend's own address.
    Direct,
    /// To the VIP, through the DSR tunnel, with the view's `mark`.
    Tunnel,
    /// A DSR backend no probe can be wrapped for: `last_error` says why.
    /// (`none` from an agent of before the name.)
    #[serde(alias = "none")]
    Unwrappable,
}

/// `GET /v1/events`: one sampled flow event (the agent's
/// `--flow-event-sampling`): a new flow and the backend it was given, or a
/// drop and its reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEventView {
    /// `CLOCK_MONOTONIC` of the node when it happened, in ns (for ordering
    /// and intervals).
    pub time_ns: u64,
    /// `new_flow`, `drop`, or `refused` (a packet for a service without a
    /// backend, answered with a TCP reset or an ICMP port unreachable).
    pub kind: String,
    /// TCP or UDP; absent for a dropped fragment of another protocol
    /// (`drop_fragment`).
    pub protocol: Option<Protocol>,
    /// The client; absent for a dropped fragment of another protocol (no
    /// ports). A later TCP or UDP fragment dropped untracked names its
    /// client with port 0 (or its first fragment's).
    pub client: Option<SocketAddr>,
    pub frontend: SocketAddr,
    /// The service and backend a new flow was given; the service whose
    /// frontend a dropped or refused packet was sent to, if any.
    pub service: Option<String>,
    pub backend: Option<SocketAddr>,
    /// The verdict of a drop (`drop_unknown_port`, ...) or a refusal
    /// (`refuse_reset`, `refuse_unreachable`).
    pub reason: Option<String>,
}

/// `GET /v1/events`: one read of a reader's cursor into the agent's recent
/// flow events. The agent's history reads into this same document, with
/// its own events for `E` (`admin::EventHistory::read`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsView<E = FlowEventView> {
    /// The events read, oldest first.
    pub events: Vec<E>,
    /// Where this reader goes on from: the next call's `since_seq`.
    pub next_seq: u64,
    /// Events that happened since this reader's `since_seq` but left the
    /// agent's history (its last 8192 events) before it read them. After a
    /// restart (`restarted`): those of the new run that left it.
    pub missed: u64,
    /// The agent run that numbered `next_seq`: the next call's `run`. A new
    /// one each time the agent starts (0 from agents before it was added).
    #[serde(default)]
    pub run: u64,
    /// The cursor sent came from another run: the agent restarted since the
    /// reader's last answer. This answer reads the new run from its oldest
    /// event held; what happened from the reader's last answer to the new
    /// run's start is not known.
    #[serde(default)]
    pub restarted: bool,
    /// Sampled flow events the datapath could not write into its ring (it
    /// was full), as of the agent's last drain of the ring: `xlb stats`'
    /// `flow events lost_ring_full`, counted since the datapath's maps were
    /// made (they outlive agent restarts). 0 from agents before it was added.
    #[serde(default)]
    pub lost_ring_full: u64,
}

impl<E> Default for EventsView<E> {
    fn default() -> Self {
        Self {
            events: Vec::new(),
            next_seq: 0,
            missed: 0,
            run: 0,
            restarted: false,
            lost_ring_full: 0,
        }
    }
}

impl<E> EventsView<E> {
    /// The same read with each event made into another type.
    pub fn map<F>(self, f: impl FnMut(E) -> F) -> EventsView<F> {
        EventsView {
            events: self.events.into_iter().map(f).collect(),
            next_seq: self.next_seq,
            missed: self.missed,
            run: self.run,
            restarted: self.restarted,
            lost_ring_full: self.lost_ring_full,
        }
    }
}

/// `GET /v1/maglev/{service}`: a service's table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaglevView {
    pub service: String,
    pub id: u32,
    pub size: u32,
    /// Backend ID per slot.
    pub slots: Vec<u32>,
    /// Slots held, per backend ID.
    pub shares: BTreeMap<u32, u32>,
}

/// `POST /v1/simulate`: which backend would this flow hit? A field it does
/// not have is refused (400), not ignored: a misspelt field would otherwise
/// ask something else than meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    pub client: SocketAddr,
    pub frontend: SocketAddr,
    pub protocol: Protocol,
}

/// The answer to a [`SimulateRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimulateView {
    /// `backend` (balanced), `tracked` (an existing flow keeps its backend),
    /// `no_backend`, `not_a_frontend`, or `unknown_port`.
    pub outcome: String,
    pub service: Option<String>,
    pub backend_id: Option<u32>,
    pub backend: Option<SocketAddr>,
}

/// `POST /v1/drain` and `/v1/undrain`: a backend address, in every service
/// or only in `service`. A field it does not have is refused (400): a
/// misspelt `service` would otherwise drain the backend everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub backend: SocketAddr,
    pub service: Option<String>,
}

/// The answer to a [`DrainRequest`]: the services whose backend changed,
/// and why the others the request covers did not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainView {
    /// The services whose backend left (drain) or rejoined (undrain) new
    /// flows.
    pub services: Vec<String>,
    /// Each service the request covers (the one named, or every one with
    /// the backend) where nothing changed, and why. Empty from agents that
    /// predate it.
    #[serde(default)]
    pub unchanged: Vec<DrainUnchangedView>,
    /// The drains an undrain removed that no service had the backend for
    /// (its service or the backend gone from the configuration): they
    /// would have applied again had it come back. Empty from agents that
    /// predate it.
    #[serde(default)]
    pub forgotten: Vec<DrainEntryView>,
}

/// A service a drain or undrain left as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainUnchangedView {
    pub service: String,
    pub reason: DrainUnchanged,
}

/// Why a drain or undrain changed nothing in a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainUnchanged {
    /// Drain: `xlb drain` had drained it there already.
    AlreadyDrained,
    /// Undrain: nothing drains it there.
    NotDrained,
    /// The configuration file drains it there (`state: draining`). An
    /// undrain cannot lift that: edit the file. A drain is kept all the
    /// same, and holds if the file stops draining the backend.
    DrainedByFile,
    /// Its source says it is terminating: it gets no new flows, drained or
    /// not (a drain is kept, and holds if it turns active again).
    Terminating,
}

/// A drain made through the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainEntryView {
    pub backend: SocketAddr,
    /// The service it was made for; absent: every service with the backend.
    pub service: Option<String>,
    /// The services it drains the backend in now. Empty when no service
    /// has the backend (or the service named is gone): the drain is kept
    /// until `xlb undrain`, and holds again if the backend comes back.
    pub services: Vec<String>,
}

/// The drains made through the admin API, which the agent keeps in a file
/// across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainsView {
    /// The file they are kept in (`drains.json` in `--state-dir`).
    pub file: String,
    /// Every one, by backend.
    pub drains: Vec<DrainEntryView>,
    /// Why the drains an earlier agent kept could not be restored when
    /// this one started: it started without them (the backends they
    /// drained took new flows again). Absent when they were restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_error: Option<String>,
}

/// `GET /v1/stats`: the datapath's counters, by name (the names the datapath
/// counters carry, e.g. `forward_to_backend`), packets only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    pub verdicts: BTreeMap<String, u64>,
    pub conntrack: BTreeMap<String, u64>,
    pub parser: BTreeMap<String, u64>,
    /// Sampled flow events by outcome: `written` to the datapath's ring, or
    /// `lost_ring_full` (its reader fell behind). Empty from agents that
    /// predate it.
    #[serde(default)]
    pub flow_events: BTreeMap<String, u64>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// The agent's version and the datapath layout version it reads.
    pub version: String,
    pub layout_version: u32,
    pub config_file: Option<String>,
    /// Interfaces with `xdp_lb` attached, and how (`native` or `generic`).
    pub attached: Vec<AttachmentView>,
    pub services: usize,
    pub backends: usize,
    /// True once the first full sync from the source has been programmed.
    pub synced: bool,
    /// The last reload of the configuration, good or bad.
    pub last_reload: Option<ReloadView>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// Duration of the last full sync, in seconds.
    pub last_sync_seconds: Option<f64>,
    /// Why the last sync failed, until one succeeds: the datapath still
    /// forwards what the syncs before it programmed (a configuration the
    /// maps cannot hold is refused whole, for one). Absent when the last
    /// sync succeeded, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_error: Option<String>,
    pub uptime_seconds: u64,
    /// How the VIPs are announced (BGP, L2), one entry per speaker; empty
    /// when the agent announces nothing.
    #[serde(default)]
    pub announcements: Vec<AnnouncementView>,
    /// Why the datapath still serves the state an earlier agent pinned,
    /// unchanged: this agent adopted it and has no model from its source
    /// yet (`the configuration file is rejected`, `the Kubernetes caches
    /// are not synced yet`). Meanwhile nothing takes a backend out: no
    /// health check runs (they start with the first model) and no endpoint
    /// change is applied, so a backend that fails stays in its table; and
    /// the speakers keep what that agent announced (`announcements`, marked
    /// `left_by_earlier_agent`). Absent once a model is taken, when nothing
    /// was adopted, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier_agent_state_kept: Option<String>,
    /// The Kubernetes source (`xlb agent --kubernetes`); absent when the
    /// services come from a configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesView>,
    /// One in this many new flows, drops and refusals is a flow event for `xlb
    /// observe` (`--flow-event-sampling`); 0: none. Absent from agents that
    /// predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_event_sampling: Option<u32>,
    /// The drains made with `xlb drain`, kept across restarts. Absent from
    /// agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drains: Option<DrainsView>,
    /// What decides each flow's backend, to compare across the instances of
    /// an ECMP group. Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MaglevSettingsView>,
}

/// The settings every instance of an ECMP group must share for a flow to
/// get the same backend on each (docs/announce.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaglevSettingsView {
    /// `--hash-seed`, as the datapath holds it.
    pub hash_seed: u64,
    /// `--maglev-min-size`: the smallest table a service gets.
    pub min_table_size: u32,
}

/// The Kubernetes source of an agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesView {
    /// This agent's node (`NODE_NAME`); empty when not given.
    pub node: String,
    /// The label selector of the Service and EndpointSlice watches.
    pub label_selector: String,
    /// Whether each watched cache holds a full list, by cache
    /// (`services`, `endpointslices`, `node`).
    pub caches: BTreeMap<String, bool>,
    /// True once every cache is synced: nothing is programmed from the
    /// cluster before.
    pub caches_synced: bool,
    /// The last error of a watch (they are retried with backoff), until a
    /// watch delivers again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The healthCheckNodePorts this agent answers on.
    #[serde(default)]
    pub health_check_node_ports: Vec<u16>,
}

/// One speaker's announcements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnouncementView {
    /// `bgp` or `l2`.
    pub speaker: String,
    /// The interface an L2 speaker answers on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The VIPs announced as of the speaker's last success; or, with
    /// `left_by_earlier_agent`, what the speaker holds as read back.
    pub vips: Vec<IpAddr>,
    /// This agent has announced nothing yet (it cannot serve before its
    /// first sync: its configuration file is rejected, its Kubernetes
    /// caches are not synced), and `vips` are what an earlier agent left
    /// (BIRD's included file, the L2 map), kept as they are until then.
    /// False from agents that predate it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_by_earlier_agent: bool,
    /// Why the last attempt failed, until one succeeds (it is retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An attached interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub interface: String,
    pub mode: String,
}

/// One configuration reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadView {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `ok` or `rejected`.
    pub outcome: String,
    /// Why the file was rejected (every error, one per line).
    pub error: Option<String>,
}

/// An error answer of the admin API (any non-2xx status).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    pub error: String,
}

/// `GET /v1/maps`: how full a datapath map is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapUsageView {
    /// The map's name in the datapath (`CONNTRACK`, `SERVICES`, `BACKENDS`, ...).
    pub name: String,
    pub entries: u64,
    /// What the map is sized for. For the conntrack tables, the flows
    /// (`--conntrack-size`): they have twice as many slots or more, so
    /// their entries can pass it.
    pub capacity: u64,
    /// How long ago `entries` was counted, for a count taken before the
    /// call: the conntrack tables' (`CONNTRACK`, `CONNTRACK_REPLY`) are
    /// the agent's conntrack collector's, counted every 10 s. Absent for a
    /// count taken for this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::ProbePathView;

    #[test]
    fn an_unwrappable_path_is_named_so_and_read_by_its_older_name_too() {
        let named = serde_json::to_string(&ProbePathView::Unwrappable).unwrap();
        assert_eq!(named, r#""unwrappable""#);
        for old_or_new in [r#""none""#, r#""unwrappable""#] {
            let read: ProbePathView = serde_json::from_str(old_or_new).unwrap();
            assert_eq!(read, ProbePathView::Unwrappable);
        }
    }
}
