//! The admin API's answers, read from the agent's state and the maps.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use xdp_lb::{Flow, FlowState, MapUsage, Simulation, TrackedFlow};

use super::{
    collector::{ConntrackCount, Counted},
    core::{Core, KubeStatus, Status},
    drains::{self, Drain},
    event_drain::{FlowEventHistory, NamedEvent},
    health_views::{self, health_check_views},
    programmed,
};
use crate::{
    admin::{Admin, AdminError, EventsRead},
    api::{
        BackendStatus, BackendView, DatapathLbView, DatapathRecordView, DrainRequest, DrainSource,
        DrainUnchangedView, DrainView, EventsView, FlowView, FrontendView, HealthCheckView,
        KubernetesView, MaglevSettingsView, MaglevView, MapUsageView, ServiceBackendView,
        ServiceHealthView, ServiceView, SimulateRequest, SimulateView, StatsView, StatusView,
    },
    health::ProbePath,
    model::{Model, Protocol, ServiceName},
    reconcile::Reconciler,
    source::kube::watch::Cache,
};

/// The agent as the admin API sees it.
#[derive(Debug, Clone)]
pub(crate) struct AgentAdmin {
    pub(crate) core: Arc<Mutex<Core>>,
    /// The datapath's recent flow events, named (`event_drain` fills it),
    /// which every reader reads from a cursor of its own, without the core.
    pub(crate) events: FlowEventHistory,
    /// The conntrack collector's last count of the conntrack tables.
    pub(crate) conntrack_count: Arc<ConntrackCount>,
}

fn internal(e: impl std::fmt::Display) -> AdminError {
    AdminError::Internal(e.to_string())
}

impl AgentAdmin {
    fn lock(&self) -> Result<MutexGuard<'_, Core>, AdminError> {
        self.core
            .lock()
            .map_err(|_| AdminError::Internal("the agent's state is poisoned".to_owned()))
    }
}

/// One backend address as `/v1/backends` shows it, over every service
/// listing it.
#[derive(Debug)]
struct BackendInServices {
    protocol: Protocol,
    /// The worst its services' health checks find.
    health: Health,
    /// Its status in each service, by name.
    status_by_service: BTreeMap<String, BackendStatus>,
    /// Who drains it, in each service that does.
    drained_by: BTreeMap<String, Vec<DrainSource>>,
    /// The path of each checking service's probes, and their verdict.
    health_by_service: BTreeMap<String, ServiceHealthView>,
}

/// What a service's health check finds of a backend, ordered so that the
/// worst over its services is the largest: `down` when any check finds it
/// down, `pending` when one has not probed it yet, `up` when every check
/// finds it up, `unchecked` when none checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Health {
    Unchecked,
    Checked(crate::health::Health),
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unchecked => "unchecked",
            Self::Checked(health) => health.as_str(),
        }
    }
}

/// Every backend address of `model` (the source's), with its status in
/// each service listing it, `drains` applied, who drains it there, and how
/// each service's check finds it (`checked`: the path of its probes and
/// their verdict, none when the service has no check,
/// [`Core::checked_in_service`]): a drain or a failed health check may hold
/// in one service and not in another.
fn backends_in_services(
    model: &Model,
    drains: &BTreeSet<Drain>,
    checked: impl Fn(&ServiceName, SocketAddr) -> Option<(ProbePath, crate::health::Health)>,
) -> BTreeMap<SocketAddr, BackendInServices> {
    let mut by_addr: BTreeMap<SocketAddr, BackendInServices> = BTreeMap::new();
    for (name, service) in &model.services {
        for b in &service.backends {
            let found = checked(name, b.addr);
            let verdict = found.map_or(crate::health::Health::Up, |(_, verdict)| verdict);
            let health = match &service.health_check {
                None => Health::Unchecked,
                Some(_) => Health::Checked(verdict),
            };
            let entry = by_addr.entry(b.addr).or_insert(BackendInServices {
                protocol: service.protocol,
                health,
                status_by_service: BTreeMap::new(),
                drained_by: BTreeMap::new(),
                health_by_service: BTreeMap::new(),
            });
            entry.health = entry.health.max(health);
            if let Some((path, verdict)) = found {
                entry.health_by_service.insert(
                    name.to_string(),
                    health_views::service_health(path, verdict),
                );
            }
            let healthy = verdict.is_up();
            let state = drains::drained_state(drains, name, b.addr, b.state);
            entry
                .status_by_service
                .insert(name.to_string(), BackendStatus::of(state, healthy));
            let sources = drains::sources(drains, name, b.addr, b.state);
            if !sources.is_empty() {
                entry.drained_by.insert(name.to_string(), sources);
            }
        }
    }
    by_addr
}

