//! Connection tracking: find a flow's entry, decide whether it still holds, and
//! create or refresh entries. Expiry is decided here, lazily, on lookup; the
//! agent's garbage collector only deletes what this code already treats as gone.

use core::mem::MaybeUninit;

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns};
use xdp_lb_common::{
    addr::Addr,
    backend::Backend,
    config::{Config, NS_PER_SEC},
    conntrack::{
        CT_CLOSED, CT_DSR, CT_FIN_BACKEND, CT_FIN_CLIENT, CT_SEEN_REPLY, CT_SNAT, CtEntry,
        FlowTuple, NOT_TCP, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT,
    },
    service::{ADDRESS_NODE, AddressKey, SERVICE_DSR, SERVICE_SNAT_REMOTE, Service},
    stats::CtEvent,
};

use crate::{
    lb::{End, Nat, flow::Flow, flow_table},
    maps::{ADDRESSES, BACKENDS, CONFIG, FLOOD_GUARD, PORT_SEARCH, count_ct, maybe_node_address},
    wire::{TCP_FIN, TCP_RST},
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

/// The `CT_FIN_*` flags a packet of `flow` sets, sent by the end whose FIN
/// flag is `end`: a FIN closes its sender's end, a RST both.
#[inline(always)]
fn closed_ends(flow: &Flow, end: u8) -> u8 {
    if !flow.is_tcp {
        0
    } else if flow.tcp_flags & TCP_RST != 0 {
        CT_CLOSED
    } else if flow.tcp_flags & TCP_FIN != 0 {
        end
    } else {
        0
    }
}

/// What `lookup` found.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Tracked {
    /// No entry the flow may keep: it is new, or its entry no longer holds.
    No,
    /// A tracked NAT flow, its translation written.
    Translate,
    /// A tracked direct-server-return flow, its backend written.
    Encapsulate,
}

/// Looks up the flow's entry from the client side. Writes its translation to
/// `out` and says how the flow is forwarded when it may keep it: the entry is
/// not expired, its backend record is live with the same generation, and it
/// is not a new SYN on a closing entry. Counts why an entry was not kept.
/// Needs nothing of the service: the entry says whether the flow is DSR.
///
/// The translation is written straight from the map values into `out`:
/// returned by value, or with the backend record copied out, the addresses
/// would pass through byte-aligned temporaries, which BPF copies a byte at a
/// time.
#[inline(never)]
pub fn lookup(flow: &Flow, config: &Config, out: &mut MaybeUninit<Nat>) -> Tracked {
    let Some(entry) = flow_table::flow(&flow.tuple) else {
        return Tracked::No;
    };
    // The clock is read only once there is an entry to judge.
    let now = now_ns();
    // SAFETY: a pointer into the map value; concurrent updates of the same flow
    // on another CPU can only race on the fields written below, each of which
    // is a whole word written with a value valid on its own.
    let e = unsafe { &mut *entry };
    // `>=`: a timeout of 0 s means "never reused", whatever the clock's resolution.
    if now.saturating_sub(e.last_seen_ns) >= config.timeout_ns(e.state) {
        count_ct(CtEvent::Expired);
        release_port(e, flow);
        return Tracked::No;
    }
    let backend = match BACKENDS.get(e.backend_id) {
        Some(b) if b.is_active() && b.generation == e.generation => b,
        _ => {
            count_ct(CtEvent::ReselectedBackendGone);
            release_port(e, flow);
            return Tracked::No;
        }
    };
    if flow.is_syn() && e.state == TCP_CLOSING {
        count_ct(CtEvent::ReselectedClosing);
        release_port(e, flow);
        return Tracked::No;
    }
    count_ct(CtEvent::Hit);
    let state = next_state(e.state, e.flags, flow);
    if state != e.state {
        e.state = state;
    }
    let closed = closed_ends(flow, CT_FIN_CLIENT);
    if e.flags & closed != closed {
        e.flags |= closed;
    }
    let dsr = e.flags & CT_DSR != 0;
    if now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
        // A DSR flow has no reply entry: its replies do not come back this way.
        if !dsr {
            keep_reply(e, flow, now);
        }
    }
    out.write(Nat {
        end: End::Destination,
        addr: backend.addr,
        port_be: backend.port_be,
        snat: e.is_snat(),
        peer_addr: e.reply_dst_addr,
        peer_port_be: e.reply_dst_port_be,
        now_ns: now,
        service_id: e.service_id,
        backend_id: e.backend_id,
        generation: e.generation,
        addresses_only: false,
    });
    if dsr {
        Tracked::Encapsulate
    } else {
        Tracked::Translate
    }
}

