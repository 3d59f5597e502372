//! The measured cases of one scale, and the flows they need tracked first.
//!
//! Every case is a frame for run 0 plus the rotations it needs (DESIGN.md,
//! method B): the wrapper, and method A in user space, rewrite those fields for
//! run `n`, so that a case walks over many services and flows instead of one
//! cache-hot entry, and a new-flow case is really new in every run. The floor
//! and the one-flow rows rotate nothing: the floor then times the wrapper's
//! restore and tail call alone, as DESIGN.md's floor does, and a row that
//! rotates carries the cost of its rotations in its ratio (overstated, never
//! understated). Rotations that changed nothing, once added to every row so
//! that the wrapper did the same work in each, raised the floor by a third to
//! a half and compressed every ratio.
//!
//! The direct-server-return cases grow the frame's head; `xdp_bench` moves it
//! back before writing the frame again, so method B times them like the rest.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Context as _;
use serde::Serialize;
use tracing::info;
use xdp_lb::{Datapath, ProgramName, Rotation};

use super::{
    check::{Snapshot, XDP_REDIRECT},
    fixture::{self, BACKEND_PORT, Layout, SHARED_BACKEND, backend_ip, backend_mac},
    frame::{DST_IP_LO, Headers, L4, SRC_IP_LO, SRC_PORT, ipv4_plus, rotate},
    netns::{DOWN_ADDR, DOWN_MAC, GATEWAY_MAC, LB_ADDR, UP_MAC},
};

/// The first client of the conntrack-hit flows (TCP) and of the UDP flows;
/// more flows take the next source ports, then the next addresses.
const TCP_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const UDP_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// The first client of the direct-server-return conntrack-hit flows.
const DSR_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 4, 0, 1);
const FIRST_TRACKED_PORT: u16 = 20_000;
/// Source ports per client address of the tracked flows.
const PORTS_PER_CLIENT: u32 = 40_000;
/// The client port of the reply flows.
const CLIENT_PORT: u16 = 40_000;
/// Clients of the reply flows: 10.2.0.0 + k, so the wrapper can rotate them
/// (their low 16 bits).
const REPLY_CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 0);
/// At most this many reply flows (their clients' low 16 bits must not wrap).
const MAX_REPLY_FLOWS: u32 = 60_000;
/// Fresh clients, one per new-flow run: 10.64.0.0 and up.
const FRESH_CLIENTS: Ipv4Addr = Ipv4Addr::new(10, 64, 0, 0);
/// First source port of a new-flow run; the rotation counts up from here and
/// stops short of wrapping to port 0.
const FIRST_NEW_PORT: u16 = 10_000;
/// Runs a new-flow case makes in one call before a flow would repeat: one
/// per source port from `FIRST_NEW_PORT` up.
pub(crate) const NEW_FLOW_RUNS: u32 = (u16::MAX - FIRST_NEW_PORT) as u32;

/// The classes of DESIGN.md's table, plus the floor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    /// `xdp_floor`: parse Ethernet/IPv4/TCP, bump one counter, pass.
    Floor,
    /// A TCP SYN of a flow never seen: Maglev, conntrack insert, DNAT, forward.
    NewTcpFlow,
    /// The same, over warm buckets: one SYN in every run, its flow and reply
    /// entry deleted by the wrapper before each run (timed with it), as
    /// Katran's SYN figure repeats one packet. Measured at the hot scale.
    NewTcpFlowWarm,
    /// A TCP ACK of a tracked flow: conntrack hit, DNAT, forward.
    ConntrackHit,
    /// A UDP datagram of a tracked flow.
    Udp,
    /// A backend's answer to a tracked flow: reverse NAT, forward.
    Reply,
    /// A frame to an address that is not a frontend: passed untouched.
    NonVipPass,
    /// Direct server return, a TCP SYN of a flow never seen: Maglev,
    /// conntrack insert, IPIP encapsulation, forward.
    DsrNewTcpFlow,
    /// Direct server return, a TCP ACK of a tracked flow: conntrack hit,
    /// IPIP encapsulation, forward.
    DsrConntrackHit,
}

