//! The load balancer's netns scenario: `xdp_lb` balancing real TCP and UDP
//! traffic, as the `lb_nat` test uses it.
//!
//! ```text
//! client eth0 ─── eth0 [xdp_lb] lb [xdp_lb] eth1 ─── p0 [xdp_pass] switch ─┬─ b0
//! [xdp_pass]                                                               ├─ b1
//!                                                                          └─ b2
//! ```
//! Every host is wire-like (TX checksum offload off). The VIPs (plan VIP 1,
//! both families) exist on no interface: the client routes them via the LB,
//! whose `xdp_lb` on eth0 translates each flow to a backend's own address
//! (DNAT, port 80 → 8080) and redirects it out of eth1; the backends route the
//! client back via the LB, whose `xdp_lb` on eth1 translates the replies back
//! (source = VIP:80) and redirects them out of eth0. A redirect into a veth
//! delivers only when the far end runs an XDP program (DESIGN.md, "Known
//! pitfalls"), hence the `xdp_pass` on the client's eth0 and the switch port.
//!
//! The Maglev tables are built by `consistent-hash` as the control plane will
//! build them: backends keyed by `ip:port/PROTO`, the size from the sizing
//! policy (509 for three backends).
//!
//! [`Scenario`] is the rig with everything configured; [`Scenario::echo`] runs
//! echo requests through the VIP and pairs every answer with the backend
//! `Datapath::simulate` predicted for it; [`Scenario::settle`] reads what the
//! LB counted beside what crossed the links.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use consistent_hash::{Backend as MaglevBackend, SizingPolicy, Table};
use xdp_lb::{
    AddressKind, Attachment, Config, CtEvent, CtStats, Datapath, Flow, Frontend, LoadOptions,
    MapSizes, Protocol, ServiceOptions, Simulation, Verdict, VerdictStats,
};

use crate::{
    Echo, EchoClient, Error, LinkStats, Proto, Result, attach_lb,
    topology::{ClientLbBackends, Endpoint, Family, Options, plan},
    wait::wait_until,
};

/// Backends behind the VIP.
pub const BACKENDS: usize = 3;
/// The VIP's echo port (TCP and UDP).
pub const VIP_PORT: u16 = 80;
/// Where the backends' echo servers listen (DNAT changes the port too).
pub const ECHO_PORT: u16 = 8080;
/// The bulk-transfer service's port, on the VIP and on the backends.
pub const BULK_PORT: u16 = 9000;
/// The Maglev hash seed.
pub const HASH_SEED: u64 = 0x786c_6200_0000_0004;
/// The first port of the client's ephemeral range.
pub const FIRST_CLIENT_PORT: u16 = 20000;
/// How long counters may take to settle after the last reply.
pub const SETTLE: Duration = Duration::from_secs(3);
/// Verdicts that translate a client's frame to a backend.
pub const TO_BACKEND: [Verdict; 2] = [Verdict::ForwardToBackend, Verdict::PassToBackendViaStack];
/// Verdicts that translate a backend's frame back to the client.
pub const REPLY: [Verdict; 2] = [Verdict::ForwardReply, Verdict::PassReplyViaStack];
/// Verdicts that would drop the scenario's frames: to a port or service
/// not served, or a fragment — of a datagram of neither TCP nor UDP
/// (`DropFragment`, which the scenario's traffic must never meet), or a
/// later one of a TCP or UDP datagram whose first fragment was not seen
/// (`DropFragmentUntracked`).
pub const DROPS: [Verdict; 4] = [
    Verdict::DropUnknownPort,
    Verdict::DropNoBackend,
    Verdict::DropFragment,
    Verdict::DropFragmentUntracked,
];

/// What a frontend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// TCP echo on [`VIP_PORT`], served on [`ECHO_PORT`].
    EchoTcp,
    /// UDP echo on [`VIP_PORT`], served on [`ECHO_PORT`].
    EchoUdp,
    /// TCP bulk transfer on [`BULK_PORT`] (the caller runs the sinks).
    Bulk,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::EchoTcp, Self::EchoUdp, Self::Bulk];

    /// The echo service of `proto`.
    pub const fn echo(proto: Proto) -> Self {
        match proto {
            Proto::Tcp => Self::EchoTcp,
            Proto::Udp => Self::EchoUdp,
        }
    }

    /// The transport protocol.
    pub const fn protocol(self) -> Protocol {
        match self {
            Self::EchoTcp | Self::Bulk => Protocol::Tcp,
            Self::EchoUdp => Protocol::Udp,
        }
    }

    /// The frontend's port on the VIP.
    pub const fn vip_port(self) -> u16 {
        match self {
            Self::EchoTcp | Self::EchoUdp => VIP_PORT,
            Self::Bulk => BULK_PORT,
        }
    }

    /// The port the backends serve it on.
    pub const fn backend_port(self) -> u16 {
        match self {
            Self::EchoTcp | Self::EchoUdp => ECHO_PORT,
            Self::Bulk => BULK_PORT,
        }
    }

    const fn index(self) -> u32 {
        match self {
            Self::EchoTcp => 0,
            Self::EchoUdp => 1,
            Self::Bulk => 2,
        }
    }
}