/// Keeps the reply entry of a live flow, with the once-a-second refresh: a
/// flow whose backend stays silent never touches its reply entry, and a full
/// bucket would give it up first. Marking it used is all it needs; only when
/// it no longer names this flow is it written again, so that it comes back
/// within a second. A source-NAT port whose entry a full bucket gave up is
/// taken back only if no other flow claimed it meanwhile, and so is the reply
/// tuple of a closed flow, which a new flow may have taken over (`holds`). A
/// subprogram of its own: the key stays out of `lookup`'s frame.
#[inline(never)]
fn keep_reply(e: &CtEntry, flow: &Flow, now: u64) {
    let key = e.reply_key(flow.tuple.proto);
    if let Some(entry) = flow_table::reply(&key) {
        // SAFETY: a map value of the right type, read and written in place.
        let entry = unsafe { &mut *entry };
        if entry.original.same_as(&flow.tuple) {
            entry.used_ns = now;
            return;
        }
    }
    let _ = flow_table::insert_reply(&key, &flow.tuple, now, e.is_snat() || e.is_closed());
}

/// True when the reply entry keyed `reply` exists and names the flow keyed
/// `original`.
#[inline(always)]
fn reply_names(reply: &FlowTuple, original: &FlowTuple) -> bool {
    flow_table::reply(reply)
        // SAFETY: a map value of the right type, compared at once.
        .is_some_and(|holder| unsafe { (*holder).original.same_as(original) })
}

/// Starts reading the bucket of the reply entry a new flow of `flow` to
/// `backend` without source NAT will write (`flow_table::touch_reply`), for
/// a caller about to look the flow up: that lookup reads the flow's own
/// bucket, and the cold reads and writes of a new flow's two buckets then
/// overlap. A subprogram of its own: the key stays out of the caller's frame.
#[inline(never)]
pub fn touch_reply(flow: &Flow, backend: &Backend) {
    let t = &flow.tuple;
    flow_table::touch_reply(&FlowTuple::new(
        backend.addr,
        t.src_addr,
        backend.port_be,
        t.src_port_be,
        t.proto,
    ));
}

/// Deletes the flow keyed `tuple`, and its reply entry if it has one (a DSR
/// flow has none): `xdp_bench` does before every run of a case that makes
/// one flow new again and again. The reply entry is not checked to name the
/// flow: a benchmark's flow shares its reply tuple with no other.
#[inline(never)]
pub fn forget(tuple: &FlowTuple) {
    if let Some(entry) = flow_table::remove_flow(tuple)
        && entry.flags & CT_DSR == 0
    {
        flow_table::remove_reply(&entry.reply_key(tuple.proto));
    }
}

/// An entry that is not kept gives its source-NAT port back at once: the
/// flow is created again with a port of its own, and the old reply entry
/// would otherwise linger until a reply to it, a full bucket or another flow took
/// it. Only while it still names this flow.
#[inline(never)]
fn release_port(e: &CtEntry, flow: &Flow) {
    if !e.is_snat() {
        return;
    }
    let key = e.reply_key(flow.tuple.proto);
    if reply_names(&key, &flow.tuple) {
        flow_table::remove_reply(&key);
    }
}

/// The new-flow flood guard (Katran's): true while this CPU has created fewer
/// entries than `config.new_flows_per_cpu_per_sec` in the current one-second
/// window, and counts this one. Past the rate, a flood of new flows can no
/// longer push established flows out of the tables: those go on being found,
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

/// How many ports of the source-NAT range a new flow tries, from a random
/// start, before it is refused: bounded for the verifier, and enough that a
/// range with free ports is rarely missed.
const SNAT_PORT_TRIES: u32 = 8;

/// What `create` did.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Created {
    /// The flow goes to its backend (tracked, or held back by the flood
    /// guard).
    Yes,
    /// Refused: it could not be tracked, and its replies need the entry.
    Refused,
    /// Its source must be translated to a port of the source-NAT range:
    /// `create_with_port` finishes it.
    NeedsPort,
}

