//! Direct server return: the client's packet, unchanged, inside an outer
//! header to its backend, which strips it (`xdp_decap`), holds the VIP itself
//! and answers the client directly. As Katran does:
//!
//! | inner | backend | outer |
//! |---|---|---|
//! | IPv4 | IPv4 | IPv4, protocol 4 (IPIP) |
//! | IPv4 | IPv6 | IPv6, next header 4 (IPv4-in-IPv6) |
//! | IPv6 | IPv6 | IPv6, next header 41 (IP6IP6) |
//! | IPv6 | IPv4 | not done (`DropEncapUnsupported`) |
//!
//! The outer source is this LB's address of the backend's family
//! (`Config::encap_source_*`), the outer TTL 64 less this hop (`forward`
//! counts it, as for every packet it routes), the traffic class copied, and
//! an outer IPv4 header has DF set. A packet that would not fit the egress
//! once wrapped is answered like a router answers: "fragmentation needed" /
//! "packet too big" with the MTU left for the inner packet, quoting it as the
//! client sent it.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use xdp_lb_common::{
    addr::{Addr, is_v4_mapped, v4_mapped},
    csum,
    stats::Verdict,
};

use crate::{
    answer,
    lb::{
        Nat,
        flow::{Flow, MAX_L3_OFFSET},
    },
    maps::{CONFIG, OUTER_FLOW, OUTER_FLOW_WORDS},
    packet::FrameSource,
    wire::{ETH_P_IPV4, ETH_P_IPV6, IP4_DF, IP4_HLEN, IP6_HLEN, ip6_head},
    xdp::{
        forward::{TOO_BIG, forward},
        link::move_link,
    },
};

const _: () = assert!(size_of::<Flow>() <= OUTER_FLOW_WORDS * 8);

/// IPv4 in an outer header (IPIP, and IPv4-in-IPv6).
const IPPROTO_IPIP: u8 = 4;
/// IPv6 in an outer header (IP6IP6).
const IPPROTO_IPV6: u8 = 41;
/// The outer header's TTL / hop limit.
const TTL: u8 = 64;

/// What `wrap_and_send` did, beside its XDP action.
pub struct Outcome {
    pub verdict: Verdict,
    /// With `TOO_BIG`: the egress MTU the wrapped packet did not fit.
    pub mtu: u32,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            verdict: Verdict::DropEncapUnsupported,
            mtu: 0,
        }
    }
}

/// Wraps the packet of `flow` for `nat`'s backend and sends it: the XDP
/// action with its verdict in `outcome` (`DropEncapUnsupported` with
/// XDP_DROP when it cannot be wrapped), or `TOO_BIG` (the MTU in `outcome`)
/// for the caller to answer or drop. Inlined, so that `wrap` and `send` stay
/// calls one after another from the caller (see `send`).
#[inline(always)]
pub fn wrap_and_send(ctx: &XdpContext, flow: &Flow, nat: &Nat, outcome: &mut Outcome) -> u32 {
    let overhead = wrap(ctx, flow, nat);
    if overhead == 0 {
        outcome.verdict = Verdict::DropEncapUnsupported;
        return XDP_DROP;
    }
    send(ctx, flow, nat, overhead, outcome)
}

