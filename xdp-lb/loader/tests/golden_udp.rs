//! Golden packets, UDP: DNAT with and without an IPv4 checksum, IPv6, and
//! flows whose backend was retired or whose backend ID was reused.
mod support;

use std::net::SocketAddr;

use support::{
    frame::{L4, Packet, l4_checksum, with_zero_sum_after},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb, VIP4, VIP6,
        XDP_REDIRECT, backend4, cycling, mac_of,
    },
};
use xdp_lb::{CtEvent, FlowState, Protocol, Verdict};

const SERVICE: u32 = 5;

fn vip4() -> SocketAddr {
    SocketAddr::from((VIP4, 53))
}

fn to_backend(packet: &Packet, backend: SocketAddr) -> Vec<u8> {
    packet
        .with_dst(backend)
        .routed(DOWN_MAC, mac_of(backend.ip()))
        .bytes()
}

fn lb_with_udp4(table: &[u32]) -> Lb {
    let mut lb = Lb::new();
    lb.service(SERVICE, vip4(), Protocol::Udp, table);
    lb
}

#[test]
fn udp4_with_a_checksum_is_translated_with_the_checksum_updated() {
    in_private_netns(|| {
        let lb = lb_with_udp4(&cycling(&BACKEND4_IDS, 251));
        for (port, payload) in [
            (5000, &b"query"[..]),
            (5001, &[0u8; 0][..]),
            (5002, &[0xff; 301][..]),
        ] {
            let dgram = Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, port)),
                vip4(),
                payload,
            );
            let (_, backend, false) = lb.simulated(&dgram.flow()) else {
                panic!("untracked");
            };
            let input = dgram.bytes();
            assert_ne!(l4_checksum(&dgram, &input), 0);
            let out = lb.send(&input, lb.up0);
            assert_eq!(out.action, XDP_REDIRECT);
            let expected = to_backend(&dgram, backend);
            assert_ne!(l4_checksum(&dgram, &expected), 0);
            assert_eq!(out.packet, expected, "port {port}");
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 3)]);
        lb.assert_ct(&[(CtEvent::Created, 3)]);
        for flow in lb.dp.conntrack().unwrap() {
            assert_eq!(flow.state, FlowState::Datagram);
        }
    });
}

#[test]
fn udp4_without_a_checksum_keeps_it_zero() {
    in_private_netns(|| {
        let lb = lb_with_udp4(&cycling(&BACKEND4_IDS, 251));
        let mut dgram = Packet::udp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 5000)),
            vip4(),
            b"no checksum",
        );
        dgram.l4 = L4::Udp {
            zero_checksum: true,
        };
        let (_, backend, _) = lb.simulated(&dgram.flow());
        let input = dgram.bytes();
        assert_eq!(l4_checksum(&dgram, &input), 0);
        let out = lb.send(&input, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(l4_checksum(&dgram, &out.packet), 0, "stays zero");
        assert_eq!(out.packet, to_backend(&dgram, backend));
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1)]);
    });
}

#[test]
fn a_udp_checksum_that_becomes_zero_is_sent_as_all_ones() {
    in_private_netns(|| {
        let mut lb = lb_with_udp4(&cycling(&BACKEND4_IDS, 251));
        let vip6 = SocketAddr::from((VIP6, 53));
        lb.service(6, vip6, Protocol::Udp, &cycling(&BACKEND6_IDS, 251));
        let cases = [
            Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, 5000)),
                vip4(),
                b"corner",
            ),
            Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, 5000)),
                vip6,
                b"corner",
            ),
        ];
        for dgram in cases {
            let (_, backend, _) = lb.simulated(&dgram.flow());
            let dgram = with_zero_sum_after(&dgram, backend);
            let expected = to_backend(&dgram, backend);
            assert_eq!(l4_checksum(&dgram, &expected), 0xffff, "the corner case");
            let out = lb.send(&dgram.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, expected),
                "{dgram:?}"
            );
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 2)]);
    });
}

#[test]
fn udp6_is_translated_with_the_checksum_updated() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let vip = SocketAddr::from((VIP6, 53));
        lb.service(6, vip, Protocol::Udp, &cycling(&BACKEND6_IDS, 1021));
        for port in 5000..5006 {
            let dgram = Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, port)),
                vip,
                &[port as u8; 48],
            );
            let (id, backend, _) = lb.simulated(&dgram.flow());
            assert!(BACKEND6_IDS.contains(&id));
            let out = lb.send(&dgram.bytes(), lb.up0);
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.packet, to_backend(&dgram, backend), "port {port}");
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 6)]);
        lb.assert_ct(&[(CtEvent::Created, 6)]);
    });
}

