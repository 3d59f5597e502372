//! Every golden frame cut at every length from the Ethernet header up: the
//! program never aborts, never creates conntrack state for a frame it cannot
//! read whole, and never translates one — a cut frame is passed untouched or
//! dropped with a counted reason. And a transport header in the Ethernet
//! padding after the datagram is not read.
mod support;

use std::net::SocketAddr;

use support::{
    frame::{IpExtras, L4, Packet, TcpFlags},
    in_private_netns,
    lb::{
        CLIENT4, CLIENT6, FROM_CLIENT, Lb, VIP4, VIP6, XDP_ABORTED, XDP_DROP, XDP_PASS,
        XDP_REDIRECT,
    },
};
use xdp_lb::{CtEvent, ParseCounter, Protocol, Verdict};

/// Requests to both VIPs (TCP and UDP, IPv4 and IPv6, with VLAN tags, IPv4
/// options and IPv6 extension headers): frames the program translates when
/// they arrive whole.
fn golden_frames() -> Vec<Packet> {
    let v4 = |port| SocketAddr::from((VIP4, port));
    let v6 = |port| SocketAddr::from((VIP6, port));
    let c4 = SocketAddr::from((CLIENT4, 40000));
    let c6 = SocketAddr::from((CLIENT6, 40000));
    let mut frames = vec![
        Packet::tcp(FROM_CLIENT, c4, v4(80), TcpFlags::SYN),
        Packet::tcp(FROM_CLIENT, c6, v6(80), TcpFlags::SYN),
        Packet::udp(FROM_CLIENT, c4, v4(53), b"query"),
        Packet::udp(FROM_CLIENT, c6, v6(53), b"query"),
    ];
    let mut vlan = frames[0].clone();
    vlan.vlan = Some(100);
    let mut options = frames[0].clone();
    options.extras = IpExtras::Ipv4Options;
    let mut extension = frames[1].clone();
    extension.extras = IpExtras::Ipv6DestinationOptions;
    frames.extend([vlan, options, extension]);
    frames
}

#[test]
fn a_cut_frame_is_never_aborted_tracked_or_translated() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
        lb.serve_both_vips((3, 4), 53, Protocol::Udp);
        let frames = golden_frames();
        for packet in &frames {
            let frame = packet.bytes();
            assert!(matches!(packet.l4, L4::Tcp(_) | L4::Udp { .. }));
            for len in 14..frame.len() {
                let cut = &frame[..len];
                let out = lb.send(cut, lb.up0);
                assert_ne!(out.action, XDP_ABORTED, "{len}-byte cut of {packet:?}");
                assert!(
                    out.action == XDP_PASS || out.action == XDP_DROP,
                    "a {len}-byte cut of {packet:?} was sent on (action {})",
                    out.action
                );
                if out.action == XDP_PASS {
                    assert_eq!(out.packet, cut, "a {len}-byte cut was changed");
                }
            }
        }
        let ct = lb.dp.ct_stats().expect("ct stats");
        assert_eq!(
            ct.get(CtEvent::Created).packets,
            0,
            "a cut frame created a flow"
        );
        assert!(lb.dp.conntrack().expect("conntrack").is_empty());

        // And whole, every one of them is balanced: the cuts above were of
        // frames the program does translate.
        for packet in &frames {
            let out = lb.send(&packet.bytes(), lb.up0);
            let translated = out.action == XDP_REDIRECT
                || (packet.vlan.is_some()
                    && out.action == XDP_PASS
                    && out.packet != packet.bytes());
            assert!(translated, "the whole frame {packet:?} was not translated");
        }
        // The tagged frame and those with options or extension headers carry
        // the 5-tuples of the first two: four flows, three hits.
        let ct = lb.dp.ct_stats().expect("ct stats");
        assert_eq!(
            (
                ct.get(CtEvent::Created).packets,
                ct.get(CtEvent::Hit).packets
            ),
            (4, 3)
        );
    });
}

/// A transport header past the end of the IP datagram lies in the Ethernet
/// padding, not in the packet: the frame is counted as truncated and passed
/// untouched, never balanced (the kernel would drop it as truncated).
#[test]
fn a_transport_header_in_the_padding_is_not_read() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
        lb.serve_both_vips((3, 4), 53, Protocol::Udp);
        let c4 = SocketAddr::from((CLIENT4, 40000));
        let c6 = SocketAddr::from((CLIENT6, 40000));
        let tcp4 = Packet::tcp(FROM_CLIENT, c4, SocketAddr::from((VIP4, 80)), TcpFlags::SYN);
        let udp6 = Packet::udp(FROM_CLIENT, c6, SocketAddr::from((VIP6, 53)), b"");
        // IPv4: total length 20, the header alone (with its checksum fixed).
        let mut v4 = tcp4.bytes();
        v4[16..18].copy_from_slice(&20u16.to_be_bytes());
        v4[24..26].fill(0);
        let header: [u8; 20] = v4[14..34].try_into().expect("20 bytes");
        let sum = etherparse::Ipv4HeaderSlice::from_slice(&header)
            .expect("an IPv4 header")
            .to_header()
            .calc_header_checksum();
        v4[24..26].copy_from_slice(&sum.to_be_bytes());
        // IPv6: payload length 4, half a UDP header.
        let mut v6 = udp6.bytes();
        v6[18..20].copy_from_slice(&4u16.to_be_bytes());
        for (frame, counter) in [
            (v4, ParseCounter::TruncatedTcp),
            (v6, ParseCounter::TruncatedUdp),
        ] {
            let before = lb
                .dp
                .parse_stats()
                .expect("parse stats")
                .get(counter)
                .packets;
            let out = lb.send(&frame, lb.up0);
            assert_eq!((out.action, &out.packet), (XDP_PASS, &frame));
            let after = lb
                .dp
                .parse_stats()
                .expect("parse stats")
                .get(counter)
                .packets;
            assert_eq!(after - before, 1, "{}", counter.name());
        }
        lb.assert_verdicts(&[(Verdict::PassMalformed, 2)]);
        assert!(lb.dp.conntrack().expect("conntrack").is_empty());
    });
}
