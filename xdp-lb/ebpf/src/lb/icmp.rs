//! ICMP and ICMPv6 errors about a tracked flow, so that path-MTU discovery
//! (and traceroute, and "port unreachable") work through the load balancer.
//!
//! An error quotes the packet it is about. Reversed, the quoted tuple is the
//! key of that packet's flow in one direction or the other:
//! - an error to a frontend address quotes a reply the LB sent to a client
//!   (VIP:port → client): reversed, it is the flow's own key, and the error
//!   goes on to the flow's backend;
//! - any other error (or one to a frontend address that is no flow's key:
//!   the source-NAT address may be a node address) quotes a request the LB
//!   translated (client → backend:port): reversed, it is the flow's reply
//!   key, and the error goes on to the client with the quoted destination
//!   translated back.
//!
//! A source-NATed flow's errors have both quoted ends translated, and one
//! going to the client its outer destination too: it came to the source-NAT
//! address, which the client never saw.
//!
//! An error to the frontend about a direct-server-return flow is not
//! translated: the backend sent the reply from the VIP itself, so the error
//! goes to it as it came, wrapped like the flow's own packets (as Katran
//! does), and the backend's stack matches it to its connection — path-MTU
//! discovery included.
//!
//! Policy: only errors that quote an unfragmented-or-first-fragment TCP or UDP
//! header of the outer packet's family are translated; a quoted IPv6 packet
//! with extension headers is not walked. Everything else goes the way of any
//! other ICMP packet (`decide`): passed, or left to the kernel.

use core::mem::MaybeUninit;

use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use xdp_lb_common::{
    addr::{filter_bit, is_v4_mapped, v4_mapped},
    conntrack::FlowTuple,
    service::{AddressKey, FrontendKey, SERVICE_DSR},
    stats::ParseCounter,
};

use crate::{
    lb::{
        Nat, conntrack,
        flow::{Flow, MAX_L3_OFFSET, MAX_L4_OFFSET},
    },
    maps::{ADDRESSES, CONFIG, ICMP_ERROR, ICMP_ERROR_WORDS, SERVICES, filter_has, forget_ranges},
    packet::FrameSource,
    parse::Parsed,
    unaligned::PacketBytes,
    wire::{
        ICMP_HLEN, IP4_OFFSET_MASK, IP4_SRC, IP6_DST, IP6_SRC, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPPROTO_TCP, IPPROTO_UDP, TCP_CSUM, UDP_CSUM,
    },
};

/// An ICMP or ICMPv6 error and the packet it quotes.
#[derive(Clone, Copy)]
pub struct IcmpError {
    /// The error itself, as a flow without ports: its addresses, protocol,
    /// TTL and offsets (the transport offset is the ICMP header's). It is
    /// forwarded like a translated flow.
    pub outer: Flow,
    /// The quoted packet's tuple, as it was sent.
    pub inner: FlowTuple,
    /// Offsets of the quoted network and transport headers.
    pub inner_l3: usize,
    pub inner_l4: usize,
    /// The quoted transport header is TCP.
    pub inner_is_tcp: bool,
    /// The quoted transport checksum lies inside the frame (an IPv4 router
    /// may quote only 8 bytes of TCP, which stop before it).
    pub inner_has_csum: bool,
}

/// Where the `ICMP_ERROR` slot holds the translation `decide_error` found,
/// after the `IcmpError` (8-byte aligned, as the slot's words are).
const NAT_OFFSET: usize = size_of::<IcmpError>().next_multiple_of(8);

const _: () = assert!(NAT_OFFSET + size_of::<Nat>() <= ICMP_ERROR_WORDS * 8);
const _: () = assert!(align_of::<IcmpError>() <= 8 && align_of::<Nat>() <= 8);

