//! Golden packets, L2 announcements: `xdp_lb` answers ARP requests and IPv6
//! neighbour solicitations for the addresses announced on the interface a
//! request arrives on, with the reply or advertisement a host holding the
//! address would send (XDP_TX), and leaves every other ARP and neighbour
//! discovery frame byte for byte as it came. Every expected frame is built
//! by etherparse, its checksums computed from scratch.
//!
//! The fixture's `up0` is "this interface" (its index and MAC found with
//! `L2Link::of_interface`), `dn0` another one; requests come from the
//! first client on `up0`.
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, Icmpv6Header, Icmpv6Type, PacketBuilder, SlicedPacket,
    TransportSlice, VlanId, icmpv6::NeighborAdvertisementHeader,
};
use support::{
    in_private_netns,
    lb::{
        CLIENT_MAC, CLIENT4, CLIENT6, FIXTURE_SIZES, Lb, NODE4, NODE6, UP_MAC, VIP4, VIP6,
        XDP_PASS, XDP_TX,
    },
};
use xdp_lb::{Error, L2Link, ParseCounter, ProgramName, Verdict};

/// Another host's MAC on the link.
const OTHER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const VLAN: u16 = 42;

/// The fixture, with VIP4 and VIP6 announced on `up0`.
fn announcing() -> Lb {
    let mut lb = Lb::new();
    let up0 = L2Link::of_interface("up0").expect("up0 is an Ethernet interface");
    assert_eq!(
        up0,
        L2Link {
            ifindex: lb.up0,
            mac: UP_MAC
        }
    );
    for vip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
        lb.dp.announce_l2(vip, up0).expect("announce");
    }
    lb
}

/// Sends `frame` in on `ifindex` and checks that it leaves as it came, passed.
fn assert_untouched(lb: &Lb, frame: &[u8], ifindex: u32) {
    let out = lb.send(frame, ifindex);
    assert_eq!(out.action, XDP_PASS, "{frame:02x?}");
    assert_eq!(out.packet, frame, "the frame was changed");
}

/// An Ethernet/IPv4 ARP frame, in VLAN `vlan` if given.
fn arp_frame(eth: ([u8; 6], [u8; 6]), vlan: Option<u16>, arp: ArpEthIpv4Packet) -> Vec<u8> {
    let mut out = Vec::new();
    let builder = PacketBuilder::ethernet2(eth.0, eth.1);
    match vlan {
        Some(id) => builder
            .single_vlan(VlanId::try_new(id).expect("a VLAN ID"))
            .arp(arp.into())
            .write(&mut out),
        None => builder.arp(arp.into()).write(&mut out),
    }
    .expect("an ARP frame");
    out
}

/// The request "who has `target`? tell `sender`" of the first client.
fn request(vlan: Option<u16>, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        (CLIENT_MAC, [0xff; 6]),
        vlan,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: CLIENT_MAC,
            sender_ipv4: sender.octets(),
            target_mac: [0; 6],
            target_ipv4: target.octets(),
        },
    )
}

/// The reply "`vip` is at `UP_MAC`" to the first client at `client`.
fn reply(vlan: Option<u16>, vip: Ipv4Addr, client: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        (UP_MAC, CLIENT_MAC),
        vlan,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: UP_MAC,
            sender_ipv4: vip.octets(),
            target_mac: CLIENT_MAC,
            target_ipv4: client.octets(),
        },
    )
}

#[test]
fn an_arp_request_for_an_announced_address_is_answered_on_its_interface() {
    in_private_netns(|| {
        let lb = announcing();
        let out = lb.send(&request(None, CLIENT4, VIP4), lb.up0);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.packet, reply(None, VIP4, CLIENT4));
        // As a wire delivers it, padded to 60 bytes: the padding stays.
        let mut padded = request(None, CLIENT4, VIP4);
        padded.resize(60, 0);
        let mut expected = reply(None, VIP4, CLIENT4);
        expected.resize(60, 0);
        let out = lb.send(&padded, lb.up0);
        assert_eq!((out.action, out.packet), (XDP_TX, expected));
        lb.assert_verdicts(&[(Verdict::TxArpReply, 2)]);
        let parsed = lb.dp.parse_stats().unwrap();
        assert_eq!(parsed.get(ParseCounter::Arp).packets, 2);
        assert_eq!(parsed.total_packets(), 2);
    });
}

