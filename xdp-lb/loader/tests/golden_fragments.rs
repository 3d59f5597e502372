//! Golden packets, IP fragments of UDP datagrams: the first fragment is
//! balanced as the whole datagram would be, and a later fragment joins its
//! flow with only its IP header translated; a later fragment whose first was
//! not seen is dropped, counted.
mod support;

use std::net::SocketAddr;

use etherparse::Ipv4Header;
use support::{
    frame::Packet,
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT4, DOWN_MAC, FROM_CLIENT, Lb, VIP4, XDP_DROP, XDP_REDIRECT, cycling,
        mac_of,
    },
};
use xdp_lb::{CtEvent, Protocol, Verdict};

const SERVICE: u32 = 7;
/// Ethernet and a 20-byte IPv4 header.
const L3: usize = 14;
const L4: usize = L3 + 20;
/// Transport bytes (UDP header and payload) in the first fragment: a
/// multiple of 8, as every fragment's but the last.
const FIRST_L4_LEN: usize = 32;

fn vip() -> SocketAddr {
    SocketAddr::from((VIP4, 53))
}

fn lb() -> Lb {
    let mut lb = Lb::new();
    lb.service(SERVICE, vip(), Protocol::Udp, &cycling(&BACKEND4_IDS, 251));
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
