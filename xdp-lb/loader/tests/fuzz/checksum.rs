//! Internet checksums summed from scratch with etherparse, independently of
//! the datapath's incremental updates (RFC 1624): whether a frame's IPv4
//! header, TCP/UDP and ICMP checksums hold, the one's-complement sums that
//! translations must keep, and fixing checksums after a mutation.

use std::ops::Range;

use etherparse::checksum::Sum16BitWords;

use crate::parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, IpPacket, parse};

/// Offset of the checksum in the IPv4 header.
pub(crate) const IP4_CHECKSUM: usize = 10;
/// Offsets of the checksum in the TCP and UDP headers.
pub(crate) const TCP_CHECKSUM: usize = 16;
pub(crate) const UDP_CHECKSUM: usize = 6;
/// Offset of the checksum in the ICMP and ICMPv6 headers.
pub(crate) const ICMP_CHECKSUM: usize = 2;
/// The fixed ICMP header, before the quote of an error.
const ICMP_HLEN: usize = 8;

/// The IPv4 header's checksum holds: the one's-complement sum of the whole
/// header, checksum included, is all ones (RFC 791).
pub(crate) fn ip4_header_holds(frame: &[u8], ip: &IpPacket) -> bool {
    Sum16BitWords::new()
        .add_slice(&frame[ip.l3..ip.l4])
        .ones_complement()
        == 0
}

/// Offset of the TCP or UDP checksum in the frame, when the transport header
/// lies whole inside the IP datagram (a segment the checksum can cover); a
/// later fragment has none.
pub(crate) fn transport_checksum_at(ip: &IpPacket) -> Option<usize> {
    if ip.later_fragment {
        return None;
    }
    let (header_len, at) = match ip.proto {
        IPPROTO_TCP => (20, TCP_CHECKSUM),
        IPPROTO_UDP => (8, UDP_CHECKSUM),
        _ => return None,
    };
    (ip.l4 + header_len <= ip.end).then_some(ip.l4 + at)
}

/// Whether the TCP or UDP checksum holds over the pseudo-header and the
/// segment up to the datagram's end; `None` when there is no segment to
/// cover (see `transport_checksum_at`). A zero UDP checksum means "none" on
/// IPv4 (RFC 768) and is invalid on IPv6 (RFC 8200 §8.1).
pub(crate) fn transport_holds(frame: &[u8], ip: &IpPacket) -> Option<bool> {
    let at = transport_checksum_at(ip)?;
    if ip.proto == IPPROTO_UDP && frame[at..at + 2] == [0, 0] {
        return Some(ip.is_v4());
    }
    Some(transport_sum(frame, ip) == 0)
}

/// The one's complement of the sum over the pseudo-header and the segment,
/// checksum included: 0 when the checksum holds. The pseudo-header's
/// addresses are read from the frame, so a rewritten frame is summed with its
/// new addresses.
fn transport_sum(frame: &[u8], ip: &IpPacket) -> u16 {
    let segment = &frame[ip.l4..ip.end];
    let sum = if ip.is_v4() {
        // Source and destination, then zero, protocol, TCP/UDP length (RFC 793, 768).
        Sum16BitWords::new()
            .add_slice(&frame[ip.l3 + 12..ip.l3 + 20])
            .add_2bytes([0, ip.proto])
            .add_2bytes((segment.len() as u16).to_be_bytes())
    } else {
        // Source and destination, upper-layer length, zeros, next header (RFC 8200 §8.1).
        Sum16BitWords::new()
            .add_slice(&frame[ip.l3 + 8..ip.l3 + 40])
            .add_slice(&(segment.len() as u32).to_be_bytes())
            .add_slice(&[0, 0, 0, ip.proto])
    };
    sum.add_slice(segment).ones_complement()
}

/// The ICMP or ICMPv6 message of `ip` (a well-formed ICMP packet, its
/// header inside the datagram) has a checksum that holds: over the message,
/// and for ICMPv6 over its pseudo-header too (RFC 4443 §2.3).
pub(crate) fn icmp_holds(frame: &[u8], ip: &IpPacket) -> bool {
    icmp_sum(frame, ip) == 0
}

