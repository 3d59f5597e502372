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
use xdp_lb_common::{config::Config, csum, stats::Verdict};

use crate::{
    answer,
    lb::{
        Nat,
        flow::{Flow, MAX_L3_OFFSET},
    },
    maps::CONFIG,
    packet::FrameSource,
    wire::{ETH_P_IPV4, ETH_P_IPV6, IP4_DF, IP4_HLEN, IP6_HLEN, ip6_head},
    xdp::{
        forward::{TOO_BIG, Wrap, forward},
        link::move_link,
        rewrite::store,
    },
};

/// IPv4 in an outer header (IPIP, and IPv4-in-IPv6).
const IPPROTO_IPIP: u8 = 4;
/// IPv6 in an outer header (IP6IP6).
const IPPROTO_IPV6: u8 = 41;
/// The outer header's TTL / hop limit, before `forward` counts this hop.
pub(crate) const TTL: u8 = 64;

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
/// for the caller to answer or drop. Inlined, so that `wrap` and `forward`
/// stay calls one after another from the caller, and `answer_too_big` one
/// after them: the 512-byte stack limit counts the deepest chain of frames.
#[inline(always)]
pub fn wrap_and_send(ctx: &XdpContext, flow: &Flow, nat: &Nat, outcome: &mut Outcome) -> u32 {
    let overhead = wrap(ctx, flow, nat);
    if overhead == 0 {
        outcome.verdict = Verdict::DropEncapUnsupported;
        return XDP_DROP;
    }
    // As in `xdp::apply`: a tagged frame is left to the kernel.
    if flow.has_vlan {
        outcome.verdict = Verdict::PassEncapsulatedViaStack;
        return XDP_PASS;
    }
    // `wrap` chose the outer family by the backend's: its header's size says which.
    let wrapped = if overhead == IP4_HLEN {
        Wrap::V4
    } else {
        Wrap::V6
    };
    match forward(ctx, flow, nat, wrapped, &mut outcome.mtu) {
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
    if nat.addr_is_v4() { IP4_HLEN } else { IP6_HLEN }
}

/// Grows the frame's head and writes the link and outer headers for `nat`'s
/// backend: returns the bytes added, or 0 when the packet cannot be wrapped
/// (the frame unchanged) or a helper failed halfway (the caller drops it
/// either way, as `DropEncapUnsupported`).
///
/// Every header moves in whole words (`unaligned`), the outer IPv4 header's
/// checksum summed from the words it is built of: byte by byte, the copies,
/// the address checks and the checksum were most of a wrap.
#[inline(never)]
pub fn wrap(ctx: &XdpContext, flow: &Flow, nat: &Nat) -> usize {
    let Some(config) = CONFIG.get(0) else {
        return 0;
    };
    let outer_v4 = nat.addr_is_v4();
    let l3 = flow.l3_offset;
    if l3 > MAX_L3_OFFSET || (outer_v4 && !flow.is_v4) {
        return 0;
    }
    let frame = ctx.frame();
    // The link header's first 16 bytes: the MACs, then a VLAN tag, or the
    // EtherType and two bytes of the IP header, which the new EtherType and
    // outer header overwrite.
    let (Some(link), Some(inner)) = (frame.load::<16>(0), frame.load::<8>(l3)) else {
        return 0;
    };
    let (inner_len, class) = inner_len_and_class(inner, flow.is_v4);
    if outer_v4 {
        let src = config.encap_source_v4;
        if u32::from_ne_bytes(src) == 0 {
            return 0;
        }
        let header = ip4_outer(class, (IP4_HLEN + inner_len) as u16, src, nat.addr_v4());
        if !grow(ctx, IP4_HLEN) || write_v4(ctx, l3, link, &header).is_none() {
            return 0;
        }
        IP4_HLEN
    } else {
        let src = config_encap_source_v6(config);
        if src == [0; 2] {
            return 0;
        }
        let head = ip6_head(class, inner_len as u16, inner_proto(flow.is_v4), TTL);
        if !grow(ctx, IP6_HLEN) || write_v6(ctx, l3, link, head, src, nat.addr_words()).is_none() {
            return 0;
        }
        IP6_HLEN
    }
}

/// The inner packet's total length and traffic class, from the first 8
/// bytes of its own header (IPv4 if `inner_v4`, else IPv6).
#[inline(always)]
pub(crate) fn inner_len_and_class(inner: [u8; 8], inner_v4: bool) -> (usize, u8) {
    if inner_v4 {
        (
            usize::from(u16::from_be_bytes([inner[2], inner[3]])),
            inner[1],
        )
    } else {
        let payload = usize::from(u16::from_be_bytes([inner[4], inner[5]]));
        (IP6_HLEN + payload, (inner[0] << 4) | (inner[1] >> 4))
    }
}

/// The outer header's protocol (next header) for an inner packet of the
/// family `inner_v4` says.
#[inline(always)]
pub(crate) const fn inner_proto(inner_v4: bool) -> u8 {
    if inner_v4 { IPPROTO_IPIP } else { IPPROTO_IPV6 }
}

/// `Config::encap_source_v6` as two 8-byte words, read whole.
#[inline(always)]
pub(crate) fn config_encap_source_v6(config: &Config) -> [u64; 2] {
    const _: () = assert!(core::mem::offset_of!(Config, encap_source_v6).is_multiple_of(8));
    const _: () = assert!(align_of::<Config>() >= 8);
    // SAFETY: sixteen bytes at an 8-aligned offset of an 8-aligned struct.
    unsafe {
        (&raw const config.encap_source_v6)
            .cast::<[u64; 2]>()
            .read()
    }
}

/// Grows the frame's head by `bytes`.
#[inline(always)]
fn grow(ctx: &XdpContext, bytes: usize) -> bool {
    // SAFETY: the program's context; a negative delta grows the head.
    unsafe { bpf_xdp_adjust_head(ctx.ctx, -(bytes as i32)) == 0 }
}

/// An outer IPv4 header of `total_len` bytes from `src` to `dst`, its
/// checksum included, as the five 4-byte words it is written in.
///
/// The one's-complement sum does not depend on byte order (RFC 1071, 2.(B)):
/// summed as native 16-bit halves of the words as they lie in memory, and
/// stored natively, it comes out in network order.
#[inline(always)]
pub(crate) fn ip4_outer(class: u8, total_len: u16, src: [u8; 4], dst: [u8; 4]) -> [u32; 5] {
    let [len_hi, len_lo] = total_len.to_be_bytes();
    let [df, _] = IP4_DF.to_be_bytes();
    let mut words = [
        u32::from_ne_bytes([0x45, class, len_hi, len_lo]),
        u32::from_ne_bytes([0, 0, df, 0]),
        u32::from_ne_bytes([TTL, IPPROTO_IPIP, 0, 0]),
        u32::from_ne_bytes(src),
        u32::from_ne_bytes(dst),
    ];
    let sum = words
        .iter()
        .fold(0u32, |sum, w| sum + (w & 0xffff) + (w >> 16));
    let [c0, c1] = csum::finish(sum).to_ne_bytes();
    words[2] = u32::from_ne_bytes([TTL, IPPROTO_IPIP, c0, c1]);
    words
}

/// Writes the link header (with the outer family's EtherType) and the outer
/// IPv4 header `words`. Inlined into `wrap`, as `write_v6` is: a call would
/// add a frame to the deepest chain.
#[inline(always)]
pub(crate) fn write_v4<C: FrameSource>(
    ctx: &C,
    l3: usize,
    link: [u8; 16],
    words: &[u32; 5],
) -> Option<()> {
    write_link(ctx, l3, link, ETH_P_IPV4)?;
    let out = ctx.frame().get_mut::<[u8; IP4_HLEN]>(l3)?.cast::<u8>();
    for (i, word) in words.iter().enumerate() {
        // SAFETY: `get_mut` checked the 20 bytes lie in the frame.
        unsafe { store(out, 4 * i, word.to_ne_bytes()) };
    }
    Some(())
}

/// Writes the link header and an outer IPv6 header: `head` (version to hop
/// limit), then the addresses, each as two words as they lie in memory.
#[inline(always)]
pub(crate) fn write_v6<C: FrameSource>(
    ctx: &C,
    l3: usize,
    link: [u8; 16],
    head: [u8; 8],
    src: [u64; 2],
    dst: [u64; 2],
) -> Option<()> {
    write_link(ctx, l3, link, ETH_P_IPV6)?;
    let out = ctx.frame().get_mut::<[u8; IP6_HLEN]>(l3)?.cast::<u8>();
    // SAFETY: `get_mut` checked the 40 bytes lie in the frame.
    unsafe {
        store(out, 0, head);
        store(out, 8, src[0].to_ne_bytes());
        store(out, 16, src[1].to_ne_bytes());
        store(out, 24, dst[0].to_ne_bytes());
        store(out, 32, dst[1].to_ne_bytes());
    }
    Some(())
}

/// The link header at the new front: the packet's own first 16 bytes (MACs
/// as they came, `forward` rewrites them; a VLAN tag), then `ethertype`
/// before the network header at `l3`.
#[inline(always)]
fn write_link<C: FrameSource>(ctx: &C, l3: usize, link: [u8; 16], ethertype: u16) -> Option<()> {
    let out = ctx.frame().get_mut::<[u8; MAX_L3_OFFSET]>(0)?.cast::<u8>();
    // 12 untagged, 16 behind a VLAN tag.
    let at = if l3 == MAX_L3_OFFSET { 16 } else { 12 };
    // SAFETY: `get_mut` checked the 18 bytes lie in the frame, and `at + 2`
    // is at most 18.
    unsafe {
        store(out, 0, link);
        store(out, at, ethertype.to_be_bytes());
    }
    Some(())
}

/// The wrapped packet (`wrap_and_send` answered `TOO_BIG`) does not fit the
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