/// Creates (or replaces) the flow's entry and its reply entry (none for a
/// DSR service, whose replies do not come back), and writes the flow's
/// translation to `out`. The source is translated when the reply would not
/// come back otherwise: a pod reaching itself (hairpin), a remote backend of a
/// `SERVICE_SNAT_REMOTE` service, or a reply tuple another live flow already
/// has (two frontends, one client port, one backend). Such a flow needs a
/// port of the source-NAT range, which the caller then has
/// `create_with_port` find: nested under this function, the port search's
/// frames would add up past the 512-byte stack.
///
/// Without source NAT, the flood guard may hold the entries back (the flow
/// still reaches its backend); a flow with source NAT is always tracked, as
/// its replies need the entry.
///
/// The work is split into sibling subprograms (`claim_reply`, `track`), each
/// building its own key or entry, for the same reason.
#[inline(never)]
pub fn create(
    flow: &Flow,
    id: u32,
    backend: &Backend,
    service: &Service,
    out: &mut MaybeUninit<Nat>,
) -> Created {
    // Read here rather than passed: a BPF call takes at most five arguments
    // (an array lookup the verifier inlines).
    let Some(config) = CONFIG.get(0) else {
        return Created::Refused;
    };
    let source = snat_source(flow, backend, service);
    // Read before the struct: a helper call in the middle of its fields
    // builds it on the stack first.
    let now = now_ns();
    let nat = out.write(Nat {
        end: End::Destination,
        addr: backend.addr,
        port_be: backend.port_be,
        snat: false,
        peer_addr: flow.tuple.src_addr,
        peer_port_be: flow.tuple.src_port_be,
        now_ns: now,
        service_id: service.id,
        backend_id: id,
        generation: backend.generation,
        addresses_only: false,
    });
    // Without a configured source address of the flow's family, the flow
    // keeps its own (documented with `Config::snat_source_v4`).
    if source != NO_SNAT && source_of(source, flow.is_v4, config, &mut nat.peer_addr) {
        return Created::NeedsPort;
    } else if !flood_guard_admits(nat.now_ns, config) {
        count_ct(CtEvent::NotTrackedFloodGuard);
        return Created::Yes;
    } else if !is_dsr(service) && !claim_reply(flow, nat) {
        // A clash: another live flow's replies carry this tuple. The client
        // keeps its address and gets another port.
        return Created::NeedsPort;
    }
    finish(flow, nat, service.flags)
}

/// Finishes what `create` began for a flow that `Created::NeedsPort`: finds
/// a free port of the source-NAT range for the source in `nat`, and tracks
/// the flow with it.
#[inline(never)]
pub fn create_with_port(flow: &Flow, service_flags: u32, nat: &mut Nat) -> Created {
    let Some(config) = CONFIG.get(0) else {
        return Created::Refused;
    };
    if !allocate_port(flow, nat, config) {
        count_ct(CtEvent::SnatExhausted);
        return Created::Refused;
    }
    nat.snat = true;
    finish(flow, nat, service_flags)
}

/// Tracks the flow translated as `nat` says, and counts it.
#[inline(always)]
fn finish(flow: &Flow, nat: &Nat, service_flags: u32) -> Created {
    if track(flow, nat, service_flags) {
        count_ct(CtEvent::Created);
        return Created::Yes;
    }
    count_ct(CtEvent::InsertFailed);
    if nat.snat {
        // Untracked, its replies could not be translated back.
        flow_table::remove_reply(&reply_key(flow, nat));
        return Created::Refused;
    }
    Created::Yes
}

/// The key of the reply entry of `flow` translated as `nat` says.
#[inline(always)]
fn reply_key(flow: &Flow, nat: &Nat) -> FlowTuple {
    FlowTuple::new(
        nat.addr,
        nat.peer_addr,
        nat.port_be,
        nat.peer_port_be,
        flow.tuple.proto,
    )
}