fn service_name(core: &Core, name: &str) -> Result<ServiceName, AdminError> {
    let name = ServiceName(name.to_owned());
    if core.model.services.contains_key(&name) {
        Ok(name)
    } else {
        Err(AdminError::NotFound(format!(
            "no service {name}: `xlb service list` shows them"
        )))
    }
}

impl Admin for AgentAdmin {
    fn services(&self) -> Result<Vec<ServiceView>, AdminError> {
        let core = self.lock()?;
        let model = core.effective_model();
        let mut views = Vec::new();
        for (name, service) in &model.services {
            let id = core.reconciler.service_id(name);
            let slots = core.reconciler.table(name).unwrap_or_default();
            let mut held: BTreeMap<u32, u32> = BTreeMap::new();
            for &b in slots {
                *held.entry(b).or_default() += 1;
            }
            let counter = match id {
                Some(id) => core.datapath.service_stats(id).map_err(internal)?,
                None => xdp_lb::Counter::default(),
            };
            views.push(ServiceView {
                id: id.unwrap_or_default(),
                name: name.to_string(),
                protocol: service.protocol,
                mode: service.mode,
                frontends: service
                    .frontends
                    .iter()
                    .map(|f| FrontendView {
                        address: SocketAddr::new(f.addr, f.port),
                        protocol: f.protocol,
                        kind: f.kind,
                    })
                    .collect(),
                affinity_timeout_seconds: service.affinity.map(|a| a.timeout.as_secs()),
                table_size: u32::try_from(slots.len()).unwrap_or(u32::MAX),
                backends: service
                    .backends
                    .iter()
                    .map(|b| {
                        let id = core.reconciler.backend(b.addr).map_or(0, |r| r.id);
                        ServiceBackendView {
                            id,
                            address: b.addr,
                            weight: b.weight,
                            status: BackendStatus::of(b.state, core.healthy(name, b.addr)),
                            slots: held.get(&id).copied().unwrap_or(0),
                        }
                    })
                    .collect(),
                packets: counter.packets,
                bytes: counter.bytes,
            });
        }
        Ok(views)
    }

    fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
        let core = self.lock()?;
        let by_addr = backends_in_services(&core.model, core.drains.set(), |name, addr| {
            core.checked_in_service(name, addr)
        });
        let mut views = Vec::new();
        for (addr, backend) in by_addr {
            let record = core.reconciler.backend(addr);
            let counter = match record {
                Some(r) => core.datapath.backend_stats(r.id).map_err(internal)?,
                None => xdp_lb::Counter::default(),
            };
            views.push(BackendView {
                id: record.map_or(0, |r| r.id),
                address: addr,
                protocol: backend.protocol,
                generation: record.map_or(0, |r| r.generation),
                // The best any service gives it (the field's meaning since
                // its first release); the others are in `status_by_service`.
                status: backend
                    .status_by_service
                    .values()
                    .copied()
                    .min()
                    .unwrap_or(BackendStatus::Active),
                health: backend.health.as_str().to_owned(),
                health_by_service: backend.health_by_service,
                services: backend.status_by_service.keys().cloned().collect(),
                status_by_service: backend.status_by_service,
                drained_by: backend.drained_by,
                packets: counter.packets,
                bytes: counter.bytes,
            });
        }
        Ok(views)
    }

    fn datapath_lb(&self) -> Result<DatapathLbView, AdminError> {
        // Only the reads hold the agent's lock; the rows are built after.
        let (read, names) = {
            let core = self.lock()?;
            let read = programmed::read(&core.datapath).map_err(internal)?;
            (read, service_names(&core))
        };
        let mut view = programmed::view(&read, &names);
        // Which active records no table names is only known once every
        // table has been walked, without the lock: their statuses in the
        // model take a second, short hold (a sync may have run in between:
        // the statuses are the model's as of now).
        if !view.active_backends_without_table.is_empty() {
            let core = self.lock()?;
            fill_model_statuses(&core, &mut view.active_backends_without_table);
        }
        Ok(view)
    }

    fn conntrack(&self, service: Option<&str>) -> Result<Vec<FlowView>, AdminError> {
        let core = self.lock()?;
        let only = service.map(|s| service_name(&core, s)).transpose()?;
        let only_id = match &only {
            Some(name) => Some(core.reconciler.service_id(name).ok_or_else(|| {
                AdminError::NotFound(format!("service {name} is not programmed yet"))
            })?),
            None => None,
        };
        let names = service_names(&core);
        // Backend ID → (address, generation) of live records, to tell which
        // flows still have their backend.
        let live: HashMap<u32, (SocketAddr, u32)> = core
            .reconciler
            .backends()
            .filter(|(_, b)| b.live)
            .map(|(addr, b)| (b.id, (addr, b.generation)))
            .collect();
        let flows = core.datapath.conntrack().map_err(internal)?;
        Ok(flows
            .into_iter()
            .filter(|f| only_id.is_none_or(|id| f.service_id == id))
            .map(|f| flow_view(&live, &names, &f))
            .collect())
    }

    fn stats(&self) -> Result<StatsView, AdminError> {
        let core = self.lock()?;
        let dp = &core.datapath;
        let named = |pairs: Vec<(&'static str, u64)>| {
            pairs
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(k, n)| (k.to_owned(), n))
                .collect()
        };
        let verdicts = dp.verdict_stats().map_err(internal)?;
        let ct = dp.ct_stats().map_err(internal)?;
        let parse = dp.parse_stats().map_err(internal)?;
        let events = dp.flow_event_stats().map_err(internal)?;
        Ok(StatsView {
            verdicts: named(
                verdicts
                    .iter()
                    .map(|(v, c)| (v.name(), c.packets))
                    .collect(),
            ),
            conntrack: named(ct.iter().map(|(v, c)| (v.name(), c.packets)).collect()),
            parser: named(parse.iter().map(|(v, c)| (v.name(), c.packets)).collect()),
            flow_events: named(events.iter().map(|(v, c)| (v.name(), c.packets)).collect()),
        })
    }

    fn maps(&self) -> Result<Vec<MapUsageView>, AdminError> {
        // The maps the configuration fills are counted now, under the lock
        // (some 15 ms at the default sizes, in a debug build); the
        // conntrack tables are not: walking tables sized for 4 Mi flows
        // takes 0.8 s there, which syncs and admin calls would wait out.
        // Their count is the collector's last, absent until its first.
        let (mut views, flows): (Vec<MapUsageView>, u32) = {
            let core = self.lock()?;
            let usage = core.datapath.config_map_usage().map_err(internal)?;
            let views = usage.iter().map(|u| map_usage_view(u, None)).collect();
            (views, core.datapath.sizes().conntrack)
        };
        if let Some(counted) = self.conntrack_count.get() {
            views.extend(conntrack_usage_views(&counted, flows, Instant::now()));
        }
        Ok(views)
    }

    fn maglev(&self, service: &str) -> Result<MaglevView, AdminError> {
        let core = self.lock()?;
        let name = service_name(&core, service)?;
        let id = core.reconciler.service_id(&name).unwrap_or_default();
        let slots = core.reconciler.table(&name).unwrap_or_default().to_vec();
        let mut shares = BTreeMap::new();
        for &b in &slots {
            *shares.entry(b).or_default() += 1;
        }
        Ok(MaglevView {
            service: name.to_string(),
            id,
            size: u32::try_from(slots.len()).unwrap_or(u32::MAX),
            slots,
            shares,
        })
    }

    fn simulate(&self, request: &SimulateRequest) -> Result<SimulateView, AdminError> {
        let core = self.lock()?;
        let flow = Flow::new(request.client, request.frontend, request.protocol.into());
        let simulation = core.datapath.simulate(&flow).map_err(|e| match e {
            xdp_lb::Error::MixedFamilies { .. } => AdminError::BadRequest(e.to_string()),
            e => internal(e),
        })?;
        let name_of = |id: u32| {
            core.model
                .services
                .keys()
                .find(|n| core.reconciler.service_id(n) == Some(id))
                .map(ToString::to_string)
        };
        Ok(match simulation {
            Simulation::Pass => SimulateView {
                outcome: "not_a_frontend".to_owned(),
                service: None,
                backend_id: None,
                backend: None,
            },
            Simulation::UnknownPort => SimulateView {
                outcome: "unknown_port".to_owned(),
                service: None,
                backend_id: None,
                backend: None,
            },
            Simulation::NoBackend { service_id } => SimulateView {
                outcome: "no_backend".to_owned(),
                service: name_of(service_id),
                backend_id: None,
                backend: None,
            },
            Simulation::Backend {
                service_id,
                backend_id,
                addr,
                tracked,
            } => SimulateView {
                outcome: if tracked { "tracked" } else { "backend" }.to_owned(),
                service: name_of(service_id),
                backend_id: Some(backend_id),
                backend: Some(addr),
            },
        })
    }

    fn drain(&self, request: &DrainRequest, drain: bool) -> Result<DrainView, AdminError> {
        let since = Instant::now();
        let mut core = self.lock()?;
        let backend = request.backend;
        let only = match request.service.as_deref() {
            None => None,
            // An undrain may name a service the configuration no longer
            // has, to forget a drain made in it.
            Some(service)
                if !drain
                    && core
                        .drains
                        .set()
                        .contains(&(Some(ServiceName(service.to_owned())), backend)) =>
            {
                Some(ServiceName(service.to_owned()))
            }
            Some(service) => Some(service_name(&core, service)?),
        };
        let applied = drains::apply(
            core.drains.set(),
            &core.model,
            backend,
            drain,
            only.as_ref(),
        );
        if applied.changed.is_empty()
            && applied.unchanged.is_empty()
            && applied.forgotten.is_empty()
        {
            return Err(AdminError::NotFound(format!(
                "no service has backend {backend}{}",
                only.map(|o| format!(" (looked in {o})"))
                    .unwrap_or_default()
            )));
        }
        let names = |names: &[ServiceName]| names.iter().map(ToString::to_string).collect();
        let changed: Vec<String> = names(&applied.changed);
        if applied.drains != *core.drains.set() {
            // Saved before it is applied: a drain that would not outlive a
            // restart is refused, whole.
            core.drains
                .replace(applied.drains)
                .map_err(AdminError::Internal)?;
            tracing::info!(
                %backend,
                drain,
                service = request.service.as_deref().unwrap_or("every service"),
                changed = ?changed,
                forgotten = applied.forgotten.len(),
                "drain changed"
            );
        }
        if !changed.is_empty() {
            core.sync(since).map_err(internal)?;
        }
        Ok(DrainView {
            services: changed,
            unchanged: applied
                .unchanged
                .into_iter()
                .map(|(service, reason)| DrainUnchangedView {
                    service: service.to_string(),
                    reason,
                })
                .collect(),
            forgotten: drains::forgotten_views(&applied.forgotten),
        })
    }

    /// Read from the history alone: its events were named as they were
    /// drained (`event_names`), so a read takes no lock of the agent's.
    fn events(&self, read: &EventsRead) -> Result<EventsView, AdminError> {
        let page = read.from(&self.events, NamedEvent::time_ns)?;
        Ok(page.map(|e| e.view()))
    }

    fn event_arrivals(&self) -> watch::Receiver<u64> {
        self.events.arrivals()
    }

    fn health_checks(&self) -> Result<Vec<HealthCheckView>, AdminError> {
        let core = self.lock()?;
        Ok(health_check_views(
            &core.model,
            core.tunnel(),
            core.health.snapshot(),
        ))
    }

    fn health_probe_stats(&self) -> Result<Option<BTreeMap<String, u64>>, AdminError> {
        let core = self.lock()?;
        if core.probe_tunnel.is_none() {
            return Ok(None);
        }
        let stats = core.datapath.probe_stats().map_err(internal)?;
        Ok(Some(
            stats
                .iter()
                .map(|(verdict, counter)| (verdict.name().to_owned(), counter.packets))
                .collect(),
        ))
    }

    fn status(&self) -> Result<StatusView, AdminError> {
        let core = self.lock()?;
        let s = &core.status;
        // One read of the datapath's configuration for both fields.
        let config = core.datapath.config().ok();
        Ok(StatusView {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            layout_version: xdp_lb::LAYOUT_VERSION,
            config_file: s.config_file.as_ref().map(|f| f.display().to_string()),
            attached: s.attached.clone(),
            services: core.model.services.len(),
            backends: core.reconciler.backends().filter(|(_, b)| b.live).count(),
            synced: s.synced,
            last_reload: s.last_reload.clone(),
            reloads_ok: s.reloads_ok,
            reloads_failed: s.reloads_failed,
            last_sync_seconds: s.last_sync.map(|d| d.as_secs_f64()),
            last_sync_error: s.last_sync_error.clone(),
            uptime_seconds: s.started.elapsed().as_secs(),
            announcements: core.announcer.views(&core.datapath),
            earlier_agent_state_kept: earlier_agent_state_kept(s),
            kubernetes: s.kubernetes.as_ref().map(kubernetes_view),
            flow_event_sampling: config.map(|c| c.flow_event_sampling),
            drains: Some(core.drains.view(&core.model)),
            maglev: config.map(|c| MaglevSettingsView {
                hash_seed: c.hash_seed,
                min_table_size: core.reconciler.sizing().min_size,
            }),
        })
    }
}