#[test]
fn an_arp_probe_is_answered_to_defend_the_address() {
    // RFC 5227: a host probing for the address (sender 0.0.0.0) learns it
    // is taken from a reply whose sender is the address, as Linux answers.
    in_private_netns(|| {
        let lb = announcing();
        let out = lb.send(&request(None, Ipv4Addr::UNSPECIFIED, VIP4), lb.up0);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.packet, reply(None, VIP4, Ipv4Addr::UNSPECIFIED));
        lb.assert_verdicts(&[(Verdict::TxArpReply, 1)]);
    });
}

#[test]
fn a_tagged_arp_request_is_answered_in_its_vlan() {
    in_private_netns(|| {
        let lb = announcing();
        let out = lb.send(&request(Some(VLAN), CLIENT4, VIP4), lb.up0);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.packet, reply(Some(VLAN), VIP4, CLIENT4));
        lb.assert_verdicts(&[(Verdict::TxArpReply, 1)]);
    });
}

#[test]
fn other_arp_frames_pass_byte_for_byte() {
    in_private_netns(|| {
        let lb = announcing();
        let gratuitous = |op| {
            arp_frame(
                (OTHER_MAC, [0xff; 6]),
                None,
                ArpEthIpv4Packet {
                    operation: op,
                    sender_mac: OTHER_MAC,
                    sender_ipv4: VIP4.octets(),
                    target_mac: [0; 6],
                    target_ipv4: VIP4.octets(),
                },
            )
        };
        let frames = [
            // On another interface than the one it is announced on.
            (request(None, CLIENT4, VIP4), lb.dn0),
            // For addresses that are not announced: a VIP-less address,
            // the node's own (the kernel answers for it).
            (
                request(None, CLIENT4, Ipv4Addr::new(198, 18, 100, 2)),
                lb.up0,
            ),
            (request(None, CLIENT4, NODE4), lb.up0),
            // A reply, even one about the VIP.
            (reply(None, VIP4, CLIENT4), lb.up0),
            // Gratuitous ARP for the VIP, as a request and as a reply.
            (gratuitous(ArpOperation::REQUEST), lb.up0),
            (gratuitous(ArpOperation::REPLY), lb.up0),
            // A request sent to another host's MAC (promiscuous mode).
            (
                arp_frame(
                    (CLIENT_MAC, OTHER_MAC),
                    None,
                    ArpEthIpv4Packet {
                        operation: ArpOperation::REQUEST,
                        sender_mac: CLIENT_MAC,
                        sender_ipv4: CLIENT4.octets(),
                        target_mac: [0; 6],
                        target_ipv4: VIP4.octets(),
                    },
                ),
                lb.up0,
            ),
            // A request from a group MAC.
            (
                arp_frame(
                    ([0xff; 6], [0xff; 6]),
                    None,
                    ArpEthIpv4Packet {
                        operation: ArpOperation::REQUEST,
                        sender_mac: [0xff; 6],
                        sender_ipv4: CLIENT4.octets(),
                        target_mac: [0; 6],
                        target_ipv4: VIP4.octets(),
                    },
                ),
                lb.up0,
            ),
        ];
        for (frame, ifindex) in &frames {
            assert_untouched(&lb, frame, *ifindex);
        }
        lb.assert_verdicts(&[(Verdict::PassNotIp, frames.len() as u64)]);
    });
}