/// This CPU's `IcmpError` slot (in the `ICMP_ERROR` map), for `read_error`
/// to fill.
#[inline(always)]
pub fn error_slot() -> Option<&'static mut MaybeUninit<IcmpError>> {
    let slot = ICMP_ERROR.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, large and aligned enough for an `IcmpError`
    // (asserted above; u64 words); nothing else runs on this CPU meanwhile,
    // and the reference does not outlive the program's run.
    Some(unsafe { &mut *slot.cast::<MaybeUninit<IcmpError>>() })
}

/// This CPU's slot for a translation: of the error in `error_slot` (beside
/// it in the same map value, never overlapping it), or of the packet the
/// program balances (an ICMP error is not one). A per-CPU slot rather than a
/// stack variable: `xdp::icmp` hands it from one subprogram to a sibling
/// without a frame of the caller's holding it, and the programs' main frames
/// stay small enough for their deepest callees.
#[inline(always)]
pub fn nat_slot() -> Option<&'static mut MaybeUninit<Nat>> {
    let slot = ICMP_ERROR.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot; `NAT_OFFSET + size_of::<Nat>()` lies within it
    // and past the `IcmpError` (asserted above), 8-byte aligned; nothing else
    // runs on this CPU meanwhile.
    Some(unsafe { &mut *slot.cast::<u8>().add(NAT_OFFSET).cast::<MaybeUninit<Nat>>() })
}

/// What `decide_error` made of an error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ErrorDecision {
    /// Not about a flow this LB tracks: the caller goes on as with any other
    /// ICMP packet.
    NotTracked,
    /// Translate it as the caller's `Nat` says and forward it.
    Translate,
    /// About a direct-server-return flow: wrap it unchanged and send it to
    /// the caller's `Nat`'s backend.
    Encapsulate,
    /// About a tracked flow, but its TTL would expire here: passed untouched.
    TtlExpired,
}

/// An ICMP or ICMPv6 error in `source`'s frame, and what to do with it: the
/// error (read into this CPU's `error_slot`), the `nat_slot` that
/// `decide_error` wrote as its answer says, and that answer; `None` for a
/// frame that is not such an error. Shared by `xdp_lb` and the TC programs,
/// which then apply the answer each their own way.
#[inline(always)]
pub fn judge<S: FrameSource>(
    source: &S,
    parsed: &Parsed,
) -> Option<(
    &'static IcmpError,
    &'static mut MaybeUninit<Nat>,
    ErrorDecision,
)> {
    let err = error_slot()?;
    if !read_error(source, parsed, err) {
        return None;
    }
    // SAFETY: `read_error` initialised it when it answered true.
    let err = unsafe { err.assume_init_ref() };
    let nat = nat_slot()?;
    let decision = decide_error(err, nat);
    Some((err, nat, decision))
}

