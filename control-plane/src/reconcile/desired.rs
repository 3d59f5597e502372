//! What the datapath should hold: the model with health overlaid.
//!
//! Built from the whole model on every sync, so it is kept to sorted
//! vectors: a sync of 10 000 services recomputes it in a few milliseconds,
//! and the reconciler compares it with the last one by a merge walk.

use std::net::{IpAddr, SocketAddr};

use xdp_lb::{AddressKind, ServiceOptions};

use super::FrontendKey;
use crate::model::{Frontend, FrontendKind, Mode, Model, Service, ServiceName};

/// The datapath's view of the desired state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every service, sorted by name.
    pub services: Vec<(ServiceName, DesiredService)>,
    /// Every frontend address with its kind, sorted by address.
    pub addresses: Vec<(IpAddr, AddressKind)>,
}

/// One service as the datapath should hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredService {
    /// Frontends by address and protocol, sorted, unique.
    pub frontends: Vec<FrontendKey>,
    /// ClientIP affinity and direct server return, as the datapath takes them.
    pub options: ServiceOptions,
    /// The frontends that source-NAT flows to backends not on this node
    /// (`ServiceOptions::snat_remote`), sorted.
    pub snat_frontends: Vec<FrontendKey>,
    /// The backends that are pods of this node, sorted.
    pub local: Vec<SocketAddr>,
    /// The frontends only the service's `source_ranges` reach, sorted.
    pub ranged_frontends: Vec<FrontendKey>,
    /// The client networks of `ranged_frontends`, sorted.
    pub source_ranges: Vec<(IpAddr, u8)>,
    /// The backends in the Maglev table (active and healthy) with their
    /// weights, sorted by address.
    pub members: Vec<(SocketAddr, u32)>,
    /// How many backends the service lists, whatever their state or health:
    /// what its table's size follows (`SizingPolicy`), so that instances
    /// with the same configuration size their tables alike whatever their
    /// health checks and drains saw.
    pub listed: usize,
    /// Backends whose records stay live, sorted: the members, plus draining
    /// and terminating backends that are healthy (they keep their flows).
    pub live: Vec<SocketAddr>,
}

/// Overwrites `v` with `items`, sorted and without repeats, reusing its memory.
fn refill_sorted<T: Ord>(v: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    v.clear();
    v.extend(items);
    v.sort_unstable();
    v.dedup();
}

/// The keys of `service`'s frontends that `pick` takes.
fn frontend_keys<'a>(
    service: &'a Service,
    pick: impl Fn(&Frontend) -> bool + 'a,
) -> impl Iterator<Item = FrontendKey> + 'a {
    service
        .frontends
        .iter()
        .filter(move |f| pick(f))
        .map(|f| (SocketAddr::new(f.addr, f.port), f.protocol))
}

impl DesiredService {
    /// Overwrites `self` with `service` as the datapath should hold it,
    /// reusing the vectors' memory.
    fn fill(
        &mut self,
        name: &ServiceName,
        service: &Service,
        healthy: &impl Fn(&ServiceName, SocketAddr) -> bool,
    ) {
        refill_sorted(&mut self.frontends, frontend_keys(service, |_| true));
        self.options = ServiceOptions {
            client_ip_affinity: service.affinity.map(|a| a.timeout),
            dsr: service.mode == Mode::Dsr,
            // Per frontend: `options_for`.
            snat_remote: false,
            drop_without_backends: service.drop_without_backends,
            // Per frontend: `options_for`.
            source_ranges_only: false,
        };
        refill_sorted(
            &mut self.snat_frontends,
            frontend_keys(service, |f| f.snat_remote),
        );
        refill_sorted(
            &mut self.ranged_frontends,
            frontend_keys(service, |f| f.source_ranges_only),
        );
        refill_sorted(
            &mut self.source_ranges,
            service.source_ranges.iter().copied(),
        );
        self.members.clear();
        self.live.clear();
        self.local.clear();
        for backend in &service.backends {
            if !healthy(name, backend.addr) {
                continue;
            }
            self.live.push(backend.addr);
            if backend.local {
                self.local.push(backend.addr);
            }
            if backend.state.takes_new_flows() {
                self.members.push((backend.addr, backend.weight));
            }
        }
        self.members.sort_unstable();
        self.members.dedup_by_key(|m| m.0);
        // The model's backends are unique by address.
        self.listed = service.backends.len();
        self.live.sort_unstable();
        self.live.dedup();
        self.local.sort_unstable();
        self.local.dedup();
    }

