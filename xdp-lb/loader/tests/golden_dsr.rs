//! Golden packets, direct server return: a DSR service's packets reach the
//! backend unchanged inside an outer header from the LB's encapsulation
//! source — IPIP, IPv4-in-IPv6 and IP6IP6 — whose IPv4 header checksum
//! etherparse recomputes; the flow is tracked without a reply entry (replies
//! do not come back through the LB); IPv6 to an IPv4 backend, or a family
//! without an encapsulation source, is dropped with a reason; and a packet
//! that would not fit the egress once wrapped is answered with the MTU left
//! for it. An ICMP error to the VIP about a DSR flow's reply reaches the
//! backend wrapped as it came, as Katran sends it: the backend, which
//! answered from the VIP, holds the connection the error is about.
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use support::{
    frame::{ErrorKind, Packet, TcpFlags, encapsulated, icmp_error},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT_MAC, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb,
        UP_MAC, VIP4, VIP6, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, backend4, backend6, cycling,
        mac_of, too_big_answer,
    },
};
use xdp_lb::{Config, Frontend, Protocol, ServiceOptions, Verdict};

/// The LB's addresses toward the backends: the outer sources.
const SOURCE4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
const SOURCE6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 0xfe);
const PORT: u16 = 80;
/// Services: IPv4 to IPv4 backends, IPv6 to IPv6, IPv4 to IPv6 (4-in-6) on
/// another port, IPv6 to IPv4 (not possible) on another port.
const V4: u32 = 1;
const V6: u32 = 2;
const V4_IN_V6: u32 = 3;
const V6_IN_V4: u32 = 4;
const OTHER_PORT: u16 = 8443;

fn dsr() -> ServiceOptions {
    ServiceOptions {
        dsr: true,
        ..ServiceOptions::default()
    }
}

/// An LB with the four DSR services, every table naming the family's first
/// backend, and encapsulation sources as given.
fn lb(sources: (Option<Ipv4Addr>, Option<Ipv6Addr>)) -> Lb {
    let mut lb = Lb::new();
    let config = lb.dp.config().expect("config");
    lb.dp
        .set_config(&Config {
            encap_source_v4: sources.0.map_or([0; 4], |a| a.octets()),
            encap_source_v6: sources.1.map_or([0; 16], |a| a.octets()),
            ..config
        })
        .expect("config");
    let services = [
        (V4, SocketAddr::from((VIP4, PORT)), BACKEND4_IDS[0]),
        (V6, SocketAddr::from((VIP6, PORT)), BACKEND6_IDS[0]),
        (
            V4_IN_V6,
            SocketAddr::from((VIP4, OTHER_PORT)),
            BACKEND6_IDS[0],
        ),
        (
            V6_IN_V4,
            SocketAddr::from((VIP6, OTHER_PORT)),
            BACKEND4_IDS[0],
        ),
    ];
    for (id, frontend, backend) in services {
        lb.dp
            .swap_table(id, &cycling(&[backend], 251))
            .expect("table");
        lb.dp
            .upsert_service(&Frontend::new(frontend, Protocol::Tcp), id, &dsr())
            .expect("service");
    }
    lb
}

fn both_sources() -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    (Some(SOURCE4), Some(SOURCE6))
}

fn syn(v6: bool, port: u16) -> Packet {
    let (client, vip): (IpAddr, IpAddr) = if v6 {
        (CLIENT6.into(), VIP6.into())
    } else {
        (CLIENT4.into(), VIP4.into())
    };
    Packet::tcp(
        FROM_CLIENT,
        SocketAddr::new(client, 40_000),
        SocketAddr::new(vip, port),
        TcpFlags::SYN,
    )
}

