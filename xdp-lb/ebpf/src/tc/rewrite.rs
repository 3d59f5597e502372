//! NAT rewrites of a socket buffer: bytes through `bpf_skb_store_bytes`,
//! checksums through `bpf_l3_csum_replace` and `bpf_l4_csum_replace`. An
//! address is part of the transport checksum's pseudo-header
//! (`BPF_F_PSEUDO_HDR`): with a partial checksum the helper updates the
//! pseudo-header sum the field holds, and a port change, which the device or
//! the kernel will sum itself, leaves the field alone. A zero UDP checksum
//! over IPv4 ("none") stays zero (`BPF_F_MARK_MANGLED_0`).

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use xdp_lb_common::addr::Addr;

use crate::{
    lb::{
        End, Nat,
        flow::{Flow, MAX_L3_OFFSET, MAX_L4_OFFSET},
    },
    wire::{DST_PORT, IP4_CSUM, IP4_DST, IP4_SRC, IP6_DST, IP6_SRC, SRC_PORT, TCP_CSUM, UDP_CSUM},
};

/// Replaces one end's address and port (both ends' under source NAT). False
/// when a helper refused; the packet may then be partly rewritten, which
/// only happens for a header outside the packet, which the parser rules out.
/// A subprogram of its own, like `xdp::rewrite::translate`.
#[inline(never)]
pub fn translate(ctx: &TcContext, flow: &Flow, nat: &Nat) -> bool {
    let source = nat.end == End::Source;
    if nat.addresses_only {
        return translate_addresses(ctx, flow, nat, source).is_some();
    }
    if rewrite_end(ctx, flow, source, &nat.addr, nat.port_be).is_none() {
        return false;
    }
    !nat.snat || rewrite_end(ctx, flow, !source, &nat.peer_addr, nat.peer_port_be).is_some()
}

#[inline(always)]
fn rewrite_end(
    ctx: &TcContext,
    flow: &Flow,
    source: bool,
    addr: &Addr,
    port_be: u16,
) -> Option<()> {
    let (l3, l4) = (flow.l3_offset, flow.l4_offset);
    if l3 > MAX_L3_OFFSET || l4 > MAX_L4_OFFSET {
        return None;
    }
    let skb = &ctx.skb;
    let csum_at = l4 + if flow.is_tcp { TCP_CSUM } else { UDP_CSUM };
    let udp = if flow.is_tcp {
        0
    } else {
        u64::from(BPF_F_MARK_MANGLED_0)
    };
    let pseudo = u64::from(BPF_F_PSEUDO_HDR);
    if flow.is_v4 {
        let addr_at = l3 + if source { IP4_SRC } else { IP4_DST };
        let old = u64::from(skb.load::<u32>(addr_at).ok()?);
        let new = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        skb.l4_csum_replace(csum_at, old, u64::from(new), pseudo | udp | 4)
            .ok()?;
        skb.l3_csum_replace(l3 + IP4_CSUM, old, u64::from(new), 4)
            .ok()?;
        skb.store(addr_at, &new, 0).ok()?;
    } else {
        let addr_at = l3 + if source { IP6_SRC } else { IP6_DST };
        let mut old = skb.load::<[u32; 4]>(addr_at).ok()?;
        let mut new = [
            u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
            u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
            u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
            u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
        ];
        // SAFETY: two 16-byte buffers on this stack frame.
        let diff = unsafe { bpf_csum_diff(old.as_mut_ptr(), 16, new.as_mut_ptr(), 16, 0) };
        if diff < 0 {
            return None;
        }
        // A size of 0: `to` is a checksum difference to fold in.
        skb.l4_csum_replace(csum_at, 0, diff as u64, pseudo | udp)
            .ok()?;
        skb.store(addr_at, &new, 0).ok()?;
    }
    let port_at = l4 + if source { SRC_PORT } else { DST_PORT };
    let old_port = skb.load::<u16>(port_at).ok()?;
    skb.l4_csum_replace(csum_at, u64::from(old_port), u64::from(port_be), udp | 2)
        .ok()?;
    skb.store(port_at, &port_be, 0).ok()?;
    Some(())
}

/// `translate` for a later fragment: the IP header's addresses only, as it
/// carries no transport header (the first fragment's carried the whole
/// datagram's checksum, updated for these same addresses).
#[inline(always)]
fn translate_addresses(ctx: &TcContext, flow: &Flow, nat: &Nat, source: bool) -> Option<()> {
    rewrite_address(ctx, flow, source, &nat.addr)?;
    if nat.snat {
        rewrite_address(ctx, flow, !source, &nat.peer_addr)?;
    }
    Some(())
}

/// Replaces one end's address in the IP header (and the IPv4 header
/// checksum).
#[inline(always)]
fn rewrite_address(ctx: &TcContext, flow: &Flow, source: bool, addr: &Addr) -> Option<()> {
    let l3 = flow.l3_offset;
    if l3 > MAX_L3_OFFSET {
        return None;
    }
    let skb = &ctx.skb;
    if flow.is_v4 {
        let addr_at = l3 + if source { IP4_SRC } else { IP4_DST };
        let old = u64::from(skb.load::<u32>(addr_at).ok()?);
        let new = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
        skb.l3_csum_replace(l3 + IP4_CSUM, old, u64::from(new), 4)
            .ok()?;
        skb.store(addr_at, &new, 0).ok()?;
    } else {
        let addr_at = l3 + if source { IP6_SRC } else { IP6_DST };
        skb.store(addr_at, addr, 0).ok()?;
    }
    Some(())
}
