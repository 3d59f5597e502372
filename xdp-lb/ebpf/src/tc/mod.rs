//! The TC side: `tc_lb_ingress` and `tc_lb_egress` on the host side of pod
//! veths (DESIGN.md, "Which hook where"). Packets a pod's stack sends carry
//! partial checksums that XDP can neither see nor keep; a TC program sees the
//! socket buffer and updates checksums with the skb-aware helpers
//! (`rewrite`), which are right whether the checksum is partial or full.
//!
//! Both run the core of `lb` unchanged:
//! - ingress (what the pod sends): `decide`, as `xdp_lb` does: requests to a
//!   frontend are balanced, replies of the pod as a backend translated back;
//! - egress (on the way into the pod): only the reply direction, for replies
//!   that reached this node without passing an ingress hook of it (a backend
//!   on another node answering over a link without `xdp_lb`);
//! - both: ICMP errors about tracked flows, translated as `xdp_lb` translates
//!   them (`icmp`).
//!
//! `tc_lb_uplink` runs the same at the egress of the node's uplinks, for what
//! the node itself sends: its requests to a service balanced as a pod's are
//! (a hostNetwork pod, any process of the node), its replies as a backend
//! translated back; a translated packet whose new destination is the node
//! itself goes back in through the uplink, into the node's stack. Packets
//! forwarded through the node pass it untouched and uncounted.
//!
//! A translated packet is redirected from ingress to its new destination
//! (`forward`: a FIB lookup, then `bpf_redirect_neigh`), and continues from
//! egress into the pod. Either way the socket buffer keeps its checksum
//! state, where an XDP redirect would lose it.

mod forward;
mod icmp;
pub mod probe;
mod rewrite;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_skb_change_head, bpf_skb_change_tail},
    programs::TcContext,
};
use xdp_lb_common::stats::{ParseCounter, Verdict};

use crate::{
    answer::{self, Answered, IcmpError},
    lb::{
        Action, End, Nat, decide, decide_reply, events, fill_if_marked, flow::Packet,
        icmp::nat_slot,
    },
    maps::{count_backend, count_parse, count_service, count_verdict},
    packet::{Frame, FrameSource, Resize},
    parse::parse,
};

/// Bytes made linear before parsing: Ethernet, a VLAN tag, an IPv6 header
/// with extension headers and a TCP header with options fit. A socket
/// buffer's payload may sit in pages; the headers must be in the linear part
/// for direct reads.
const PULL_LEN: u32 = 256;

/// The kernel goes on with the packet.
const OK: i32 = TC_ACT_OK;
/// The packet is dropped.
const SHOT: i32 = TC_ACT_SHOT;

impl Resize for TcContext {
    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> bool {
        // Only ever grown: the answers write in front of the packet.
        // SAFETY: the program's `__sk_buff`.
        delta <= 0 && unsafe { bpf_skb_change_head(self.skb.skb, delta.unsigned_abs(), 0) == 0 }
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        let Some(len) = self.len().checked_add_signed(delta) else {
            return false;
        };
        // SAFETY: the program's `__sk_buff`.
        unsafe { bpf_skb_change_tail(self.skb.skb, len, 0) == 0 }
    }
}

impl FrameSource for TcContext {
    #[inline(always)]
    fn frame(&self) -> Frame {
        // Separate 32-bit loads, as for XDP: a merged 64-bit load split by
        // shifts is refused on packet pointers.
        // SAFETY: `skb` is the program's `__sk_buff`, valid while it runs.
        unsafe {
            let skb = self.skb.skb;
            let data = core::ptr::read_volatile(&raw const (*skb).data);
            let end = core::ptr::read_volatile(&raw const (*skb).data_end);
            let len = core::ptr::read_volatile(&raw const (*skb).len);
            Frame::with_len(data as usize, end as usize, len as usize)
        }
    }
}

/// Which hook a program runs at.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// What the pod sends.
    Ingress,
    /// What goes into the pod.
    Egress,
    /// What the node itself sends out of an uplink: balanced as a pod's
    /// requests are, and its replies as a backend translated back.
    Uplink,
}

/// The whole of `tc_lb_ingress`, `tc_lb_egress` and `tc_lb_uplink`.
#[inline(always)]
pub fn run(ctx: &TcContext, hook: Hook) -> i32 {
    if hook == Hook::Uplink && !sent_by_this_node(ctx) {
        // Forwarded through the node (a pod's packet a pod interface sent
        // on, a frame `xdp_lb` handed to the kernel): not the node's own,
        // and translated already where it needed to be.
        return OK;
    }
    let len = ctx.len() as usize;
    // Failing only when the packet is shorter than asked, and then it is
    // all linear anyway.
    let _ = ctx.skb.pull_data(PULL_LEN.min(len as u32));
    // An array's only slot: never missing.
    let Some(packet) = Packet::slot() else {
        return OK;
    };
    let action = prepare(ctx, packet, len, hook);
    if action != BALANCE {
        return action;
    }
    balance(ctx, packet, len, hook)
}

/// `prepare`'s answer for a packet it filled for the core (not a TC action).
const BALANCE: i32 = i32::MIN;

