//! Golden packets, refusal: a packet for a service with no live backend is
//! answered, never silently dropped — a TCP segment with a reset as a host
//! without a listener answers it (RFC 9293, 3.10.7.1), a UDP datagram with
//! ICMP / ICMPv6 port unreachable. The answer goes back out of the interface
//! the packet came in on (XDP_TX), from the VIP. Every expected frame is built
//! by etherparse with its checksums computed from scratch.
mod support;

use std::net::SocketAddr;

use etherparse::{
    Icmpv4Type, Icmpv6Type, PacketBuilder, TcpHeader, VlanId, icmpv4::DestUnreachableHeader,
    icmpv6::DestUnreachableCode,
};
use support::{
    frame::{Packet, TcpFlags, answer_ip},
    in_private_netns,
    lb::{CLIENT_MAC, CLIENT4, CLIENT6, FROM_CLIENT, Lb, UP_MAC, VIP4, VIP6, XDP_DROP, XDP_TX},
};
use xdp_lb::{Frontend, Protocol, ServiceOptions, Verdict};

const SERVICE: u32 = 9;
const CLIENT_PORT: u16 = 40_000;
/// The sequence and acknowledgment numbers `support::frame` writes.
const CLIENT_SEQ: u32 = 1_000_000;
const CLIENT_ACK: u32 = 7_000_000;

fn ends(v6: bool, port: u16) -> (SocketAddr, SocketAddr) {
    if v6 {
        (
            SocketAddr::from((CLIENT6, CLIENT_PORT)),
            SocketAddr::from((VIP6, port)),
        )
    } else {
        (
            SocketAddr::from((CLIENT4, CLIENT_PORT)),
            SocketAddr::from((VIP4, port)),
        )
    }
}

/// An LB with `frontend` served by a service without a table.
fn lb_without_backends(frontend: SocketAddr, proto: Protocol) -> Lb {
    let mut lb = Lb::new();
    lb.dp
        .upsert_service(
            &Frontend::new(frontend, proto),
            SERVICE,
            &ServiceOptions::default(),
        )
        .expect("service");
    lb
}

/// The reset the LB answers `client → vip` with (untagged).
fn reset(client: SocketAddr, vip: SocketAddr, seq: u32, ack: Option<u32>) -> Vec<u8> {
    tagged_reset(None, client, vip, seq, ack)
}

/// The reset the LB answers `client → vip` with, in VLAN `vlan` if given.
fn tagged_reset(
    vlan: Option<u16>,
    client: SocketAddr,
    vip: SocketAddr,
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    let mut tcp = TcpHeader::new(vip.port(), client.port(), seq, 0);
    tcp.rst = true;
    if let Some(ack) = ack {
        tcp.ack = true;
        tcp.acknowledgment_number = ack;
    }
    let mut out = Vec::new();
    let eth = PacketBuilder::ethernet2(UP_MAC, CLIENT_MAC);
    let ip = answer_ip(vip.ip(), client.ip());
    match vlan {
        Some(id) => eth
            .single_vlan(VlanId::try_new(id).expect("a VLAN ID"))
            .ip(ip)
            .tcp_header(tcp)
            .write(&mut out, &[]),
        None => eth.ip(ip).tcp_header(tcp).write(&mut out, &[]),
    }
    .expect("a reset");
    out
}

fn refuses_tcp(v6: bool, flags: TcpFlags, payload: usize, seq: u32, ack: Option<u32>) {
    in_private_netns(|| {
        let (client, vip) = ends(v6, 80);
        let lb = lb_without_backends(vip, Protocol::Tcp);
        let segment = Packet {
            payload: vec![7; payload],
            ..Packet::tcp(FROM_CLIENT, client, vip, flags)
        };
        let out = lb.send(&segment.bytes(), lb.up0);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.packet, reset(client, vip, seq, ack));
        lb.assert_verdicts(&[(Verdict::RefuseReset, 1)]);
        lb.assert_ct(&[]);
    });
}

#[test]
fn a_syn_is_refused_with_a_reset_acknowledging_it() {
    refuses_tcp(false, TcpFlags::SYN, 0, 0, Some(CLIENT_SEQ + 1));
    refuses_tcp(true, TcpFlags::SYN, 0, 0, Some(CLIENT_SEQ + 1));
}

#[test]
fn a_segment_with_ack_is_refused_with_a_reset_at_its_ack_number() {
    refuses_tcp(false, TcpFlags::PSH_ACK, 100, CLIENT_ACK, None);
    refuses_tcp(true, TcpFlags::PSH_ACK, 100, CLIENT_ACK, None);
}

#[test]
fn a_fin_with_data_and_no_ack_is_acknowledged_whole() {
    let fin = TcpFlags {
        fin: true,
        ..TcpFlags::default()
    };
    refuses_tcp(false, fin, 10, 0, Some(CLIENT_SEQ + 10 + 1));
}

#[test]
fn a_tagged_syn_is_refused_in_its_vlan() {
    in_private_netns(|| {
        let (client, vip) = ends(false, 80);
        let lb = lb_without_backends(vip, Protocol::Tcp);
        let syn = Packet {
            vlan: Some(100),
            ..Packet::tcp(FROM_CLIENT, client, vip, TcpFlags::SYN)
        };
        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!(out.action, XDP_TX);
        let expected = tagged_reset(Some(100), client, vip, 0, Some(CLIENT_SEQ + 1));
        assert_eq!(out.packet, expected);
    });
}

