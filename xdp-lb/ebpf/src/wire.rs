//! What the bytes on the wire mean: EtherTypes, protocol numbers, header
//! lengths, field offsets and flags, named once for every program.

/// EtherTypes.
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_IPV6: u16 = 0x86DD;

/// IP protocol numbers (IPv6 next headers).
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Header lengths without options.
pub const IP4_HLEN: usize = 20;
pub const IP6_HLEN: usize = 40;
pub const TCP_HLEN: usize = 20;
pub const UDP_HLEN: usize = 8;
/// ICMP and ICMPv6: type, code, checksum and four bytes of the type's own.
pub const ICMP_HLEN: usize = 8;

/// IPv4 header fields.
pub const IP4_TOTAL_LEN: usize = 2;
/// Identification: the datagram a fragment belongs to.
pub const IP4_ID: usize = 4;
/// Flags and fragment offset.
pub const IP4_FRAGS: usize = 6;
pub const IP4_TTL: usize = 8;
pub const IP4_PROTO: usize = 9;
pub const IP4_CSUM: usize = 10;
pub const IP4_SRC: usize = 12;
pub const IP4_DST: usize = 16;
/// IPv4 "don't fragment" and "more fragments" flags and fragment offset
/// mask, in host order of the 16-bit field at `IP4_FRAGS`.
pub const IP4_DF: u16 = 0x4000;
pub const IP4_MF: u16 = 0x2000;
pub const IP4_OFFSET_MASK: u16 = 0x1fff;

/// IPv6 header fields.
pub const IP6_HOP_LIMIT: usize = 7;
pub const IP6_SRC: usize = 8;
pub const IP6_DST: usize = 24;

/// TCP and UDP header fields (the ports are where both have them).
pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
/// The data offset, in 32-bit words, in the high nibble.
pub const TCP_DATA_OFFSET: usize = 12;
pub const TCP_FLAGS: usize = 13;
pub const TCP_CSUM: usize = 16;
pub const UDP_CSUM: usize = 6;
/// The ICMP checksum.
pub const ICMP_CSUM: usize = 2;

/// TCP flag bits.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// IPv6 header fields before the addresses.
pub const IP6_PAYLOAD_LEN: usize = 4;
pub const IP6_NEXT_HEADER: usize = 6;

/// Ethernet: the destination and source MACs, the EtherType (and where it
/// is behind one 802.1Q tag), the header's length, and the group bit of a
/// MAC's first byte (multicast and broadcast addresses have it).
pub const ETH_ALEN: usize = 6;
pub const ETH_DST: usize = 0;
pub const ETH_SRC: usize = 6;
pub const ETH_TYPE: usize = 12;
pub const ETH_TYPE_TAGGED: usize = 16;
pub const ETH_HLEN: usize = 14;
pub const ETH_GROUP_BIT: u8 = 0x01;

/// ARP over Ethernet for IPv4 (RFC 826): hardware type, protocol type,
/// hardware and protocol address lengths, operation, then the sender's MAC
/// and IPv4 address and the target's.
pub const ARP_LEN: usize = 28;
pub const ARP_OP: usize = 6;
pub const ARP_SHA: usize = 8;
pub const ARP_SPA: usize = 14;
pub const ARP_THA: usize = 18;
pub const ARP_TPA: usize = 24;
/// The first 8 bytes of an Ethernet/IPv4 ARP request: hardware type 1,
/// protocol type 0x0800, lengths 6 and 4, operation 1 (request).
pub const ARP_REQUEST_ETH_IP4: [u8; 8] = [0, 1, 0x08, 0x00, 6, 4, 0, 1];
/// Operation 2: reply.
pub const ARP_OP_REPLY: [u8; 2] = [0, 2];

/// ICMPv6 neighbour discovery (RFC 4861): the message types, the hop limit
/// every message is sent and must be received with, and the fixed part of a
/// solicitation or advertisement (type, code, checksum, flags or reserved,
/// target address).
pub const ICMPV6_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
pub const ND_HOP_LIMIT: u8 = 255;
pub const ND_LEN: usize = 24;
pub const ND_FLAGS: usize = 4;
pub const ND_TARGET: usize = 8;
/// Advertisement flags (the first byte after the checksum).
pub const ND_ADVERT_SOLICITED: u8 = 0x40;
pub const ND_ADVERT_OVERRIDE: u8 = 0x20;
/// Options: type, length in units of 8 bytes, data. The link-layer address
/// options of Ethernet are one unit long.
pub const ND_OPT_UNIT: usize = 8;
pub const ND_OPT_SOURCE_LL_ADDR: u8 = 1;
pub const ND_OPT_TARGET_LL_ADDR: u8 = 2;

/// The first 8 bytes of an IPv6 header: version 6, traffic class `class`,
/// flow label 0, the payload length, the next header and the hop limit.
#[inline(always)]
pub const fn ip6_head(class: u8, payload_len: u16, next_header: u8, hop_limit: u8) -> [u8; 8] {
    let [hi, lo] = payload_len.to_be_bytes();
    [
        0x60 | (class >> 4),
        class << 4,
        0,
        0,
        hi,
        lo,
        next_header,
        hop_limit,
    ]
}
