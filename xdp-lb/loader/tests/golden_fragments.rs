//! Golden packets, IP fragments of UDP datagrams: the first fragment is
//! balanced as the whole datagram would be, and a later fragment joins its
//! flow with only its IP header translated — IPv4 and IPv6 (ports after the
//! Fragment header), requests and a backend's replies; a later fragment
//! whose first was not seen is dropped, counted. IPv6 datagrams with
//! Destination Options after the Fragment header, whose later fragments
//! name those rather than their transport, are balanced as the others.
mod support;

use std::net::SocketAddr;

use etherparse::{IpNumber, Ipv4Header};

use support::{
    fragment::{L3, assert_ip4_checksum, fragments, fragments6, fragments6_after_dst_opts},
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb, UP_MAC, VIP4,
        VIP6, XDP_DROP, XDP_REDIRECT, cycling, mac_of,
    },
};
use xdp_lb::{CtEvent, Protocol, Verdict};

const SERVICE: u32 = 7;
const SERVICE6: u32 = 8;
const SERVICE6_TCP: u32 = 9;

fn vip() -> SocketAddr {
    SocketAddr::from((VIP4, 53))
}

fn vip6() -> SocketAddr {
    SocketAddr::from((VIP6, 53))
}

fn lb() -> Lb {
    let mut lb = Lb::new();
    lb.service(SERVICE, vip(), Protocol::Udp, &cycling(&BACKEND4_IDS, 251));
    lb.service(
        SERVICE6,
        vip6(),
        Protocol::Udp,
        &cycling(&BACKEND6_IDS, 251),
    );
    lb.service(
        SERVICE6_TCP,
        SocketAddr::from((VIP6, 80)),
        Protocol::Tcp,
        &cycling(&BACKEND6_IDS, 251),
    );
    lb
}

/// A 64-byte UDP query from `port` to the VIP.
fn query(port: u16) -> Packet {
    Packet::udp(
        FROM_CLIENT,
        SocketAddr::from((CLIENT4, port)),
        vip(),
        &(0..56).collect::<Vec<u8>>(),
    )
}

#[test]
fn a_fragmented_udp4_datagram_reaches_one_backend_translated() {
    in_private_netns(|| {
        let lb = lb();
        let dgram = query(5000);
        let (_, backend, false) = lb.simulated(&dgram.flow()) else {
            panic!("untracked");
        };
        let (first, later) = fragments(&dgram.bytes(), 0x1234);
        // The whole datagram as it would reach the backend, cut the same way:
        // its UDP checksum computed anew over the translated datagram.
        let translated = dgram
            .with_dst(backend)
            .routed(DOWN_MAC, mac_of(backend.ip()))
            .bytes();
        let (first_out, later_out) = fragments(&translated, 0x1234);

        let out = lb.send(&first, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, first_out, "the first fragment");
        let out = lb.send(&later, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        // First, so that a header checksum left wrong is said so rather
        // than shown only as the bytes that differ.
        assert_ip4_checksum(&out.packet);
        assert_eq!(out.packet, later_out, "the later fragment");

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 2)]);
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::Hit, 1)]);
    });
}

#[test]
fn a_later_fragment_without_its_first_is_dropped_counted() {
    in_private_netns(|| {
        let lb = lb();
        let (first, later) = fragments(&query(5001).bytes(), 0x4321);
        assert_eq!(lb.send(&later, lb.up0).action, XDP_DROP);
        // Another datagram of the same flow (another identification) finds
        // no ports either.
        lb.send(&first, lb.up0);
        let (_, other_later) = fragments(&query(5001).bytes(), 0x4322);
        assert_eq!(lb.send(&other_later, lb.up0).action, XDP_DROP);
        lb.assert_verdicts(&[
            (Verdict::DropFragmentUntracked, 2),
            (Verdict::ForwardToBackend, 1),
        ]);
    });
}

#[test]
fn a_fragmented_udp6_datagram_reaches_one_backend_translated() {
    in_private_netns(|| {
        let lb = lb();
        let dgram = Packet::udp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT6, 5002)),
            vip6(),
            &(0..56).collect::<Vec<u8>>(),
        );
        let (_, backend, false) = lb.simulated(&dgram.flow()) else {
            panic!("untracked");
        };
        assert!(backend.is_ipv6());
        // The ports lie after the Fragment header in the first fragment:
        // its UDP header (and checksum, over the whole datagram) is
        // translated there; the later one has its destination address alone.
        let (first, later) = fragments6(&dgram.bytes(), 0x0102_0304);
        let translated = dgram
            .with_dst(backend)
            .routed(DOWN_MAC, mac_of(backend.ip()))
            .bytes();
        let (first_out, later_out) = fragments6(&translated, 0x0102_0304);

        let out = lb.send(&first, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, first_out, "the first fragment");
        let out = lb.send(&later, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, later_out, "the later fragment");

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 2)]);
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::Hit, 1)]);
    });
}