/// Why the datapath serves what an earlier agent pinned, unchanged: the
/// agent adopted it and its source has given it no model yet, so it syncs
/// nothing, runs no health check and leaves the announcements as they are
/// (`StatusView::earlier_agent_state_kept`).
fn earlier_agent_state_kept(status: &Status) -> Option<String> {
    (status.adopted && !status.loaded).then(|| {
        if status.config_file.is_some() {
            // The first reload comes before the admin API answers: a file
            // mode agent without a model has had its file refused.
            "the configuration file is rejected"
        } else {
            "the Kubernetes caches are not synced yet"
        }
        .to_owned()
    })
}

/// The conntrack tables as `/v1/maps` shows them at `now`, from the
/// collector's count: each table's capacity is the flows it is sized for
/// (`flows`, `--conntrack-size` or a pinned table's own), not its slots,
/// which are twice as many or more (`MapSizes::conntrack`), so that a
/// pressure of 1 is as many flows as configured.
fn conntrack_usage_views(
    counted: &Counted,
    flows: u32,
    now: Instant,
) -> impl Iterator<Item = MapUsageView> {
    let age = now.saturating_duration_since(counted.at);
    counted
        .usage
        .map(|usage| {
            let sized = MapUsage {
                capacity: u64::from(flows),
                ..usage
            };
            map_usage_view(&sized, Some(age))
        })
        .into_iter()
}

