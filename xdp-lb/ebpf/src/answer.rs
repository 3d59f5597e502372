//! Answers the LB writes itself, in place of the frame that caused them, and
//! sends back out the interface it came in on (`xdp_lb`: XDP_TX;
//! `tc_lb_ingress`: a redirect to the egress of the pod interface):
//! - ICMP "fragmentation needed" / ICMPv6 "packet too big" for a client's
//!   packet larger than the MTU toward its backend, as a router answers;
//! - a refusal when a service has no backend, as a host without a listener
//!   answers: ICMP / ICMPv6 "port unreachable" for UDP, a TCP reset for TCP.
//!
//! An answer comes from the address the client sent to (the VIP), so the
//! client's stack takes it for the path it uses, and quotes the packet's
//! network header and its first 8 transport bytes (ports and sequence number,
//! what RFC 792 asks for and what a TCP stack matches the error by):
//!
//! ```text
//! before:           [eth][IP ][TCP/UDP ...............]
//! head grown:  [ 28 ][eth][IP ][TCP/UDP ...]            IPv4 (48 for IPv6)
//! after:       [eth][IP'][ICMP][IP ][8 bytes]           the quote did not move
//! ```
//! Only a packet whose transport header follows its network header directly
//! is answered (no IPv4 options, no IPv6 extension headers): otherwise the
//! 8 quoted bytes would not hold its ports. A reset is the segment itself,
//! cut to its 20-byte TCP header and turned around (RFC 9293, 3.10.7.1).

use xdp_lb_common::csum;

use crate::{
    lb::flow::{Flow, MAX_L3_OFFSET},
    maps::forget_ranges,
    packet::Resize,
    wire::{
        ICMP_HLEN, IP4_HLEN, IP6_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, TCP_ACK, TCP_FIN,
        TCP_HLEN, TCP_RST, TCP_SYN, ip6_head,
    },
};

/// Transport bytes quoted after the network header.
const QUOTED_L4: usize = 8;
// Every answer's length fits the one byte its header is written with.
const _: () = assert!(IP4_HLEN + ICMP_HLEN + IP4_HLEN + QUOTED_L4 < 256);
const _: () = assert!(ICMP_HLEN + IP6_HLEN + QUOTED_L4 < 256);
/// ICMP types and codes (RFC 792, 1191) and ICMPv6's (RFC 4443).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_PORT_UNREACH: u8 = 4;
/// TTL / hop limit of the errors the LB writes (Linux's default).
const TTL: u8 = 64;

/// Which ICMP error to answer with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Fragmentation needed (IPv4) / packet too big (IPv6), with the MTU.
    TooBig,
    /// Port unreachable.
    PortUnreachable,
}

impl IcmpError {
    /// Type, code, and the type's four bytes after the checksum.
    #[inline(always)]
    const fn header(self, is_v4: bool, mtu: u32) -> [u8; ICMP_HLEN] {
        let [a, b, c, d] = mtu.to_be_bytes();
        match (self, is_v4) {
            // RFC 1191: a 16-bit next-hop MTU in the last two bytes.
            (Self::TooBig, true) => {
                let [hi, lo] = (if mtu > 0xffff { 0xffff } else { mtu as u16 }).to_be_bytes();
                [ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, hi, lo]
            }
            (Self::TooBig, false) => [ICMPV6_PKT_TOOBIG, 0, 0, 0, a, b, c, d],
            (Self::PortUnreachable, true) => {
                [ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, 0, 0, 0, 0, 0, 0]
            }
            (Self::PortUnreachable, false) => {
                [ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH, 0, 0, 0, 0, 0, 0]
            }
        }
    }
}

/// What an answer did.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The frame is now the error: send it with XDP_TX.
    Yes,
    /// The frame is unchanged and cannot be answered (see the module's note).
    NotAnswerable,
    /// A helper failed halfway: the frame is neither; drop it.
    Broken,
}

