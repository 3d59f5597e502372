//! Per-CPU packet counters of the parser: one slot per packet class and one per
//! malformed/truncated reason.

/// Packets and bytes seen for one counter slot on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding; every bit pattern is valid.
unsafe impl aya::Pod for Counter {}

/// Defines a dense `#[repr(u32)]` counter enum: each variant is one slot of a
/// per-CPU array, with a stable snake_case name for CLI output and metrics.
macro_rules! counter_enum {
    (
        $(#[doc = $enum_doc:literal])*
        $enum:ident {
            $( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )+
        }
    ) => {
        $(#[doc = $enum_doc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $enum {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl From<$enum> for u32 {
            fn from(counter: $enum) -> u32 {
                counter as u32
            }
        }

        impl $enum {
            /// Every counter, in slot order.
            pub const ALL: &'static [$enum] = &[$($enum::$variant,)+];

            /// Number of slots in the counter array.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// Stable snake_case name, used in CLI output and metrics labels.
            pub const fn name(self) -> &'static str {
                match self { $( $enum::$variant => $name, )+ }
            }
        }
    };
}

counter_enum! {
    /// What the parser made of a frame. Each variant is one slot of the
    /// `PARSE_STATS` per-CPU array; every frame lands in exactly one slot.
    ParseCounter {
    /// TCP over IPv4 (first or only fragment).
    Tcp4 = "tcp4",
    /// UDP over IPv4 (first or only fragment).
    Udp4 = "udp4",
    /// ICMP over IPv4.
    Icmp4 = "icmp4",
    /// IPv4 with another transport protocol.
    OtherL4Ip4 = "other_l4_ip4",
    /// A non-first IPv4 fragment: it carries no transport header.
    Fragment4 = "fragment4",
    /// TCP over IPv6.
    Tcp6 = "tcp6",
    /// UDP over IPv6.
    Udp6 = "udp6",
    /// ICMPv6.
    Icmp6 = "icmp6",
    /// IPv6 with another transport protocol (after any extension headers).
    OtherL4Ip6 = "other_l4_ip6",
    /// A non-first IPv6 fragment: it carries no transport header.
    Fragment6 = "fragment6",
    /// ARP.
    Arp = "arp",
    /// Any other EtherType (including a second, stacked VLAN tag).
    OtherEthertype = "other_ethertype",
    /// Shorter than an Ethernet header.
    TruncatedEthernet = "truncated_ethernet",
    /// 802.1Q TPID with no room for the tag.
    TruncatedVlan = "truncated_vlan",
    /// EtherType IPv4 with less than a minimal IPv4 header.
    TruncatedIp4 = "truncated_ip4",
    /// IPv4 version field is not 4.
    BadIp4Version = "bad_ip4_version",
    /// IPv4 IHL below 5, or options running past the frame.
    BadIp4HeaderLength = "bad_ip4_header_length",
    /// IPv4 total length shorter than its header or longer than the frame.
    BadIp4TotalLength = "bad_ip4_total_length",
    /// EtherType IPv6 with less than a fixed IPv6 header.
    TruncatedIp6 = "truncated_ip6",
    /// IPv6 version field is not 6.
    BadIp6Version = "bad_ip6_version",
    /// IPv6 payload length longer than the frame.
    BadIp6PayloadLength = "bad_ip6_payload_length",
    /// An IPv6 extension header runs past the datagram.
    TruncatedIp6Extension = "truncated_ip6_extension",
    /// More IPv6 extension headers than the parser walks (see `MAX_IP6_EXTENSIONS`).
    TooManyIp6Extensions = "too_many_ip6_extensions",
    /// TCP header shorter than 20 bytes in the datagram (bytes after the IP
    /// datagram are Ethernet padding, not packet).
    TruncatedTcp = "truncated_tcp",
    /// TCP data offset below 5 or past the datagram.
    BadTcpDataOffset = "bad_tcp_data_offset",
    /// UDP header shorter than 8 bytes in the datagram.
    TruncatedUdp = "truncated_udp",
    /// ICMP header shorter than 8 bytes in the datagram.
    TruncatedIcmp4 = "truncated_icmp4",
    /// ICMPv6 header shorter than 8 bytes in the datagram.
    TruncatedIcmp6 = "truncated_icmp6",
    }
}

impl ParseCounter {
    /// True for the slots that count a malformed or truncated frame.
    pub const fn is_malformed(self) -> bool {
        self as u32 >= ParseCounter::TruncatedEthernet as u32
    }

    /// True for a well-formed IPv4 packet (whatever its transport).
    pub const fn is_ip4(self) -> bool {
        self as u32 <= ParseCounter::Fragment4 as u32
    }