#[test]
fn a_udp_flow_keeps_its_backend_while_it_lives() {
    in_private_netns(|| {
        let mut lb = lb_with_udp4(&cycling(&BACKEND4_IDS[..1], 251));
        let dgram = Packet::udp(FROM_CLIENT, SocketAddr::from((CLIENT4, 5000)), vip4(), b"1");
        lb.send(&dgram.bytes(), lb.up0);
        // The table moves everything; the flow's backend is still live.
        lb.dp
            .swap_table(SERVICE, &cycling(&BACKEND4_IDS[1..2], 251))
            .unwrap();
        for _ in 0..3 {
            let out = lb.send(&dgram.bytes(), lb.up0);
            assert_eq!(out.packet, to_backend(&dgram, backend4(0)));
        }
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::Hit, 3)]);
    });
}

#[test]
fn a_udp_flow_whose_backend_is_retired_moves_at_once() {
    in_private_netns(|| {
        let mut lb = lb_with_udp4(&cycling(&BACKEND4_IDS[..2], 251));
        let dgram = Packet::udp(FROM_CLIENT, SocketAddr::from((CLIENT4, 5000)), vip4(), b"1");
        let (old_id, old, _) = lb.simulated(&dgram.flow());
        assert_eq!(
            lb.send(&dgram.bytes(), lb.up0).packet,
            to_backend(&dgram, old)
        );

        // The control plane retires the backend and takes it out of the table.
        let survivor = if old_id == 1 { 2 } else { 1 };
        lb.dp
            .swap_table(SERVICE, &cycling(&[survivor], 251))
            .unwrap();
        lb.dp.retire_backend(old_id).unwrap();
        assert!(!lb.dp.backend(old_id).unwrap().expect("record").active);
        let (id, new, tracked) = lb.simulated(&dgram.flow());
        assert_eq!((id, tracked), (survivor, false));
        let out = lb.send(&dgram.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&dgram, new))
        );
        lb.assert_ct(&[(CtEvent::Created, 2), (CtEvent::ReselectedBackendGone, 1)]);
        let entry = lb.dp.tracked_flow(&dgram.flow()).unwrap().expect("tracked");
        assert_eq!((entry.backend_id, entry.backend), (survivor, new));
        // And it stays there.
        assert_eq!(
            lb.send(&dgram.bytes(), lb.up0).packet,
            to_backend(&dgram, new)
        );
        lb.assert_ct(&[
            (CtEvent::Created, 2),
            (CtEvent::ReselectedBackendGone, 1),
            (CtEvent::Hit, 1),
        ]);
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 3)]);
    });
}

#[test]
fn a_udp_flow_whose_backend_id_is_reused_moves_to_the_new_backend() {
    in_private_netns(|| {
        let mut lb = lb_with_udp4(&[1]);
        let dgram = Packet::udp(FROM_CLIENT, SocketAddr::from((CLIENT4, 5000)), vip4(), b"1");
        assert_eq!(
            lb.send(&dgram.bytes(), lb.up0).packet,
            to_backend(&dgram, backend4(0))
        );
        // ID 1 is given to another backend with a higher generation; the table
        // (which names ID 1) is unchanged.
        lb.dp.put_backend(1, backend4(3), 2).unwrap();
        assert_eq!(lb.simulated(&dgram.flow()), (1, backend4(3), false));
        let out = lb.send(&dgram.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&dgram, backend4(3)))
        );
        let entry = lb.dp.tracked_flow(&dgram.flow()).unwrap().expect("tracked");
        assert_eq!(
            (entry.backend_id, entry.generation, entry.backend),
            (1, 2, backend4(3))
        );
        lb.assert_ct(&[(CtEvent::Created, 2), (CtEvent::ReselectedBackendGone, 1)]);
    });
}

#[test]
fn udp_and_tcp_on_one_port_are_different_services() {
    in_private_netns(|| {
        let mut lb = lb_with_udp4(&[1]);
        lb.service(6, vip4(), Protocol::Tcp, &[2]);
        let dgram = Packet::udp(FROM_CLIENT, SocketAddr::from((CLIENT4, 5000)), vip4(), b"1");
        let seg = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 5000)),
            vip4(),
            support::frame::TcpFlags::SYN,
        );
        assert_eq!(
            lb.send(&dgram.bytes(), lb.up0).packet,
            to_backend(&dgram, backend4(0))
        );
        assert_eq!(
            lb.send(&seg.bytes(), lb.up0).packet,
            to_backend(&seg, backend4(1))
        );
        assert_eq!(lb.dp.service_stats(SERVICE).unwrap().packets, 1);
        assert_eq!(lb.dp.service_stats(6).unwrap().packets, 1);
        lb.assert_ct(&[(CtEvent::Created, 2)]);
    });
}
