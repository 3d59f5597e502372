//! NAT rewrites with direct packet access and incremental checksum updates
//! (`xdp_lb_common::csum`, tested on the host against full recomputation).
//! Frames from a wire carry full checksums, so incremental updates keep them
//! valid (DESIGN.md, "Which hook where").
//!
//! Each header is bounds-checked once and then read and written at constant
//! offsets from the checked pointer, the form the verifier follows.

use xdp_lb_common::{addr::Addr, csum};

use aya_ebpf::programs::XdpContext;

use crate::{
    lb::{End, Nat, flow::Flow},
    packet::{Frame, FrameSource},
    unaligned::PacketBytes,
    wire::{
        DST_PORT, IP4_CSUM, IP4_DST, IP4_HLEN, IP4_SRC, IP4_TTL, IP6_DST, IP6_HLEN, IP6_HOP_LIMIT,
        IP6_SRC, SRC_PORT, TCP_CSUM, TCP_HLEN, UDP_CSUM, UDP_HLEN,
    },
};

/// `N` bytes at `offset` from a checked header pointer.
///
/// # Safety
/// `header + offset .. + N` lies inside the packet.
#[inline(always)]
pub(super) unsafe fn load<const N: usize>(header: *mut u8, offset: usize) -> [u8; N]
where
    [u8; N]: PacketBytes,
{
    // SAFETY: the caller's guarantee.
    unsafe { PacketBytes::load(header.add(offset)) }
}

/// Writes `bytes` at `offset` from a checked header pointer.
///
/// # Safety
/// As for `load`.
#[inline(always)]
pub(super) unsafe fn store<const N: usize>(header: *mut u8, offset: usize, bytes: [u8; N])
where
    [u8; N]: PacketBytes,
{
    // SAFETY: the caller's guarantee.
    unsafe { bytes.store(header.add(offset)) }
}

/// A TCP or UDP checksum after `old` became `new` (a zero UDP checksum stays zero).
#[inline(always)]
pub(super) fn l4_replace<const N: usize>(
    is_tcp: bool,
    check: u16,
    old: &[u8; N],
    new: &[u8; N],
) -> u16 {
    if is_tcp {
        csum::replace(check, old, new)
    } else {
        csum::replace_udp(check, old, new)
    }
}

/// Replaces one end's address and port (both ends' under source NAT), with
/// the checksums. Both headers are checked before the first write, so
/// `false` leaves the frame unchanged. A subprogram of its own, beside
/// `forward` rather than above it: the 512-byte stack limit counts the
/// deepest chain of frames.
#[inline(never)]
pub fn translate(ctx: &XdpContext, flow: &Flow, nat: &Nat) -> bool {
    let frame = &ctx.frame();
    let source = nat.end == End::Source;
    if nat.addresses_only {
        return translate_addresses(frame, flow, nat, source).is_some();
    }
    if rewrite_end(frame, flow, source, &nat.addr, nat.port_be).is_none() {
        return false;
    }
    !nat.snat || rewrite_end(frame, flow, !source, &nat.peer_addr, nat.peer_port_be).is_some()
}

#[inline(always)]
fn rewrite_end(frame: &Frame, flow: &Flow, source: bool, addr: &Addr, port_be: u16) -> Option<()> {
    let (l4_len, l4_csum_at) = if flow.is_tcp {
        (TCP_HLEN, TCP_CSUM)
    } else {
        (UDP_HLEN, UDP_CSUM)
    };
    let port_at = if source { SRC_PORT } else { DST_PORT };
    let new_port = port_be.to_ne_bytes();
    if flow.is_v4 {
        let ip = frame
            .get_mut::<[u8; IP4_HLEN]>(flow.l3_offset)?
            .cast::<u8>();
        let l4 = l4_header(frame, flow.l4_offset, l4_len)?;
        let addr_at = if source { IP4_SRC } else { IP4_DST };
        let new = [addr[12], addr[13], addr[14], addr[15]];
        // SAFETY: offsets within the checked IPv4 and transport headers.
        unsafe {
            let old = load::<4>(ip, addr_at);
            let old_port = load::<2>(l4, port_at);
            let ip_csum = csum::replace(u16::from_be_bytes(load(ip, IP4_CSUM)), &old, &new);
            let mut l4_csum = u16::from_be_bytes(load(l4, l4_csum_at));
            l4_csum = l4_replace(flow.is_tcp, l4_csum, &old, &new);
            l4_csum = l4_replace(flow.is_tcp, l4_csum, &old_port, &new_port);
            store(ip, addr_at, new);
            store(ip, IP4_CSUM, ip_csum.to_be_bytes());
            store(l4, port_at, new_port);
            store(l4, l4_csum_at, l4_csum.to_be_bytes());
        }
    } else {
        let ip = frame
            .get_mut::<[u8; IP6_HLEN]>(flow.l3_offset)?
            .cast::<u8>();
        let l4 = l4_header(frame, flow.l4_offset, l4_len)?;
        let addr_at = if source { IP6_SRC } else { IP6_DST };
        // SAFETY: offsets within the checked IPv6 and transport headers.
        unsafe {
            let old = load::<16>(ip, addr_at);
            let old_port = load::<2>(l4, port_at);
            let mut l4_csum = u16::from_be_bytes(load(l4, l4_csum_at));
            l4_csum = l4_replace(flow.is_tcp, l4_csum, &old, addr);
            l4_csum = l4_replace(flow.is_tcp, l4_csum, &old_port, &new_port);
            store(ip, addr_at, *addr);
            store(l4, port_at, new_port);
            store(l4, l4_csum_at, l4_csum.to_be_bytes());
        }
    }
    Some(())
}

