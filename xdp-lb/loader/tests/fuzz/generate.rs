//! The frames of a run: purely random bytes, and well-formed frames built by
//! etherparse toward every kind of destination the datapath tells apart —
//! ICMP errors about the run's own flows, in both directions, included —
//! then, for a share of them, mutated (`mutate`).
//!
//! `support::frame::Packet` describes one TCP or UDP frame with a fixed set
//! of extras; the fuzz needs every shape at once (ICMP and other protocols,
//! fragments, IPv4 options and IPv6 extension headers of any length), so it
//! describes frames with its own `Spec`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{
    Icmpv4Type, Icmpv6Type, IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Header,
    Ipv4Options, Ipv6Extensions, Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader,
    Ipv6RoutingExtensions, PacketBuilder, PacketBuilderStep, TcpHeader, VlanId, icmpv4, icmpv6,
};
use proptest::{prelude::RngExt as _, test_runner::TestRng};
use xdp_lb::{Flow, Protocol};

use crate::{
    fixture::NODEPORT,
    model::Model,
    mutate::{Mutation, mutate},
    parse::{IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING},
    support::lb::{
        BACKEND_PORT, BACKENDS4, BACKENDS6, CLIENT4, CLIENT4_2, CLIENT6, CLIENT6_2, DOWN_MAC,
        NODE4, NODE6, UNROUTED4, UP_MAC, VIP4, VIP6, mac_of,
    },
};

/// The longest frame generated (an untagged Ethernet frame of a 1500-byte MTU).
pub(crate) const MAX_FRAME: usize = 1514;
/// The longest frame of all: now and then a frame longer than the fixture's
/// links carry (as from a client link with a larger MTU), so that requests
/// too big for the link toward their backend are answered (`answer_too_big`)
/// or dropped (`drop_too_big`), and other translated frames too big for
/// their egress go to the kernel. The datapath holds the frame's bytes past
/// its link header to the egress MTU (all 1500 in the fixture), Ethernet
/// padding included, as a redirect would be held: mutations (`Extend`, an
/// inserted IPv6 extension header) make such frames too.
pub(crate) const MAX_OVERSIZED_FRAME: usize = MAX_FRAME + 64;
const MIN_FRAME: usize = 14;
/// The IP identifications of generated frames (`Spec::ip_id`).
const IP_IDS: [u16; 2] = [0x4242, 0x4243];
/// Routers on the clients' and on the backends' link (no fixture hosts).
const CLIENT_ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);
const CLIENT_ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 9);
const BACKEND_ROUTER4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 9);
const BACKEND_ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 2, 0, 0, 0, 0, 9);

/// What a well-formed frame is addressed to (and where it comes from).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Target {
    /// A configured frontend: VIP and port, or a NodePort on a node address.
    Service,
    /// A configured direct-server-return frontend.
    DsrService,
    /// A VIP on a port without a service.
    UnknownPort,
    /// A node address on a port that is not a NodePort service.
    NodeOther,
    /// An address that is no frontend (from a client, not a reply).
    Unrelated,
    /// A backend's reply to a flow the run translated.
    TrackedReply,
    /// A backend's packet to a client that sent it nothing through the LB.
    UnknownReply,
    /// An ICMP error from the backends' side (a router's, or the backend's
    /// own) about a request the LB sent on to a backend: to the client.
    ErrorToClient,
    /// An ICMP error from the clients' side (the client's, or a router's)
    /// about a reply the LB sent to a client: to the frontend.
    ErrorToBackend,
}

/// How a frame was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Random,
    WellFormed(Target),
    Mutated(Target),
}

/// The side of the LB a frame arrives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// `up0`, where clients are.
    Clients,
    /// `dn0`, where backends are.
    Backends,
}

/// One frame to send, and how it was made.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub kind: Kind,
    pub side: Side,
    pub frame: Vec<u8>,
    /// The mutations applied to the well-formed frame, in order.
    pub mutations: Vec<Mutation>,
}

/// Where a built frame's headers are, for field-aware mutations.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub l3: usize,
    pub l4: usize,
    pub v4: bool,
    /// The transport protocol number.
    pub proto: u8,
    /// In an ICMP error, the offsets of the quoted network and transport
    /// headers.
    pub quote: Option<(usize, usize)>,
}

/// The next frame of the run: 15% random bytes, 40% well-formed, 45% mutated.
pub(crate) fn case(rng: &mut TestRng, model: &Model) -> Case {
    let roll = rng.random_range(0..100);
    if roll < 15 {
        return random_case(rng);
    }
    let target = pick(rng, &TARGETS);
    let spec = Spec::random(rng, target, model);
    let (mut frame, layout) = spec.build();
    let (kind, mutations) = if roll < 55 {
        (Kind::WellFormed(target), Vec::new())
    } else {
        (Kind::Mutated(target), mutate(rng, &mut frame, layout))
    };
    Case {
        kind,
        side: spec.side,
        frame,
        mutations,
    }
}

const TARGETS: [Target; 9] = [
    Target::Service,
    Target::DsrService,
    Target::UnknownPort,
    Target::NodeOther,
    Target::Unrelated,
    Target::TrackedReply,
    Target::UnknownReply,
    Target::ErrorToClient,
    Target::ErrorToBackend,
];