#[test]
fn a_withdrawn_address_is_no_longer_answered() {
    in_private_netns(|| {
        let mut lb = announcing();
        let mut announced = lb.dp.l2_announcements().unwrap();
        announced.sort_by_key(|(addr, _)| *addr);
        let up0 = L2Link {
            ifindex: lb.up0,
            mac: UP_MAC,
        };
        assert_eq!(
            announced,
            [(IpAddr::from(VIP4), up0), (IpAddr::from(VIP6), up0)]
        );
        assert!(lb.dp.withdraw_l2(VIP4.into()).unwrap());
        assert!(!lb.dp.withdraw_l2(VIP4.into()).unwrap(), "withdrawn twice");
        assert_eq!(
            lb.dp.l2_announcements().unwrap(),
            [(IpAddr::from(VIP6), up0)]
        );
        assert_untouched(&lb, &request(None, CLIENT4, VIP4), lb.up0);
        lb.assert_verdicts(&[(Verdict::PassNotIp, 1)]);
    });
}

#[test]
fn an_announcement_moves_with_its_last_link() {
    in_private_netns(|| {
        let mut lb = announcing();
        let dn0 = L2Link::of_interface("dn0").unwrap();
        lb.dp.announce_l2(VIP4.into(), dn0).unwrap();
        assert_untouched(&lb, &request(None, CLIENT4, VIP4), lb.up0);
        let out = lb.send(&request(None, CLIENT4, VIP4), lb.dn0);
        let mut expected = reply(None, VIP4, CLIENT4);
        expected[6..12].copy_from_slice(&dn0.mac);
        expected[14 + 8..14 + 14].copy_from_slice(&dn0.mac);
        assert_eq!((out.action, out.packet), (XDP_TX, expected));
    });
}

#[test]
fn requests_arriving_on_the_loopback_interface_are_answered_for_it() {
    // BPF_PROG_TEST_RUN without a context runs as if the frame came in on
    // the loopback interface (index 1).
    in_private_netns(|| {
        let mut lb = Lb::new();
        let link = L2Link {
            ifindex: 1,
            mac: UP_MAC,
        };
        lb.dp.announce_l2(VIP4.into(), link).unwrap();
        let out = lb
            .dp
            .test_run(ProgramName::XdpLb, &request(None, CLIENT4, VIP4))
            .unwrap();
        assert_eq!(
            (out.action, out.packet),
            (XDP_TX, reply(None, VIP4, CLIENT4))
        );
    });
}

/// ff02::1:ffXX:XXXX, the solicited-node multicast address of `addr`.
fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let a = addr.octets();
    let mut out = [0u8; 16];
    out[..2].copy_from_slice(&[0xff, 0x02]);
    out[11..13].copy_from_slice(&[0x01, 0xff]);
    out[13..].copy_from_slice(&a[13..]);
    Ipv6Addr::from(out)
}

/// The MAC of an IPv6 multicast address (RFC 2464, 7).
fn multicast_mac(addr: Ipv6Addr) -> [u8; 6] {
    let a = addr.octets();
    [0x33, 0x33, a[12], a[13], a[14], a[15]]
}

/// A neighbour solicitation, field by field.
#[derive(Clone, Debug)]
struct Solicitation {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    code: u8,
    target: Ipv6Addr,
    /// The options, whole (type, length, data).
    options: Vec<u8>,
}

/// A Source link-layer address option with `mac`.
fn source_link_layer(mac: [u8; 6]) -> Vec<u8> {
    let mut option = vec![1, 1];
    option.extend_from_slice(&mac);
    option
}

impl Solicitation {
    /// "Who has `target`?" from the first client, multicast to the target's
    /// solicited-node address, with a Source link-layer address option.
    fn of(target: Ipv6Addr) -> Self {
        let dst = solicited_node(target);
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: multicast_mac(dst),
            vlan: None,
            src: CLIENT6,
            dst,
            hop_limit: 255,
            code: 0,
            target,
            options: source_link_layer(CLIENT_MAC),
        }
    }

    /// Duplicate address detection for `target`: from `::`, no option.
    fn dad(target: Ipv6Addr) -> Self {
        Self {
            src: Ipv6Addr::UNSPECIFIED,
            options: Vec::new(),
            ..Self::of(target)
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let kind = if self.code == 0 {
            Icmpv6Type::NeighborSolicitation
        } else {
            Icmpv6Type::Unknown {
                type_u8: 135,
                code_u8: self.code,
                bytes5to8: [0; 4],
            }
        };
        let mut payload = self.target.octets().to_vec();
        payload.extend_from_slice(&self.options);
        let eth = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let (src, dst, hop) = (self.src.octets(), self.dst.octets(), self.hop_limit);
        let mut out = Vec::new();
        match self.vlan {
            Some(id) => eth
                .single_vlan(VlanId::try_new(id).expect("a VLAN ID"))
                .ipv6(src, dst, hop)
                .icmpv6(kind)
                .write(&mut out, &payload),
            None => eth
                .ipv6(src, dst, hop)
                .icmpv6(kind)
                .write(&mut out, &payload),
        }
        .expect("a solicitation");
        out
    }
}