/// Reads an ICMP or ICMPv6 error that quotes a TCP or UDP header into `out`;
/// false for anything else (echo, errors quoting other protocols, quotes cut
/// short by the datagram's end). A subprogram of its own; it writes `out` field by field as it reads
/// the headers, because copies of them would not fit its stack frame.
#[inline(never)]
pub fn read_error<S: FrameSource>(
    source: &S,
    parsed: &Parsed,
    out: &mut MaybeUninit<IcmpError>,
) -> bool {
    let frame = &source.frame();
    let is_v4 = match parsed.counter {
        ParseCounter::Icmp4 => true,
        ParseCounter::Icmp6 => false,
        _ => return false,
    };
    let (l3, l4) = forget_ranges(parsed.l3_offset, parsed.l4_offset);
    if l3 > MAX_L3_OFFSET || l4 > MAX_L4_OFFSET {
        return false;
    }
    // Type and code: two bytes, as a one-byte read's bounds check compiles
    // to a comparison the verifier does not take as a range.
    let Some([icmp_type, _code]) = frame.load::<2>(l4) else {
        return false;
    };
    let is_error = if is_v4 {
        // Destination unreachable (with fragmentation needed), time
        // exceeded, parameter problem.
        matches!(icmp_type, 3 | 11 | 12)
    } else {
        // Destination unreachable, packet too big, time exceeded, parameter
        // problem.
        matches!(icmp_type, 1..=4)
    };
    if !is_error {
        return false;
    }
    let e = out.as_mut_ptr();
    let inner_l3 = l4 + ICMP_HLEN;
    // `end`: where the error's datagram ends. The quote is read only up to
    // there: bytes past it are Ethernet padding, which the ICMP checksum does
    // not cover, and a translation must not write.
    let (inner_proto, inner_l4, end) = if is_v4 {
        let (Some(ip), Some(quoted)) = (frame.get::<Ipv4Hdr>(l3), frame.get::<Ipv4Hdr>(inner_l3))
        else {
            return false;
        };
        // SAFETY: `get` checked both whole headers lie in the frame; `e`
        // points at the caller's `IcmpError`, written field by field.
        unsafe {
            let header_len = (((*quoted).vihl & 0x0f) as usize) * 4;
            let later_fragment = u16::from_be_bytes((*quoted).frags) & IP4_OFFSET_MASK != 0;
            let end = l3 + usize::from(u16::from_be_bytes((*ip).tot_len));
            if (*quoted).vihl >> 4 != 4
                || header_len < Ipv4Hdr::LEN
                || later_fragment
                || inner_l3 + header_len > end
            {
                return false;
            }
            let outer = <[u8; 8]>::load(ip.cast::<u8>().add(IP4_SRC));
            let inner = <[u8; 8]>::load(quoted.cast::<u8>().add(IP4_SRC));
            (*e).outer.tuple.src_addr = v4_mapped([outer[0], outer[1], outer[2], outer[3]]);
            (*e).outer.tuple.dst_addr = v4_mapped([outer[4], outer[5], outer[6], outer[7]]);
            (*e).outer.ttl = (*ip).ttl;
            (*e).inner.src_addr = v4_mapped([inner[0], inner[1], inner[2], inner[3]]);
            (*e).inner.dst_addr = v4_mapped([inner[4], inner[5], inner[6], inner[7]]);
            ((*quoted).proto, inner_l3 + header_len, end)
        }
    } else {
        let (Some(ip), Some(quoted)) = (frame.get::<Ipv6Hdr>(l3), frame.get::<Ipv6Hdr>(inner_l3))
        else {
            return false;
        };
        // SAFETY: as above.
        unsafe {
            let end = l3 + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes((*ip).payload_len));
            if (*quoted).vcf[0] >> 4 != 6 || inner_l3 + Ipv6Hdr::LEN > end {
                return false;
            }
            // In words (`unaligned`): a plain copy from the packet is a
            // `memmove` call, a byte loop.
            let (ip_bytes, quoted_bytes) = (ip.cast::<u8>(), quoted.cast::<u8>());
            (*e).outer.tuple.src_addr = <[u8; 16]>::load(ip_bytes.add(IP6_SRC));
            (*e).outer.tuple.dst_addr = <[u8; 16]>::load(ip_bytes.add(IP6_DST));
            (*e).outer.ttl = (*ip).hop_limit;
            (*e).inner.src_addr = <[u8; 16]>::load(quoted_bytes.add(IP6_SRC));
            (*e).inner.dst_addr = <[u8; 16]>::load(quoted_bytes.add(IP6_DST));
            // As in `Flow`: an IPv6 packet never carries IPv4-mapped addresses.
            if is_v4_mapped(&(*e).outer.tuple.src_addr)
                || is_v4_mapped(&(*e).outer.tuple.dst_addr)
                || is_v4_mapped(&(*e).inner.src_addr)
                || is_v4_mapped(&(*e).inner.dst_addr)
            {
                return false;
            }
            ((*quoted).next_hdr, inner_l3 + Ipv6Hdr::LEN, end)
        }
    };
    let inner_is_tcp = match inner_proto {
        IPPROTO_TCP => true,
        IPPROTO_UDP => false,
        _ => return false,
    };
    // Source and destination port: the first four bytes of TCP and UDP alike.
    let Some(ports) = frame.load::<4>(inner_l4).filter(|_| inner_l4 + 4 <= end) else {
        return false;
    };
    let csum_at = inner_l4 + if inner_is_tcp { TCP_CSUM } else { UDP_CSUM };
    // SAFETY: as above; every field not written above is written here.
    unsafe {
        let outer = &raw mut (*e).outer;
        (*outer).tuple.src_port_be = 0;
        (*outer).tuple.dst_port_be = 0;
        (*outer).tuple.proto = if is_v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
        (*outer).tuple._pad0 = 0;
        (*outer).tuple._pad1 = 0;
        (*outer).is_v4 = is_v4;
        (*outer).is_tcp = false;
        (*outer).tcp_flags = 0;
        (*outer).l3_offset = l3;
        (*outer).l4_offset = l4;
        (*outer).has_vlan = parsed.has_vlan != 0;
        let inner = &raw mut (*e).inner;
        (*inner).src_port_be = u16::from_ne_bytes([ports[0], ports[1]]);
        (*inner).dst_port_be = u16::from_ne_bytes([ports[2], ports[3]]);
        (*inner).proto = inner_proto;
        (*inner)._pad0 = 0;
        (*inner)._pad1 = 0;
        (*e).inner_l3 = inner_l3;
        (*e).inner_l4 = inner_l4;
        (*e).inner_is_tcp = inner_is_tcp;
        (*e).inner_has_csum = csum_at + 2 <= end && frame.get::<[u8; 2]>(csum_at).is_some();
    }
    true
}