/// Random bytes of a random length.
fn random_case(rng: &mut TestRng) -> Case {
    let mut frame = vec![0; rng.random_range(MIN_FRAME..=MAX_FRAME)];
    rng.fill(&mut frame[..]);
    Case {
        kind: Kind::Random,
        side: pick(rng, &[Side::Clients, Side::Backends]),
        frame,
        mutations: Vec::new(),
    }
}

/// A uniformly chosen element of `items`.
pub(crate) fn pick<T: Copy>(rng: &mut TestRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

/// One of `items`, or, as often as each of them, whatever `any` draws.
pub(crate) fn pick_or<T: Copy>(
    rng: &mut TestRng,
    items: &[T],
    any: impl FnOnce(&mut TestRng) -> T,
) -> T {
    let i = rng.random_range(0..=items.len());
    items.get(i).copied().unwrap_or_else(|| any(rng))
}

/// Random bytes of the given length.
pub(crate) fn random_bytes(rng: &mut TestRng, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    rng.fill(&mut bytes[..]);
    bytes
}

/// The transport header of a well-formed frame.
#[derive(Clone, Copy, Debug)]
enum Transport {
    /// TCP with these flags and this many 4-byte words of options.
    Tcp {
        flags: u8,
        options: usize,
    },
    Udp,
    IcmpEcho,
    /// An ICMP(v6) destination unreachable, as routers send back.
    IcmpError,
    /// An ICMP(v6) message of this type, code and rest of header, quoting
    /// the payload: a packet whose network header is `quoted_header` bytes.
    IcmpQuote {
        icmp_type: u8,
        code: u8,
        rest: [u8; 4],
        quoted_header: usize,
    },
    /// Another IP protocol (IP-in-IP, GRE, ESP, SCTP, ...).
    Other(u8),
}

/// How a datagram is cut into fragments.
#[derive(Clone, Copy, Debug)]
enum Fragment {
    Whole,
    /// The first fragment: offset 0, more fragments follow.
    First,
    /// A later fragment at this offset (in 8-byte units).
    Later {
        offset: u16,
        more: bool,
    },
}

impl Fragment {
    /// Mostly whole; 8% first fragments, 7% later ones.
    fn random(rng: &mut TestRng) -> Self {
        match rng.random_range(0..100) {
            0..8 => Self::First,
            8..15 => Self::Later {
                offset: rng.random_range(1..=IpFragOffset::MAX_U16),
                more: rng.random_bool(0.5),
            },
            _ => Self::Whole,
        }
    }
}

/// IPv6 extension headers before the transport header (in RFC 8200 order).
#[derive(Clone, Copy, Debug, Default)]
struct Ip6Extensions {
    hop_by_hop: bool,
    destination: bool,
    routing: bool,
    /// An Authentication Header: the datapath does not walk past it.
    auth: bool,
}

impl Ip6Extensions {
    fn random(rng: &mut TestRng) -> Self {
        Self {
            hop_by_hop: rng.random_bool(0.5),
            destination: rng.random_bool(0.5),
            routing: rng.random_bool(0.5),
            auth: rng.random_bool(0.2),
        }
    }
}

/// A well-formed frame, field by field.
#[derive(Clone, Debug)]
struct Spec {
    side: Side,
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    ip4_options: Vec<u8>,
    ip6_extensions: Ip6Extensions,
    fragment: Fragment,
    /// An IPv6 fragment has Destination Options after its Fragment header
    /// (`put_dst_opts_after_fragment`); nothing for a whole packet.
    dst_opts_after_fragment: bool,
    /// The IP identification (IPv4's, or that of IPv6's Fragment header):
    /// one of two, so that a later fragment is now and then of another
    /// datagram between the same ends than the first fragment sent last.
    ip_id: u16,
    transport: Transport,
    payload: Vec<u8>,
    /// Ethernet padding after the datagram.
    trailer: Vec<u8>,
    /// The payload is cut so that the frame is no longer.
    max_frame: usize,
}

impl Spec {
    fn random(rng: &mut TestRng, target: Target, model: &Model) -> Self {
        let (endpoints, transport, payload) = match target {
            Target::ErrorToClient | Target::ErrorToBackend => icmp_error(rng, target, model),
            _ => {
                let endpoints = endpoints(rng, target, model);
                let transport = transport(rng, endpoints.proto);
                let len = payload_len(rng);
                (endpoints, transport, random_bytes(rng, len))
            }
        };
        // Now and then as long as the frame allows, past what the fixture's
        // links carry (an error's quote then ends in bytes it does not hold).
        let oversized = rng.random_bool(0.03);
        let mut payload = payload;
        if oversized {
            let more = MAX_OVERSIZED_FRAME.saturating_sub(payload.len());
            payload.extend(random_bytes(rng, more));
        }
        Self {
            max_frame: if oversized {
                MAX_OVERSIZED_FRAME
            } else {
                MAX_FRAME
            },
            transport,
            payload,
            ..Self::around(rng, endpoints)
        }
    }

    /// A frame between `endpoints`, its link and network headers random;
    /// no transport (`Transport::Other(59)`, no next header), no payload.
    fn around(rng: &mut TestRng, endpoints: Endpoints) -> Self {
        let Endpoints { src, dst, side, .. } = endpoints;
        let v4 = src.is_ipv4();
        Self {
            side,
            src_mac: host_mac(rng, src.ip()),
            vlan: rng.random_bool(0.12).then(|| rng.random_range(0..4096)),
            src,
            dst,
            // Mostly a fresh TTL; now and then one that expires here.
            ttl: if rng.random_bool(0.8) {
                64
            } else {
                pick(rng, &[0, 1, 2, 255])
            },
            ip4_options: if v4 && rng.random_bool(0.15) {
                let words = rng.random_range(1..=10);
                random_bytes(rng, 4 * words)
            } else {
                Vec::new()
            },
            ip6_extensions: if !v4 && rng.random_bool(0.25) {
                Ip6Extensions::random(rng)
            } else {
                Ip6Extensions::default()
            },
            fragment: Fragment::random(rng),
            dst_opts_after_fragment: !v4 && rng.random_bool(0.3),
            ip_id: pick(rng, &IP_IDS),
            transport: Transport::Other(59),
            payload: Vec::new(),
            trailer: if rng.random_bool(0.1) {
                let len = rng.random_range(1..=24);
                random_bytes(rng, len)
            } else {
                Vec::new()
            },
            max_frame: MAX_FRAME,
        }
    }

    /// The frame, no longer than `max_frame` (the payload is cut to fit),
    /// and where its headers are.
    fn build(&self) -> (Vec<u8>, Layout) {
        let mut spec = self.clone();
        loop {
            let (frame, layout) = spec.build_once();
            let excess = frame.len().saturating_sub(spec.max_frame);
            if excess == 0 || spec.payload.is_empty() {
                return (frame, layout);
            }
            spec.payload
                .truncate(spec.payload.len().saturating_sub(excess));
        }
    }

    fn build_once(&self) -> (Vec<u8>, Layout) {
        let ip = self.ip_headers();
        let l3 = 14 + if self.vlan.is_some() { 4 } else { 0 };
        let l4 = l3 + ip.header_len();
        let mut layout = Layout {
            l3,
            l4,
            v4: self.src.is_ipv4(),
            proto: self.proto_number(),
            quote: match self.transport {
                Transport::IcmpQuote { quoted_header, .. } => {
                    Some((l4 + 8, l4 + 8 + quoted_header))
                }
                _ => None,
            },
        };
        let dst_mac = match self.side {
            Side::Clients => UP_MAC,
            Side::Backends => DOWN_MAC,
        };
        let ethernet = PacketBuilder::ethernet2(self.src_mac, dst_mac);
        let step = match self.vlan {
            Some(id) => ethernet
                .single_vlan(VlanId::try_new(id).expect("a 12-bit VLAN ID"))
                .ip(ip),
            None => ethernet.ip(ip),
        };
        let mut frame = Vec::new();
        self.write_transport(step, &mut frame);
        if !layout.v4 {
            self.fix_fragment_field(&mut frame, l3);
            if self.dst_opts_after_fragment {
                self.put_dst_opts_after_fragment(&mut frame, &mut layout);
            }
        }
        frame.extend_from_slice(&self.trailer);
        (frame, layout)
    }

    /// Writes the offset and M flag of the IPv6 Fragment header in `frame`
    /// (its IPv6 header at `l3`) as RFC 8200 §4.5 lays them out: the 13-bit
    /// offset in the top of the 16-bit field, M its bottom bit (Linux's
    /// `IP6_OFFSET` 0xfff8, `IP6_MF` 0x0001). etherparse 0.19 writes M in the
    /// top bit of the field's second byte and the offset's low five bits
    /// below it: a first fragment would go out as one at offset 16.
    fn fix_fragment_field(&self, frame: &mut [u8], l3: usize) {
        let (offset, more) = match self.fragment {
            Fragment::Whole => return,
            Fragment::First => (0, true),
            Fragment::Later { offset, more } => (offset, more),
        };
        let at = fragment_header_at(frame, l3);
        let field = offset << 3 | u16::from(more);
        frame[at + 2..at + 4].copy_from_slice(&field.to_be_bytes());
    }

    /// Puts Destination Options after the Fragment header of an IPv6
    /// fragment in `frame`, as a host sends a datagram that has them after
    /// the headers each fragment repeats (RFC 8200 §4.5: they are then part
    /// of what is fragmented). Every fragment's Fragment header names them
    /// (60). A first fragment carries them, 8 bytes (one PadN option) naming
    /// what followed the Fragment header, and its transport header moves on
    /// by as much; a later one carries only the datagram's middle, which
    /// nothing then names. etherparse places a Destination Options header
    /// after the Fragment header only with a Routing header before it, hence
    /// the bytes written here.
    fn put_dst_opts_after_fragment(&self, frame: &mut Vec<u8>, layout: &mut Layout) {
        if matches!(self.fragment, Fragment::Whole) {
            return;
        }
        let l3 = layout.l3;
        let at = fragment_header_at(frame, l3);
        let next = frame[at];
        frame[at] = IPPROTO_DSTOPTS;
        if matches!(self.fragment, Fragment::First) {
            frame.splice(at + 8..at + 8, [next, 0, 1, 4, 0, 0, 0, 0]);
            let payload_len = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) + 8;
            frame[l3 + 4..l3 + 6].copy_from_slice(&payload_len.to_be_bytes());
            layout.l4 += 8;
            layout.quote = layout.quote.map(|(l3, l4)| (l3 + 8, l4 + 8));
        }
    }

    fn proto_number(&self) -> u8 {
        match self.transport {
            Transport::Tcp { .. } => 6,
            Transport::Udp => 17,
            Transport::IcmpEcho | Transport::IcmpError | Transport::IcmpQuote { .. }
                if self.src.is_ipv4() =>
            {
                1
            }
            Transport::IcmpEcho | Transport::IcmpError | Transport::IcmpQuote { .. } => 58,
            Transport::Other(proto) => proto,
        }
    }

    fn ip_headers(&self) -> IpHeaders {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let (more_fragments, offset) = match self.fragment {
                    Fragment::Whole => (false, 0),
                    Fragment::First => (true, 0),
                    Fragment::Later { offset, more } => (more, offset),
                };
                let header = Ipv4Header {
                    time_to_live: self.ttl,
                    identification: self.ip_id,
                    dont_fragment: matches!(self.fragment, Fragment::Whole),
                    more_fragments,
                    fragment_offset: IpFragOffset::try_new(offset).expect("a 13-bit offset"),
                    source: src.octets(),
                    destination: dst.octets(),
                    options: Ipv4Options::try_from(&self.ip4_options[..]).expect("IPv4 options"),
                    ..Ipv4Header::default()
                };
                IpHeaders::Ipv4(header, Default::default())
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let header = Ipv6Header {
                    hop_limit: self.ttl,
                    source: src.octets(),
                    destination: dst.octets(),
                    ..Ipv6Header::default()
                };
                IpHeaders::Ipv6(header, self.ip6_extension_headers())
            }
            _ => unreachable!("endpoints are of one family"),
        }
    }

    fn ip6_extension_headers(&self) -> Ipv6Extensions {
        // The next-header fields are filled in by the builder.
        let raw = || Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).expect("PadN");
        let e = self.ip6_extensions;
        Ipv6Extensions {
            hop_by_hop_options: e.hop_by_hop.then(raw),
            destination_options: e.destination.then(raw),
            routing: e.routing.then(|| Ipv6RoutingExtensions {
                routing: raw(),
                final_destination_options: None,
            }),
            fragment: match self.fragment {
                Fragment::Whole => None,
                Fragment::First => Some(Ipv6FragmentHeader::new(
                    IpNumber(0),
                    IpFragOffset::ZERO,
                    true,
                    u32::from(self.ip_id),
                )),
                Fragment::Later { offset, more } => Some(Ipv6FragmentHeader::new(
                    IpNumber(0),
                    IpFragOffset::try_new(offset).expect("a 13-bit offset"),
                    more,
                    u32::from(self.ip_id),
                )),
            },
            auth: e
                .auth
                .then(|| IpAuthHeader::new(IpNumber(0), 7, 1, &[0; 12]).expect("an AH")),
        }
    }

    fn write_transport(&self, step: PacketBuilderStep<IpHeaders>, out: &mut Vec<u8>) {
        let (sport, dport) = (self.src.port(), self.dst.port());
        let v4 = self.src.is_ipv4();
        let written = match self.transport {
            Transport::Tcp { flags, options } => step
                .tcp_header(tcp_header(sport, dport, flags, options))
                .write(out, &self.payload),
            Transport::Udp => step.udp(sport, dport).write(out, &self.payload),
            Transport::IcmpEcho if v4 => step
                .icmpv4_echo_request(sport, dport)
                .write(out, &self.payload),
            Transport::IcmpEcho => step
                .icmpv6_echo_request(sport, dport)
                .write(out, &self.payload),
            Transport::IcmpError if v4 => step
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::Port,
                ))
                .write(out, &self.payload),
            Transport::IcmpError => step
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    icmpv6::DestUnreachableCode::Port,
                ))
                .write(out, &self.payload),
            Transport::IcmpQuote {
                icmp_type,
                code,
                rest,
                ..
            } if v4 => step
                .icmpv4(Icmpv4Type::Unknown {
                    type_u8: icmp_type,
                    code_u8: code,
                    bytes5to8: rest,
                })
                .write(out, &self.payload),
            Transport::IcmpQuote {
                icmp_type,
                code,
                rest,
                ..
            } => step
                .icmpv6(Icmpv6Type::Unknown {
                    type_u8: icmp_type,
                    code_u8: code,
                    bytes5to8: rest,
                })
                .write(out, &self.payload),
            Transport::Other(proto) => step.write(out, IpNumber(proto), &self.payload),
        };
        written.expect("a well-formed frame");
    }
}

