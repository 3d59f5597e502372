//! The agent's Prometheus metrics, served as OpenMetrics text on `/metrics`,
//! and its `/healthz`, on the one TCP listener xlb opens besides the datapath.
//!
//! Two kinds of metrics:
//! - what the agent records as it works ([`Metrics::observe_sync`],
//!   [`Metrics::observe_programming`], [`Metrics::reload`]), kept in a registry;
//! - what the datapath counts and the agent knows at scrape time (services,
//!   backends by state, verdicts, per-service traffic, map pressure), read
//!   through the [`Admin`] trait on each scrape — the same view `xlb` prints,
//!   so the two never disagree.
//!
//! `docs/metrics.md` describes every family; a test below keeps it in step
//! with what a scrape renders.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, text},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};
use tokio::net::TcpListener;
use xdp_lb::{CtEvent, FlowEventOutcome, ParseCounter, ProbeVerdict, Verdict};

use crate::{
    admin::Admin,
    api::{BackendStatus, BackendView, MapUsageView, ServiceView, StatsView},
    http::REQUEST_READ_TIMEOUT,
    reconcile::SyncError,
};

/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every `BackendStatus`, so `xlb_backends{state}` reports zeros too: a
/// series that vanishes reads as "no data" rather than "none".
const BACKEND_STATUSES: [BackendStatus; 4] = [
    BackendStatus::Active,
    BackendStatus::Draining,
    BackendStatus::Terminating,
    BackendStatus::Down,
];

/// The datapath verdicts counted as drops start with this.
const DROP_PREFIX: &str = "drop_";

type OutcomeLabels = [(&'static str, &'static str); 1];

/// What the agent records, and the registry it is exposed from.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sync_rules: Histogram,
    programming: Histogram,
    reloads: Family<OutcomeLabels, Counter>,
    sync_failures: Family<ReasonLabels, Counter>,
    announced: Family<SpeakerLabels, Gauge>,
    announce_failures: Family<SpeakerLabels, Counter>,
    l2_announcements: Family<L2AnnouncementLabels, Counter>,
}

type L2AnnouncementLabels = [(&'static str, &'static str); 2];

type SpeakerLabels = [(&'static str, &'static str); 1];

