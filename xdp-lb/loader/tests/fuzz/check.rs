//! Checks one frame's outcome — verdict, action and output bytes — against
//! the model's prediction (direct server return in `fuzz/encap.rs`).

use std::net::{IpAddr, SocketAddr};

use xdp_lb::{Flow, ParseCounter, Verdict};

use crate::{
    answer::{self, IcmpAnswer},
    checksum::{
        IP4_CHECKSUM, TCP_CHECKSUM, UDP_CHECKSUM, ip4_header_holds, transport_checksum_at,
        transport_holds,
    },
    encap::Encapsulation,
    fixture::{Fixture, NextHop, fib_refuses},
    hex,
    icmp::{IcmpError, Toward},
    model::{ErrorToward, Expected, NewSource, Prediction, Source},
    parse::{IPPROTO_TCP, IpPacket},
    support::lb::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX},
};

/// What the datapath did with a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome<'a> {
    pub action: u32,
    pub packet: &'a [u8],
    /// The one parser counter and the one verdict counter the frame bumped.
    pub counter: ParseCounter,
    pub verdict: Verdict,
}

/// Which end of a flow a translation replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// DNAT of a request: the destination becomes the backend.
    Destination,
    /// Reverse NAT of a reply: the source becomes the frontend.
    Source,
}

/// Checks `outcome` of `frame`, which arrived on interface `ingress`, against
/// `prediction`; the error says what differs.
pub(crate) fn outcome(
    fixture: &Fixture,
    prediction: &Prediction,
    frame: &[u8],
    ingress: u32,
    outcome: &Outcome<'_>,
) -> Result<(), String> {
    if outcome.action == XDP_ABORTED {
        return Err("XDP_ABORTED".into());
    }
    if outcome.counter != prediction.headers.counter {
        return Err(format!(
            "parsed as {}, the model parses it as {}",
            outcome.counter.name(),
            prediction.headers.counter.name()
        ));
    }
    let what = match &prediction.expected {
        Expected::Untouched(verdict) => {
            expect_verdict(outcome, *verdict, XDP_PASS)?;
            if outcome.packet != frame {
                return Err("passed with changed bytes".into());
            }
            return Ok(());
        }
        Expected::Dropped(verdict) => return expect_verdict(outcome, *verdict, XDP_DROP),
        Expected::Answered { verdict, answer } => {
            expect_verdict(outcome, *verdict, XDP_TX)?;
            return expect_answer(outcome.packet, std::slice::from_ref(&answer.0));
        }
        Expected::Encapsulated {
            flow,
            backend,
            source,
            error,
        } => {
            let Some(source) = *source else {
                return expect_verdict(outcome, Verdict::DropEncapUnsupported, XDP_DROP);
            };
            let encapsulation = Encapsulation {
                fixture,
                headers: &prediction.headers,
                frame,
                ingress,
                flow: *flow,
                backend: backend.ip(),
                source,
                error: *error,
            };
            return encapsulation.check(outcome);
        }
        Expected::Request {
            flow,
            backend,
            source,
            ..
        } => {
            if let Source::New(NewSource {
                refusal: Some(refusal),
                ..
            }) = source
                && matches!(
                    outcome.verdict,
                    Verdict::RefuseReset | Verdict::RefuseUnreachable | Verdict::DropNoBackend
                )
            {
                // No free port among those tried: refused as a service
                // without backends refuses.
                let prediction = Prediction {
                    expected: (**refusal).clone(),
                    ..prediction.clone()
                };
                return self::outcome(fixture, &prediction, frame, ingress, outcome);
            }
            What::Flow {
                flow: *flow,
                end: End::Destination,
                to: *backend,
                peer: match source {
                    Source::Kept => Peer::Kept,
                    Source::Translated(_, given) => Peer::To(*given),
                    Source::New(new) => Peer::New(new),
                },
            }
        }
        Expected::Reply {
            flow,
            frontend,
            client,
            ..
        } => What::Flow {
            flow: *flow,
            end: End::Source,
            to: *frontend,
            peer: client.map_or(Peer::Kept, Peer::To),
        },
        Expected::IcmpError { error, toward } => What::Error {
            error: *error,
            toward: match toward {
                ErrorToward::Backend(backend, peer) => Toward::Backend(*backend, *peer),
                ErrorToward::Client(frontend, peer) => Toward::Client(*frontend, *peer),
            },
        },
    };
    let rewrite = Rewrite {
        fixture,
        prediction,
        frame,
        ingress,
        ip: ip_of(prediction)?,
        what,
    };
    rewrite.check(outcome)
}

