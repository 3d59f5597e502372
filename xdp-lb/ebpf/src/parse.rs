//! The packet parser shared by every program: Ethernet (with at most one 802.1Q
//! tag), IPv4, IPv6 (extension headers walked in a bounded loop), TCP, UDP,
//! ICMP and ICMPv6. It reads only; it never changes the frame.
//!
//! Every frame ends in exactly one `ParseCounter`: a packet class, or the reason
//! it is malformed. The checks follow what the kernel's own receive path rejects
//! (RFC 791 IHL and total length, RFC 8200 payload length) so that a frame the
//! parser calls well-formed is one the stack would accept.
use network_types::{
    eth::EthHdr,
    icmp::Icmpv4Hdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
    tcp::TcpHdr,
    udp::UdpHdr,
    vlan::VlanHdr,
};
use xdp_lb_common::stats::{MAX_IP6_EXTENSIONS, ParseCounter};

use crate::{
    packet::{Frame, FrameSource},
    unaligned::PacketBytes,
    wire::{
        ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, ETH_TYPE, IP4_FRAGS, IP4_ID, IP4_MF,
        IP4_OFFSET_MASK, IP4_PROTO, IP4_TOTAL_LEN, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
        IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
    },
};

/// Where the headers of a parsed frame are. Offsets are from the start of the
/// frame; they are meaningful only as far as `counter` says the frame got.
#[derive(Clone, Copy)]
pub struct Parsed {
    /// The slot this frame is counted in.
    pub counter: ParseCounter,
    /// Offset of the network header (14, or 18 behind a VLAN tag).
    pub l3_offset: usize,
    /// Offset of the transport header.
    pub l4_offset: usize,
    /// Transport protocol number (after IPv6 extension headers).
    pub l4_proto: u8,
    /// The 802.1Q TCI in network order, or 0 for an untagged frame.
    pub vlan_tci: u16,
    /// Nonzero when the frame had an 802.1Q tag.
    pub has_vlan: u8,
    /// Nonzero when this is a fragment of a larger datagram (first or later).
    pub is_fragment: u8,
    /// A fragment's IP identification (IPv4's 16 bits, or the 32 of IPv6's
    /// Fragment header), host order; 0 for a whole packet.
    pub fragment_id: u32,
}

impl Parsed {
    #[inline(always)]
    const fn new(counter: ParseCounter) -> Self {
        Self {
            counter,
            l3_offset: 0,
            l4_offset: 0,
            l4_proto: 0,
            vlan_tci: 0,
            has_vlan: 0,
            is_fragment: 0,
            fragment_id: 0,
        }
    }

    #[inline(always)]
    const fn with(mut self, counter: ParseCounter) -> Self {
        self.counter = counter;
        self
    }
}

/// Parses the frame. Never fails: a frame that cannot be parsed gets the counter
/// of the first reason found. A BPF subprogram of its own (not inlined): its
/// header reads need stack that the caller then gets back.
#[inline(never)]
pub fn parse<S: FrameSource>(source: &S) -> Parsed {
    let frame = &source.frame();
    // The EtherType ends the Ethernet header: read, the header is whole.
    let Some(outer) = frame.load::<2>(ETH_TYPE) else {
        return Parsed::new(ParseCounter::TruncatedEthernet);
    };
    let mut p = Parsed::new(ParseCounter::OtherEthertype);
    let mut ethertype = u16::from_be_bytes(outer);
    p.l3_offset = EthHdr::LEN;
    if ethertype == ETH_P_8021Q {
        let Some(vlan) = frame.read::<VlanHdr>(EthHdr::LEN) else {
            return p.with(ParseCounter::TruncatedVlan);
        };
        p.has_vlan = 1;
        p.vlan_tci = u16::from_ne_bytes(vlan.tci);
        ethertype = u16::from_be(vlan.ether_type);
        p.l3_offset = EthHdr::LEN + VlanHdr::LEN;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ip4(frame, p),
        ETH_P_IPV6 => parse_ip6(frame, p),
        ETH_P_ARP => p.with(ParseCounter::Arp),
        // Includes a second (stacked) VLAN tag: one tag is handled, more are not.
        _ => p,
    }
}