/// A TCP header with `flags` (FIN, SYN, RST, PSH, ACK, URG, ECE, CWR from
/// bit 0 up) and `options` 4-byte words of option bytes.
fn tcp_header(sport: u16, dport: u16, flags: u8, options: usize) -> TcpHeader {
    let mut tcp = TcpHeader::new(sport, dport, 1_000_000, 64240);
    let bit = |n: u8| flags & (1 << n) != 0;
    (tcp.fin, tcp.syn, tcp.rst, tcp.psh) = (bit(0), bit(1), bit(2), bit(3));
    (tcp.ack, tcp.urg, tcp.ece, tcp.cwr) = (bit(4), bit(5), bit(6), bit(7));
    if tcp.ack {
        tcp.acknowledgment_number = 7_000_000;
    }
    // NOPs: the datapath reads no option, and any length up to 40 is valid.
    tcp.set_options_raw(&vec![1; options * 4])
        .expect("at most 40 bytes of options");
    tcp
}

/// Who sends a frame to whom, over what, and where it arrives.
#[derive(Clone, Copy, Debug)]
struct Endpoints {
    src: SocketAddr,
    dst: SocketAddr,
    /// The transport the target calls for, if any.
    proto: Option<Protocol>,
    side: Side,
}

impl Endpoints {
    /// A request from a client: from the clients' side, now and then from the backends'.
    fn request(rng: &mut TestRng, dst: SocketAddr, proto: Option<Protocol>) -> Self {
        let src = SocketAddr::new(client(rng, dst.is_ipv4()), client_port(rng));
        let side = if rng.random_bool(0.9) {
            Side::Clients
        } else {
            Side::Backends
        };
        Self {
            src,
            dst,
            proto,
            side,
        }
    }

