//! ICMP and ICMPv6 errors about tracked flows at the pod interfaces, as
//! `xdp_lb` handles them at the NIC (`xdp::icmp`): the same decision
//! (`lb::icmp`) and the same in-place rewrite. At ingress these are the
//! errors a pod sends (a pod backend's "port unreachable" to its client, a
//! pod client's error about a reply), redirected like the flow's packets; at
//! egress the errors on their way into a pod (the node's own "fragmentation
//! needed" about a pod's request it could not forward), which go on into it;
//! at an uplink's egress, the errors the node itself sends, sent on as its
//! own packets are (`forward::from_uplink`).
//!
//! The rewrite writes the packet directly rather than through the skb
//! helpers: an ICMP error never carries a partial checksum, and every change
//! it makes is offset within the packet (an address by its header's or the
//! ICMP checksum), so a receive checksum the socket buffer holds over the
//! whole packet stays right too.

use aya_ebpf::programs::TcContext;
use xdp_lb_common::stats::Verdict;

use crate::{
    lb::{
        End, Nat,
        icmp::{ErrorDecision, IcmpError, judge},
    },
    maps::{count_backend, count_service, count_verdict},
    packet::FrameSource,
    parse::Parsed,
    tc::{Hook, OK, forward},
    xdp::icmp::rewrite,
};

/// `run`'s answer for a packet that is not an error about a flow this hook
/// translates: the caller goes on as with any other packet.
pub const NOT_HANDLED: i32 = i32::MIN;

/// Translates an ICMP error about a tracked flow and sends it on as the
/// flow's packets go from `hook`, counting its verdict; returns the TC
/// action, or `NOT_HANDLED` (nothing counted, nothing changed). An error
/// about a direct-server-return flow is not handled: a pod's flows are never
/// wrapped.
#[inline(never)]
pub fn run(ctx: &TcContext, parsed: &Parsed, hook: Hook) -> i32 {
    let Some((err, nat, decision)) = judge(ctx, parsed) else {
        return NOT_HANDLED;
    };
    let len = ctx.frame().len();
    match decision {
        ErrorDecision::NotTracked | ErrorDecision::Encapsulate => NOT_HANDLED,
        ErrorDecision::TtlExpired => {
            count_verdict(Verdict::PassTtlExpired, len);
            OK
        }
        ErrorDecision::Translate => {
            // SAFETY: `decide_error` initialises `nat` when it answers Translate.
            let nat = unsafe { nat.assume_init_ref() };
            let (verdict, action) = translate_and_send(ctx, err, nat, hook);
            count_verdict(verdict, len);
            action
        }
    }
}

#[inline(always)]
fn translate_and_send(ctx: &TcContext, err: &IcmpError, nat: &Nat, hook: Hook) -> (Verdict, i32) {
    let len = ctx.frame().len();
    count_service(nat.service_id, len);
    count_backend(nat.backend_id, len);
    if rewrite(&ctx.frame(), err, nat).is_none() {
        // Unreachable after `read_error`; the packet is unchanged.
        return (Verdict::PassMalformed, OK);
    }
    let sent = match nat.end {
        End::Destination => Verdict::ForwardIcmpErrorToBackend,
        End::Source => Verdict::ForwardIcmpErrorToClient,
    };
    let action = match hook {
        // On its way into the pod already.
        Hook::Egress => return (sent, OK),
        Hook::Ingress => forward::redirect(ctx, &err.outer, nat),
        Hook::Uplink => forward::from_uplink(ctx, &err.outer, nat),
    };
    match action {
        forward::LEAVES_HERE => (sent, OK),
        OK => (Verdict::PassIcmpErrorViaStack, OK),
        action => (sent, action),
    }
}
