//! The model's parser: what `xdp_lb` should make of a frame, written from the
//! rules the datapath documents (DESIGN.md "Per packet, in this order", the
//! `ParseCounter` docs) and the RFCs they cite — RFC 791 for the IPv4 header
//! and total length, RFC 8200 for the IPv6 payload length and extension
//! headers — rather than from the datapath's code.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use xdp_lb::{Flow, MAX_IP6_EXTENSIONS, ParseCounter, Protocol};

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_IPV6: u16 = 0x86dd;
const IP4_HLEN: usize = 20;
const IP6_HLEN: usize = 40;
const TCP_HLEN: usize = 20;
/// UDP's header, and the fixed part of an ICMP or ICMPv6 message.
const UDP_HLEN: usize = 8;

pub(crate) const IPPROTO_HOPOPTS: u8 = 0;
pub(crate) const IPPROTO_ICMP: u8 = 1;
pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPPROTO_ROUTING: u8 = 43;
pub(crate) const IPPROTO_FRAGMENT: u8 = 44;
pub(crate) const IPPROTO_ICMPV6: u8 = 58;
pub(crate) const IPPROTO_DSTOPTS: u8 = 60;

/// What the parser makes of a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Headers {
    /// The parser counter the frame must land in.
    pub counter: ParseCounter,
    /// The frame carries an 802.1Q tag.
    pub vlan: bool,
    /// Set exactly for a well-formed IP packet (`counter.is_ip4()` or `is_ip6()`).
    pub ip: Option<IpPacket>,
}

/// A well-formed IPv4 or IPv6 packet inside a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpPacket {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header (after IPv4 options or IPv6 extension headers).
    pub l4: usize,
    /// Where the IP datagram ends in the frame; Ethernet padding may follow.
    pub end: usize,
    /// The transport protocol number.
    pub proto: u8,
    /// Source and destination as on the wire: an IPv4-mapped address in an
    /// IPv6 header stays an IPv6 address.
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// A fragment (first or later) of a larger datagram.
    pub fragment: bool,
    /// A later fragment (offset > 0): what follows `l4` is the middle of
    /// the datagram, no transport header, and `proto` is what the first
    /// fragment's data begins with.
    pub later_fragment: bool,
    /// A fragment's identification (IPv4's 16 bits, or the 32 of the last
    /// IPv6 Fragment header): with the addresses and protocol, the
    /// datagram it belongs to (RFC 791 §2.3, RFC 8200 §4.5).
    pub fragment_id: u32,
}

impl IpPacket {
    pub(crate) const fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// Length of the network header the datapath's answers require: the
    /// fixed header alone, without IPv4 options or IPv6 extension headers.
    pub(crate) const fn fixed_header_len(&self) -> usize {
        if self.is_v4() { IP4_HLEN } else { IP6_HLEN }
    }

    /// The transport header follows the fixed network header directly (no
    /// IPv4 options, no IPv6 extension headers).
    pub(crate) const fn transport_follows_directly(&self) -> bool {
        self.l4 == self.l3 + self.fixed_header_len()
    }
}

impl Headers {
    const fn new(counter: ParseCounter) -> Self {
        Self {
            counter,
            vlan: false,
            ip: None,
        }
    }

    /// The flow of a whole TCP or UDP packet, or of the first fragment of
    /// one (which carries its transport header), as the datapath keys it;
    /// `None` for anything else. IPv4-mapped addresses in an IPv6 header are
    /// never valid on the wire (RFC 4291 §2.5.5.2) and would alias IPv4
    /// keys, so such a packet has no flow.
    pub(crate) fn flow(&self, frame: &[u8]) -> Option<Flow> {
        let proto = match self.counter {
            ParseCounter::Tcp4 | ParseCounter::Tcp6 => Protocol::Tcp,
            ParseCounter::Udp4 | ParseCounter::Udp6 => Protocol::Udp,
            _ => return None,
        };
        let ip = self.ip?;
        if is_v4_mapped(ip.src) || is_v4_mapped(ip.dst) {
            return None;
        }
        let ports = &frame[ip.l4..ip.l4 + 4];
        let src = SocketAddr::new(ip.src, u16::from_be_bytes([ports[0], ports[1]]));
        let dst = SocketAddr::new(ip.dst, u16::from_be_bytes([ports[2], ports[3]]));
        Some(Flow::new(src, dst, proto))
    }

