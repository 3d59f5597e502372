//! Sampled flow events (`xdp_lb_common::events`): a new flow and the backend
//! it was given, a drop and its reason, a refusal and its answer. Each is written straight into space
//! reserved in the `FLOW_EVENTS` ring buffer, never built on the stack; when
//! the buffer is full (its reader fell behind) the event is skipped and
//! counted as lost (`FlowEventOutcome::LostRingFull`).

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns};
use xdp_lb_common::{
    events::{EVENT_DROP, EVENT_NEW_FLOW, EVENT_REFUSED, FlowEvent},
    stats::{FlowEventOutcome, Verdict},
};

use crate::{
    lb::{
        Nat,
        flow::{Flow, Packet},
    },
    maps::{CONFIG, FLOW_EVENTS, count_flow_event},
};

/// The bytes of one event, as its counters count them.
const EVENT_BYTES: usize = size_of::<FlowEvent>();

/// True for one in `every` calls, chosen at random (`every` is
/// `Config::flow_event_sampling`; 0: never).
#[inline(always)]
fn sampled(every: u32) -> bool {
    // SAFETY: a helper without arguments.
    every != 0 && unsafe { bpf_get_prandom_u32() } % every == 0
}

/// Writes a new-flow event, if this one is sampled (one in `every`): `flow`
/// was given the backend of `nat`. The caller, which has the configuration
/// at hand, calls it only when sampling is on.
#[inline(never)]
pub fn new_flow(flow: &Flow, nat: &Nat, every: u32) {
    if !sampled(every) {
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        count_flow_event(FlowEventOutcome::LostRingFull, EVENT_BYTES);
        return;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved, writable, `FlowEvent`-sized entry; every
    // field is written before it is submitted.
    unsafe {
        (*e).time_ns = bpf_ktime_get_coarse_ns();
        (*e).kind = EVENT_NEW_FLOW;
        (*e).verdict = 0;
        (*e).service_id = nat.service_id;
        (*e).backend_id = nat.backend_id;
        (*e).client = flow.tuple.src_addr;
        (*e).frontend = flow.tuple.dst_addr;
        (*e).backend = nat.addr;
        (*e).client_port_be = flow.tuple.src_port_be;
        (*e).frontend_port_be = flow.tuple.dst_port_be;
        (*e).backend_port_be = nat.port_be;
        (*e).proto = flow.tuple.proto;
        (*e)._pad = 0;
    }
    entry.submit(0);
    count_flow_event(FlowEventOutcome::Written, EVENT_BYTES);
}

/// Writes the event of a packet that was not balanced, if this one is
/// sampled: a drop (`XDP_DROP`, `TC_ACT_SHOT`) or a refusal (a `Refuse*`
/// verdict: the packet became its answer), as `verdict`. A packet without a
/// flow (a fragment of another protocol than TCP and UDP) names only its
/// destination; a later TCP or UDP fragment names its ends with ports 0, or
/// with those its first fragment left when its flow was not found.
#[inline(never)]
pub fn turned_away(packet: &Packet, verdict: Verdict, dropped: bool) {
    let every = CONFIG.get(0).map_or(0, |config| config.flow_event_sampling);
    if !sampled(every) {
        return;
    }
    let Some(mut entry) = FLOW_EVENTS.reserve(0) else {
        count_flow_event(FlowEventOutcome::LostRingFull, EVENT_BYTES);
        return;
    };
    let e = entry.as_mut_ptr();
    let flow = &packet.flow;
    let has_flow = packet.has_flow;
    // SAFETY: as in `new_flow`.
    unsafe {
        (*e).time_ns = bpf_ktime_get_coarse_ns();
        (*e).kind = if dropped { EVENT_DROP } else { EVENT_REFUSED };
        (*e).verdict = verdict as u32;
        (*e).service_id = 0;
        (*e).backend_id = 0;
        (*e).backend = [0; 16];
        (*e).backend_port_be = 0;
        (*e)._pad = 0;
        if has_flow {
            (*e).client = flow.tuple.src_addr;
            (*e).frontend = flow.tuple.dst_addr;
            (*e).client_port_be = flow.tuple.src_port_be;
            (*e).frontend_port_be = flow.tuple.dst_port_be;
            (*e).proto = flow.tuple.proto;
        } else {
            (*e).client = [0; 16];
            (*e).frontend = packet.dst;
            (*e).client_port_be = 0;
            (*e).frontend_port_be = 0;
            (*e).proto = 0;
        }
    }
    entry.submit(0);
    count_flow_event(FlowEventOutcome::Written, EVENT_BYTES);
}