type ReasonLabels = [(&'static str, &'static str); 1];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every agent-recorded metric at zero and
    /// `xlb_build_info{version}` set to this build.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // 1 ms .. ~16 s: a full sync of 10 000 services should take under 2 s.
        let sync_rules = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register_with_unit(
            "xlb_sync_rules_duration",
            "Time to diff the desired state against the datapath and program the changes",
            Unit::Seconds,
            sync_rules.clone(),
        );
        // 100 µs .. ~13 s: a single backend change should land within 10 ms.
        let programming = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register_with_unit(
            "xlb_network_programming_duration",
            "Time from a change being seen (file reload, health transition, drain) to the datapath carrying it",
            Unit::Seconds,
            programming.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        // Both series exist from the start, so `rate()` sees the first rejection.
        for outcome in ["ok", "rejected"] {
            drop(reloads.get_or_create(&[("outcome", outcome)]));
        }
        registry.register(
            "xlb_config_reloads",
            "Configuration reloads, by outcome (a rejected file leaves the running configuration serving)",
            reloads.clone(),
        );
        let sync_failures = Family::<ReasonLabels, Counter>::default();
        for reason in SyncError::REASONS {
            drop(sync_failures.get_or_create(&[("reason", reason)]));
        }
        registry.register(
            "xlb_sync_failures",
            "Syncs that stopped, by reason (does_not_fit: refused whole before any write; ids_exhausted, table, datapath: stopped part-way, the next sync goes on from there); the datapath keeps forwarding what it held",
            sync_failures.clone(),
        );
        let announced = Family::<SpeakerLabels, Gauge>::default();
        registry.register(
            "xlb_announced_vips",
            "VIPs a speaker (bgp, l2) announces as of its last success; before the first, what an earlier agent left it announcing",
            announced.clone(),
        );
        let announce_failures = Family::<SpeakerLabels, Counter>::default();
        registry.register(
            "xlb_announce_failures",
            "Failed attempts to change a speaker's announcements (each is retried)",
            announce_failures.clone(),
        );
        let l2_announcements = Family::<L2AnnouncementLabels, Counter>::default();
        registry.register(
            "xlb_l2_announcements",
            "Gratuitous ARP requests and unsolicited neighbour advertisements for the VIPs the L2 speaker started answering for, by family and outcome (sent, failed)",
            l2_announcements.clone(),
        );
        registry.register(
            "xlb_build",
            "The running xlb build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            sync_rules,
            programming,
            reloads,
            sync_failures,
            announced,
            announce_failures,
            l2_announcements,
        }
    }

    /// Makes `speaker`'s series exist from the start, at 0: an alert on
    /// `xlb_announced_vips == 0` must fire for a speaker that never once
    /// succeeded (a BIRD never reachable), which would otherwise have no
    /// series at all.
    pub fn speaker_configured(&self, speaker: &'static str) {
        let labels = [("speaker", speaker)];
        drop(self.announced.get_or_create(&labels));
        drop(self.announce_failures.get_or_create(&labels));
    }

    /// Records how many VIPs `speaker` announces now.
    pub fn announced(&self, speaker: &'static str, vips: usize) {
        self.announced
            .get_or_create(&[("speaker", speaker)])
            .set(i64::try_from(vips).unwrap_or(i64::MAX));
    }

    /// Counts one failed attempt of `speaker`.
    pub fn announce_failed(&self, speaker: &'static str) {
        self.announce_failures
            .get_or_create(&[("speaker", speaker)])
            .inc();
    }

    /// Counts one L2 announcement of an address of `family` (`ipv4`,
    /// `ipv6`), sent or not.
    pub fn l2_announcement(&self, family: &'static str, sent: bool) {
        let outcome = if sent { "sent" } else { "failed" };
        self.l2_announcements
            .get_or_create(&[("family", family), ("outcome", outcome)])
            .inc();
    }

    /// Records one sync of the rules (desired state → maps).
    pub fn observe_sync(&self, took: Duration) {
        self.sync_rules.observe(took.as_secs_f64());
    }

    /// Records the latency of one change reaching the datapath.
    pub fn observe_programming(&self, took: Duration) {
        self.programming.observe(took.as_secs_f64());
    }

    /// Counts one sync that stopped with `error`, by its reason.
    pub fn sync_failed(&self, error: &SyncError) {
        self.sync_failures
            .get_or_create(&[("reason", error.reason())])
            .inc();
    }

    /// Counts one configuration reload, accepted (`ok`) or rejected.
    pub fn reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "rejected" };
        self.reloads.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// The whole exposition: the recorded metrics, then what `admin` reports
    /// now. An admin call that fails leaves its families out (and is logged)
    /// rather than failing the scrape. Blocks on the admin calls.
    pub fn render(&self, admin: &dyn Admin) -> Result<String, fmt::Error> {
        let snapshot = AdminSnapshot::read(admin);
        let mut scraped = Registry::default();
        scraped.register_collector(Box::new(snapshot));
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        text::encode_registry(&mut out, &scraped)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

/// What the admin trait reported at one scrape; each part absent when its
/// call failed.
#[derive(Debug, Default)]
struct AdminSnapshot {
    services: Option<Vec<ServiceView>>,
    backends: Option<Vec<BackendView>>,
    stats: Option<StatsView>,
    maps: Option<Vec<MapUsageView>>,
    /// Absent where no probe goes through the DSR tunnel.
    health_probes: Option<BTreeMap<String, u64>>,
}

impl AdminSnapshot {
    fn read(admin: &dyn Admin) -> Self {
        fn keep<T>(what: &str, result: Result<T, crate::admin::AdminError>) -> Option<T> {
            result
                .inspect_err(|error| tracing::warn!(%error, "metrics: reading {what} failed"))
                .ok()
        }
        Self {
            services: keep("services", admin.services()),
            backends: keep("backends", admin.backends()),
            stats: keep("stats", admin.stats()),
            maps: keep("maps", admin.maps()),
            health_probes: keep("health probe counters", admin.health_probe_stats()).flatten(),
        }
    }
}

impl Collector for AdminSnapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        if let Some(services) = &self.services {
            gauge(
                &mut encoder,
                "xlb_services",
                "Services programmed in the datapath",
                services.len() as i64,
            )?;
            counter_family(
                &mut encoder,
                "xlb_service_packets",
                "Packets the datapath translated for a service, both directions",
                "service",
                services.iter().map(|s| (s.name.as_str(), s.packets)),
            )?;
            counter_family(
                &mut encoder,
                "xlb_service_bytes",
                "Bytes the datapath translated for a service, both directions: whole Ethernet frames as received",
                "service",
                services.iter().map(|s| (s.name.as_str(), s.bytes)),
            )?;
        }
        if let Some(backends) = &self.backends {
            let mut by_state: BTreeMap<BackendStatus, i64> =
                BACKEND_STATUSES.iter().map(|s| (*s, 0)).collect();
            for backend in backends {
                *by_state.entry(backend.status).or_default() += 1;
            }
            let metric = encoder.encode_descriptor(
                "xlb_backends",
                "Backends, by state (active, draining, terminating, down)",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            encode_labelled(
                metric,
                "state",
                by_state.iter().map(|(s, n)| (s.as_str(), *n)),
            )?;
        }
        if let Some(stats) = &self.stats {
            let verdicts = every(Verdict::ALL.iter().map(|v| v.name()), &stats.verdicts);
            counter_family(
                &mut encoder,
                "xlb_datapath_packets",
                "Packets the datapath handled, by verdict",
                "verdict",
                verdicts.iter().copied(),
            )?;
            counter_family(
                &mut encoder,
                "xlb_datapath_drop_count",
                "Packets the datapath dropped, by reason",
                "reason",
                verdicts
                    .iter()
                    .filter_map(|&(v, n)| v.strip_prefix(DROP_PREFIX).map(|reason| (reason, n))),
            )?;
            counter_family(
                &mut encoder,
                "xlb_conntrack_events",
                "Connection-tracking events of the datapath, by event (a packet may count several); snat_exhausted: a new flow refused, no source-NAT port free; insert_failed and not_tracked_flood_guard: a new flow forwarded but not tracked",
                "event",
                every(CtEvent::ALL.iter().map(|e| e.name()), &stats.conntrack).into_iter(),
            )?;
            counter_family(
                &mut encoder,
                "xlb_datapath_parsed_packets",
                "Frames the datapath's parser read, by result: their class (tcp4, udp6, arp, ...) or why they are malformed (truncated_*, bad_*, too_many_ip6_extensions); each frame counts once",
                "result",
                every(ParseCounter::ALL.iter().map(|c| c.name()), &stats.parser).into_iter(),
            )?;
            counter_family(
                &mut encoder,
                "xlb_flow_events",
                "Sampled flow events (--flow-event-sampling), by outcome: written to the datapath's ring, or lost_ring_full (not written: the ring was full, its reader behind)",
                "outcome",
                every(
                    FlowEventOutcome::ALL.iter().map(|o| o.name()),
                    &stats.flow_events,
                )
                .into_iter(),
            )?;
        }
        if let Some(probes) = &self.health_probes {
            counter_family(
                &mut encoder,
                "xlb_health_probe_packets",
                "Packets of health probes through the DSR tunnel that tc_probe_encap handled, by verdict: wrapped (sent to the backend) or the drop_* reason it could not send one",
                "verdict",
                every(ProbeVerdict::ALL.iter().map(|v| v.name()), probes).into_iter(),
            )?;
        }
        if let Some(maps) = &self.maps {
            if let Some(conntrack) = maps.iter().find(|m| m.name == "CONNTRACK") {
                gauge(
                    &mut encoder,
                    "xlb_conntrack_entries",
                    "Flows tracked by the datapath, as of the conntrack collector's last count (every 10 s; xlb_conntrack_count_age_seconds says how old)",
                    i64::try_from(conntrack.entries).unwrap_or(i64::MAX),
                )?;
                if let Some(age) = conntrack.age_seconds {
                    let age = ConstGauge::new(age);
                    let metric = encoder.encode_descriptor(
                        "xlb_conntrack_count_age",
                        "Time since the conntrack collector last counted the conntrack tables (every 10 s); growing past that, its walks fail (see the agent's log)",
                        Some(&Unit::Seconds),
                        age.metric_type(),
                    )?;
                    age.encode(metric)?;
                }
            }
            let metric = encoder.encode_descriptor(
                "xlb_bpf_map_pressure",
                "How full a datapath map is: entries / capacity. For CONNTRACK and CONNTRACK_REPLY, entries as of the conntrack collector's last count (every 10 s) over the flows --conntrack-size asks for: 1 is as many flows as configured, and as the tables have twice as many slots it can pass 1",
                None,
                ConstGauge::new(0.0f64).metric_type(),
            )?;
            encode_labelled(
                metric,
                "map_name",
                maps.iter().map(|m| (m.name.as_str(), pressure(m))),
            )?;
        }
        Ok(())
    }
}