const fn family_index(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Service IDs 1..=6: one per family and kind.
pub const fn service_id(family: Family, kind: Kind) -> u32 {
    1 + family_index(family) * 3 + kind.index()
}

/// Backend IDs 1..=12: per family, the echo backends (TCP and UDP share them:
/// same address and port) and the bulk backends.
pub const fn backend_id(family: Family, kind: Kind, backend: usize) -> u32 {
    let group = match kind {
        Kind::EchoTcp | Kind::EchoUdp => 0,
        Kind::Bulk => 1,
    };
    // `backend` < BACKENDS: the cast cannot truncate.
    1 + (family_index(family) * 2 + group) * BACKENDS as u32 + backend as u32
}

/// The VIP of `family`.
pub fn vip(family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(1);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

/// The name backend `backend` answers with.
pub fn backend_name(backend: usize) -> String {
    format!("b{backend}")
}

/// The backend index answering as `server`.
pub fn backend_named(server: &str) -> Option<usize> {
    (0..BACKENDS).find(|&i| backend_name(i) == server)
}

fn datapath_error(source: xdp_lb::Error) -> Error {
    Error::Datapath(Box::new(source))
}

/// The Maglev table of `backends` (ID and address) with `seed`, keyed
/// `ip:port/PROTO` as the control plane keys them.
pub(crate) fn maglev_table(
    seed: u64,
    backends: &[(u32, SocketAddr)],
    proto: &str,
) -> Result<Vec<u32>> {
    let invalid = |e: consistent_hash::Error| Error::Invalid {
        what: "Maglev table",
        input: e.to_string(),
        expected: "a table for the backends",
    };
    let ids: BTreeMap<Vec<u8>, u32> = backends
        .iter()
        .map(|&(id, addr)| (format!("{addr}/{proto}").into_bytes(), id))
        .collect();
    let size = SizingPolicy::default()
        .size_for(backends.len(), None)
        .map_err(invalid)?;
    let keys = ids.keys().map(|key| MaglevBackend::new(key.clone()));
    let table = Table::build(seed, size, keys).map_err(invalid)?;
    Ok(table
        .slots()
        .iter()
        .map(|&index| ids[&table.backends()[index as usize].key])
        .collect())
}

/// The LB rig with the datapath loaded, configured and attached, and echo
/// servers (TCP and UDP, both families) running on every backend.
#[derive(Debug)]
pub struct Scenario {
    // Declared first so the programs detach before the rig goes.
    /// The loaded datapath.
    pub datapath: Datapath,
    attachments: Vec<Attachment>,
    /// The rig.
    pub topo: ClientLbBackends,
    client_ports: RangeInclusive<u16>,
}

impl Scenario {
    /// Builds the rig, with the client's ephemeral ports limited to `ports`
    /// ports from [`FIRST_CLIENT_PORT`] (so `ports` TCP connections use every
    /// port once and the set of 5-tuples, hence the spread, is the same on
    /// every run).
    pub fn build(options: &Options, ports: u16) -> Result<Self> {
        Self::build_with_sizes(options, ports, MapSizes::default())
    }

    /// As [`Scenario::build`], with the datapath's maps sized by `sizes` (a
    /// small conntrack, for tests that fill it).
    pub fn build_with_sizes(options: &Options, ports: u16, sizes: MapSizes) -> Result<Self> {
        let last = FIRST_CLIENT_PORT
            .checked_add(ports.max(1) - 1)
            .filter(|&last| last <= 60999)
            .ok_or_else(|| Error::Invalid {
                what: "client port count",
                input: ports.to_string(),
                expected: "at most 41000 ports",
            })?;
        let client_ports = FIRST_CLIENT_PORT..=last;
        let mut topo = ClientLbBackends::build(BACKENDS, options)?;
        topo.rig.set_sysctl(
            &topo.client.netns,
            "net.ipv4.ip_local_port_range",
            &format!("{FIRST_CLIENT_PORT} {last}"),
        )?;
        let mut datapath = Datapath::load_with(&LoadOptions {
            sizes,
            pin_dir: None,
        })
        .map_err(datapath_error)?;
        datapath
            .set_config(&Config {
                hash_seed: HASH_SEED,
                ..Config::default()
            })
            .map_err(datapath_error)?;
        for family in Family::ALL {
            datapath
                .set_address(vip(family), AddressKind::Vip)
                .map_err(datapath_error)?;
            for kind in Kind::ALL {
                let backends: Vec<(u32, SocketAddr)> = (0..BACKENDS)
                    .map(|i| {
                        let addr = topo.backends[i].socket(family, kind.backend_port());
                        (backend_id(family, kind, i), addr)
                    })
                    .collect();
                for &(id, addr) in &backends {
                    datapath.put_backend(id, addr, 1).map_err(datapath_error)?;
                }
                let service = service_id(family, kind);
                let proto = match kind.protocol() {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                };
                datapath
                    .swap_table(service, &maglev_table(HASH_SEED, &backends, proto)?)
                    .map_err(datapath_error)?;
                let frontend = Frontend::new(
                    SocketAddr::new(vip(family), kind.vip_port()),
                    kind.protocol(),
                );
                datapath
                    .upsert_service(&frontend, service, &ServiceOptions::default())
                    .map_err(datapath_error)?;
            }
        }
        let backends = topo.backends.clone();
        for (i, backend) in backends.iter().enumerate() {
            for family in Family::ALL {
                for proto in [Proto::Tcp, Proto::Udp] {
                    let bind = backend.socket(family, ECHO_PORT);
                    topo.rig
                        .serve_echo(&backend.netns, proto, bind, &backend_name(i))?;
                }
            }
        }
        let attachments = attach_lb(&mut datapath, &[&topo.lb_front, &topo.lb_back])?;
        Ok(Self {
            datapath,
            attachments,
            topo,
            client_ports,
        })
    }

    /// The client host.
    pub fn client(&self) -> &Endpoint {
        &self.topo.client
    }

    /// The client's ephemeral port range.
    pub fn client_ports(&self) -> RangeInclusive<u16> {
        self.client_ports.clone()
    }

    /// True when every program (`xdp_pass` and `xdp_lb`) runs in native mode.
    pub fn native(&self) -> bool {
        self.attachments.iter().all(Attachment::is_native)
    }

    /// The backend `simulate` names for a flow from the client's `port` to
    /// the `kind` frontend. Anything but a backend of the right service, at
    /// its own address, is an error.
    pub fn predict(&self, family: Family, kind: Kind, port: u16) -> Result<usize> {
        let flow = Flow::new(
            self.client().socket(family, port),
            SocketAddr::new(vip(family), kind.vip_port()),
            kind.protocol(),
        );
        let simulation = self.datapath.simulate(&flow).map_err(datapath_error)?;
        let wrong = || Error::Invalid {
            what: "simulate",
            input: format!("{flow:?}: {simulation:?}"),
            expected: "a backend of the flow's service",
        };
        match simulation {
            Simulation::Backend {
                service_id: service,
                backend_id: id,
                addr,
                ..
            } if service == service_id(family, kind) => (0..BACKENDS)
                .find(|&i| {
                    backend_id(family, kind, i) == id
                        && addr == self.topo.backends[i].socket(family, kind.backend_port())
                })
                .ok_or_else(wrong),
            _ => Err(wrong()),
        }
    }

    /// [`Self::predict`] for every port of the client's range: call it before
    /// any of these flows exists (once tracked, `simulate` names the tracked
    /// backend).
    pub fn predict_all(&self, family: Family, kind: Kind) -> Result<BTreeMap<u16, usize>> {
        self.client_ports()
            .map(|port| Ok((port, self.predict(family, kind, port)?)))
            .collect()
    }

    /// Sends `count` echo requests through the VIP (TCP: one connection
    /// each; UDP: one connected socket each, so only a reply from VIP:80
    /// counts) and pairs each answer with the backend predicted for it.
    pub fn echo(&self, family: Family, proto: Proto, count: usize) -> Result<EchoRun> {
        let predicted = self.predict_all(family, Kind::echo(proto))?;
        let vip = SocketAddr::new(vip(family), VIP_PORT);
        let started = Instant::now();
        let outcomes = EchoClient::new(&self.client().netns).each(proto, vip, count)?;
        let elapsed = started.elapsed();
        let client = self.client().ip(family);
        let mut answers = Vec::with_capacity(count);
        let mut failures = Vec::new();
        for outcome in outcomes {
            match outcome {
                Ok(echo) => {
                    let predicted = (echo.local.ip() == client)
                        .then(|| predicted.get(&echo.local.port()).copied())
                        .flatten();
                    let served = backend_named(&echo.server);
                    answers.push(Answer {
                        echo,
                        predicted,
                        served,
                    });
                }
                Err(e) => failures.push(e),
            }
        }
        Ok(EchoRun {
            family,
            proto,
            requested: count,
            answers,
            failures,
            elapsed,
        })
    }

    /// Link counters of the client's and the backends' interfaces.
    pub fn links(&self) -> Result<Links> {
        let stats = |e: &Endpoint| e.netns.link_stats(&e.dev);
        let switch_port = &self.topo.lb_back.peer;
        Ok(Links {
            client: stats(&self.topo.client)?,
            switch_to_lb: switch_port.netns.link_stats(&switch_port.dev)?,
            backends: self
                .topo
                .backends
                .iter()
                .map(stats)
                .collect::<Result<_>>()?,
        })
    }

    /// The counters now, to measure traffic from.
    pub fn baseline(&self) -> Result<Baseline> {
        Ok(Baseline {
            links: self.links()?,
            verdicts: self.datapath.verdict_stats().map_err(datapath_error)?,
            ct: self.datapath.ct_stats().map_err(datapath_error)?,
        })
    }

    /// What crossed the links and what the LB counted since `base`.
    pub fn traffic_since(&self, base: &Baseline) -> Result<Traffic> {
        let now = self.baseline()?;
        Ok(Traffic {
            links: now.links.since(&base.links),
            verdicts: verdicts_since(&now.verdicts, &base.verdicts),
            ct: ct_since(&now.ct, &base.ct),
        })
    }

    /// [`Self::traffic_since`] once the LB's counters account for every
    /// frame on the links (the last ACKs may still be on their way), or
    /// after `timeout` as they are.
    pub fn settle(&self, base: &Baseline, timeout: Duration) -> Result<Traffic> {
        let mut failed = None;
        let _ = wait_until(
            timeout,
            "the LB's counters to match the links",
            || match self.traffic_since(base) {
                Ok(traffic) => traffic.accounted(),
                Err(e) => {
                    failed = Some(e);
                    true
                }
            },
        );
        match failed {
            Some(e) => Err(e),
            None => self.traffic_since(base),
        }
    }
}

/// One answered echo request.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The answer.
    pub echo: Echo,
    /// The backend `simulate` predicted for the request's 5-tuple (`None`
    /// when it was sent from outside the client's address and port range).
    pub predicted: Option<usize>,
    /// The backend that answered (`None` for an unknown name).
    pub served: Option<usize>,
}

impl Answer {
    /// True when the predicted backend answered.
    pub fn as_predicted(&self) -> bool {
        self.served.is_some() && self.served == self.predicted
    }
}

/// Echo requests of one family and protocol through the VIP.
#[derive(Debug)]
pub struct EchoRun {
    /// The VIP's family.
    pub family: Family,
    /// TCP or UDP.
    pub proto: Proto,
    /// Requests sent.
    pub requested: usize,
    /// The answered ones.
    pub answers: Vec<Answer>,
    /// The unanswered ones.
    pub failures: Vec<Error>,
    /// How long they took.
    pub elapsed: Duration,
}

impl EchoRun {
    /// Answers per backend index.
    pub fn per_backend(&self) -> [usize; BACKENDS] {
        let mut counts = [0; BACKENDS];
        for i in self.answers.iter().filter_map(|a| a.served) {
            counts[i] += 1;
        }
        counts
    }

    /// The requests each backend would get with a perfectly even spread.
    pub fn equal_share(&self) -> f64 {
        self.requested as f64 / BACKENDS as f64
    }

    /// The largest relative deviation of a backend's count from the equal
    /// share (0.1 = 10% off).
    pub fn max_deviation(&self) -> f64 {
        let share = self.equal_share();
        self.per_backend()
            .iter()
            .map(|&n| (n as f64 - share).abs() / share)
            .fold(0.0, f64::max)
    }

    /// Answers that did not come from the predicted backend.
    pub fn mispredicted(&self) -> impl Iterator<Item = &Answer> {
        self.answers.iter().filter(|a| !a.as_predicted())
    }

    /// True when every request was answered, each by its predicted backend.
    pub fn all_as_predicted(&self) -> bool {
        self.failures.is_empty()
            && self.answers.len() == self.requested
            && self.mispredicted().next().is_none()
    }

    /// Distinct client ports, i.e. distinct 5-tuples.
    pub fn flows(&self) -> usize {
        let ports: BTreeSet<u16> = self.answers.iter().map(|a| a.echo.local.port()).collect();
        ports.len()
    }
}

/// Packet counters of the client's and the backends' interfaces.
#[derive(Clone, Debug)]
pub struct Links {
    /// The client's eth0.
    pub client: LinkStats,
    /// The switch's port toward the LB's eth1: where a backend's frame is
    /// dropped when the LB's XDP ring is full (the backends' own counters
    /// count it as sent; the client's, on a veth straight to the LB, do not).
    pub switch_to_lb: LinkStats,
    /// Each backend's interface.
    pub backends: Vec<LinkStats>,
}

impl Links {
    /// Counters gained since `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            client: self.client.since(&earlier.client),
            switch_to_lb: self.switch_to_lb.since(&earlier.switch_to_lb),
            backends: self
                .backends
                .iter()
                .zip(&earlier.backends)
                .map(|(now, then)| now.since(then))
                .collect(),
        }
    }

    /// Frames the backends sent.
    pub fn backends_tx(&self) -> u64 {
        self.backends.iter().map(|b| b.tx_packets).sum()
    }

    /// Frames the backends sent that reached the LB: all but those the
    /// switch dropped for a full XDP ring on the LB's side.
    pub fn backends_delivered(&self) -> u64 {
        self.backends_tx()
            .saturating_sub(self.switch_to_lb.tx_dropped)
    }

    /// Frames any of these interfaces dropped on transmit.
    pub fn tx_dropped(&self) -> u64 {
        self.client.tx_dropped
            + self.switch_to_lb.tx_dropped
            + self.backends.iter().map(|b| b.tx_dropped).sum::<u64>()
    }
}