pub(crate) fn expect_verdict(
    outcome: &Outcome<'_>,
    verdict: Verdict,
    action: u32,
) -> Result<(), String> {
    if (outcome.verdict, outcome.action) != (verdict, action) {
        return Err(format!(
            "counted as {} with action {}, expected {} with action {action}",
            outcome.verdict.name(),
            outcome.action,
            verdict.name()
        ));
    }
    Ok(())
}

/// The frame left as one of `answers`.
pub(crate) fn expect_answer(packet: &[u8], answers: &[Vec<u8>]) -> Result<(), String> {
    if answers.iter().any(|answer| answer == packet) {
        return Ok(());
    }
    Err(format!(
        "answered, but not as expected:\nexpected {}",
        answers
            .iter()
            .map(|a| hex(a))
            .collect::<Vec<_>>()
            .join("\n      or ")
    ))
}

fn ip_of(prediction: &Prediction) -> Result<IpPacket, String> {
    prediction
        .headers
        .ip
        .ok_or_else(|| "the model translates a frame it found no IP header in".into())
}

/// What a translation rewrites.
#[derive(Clone, Copy, Debug)]
enum What<'a> {
    /// A packet of `flow`: `end` becomes `to`, and the other end as `peer`
    /// says (source NAT).
    Flow {
        flow: Flow,
        end: End,
        to: SocketAddr,
        peer: Peer<'a>,
    },
    /// An ICMP error about a tracked flow, translated `toward` its backend
    /// or its client.
    Error { error: IcmpError, toward: Toward },
}

/// What becomes of the end a translation does not aim at.
#[derive(Clone, Copy, Debug)]
enum Peer<'a> {
    /// It stays.
    Kept,
    /// It becomes this (the source NAT gave a request, or the client a
    /// reply to it goes back to).
    To(SocketAddr),
    /// It becomes a source the datapath picks now: the one the frame shows,
    /// if the new source admits it.
    New(&'a NewSource),
}

/// A frame the model expects translated and sent on.
struct Rewrite<'a> {
    fixture: &'a Fixture,
    prediction: &'a Prediction,
    frame: &'a [u8],
    ingress: u32,
    /// The frame's (outer) IP packet.
    ip: IpPacket,
    what: What<'a>,
}

/// How the datapath may send a translated frame on.
#[derive(Clone, Copy, Debug)]
enum Forwarding {
    /// Itself, to this next hop (XDP_TX or a redirect).
    Hop(NextHop),
    /// Through the kernel (XDP_PASS), which routes and resolves it.
    Kernel,
    /// Either: the FIB refuses the packet (`fixture::fib_refuses`), but the
    /// next hop toward a backend is cached per backend for a second and used
    /// then whatever the packet's source.
    HopIfCached(NextHop),
}

/// One way a translated frame may leave: its verdict, its action, and what
/// the frame must then be.
#[derive(Clone, Debug)]
struct Leaving {
    verdict: Verdict,
    action: u32,
    frame: Left,
}

#[derive(Clone, Debug)]
enum Left {
    /// Translated, and routed when sent to this next hop (`None`: passed
    /// to the kernel as translated).
    Translated(Option<NextHop>),
    /// Replaced by one of these answers.
    Answer(Vec<Vec<u8>>),
    /// Dropped: no bytes to check.
    Dropped,
}

