//! The fuzz's configuration on top of the golden fixture (`support::lb::Lb`):
//! frontends of every kind the datapath tells apart, direct server return
//! among them, and what the model needs to know about them and about the
//! fixture's network.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::RangeInclusive,
    process::Command,
};

use xdp_lb::{AddressKind, Config, Frontend, Protocol, ServiceOptions};

use crate::support::lb::{
    BACKEND4_IDS, BACKEND6_IDS, BACKENDS4, BACKENDS6, CLIENT4, CLIENT4_2, CLIENT6, CLIENT6_2,
    DOWN_MAC, Lb, NO_NEIGHBOUR4, NODE4, NODE6, SEED, UP_MAC, VIP4, VIP6, backend4, backend6,
    cycling, mac_of,
};

/// The NodePort every node address serves (TCP and UDP).
pub(crate) const NODEPORT: u16 = 30080;
/// A backend ID written and then retired: a table slot naming it has no backend.
const RETIRED_BACKEND: u32 = 20;
/// Maglev table size of every service with a table.
const TABLE_SIZE: usize = 251;
/// The ports of the direct-server-return frontends on the VIPs.
const DSR_PORT: u16 = 9000;
const DSR_PORT_2: u16 = 9001;
/// The NodePort of a direct-server-return service on the IPv6 node address.
const DSR_NODEPORT: u16 = NODEPORT + 10;
/// The LB's own addresses toward the backends (`dn0`'s): the outer sources
/// of direct server return (`Config::encap_source_v4`, `_v6`).
pub(crate) const ENCAP_SOURCE4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
pub(crate) const ENCAP_SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0xfe);
/// Frames per phase of the encapsulation sources (`EncapSources::at`).
const ENCAP_PHASE: u64 = 2048;

/// A configured frontend and the backends its table names.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub id: u32,
    pub frontend: SocketAddr,
    pub proto: Protocol,
    /// The live backends of its table (empty: every packet is dropped).
    pub backends: Vec<SocketAddr>,
    /// Direct server return: packets reach the backend wrapped, unchanged,
    /// and its replies do not come back through the LB.
    pub dsr: bool,
}

/// Which families have an encapsulation source configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EncapSources {
    pub v4: bool,
    pub v6: bool,
}

impl EncapSources {
    pub(crate) const BOTH: Self = Self { v4: true, v6: true };

    /// The sources configured while frame `index` is sent: both, mostly;
    /// for one phase in eight none of IPv4, and for another none of IPv6,
    /// so that direct server return toward that family is dropped
    /// (`drop_encap_unsupported`) while flows tracked before stay tracked.
    /// A function of the index alone: a replay sees the same phases.
    pub(crate) fn at(index: u64) -> Self {
        match (index / ENCAP_PHASE) % 8 {
            3 => Self {
                v4: false,
                v6: true,
            },
            6 => Self {
                v4: true,
                v6: false,
            },
            _ => Self::BOTH,
        }
    }
}

/// What a service's Maglev table holds.
enum Table {
    /// Cycling through these fixture backends (ID, address).
    Live(Vec<(u32, SocketAddr)>),
    /// Half its slots name a retired backend, the other half the first
    /// fixture backend of this family (IPv6 if `v6`).
    HalfRetired { v6: bool },
    /// No table at all.
    Missing,
}

/// The frontends, and the network facts the model checks forwarding against.
#[derive(Debug)]
pub(crate) struct Fixture {
    pub services: Vec<Service>,
    pub config: Config,
    pub up0: u32,
    pub dn0: u32,
    /// The MTUs of `up0` and `dn0`, as the kernel reports them.
    pub up0_mtu: u32,
    pub dn0_mtu: u32,
}

/// Where the datapath must send a translated frame to reach a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NextHop {
    pub egress: u32,
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    /// The egress device's MTU: a frame whose bytes past its link header
    /// exceed it does not leave that way (`Verdict::AnswerTooBig` and the
    /// other `forward::TOO_BIG` paths).
    pub mtu: u32,
}

impl Fixture {
    /// Configures `lb` and describes what it configured.
    pub(crate) fn configure(lb: &mut Lb) -> Self {
        // Nothing expires while a run lasts (a million frames take minutes):
        // expiry depends on the clock, which the model does not follow. Nor
        // does the model follow the new-flow flood guard's per-CPU rate, so
        // the guard is off: every new flow is tracked. Flow events stay off
        // (`flow_event_sampling` 0, the default).
        let config = Config {
            hash_seed: SEED,
            tcp_syn_timeout_s: 86_400,
            tcp_established_timeout_s: 86_400,
            tcp_closing_timeout_s: 86_400,
            udp_timeout_s: 86_400,
            new_flows_per_cpu_per_sec: 0,
            encap_source_v4: ENCAP_SOURCE4.octets(),
            encap_source_v6: ENCAP_SOURCE6.octets(),
            // The default hairpin sources and source-NAT ports: a client
            // that is the backend it lands on is source-NATed (hairpin), as
            // is a flow whose reply tuple another live flow has (a clash).
            ..Config::default()
        };
        lb.dp.set_config(&config).expect("config");
        for node in [IpAddr::from(NODE4), IpAddr::from(NODE6)] {
            lb.dp
                .set_address(node, AddressKind::Node)
                .expect("node address");
        }
        lb.dp
            .put_backend(RETIRED_BACKEND, SocketAddr::from((NO_NEIGHBOUR4, 8080)), 1)
            .expect("backend");
        lb.dp.retire_backend(RETIRED_BACKEND).expect("retire");
        let services = service_plan()
            .into_iter()
            .map(|(id, frontend, table, dsr)| install(lb, id, frontend, table, dsr))
            .collect();
        Self {
            services,
            config,
            up0: lb.up0,
            dn0: lb.dn0,
            up0_mtu: mtu_of("up0"),
            dn0_mtu: mtu_of("dn0"),
        }
    }

