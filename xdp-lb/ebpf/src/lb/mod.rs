//! The load-balancing core shared by every program: classify a parsed frame,
//! consult conntrack, select a backend, and decide the translation. It reads the
//! packet only through what `flow::Packet` extracted and never writes it:
//! applying a `Decision` (the rewrite and the forwarding) is the attaching
//! program's part, so the TC program reuses this module unchanged with its own
//! skb-aware rewrite.
//!
//! The paths are BPF subprograms (`#[inline(never)]`: BPF-to-BPF calls), so the
//! verifier sees small functions and each keeps its own stack frame within the
//! 512-byte limit. Each call costs every packet that takes it, though (see
//! `Packet::slot`): `decide`, on every packet's path, is inlined.

pub mod affinity;
pub mod conntrack;
pub mod events;
pub mod flow;
pub mod flow_table;
pub mod fragment;
pub mod icmp;
pub mod select;

use core::mem::MaybeUninit;

use aya_ebpf::btf_maps::lpm_trie::Key;

use xdp_lb_common::{
    addr::{Addr, filter_bit_v4, filter_bit_v6, words_are_v4_mapped},
    backend::NO_BACKEND,
    config::Config,
    conntrack::FlowTuple,
    service::{
        ADDRESS_NODE, ADDRESS_VIP, AddressKey, FrontendKey, SERVICE_AFFINITY_CLIENT_IP,
        SERVICE_DROP_WITHOUT_BACKENDS, SERVICE_DSR, SERVICE_SOURCE_RANGES, SOURCE_RANGE_FULL,
        Service, SourceRange,
    },
    stats::{ParseCounter, Verdict},
};

use crate::{
    lb::{
        conntrack::Tracked,
        flow::{Flow, MAX_L3_OFFSET, Packet},
    },
    maps::{
        ADDRESSES, CONFIG, SERVICES, SOURCE_RANGES, filter_has, maybe_node_address,
        maybe_vip_address,
    },
    packet::FrameSource,
    parse::Parsed,
};

/// What to do with a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave it untouched and hand it to the kernel, counted as `verdict`.
    Pass,
    /// Drop it, counted as `verdict`.
    Drop,
    /// Rewrite it as `nat` says and forward it; the attaching program counts
    /// the verdict, by how the frame left.
    Translate,
    /// A whole TCP or UDP packet for a service with no backend: the attaching
    /// program answers it (a TCP reset, ICMP port unreachable) and counts how.
    Refuse,
    /// Direct server return: wrap the packet, unchanged, in an outer header
    /// to `nat`'s backend and forward it; the attaching program counts how.
    Encapsulate,
}

/// The core's answer for one frame. A struct rather than a data-carrying enum:
/// it is returned by BPF subprograms, and the kernel rejects the BTF that Rust
/// enums with data become. The rewrite of `Action::Translate` is written to the
/// `Nat` the caller passes in: returning a whole `Nat` for every pass would
/// zero it each time, and a zeroed struct is a byte-loop `memset` call in BPF.
#[derive(Clone, Copy)]
pub struct Decision {
    pub action: Action,
    pub verdict: Verdict,
}

impl Decision {
    #[inline(always)]
    const fn pass(verdict: Verdict) -> Self {
        Self {
            action: Action::Pass,
            verdict,
        }
    }

    #[inline(always)]
    const fn drop(verdict: Verdict) -> Self {
        Self {
            action: Action::Drop,
            verdict,
        }
    }

    /// A refusal; its verdict is counted by the attaching program, by the
    /// answer it wrote (`verdict` here is the one for no answer).
    #[inline(always)]
    const fn refuse() -> Self {
        Self {
            action: Action::Refuse,
            verdict: Verdict::DropNoBackend,
        }
    }

    /// An encapsulation toward the backend already written to the caller's
    /// `Nat` (direct server return).
    #[inline(always)]
    const fn encapsulate() -> Self {
        Self {
            action: Action::Encapsulate,
            verdict: Verdict::ForwardEncapsulated,
        }
    }

    /// A translation or, for a DSR service, an encapsulation.
    #[inline(always)]
    const fn toward_backend(service: &Service) -> Self {
        if service.flags & SERVICE_DSR != 0 {
            Self::encapsulate()
        } else {
            Self::translate()
        }
    }

    /// How a tracked flow goes on, as its entry says; `None` for no entry.
    #[inline(always)]
    const fn tracked(tracked: Tracked) -> Option<Self> {
        match tracked {
            Tracked::No => None,
            Tracked::Translate => Some(Self::translate()),
            Tracked::Encapsulate => Some(Self::encapsulate()),
        }
    }

