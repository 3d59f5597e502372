//! Applying `lb::icmp`'s answer: an ICMP or ICMPv6 error about a tracked flow
//! is translated — the outer address that named the frontend or backend, the
//! quoted header's address and port, and every checksum they are under — and
//! forwarded like the flow's own packets; one about a direct-server-return
//! flow is wrapped unchanged and sent to its backend.
//!
//! Checksums, all incremental (`xdp_lb_common::csum`):
//! - the quoted IPv4 header's checksum, and the quoted TCP or UDP checksum
//!   when the quote reaches it (a quote is usually cut short, so it cannot be
//!   verified, but the client compares it after undoing its own state);
//! - the ICMP checksum, over every quoted byte that changed (the checksums
//!   above included); ICMPv6's also covers the outer addresses;
//! - the outer IPv4 header's checksum.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    programs::XdpContext,
};
use xdp_lb_common::{addr::Addr, csum, stats::Verdict};

use crate::{
    lb::{
        End, Nat,
        icmp::{ErrorDecision, IcmpError, error_slot, judge, nat_slot},
    },
    maps::{count_backend, count_service, count_verdict},
    packet::{Frame, FrameSource},
    parse::Parsed,
    wire::{
        DST_PORT, ICMP_CSUM, IP4_CSUM, IP4_DST, IP4_HLEN, IP4_SRC, IP6_DST, IP6_HLEN, IP6_SRC,
        SRC_PORT, TCP_CSUM, UDP_CSUM,
    },
    xdp::{
        encap,
        forward::{TOO_BIG, Wrap, forward},
        rewrite::{l4_replace, load, store},
    },
};

/// `run`'s answer for a frame that is not an error about a tracked flow.
pub const NOT_HANDLED: u32 = u32::MAX;
/// `run`'s answer for an error about a direct-server-return flow: the
/// caller sends it on with `wrap_and_send`, a call of its own rather than
/// more frames under `run` (the 512-byte stack limit counts the deepest
/// chain, and no frame of the caller's may grow for it).
pub const ENCAPSULATE: u32 = u32::MAX - 1;

/// Translates and forwards an ICMP error about a tracked flow, counting its
/// verdict, and returns the XDP action; `NOT_HANDLED` when the frame is not
/// one (nothing counted, nothing changed); `ENCAPSULATE` (nothing counted,
/// nothing changed) for one about a direct-server-return flow.
#[inline(never)]
pub fn run(ctx: &XdpContext, parsed: &Parsed) -> u32 {
    let Some((err, nat, decision)) = judge(ctx, parsed) else {
        return NOT_HANDLED;
    };
    let len = ctx.frame().len();
    match decision {
        ErrorDecision::NotTracked => NOT_HANDLED,
        ErrorDecision::TtlExpired => {
            count_verdict(Verdict::PassTtlExpired, len);
            XDP_PASS
        }
        ErrorDecision::Translate => {
            // SAFETY: `decide_error` initialises `nat` when it answers Translate.
            let nat = unsafe { nat.assume_init_ref() };
            let (verdict, action) = translate_and_forward(ctx, err, nat);
            count_verdict(verdict, len);
            action
        }
        ErrorDecision::Encapsulate => ENCAPSULATE,
    }
}

/// After `run` answered `ENCAPSULATE`: the error, unchanged inside an outer
/// header to the flow's backend, as the flow's packets go. Counts the
/// verdict and returns the XDP action.
#[inline(never)]
pub fn wrap_and_send(ctx: &XdpContext) -> u32 {
    let len = ctx.frame().len();
    let (Some(err), Some(nat)) = (error_slot(), nat_slot()) else {
        return XDP_DROP;
    };
    // SAFETY: `run` filled both for this frame (`read_error`, then
    // `decide_error` answering Encapsulate) before answering ENCAPSULATE,
    // and nothing else ran on this CPU since.
    let (err, nat) = unsafe { (err.assume_init_ref(), nat.assume_init_ref()) };
    let (verdict, action) = encapsulate(ctx, err, nat);
    count_verdict(verdict, len);
    action
}

