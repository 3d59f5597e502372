//! Hand-built frames for the parser and datapath tests, the demo and benchmarks.
//!
//! Frames are built with etherparse (checksums and lengths filled in by it), then,
//! for the malformed cases, cut or patched by hand. Every frame is addressed to
//! [`OTHER_HOST_MAC`], a unicast MAC no rig interface has, so a receiving stack
//! drops it as "other host" and never answers: tests that count packets see
//! exactly what they sent.
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder, PacketBuilderStep, VlanId,
};
use xdp_lb::ParseCounter;

/// Source MAC of generated frames (locally administered).
pub const SOURCE_MAC: [u8; 6] = [0x02, 0x78, 0x6c, 0x62, 0x00, 0x01];
/// Destination MAC of generated frames: locally administered, owned by nobody.
pub const OTHER_HOST_MAC: [u8; 6] = [0x02, 0x78, 0x6c, 0x62, 0x00, 0x02];

/// IPv4 client address of generated frames (RFC 2544 range).
pub const CLIENT4: [u8; 4] = [198, 18, 0, 1];
/// IPv4 server address of generated frames.
pub const SERVER4: [u8; 4] = [198, 18, 0, 2];
/// IPv6 client address of generated frames (RFC 5180 range).
pub const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// IPv6 server address of generated frames.
pub const SERVER6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;
/// LLDP: an ethertype the parser does not handle.
const ETH_P_LLDP: u16 = 0x88cc;
const ETH_HLEN: usize = 14;
const IP4_HLEN: usize = 20;
const IP6_HLEN: usize = 40;

/// One frame of a test mix and the parser slot it must land in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// What the frame is, for messages.
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub expect: ParseCounter,
}

fn eth() -> PacketBuilderStep<etherparse::Ethernet2Header> {
    PacketBuilder::ethernet2(SOURCE_MAC, OTHER_HOST_MAC)
}

fn write<B>(payload: &[u8], write: B) -> Vec<u8>
where
    B: FnOnce(&mut Vec<u8>, &[u8]) -> Result<(), etherparse::err::packet::BuildWriteError>,
{
    let mut out = Vec::new();
    write(&mut out, payload).expect("etherparse writes into a Vec");
    out
}

/// TCP SYN over IPv4.
pub fn tcp4(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = eth()
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(src_port, dst_port, 1, 64240)
        .syn();
    write(payload, |out, p| b.write(out, p))
}

/// TCP SYN over IPv6.
pub fn tcp6(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = eth()
        .ipv6(CLIENT6, SERVER6, 64)
        .tcp(src_port, dst_port, 1, 64240)
        .syn();
    write(payload, |out, p| b.write(out, p))
}

/// UDP over IPv4.
pub fn udp4(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = eth().ipv4(CLIENT4, SERVER4, 64).udp(src_port, dst_port);
    write(payload, |out, p| b.write(out, p))
}

/// UDP over IPv6.
pub fn udp6(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let b = eth().ipv6(CLIENT6, SERVER6, 64).udp(src_port, dst_port);
    write(payload, |out, p| b.write(out, p))
}

/// ICMP echo request.
pub fn icmp4_echo(id: u16, seq: u16) -> Vec<u8> {
    let b = eth()
        .ipv4(CLIENT4, SERVER4, 64)
        .icmpv4_echo_request(id, seq);
    write(b"xlb-ping", |out, p| b.write(out, p))
}

/// ICMPv6 echo request.
pub fn icmp6_echo(id: u16, seq: u16) -> Vec<u8> {
    let b = eth()
        .ipv6(CLIENT6, SERVER6, 64)
        .icmpv6_echo_request(id, seq);
    write(b"xlb-ping", |out, p| b.write(out, p))
}

/// ARP who-has for the server address.
pub fn arp_request() -> Vec<u8> {
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &SOURCE_MAC,
        &CLIENT4,
        &[0; 6],
        &SERVER4,
    )
    .expect("valid ARP lengths");
    write(&[], |out, _| eth().arp(arp).write(out))
}

/// TCP over IPv4 behind one 802.1Q tag (built by hand: this kernel has no 8021q
/// module to tag frames for us).
pub fn vlan_tcp4(vlan: u16, src_port: u16, dst_port: u16) -> Vec<u8> {
    let vid = VlanId::try_new(vlan).expect("VLAN id below 4095");
    let b = eth()
        .single_vlan(vid)
        .ipv4(CLIENT4, SERVER4, 64)
        .tcp(src_port, dst_port, 1, 64240);
    write(b"tagged", |out, p| b.write(out, p))
}

