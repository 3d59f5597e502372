//! Mutations of well-formed frames: blind ones (a byte flipped, the frame cut
//! or extended) and field-aware ones (lengths, IHL, data offset, checksums,
//! flags, protocol numbers, EtherType, VLAN tags, IPv6 extension headers,
//! ports and addresses, and in an ICMP error its type and the quoted
//! header's fields), so that frames reach every check of the parser and
//! every corner of the rewrite. A mutated frame is sometimes given valid
//! checksums again, so that odd shapes also reach the rewrite with checksums
//! that hold.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::{prelude::RngExt as _, test_runner::TestRng};

use crate::{
    checksum,
    generate::{Layout, MAX_OVERSIZED_FRAME, pick, pick_or, random_bytes},
    parse::{IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING},
    support::lb::{BACKENDS4, BACKENDS6, VIP4, VIP6},
};

/// One change to a frame, with every random choice made: applying it is
/// deterministic, and its `Debug` form says what was done.
#[derive(Clone, Debug)]
pub(crate) enum Mutation {
    FlipByte {
        at: usize,
        mask: u8,
    },
    Truncate {
        len: usize,
    },
    Extend {
        bytes: Vec<u8>,
    },
    EtherType(u16),
    AddVlan {
        tci: u16,
    },
    RemoveVlan,
    IpVersion(u8),
    Ip4HeaderLength(u8),
    Ip4TotalLength(u16),
    /// The 16-bit flags and fragment offset field.
    Ip4Fragment(u16),
    /// IPv4 protocol or IPv6 next header.
    IpProtocol(u8),
    Ttl(u8),
    Ip4Checksum(u16),
    Ip6PayloadLength(u16),
    /// An 8-byte extension header of this type inserted after the IPv6 header.
    Ip6InsertExtension(u8),
    TcpDataOffset(u8),
    TcpFlags(u8),
    UdpLength(u16),
    TransportChecksum(u16),
    Port {
        source: bool,
        port: u16,
    },
    Address {
        source: bool,
        to: IpAddr,
    },
    /// An ICMP error's type.
    IcmpType(u8),
    /// The quoted header's version.
    QuotedIpVersion(u8),
    /// The quoted IPv4 header's IHL.
    QuotedIp4HeaderLength(u8),
    /// The quoted IPv4 flags and fragment offset.
    QuotedIp4Fragment(u16),
    /// The quoted IPv4 protocol or IPv6 next header.
    QuotedProtocol(u8),
    QuotedPort {
        source: bool,
        port: u16,
    },
    QuotedAddress {
        source: bool,
        to: IpAddr,
    },
    /// The IPv4 header and TCP/UDP or ICMP checksums recomputed, with those
    /// of a quoted packet (`checksum::fix`).
    FixChecksums,
}

/// Applies one to four random mutations to `frame` (built with `layout`),
/// and returns them.
pub(crate) fn mutate(rng: &mut TestRng, frame: &mut Vec<u8>, mut layout: Layout) -> Vec<Mutation> {
    let mut applied = Vec::new();
    for _ in 0..rng.random_range(1..=4) {
        let mutation = Mutation::random(rng, frame, &layout);
        mutation.apply(frame, &mut layout);
        applied.push(mutation);
    }
    if rng.random_bool(0.4) {
        Mutation::FixChecksums.apply(frame, &mut layout);
        applied.push(Mutation::FixChecksums);
    }
    applied
}

impl Mutation {
    /// A mutation of `frame`: blind a third of the time, else aimed at one of
    /// its header fields.
    fn random(rng: &mut TestRng, frame: &[u8], layout: &Layout) -> Self {
        if rng.random_bool(0.35) {
            Self::blind(rng, frame, layout)
        } else if layout.quote.is_some() && rng.random_bool(0.5) {
            Self::quote_field(rng, layout)
        } else if layout.v4 {
            Self::ip4_field(rng, frame, layout)
        } else {
            Self::ip6_field(rng, frame, layout)
        }
    }

    fn blind(rng: &mut TestRng, frame: &[u8], layout: &Layout) -> Self {
        match rng.random_range(0..10) {
            // Mostly in the headers, where the parser looks.
            0..6 => {
                let headers_end = (layout.l4 + 24).min(frame.len());
                let end = if rng.random_bool(0.7) {
                    headers_end
                } else {
                    frame.len()
                };
                Self::FlipByte {
                    at: rng.random_range(0..end),
                    mask: rng.random_range(1..=u8::MAX),
                }
            }
            6..8 if frame.len() > 14 => Self::Truncate {
                len: rng.random_range(14..frame.len()),
            },
            _ => Self::Extend {
                bytes: {
                    let len = rng.random_range(1..=64);
                    random_bytes(rng, len)
                },
            },
        }
    }

