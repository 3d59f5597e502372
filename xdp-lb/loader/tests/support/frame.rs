//! Frames described field by field and built by etherparse, which computes the
//! IPv4 header checksum and the TCP/UDP checksums from scratch. A test builds
//! its input from a `Packet`, and its expected output from a changed copy of
//! it: the datapath's incremental checksum updates are thereby checked against
//! an independent full computation.

use std::net::{IpAddr, SocketAddr};

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, EtherType, Ethernet2Header, Icmpv4Type, Icmpv6Type, IpHeaders,
    IpNumber, Ipv4Header, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, PacketBuilder, TcpHeader,
    VlanId, icmpv4::DestUnreachableHeader, icmpv6::DestUnreachableCode,
};
use xdp_lb::{Flow, Protocol};

/// TCP flags of a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub psh: bool,
}

impl TcpFlags {
    pub(crate) const SYN: Self = Self {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
    pub(crate) const SYN_ACK: Self = Self {
        syn: true,
        ack: true,
        ..Self::NONE
    };
    pub(crate) const ACK: Self = Self {
        ack: true,
        ..Self::NONE
    };
    pub(crate) const PSH_ACK: Self = Self {
        ack: true,
        psh: true,
        ..Self::NONE
    };
    pub(crate) const FIN_ACK: Self = Self {
        fin: true,
        ack: true,
        ..Self::NONE
    };
    pub(crate) const RST: Self = Self {
        rst: true,
        ..Self::NONE
    };
    const NONE: Self = Self {
        syn: false,
        ack: false,
        fin: false,
        rst: false,
        psh: false,
    };
}

/// The transport header of a `Packet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4 {
    Tcp(TcpFlags),
    /// UDP; `zero_checksum` sends 0 ("no checksum", IPv4 only) instead of the sum.
    Udp {
        zero_checksum: bool,
    },
}

/// Extra network-layer headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum IpExtras {
    #[default]
    None,
    /// IPv4 options: 8 bytes (NOP ×7, EOL), so IHL = 7.
    Ipv4Options,
    /// An IPv6 Destination Options header (8 bytes of PadN) before the transport.
    Ipv6DestinationOptions,
}

/// A TCP or UDP frame, field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Packet {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    pub extras: IpExtras,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// Ethernet padding after the IP datagram (as short frames carry on a wire).
    pub trailer: Vec<u8>,
}

impl Packet {
    /// A TCP segment with `flags`, TTL 64, no payload.
    pub(crate) fn tcp(
        macs: ([u8; 6], [u8; 6]),
        src: SocketAddr,
        dst: SocketAddr,
        flags: TcpFlags,
    ) -> Self {
        Self {
            src_mac: macs.0,
            dst_mac: macs.1,
            vlan: None,
            src,
            dst,
            ttl: 64,
            extras: IpExtras::None,
            l4: L4::Tcp(flags),
            payload: Vec::new(),
            trailer: Vec::new(),
        }
    }

    /// A UDP datagram with a checksum, TTL 64, and `payload`.
    pub(crate) fn udp(
        macs: ([u8; 6], [u8; 6]),
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) -> Self {
        Self {
            l4: L4::Udp {
                zero_checksum: false,
            },
            payload: payload.to_vec(),
            ..Self::tcp(macs, src, dst, TcpFlags::default())
        }
    }

    /// The flow as the datapath keys it.
    pub(crate) fn flow(&self) -> Flow {
        let proto = match self.l4 {
            L4::Tcp(_) => Protocol::Tcp,
            L4::Udp { .. } => Protocol::Udp,
        };
        Flow::new(self.src, self.dst, proto)
    }

    /// This packet with another destination (DNAT).
    pub(crate) fn with_dst(&self, dst: SocketAddr) -> Self {
        Self {
            dst,
            ..self.clone()
        }
    }

    /// This packet with another source (reverse NAT).
    pub(crate) fn with_src(&self, src: SocketAddr) -> Self {
        Self {
            src,
            ..self.clone()
        }
    }

    /// This packet as a router sends it on: new MACs, TTL one less.
    pub(crate) fn routed(&self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        Self {
            src_mac,
            dst_mac,
            ttl: self.ttl - 1,
            ..self.clone()
        }
    }

    /// This packet with TCP `flags`.
    pub(crate) fn with_flags(&self, flags: TcpFlags) -> Self {
        Self {
            l4: L4::Tcp(flags),
            ..self.clone()
        }
    }

    /// Offset of the transport header in the frame.
    fn l4_offset(&self) -> usize {
        let vlan = if self.vlan.is_some() { 4 } else { 0 };
        let ip = match (self.src.ip(), self.extras) {
            (IpAddr::V4(_), IpExtras::Ipv4Options) => 28,
            (IpAddr::V4(_), _) => 20,
            (IpAddr::V6(_), IpExtras::Ipv6DestinationOptions) => 48,
            (IpAddr::V6(_), _) => 40,
        };
        14 + vlan + ip
    }

