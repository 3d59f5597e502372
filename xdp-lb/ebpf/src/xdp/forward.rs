//! Forwarding a translated or wrapped frame: `bpf_fib_lookup` for the next
//! hop (cached per CPU for a second: by backend toward backends, by a hash of
//! the client address for replies), MAC rewrite, and XDP_TX or a redirect.
//! When the kernel does not know the next hop's neighbour yet (or has no
//! route), the frame goes to the kernel, which resolves it (or answers with an
//! ICMP error) — it is already translated, so the kernel only routes it.
//! A frame larger than the egress device's MTU is not sent (a redirect would
//! drop it): the caller answers it (`TOO_BIG`).

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::{XDP_PASS, XDP_TX},
    },
    helpers::{bpf_check_mtu, bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::{
    addr::{Addr, addr_hash},
    backend::{NEXT_HOP_TTL_NS, NextHop, REPLY_HOP_SLOTS},
};

use crate::{
    lb::{End, Nat, flow::Flow},
    maps::{BACKEND_CPU, POD_INTERFACES, REPLY_HOPS},
    packet::FrameSource,
    unaligned::PacketBytes,
    xdp::rewrite,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// `forward`'s answer for a frame larger than the egress device's MTU; it
/// writes the MTU to its `mtu` argument and leaves the frame as it was.
pub const TOO_BIG: u32 = u32::MAX;

/// The outer header a frame is wrapped in: none (a translated frame), or the
/// IPv4 or IPv6 header `encap::wrap` put in front of it for direct server
/// return.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Wrap {
    None,
    V4,
    V6,
}

/// No address: the source of an outer packet's route, which only routing
/// policy would read.
const UNSPECIFIED: Addr = [0; 16];

/// Looks up the route of the translated frame, or of the outer header it is
/// wrapped in (`wrap`), and sends it on its way: returns XDP_TX or the
/// redirect's action, XDP_PASS to hand it to the kernel, or `TOO_BIG` (with
/// the egress MTU in `mtu`). A wrapped frame is routed to `nat`'s backend by
/// its destination alone; its outer header starts where `flow`'s network
/// header did, and its TTL is the one counted down.
#[inline(never)]
pub fn forward(ctx: &XdpContext, flow: &Flow, nat: &Nat, wrap: Wrap, mtu: &mut u32) -> u32 {
    let ingress = ctx.ingress_ifindex() as u32;
    let t = &flow.tuple;
    // The header routed and counted down: IPv4 or not, and its protocol.
    let routed = match wrap {
        Wrap::None => (flow.is_v4, t.proto),
        Wrap::V4 => (true, 0),
        Wrap::V6 => (false, 0),
    };
    // The translated ends, this CPU's cache slot of their next hop, and the
    // backend generation the hop must have been looked up for. The hop is
    // used where it lies in the slot: a copy on this frame would not fit the
    // deepest call chain.
    let (ends, slot, generation) = match nat.end {
        End::Destination => (
            if wrap == Wrap::None {
                (&t.src_addr, &nat.addr, t.src_port_be, nat.port_be)
            } else {
                (&UNSPECIFIED, &nat.addr, 0, 0)
            },
            BACKEND_CPU
                .get_ptr_mut(nat.backend_id)
                // SAFETY: a field of a live map value.
                .map(|slot| unsafe { &raw mut (*slot).hop }),
            nat.generation,
        ),
        // After the reverse translation the source is the frontend.
        // Under source NAT the destination changes too (back to the
        // client); otherwise it is the frame's own (for an ICMP error, the
        // error's destination rather than the flow's client). A reply's hop
        // is cached by that client address, with no generation.
        End::Source => {
            let ends = if nat.snat {
                (&nat.addr, &nat.peer_addr, nat.port_be, nat.peer_port_be)
            } else {
                (&nat.addr, &t.dst_addr, nat.port_be, t.dst_port_be)
            };
            (ends, reply_slot(ends.1), 0)
        }
    };
    // Without a slot (an ID past the map) the kernel routes the frame,
    // already translated.
    let Some(slot) = slot else {
        return XDP_PASS;
    };
    // SAFETY: this CPU's value of a per-CPU map; nothing else runs on this
    // CPU meanwhile, and no other CPU reads it.
    let hop = unsafe { &mut *slot };
    let now = nat.now_ns;
    if !fresh(hop, generation, ingress, now)
        && !lookup(ctx, ingress, routed, ends, (now, generation), hop)
    {
        return XDP_PASS;
    }
    if hop.via_stack != 0 {
        return XDP_PASS;
    }
    let frame = &ctx.frame();
    // XDP_TX leaves by the interface the frame came in on, which took it.
    if hop.egress_ifindex != ingress
        && frame.len().saturating_sub(flow.l3_offset) > hop.mtu as usize
    {
        *mtu = hop.mtu;
        return TOO_BIG;
    }
    let Some(macs) = frame.get_mut::<[u8; 12]>(0) else {
        return XDP_PASS;
    };
    if rewrite::decrement_ttl(frame, flow.l3_offset, routed.0).is_none() {
        return XDP_PASS;
    }
    // Written in words (`unaligned`); the slot's MACs are 8-aligned, so they
    // are read in words too.
    // SAFETY: `get_mut` checked the 12 MAC bytes lie inside the frame.
    unsafe { hop.macs.store(macs.cast::<u8>()) };
    if hop.egress_ifindex == ingress {
        XDP_TX
    } else {
        // SAFETY: a helper taking plain integers.
        let action = unsafe { bpf_redirect(hop.egress_ifindex, 0) };
        action as u32
    }
}

/// This CPU's slot in the reply next-hop cache for `client`: the slot its
/// address hashes to, taken over (emptied, so that no packet finds it fresh)
/// when it held another client. Caching replies' hops took their FIB lookup,
/// a quarter of a reply's cost (measured), off every reply but the first of
/// each second.
#[inline(always)]
fn reply_slot(client: &Addr) -> Option<*mut NextHop> {
    let slot = REPLY_HOPS.get_ptr_mut(addr_hash(client, REPLY_HOP_SLOTS.trailing_zeros()))?;
    // SAFETY: this CPU's value of a per-CPU map; nothing else runs on this
    // CPU meanwhile, and no other CPU reads it.
    let slot = unsafe { &mut *slot };
    if slot.client != *client {
        slot.client = *client;
        slot.hop.looked_up_ns = 0;
    }
    Some(&raw mut slot.hop)
}

/// A cached next hop that holds for a packet of this backend generation that
/// came in on `ingress`.
#[inline(always)]
fn fresh(hop: &NextHop, generation: u32, ingress: u32, now: u64) -> bool {
    hop.looked_up_ns != 0
        && hop.generation == generation
        && hop.ingress_ifindex == ingress
        && now.saturating_sub(hop.looked_up_ns) < NEXT_HOP_TTL_NS
}

/// Asks the kernel's FIB (and neighbour table) for the next hop of a packet
/// of `routed` (IPv4 or not, and its transport protocol) and writes it to
/// `out`, stamped with `now` and the backend `generation` it is for (0 for a
/// reply's); false, with `out` untouched, when it has no complete answer (no
/// route, neighbour not resolved yet, ...).
#[inline(always)]
fn lookup(
    ctx: &XdpContext,
    ingress: u32,
    routed: (bool, u8),
    (src, dst, sport, dport): (&Addr, &Addr, u16, u16),
    (now, generation): (u64, u32),
    out: &mut NextHop,
) -> bool {
    let mut params = MaybeUninit::<FibParams>::uninit();
    let p = params.as_mut_ptr();
    fill_params(p, ingress, routed, (src, dst, sport, dport));
    // SAFETY: `p` is a valid, initialised struct of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), p, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return false;
    }
    // SAFETY: initialised above, and filled in by the helper.
    let params = unsafe { params.assume_init_ref() };
    // With a length of 0 the helper only reads the device's MTU into `mtu`.
    let mut mtu = 0u32;
    // SAFETY: the program's context and a valid `u32` on this stack frame.
    let rc = unsafe { bpf_check_mtu(ctx.ctx.cast(), params.ifindex, &raw mut mtu, 0, 0) };
    if rc < 0 {
        // The device is gone: no limit the redirect could enforce either.
        mtu = u32::MAX;
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&params.dmac);
    macs[6..].copy_from_slice(&params.smac);
    *out = NextHop {
        // Never 0, which marks an empty slot. Not `now | 1`: a stamp one
        // past the clock made every packet of the lookup's own clock tick
        // (the coarse clock moves every few milliseconds) look it up again.
        looked_up_ns: now.max(1),
        ingress_ifindex: ingress,
        egress_ifindex: params.ifindex,
        macs,
        generation,
        mtu,
        via_stack: 0,
    };
    #[expect(
        clippy::needless_borrows_for_generic_args,
        reason = "the key by reference: a copy would take another stack slot, and this frame \
                  is on the deepest call chain"
    )]
    let to_pod = POD_INTERFACES.get_ptr(&params.ifindex).is_some();
    if to_pod {
        out.via_stack = 1;
    }
    true
}