#[inline(always)]
fn encapsulate(ctx: &XdpContext, err: &IcmpError, nat: &Nat) -> (Verdict, u32) {
    let len = ctx.frame().len();
    count_service(nat.service_id, len);
    count_backend(nat.backend_id, len);
    let mut outcome = encap::Outcome::default();
    match encap::wrap_and_send(ctx, &err.outer, nat, &mut outcome) {
        // An error is small, but when even it does not fit once wrapped,
        // there is no one to tell: the LB sent nothing it could answer about.
        TOO_BIG => (Verdict::DropTooBig, XDP_DROP),
        action => match outcome.verdict {
            Verdict::ForwardEncapsulated => (Verdict::ForwardIcmpErrorToBackend, action),
            verdict => (verdict, action),
        },
    }
}

#[inline(always)]
fn translate_and_forward(ctx: &XdpContext, err: &IcmpError, nat: &Nat) -> (Verdict, u32) {
    let len = ctx.frame().len();
    count_service(nat.service_id, len);
    count_backend(nat.backend_id, len);
    if rewrite(&ctx.frame(), err, nat).is_none() {
        // Unreachable after `read_error`; the frame is unchanged.
        return (Verdict::PassMalformed, XDP_PASS);
    }
    // As in `xdp::apply`: a tagged frame is left to the kernel.
    if err.outer.has_vlan {
        return (Verdict::PassIcmpErrorViaStack, XDP_PASS);
    }
    let sent = match nat.end {
        End::Destination => Verdict::ForwardIcmpErrorToBackend,
        End::Source => Verdict::ForwardIcmpErrorToClient,
    };
    // An error is small: it fits any MTU a path to the backend may have.
    let mut mtu = 0;
    match forward(ctx, &err.outer, nat, Wrap::None, &mut mtu) {
        XDP_PASS | TOO_BIG => (Verdict::PassIcmpErrorViaStack, XDP_PASS),
        action => (sent, action),
    }
}

/// Rewrites the error in place. Every header is checked before the first
/// write, so `None` leaves the frame unchanged (the second pass of a
/// source-NATed flow checks the same headers again).
///
/// Going to the backend (`End::Destination`), the quoted reply's source
/// (the frontend) becomes the backend, and so does the outer destination.
/// Going to the client (`End::Source`), the quoted request's destination
/// (the backend) becomes the frontend, and so does the outer source when it
/// was the backend itself (a router's address is left as it is).
///
/// Under source NAT a second pass translates the quoted packet's other end,
/// the peer: going to the backend, the client becomes the source-NAT
/// address and port; going to the client, those become the client again,
/// and so does the outer destination.
///
/// The pod interfaces' TC programs use it too (`tc::icmp`).
#[inline(always)]
pub(crate) fn rewrite(frame: &Frame, err: &IcmpError, nat: &Nat) -> Option<()> {
    let one_end = |peer| {
        if err.outer.is_v4 {
            rewrite_v4(frame, err, nat, peer)
        } else {
            rewrite_v6(frame, err, nat, peer)
        }
    };
    one_end(false)?;
    if nat.snat { one_end(true) } else { Some(()) }
}

/// Which fields one pass of `rewrite` writes (`peer`: the second pass, of a
/// source-NATed flow's other end).
struct Pass {
    /// The quoted source (else the destination) is the end rewritten.
    quoted_src: bool,
    outer: Outer,
}

/// The outer address a pass of `rewrite` may write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outer {
    /// The destination, whatever it was: the error goes to the new address.
    Destination,
    /// The source, when it is the quoted address rewritten: the backend's
    /// own error must not show the backend (a router's keeps its address).
    SourceIfSame,
    /// Neither.
    Untouched,
}

impl Pass {
    /// Going to the backend, the first pass writes the quoted source (the
    /// frontend becomes the backend) and the outer destination, the second
    /// the quoted destination (the client becomes the source-NAT address).
    /// Going to the client, the first writes the quoted destination (the
    /// backend becomes the frontend) and maybe the outer source, the second
    /// the quoted source and the outer destination (both become the client).
    #[inline(always)]
    fn of(nat: &Nat, peer: bool) -> Self {
        let quoted_src = (nat.end == End::Destination) != peer;
        let outer = if quoted_src {
            Outer::Destination
        } else if peer {
            Outer::Untouched
        } else {
            Outer::SourceIfSame
        };
        Self { quoted_src, outer }
    }