    /// The options of frontend `key`: the service's, with source NAT toward
    /// remote backends where the frontend asks for it.
    pub fn options_for(&self, key: &FrontendKey) -> ServiceOptions {
        ServiceOptions {
            snat_remote: self.snat_frontends.binary_search(key).is_ok(),
            source_ranges_only: self.ranged_frontends.binary_search(key).is_ok(),
            ..self.options
        }
    }

    /// True when the service keeps `addr` live.
    pub fn keeps(&self, addr: SocketAddr) -> bool {
        self.live.binary_search(&addr).is_ok()
    }

    /// True when the service has `frontend`.
    pub fn has_frontend(&self, frontend: &FrontendKey) -> bool {
        self.frontends.binary_search(frontend).is_ok()
    }
}

impl Desired {
    /// The model with health overlaid: `healthy(service, backend)` is false
    /// for a backend whose health check failed.
    pub fn new(model: &Model, healthy: impl Fn(&ServiceName, SocketAddr) -> bool) -> Self {
        let mut desired = Self::default();
        desired.refresh(model, healthy);
        desired
    }

    /// Recomputes the desired state from `model`, as [`Self::new`] does, but
    /// keeps the entries of services that come out the same: a sync after a
    /// single change then allocates for that service only.
    pub fn refresh(&mut self, model: &Model, healthy: impl Fn(&ServiceName, SocketAddr) -> bool) {
        let mut old = std::mem::take(&mut self.services).into_iter().peekable();
        let mut services = Vec::with_capacity(model.services.len());
        let mut scratch = DesiredService {
            frontends: Vec::new(),
            options: ServiceOptions::default(),
            snat_frontends: Vec::new(),
            local: Vec::new(),
            ranged_frontends: Vec::new(),
            source_ranges: Vec::new(),
            members: Vec::new(),
            listed: 0,
            live: Vec::new(),
        };
        for (name, service) in &model.services {
            scratch.fill(name, service, &healthy);
            // Both sides are sorted by name: skip what the model dropped.
            while old.next_if(|(n, _)| n < name).is_some() {}
            match old.next_if(|(n, _)| n == name) {
                Some((name, kept)) if kept == scratch => services.push((name, kept)),
                Some((name, _)) => services.push((name, scratch.clone())),
                None => services.push((name.clone(), scratch.clone())),
            }
        }
        self.services = services;
        self.addresses = address_kinds(model);
    }

    /// The desired state of service `name`.
    pub fn get(&self, name: &ServiceName) -> Option<&DesiredService> {
        self.services
            .binary_search_by(|(n, _)| n.cmp(name))
            .ok()
            .map(|i| &self.services[i].1)
    }

    /// The kind of frontend address `addr`, if it is one.
    pub fn address(&self, addr: IpAddr) -> Option<AddressKind> {
        self.addresses
            .binary_search_by(|(a, _)| a.cmp(&addr))
            .ok()
            .map(|i| self.addresses[i].1)
    }
}

/// The kind of every frontend address of `model`. An address that is some
/// frontend's node address is a node address (only NodePorts are balanced
/// on it): the file source rejects a VIP frontend there, and the reconciler
/// never lets a node's own traffic (SSH) be dropped as an "unknown port on a
/// VIP".
fn address_kinds(model: &Model) -> Vec<(IpAddr, AddressKind)> {
    let mut all: Vec<(IpAddr, bool)> = model
        .frontends()
        .map(|(_, f)| (f.addr, f.kind == FrontendKind::Node))
        .collect();
    // Sorted by address, node (true) after VIP (false): the last of each
    // address says whether any frontend on it is a node frontend.
    all.sort_unstable();
    let mut kinds: Vec<(IpAddr, AddressKind)> = Vec::with_capacity(all.len());
    for (addr, node) in all {
        let kind = if node {
            AddressKind::Node
        } else {
            AddressKind::Vip
        };
        match kinds.last_mut() {
            Some(last) if last.0 == addr => last.1 = kind,
            _ => kinds.push((addr, kind)),
        }
    }
    kinds
}