    /// True for a well-formed IPv6 packet (whatever its transport).
    pub const fn is_ip6(self) -> bool {
        self as u32 >= ParseCounter::Tcp6 as u32 && self as u32 <= ParseCounter::Fragment6 as u32
    }
}

counter_enum! {
    /// What `xdp_lb` did with a frame: every frame lands in exactly one slot of
    /// the `VERDICT_STATS` per-CPU array. `Pass*` leave the frame untouched unless
    /// the name says it was rewritten.
    Verdict {
    /// Not IPv4/IPv6 (other EtherTypes, and ARP that is not a request for
    /// an announced address): passed untouched.
    PassNotIp = "pass_not_ip",
    /// Malformed or truncated (see the parser counters): passed untouched.
    PassMalformed = "pass_malformed",
    /// Not addressed to a frontend address and not a reply of a tracked flow.
    PassNotFrontend = "pass_not_frontend",
    /// To a node address, but not to a NodePort service: SSH, the kubelet,
    /// replies to the node's own connections. Passed untouched.
    PassNodeAddress = "pass_node_address",
    /// To a frontend address with a protocol xlb does not balance (ICMP, other L4).
    PassOtherProtocol = "pass_other_protocol",
    /// The TTL or hop limit would expire here: passed untouched so the kernel
    /// answers with ICMP time exceeded.
    PassTtlExpired = "pass_ttl_expired",
    /// To a VIP-only address on a port no service listens on.
    DropUnknownPort = "drop_unknown_port",
    /// To a service with no backend in its table, and not answerable: a TCP
    /// reset (never answered), or a packet with IPv4 options or IPv6
    /// extension headers (see `RefuseReset`, `RefuseUnreachable`).
    DropNoBackend = "drop_no_backend",
    /// A packet for a service whose endpoints are all on other nodes, under
    /// a `Local` traffic policy: dropped, as kube-proxy drops it
    /// (`SERVICE_DROP_WITHOUT_BACKENDS`).
    DropNoLocalBackend = "drop_no_local_backend",
    /// A packet from a client outside the networks a frontend accepts
    /// (`SERVICE_SOURCE_RANGES`, `loadBalancerSourceRanges`).
    DropSourceRange = "drop_source_range",
    /// A fragment addressed to a VIP-only address of a protocol xlb does not
    /// balance (neither TCP nor UDP), so no ports to balance its later
    /// fragments by. TCP and UDP fragments are balanced (`FRAGMENTS`), IPv6
    /// ones with Destination Options after the Fragment header too (a later
    /// one, which names those, is looked up as UDP then TCP:
    /// `DropFragmentUntracked` when neither is found).
    DropFragment = "drop_fragment",
    /// Translated to a backend (DNAT) and sent out by XDP_TX or a redirect.
    ForwardToBackend = "forward_to_backend",
    /// Translated to a backend and passed to the kernel: the next hop's
    /// neighbour entry is not known yet, or the FIB lookup did not succeed.
    PassToBackendViaStack = "pass_to_backend_via_stack",
    /// A reply translated back (reverse NAT) and sent out by XDP_TX or a redirect.
    ForwardReply = "forward_reply",
    /// A reply translated back and passed to the kernel (neighbour unknown, or
    /// FIB lookup failed).
    PassReplyViaStack = "pass_reply_via_stack",
    /// An ICMP or ICMPv6 error from the client's side about a tracked flow's
    /// reply (e.g. fragmentation needed on the way to the client): sent on to
    /// the flow's backend, outer and quoted headers translated.
    ForwardIcmpErrorToBackend = "forward_icmp_error_to_backend",
    /// An ICMP or ICMPv6 error from the backend's side about a tracked flow's
    /// request (e.g. a router's packet too big): sent on to the client with
    /// the quoted header translated back to the frontend.
    ForwardIcmpErrorToClient = "forward_icmp_error_to_client",
    /// A translated ICMP error passed to the kernel (neighbour unknown, FIB
    /// lookup failed, or a VLAN-tagged frame).
    PassIcmpErrorViaStack = "pass_icmp_error_via_stack",
    /// Translated, but larger than the MTU of the interface toward its next
    /// hop (with DF, or IPv6): answered as a router would, with ICMP
    /// fragmentation needed or ICMPv6 packet too big, quoting the packet as
    /// its sender sent it: a client's request from the frontend, a
    /// backend's reply from the address the reply went to.
    AnswerTooBig = "answer_too_big",
    /// Larger than the MTU toward its next hop, and not answerable: IPv4
    /// options or IPv6 extension headers, which push the ports out of the
    /// 8 quoted transport bytes.
    DropTooBig = "drop_too_big",
    /// TCP to a service with no backend: answered with a reset, as a host
    /// without a listener answers (kube-proxy rejects too; never a silent
    /// black hole).
    RefuseReset = "refuse_reset",
    /// UDP to a service with no backend: answered with ICMP / ICMPv6 port
    /// unreachable.
    RefuseUnreachable = "refuse_unreachable",
    /// Direct server return: encapsulated toward the backend and sent out by
    /// XDP_TX or a redirect.
    ForwardEncapsulated = "forward_encapsulated",
    /// Encapsulated and passed to the kernel (neighbour unknown, FIB lookup
    /// failed, or a VLAN-tagged frame).
    PassEncapsulatedViaStack = "pass_encapsulated_via_stack",
    /// Direct server return that cannot be done: IPv6 to an IPv4 backend (no
    /// 6-in-4 here), no encapsulation source configured for the backend's
    /// family, or no headroom to grow the frame.
    DropEncapUnsupported = "drop_encap_unsupported",
    /// An ARP request for an address announced on the interface it came in
    /// on (L2 announcements, `L2_ANNOUNCE`): answered with the ARP reply
    /// (XDP_TX).
    TxArpReply = "tx_arp_reply",
    /// A valid IPv6 neighbour solicitation (RFC 4861, 7.1.1) for an address
    /// announced on the interface it came in on: answered with a neighbour
    /// advertisement (XDP_TX).
    TxNeighbourAdvert = "tx_neighbour_advert",
    /// A later TCP or UDP fragment to a VIP-only address whose first fragment
    /// was not seen: it came first (out of order), its entry in `FRAGMENTS`
    /// was evicted, or the first fragment was not balanced (refused,
    /// dropped). Without the first fragment's ports it has no flow to join.
    /// An IPv6 later fragment whose Fragment header names Destination
    /// Options counts here when neither a UDP nor a TCP first fragment of
    /// its datagram was seen.
    /// (Last, so that the older verdicts keep their slots and names.)
    DropFragmentUntracked = "drop_fragment_untracked",
    }
}

