//! The load-balancing core shared by every program: classify a parsed frame,
//! consult conntrack, select a backend, and decide the translation. It reads the
//! packet only through what `flow::Packet` extracted and never writes it:
//! applying a `Decision` (the rewrite and the forwarding) is the attaching
//! program's part, so the TC program reuses this module unchanged with its own
//! skb-aware rewrite.
//!
//! The paths are BPF subprograms (`#[inline(never)]`: BPF-to-BPF calls), so the
//! verifier sees small functions and each keeps its own stack frame within the
//! 512-byte limit.

pub mod conntrack;
pub mod flow;
pub mod select;

use xdp_lb_common::{
    addr::Addr,
    backend::NO_BACKEND,
    config::Config,
    service::{ADDRESS_NODE, AddressKey, FrontendKey},
    stats::{ParseCounter, Verdict},
};

use crate::{
    lb::flow::{Flow, Packet},
    maps::{ADDRESSES, CONFIG, SERVICES},
};

/// What to do with a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave it untouched and hand it to the kernel, counted as `verdict`.
    Pass,
    /// Drop it, counted as `verdict`.
    Drop,
    /// Rewrite it as `nat` says and forward it (the verdict follows from how).
    Translate,
}

/// The core's answer for one frame. A struct rather than a data-carrying enum:
/// it is returned by BPF subprograms, and the kernel rejects the BTF that Rust
/// enums with data become.
#[derive(Clone, Copy)]
pub struct Decision {
    pub action: Action,
    pub verdict: Verdict,
    pub nat: Nat,
}

impl Decision {
    #[inline(always)]
    const fn pass(verdict: Verdict) -> Self {
        Self {
            action: Action::Pass,
            verdict,
            nat: Nat::NONE,
        }
    }

    #[inline(always)]
    const fn drop(verdict: Verdict) -> Self {
        Self {
            action: Action::Drop,
            verdict,
            nat: Nat::NONE,
        }
    }

    #[inline(always)]
    const fn translate(nat: Nat) -> Self {
        let verdict = match nat.end {
            End::Destination => Verdict::ForwardToBackend,
            End::Source => Verdict::ForwardReply,
        };
        Self {
            action: Action::Translate,
            verdict,
            nat,
        }
    }
}

/// Which end of the packet a translation replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// DNAT: the destination becomes the backend.
    Destination,
    /// Reverse NAT of a reply: the source becomes the frontend.
    Source,
}

/// A NAT rewrite: which end, the new address and port, and who to count it for.
/// `backend_id == NO_BACKEND` means "none" where a function may not find one.
#[derive(Clone, Copy)]
pub struct Nat {
    pub end: End,
    pub addr: Addr,
    pub port_be: u16,
    pub service_id: u32,
    pub backend_id: u32,
}

impl Nat {
    pub const NONE: Self = Self {
        end: End::Destination,
        addr: [0; 16],
        port_be: 0,
        service_id: 0,
        backend_id: NO_BACKEND,
    };

    #[inline(always)]
    pub const fn is_some(&self) -> bool {
        self.backend_id != NO_BACKEND
    }
}

/// Decides what to do with a frame (DESIGN.md, "Per packet, in this order").
#[inline(never)]
pub fn decide(packet: &Packet) -> Decision {
    if packet.counter.is_malformed() {
        return Decision::pass(Verdict::PassMalformed);
    }
    if matches!(
        packet.counter,
        ParseCounter::Arp | ParseCounter::OtherEthertype
    ) {
        return Decision::pass(Verdict::PassNotIp);
    }
    if packet.has_flow {
        decide_flow(&packet.flow)
    } else {
        not_balanced(packet)
    }
}

/// A whole TCP or UDP packet.
#[inline(never)]
fn decide_flow(flow: &Flow) -> Decision {
    let Some(config) = CONFIG.get(0) else {
        // The array always has its slot; this keeps the verifier satisfied.
        return Decision::pass(Verdict::PassNotFrontend);
    };
    let now = conntrack::now_ns();

    // 1. The reply direction first: a backend answering a tracked flow.
    let nat = conntrack::lookup_reply(flow, config, now);
    if nat.is_some() {
        return translate_unless_expiring(flow, nat);
    }

    // 2. Frontend lookup, with the node-address rule.
    let Some(address) = ADDRESSES.get_ptr(AddressKey {
        addr: flow.tuple.dst_addr,
    }) else {
        return Decision::pass(Verdict::PassNotFrontend);
    };
    // SAFETY: a map value of the right type, read once.
    let is_node_address = unsafe { (*address).kind } == ADDRESS_NODE;
    if is_node_address && !in_nodeport_range(flow.tuple.dst_port_be, config) {
        return Decision::pass(Verdict::PassNodeAddress);
    }
    let key = FrontendKey {
        addr: flow.tuple.dst_addr,
        port_be: flow.tuple.dst_port_be,
        proto: flow.tuple.proto,
        _pad: 0,
    };
    let Some(service) = SERVICES.get_ptr(key) else {
        return if is_node_address {
            Decision::pass(Verdict::PassNodeAddress)
        } else {
            Decision::drop(Verdict::DropUnknownPort)
        };
    };
    // SAFETY: as above.
    let service = unsafe { *service };
    if flow.ttl <= 1 {
        // Before conntrack: an expiring packet creates no state.
        return Decision::pass(Verdict::PassTtlExpired);
    }

    // 3. Conntrack before Maglev: a tracked flow keeps its live backend.
    let nat = conntrack::lookup(flow, config, now);
    if nat.is_some() {
        return Decision::translate(nat);
    }

    // 4. Maglev.
    let selected = select::select(&flow.tuple, &service, config.hash_seed);
    if selected.id == NO_BACKEND {
        return Decision::drop(Verdict::DropNoBackend);
    }
    conntrack::create(flow, selected.id, &selected.backend, service.id, now);
    Decision::translate(Nat {
        end: End::Destination,
        addr: selected.backend.addr,
        port_be: selected.backend.port_be,
        service_id: service.id,
        backend_id: selected.id,
    })
}

/// A frame that is IP but not a whole TCP/UDP packet: fragments and other
/// protocols. Untouched unless addressed to a VIP-only address; there,
/// fragments are dropped (no ports to balance a later fragment by, and no
/// reassembly here) and other protocols pass. A node address's fragments are
/// the node's own traffic and pass.
#[inline(never)]
fn not_balanced(packet: &Packet) -> Decision {
    if !packet.has_dst {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    let Some(address) = ADDRESSES.get_ptr(AddressKey { addr: packet.dst }) else {
        return Decision::pass(Verdict::PassNotFrontend);
    };
    // SAFETY: a map value of the right type, read once.
    if unsafe { (*address).kind } == ADDRESS_NODE {
        return Decision::pass(Verdict::PassNodeAddress);
    }
    if packet.is_fragment {
        Decision::drop(Verdict::DropFragment)
    } else {
        Decision::pass(Verdict::PassOtherProtocol)
    }
}

/// A packet whose TTL (hop limit) would expire here is passed untouched, so the
/// kernel answers with ICMP time exceeded, as a router would.
#[inline(always)]
fn translate_unless_expiring(flow: &Flow, nat: Nat) -> Decision {
    if flow.ttl <= 1 {
        Decision::pass(Verdict::PassTtlExpired)
    } else {
        Decision::translate(nat)
    }
}

#[inline(always)]
fn in_nodeport_range(port_be: u16, config: &Config) -> bool {
    let port = u16::from_be(port_be);
    port >= config.nodeport_min && port <= config.nodeport_max
}