/// `usage` as `/v1/maps` shows it, counted `age` ago if not for this answer.
fn map_usage_view(usage: &MapUsage, age: Option<Duration>) -> MapUsageView {
    MapUsageView {
        name: usage.name.to_owned(),
        entries: usage.entries,
        capacity: usage.capacity,
        age_seconds: age.map(|a| a.as_secs_f64()),
    }
}

fn kubernetes_view(kube: &KubeStatus) -> KubernetesView {
    let caches = [Cache::Services, Cache::EndpointSlices, Cache::Node]
        .into_iter()
        .filter_map(|cache| Some((cache.to_string(), kube.caches.synced(cache)?)))
        .collect();
    KubernetesView {
        node: kube.node.clone(),
        label_selector: kube.label_selector.clone(),
        caches,
        caches_synced: kube.caches.all_synced(),
        last_error: kube.caches.last_error(),
        health_check_node_ports: kube.health_check_node_ports.clone(),
    }
}

fn flow_view(
    live: &HashMap<u32, (SocketAddr, u32)>,
    names: &BTreeMap<u32, String>,
    f: &TrackedFlow,
) -> FlowView {
    let live = live.get(&f.backend_id) == Some(&(f.backend, f.generation));
    FlowView {
        protocol: f.flow.proto.into(),
        client: f.flow.src,
        frontend: f.flow.dst,
        backend_id: f.backend_id,
        backend: live.then_some(f.backend),
        snat: f.snat,
        service: names.get(&f.service_id).cloned(),
        state: match f.state {
            FlowState::SynSent => "syn",
            FlowState::Established => "established",
            FlowState::Closing => "closing",
            FlowState::Datagram => "udp",
        }
        .to_owned(),
        idle_seconds: f.idle().as_secs(),
    }
}