    /// The datagrams a later fragment of a TCP or UDP datagram may belong
    /// to, in the order the datapath looks for their first fragments: the
    /// one its protocol names; for an IPv6 fragment whose Fragment header
    /// names Destination Options, the UDP datagram, then the TCP one (RFC
    /// 8200 §4.5: those options belong to the fragmentable part, so only the
    /// first fragment carries them, and the transport header after them).
    /// Empty for anything else (IPv4-mapped addresses as for `flow`).
    pub(crate) fn later_fragment(&self) -> Vec<Datagram> {
        let Some(ip) = self.ip.filter(|ip| ip.later_fragment) else {
            return Vec::new();
        };
        let protos: &[Protocol] = match ip.proto {
            IPPROTO_TCP => &[Protocol::Tcp],
            IPPROTO_UDP => &[Protocol::Udp],
            IPPROTO_DSTOPTS if !ip.is_v4() => &[Protocol::Udp, Protocol::Tcp],
            _ => &[],
        };
        if is_v4_mapped(ip.src) || is_v4_mapped(ip.dst) {
            return Vec::new();
        }
        protos
            .iter()
            .map(|&proto| Datagram {
                src: ip.src,
                dst: ip.dst,
                proto,
                id: ip.fragment_id,
            })
            .collect()
    }
}

/// A fragmented datagram, as its fragments name it (RFC 791 §2.3, RFC 8200
/// §4.5): the key the datapath remembers a first fragment's ports by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Datagram {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub id: u32,
}

impl Datagram {
    /// The datagram the first fragment `ip` of `flow` begins.
    pub(crate) fn of_first(ip: &IpPacket, flow: &Flow) -> Self {
        Self {
            src: flow.src.ip(),
            dst: flow.dst.ip(),
            proto: flow.proto,
            id: ip.fragment_id,
        }
    }
}

/// An IPv6 address that maps an IPv4 one.
pub(crate) fn is_v4_mapped(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}

/// Parses `frame` as the datapath must.
pub(crate) fn parse(frame: &[u8]) -> Headers {
    let Some(ethertype) = be16(frame, 12) else {
        return Headers::new(ParseCounter::TruncatedEthernet);
    };
    let (ethertype, l3, vlan) = if ethertype == ETH_P_8021Q {
        // One tag is handled; a second one is just another EtherType.
        let Some(inner) = be16(frame, ETH_HLEN + 2) else {
            return Headers::new(ParseCounter::TruncatedVlan);
        };
        (inner, ETH_HLEN + VLAN_HLEN, true)
    } else {
        (ethertype, ETH_HLEN, false)
    };
    let parsed = match ethertype {
        ETH_P_IPV4 => ipv4(frame, l3),
        ETH_P_IPV6 => ipv6(frame, l3),
        ETH_P_ARP => Err(ParseCounter::Arp),
        _ => Err(ParseCounter::OtherEthertype),
    };
    match parsed {
        Ok((counter, ip)) => Headers {
            counter,
            vlan,
            ip: Some(ip),
        },
        Err(counter) => Headers {
            counter,
            vlan,
            ip: None,
        },
    }
}