/// Sends the packet `wrap` wrapped (`overhead` bytes of outer header) to
/// `nat`'s backend: returns the XDP action with its verdict in `outcome`, or
/// `TOO_BIG` (the MTU in `outcome`) for the caller to answer with
/// `answer_too_big`. `wrap`, this and `answer_too_big` are subprograms the
/// caller calls one after another rather than one from the other: the
/// 512-byte stack limit counts the deepest chain of frames.
#[inline(never)]
pub fn send(
    ctx: &XdpContext,
    flow: &Flow,
    nat: &Nat,
    overhead: usize,
    outcome: &mut Outcome,
) -> u32 {
    let Some(slot) = OUTER_FLOW.get_ptr_mut(0) else {
        return XDP_DROP;
    };
    let outer = slot.cast::<Flow>();
    // The outer packet, as `forward` routes it: by its destination (the
    // source is only a routing-policy input, left out).
    // SAFETY: this CPU's slot, large and aligned enough for a `Flow` (the
    // assertion at the top of this module; u64 words); nothing else runs on
    // this CPU meanwhile.
    // Field by field: a whole `Flow` would be built on this frame first, and
    // this frame is on the deepest call chain (the ICMP error path's).
    unsafe {
        let o = &mut *outer;
        let src = o.tuple.src_addr.as_mut_ptr().cast::<u64>();
        core::ptr::write_volatile(src, 0);
        core::ptr::write_volatile(src.add(1), 0);
        o.tuple.dst_addr = nat.addr;
        o.tuple.src_port_be = 0;
        o.tuple.dst_port_be = 0;
        o.tuple.proto = 0;
        o.tuple._pad0 = 0;
        o.tuple._pad1 = 0;
        o.is_v4 = is_v4_mapped(&nat.addr);
        o.is_tcp = false;
        o.tcp_flags = 0;
        o.ttl = TTL;
        o.l3_offset = flow.l3_offset;
        o.l4_offset = flow.l3_offset + overhead;
        o.has_vlan = flow.has_vlan;
    }
    // SAFETY: written just above.
    let outer = unsafe { &*outer };
    // As in `xdp::apply`: a tagged frame is left to the kernel.
    if flow.has_vlan {
        outcome.verdict = Verdict::PassEncapsulatedViaStack;
        return XDP_PASS;
    }
    match forward(ctx, outer, nat, &mut outcome.mtu) {
        XDP_PASS => {
            outcome.verdict = Verdict::PassEncapsulatedViaStack;
            XDP_PASS
        }
        TOO_BIG => {
            outcome.verdict = Verdict::DropTooBig;
            TOO_BIG
        }
        action => {
            outcome.verdict = Verdict::ForwardEncapsulated;
            action
        }
    }
}

/// The bytes the outer header adds for `nat`'s backend.
#[inline(always)]
fn overhead_for(nat: &Nat) -> usize {
    if is_v4_mapped(&nat.addr) {
        IP4_HLEN
    } else {
        IP6_HLEN
    }
}

/// Grows the frame's head and writes the link and outer headers for `nat`'s
/// backend: returns the bytes added, or 0 when the packet cannot be wrapped
/// (the frame unchanged) or a helper failed halfway (the caller drops it
/// either way, as `DropEncapUnsupported`).
#[inline(never)]
pub fn wrap(ctx: &XdpContext, flow: &Flow, nat: &Nat) -> usize {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let outer_v4 = is_v4_mapped(&nat.addr);
    let l3 = flow.l3_offset;
    if l3 > MAX_L3_OFFSET || (outer_v4 && !flow.is_v4) {
        return 0;
    }
    let configured = if outer_v4 {
        u32::from_ne_bytes(config.encap_source_v4) != 0
    } else {
        let words = config.encap_source_v6.as_ptr().cast::<u64>();
        // SAFETY: two 8-byte words within the 16-byte address.
        unsafe { words.read_unaligned() | words.add(1).read_unaligned() != 0 }
    };
    if !configured {
        return 0;
    }
    let frame = ctx.frame();
    let (Some(link), Some(inner)) = (frame.read::<[u8; MAX_L3_OFFSET]>(0), frame.load::<8>(l3))
    else {
        return 0;
    };
    // The inner packet's length and traffic class, from its own header.
    let (inner_len, class) = if flow.is_v4 {
        (
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner[1],
        )
    } else {
        let payload = usize::from(u16::from_be_bytes([inner[4], inner[5]]));
        (IP6_HLEN + payload, (inner[0] << 4) | (inner[1] >> 4))
    };
    let header = Outer {
        src: if outer_v4 {
            v4_mapped(config.encap_source_v4)
        } else {
            config.encap_source_v6
        },
        dst: nat.addr,
        inner_len,
        class,
        proto: if flow.is_v4 {
            IPPROTO_IPIP
        } else {
            IPPROTO_IPV6
        },
    };
    let overhead = overhead_for(nat);
    // SAFETY: the program's context; a negative delta grows the head.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return 0;
    }
    let written = if outer_v4 {
        write_v4(ctx, l3, &link, &header)
    } else {
        write_v6(ctx, l3, &link, &header)
    };
    if written.is_some() { overhead } else { 0 }
}

/// What an outer header says.
struct Outer {
    src: Addr,
    dst: Addr,
    /// The inner packet's length (its IP datagram).
    inner_len: usize,
    /// The inner packet's traffic class (IPv4 TOS), copied.
    class: u8,
    /// IPv6 next header (IPv4's protocol is always IPIP).
    proto: u8,
}