    /// A backend's packet to a client: from the backends' side, now and then
    /// from the clients'.
    fn reply(rng: &mut TestRng, src: SocketAddr, dst: SocketAddr, proto: Protocol) -> Self {
        let side = if rng.random_bool(0.9) {
            Side::Backends
        } else {
            Side::Clients
        };
        Self {
            src,
            dst,
            proto: Some(proto),
            side,
        }
    }
}

/// The endpoints of a frame for `target`.
fn endpoints(rng: &mut TestRng, target: Target, model: &Model) -> Endpoints {
    let v4 = rng.random_bool(0.5);
    let (vip, node) = if v4 {
        (IpAddr::from(VIP4), IpAddr::from(NODE4))
    } else {
        (IpAddr::from(VIP6), IpAddr::from(NODE6))
    };
    match target {
        // Now and then a tracked flow's client again, half the time one
        // that source NAT gave another source.
        Target::Service if model.conntrack.len() > 0 && rng.random_bool(0.25) => {
            let translated = model.conntrack.source_natted();
            let flow = if !translated.is_empty() && rng.random_bool(0.5) {
                translated[rng.random_range(0..translated.len())]
            } else {
                let (flow, _) = model
                    .conntrack
                    .nth(rng.random_range(0..model.conntrack.len()))
                    .expect("a tracked flow");
                flow
            };
            again(rng, model, &flow)
        }
        Target::Service | Target::DsrService => {
            let dsr = target == Target::DsrService;
            let services: Vec<_> = model
                .fixture
                .services
                .iter()
                .filter(|s| s.dsr == dsr)
                .collect();
            let service = services[rng.random_range(0..services.len())];
            let mut endpoints = Endpoints::request(rng, service.frontend, Some(service.proto));
            // Now and then a backend of the service reaching it: when Maglev
            // picks that backend, the flow is source-NATed (hairpin).
            let own: Vec<_> = service
                .backends
                .iter()
                .filter(|b| b.is_ipv4() == service.frontend.is_ipv4())
                .collect();
            if !own.is_empty() && rng.random_bool(0.15) {
                let backend = own[rng.random_range(0..own.len())];
                endpoints.src.set_ip(backend.ip());
            }
            endpoints
        }
        Target::UnknownPort => {
            let port = pick_or(rng, &[81, 22, 443, 8080], |rng| rng.random());
            Endpoints::request(rng, SocketAddr::new(vip, port), None)
        }
        Target::NodeOther => {
            // SSH, the kubelet, the NodePort range without a service, its edges.
            let ports = [22, 10250, NODEPORT + 1, 29999, 32767];
            let port = pick_or(rng, &ports, |rng| rng.random());
            Endpoints::request(rng, SocketAddr::new(node, port), None)
        }
        Target::Unrelated => {
            let dst = SocketAddr::new(unrelated(rng, v4), rng.random());
            Endpoints::request(rng, dst, None)
        }
        // Now and then to a port a source-NATed flow gave up.
        Target::TrackedReply if !model.conntrack.stale().is_empty() && rng.random_bool(0.1) => {
            let stale = model.conntrack.stale();
            let (tuple, _) = stale[rng.random_range(0..stale.len())];
            Endpoints::reply(rng, tuple.src, tuple.dst, tuple.proto)
        }
        Target::TrackedReply if model.conntrack.len() > 0 => {
            // A quarter of the time to a flow source NAT gave another source.
            let translated = model.conntrack.source_natted();
            let (flow, backend) = if !translated.is_empty() && rng.random_bool(0.25) {
                let flow = translated[rng.random_range(0..translated.len())];
                (flow, model.conntrack.backend(&flow).expect("tracked"))
            } else {
                model
                    .conntrack
                    .nth(rng.random_range(0..model.conntrack.len()))
                    .expect("a tracked flow")
            };
            let src = dsr_answering(rng, model, &flow, backend);
            let dst = answered(rng, model, &flow);
            Endpoints::reply(rng, src, dst, flow.proto)
        }
        Target::TrackedReply | Target::UnknownReply => {
            let port = if rng.random_bool(0.8) {
                BACKEND_PORT
            } else {
                rng.random()
            };
            let src = SocketAddr::new(backend(rng, v4), port);
            let dst = SocketAddr::new(client(rng, v4), rng.random());
            let proto = pick(rng, &[Protocol::Tcp, Protocol::Udp]);
            Endpoints::reply(rng, src, dst, proto)
        }
        Target::ErrorToClient | Target::ErrorToBackend => {
            unreachable!("ICMP errors have endpoints of their own (`icmp_error`)")
        }
    }
}

