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
pub const IP4_TTL: usize = 8;
pub const IP4_CSUM: usize = 10;
pub const IP4_SRC: usize = 12;
pub const IP4_DST: usize = 16;
/// IPv4 "more fragments" flag and fragment offset mask, in host order of the
/// 16-bit field at offset 6.
pub const IP4_MF: u16 = 0x2000;
pub const IP4_OFFSET_MASK: u16 = 0x1fff;

/// IPv6 header fields.
pub const IP6_HOP_LIMIT: usize = 7;
pub const IP6_SRC: usize = 8;
pub const IP6_DST: usize = 24;

/// TCP and UDP header fields (the ports are where both have them).
pub const SRC_PORT: usize = 0;
pub const DST_PORT: usize = 2;
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
