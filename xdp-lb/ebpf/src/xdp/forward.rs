//! Forwarding a translated frame: `bpf_fib_lookup` for the next hop, MAC
//! rewrite, and XDP_TX or a redirect. When the kernel does not know the next
//! hop's neighbour yet (or has no route), the frame goes to the kernel, which
//! resolves it (or answers with an ICMP error) — it is already translated, so
//! the kernel only routes it.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action::{XDP_PASS, XDP_TX},
    },
    helpers::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use xdp_lb_common::addr::Addr;

use crate::{
    lb::{End, Nat, flow::Flow},
    packet::FrameSource,
    xdp::rewrite,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Looks up the route of the translated frame and sends it on its way: returns
/// XDP_TX or the redirect's action, or XDP_PASS to hand it to the kernel.
#[inline(never)]
pub fn forward(ctx: &XdpContext, flow: &Flow, nat: &Nat) -> u32 {
    // After the rewrite: the request's new destination, or the reply's new source.
    let (src, dst, sport, dport) = match nat.end {
        End::Destination => (
            &flow.tuple.src_addr,
            &nat.addr,
            flow.tuple.src_port_be,
            nat.port_be,
        ),
        End::Source => (
            &nat.addr,
            &flow.tuple.dst_addr,
            nat.port_be,
            flow.tuple.dst_port_be,
        ),
    };
    // SAFETY: `bpf_fib_lookup` is plain data; all-zero is a valid value.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    params.ifindex = ingress;
    params.l4_protocol = flow.tuple.proto;
    params.sport = sport;
    params.dport = dport;
    if flow.is_v4 {
        params.family = AF_INET;
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([src[12], src[13], src[14], src[15]]);
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]);
    } else {
        params.family = AF_INET6;
        params.__bindgen_anon_3.ipv6_src = words(src);
        params.__bindgen_anon_4.ipv6_dst = words(dst);
    }
    // SAFETY: `params` is a valid, initialised struct of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut params,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return XDP_PASS;
    }
    let frame = &ctx.frame();
    let Some(macs) = frame.get_mut::<[u8; 12]>(0) else {
        return XDP_PASS;
    };
    if rewrite::decrement_ttl(frame, flow.l3_offset, flow.is_v4).is_none() {
        return XDP_PASS;
    }
    let mut addresses = [0u8; 12];
    addresses[..6].copy_from_slice(&params.dmac);
    addresses[6..].copy_from_slice(&params.smac);
    // SAFETY: `get_mut` checked the 12 MAC bytes lie inside the frame.
    unsafe { macs.write_unaligned(addresses) };
    if params.ifindex == ingress {
        XDP_TX
    } else {
        // SAFETY: a helper taking plain integers.
        let action = unsafe { bpf_redirect(params.ifindex, 0) };
        action as u32
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