/// Turns the client's packet `flow` (as the client sent it, untranslated)
/// into the ICMP error `error` (`mtu` is the MTU a `TooBig` reports).
#[inline(never)]
pub fn icmp_error<C: Resize>(ctx: &C, flow: &Flow, error: IcmpError, mtu: u32) -> Answered {
    let l3 = flow.l3_offset;
    let ip_len = if flow.is_v4 { IP4_HLEN } else { IP6_HLEN };
    if l3 > MAX_L3_OFFSET || flow.l4_offset != l3 + ip_len {
        return Answered::NotAnswerable;
    }
    // The Ethernet header (and any VLAN tag) moves to the new front; the MACs
    // swap, as the error goes back to where the packet came from.
    let Some(link) = ctx.frame().read::<[u8; MAX_L3_OFFSET]>(0) else {
        return Answered::NotAnswerable;
    };
    let grow = ip_len + ICMP_HLEN;
    // The length as a plain number: computed from the packet pointers, LLVM
    // would fold the subtraction below into one the verifier rejects.
    let (before, _) = forget_ranges(ctx.frame().len(), 0);
    // A negative delta grows the head.
    if !ctx.adjust_head(-(grow as i32)) {
        return Answered::NotAnswerable;
    }
    let len = l3 + grow + ip_len + QUOTED_L4;
    let cut = (before + grow) as i64 - len as i64;
    // A negative delta shrinks the tail.
    if cut < 0 || !ctx.adjust_tail(-(cut as i32)) {
        return Answered::Broken;
    }
    let icmp = error.header(flow.is_v4, mtu);
    let written = if flow.is_v4 {
        write_v4(ctx, flow, &link, &icmp)
    } else {
        write_v6(ctx, flow, &link, &icmp)
    };
    if written.is_some() {
        Answered::Yes
    } else {
        Answered::Broken
    }
}

/// Writes the link header: the packet's, with its MACs swapped (and the
/// bytes after it, which the network header then overwrites).
#[inline(always)]
fn write_link<C: Resize>(ctx: &C, link: &[u8; MAX_L3_OFFSET]) -> Option<()> {
    let out = ctx.frame().get_mut::<[u8; MAX_L3_OFFSET]>(0)?;
    // SAFETY: `get_mut` checked the 18 bytes lie in the frame.
    let out = unsafe { &mut *out };
    out.copy_from_slice(link);
    out[..6].copy_from_slice(&link[6..12]);
    out[6..12].copy_from_slice(&link[..6]);
    Some(())
}