/// Fills in each of `records`' status in the services of the agent's
/// model (drains and health applied, as `backend list` shows it), for the
/// records the agent holds ([`held_records`]).
fn fill_model_statuses(core: &Core, records: &mut [DatapathRecordView]) {
    let held = held_records(&core.reconciler, records);
    if !held.is_empty() {
        set_model_statuses(
            &core.effective_model(),
            |name, addr| core.healthy(name, addr),
            &held,
            records,
        );
    }
}

/// The records of `records` that `reconciler` holds as the record of their
/// address (same ID and generation), by address → index. Any other is no
/// backend of the agent's: a duplicate of an address an earlier agent left
/// (the next sync retires it), or a record the agent neither wrote nor
/// adopted.
fn held_records(
    reconciler: &Reconciler,
    records: &[DatapathRecordView],
) -> HashMap<SocketAddr, usize> {
    records
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            reconciler
                .backend(r.address)
                .is_some_and(|b| b.id == r.id && b.generation == r.generation)
        })
        .map(|(i, r)| (r.address, i))
        .collect()
}

/// Sets the status by service of each record `held` names (address →
/// index into `records`): its status in each service of `model` listing
/// its address, `healthy` or not.
fn set_model_statuses(
    model: &Model,
    healthy: impl Fn(&ServiceName, SocketAddr) -> bool,
    held: &HashMap<SocketAddr, usize>,
    records: &mut [DatapathRecordView],
) {
    for (name, service) in &model.services {
        for backend in &service.backends {
            if let Some(&i) = held.get(&backend.addr) {
                records[i].status_by_service.insert(
                    name.to_string(),
                    BackendStatus::of(backend.state, healthy(name, backend.addr)),
                );
            }
        }
    }
}