impl Kind {
    /// Table order.
    pub(crate) const ALL: [Self; 9] = [
        Self::Floor,
        Self::NewTcpFlow,
        Self::NewTcpFlowWarm,
        Self::ConntrackHit,
        Self::Udp,
        Self::Reply,
        Self::NonVipPass,
        Self::DsrNewTcpFlow,
        Self::DsrConntrackHit,
    ];

    /// The row label.
    pub(crate) const fn label(self) -> &'static str {
        match self {
            Self::Floor => "floor (`xdp_floor`)",
            Self::NewTcpFlow => "new TCP flow (SYN)",
            Self::NewTcpFlowWarm => "new TCP flow, warm (one SYN, forgotten before each run)",
            Self::ConntrackHit => "conntrack hit (TCP ACK)",
            Self::Udp => "UDP (conntrack hit)",
            Self::Reply => "reply reverse-NAT",
            Self::NonVipPass => "non-VIP pass",
            Self::DsrNewTcpFlow => "DSR new TCP flow (SYN, IPIP)",
            Self::DsrConntrackHit => "DSR conntrack hit (TCP ACK, IPIP)",
        }
    }

    /// Every run is a new flow (and each measured run takes a fresh client).
    pub(crate) const fn is_new_flow(self) -> bool {
        matches!(
            self,
            Self::NewTcpFlow | Self::NewTcpFlowWarm | Self::DsrNewTcpFlow
        )
    }

    /// Each run of a call is a new flow from the next source port: a call
    /// makes at most `NEW_FLOW_RUNS` of them.
    pub(crate) const fn walks_new_ports(self) -> bool {
        self.is_new_flow() && !self.forgets()
    }

    /// Every run is the same flow, which the wrapper deletes before it
    /// (`Datapath::bench_target_forgetting`) rather than the client rotating.
    pub(crate) const fn forgets(self) -> bool {
        matches!(self, Self::NewTcpFlowWarm)
    }
}

/// What the datapath must do with every frame of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// XDP_PASS, the frame untouched.
    Pass,
    /// DNAT to the backend `simulate` names for the flow, out of `dn0`.
    Dnat,
    /// Reverse NAT: the source becomes the frontend of reply flow `n % len`
    /// (the flows' clients are consecutive addresses), out of `up0`.
    Reply { frontends: Vec<SocketAddrV4> },
    /// Direct server return: the packet, unchanged, inside an outer IPv4
    /// header from `source` to the backend `simulate` names, out of `dn0`.
    Encapsulated { source: Ipv4Addr },
}

/// One measured case of one scale.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub(crate) kind: Kind,
    pub(crate) program: ProgramName,
    /// The frame of run 0. A new-flow case replaces the client for every run.
    pub(crate) headers: Headers,
    /// At most `BENCH_ROTATIONS`, the fields the wrapper rewrites before
    /// each run.
    pub(crate) rotations: Vec<Rotation>,
    /// Distinct flows the rotations walk through before repeating; for a new
    /// flow case, how many runs one client can make before a flow repeats.
    pub(crate) cycle: u32,
    pub(crate) expect: Expect,
}

/// The flows a case's packets belong to, as its row states them (in the
/// JSON: a number, or one of the tags of [`NewFlows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum Flows {
    /// The runs walk over this many distinct flows in turn: one for the
    /// floor and the non-VIP pass, which rotate nothing.
    Walked(u32),
    /// No packet belongs to a flow conntrack holds: each makes a new one.
    New(NewFlows),
}

/// How a new-flow case's packets are new.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NewFlows {
    /// Each packet is a flow never seen: the next source port within a
    /// call, a fresh client in every measured run.
    NewEachPacket,
    /// Each packet is the same SYN, its flow deleted before it (the warm
    /// case: the buckets it lands in stay cache-hot).
    OneForgottenBeforeEachPacket,
}

impl Case {
    /// True when every run starts from a fresh client (and its counter from 0).
    pub(crate) fn is_new_flow(&self) -> bool {
        self.kind.is_new_flow()
    }

