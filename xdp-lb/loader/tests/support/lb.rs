//! The golden tests' load balancer: a topology in the test's private network
//! namespace, the datapath loaded there, and helpers that check counters
//! exactly.
//!
//! ```text
//!  clients 198.18.0.1-2, 2001:2::1-2          backends 198.18.2.5-8, 2001:2:2::5-8
//!        │ (permanent neighbours)                    │ (permanent neighbours)
//!   up0 198.18.0.254/24, 2001:2::fe/64    dn0 198.18.2.254/24, 2001:2:2::fe/64
//! ```
//! VIPs 198.18.100.1 and 2001:2:100::1 are not configured on any interface
//! (they are the LB's). 203.0.113.0/24 has no route; 198.18.2.77 is on-link
//! but has no neighbour entry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use xdp_lb::{
    AddressKind, Config, CtEvent, Datapath, Flow, Frontend, LoadOptions, MapSizes, ProgramName,
    Protocol, ServiceOptions, Simulation, TestRunOutput, Verdict,
};

use super::{
    frame::{Packet, TcpFlags},
    ifindex, ip_batch, run,
};

pub(crate) const XDP_ABORTED: u32 = 0;
pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;
pub(crate) const XDP_REDIRECT: u32 = 4;

pub(crate) const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub(crate) const CLIENT2_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub(crate) const UP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x01];
pub(crate) const DOWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x02];
/// The MAC of the backend (v4 and v6 alike) with index `i` in `BACKENDS4`.
pub(crate) const BACKEND_MACS: [[u8; 6]; 4] = [
    [0x02, 0, 0, 0, 0x02, 0x05],
    [0x02, 0, 0, 0, 0x02, 0x06],
    [0x02, 0, 0, 0, 0x02, 0x07],
    [0x02, 0, 0, 0, 0x02, 0x08],
];

pub(crate) const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub(crate) const CLIENT4_2: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub(crate) const NODE4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 254);
pub(crate) const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
pub(crate) const BACKENDS4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(198, 18, 2, 5),
    Ipv4Addr::new(198, 18, 2, 6),
    Ipv4Addr::new(198, 18, 2, 7),
    Ipv4Addr::new(198, 18, 2, 8),
];
/// No route leads there.
pub(crate) const UNROUTED4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
/// On-link behind `dn0`, without a neighbour entry.
pub(crate) const NO_NEIGHBOUR4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 77);
/// A router between the LB and the backends (on the backends' link): the
/// sender of the path's ICMP errors in the golden tests.
pub(crate) const ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
pub(crate) const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 9);
pub(crate) const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x02, 0x09];

pub(crate) const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1);
pub(crate) const CLIENT6_2: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);
pub(crate) const NODE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0xfe);
pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0x100, 0, 0, 0, 0, 1);
pub(crate) const BACKENDS6: [Ipv6Addr; 4] = [
    Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 5),
    Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 6),
    Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 7),
    Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 8),
];

/// The port every fixture backend listens on.
pub(crate) const BACKEND_PORT: u16 = 8080;
/// Backend IDs of `BACKENDS4` (ID `1 + i`) and `BACKENDS6` (ID `11 + i`).
pub(crate) const BACKEND4_IDS: [u32; 4] = [1, 2, 3, 4];
pub(crate) const BACKEND6_IDS: [u32; 4] = [11, 12, 13, 14];
/// Map sizes of the fixture: small maps load faster (hash and LRU maps are
/// preallocated), and every test's IDs and flows fit.
pub(crate) const FIXTURE_SIZES: MapSizes = MapSizes {
    services: 64,
    backends: 64,
    conntrack: 4096,
    addresses: 16,
    fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
};
/// The hash seed the fixture configures.
pub(crate) const SEED: u64 = 42;

/// The client's MAC pair on `up0`: client → LB.
pub(crate) const FROM_CLIENT: ([u8; 6], [u8; 6]) = (CLIENT_MAC, UP_MAC);