/// Writes the link header (with the outer family's EtherType) and an outer
/// IPv4 header. Inlined into `wrap`, as `write_v6` is: a call would add a
/// frame to the deepest chain.
#[inline(always)]
fn write_v4(ctx: &XdpContext, l3: usize, link: &[u8; MAX_L3_OFFSET], header: &Outer) -> Option<()> {
    write_link(ctx, l3, link, ETH_P_IPV4)?;
    let out = ctx.frame().get_mut::<[u8; IP4_HLEN]>(l3)?;
    // SAFETY: `get_mut` checked the header lies in the frame.
    let out = unsafe { &mut *out };
    let [hi, lo] = ((IP4_HLEN + header.inner_len) as u16).to_be_bytes();
    let class = header.class;
    let [df, _] = IP4_DF.to_be_bytes();
    out[..12].copy_from_slice(&[0x45, class, hi, lo, 0, 0, df, 0, TTL, IPPROTO_IPIP, 0, 0]);
    out[12..16].copy_from_slice(&header.src[12..]);
    out[16..].copy_from_slice(&header.dst[12..]);
    let sum = csum::finish(csum::add(0, out));
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    Some(())
}

/// Writes the link header and an outer IPv6 header.
#[inline(always)]
fn write_v6(ctx: &XdpContext, l3: usize, link: &[u8; MAX_L3_OFFSET], header: &Outer) -> Option<()> {
    write_link(ctx, l3, link, ETH_P_IPV6)?;
    let out = ctx.frame().get_mut::<[u8; IP6_HLEN]>(l3)?;
    // SAFETY: `get_mut` checked the header lies in the frame.
    let out = unsafe { &mut *out };
    out[..8].copy_from_slice(&ip6_head(
        header.class,
        header.inner_len as u16,
        header.proto,
        TTL,
    ));
    out[8..24].copy_from_slice(&header.src);
    out[24..].copy_from_slice(&header.dst);
    Some(())
}

/// The link header at the new front: the packet's own (MACs as they came,
/// `forward` rewrites them), the EtherType before the network header set to
/// `ethertype`.
#[inline(always)]
fn write_link(
    ctx: &XdpContext,
    l3: usize,
    link: &[u8; MAX_L3_OFFSET],
    ethertype: u16,
) -> Option<()> {
    let out = ctx.frame().get_mut::<[u8; MAX_L3_OFFSET]>(0)?;
    // SAFETY: `get_mut` checked the 18 bytes lie in the frame.
    let out = unsafe { &mut *out };
    out.copy_from_slice(link);
    // 12 untagged, 16 behind a VLAN tag.
    let at = if l3 == MAX_L3_OFFSET { 16 } else { 12 };
    out[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
    Some(())
}

/// The wrapped packet (`encapsulate` answered `TOO_BIG`) does not fit the
/// egress: unwraps it and, for IPv6 or an IPv4 packet with DF, answers the
/// client with the MTU left for the inner packet (`AnswerTooBig`); otherwise,
/// as the LB cannot fragment, drops it (`DropTooBig`).
#[inline(never)]
pub fn answer_too_big(ctx: &XdpContext, flow: &Flow, nat: &Nat, mtu: u32) -> Verdict {
    let overhead = overhead_for(nat);
    let l3 = flow.l3_offset;
    let inner_type = if flow.is_v4 { ETH_P_IPV4 } else { ETH_P_IPV6 };
    if l3 > MAX_L3_OFFSET || move_link(&ctx.frame(), l3, overhead, inner_type).is_none() {
        return Verdict::DropTooBig;
    }
    // SAFETY: the program's context; a positive delta shrinks the head back
    // to where the packet began.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, overhead as i32) } != 0 {
        return Verdict::DropTooBig;
    }
    if !super::must_not_fragment(ctx, flow) {
        return Verdict::DropTooBig;
    }
    let left = mtu.saturating_sub(overhead as u32);
    match answer::icmp_error(ctx, flow, answer::IcmpError::TooBig, left) {
        answer::Answered::Yes => Verdict::AnswerTooBig,
        answer::Answered::NotAnswerable | answer::Answered::Broken => Verdict::DropTooBig,
    }
}
