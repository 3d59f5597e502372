//! Direct server return as the model expects it (`xdp/encap.rs`): the
//! client's packet, byte for byte from its network header to the frame's end
//! (Ethernet padding included), behind an outer header built here by
//! etherparse from what the datapath documents — IPv4 (protocol 4) to an
//! IPv4 backend; IPv6 to an IPv6 backend, next header 4 for IPv4 inside and
//! 41 for IPv6; the outer source the configured encapsulation source of the
//! backend's family; the inner packet's length (its own header's, padding
//! left out) and traffic class; TTL / hop limit 64; an IPv4 outer header with
//! DF, identification 0 and a checksum that holds; an IPv6 one with flow
//! label 0 — and the link header of the frame with the outer family's
//! EtherType. Routed like a translated frame: MACs of the next hop, the outer
//! TTL one less; a tagged frame (or one without a next hop) goes to the
//! kernel wrapped, unrouted. Too big for the egress once wrapped, it is
//! unwrapped and answered as a router answers (the MTU less the outer
//! header), or dropped where the LB may neither answer nor fragment.

use std::net::IpAddr;

use etherparse::{
    IpDscp, IpEcn, IpFragOffset, IpNumber, Ipv4Header, Ipv4Options, Ipv6FlowLabel, Ipv6Header,
};
use xdp_lb::{Flow, Verdict};

use crate::{
    answer::{self, IcmpAnswer},
    check::{Outcome, expect_answer, expect_verdict},
    checksum::{IP4_CHECKSUM, ip4_header_holds},
    fixture::{Fixture, NextHop},
    hex,
    parse::{Headers, IpPacket},
    support::lb::{XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
};

const IP4_HLEN: usize = 20;
const IP6_HLEN: usize = 40;
/// The outer header's TTL / hop limit as the datapath writes it.
const OUTER_TTL: u8 = 64;
/// IPv4 "don't fragment", in the high byte of the flags field.
const DF: u8 = 0x40;

/// A request the model expects wrapped for `backend` from `source`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Encapsulation<'a> {
    pub fixture: &'a Fixture,
    pub headers: &'a Headers,
    pub frame: &'a [u8],
    pub ingress: u32,
    pub flow: Flow,
    pub backend: IpAddr,
    pub source: IpAddr,
    /// An ICMP error about `flow`, wrapped as it came (`xdp/icmp.rs`).
    pub error: bool,
}

/// How the wrapped frame may leave, and what it must then be.
#[derive(Clone, Debug)]
enum Left {
    /// Wrapped, and routed when sent to this next hop (`None`: passed to the
    /// kernel wrapped as it is).
    Wrapped(Option<NextHop>),
    /// Unwrapped and answered with this frame.
    Answer(Vec<u8>),
    Dropped,
}