/// Fills the lookup parameters in place for a packet from `src` to `dst`
/// entering on `ifindex`, of `(is_v4, proto)`: a copy of a zeroed struct may
/// come out as a `memset` call, or as registers LLVM treats as undefined.
#[inline(always)]
pub(crate) fn fill_params(
    p: *mut FibParams,
    ifindex: u32,
    (is_v4, proto): (bool, u8),
    (src, dst, sport, dport): (&Addr, &Addr, u16, u16),
) {
    zero(p);
    // SAFETY: `p` points at a zeroed `FibParams` of the caller's frame.
    unsafe {
        (*p).ifindex = ifindex;
        (*p).l4_protocol = proto;
        (*p).sport = sport;
        (*p).dport = dport;
        if is_v4 {
            (*p).family = AF_INET;
            (*p).__bindgen_anon_3.ipv4_src =
                u32::from_ne_bytes([src[12], src[13], src[14], src[15]]);
            (*p).__bindgen_anon_4.ipv4_dst =
                u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]);
        } else {
            (*p).family = AF_INET6;
            (*p).__bindgen_anon_3.ipv6_src = words(src);
            (*p).__bindgen_anon_4.ipv6_dst = words(dst);
        }
    }
}

/// Zeroes the lookup parameters with volatile word stores: LLVM turns a zeroed
/// struct into a `memset` call, a byte loop in BPF. Four-byte words: the
/// struct is only 4-byte aligned, and the verifier rejects a misaligned
/// 8-byte stack store.
#[inline(always)]
fn zero(params: *mut FibParams) {
    const WORDS: usize = size_of::<FibParams>() / 4;
    const _: () = assert!(size_of::<FibParams>().is_multiple_of(4));
    let words = params.cast::<u32>();
    for i in 0..WORDS {
        // SAFETY: `i` words into a `FibParams`-sized buffer.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

#[inline(always)]
fn words(a: &Addr) -> [u32; 4] {
    [
        u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
    ]
}
