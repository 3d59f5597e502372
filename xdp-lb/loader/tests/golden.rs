//! Golden packets through `BPF_PROG_TEST_RUN`: whole output frames compared with
//! frames built independently by etherparse (which computes every checksum
//! from scratch).
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use etherparse::PacketBuilder;
use support::{ifindex, in_private_netns, run};
use xdp_lb::{AddressKind, Config, Datapath, Flow, Frontend, ProgramName, Protocol, Simulation};

const XDP_REDIRECT: u32 = 4;
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const UP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x01];
const DOWN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x02];
const BACKEND_MACS: [[u8; 6]; 2] = [[0x02, 0, 0, 0, 0x02, 0x05], [0x02, 0, 0, 0, 0x02, 0x06]];
const CLIENT: [u8; 4] = [198, 18, 0, 1];
const VIP: [u8; 4] = [198, 18, 100, 1];
const BACKENDS: [[u8; 4]; 2] = [[198, 18, 2, 5], [198, 18, 2, 6]];

/// An LB in the private namespace: `up0` faces clients, `dn0` faces backends,
/// with permanent neighbours so the FIB lookup resolves every next hop.
fn lb_interfaces() -> u32 {
    run(&["ip", "link", "set", "lo", "up"]);
    for (a, b, mac) in [("up0", "up1", UP_MAC), ("dn0", "dn1", DOWN_MAC)] {
        run(&["ip", "link", "add", a, "type", "veth", "peer", "name", b]);
        let mac = mac.map(|m| format!("{m:02x}")).join(":");
        run(&["ip", "link", "set", a, "address", &mac]);
        run(&["ip", "link", "set", a, "up"]);
        run(&["ip", "link", "set", b, "up"]);
    }
    run(&["ip", "addr", "add", "198.18.0.254/24", "dev", "up0"]);
    run(&["ip", "addr", "add", "198.18.2.254/24", "dev", "dn0"]);
    run(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
    let client_mac = CLIENT_MAC.map(|m| format!("{m:02x}")).join(":");
    run(&[
        "ip",
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        &client_mac,
        "dev",
        "up0",
        "nud",
        "permanent",
    ]);
    for (ip, mac) in BACKENDS.iter().zip(BACKEND_MACS) {
        let ip = Ipv4Addr::from(*ip).to_string();
        let mac = mac.map(|m| format!("{m:02x}")).join(":");
        run(&[
            "ip",
            "neigh",
            "add",
            &ip,
            "lladdr",
            &mac,
            "dev",
            "dn0",
            "nud",
            "permanent",
        ]);
    }
    ifindex("up0")
}

fn tcp4(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: ([u8; 4], u16),
    dst: ([u8; 4], u16),
    ttl: u8,
) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.0, dst.0, ttl)
        .tcp(src.1, dst.1, 1000, 64240)
        .syn()
        .write(&mut out, b"")
        .expect("builds");
    out
}

#[test]
fn tcp4_syn_to_a_vip_is_translated_to_the_simulated_backend() {
    in_private_netns(|| {
        let up0 = lb_interfaces();
        let mut dp = Datapath::load().expect("load");
        dp.set_config(&Config {
            hash_seed: 42,
            ..Config::default()
        })
        .expect("config");
        dp.set_address(IpAddr::from(VIP), AddressKind::Vip)
            .expect("address");
        for (id, ip) in (1..).zip(BACKENDS) {
            dp.put_backend(id, SocketAddr::from((ip, 8080)), 1)
                .expect("backend");
        }
        let table: Vec<u32> = (0..251).map(|i| 1 + i % 2).collect();
        dp.swap_table(7, &table).expect("table");
        let frontend = Frontend::new(SocketAddr::from((VIP, 80)), Protocol::Tcp);
        dp.upsert_service(&frontend, 7, false).expect("service");

        let flow = Flow::new(
            SocketAddr::from((CLIENT, 40000)),
            frontend.addr,
            Protocol::Tcp,
        );
        let Simulation::Backend {
            backend_id,
            addr,
            tracked: false,
            ..
        } = dp.simulate(&flow).expect("simulate")
        else {
            panic!("no backend simulated");
        };
        let index = usize::try_from(backend_id - 1).unwrap();

        let input = tcp4(CLIENT_MAC, UP_MAC, (CLIENT, 40000), (VIP, 80), 64);
        let out = dp
            .test_run_on(ProgramName::XdpLb, &input, up0)
            .expect("test run");
        let expected = tcp4(
            DOWN_MAC,
            BACKEND_MACS[index],
            (CLIENT, 40000),
            (BACKENDS[index], 8080),
            63,
        );
        assert_eq!(addr, SocketAddr::from((BACKENDS[index], 8080)));
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, expected);
        let tracked = dp
            .tracked_flow(&flow)
            .expect("conntrack")
            .expect("a tracked flow");
        assert_eq!(tracked.backend, addr);
    });
}

#[test]
fn bench_wrapper_restores_the_packet_before_every_run() {
    in_private_netns(|| {
        let up0 = lb_interfaces();
        let _ = up0;
        let mut dp = Datapath::load().expect("load");
        let input = tcp4(CLIENT_MAC, UP_MAC, (CLIENT, 40000), (VIP, 80), 64);
        dp.bench_target(ProgramName::XdpFloor, &input)
            .expect("bench setup");
        let out = dp
            .test_run_repeat(ProgramName::XdpBench, &input, 1000)
            .expect("run");
        assert_eq!(out.action, 2, "XDP_PASS from the floor through the wrapper");
        assert_eq!(dp.floor_stats().expect("floor").packets, 1000);
    });
}

#[test]
fn bench_wrapper_rotation_makes_every_run_a_new_flow() {
    in_private_netns(|| {
        let up0 = lb_interfaces();
        let mut dp = Datapath::load().expect("load");
        dp.set_address(IpAddr::from(VIP), AddressKind::Vip)
            .expect("address");
        for (id, ip) in (1..).zip(BACKENDS) {
            dp.put_backend(id, SocketAddr::from((ip, 8080)), 1)
                .expect("backend");
        }
        let table: Vec<u32> = (0..251).map(|i| 1 + i % 2).collect();
        dp.swap_table(7, &table).expect("table");
        let frontend = Frontend::new(SocketAddr::from((VIP, 80)), Protocol::Tcp);
        dp.upsert_service(&frontend, 7, false).expect("service");
        let _ = up0;
        let input = tcp4(CLIENT_MAC, UP_MAC, (CLIENT, 10000), (VIP, 80), 64);
        // The TCP source port: Ethernet 14 + IPv4 20.
        let rotation = xdp_lb::Rotation {
            offset: 34,
            base: 10000,
            modulus: 0,
            divisor: 1,
        };
        dp.bench_target_rotating(ProgramName::XdpLb, &input, &[rotation])
            .expect("setup");
        dp.test_run_repeat(ProgramName::XdpBench, &input, 500)
            .expect("run");
        let ct = dp.ct_stats().expect("ct stats");
        assert_eq!(ct.get(xdp_lb::CtEvent::Created).packets, 500);
        assert_eq!(dp.conntrack().expect("conntrack").len(), 500);
    });
}