/// A request from the client of tracked `flow`, from the same port: to its
/// frontend again (a source-NATed flow's requests, a SYN re-creating a
/// closing flow), or to another frontend of its protocol and family, whose
/// backend may be the same (a clash of reply tuples, source-NATed).
fn again(rng: &mut TestRng, model: &Model, flow: &Flow) -> Endpoints {
    let others: Vec<_> = model
        .fixture
        .services
        .iter()
        .filter(|s| {
            s.proto == flow.proto
                && s.frontend.is_ipv4() == flow.dst.is_ipv4()
                && s.frontend != flow.dst
        })
        .collect();
    // Those that may pick the flow's backend, most likely to clash.
    let backend = model.conntrack.backend(flow);
    let sharing: Vec<_> = others
        .iter()
        .filter(|s| !s.dsr && backend.is_some_and(|b| s.backends.contains(&b)))
        .collect();
    let dst = match rng.random_range(0..4) {
        0 | 1 => flow.dst,
        2 if !sharing.is_empty() => sharing[rng.random_range(0..sharing.len())].frontend,
        _ if !others.is_empty() => others[rng.random_range(0..others.len())].frontend,
        _ => flow.dst,
    };
    let side = if rng.random_bool(0.9) {
        Side::Clients
    } else {
        Side::Backends
    };
    Endpoints {
        src: flow.src,
        dst,
        proto: Some(flow.proto),
        side,
    }
}

