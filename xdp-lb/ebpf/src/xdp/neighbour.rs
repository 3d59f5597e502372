//! L2 announcements, as MetalLB and Cilium make them: `xdp_lb` itself answers
//! the ARP requests and IPv6 neighbour solicitations for the addresses in
//! `L2_ANNOUNCE` that arrive on the interface each one is announced on, so
//! that a VIP which no interface of the host holds is still reachable on its
//! link. The answer is the request, rewritten in place and sent back out of
//! the interface it came in on (XDP_TX):
//!
//! - ARP (RFC 826): the request becomes the reply from the announced MAC;
//!   an 802.1Q tag, if there is one, stays where it is.
//! - Neighbour discovery (RFC 4861, 7.2.4): the solicitation becomes a
//!   neighbour advertisement from the target address, with the Solicited and
//!   Override flags and a Target link-layer address option. The frame's tail
//!   moves so that the frame is exactly the advertisement (a solicitation
//!   without a Source link-layer address option is 8 bytes shorter than it,
//!   one with more options longer). A solicitation from the unspecified
//!   address (duplicate address detection) is answered to all nodes,
//!   without the Solicited flag.
//!
//! Everything else is left byte for byte as it came: gratuitous ARP (the
//! sender announcing its own address, RFC 5227), ARP replies, requests for
//! other addresses or arriving on another interface, solicitations that
//! RFC 4861 (7.1.1) calls invalid, and frames sent to another host's MAC
//! (seen only in promiscuous mode; the kernel ignores those as well).
//!
//! `xdp_lb` asks `question` first, before the parser, and hands the few
//! frames that may be asking to the answers; each answer is a subprogram of
//! its own, so that its frame is never on the stack together with
//! `Packet::fill`'s.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use xdp_lb_common::{addr::v4_mapped, csum, neighbour::L2Announcement, service::AddressKey};

use crate::{
    lb::flow::MAX_L3_OFFSET,
    maps::{L2_ANNOUNCE, forget_ranges},
    packet::{Frame, FrameSource},
    wire::{
        ARP_LEN, ARP_OP, ARP_OP_REPLY, ARP_REQUEST_ETH_IP4, ARP_SHA, ARP_SPA, ARP_THA, ARP_TPA,
        ETH_ALEN, ETH_DST, ETH_GROUP_BIT, ETH_HLEN, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV6, ETH_SRC,
        ETH_TYPE, ETH_TYPE_TAGGED, ICMPV6_NEIGHBOUR_ADVERT, ICMPV6_NEIGHBOUR_SOLICIT, IP6_DST,
        IP6_HLEN, IP6_HOP_LIMIT, IP6_NEXT_HEADER, IP6_PAYLOAD_LEN, IP6_SRC, IPPROTO_ICMPV6,
        ND_ADVERT_OVERRIDE, ND_ADVERT_SOLICITED, ND_FLAGS, ND_HOP_LIMIT, ND_LEN,
        ND_OPT_SOURCE_LL_ADDR, ND_OPT_TARGET_LL_ADDR, ND_OPT_UNIT, ND_TARGET, ip6_head,
    },
};

/// Both MACs of the Ethernet header.
const MACS: usize = 2 * ETH_ALEN;
/// The longest solicitation answered (its ICMPv6 length): the fixed part
/// and five option units — a Source link-layer address, a nonce (RFC 3971,
/// 7527) and room for more. The checksum and the option walk cover it in
/// bounded loops, whose verifier cost grows with it (measured: 13 000
/// processed instructions more at 128 bytes); a longer solicitation (a
/// SEcure Neighbor Discovery one, RFC 3971) is passed to the kernel.
const MAX_SOLICITATION: usize = 64;
/// The advertisement: its fixed part and a Target link-layer address option.
const ADVERT_LEN: usize = ND_LEN + ND_OPT_UNIT;
// The payload length fits the one byte it is written with.
const _: () = assert!(ADVERT_LEN < 256 && MAX_SOLICITATION < 256);
/// The all-nodes multicast address ff02::1 (RFC 4291, 2.7.1) and its MAC
/// (RFC 2464, 7: 33:33 and the address's last 32 bits).
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const ALL_NODES_MAC: [u8; ETH_ALEN] = [0x33, 0x33, 0, 0, 0, 1];

/// `question`'s answers: nothing to answer here, or a frame to hand to
/// `arp_reply` or `neighbour_advert`, tagged or not.
pub const NO_QUESTION: u8 = 0;
pub const ARP: u8 = 1;
pub const NEIGHBOUR_DISCOVERY: u8 = 2;
pub const TAGGED: u8 = 4;