/// A well-formed IPv4 packet's counter and headers, or the counter that says
/// why it is not one.
fn ipv4(frame: &[u8], l3: usize) -> Result<(ParseCounter, IpPacket), ParseCounter> {
    let header = frame
        .get(l3..l3 + IP4_HLEN)
        .ok_or(ParseCounter::TruncatedIp4)?;
    if header[0] >> 4 != 4 {
        return Err(ParseCounter::BadIp4Version);
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < IP4_HLEN || l3 + header_len > frame.len() {
        return Err(ParseCounter::BadIp4HeaderLength);
    }
    // The datagram may be shorter than the frame (Ethernet padding), never longer.
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len < header_len || l3 + total_len > frame.len() {
        return Err(ParseCounter::BadIp4TotalLength);
    }
    let frags = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = frags & 0x2000 != 0;
    let offset = frags & 0x1fff;
    let ip = IpPacket {
        l3,
        l4: l3 + header_len,
        end: l3 + total_len,
        proto: header[9],
        src: IpAddr::from(Ipv4Addr::new(
            header[12], header[13], header[14], header[15],
        )),
        dst: IpAddr::from(Ipv4Addr::new(
            header[16], header[17], header[18], header[19],
        )),
        ttl: header[8],
        fragment: more_fragments || offset != 0,
        later_fragment: offset != 0,
        fragment_id: u32::from(u16::from_be_bytes([header[4], header[5]])),
    };
    if offset != 0 {
        // A later fragment carries no transport header.
        return Ok((ParseCounter::Fragment4, ip));
    }
    let counter = transport(frame, &ip, IPPROTO_ICMP)?;
    Ok((counter, ip))
}

/// A well-formed IPv6 packet's counter and headers (extension headers walked
/// up to `MAX_IP6_EXTENSIONS`), or the counter that says why it is not one.
fn ipv6(frame: &[u8], l3: usize) -> Result<(ParseCounter, IpPacket), ParseCounter> {
    let header = frame
        .get(l3..l3 + IP6_HLEN)
        .ok_or(ParseCounter::TruncatedIp6)?;
    if header[0] >> 4 != 6 {
        return Err(ParseCounter::BadIp6Version);
    }
    // A jumbogram (payload length 0 with a Jumbo option, RFC 2675) never fits
    // a frame here: the length is taken as it is.
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if l3 + IP6_HLEN + payload_len > frame.len() {
        return Err(ParseCounter::BadIp6PayloadLength);
    }
    let address = |at: usize| {
        let octets: [u8; 16] = header[at..at + 16].try_into().expect("16 bytes");
        IpAddr::from(Ipv6Addr::from(octets))
    };
    let mut ip = IpPacket {
        l3,
        l4: l3 + IP6_HLEN,
        end: l3 + IP6_HLEN + payload_len,
        proto: header[6],
        src: address(8),
        dst: address(24),
        ttl: header[7],
        fragment: false,
        later_fragment: false,
        fragment_id: 0,
    };
    // Extension headers, like the transport header, must lie in the
    // datagram: what follows it in the frame is Ethernet padding.
    let in_datagram = |at: usize, len: usize| {
        frame
            .get(at..at + len)
            .filter(|_| at + len <= ip.end)
            .ok_or(ParseCounter::TruncatedIp6Extension)
    };
    for _ in 0..MAX_IP6_EXTENSIONS {
        match ip.proto {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next Header, Hdr Ext Len in 8-octet units after the first 8.
                let ext = in_datagram(ip.l4, 2)?;
                let len = (usize::from(ext[1]) + 1) * 8;
                in_datagram(ip.l4, len)?;
                ip.proto = ext[0];
                ip.l4 += len;
            }
            IPPROTO_FRAGMENT => {
                let ext = in_datagram(ip.l4, 8)?;
                ip.fragment = true;
                ip.fragment_id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                ip.proto = ext[0];
                ip.l4 += 8;
                if u16::from_be_bytes([ext[2], ext[3]]) >> 3 != 0 {
                    ip.later_fragment = true;
                    return Ok((ParseCounter::Fragment6, ip));
                }
            }
            _ => return Ok((transport(frame, &ip, IPPROTO_ICMPV6)?, ip)),
        }
    }
    if matches!(
        ip.proto,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT
    ) {
        return Err(ParseCounter::TooManyIp6Extensions);
    }
    Ok((transport(frame, &ip, IPPROTO_ICMPV6)?, ip))
}

/// The counter of the transport header at `ip.l4`; `icmp` is the family's
/// ICMP protocol number (ICMP in IPv4, ICMPv6 in IPv6).
///
/// The headers must lie whole inside the IP datagram: what follows it in the
/// frame is Ethernet padding, which the kernel's receive path trims before
/// it looks at a transport header (`ip_rcv_core`, `ipv6_rcv`).
fn transport(frame: &[u8], ip: &IpPacket, icmp: u8) -> Result<ParseCounter, ParseCounter> {
    use ParseCounter::*;
    let v4 = ip.is_v4();
    let fits = |len: usize| ip.l4 + len <= ip.end;
    match ip.proto {
        IPPROTO_TCP => {
            if !fits(TCP_HLEN) {
                return Err(TruncatedTcp);
            }
            let data_offset = usize::from(frame[ip.l4 + 12] >> 4) * 4;
            if data_offset < TCP_HLEN || !fits(data_offset) {
                return Err(BadTcpDataOffset);
            }
            Ok(if v4 { Tcp4 } else { Tcp6 })
        }
        IPPROTO_UDP if fits(UDP_HLEN) => Ok(if v4 { Udp4 } else { Udp6 }),
        IPPROTO_UDP => Err(TruncatedUdp),
        proto if proto == icmp => match (v4, fits(UDP_HLEN)) {
            (true, true) => Ok(Icmp4),
            (true, false) => Err(TruncatedIcmp4),
            (false, true) => Ok(Icmp6),
            (false, false) => Err(TruncatedIcmp6),
        },
        _ => Ok(if v4 { OtherL4Ip4 } else { OtherL4Ip6 }),
    }
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    frame
        .get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}