/// A TCP SYN from `CLIENT4:client_port` to `VIP4:vip_port`, as `up0`
/// receives it.
pub(crate) fn syn_to_vip4(client_port: u16, vip_port: u16) -> Packet {
    Packet::tcp(
        FROM_CLIENT,
        SocketAddr::from((CLIENT4, client_port)),
        SocketAddr::from((VIP4, vip_port)),
        TcpFlags::SYN,
    )
}

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Builds the topology in the calling thread's network namespace. Returns the
/// interface indexes of `up0` and `dn0`.
pub(crate) fn lb_interfaces() -> (u32, u32) {
    let mut script = String::from("link set lo up\n");
    for (a, b, m) in [("up0", "up1", UP_MAC), ("dn0", "dn1", DOWN_MAC)] {
        script += &format!("link add {a} address {} type veth peer name {b}\n", mac(m));
        script += &format!("link set {a} up\nlink set {b} up\n");
    }
    script += "addr add 198.18.0.254/24 dev up0\n";
    script += "addr add 198.18.2.254/24 dev dn0\n";
    script += "addr add 2001:2::fe/64 dev up0 nodad\n";
    script += "addr add 2001:2:2::fe/64 dev dn0 nodad\n";
    let clients: [(IpAddr, [u8; 6]); 4] = [
        (CLIENT4.into(), CLIENT_MAC),
        (CLIENT4_2.into(), CLIENT2_MAC),
        (CLIENT6.into(), CLIENT_MAC),
        (CLIENT6_2.into(), CLIENT2_MAC),
    ];
    for (ip, m) in clients {
        script += &format!("neigh add {ip} lladdr {} dev up0 nud permanent\n", mac(m));
    }
    for (i, m) in BACKEND_MACS.iter().enumerate() {
        for ip in [IpAddr::from(BACKENDS4[i]), IpAddr::from(BACKENDS6[i])] {
            script += &format!("neigh add {ip} lladdr {} dev dn0 nud permanent\n", mac(*m));
        }
    }
    run(&[
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.forwarding=1",
        "net.ipv6.conf.all.forwarding=1",
    ]);
    ip_batch(&script);
    (ifindex("up0"), ifindex("dn0"))
}

/// The MAC of a fixture host.
pub(crate) fn mac_of(ip: IpAddr) -> [u8; 6] {
    let ip = ip.to_canonical();
    for i in 0..4 {
        if ip == IpAddr::from(BACKENDS4[i]) || ip == IpAddr::from(BACKENDS6[i]) {
            return BACKEND_MACS[i];
        }
    }
    match ip {
        ip if ip == IpAddr::from(CLIENT4) || ip == IpAddr::from(CLIENT6) => CLIENT_MAC,
        ip if ip == IpAddr::from(CLIENT4_2) || ip == IpAddr::from(CLIENT6_2) => CLIENT2_MAC,
        ip => panic!("{ip} is not a fixture host"),
    }
}

/// A fixture backend's socket address.
pub(crate) fn backend4(i: usize) -> SocketAddr {
    SocketAddr::from((BACKENDS4[i], BACKEND_PORT))
}

/// A fixture IPv6 backend's socket address.
pub(crate) fn backend6(i: usize) -> SocketAddr {
    SocketAddr::from((BACKENDS6[i], BACKEND_PORT))
}

/// A table of `size` slots cycling through `ids`.
pub(crate) fn cycling(ids: &[u32], size: usize) -> Vec<u32> {
    (0..size).map(|i| ids[i % ids.len()]).collect()
}

/// The datapath loaded in a private namespace with the fixture topology: seed
/// `SEED`, VIPs declared, every fixture backend written (generation 1).
#[derive(Debug)]
pub(crate) struct Lb {
    pub dp: Datapath,
    pub up0: u32,
    pub dn0: u32,
}