    fn ip4_field(rng: &mut TestRng, frame: &[u8], layout: &Layout) -> Self {
        let l3 = layout.l3;
        match rng.random_range(0..12) {
            0 => Self::IpVersion(pick_or(rng, &[6, 0], |rng| rng.random_range(0..16))),
            1 => Self::Ip4HeaderLength(rng.random_range(0..16)),
            2 => Self::Ip4TotalLength(near(rng, read16(frame, l3 + 2))),
            // MF, DF, offset 1, MF with offset 1, anything.
            3 => Self::Ip4Fragment(pick_or(rng, &[0x2000, 0x4000, 0x0001, 0x2001], |rng| {
                rng.random()
            })),
            4 => Self::Ip4Checksum(rng.random()),
            5 => Self::Ttl(pick(rng, &[0, 1, 2, 255])),
            _ => Self::common_field(rng, frame, layout),
        }
    }

    fn ip6_field(rng: &mut TestRng, frame: &[u8], layout: &Layout) -> Self {
        match rng.random_range(0..11) {
            0 => Self::IpVersion(pick_or(rng, &[4, 0], |rng| rng.random_range(0..16))),
            1 => Self::Ip6PayloadLength(near(rng, read16(frame, layout.l3 + 4))),
            2 | 3 => Self::Ip6InsertExtension(pick(
                rng,
                &[
                    IPPROTO_HOPOPTS,
                    IPPROTO_ROUTING,
                    IPPROTO_DSTOPTS,
                    IPPROTO_FRAGMENT,
                ],
            )),
            4 => Self::Ttl(pick(rng, &[0, 1, 2, 255])),
            _ => Self::common_field(rng, frame, layout),
        }
    }

    /// Fields of both families: link layer, protocol, transport, addresses.
    fn common_field(rng: &mut TestRng, frame: &[u8], layout: &Layout) -> Self {
        // Only a whole tag is removed: a frame stays at least an Ethernet header.
        let vlan = frame.len() >= 18 && frame[12..14] == [0x81, 0x00];
        match rng.random_range(0..9) {
            // IPv4, IPv6, 802.1Q, ARP, 802.1ad, LLDP, anything.
            0 => Self::EtherType(pick_or(
                rng,
                &[0x0800, 0x86dd, 0x8100, 0x0806, 0x88a8, 0x88cc],
                |rng| rng.random(),
            )),
            1 if vlan => Self::RemoveVlan,
            1 => Self::AddVlan { tci: rng.random() },
            // TCP, UDP, ICMP, ICMPv6, the IPv6 extension headers, AH, IP-in-IP.
            2 => Self::IpProtocol(pick_or(rng, &[6, 17, 1, 58, 0, 43, 44, 60, 51, 4], |rng| {
                rng.random()
            })),
            3 => match layout.proto {
                6 => Self::TcpDataOffset(rng.random_range(0..16)),
                _ => Self::UdpLength(near(rng, read16(frame, layout.l4 + 4))),
            },
            4 => Self::TcpFlags(rng.random()),
            5 => Self::TransportChecksum(pick_or(rng, &[0, 0xffff], |rng| rng.random())),
            6 => Self::Port {
                source: rng.random_bool(0.5),
                port: pick_or(rng, &[0, 53, 80, 8080, 8443, 30080], |rng| rng.random()),
            },
            _ => Self::Address {
                source: rng.random_bool(0.5),
                to: address(rng, layout.v4),
            },
        }
    }

    /// The fields of an ICMP error the datapath reads: its type, and the
    /// quoted header's.
    fn quote_field(rng: &mut TestRng, layout: &Layout) -> Self {
        match rng.random_range(0..8) {
            // The error types looked into, and others.
            0 if layout.v4 => {
                Self::IcmpType(pick_or(rng, &[3, 11, 12, 0, 5, 8], |rng| rng.random()))
            }
            0 => Self::IcmpType(pick_or(rng, &[1, 2, 3, 4, 128, 129, 135], |rng| {
                rng.random()
            })),
            1 => Self::QuotedIpVersion(pick_or(rng, &[4, 6, 0], |rng| rng.random_range(0..16))),
            2 if layout.v4 => Self::QuotedIp4HeaderLength(rng.random_range(0..16)),
            // MF, DF, offset 1, MF with offset 1, anything.
            3 if layout.v4 => {
                Self::QuotedIp4Fragment(pick_or(rng, &[0x2000, 0x4000, 0x0001, 0x2001], |rng| {
                    rng.random()
                }))
            }
            // TCP, UDP, ICMP, ICMPv6, the IPv6 extension headers.
            2..=4 => Self::QuotedProtocol(pick_or(rng, &[6, 17, 1, 58, 0, 43, 44, 60], |rng| {
                rng.random()
            })),
            5 | 6 => Self::QuotedPort {
                source: rng.random_bool(0.5),
                port: pick_or(rng, &[0, 53, 80, 8080, 8443, 30080, 40000], |rng| {
                    rng.random()
                }),
            },
            _ => Self::QuotedAddress {
                source: rng.random_bool(0.5),
                to: address(rng, layout.v4),
            },
        }
    }

