//! A Service port's endpoints: merged across its EndpointSlices, then chosen
//! per traffic policy with KEP-1669's fallback to terminating endpoints.

use std::{
    collections::{BTreeMap, BTreeSet, btree_map::Entry},
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

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
    pub(super) node_name: Option<String>,
}

/// The endpoints of the Service port named `port_name` (empty for an unnamed
/// port) with `protocol`, from every slice of the Service: a slice port
/// matches by name and protocol, and its number is the backend port (the
/// Service's targetPort, resolved per pod by the EndpointSlice controller).
///
/// An address and port that appears more than once (a pod moving between
/// slices) is kept once, with its best condition: kube-proxy also lets a
/// ready copy win. Only an endpoint's first address is used, as kube-proxy
/// does (the API says consumers should). Slices must be valid
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
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let candidate = Endpoint {
                addr: SocketAddr::new(ip, port),
                condition: Condition::of(endpoint.conditions.as_ref(), publish_not_ready),
                node_name: endpoint.node_name.clone(),
            };
            match merged.entry(candidate.addr) {
                Entry::Vacant(slot) => {
                    slot.insert(candidate);
                }
                Entry::Occupied(mut slot) => {
                    // The better condition wins; between equals the smaller
                    // node name, so the result does not depend on the order
                    // of the slices.
                    let kept = slot.get();
                    if (candidate.condition, std::cmp::Reverse(&candidate.node_name))
                        > (kept.condition, std::cmp::Reverse(&kept.node_name))
                    {
                        slot.insert(candidate);
                    }
                }
            }
        }
    }
    merged.into_values().collect()
}

/// The backends of one address family for one traffic policy.
///
/// `local`: `Some(node)` for a `Local` policy, where only endpoints on that
/// node count (none when the node name is empty). KEP-1669: the ready
/// endpoints take new flows; serving+terminating ones keep their established
/// flows (state [`BackendState::Terminating`]) — unless no endpoint is ready,
/// then they take new flows too, so a rolling update that terminates every
/// pod at once does not black-hole the service. Each backend weighs 1.
/// Endpoints on `this_node` (by `nodeName`) are marked local.
pub(super) fn backends(
    endpoints: &[Endpoint],
    ipv4: bool,
    local: Option<&str>,
    this_node: &str,
) -> Vec<Backend> {
    let candidates: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.addr.is_ipv4() == ipv4)
        .filter(|e| match local {
            None => true,
            Some(node) => !node.is_empty() && e.node_name.as_deref() == Some(node),
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
        .filter_map(|e| e.addresses.first()?.parse::<IpAddr>().ok())
        .collect()
}