/// Parses the packet of `len` bytes and counts it: fills `packet`, its marks
/// too, and answers `BALANCE` for a packet the core must see; else answers
/// it itself (an ICMP error's own path, a pass for what the address filter
/// rules out) and returns its action. The frame seen most takes one pass
/// (`Packet::fill_plain_ip4`).
#[inline(always)]
fn prepare(ctx: &TcContext, packet: &mut Packet, len: usize, hook: Hook) -> i32 {
    if packet.fill_plain_ip4(ctx) {
        count_parse(packet.counter, len);
        return pass_unless_marked(packet.marks, len);
    }
    let parsed = parse(ctx);
    count_parse(parsed.counter, len);
    if matches!(parsed.counter, ParseCounter::Icmp4 | ParseCounter::Icmp6) {
        let action = icmp::run(ctx, &parsed, hook);
        if action != icmp::NOT_HANDLED {
            return action;
        }
    }
    let marks = fill_if_marked(packet, ctx, &parsed);
    pass_unless_marked(marks, len)
}

/// `BALANCE` for a packet with `marks`; without, it goes on untouched as
/// `Verdict::PassNotFrontend`, before anything else is read.
#[inline(always)]
fn pass_unless_marked(marks: u8, len: usize) -> i32 {
    if marks == 0 {
        count_verdict(Verdict::PassNotFrontend, len);
        return OK;
    }
    BALANCE
}

/// Balances a parsed TCP, UDP or other IP packet (`Packet::marks` set) of
/// `len` bytes at `hook`: the core's decision, applied.
#[inline(always)]
fn balance(ctx: &TcContext, packet: &mut Packet, len: usize, hook: Hook) -> i32 {
    // In the per-CPU slot `xdp_lb` uses too, out of this frame (see there).
    let Some(nat) = nat_slot() else {
        count_verdict(Verdict::PassNotFrontend, len);
        return OK;
    };
    let decision = match hook {
        Hook::Ingress | Hook::Uplink => decide(packet, nat),
        Hook::Egress => decide_reply(packet, nat),
    };
    let (verdict, action) = match decision.action {
        Action::Pass => (decision.verdict, OK),
        Action::Drop => (decision.verdict, SHOT),
        Action::Translate if packet.has_flow => {
            // SAFETY: `decide` initialises `nat` when it answers Translate.
            apply(ctx, &packet.flow, unsafe { nat.assume_init_ref() }, hook)
        }
        // Direct server return wraps packets for a wire; a pod's packets
        // are not sent that way.
        Action::Encapsulate => (Verdict::DropEncapUnsupported, SHOT),
        Action::Translate => (Verdict::PassMalformed, OK),
        Action::Refuse if packet.has_flow => {
            let (verdict, action) = refuse(ctx, &packet.flow, hook);
            // Here rather than beside the drops': see `xdp::balance`.
            if verdict.is_refusal() {
                events::turned_away(packet, verdict, false);
            }
            (verdict, action)
        }
        Action::Refuse => (decision.verdict, SHOT),
    };
    count_verdict(verdict, len);
    if action == SHOT {
        events::turned_away(packet, verdict, true);
    }
    action
}

/// The packet comes from one of this node's own sockets: it never arrived
/// on an interface (`ingress_ifindex` 0), unlike a forwarded one.
#[inline(always)]
fn sent_by_this_node(ctx: &TcContext) -> bool {
    // SAFETY: the program's `__sk_buff`, read for one field.
    unsafe { (*ctx.skb.skb).ingress_ifindex == 0 }
}

/// Rewrites the packet and sends it on: from ingress with a redirect to its
/// new destination (`forward`), from egress into the pod.
#[inline(always)]
fn apply(ctx: &TcContext, flow: &crate::lb::flow::Flow, nat: &Nat, hook: Hook) -> (Verdict, i32) {
    let len = ctx.len() as usize;
    count_service(nat.service_id, len);
    count_backend(nat.backend_id, len);
    if !rewrite::translate(ctx, flow, nat) {
        // The helpers refused (a header outside the packet): unchanged.
        return (Verdict::PassMalformed, OK);
    }
    let (sent, via_stack) = match nat.end {
        End::Destination => (Verdict::ForwardToBackend, Verdict::PassToBackendViaStack),
        End::Source => (Verdict::ForwardReply, Verdict::PassReplyViaStack),
    };
    let action = match hook {
        // On its way into the pod already.
        Hook::Egress => return (sent, OK),
        Hook::Ingress => forward::redirect(ctx, flow, nat),
        Hook::Uplink => forward::from_uplink(ctx, flow, nat),
    };
    match action {
        forward::LEAVES_HERE => (sent, OK),
        OK => (via_stack, OK),
        action => (sent, action),
    }
}

/// Answers a pod's packet to a service without a backend (or with no
/// source-NAT port left) as `xdp_lb` answers a client: a reset for TCP, ICMP
/// port unreachable for UDP, written in place of the packet and sent back
/// into the pod (or, for the node's own packet, into the node's stack, as if
/// it had arrived on the uplink); dropped (`DropNoBackend`) when it cannot be
/// answered. A subprogram of its own, like `xdp::refuse`.
#[inline(never)]
fn refuse(ctx: &TcContext, flow: &crate::lb::flow::Flow, hook: Hook) -> (Verdict, i32) {
    let (answered, verdict) = if flow.is_tcp {
        (answer::reset(ctx, flow), Verdict::RefuseReset)
    } else {
        let error = answer::icmp_error(ctx, flow, IcmpError::PortUnreachable, 0);
        (error, Verdict::RefuseUnreachable)
    };
    if answered != Answered::Yes {
        return (Verdict::DropNoBackend, SHOT);
    }
    // Back out of the interface it came in by: into the pod. From an
    // uplink's egress, back in by it: into the node's stack.
    // SAFETY: the program's `__sk_buff`, read for its device.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let flags = if hook == Hook::Uplink {
        u64::from(BPF_F_INGRESS)
    } else {
        0
    };
    // SAFETY: a helper taking plain integers.
    (verdict, unsafe { bpf_redirect(ifindex, flags) } as i32)
}
