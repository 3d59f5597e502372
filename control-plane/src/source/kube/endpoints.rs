//! A Service port's endpoints: merged across its EndpointSlices, then chosen
//! per traffic policy and topology hints, with KEP-1669's fallback to
//! terminating endpoints.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

use super::address;
use crate::model::{Backend, BackendState};

/// What an endpoint's conditions make of it, best last (the order merging
/// relies on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Condition {
    /// Neither ready nor serving-and-terminating: never a backend.
    Unusable,
    /// `serving` and `terminating` but not `ready` (a pod shutting down that
    /// still answers).
    ServingTerminating,
    /// `ready` (unset counts as ready, as the API documents).
    Ready,
}

impl Condition {
    /// The conditions as kube-proxy reads them: `ready` and `serving` unset
    /// mean true, `terminating` unset means false. `publishNotReadyAddresses`
    /// makes every endpoint ready, as the EndpointSlice controller does.
    pub(super) fn of(conditions: Option<&EndpointConditions>, publish_not_ready: bool) -> Self {
        if publish_not_ready {
            return Self::Ready;
        }
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
        let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
        if ready {
            Self::Ready
        } else if serving && terminating {
            Self::ServingTerminating
        } else {
            Self::Unusable
        }
    }
}

/// One endpoint of one Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) addr: SocketAddr,
    pub(super) condition: Condition,
    /// `terminating` (unset: false), which decides between two endpoints of
    /// one address (see [`collect`]).
    pub(super) terminating: bool,
    pub(super) node_name: Option<String>,
    /// The zones the EndpointSlice controller hints it for
    /// (`hints.forZones[].name`).
    pub(super) zone_hints: BTreeSet<String>,
    /// The nodes it hints it for (`hints.forNodes[].name`:
    /// `trafficDistribution: PreferSameNode`).
    pub(super) node_hints: BTreeSet<String>,
}

/// The endpoints of the Service port named `port_name` (empty for an unnamed
/// port) with `protocol`, from every slice of the Service: a slice port
/// matches by name and protocol, and its number is the backend port (the
/// Service's targetPort, resolved per pod by the EndpointSlice controller).
///
/// An address and port that appears more than once is kept once. Two cases
/// make duplicates: a pod moving between slices (for a moment in both), and
/// a pod IP that the network gave to a new pod while the old pod is still
/// terminating. As kube-proxy does since kubernetes#135593, a copy that is
/// not terminating wins over a terminating one — the address now belongs to
/// the new pod, whose conditions are the ones that count, even when it is
/// not ready yet. Between copies alike in that, the better condition wins,
/// then the smaller node name, so the result does not depend on the order
/// of the slices (kube-proxy's then depends on its map order). Only an
/// endpoint's first address is used, as kube-proxy does (the API says
/// consumers should). Slices must be valid
/// ([`super::validate::endpoint_slice`]) and not FQDN.
pub(super) fn collect(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    publish_not_ready: bool,
) -> Vec<Endpoint> {
    let mut merged: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let Some(port) = ports
            .iter()
            .filter(|p| p.name.as_deref().unwrap_or("") == port_name)
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == protocol)
            .find_map(|p| {
                p.port
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n != 0)
            })
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint.addresses.first().and_then(|a| address::parse(a)) else {
                continue;
            };
            let candidate = Endpoint {
                addr: SocketAddr::new(ip, port),
                condition: Condition::of(endpoint.conditions.as_ref(), publish_not_ready),
                terminating: endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.terminating)
                    .unwrap_or(false),
                node_name: endpoint.node_name.clone(),
                zone_hints: endpoint
                    .hints
                    .iter()
                    .flat_map(|h| h.for_zones.iter().flatten())
                    .map(|z| z.name.clone())
                    .collect(),
                node_hints: endpoint
                    .hints
                    .iter()
                    .flat_map(|h| h.for_nodes.iter().flatten())
                    .map(|n| n.name.clone())
                    .collect(),
            };
            match merged.entry(candidate.addr) {
                Entry::Vacant(slot) => {
                    slot.insert(candidate);
                }
                Entry::Occupied(mut slot) => {
                    if preference(&candidate) > preference(slot.get()) {
                        slot.insert(candidate);
                    }
                }
            }
        }
    }
    merged.into_values().collect()
}

/// How [`collect`] ranks two endpoints of one address, higher first: not
/// terminating, then the better condition, then the smaller node name.
fn preference(endpoint: &Endpoint) -> impl Ord + '_ {
    (
        !endpoint.terminating,
        endpoint.condition,
        std::cmp::Reverse(&endpoint.node_name),
    )
}

/// Which endpoints a traffic policy lets a frontend use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scope<'a> {
    /// `Cluster` policy, on this node (by name) in this zone (if it has
    /// one), with topology-aware routing: the ready endpoints hinted for the
    /// node when the node hints allow it, else those hinted for the zone
    /// when the zone hints allow it (see [`hints_apply`]), else every
    /// endpoint. As kube-proxy does, the hints decide, not the Service: the
    /// EndpointSlice controller writes them for the Services that ask
    /// (`trafficDistribution`, the `service.kubernetes.io/topology-mode`
    /// annotation), and other controllers may write them too.
    Cluster {
        node: &'a str,
        zone: Option<&'a str>,
    },
    /// `Local` policy: the endpoints on this node (none when the name is
    /// empty).
    Node(&'a str),
}