/// What the frame might ask for: `ARP`, or an ICMPv6 message with hop limit
/// 255 and no extension headers (as neighbour discovery is sent), with
/// `TAGGED` behind one 802.1Q tag (as the parser takes them); else
/// `NO_QUESTION`.
///
/// Read before the parser, and `xdp_lb` calls the answers before it:
/// after it, the verifier would walk the answers once for each of the
/// parser's many exit states (measured: 290 000 more processed
/// instructions). The few reads here keep every other frame from a call.
#[inline(always)]
pub fn question(frame: &Frame) -> u8 {
    // Early returns and no `Option` with a payload across the branches: LLVM
    // would compute with the undefined payload of `None` (see the README).
    let Some(outer) = frame.load::<2>(ETH_TYPE) else {
        return NO_QUESTION;
    };
    let mut tagged = 0;
    let mut ethertype = u16::from_be_bytes(outer);
    if ethertype == ETH_P_8021Q {
        let Some(inner) = frame.load::<2>(ETH_TYPE_TAGGED) else {
            return NO_QUESTION;
        };
        ethertype = u16::from_be_bytes(inner);
        tagged = TAGGED;
    }
    if ethertype == ETH_P_ARP {
        return ARP | tagged;
    }
    if ethertype != ETH_P_IPV6 {
        return NO_QUESTION;
    }
    let Some(fields) = frame.load::<2>(l3_offset(tagged) + IP6_NEXT_HEADER) else {
        return NO_QUESTION;
    };
    // Next header and hop limit.
    if u16::from_ne_bytes(fields) == u16::from_ne_bytes([IPPROTO_ICMPV6, ND_HOP_LIMIT]) {
        NEIGHBOUR_DISCOVERY | tagged
    } else {
        NO_QUESTION
    }
}

/// The `M` bytes of `from` at `at`, as an array of their own (`at` is a
/// constant at every call, so the bounds are checked at compile time).
#[inline(always)]
fn bytes_at<const N: usize, const M: usize>(from: &[u8; N], at: usize) -> [u8; M] {
    let mut out = [0; M];
    out.copy_from_slice(&from[at..at + M]);
    out
}

/// The network header's offset: behind the Ethernet header, and a tag.
#[inline(always)]
const fn l3_offset(tagged: u8) -> usize {
    if tagged != 0 { MAX_L3_OFFSET } else { ETH_HLEN }
}