impl Rewrite<'_> {
    fn check(&self, outcome: &Outcome<'_>) -> Result<(), String> {
        if let What::Flow { to, peer, .. } = self.what {
            let peer = match peer {
                Peer::Kept => None,
                Peer::To(peer) => Some(peer.ip()),
                Peer::New(new) => Some(new.addr),
            };
            if let Some(ip) = [Some(to.ip()), peer]
                .into_iter()
                .flatten()
                .find(|ip| ip.is_ipv4() != self.ip.is_v4())
            {
                return Err(format!("{ip} is not of the packet's family"));
            }
        }
        let allowed = self.leavings();
        let leaving = allowed
            .iter()
            .find(|l| (l.verdict, l.action) == (outcome.verdict, outcome.action))
            .ok_or_else(|| {
                format!(
                    "translated ({:?}) and counted as {} with action {}, but the frame \
                     may leave only as {:?}",
                    self.what,
                    outcome.verdict.name(),
                    outcome.action,
                    allowed
                        .iter()
                        .map(|l| (l.verdict.name(), l.action))
                        .collect::<Vec<_>>()
                )
            })?;
        match &leaving.frame {
            Left::Translated(hop) => self.check_translated(outcome.packet, *hop),
            Left::Answer(answers) => expect_answer(outcome.packet, answers),
            Left::Dropped => Ok(()),
        }
    }

    /// The verdicts of a translated frame sent on by the datapath itself and
    /// passed to the kernel.
    fn verdicts(&self) -> (Verdict, Verdict) {
        match self.what {
            What::Flow {
                end: End::Destination,
                ..
            } => (Verdict::ForwardToBackend, Verdict::PassToBackendViaStack),
            What::Flow {
                end: End::Source, ..
            } => (Verdict::ForwardReply, Verdict::PassReplyViaStack),
            What::Error {
                toward: Toward::Backend(..),
                ..
            } => (
                Verdict::ForwardIcmpErrorToBackend,
                Verdict::PassIcmpErrorViaStack,
            ),
            What::Error {
                toward: Toward::Client(..),
                ..
            } => (
                Verdict::ForwardIcmpErrorToClient,
                Verdict::PassIcmpErrorViaStack,
            ),
        }
    }

    /// The ends of the route the datapath looks up, and whether its answer
    /// is cached (per backend: toward a backend).
    fn route(&self) -> (IpAddr, IpAddr, bool) {
        let ip = &self.ip;
        match self.what {
            What::Flow {
                end: End::Destination,
                to,
                ..
            } => (ip.src, to.ip(), true),
            // After the reverse translation the source is the frontend,
            // and under source NAT the destination the client.
            What::Flow {
                end: End::Source,
                to,
                peer,
                ..
            } => match peer {
                Peer::To(client) => (to.ip(), client.ip(), false),
                Peer::Kept | Peer::New(_) => (to.ip(), ip.dst, false),
            },
            What::Error {
                toward: Toward::Backend(backend, _),
                ..
            } => (ip.src, backend.ip(), true),
            // Looked up from the frontend, whatever the error's source, to
            // its destination (the client, under source NAT).
            What::Error {
                toward: Toward::Client(frontend, client),
                ..
            } => (frontend.ip(), client.map_or(ip.dst, |c| c.ip()), false),
        }
    }

    /// How the frame may leave. A frame with a VLAN tag goes through the
    /// kernel: the egress device would not strip the tag.
    fn forwarding(&self) -> Forwarding {
        let (from, to, cached) = self.route();
        match self.fixture.next_hop(to) {
            _ if self.prediction.headers.vlan => Forwarding::Kernel,
            None => Forwarding::Kernel,
            Some(hop) if !fib_refuses(from, to) => Forwarding::Hop(hop),
            Some(hop) if cached => Forwarding::HopIfCached(hop),
            Some(_) => Forwarding::Kernel,
        }
    }

    /// Every way the frame may leave, given how it may be forwarded.
    fn leavings(&self) -> Vec<Leaving> {
        let (sent, via_kernel) = self.verdicts();
        let kernel = Leaving {
            verdict: via_kernel,
            action: XDP_PASS,
            frame: Left::Translated(None),
        };
        let to_hop = |hop: NextHop| {
            // XDP_TX leaves by the interface the frame came in on, which took it.
            let too_big =
                hop.egress != self.ingress && self.frame.len() - self.ip.l3 > hop.mtu as usize;
            if too_big {
                return self.too_big(hop.mtu, kernel.clone());
            }
            let action = if hop.egress == self.ingress {
                XDP_TX
            } else {
                XDP_REDIRECT
            };
            Leaving {
                verdict: sent,
                action,
                frame: Left::Translated(Some(hop)),
            }
        };
        match self.forwarding() {
            Forwarding::Hop(hop) => vec![to_hop(hop)],
            Forwarding::Kernel => vec![kernel],
            Forwarding::HopIfCached(hop) => vec![to_hop(hop), kernel.clone()],
        }
    }

    /// A translated frame larger than the MTU (`mtu`) toward its next hop
    /// (`xdp::too_big`): a request or reply that must not be fragmented
    /// (IPv4 with DF, any IPv6) is answered as a router answers it — its
    /// translation undone, it becomes ICMP fragmentation needed / ICMPv6
    /// packet too big to its sender, from the address it was sent to, when
    /// its ports are in the 8 quoted bytes, and is dropped otherwise;
    /// anything else goes to the kernel translated, to be fragmented there
    /// (`kernel`).
    fn too_big(&self, mtu: u32, kernel: Leaving) -> Leaving {
        let What::Flow { flow, .. } = self.what else {
            return kernel;
        };
        let ip = &self.ip;
        let dont_fragment = self.frame[ip.l3 + 6] & 0x40 != 0;
        if ip.is_v4() && !dont_fragment {
            return kernel;
        }
        if !ip.transport_follows_directly() {
            return Leaving {
                verdict: Verdict::DropTooBig,
                action: XDP_DROP,
                frame: Left::Dropped,
            };
        }
        let headers = &self.prediction.headers;
        Leaving {
            verdict: Verdict::AnswerTooBig,
            action: XDP_TX,
            frame: Left::Answer(answer::icmp_after_undo(
                self.frame,
                headers,
                ip,
                &flow,
                IcmpAnswer::TooBig(mtu),
            )),
        }
    }

    /// The frame, translated, checksums aside, not routed; under source
    /// NAT its other end becomes `peer` too.
    fn translated(&self, peer: Option<SocketAddr>) -> Vec<u8> {
        match self.what {
            What::Flow { end, to, .. } => {
                let out = translated(self.frame, &self.ip, end, to);
                match peer {
                    Some(peer) => translated(&out, &self.ip, end.other(), peer),
                    None => out,
                }
            }
            What::Error { error, toward } => error.translated(self.frame, toward),
        }
    }

    /// The other end's new address and port, if it changes: for a new
    /// source, the one `packet` shows, which must be one the datapath may
    /// give.
    fn peer(&self, packet: &[u8]) -> Result<Option<SocketAddr>, String> {
        let What::Flow { end, peer, .. } = self.what else {
            return Ok(None);
        };
        match peer {
            Peer::Kept => Ok(None),
            Peer::To(peer) => Ok(Some(peer)),
            Peer::New(new) => {
                let written = written_address(packet, &self.ip, end.other())
                    .ok_or("the translated frame is too short for its source")?;
                new.admits(written)?;
                Ok(Some(written))
            }
        }
    }

    /// The checksum fields the translation updates (a later fragment has
    /// no transport header, nor checksum there).
    fn checksum_fields(&self) -> Vec<usize> {
        match self.what {
            What::Flow { .. } => {
                let ip = &self.ip;
                let mut fields = Vec::new();
                if !ip.later_fragment {
                    fields.push(
                        ip.l4
                            + match ip.proto {
                                IPPROTO_TCP => TCP_CHECKSUM,
                                _ => UDP_CHECKSUM,
                            },
                    );
                }
                if ip.is_v4() {
                    fields.push(ip.l3 + IP4_CHECKSUM);
                }
                fields
            }
            What::Error { error, .. } => error.checksum_fields(),
        }
    }

    /// Checks a translated frame that left for `hop` (or the kernel):
    /// exactly the translation and the routing, checksums aside, then the
    /// checksums.
    fn check_translated(&self, packet: &[u8], hop: Option<NextHop>) -> Result<(), String> {
        if packet.len() != self.frame.len() {
            return Err(format!(
                "translated into {} bytes from {}",
                packet.len(),
                self.frame.len()
            ));
        }
        let mut expected = self.translated(self.peer(packet)?);
        if let Some(hop) = hop {
            route(&mut expected, &self.ip, hop);
        }
        let fields = self.checksum_fields();
        if without(&expected, &fields) != without(packet, &fields) {
            return Err(format!(
                "translated ({:?}), but not as expected:\nexpected {}",
                self.what,
                hex(&expected)
            ));
        }
        match self.what {
            What::Flow { .. } => checksums_kept(self.frame, packet, &self.ip),
            What::Error { error, .. } => error.checksums_moved(self.frame, packet),
        }
    }
}