    /// The address and port this pass writes.
    #[inline(always)]
    fn target(nat: &Nat, peer: bool) -> (&Addr, u16) {
        if peer {
            (&nat.peer_addr, nat.peer_port_be)
        } else {
            (&nat.addr, nat.port_be)
        }
    }

    /// Where this pass writes: the quoted address and port, and the outer
    /// address, for a family whose source and destination addresses lie at
    /// `(src, dst)` of its header.
    #[inline(always)]
    fn offsets(&self, (src, dst): (usize, usize)) -> (usize, usize, usize) {
        let (addr_at, port_at) = if self.quoted_src {
            (src, SRC_PORT)
        } else {
            (dst, DST_PORT)
        };
        let outer_at = if self.outer == Outer::SourceIfSame {
            src
        } else {
            dst
        };
        (addr_at, port_at, outer_at)
    }
}

/// The parts of a translation both families share: the quoted port, the
/// quoted transport checksum, and the ICMP checksum so far.
struct Quote {
    icmp: *mut u8,
    l4: *mut u8,
    /// Null when the quote stops before it: a plain pointer rather than an
    /// `Option`, whose undefined payload LLVM may spill for the verifier to
    /// reject.
    l4_csum: *mut u8,
    port_at: usize,
    old_port: [u8; 2],
    new_port: [u8; 2],
    /// The ICMP checksum with every change so far.
    icmp_csum: u16,
}

impl Quote {
    /// The quote's headers, for a pass that writes `new_port_be` at
    /// `port_at` of the quoted transport header.
    #[inline(always)]
    fn read(frame: &Frame, err: &IcmpError, port_at: usize, new_port_be: u16) -> Option<Self> {
        let icmp = frame.get_mut::<[u8; 4]>(err.outer.l4_offset)?.cast::<u8>();
        let l4 = frame.get_mut::<[u8; 4]>(err.inner_l4)?.cast::<u8>();
        let csum_at = err.inner_l4 + if err.inner_is_tcp { TCP_CSUM } else { UDP_CSUM };
        let l4_csum = if err.inner_has_csum {
            frame.get_mut::<[u8; 2]>(csum_at)?.cast::<u8>()
        } else {
            core::ptr::null_mut()
        };
        let new_port = new_port_be.to_ne_bytes();
        // SAFETY: offsets within the headers `get_mut` checked.
        let (old_port, icmp_csum) = unsafe { (load::<2>(l4, port_at), load::<2>(icmp, ICMP_CSUM)) };
        Some(Self {
            icmp,
            l4,
            l4_csum,
            port_at,
            old_port,
            new_port,
            icmp_csum: csum::replace(u16::from_be_bytes(icmp_csum), &old_port, &new_port),
        })
    }

    /// Adds the change of `old` to `new` to the ICMP checksum.
    #[inline(always)]
    fn changed<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        self.icmp_csum = csum::replace(self.icmp_csum, old, new);
    }

    /// Writes the port, and the quoted transport checksum after the address
    /// went from `old` to `new`.
    #[inline(always)]
    fn write_port_and_l4<const N: usize>(&mut self, is_tcp: bool, old: &[u8; N], new: &[u8; N]) {
        // SAFETY: offsets within the headers `read` checked.
        unsafe {
            if !self.l4_csum.is_null() {
                let before = load::<2>(self.l4_csum, 0);
                let after = l4_replace(is_tcp, u16::from_be_bytes(before), old, new);
                let after = l4_replace(is_tcp, after, &self.old_port, &self.new_port).to_be_bytes();
                self.changed(&before, &after);
                store(self.l4_csum, 0, after);
            }
            store(self.l4, self.port_at, self.new_port);
        }
    }

    /// Writes the ICMP checksum.
    #[inline(always)]
    fn finish(&self) {
        // SAFETY: within the ICMP header `read` checked.
        unsafe { store(self.icmp, ICMP_CSUM, self.icmp_csum.to_be_bytes()) };
    }
}