/// The one's complement of the sum over the ICMP message (and ICMPv6's
/// pseudo-header), checksum included: 0 when the checksum holds.
fn icmp_sum(frame: &[u8], ip: &IpPacket) -> u16 {
    let message = &frame[ip.l4..ip.end];
    let sum = if ip.is_v4() {
        Sum16BitWords::new()
    } else {
        Sum16BitWords::new()
            .add_slice(&frame[ip.l3 + 8..ip.l3 + 40])
            .add_slice(&(message.len() as u32).to_be_bytes())
            .add_slice(&[0, 0, 0, IPPROTO_ICMPV6])
    };
    sum.add_slice(message).ones_complement()
}

/// The one's-complement sum of the 16-bit words of `ranges` of `frame`, as
/// a residue modulo 0xffff (both zeros of the one's complement as 0): what
/// an incremental checksum update (RFC 1624) must keep over the words it
/// covers, checksum field included.
pub(crate) fn sum_class(frame: &[u8], ranges: &[Range<usize>]) -> u16 {
    let sum = ranges
        .iter()
        .fold(Sum16BitWords::new(), |sum, range| {
            sum.add_slice(&frame[range.clone()])
        })
        .ones_complement();
    if sum == 0xffff { 0 } else { sum }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP or ICMP checksum of
/// `frame`, where the model's parser finds them — and, in an ICMP error,
/// those of the packet it quotes, when the quote holds it whole — so that a
/// mutated frame can reach the rewrite with checksums that hold.
pub(crate) fn fix(frame: &mut [u8]) {
    let Some(ip) = parse(frame).ip else {
        return;
    };
    if ip.is_v4() {
        write_sum(frame, ip.l3 + IP4_CHECKSUM, |f| {
            Sum16BitWords::new()
                .add_slice(&f[ip.l3..ip.l4])
                .ones_complement()
        });
    }
    if !ip.fragment
        && let Some(at) = transport_checksum_at(&ip)
    {
        write_sum(frame, at, |f| match transport_sum(f, &ip) {
            // A computed 0 is sent as all ones: 0 would mean "no checksum" in UDP.
            0 if ip.proto == IPPROTO_UDP => 0xffff,
            sum => sum,
        });
    }
    let icmp = if ip.is_v4() {
        IPPROTO_ICMP
    } else {
        IPPROTO_ICMPV6
    };
    if !ip.fragment && ip.proto == icmp && ip.l4 + ICMP_HLEN <= ip.end {
        fix_quote(frame, &ip);
        write_sum(frame, ip.l4 + ICMP_CHECKSUM, |f| icmp_sum(f, &ip));
    }
}

/// Fixes the checksums of the packet an ICMP error quotes, as `fix` fixes a
/// frame's: the quote, behind an Ethernet header of its own, is a frame.
fn fix_quote(frame: &mut [u8], ip: &IpPacket) {
    let quote = ip.l4 + ICMP_HLEN..ip.end;
    let ethertype: [u8; 2] = match frame[quote.clone()].first().map(|b| b >> 4) {
        Some(4) => [0x08, 0x00],
        Some(6) => [0x86, 0xdd],
        _ => return,
    };
    let mut inner = vec![0; 12];
    inner.extend_from_slice(&ethertype);
    inner.extend_from_slice(&frame[quote.clone()]);
    fix(&mut inner);
    // A quote cut short is no packet the parser takes, but its IPv4 header,
    // if whole, still has a checksum of its own.
    let header_len = usize::from(inner[14] & 0x0f) * 4;
    if ethertype == [0x08, 0x00] && header_len >= 20 && 14 + header_len <= inner.len() {
        write_sum(&mut inner, 14 + IP4_CHECKSUM, |f| {
            Sum16BitWords::new()
                .add_slice(&f[14..14 + header_len])
                .ones_complement()
        });
    }
    frame[quote].copy_from_slice(&inner[14..]);
}

/// Zeroes the checksum at `at`, then writes the checksum `sum` computes.
fn write_sum(frame: &mut [u8], at: usize, sum: impl Fn(&[u8]) -> u16) {
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    // etherparse adds the words in native byte order, so its result is in
    // memory order too (its own headers store `checksum.to_be()` big-endian).
    let checksum = sum(frame).to_ne_bytes();
    frame[at..at + 2].copy_from_slice(&checksum);
}