#[inline(always)]
fn parse_ip4(frame: &Frame, mut p: Parsed) -> Parsed {
    let l3 = p.l3_offset;
    let Some(ip) = frame.get::<Ipv4Hdr>(l3) else {
        return p.with(ParseCounter::TruncatedIp4);
    };
    // SAFETY: `get` checked the whole header lies in the frame.
    let (vihl, tot_len, id, frags, proto) = unsafe {
        let ip = ip.cast::<u8>();
        (
            *ip,
            <[u8; 2]>::load(ip.add(IP4_TOTAL_LEN)),
            <[u8; 2]>::load(ip.add(IP4_ID)),
            <[u8; 2]>::load(ip.add(IP4_FRAGS)),
            *ip.add(IP4_PROTO),
        )
    };
    if vihl >> 4 != 4 {
        return p.with(ParseCounter::BadIp4Version);
    }
    // Masked to 4 bits: the verifier sees a bounded offset (at most 60).
    let header_len = ((vihl & 0x0f) as usize) * 4;
    if header_len < Ipv4Hdr::LEN || l3 + header_len > frame.len() {
        return p.with(ParseCounter::BadIp4HeaderLength);
    }
    let total_len = u16::from_be_bytes(tot_len) as usize;
    // Ethernet may pad short frames, so the datagram may be shorter than the frame.
    if total_len < header_len || l3 + total_len > frame.len() {
        return p.with(ParseCounter::BadIp4TotalLength);
    }
    p.l4_offset = l3 + header_len;
    p.l4_proto = proto;
    // Transport headers must lie in the datagram, not in the padding after it.
    let end = l3 + total_len;
    let frags = u16::from_be_bytes(frags);
    if frags & (IP4_MF | IP4_OFFSET_MASK) != 0 {
        p.is_fragment = 1;
        p.fragment_id = u32::from(u16::from_be_bytes(id));
        if frags & IP4_OFFSET_MASK != 0 {
            // A later fragment: no transport header to look at.
            return p.with(ParseCounter::Fragment4);
        }
    }
    match proto {
        IPPROTO_TCP => check_tcp(frame, p, end, ParseCounter::Tcp4),
        IPPROTO_UDP => check_len::<UdpHdr>(
            frame,
            p,
            end,
            ParseCounter::Udp4,
            ParseCounter::TruncatedUdp,
        ),
        IPPROTO_ICMP => check_len::<Icmpv4Hdr>(
            frame,
            p,
            end,
            ParseCounter::Icmp4,
            ParseCounter::TruncatedIcmp4,
        ),
        _ => p.with(ParseCounter::OtherL4Ip4),
    }
}

#[inline(always)]
fn parse_ip6(frame: &Frame, mut p: Parsed) -> Parsed {
    let l3 = p.l3_offset;
    let Some(ip) = frame.read::<Ipv6Hdr>(l3) else {
        return p.with(ParseCounter::TruncatedIp6);
    };
    if ip.vcf[0] >> 4 != 6 {
        return p.with(ParseCounter::BadIp6Version);
    }
    let payload_len = u16::from_be_bytes(ip.payload_len) as usize;
    // A jumbogram (payload length 0, RFC 2675) never fits a frame here; it is
    // rejected like any other length that disagrees with the frame.
    if l3 + Ipv6Hdr::LEN + payload_len > frame.len() {
        return p.with(ParseCounter::BadIp6PayloadLength);
    }
    // Headers must lie in the datagram, not in the padding after it.
    let end = l3 + Ipv6Hdr::LEN + payload_len;
    let mut next = ip.next_hdr;
    let mut offset = l3 + Ipv6Hdr::LEN;
    // Bounded walk (RFC 8200 §4.1 order); `offset` grows by at most 2048 per step.
    for _ in 0..MAX_IP6_EXTENSIONS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // Next Header, Hdr Ext Len (in 8-octet units, not counting the first 8).
                let Some(ext) = frame.load::<2>(offset).filter(|_| offset + 2 <= end) else {
                    return p.with(ParseCounter::TruncatedIp6Extension);
                };
                let len = (ext[1] as usize + 1) * 8;
                if offset + len > end {
                    return p.with(ParseCounter::TruncatedIp6Extension);
                }
                next = ext[0];
                offset += len;
            }
            IPPROTO_FRAGMENT => {
                // Next Header, reserved, Fragment Offset (13 bits) + flags, Identification.
                let Some(ext) = frame.load::<8>(offset).filter(|_| offset + 8 <= end) else {
                    return p.with(ParseCounter::TruncatedIp6Extension);
                };
                p.is_fragment = 1;
                p.fragment_id = u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]);
                next = ext[0];
                offset += 8;
                let frag_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
                if frag_offset != 0 {
                    p.l4_offset = offset;
                    p.l4_proto = next;
                    return p.with(ParseCounter::Fragment6);
                }
            }
            _ => return parse_ip6_l4(frame, p, next, offset, end),
        }
    }
    match next {
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            p.with(ParseCounter::TooManyIp6Extensions)
        }
        _ => parse_ip6_l4(frame, p, next, offset, end),
    }
}