/// An ICMP or ICMPv6 error for `target` (`ErrorToClient`, `ErrorToBackend`)
/// about a flow the run tracks (mostly) or one it does not: who sends it to
/// whom, its header, and its quote.
fn icmp_error(rng: &mut TestRng, target: Target, model: &Model) -> (Endpoints, Transport, Vec<u8>) {
    let tracked = model.conntrack.len();
    let stale = model.conntrack.stale();
    if target == Target::ErrorToClient && !stale.is_empty() && rng.random_bool(0.1) {
        // About a request to a port a source-NATed flow gave up.
        let (tuple, _) = stale[rng.random_range(0..stale.len())];
        return error_to_client(rng, tuple.dst, tuple.src, tuple.proto);
    }
    let (flow, backend) = if tracked > 0 && rng.random_bool(0.85) {
        model
            .conntrack
            .nth(rng.random_range(0..tracked))
            .expect("a tracked flow")
    } else {
        untracked_flow(rng, model)
    };
    let v4 = flow.src.is_ipv4();
    let backend = dsr_answering(rng, model, &flow, backend);
    if target == Target::ErrorToClient {
        // About the request as the LB sent it on: from the source the
        // backend saw (source NAT's, mostly, when there is one) to it.
        let source = answered(rng, model, &flow);
        return error_to_client(rng, source, backend, flow.proto);
    }
    // About the reply as the LB sent it back: frontend to client.
    let src = match (rng.random_range(0..10), v4) {
        (0..5, _) => flow.src.ip(),
        (5..9, true) => CLIENT_ROUTER4.into(),
        (5..9, false) => CLIENT_ROUTER6.into(),
        _ => unrelated(rng, v4),
    };
    let dst = match (rng.random_range(0..10), v4) {
        (0..9, _) => flow.dst.ip(),
        (_, true) => pick(rng, &[VIP4, NODE4]).into(),
        (_, false) => pick(rng, &[VIP6, NODE6]).into(),
    };
    let quoted = quote(rng, flow.dst, flow.src, flow.proto);
    error_between(rng, src, dst, Side::Clients, quoted)
}

/// An error from the backends' side about a request the LB sent on, from
/// `source` to `backend` over `proto`: a router's, the backend's own, or a
/// stranger's, mostly to `source`'s address.
fn error_to_client(
    rng: &mut TestRng,
    source: SocketAddr,
    backend: SocketAddr,
    proto: Protocol,
) -> (Endpoints, Transport, Vec<u8>) {
    let v4 = source.is_ipv4();
    let src = match (rng.random_range(0..10), v4) {
        (0..5, true) => BACKEND_ROUTER4.into(),
        (0..5, false) => BACKEND_ROUTER6.into(),
        // The backend's own port unreachable.
        (5..9, _) => backend.ip(),
        _ => unrelated(rng, v4),
    };
    let dst = if rng.random_bool(0.9) {
        source.ip()
    } else {
        client(rng, v4)
    };
    let quoted = quote(rng, source, backend, proto);
    error_between(rng, src, dst, Side::Backends, quoted)
}

/// An error from `src` to `dst` quoting `quoted` (the packet and its
/// network header's length), mostly from `side` (the side the error is
/// about), now and then from the other.
fn error_between(
    rng: &mut TestRng,
    src: IpAddr,
    dst: IpAddr,
    side: Side,
    (quote, quoted_header): (Vec<u8>, usize),
) -> (Endpoints, Transport, Vec<u8>) {
    let side = match (side, rng.random_bool(0.9)) {
        (side, true) => side,
        (Side::Clients, false) => Side::Backends,
        (Side::Backends, false) => Side::Clients,
    };
    let endpoints = Endpoints {
        src: SocketAddr::new(src, 0),
        dst: SocketAddr::new(dst, 0),
        proto: None,
        side,
    };
    (
        endpoints,
        icmp_header(rng, src.is_ipv4(), quoted_header),
        quote,
    )
}