#[test]
fn a_reset_is_never_answered() {
    in_private_netns(|| {
        let (client, vip) = ends(false, 80);
        let lb = lb_without_backends(vip, Protocol::Tcp);
        let rst = Packet::tcp(FROM_CLIENT, client, vip, TcpFlags::RST);
        assert_eq!(lb.send(&rst.bytes(), lb.up0).action, XDP_DROP);
        lb.assert_verdicts(&[(Verdict::DropNoBackend, 1)]);
    });
}

/// UDP is refused with port unreachable, quoting the datagram's network
/// header and its 8-byte UDP header.
fn refuses_udp(v6: bool) {
    in_private_netns(|| {
        let (client, vip) = ends(v6, 53);
        let lb = lb_without_backends(vip, Protocol::Udp);
        let datagram = Packet::udp(FROM_CLIENT, client, vip, b"a query of some length");
        let input = datagram.bytes();
        let out = lb.send(&input, lb.up0);
        assert_eq!(out.action, XDP_TX);
        let quote = &input[14..14 + if v6 { 40 } else { 20 } + 8];
        let mut expected = Vec::new();
        let step =
            PacketBuilder::ethernet2(UP_MAC, CLIENT_MAC).ip(answer_ip(vip.ip(), client.ip()));
        if v6 {
            step.icmpv6(Icmpv6Type::DestinationUnreachable(
                DestUnreachableCode::Port,
            ))
            .write(&mut expected, quote)
        } else {
            step.icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ))
            .write(&mut expected, quote)
        }
        .expect("port unreachable");
        assert_eq!(out.packet, expected);
        lb.assert_verdicts(&[(Verdict::RefuseUnreachable, 1)]);
    });
}

#[test]
fn udp_is_refused_with_port_unreachable_v4() {
    refuses_udp(false);
}

#[test]
fn udp_is_refused_with_port_unreachable_v6() {
    refuses_udp(true);
}

#[test]
fn a_local_policy_without_local_backends_drops_instead_of_refusing() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let vip = SocketAddr::from((VIP4, 80));
        lb.dp
            .upsert_service(
                &Frontend::new(vip, Protocol::Tcp),
                SERVICE,
                &ServiceOptions {
                    drop_without_backends: true,
                    ..ServiceOptions::default()
                },
            )
            .expect("service");
        let syn = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, CLIENT_PORT)),
            vip,
            TcpFlags::SYN,
        );
        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!((out.action, out.packet), (XDP_DROP, syn.bytes()));
        lb.assert_verdicts(&[(Verdict::DropNoLocalBackend, 1)]);
    });
}

#[test]
fn source_ranges_let_only_their_networks_reach_a_frontend() {
    use support::lb::{BACKEND4_IDS, BACKEND6_IDS, CLIENT4_2, XDP_REDIRECT, cycling};
    in_private_netns(|| {
        let mut lb = Lb::new();
        let ranged = ServiceOptions {
            source_ranges_only: true,
            ..ServiceOptions::default()
        };
        for (id, vip, backends) in [
            (SERVICE, SocketAddr::from((VIP4, 80)), &BACKEND4_IDS),
            (SERVICE + 1, SocketAddr::from((VIP6, 80)), &BACKEND6_IDS),
        ] {
            lb.dp
                .swap_table(id, &cycling(backends, 251))
                .expect("table");
            lb.dp
                .upsert_service(&Frontend::new(vip, Protocol::Tcp), id, &ranged)
                .expect("service");
        }
        lb.dp
            .set_source_ranges(SERVICE, &[(CLIENT4.into(), 32)])
            .expect("ranges");
        lb.dp
            .set_source_ranges(SERVICE + 1, &[("2001:2::".parse().unwrap(), 64)])
            .expect("ranges");
        let syn = |client: SocketAddr, vip: SocketAddr| {
            Packet::tcp(FROM_CLIENT, client, vip, TcpFlags::SYN).bytes()
        };
        let vip4 = SocketAddr::from((VIP4, 80));
        let action = |lb: &Lb, frame: Vec<u8>| lb.send(&frame, lb.up0).action;
        let allowed = SocketAddr::from((CLIENT4, CLIENT_PORT));
        let other = SocketAddr::from((CLIENT4_2, CLIENT_PORT));
        assert_eq!(action(&lb, syn(allowed, vip4)), XDP_REDIRECT);
        assert_eq!(
            action(&lb, syn(other, vip4)),
            XDP_DROP,
            "outside 198.18.0.1/32"
        );
        let v6 = SocketAddr::from((CLIENT6, CLIENT_PORT));
        assert_eq!(
            action(&lb, syn(v6, SocketAddr::from((VIP6, 80)))),
            XDP_REDIRECT
        );
        // Replaced by a wider network: both clients reach it.
        lb.dp
            .set_source_ranges(SERVICE, &[("198.18.0.0".parse().unwrap(), 24)])
            .expect("ranges");
        assert_eq!(action(&lb, syn(other, vip4)), XDP_REDIRECT);
        // None: nobody.
        lb.dp.set_source_ranges(SERVICE, &[]).expect("ranges");
        let third = SocketAddr::from((CLIENT4, CLIENT_PORT + 1));
        assert_eq!(action(&lb, syn(third, vip4)), XDP_DROP);
        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 3),
            (Verdict::DropSourceRange, 2),
        ]);
        assert!(matches!(
            lb.dp.set_source_ranges(SERVICE, &[(CLIENT4.into(), 33)]),
            Err(xdp_lb::Error::InvalidOption { .. })
        ));
    });
}