impl Lb {
    pub(crate) fn new() -> Self {
        let (up0, dn0) = lb_interfaces();
        let mut dp = Datapath::load_with(&LoadOptions {
            sizes: FIXTURE_SIZES,
            pin_dir: None,
        })
        .expect("load");
        dp.set_config(&Config {
            hash_seed: SEED,
            ..Config::default()
        })
        .expect("config");
        for vip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
            dp.set_address(vip, AddressKind::Vip).expect("address");
        }
        // One batch, as the agent writes them: every reply test then also
        // checks that the batch marked each backend's address in the filter.
        let backends: Vec<(u32, SocketAddr, u32)> = (0..4)
            .flat_map(|i| {
                [
                    (BACKEND4_IDS[i], backend4(i), 1),
                    (BACKEND6_IDS[i], backend6(i), 1),
                ]
            })
            .collect();
        dp.put_backends(&backends).expect("backends");
        Self { dp, up0, dn0 }
    }

    /// Installs service `id` at `frontend` with `table` (table first).
    pub(crate) fn service(
        &mut self,
        id: u32,
        frontend: SocketAddr,
        proto: Protocol,
        table: &[u32],
    ) {
        self.dp.swap_table(id, table).expect("table");
        self.dp
            .upsert_service(
                &Frontend::new(frontend, proto),
                id,
                &ServiceOptions::default(),
            )
            .expect("service");
    }

    /// Serves `port`/`proto` on VIP4 (service `ids.0`) and VIP6 (`ids.1`),
    /// each with a 251-slot table over its family's backends.
    pub(crate) fn serve_both_vips(&mut self, ids: (u32, u32), port: u16, proto: Protocol) {
        self.service(
            ids.0,
            SocketAddr::from((VIP4, port)),
            proto,
            &cycling(&BACKEND4_IDS, 251),
        );
        self.service(
            ids.1,
            SocketAddr::from((VIP6, port)),
            proto,
            &cycling(&BACKEND6_IDS, 251),
        );
    }

    /// Runs `xdp_lb` on `frame` arriving on `ifindex`.
    pub(crate) fn send(&self, frame: &[u8], ifindex: u32) -> TestRunOutput {
        self.dp
            .test_run_on(ProgramName::XdpLb, frame, ifindex)
            .expect("test run")
    }

    /// The backend `simulate` names for `flow`: `(backend ID, address, tracked)`.
    pub(crate) fn simulated(&self, flow: &Flow) -> (u32, SocketAddr, bool) {
        match self.dp.simulate(flow).expect("simulate") {
            Simulation::Backend {
                backend_id,
                addr,
                tracked,
                ..
            } => (backend_id, addr, tracked),
            other => panic!("{flow:?} simulated as {other:?}, not a backend"),
        }
    }

    /// Checks every verdict counter: the listed ones have exactly these packet
    /// counts, all others are zero.
    pub(crate) fn assert_verdicts(&self, expected: &[(Verdict, u64)]) {
        let stats = self.dp.verdict_stats().expect("verdict stats");
        assert_counters("verdict counters", &stats, Verdict::name, expected);
    }

    /// Checks every conntrack event counter, as `assert_verdicts`.
    pub(crate) fn assert_ct(&self, expected: &[(CtEvent, u64)]) {
        let stats = self.dp.ct_stats().expect("ct stats");
        assert_counters("conntrack event counters", &stats, CtEvent::name, expected);
    }
}

/// The nonzero packet counts of `stats` equal `expected` (summed per counter).
fn assert_counters<C: Copy + PartialEq + Into<u32>>(
    what: &str,
    stats: &xdp_lb::Counters<C>,
    name: fn(C) -> &'static str,
    expected: &[(C, u64)],
) {
    let actual: Vec<(&str, u64)> = stats
        .iter()
        .map(|(c, n)| (name(c), n.packets))
        .filter(|&(_, n)| n != 0)
        .collect();
    let wanted: Vec<(&str, u64)> = stats
        .iter()
        .map(|(c, _)| {
            (
                name(c),
                expected.iter().filter(|e| e.0 == c).map(|e| e.1).sum(),
            )
        })
        .filter(|&(_, n)| n != 0)
        .collect();
    assert_eq!(actual, wanted, "{what}");
}

/// The "fragmentation needed" (IPv4) / "packet too big" (IPv6) error the LB
/// answers a client's packet with, reporting `mtu` and quoting `quote`: from
/// the VIP to the first client, back out of `up0`, TTL 64 and, like Linux's
/// own errors, no DF; built by etherparse.
pub(crate) fn too_big_answer(v6: bool, quote: &[u8], mtu: u16) -> Vec<u8> {
    let (vip, client) = if v6 {
        (IpAddr::from(VIP6), IpAddr::from(CLIENT6))
    } else {
        (IpAddr::from(VIP4), IpAddr::from(CLIENT4))
    };
    too_big_error((UP_MAC, CLIENT_MAC), vip, client, quote, mtu)
}

/// The "fragmentation needed" / "packet too big" error `xdp_lb` writes from
/// `from` to `to` (one family), as `too_big_answer` describes.
pub(crate) fn too_big_error(
    (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    from: IpAddr,
    to: IpAddr,
    quote: &[u8],
    mtu: u16,
) -> Vec<u8> {
    use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, icmpv4::DestUnreachableHeader};
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut out = Vec::new();
    match (from, to) {
        (IpAddr::V6(from), IpAddr::V6(to)) => eth
            .ipv6(from.octets(), to.octets(), 64)
            .icmpv6(Icmpv6Type::PacketTooBig {
                mtu: u32::from(mtu),
            })
            .write(&mut out, quote),
        _ => eth
            .ip(super::frame::answer_ip(from, to))
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
            ))
            .write(&mut out, quote),
    }
    .expect("an ICMP error frame");
    out
}