/// Where the backend of tracked `flow` sends its replies: the source it
/// saw, source NAT's when the flow has one — but now and then, then, the
/// client's own (another flow's reply tuple, or none).
fn answered(rng: &mut TestRng, model: &Model, flow: &Flow) -> SocketAddr {
    match model.conntrack.snat(flow) {
        Some(snat) if rng.random_bool(0.85) => snat,
        _ => flow.src,
    }
}

/// Where the backend of `flow` answers its client from: its own address,
/// or, for a direct-server-return flow, now and then — always, when the
/// backend is of the other family — the frontend's: it holds that address
/// itself, sees the client's packet unchanged, and its replies and errors
/// go to the client without the LB (unless the LB routes them).
fn dsr_answering(rng: &mut TestRng, model: &Model, flow: &Flow, backend: SocketAddr) -> SocketAddr {
    let cross_family = backend.is_ipv4() != flow.src.is_ipv4();
    if model.conntrack.is_dsr(flow) && (cross_family || rng.random_bool(0.5)) {
        flow.dst
    } else {
        backend
    }
}

/// A flow the run may not track: a client of the fixture's kind to a
/// configured frontend, and one of its family's backends.
fn untracked_flow(rng: &mut TestRng, model: &Model) -> (Flow, SocketAddr) {
    let services = &model.fixture.services;
    let service = &services[rng.random_range(0..services.len())];
    let v4 = service.frontend.is_ipv4();
    let client = SocketAddr::new(client(rng, v4), client_port(rng));
    let backend = SocketAddr::new(backend(rng, v4), BACKEND_PORT);
    (Flow::new(client, service.frontend, service.proto), backend)
}

/// An ICMP or ICMPv6 header: mostly an error the datapath looks into
/// (RFC 792: destination unreachable, time exceeded, parameter problem;
/// RFC 4443: destination unreachable, packet too big, time exceeded,
/// parameter problem), with plausible codes and fields; else any other type.
fn icmp_header(rng: &mut TestRng, v4: bool, quoted_header: usize) -> Transport {
    let mtu =
        |rng: &mut TestRng| -> u16 { pick_or(rng, &[576, 1280, 1400, 1492], |rng| rng.random()) };
    let (icmp_type, code, rest) = match (rng.random_bool(0.9), v4) {
        (true, true) => match rng.random_range(0..4) {
            0 => {
                let [hi, lo] = mtu(rng).to_be_bytes();
                (3, 4, [0, 0, hi, lo])
            }
            1 => (3, rng.random_range(0..16), [0; 4]),
            2 => (11, rng.random_range(0..2), [0; 4]),
            _ => (12, rng.random_range(0..3), [rng.random(), 0, 0, 0]),
        },
        (true, false) => match rng.random_range(0..4) {
            0 => (1, rng.random_range(0..7), [0; 4]),
            1 => (2, 0, u32::from(mtu(rng)).to_be_bytes()),
            2 => (3, rng.random_range(0..2), [0; 4]),
            _ => (
                4,
                rng.random_range(0..3),
                u32::from(rng.random::<u8>()).to_be_bytes(),
            ),
        },
        // Echo reply, redirect, echo request, timestamp, anything.
        (false, true) => (
            pick_or(rng, &[0, 5, 8, 13], |rng| rng.random()),
            rng.random(),
            rng.random(),
        ),
        // Echo request and reply, router solicitation, neighbour
        // solicitation, and error types not looked into; anything.
        (false, false) => (
            pick_or(rng, &[128, 129, 133, 135, 0, 5, 127], |rng| rng.random()),
            rng.random(),
            rng.random(),
        ),
    };
    Transport::IcmpQuote {
        icmp_type,
        code,
        rest,
        quoted_header,
    }
}

/// The packet an error quotes — `src` to `dst` over `proto`, as it was sent
/// (a TTL one less, now and then another transport, a fragment, IPv4
/// options or IPv6 extension headers) — cut as routers cut it: whole, to the
/// network header and 8 transport bytes (RFC 792), a little more, or short
/// of the ports. Returns it and the length of its network header.
fn quote(rng: &mut TestRng, src: SocketAddr, dst: SocketAddr, proto: Protocol) -> (Vec<u8>, usize) {
    let v4 = src.is_ipv4();
    let endpoints = Endpoints {
        src,
        dst,
        proto: Some(proto),
        side: Side::Clients,
    };
    let quoted = Spec {
        vlan: None,
        ttl: pick_or(rng, &[63, 64, 1], |rng| rng.random()),
        ip4_options: if v4 && rng.random_bool(0.1) {
            let words = rng.random_range(1..=10);
            random_bytes(rng, 4 * words)
        } else {
            Vec::new()
        },
        ip6_extensions: if !v4 && rng.random_bool(0.1) {
            Ip6Extensions::random(rng)
        } else {
            Ip6Extensions::default()
        },
        fragment: match rng.random_range(0..100) {
            0..5 => Fragment::First,
            5..10 => Fragment::Later {
                offset: rng.random_range(1..=IpFragOffset::MAX_U16),
                more: rng.random_bool(0.5),
            },
            _ => Fragment::Whole,
        },
        transport: if rng.random_bool(0.9) {
            transport(rng, Some(proto))
        } else {
            transport(rng, None)
        },
        payload: {
            let len = payload_len(rng);
            random_bytes(rng, len)
        },
        trailer: Vec::new(),
        ..Spec::around(rng, endpoints)
    };
    let (frame, layout) = quoted.build();
    let packet = &frame[layout.l3..];
    let header = layout.l4 - layout.l3;
    let len = match rng.random_range(0..100) {
        0..35 => packet.len(),
        35..65 => header + 8,
        // To the TCP checksum, and past it.
        65..80 => header + rng.random_range(9..=28),
        80..90 => rng.random_range(0..header + 8),
        _ => rng.random_range(0..=packet.len()),
    };
    (packet[..len.min(packet.len())].to_vec(), header)
}