impl Encapsulation<'_> {
    /// Checks `outcome` against the one way the frame may leave.
    pub(crate) fn check(&self, outcome: &Outcome<'_>) -> Result<(), String> {
        let ip = self
            .headers
            .ip
            .ok_or("the model wraps a frame it found no IP header in")?;
        let (verdict, action, left) = self.leaving(&ip);
        expect_verdict(outcome, verdict, action)?;
        match left {
            Left::Wrapped(hop) => self.check_wrapped(&ip, outcome.packet, hop),
            Left::Answer(answer) => expect_answer(outcome.packet, &[answer]),
            Left::Dropped => Ok(()),
        }
    }

    /// The bytes the outer header adds.
    fn overhead(&self) -> usize {
        if self.backend.is_ipv4() {
            IP4_HLEN
        } else {
            IP6_HLEN
        }
    }

    /// The verdict, action and frame of the one way the wrapped frame leaves.
    fn leaving(&self, ip: &IpPacket) -> (Verdict, u32, Left) {
        let via_kernel = (
            Verdict::PassEncapsulatedViaStack,
            XDP_PASS,
            Left::Wrapped(None),
        );
        // A tagged frame would leave with its tag on an untagged device.
        if self.headers.vlan {
            return via_kernel;
        }
        // The outer packet is routed from no source in particular: the
        // client's address, which the FIB may refuse, plays no part.
        let Some(hop) = self.fixture.next_hop(self.backend) else {
            return via_kernel;
        };
        // XDP_TX leaves by the interface the frame came in on, which took it.
        let wrapped_len = self.frame.len() + self.overhead() - ip.l3;
        if hop.egress != self.ingress && wrapped_len > hop.mtu as usize {
            return self.too_big(ip, hop.mtu);
        }
        let action = if hop.egress == self.ingress {
            XDP_TX
        } else {
            XDP_REDIRECT
        };
        let verdict = if self.error {
            Verdict::ForwardIcmpErrorToBackend
        } else {
            Verdict::ForwardEncapsulated
        };
        (verdict, action, Left::Wrapped(Some(hop)))
    }

    /// Too big for the egress (MTU `mtu`) once wrapped: the packet is
    /// unwrapped, as the client sent it, and answered from the frontend
    /// with the MTU left for it (`answer_too_big`) — unless it is IPv4
    /// without DF (the LB cannot fragment the wrapped packet) or its ports
    /// are not in the 8 quoted bytes (IPv4 options, IPv6 extension headers):
    /// dropped then, as is an ICMP error (nothing to answer about).
    fn too_big(&self, ip: &IpPacket, mtu: u32) -> (Verdict, u32, Left) {
        let dropped = (Verdict::DropTooBig, XDP_DROP, Left::Dropped);
        let dont_fragment = !ip.is_v4() || self.frame[ip.l3 + 6] & DF != 0;
        if self.error || !dont_fragment || !ip.transport_follows_directly() {
            return dropped;
        }
        let left = mtu.saturating_sub(self.overhead() as u32);
        let answer = answer::icmp(
            self.frame,
            self.headers,
            ip,
            &self.flow,
            IcmpAnswer::TooBig(left),
        );
        (Verdict::AnswerTooBig, XDP_TX, Left::Answer(answer))
    }

    /// The frame as it must leave wrapped, sent to `hop` or to the kernel.
    fn wrapped(&self, ip: &IpPacket, hop: Option<NextHop>) -> Vec<u8> {
        let inner = &self.frame[ip.l3..];
        let inner_len = ip.end - ip.l3;
        let class = traffic_class(inner);
        let ttl = if hop.is_some() {
            OUTER_TTL - 1
        } else {
            OUTER_TTL
        };
        let mut link = self.frame[..ip.l3].to_vec();
        let ethertype: u16 = if self.backend.is_ipv4() {
            0x0800
        } else {
            0x86dd
        };
        link[ip.l3 - 2..].copy_from_slice(&ethertype.to_be_bytes());
        if let Some(hop) = hop {
            link[..6].copy_from_slice(&hop.dst_mac);
            link[6..12].copy_from_slice(&hop.src_mac);
        }
        let outer = match (self.source, self.backend) {
            (IpAddr::V4(source), IpAddr::V4(backend)) => {
                let mut header = Ipv4Header {
                    dscp: IpDscp::try_new(class >> 2).expect("6 bits"),
                    ecn: IpEcn::try_new(class & 0x3).expect("2 bits"),
                    total_len: u16::try_from(IP4_HLEN + inner_len).expect("a datagram"),
                    identification: 0,
                    dont_fragment: true,
                    more_fragments: false,
                    fragment_offset: IpFragOffset::ZERO,
                    time_to_live: ttl,
                    protocol: IpNumber(4),
                    header_checksum: 0,
                    source: source.octets(),
                    destination: backend.octets(),
                    options: Ipv4Options::default(),
                };
                header.header_checksum = header.calc_header_checksum();
                header.to_bytes().to_vec()
            }
            (IpAddr::V6(source), IpAddr::V6(backend)) => Ipv6Header {
                traffic_class: class,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: u16::try_from(inner_len).expect("a datagram"),
                next_header: IpNumber(if ip.is_v4() { 4 } else { 41 }),
                hop_limit: ttl,
                source: source.octets(),
                destination: backend.octets(),
            }
            .to_bytes()
            .to_vec(),
            _ => unreachable!("the model's source is of the backend's family"),
        };
        [link, outer, inner.to_vec()].concat()
    }

    /// Checks a wrapped frame: exactly `wrapped`, but for the outer IPv4
    /// checksum, which must hold (an incremental update may leave 0xffff
    /// where one summed from scratch is 0x0000, the same one's-complement
    /// value).
    fn check_wrapped(
        &self,
        ip: &IpPacket,
        packet: &[u8],
        hop: Option<NextHop>,
    ) -> Result<(), String> {
        let expected = self.wrapped(ip, hop);
        let checksum = self.backend.is_ipv4().then_some(ip.l3 + IP4_CHECKSUM);
        let masked = |frame: &[u8]| {
            let mut out = frame.to_vec();
            if let Some(at) = checksum
                && let Some(field) = out.get_mut(at..at + 2)
            {
                field.fill(0);
            }
            out
        };
        if masked(packet) != masked(&expected) {
            return Err(format!(
                "wrapped ({} in {}, from {} to {}), but not as expected ({}):\nexpected {}",
                family(ip.is_v4()),
                family(self.backend.is_ipv4()),
                self.source,
                self.backend,
                self.first_difference(ip, packet, &expected),
                hex(&expected)
            ));
        }
        if checksum.is_some() {
            let outer = IpPacket {
                l4: ip.l3 + IP4_HLEN,
                ..*ip
            };
            if !ip4_header_holds(packet, &outer) {
                return Err("wrapped, but the outer IPv4 header checksum does not hold".into());
            }
        }
        Ok(())
    }

    /// Where `packet` first differs from `expected`, in the frame's terms.
    fn first_difference(&self, ip: &IpPacket, packet: &[u8], expected: &[u8]) -> String {
        let Some(at) = packet
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .or_else(|| {
                (packet.len() != expected.len()).then_some(packet.len().min(expected.len()))
            })
        else {
            return "no byte differs".into();
        };
        let inner = ip.l3 + self.overhead();
        let place = if at < ip.l3 {
            format!("link header byte {at}")
        } else if at < inner {
            format!("outer header byte {}", at - ip.l3)
        } else {
            format!("inner packet byte {}", at - inner)
        };
        format!(
            "{place} (frame byte {at}); {} bytes out, {} expected",
            packet.len(),
            expected.len()
        )
    }
}

/// The traffic class of an IP packet (IPv4: the TOS byte).
fn traffic_class(packet: &[u8]) -> u8 {
    if packet[0] >> 4 == 4 {
        packet[1]
    } else {
        (packet[0] << 4) | (packet[1] >> 4)
    }
}

fn family(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}