#[inline(always)]
fn parse_ip6_l4(frame: &Frame, mut p: Parsed, proto: u8, offset: usize, end: usize) -> Parsed {
    p.l4_offset = offset;
    p.l4_proto = proto;
    match proto {
        IPPROTO_TCP => check_tcp(frame, p, end, ParseCounter::Tcp6),
        IPPROTO_UDP => check_len::<UdpHdr>(
            frame,
            p,
            end,
            ParseCounter::Udp6,
            ParseCounter::TruncatedUdp,
        ),
        // ICMPv6's fixed header is the same 8 bytes as ICMPv4's.
        IPPROTO_ICMPV6 => check_len::<Icmpv4Hdr>(
            frame,
            p,
            end,
            ParseCounter::Icmp6,
            ParseCounter::TruncatedIcmp6,
        ),
        _ => p.with(ParseCounter::OtherL4Ip6),
    }
}

/// The transport header `T` lies whole in the frame and in the datagram,
/// which ends at `end` (the rest of the frame is Ethernet padding).
#[inline(always)]
fn check_len<T: Copy>(
    frame: &Frame,
    p: Parsed,
    end: usize,
    ok: ParseCounter,
    short: ParseCounter,
) -> Parsed {
    if frame.get::<T>(p.l4_offset).is_some() && p.l4_offset + size_of::<T>() <= end {
        p.with(ok)
    } else {
        p.with(short)
    }
}

#[inline(always)]
fn check_tcp(frame: &Frame, p: Parsed, end: usize, ok: ParseCounter) -> Parsed {
    let Some(tcp) = frame.read::<TcpHdr>(p.l4_offset) else {
        return p.with(ParseCounter::TruncatedTcp);
    };
    if p.l4_offset + TcpHdr::LEN > end {
        return p.with(ParseCounter::TruncatedTcp);
    }
    let data_offset = (tcp.doff() as usize) * 4;
    if data_offset < TcpHdr::LEN || p.l4_offset + data_offset > end {
        return p.with(ParseCounter::BadTcpDataOffset);
    }
    p.with(ok)
}

/// The floor program's whole parse: an untagged Ethernet/IPv4/TCP frame with a
/// 20-byte IPv4 header.
#[inline(always)]
pub fn is_plain_tcp4(frame: &Frame) -> bool {
    let Some(eth) = frame.read::<EthHdr>(0) else {
        return false;
    };
    if u16::from_be(eth.ether_type) != ETH_P_IPV4 {
        return false;
    }
    let Some(ip) = frame.read::<Ipv4Hdr>(EthHdr::LEN) else {
        return false;
    };
    ip.vihl == 0x45
        && ip.proto == IPPROTO_TCP
        && frame.get::<TcpHdr>(EthHdr::LEN + Ipv4Hdr::LEN).is_some()
}