/// UDP over IPv6 behind one 802.1Q tag.
pub fn vlan_udp6(vlan: u16, src_port: u16, dst_port: u16) -> Vec<u8> {
    let vid = VlanId::try_new(vlan).expect("VLAN id below 4095");
    let b = eth()
        .single_vlan(vid)
        .ipv6(CLIENT6, SERVER6, 64)
        .udp(src_port, dst_port);
    write(b"tagged", |out, p| b.write(out, p))
}

/// TCP over IPv6 behind a hop-by-hop and a destination-options header (each the
/// minimal 8 bytes: next header, length 0, PadN).
pub fn tcp6_with_extensions(extensions: usize) -> Vec<u8> {
    let mut frame = tcp6(40000, 80, b"ext");
    let mut chain = Vec::new();
    for i in 0..extensions {
        let kind = if i == 0 {
            IPPROTO_HOPOPTS
        } else {
            IPPROTO_DSTOPTS
        };
        let next = if i + 1 == extensions {
            IPPROTO_TCP
        } else {
            IPPROTO_DSTOPTS
        };
        // Next Header, Hdr Ext Len 0, PadN option of 4 bytes (type 1, len 4, zeros).
        chain.push((kind, [next, 0, 1, 4, 0, 0, 0, 0]));
    }
    if let Some((first, _)) = chain.first() {
        frame[ETH_HLEN + 6] = *first;
    }
    let ext_bytes: Vec<u8> = chain.iter().flat_map(|(_, h)| *h).collect();
    let payload_len = u16::from_be_bytes([frame[ETH_HLEN + 4], frame[ETH_HLEN + 5]]);
    let new_len = payload_len + u16::try_from(ext_bytes.len()).expect("short chain");
    frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&new_len.to_be_bytes());
    frame.splice(ETH_HLEN + IP6_HLEN..ETH_HLEN + IP6_HLEN, ext_bytes);
    frame
}

/// A non-first IPv4 fragment (offset 185 × 8 bytes) of a UDP datagram.
pub fn ip4_later_fragment() -> Vec<u8> {
    let mut frame = udp4(5353, 53, b"not-a-udp-header");
    // Flags 0 (last fragment), offset 185.
    frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&185u16.to_be_bytes());
    fix_ip4_checksum(&mut frame);
    frame
}