    /// The flows its packets belong to: `cycle` where they walk over tracked
    /// flows. A new-flow case's `cycle` is a bound on a call's runs (or, for
    /// the warm case, none at all), not a count of flows.
    pub(crate) fn flows(&self) -> Flows {
        if self.kind.forgets() {
            Flows::New(NewFlows::OneForgottenBeforeEachPacket)
        } else if self.kind.is_new_flow() {
            Flows::New(NewFlows::NewEachPacket)
        } else {
            Flows::Walked(self.cycle)
        }
    }

    /// The frame of run 0, for `client` if the case takes one per run.
    pub(crate) fn frame(&self, client: Option<Ipv4Addr>) -> Vec<u8> {
        self.headers_for(client).build()
    }

    /// The headers of run 0, for `client` if given.
    pub(crate) fn headers_for(&self, client: Option<Ipv4Addr>) -> Headers {
        let mut headers = self.headers;
        if let Some(client) = client {
            headers.src.set_ip(client);
        }
        headers
    }

    /// The frame of run `n`.
    pub(crate) fn frame_at(&self, client: Option<Ipv4Addr>, n: u32) -> Vec<u8> {
        let mut frame = self.frame(client);
        rotate(&mut frame, &self.rotations, n);
        frame
    }
}

/// Hands out clients that have never sent anything, one per new-flow run.
#[derive(Debug, Default)]
pub(crate) struct Clients {
    next: u32,
}

impl Clients {
    pub(crate) fn fresh(&mut self) -> anyhow::Result<Ipv4Addr> {
        let client = ipv4_plus(FRESH_CLIENTS, self.next)?;
        anyhow::ensure!(self.next < 1 << 22, "out of fresh clients in 10.64.0.0/10");
        self.next += 1;
        Ok(client)
    }
}

/// Which frontends of the services a case sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frontends {
    /// The TCP and UDP frontends (NAT).
    Nat,
    /// The direct-server-return TCP frontends.
    Dsr,
}

impl Frontends {
    /// Service 0's frontend.
    fn first(self, layout: &Layout) -> SocketAddrV4 {
        match self {
            Self::Nat => layout.frontend(0),
            Self::Dsr => layout.dsr_frontend(0),
        }
    }

    /// The rotations that walk over the services (`Layout::rotations`).
    fn rotations(self, layout: &Layout) -> Vec<Rotation> {
        match self {
            Self::Nat => layout.rotations(),
            Self::Dsr => layout.dsr_rotations(),
        }
    }
}

/// A client-side frame to service 0's frontend.
fn to_service(layout: &Layout, client: Ipv4Addr, port: u16, l4: L4) -> Headers {
    to_frontend(layout, Frontends::Nat, client, port, l4)
}

/// A client-side frame to service 0's frontend of `frontends`.
fn to_frontend(
    layout: &Layout,
    frontends: Frontends,
    client: Ipv4Addr,
    port: u16,
    l4: L4,
) -> Headers {
    Headers {
        src_mac: GATEWAY_MAC,
        dst_mac: UP_MAC,
        src: SocketAddrV4::new(client, port),
        dst: frontends.first(layout),
        ttl: 64,
        l4,
    }
}

/// The rotations that walk over the tracked flows of `client`: every service in
/// turn, then (when a field is left) the next source port, then the next client
/// address, until at least `min_flows` flows; and how many flows that makes.
fn tracked_flows(layout: &Layout, client: Ipv4Addr, min_flows: u32) -> (Vec<Rotation>, u32) {
    tracked_flows_to(layout, Frontends::Nat, client, min_flows)
}