/// `icmp_error` for IPv4: the headers are written straight into the frame
/// and summed there (copies of them would not fit the stack frame).
#[inline(never)]
fn write_v4<C: Resize>(
    ctx: &C,
    flow: &Flow,
    link: &[u8; MAX_L3_OFFSET],
    icmp: &[u8; ICMP_HLEN],
) -> Option<()> {
    const ICMP_AT: usize = IP4_HLEN;
    const TOTAL: usize = IP4_HLEN + ICMP_HLEN + IP4_HLEN + QUOTED_L4;
    write_link(ctx, link)?;
    let out = ctx.frame().get_mut::<[u8; TOTAL]>(flow.l3_offset)?;
    // SAFETY: `get_mut` checked the whole error lies in the frame.
    let out = unsafe { &mut *out };
    let (src, dst) = (&flow.tuple.dst_addr, &flow.tuple.src_addr);
    // Version and IHL, TOS, total length, ID, flags and fragment offset.
    out[..8].copy_from_slice(&[0x45, 0, 0, TOTAL as u8, 0, 0, 0, 0]);
    out[8..12].copy_from_slice(&[TTL, IPPROTO_ICMP, 0, 0]);
    out[12..16].copy_from_slice(&src[12..16]);
    out[16..20].copy_from_slice(&dst[12..16]);
    out[ICMP_AT..ICMP_AT + ICMP_HLEN].copy_from_slice(icmp);
    let ip: &[u8; IP4_HLEN] = out[..IP4_HLEN].try_into().ok()?;
    let ip_csum = csum::finish(csum::add(0, ip));
    let icmp: &[u8; TOTAL - ICMP_AT] = out[ICMP_AT..].try_into().ok()?;
    let icmp_csum = csum::finish(csum::add(0, icmp));
    out[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    out[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&icmp_csum.to_be_bytes());
    Some(())
}

/// `icmp_error` for IPv6, written and summed in the frame like `write_v4`.
#[inline(never)]
fn write_v6<C: Resize>(
    ctx: &C,
    flow: &Flow,
    link: &[u8; MAX_L3_OFFSET],
    icmp: &[u8; ICMP_HLEN],
) -> Option<()> {
    const ICMP_AT: usize = IP6_HLEN;
    const PAYLOAD: usize = ICMP_HLEN + IP6_HLEN + QUOTED_L4;
    write_link(ctx, link)?;
    let out = ctx
        .frame()
        .get_mut::<[u8; IP6_HLEN + PAYLOAD]>(flow.l3_offset)?;
    // SAFETY: `get_mut` checked the whole error lies in the frame.
    let out = unsafe { &mut *out };
    let (src, dst) = (&flow.tuple.dst_addr, &flow.tuple.src_addr);
    // Version, traffic class, flow label, payload length, next header, hop limit.
    out[..8].copy_from_slice(&ip6_head(0, PAYLOAD as u16, IPPROTO_ICMPV6, TTL));
    out[8..24].copy_from_slice(src);
    out[24..40].copy_from_slice(dst);
    out[ICMP_AT..ICMP_AT + ICMP_HLEN].copy_from_slice(icmp);
    // The pseudo-header: both addresses (summed in the header), the
    // upper-layer length and the next header.
    let addresses: &[u8; 32] = out[8..40].try_into().ok()?;
    let pseudo = [0, 0, 0, PAYLOAD as u8, 0, 0, 0, IPPROTO_ICMPV6];
    let icmp: &[u8; PAYLOAD] = out[ICMP_AT..].try_into().ok()?;
    let sum = csum::add(csum::add(csum::add(0, addresses), &pseudo), icmp);
    out[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&csum::finish(sum).to_be_bytes());
    Some(())
}

/// Turns the client's TCP segment `flow` into the reset a host without a
/// listener answers it with: addresses and ports swapped; for a segment with
/// ACK, sequence number its acknowledgment number and RST alone; otherwise
/// sequence 0 and RST|ACK acknowledging everything it carried (SYN and FIN
/// count one each). A reset is never answered.
#[inline(never)]
pub fn reset<C: Resize>(ctx: &C, flow: &Flow) -> Answered {
    let l3 = flow.l3_offset;
    let ip_len = if flow.is_v4 { IP4_HLEN } else { IP6_HLEN };
    if l3 > MAX_L3_OFFSET || flow.l4_offset != l3 + ip_len || flow.tcp_flags & TCP_RST != 0 {
        return Answered::NotAnswerable;
    }
    let frame = ctx.frame();
    let Some(segment) = frame.read::<[u8; 14]>(l3 + ip_len) else {
        return Answered::NotAnswerable;
    };
    let Some(length) = frame.load::<2>(l3 + if flow.is_v4 { 2 } else { 4 }) else {
        return Answered::NotAnswerable;
    };
    // Payload: the IPv4 total length less both headers, or the IPv6 payload
    // length less the TCP header.
    let data_offset = usize::from(segment[12] >> 4) * 4;
    let headers = data_offset + if flow.is_v4 { IP4_HLEN } else { 0 };
    let payload = usize::from(u16::from_be_bytes(length)).saturating_sub(headers);
    let flags = flow.tcp_flags;
    let seq = u32::from_be_bytes([segment[4], segment[5], segment[6], segment[7]]);
    let ack = u32::from_be_bytes([segment[8], segment[9], segment[10], segment[11]]);
    let (reset_seq, reset_ack, reset_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        let counted = u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        (
            0,
            seq.wrapping_add(payload as u32).wrapping_add(counted),
            TCP_RST | TCP_ACK,
        )
    };
    let Some(link) = frame.read::<[u8; MAX_L3_OFFSET]>(0) else {
        return Answered::NotAnswerable;
    };
    // As in `icmp_error`: the length as a plain number.
    let (before, _) = forget_ranges(frame.len(), 0);
    let cut = before as i64 - (l3 + ip_len + TCP_HLEN) as i64;
    // A negative delta shrinks the tail.
    if cut < 0 || !ctx.adjust_tail(-(cut as i32)) {
        return Answered::NotAnswerable;
    }
    let mut tcp = [0u8; TCP_HLEN];
    tcp[..2].copy_from_slice(&flow.tuple.dst_port_be.to_ne_bytes());
    tcp[2..4].copy_from_slice(&flow.tuple.src_port_be.to_ne_bytes());
    tcp[4..8].copy_from_slice(&reset_seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&reset_ack.to_be_bytes());
    tcp[12] = (TCP_HLEN as u8 / 4) << 4;
    tcp[13] = reset_flags;
    let written = if flow.is_v4 {
        write_reset_v4(ctx, flow, &link, &tcp)
    } else {
        write_reset_v6(ctx, flow, &link, &tcp)
    };
    if written.is_some() {
        Answered::Yes
    } else {
        Answered::Broken
    }
}

/// The TCP checksum's pseudo-header words after the addresses: protocol
/// and the 20-byte length.
const TCP_PSEUDO: [u8; 4] = [0, IPPROTO_TCP, 0, TCP_HLEN as u8];

/// `reset` for IPv4: the network and TCP headers written and summed in the
/// frame.
#[inline(never)]
fn write_reset_v4<C: Resize>(
    ctx: &C,
    flow: &Flow,
    link: &[u8; MAX_L3_OFFSET],
    tcp: &[u8; TCP_HLEN],
) -> Option<()> {
    const TOTAL: usize = IP4_HLEN + TCP_HLEN;
    write_link(ctx, link)?;
    let out = ctx.frame().get_mut::<[u8; TOTAL]>(flow.l3_offset)?;
    // SAFETY: `get_mut` checked the whole reset lies in the frame.
    let out = unsafe { &mut *out };
    let (src, dst) = (&flow.tuple.dst_addr, &flow.tuple.src_addr);
    out[..8].copy_from_slice(&[0x45, 0, 0, TOTAL as u8, 0, 0, 0, 0]);
    out[8..12].copy_from_slice(&[TTL, IPPROTO_TCP, 0, 0]);
    out[12..16].copy_from_slice(&src[12..16]);
    out[16..20].copy_from_slice(&dst[12..16]);
    out[IP4_HLEN..].copy_from_slice(tcp);
    let ip: &[u8; IP4_HLEN] = out[..IP4_HLEN].try_into().ok()?;
    let ip_csum = csum::finish(csum::add(0, ip));
    let addresses: &[u8; 8] = out[12..20].try_into().ok()?;
    let sum = csum::add(csum::add(csum::add(0, addresses), &TCP_PSEUDO), tcp);
    out[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    out[IP4_HLEN + 16..IP4_HLEN + 18].copy_from_slice(&csum::finish(sum).to_be_bytes());
    Some(())
}

/// `reset` for IPv6, written and summed in the frame like `write_reset_v4`.
#[inline(never)]
fn write_reset_v6<C: Resize>(
    ctx: &C,
    flow: &Flow,
    link: &[u8; MAX_L3_OFFSET],
    tcp: &[u8; TCP_HLEN],
) -> Option<()> {
    write_link(ctx, link)?;
    let out = ctx
        .frame()
        .get_mut::<[u8; IP6_HLEN + TCP_HLEN]>(flow.l3_offset)?;
    // SAFETY: `get_mut` checked the whole reset lies in the frame.
    let out = unsafe { &mut *out };
    let (src, dst) = (&flow.tuple.dst_addr, &flow.tuple.src_addr);
    out[..8].copy_from_slice(&ip6_head(0, TCP_HLEN as u16, IPPROTO_TCP, TTL));
    out[8..24].copy_from_slice(src);
    out[24..40].copy_from_slice(dst);
    out[IP6_HLEN..].copy_from_slice(tcp);
    let addresses: &[u8; 32] = out[8..40].try_into().ok()?;
    let sum = csum::add(csum::add(csum::add(0, addresses), &TCP_PSEUDO), tcp);
    out[IP6_HLEN + 16..IP6_HLEN + 18].copy_from_slice(&csum::finish(sum).to_be_bytes());
    Some(())
}