/// Writes the flow entry of `flow`, translated as `nat` says, for a service
/// with `service_flags`.
#[inline(never)]
fn track(flow: &Flow, nat: &Nat, service_flags: u32) -> bool {
    let dsr = service_flags & SERVICE_DSR != 0;
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
    // A DSR flow's replies never pass here: its next segment after the SYN
    // establishes it.
    let mode = if dsr { CT_DSR | CT_SEEN_REPLY } else { 0 };
    // A SYN's FIN (a segment no stack sends) closes nothing: it opens.
    let closed = if state == TCP_CLOSING {
        closed_ends(flow, CT_FIN_CLIENT)
    } else {
        0
    };
    let flags = if nat.snat { mode | CT_SNAT } else { mode } | closed;
    flow_table::insert_flow(&flow.tuple, |entry| {
        *entry = CtEntry {
            last_seen_ns: nat.now_ns,
            backend_id: nat.backend_id,
            generation: nat.generation,
            backend_addr: nat.addr,
            backend_port_be: nat.port_be,
            state,
            flags,
            service_id: nat.service_id,
            reply_dst_addr: nat.peer_addr,
            reply_dst_port_be: nat.peer_port_be,
            _pad0: 0,
            _pad1: 0,
        };
    })
}

/// Claims the reply entry of `flow` translated as `nat` says (see `claim`).
#[inline(always)]
fn claim_reply(flow: &Flow, nat: &Nat) -> bool {
    search_key(flow, nat).is_some_and(|reply| claim(reply, &flow.tuple, nat.now_ns))
}

/// The reply key of `flow` translated as `nat` says, built in this CPU's
/// `PORT_SEARCH` slot rather than on the stack: its users run in the deepest
/// chains of calls, which the 512-byte limit counts whole.
#[inline(always)]
fn search_key(flow: &Flow, nat: &Nat) -> Option<&'static mut FlowTuple> {
    // SAFETY: this CPU's own slot; nothing else runs on this CPU meanwhile,
    // and each user is done with it before the next writes it.
    let reply = unsafe { &mut *PORT_SEARCH.get_ptr_mut(0)? };
    *reply = reply_key(flow, nat);
    Some(reply)
}

/// `snat_source`: no source NAT.
const NO_SNAT: u8 = 0;
/// `snat_source`: the node's source-NAT address (a remote backend).
const SNAT_NODE: u8 = 1;
/// `snat_source`: the hairpin address (the client is the backend).
const SNAT_HAIRPIN: u8 = 2;

/// Which source a new flow must be given so that its replies come back here.
/// Hairpin when the client is the backend, or when both are the node itself
/// (the node reaching its own address through a service): the answer would
/// go to the client through the loopback, past every hook.
#[inline(always)]
fn snat_source(flow: &Flow, backend: &Backend, service: &Service) -> u8 {
    if is_dsr(service) {
        NO_SNAT
    } else if flow.tuple.src_addr == backend.addr
        || (backend.is_local()
            && is_node_address(&backend.addr)
            && is_node_address(&flow.tuple.src_addr))
    {
        SNAT_HAIRPIN
    } else if service.flags & SERVICE_SNAT_REMOTE != 0 && !backend.is_local() {
        SNAT_NODE
    } else {
        NO_SNAT
    }
}

/// One of the node's own addresses (declared `ADDRESS_NODE`); the kind
/// filter answers most others without a lookup.
#[inline(always)]
fn is_node_address(addr: &Addr) -> bool {
    maybe_node_address(addr)
        && ADDRESSES
            .get_ptr(AddressKey { addr: *addr })
            // SAFETY: a map value of the right type, read once.
            .is_some_and(|info| unsafe { (*info).kind } == ADDRESS_NODE)
}

/// Writes the configured address of `kind` and the flow's family to `out`;
/// false when none is configured (all zeros).
#[inline(always)]
fn source_of(kind: u8, is_v4: bool, config: &Config, out: &mut Addr) -> bool {
    if is_v4 {
        let a = if kind == SNAT_HAIRPIN {
            config.hairpin_source_v4
        } else {
            config.snat_source_v4
        };
        if a == [0; 4] {
            return false;
        }
        out[12] = a[0];
        out[13] = a[1];
        out[14] = a[2];
        out[15] = a[3];
    } else {
        let a = if kind == SNAT_HAIRPIN {
            &config.hairpin_source_v6
        } else {
            &config.snat_source_v6
        };
        if a.iter().all(|&b| b == 0) {
            return false;
        }
        *out = *a;
    }
    true
}

