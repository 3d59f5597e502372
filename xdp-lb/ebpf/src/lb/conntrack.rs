//! Connection tracking: find a flow's entry, decide whether it still holds, and
//! create or refresh entries. Expiry is decided here, lazily, on lookup; the
//! agent's garbage collector only deletes what this code already treats as gone.

#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a borrowed key reaches the map helper as a pointer; by value it would first be \
              copied onto the 512-byte BPF stack"
)]

use core::mem::MaybeUninit;

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use xdp_lb_common::{
    backend::Backend,
    config::{Config, NS_PER_SEC},
    conntrack::{
        CT_SEEN_REPLY, CtEntry, FlowTuple, NOT_TCP, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT,
    },
    service::{SERVICE_DSR, Service},
    stats::CtEvent,
};

use crate::{
    lb::{End, Nat, flow::Flow},
    maps::{BACKENDS, CONNTRACK, CONNTRACK_REPLY, FLOOD_GUARD, count_ct},
};

/// `last_seen` is rewritten at most this often, so a busy flow does not make
/// every CPU write the same cache line on every packet.
const REFRESH_NS: u64 = NS_PER_SEC;

/// `CLOCK_MONOTONIC` at jiffy resolution: plenty for timeouts in seconds, and
/// cheaper per packet than the precise clock.
#[inline(always)]
fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The state a TCP entry moves to on a packet with `flow`'s flags.
#[inline(always)]
fn next_state(state: u8, flags: u8, flow: &Flow) -> u8 {
    if !flow.is_tcp {
        NOT_TCP
    } else if flow.is_closing() || state == TCP_CLOSING {
        TCP_CLOSING
    } else if flags & CT_SEEN_REPLY != 0 {
        TCP_ESTABLISHED
    } else {
        state
    }
}

/// Looks up the flow's entry from the client side. Writes its translation to
/// `out` and returns true when the
/// flow may keep it: the entry is not expired, its backend record is live with
/// the same generation, and it is not a new SYN on a closing entry. Counts why
/// an entry was not kept.
#[inline(never)]
pub fn lookup(flow: &Flow, config: &Config, service: &Service, out: &mut MaybeUninit<Nat>) -> bool {
    find(flow, config, service)
        .map(|nat| out.write(nat))
        .is_some()
}

#[inline(always)]
fn find(flow: &Flow, config: &Config, service: &Service) -> Option<Nat> {
    let entry = CONNTRACK.get_ptr_mut(&flow.tuple)?;
    // The clock is read only once there is an entry to judge.
    let now = now_ns();
    // SAFETY: a pointer into the map value; concurrent updates of the same flow
    // on another CPU can only race on the fields written below, each of which
    // is a whole word written with a value valid on its own.
    let e = unsafe { &mut *entry };
    // `>=`: a timeout of 0 s means "never reused", whatever the clock's resolution.
    if now.saturating_sub(e.last_seen_ns) >= config.timeout_ns(e.state) {
        count_ct(CtEvent::Expired);
        return None;
    }
    let backend = match BACKENDS.get(e.backend_id) {
        Some(b) if b.is_active() && b.generation == e.generation => *b,
        _ => {
            count_ct(CtEvent::ReselectedBackendGone);
            return None;
        }
    };
    if flow.is_syn() && e.state == TCP_CLOSING {
        count_ct(CtEvent::ReselectedClosing);
        return None;
    }
    count_ct(CtEvent::Hit);
    let state = next_state(e.state, e.flags, flow);
    if state != e.state {
        e.state = state;
    }
    if now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
        // Rewrite the reply entry with the refresh: if the LRU took it while the
        // flow was alive, it comes back within a second. A DSR flow has none:
        // its replies do not come back this way.
        if !is_dsr(service) {
            let _ = CONNTRACK_REPLY.insert(
                flow.tuple.reply_from(backend.addr, backend.port_be),
                &flow.tuple,
                0,
            );
        }
    }
    Some(Nat {
        end: End::Destination,
        addr: backend.addr,
        port_be: backend.port_be,
        service_id: e.service_id,
        backend_id: e.backend_id,
        generation: e.generation,
    })
}

/// The new-flow flood guard (Katran's): true while this CPU has created fewer
/// entries than `config.new_flows_per_cpu_per_sec` in the current one-second
/// window, and counts this one. Past the rate, a flood of new flows can no
/// longer push established flows out of the LRU: those go on being found,
/// while the flood's packets still reach their Maglev backend, untracked.
#[inline(always)]
fn flood_guard_admits(now: u64, config: &Config) -> bool {
    let limit = u64::from(config.new_flows_per_cpu_per_sec);
    if limit == 0 {
        return true;
    }
    let Some(window) = FLOOD_GUARD.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's own slot; nothing else runs on this CPU meanwhile.
    let window = unsafe { &mut *window };
    if now.saturating_sub(window.start_ns) >= NS_PER_SEC {
        window.start_ns = now;
        window.created = 0;
    }
    if window.created >= limit {
        return false;
    }
    window.created += 1;
    true
}

/// Direct server return: the backend answers the client itself.
#[inline(always)]
const fn is_dsr(service: &Service) -> bool {
    service.flags & SERVICE_DSR != 0
}