/// The first IPv4 fragment (more-fragments set, offset 0) of a UDP datagram: it
/// still carries the UDP header, so it counts as UDP.
pub fn ip4_first_fragment() -> Vec<u8> {
    let mut frame = udp4(5353, 53, b"first-fragment");
    frame[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ip4_checksum(&mut frame);
    frame
}

/// A non-first IPv6 fragment (offset 185 × 8 bytes) of a UDP datagram.
pub fn ip6_later_fragment() -> Vec<u8> {
    let mut frame = udp6(5353, 53, b"not-a-udp-header");
    // Next Header UDP, reserved, offset 185 with M = 0, identification.
    let mut fragment = [17, 0, 0, 0, 0, 0, 0, 0x2a];
    fragment[2..4].copy_from_slice(&(185u16 << 3).to_be_bytes());
    frame[ETH_HLEN + 6] = IPPROTO_FRAGMENT;
    frame.splice(ETH_HLEN + IP6_HLEN..ETH_HLEN + IP6_HLEN, fragment);
    set_ip6_payload_len(&mut frame);
    frame
}

/// An IPv4 packet of a transport the parser does not handle (SCTP).
pub fn sctp4() -> Vec<u8> {
    let mut frame = udp4(2905, 2905, b"sctp-like-payload");
    frame[ETH_HLEN + 9] = IPPROTO_SCTP;
    fix_ip4_checksum(&mut frame);
    frame
}

/// An IPv6 packet of a transport the parser does not handle (SCTP).
pub fn sctp6() -> Vec<u8> {
    let mut frame = udp6(2905, 2905, b"sctp-like-payload");
    frame[ETH_HLEN + 6] = IPPROTO_SCTP;
    frame
}

/// An LLDP frame: an ethertype the parser only counts.
pub fn lldp() -> Vec<u8> {
    let mut frame = Vec::with_capacity(64);
    frame.extend_from_slice(&OTHER_HOST_MAC);
    frame.extend_from_slice(&SOURCE_MAC);
    frame.extend_from_slice(&ETH_P_LLDP.to_be_bytes());
    frame.resize(60, 0);
    frame
}

/// Recomputes the IPv4 header checksum of an untagged frame after a patch.
pub fn fix_ip4_checksum(frame: &mut [u8]) {
    let ihl = usize::from(frame[ETH_HLEN] & 0x0f) * 4;
    frame[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
    let header = &frame[ETH_HLEN..ETH_HLEN + ihl];
    let sum = etherparse::checksum::Sum16BitWords::new()
        .add_slice(header)
        .ones_complement();
    frame[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&sum.to_be_bytes());
}

/// The well-formed classes, one or more frames each.
pub fn well_formed() -> Vec<Sample> {
    vec![
        Sample {
            name: "tcp4 syn",
            frame: tcp4(40000, 80, b""),
            expect: ParseCounter::Tcp4,
        },
        Sample {
            name: "tcp6 syn",
            frame: tcp6(40001, 80, b""),
            expect: ParseCounter::Tcp6,
        },
        Sample {
            name: "udp4",
            frame: udp4(40002, 53, b"query"),
            expect: ParseCounter::Udp4,
        },
        Sample {
            name: "udp6",
            frame: udp6(40003, 53, b"query"),
            expect: ParseCounter::Udp6,
        },
        Sample {
            name: "icmp4 echo",
            frame: icmp4_echo(7, 1),
            expect: ParseCounter::Icmp4,
        },
        Sample {
            name: "icmp6 echo",
            frame: icmp6_echo(7, 1),
            expect: ParseCounter::Icmp6,
        },
        Sample {
            name: "arp request",
            frame: arp_request(),
            expect: ParseCounter::Arp,
        },
        Sample {
            name: "vlan tcp4",
            frame: vlan_tcp4(100, 40004, 443),
            expect: ParseCounter::Tcp4,
        },
        Sample {
            name: "vlan udp6",
            frame: vlan_udp6(200, 40005, 4789),
            expect: ParseCounter::Udp6,
        },
        Sample {
            name: "tcp6 behind 2 extension headers",
            frame: tcp6_with_extensions(2),
            expect: ParseCounter::Tcp6,
        },
        Sample {
            name: "later ip4 fragment",
            frame: ip4_later_fragment(),
            expect: ParseCounter::Fragment4,
        },
        Sample {
            name: "first ip4 fragment",
            frame: ip4_first_fragment(),
            expect: ParseCounter::Udp4,
        },
        Sample {
            name: "later ip6 fragment",
            frame: ip6_later_fragment(),
            expect: ParseCounter::Fragment6,
        },
        Sample {
            name: "sctp4",
            frame: sctp4(),
            expect: ParseCounter::OtherL4Ip4,
        },
        Sample {
            name: "sctp6",
            frame: sctp6(),
            expect: ParseCounter::OtherL4Ip6,
        },
        Sample {
            name: "lldp",
            frame: lldp(),
            expect: ParseCounter::OtherEthertype,
        },
    ]
}

/// Frames the parser must count as malformed, each with its reason. All are at
/// least 14 bytes: neither a veth nor `BPF_PROG_TEST_RUN` delivers less.
pub fn malformed() -> Vec<Sample> {
    let tcp = tcp4(40000, 80, b"");
    let tcp_v6 = tcp6(40000, 80, b"");
    let udp = udp4(40000, 53, b"q");
    let icmp = icmp4_echo(1, 1);
    let icmp_v6 = icmp6_echo(1, 1);
    let vlan = vlan_tcp4(100, 40000, 80);

    let mut bad_version = tcp.clone();
    bad_version[ETH_HLEN] = 0x65;
    let mut bad_ihl = tcp.clone();
    bad_ihl[ETH_HLEN] = 0x44;
    let mut long_total = tcp.clone();
    long_total[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&1500u16.to_be_bytes());
    fix_ip4_checksum(&mut long_total);
    let mut bad_doff = tcp.clone();
    bad_doff[ETH_HLEN + IP4_HLEN + 12] = 0x40; // data offset 4 words
    let mut bad_v6_version = tcp_v6.clone();
    bad_v6_version[ETH_HLEN] = 0x40;
    let mut long_payload = tcp_v6.clone();
    long_payload[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&1400u16.to_be_bytes());
    let mut cut_extension = tcp6_with_extensions(1);
    cut_extension.truncate(ETH_HLEN + IP6_HLEN + 4);
    set_ip6_payload_len(&mut cut_extension);
    let mut too_many = tcp6_with_extensions(xdp_lb::MAX_IP6_EXTENSIONS + 1);
    set_ip6_payload_len(&mut too_many);

    // Cut frames keep consistent IP lengths, so the parser reaches the layer that
    // is short rather than stopping at a length mismatch.
    let cut4 = |frame: &[u8], len: usize| {
        let mut f = frame[..len].to_vec();
        let total = u16::try_from(len - ETH_HLEN).expect("short frame");
        f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
        fix_ip4_checksum(&mut f);
        f
    };
    let cut6 = |frame: &[u8], len: usize| {
        let mut f = frame[..len].to_vec();
        set_ip6_payload_len(&mut f);
        f
    };

    vec![
        Sample {
            name: "vlan tag cut",
            frame: vlan[..16].to_vec(),
            expect: ParseCounter::TruncatedVlan,
        },
        Sample {
            name: "ip4 header cut",
            frame: tcp[..ETH_HLEN + 12].to_vec(),
            expect: ParseCounter::TruncatedIp4,
        },
        Sample {
            name: "ip4 version 6",
            frame: bad_version,
            expect: ParseCounter::BadIp4Version,
        },
        Sample {
            name: "ip4 ihl 4",
            frame: bad_ihl,
            expect: ParseCounter::BadIp4HeaderLength,
        },
        Sample {
            name: "ip4 total length past frame",
            frame: long_total,
            expect: ParseCounter::BadIp4TotalLength,
        },
        Sample {
            name: "tcp header cut",
            frame: cut4(&tcp, ETH_HLEN + IP4_HLEN + 10),
            expect: ParseCounter::TruncatedTcp,
        },
        Sample {
            name: "tcp data offset 4",
            frame: bad_doff,
            expect: ParseCounter::BadTcpDataOffset,
        },
        Sample {
            name: "udp header cut",
            frame: cut4(&udp, ETH_HLEN + IP4_HLEN + 6),
            expect: ParseCounter::TruncatedUdp,
        },
        Sample {
            name: "icmp header cut",
            frame: cut4(&icmp, ETH_HLEN + IP4_HLEN + 4),
            expect: ParseCounter::TruncatedIcmp4,
        },
        Sample {
            name: "ip6 header cut",
            frame: tcp_v6[..ETH_HLEN + 30].to_vec(),
            expect: ParseCounter::TruncatedIp6,
        },
        Sample {
            name: "ip6 version 4",
            frame: bad_v6_version,
            expect: ParseCounter::BadIp6Version,
        },
        Sample {
            name: "ip6 payload length past frame",
            frame: long_payload,
            expect: ParseCounter::BadIp6PayloadLength,
        },
        Sample {
            name: "ip6 extension cut",
            frame: cut_extension,
            expect: ParseCounter::TruncatedIp6Extension,
        },
        Sample {
            name: "ip6 extension chain too long",
            frame: too_many,
            expect: ParseCounter::TooManyIp6Extensions,
        },
        Sample {
            name: "tcp6 header cut",
            frame: cut6(&tcp_v6, ETH_HLEN + IP6_HLEN + 12),
            expect: ParseCounter::TruncatedTcp,
        },
        Sample {
            name: "icmp6 header cut",
            frame: cut6(&icmp_v6, ETH_HLEN + IP6_HLEN + 4),
            expect: ParseCounter::TruncatedIcmp6,
        },
    ]
}

fn set_ip6_payload_len(frame: &mut [u8]) {
    let len = u16::try_from(frame.len() - ETH_HLEN - IP6_HLEN).expect("short frame");
    frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&len.to_be_bytes());
}

/// The demo's and the netns test's mix: every well-formed class and every
/// malformed reason, each sample repeated `copies` times.
pub fn mix(copies: usize) -> Vec<Sample> {
    well_formed()
        .into_iter()
        .chain(malformed())
        .flat_map(|s| std::iter::repeat_n(s, copies))
        .collect()
}
