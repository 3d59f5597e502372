//! `tc_probe_encap`, at the egress of the LB's uplinks: health probes of
//! direct-server-return backends through the tunnel (Katran's healthchecking
//! program does the same).
//!
//! The agent probes such a backend by connecting to its service's VIP from a
//! socket marked with a probe mark (`xdp_lb_common::probe`) that names the
//! backend. Each packet of that socket is wrapped here in the outer header
//! `xdp_lb` gives a client's packet for the backend (the same functions of
//! `xdp::encap` build and write it: IPIP, IPv4-in-IPv6, IP6IP6, from the
//! `--encap-source` of the backend's family), and redirected toward it. The
//! backend's `xdp_decap` strips the header and its stack answers from the
//! VIP straight to this host, as it answers clients: a probe passes only
//! when the path the traffic takes works.
//!
//! - The room for the outer header comes from `bpf_skb_adjust_room` with the
//!   encapsulation flags, so the kernel knows the packet is encapsulated:
//!   a partial checksum of the inner packet (a local socket's, with TX
//!   offload) and segmentation stay right on any device.
//! - The wrapped packet is sent on with a FIB lookup of the backend and
//!   `bpf_redirect_neigh`, which fills in the MACs and resolves a next hop
//!   it does not know yet: the route the kernel chose was the VIP's, not the
//!   backend's. Its mark is cleared first, so that it passes this program
//!   untouched when the redirect brings it back through an egress hook.
//! - A marked packet that cannot be sent through the tunnel is dropped and
//!   counted: its probe fails, rather than passing by another path.
//!   Packets without a probe mark pass untouched and uncounted.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup as FibParams,
    },
    helpers::bpf_fib_lookup,
    programs::TcContext,
};
use xdp_lb_common::{
    addr::{Addr, is_v4_mapped, v4_mapped},
    probe::{ProbeBackend, probe_slot},
    stats::ProbeVerdict,
};

use crate::{
    maps::{CONFIG, PROBE_BACKENDS, PROBE_MARK_BASE, count_probe},
    packet::FrameSource,
    tc::forward::neigh,
    wire::{ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, ETH_TYPE, IP4_HLEN, IP6_HLEN, ip6_head},
    xdp::{
        encap::{
            TTL, config_encap_source_v6, inner_len_and_class, inner_proto, ip4_outer, write_v4,
            write_v6,
        },
        forward::fill_params,
    },
};

/// The whole of `tc_probe_encap`.
#[inline(always)]
pub fn run(ctx: &TcContext) -> i32 {
    // SAFETY: the program's `__sk_buff`, read for one field.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark == 0 {
        // Most packets: no lookup at all.
        return TC_ACT_OK;
    }
    let base = PROBE_MARK_BASE.get(0).copied().unwrap_or(0);
    let Some(slot) = probe_slot(mark, base) else {
        return TC_ACT_OK;
    };
    let len = ctx.len() as usize;
    let (verdict, action) = match PROBE_BACKENDS.get_ptr(slot) {
        // SAFETY: a value of the map, copied out while the program runs.
        Some(backend) => send(ctx, unsafe { &*backend }),
        None => (ProbeVerdict::DropUnknownMark, TC_ACT_SHOT),
    };
    count_probe(verdict, len);
    action
}

/// Wraps the packet for `backend` and redirects it there: the verdict and
/// the TC action.
#[inline(never)]
fn send(ctx: &TcContext, backend: &ProbeBackend) -> (ProbeVerdict, i32) {
    let backend = backend.addr;
    let verdict = wrap(ctx, &backend);
    if verdict != ProbeVerdict::Wrapped {
        return (verdict, TC_ACT_SHOT);
    }
    // Not a probe's packet any more: when the redirect brings it through an
    // egress hook again, it passes.
    ctx.set_mark(0);
    redirect(ctx, &backend)
}