/// Creates (or replaces) the flow's entry and its reply entry (none for a
/// DSR service, whose replies do not come back), unless the flood guard holds
/// new flows back.
#[inline(never)]
pub fn create(flow: &Flow, id: u32, backend: &Backend, service: &Service, config: &Config) {
    let now = now_ns();
    if !flood_guard_admits(now, config) {
        count_ct(CtEvent::NotTrackedFloodGuard);
        return;
    }
    let state = if !flow.is_tcp {
        NOT_TCP
    } else if flow.is_syn() {
        TCP_SYN_SENT
    } else if flow.is_closing() {
        TCP_CLOSING
    } else {
        // A mid-stream packet without an entry (evicted, or the flow began on
        // another LB instance): Maglev picks the same backend, carry on.
        TCP_ESTABLISHED
    };
    let entry = CtEntry {
        last_seen_ns: now,
        backend_id: id,
        generation: backend.generation,
        backend_addr: backend.addr,
        backend_port_be: backend.port_be,
        state,
        // A DSR flow's replies never pass here: its next segment after the
        // SYN establishes it.
        flags: if is_dsr(service) { CT_SEEN_REPLY } else { 0 },
        service_id: service.id,
    };
    let reply = flow.tuple.reply_from(backend.addr, backend.port_be);
    if CONNTRACK.insert(&flow.tuple, entry, 0).is_err()
        || (!is_dsr(service) && CONNTRACK_REPLY.insert(reply, &flow.tuple, 0).is_err())
    {
        count_ct(CtEvent::InsertFailed);
        return;
    }
    count_ct(CtEvent::Created);
}

/// A reply's flow: its entry is found through the reply entry, must name this
/// backend, and must not be expired. Updates the TCP state and the seen-reply
/// flag. Writes the reverse translation to `out` (the source becomes the
/// frontend) and returns true.
#[inline(never)]
pub fn lookup_reply(flow: &Flow, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    find_reply(flow, config).map(|nat| out.write(nat)).is_some()
}

#[inline(always)]
fn find_reply(flow: &Flow, config: &Config) -> Option<Nat> {
    let original = CONNTRACK_REPLY.get_ptr(&flow.tuple)?;
    let now = now_ns();
    // SAFETY: a live map value of the right type; the kernel accepts a map
    // value as a lookup key.
    let original = unsafe { &*original };
    let live = CONNTRACK.get_ptr_mut(original).and_then(|p| {
        // SAFETY: as in `lookup`.
        let e = unsafe { &mut *p };
        let same_backend =
            e.backend_addr == flow.tuple.src_addr && e.backend_port_be == flow.tuple.src_port_be;
        let alive = now.saturating_sub(e.last_seen_ns) < config.timeout_ns(e.state);
        (same_backend && alive).then_some(e)
    });
    let Some(e) = live else {
        count_ct(CtEvent::ReplyOrphan);
        let _ = CONNTRACK_REPLY.remove(&flow.tuple);
        return None;
    };
    let nat = Nat {
        end: End::Source,
        addr: original.dst_addr,
        port_be: original.dst_port_be,
        service_id: e.service_id,
        backend_id: e.backend_id,
        generation: e.generation,
    };
    if flow.ttl <= 1 {
        // It will not reach the client (the caller passes it untouched): it
        // changes nothing in the flow.
        return Some(nat);
    }
    count_ct(CtEvent::ReplyHit);
    if e.flags & CT_SEEN_REPLY == 0 {
        e.flags |= CT_SEEN_REPLY;
    }
    // Replies keep a flow alive too (a server that only sends, over UDP).
    if now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
    }
    let state = next_state(e.state, e.flags, flow);
    if state != e.state {
        e.state = state;
    }
    Some(nat)
}

/// The live entry of the flow keyed `tuple`: not expired, its backend record
/// live with the same generation. Read only: a packet about a flow (an ICMP
/// error) is not one of its own, and neither refreshes nor changes it.
#[inline(always)]
fn live_entry(tuple: &FlowTuple, config: &Config) -> Option<(CtEntry, Backend)> {
    // SAFETY: a map value of the right type, copied out at once.
    let entry = unsafe { *CONNTRACK.get_ptr(tuple)? };
    if now_ns().saturating_sub(entry.last_seen_ns) >= config.timeout_ns(entry.state) {
        return None;
    }
    let backend = *BACKENDS.get(entry.backend_id)?;
    (backend.is_active() && backend.generation == entry.generation).then_some((entry, backend))
}

/// For an ICMP error about a reply of the flow keyed `flow` (sent to its
/// client): writes the translation toward the flow's backend.
#[inline(always)]
pub fn error_to_backend(flow: &FlowTuple, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    let Some((entry, backend)) = live_entry(flow, config) else {
        return false;
    };
    out.write(Nat {
        end: End::Destination,
        addr: backend.addr,
        port_be: backend.port_be,
        service_id: entry.service_id,
        backend_id: entry.backend_id,
        generation: entry.generation,
    });
    true
}

/// For an ICMP error about a request of the flow whose reply key is `reply`
/// (sent to its backend): writes the translation back to the frontend.
#[inline(always)]
pub fn error_to_client(reply: &FlowTuple, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    // SAFETY: a map value of the right type; the kernel accepts a map value
    // as a lookup key.
    let Some(original) = CONNTRACK_REPLY.get_ptr(reply).map(|p| unsafe { &*p }) else {
        return false;
    };
    let Some((entry, _)) = live_entry(original, config) else {
        return false;
    };
    if entry.backend_addr != reply.src_addr || entry.backend_port_be != reply.src_port_be {
        return false;
    }
    out.write(Nat {
        end: End::Source,
        addr: original.dst_addr,
        port_be: original.dst_port_be,
        service_id: entry.service_id,
        backend_id: entry.backend_id,
        generation: entry.generation,
    });
    true
}