/// `translate` for a later fragment: the IP header's addresses only, as it
/// carries no transport header (the first fragment's carried the whole
/// datagram's checksum, updated for these same addresses).
#[inline(always)]
fn translate_addresses(frame: &Frame, flow: &Flow, nat: &Nat, source: bool) -> Option<()> {
    rewrite_address(frame, flow, source, &nat.addr)?;
    if nat.snat {
        rewrite_address(frame, flow, !source, &nat.peer_addr)?;
    }
    Some(())
}

/// Replaces one end's address in the IP header (and the IPv4 header
/// checksum).
#[inline(always)]
fn rewrite_address(frame: &Frame, flow: &Flow, source: bool, addr: &Addr) -> Option<()> {
    if flow.is_v4 {
        let ip = frame
            .get_mut::<[u8; IP4_HLEN]>(flow.l3_offset)?
            .cast::<u8>();
        let addr_at = if source { IP4_SRC } else { IP4_DST };
        let new = [addr[12], addr[13], addr[14], addr[15]];
        // SAFETY: offsets within the checked IPv4 header.
        unsafe {
            let old = load::<4>(ip, addr_at);
            let ip_csum = csum::replace(u16::from_be_bytes(load(ip, IP4_CSUM)), &old, &new);
            store(ip, addr_at, new);
            store(ip, IP4_CSUM, ip_csum.to_be_bytes());
        }
    } else {
        let ip = frame
            .get_mut::<[u8; IP6_HLEN]>(flow.l3_offset)?
            .cast::<u8>();
        let addr_at = if source { IP6_SRC } else { IP6_DST };
        // SAFETY: offset within the checked IPv6 header.
        unsafe { store(ip, addr_at, *addr) };
    }
    Some(())
}

#[inline(always)]
fn l4_header(frame: &Frame, offset: usize, len: usize) -> Option<*mut u8> {
    if len == TCP_HLEN {
        frame
            .get_mut::<[u8; TCP_HLEN]>(offset)
            .map(<*mut [u8; TCP_HLEN]>::cast)
    } else {
        frame
            .get_mut::<[u8; UDP_HLEN]>(offset)
            .map(<*mut [u8; UDP_HLEN]>::cast)
    }
}

/// Decrements the IPv4 TTL (updating the header checksum) or the IPv6 hop
/// limit, as a router does when it forwards. The core has already passed
/// packets whose TTL would expire.
#[inline(always)]
pub fn decrement_ttl(frame: &Frame, l3: usize, is_v4: bool) -> Option<()> {
    if is_v4 {
        let ip = frame.get_mut::<[u8; IP4_HLEN]>(l3)?.cast::<u8>();
        // SAFETY: offsets within the checked IPv4 header.
        unsafe {
            // TTL shares a 16-bit word with the protocol number.
            let old = load::<2>(ip, IP4_TTL);
            let new = [old[0].wrapping_sub(1), old[1]];
            let ip_csum = csum::replace(u16::from_be_bytes(load(ip, IP4_CSUM)), &old, &new);
            store(ip, IP4_TTL, new);
            store(ip, IP4_CSUM, ip_csum.to_be_bytes());
        }
    } else {
        let ip = frame.get_mut::<[u8; IP6_HLEN]>(l3)?.cast::<u8>();
        // SAFETY: offset within the checked IPv6 header.
        unsafe {
            let hop_limit = load::<1>(ip, IP6_HOP_LIMIT)[0];
            store(ip, IP6_HOP_LIMIT, [hop_limit.wrapping_sub(1)]);
        }
    }
    Some(())
}
