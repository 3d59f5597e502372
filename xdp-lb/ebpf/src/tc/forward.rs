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
        BPF_F_INGRESS, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_OK, TC_ACT_SHOT, bpf_fib_lookup as FibParams,
    },
    helpers::{bpf_fib_lookup, bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};

use crate::{
    lb::{End, Nat, flow::Flow},
    packet::FrameSource,
    xdp::forward::fill_params,
};

/// Redirects the translated packet toward its new destination: returns the
/// redirect's action, or `TC_ACT_OK` (the kernel routes it) when the FIB has
/// no route for it.
#[inline(never)]
pub fn redirect(ctx: &TcContext, flow: &Flow, nat: &Nat) -> i32 {
    match route(ctx, flow, nat, None) {
        Route::Via { egress, .. } => neigh(egress),
        Route::Local | Route::None => TC_ACT_OK,
    }
}

/// `from_uplink`'s answer for a packet that leaves by this device (the
/// caller returns `TC_ACT_OK` and counts it as sent).
pub const LEAVES_HERE: i32 = i32::MIN;

/// Sends on a packet translated at an uplink's egress (what the node itself
/// sends):
/// - into the node's own stack when its new destination is one of the
///   node's addresses (a backend on the node itself, or a reply to the node
///   as a client), as if it had arrived on this device;
/// - on through this device (`LEAVES_HERE`) when the FIB routes it here: with
///   the next hop's MAC when the FIB knows it, as it is when its destination
///   kept its address (a reply: the kernel chose its next hop already);
///   redirected back into this device otherwise, to resolve the neighbour
///   (the program then sees it again, untracked, and lets it go);
/// - toward the device the FIB names otherwise.
///
/// `TC_ACT_OK` when the FIB has no route for it.
#[inline(never)]
pub fn from_uplink(ctx: &TcContext, flow: &Flow, nat: &Nat) -> i32 {
    // SAFETY: the program's `__sk_buff`: at the egress hook its device is
    // the one the packet leaves by.
    let here = unsafe { (*ctx.skb.skb).ifindex };
    let same_destination = nat.end == End::Source && !nat.snat;
    let mut macs = [0; 12];
    match route(ctx, flow, nat, Some(&mut macs)) {
        Route::Local => back_in(ctx, here),
        Route::Via { egress, .. } if egress == here && same_destination => LEAVES_HERE,
        Route::Via {
            egress,
            resolved: true,
        } if egress == here => match ctx.frame().get_mut::<[u8; 12]>(0) {
            Some(eth) => {
                // SAFETY: `get_mut` checked the 12 bytes lie in the frame.
                unsafe { *eth = macs };
                LEAVES_HERE
            }
            None => TC_ACT_SHOT,
        },
        Route::Via { egress, .. } => neigh(egress),
        Route::None => TC_ACT_OK,
    }
}

/// Sends the packet back in through `here`, into the node's own stack. The
/// stack drops a frame not addressed to its device's MAC (another host's),
/// and this one is still addressed to the next hop it was leaving for: it
/// takes the device's own MAC, its source (the kernel wrote it).
#[inline(always)]
fn back_in(ctx: &TcContext, here: u32) -> i32 {
    let Some(eth) = ctx.frame().get_mut::<[u8; 12]>(0) else {
        return TC_ACT_SHOT;
    };
    // SAFETY: `get_mut` checked the 12 bytes lie in the frame.
    let (dst, src) = unsafe { &mut *eth }.split_at_mut(6);
    dst.copy_from_slice(src);
    // SAFETY: a helper taking plain integers.
    unsafe { bpf_redirect(here, u64::from(BPF_F_INGRESS)) as i32 }
}

/// Where the FIB sends a translated packet.
enum Route {
    /// Out of device `egress`; `resolved` when the FIB knew the next hop's
    /// MAC (written to the caller's `macs`, if it asked: destination, then
    /// source).
    Via { egress: u32, resolved: bool },
    /// To one of this host's own addresses.
    Local,
    /// Nowhere the FIB can say (no route, a blackhole, ...).
    None,
}

/// The FIB's answer for the translated ends of `flow`: `nat` replaces one,
/// and the other under source NAT.
#[inline(always)]
fn route(ctx: &TcContext, flow: &Flow, nat: &Nat, macs: Option<&mut [u8; 12]>) -> Route {
    let t = &flow.tuple;
    let ends = match nat.end {
        End::Destination if nat.snat => (&nat.peer_addr, &nat.addr, nat.peer_port_be, nat.port_be),
        End::Destination => (&t.src_addr, &nat.addr, t.src_port_be, nat.port_be),
        End::Source if nat.snat => (&nat.addr, &nat.peer_addr, nat.port_be, nat.peer_port_be),
        End::Source => (&nat.addr, &t.dst_addr, nat.port_be, t.dst_port_be),
    };
    let mut params = MaybeUninit::<FibParams>::uninit();
    let p = params.as_mut_ptr();
    // SAFETY: the program's `__sk_buff`: its device, the one the packet came
    // in on (ingress) or leaves by (egress).
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    fill_params(p, ifindex, (flow.is_v4, flow.tuple.proto), ends);
    // SAFETY: the program's context and a valid, initialised struct of the
    // size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.skb.skb.cast(), p, size_of::<FibParams>() as i32, 0) };
    if rc == i64::from(BPF_FIB_LKUP_RET_NOT_FWDED) {
        return Route::Local;
    }
    let resolved = rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS);
    if !resolved && rc != i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        return Route::None;
    }
    // SAFETY: initialised above, and filled in by the helper.
    let params = unsafe { params.assume_init_ref() };
    if resolved && let Some(macs) = macs {
        macs[..6].copy_from_slice(&params.dmac);
        macs[6..].copy_from_slice(&params.smac);
    }
    Route::Via {
        egress: params.ifindex,
        resolved,
    }
}

/// `bpf_redirect_neigh` out of `egress`: the kernel routes the packet's
/// destination on that device itself and fills in the MACs.
#[inline(always)]
pub(crate) fn neigh(egress: u32) -> i32 {
    // SAFETY: a helper taking an interface index and no parameters.
    unsafe { bpf_redirect_neigh(egress, core::ptr::null_mut(), 0, 0) as i32 }
}