#[test]
fn a_backends_fragmented_reply_reaches_the_client_from_the_vip() {
    in_private_netns(|| {
        let lb = lb();
        let request = query(5003);
        let (_, backend, false) = lb.simulated(&request.flow()) else {
            panic!("untracked");
        };
        assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
        // The backend's answer, too large for one packet: both fragments
        // leave from the VIP, the first with its UDP header translated, the
        // later with its source address alone.
        let reply = Packet::udp(
            (mac_of(backend.ip()), DOWN_MAC),
            backend,
            request.src,
            &(0..200).map(|i| i as u8).collect::<Vec<u8>>(),
        );
        let (first, later) = fragments(&reply.bytes(), 0x5151);
        let translated = reply
            .with_src(vip())
            .routed(UP_MAC, mac_of(request.src.ip()))
            .bytes();
        let (first_out, later_out) = fragments(&translated, 0x5151);

        let out = lb.send(&first, lb.dn0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, first_out, "the first fragment");
        let out = lb.send(&later, lb.dn0);
        assert_eq!(out.action, XDP_REDIRECT);
        // First, so that a header checksum left wrong is said so rather
        // than shown only as the bytes that differ.
        assert_ip4_checksum(&out.packet);
        assert_eq!(out.packet, later_out, "the later fragment");

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::ForwardReply, 2)]);
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::ReplyHit, 2)]);
    });
}

/// A 64-byte UDP query from `port` of the IPv6 client to the IPv6 VIP.
fn query6(port: u16) -> Packet {
    Packet::udp(
        FROM_CLIENT,
        SocketAddr::from((CLIENT6, port)),
        vip6(),
        &(0..56).collect::<Vec<u8>>(),
    )
}

/// IPv6 datagrams whose fragments carry Destination Options after the
/// Fragment header (RFC 8200 §4.5): the first fragment holds them and the
/// transport header after them; the later one has only its Fragment header,
/// which names Destination Options (60), not its transport. Each fragment
/// reaches the backend the whole datagram would, the first translated
/// whole (ports and transport checksum, over the whole datagram, as the
/// datagram cut the same way shows them), the later its address alone. A
/// UDP datagram, then a TCP one: the later TCP fragment is found after the
/// UDP key is not.
#[test]
fn fragments_after_destination_options_reach_one_backend_translated() {
    in_private_netns(|| {
        let lb = lb();
        let udp = query6(5004);
        // A SYN with data: it opens its flow, as the UDP query does.
        let tcp = Packet {
            payload: (0..56).collect(),
            ..Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, 5005)),
                SocketAddr::from((VIP6, 80)),
                TcpFlags::SYN,
            )
        };
        for (dgram, id) in [(&udp, 0x0a0b_0c0d), (&tcp, 0x0a0b_0c0e)] {
            let (_, backend, false) = lb.simulated(&dgram.flow()) else {
                panic!("untracked");
            };
            let (first, later) = fragments6_after_dst_opts(&dgram.bytes(), id);
            // The Fragment header (after the 40-byte IPv6 header) of each
            // names Destination Options: what the case is about.
            assert_eq!((first[L3 + 40], later[L3 + 40]), (60, 60));
            let translated = dgram
                .with_dst(backend)
                .routed(DOWN_MAC, mac_of(backend.ip()))
                .bytes();
            let (first_out, later_out) = fragments6_after_dst_opts(&translated, id);

            let out = lb.send(&first, lb.up0);
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.packet, first_out, "{dgram:?}: the first fragment");
            let out = lb.send(&later, lb.up0);
            assert_eq!(out.action, XDP_REDIRECT);
            assert_eq!(out.packet, later_out, "{dgram:?}: the later fragment");
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 4)]);
        lb.assert_ct(&[(CtEvent::Created, 2), (CtEvent::Hit, 2)]);
    });
}

/// A later fragment naming Destination Options whose first was not seen
/// finds no ports under UDP nor under TCP: dropped as any later fragment
/// without its first, as is one of another datagram (another
/// identification) of a balanced flow. An IPv4 later fragment naming
/// protocol 60 is no TCP or UDP fragment (IPv4 has no such header): it is
/// dropped as a fragment of another protocol.
#[test]
fn a_later_fragment_after_destination_options_without_its_first_is_dropped_counted() {
    in_private_netns(|| {
        let lb = lb();
        let (first, later) = fragments6_after_dst_opts(&query6(5006).bytes(), 0x0d0c_0b0a);
        assert_eq!(lb.send(&later, lb.up0).action, XDP_DROP);
        assert_eq!(lb.send(&first, lb.up0).action, XDP_REDIRECT);
        let (_, other_later) = fragments6_after_dst_opts(&query6(5006).bytes(), 0x0d0c_0b0b);
        assert_eq!(lb.send(&other_later, lb.up0).action, XDP_DROP);

        let (_, mut later4) = fragments(&query(5007).bytes(), 0x4444);
        let (mut header, _) = Ipv4Header::from_slice(&later4[L3..]).expect("an IPv4 header");
        header.protocol = IpNumber::IPV6_DESTINATION_OPTIONS;
        header.header_checksum = header.calc_header_checksum();
        later4[L3..L3 + 20].copy_from_slice(&header.to_bytes());
        assert_eq!(lb.send(&later4, lb.up0).action, XDP_DROP);

        lb.assert_verdicts(&[
            (Verdict::DropFragmentUntracked, 2),
            (Verdict::ForwardToBackend, 1),
            (Verdict::DropFragment, 1),
        ]);
    });
}