/// `inner` (an IP packet) wrapped for `backend` as the LB sends it: from the
/// family's source, outer TTL 64 less the hop.
fn wrapped(inner: &[u8], backend: IpAddr) -> Vec<u8> {
    let source = match backend {
        IpAddr::V4(_) => IpAddr::V4(SOURCE4),
        IpAddr::V6(_) => IpAddr::V6(SOURCE6),
    };
    encapsulated((DOWN_MAC, mac_of(backend)), source, backend, 63, inner)
}

#[test]
fn each_family_is_wrapped_for_its_backend() {
    in_private_netns(|| {
        let lb = lb(both_sources());
        for (packet, backend) in [
            (syn(false, PORT), backend4(0).ip()),
            (syn(true, PORT), backend6(0).ip()),
            (syn(false, OTHER_PORT), backend6(0).ip()),
        ] {
            let input = packet.bytes();
            let out = lb.send(&input, lb.up0);
            assert_eq!(out.action, XDP_REDIRECT, "{packet:?}");
            assert_eq!(out.packet, wrapped(&input[14..], backend), "{packet:?}");
        }
        lb.assert_verdicts(&[(Verdict::ForwardEncapsulated, 3)]);
        // Tracked, without reply entries: the backends answer the clients
        // directly.
        assert_eq!(lb.dp.conntrack().expect("conntrack").len(), 3);
        let usage = lb.dp.map_usage().expect("usage");
        let replies = usage
            .iter()
            .find(|u| u.name == "CONNTRACK_REPLY")
            .expect("the reply map");
        assert_eq!(replies.entries, 0);
    });
}

#[test]
fn a_tracked_dsr_flow_keeps_its_backend_and_a_stranger_goes_by_maglev() {
    in_private_netns(|| {
        let mut lb = lb(both_sources());
        let first = syn(false, PORT);
        assert_eq!(lb.send(&first.bytes(), lb.up0).action, XDP_REDIRECT);
        // The table moves every slot; the tracked flow stays.
        lb.dp
            .swap_table(V4, &cycling(&[BACKEND4_IDS[1]], 251))
            .expect("table");
        let ack = first.with_flags(TcpFlags::ACK);
        let out = lb.send(&ack.bytes(), lb.up0);
        assert_eq!(out.packet, wrapped(&ack.bytes()[14..], backend4(0).ip()));
        // A segment of a flow this LB never saw (it began on another LB
        // instance) goes to the Maglev backend, not dropped.
        let stranger = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 41_000)),
            SocketAddr::from((VIP4, PORT)),
            TcpFlags::PSH_ACK,
        );
        let out = lb.send(&stranger.bytes(), lb.up0);
        assert_eq!(
            out.packet,
            wrapped(&stranger.bytes()[14..], backend4(1).ip())
        );
    });
}

#[test]
fn what_cannot_be_wrapped_is_dropped_with_a_reason() {
    in_private_netns(|| {
        // IPv6 to an IPv4 backend.
        let lb = lb(both_sources());
        assert_eq!(
            lb.send(&syn(true, OTHER_PORT).bytes(), lb.up0).action,
            XDP_DROP
        );
        lb.assert_verdicts(&[(Verdict::DropEncapUnsupported, 1)]);
    });
    in_private_netns(|| {
        // No IPv4 source configured.
        let lb = lb((None, Some(SOURCE6)));
        let input = syn(false, PORT).bytes();
        assert_eq!(lb.send(&input, lb.up0).action, XDP_DROP);
        lb.assert_verdicts(&[(Verdict::DropEncapUnsupported, 1)]);
    });
}

#[test]
fn a_packet_too_big_once_wrapped_is_answered_with_the_mtu_left() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let lb = lb(both_sources());
            support::run(&["ip", "link", "set", "dn0", "mtu", "1280"]);
            let request = syn(v6, PORT);
            assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
            // 1270 bytes of IP packet: it fits 1280, not once wrapped.
            let header = if v6 { 40 + 20 } else { 20 + 20 };
            let segment = Packet {
                payload: vec![7; 1270 - header],
                ..request.with_flags(TcpFlags::ACK)
            };
            let input = segment.bytes();
            let out = lb.send(&input, lb.up0);
            assert_eq!(out.action, XDP_TX);
            let (quoted, left) = if v6 { (48, 1240) } else { (28, 1260) };
            assert_eq!(
                out.packet,
                too_big_answer(v6, &input[14..14 + quoted], left)
            );
            lb.assert_verdicts(&[
                (Verdict::ForwardEncapsulated, 1),
                (Verdict::AnswerTooBig, 1),
            ]);
        });
    }
}

