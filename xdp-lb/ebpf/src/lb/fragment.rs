//! Fragments of TCP and UDP datagrams (`xdp_lb_common::fragment`), carried
//! through a service without reassembly, as Cilium's fragment tracking
//! carries them (netfilter's conntrack sees them only reassembled, by
//! `nf_defrag`):
//! - the first fragment carries the transport header: its ports are
//!   remembered under the datagram's reassembly key, and it is balanced as a
//!   whole packet would be (conntrack, selection, NAT; its transport checksum
//!   covers the whole datagram, and the incremental update for the new
//!   addresses and ports keeps it right);
//! - a later fragment finds those ports, and with them the flow's conntrack
//!   entry (the flow's own, or its reply entry for a backend's reply): it
//!   leaves as the first did, its IP header translated (it has no transport
//!   header to touch), or wrapped unchanged for direct server return.
//!   Without ports or entry (it came before its first, the entry was
//!   evicted, or the first was not balanced) it is dropped when addressed
//!   to a VIP (`Verdict::DropFragmentUntracked`), and otherwise passes as
//!   any packet not for a service does.
//! - an IPv6 datagram may carry Destination Options after its Fragment
//!   header (RFC 8200 §4.5: they are then part of what is fragmented, and
//!   every fragment's Fragment header names them). Its first fragment
//!   carries them and the transport header after them, and is remembered
//!   under its transport protocol as any other; a later one says only 60,
//!   so its first fragment's ports are looked for under UDP, then TCP, and
//!   it goes on with the protocol found (`first_ports`). An AH or ESP
//!   between them and the transport header stops the first fragment's
//!   parse: such a datagram is not balanced, and its later fragments find
//!   nothing.
//!
//! The first fragment is remembered before the core decides on it, whatever
//! it decides: that is what keeps whether a packet is a fragment out of
//! everything after (see `lb::decide` and `Packet::fragment`, without which
//! the verifier walked the whole core and its forwarding twice, once for
//! whole packets and once for first fragments). Only fragments reach this module,
//! so a whole packet pays one test for it.

#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a borrowed key or value reaches the map helper as a pointer; by value it would \
              first be copied onto the 512-byte BPF stack"
)]

use core::mem::MaybeUninit;

use xdp_lb_common::{
    fragment::{FragmentKey, FragmentPorts},
    stats::Verdict,
};

use crate::{
    lb::{
        Decision, MARK_DST, Nat, conntrack,
        flow::{Flow, Packet},
        unbalanced_to,
    },
    maps::{CONFIG, FRAGMENTS},
    wire::{IPPROTO_DSTOPTS, IPPROTO_TCP, IPPROTO_UDP},
};

/// The reassembly key of the datagram `packet` is a fragment of.
#[inline(always)]
fn key(packet: &Packet) -> FragmentKey {
    let t = &packet.flow.tuple;
    FragmentKey {
        src_addr: t.src_addr,
        dst_addr: t.dst_addr,
        id: packet.fragment_id(),
        proto: t.proto,
        _pad: [0; 3],
    }
}

/// Remembers the ports of the first fragment `packet` for the later ones.
/// An entry of an earlier datagram with the same key (its identification
/// reused) is replaced: that datagram is over. A full map evicts its least
/// recently used entry, whose later fragments are then dropped, counted.
#[inline(never)]
pub fn remember_first(packet: &Packet) {
    let t = &packet.flow.tuple;
    let ports = FragmentPorts {
        src_port_be: t.src_port_be,
        dst_port_be: t.dst_port_be,
    };
    let _ = FRAGMENTS.insert(&key(packet), &ports, 0);
}

/// A later fragment: the flow of its first fragment, whose ports it is
/// given, and the same way on. `replies_only` at a hook that translates only
/// replies (`lb::decide_reply`).
#[inline(never)]
pub fn later(packet: &mut Packet, nat: &mut MaybeUninit<Nat>, replies_only: bool) -> Decision {
    let Some(ports) = first_ports(packet) else {
        return untracked(&packet.flow, packet.marks, replies_only);
    };
    let Some(config) = CONFIG.get(0) else {
        return Decision::pass(Verdict::PassNotFrontend);
    };
    // The flow as its first fragment showed it: conntrack knows it by its
    // ports. A request's flow is keyed by its own tuple, a reply's through
    // its reply entry. (Written into the packet rather than a copy: the
    // verifier then meets the ports as it meets a whole packet's, values
    // read from memory, and walks what follows once for both.)
    let flow = &mut packet.flow;
    flow.tuple.src_port_be = ports.src_port_be;
    flow.tuple.dst_port_be = ports.dst_port_be;
    let decision = if !replies_only
        && let Some(decision) = Decision::tracked(conntrack::lookup(flow, config, nat))
    {
        decision
    } else if conntrack::lookup_reply(flow, config, nat) {
        Decision::translate()
    } else {
        return untracked(flow, packet.marks, replies_only);
    };
    if flow.ttl <= 1 {
        // As for a whole packet of a service's flow: the kernel answers with
        // time exceeded. Judged once the flow is found, as a whole packet's
        // TTL is once its service is: an untracked one to a VIP is dropped
        // whatever its TTL. (The request's lookup has refreshed the flow: a
        // fragment of it did arrive.)
        return Decision::pass(Verdict::PassTtlExpired);
    }
    // SAFETY: both lookups write the translation when they find the flow.
    unsafe { nat.assume_init_mut() }.addresses_only = true;
    decision
}

/// The ports the first fragment of `packet`'s datagram left, if it was
/// seen. A later IPv6 fragment whose Fragment header names Destination
/// Options (`fill_flow` leaves 60 in its tuple: only the first fragment
/// carries those and the transport header after them) is of a UDP or a TCP
/// datagram: the UDP key is tried, then the TCP one, and the tuple and
/// `is_tcp` get the protocol found. An IPv6 identification is unique per
/// source and destination (RFC 8200 §4.5), so at most one can match.
#[inline(always)]
fn first_ports(packet: &mut Packet) -> Option<FragmentPorts> {
    let mut key = key(packet);
    let ports = if key.proto == IPPROTO_DSTOPTS {
        key.proto = IPPROTO_UDP;
        let ports = match FRAGMENTS.get_ptr(&key) {
            Some(ports) => ports,
            None => {
                key.proto = IPPROTO_TCP;
                let ports = FRAGMENTS.get_ptr(&key)?;
                // Set here alone: `fill_flow` left it false, as a UDP one's
                // wants. Written on both ways, the verifier walked the rest
                // of the core once more (`xdp_lb` processed some 5 500
                // instructions more): a UDP fragment's state then no longer
                // matched that of the other later UDP fragments.
                packet.flow.is_tcp = true;
                ports
            }
        };
        packet.flow.tuple.proto = key.proto;
        ports
    } else {
        FRAGMENTS.get_ptr(&key)?
    };
    // SAFETY: a map value of the right type, copied out at once.
    Some(unsafe { *ports })
}

/// A later fragment without a flow to join: dropped when addressed to a
/// VIP-only address, which would otherwise receive it alone; passed
/// untouched when it is not for a service, or is a node address's own.
#[inline(always)]
fn untracked(flow: &Flow, marks: u8, replies_only: bool) -> Decision {
    if replies_only {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    unbalanced_to(
        marks & MARK_DST != 0,
        &flow.tuple.dst_addr,
        Decision::drop(Verdict::DropFragmentUntracked),
    )
}