/// `tracked_flows` to the frontends `frontends`.
fn tracked_flows_to(
    layout: &Layout,
    frontends: Frontends,
    client: Ipv4Addr,
    min_flows: u32,
) -> (Vec<Rotation>, u32) {
    let n = layout.services;
    // One service: its rotation would rewrite the VIP with its own value; the
    // two fields serve the flows instead.
    let services = if n > 1 {
        frontends.rotations(layout)
    } else {
        vec![]
    };
    let one_field = services.len() < 2;
    // The client moves in step with the service: flows of two services never
    // share a client address and port, which, on a backend both services
    // have, would clash after translation (and be given another source port).
    let [_, _, hi, lo] = client.octets();
    let mut rotations = services.clone();
    for service in &services {
        rotations.push(Rotation {
            offset: if service.offset == DST_IP_LO {
                SRC_IP_LO
            } else {
                SRC_PORT
            },
            base: if service.offset == DST_IP_LO {
                u16::from_be_bytes([hi, lo])
            } else {
                FIRST_TRACKED_PORT
            },
            ..*service
        });
    }
    let mut flows = n;
    let per_service = min_flows.div_ceil(n);
    if per_service > 1 && one_field {
        // As few client addresses as the ports allow, then as few ports as
        // those addresses need: the count lands on `per_service` or just above.
        let first = u16::from_be_bytes([hi, lo]);
        let addresses = if services.is_empty() {
            per_service
                .div_ceil(PORTS_PER_CLIENT)
                .min(u32::from(u16::MAX - first))
        } else {
            1
        };
        let ports = per_service.div_ceil(addresses).min(PORTS_PER_CLIENT);
        rotations.push(Rotation {
            offset: SRC_PORT,
            base: FIRST_TRACKED_PORT,
            modulus: ports,
            divisor: flows,
        });
        flows *= ports;
        if addresses > 1 {
            rotations.push(Rotation {
                offset: SRC_IP_LO,
                base: first,
                modulus: addresses,
                divisor: flows,
            });
            flows *= addresses;
        }
    }
    (rotations, flows)
}

/// Flows the cases of a scale track before they are measured: the TCP, UDP
/// and direct-server-return flows, the reply flows (at most), and one per case
/// for the checks.
pub(crate) fn tracked_before(layout: &Layout, min_flows: u32) -> u64 {
    let (_, tcp) = tracked_flows(layout, TCP_CLIENT, min_flows);
    let (_, udp) = tracked_flows(layout, UDP_CLIENT, min_flows);
    let (_, dsr) = tracked_flows_to(layout, Frontends::Dsr, DSR_CLIENT, min_flows);
    let replies = reply_flows(layout, min_flows);
    u64::from(tcp) + u64::from(udp) + u64::from(dsr) + u64::from(replies) + Kind::ALL.len() as u64
}

/// Builds the cases of a scale, tracking the flows they need first. The
/// conntrack-hit, UDP and reply cases walk over at least `min_flows` flows
/// (the reply case over at most `MAX_REPLY_FLOWS`; the others at least one
/// per service). The `hot` scale has the warm new-flow case too.
pub(crate) fn build(
    dp: &mut Datapath,
    layout: &Layout,
    min_flows: u32,
    hot: bool,
    seed: u64,
) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();

    let established = to_service(layout, TCP_CLIENT, FIRST_TRACKED_PORT, L4::Ack);
    cases.push(Case {
        kind: Kind::Floor,
        program: ProgramName::XdpFloor,
        headers: established,
        rotations: vec![],
        cycle: 1,
        expect: Expect::Pass,
    });

    cases.push(new_flow_case(
        layout,
        Kind::NewTcpFlow,
        Frontends::Nat,
        Expect::Dnat,
    ));
    if hot {
        cases.push(warm_new_flow_case(layout));
    }

    // The tracked flows, TCP and UDP, created by the very rotations that
    // measure them.
    let (rotations, flows) = tracked_flows(layout, TCP_CLIENT, min_flows);
    let syn = Headers {
        l4: L4::Syn,
        ..established
    };
    track_rotated(dp, Kind::NewTcpFlow, &syn, &rotations, flows)
        .context("tracking the TCP flows")?;
    cases.push(Case {
        kind: Kind::ConntrackHit,
        program: ProgramName::XdpLb,
        headers: established,
        rotations,
        cycle: flows,
        expect: Expect::Dnat,
    });
    let udp = to_service(layout, UDP_CLIENT, FIRST_TRACKED_PORT, L4::Udp);
    let (rotations, flows) = tracked_flows(layout, UDP_CLIENT, min_flows);
    track_rotated(dp, Kind::NewTcpFlow, &udp, &rotations, flows)
        .context("tracking the UDP flows")?;
    cases.push(Case {
        kind: Kind::Udp,
        program: ProgramName::XdpLb,
        headers: udp,
        rotations,
        cycle: flows,
        expect: Expect::Dnat,
    });

    cases.push(reply_case(dp, layout, min_flows, seed)?);

    let other = Headers {
        dst: SocketAddrV4::new(LB_ADDR, 22),
        ..established
    };
    cases.push(Case {
        kind: Kind::NonVipPass,
        program: ProgramName::XdpLb,
        headers: other,
        rotations: vec![],
        cycle: 1,
        expect: Expect::Pass,
    });

    // Direct server return: new flows as above, and tracked flows created
    // one run at a time (`track_one_by_one`).
    let encapsulated = Expect::Encapsulated { source: DOWN_ADDR };
    cases.push(new_flow_case(
        layout,
        Kind::DsrNewTcpFlow,
        Frontends::Dsr,
        encapsulated.clone(),
    ));
    let established = to_frontend(
        layout,
        Frontends::Dsr,
        DSR_CLIENT,
        FIRST_TRACKED_PORT,
        L4::Ack,
    );
    let (rotations, flows) = tracked_flows_to(layout, Frontends::Dsr, DSR_CLIENT, min_flows);
    let syn = Headers {
        l4: L4::Syn,
        ..established
    };
    track_rotated(dp, Kind::DsrNewTcpFlow, &syn, &rotations, flows)
        .context("tracking the DSR flows")?;
    cases.push(Case {
        kind: Kind::DsrConntrackHit,
        program: ProgramName::XdpLb,
        headers: established,
        rotations,
        cycle: flows,
        expect: encapsulated,
    });
    Ok(cases)
}