/// Service ID → name, for the services programmed now.
fn service_names(core: &Core) -> BTreeMap<u32, String> {
    core.model
        .services
        .keys()
        .filter_map(|n| Some((core.reconciler.service_id(n)?, n.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::drains::with_drains,
        api::ProbePathView,
        health::Health as Verdict,
        model::{Backend, BackendState, HealthCheck, Probe, Service},
    };

    /// A TCP service of `backends`, all active, without frontends (the
    /// backend views do not look at them).
    fn service(backends: &[SocketAddr]) -> Service {
        Service::nat(
            Protocol::Tcp,
            backends.iter().copied().map(Backend::active).collect(),
        )
    }

    #[test]
    fn a_backend_drained_in_one_service_is_draining_there_only() {
        let shared: SocketAddr = "198.18.2.1:8080".parse().unwrap();
        let own: SocketAddr = "198.18.2.2:8080".parse().unwrap();
        let (web, api) = (ServiceName("web".into()), ServiceName("api".into()));
        let model = Model {
            services: BTreeMap::from([
                (web.clone(), service(&[shared, own])),
                (api.clone(), service(&[shared])),
            ]),
        };
        let drains = BTreeSet::from([(Some(api), shared)]);
        let by_addr = backends_in_services(&model, &drains, |_, _| direct(Verdict::Up));
        assert_eq!(
            by_addr[&shared].status_by_service,
            BTreeMap::from([
                ("api".to_owned(), BackendStatus::Draining),
                ("web".to_owned(), BackendStatus::Active),
            ])
        );
        assert_eq!(
            by_addr[&shared].drained_by,
            BTreeMap::from([("api".to_owned(), vec![DrainSource::Admin])])
        );
        assert_eq!(
            by_addr[&own].status_by_service,
            BTreeMap::from([("web".to_owned(), BackendStatus::Active)])
        );
        assert!(by_addr[&own].drained_by.is_empty());
        // Down in the service whose check it fails, whatever the other says.
        let by_addr = backends_in_services(&model, &BTreeSet::new(), |name, addr| {
            direct(if name == &web && addr == shared {
                Verdict::Down
            } else {
                Verdict::Up
            })
        });
        assert_eq!(
            by_addr[&shared].status_by_service,
            BTreeMap::from([
                ("api".to_owned(), BackendStatus::Active),
                ("web".to_owned(), BackendStatus::Down),
            ])
        );
    }

    #[test]
    fn a_backend_is_as_healthy_as_the_worst_check_of_its_services() {
        let shared: SocketAddr = "198.18.2.1:8080".parse().unwrap();
        let (web, api, db) = (
            ServiceName("web".into()),
            ServiceName("api".into()),
            ServiceName("db".into()),
        );
        let checked = |backends: &[SocketAddr]| Service {
            health_check: Some(tcp_check()),
            ..service(backends)
        };
        // Services sorted by name: `api` (unchecked) first, then `db`, `web`.
        let model = Model {
            services: BTreeMap::from([
                (api, service(&[shared])),
                (db.clone(), checked(&[shared])),
                (web.clone(), checked(&[shared])),
            ]),
        };
        let health = |verdicts: &[(&ServiceName, Verdict)]| {
            backends_in_services(&model, &BTreeSet::new(), |name, _| {
                direct(
                    verdicts
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or(Verdict::Up, |&(_, v)| v),
                )
            })[&shared]
                .health
                .as_str()
        };
        assert_eq!(health(&[]), "up");
        assert_eq!(health(&[(&db, Verdict::Down)]), "down");
        assert_eq!(health(&[(&db, Verdict::Pending)]), "pending");
        assert_eq!(
            health(&[(&db, Verdict::Pending), (&web, Verdict::Down)]),
            "down"
        );
        let unchecked = Model {
            services: BTreeMap::from([(ServiceName("api".into()), service(&[shared]))]),
        };
        assert_eq!(
            backends_in_services(&unchecked, &BTreeSet::new(), |_, _| direct(Verdict::Down))
                [&shared]
                .health,
            Health::Unchecked
        );
    }

    /// A check's answer for a direct probe.
    fn direct(verdict: Verdict) -> Option<(ProbePath, Verdict)> {
        Some((ProbePath::Direct, verdict))
    }

    /// A TCP check every second, one probe to rise or fall.
    fn tcp_check() -> HealthCheck {
        HealthCheck {
            probe: Probe::Tcp,
            port: None,
            interval: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }

    #[test]
    fn a_backend_shows_each_checking_services_path_and_verdict() {
        let b1: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let checked = Service {
            health_check: Some(tcp_check()),
            ..service(&[b1])
        };
        let model = Model {
            services: BTreeMap::from([
                (ServiceName("web".into()), checked.clone()),
                (ServiceName("api".into()), checked),
                (ServiceName("unchecked".into()), service(&[b1])),
            ]),
        };
        let tunnel = ProbePath::Tunnel {
            vip: "198.19.0.1".parse().unwrap(),
            mark: 0x584c_0000,
        };
        // As `checked_in_service` answers: `web` is `dsr`, and its decap
        // stopped; `unchecked` has no check.
        let by_addr =
            backends_in_services(&model, &BTreeSet::new(), |name, _| match name.0.as_str() {
                "web" => Some((tunnel, Verdict::Down)),
                "api" => Some((ProbePath::Direct, Verdict::Up)),
                _ => None,
            });
        let b = &by_addr[&b1];
        let shown: Vec<(&str, ProbePathView, &str)> = b
            .health_by_service
            .iter()
            .map(|(name, view)| (name.as_str(), view.path, view.health.as_str()))
            .collect();
        assert_eq!(
            shown,
            [
                ("api", ProbePathView::Direct, "up"),
                ("web", ProbePathView::Tunnel, "down")
            ]
        );
        assert_eq!(b.health.as_str(), "down");
        assert_eq!(b.status_by_service["api"], BackendStatus::Active);
        assert_eq!(b.status_by_service["web"], BackendStatus::Down);
        assert_eq!(b.status_by_service["unchecked"], BackendStatus::Active);
    }

    #[test]
    fn records_no_table_names_get_the_models_statuses_only_where_the_agent_holds_them() {
        let addr = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let (drained, plain, stray) = (
            addr("198.18.2.6:8080"),
            addr("198.18.2.7:8080"),
            addr("198.18.2.8:8080"),
        );
        // What the agent adopted: records 6 and 7 (generation 3 and 1),
        // and, of the two records of `stray`'s address, record 8.
        let reconciler = Reconciler::recover(
            1,
            consistent_hash::SizingPolicy::default(),
            xdp_lb::MapSizes::default(),
            &crate::reconcile::Recovered {
                backends: vec![
                    (6, drained, 3, true),
                    (7, plain, 1, true),
                    (8, stray, 1, true),
                    (12, stray, 1, true),
                ],
                ..Default::default()
            },
        );
        let record = |id, address, generation| DatapathRecordView {
            id,
            address,
            generation,
            status_by_service: BTreeMap::new(),
        };
        let mut records = [
            record(6, drained, 3),
            // Another generation than the agent's: not its record.
            record(7, plain, 2),
            // A duplicate the agent does not hold.
            record(12, stray, 1),
            // A record the agent knows nothing of.
            record(20, addr("198.18.2.20:8080"), 1),
        ];
        let held = held_records(&reconciler, &records);
        assert_eq!(held, HashMap::from([(drained, 0)]));

        // `drained` is drained in `web`, terminating in `api` and down in
        // `db`; the others are backends of `web` too, which says nothing
        // of records it does not hold.
        let (web, api, db) = (
            ServiceName("web".into()),
            ServiceName("api".into()),
            ServiceName("db".into()),
        );
        let mut terminating = service(&[drained]);
        terminating.backends[0].state = BackendState::Terminating;
        let model = Model {
            services: BTreeMap::from([
                (web.clone(), service(&[drained, plain, stray])),
                (api, terminating),
                (db.clone(), service(&[drained])),
            ]),
        };
        let drains = BTreeSet::from([(Some(web), drained)]);
        set_model_statuses(
            &with_drains(&model, &drains),
            |name, _| name != &db,
            &held,
            &mut records,
        );
        assert_eq!(
            records[0].status_by_service,
            BTreeMap::from([
                ("api".to_owned(), BackendStatus::Terminating),
                ("db".to_owned(), BackendStatus::Down),
                ("web".to_owned(), BackendStatus::Draining),
            ])
        );
        assert!(
            records[1..].iter().all(|r| r.status_by_service.is_empty()),
            "{records:?}"
        );
    }

    #[test]
    fn the_conntrack_tables_are_as_full_as_their_flows_over_the_flows_configured() {
        let at = Instant::now();
        // 12 flows (and 12 reply entries) in tables sized for 131 072
        // flows: 262 144 slots each.
        let table = |name| MapUsage {
            name,
            entries: 12,
            capacity: 262_144,
        };
        let counted = Counted {
            usage: [table("CONNTRACK"), table("CONNTRACK_REPLY")],
            at,
        };
        let views: Vec<_> =
            conntrack_usage_views(&counted, 131_072, at + Duration::from_millis(2_500)).collect();
        let view = |name: &str| MapUsageView {
            name: name.to_owned(),
            entries: 12,
            capacity: 131_072,
            age_seconds: Some(2.5),
        };
        assert_eq!(views, [view("CONNTRACK"), view("CONNTRACK_REPLY")]);
    }
}