/// Which hints a [`Scope::Cluster`] follows, once resolved.
#[derive(Clone, Copy)]
enum Filter<'a> {
    Every,
    HintedForNode(&'a str),
    HintedForZone(&'a str),
    OnNode(&'a str),
}

/// Whether the hints (`hints_of`) of the ready endpoints of one family can
/// be followed for `name` (kube-proxy's `topologyModeFromHints`): every
/// ready endpoint has a hint, and at least one is hinted for `name`.
/// Otherwise the hints are missing (the EndpointSlice controller gave up on
/// them, or is still adding them) or leave `name` nothing, and following
/// them would send this node's traffic nowhere or unevenly.
fn hints_apply(
    endpoints: &[Endpoint],
    ipv4: bool,
    hints_of: fn(&Endpoint) -> &BTreeSet<String>,
    name: &str,
) -> bool {
    let ready: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.addr.is_ipv4() == ipv4 && e.condition == Condition::Ready)
        .collect();
    ready.iter().all(|e| !hints_of(e).is_empty())
        && ready.iter().any(|e| hints_of(e).contains(name))
}

/// The filter `scope` comes to for the endpoints of one family: node hints
/// first (as kube-proxy prefers them), then zone hints, then every endpoint.
fn resolve<'a>(endpoints: &[Endpoint], ipv4: bool, scope: Scope<'a>) -> Filter<'a> {
    match scope {
        Scope::Node(node) => Filter::OnNode(node),
        Scope::Cluster { node, .. }
            if !node.is_empty() && hints_apply(endpoints, ipv4, |e| &e.node_hints, node) =>
        {
            Filter::HintedForNode(node)
        }
        Scope::Cluster {
            zone: Some(zone), ..
        } if hints_apply(endpoints, ipv4, |e| &e.zone_hints, zone) => Filter::HintedForZone(zone),
        Scope::Cluster { .. } => Filter::Every,
    }
}

/// The backends of one address family for one traffic policy.
///
/// `scope`: which endpoints count (see [`Scope`]). With topology, only the
/// ready endpoints hinted for other zones are left out: the
/// serving-terminating ones (which the EndpointSlice controller does not
/// hint) keep their flows as below. KEP-1669: the ready
/// endpoints take new flows; serving+terminating ones keep their established
/// flows (state [`BackendState::Terminating`]) — unless no endpoint is ready,
/// then they take new flows too, so a rolling update that terminates every
/// pod at once does not black-hole the service. Each backend weighs 1.
/// Endpoints on `this_node` (by `nodeName`) are marked local.
pub(super) fn backends(
    endpoints: &[Endpoint],
    ipv4: bool,
    scope: Scope<'_>,
    this_node: &str,
) -> Vec<Backend> {
    let filter = resolve(endpoints, ipv4, scope);
    let candidates: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.addr.is_ipv4() == ipv4)
        .filter(|e| match filter {
            Filter::Every => true,
            Filter::HintedForNode(node) => {
                e.condition != Condition::Ready || e.node_hints.contains(node)
            }
            Filter::HintedForZone(zone) => {
                e.condition != Condition::Ready || e.zone_hints.contains(zone)
            }
            Filter::OnNode(node) => !node.is_empty() && e.node_name.as_deref() == Some(node),
        })
        .collect();
    let any_ready = candidates.iter().any(|e| e.condition == Condition::Ready);
    candidates
        .into_iter()
        .filter_map(|e| {
            let state = match e.condition {
                Condition::Ready => BackendState::Active,
                Condition::ServingTerminating if any_ready => BackendState::Terminating,
                Condition::ServingTerminating => BackendState::Active,
                Condition::Unusable => return None,
            };
            Some(Backend {
                addr: e.addr,
                weight: 1,
                state,
                local: !this_node.is_empty() && e.node_name.as_deref() == Some(this_node),
            })
        })
        .collect()
}

/// The distinct addresses of the ready endpoints on node `node` in `slices`,
/// whatever their port: what kube-proxy's `LocalReadyEndpoints` counts for a
/// Service's `healthCheckNodePort`. Serving-but-terminating endpoints do not
/// count, so a node whose pods are all shutting down fails the check and the
/// external load balancer moves away before they are gone. None when `node`
/// is empty.
pub(super) fn local_ready_addresses(
    slices: &[&EndpointSlice],
    node: &str,
    publish_not_ready: bool,
) -> BTreeSet<IpAddr> {
    if node.is_empty() {
        return BTreeSet::new();
    }
    slices
        .iter()
        .flat_map(|slice| &slice.endpoints)
        .filter(|e| e.node_name.as_deref() == Some(node))
        .filter(|e| Condition::of(e.conditions.as_ref(), publish_not_ready) == Condition::Ready)
        .filter_map(|e| address::parse(e.addresses.first()?))
        .collect()
}
