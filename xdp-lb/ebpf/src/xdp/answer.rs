//! ICMP errors the LB writes itself, in place of the frame that caused them,
//! and sends back out the interface it came in on (XDP_TX), as a router
//! answers: today "fragmentation needed" (IPv4) and "packet too big" (IPv6)
//! for a client's packet larger than the MTU toward its backend.
//!
//! The error comes from the address the client sent to (the VIP), so the
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
//! 8 quoted bytes would not hold its ports.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use xdp_lb_common::csum;

use crate::{
    lb::flow::{Flow, MAX_L3_OFFSET},
    maps::forget_ranges,
    packet::FrameSource,
};

const IP4_HLEN: usize = 20;
const IP6_HLEN: usize = 40;
const ICMP_HLEN: usize = 8;
/// Transport bytes quoted after the network header.
const QUOTED_L4: usize = 8;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const _: () = assert!(IP4_HLEN + ICMP_HLEN + IP4_HLEN + QUOTED_L4 < 256);
const _: () = assert!(ICMP_HLEN + IP6_HLEN + QUOTED_L4 < 256);
const ICMPV6_PKT_TOOBIG: u8 = 2;
/// TTL / hop limit of the errors the LB writes (Linux's default).
const TTL: u8 = 64;

/// What `too_big` did.
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
/// into the ICMP error saying it exceeds `mtu`.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, flow: &Flow, mtu: u32) -> Answered {
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
    // SAFETY: the program's context; a negative delta grows the head.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return Answered::NotAnswerable;
    }
    let len = l3 + grow + ip_len + QUOTED_L4;
    let cut = (before + grow) as i64 - len as i64;
    // SAFETY: as above; a negative delta shrinks the tail.
    if cut < 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(cut as i32)) } != 0 {
        return Answered::Broken;
    }
    let written = if flow.is_v4 {
        write_v4(ctx, flow, &link, mtu)
    } else {
        write_v6(ctx, flow, &link, mtu)
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
fn write_link(ctx: &XdpContext, link: &[u8; MAX_L3_OFFSET]) -> Option<()> {
    let out = ctx.frame().get_mut::<[u8; MAX_L3_OFFSET]>(0)?;
    // SAFETY: `get_mut` checked the 18 bytes lie in the frame.
    let out = unsafe { &mut *out };
    out.copy_from_slice(link);
    out[..6].copy_from_slice(&link[6..12]);
    out[6..12].copy_from_slice(&link[..6]);
    Some(())
}

/// `too_big` for IPv4: the headers are written straight into the frame and
/// summed there (copies of them would not fit the stack frame).
#[inline(never)]
fn write_v4(ctx: &XdpContext, flow: &Flow, link: &[u8; MAX_L3_OFFSET], mtu: u32) -> Option<()> {
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
    // Type, code, checksum, unused, next-hop MTU (RFC 1191).
    let [hi, lo] = (mtu.min(u32::from(u16::MAX)) as u16).to_be_bytes();
    out[ICMP_AT..ICMP_AT + ICMP_HLEN].copy_from_slice(&[
        ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED,
        0,
        0,
        0,
        0,
        hi,
        lo,
    ]);
    let ip: &[u8; IP4_HLEN] = out[..IP4_HLEN].try_into().ok()?;
    let ip_csum = csum::finish(csum::add(0, ip));
    let icmp: &[u8; TOTAL - ICMP_AT] = out[ICMP_AT..].try_into().ok()?;
    let icmp_csum = csum::finish(csum::add(0, icmp));
    out[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    out[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&icmp_csum.to_be_bytes());
    Some(())
}

/// `too_big` for IPv6, written and summed in the frame like `write_v4`.
#[inline(never)]
fn write_v6(ctx: &XdpContext, flow: &Flow, link: &[u8; MAX_L3_OFFSET], mtu: u32) -> Option<()> {
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
    out[..8].copy_from_slice(&[0x60, 0, 0, 0, 0, PAYLOAD as u8, IPPROTO_ICMPV6, TTL]);
    out[8..24].copy_from_slice(src);
    out[24..40].copy_from_slice(dst);
    // Type, code, checksum, MTU (RFC 4443).
    let [a, b, c, d] = mtu.to_be_bytes();
    out[ICMP_AT..ICMP_AT + ICMP_HLEN].copy_from_slice(&[ICMPV6_PKT_TOOBIG, 0, 0, 0, a, b, c, d]);
    // The pseudo-header: both addresses (summed in the header), the
    // upper-layer length and the next header.
    let addresses: &[u8; 32] = out[8..40].try_into().ok()?;
    let pseudo = [0, 0, 0, PAYLOAD as u8, 0, 0, 0, IPPROTO_ICMPV6];
    let icmp: &[u8; PAYLOAD] = out[ICMP_AT..].try_into().ok()?;
    let sum = csum::add(csum::add(csum::add(0, addresses), &pseudo), icmp);
    out[ICMP_AT + 2..ICMP_AT + 4].copy_from_slice(&csum::finish(sum).to_be_bytes());
    Some(())
}
