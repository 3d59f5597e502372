//! Kubernetes objects as a source: the pure [`translate()`] from `Service` and
//! `discovery.k8s.io/v1` `EndpointSlice` objects to a [`Model`], with
//! kube-proxy's semantics (DESIGN.md, "Kubernetes semantics").
//!
//! The same function serves the Kubernetes mode (objects from reflector
//! stores) and the file source (objects from YAML documents), so a cluster and
//! a file with the same objects program the same datapath.
//!
//! - [`watch`]: the kube-rs reflectors (Services, EndpointSlices, the Node);
//! - [`sync`]: the debounced loop that translates the stores' contents;
//! - [`node`]: this node's name and NodePort addresses.

mod address;
mod endpoints;
pub mod node;
pub mod sync;
mod translate;
pub(crate) mod validate;
pub mod watch;

use std::{collections::BTreeMap, fmt, net::IpAddr, ops::RangeInclusive};

use crate::model::Model;

pub(crate) use translate::selected;
pub use translate::translate;

/// The label that ties an EndpointSlice to its Service (same namespace).
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";
/// The label that hands a Service to a non-default proxy; kube-proxy (and xlb
/// without `--service-proxy-name`) leaves such Services alone.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// The label the EndpointSlice controller puts on the objects of headless
/// Services; kube-proxy's selector excludes it.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";
/// The Node label that names its zone, for topology-aware routing.
pub const LABEL_TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// Kubernetes' default `--service-node-port-range`, which is also the range
/// the datapath balances on node addresses (every other port of a node
/// address passes to the node's own stack).
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30000..=32767;

/// The node this agent runs on, as the translation needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name, compared with `EndpointSlice` endpoints' `nodeName`
    /// for the `Local` traffic policies. Empty: no endpoint is local.
    pub name: String,
    /// The node addresses that serve NodePorts (like kube-proxy's
    /// `--nodeport-addresses`). Empty: no NodePort frontend is created.
    pub addresses: Vec<IpAddr>,
    /// The node's zone (its [`LABEL_TOPOLOGY_ZONE`] label), matched against
    /// the endpoints' zone hints for topology-aware routing. None: the zone
    /// hints are not followed.
    pub zone: Option<String>,
}

/// Choices that change which objects are translated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TranslateOptions {
    /// `None`: replace kube-proxy, serving every Service that is not labelled
    /// [`LABEL_SERVICE_PROXY_NAME`] or [`LABEL_HEADLESS`] (kube-proxy's own
    /// selector). `Some(name)`: coexist with kube-proxy, serving only the
    /// Services labelled `service.kubernetes.io/service-proxy-name=<name>`
    /// (and still not those labelled headless).
    pub service_proxy_name: Option<String>,
}

/// What [`translate()`] made of the objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// The services to balance.
    pub model: Model,
    /// One line per thing left out or degraded that an operator may not
    /// expect, each starting with the object it concerns (`default/dns:dns-sctp:
    /// SCTP is not supported; skipped`). In a deterministic order.
    pub warnings: Vec<String>,
    /// How many things were left out, by reason (see [`SkipReason`] for what
    /// each reason counts). Reasons that never happened are absent.
    pub skipped: BTreeMap<SkipReason, usize>,
    /// The `healthCheckNodePort`s this node answers, one per Service with
    /// `externalTrafficPolicy: Local` that has one, in `namespace/name`
    /// order.
    pub health_check_node_ports: Vec<HealthCheckNodePort>,
}

/// A Service's `healthCheckNodePort`: external load balancers probe it on
/// every node to learn which nodes have endpoints of an
/// `externalTrafficPolicy: Local` Service (they send traffic only there, as
/// other nodes drop it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckNodePort {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// `spec.healthCheckNodePort`.
    pub port: u16,
    /// Ready endpoints of the Service on this node, each pod address counted
    /// once across the Service's ports and families (as kube-proxy counts
    /// them). Terminating endpoints do not count: a node whose pods are all
    /// shutting down should fail the check.
    pub local_endpoints: usize,
}

/// Why [`translate()`] left something out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SkipReason {
    /// A Service of type `ExternalName` (DNS only; nothing to balance).
    ExternalName,
    /// A headless Service (`clusterIP: None`): clients reach pods directly.
    Headless,
    /// A Service or EndpointSlice outside this proxy's label selector (see
    /// [`TranslateOptions::service_proxy_name`]).
    NotSelected,
    /// A Service or EndpointSlice the API server would have rejected (one
    /// per object; the warning names the first problem).
    Invalid,
    /// A second object with the same kind, namespace and name (every copy is
    /// skipped, since which one is meant cannot be known).
    Duplicate,
    /// A Service port with protocol SCTP (one per port).
    Sctp,
    /// An externalIP or LoadBalancer ingress IP of an address family the
    /// Service has no clusterIP in (one per address and port), as kube-proxy
    /// ignores them.
    OtherFamily,
    /// A NodePort that no node address of its family can serve (one per
    /// node port and family).
    NoNodeAddress,
    /// A frontend on one of the node's own addresses with a port outside
    /// [`NODE_PORT_RANGE`] (one per frontend): the datapath passes those
    /// ports to the node. An externalIP or LoadBalancer IP that is a node
    /// address, or a nodePort of a cluster whose `--service-node-port-range`
    /// is wider than the default.
    NodeAddressPort,
    /// A LoadBalancer ingress IP with `ipMode: Proxy` (one per address and
    /// port): the load balancer proxies to the nodes, so the IP is not
    /// served here (KEP-1860, as kube-proxy).
    ProxyIpMode,
    /// A frontend already claimed by a service whose name sorts first (one
    /// per frontend): two Services can name the same externalIP and port.
    FrontendConflict,
    /// An EndpointSlice of `addressType: FQDN` (one per slice).
    FqdnSlice,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExternalName => "external_name",
            Self::Headless => "headless",
            Self::NotSelected => "not_selected",
            Self::Invalid => "invalid",
            Self::Duplicate => "duplicate",
            Self::Sctp => "sctp",
            Self::OtherFamily => "other_family",
            Self::NoNodeAddress => "no_node_address",
            Self::NodeAddressPort => "node_address_port",
            Self::ProxyIpMode => "proxy_ip_mode",
            Self::FrontendConflict => "frontend_conflict",
            Self::FqdnSlice => "fqdn_slice",
        })
    }
}
