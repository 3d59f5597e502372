//! `xdp_decap`, for the backends of direct-server-return services: strips the
//! outer header (IPIP, IPv4-in-IPv6, IP6IP6) of a packet whose inner
//! destination is a configured VIP (`DECAP_VIPS`) and passes the inner
//! packet to the stack, where the VIP sits on `lo` and the reply goes to the
//! client directly. This kernel has no ipip module, so the decapsulation is
//! this program's. Anything else passes untouched; every frame is counted in
//! one `DecapVerdict`.

use aya_ebpf::{
    bindings::xdp_action::XDP_PASS, helpers::bpf_xdp_adjust_head, programs::XdpContext,
};
use xdp_lb_common::{
    addr::v4_mapped,
    service::AddressKey,
    stats::{DecapVerdict, ParseCounter},
};

use crate::{
    lb::flow::{MAX_L3_OFFSET, MAX_L4_OFFSET},
    maps::{DECAP_VIPS, count_decap, forget_ranges},
    packet::FrameSource,
    parse::parse,
    wire::{ETH_P_IPV4, ETH_P_IPV6, IP4_HLEN, IP6_HLEN},
    xdp::link::move_link,
};

/// IPv4 and IPv6 as the outer header's protocol.
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// The whole of `xdp_decap`.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let len = ctx.frame().len();
    let verdict = decapsulate(ctx);
    count_decap(verdict, len);
    XDP_PASS
}

#[inline(never)]
fn decapsulate(ctx: &XdpContext) -> DecapVerdict {
    let parsed = parse(ctx);
    let outer_v4 = match parsed.counter {
        ParseCounter::OtherL4Ip4 => true,
        ParseCounter::OtherL4Ip6 => false,
        _ => return DecapVerdict::PassNotEncapsulated,
    };
    let inner_v4 = match parsed.l4_proto {
        IPPROTO_IPIP => true,
        IPPROTO_IPV6 if !outer_v4 => false,
        _ => return DecapVerdict::PassNotEncapsulated,
    };
    let (l3, inner) = forget_ranges(parsed.l3_offset, parsed.l4_offset);
    if l3 > MAX_L3_OFFSET || inner > MAX_L4_OFFSET || inner <= l3 {
        return DecapVerdict::PassMalformed;
    }
    let frame = ctx.frame();
    // The inner version and destination.
    let destination = if inner_v4 {
        match frame.read::<[u8; IP4_HLEN]>(inner) {
            Some(h) if h[0] >> 4 == 4 => v4_mapped([h[16], h[17], h[18], h[19]]),
            _ => return DecapVerdict::PassMalformed,
        }
    } else {
        let Some(h) = frame.get::<[u8; IP6_HLEN]>(inner) else {
            return DecapVerdict::PassMalformed;
        };
        let h = h.cast::<u8>();
        // SAFETY: `get` checked the whole header lies in the frame.
        unsafe {
            if h.read() >> 4 != 6 {
                return DecapVerdict::PassMalformed;
            }
            h.add(24).cast::<[u8; 16]>().read_unaligned()
        }
    };
    if DECAP_VIPS
        .get_ptr(AddressKey { addr: destination })
        .is_none()
    {
        return DecapVerdict::PassNotOurVip;
    }
    let outer_len = inner - l3;
    let ethertype = if inner_v4 { ETH_P_IPV4 } else { ETH_P_IPV6 };
    if move_link(&frame, l3, outer_len, ethertype).is_none() {
        return DecapVerdict::PassMalformed;
    }
    // SAFETY: the program's context; a positive delta drops the outer header
    // (the link header now lies just before the inner packet).
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return DecapVerdict::PassMalformed;
    }
    DecapVerdict::Decapsulated
}