    /// The frame, with every checksum computed from scratch.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let ip = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut header = Ipv4Header {
                    time_to_live: self.ttl,
                    identification: 0x1234,
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Ipv4Header::default()
                };
                if self.extras == IpExtras::Ipv4Options {
                    header.options = [1, 1, 1, 1, 1, 1, 1, 0].into();
                }
                IpHeaders::Ipv4(header, Default::default())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let header = Ipv6Header {
                    hop_limit: self.ttl,
                    flow_label: 0x12345.try_into().expect("a 20-bit label"),
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Ipv6Header::default()
                };
                let mut extensions = Ipv6Extensions::default();
                if self.extras == IpExtras::Ipv6DestinationOptions {
                    // PadN of 4 bytes + PadN of 0 bytes: 6 bytes after the
                    // next-header and length fields (8 bytes in all).
                    let options = Ipv6RawExtHeader::new_raw(IpNumber(59), &[1, 2, 0, 0, 1, 0])
                        .expect("a valid extension header");
                    extensions.destination_options = Some(options);
                }
                IpHeaders::Ipv6(header, extensions)
            }
            _ => panic!("source and destination of different families"),
        };
        let ethernet = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let step = match self.vlan {
            Some(id) => ethernet
                .single_vlan(VlanId::try_new(id).expect("a 12-bit VLAN ID"))
                .ip(ip),
            None => ethernet.ip(ip),
        };
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp(flags) => {
                let mut tcp = TcpHeader::new(self.src.port(), self.dst.port(), 1_000_000, 64240);
                tcp.syn = flags.syn;
                tcp.fin = flags.fin;
                tcp.rst = flags.rst;
                tcp.psh = flags.psh;
                if flags.ack {
                    tcp.ack = true;
                    tcp.acknowledgment_number = 7_000_000;
                }
                step.tcp_header(tcp)
                    .write(&mut out, &self.payload)
                    .expect("a TCP frame");
            }
            L4::Udp { zero_checksum } => {
                step.udp(self.src.port(), self.dst.port())
                    .write(&mut out, &self.payload)
                    .expect("a UDP frame");
                if zero_checksum {
                    assert!(self.src.is_ipv4(), "UDP without checksum is IPv4 only");
                    let at = self.l4_offset() + 6;
                    out[at..at + 2].copy_from_slice(&[0, 0]);
                }
            }
        }
        out.extend_from_slice(&self.trailer);
        out
    }
}

/// The UDP or TCP checksum field of a frame built from `packet`.
pub(crate) fn l4_checksum(packet: &Packet, frame: &[u8]) -> u16 {
    let at = packet.l4_offset()
        + match packet.l4 {
            L4::Tcp(_) => 16,
            L4::Udp { .. } => 6,
        };
    u16::from_be_bytes([frame[at], frame[at + 1]])
}

/// `packet` with its first two payload bytes chosen so that, once translated
/// to `backend`, its transport checksum sums to zero: the sent checksum is
/// then 0x0000 for TCP and 0xffff for UDP (RFC 768: a computed 0 is sent as
/// all ones). The corner case of one's-complement arithmetic.
pub(crate) fn with_zero_sum_after(packet: &Packet, backend: SocketAddr) -> Packet {
    let mut p = packet.clone();
    p.payload.splice(0..0, [0, 0]);
    let translated = p.with_dst(backend).bytes();
    // With the word at 0 the checksum is !S; the word !S makes the sum 0xffff.
    let word = l4_checksum(&p, &translated);
    p.payload[..2].copy_from_slice(&word.to_be_bytes());
    p
}

/// An ARP request (who has `target`? tell `sender`), broadcast.
pub(crate) fn arp_request(mac: [u8; 6], sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: sender,
        target_mac: [0; 6],
        target_ipv4: target,
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(mac, [0xff; 6])
        .arp(arp.into())
        .write(&mut out)
        .expect("an ARP frame");
    out
}

/// A frame of another EtherType (e.g. LLDP, 0x88cc) carrying `payload`.
pub(crate) fn ethertype_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    ether_type: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Ethernet2Header {
        source: src_mac,
        destination: dst_mac,
        ether_type: EtherType(ether_type),
    }
    .to_bytes()
    .to_vec();
    out.extend_from_slice(payload);
    out
}

/// An IPv4 fragment of a UDP datagram: the first one (with the UDP header,
/// `more_fragments` set) when `offset_units` is 0, a later one otherwise.
pub(crate) fn udp4_fragment(
    macs: ([u8; 6], [u8; 6]),
    src: SocketAddr,
    dst: SocketAddr,
    offset_units: u16,
) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 addresses");
    };
    let header = Ipv4Header {
        time_to_live: 64,
        identification: 0x4242,
        dont_fragment: false,
        more_fragments: true,
        fragment_offset: offset_units.try_into().expect("a 13-bit offset"),
        source: s.octets(),
        destination: d.octets(),
        ..Ipv4Header::default()
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ip(IpHeaders::Ipv4(header, Default::default()))
        .udp(src.port(), dst.port())
        .write(&mut out, &[0x5a; 32])
        .expect("a fragment");
    out
}