    /// A translation (already written to the caller's `Nat`). Its verdict is
    /// counted by the attaching program, which alone knows how the frame left
    /// (sent on, or handed to the kernel); `verdict` here is not read.
    #[inline(always)]
    const fn translate() -> Self {
        Self {
            action: Action::Translate,
            verdict: Verdict::ForwardToBackend,
        }
    }
}

/// Which end of the packet a translation replaces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// DNAT: the destination becomes the backend.
    Destination,
    /// Reverse NAT of a reply: the source becomes the frontend.
    Source,
}

/// A NAT rewrite: which end, the new address and port, and who to count it for.
///
/// `repr(C, align(8))` with the addresses first: BPF copies a value only as
/// wide as its known alignment, so the two addresses move in 64-bit words
/// rather than byte by byte.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Nat {
    pub addr: Addr,
    /// The other end's address after the rewrite (unchanged without `snat`).
    pub peer_addr: Addr,
    /// The coarse clock when conntrack judged the flow: forwarding judges
    /// its cached next hop by it, so that a packet reads the clock once.
    pub now_ns: u64,
    pub service_id: u32,
    pub backend_id: u32,
    /// The backend ID's generation (a reused ID is another backend).
    pub generation: u32,
    pub port_be: u16,
    /// The other end's port after the rewrite, network order.
    pub peer_port_be: u16,
    pub end: End,
    /// Source NAT: the other end changes too, to `peer_addr`:`peer_port_be`
    /// (toward the backend, the source the flow was given; on a reply, the
    /// client it goes back to).
    pub snat: bool,
    /// A later fragment's translation (`lb::fragment`): only the IP
    /// header's addresses change, as it carries no transport header. Here
    /// rather than in `Flow`, whose every write the verifier follows: this
    /// lives in a per-CPU map slot (`icmp::nat_slot`).
    pub addresses_only: bool,
}
const _: () = assert!(core::mem::offset_of!(Nat, addr) == 0);

impl Nat {
    /// `addr` as two 8-byte words, read whole: it is the first field of an
    /// 8-aligned struct, where `is_v4_mapped` of a plain `Addr` reads it a
    /// byte at a time.
    #[inline(always)]
    pub fn addr_words(&self) -> [u64; 2] {
        // SAFETY: sixteen bytes at offset 0 of an 8-aligned struct (asserted
        // above), as two aligned u64s.
        unsafe { (&raw const self.addr).cast::<[u64; 2]>().read() }
    }

    /// `addr` is IPv4 (v4-mapped): the backend of a DSR flow is reached over
    /// IPv4.
    #[inline(always)]
    pub fn addr_is_v4(&self) -> bool {
        words_are_v4_mapped(self.addr_words())
    }

    /// The IPv4 address in `addr` (its last four bytes), as stored.
    #[inline(always)]
    pub fn addr_v4(&self) -> [u8; 4] {
        let low = self.addr_words()[1].to_ne_bytes();
        [low[4], low[5], low[6], low[7]]
    }
}

/// `Packet::marks`: the address filter holds the destination's bit.
pub const MARK_DST: u8 = 1;
/// `Packet::marks`: the address filter holds the source's bit.
pub const MARK_SRC: u8 = 2;