/// Every counter of `names` with its count in `counts`, 0 where it has none
/// (the admin API leaves zero counters out), in the order of `names`; then
/// any counter of `counts` that `names` lacks. A series that exists from
/// the start reads 0 on a dashboard rather than "no data", and `rate()`
/// sees its first increase.
fn every(
    names: impl Iterator<Item = &'static str>,
    counts: &BTreeMap<String, u64>,
) -> Vec<(&str, u64)> {
    let mut all: Vec<(&str, u64)> = names
        .map(|name| (name, counts.get(name).copied().unwrap_or(0)))
        .collect();
    let known: BTreeSet<&str> = all.iter().map(|&(name, _)| name).collect();
    all.extend(
        counts
            .iter()
            .filter(|(name, _)| !known.contains(name.as_str()))
            .map(|(name, &n)| (name.as_str(), n)),
    );
    all
}

/// `entries / capacity`, 0 for a map without capacity.
fn pressure(map: &MapUsageView) -> f64 {
    if map.capacity == 0 {
        0.0
    } else {
        map.entries as f64 / map.capacity as f64
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// A counter family with one label; `name` gets its `_total` from the encoder.
fn counter_family<'a>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl Iterator<Item = (&'a str, u64)>,
) -> Result<(), fmt::Error> {
    let mut metric =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for (value, count) in values {
        let labels = [(label, value)];
        ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Gauges with one label under an already written descriptor.
fn encode_labelled<'a, N>(
    mut metric: prometheus_client::encoding::MetricEncoder<'_>,
    label: &'static str,
    values: impl Iterator<Item = (&'a str, N)>,
) -> Result<(), fmt::Error>
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    for (value, n) in values {
        let labels = [(label, value)];
        ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Why the metrics endpoint could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "binding the metrics address {addr} (see --metrics-address{})",
        in_use_hint(source)
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// What to check when the address is taken: likely another agent.
fn in_use_hint(source: &io::Error) -> &'static str {
    if source.kind() == io::ErrorKind::AddrInUse {
        "; is another agent running?"
    } else {
        ""
    }
}

/// A bound metrics listener, not yet serving.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`Self::local_addr`]).
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(Self { listener, addr })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `/metrics` and `/healthz` until `shutdown` completes, each
    /// request's head bounded in time (`crate::http`).
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        admin: Arc<dyn Admin>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let Self { listener, addr } = self;
        tracing::info!(%addr, "metrics and healthz listening");
        let router = router(metrics, admin);
        crate::http::serve(listener, router, REQUEST_READ_TIMEOUT, shutdown, "metrics").await;
    }
}