/// Counters to measure traffic from ([`Scenario::baseline`]).
#[derive(Clone, Debug)]
pub struct Baseline {
    links: Links,
    verdicts: VerdictStats,
    ct: CtStats,
}

impl Baseline {
    /// The link counters at the time of the baseline.
    pub fn links(&self) -> &Links {
        &self.links
    }
}

/// What crossed the links and what the LB counted over some time.
#[derive(Clone, Debug)]
pub struct Traffic {
    /// Link counters gained.
    pub links: Links,
    /// Packets per verdict (nonzero ones only).
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Packets per conntrack event (nonzero ones only).
    pub ct: BTreeMap<CtEvent, u64>,
}

impl Traffic {
    /// Packets given `verdict`.
    pub fn verdict(&self, verdict: Verdict) -> u64 {
        self.verdicts.get(&verdict).copied().unwrap_or(0)
    }

    /// Packets counting conntrack `event`.
    pub fn ct_event(&self, event: CtEvent) -> u64 {
        self.ct.get(&event).copied().unwrap_or(0)
    }

    /// Packets given any of `verdicts`.
    pub fn count(&self, verdicts: &[Verdict]) -> u64 {
        verdicts.iter().map(|&v| self.verdict(v)).sum()
    }

    /// Client frames translated to a backend.
    pub fn to_backend(&self) -> u64 {
        self.count(&TO_BACKEND)
    }

    /// Backend frames translated back.
    pub fn replies(&self) -> u64 {
        self.count(&REPLY)
    }

    /// Frames dropped by the LB.
    pub fn drops(&self) -> u64 {
        self.count(&DROPS)
    }

    /// Every frame the client sent was translated to a backend, every frame
    /// the backends sent that reached the LB was translated back, and
    /// nothing else was counted.
    pub fn accounted(&self) -> bool {
        let client = self.links.client.tx_packets;
        let backends = self.links.backends_delivered();
        self.to_backend() == client
            && self.replies() == backends
            && self.verdicts.values().sum::<u64>() == client + backends
    }
}

fn verdicts_since(now: &VerdictStats, then: &VerdictStats) -> BTreeMap<Verdict, u64> {
    Verdict::ALL
        .iter()
        .map(|&v| (v, now.get(v).packets - then.get(v).packets))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn ct_since(now: &CtStats, then: &CtStats) -> BTreeMap<CtEvent, u64> {
    CtEvent::ALL
        .iter()
        .map(|&e| (e, now.get(e).packets - then.get(e).packets))
        .filter(|&(_, n)| n > 0)
        .collect()
}