/// Finds the tracked flow an error is about and writes the translation to
/// `nat`: `End::Destination` with the backend when the error goes to the
/// backend, `End::Source` with the frontend when it goes to the client. The
/// quoted header is translated at the other end (see `xdp::icmp`).
#[inline(never)]
pub fn decide_error(err: &IcmpError, nat: &mut MaybeUninit<Nat>) -> ErrorDecision {
    let Some(config) = CONFIG.get(0) else {
        return ErrorDecision::NotTracked;
    };
    let inner = &err.inner;
    // The quoted packet came from or went to a frontend or a backend: one of
    // its ends is in the address filter, or the flow cannot be tracked here.
    if !filter_has(filter_bit(&inner.src_addr)) && !filter_has(filter_bit(&inner.dst_addr)) {
        return ErrorDecision::NotTracked;
    }
    let reversed = FlowTuple::new(
        inner.dst_addr,
        inner.src_addr,
        inner.dst_port_be,
        inner.src_port_be,
        inner.proto,
    );
    let to_frontend = ADDRESSES
        .get_ptr(AddressKey {
            addr: err.outer.tuple.dst_addr,
        })
        .is_some();
    // An error to a frontend address quotes a reply; failing that (the
    // source-NAT address may be a node address too), a request.
    let to_backend = to_frontend && conntrack::error_to_backend(&reversed, config, nat);
    if !to_backend && !conntrack::error_to_client(&reversed, config, nat) {
        ErrorDecision::NotTracked
    } else if err.outer.ttl <= 1 {
        ErrorDecision::TtlExpired
    } else if to_backend && is_dsr_frontend(&reversed) {
        ErrorDecision::Encapsulate
    } else {
        ErrorDecision::Translate
    }
}

/// True when the frontend `flow` was sent to is a direct-server-return
/// service's.
#[inline(always)]
fn is_dsr_frontend(flow: &FlowTuple) -> bool {
    let key = FrontendKey {
        addr: flow.dst_addr,
        port_be: flow.dst_port_be,
        proto: flow.proto,
        _pad: 0,
    };
    // SAFETY: a map value of the right type, read at once.
    SERVICES
        .get_ptr(key)
        .is_some_and(|service| unsafe { (*service).flags } & SERVICE_DSR != 0)
}