/// The address filter, read straight from the IP header: which ends of a
/// well-formed IP packet share a filter bit with a frontend or backend address
/// (`MARK_DST`, `MARK_SRC`). With neither, the packet is neither for a service
/// nor a reply of a tracked flow, so the caller passes it untouched as
/// `Verdict::PassNotFrontend` — what `decide` would answer — before anything
/// is copied out of the frame: most of what a NIC receives leaves here.
/// Otherwise the caller hands the marks to `decide` in `Packet::marks`, so the
/// filter is read once per packet. Anything that is not a well-formed IP
/// packet gets both marks: `decide` classifies it.
///
/// A subprogram of its own: inlined, its header reads would add to the
/// caller's frame, which the 512-byte limit counts with the deepest callee's.
#[inline(never)]
pub fn filter_marks<S: FrameSource>(source: &S, parsed: &Parsed) -> u8 {
    const BOTH: u8 = MARK_DST | MARK_SRC;
    let frame = &source.frame();
    let l3 = parsed.l3_offset;
    if l3 > MAX_L3_OFFSET {
        return BOTH;
    }
    let (src, dst) = if parsed.counter.is_ip4() {
        // Source and destination, bytes 12..20 of the IPv4 header.
        let Some(a) = frame.load::<8>(l3 + 12) else {
            return BOTH;
        };
        (
            filter_bit_v4([a[0], a[1], a[2], a[3]]),
            filter_bit_v4([a[4], a[5], a[6], a[7]]),
        )
    } else if parsed.counter.is_ip6() {
        // Source and destination, bytes 8..40 of the IPv6 header; the
        // filter takes their /64s.
        let Some(a) = frame.get::<[u8; 32]>(l3 + 8) else {
            return BOTH;
        };
        // SAFETY: `get` checked the 32 bytes lie inside the frame.
        unsafe {
            let a = &*a;
            (
                filter_bit_v6([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
                filter_bit_v6([a[16], a[17], a[18], a[19], a[20], a[21], a[22], a[23]]),
            )
        }
    } else {
        return BOTH;
    };
    marks(src, dst)
}

/// The general way of `Packet::fill_plain_ip4`, after `parse`: the frame's
/// marks (`filter_marks`), and, when it has any, `packet` filled for the
/// core with them. Without, the caller passes the frame: nothing more of it
/// is read.
#[inline(always)]
pub fn fill_if_marked<S: FrameSource>(packet: &mut Packet, source: &S, parsed: &Parsed) -> u8 {
    let marks = filter_marks(source, parsed);
    if marks != 0 {
        packet.fill(source, parsed);
        packet.marks = marks;
    }
    marks
}

/// The marks of a packet whose ends have the filter bits `src` and `dst`.
#[inline(always)]
pub fn marks(src: u32, dst: u32) -> u8 {
    let mut marks = 0;
    if filter_has(dst) {
        marks |= MARK_DST;
    }
    if filter_has(src) {
        marks |= MARK_SRC;
    }
    marks
}

/// Decides what to do with a frame (DESIGN.md, "Per packet, in this order").
/// When it returns `Action::Translate` it has initialised `nat`. A later
/// fragment of a tracked flow gets its first fragment's ports in its tuple.
/// Inlined into its callers, one BPF-to-BPF call fewer on every packet: the
/// packet's slot (`Packet::slot`) left the stack room for it.
#[inline(always)]
pub fn decide(packet: &mut Packet, nat: &mut MaybeUninit<Nat>) -> Decision {
    if packet.counter.is_malformed() {
        return Decision::pass(Verdict::PassMalformed);
    }
    if matches!(
        packet.counter,
        ParseCounter::Arp | ParseCounter::OtherEthertype
    ) {
        return Decision::pass(Verdict::PassNotIp);
    }
    if packet.has_flow {
        // Fragments branch off here, and only here: a whole packet pays one
        // test. A first fragment is remembered before it is balanced, so that
        // nothing after reads whether it was one (`Packet::fragment`, a stack
        // slot of its own): the verifier then walks the rest once for whole
        // packets and first fragments alike.
        if packet.is_fragment() {
            if packet.is_later_fragment() {
                return fragment::later(packet, nat, false);
            }
            fragment::remember_first(packet);
        }
        decide_flow(&packet.flow, packet.marks, nat)
    } else {
        not_balanced(packet)
    }
}

/// The reply direction only, for a hook that sees packets on their way into
/// a pod (`tc_lb_egress`): a backend's reply to a tracked flow is translated
/// back; everything else passes untouched. A request is balanced where it
/// enters the node, never on its way out.
#[inline(never)]
pub fn decide_reply(packet: &mut Packet, nat: &mut MaybeUninit<Nat>) -> Decision {
    if !packet.has_flow || packet.marks & MARK_SRC == 0 {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    if packet.is_fragment() {
        if packet.is_later_fragment() {
            return fragment::later(packet, nat, true);
        }
        fragment::remember_first(packet);
    }
    let Some(config) = CONFIG.get(0) else {
        return Decision::pass(Verdict::PassNotFrontend);
    };
    if conntrack::lookup_reply(&packet.flow, config, nat) {
        translate_unless_expiring(&packet.flow)
    } else {
        Decision::pass(Verdict::PassNotFrontend)
    }
}

/// `AddressInfo::kind` of an address that is not in `ADDRESSES`.
const NOT_A_FRONTEND: u32 = 0;

/// A whole TCP or UDP packet.
#[inline(never)]
fn decide_flow(flow: &Flow, marks: u8, nat: &mut MaybeUninit<Nat>) -> Decision {
    let Some(config) = CONFIG.get(0) else {
        // The array always has its slot; this keeps the verifier satisfied.
        return Decision::pass(Verdict::PassNotFrontend);
    };
    // The address filter first: most packets that are neither for a service
    // nor from a backend leave here, without a hash lookup.
    let dst_marked = marks & MARK_DST != 0;
    let src_marked = marks & MARK_SRC != 0;
    if !dst_marked && !src_marked {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    let key = FrontendKey {
        addr: flow.tuple.dst_addr,
        port_be: flow.tuple.dst_port_be,
        proto: flow.tuple.proto,
        _pad: 0,
    };
    // A request to a service on an address never declared a node address is
    // on a VIP-only address (frontends are declared after their address):
    // the service first, and the address lookup only when it is missing.
    let never_node = dst_marked && !maybe_node_address(&flow.tuple.dst_addr);
    // 0. A request to a VIP-only address looks for its tracked flow first,
    //    as netfilter's conntrack comes before kube-proxy's rules, which
    //    spares every established packet the service's hash lookup. The
    //    service would not change the answer: an entry is only ever made for
    //    a frontend, a frontend's removal deletes its flows
    //    (`Datapath::delete_flows_to`), and service settings
    //    (`loadBalancerSourceRanges` too) apply to new flows. An expiring
    //    packet is left to the service path, which passes it.
    //    A SYN, almost always a new flow, takes the service path: see step 3.
    let tracked_first =
        never_node && flow.ttl > 1 && !flow.is_syn() && maybe_vip_address(&flow.tuple.dst_addr);
    if tracked_first && let Some(decision) = Decision::tracked(conntrack::lookup(flow, config, nat))
    {
        return decision;
    }
    let mut service = if never_node {
        SERVICES.get_ptr(key)
    } else {
        None
    };
    // A plain integer, 0 for "not a frontend address": an `Option` here leaves
    // an undefined payload that LLVM may spill, and the verifier rejects
    // reading an uninitialised register.
    let kind = if service.is_some() {
        ADDRESS_VIP
    } else {
        address_kind(dst_marked, &flow.tuple.dst_addr)
    };

    // 1. The reply direction first: a backend answering a tracked flow. A
    //    VIP-only address never receives a reply (a client is never a VIP), so
    //    requests to a VIP skip this lookup; a node address can (the replies
    //    to its source-NATed flows, and to its own connections).
    if src_marked && kind != ADDRESS_VIP && conntrack::lookup_reply(flow, config, nat) {
        return translate_unless_expiring(flow);
    }

    // 2. Frontend lookup, with the node-address rule.
    if kind == NOT_A_FRONTEND {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    let is_node_address = kind == ADDRESS_NODE;
    if is_node_address && !in_nodeport_range(flow.tuple.dst_port_be, config) {
        return Decision::pass(Verdict::PassNodeAddress);
    }
    if service.is_none() && !(never_node && kind == ADDRESS_VIP) {
        service = SERVICES.get_ptr(key);
    }
    let Some(service) = service else {
        return if is_node_address {
            Decision::pass(Verdict::PassNodeAddress)
        } else {
            Decision::drop(Verdict::DropUnknownPort)
        };
    };
    // SAFETY: as above.
    let service = unsafe { *service };
    if service.flags & SERVICE_SOURCE_RANGES != 0 && !in_source_ranges(&service, &flow.tuple) {
        return Decision::drop(Verdict::DropSourceRange);
    }
    if flow.ttl <= 1 {
        // Before conntrack: an expiring packet creates no state.
        return Decision::pass(Verdict::PassTtlExpired);
    }

    // 3. Conntrack before Maglev: a tracked flow keeps its live backend
    //    (already looked for in step 0 on a VIP-only address). A SYN has its
    //    backend picked first (without ClientIP affinity), and its reply
    //    entry's bucket read just before its lookup reads its own
    //    (`conntrack::touch_reply`): the cold reads and writes of a new
    //    flow's two buckets overlap. A SYN of a flow that
    //    holds (a retransmission) goes on with its entry; the pick is dropped.
    let sticky = service.flags & SERVICE_AFFINITY_CLIENT_IP != 0;
    let picked_first = flow.is_syn() && !sticky;
    let mut backend = MaybeUninit::uninit();
    let mut id = NO_BACKEND;
    if picked_first {
        id = select::select(&flow.tuple, &service, config.hash_seed, &mut backend);
        if id != NO_BACKEND && service.flags & SERVICE_DSR == 0 {
            // SAFETY: `select` initialises the backend when it returns an ID.
            conntrack::touch_reply(flow, unsafe { backend.assume_init_ref() });
        }
    }
    if !tracked_first
        && let Some(decision) = Decision::tracked(conntrack::lookup(flow, config, nat))
    {
        return decision;
    }

    // 4. ClientIP affinity: the backend of the client's last new flow, while
    //    it holds; else Maglev (whose hash then leaves the source port out).
    if !picked_first {
        id = if sticky {
            affinity::recall(&flow.tuple.src_addr, &service, &mut backend)
        } else {
            NO_BACKEND
        };
        if id == NO_BACKEND {
            id = select::select(&flow.tuple, &service, config.hash_seed, &mut backend);
            if id != NO_BACKEND && sticky {
                // SAFETY: `select` initialises the backend when it returns an ID.
                affinity::remember(&flow.tuple.src_addr, &service, id, unsafe {
                    backend.assume_init_ref()
                });
            }
        }
    }
    if id == NO_BACKEND {
        return if service.flags & SERVICE_DROP_WITHOUT_BACKENDS != 0 {
            Decision::drop(Verdict::DropNoLocalBackend)
        } else {
            Decision::refuse()
        };
    }
    // SAFETY: `recall` and `select` initialise the backend when they return
    // an ID.
    let backend = unsafe { backend.assume_init_ref() };
    let mut created = conntrack::create(flow, id, backend, &service, nat);
    if created == conntrack::Created::NeedsPort {
        // SAFETY: `create` writes the translation before it asks for a port.
        created =
            conntrack::create_with_port(flow, service.flags, unsafe { nat.assume_init_mut() });
    }
    if created != conntrack::Created::Yes {
        // Source NAT found no free port: refused like a service without
        // backends, so the client learns at once.
        return Decision::refuse();
    }
    if config.flow_event_sampling != 0 {
        // SAFETY: written just above.
        events::new_flow(
            flow,
            unsafe { nat.assume_init_ref() },
            config.flow_event_sampling,
        );
    }
    Decision::toward_backend(&service)
}

/// The kind of `addr` (`ADDRESSES`), `NOT_A_FRONTEND` when it is none or
/// the address filter ruled it out (`marked` false).
#[inline(always)]
fn address_kind(marked: bool, addr: &Addr) -> u32 {
    if !marked {
        return NOT_A_FRONTEND;
    }
    match ADDRESSES.get_ptr(AddressKey { addr: *addr }) {
        // SAFETY: a map value of the right type, read once.
        Some(address) => unsafe { (*address).kind },
        None => NOT_A_FRONTEND,
    }
}

/// True when the client of `tuple` is in one of `service`'s networks. A
/// subprogram of its own: the key stays out of the caller's frame.
#[inline(never)]
fn in_source_ranges(service: &Service, tuple: &FlowTuple) -> bool {
    let key = Key::new(
        SOURCE_RANGE_FULL,
        SourceRange {
            service_be: service.id.to_be_bytes(),
            addr: tuple.src_addr,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// A frame that is IP but neither a TCP/UDP packet nor a fragment of one:
/// other protocols and their fragments. Untouched unless addressed to a
/// VIP-only address; there, fragments are dropped (no ports to balance a
/// later fragment by, and no reassembly here) and other protocols pass. A
/// node address's fragments are the node's own traffic and pass.
#[inline(never)]
fn not_balanced(packet: &Packet) -> Decision {
    if !packet.has_dst {
        return Decision::pass(Verdict::PassNotFrontend);
    }
    let at_vip = if packet.is_fragment() {
        Decision::drop(Verdict::DropFragment)
    } else {
        Decision::pass(Verdict::PassOtherProtocol)
    };
    unbalanced_to(packet.marks & MARK_DST != 0, &packet.dst, at_vip)
}

/// What comes of a frame to `dst` that no flow or service takes: `at_vip`
/// on a VIP-only address; passed untouched anywhere else, a node address's
/// being the node's own traffic. `marked`: the address filter holds `dst`.
#[inline(always)]
pub fn unbalanced_to(marked: bool, dst: &Addr, at_vip: Decision) -> Decision {
    match address_kind(marked, dst) {
        ADDRESS_VIP => at_vip,
        ADDRESS_NODE => Decision::pass(Verdict::PassNodeAddress),
        _ => Decision::pass(Verdict::PassNotFrontend),
    }
}

/// A packet whose TTL (hop limit) would expire here is passed untouched, so the
/// kernel answers with ICMP time exceeded, as a router would.
#[inline(always)]
fn translate_unless_expiring(flow: &Flow) -> Decision {
    if flow.ttl <= 1 {
        Decision::pass(Verdict::PassTtlExpired)
    } else {
        Decision::translate()
    }
}

#[inline(always)]
fn in_nodeport_range(port_be: u16, config: &Config) -> bool {
    let port = u16::from_be(port_be);
    port >= config.nodeport_min && port <= config.nodeport_max
}