/// A new-flow case to `frontends`: every service in turn, each run from the
/// next source port (and each cycle from a fresh client, see `Clients`), so
/// that no two runs share a client address and port: two flows of one client
/// port to two services that land on one backend would clash after
/// translation, and be given another source port.
fn new_flow_case(layout: &Layout, kind: Kind, frontends: Frontends, expect: Expect) -> Case {
    let template = to_frontend(
        layout,
        frontends,
        Ipv4Addr::UNSPECIFIED,
        FIRST_NEW_PORT,
        L4::Syn,
    );
    let mut rotations = frontends.rotations(layout);
    rotations.push(Rotation {
        offset: SRC_PORT,
        base: FIRST_NEW_PORT,
        modulus: 0,
        divisor: 1,
    });
    let cycle = NEW_FLOW_RUNS;
    Case {
        kind,
        program: ProgramName::XdpLb,
        headers: template,
        rotations,
        cycle,
        expect,
    }
}

/// The warm new-flow case: one SYN to the first service, never rotated; the
/// wrapper deletes its flow before every run, so it has no cycle.
fn warm_new_flow_case(layout: &Layout) -> Case {
    let syn = to_frontend(
        layout,
        Frontends::Nat,
        Ipv4Addr::UNSPECIFIED,
        FIRST_NEW_PORT,
        L4::Syn,
    );
    Case {
        kind: Kind::NewTcpFlowWarm,
        program: ProgramName::XdpLb,
        headers: syn,
        rotations: vec![],
        cycle: u32::MAX,
        expect: Expect::Dnat,
    }
}

/// Runs `headers` through `xdp_lb` once for each of the `count` flows that
/// `rotations` walk over, in a `scattered` order, checking that every run
/// created a flow of the `kind` (NAT or DSR) of new flow.
fn track_rotated(
    dp: &mut Datapath,
    kind: Kind,
    headers: &Headers,
    rotations: &[Rotation],
    count: u32,
) -> anyhow::Result<()> {
    let mut frame = headers.build();
    let before = Snapshot::take(dp)?;
    for n in scattered(count) {
        // 100 000 flows take a while to set up.
        crate::stop::check()?;
        rotate(&mut frame, rotations, n);
        let out = dp.test_run(ProgramName::XdpLb, &frame)?;
        anyhow::ensure!(
            out.action == XDP_REDIRECT,
            "creating flow {n}: verdict {} instead of XDP_REDIRECT",
            out.action
        );
    }
    Snapshot::take(dp)?.ensure_created(&before, kind, u64::from(count))
}