/// Grows the packet by the outer header for `backend` and writes it, with
/// the link header's EtherType of the outer family: `Wrapped`, or why not
/// (the packet then unchanged, but for a helper failing halfway).
#[inline(always)]
fn wrap(ctx: &TcContext, backend: &Addr) -> ProbeVerdict {
    let Some(config) = CONFIG.get(0) else {
        return ProbeVerdict::DropNoEncapSource;
    };
    // Headers made linear: the link header, and the first 8 bytes of the
    // inner IP header read below.
    let _ = ctx.skb.pull_data((ETH_HLEN + 8) as u32);
    let frame = ctx.frame();
    let (Some(link), Some(inner)) = (frame.load::<16>(0), frame.load::<8>(ETH_HLEN)) else {
        return ProbeVerdict::DropMalformed;
    };
    let inner_v4 = match u16::from_be_bytes([link[ETH_TYPE], link[ETH_TYPE + 1]]) {
        ETH_P_IPV4 if inner[0] >> 4 == 4 => true,
        ETH_P_IPV6 if inner[0] >> 4 == 6 => false,
        _ => return ProbeVerdict::DropEncapUnsupported,
    };
    let (inner_len, class) = inner_len_and_class(inner, inner_v4);
    let l3 = ETH_HLEN;
    if is_v4_mapped(backend) {
        if !inner_v4 {
            return ProbeVerdict::DropEncapUnsupported;
        }
        let src = config.encap_source_v4;
        if src == [0; 4] {
            return ProbeVerdict::DropNoEncapSource;
        }
        let dst = [backend[12], backend[13], backend[14], backend[15]];
        let header = ip4_outer(class, (IP4_HLEN + inner_len) as u16, src, dst);
        if !grow(ctx, IP4_HLEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) {
            return ProbeVerdict::DropNoRoom;
        }
        if write_v4(ctx, l3, link, &header).is_none() {
            return ProbeVerdict::DropMalformed;
        }
    } else {
        let src = config_encap_source_v6(config);
        if src == [0; 2] {
            return ProbeVerdict::DropNoEncapSource;
        }
        let head = ip6_head(class, inner_len as u16, inner_proto(inner_v4), TTL);
        if !grow(ctx, IP6_HLEN, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) {
            return ProbeVerdict::DropNoRoom;
        }
        if write_v6(ctx, l3, link, head, src, words(backend)).is_none() {
            return ProbeVerdict::DropMalformed;
        }
    }
    ProbeVerdict::Wrapped
}

/// Makes `bytes` of room between the link and network headers, telling the
/// kernel the packet is now encapsulated in the outer family of `flag` (it
/// sets the socket buffer's protocol and inner header offsets).
#[inline(always)]
fn grow(ctx: &TcContext, bytes: usize, flag: u32) -> bool {
    ctx.adjust_room(bytes as i32, BPF_ADJ_ROOM_MAC, u64::from(flag))
        .is_ok()
}

/// An address as the two 8-byte words it lies in memory as.
#[inline(always)]
fn words(addr: &Addr) -> [u64; 2] {
    let mut high = [0; 8];
    let mut low = [0; 8];
    high.copy_from_slice(&addr[..8]);
    low.copy_from_slice(&addr[8..]);
    [u64::from_ne_bytes(high), u64::from_ne_bytes(low)]
}

/// Sends the wrapped packet toward `backend`: the FIB's egress device for
/// the outer header, then `bpf_redirect_neigh` there.
#[inline(always)]
fn redirect(ctx: &TcContext, backend: &Addr) -> (ProbeVerdict, i32) {
    let Some(config) = CONFIG.get(0) else {
        return (ProbeVerdict::DropNoEncapSource, TC_ACT_SHOT);
    };
    let (source, proto) = if is_v4_mapped(backend) {
        (v4_mapped(config.encap_source_v4), inner_proto(true))
    } else {
        (config.encap_source_v6, inner_proto(false))
    };
    let mut params = MaybeUninit::<FibParams>::uninit();
    let p = params.as_mut_ptr();
    // SAFETY: the program's `__sk_buff`: at egress, the device the packet
    // was leaving by. The lookup is made as if it came in there, as
    // `tc::forward` makes its lookups.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fill_params(
        p,
        ifindex,
        (is_v4_mapped(backend), proto),
        (&source, backend, 0, 0),
    );
    // SAFETY: the program's context and a valid, initialised struct of the
    // size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), p, size_of::<FibParams>() as i32, 0) };
    if rc == i64::from(BPF_FIB_LKUP_RET_FRAG_NEEDED) {
        return (ProbeVerdict::DropTooBig, TC_ACT_SHOT);
    }
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return (ProbeVerdict::DropNoRoute, TC_ACT_SHOT);
    }
    // SAFETY: initialised above, and filled in by the helper.
    let egress = unsafe { params.assume_init_ref() }.ifindex;
    match neigh(egress) {
        // The helper refused (a device gone meanwhile): not sent.
        TC_ACT_SHOT => (ProbeVerdict::DropNoRoute, TC_ACT_SHOT),
        action => (ProbeVerdict::Wrapped, action),
    }
}