/// The advertisement the LB answers `ns` with: from the target address and
/// `UP_MAC`, to the solicitation's source (all nodes, without the Solicited
/// flag, for duplicate address detection), hop limit 255, Override set,
/// Router clear, and a Target link-layer address option.
fn advertisement(ns: &Solicitation) -> Vec<u8> {
    let dad = ns.src.is_unspecified();
    let (dst, dst_mac) = if dad {
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        (all_nodes, multicast_mac(all_nodes))
    } else {
        (ns.src, ns.src_mac)
    };
    let kind = Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
        router: false,
        solicited: !dad,
        r#override: true,
    });
    let mut payload = ns.target.octets().to_vec();
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&UP_MAC);
    let eth = PacketBuilder::ethernet2(UP_MAC, dst_mac);
    let (src, dst) = (ns.target.octets(), dst.octets());
    let mut out = Vec::new();
    match ns.vlan {
        Some(id) => eth
            .single_vlan(VlanId::try_new(id).expect("a VLAN ID"))
            .ipv6(src, dst, 255)
            .icmpv6(kind)
            .write(&mut out, &payload),
        None => eth
            .ipv6(src, dst, 255)
            .icmpv6(kind)
            .write(&mut out, &payload),
    }
    .expect("an advertisement");
    out
}

/// The ICMPv6 checksum of `frame` is the one its pseudo-header and message
/// sum to, recomputed here.
fn assert_icmpv6_checksum(frame: &[u8]) {
    let sliced = SlicedPacket::from_ethernet(frame).expect("an Ethernet frame");
    let Some(etherparse::NetSlice::Ipv6(ip)) = &sliced.net else {
        panic!("not IPv6");
    };
    let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
        panic!("not ICMPv6");
    };
    let header = ip.header();
    let recomputed = Icmpv6Header::with_checksum(
        icmp.icmp_type(),
        header.source(),
        header.destination(),
        icmp.payload(),
    )
    .expect("a checksum");
    assert_eq!(icmp.checksum(), recomputed.checksum);
}

/// Sends `ns` in on `up0` and checks the exact advertisement that answers it.
fn assert_advertised(lb: &Lb, ns: &Solicitation) {
    let out = lb.send(&ns.bytes(), lb.up0);
    assert_eq!(out.action, XDP_TX, "{ns:?}");
    assert_eq!(out.packet, advertisement(ns), "{ns:?}");
    assert_icmpv6_checksum(&out.packet);
}

#[test]
fn a_solicitation_with_a_source_link_layer_address_is_advertised() {
    in_private_netns(|| {
        let lb = announcing();
        let ns = Solicitation::of(VIP6);
        assert_eq!(ns.bytes().len(), advertisement(&ns).len());
        assert_advertised(&lb, &ns);
        lb.assert_verdicts(&[(Verdict::TxNeighbourAdvert, 1)]);
        let parsed = lb.dp.parse_stats().unwrap();
        assert_eq!(parsed.get(ParseCounter::Icmp6).packets, 1);
        assert_eq!(parsed.total_packets(), 1);
    });
}

