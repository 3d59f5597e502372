//! The XDP side: apply the core's `Decision` with direct packet access.

pub mod decap;
pub(crate) mod encap;
pub(crate) mod forward;
pub(crate) mod icmp;
mod link;
mod neighbour;
mod rewrite;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use xdp_lb_common::stats::{ParseCounter, Verdict};

use crate::{
    answer,
    lb::{
        Action, End, Nat, decide, events, fill_if_marked,
        flow::{Flow, Packet},
        icmp::nat_slot,
    },
    maps::{count_backend, count_parse, count_service, count_verdict},
    packet::{Frame, FrameSource, Resize},
    parse::parse,
    wire::{IP4_DF, IP4_FRAGS},
    xdp::forward::{Wrap, forward},
};

impl Resize for XdpContext {
    #[inline(always)]
    fn adjust_head(&self, delta: i32) -> bool {
        // SAFETY: the program's context.
        unsafe { bpf_xdp_adjust_head(self.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn adjust_tail(&self, delta: i32) -> bool {
        // SAFETY: the program's context.
        unsafe { bpf_xdp_adjust_tail(self.ctx, delta) == 0 }
    }
}

impl FrameSource for XdpContext {
    #[inline(always)]
    fn frame(&self) -> Frame {
        // Two separate 32-bit loads: LLVM may otherwise merge the adjacent
        // `data` and `data_end` fields into one 64-bit load and split it with
        // shifts, which the verifier forbids on packet pointers.
        // SAFETY: `ctx` is the program's `xdp_md`, valid while it runs.
        unsafe {
            let md = self.ctx;
            let data = core::ptr::read_volatile(&raw const (*md).data);
            let end = core::ptr::read_volatile(&raw const (*md).data_end);
            Frame::new(data as usize, end as usize)
        }
    }
}

/// The whole of `xdp_lb`: ARP requests and neighbour solicitations for
/// announced addresses answered (`neighbour`), ICMP errors about tracked
/// flows on a path of their own (`icmp::run`), everything else through the
/// core's `decide`.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let len = ctx.frame().len();
    // An array's only slot: never missing.
    let Some(packet) = Packet::slot() else {
        return XDP_PASS;
    };
    let action = prepare(ctx, packet, len);
    if action != BALANCE {
        return action;
    }
    balance(ctx, packet, len)
}

/// `prepare`'s answer for a packet it filled for the core (not an XDP action).
const BALANCE: u32 = u32::MAX;

/// Parses the frame of `len` bytes and counts it: fills `packet`, its marks
/// too, and answers `BALANCE` for a packet the core must see; else answers
/// the frame itself (an ARP or neighbour answer, an ICMP error's own path, a
/// pass for what the address filter rules out) and returns its action. The
/// frame a NIC sees most takes one pass (`Packet::fill_plain_ip4`).
#[inline(always)]
fn prepare(ctx: &XdpContext, packet: &mut Packet, len: usize) -> u32 {
    if packet.fill_plain_ip4(ctx) {
        count_parse(packet.counter, len);
        return pass_unless_marked(packet.marks, len);
    }
    let question = neighbour::question(&ctx.frame());
    if question != neighbour::NO_QUESTION {
        let tagged = question & neighbour::TAGGED;
        // Counted as the parser would have: every frame in one parser slot.
        let answered = if question & neighbour::ARP != 0 {
            neighbour::arp_reply(ctx, tagged).then_some((ParseCounter::Arp, Verdict::TxArpReply))
        } else {
            neighbour::neighbour_advert(ctx, tagged)
                .then_some((ParseCounter::Icmp6, Verdict::TxNeighbourAdvert))
        };
        if let Some((counter, verdict)) = answered {
            count_parse(counter, len);
            count_verdict(verdict, len);
            return XDP_TX;
        }
    }
    let parsed = parse(ctx);
    count_parse(parsed.counter, len);
    if matches!(parsed.counter, ParseCounter::Icmp4 | ParseCounter::Icmp6) {
        let action = icmp::run(ctx, &parsed);
        if action == icmp::ENCAPSULATE {
            return icmp::wrap_and_send(ctx);
        }
        if action != icmp::NOT_HANDLED {
            return action;
        }
    }
    let marks = fill_if_marked(packet, ctx, &parsed);
    pass_unless_marked(marks, len)
}

/// `BALANCE` for a packet with `marks`; without, it is passed untouched as
/// `Verdict::PassNotFrontend`, before anything else is read.
#[inline(always)]
fn pass_unless_marked(marks: u8, len: usize) -> u32 {
    if marks == 0 {
        count_verdict(Verdict::PassNotFrontend, len);
        return XDP_PASS;
    }
    BALANCE
}

/// Balances a parsed TCP, UDP or other IP packet (`Packet::marks` set) of
/// `len` bytes: the core's decision, applied.
#[inline(always)]
fn balance(ctx: &XdpContext, packet: &mut Packet, len: usize) -> u32 {
    // The translation lives in a per-CPU slot, not in this frame: the
    // 512-byte limit counts this frame with its deepest callees' (the L2
    // answers', the encapsulation's).
    let Some(nat) = nat_slot() else {
        count_verdict(Verdict::PassNotFrontend, len);
        return XDP_PASS;
    };
    let decision = decide(packet, nat);
    let (verdict, action) = match decision.action {
        Action::Pass => (decision.verdict, XDP_PASS),
        Action::Drop => (decision.verdict, XDP_DROP),
        // The core translates or encapsulates only frames it has a flow of.
        Action::Translate if packet.has_flow => {
            // SAFETY: `decide` initialises `nat` when it answers Translate.
            apply(ctx, &packet.flow, unsafe { nat.assume_init_ref() })
        }
        Action::Encapsulate if packet.has_flow => {
            // SAFETY: `decide` initialises `nat` when it answers Encapsulate.
            let nat = unsafe { nat.assume_init_ref() };
            count_service(nat.service_id, len);
            count_backend(nat.backend_id, len);
            let mut outcome = encap::Outcome::default();
            match encap::wrap_and_send(ctx, &packet.flow, nat, &mut outcome) {
                forward::TOO_BIG => {
                    match encap::answer_too_big(ctx, &packet.flow, nat, outcome.mtu) {
                        Verdict::AnswerTooBig => (Verdict::AnswerTooBig, XDP_TX),
                        verdict => (verdict, XDP_DROP),
                    }
                }
                action => (outcome.verdict, action),
            }
        }
        Action::Translate | Action::Encapsulate => (Verdict::PassMalformed, XDP_PASS),
        // The event here, not beside the drops' below: a forwarded packet
        // then pays no test for it.
        Action::Refuse => match refuse(ctx, &packet.flow) {
            verdict @ (Verdict::RefuseReset | Verdict::RefuseUnreachable) => {
                events::turned_away(packet, verdict, false);
                (verdict, XDP_TX)
            }
            verdict => (verdict, XDP_DROP),
        },
    };
    count_verdict(verdict, len);
    if action == XDP_DROP {
        events::turned_away(packet, verdict, true);
    }
    action
}

/// Rewrites the frame and forwards it.
#[inline(always)]
fn apply(ctx: &XdpContext, flow: &Flow, nat: &Nat) -> (Verdict, u32) {
    let len = ctx.frame().len();
    count_service(nat.service_id, len);
    count_backend(nat.backend_id, len);
    let (out, via_stack) = match nat.end {
        End::Destination => (Verdict::ForwardToBackend, Verdict::PassToBackendViaStack),
        End::Source => (Verdict::ForwardReply, Verdict::PassReplyViaStack),
    };
    if !rewrite::translate(ctx, flow, nat) {
        // Unreachable after a successful parse; the frame is unchanged.
        return (Verdict::PassMalformed, XDP_PASS);
    }
    // A tagged frame would leave with its tag on an untagged device: the kernel
    // forwards it instead.
    if flow.has_vlan {
        return (via_stack, XDP_PASS);
    }
    let mut mtu = 0;
    match forward(ctx, flow, nat, Wrap::None, &mut mtu) {
        XDP_PASS => (via_stack, XDP_PASS),
        forward::TOO_BIG => match too_big(ctx, flow, nat, mtu) {
            Verdict::AnswerTooBig => (Verdict::AnswerTooBig, XDP_TX),
            Verdict::DropTooBig => (Verdict::DropTooBig, XDP_DROP),
            _ => (via_stack, XDP_PASS),
        },
        action => (out, action),
    }
}

/// A translated frame larger than the MTU toward its next hop. With DF set
/// (always, on IPv6), its sender is told, as a router would tell it: the
/// translation is undone and the frame becomes the ICMP error
/// (`AnswerTooBig`, or `DropTooBig` when it cannot be answered), sent back
/// the way it came: to the client from the frontend for a request, to the
/// backend from the address its reply went to (the client's, or the
/// source-NAT address) for a reply. The kernel, handed the translated
/// reply, would tell its new source (the frontend, which is not where it
/// came from). Otherwise (`PassToBackendViaStack`, which the caller counts
/// as its own pass verdict) the kernel takes the translated frame and
/// fragments it. A subprogram of its own: the copy of the translation stays
/// out of the program's main frame.
#[inline(never)]
fn too_big(ctx: &XdpContext, flow: &Flow, nat: &Nat, mtu: u32) -> Verdict {
    if !must_not_fragment(ctx, flow) {
        return Verdict::PassToBackendViaStack;
    }
    // The end `nat` rewrote, and the other under source NAT, as they came.
    let t = &flow.tuple;
    let ((addr, port_be), (peer_addr, peer_port_be)) = match nat.end {
        End::Destination => ((t.dst_addr, t.dst_port_be), (t.src_addr, t.src_port_be)),
        End::Source => ((t.src_addr, t.src_port_be), (t.dst_addr, t.dst_port_be)),
    };
    let original = Nat {
        addr,
        port_be,
        peer_addr,
        peer_port_be,
        ..*nat
    };
    if !rewrite::translate(ctx, flow, &original) {
        return Verdict::DropTooBig;
    }
    match answer::icmp_error(ctx, flow, answer::IcmpError::TooBig, mtu) {
        answer::Answered::Yes => Verdict::AnswerTooBig,
        answer::Answered::NotAnswerable | answer::Answered::Broken => Verdict::DropTooBig,
    }
}

/// Answers a packet for a service without a backend: a reset for TCP, ICMP
/// port unreachable for UDP (`RefuseReset`, `RefuseUnreachable`), or nothing
/// (`DropNoBackend`). A subprogram of its own, like `too_big`.
#[inline(never)]
fn refuse(ctx: &XdpContext, flow: &Flow) -> Verdict {
    let (answered, verdict) = if flow.is_tcp {
        (answer::reset(ctx, flow), Verdict::RefuseReset)
    } else {
        let unreachable = answer::IcmpError::PortUnreachable;
        (
            answer::icmp_error(ctx, flow, unreachable, 0),
            Verdict::RefuseUnreachable,
        )
    };
    match answered {
        answer::Answered::Yes => verdict,
        answer::Answered::NotAnswerable | answer::Answered::Broken => Verdict::DropNoBackend,
    }
}

/// A packet a router must not fragment: IPv6, or IPv4 with DF set. Too big
/// for the next hop, it is answered with an ICMP error instead.
#[inline(always)]
fn must_not_fragment(ctx: &XdpContext, flow: &Flow) -> bool {
    !flow.is_v4
        || ctx
            .frame()
            .load::<2>(flow.l3_offset + IP4_FRAGS)
            .is_some_and(|flags| u16::from_be_bytes(flags) & IP4_DF != 0)
}