/// Binds `addr` and serves `/metrics` (OpenMetrics text) and `/healthz` on it
/// until `shutdown` completes.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    admin: Arc<dyn Admin>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    MetricsServer::bind(addr)
        .await?
        .serve(metrics, admin, shutdown)
        .await;
    Ok(())
}

#[derive(Clone)]
struct MetricsState {
    metrics: Arc<Metrics>,
    admin: Arc<dyn Admin>,
}

/// `GET /metrics` and `GET /healthz`.
pub fn router(metrics: Arc<Metrics>, admin: Arc<dyn Admin>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(MetricsState { metrics, admin })
}

async fn scrape(State(state): State<MetricsState>) -> Response {
    let rendered =
        tokio::task::spawn_blocking(move || state.metrics.render(state.admin.as_ref())).await;
    match rendered {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Ok(Err(fmt::Error)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
        Err(join) => {
            tracing::error!(error = %join, "rendering the metrics panicked");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the metrics failed\n",
            )
                .into_response()
        }
    }
}

/// 200 `ok` once the first full sync is programmed and the program is
/// attached somewhere; 503 with the reason otherwise, so a load balancer in
/// front of several xlb nodes stops sending to one that cannot balance.
async fn healthz(State(state): State<MetricsState>) -> Response {
    let admin = state.admin;
    let status = tokio::task::spawn_blocking(move || admin.status()).await;
    let reason = match status {
        Ok(Ok(status)) if status.synced && !status.attached.is_empty() => {
            return (StatusCode::OK, "ok\n").into_response();
        }
        Ok(Ok(status)) if !status.synced => {
            "not synced: the first full sync is not programmed yet".to_owned()
        }
        Ok(Ok(_)) => "not attached to any interface".to_owned(),
        Ok(Err(error)) => format!("status unavailable: {error}"),
        Err(join) => format!("status unavailable: {join}"),
    };
    (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        time::Duration,
    };

    use super::*;
    use crate::{
        admin::{AdminError, EventsRead},
        api::{
            AttachmentView, DatapathLbView, DrainRequest, DrainView, EventsView, FlowView,
            MaglevView, ServiceBackendView, SimulateRequest, SimulateView, StatusView,
        },
        model::{Mode, Protocol},
        reconcile::DoesNotFit,
    };

    /// An agent with one service, two backends and some traffic.
    #[derive(Debug)]
    struct FakeAdmin {
        synced: bool,
        attached: bool,
        fail_stats: bool,
        /// No counter has counted yet.
        fresh: bool,
    }

    impl FakeAdmin {
        fn healthy() -> Self {
            Self {
                synced: true,
                attached: true,
                fail_stats: false,
                fresh: false,
            }
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    impl Admin for FakeAdmin {
        fn services(&self) -> Result<Vec<ServiceView>, AdminError> {
            Ok(vec![ServiceView {
                id: 1,
                name: "default/web:http".into(),
                protocol: Protocol::Tcp,
                mode: Mode::Nat,
                frontends: vec![],
                affinity_timeout_seconds: None,
                table_size: 7,
                backends: vec![ServiceBackendView {
                    id: 1,
                    address: addr("198.18.2.1:8080"),
                    weight: 1,
                    status: BackendStatus::Active,
                    slots: 7,
                }],
                packets: 1234,
                bytes: 56789,
            }])
        }
        fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
            let backend = |id, address: &str, status| BackendView {
                id,
                address: addr(address),
                protocol: Protocol::Tcp,
                generation: 1,
                status,
                health: "up".into(),
                health_by_service: BTreeMap::new(),
                services: vec!["default/web:http".into()],
                status_by_service: BTreeMap::from([("default/web:http".into(), status)]),
                drained_by: BTreeMap::new(),
                packets: 0,
                bytes: 0,
            };
            Ok(vec![
                backend(1, "198.18.2.1:8080", BackendStatus::Active),
                backend(2, "198.18.2.2:8080", BackendStatus::Draining),
                backend(3, "198.18.2.3:8080", BackendStatus::Draining),
            ])
        }
        fn datapath_lb(&self) -> Result<DatapathLbView, AdminError> {
            Ok(DatapathLbView::default())
        }
        fn conntrack(&self, _: Option<&str>) -> Result<Vec<FlowView>, AdminError> {
            Ok(vec![])
        }
        fn stats(&self) -> Result<StatsView, AdminError> {
            if self.fail_stats {
                return Err(AdminError::Internal("stats map unreadable".into()));
            }
            if self.fresh {
                // As the agent answers: counters at 0 left out.
                return Ok(StatsView::default());
            }
            Ok(StatsView {
                verdicts: BTreeMap::from([
                    ("forward_to_backend".to_owned(), 900),
                    ("drop_unknown_port".to_owned(), 17),
                    ("drop_no_backend".to_owned(), 3),
                ]),
                conntrack: BTreeMap::from([
                    ("created".to_owned(), 40),
                    ("hit".to_owned(), 860),
                    ("snat_exhausted".to_owned(), 2),
                ]),
                parser: BTreeMap::from([("tcp4".to_owned(), 918), ("truncated_tcp".to_owned(), 2)]),
                flow_events: BTreeMap::from([
                    ("written".to_owned(), 50),
                    ("lost_ring_full".to_owned(), 4),
                ]),
            })
        }
        fn maps(&self) -> Result<Vec<MapUsageView>, AdminError> {
            Ok(vec![
                MapUsageView {
                    name: "CONNTRACK".into(),
                    entries: 42,
                    capacity: 168,
                    age_seconds: Some(2.5),
                },
                MapUsageView {
                    name: "SERVICES".into(),
                    entries: 1,
                    capacity: 0,
                    age_seconds: None,
                },
            ])
        }
        fn maglev(&self, service: &str) -> Result<MaglevView, AdminError> {
            Err(AdminError::NotFound(format!("no service {service}")))
        }
        fn simulate(&self, _: &SimulateRequest) -> Result<SimulateView, AdminError> {
            Err(AdminError::BadRequest("unused".into()))
        }
        fn drain(&self, _: &DrainRequest, _: bool) -> Result<DrainView, AdminError> {
            Err(AdminError::BadRequest("unused".into()))
        }
        fn events(&self, _: &EventsRead) -> Result<EventsView, AdminError> {
            Ok(EventsView::default())
        }
        /// No events ever come: a reader waits out its wait.
        fn event_arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
            tokio::sync::watch::channel(0).1
        }
        fn health_probe_stats(&self) -> Result<Option<BTreeMap<String, u64>>, AdminError> {
            Ok(Some(if self.fresh {
                BTreeMap::new()
            } else {
                BTreeMap::from([("wrapped".into(), 12), ("drop_no_route".into(), 2)])
            }))
        }
        fn status(&self) -> Result<StatusView, AdminError> {
            Ok(StatusView {
                version: "test".into(),
                layout_version: 1,
                config_file: None,
                attached: if self.attached {
                    vec![AttachmentView {
                        interface: "eth0".into(),
                        mode: "native".into(),
                    }]
                } else {
                    vec![]
                },
                services: 1,
                backends: 3,
                synced: self.synced,
                last_reload: None,
                reloads_ok: 0,
                reloads_failed: 0,
                last_sync_seconds: None,
                last_sync_error: None,
                uptime_seconds: 5,
                announcements: Vec::new(),
                earlier_agent_state_kept: None,
                kubernetes: None,
                flow_event_sampling: None,
                drains: None,
                maglev: None,
            })
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn render_has_every_family_and_its_values() {
        let metrics = Metrics::new();
        metrics.observe_sync(Duration::from_millis(3));
        metrics.observe_programming(Duration::from_micros(250));
        metrics.reload(true);
        metrics.reload(true);
        metrics.reload(false);
        metrics.sync_failed(&SyncError::DoesNotFit(DoesNotFit {
            overflows: Vec::new(),
        }));
        let text = metrics.render(&FakeAdmin::healthy()).expect("render");
        let lines = lines(&text);
        let expected = [
            "xlb_sync_rules_duration_seconds_count 1",
            "xlb_sync_rules_duration_seconds_sum 0.003",
            "xlb_network_programming_duration_seconds_count 1",
            "xlb_network_programming_duration_seconds_sum 0.00025",
            r#"xlb_config_reloads_total{outcome="ok"} 2"#,
            r#"xlb_config_reloads_total{outcome="rejected"} 1"#,
            r#"xlb_sync_failures_total{reason="does_not_fit"} 1"#,
            r#"xlb_sync_failures_total{reason="datapath"} 0"#,
            &format!(
                r#"xlb_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            ),
            "xlb_services 1",
            r#"xlb_service_packets_total{service="default/web:http"} 1234"#,
            r#"xlb_service_bytes_total{service="default/web:http"} 56789"#,
            r#"xlb_backends{state="active"} 1"#,
            r#"xlb_backends{state="draining"} 2"#,
            r#"xlb_backends{state="terminating"} 0"#,
            r#"xlb_backends{state="down"} 0"#,
            r#"xlb_datapath_packets_total{verdict="forward_to_backend"} 900"#,
            r#"xlb_datapath_packets_total{verdict="drop_unknown_port"} 17"#,
            r#"xlb_datapath_drop_count_total{reason="unknown_port"} 17"#,
            r#"xlb_datapath_drop_count_total{reason="no_backend"} 3"#,
            r#"xlb_conntrack_events_total{event="created"} 40"#,
            r#"xlb_conntrack_events_total{event="hit"} 860"#,
            r#"xlb_conntrack_events_total{event="snat_exhausted"} 2"#,
            r#"xlb_conntrack_events_total{event="insert_failed"} 0"#,
            r#"xlb_flow_events_total{outcome="written"} 50"#,
            r#"xlb_flow_events_total{outcome="lost_ring_full"} 4"#,
            r#"xlb_datapath_parsed_packets_total{result="tcp4"} 918"#,
            r#"xlb_datapath_parsed_packets_total{result="truncated_tcp"} 2"#,
            r#"xlb_datapath_parsed_packets_total{result="udp6"} 0"#,
            "xlb_conntrack_entries 42",
            "xlb_conntrack_count_age_seconds 2.5",
            r#"xlb_bpf_map_pressure{map_name="CONNTRACK"} 0.25"#,
            r#"xlb_bpf_map_pressure{map_name="SERVICES"} 0.0"#,
            "# EOF",
        ];
        for line in expected {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(
            lines.contains(&"# TYPE xlb_datapath_packets counter"),
            "{text}"
        );
        assert!(
            lines.contains(&"# UNIT xlb_sync_rules_duration_seconds seconds"),
            "{text}"
        );
        // Only drop verdicts are drops.
        assert!(!text.contains(r#"reason="forward_to_backend""#), "{text}");
        assert_eq!(lines.last(), Some(&"# EOF"));
    }

    #[test]
    fn every_verdict_and_drop_reason_has_a_series_before_it_counts() {
        let admin = FakeAdmin {
            fresh: true,
            ..FakeAdmin::healthy()
        };
        let text = Metrics::new().render(&admin).expect("render");
        let lines = lines(&text);
        for verdict in Verdict::ALL {
            let name = verdict.name();
            let line = format!(r#"xlb_datapath_packets_total{{verdict="{name}"}} 0"#);
            assert!(
                lines.contains(&line.as_str()),
                "missing {line:?} in\n{text}"
            );
            if let Some(reason) = name.strip_prefix(DROP_PREFIX) {
                let line = format!(r#"xlb_datapath_drop_count_total{{reason="{reason}"}} 0"#);
                assert!(
                    lines.contains(&line.as_str()),
                    "missing {line:?} in\n{text}"
                );
            }
        }
        // Each once.
        let verdicts = lines
            .iter()
            .filter(|l| l.starts_with("xlb_datapath_packets_total{"))
            .count();
        assert_eq!(verdicts, Verdict::ALL.len(), "{text}");
    }

    #[test]
    fn every_health_probe_verdict_has_a_series_and_counts_what_tc_probe_encap_did() {
        let fresh = FakeAdmin {
            fresh: true,
            ..FakeAdmin::healthy()
        };
        let text = Metrics::new().render(&fresh).expect("render");
        let zeros = lines(&text);
        for verdict in ProbeVerdict::ALL {
            let line = format!(
                r#"xlb_health_probe_packets_total{{verdict="{}"}} 0"#,
                verdict.name()
            );
            assert!(
                zeros.contains(&line.as_str()),
                "missing {line:?} in\n{text}"
            );
        }
        let text = Metrics::new()
            .render(&FakeAdmin::healthy())
            .expect("render");
        let counted = lines(&text);
        for line in [
            r#"xlb_health_probe_packets_total{verdict="wrapped"} 12"#,
            r#"xlb_health_probe_packets_total{verdict="drop_no_route"} 2"#,
        ] {
            assert!(counted.contains(&line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn every_conntrack_event_and_parser_result_has_a_series_before_it_counts() {
        let admin = FakeAdmin {
            fresh: true,
            ..FakeAdmin::healthy()
        };
        let text = Metrics::new().render(&admin).expect("render");
        let lines = lines(&text);
        let events = CtEvent::ALL
            .iter()
            .map(|e| ("conntrack_events", "event", e.name()));
        let results = ParseCounter::ALL
            .iter()
            .map(|c| ("datapath_parsed_packets", "result", c.name()));
        for (family, label, value) in events.chain(results) {
            let line = format!(r#"xlb_{family}_total{{{label}="{value}"}} 0"#);
            assert!(
                lines.contains(&line.as_str()),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn a_configured_speaker_has_its_series_before_its_first_success() {
        let metrics = Metrics::new();
        metrics.speaker_configured("bgp");
        metrics.announce_failed("bgp");
        let text = metrics.render(&FakeAdmin::healthy()).expect("render");
        let lines = lines(&text);
        for line in [
            r#"xlb_announced_vips{speaker="bgp"} 0"#,
            r#"xlb_announce_failures_total{speaker="bgp"} 1"#,
        ] {
            assert!(lines.contains(&line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains(r#"speaker="l2""#), "{text}");
    }

    #[test]
    fn a_failing_admin_call_leaves_only_its_families_out() {
        let admin = FakeAdmin {
            fail_stats: true,
            ..FakeAdmin::healthy()
        };
        let text = Metrics::new().render(&admin).expect("render");
        assert!(!text.contains("xlb_datapath_packets"), "{text}");
        assert!(!text.contains("xlb_datapath_drop_count"), "{text}");
        assert!(!text.contains("xlb_conntrack_events"), "{text}");
        assert!(!text.contains("xlb_datapath_parsed_packets"), "{text}");
        assert!(text.contains("xlb_services 1"), "{text}");
        assert!(text.contains("xlb_conntrack_entries 42"), "{text}");
    }

    /// A family as a query names it (a counter's with `_total`, an info's
    /// with `_info`) → its type and its label names, each with the values
    /// seen.
    type Families = BTreeMap<String, (String, BTreeMap<String, BTreeSet<String>>)>;

    /// The families of an OpenMetrics text, with the label names and values
    /// of their samples (a histogram's `le` aside).
    fn rendered_families(text: &str) -> Families {
        let mut families = Families::new();
        let mut current = None;
        for line in text.lines() {
            if let Some(declared) = line.strip_prefix("# TYPE ") {
                let (name, kind) = declared.split_once(' ').expect("# TYPE name type");
                let queried = match kind {
                    "counter" => format!("{name}_total"),
                    "info" => format!("{name}_info"),
                    _ => name.to_owned(),
                };
                families.insert(queried.clone(), (kind.to_owned(), BTreeMap::new()));
                current = Some(queried);
            } else if !line.starts_with('#') {
                let family = current.as_ref().expect("a sample after its # TYPE");
                let labels = &mut families.get_mut(family).expect("declared").1;
                for (name, value) in sample_labels(line) {
                    if name != "le" {
                        labels.entry(name).or_default().insert(value);
                    }
                }
            }
        }
        families
    }

    /// The labels of a sample line, `name{a="x",b="y"} 1`: (name, value)
    /// pairs, values unescaped of `\"`.
    fn sample_labels(line: &str) -> Vec<(String, String)> {
        let Some((_, rest)) = line.split_once('{') else {
            return Vec::new();
        };
        let mut labels = Vec::new();
        let mut chars = rest.chars();
        loop {
            let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "a quoted value in {line:?}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.push((name, value));
            if chars.next() != Some(',') {
                return labels;
            }
        }
    }

    /// The families `docs/metrics.md` lists in its table rows, ``| `name` |
    /// type | `label`, `label` | meaning |``, with their label names (no
    /// values).
    fn documented_families(doc: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
        doc.lines()
            .filter(|line| line.starts_with("| `xlb_"))
            .map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let unquote = |s: &str| s.trim().trim_matches('`').to_owned();
                let labels = match cells[3] {
                    "—" => BTreeSet::new(),
                    labels => labels.split(',').map(unquote).collect(),
                };
                (unquote(cells[1]), (cells[2].to_owned(), labels))
            })
            .collect()
    }

    /// Labels whose values are names of the operator's (services) or of
    /// the build: not listed in the docs.
    const FREE_FORM_LABELS: [&str; 2] = ["service", "version"];

    #[test]
    fn docs_metrics_md_names_every_family_its_type_labels_and_label_values() {
        let metrics = Metrics::new();
        metrics.observe_sync(Duration::from_millis(3));
        metrics.observe_programming(Duration::from_micros(250));
        for speaker in ["bgp", "l2"] {
            metrics.speaker_configured(speaker);
        }
        metrics.l2_announcement("ipv4", true);
        metrics.l2_announcement("ipv6", false);
        let text = metrics.render(&FakeAdmin::healthy()).expect("render");
        let rendered = rendered_families(&text);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let doc = std::fs::read_to_string(path).expect("reading docs/metrics.md");

        let shape: BTreeMap<String, (String, BTreeSet<String>)> = rendered
            .iter()
            .map(|(name, (kind, labels))| {
                (
                    name.clone(),
                    (kind.clone(), labels.keys().cloned().collect()),
                )
            })
            .collect();
        let documented = documented_families(&doc);
        let names: BTreeSet<&String> = shape.keys().chain(documented.keys()).collect();
        let differing: Vec<String> = names
            .into_iter()
            .filter(|name| shape.get(*name) != documented.get(*name))
            .map(|name| {
                let (scraped, listed) = (shape.get(name), documented.get(name));
                format!("{name}: (type, labels) {scraped:?} in a scrape, {listed:?} in the docs")
            })
            .collect();
        assert!(
            differing.is_empty(),
            "docs/metrics.md's table disagrees with a scrape:\n{}",
            differing.join("\n")
        );
        for (name, (_, labels)) in &rendered {
            for (label, values) in labels {
                if FREE_FORM_LABELS.contains(&label.as_str()) {
                    continue;
                }
                for value in values {
                    assert!(
                        doc.contains(&format!("`{value}`")),
                        "docs/metrics.md does not name {name}'s {label} `{value}`"
                    );
                }
            }
        }
    }

    /// Runs `test` on a current-thread runtime inside a fresh network
    /// namespace with `lo` up, so the TCP listener never touches the host's.
    fn in_netns<F, Fut>(test: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): run the tests as root");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("running ip");
            assert!(up.success(), "ip link set lo up: {up}");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(test());
        })
        .join()
        .expect("the netns test thread panicked");
    }

    /// A GET over plain HTTP/1.1: (status, content type, body).
    async fn http_get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
        use http_body_util::{BodyExt, Empty};
        use hyper::body::Bytes;

        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header(header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[test]
    fn metrics_and_healthz_over_http() {
        in_netns(|| async {
            let serve = |admin: FakeAdmin| async move {
                let server = MetricsServer::bind(addr("127.0.0.1:0"))
                    .await
                    .expect("bind");
                let bound = server.local_addr();
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(server.serve(
                    Arc::new(Metrics::new()),
                    Arc::new(admin),
                    async move {
                        stopped.await.ok();
                    },
                ));
                (bound, stop, task)
            };

            let (bound, stop, task) = serve(FakeAdmin::healthy()).await;
            let (status, content_type, body) = http_get(bound, "/metrics").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
            assert!(body.contains("xlb_conntrack_entries 42"), "{body}");
            assert_eq!(
                http_get(bound, "/healthz").await,
                (
                    StatusCode::OK,
                    "text/plain; charset=utf-8".into(),
                    "ok\n".into()
                )
            );
            stop.send(()).expect("server running");
            task.await.expect("join");

            let (bound, stop, task) = serve(FakeAdmin {
                synced: false,
                ..FakeAdmin::healthy()
            })
            .await;
            let (status, _, body) = http_get(bound, "/healthz").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(body.starts_with("not synced"), "{body}");
            stop.send(()).expect("server running");
            task.await.expect("join");

            let (bound, stop, task) = serve(FakeAdmin {
                attached: false,
                ..FakeAdmin::healthy()
            })
            .await;
            let (status, _, body) = http_get(bound, "/healthz").await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(body, "not attached to any interface\n");
            stop.send(()).expect("server running");
            task.await.expect("join");
        });
    }
}