/// One pass of `rewrite` for IPv4. Its own subprogram, like `rewrite_v6`:
/// the two families' temporaries never share a frame.
#[inline(never)]
fn rewrite_v4(frame: &Frame, err: &IcmpError, nat: &Nat, peer: bool) -> Option<()> {
    let pass = Pass::of(nat, peer);
    let (to, port_be) = Pass::target(nat, peer);
    let (addr_at, port_at, outer_at) = pass.offsets((IP4_SRC, IP4_DST));
    let mut quote = Quote::read(frame, err, port_at, port_be)?;
    let outer = frame
        .get_mut::<[u8; IP4_HLEN]>(err.outer.l3_offset)?
        .cast::<u8>();
    let quoted = frame.get_mut::<[u8; IP4_HLEN]>(err.inner_l3)?.cast::<u8>();
    let new = [to[12], to[13], to[14], to[15]];
    // SAFETY: offsets within the IPv4 headers `get_mut` checked.
    unsafe {
        let old = load::<4>(quoted, addr_at);
        quote.changed(&old, &new);
        let old_ip_csum = load::<2>(quoted, IP4_CSUM);
        let ip_csum = csum::replace(u16::from_be_bytes(old_ip_csum), &old, &new).to_be_bytes();
        quote.changed(&old_ip_csum, &ip_csum);
        quote.write_port_and_l4(err.inner_is_tcp, &old, &new);
        store(quoted, addr_at, new);
        store(quoted, IP4_CSUM, ip_csum);
        // ICMPv4's checksum does not cover the outer header.
        let old_outer = load::<4>(outer, outer_at);
        if pass.outer == Outer::Destination
            || (pass.outer == Outer::SourceIfSame && old_outer == old)
        {
            let outer_csum = u16::from_be_bytes(load(outer, IP4_CSUM));
            store(outer, outer_at, new);
            store(
                outer,
                IP4_CSUM,
                csum::replace(outer_csum, &old_outer, &new).to_be_bytes(),
            );
        }
    }
    quote.finish();
    Some(())
}

/// One pass of `rewrite` for IPv6: no header checksum, but ICMPv6's covers
/// the outer addresses (its pseudo-header). The old addresses are read in
/// place rather than copied: 16-byte copies would not fit the frame this
/// path may have.
#[inline(never)]
fn rewrite_v6(frame: &Frame, err: &IcmpError, nat: &Nat, peer: bool) -> Option<()> {
    let pass = Pass::of(nat, peer);
    let (to, port_be) = Pass::target(nat, peer);
    let (addr_at, port_at, outer_at) = pass.offsets((IP6_SRC, IP6_DST));
    let mut quote = Quote::read(frame, err, port_at, port_be)?;
    let outer = frame
        .get_mut::<[u8; IP6_HLEN]>(err.outer.l3_offset)?
        .cast::<u8>();
    let quoted = frame.get_mut::<[u8; IP6_HLEN]>(err.inner_l3)?.cast::<u8>();
    // SAFETY: offsets within the IPv6 headers `get_mut` checked; the
    // references are dropped before the stores.
    unsafe {
        let old = &*quoted.add(addr_at).cast::<[u8; 16]>();
        let old_outer = &*outer.add(outer_at).cast::<[u8; 16]>();
        let outer_too = pass.outer == Outer::Destination
            || (pass.outer == Outer::SourceIfSame && same_address(old_outer, old));
        quote.changed(old, to);
        if outer_too {
            quote.changed(old_outer, to);
        }
        quote.write_port_and_l4(err.inner_is_tcp, old, to);
        store(quoted, addr_at, *to);
        if outer_too {
            store(outer, outer_at, *to);
        }
    }
    quote.finish();
    Some(())
}

/// Two IPv6 addresses are equal, compared in two 8-byte words (a slice
/// comparison may become a `bcmp` call).
#[inline(always)]
fn same_address(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let words = |x: &[u8; 16]| {
        let p = x.as_ptr().cast::<u64>();
        // SAFETY: both words lie within the 16 bytes.
        unsafe { (p.read_unaligned(), p.add(1).read_unaligned()) }
    };
    words(a) == words(b)
}