    fn apply(&self, frame: &mut Vec<u8>, layout: &mut Layout) {
        let (l3, l4) = (layout.l3, layout.l4);
        match self {
            Self::FlipByte { at, mask } => {
                if let Some(byte) = frame.get_mut(*at) {
                    *byte ^= mask;
                }
            }
            Self::Truncate { len } => frame.truncate(*len),
            Self::Extend { bytes } => {
                let room = MAX_OVERSIZED_FRAME.saturating_sub(frame.len());
                frame.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
            Self::EtherType(ethertype) => put(frame, l3 - 2, &ethertype.to_be_bytes()),
            Self::AddVlan { tci } => {
                // The tag goes between the MACs and the EtherType.
                let tag = [0x81, 0x00, (tci >> 8) as u8, *tci as u8];
                frame.splice(12..12, tag);
                shift(layout, 4);
            }
            Self::RemoveVlan => {
                frame.drain(12..16);
                shift(layout, -4);
            }
            Self::IpVersion(version) => {
                if let Some(byte) = frame.get_mut(l3) {
                    *byte = (version << 4) | (*byte & 0x0f);
                }
            }
            Self::Ip4HeaderLength(ihl) => {
                if let Some(byte) = frame.get_mut(l3) {
                    *byte = (*byte & 0xf0) | ihl;
                }
            }
            Self::Ip4TotalLength(len) => put(frame, l3 + 2, &len.to_be_bytes()),
            Self::Ip4Fragment(field) => put(frame, l3 + 6, &field.to_be_bytes()),
            Self::IpProtocol(proto) => {
                let at = if layout.v4 { l3 + 9 } else { l3 + 6 };
                put(frame, at, &[*proto]);
            }
            Self::Ttl(ttl) => put(frame, if layout.v4 { l3 + 8 } else { l3 + 7 }, &[*ttl]),
            Self::Ip4Checksum(sum) => put(frame, l3 + 10, &sum.to_be_bytes()),
            Self::Ip6PayloadLength(len) => put(frame, l3 + 4, &len.to_be_bytes()),
            Self::Ip6InsertExtension(proto) => insert_ip6_extension(frame, layout, *proto),
            Self::TcpDataOffset(words) => {
                if let Some(byte) = frame.get_mut(l4 + 12) {
                    *byte = (words << 4) | (*byte & 0x0f);
                }
            }
            Self::TcpFlags(flags) => put(frame, l4 + 13, &[*flags]),
            Self::UdpLength(len) => put(frame, l4 + 4, &len.to_be_bytes()),
            Self::TransportChecksum(sum) => {
                let at = l4
                    + match layout.proto {
                        6 => 16,
                        // ICMP, ICMPv6.
                        1 | 58 => 2,
                        _ => 6,
                    };
                put(frame, at, &sum.to_be_bytes());
            }
            Self::Port { source, port } => {
                put(frame, l4 + if *source { 0 } else { 2 }, &port.to_be_bytes());
            }
            Self::Address { source, to } => {
                write_address(frame, layout.l3, layout.v4, *source, *to)
            }
            Self::IcmpType(icmp_type) => put(frame, l4, &[*icmp_type]),
            Self::QuotedIpVersion(_)
            | Self::QuotedIp4HeaderLength(_)
            | Self::QuotedIp4Fragment(_)
            | Self::QuotedProtocol(_)
            | Self::QuotedPort { .. }
            | Self::QuotedAddress { .. } => {
                if let Some(quote) = layout.quote {
                    self.apply_to_quote(frame, layout.v4, quote);
                }
            }
            Self::FixChecksums => checksum::fix(frame),
        }
    }

    /// A mutation of the quoted header (at `quote`: its network and transport
    /// offsets) of an ICMP error of family `v4`.
    fn apply_to_quote(&self, frame: &mut [u8], v4: bool, (l3, l4): (usize, usize)) {
        match self {
            Self::QuotedIpVersion(version) => {
                if let Some(byte) = frame.get_mut(l3) {
                    *byte = (version << 4) | (*byte & 0x0f);
                }
            }
            Self::QuotedIp4HeaderLength(ihl) => {
                if let Some(byte) = frame.get_mut(l3) {
                    *byte = (*byte & 0xf0) | ihl;
                }
            }
            Self::QuotedIp4Fragment(field) => put(frame, l3 + 6, &field.to_be_bytes()),
            Self::QuotedProtocol(proto) => put(frame, l3 + if v4 { 9 } else { 6 }, &[*proto]),
            Self::QuotedPort { source, port } => {
                put(frame, l4 + if *source { 0 } else { 2 }, &port.to_be_bytes());
            }
            Self::QuotedAddress { source, to } => write_address(frame, l3, v4, *source, *to),
            _ => {}
        }
    }
}

/// `bytes` written at `at`, if the frame holds them all.
fn put(frame: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(field) = frame.get_mut(at..at + bytes.len()) {
        field.copy_from_slice(bytes);
    }
}

fn read16(frame: &[u8], at: usize) -> u16 {
    frame
        .get(at..at + 2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
}

/// A length near `current` (off by a few, as a buggy sender writes it) or anything.
fn near(rng: &mut TestRng, current: u16) -> u16 {
    if rng.random_bool(0.5) {
        current.wrapping_add_signed(rng.random_range(-8..=8))
    } else {
        rng.random()
    }
}

fn shift(layout: &mut Layout, by: isize) {
    layout.l3 = layout.l3.saturating_add_signed(by).max(14);
    layout.l4 = layout.l4.saturating_add_signed(by).max(layout.l3);
    layout.quote = layout.quote.map(|(l3, l4)| {
        let l3 = l3.saturating_add_signed(by).max(layout.l4);
        (l3, l4.saturating_add_signed(by).max(l3))
    });
}

/// Inserts an extension header of type `proto` first in the IPv6 chain and
/// keeps the packet consistent: the IPv6 header names it, and its payload
/// length grows by its 8 bytes. A fragment header is an atomic fragment
/// (offset 0, no more fragments, RFC 6946).
fn insert_ip6_extension(frame: &mut Vec<u8>, layout: &mut Layout, proto: u8) {
    let after = layout.l3 + 40;
    if frame.len() < after {
        return;
    }
    let next = frame[layout.l3 + 6];
    let header = match proto {
        IPPROTO_FRAGMENT => [next, 0, 0, 0, 0, 0, 0x42, 0x42],
        // PadN covering the 6 bytes after the two fixed fields.
        _ => [next, 0, 1, 4, 0, 0, 0, 0],
    };
    frame.splice(after..after, header);
    frame[layout.l3 + 6] = proto;
    let len = read16(frame, layout.l3 + 4).wrapping_add(8);
    put(frame, layout.l3 + 4, &len.to_be_bytes());
    layout.l4 += 8;
    layout.quote = layout.quote.map(|(l3, l4)| (l3 + 8, l4 + 8));
}

/// An address to write into a header: a frontend, a backend, anything; for
/// IPv6 also an IPv4-mapped one (never valid on the wire).
fn address(rng: &mut TestRng, v4: bool) -> IpAddr {
    let i = rng.random_range(0..4);
    match (rng.random_range(0..4), v4) {
        (0, true) => VIP4.into(),
        (0, false) => VIP6.into(),
        (1, true) => BACKENDS4[i].into(),
        (1, false) => BACKENDS6[i].into(),
        (2, false) => Ipv6Addr::from(rng.random::<u128>()).into(),
        (_, true) => Ipv4Addr::from(rng.random::<u32>()).into(),
        (_, false) => pick(rng, &[VIP4, BACKENDS4[i]]).to_ipv6_mapped().into(),
    }
}

/// Writes `to` as the source or destination of the network header at `l3`
/// of family `v4`, if it is of that family.
fn write_address(frame: &mut [u8], l3: usize, v4: bool, source: bool, to: IpAddr) {
    match (to, v4) {
        (IpAddr::V4(a), true) => put(frame, l3 + if source { 12 } else { 16 }, &a.octets()),
        (IpAddr::V6(a), false) => put(frame, l3 + if source { 8 } else { 24 }, &a.octets()),
        _ => {}
    }
}