impl Verdict {
    /// True for a packet that became its own refusal (a TCP reset, an ICMP
    /// port unreachable) and went back to its sender.
    pub const fn is_refusal(self) -> bool {
        matches!(self, Verdict::RefuseReset | Verdict::RefuseUnreachable)
    }
}

counter_enum! {
    /// Connection-tracking events of `xdp_lb` (a frame may count several).
    CtEvent {
    /// A new flow was selected by Maglev and an entry created.
    Created = "created",
    /// A packet of a tracked flow kept its backend.
    Hit = "hit",
    /// An entry was found but had timed out: treated as a new flow.
    Expired = "expired",
    /// The flow's backend is gone (retired, or its ID reused): re-selected.
    ReselectedBackendGone = "reselected_backend_gone",
    /// A TCP SYN on a closing entry (a new connection on an old 5-tuple): re-selected.
    ReselectedClosing = "reselected_closing",
    /// A conntrack insert failed (the tables not yet set up): the packet still
    /// goes to the Maglev backend, but is not tracked.
    InsertFailed = "insert_failed",
    /// The new-flow flood guard's rate was reached on this CPU: the packet
    /// goes to its Maglev backend, but no entry is created.
    NotTrackedFloodGuard = "not_tracked_flood_guard",
    /// A reply matched its flow and was translated back.
    ReplyHit = "reply_hit",
    /// A reply entry whose flow entry is gone or disagrees: deleted, the packet
    /// is treated as untracked.
    ReplyOrphan = "reply_orphan",
    /// A new flow was given a source-NAT port.
    SnatAllocated = "snat_allocated",
    /// A new flow needed source NAT and found no free port in the range (or
    /// no source address of its family is configured): it is refused, as a
    /// service without backends would be, and nothing is tracked.
    SnatExhausted = "snat_exhausted",
    }
}

counter_enum! {
    /// What `xdp_decap` (on a direct-server-return backend) did with a frame:
    /// every frame lands in exactly one slot of the `DECAP_STATS` per-CPU
    /// array. All but `Decapsulated` pass the frame untouched.
    DecapVerdict {
    /// An IPIP, IPv4-in-IPv6 or IP6IP6 packet for a configured VIP: its outer
    /// header stripped, the inner packet passed to the stack.
    Decapsulated = "decapsulated",
    /// Not an encapsulated packet.
    PassNotEncapsulated = "pass_not_encapsulated",
    /// Encapsulated, but the inner destination is not a configured VIP (this
    /// host strips only what is meant for it).
    PassNotOurVip = "pass_not_our_vip",
    /// Encapsulated, but the inner header is cut short or not of the family
    /// the outer one says.
    PassMalformed = "pass_malformed",
    }
}