/// Picks a port of the source-NAT range for `nat`'s new source
/// (`peer_addr`): tries `SNAT_PORT_TRIES` ports from a random start and
/// claims the first free one (its reply entry, naming the flow, is the
/// reservation), writing it to `nat.peer_port_be`. False when the range is
/// empty or every port tried is taken by a live flow.
#[inline(never)]
fn allocate_port(flow: &Flow, nat: &mut Nat, config: &Config) -> bool {
    let min = u32::from(config.snat_port_min);
    let max = u32::from(config.snat_port_max);
    if min == 0 || max < min {
        return false;
    }
    let span = max - min + 1;
    // `checked_rem`: a `%` the compiler cannot prove safe keeps a panic
    // branch, and the verifier refuses a program that may end in it.
    // SAFETY: a helper without arguments.
    let Some(start) = unsafe { bpf_get_prandom_u32() }.checked_rem(span) else {
        return false;
    };
    let Some(reply) = search_key(flow, nat) else {
        return false;
    };
    for i in 0..SNAT_PORT_TRIES {
        let Some(offset) = (start + i).checked_rem(span) else {
            return false;
        };
        reply.dst_port_be = ((min + offset) as u16).to_be();
        if claim(reply, &flow.tuple, nat.now_ns) {
            nat.peer_port_be = reply.dst_port_be;
            count_ct(CtEvent::SnatAllocated);
            return true;
        }
    }
    false
}

/// Makes `reply` the reply entry of `original`: true when it was free, is
/// `original`'s already (the flow is re-created), or belongs to a flow that
/// no longer holds it (expired, gone, closed at both ends, or moved to
/// another backend or port), which is how a source-NAT port is released;
/// `now` is the flow's clock reading (`Nat::now_ns`). A subprogram of its
/// own, so that its lookups do not add to the frame of the loop that calls
/// it.
#[inline(never)]
fn claim(reply: &FlowTuple, original: &FlowTuple, now: u64) -> bool {
    flow_table::claim_reply(reply, original, now, |holder| {
        holder.same_as(original) || !holds(holder, reply, now)
    })
}

/// True when the flow keyed `holder` is alive, not closed at both ends
/// (`CtEntry::is_closed`) at `now`, and its replies carry `reply`.
#[inline(always)]
fn holds(holder: &FlowTuple, reply: &FlowTuple, now: u64) -> bool {
    let (Some(e), Some(config)) = (flow_table::flow(holder), CONFIG.get(0)) else {
        return false;
    };
    // SAFETY: a map value of the right type, read once.
    let e = unsafe { &*e };
    !e.is_closed()
        && now.saturating_sub(e.last_seen_ns) < config.timeout_ns(e.state)
        && e.backend_addr == reply.src_addr
        && e.backend_port_be == reply.src_port_be
        && e.reply_dst_addr == reply.dst_addr
        && e.reply_dst_port_be == reply.dst_port_be
}

/// A reply's flow: its entry is found through the reply entry, must name this
/// backend, and must not be expired. Updates the TCP state and the seen-reply
/// flag. Writes the reverse translation to `out` (the source becomes the
/// frontend) and returns true; straight from the map values, as `lookup`
/// does.
#[inline(never)]
pub fn lookup_reply(flow: &Flow, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    let Some(reply) = flow_table::reply(&flow.tuple) else {
        return false;
    };
    let now = now_ns();
    // SAFETY: a map value of the right type, read and written in place.
    let reply = unsafe { &mut *reply };
    let original = &reply.original;
    let live = flow_table::flow(original).and_then(|p| {
        // SAFETY: as in `lookup`.
        let e = unsafe { &mut *p };
        let same_backend =
            e.backend_addr == flow.tuple.src_addr && e.backend_port_be == flow.tuple.src_port_be;
        // The port a source-NAT flow was given, not one it gave up.
        let same_source = e.reply_dst_port_be == flow.tuple.dst_port_be
            && e.reply_dst_addr == flow.tuple.dst_addr;
        let alive = now.saturating_sub(e.last_seen_ns) < config.timeout_ns(e.state);
        (same_backend && same_source && alive).then_some(e)
    });
    let Some(e) = live else {
        count_ct(CtEvent::ReplyOrphan);
        flow_table::remove_reply(&flow.tuple);
        return false;
    };
    out.write(Nat {
        end: End::Source,
        addr: original.dst_addr,
        port_be: original.dst_port_be,
        snat: e.is_snat(),
        peer_addr: original.src_addr,
        peer_port_be: original.src_port_be,
        now_ns: now,
        service_id: e.service_id,
        backend_id: e.backend_id,
        generation: e.generation,
        addresses_only: false,
    });
    if flow.ttl <= 1 {
        // It will not reach the client (the caller passes it untouched): it
        // changes nothing in the flow.
        return true;
    }
    count_ct(CtEvent::ReplyHit);
    if e.flags & CT_SEEN_REPLY == 0 {
        e.flags |= CT_SEEN_REPLY;
    }
    // Replies keep a flow alive too (a server that only sends, over UDP),
    // and its reply entry used.
    if now.saturating_sub(e.last_seen_ns) > REFRESH_NS {
        e.last_seen_ns = now;
    }
    if now.saturating_sub(reply.used_ns) > REFRESH_NS {
        reply.used_ns = now;
    }
    let state = next_state(e.state, e.flags, flow);
    if state != e.state {
        e.state = state;
    }
    let closed = closed_ends(flow, CT_FIN_BACKEND);
    if e.flags & closed != closed {
        e.flags |= closed;
    }
    true
}