/// The interface the frame came in on.
#[inline(always)]
fn ingress_ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx` is the program's `xdp_md`, valid while it runs.
    unsafe { core::ptr::read_volatile(&raw const (*ctx.ctx).ingress_ifindex) }
}

/// The first six bytes of `bytes` from `at` as one number, for comparing MACs
/// without a byte loop (every branch is a path the verifier walks).
#[inline(always)]
const fn mac_word<const N: usize>(m: &[u8; N], at: usize) -> u64 {
    u64::from_ne_bytes([
        m[at],
        m[at + 1],
        m[at + 2],
        m[at + 3],
        m[at + 4],
        m[at + 5],
        0,
        0,
    ])
}

/// The announcement of `key` if it is announced on the interface the frame
/// came in on, and the frame (whose MACs are `eth`) is for it: sent to a
/// group address (broadcast, or a solicited-node multicast one) or to the
/// announced MAC itself.
#[inline(always)]
fn announced(
    ctx: &XdpContext,
    key: &AddressKey,
    eth: &[u8; MACS],
) -> Option<*const L2Announcement> {
    let entry = L2_ANNOUNCE.get_ptr(key)?;
    // SAFETY: a map value of the right type; read field by field.
    let (ifindex, mac) = unsafe { ((*entry).ifindex, mac_word(&(*entry).mac, 0)) };
    let to_group = eth[ETH_DST] & ETH_GROUP_BIT != 0;
    (ifindex == ingress_ifindex(ctx) && (to_group || mac_word(eth, ETH_DST) == mac))
        .then_some(entry)
}

/// Turns an ARP request for an address announced on the ingress interface
/// into its reply: true when the frame is the reply (send it with XDP_TX),
/// false when it is unchanged.
#[inline(never)]
pub fn arp_reply(ctx: &XdpContext, tagged: u8) -> bool {
    let frame = ctx.frame();
    let (Some(eth), Some(arp)) = (
        frame.get_mut::<[u8; MACS]>(0),
        frame.get_mut::<[u8; ARP_LEN]>(l3_offset(tagged)),
    ) else {
        return false;
    };
    // SAFETY: `get_mut` checked that both lie in the frame; they do not overlap.
    let (eth, arp) = unsafe { (&mut *eth, &mut *arp) };
    let head = u64::from_ne_bytes([
        arp[0], arp[1], arp[2], arp[3], arp[4], arp[5], arp[6], arp[7],
    ]);
    if head != u64::from_ne_bytes(ARP_REQUEST_ETH_IP4) {
        return false;
    }
    let sender_mac: [u8; ETH_ALEN] = bytes_at(arp, ARP_SHA);
    let sender_ip: [u8; 4] = bytes_at(arp, ARP_SPA);
    let target_ip: [u8; 4] = bytes_at(arp, ARP_TPA);
    // Gratuitous ARP (the sender's own address) is an announcement, not a
    // question; a group sender MAC is no one to answer.
    if u32::from_ne_bytes(sender_ip) == u32::from_ne_bytes(target_ip)
        || sender_mac[0] & ETH_GROUP_BIT != 0
    {
        return false;
    }
    let key = AddressKey {
        addr: v4_mapped(target_ip),
    };
    let Some(entry) = announced(ctx, &key, eth) else {
        return false;
    };
    // SAFETY: as in `announced`.
    let mac = unsafe { (*entry).mac };
    eth[ETH_DST..ETH_DST + ETH_ALEN].copy_from_slice(&sender_mac);
    eth[ETH_SRC..ETH_SRC + ETH_ALEN].copy_from_slice(&mac);
    arp[ARP_OP..ARP_OP + 2].copy_from_slice(&ARP_OP_REPLY);
    arp[ARP_SHA..ARP_SHA + ETH_ALEN].copy_from_slice(&mac);
    arp[ARP_SPA..ARP_SPA + 4].copy_from_slice(&target_ip);
    arp[ARP_THA..ARP_THA + ETH_ALEN].copy_from_slice(&sender_mac);
    arp[ARP_TPA..ARP_TPA + 4].copy_from_slice(&sender_ip);
    true
}

/// Turns a valid neighbour solicitation (an ICMPv6 frame) for an address
/// announced on the ingress interface into the neighbour advertisement that
/// answers it: true when the frame is the advertisement (send it with
/// XDP_TX), false when it is unchanged.
#[inline(never)]
pub fn neighbour_advert(ctx: &XdpContext, tagged: u8) -> bool {
    let l3 = l3_offset(tagged);
    let frame = ctx.frame();
    let (Some(eth), Some(ns)) = (
        frame.get::<[u8; MACS]>(0),
        frame.get::<[u8; IP6_HLEN + ND_LEN]>(l3),
    ) else {
        return false;
    };
    // SAFETY: `get` checked that both lie in the frame.
    let (eth, ns) = unsafe { (&*eth, &*ns) };
    const ICMP: usize = IP6_HLEN;
    // RFC 4861, 7.1.1: hop limit 255 (the solicitation was not forwarded),
    // code 0; and no extension headers here (those are passed).
    let kind = u16::from_ne_bytes([ns[ICMP], ns[ICMP + 1]]);
    if ns[0] >> 4 != 6
        || ns[IP6_NEXT_HEADER] != IPPROTO_ICMPV6
        || ns[IP6_HOP_LIMIT] != ND_HOP_LIMIT
        || kind != u16::from_ne_bytes([ICMPV6_NEIGHBOUR_SOLICIT, 0])
    {
        return false;
    }
    // The ICMPv6 length is 24 or more, and options come in 8-byte units.
    let len = usize::from(u16::from_be_bytes([
        ns[IP6_PAYLOAD_LEN],
        ns[IP6_PAYLOAD_LEN + 1],
    ]));
    if !(ND_LEN..=MAX_SOLICITATION).contains(&len) || len % ND_OPT_UNIT != 0 {
        return false;
    }
    let t = ICMP + ND_TARGET;
    let key = AddressKey {
        addr: [
            ns[t],
            ns[t + 1],
            ns[t + 2],
            ns[t + 3],
            ns[t + 4],
            ns[t + 5],
            ns[t + 6],
            ns[t + 7],
            ns[t + 8],
            ns[t + 9],
            ns[t + 10],
            ns[t + 11],
            ns[t + 12],
            ns[t + 13],
            ns[t + 14],
            ns[t + 15],
        ],
    };
    // A multicast target is invalid; so is a group source MAC (the answer
    // goes to it).
    if key.addr[0] == 0xff || eth[ETH_SRC] & ETH_GROUP_BIT != 0 {
        return false;
    }
    let dad = is_unspecified(ns, IP6_SRC);
    // Duplicate address detection is sent to a solicited-node address.
    if dad && !is_solicited_node(ns, IP6_DST) {
        return false;
    }
    let Some(entry) = announced(ctx, &key, eth) else {
        return false;
    };
    // SAFETY: as in `announced`.
    let mac = unsafe { (*entry).mac };
    if !options_valid(ctx, tagged, len, dad) || !checksum_valid(ctx, tagged, len) {
        return false;
    }
    // The length as a plain number: computed from the packet pointers, LLVM
    // would fold the subtraction below into one the verifier rejects.
    let (before, _) = forget_ranges(frame.len(), 0);
    let delta = (l3 + IP6_HLEN + ADVERT_LEN) as i64 - before as i64;
    // SAFETY: the program's context; a positive delta grows the tail, a
    // negative one shrinks it. On failure the frame is unchanged.
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        return false;
    }
    // Cannot fail: the frame has exactly the advertisement's size now. Were
    // it to, the solicitation (its tail moved, its headers unchanged) would
    // go on to the kernel like any unanswered one.
    write_advert(ctx, tagged, u8::from(dad), &mac).is_some()
}

/// RFC 4861, 7.1.1: the options of the solicitation (ICMPv6 length `len`)
/// fill it exactly, each has a length above zero, and one from the
/// unspecified address (`dad`) carries no Source link-layer address.
///
/// A subprogram of its own, like `checksum_valid`: each walk's states end
/// at its return, and do not multiply with the other's or the caller's.
#[inline(never)]
fn options_valid(ctx: &XdpContext, tagged: u8, len: usize, dad: bool) -> bool {
    let icmp = l3_offset(tagged) + IP6_HLEN;
    let frame = ctx.frame();
    let mut at = ND_LEN;
    for _ in 0..(MAX_SOLICITATION - ND_LEN) / ND_OPT_UNIT {
        if at >= len || at > MAX_SOLICITATION {
            break;
        }
        // Type and length.
        let Some(option) = frame.load::<2>(icmp + at) else {
            return false;
        };
        if option[1] == 0 || (dad && option[0] == ND_OPT_SOURCE_LL_ADDR) {
            return false;
        }
        at += usize::from(option[1]) * ND_OPT_UNIT;
    }
    at == len
}

/// The solicitation's ICMPv6 checksum (length `len`, a multiple of 8) is
/// right: the sum over the pseudo-header (RFC 8200, 8.1) and the message,
/// in 8-byte units.
#[inline(never)]
fn checksum_valid(ctx: &XdpContext, tagged: u8, len: usize) -> bool {
    let l3 = l3_offset(tagged);
    let frame = ctx.frame();
    let Some(addresses) = frame.get::<[u8; 32]>(l3 + IP6_SRC) else {
        return false;
    };
    // SAFETY: `get` checked that the addresses lie in the frame.
    let addresses = unsafe { &*addresses };
    let pseudo = [0, 0, 0, len as u8, 0, 0, 0, IPPROTO_ICMPV6];
    let mut sum = csum::add(csum::add(0, addresses), &pseudo);
    let mut at = 0;
    for _ in 0..MAX_SOLICITATION / ND_OPT_UNIT {
        if at >= len {
            break;
        }
        let Some(unit) = frame.read::<[u8; ND_OPT_UNIT]>(l3 + IP6_HLEN + at) else {
            return false;
        };
        sum = csum::add(sum, &unit);
        at += ND_OPT_UNIT;
    }
    csum::finish(sum) == 0
}

/// Writes the advertisement over the solicitation (the frame has its size).
/// A subprogram of its own: the frame is the caller's no more once its tail
/// moved.
#[inline(never)]
fn write_advert(ctx: &XdpContext, tagged: u8, dad: u8, mac: &[u8; ETH_ALEN]) -> Option<()> {
    const ICMP: usize = IP6_HLEN;
    const OPTION: usize = ICMP + ND_LEN;
    let frame = ctx.frame();
    let eth = frame.get_mut::<[u8; MACS]>(0)?;
    let out = frame.get_mut::<[u8; IP6_HLEN + ADVERT_LEN]>(l3_offset(tagged))?;
    // SAFETY: `get_mut` checked that both lie in the frame; they do not overlap.
    let (eth, out) = unsafe { (&mut *eth, &mut *out) };
    // To the requester, or to all nodes for duplicate address detection
    // (RFC 4861, 7.2.4), from the announced MAC.
    if dad != 0 {
        eth[ETH_DST..ETH_DST + ETH_ALEN].copy_from_slice(&ALL_NODES_MAC);
    } else {
        let requester: [u8; ETH_ALEN] = bytes_at(eth, ETH_SRC);
        eth[ETH_DST..ETH_DST + ETH_ALEN].copy_from_slice(&requester);
    }
    eth[ETH_SRC..ETH_SRC + ETH_ALEN].copy_from_slice(mac);
    // Version, traffic class and flow label 0, payload length, next header,
    // hop limit 255 (RFC 4861, 7.1.2).
    out[..8].copy_from_slice(&ip6_head(
        0,
        ADVERT_LEN as u16,
        IPPROTO_ICMPV6,
        ND_HOP_LIMIT,
    ));
    // To the solicitation's source (all nodes for duplicate address
    // detection), from the target address, which stays where it is.
    if dad != 0 {
        out[IP6_DST..IP6_DST + 16].copy_from_slice(&ALL_NODES);
    } else {
        let source: [u8; 16] = out[IP6_SRC..IP6_SRC + 16].try_into().ok()?;
        out[IP6_DST..IP6_DST + 16].copy_from_slice(&source);
    }
    let target: [u8; 16] = out[ICMP + ND_TARGET..ICMP + ND_TARGET + 16]
        .try_into()
        .ok()?;
    out[IP6_SRC..IP6_SRC + 16].copy_from_slice(&target);
    // Router clear (the LB answers for an address, not as a router);
    // Solicited unless multicast; Override, as for any address not anycast.
    let flags = if dad != 0 {
        ND_ADVERT_OVERRIDE
    } else {
        ND_ADVERT_SOLICITED | ND_ADVERT_OVERRIDE
    };
    // Type, code, the checksum (summed below) and the flags' word.
    out[ICMP..ICMP + ND_FLAGS].copy_from_slice(&[ICMPV6_NEIGHBOUR_ADVERT, 0, 0, 0]);
    out[ICMP + ND_FLAGS..ICMP + ND_TARGET].copy_from_slice(&[flags, 0, 0, 0]);
    out[OPTION..OPTION + 2].copy_from_slice(&[ND_OPT_TARGET_LL_ADDR, 1]);
    out[OPTION + 2..OPTION + 2 + ETH_ALEN].copy_from_slice(mac);
    let addresses: &[u8; 32] = out[IP6_SRC..IP6_DST + 16].try_into().ok()?;
    let pseudo = [0, 0, 0, ADVERT_LEN as u8, 0, 0, 0, IPPROTO_ICMPV6];
    let icmp: &[u8; ADVERT_LEN] = out[ICMP..].try_into().ok()?;
    let sum = csum::add(csum::add(csum::add(0, addresses), &pseudo), icmp);
    out[ICMP + 2..ICMP + 4].copy_from_slice(&csum::finish(sum).to_be_bytes());
    Some(())
}

/// The 16 bytes at `at` are the unspecified address `::`.
#[inline(always)]
fn is_unspecified<const N: usize>(b: &[u8; N], at: usize) -> bool {
    (word(b, at) | word(b, at + 8)) == 0
}

/// The 16 bytes at `at` are a solicited-node multicast address,
/// ff02::1:ff00:0/104 (RFC 4291, 2.7.1).
#[inline(always)]
fn is_solicited_node<const N: usize>(b: &[u8; N], at: usize) -> bool {
    const PREFIX: [u8; 8] = [0xff, 2, 0, 0, 0, 0, 0, 0];
    let middle = u32::from_ne_bytes([b[at + 8], b[at + 9], b[at + 10], b[at + 11]]);
    word(b, at) == u64::from_ne_bytes(PREFIX)
        && middle == u32::from_ne_bytes([0, 0, 0, 1])
        && b[at + 12] == 0xff
}

/// Eight bytes of `b` from `at` as one number.
#[inline(always)]
fn word<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    u64::from_ne_bytes([
        b[at],
        b[at + 1],
        b[at + 2],
        b[at + 3],
        b[at + 4],
        b[at + 5],
        b[at + 6],
        b[at + 7],
    ])
}