#[test]
fn an_error_about_a_dsr_reply_reaches_the_backend_wrapped_as_it_came() {
    in_private_netns(|| {
        let lb = lb(both_sources());
        for (request, backend) in [
            (syn(false, PORT), backend4(0).ip()),
            (syn(true, PORT), backend6(0).ip()),
            (syn(false, OTHER_PORT), backend6(0).ip()),
        ] {
            assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
            // The backend's SYN-ACK as it left the backend (from the VIP),
            // quoted by the client's "too big".
            let flow = request.flow();
            let reply = Packet::tcp((UP_MAC, CLIENT_MAC), flow.dst, flow.src, TcpFlags::SYN_ACK);
            let input = icmp_error(
                FROM_CLIENT,
                flow.src.ip(),
                flow.dst.ip(),
                64,
                ErrorKind::TooBig { mtu: 1280 },
                &reply.bytes()[14..],
            );
            let out = lb.send(&input, lb.up0);
            assert_eq!(out.action, XDP_REDIRECT, "{request:?}");
            assert_eq!(out.packet, wrapped(&input[14..], backend), "{request:?}");
        }
        lb.assert_verdicts(&[
            (Verdict::ForwardEncapsulated, 3),
            (Verdict::ForwardIcmpErrorToBackend, 3),
        ]);
    });
}

/// A health probe of a DSR backend goes through the tunnel to the VIP
/// (`tc_probe_encap`), and the backend answers it from the VIP to the LB's
/// own address, as it answers a client: that answer, when it comes in
/// through `xdp_lb`, passes byte for byte to the LB's stack, where the probe's
/// socket waits. No reverse entry, no frontend at the LB's address: nothing
/// the program may take it for.
#[test]
fn a_probe_answer_from_the_vip_to_the_lb_passes_byte_for_byte() {
    in_private_netns(|| {
        let lb = lb(both_sources());
        // Probes of both families, to both addresses of the LB a probe may
        // leave from, on an ephemeral port (which Linux takes from
        // 32768-60999, above every NodePort).
        let answers = [
            ((VIP4, PORT), (SOURCE4, 40_000), backend4(0).ip()),
            (
                (VIP4, PORT),
                (Ipv4Addr::new(198, 18, 0, 254), 60_999),
                backend4(1).ip(),
            ),
        ]
        .map(|(vip, lb_end, backend)| {
            (
                Packet::tcp(
                    (mac_of(backend), DOWN_MAC),
                    SocketAddr::from(vip),
                    SocketAddr::from(lb_end),
                    TcpFlags::SYN_ACK,
                ),
                backend,
            )
        });
        let answers6 =
            [((VIP6, PORT), (SOURCE6, 40_000), backend6(0).ip())].map(|(vip, lb_end, backend)| {
                (
                    Packet::tcp(
                        (mac_of(backend), DOWN_MAC),
                        SocketAddr::from(vip),
                        SocketAddr::from(lb_end),
                        TcpFlags::SYN_ACK,
                    ),
                    backend,
                )
            });
        for (answer, backend) in answers.iter().chain(&answers6) {
            let input = answer.bytes();
            let out = lb.send(&input, lb.dn0);
            assert_eq!(out.action, XDP_PASS, "{answer:?} from {backend}");
            assert_eq!(out.packet, input, "{answer:?} from {backend} was changed");
        }
        assert!(lb.dp.conntrack().expect("conntrack").is_empty());
    });
}
