//! Sending a translated packet on from a pod interface's ingress:
//! `bpf_fib_lookup` for the egress device, then `bpf_redirect_neigh`, which
//! fills in the MACs from the kernel's neighbour table and resolves a
//! neighbour it does not know yet (where XDP would have to hand the frame
//! to the kernel and lose it). Handing the packet to the kernel's forwarding
//! instead fails for an IPv4 packet whose new source is one of the node's own
//! addresses (a NodePort's reply from a local backend): the kernel drops it as
//! a martian.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, bpf_fib_lookup as FibParams,
    },
    helpers::{bpf_fib_lookup, bpf_redirect_neigh},
    programs::TcContext,
};

use crate::{
    lb::{End, Nat, flow::Flow},
    xdp::forward::fill_params,
};

/// Redirects the translated packet toward its new destination: returns the
/// redirect's action, or `TC_ACT_OK` (the kernel routes it) when the FIB has
/// no route for it.
#[inline(never)]
pub fn redirect(ctx: &TcContext, flow: &Flow, nat: &Nat) -> i32 {
    // The translated ends: `nat` replaces one, and the other under source NAT.
    let t = &flow.tuple;
    let ends = match nat.end {
        End::Destination if nat.snat => (&nat.peer_addr, &nat.addr, nat.peer_port_be, nat.port_be),
        End::Destination => (&t.src_addr, &nat.addr, t.src_port_be, nat.port_be),
        End::Source if nat.snat => (&nat.addr, &nat.peer_addr, nat.port_be, nat.peer_port_be),
        End::Source => (&nat.addr, &t.dst_addr, nat.port_be, t.dst_port_be),
    };
    let mut params = MaybeUninit::<FibParams>::uninit();
    let p = params.as_mut_ptr();
    // SAFETY: the program's `__sk_buff`: at the ingress hook its device is
    // the one the packet came in on.
    let ingress = unsafe { (*ctx.skb.skb).ifindex };
    fill_params(p, ingress, flow, ends);
    // SAFETY: the program's context and a valid, initialised struct of the
    // size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), p, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return TC_ACT_OK;
    }
    // SAFETY: initialised above, and filled in by the helper.
    let egress = unsafe { params.assume_init_ref().ifindex };
    // SAFETY: a helper taking an interface index and no parameters (the
    // kernel routes the packet's destination on that device itself).
    unsafe { bpf_redirect_neigh(egress, core::ptr::null_mut(), 0, 0) as i32 }
}