counter_enum! {
    /// What became of each sampled flow event (`crate::events`): written to
    /// the `FLOW_EVENTS` ring, or lost because the ring was full (its reader
    /// fell behind: the agent drains it as events come). Each sampled event
    /// lands in exactly one slot of the `FLOW_EVENT_STATS` per-CPU array.
    FlowEventOutcome {
    /// Written to the ring.
    Written = "written",
    /// Not written: the ring had no room.
    LostRingFull = "lost_ring_full",
    }
}

counter_enum! {
    /// What `tc_probe_encap` (at the egress of the LB's uplinks) did with a
    /// packet carrying a health probe's mark (`crate::probe`): each lands in
    /// exactly one slot of the `PROBE_STATS` per-CPU array. Packets without
    /// such a mark pass untouched and uncounted. A probe packet that cannot
    /// go through the tunnel is dropped, so its probe fails rather than
    /// passing by another path.
    ProbeVerdict {
    /// Wrapped for its backend and redirected toward it.
    Wrapped = "wrapped",
    /// The mark is in the probe range, but its slot names no backend (a
    /// probe whose target was just removed, or another program's mark).
    DropUnknownMark = "drop_unknown_mark",
    /// No `--encap-source` of the backend's family is configured.
    DropNoEncapSource = "drop_no_encap_source",
    /// IPv6 to an IPv4 backend (as `drop_encap_unsupported` for traffic), or
    /// not IP over Ethernet.
    DropEncapUnsupported = "drop_encap_unsupported",
    /// The kernel gave no room for the outer header.
    DropNoRoom = "drop_no_room",
    /// The packet's headers are cut short.
    DropMalformed = "drop_malformed",
    /// The FIB has no route to the backend (or routes it to this host), or
    /// the redirect toward it was refused.
    DropNoRoute = "drop_no_route",
    /// Wrapped, it does not fit the egress toward the backend.
    DropTooBig = "drop_too_big",
    }
}

/// The parser walks at most this many IPv6 extension headers; a chain that is
/// longer is counted as `TooManyIp6Extensions` (and passed untouched).
pub const MAX_IP6_EXTENSIONS: usize = 6;

#[cfg(test)]
mod tests {
    extern crate std;
    use std::{collections::BTreeSet, vec::Vec};

    use super::{CtEvent, FlowEventOutcome, ParseCounter, ProbeVerdict, Verdict};

    fn check_dense_and_unique(slots: &[u32], names: &[&str]) {
        for (i, slot) in slots.iter().enumerate() {
            assert_eq!(*slot as usize, i, "{} is out of slot order", names[i]);
        }
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "duplicate counter name in {names:?}"
        );
    }

    #[test]
    fn slots_are_dense_and_names_unique() {
        let (s, n): (Vec<u32>, Vec<&str>) = ParseCounter::ALL
            .iter()
            .map(|c| (*c as u32, c.name()))
            .unzip();
        check_dense_and_unique(&s, &n);
        let (s, n): (Vec<u32>, Vec<&str>) =
            Verdict::ALL.iter().map(|c| (*c as u32, c.name())).unzip();
        check_dense_and_unique(&s, &n);
        let (s, n): (Vec<u32>, Vec<&str>) =
            CtEvent::ALL.iter().map(|c| (*c as u32, c.name())).unzip();
        check_dense_and_unique(&s, &n);
        let (s, n): (Vec<u32>, Vec<&str>) = FlowEventOutcome::ALL
            .iter()
            .map(|c| (*c as u32, c.name()))
            .unzip();
        check_dense_and_unique(&s, &n);
        let (s, n): (Vec<u32>, Vec<&str>) = ProbeVerdict::ALL
            .iter()
            .map(|c| (*c as u32, c.name()))
            .unzip();
        check_dense_and_unique(&s, &n);
    }

    #[test]
    fn families_cover_exactly_the_well_formed_ip_classes() {
        for c in ParseCounter::ALL {
            let ip4 = c.name().ends_with("ip4") || c.name().ends_with('4');
            let ip6 = c.name().ends_with("ip6") || c.name().ends_with('6');
            let well_formed_ip = !c.is_malformed() && (ip4 || ip6);
            assert_eq!(c.is_ip4(), well_formed_ip && ip4, "{}", c.name());
            assert_eq!(c.is_ip6(), well_formed_ip && ip6, "{}", c.name());
        }
    }
}
