//! The desired state every source produces and the reconciler consumes.
//!
//! Plain data, no I/O: a [`Model`] is what the operator asked for, already
//! validated. The file source builds it from YAML, the Kubernetes source from
//! Services and EndpointSlices (through the same `translate`), and the admin
//! API's drain/undrain lands in it as a backend state.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Every service to balance, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub services: BTreeMap<ServiceName, Service>,
}

impl Model {
    /// Every frontend of every service, with the service that owns it.
    pub fn frontends(&self) -> impl Iterator<Item = (&ServiceName, &Frontend)> {
        self.services
            .iter()
            .flat_map(|(name, s)| s.frontends.iter().map(move |f| (name, f)))
    }
}

/// A service's name: `name` in the native format, `namespace/name:port` for
/// a Kubernetes service port (kube-proxy's "service port name").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServiceName(pub String);

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One balanced service: a set of frontends sharing one backend pool and one
/// Maglev table. A service balances one protocol (a Kubernetes service port
/// has exactly one), so its backends are `address:port/protocol`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub protocol: Protocol,
    pub frontends: Vec<Frontend>,
    /// Unique by address and port.
    pub backends: Vec<Backend>,
    pub mode: Mode,
    /// `sessionAffinity: ClientIP`: the flow hash leaves out the client's
    /// port, so one client reaches one backend across its connections.
    pub affinity: Option<Affinity>,
    pub health_check: Option<HealthCheck>,
    /// Without a usable backend, drop packets instead of refusing them: a
    /// Kubernetes `Local` traffic policy whose endpoints are all on other
    /// nodes (kube-proxy drops; a service with no endpoints at all is
    /// refused).
    pub drop_without_backends: bool,
    /// `loadBalancerSourceRanges`: the only client networks (address,
    /// prefix length) the frontends marked [`Frontend::source_ranges_only`]
    /// accept; others are dropped. Sorted.
    pub source_ranges: Vec<(IpAddr, u8)>,
}

impl Service {
    /// A NAT service of `protocol` over `backends`, with nothing more: no
    /// frontends, affinity, health check or source ranges, refusing when no
    /// backend is usable. What a service is before its settings; tests
    /// build theirs from it (`Service { health_check, ..Service::nat(..) }`).
    pub fn nat(protocol: Protocol, backends: Vec<Backend>) -> Self {
        Self {
            protocol,
            frontends: Vec::new(),
            backends,
            mode: Mode::Nat,
            affinity: None,
            health_check: None,
            drop_without_backends: false,
            source_ranges: Vec::new(),
        }
    }
}

/// Where clients reach a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Frontend {
    pub addr: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub kind: FrontendKind,
    /// Source NAT toward backends that are not on this node (see
    /// [`Backend::local`]), so that their replies come back through it: the
    /// NodePort, LoadBalancer and externalIP frontends of a Kubernetes
    /// service with `externalTrafficPolicy: Cluster`, and every frontend of a
    /// native service with `source_nat: true` (a one-arm load balancer).
    pub snat_remote: bool,
    /// Only clients in the service's [`Service::source_ranges`] reach it
    /// here (a LoadBalancer ingress IP of a Service with
    /// `loadBalancerSourceRanges`).
    pub source_ranges_only: bool,
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            SocketAddr::new(self.addr, self.port),
            self.protocol
        )
    }
}

/// What a frontend address is to the datapath (DESIGN.md, "Per packet").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrontendKind {
    /// An address that belongs to xlb alone (a VIP, ClusterIP, LoadBalancer
    /// ingress IP or externalIP): unknown ports on it are dropped.
    Vip,
    /// A node's own address (NodePort): only the NodePort range is balanced,
    /// everything else passes to the node's stack.
    Node,
}

/// The L4 protocols the datapath balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        })
    }
}

impl From<Protocol> for xdp_lb::Protocol {
    fn from(protocol: Protocol) -> Self {
        match protocol {
            Protocol::Tcp => Self::Tcp,
            Protocol::Udp => Self::Udp,
        }
    }
}

impl From<xdp_lb::Protocol> for Protocol {
    fn from(protocol: xdp_lb::Protocol) -> Self {
        match protocol {
            xdp_lb::Protocol::Tcp => Self::Tcp,
            xdp_lb::Protocol::Udp => Self::Udp,
        }
    }
}

/// One backend of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    /// Relative share of new flows (Maglev weights), at least 1.
    pub weight: u32,
    pub state: BackendState,
    /// A pod of this node (a Kubernetes endpoint whose `nodeName` is this
    /// node's): flows to it keep the client's source even from a
    /// [`Frontend::snat_remote`] frontend.
    pub local: bool,
}

impl Backend {
    /// An active backend at `addr`, of weight 1, not a pod of this node.
    pub const fn active(addr: SocketAddr) -> Self {
        Self {
            addr,
            weight: 1,
            state: BackendState::Active,
            local: false,
        }
    }
}

/// Whether a backend takes new flows. Health is not part of the desired
/// state: the agent's health checks overlay it when programming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the Maglev table: takes new flows.
    Active,
    /// Drained by the operator: keeps its established flows, gets no new ones.
    Draining,
    /// Terminating (Kubernetes `serving` + `terminating`, KEP-1669): keeps its
    /// established flows, gets no new ones.
    Terminating,
}

impl BackendState {
    /// True when the backend is in the table.
    pub const fn takes_new_flows(self) -> bool {
        matches!(self, Self::Active)
    }
}

/// How packets reach backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Destination NAT to the backend, reverse NAT of its replies.
    #[default]
    Nat,
    /// Direct server return: the packet reaches the backend unchanged inside
    /// an outer header (the backend strips it with `xlb decap`, holds the VIP
    /// and answers the client itself); ports are not translated.
    Dsr,
}

/// `sessionAffinity: ClientIP`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// How long a client stays on its backend after its last new connection
    /// (as kube-proxy's iptables mode renews it; Kubernetes default 10800 s,
    /// at most 86400 s).
    pub timeout: Duration,
}

/// An active health check of a service's backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Probe this port instead of the backend's own.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend out.
    pub fall: u32,
}

/// What a health probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connect that completes.
    Tcp,
    /// An HTTP/1.1 GET of `path` answered with a 2xx or 3xx status.
    Http { path: String },
}