impl End {
    const fn other(self) -> Self {
        match self {
            Self::Destination => Self::Source,
            Self::Source => Self::Destination,
        }
    }
}

/// The source a request left with, translated: what `packet`, an IP packet
/// `ip` (the request's own headers), holds there.
pub(crate) fn written_source(packet: &[u8], ip: &IpPacket) -> Option<SocketAddr> {
    written_address(packet, ip, End::Source)
}

/// The address and port `end` of the flow holds in `packet`, if it is long
/// enough to hold them.
fn written_address(packet: &[u8], ip: &IpPacket, end: End) -> Option<SocketAddr> {
    let (addr_at, port_at) = address_offsets(ip, end);
    let port = packet.get(port_at..port_at + 2)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let addr = if ip.is_v4() {
        let a: [u8; 4] = packet.get(addr_at..addr_at + 4)?.try_into().ok()?;
        IpAddr::from(a)
    } else {
        let a: [u8; 16] = packet.get(addr_at..addr_at + 16)?.try_into().ok()?;
        IpAddr::from(a)
    };
    Some(SocketAddr::new(addr, port))
}

/// Offsets of `end`'s address (IP header) and port (transport header).
fn address_offsets(ip: &IpPacket, end: End) -> (usize, usize) {
    match (ip.is_v4(), end) {
        (true, End::Destination) => (ip.l3 + 16, ip.l4 + 2),
        (true, End::Source) => (ip.l3 + 12, ip.l4),
        (false, End::Destination) => (ip.l3 + 24, ip.l4 + 2),
        (false, End::Source) => (ip.l3 + 8, ip.l4),
    }
}