    /// Configures the encapsulation sources `sources` names (the others
    /// all zeros, which the datapath reads as none).
    pub(crate) fn set_encap_sources(&mut self, lb: &mut Lb, sources: EncapSources) {
        self.config.encap_source_v4 = if sources.v4 {
            ENCAP_SOURCE4.octets()
        } else {
            [0; 4]
        };
        self.config.encap_source_v6 = if sources.v6 {
            ENCAP_SOURCE6.octets()
        } else {
            [0; 16]
        };
        lb.dp.set_config(&self.config).expect("config");
    }

    /// The encapsulation sources configured now.
    pub(crate) fn encap_sources(&self) -> EncapSources {
        EncapSources {
            v4: self.config.encap_source_v4 != [0; 4],
            v6: self.config.encap_source_v6 != [0; 16],
        }
    }

    /// The outer source of a packet of `inner_v4` (its family) wrapped for
    /// `backend`: the configured source of the backend's family; `None`
    /// when there is none, or for IPv6 to an IPv4 backend (no 6-in-4).
    pub(crate) fn encap_source(&self, inner_v4: bool, backend: IpAddr) -> Option<IpAddr> {
        let sources = self.encap_sources();
        match backend {
            IpAddr::V4(_) if inner_v4 && sources.v4 => Some(ENCAP_SOURCE4.into()),
            IpAddr::V6(_) if sources.v6 => Some(ENCAP_SOURCE6.into()),
            _ => None,
        }
    }

    /// The kind of a frontend address. Exact: an IPv4-mapped IPv6 address is
    /// not the IPv4 address it maps.
    pub(crate) fn address_kind(&self, ip: IpAddr) -> Option<AddressKind> {
        if ip == IpAddr::from(VIP4) || ip == IpAddr::from(VIP6) {
            Some(AddressKind::Vip)
        } else if ip == IpAddr::from(NODE4) || ip == IpAddr::from(NODE6) {
            Some(AddressKind::Node)
        } else {
            None
        }
    }

    /// The service at `frontend`, if any.
    pub(crate) fn service(&self, frontend: SocketAddr, proto: Protocol) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.frontend == frontend && s.proto == proto)
    }

    /// The source a client reaching itself through a service is given
    /// (`Config::hairpin_source_v4`, `_v6`); `None` when all zeros: the
    /// flow then keeps its own.
    pub(crate) fn hairpin_source(&self, v4: bool) -> Option<IpAddr> {
        let source = if v4 {
            IpAddr::from(self.config.hairpin_source_v4)
        } else {
            IpAddr::from(self.config.hairpin_source_v6)
        };
        (!source.is_unspecified()).then_some(source)
    }

    /// The source-NAT ports (`Config::snat_port_min..=snat_port_max`).
    pub(crate) fn snat_ports(&self) -> RangeInclusive<u16> {
        self.config.snat_port_min..=self.config.snat_port_max
    }

    pub(crate) fn in_nodeport_range(&self, port: u16) -> bool {
        (self.config.nodeport_min..=self.config.nodeport_max).contains(&port)
    }

    /// The next hop toward `ip` when the kernel knows it: the fixture's
    /// permanent neighbours. Any other destination (no route, no neighbour
    /// entry, a local address) is the kernel's to resolve.
    pub(crate) fn next_hop(&self, ip: IpAddr) -> Option<NextHop> {
        let backend = BACKENDS4.iter().any(|b| IpAddr::from(*b) == ip)
            || BACKENDS6.iter().any(|b| IpAddr::from(*b) == ip);
        let client = [CLIENT4, CLIENT4_2].iter().any(|c| IpAddr::from(*c) == ip)
            || [CLIENT6, CLIENT6_2].iter().any(|c| IpAddr::from(*c) == ip);
        let (egress, src_mac, mtu) = match (backend, client) {
            (true, _) => (self.dn0, DOWN_MAC, self.dn0_mtu),
            (_, true) => (self.up0, UP_MAC, self.up0_mtu),
            _ => return None,
        };
        Some(NextHop {
            egress,
            dst_mac: mac_of(ip),
            src_mac,
            mtu,
        })
    }
}

