//! The answers `xdp_lb` writes itself in place of a frame and sends back
//! where it came from (XDP_TX), as the model expects them, byte for byte:
//! built by etherparse, every checksum summed from scratch, from what
//! RFC 9293 (a reset), RFC 792 / RFC 4443 (port unreachable) and RFC 1191 /
//! RFC 8201 (fragmentation needed, packet too big) ask, and from what
//! `answer.rs` documents of its own choices (TTL 64, IPv4 ID 0 and no DF,
//! the quote: network header and 8 transport bytes, the link header kept
//! with its MACs swapped).

use std::net::SocketAddr;

use etherparse::{
    EtherType, Icmpv4Type, Icmpv6Type, IpHeaders, PacketBuilder, PacketBuilderStep,
    SingleVlanHeader, TcpHeader, VlanHeader, VlanId, VlanPcp, icmpv4::DestUnreachableHeader,
    icmpv6::DestUnreachableCode,
};
use xdp_lb::Flow;

use crate::{
    parse::{Headers, IpPacket},
    support::frame::answer_ip,
};

/// Transport bytes an ICMP answer quotes after the network header.
const QUOTED_L4: usize = 8;
const IP4_CHECKSUM: usize = 10;

/// An answer to `frame` up to its network header `ip`: the link header is
/// the frame's, with its MACs swapped and its VLAN tag (if any) kept.
fn headers_of_answer(
    frame: &[u8],
    headers: &Headers,
    ip: IpHeaders,
) -> PacketBuilderStep<IpHeaders> {
    let dst: [u8; 6] = frame[6..12].try_into().expect("a MAC");
    let src: [u8; 6] = frame[..6].try_into().expect("a MAC");
    let ethernet = PacketBuilder::ethernet2(src, dst);
    if !headers.vlan {
        return ethernet.ip(ip);
    }
    let tci = u16::from_be_bytes([frame[14], frame[15]]);
    ethernet
        .vlan(VlanHeader::Single(SingleVlanHeader {
            pcp: VlanPcp::try_new((tci >> 13) as u8).expect("3 bits"),
            drop_eligible_indicator: tci & 0x1000 != 0,
            vlan_id: VlanId::try_new(tci & 0x0fff).expect("12 bits"),
            // Filled in by the builder.
            ether_type: EtherType(0),
        }))
        .ip(ip)
}

/// The reset a host without a listener answers the TCP segment `flow` of
/// `frame` with (RFC 9293, 3.10.7.1): from the frontend to the client, no
/// options, window 0. With ACK: sequence number its acknowledgment number,
/// RST alone; otherwise sequence 0, RST|ACK acknowledging its sequence
/// number plus its payload, SYN and FIN.
pub(crate) fn reset(frame: &[u8], headers: &Headers, ip: &IpPacket, flow: &Flow) -> Vec<u8> {
    let segment = &frame[ip.l4..];
    let word = |at: usize| u32::from_be_bytes(segment[at..at + 4].try_into().expect("4 bytes"));
    let (seq, ack, flags) = (word(4), word(8), segment[13]);
    let data_offset = usize::from(segment[12] >> 4) * 4;
    let payload = ip.end.saturating_sub(ip.l4 + data_offset);
    let mut tcp = TcpHeader::new(flow.dst.port(), flow.src.port(), 0, 0);
    tcp.rst = true;
    if flags & 0x10 != 0 {
        tcp.sequence_number = ack;
    } else {
        let counted = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
        tcp.ack = true;
        tcp.acknowledgment_number = seq.wrapping_add(payload as u32).wrapping_add(counted);
    }
    let mut out = Vec::new();
    headers_of_answer(frame, headers, answer_ip(flow.dst.ip(), flow.src.ip()))
        .tcp_header(tcp)
        .write(&mut out, &[])
        .expect("a reset");
    out
}

/// What an ICMP answer says.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IcmpAnswer {
    /// Port unreachable (ICMP type 3 code 3, ICMPv6 type 1 code 4).
    PortUnreachable,
    /// Fragmentation needed (type 3 code 4) / packet too big (ICMPv6 type 2)
    /// with this MTU.
    TooBig(u32),
}

/// The ICMP or ICMPv6 error `answer` to the packet `flow` of `frame`, from
/// the frontend to the client, quoting the packet's network header and 8
/// transport bytes as they are in `frame`.
pub(crate) fn icmp(
    frame: &[u8],
    headers: &Headers,
    ip: &IpPacket,
    flow: &Flow,
    answer: IcmpAnswer,
) -> Vec<u8> {
    let quote = &frame[ip.l3..ip.l3 + ip.fixed_header_len() + QUOTED_L4];
    icmp_quoting(frame, headers, flow, answer, quote)
}

/// `icmp`'s answers to a translated frame whose translation was undone
/// (`answer_too_big`): the quoted IPv4 header checksum went through two
/// incremental updates (RFC 1624), which turn a checksum of 0xffff into
/// 0x0000 — the same one's-complement value — so both forms are accepted.
pub(crate) fn icmp_after_undo(
    frame: &[u8],
    headers: &Headers,
    ip: &IpPacket,
    flow: &Flow,
    answer: IcmpAnswer,
) -> Vec<Vec<u8>> {
    let mut answers = vec![icmp(frame, headers, ip, flow, answer)];
    let at = ip.l3 + IP4_CHECKSUM;
    if ip.is_v4() && frame[at..at + 2] == [0xff, 0xff] {
        let mut zeroed = frame.to_vec();
        zeroed[at..at + 2].fill(0);
        answers.push(icmp(&zeroed, headers, ip, flow, answer));
    }
    answers
}

fn icmp_quoting(
    frame: &[u8],
    headers: &Headers,
    flow: &Flow,
    answer: IcmpAnswer,
    quote: &[u8],
) -> Vec<u8> {
    let step = headers_of_answer(frame, headers, answer_ip(flow.dst.ip(), flow.src.ip()));
    let mut out = Vec::new();
    match (flow.src, answer) {
        (SocketAddr::V4(_), IcmpAnswer::PortUnreachable) => step
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::Port,
            ))
            .write(&mut out, quote),
        (SocketAddr::V4(_), IcmpAnswer::TooBig(mtu)) => step
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                },
            ))
            .write(&mut out, quote),
        (SocketAddr::V6(_), IcmpAnswer::PortUnreachable) => step
            .icmpv6(Icmpv6Type::DestinationUnreachable(
                DestUnreachableCode::Port,
            ))
            .write(&mut out, quote),
        (SocketAddr::V6(_), IcmpAnswer::TooBig(mtu)) => step
            .icmpv6(Icmpv6Type::PacketTooBig { mtu })
            .write(&mut out, quote),
    }
    .expect("an ICMP answer");
    out
}