/// `frame` with `end` replaced by `to`, checksums aside: its address, and
/// its port unless `frame` is a later fragment, which carries none (the
/// bytes there are the datagram's, and stay).
fn translated(frame: &[u8], ip: &IpPacket, end: End, to: SocketAddr) -> Vec<u8> {
    let mut out = frame.to_vec();
    let (addr_at, port_at) = address_offsets(ip, end);
    let addr = match to.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    out[addr_at..addr_at + addr.len()].copy_from_slice(&addr);
    if !ip.later_fragment {
        out[port_at..port_at + 2].copy_from_slice(&to.port().to_be_bytes());
    }
    out
}

/// Routes `frame` (an IP packet `ip`) to `hop`, as the datapath does when it
/// sends a frame on itself: new MACs, TTL one less.
fn route(frame: &mut [u8], ip: &IpPacket, hop: NextHop) {
    frame[..6].copy_from_slice(&hop.dst_mac);
    frame[6..12].copy_from_slice(&hop.src_mac);
    let ttl_at = if ip.is_v4() { ip.l3 + 8 } else { ip.l3 + 7 };
    frame[ttl_at] = frame[ttl_at].wrapping_sub(1);
}

/// `frame` with the checksum fields at `fields` zeroed (where it holds them):
/// the bytes a rewrite must leave exactly as expected.
fn without(frame: &[u8], fields: &[usize]) -> Vec<u8> {
    let mut out = frame.to_vec();
    for &at in fields {
        if let Some(field) = out.get_mut(at..at + 2) {
            field.fill(0);
        }
    }
    out
}

/// The checksums of the translated `out` hold exactly where those of `frame`
/// did. The datapath, like a router, does not verify them: it updates them
/// incrementally (RFC 1624), which keeps a valid checksum valid and an
/// invalid one invalid — it neither breaks nor launders one.
fn checksums_kept(frame: &[u8], out: &[u8], ip: &IpPacket) -> Result<(), String> {
    if ip.is_v4() && ip4_header_holds(frame, ip) != ip4_header_holds(out, ip) {
        return Err(format!(
            "the IPv4 header checksum held before the rewrite: {}, after: {}",
            ip4_header_holds(frame, ip),
            ip4_header_holds(out, ip)
        ));
    }
    if transport_checksum_at(ip).is_some() && transport_holds(frame, ip) != transport_holds(out, ip)
    {
        return Err(format!(
            "the transport checksum held before the rewrite: {:?}, after: {:?}",
            transport_holds(frame, ip),
            transport_holds(out, ip)
        ));
    }
    Ok(())
}