#[test]
fn the_frame_grows_or_shrinks_to_the_advertisement() {
    in_private_netns(|| {
        let lb = announcing();
        // No option: 8 bytes shorter than the advertisement.
        let bare = Solicitation {
            options: Vec::new(),
            ..Solicitation::of(VIP6)
        };
        assert_eq!(bare.bytes().len() + 8, advertisement(&bare).len());
        assert_advertised(&lb, &bare);
        // A Source link-layer address and a nonce (RFC 7527): 8 longer.
        let mut options = source_link_layer(CLIENT_MAC);
        options.extend_from_slice(&[14, 1, 1, 2, 3, 4, 5, 6]);
        let nonce = Solicitation {
            options,
            ..Solicitation::of(VIP6)
        };
        assert_eq!(nonce.bytes().len(), advertisement(&nonce).len() + 8);
        assert_advertised(&lb, &nonce);
        lb.assert_verdicts(&[(Verdict::TxNeighbourAdvert, 2)]);
    });
}

#[test]
fn duplicate_address_detection_is_answered_to_all_nodes() {
    in_private_netns(|| {
        let lb = announcing();
        let dad = Solicitation::dad(VIP6);
        assert_advertised(&lb, &dad);
        let out = lb.send(&dad.bytes(), lb.up0);
        // Solicited clear, Override set (RFC 4861, 7.2.4).
        assert_eq!(out.packet[14 + 40 + 4], 0x20);
        assert_eq!(&out.packet[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        lb.assert_verdicts(&[(Verdict::TxNeighbourAdvert, 2)]);
    });
}

#[test]
fn unicast_and_tagged_solicitations_are_advertised() {
    in_private_netns(|| {
        let lb = announcing();
        // Neighbour unreachability detection: unicast to the address and
        // to the MAC it was announced with.
        let unicast = Solicitation {
            dst: VIP6,
            dst_mac: UP_MAC,
            ..Solicitation::of(VIP6)
        };
        assert_advertised(&lb, &unicast);
        let tagged = Solicitation {
            vlan: Some(VLAN),
            ..Solicitation::of(VIP6)
        };
        assert_advertised(&lb, &tagged);
        let tagged_bare = Solicitation {
            vlan: Some(VLAN),
            options: Vec::new(),
            ..Solicitation::of(VIP6)
        };
        assert_advertised(&lb, &tagged_bare);
        lb.assert_verdicts(&[(Verdict::TxNeighbourAdvert, 3)]);
    });
}

#[test]
fn invalid_or_foreign_solicitations_pass_byte_for_byte() {
    in_private_netns(|| {
        let lb = announcing();
        let of = Solicitation::of(VIP6);
        let mut bad_checksum = of.bytes();
        let at = 14 + 40 + 2;
        bad_checksum[at] ^= 0x55;
        let mut truncated = Solicitation {
            options: Vec::new(),
            ..Solicitation::of(VIP6)
        }
        .bytes();
        // An ICMPv6 length of 16: the target address cut in half.
        truncated.truncate(14 + 40 + 16);
        truncated[14 + 5] = 16;
        let multicast_target = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let cases: Vec<(&str, Vec<u8>, u32)> = vec![
            (
                "hop limit 64",
                Solicitation {
                    hop_limit: 64,
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
            (
                "code 1",
                Solicitation {
                    code: 1,
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
            ("bad checksum", bad_checksum, lb.up0),
            ("truncated", truncated, lb.up0),
            (
                "multicast target",
                Solicitation {
                    target: multicast_target,
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
            (
                "an option of length 0",
                Solicitation {
                    options: vec![1, 0, 0, 0, 0, 0, 0, 0],
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
            (
                "duplicate address detection with a source link-layer address",
                Solicitation {
                    options: source_link_layer(CLIENT_MAC),
                    ..Solicitation::dad(VIP6)
                }
                .bytes(),
                lb.up0,
            ),
            (
                "duplicate address detection to a unicast address",
                Solicitation {
                    dst: VIP6,
                    dst_mac: UP_MAC,
                    ..Solicitation::dad(VIP6)
                }
                .bytes(),
                lb.up0,
            ),
            ("another interface", of.bytes(), lb.dn0),
            (
                "a target that is not announced",
                Solicitation::of(Ipv6Addr::new(0x2001, 2, 0x100, 0, 0, 0, 0, 2)).bytes(),
                lb.up0,
            ),
            (
                "the node's own address",
                Solicitation::of(NODE6).bytes(),
                lb.up0,
            ),
            (
                "sent to another host's MAC",
                Solicitation {
                    dst: VIP6,
                    dst_mac: OTHER_MAC,
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
            (
                "longer than the longest answered",
                Solicitation {
                    options: [source_link_layer(CLIENT_MAC), vec![14, 5], vec![0; 38]].concat(),
                    ..of.clone()
                }
                .bytes(),
                lb.up0,
            ),
        ];
        for (what, frame, ifindex) in &cases {
            let out = lb.send(frame, *ifindex);
            assert_eq!(out.action, XDP_PASS, "{what}");
            assert_eq!(&out.packet, frame, "{what}: the frame was changed");
        }
        let verdicts = lb.dp.verdict_stats().unwrap();
        assert_eq!(verdicts.get(Verdict::TxNeighbourAdvert).packets, 0);
        assert_eq!(verdicts.total_packets(), cases.len() as u64);
    });
}

#[test]
fn a_full_map_is_a_clear_error_and_replacing_still_works() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let up0 = L2Link::of_interface("up0").unwrap();
        let capacity = FIXTURE_SIZES.addresses;
        for i in 0..capacity {
            let addr = Ipv4Addr::new(198, 18, 100, 10 + i as u8);
            lb.dp.announce_l2(addr.into(), up0).expect("room");
        }
        let one_more = Ipv4Addr::new(198, 18, 100, 200);
        let err = lb.dp.announce_l2(one_more.into(), up0).unwrap_err();
        assert!(
            matches!(err, Error::MapFull { map: "L2_ANNOUNCE", capacity: c, size: "addresses" } if c == capacity),
            "{err:?}"
        );
        assert!(err.to_string().contains("MapSizes::addresses"), "{err}");
        let dn0 = L2Link::of_interface("dn0").unwrap();
        lb.dp
            .announce_l2(Ipv4Addr::new(198, 18, 100, 10).into(), dn0)
            .expect("a replacement needs no room");
        assert_eq!(lb.dp.l2_announcements().unwrap().len(), capacity as usize);
    });
}

#[test]
fn addresses_and_links_that_cannot_be_announced_are_refused() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let up0 = L2Link::of_interface("up0").unwrap();
        for addr in ["0.0.0.0", "255.255.255.255", "224.0.0.5", "::", "ff02::1"] {
            let addr: IpAddr = addr.parse().unwrap();
            let err = lb.dp.announce_l2(addr, up0).unwrap_err();
            assert!(
                matches!(err, Error::L2Announcement { .. }),
                "{addr}: {err:?}"
            );
        }
        for link in [
            L2Link { ifindex: 0, ..up0 },
            L2Link { mac: [0; 6], ..up0 },
            L2Link {
                mac: [0x33, 0x33, 0, 0, 0, 1],
                ..up0
            },
        ] {
            let err = lb.dp.announce_l2(VIP4.into(), link).unwrap_err();
            assert!(
                matches!(err, Error::L2Announcement { .. }),
                "{link:?}: {err:?}"
            );
        }
        assert_eq!(lb.dp.l2_announcements().unwrap(), []);
    });
}

#[test]
fn interfaces_are_found_in_the_callers_namespace() {
    in_private_netns(|| {
        // A fresh namespace has only `lo`: whose MAC is all zeros, and
        // which is no Ethernet link.
        let err = L2Link::of_interface("lo").unwrap_err();
        assert!(
            matches!(&err, Error::NotAnEthernetLink { iface, .. } if iface == "lo"),
            "{err:?}"
        );
        let err = L2Link::of_interface("up0").unwrap_err();
        assert!(
            matches!(&err, Error::UnknownInterface { iface } if iface == "up0"),
            "{err:?}"
        );
        let lb = Lb::new();
        let up0 = L2Link::of_interface("up0").unwrap();
        assert_eq!((up0.ifindex, up0.mac), (lb.up0, UP_MAC));
        let err = L2Link::of_interface("no-such-if").unwrap_err();
        assert!(matches!(err, Error::UnknownInterface { .. }), "{err:?}");
    });
}
