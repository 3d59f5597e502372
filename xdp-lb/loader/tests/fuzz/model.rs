//! The model: what `xdp_lb` must do with a frame, from the model's own parse,
//! the fixture's configuration, the flows the run has translated or
//! encapsulated, and `Datapath::simulate` for the backend Maglev (or
//! conntrack) picks.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use xdp_lb::{AddressKind, Flow, Protocol, Simulation, Verdict};

use crate::{
    answer::{self, IcmpAnswer},
    fixture::{Fixture, Service},
    hex,
    icmp::{self, IcmpError},
    parse::{Headers, IpPacket, parse},
    support::lb::Lb,
};

/// The TCP RST flag.
const TCP_RST: u8 = 0x04;

/// What must happen to a frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expected {
    /// Passed byte for byte, counted as this verdict.
    Untouched(Verdict),
    /// Dropped with this (documented) reason.
    Dropped(Verdict),
    /// A request to a frontend: translated to `backend` and sent on.
    Request { flow: Flow, backend: SocketAddr },
    /// A request to a direct-server-return frontend: wrapped, unchanged, in
    /// an outer header from `source` to `backend` and sent on
    /// (`fuzz/encap.rs`); dropped as `drop_encap_unsupported` when there is
    /// no `source` (IPv6 to an IPv4 backend, or no source configured for the
    /// backend's family). Tracked either way: the datapath creates the entry
    /// before it wraps.
    Encapsulated {
        flow: Flow,
        backend: SocketAddr,
        source: Option<IpAddr>,
        /// An ICMP error about `flow` (a direct-server-return flow), wrapped
        /// as it came rather than translated: it creates and refreshes
        /// nothing, is counted as an error sent to the backend, and when even
        /// it does not fit once wrapped it is dropped (nothing the LB sent to
        /// answer about).
        error: bool,
    },
    /// A reply of a tracked flow: its source becomes the frontend that flow
    /// was sent to — one of `frontends`. Flows whose translated tuples clash
    /// (one client port, two frontends, one backend) share one reply entry,
    /// which names the flow that wrote it last: when created, or refreshed a
    /// second after its last refresh. (DESIGN.md plans SNAT for such clashes.)
    Reply {
        flow: Flow,
        frontends: Vec<SocketAddr>,
    },
    /// Answered in its place: the frame becomes exactly `answer` and goes
    /// back out where it came in (XDP_TX), counted as `verdict`.
    Answered { verdict: Verdict, answer: Frame },
    /// An ICMP or ICMPv6 error about a tracked flow: translated toward
    /// `toward` and sent on.
    IcmpError {
        error: IcmpError,
        toward: ErrorToward,
    },
}

/// Where an ICMP error about a tracked flow goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ErrorToward {
    /// To the flow's backend (an error about a reply, sent to a frontend).
    Backend(SocketAddr),
    /// To the client, the quote translated back to the frontend the flow
    /// was sent to: one of `frontends`, as for `Expected::Reply`.
    Client { frontends: Vec<SocketAddr> },
}

/// A frame's bytes, shown in hex.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Frame(pub Vec<u8>);

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes: {}", self.0.len(), hex(&self.0))
    }
}

/// The model's parse of a frame and what must happen to it.
#[derive(Clone, Debug)]
pub(crate) struct Prediction {
    pub headers: Headers,
    pub expected: Expected,
}

/// The flows the datapath tracks, as the model knows them: every request it
/// translated or encapsulated since the last `clear`.
#[derive(Debug, Default)]
pub(crate) struct Conntrack {
    backends: HashMap<Flow, SocketAddr>,
    /// Creation order, so that picking a flow does not depend on hashing.
    flows: Vec<Flow>,
    /// Reply tuple (from the backend, to the client) → the flows it answers:
    /// NAT flows only. A direct-server-return flow has no reply entry (its
    /// replies do not come back this way).
    replies: HashMap<Flow, Vec<Flow>>,
    /// The direct-server-return flows among `flows`.
    dsr: HashSet<Flow>,
}

impl Conntrack {
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// The backend `flow` is tracked to.
    pub(crate) fn backend(&self, flow: &Flow) -> Option<SocketAddr> {
        self.backends.get(flow).copied()
    }

    /// The `index`-th flow tracked and its backend.
    pub(crate) fn nth(&self, index: usize) -> Option<(Flow, SocketAddr)> {
        let flow = *self.flows.get(index)?;
        Some((flow, self.backends[&flow]))
    }

    /// Every tracked flow and its backend.
    pub(crate) fn entries(&self) -> &HashMap<Flow, SocketAddr> {
        &self.backends
    }

    /// The frontends a reply with tuple `reply` may be translated back to.
    fn frontends_of_reply(&self, reply: &Flow) -> Option<Vec<SocketAddr>> {
        let flows = self.replies.get(reply)?;
        Some(flows.iter().map(|flow| flow.dst).collect())
    }

    /// The reply entries the datapath holds: one per reply tuple of a NAT
    /// flow (flows whose tuples clash share one), none for DSR flows.
    pub(crate) fn reply_entries(&self) -> usize {
        self.replies.len()
    }