/// The MTU of interface `name` in the calling thread's network namespace
/// (where `ip` runs too): veth's default, 1500, as the fixture leaves it.
fn mtu_of(name: &str) -> u32 {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "dev", name])
        .output()
        .expect("spawn ip");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words
        .find(|&w| w == "mtu")
        .and_then(|_| words.next())
        .and_then(|mtu| mtu.parse().ok())
        .unwrap_or_else(|| panic!("no MTU for {name} in {text:?}"))
}

/// The kernel's FIB refuses to forward (`bpf_fib_lookup` answers "not
/// forwarded") an IPv6 packet from or to a link-local, multicast or loopback
/// address (`rt6_need_strict` in `bpf_ipv6_fib_lookup`).
pub(crate) fn fib_refuses(from: IpAddr, to: IpAddr) -> bool {
    [from, to].into_iter().any(|ip| match ip {
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_multicast() || v6.is_unicast_link_local(),
        IpAddr::V4(_) => false,
    })
}

/// Every frontend kind: VIP services with all or some backends, NodePorts on
/// both node addresses, tables half of retired slots, and services without a
/// table — of both protocols and both families, so that every kind of
/// refusal (a reset, port unreachable; IPv4, IPv6) is answered. Then direct
/// server return (the last element: `dsr`) of every pair of families the
/// datapath tells apart: IPv4 in IPv4, IPv6 in IPv6, IPv4 in IPv6 (TCP and
/// UDP), IPv6 toward IPv4 backends (not done: dropped), on a VIP and on a
/// NodePort, with a half-retired table and without a table (refused like any
/// other service).
fn service_plan() -> Vec<(u32, Frontend, Table, bool)> {
    let tcp = |ip: IpAddr, port| Frontend::new(SocketAddr::new(ip, port), Protocol::Tcp);
    let udp = |ip: IpAddr, port| Frontend::new(SocketAddr::new(ip, port), Protocol::Udp);
    let v4 = |ids: &[usize]| {
        Table::Live(
            ids.iter()
                .map(|&i| (BACKEND4_IDS[i], backend4(i)))
                .collect(),
        )
    };
    let v6 = |ids: &[usize]| {
        Table::Live(
            ids.iter()
                .map(|&i| (BACKEND6_IDS[i], backend6(i)))
                .collect(),
        )
    };
    let (vip4, vip6, node4, node6) = (VIP4.into(), VIP6.into(), NODE4.into(), NODE6.into());
    let (nat, dsr) = (false, true);
    vec![
        (1, tcp(vip4, 80), v4(&[0, 1, 2, 3]), nat),
        (2, udp(vip4, 53), v4(&[0, 1]), nat),
        (3, tcp(vip6, 80), v6(&[0, 1, 2, 3]), nat),
        (4, udp(vip6, 53), v6(&[2, 3]), nat),
        (5, tcp(node4, NODEPORT), v4(&[1, 2]), nat),
        (6, udp(node4, NODEPORT), v4(&[3]), nat),
        (7, tcp(node6, NODEPORT), v6(&[0, 3]), nat),
        (8, udp(node6, NODEPORT), v6(&[1]), nat),
        (9, tcp(vip4, 8443), Table::HalfRetired { v6: false }, nat),
        (10, udp(vip6, 8443), Table::Missing, nat),
        (11, tcp(vip6, 8443), Table::HalfRetired { v6: true }, nat),
        (12, udp(vip4, 8443), Table::Missing, nat),
        (13, tcp(vip4, DSR_PORT), v4(&[0, 1, 2]), dsr),
        (14, udp(vip4, DSR_PORT), v6(&[1, 3]), dsr),
        (15, tcp(vip6, DSR_PORT), v6(&[0, 2]), dsr),
        (16, udp(vip6, DSR_PORT), v4(&[2]), dsr),
        (17, tcp(vip4, DSR_PORT_2), v6(&[3]), dsr),
        (
            18,
            tcp(vip6, DSR_PORT_2),
            Table::HalfRetired { v6: true },
            dsr,
        ),
        (19, tcp(node6, DSR_NODEPORT), v6(&[2]), dsr),
        (20, udp(vip4, DSR_PORT_2), Table::Missing, dsr),
    ]
}

/// Writes one service's table (table first) and frontend.
fn install(lb: &mut Lb, id: u32, frontend: Frontend, table: Table, dsr: bool) -> Service {
    let (ids, backends) = match table {
        Table::Live(backends) => backends.into_iter().unzip(),
        Table::HalfRetired { v6 } => {
            let (live, addr) = if v6 {
                (BACKEND6_IDS[0], backend6(0))
            } else {
                (BACKEND4_IDS[0], backend4(0))
            };
            (vec![live, RETIRED_BACKEND], vec![addr])
        }
        Table::Missing => (Vec::new(), Vec::new()),
    };
    if !ids.is_empty() {
        lb.dp
            .swap_table(id, &cycling(&ids, TABLE_SIZE))
            .expect("table");
    }
    let options = ServiceOptions {
        dsr,
        ..ServiceOptions::default()
    };
    lb.dp
        .upsert_service(&frontend, id, &options)
        .expect("service");
    Service {
        id,
        frontend: frontend.addr,
        proto: frontend.proto,
        backends,
        dsr,
    }
}