/// `0..count` in an order unrelated to the measuring walk's (which goes
/// up from 0): flows set up in walk order would lie in conntrack in walk
/// order wherever a table hands out memory in order of insertion (an LRU
/// hash map's free list does), and the walk would read them one after the
/// other, as no traffic does. A step of about 0.618 `count`, coprime to it,
/// visits every index once and puts consecutive indexes far apart.
fn scattered(count: u32) -> impl Iterator<Item = u32> {
    let count = u64::from(count);
    let mut step = count * 618 / 1000 + 1;
    while gcd(step, count) != 1 {
        step += 1;
    }
    (0..count).map(move |n| (n * step % count) as u32)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How many reply flows a scale walks over: as many as the hit cases (at most
/// `MAX_REPLY_FLOWS`), so that scales compare at equal flows.
fn reply_flows(layout: &Layout, min_flows: u32) -> u32 {
    min_flows.max(layout.services).min(MAX_REPLY_FLOWS)
}

/// The reply case: answers from the shared backend to clients 10.2.0.0 + k.
///
/// A reply carries its backend's address, and the wrapper can only rotate
/// fields, so the rotated replies must all come from one backend. Flow `k`
/// goes to service `k % N`, whose table is pinned to the shared backend while
/// the flow's SYN goes through and restored afterwards: a tracked flow keeps
/// its backend across a table change.
fn reply_case(
    dp: &mut Datapath,
    layout: &Layout,
    min_flows: u32,
    seed: u64,
) -> anyhow::Result<Case> {
    let n = layout.services;
    let flows = reply_flows(layout, min_flows);
    let services = 0..n.min(flows);
    let frontends: Vec<SocketAddrV4> = (0..flows).map(|k| layout.frontend(k % n)).collect();
    info!(services = n, flows, "tracking the reply flows");
    fixture::pin_to_shared_backend(dp, services.clone())?;
    let before = Snapshot::take(dp)?;
    for k in scattered(flows) {
        crate::stop::check()?;
        let frontend = &frontends[k as usize];
        let syn = Headers {
            src_mac: GATEWAY_MAC,
            dst_mac: UP_MAC,
            src: SocketAddrV4::new(reply_client(k)?, CLIENT_PORT),
            dst: *frontend,
            ttl: 64,
            l4: L4::Syn,
        };
        let out = dp.test_run(ProgramName::XdpLb, &syn.build())?;
        anyhow::ensure!(
            out.action == XDP_REDIRECT,
            "creating reply flow {k}: verdict {}",
            out.action
        );
    }
    Snapshot::take(dp)?.ensure_created(&before, Kind::NewTcpFlow, u64::from(flows))?;
    fixture::restore_tables(dp, services, seed)?;
    let headers = Headers {
        src_mac: backend_mac(SHARED_BACKEND),
        dst_mac: DOWN_MAC,
        src: SocketAddrV4::new(backend_ip(SHARED_BACKEND), BACKEND_PORT),
        dst: SocketAddrV4::new(reply_client(0)?, CLIENT_PORT),
        ttl: 64,
        l4: L4::Ack,
    };
    let rotation = Rotation {
        offset: DST_IP_LO,
        base: u16::from_be_bytes([REPLY_CLIENTS.octets()[2], REPLY_CLIENTS.octets()[3]]),
        modulus: flows,
        divisor: 1,
    };
    Ok(Case {
        kind: Kind::Reply,
        program: ProgramName::XdpLb,
        headers,
        rotations: vec![rotation],
        cycle: flows,
        expect: Expect::Reply { frontends },
    })
}

fn reply_client(k: u32) -> anyhow::Result<Ipv4Addr> {
    ipv4_plus(REPLY_CLIENTS, k)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn scattered_visits_every_index_once_and_never_its_neighbour_next() {
        for count in [0, 1, 2, 3, 1000, 60_000, 100_002] {
            let order: Vec<u32> = scattered(count).collect();
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..count).collect::<Vec<_>>(), "count {count}");
            if count >= 1000 {
                assert!(
                    order.windows(2).all(|w| w[0].abs_diff(w[1]) > count / 4),
                    "count {count}: two consecutive indexes close together"
                );
            }
        }
    }

    use super::*;
    use crate::prog::frame::flow_of;

    /// Every flow the rotations of `client` produce, one per run of a pass.
    fn walk(layout: &Layout, min_flows: u32) -> (u32, usize) {
        let (rotations, flows) = tracked_flows(layout, TCP_CLIENT, min_flows);
        let frame = to_service(layout, TCP_CLIENT, FIRST_TRACKED_PORT, L4::Ack).build();
        let distinct: HashSet<_> = (0..flows)
            .map(|n| {
                let mut f = frame.clone();
                rotate(&mut f, &rotations, n);
                flow_of(&f).unwrap()
            })
            .collect();
        (flows, distinct.len())
    }

    #[test]
    fn a_new_flow_case_states_its_flows_not_the_bound_of_its_runs() {
        let layout = Layout::new(1000).unwrap();
        let json = |case: &Case| serde_json::to_value(case.flows()).unwrap();
        let new = new_flow_case(&layout, Kind::NewTcpFlow, Frontends::Nat, Expect::Dnat);
        assert_eq!(new.cycle, NEW_FLOW_RUNS);
        assert_eq!(json(&new), "new_each_packet");
        let dsr = Expect::Encapsulated { source: DOWN_ADDR };
        let dsr = new_flow_case(&layout, Kind::DsrNewTcpFlow, Frontends::Dsr, dsr);
        assert_eq!(json(&dsr), "new_each_packet");
        let warm = warm_new_flow_case(&layout);
        assert_eq!(warm.cycle, u32::MAX);
        assert_eq!(json(&warm), "one_forgotten_before_each_packet");
        // A case that walks over tracked flows gives their number.
        let hit = Case {
            kind: Kind::ConntrackHit,
            cycle: 100_000,
            ..new
        };
        assert_eq!(json(&hit), 100_000);
    }

    #[test]
    fn tracked_flows_are_distinct_and_at_least_asked_for() {
        for (services, min_flows) in [(1, 1), (1, 100_000), (1000, 100_000), (100_000, 1)] {
            let layout = Layout::new(services).unwrap();
            let (flows, distinct) = walk(&layout, min_flows);
            assert!(flows >= min_flows.max(services), "{services}: {flows}");
            assert!(flows <= min_flows.max(services) + 2, "{services}: {flows}");
            assert_eq!(distinct as u32, flows);
        }
    }

    #[test]
    fn dsr_tracked_flows_are_distinct_and_go_to_the_dsr_frontends() {
        for (services, min_flows) in [(1, 1), (1, 100_000), (1000, 100_000)] {
            let layout = Layout::new(services).unwrap();
            let (rotations, flows) =
                tracked_flows_to(&layout, Frontends::Dsr, DSR_CLIENT, min_flows);
            assert!(flows >= min_flows.max(services), "{services}: {flows}");
            let frame = to_frontend(
                &layout,
                Frontends::Dsr,
                DSR_CLIENT,
                FIRST_TRACKED_PORT,
                L4::Ack,
            )
            .build();
            let dsr: HashSet<_> = (0..services).map(|i| layout.dsr_frontend(i)).collect();
            let distinct: HashSet<_> = (0..flows)
                .map(|n| {
                    let mut f = frame.clone();
                    rotate(&mut f, &rotations, n);
                    let flow = flow_of(&f).unwrap();
                    let std::net::SocketAddr::V4(dst) = flow.dst else {
                        panic!("an IPv4 frame");
                    };
                    assert!(dsr.contains(&dst), "{dst} is no DSR frontend");
                    flow
                })
                .collect();
            assert_eq!(distinct.len() as u32, flows);
        }
    }

    #[test]
    fn fresh_clients_never_repeat() {
        let mut clients = Clients::default();
        let a = clients.fresh().unwrap();
        let b = clients.fresh().unwrap();
        assert_ne!(a, b);
        assert!(a.octets()[0] == 10 && a.octets()[1] >= 64);
    }
}