/// An ICMP echo request from `src` to `dst`.
pub(crate) fn icmp4_echo(macs: ([u8; 6], [u8; 6]), src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ipv4(src, dst, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut out, b"ping")
        .expect("an ICMP frame");
    out
}

/// `inner` (an IP packet) inside an outer header from `source` to `to`, as
/// direct server return sends it: the inner family's next header (4 or 41),
/// DF on IPv4, `ttl`; every checksum computed by etherparse.
pub(crate) fn encapsulated(
    macs: ([u8; 6], [u8; 6]),
    source: IpAddr,
    to: IpAddr,
    ttl: u8,
    inner: &[u8],
) -> Vec<u8> {
    let next = if inner[0] >> 4 == 4 {
        IpNumber(4)
    } else {
        IpNumber(41)
    };
    let ip = match (source, to) {
        (IpAddr::V4(source), IpAddr::V4(to)) => {
            let length = u16::try_from(inner.len()).expect("a packet");
            let mut header = Ipv4Header::new(length, ttl, next, source.octets(), to.octets())
                .expect("an IPv4 header");
            header.dont_fragment = true;
            IpHeaders::Ipv4(header, Default::default())
        }
        (IpAddr::V6(source), IpAddr::V6(to)) => IpHeaders::Ipv6(
            Ipv6Header {
                payload_length: u16::try_from(inner.len()).expect("a packet"),
                next_header: next,
                hop_limit: ttl,
                source: source.octets(),
                destination: to.octets(),
                ..Ipv6Header::default()
            },
            Default::default(),
        ),
        _ => panic!("source and destination of different families"),
    };
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.0, macs.1)
        .ip(ip)
        .write(&mut out, next, inner)
        .expect("an encapsulated frame");
    out
}

/// The network header of an answer the LB writes itself (a reset, an ICMP
/// error) from `from` to `to`: TTL 64, identification 0 and no DF, as Linux's
/// own answers.
pub(crate) fn answer_ip(from: IpAddr, to: IpAddr) -> IpHeaders {
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => IpHeaders::Ipv4(
            Ipv4Header {
                time_to_live: 64,
                identification: 0,
                dont_fragment: false,
                source: from.octets(),
                destination: to.octets(),
                ..Ipv4Header::default()
            },
            Default::default(),
        ),
        (IpAddr::V6(from), IpAddr::V6(to)) => IpHeaders::Ipv6(
            Ipv6Header {
                hop_limit: 64,
                source: from.octets(),
                destination: to.octets(),
                ..Ipv6Header::default()
            },
            Default::default(),
        ),
        _ => panic!("source and destination of different families"),
    }
}

/// The IP packet of a frame (without its Ethernet header): what an ICMP
/// error quotes.
pub(crate) fn ip_packet(frame: &[u8]) -> Vec<u8> {
    frame[14..].to_vec()
}

/// What an ICMP or ICMPv6 error says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ErrorKind {
    /// IPv4 fragmentation needed, IPv6 packet too big, with the MTU.
    TooBig { mtu: u16 },
    /// Port unreachable.
    PortUnreachable,
}

/// An ICMP (IPv4) or ICMPv6 error from `from` to `to` quoting `quoted` (an IP
/// packet, possibly cut short), every checksum computed by etherparse.
pub(crate) fn icmp_error(
    macs: ([u8; 6], [u8; 6]),
    from: IpAddr,
    to: IpAddr,
    ttl: u8,
    kind: ErrorKind,
    quoted: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(macs.0, macs.1);
    let mut out = Vec::new();
    match (from, to) {
        (IpAddr::V4(from), IpAddr::V4(to)) => {
            let header = match kind {
                ErrorKind::TooBig { mtu } => {
                    DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu }
                }
                ErrorKind::PortUnreachable => DestUnreachableHeader::Port,
            };
            eth.ipv4(from.octets(), to.octets(), ttl)
                .icmpv4(Icmpv4Type::DestinationUnreachable(header))
                .write(&mut out, quoted)
        }
        (IpAddr::V6(from), IpAddr::V6(to)) => {
            let icmp = match kind {
                ErrorKind::TooBig { mtu } => Icmpv6Type::PacketTooBig {
                    mtu: u32::from(mtu),
                },
                ErrorKind::PortUnreachable => {
                    Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Port)
                }
            };
            eth.ipv6(from.octets(), to.octets(), ttl)
                .icmpv6(icmp)
                .write(&mut out, quoted)
        }
        _ => panic!("mixed families"),
    }
    .expect("ICMP error frame");
    out
}