/// A client address: mostly the fixture's clients (whose neighbours the LB
/// knows), else strangers on their subnet, anywhere, or hosts of the fixture.
fn client(rng: &mut TestRng, v4: bool) -> IpAddr {
    match (rng.random_range(0..100), v4) {
        (0..50, true) => pick(rng, &[CLIENT4, CLIENT4_2]).into(),
        (0..50, false) => pick(rng, &[CLIENT6, CLIENT6_2]).into(),
        (50..65, true) => Ipv4Addr::new(198, 18, 0, rng.random()).into(),
        (50..65, false) => Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, rng.random()).into(),
        (65..90, _) => unrelated(rng, v4),
        (90..95, _) => backend(rng, v4),
        (_, true) => NODE4.into(),
        (_, false) => NODE6.into(),
    }
}

/// Client ports: mostly a small pool, so that flows repeat and replies find them.
fn client_port(rng: &mut TestRng) -> u16 {
    if rng.random_bool(0.75) {
        rng.random_range(40000..40032)
    } else {
        rng.random()
    }
}

/// An address that is neither a frontend nor a fixture host: anywhere at
/// all (multicast, loopback and unspecified included), or one that has no route.
fn unrelated(rng: &mut TestRng, v4: bool) -> IpAddr {
    match (rng.random_bool(0.8), v4) {
        (true, true) => Ipv4Addr::from(rng.random::<u32>()).into(),
        (true, false) => Ipv6Addr::from(rng.random::<u128>()).into(),
        (false, true) => UNROUTED4.into(),
        (false, false) => Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, rng.random()).into(),
    }
}

fn backend(rng: &mut TestRng, v4: bool) -> IpAddr {
    let i = rng.random_range(0..4);
    if v4 {
        BACKENDS4[i].into()
    } else {
        BACKENDS6[i].into()
    }
}

/// The MAC of a fixture host, or a random locally administered one.
fn host_mac(rng: &mut TestRng, ip: IpAddr) -> [u8; 6] {
    let fixture_host = [CLIENT4, CLIENT4_2].map(IpAddr::from).contains(&ip)
        || [CLIENT6, CLIENT6_2].map(IpAddr::from).contains(&ip)
        || BACKENDS4.map(IpAddr::from).contains(&ip)
        || BACKENDS6.map(IpAddr::from).contains(&ip);
    if fixture_host {
        mac_of(ip)
    } else {
        let tail: [u8; 4] = rng.random();
        [0x02, 0, tail[0], tail[1], tail[2], tail[3]]
    }
}

/// The transport: the target's protocol four times in five, else any.
fn transport(rng: &mut TestRng, proto: Option<Protocol>) -> Transport {
    let tcp = |rng: &mut TestRng| Transport::Tcp {
        // SYN, SYN-ACK, ACK, PSH-ACK, FIN-ACK, RST, RST-ACK, anything.
        flags: pick_or(rng, &[0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14], |rng| {
            rng.random()
        }),
        options: if rng.random_bool(0.2) {
            rng.random_range(1..=10)
        } else {
            0
        },
    };
    match proto {
        Some(Protocol::Tcp) if rng.random_bool(0.8) => tcp(rng),
        Some(Protocol::Udp) if rng.random_bool(0.8) => Transport::Udp,
        _ => match rng.random_range(0..10) {
            0..4 => tcp(rng),
            4..7 => Transport::Udp,
            7 => Transport::IcmpEcho,
            8 => Transport::IcmpError,
            // IP-in-IP, IPv6-in-IP, GRE, ESP, no next header, SCTP, reserved.
            _ => Transport::Other(pick(rng, &[4, 41, 47, 50, 59, 132, 255])),
        },
    }
}

/// Mostly short payloads, now and then up to a full frame.
fn payload_len(rng: &mut TestRng) -> usize {
    match rng.random_range(0..10) {
        0..6 => rng.random_range(0..=32),
        6..9 => rng.random_range(33..=256),
        _ => rng.random_range(257..=1400),
    }
}

/// Where the Fragment header of the IPv6 fragment `frame` (its IPv6 header at
/// `l3`) is: after any Hop-by-Hop, Routing and Destination Options headers.
fn fragment_header_at(frame: &[u8], l3: usize) -> usize {
    let mut next = frame[l3 + 6];
    let mut at = l3 + 40;
    while matches!(next, IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS) {
        next = frame[at];
        at += (usize::from(frame[at + 1]) + 1) * 8;
    }
    assert_eq!(next, IPPROTO_FRAGMENT, "the Fragment header follows");
    at
}