    /// How many of the tracked flows are direct server return.
    pub(crate) fn dsr_flows(&self) -> usize {
        self.dsr.len()
    }

    /// `flow` is tracked as direct server return.
    pub(crate) fn is_dsr(&self, flow: &Flow) -> bool {
        self.dsr.contains(flow)
    }

    /// Tracks `flow` to `backend`; with a reply entry unless `dsr`. A flow
    /// already tracked keeps its entry (a request only finds it).
    fn track(&mut self, flow: Flow, backend: SocketAddr, dsr: bool) {
        if self.backends.insert(flow, backend).is_none() {
            self.flows.push(flow);
            if dsr {
                self.dsr.insert(flow);
            } else {
                self.replies
                    .entry(Flow::new(backend, flow.src, flow.proto))
                    .or_default()
                    .push(flow);
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }
}

/// The fixture and the flows: everything the model predicts from.
#[derive(Debug)]
pub(crate) struct Model {
    pub fixture: Fixture,
    pub conntrack: Conntrack,
}

impl Model {
    pub(crate) fn new(fixture: Fixture) -> Self {
        Self {
            fixture,
            conntrack: Conntrack::default(),
        }
    }

    /// What `xdp_lb` must do with `frame`, given the state before it is sent.
    /// An error is a disagreement between the model and `simulate`.
    pub(crate) fn predict(&self, lb: &Lb, frame: &[u8]) -> Result<Prediction, String> {
        let headers = parse(frame);
        let expected = if headers.counter.is_malformed() {
            Expected::Untouched(Verdict::PassMalformed)
        } else if let Some(ip) = headers.ip {
            // ICMP errors about tracked flows take a path of their own;
            // any other goes the way of any other ICMP packet.
            let error = icmp::read(frame, &headers).and_then(|error| self.decide_error(&error));
            match (error, headers.flow(frame)) {
                (Some(expected), _) => expected,
                (None, Some(flow)) => self.decide_flow(lb, frame, &headers, flow)?,
                (None, None) => self.not_balanced(&ip),
            }
        } else {
            Expected::Untouched(Verdict::PassNotIp)
        };
        Ok(Prediction { headers, expected })
    }

    /// Learns from a frame whose outcome matched `expected`: a translated or
    /// encapsulated request is a tracked flow from now on.
    pub(crate) fn learn(&mut self, expected: &Expected) {
        match expected {
            Expected::Request { flow, backend } => self.conntrack.track(*flow, *backend, false),
            Expected::Encapsulated {
                flow,
                backend,
                error: false,
                ..
            } => {
                self.conntrack.track(*flow, *backend, true);
            }
            _ => {}
        }
    }

    /// An IP packet that is not a whole TCP/UDP packet (other protocols,
    /// fragments, IPv6 with an IPv4-mapped address): untouched unless
    /// addressed to a VIP-only address, where fragments are dropped (no ports
    /// to balance by, no reassembly) and other protocols pass.
    fn not_balanced(&self, ip: &IpPacket) -> Expected {
        match self.fixture.address_kind(ip.dst) {
            None => Expected::Untouched(Verdict::PassNotFrontend),
            Some(AddressKind::Node) => Expected::Untouched(Verdict::PassNodeAddress),
            Some(AddressKind::Vip) if ip.fragment => Expected::Dropped(Verdict::DropFragment),
            Some(AddressKind::Vip) => Expected::Untouched(Verdict::PassOtherProtocol),
        }
    }

    /// An ICMP or ICMPv6 error quoting a TCP or UDP header (`lb/icmp.rs`):
    /// reversed, the quoted tuple is a tracked flow's own key when the error
    /// is addressed to a frontend address (it quotes a reply the LB sent to
    /// a client), else a tracked flow's reply key (it quotes a request the
    /// LB sent to a backend). `None` when it is neither: the error is then
    /// any other ICMP packet. An error is no packet of the flow: it creates
    /// and refreshes nothing.
    ///
    /// A direct-server-return flow has no reply key, so only errors to its
    /// frontend find it, and they go to its backend wrapped as they came, as
    /// the flow's packets do: the backend answered from the frontend's own
    /// address and port, and recognises the error only unchanged.
    fn decide_error(&self, error: &IcmpError) -> Option<Expected> {
        let reversed = Flow::new(error.inner_dst, error.inner_src, error.proto);
        let toward = if self.fixture.address_kind(error.ip.dst).is_some() {
            let backend = self.conntrack.backend(&reversed)?;
            if self.conntrack.is_dsr(&reversed) {
                return Some(if error.ip.ttl <= 1 {
                    Expected::Untouched(Verdict::PassTtlExpired)
                } else {
                    Expected::Encapsulated {
                        flow: reversed,
                        backend,
                        source: self.fixture.encap_source(error.ip.is_v4(), backend.ip()),
                        error: true,
                    }
                });
            }
            ErrorToward::Backend(backend)
        } else {
            ErrorToward::Client {
                frontends: self.conntrack.frontends_of_reply(&reversed)?,
            }
        };
        // As for the flow's own packets: one that would expire here goes to
        // the kernel, which answers it as a router does.
        Some(if error.ip.ttl <= 1 {
            Expected::Untouched(Verdict::PassTtlExpired)
        } else {
            Expected::IcmpError {
                error: *error,
                toward,
            }
        })
    }

    /// A whole TCP or UDP packet (DESIGN.md "Per packet, in this order"):
    /// the reply direction first, then the frontend lookup with the node
    /// address rule, then the TTL, then the backend.
    fn decide_flow(
        &self,
        lb: &Lb,
        frame: &[u8],
        headers: &Headers,
        flow: Flow,
    ) -> Result<Expected, String> {
        let ip = headers.ip.ok_or("a flow without an IP header")?;
        let ttl = ip.ttl;
        let kind = self.fixture.address_kind(flow.dst.ip());
        // A VIP-only address never receives a reply: a client is never a VIP.
        if kind != Some(AddressKind::Vip)
            && let Some(frontends) = self.conntrack.frontends_of_reply(&flow)
        {
            // One that would expire here goes to the kernel, which answers
            // with ICMP time exceeded, as a router does.
            return Ok(if ttl <= 1 {
                Expected::Untouched(Verdict::PassTtlExpired)
            } else {
                Expected::Reply { flow, frontends }
            });
        }
        let Some(kind) = kind else {
            return Ok(Expected::Untouched(Verdict::PassNotFrontend));
        };
        let node = kind == AddressKind::Node;
        if node && !self.fixture.in_nodeport_range(flow.dst.port()) {
            return Ok(Expected::Untouched(Verdict::PassNodeAddress));
        }
        let Some(service) = self.fixture.service(flow.dst, flow.proto) else {
            return Ok(if node {
                Expected::Untouched(Verdict::PassNodeAddress)
            } else {
                Expected::Dropped(Verdict::DropUnknownPort)
            });
        };
        if ttl <= 1 {
            return Ok(Expected::Untouched(Verdict::PassTtlExpired));
        }
        let refusal = || refuse(frame, headers, &ip, &flow);
        self.request(lb, flow, service, refusal)
    }

    /// A request to `service`: its tracked backend, or the one Maglev picks,
    /// as `simulate` names it — checked against what the model knows — or,
    /// when the service has no live backend, its `refusal`. Translated, or
    /// for a direct-server-return service encapsulated.
    fn request(
        &self,
        lb: &Lb,
        flow: Flow,
        service: &Service,
        refusal: impl FnOnce() -> Expected,
    ) -> Result<Expected, String> {
        let simulation = lb
            .dp
            .simulate(&flow)
            .map_err(|e| format!("simulate: {e}"))?;
        let tracked = self.conntrack.backend(&flow);
        match simulation {
            Simulation::Backend {
                service_id,
                addr,
                tracked: simulated_tracked,
                ..
            } if service_id == service.id
                && service.backends.contains(&addr)
                && simulated_tracked == tracked.is_some()
                && tracked.is_none_or(|backend| backend == addr) =>
            {
                Ok(if service.dsr {
                    Expected::Encapsulated {
                        flow,
                        backend: addr,
                        source: self.fixture.encap_source(flow.src.is_ipv4(), addr.ip()),
                        error: false,
                    }
                } else {
                    Expected::Request {
                        flow,
                        backend: addr,
                    }
                })
            }
            Simulation::NoBackend { service_id }
                if service_id == service.id && tracked.is_none() =>
            {
                Ok(refusal())
            }
            other => Err(format!(
                "{flow:?} is for service {} (live backends {:?}; \
                 the model tracks it to {tracked:?}), but simulate says {other:?}",
                service.id, service.backends
            )),
        }
    }
}

/// A packet for a service without a live backend is refused as a host
/// without a listener refuses it (`xdp/answer.rs`): a TCP segment with a
/// reset, a UDP datagram with port unreachable, both from the frontend and
/// back where it came from. Dropped instead: a reset (never answered), and a
/// packet whose transport header does not follow its network header
/// directly (IPv4 options, IPv6 extension headers: 8 quoted bytes would not
/// hold its ports).
fn refuse(frame: &[u8], headers: &Headers, ip: &IpPacket, flow: &Flow) -> Expected {
    if !ip.transport_follows_directly() {
        return Expected::Dropped(Verdict::DropNoBackend);
    }
    match flow.proto {
        Protocol::Tcp if frame[ip.l4 + 13] & TCP_RST != 0 => {
            Expected::Dropped(Verdict::DropNoBackend)
        }
        Protocol::Tcp => Expected::Answered {
            verdict: Verdict::RefuseReset,
            answer: Frame(answer::reset(frame, headers, ip, flow)),
        },
        Protocol::Udp => Expected::Answered {
            verdict: Verdict::RefuseUnreachable,
            answer: Frame(answer::icmp(
                frame,
                headers,
                ip,
                flow,
                IcmpAnswer::PortUnreachable,
            )),
        },
    }
}