/// The live entry of the flow keyed `tuple`: not expired, its backend record
/// live with the same generation. Read only: a packet about a flow (an ICMP
/// error) is not one of its own, and neither refreshes nor changes it.
#[inline(always)]
fn live_entry(tuple: &FlowTuple, config: &Config, now: u64) -> Option<(CtEntry, Backend)> {
    // SAFETY: a map value of the right type, copied out at once.
    let entry = unsafe { *flow_table::flow(tuple)? };
    if now.saturating_sub(entry.last_seen_ns) >= config.timeout_ns(entry.state) {
        return None;
    }
    let backend = *BACKENDS.get(entry.backend_id)?;
    (backend.is_active() && backend.generation == entry.generation).then_some((entry, backend))
}

/// For an ICMP error about a reply of the flow keyed `flow` (sent to its
/// client): writes the translation toward the flow's backend.
#[inline(always)]
pub fn error_to_backend(flow: &FlowTuple, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    let now = now_ns();
    let Some((entry, backend)) = live_entry(flow, config, now) else {
        return false;
    };
    // The peer is the end the backend sees: the client, or under source
    // NAT the address and port it was given.
    out.write(Nat {
        end: End::Destination,
        addr: backend.addr,
        port_be: backend.port_be,
        snat: entry.is_snat(),
        peer_addr: entry.reply_dst_addr,
        peer_port_be: entry.reply_dst_port_be,
        now_ns: now,
        service_id: entry.service_id,
        backend_id: entry.backend_id,
        generation: entry.generation,
        addresses_only: false,
    });
    true
}

/// For an ICMP error about a request of the flow whose reply key is `reply`
/// (sent to its backend): writes the translation back to the frontend.
#[inline(always)]
pub fn error_to_client(reply: &FlowTuple, config: &Config, out: &mut MaybeUninit<Nat>) -> bool {
    // SAFETY: a map value of the right type; the kernel accepts a map value
    // as a lookup key.
    let Some(original) = flow_table::reply(reply).map(|p| unsafe { &(*p).original }) else {
        return false;
    };
    let now = now_ns();
    let Some((entry, _)) = live_entry(original, config, now) else {
        return false;
    };
    if entry.backend_addr != reply.src_addr
        || entry.backend_port_be != reply.src_port_be
        || entry.reply_dst_addr != reply.dst_addr
        || entry.reply_dst_port_be != reply.dst_port_be
    {
        return false;
    }
    // Under source NAT the peer, the client, replaces the quoted source and
    // the outer destination (the error came to the source-NAT address).
    out.write(Nat {
        end: End::Source,
        addr: original.dst_addr,
        port_be: original.dst_port_be,
        snat: entry.is_snat(),
        peer_addr: original.src_addr,
        peer_port_be: original.src_port_be,
        now_ns: now,
        service_id: entry.service_id,
        backend_id: entry.backend_id,
        generation: entry.generation,
        addresses_only: false,
    });
    true
}
