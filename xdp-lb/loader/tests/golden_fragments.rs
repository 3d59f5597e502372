//! Golden packets, IP fragments of UDP datagrams: the first fragment is
//! balanced as the whole datagram would be, and a later fragment joins its
//! flow with only its IP header translated — IPv4 and IPv6 (ports after the
//! Fragment header), requests and a backend's replies; a later fragment
//! whose first was not seen is dropped, counted.
mod support;

use std::net::SocketAddr;

use etherparse::{IpNumber, Ipv4Header, Ipv6Header};
use support::{
    frame::Packet,
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb, UP_MAC, VIP4,
        VIP6, XDP_DROP, XDP_REDIRECT, cycling, mac_of,
    },
};
use xdp_lb::{CtEvent, Protocol, Verdict};

const SERVICE: u32 = 7;
const SERVICE6: u32 = 8;
/// Ethernet, and a 20-byte IPv4 header or a 40-byte IPv6 one.
const L3: usize = 14;
const L4: usize = L3 + 20;
const L4_V6: usize = L3 + 40;
/// Transport bytes (UDP header and payload) in the first fragment: a
/// multiple of 8, as every fragment's but the last.
const FIRST_L4_LEN: usize = 32;

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
    lb
}

/// `frame`, a whole Ethernet/IPv4 datagram without options, cut as a host
/// cuts it: the first fragment (more fragments, offset 0) with
/// `FIRST_L4_LEN` transport bytes, and the later (last) one with the rest,
/// both with identification `id` and their header checksums computed anew.
fn fragments(frame: &[u8], id: u16) -> (Vec<u8>, Vec<u8>) {
    let (header, _) = Ipv4Header::from_slice(&frame[L3..]).expect("an IPv4 header");
    assert_eq!(header.header_len(), 20);
    let cut = |bytes: &[u8], offset: usize, more: bool| {
        let mut h = header.clone();
        h.identification = id;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = u16::try_from(offset / 8).unwrap().try_into().unwrap();
        h.set_payload_len(bytes.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = frame[..L3].to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(bytes);
        out
    };
    let l4 = &frame[L4..];
    (
        cut(&l4[..FIRST_L4_LEN], 0, true),
        cut(&l4[FIRST_L4_LEN..], FIRST_L4_LEN, false),
    )
}

/// `frame`, a whole Ethernet/IPv6 datagram without extension headers, cut
/// as a host cuts it (RFC 8200 §4.5): each fragment the IPv6 header (its
/// payload length that of the fragment) and a Fragment header with
/// identification `id`, then the first `FIRST_L4_LEN` transport bytes
/// (more fragments, offset 0), or the rest (the last fragment).
fn fragments6(frame: &[u8], id: u32) -> (Vec<u8>, Vec<u8>) {
    let (header, _) = Ipv6Header::from_slice(&frame[L3..]).expect("an IPv6 header");
    assert_eq!(header.next_header, IpNumber::UDP, "no extension headers");
    let cut = |bytes: &[u8], offset: usize, more: bool| {
        let mut h = header.clone();
        h.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        h.set_payload_length(8 + bytes.len()).unwrap();
        let mut out = frame[..L3].to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(&fragment_header6(offset, more, id));
        out.extend_from_slice(bytes);
        out
    };
    let l4 = &frame[L4_V6..];
    (
        cut(&l4[..FIRST_L4_LEN], 0, true),
        cut(&l4[FIRST_L4_LEN..], FIRST_L4_LEN, false),
    )
}

/// An IPv6 Fragment header before UDP: the fragment's `offset` in bytes (a
/// multiple of 8, so already the 13-bit field shifted into place), M for
/// `more`, identification `id`. Written by hand: etherparse 0.19's
/// `Ipv6FragmentHeader` puts M in the top bit of the field's second byte and
/// the offset's low bits below it, where RFC 8200 and Linux (`IP6_MF`
/// 0x0001, `IP6_OFFSET` 0xfff8) have the offset above and M at the bottom.
fn fragment_header6(offset: usize, more: bool, id: u32) -> [u8; 8] {
    assert_eq!(offset % 8, 0);
    let field = u16::try_from(offset).unwrap() | u16::from(more);
    let [f0, f1] = field.to_be_bytes();
    let [i0, i1, i2, i3] = id.to_be_bytes();
    [IpNumber::UDP.0, 0, f0, f1, i0, i1, i2, i3]
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
        assert_eq!(out.packet, later_out, "the later fragment");
        let (header, _) = Ipv4Header::from_slice(&out.packet[L3..]).unwrap();
        assert_eq!(header.header_checksum, header.calc_header_checksum());

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
        assert_eq!(out.packet, later_out, "the later fragment");
        let (header, _) = Ipv4Header::from_slice(&out.packet[L3..]).unwrap();
        assert_eq!(header.header_checksum, header.calc_header_checksum());

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::ForwardReply, 2)]);
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::ReplyHit, 2)]);
    });
}
