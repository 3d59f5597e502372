//! The fuzz's configuration on top of the golden fixture (`support::lb::Lb`):
//! frontends of every kind the datapath tells apart, and what the model needs
//! to know about them and about the fixture's network.

use std::{
    net::{IpAddr, SocketAddr},
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

/// A configured frontend and the backends its table names.
#[derive(Clone, Debug)]
pub(crate) struct Service {
    pub id: u32,
    pub frontend: SocketAddr,
    pub proto: Protocol,
    /// The live backends of its table (empty: every packet is dropped).
    pub backends: Vec<SocketAddr>,
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
            .map(|(id, frontend, table)| install(lb, id, frontend, table))
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
/// refusal (a reset, port unreachable; IPv4, IPv6) is answered.
fn service_plan() -> Vec<(u32, Frontend, Table)> {
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
    vec![
        (1, tcp(vip4, 80), v4(&[0, 1, 2, 3])),
        (2, udp(vip4, 53), v4(&[0, 1])),
        (3, tcp(vip6, 80), v6(&[0, 1, 2, 3])),
        (4, udp(vip6, 53), v6(&[2, 3])),
        (5, tcp(node4, NODEPORT), v4(&[1, 2])),
        (6, udp(node4, NODEPORT), v4(&[3])),
        (7, tcp(node6, NODEPORT), v6(&[0, 3])),
        (8, udp(node6, NODEPORT), v6(&[1])),
        (9, tcp(vip4, 8443), Table::HalfRetired { v6: false }),
        (10, udp(vip6, 8443), Table::Missing),
        (11, tcp(vip6, 8443), Table::HalfRetired { v6: true }),
        (12, udp(vip4, 8443), Table::Missing),
    ]
}

/// Writes one service's table and frontend.
fn install(lb: &mut Lb, id: u32, frontend: Frontend, table: Table) -> Service {
    let backends = match table {
        Table::Live(backends) => {
            let ids: Vec<u32> = backends.iter().map(|&(id, _)| id).collect();
            lb.service(
                id,
                frontend.addr,
                frontend.proto,
                &cycling(&ids, TABLE_SIZE),
            );
            backends.into_iter().map(|(_, addr)| addr).collect()
        }
        Table::HalfRetired { v6 } => {
            let (live, addr) = if v6 {
                (BACKEND6_IDS[0], backend6(0))
            } else {
                (BACKEND4_IDS[0], backend4(0))
            };
            let ids = [live, RETIRED_BACKEND];
            lb.service(
                id,
                frontend.addr,
                frontend.proto,
                &cycling(&ids, TABLE_SIZE),
            );
            vec![addr]
        }
        Table::Missing => {
            lb.dp
                .upsert_service(&frontend, id, &ServiceOptions::default())
                .expect("service");
            Vec::new()
        }
    };
    Service {
        id,
        frontend: frontend.addr,
        proto: frontend.proto,
        backends,
    }
}
