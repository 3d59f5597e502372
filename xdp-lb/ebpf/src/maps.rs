//! The maps of the programs, and the small helpers that update them.
//!
//! Sizes here are defaults: the loader sets every size at load time
//! (`LoadOptions`), and reads them back from the kernel.
use aya_ebpf::{
    bindings::{BPF_F_INNER_MAP, BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC},
    btf_maps::{Array, HashMap, HashOfMaps, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
    macros::btf_map,
};
use xdp_lb_common::{
    addr::{Addr, FILTER_WORDS, KIND_FILTER_WORDS, kind_filter_bit},
    affinity::{AffinityEntry, AffinityKey},
    backend::{Backend, BackendCpu, REPLY_HOP_SLOTS, ReplyHop},
    config::{Config, FloodWindow},
    conntrack::FlowTuple,
    events::FlowEvent,
    flow_table::{FlowBucket, FlowTables, ReplyBucket},
    fragment::{FragmentKey, FragmentPorts},
    neighbour::L2Announcement,
    probe::{PROBE_SLOTS, ProbeBackend},
    service::{AddressInfo, AddressKey, FrontendKey, Service, SourceRange},
    stats::{
        Counter, CtEvent, DecapVerdict, FlowEventOutcome, ParseCounter, ProbeVerdict, Verdict,
    },
};

/// Per-CPU packets and bytes per parser verdict (`ParseCounter` slot).
#[btf_map]
pub static PARSE_STATS: PerCpuArray<Counter, { ParseCounter::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU packets and bytes per `xdp_lb` verdict.
#[btf_map]
pub static VERDICT_STATS: PerCpuArray<Counter, { Verdict::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU connection-tracking events.
#[btf_map]
pub static CT_STATS: PerCpuArray<Counter, { CtEvent::COUNT as usize }> = PerCpuArray::new();

/// Per-CPU packets and bytes per service ID (both directions).
#[btf_map]
pub static SERVICE_STATS: PerCpuArray<Counter, 65536> = PerCpuArray::new();

/// The single counter of the benchmark programs `xdp_floor` and `xdp_sink`
/// (a datapath loaded for one of them never runs the other).
#[btf_map]
pub static FLOOR_STATS: PerCpuArray<Counter, 1> = PerCpuArray::new();

/// Per-CPU packets and bytes per `xdp_decap` verdict.
#[btf_map]
pub static DECAP_STATS: PerCpuArray<Counter, { DecapVerdict::COUNT as usize }> = PerCpuArray::new();

/// The VIPs `xdp_decap` strips encapsulated packets for (the value is not
/// read).
#[btf_map]
pub static DECAP_VIPS: HashMap<AddressKey, u32, 1024> = HashMap::new();

/// Per-CPU sampled flow events by outcome (written, or lost to a full
/// ring), with their bytes.
#[btf_map]
pub static FLOW_EVENT_STATS: PerCpuArray<Counter, { FlowEventOutcome::COUNT as usize }> =
    PerCpuArray::new();

/// Per-CPU packets and bytes per `tc_probe_encap` verdict.
#[btf_map]
pub static PROBE_STATS: PerCpuArray<Counter, { ProbeVerdict::COUNT as usize }> = PerCpuArray::new();

/// Probe slot (the low 16 bits of a probe's mark) → the backend its packets
/// are wrapped for. Not pinned: probes run only while an agent does, and
/// each agent writes its own. Entries are allocated as they are inserted:
/// an LB probes far fewer backends than there are slots.
#[btf_map]
pub static PROBE_BACKENDS: HashMap<u32, ProbeBackend, { PROBE_SLOTS as usize }, NO_PREALLOC> =
    HashMap::new();

const NO_PREALLOC: usize = BPF_F_NO_PREALLOC as usize;

/// The agent's probe mark base (slot 0; `xdp_lb_common::probe`). 0 until an
/// agent that probes through the tunnel writes it: no packet is a probe's.
#[btf_map]
pub static PROBE_MARK_BASE: Array<u32, 1> = Array::new();

/// The host sides of pod veths that carry the TC programs, by ifindex (the
/// value is not read): `xdp_lb` hands frames bound for them to the kernel
/// rather than redirecting them.
#[btf_map]
pub static POD_INTERFACES: HashMap<u32, u32, 4096> = HashMap::new();

/// The client networks of the services with `SERVICE_SOURCE_RANGES`
/// frontends, by service (the value is not read).
#[btf_map]
pub static SOURCE_RANGES: LpmTrie<SourceRange, u8, 65536> = LpmTrie::new();

/// Global settings (slot 0).
#[btf_map]
pub static CONFIG: Array<Config, 1> = Array::new();

/// The pinned layout's version (slot 0), written by the loader.
#[btf_map]
pub static LAYOUT: Array<u32, 1> = Array::new();

/// One bit per IPv4 /24 (and folded IPv6 /64) holding a frontend or backend
/// address: the first, lookup-free test of every packet
/// (`xdp_lb_common::addr::filter_bit`).
#[btf_map]
pub static ADDRESS_FILTER: Array<u64, { FILTER_WORDS as usize }> = Array::new();

/// One bit per hash of an address ever declared a node address
/// (`xdp_lb_common::addr::kind_filter_bit`): a service found on an address
/// whose bit is clear is on a VIP-only address, without an `ADDRESSES` lookup.
#[btf_map]
pub static NODE_FILTER: Array<u64, { KIND_FILTER_WORDS as usize }> = Array::new();

/// One bit per hash of an address ever declared a VIP-only address
/// (`xdp_lb_common::addr::kind_filter_bit`): only requests to an address
/// whose bit is set look for a tracked flow before the service.
#[btf_map]
pub static VIP_FILTER: Array<u64, { KIND_FILTER_WORDS as usize }> = Array::new();

/// Frontend addresses and their kind (VIP-only or node address).
#[btf_map]
pub static ADDRESSES: HashMap<AddressKey, AddressInfo, 4096> = HashMap::new();

/// L2 announcements: addresses `xdp_lb` answers ARP requests and IPv6
/// neighbour solicitations for, with the interface and MAC to answer on
/// (`xdp::neighbour`). Sized like `ADDRESSES` by the loader.
#[btf_map]
pub static L2_ANNOUNCE: HashMap<AddressKey, L2Announcement, 4096> = HashMap::new();

/// Frontends `(address, port, protocol)` → service.
#[btf_map]
pub static SERVICES: HashMap<FrontendKey, Service, 65536> = HashMap::new();

/// Backend records, indexed by backend ID.
#[btf_map]
pub static BACKENDS: Array<Backend, 65536> = Array::new();

/// Per CPU, by backend ID: the backend's packets and bytes (both directions)
/// and the cached next hop toward it, in one element (`BackendCpu`).
#[btf_map]
pub static BACKEND_CPU: PerCpuArray<BackendCpu, 65536> = PerCpuArray::new();

/// Per CPU, by a hash of the client address: the cached next hop of replies
/// toward the client. Direct-mapped rather than an LRU: more clients than
/// slots cost a FIB lookup and a slot write per reply, where an LRU would
/// add an allocation and an eviction to every miss.
#[btf_map]
pub static REPLY_HOPS: PerCpuArray<ReplyHop, { REPLY_HOP_SLOTS as usize }> = PerCpuArray::new();

/// Service ID → its Maglev table: slot 0 holds M, slots `1..=M` backend IDs.
/// `BPF_F_INNER_MAP` lets every inner array have its own size;
/// `BPF_F_MMAPABLE` lets the control plane write tables through a memory
/// mapping instead of one element per bpf(2) copy.
#[btf_map]
pub static MAGLEV_TABLES: HashOfMaps<u32, Array<u32, 252, TABLE_FLAGS>, 65536> = HashOfMaps::new();

/// The flags of every Maglev table (the loader creates them with the same).
const TABLE_FLAGS: usize = (BPF_F_INNER_MAP | BPF_F_MMAPABLE) as usize;

/// `BPF_F_NO_COMMON_LRU`: one LRU list per CPU. New flows then take free
/// entries and evict without a lock shared by every CPU (as Katran's per-CPU
/// LRU maps do); entries stay visible to all CPUs.
const NO_COMMON_LRU: usize = BPF_F_NO_COMMON_LRU as usize;

/// Flow entries, keyed by the client's tuple: a hash table of buckets the
/// datapath manages itself (`lb::flow_table`; layout in
/// `xdp_lb_common::flow_table`), sized by the loader to a power of two.
/// `BPF_F_MMAPABLE`: the agent frees a slot with a one-byte store into the
/// mapping, without rewriting the bucket under the other slots' flows.
#[btf_map]
pub static CONNTRACK: Array<FlowBucket, 32768, MMAPABLE> = Array::new();

/// Reply entries: the backend's tuple → the flow's key in `CONNTRACK`. Managed
/// as `CONNTRACK` is.
#[btf_map]
pub static CONNTRACK_REPLY: Array<ReplyBucket, 32768, MMAPABLE> = Array::new();

const MMAPABLE: usize = BPF_F_MMAPABLE as usize;

/// Both tables' hash seed and sizes, written by the loader when it creates
/// them.
#[btf_map]
pub static FLOW_TABLES: Array<FlowTables, 1> = Array::new();

/// ClientIP affinity: (client, service) → the backend of the client's last
/// new flow to it (`lb::affinity`). Sized like the conntrack.
#[btf_map]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityEntry, 131072, NO_COMMON_LRU> =
    LruHashMap::new();

/// Fragmented TCP and UDP datagrams being balanced: the reassembly key
/// (addresses, protocol, IP identification) → the first fragment's ports,
/// for the later fragments (`lb::fragment`, which finds the direction by
/// looking the flow up both ways). An LRU map: a
/// datagram's entry is needed only while its fragments pass, and the oldest
/// give way. One LRU list for all CPUs: a datagram's fragments may arrive on
/// different CPUs, and per-CPU lists would split a small map between them.
/// Sized by the loader (`MapSizes::fragments`).
#[btf_map]
pub static FRAGMENTS: LruHashMap<FragmentKey, FragmentPorts, 8192> = LruHashMap::new();

/// Sampled flow events (`lb::events`), for the loader's `FlowEvents` reader:
/// 256 KiB, some 2900 events.
#[btf_map]
pub static FLOW_EVENTS: RingBuf<FlowEvent, { 256 * 1024 }> = RingBuf::new();

/// Per CPU: the new-flow flood guard's current one-second window.
#[btf_map]
pub static FLOOD_GUARD: PerCpuArray<FloodWindow, 1> = PerCpuArray::new();

/// Words of a `PACKET` slot: room for one `lb::flow::Packet`.
pub const PACKET_WORDS: usize = 16;

/// Per CPU: the packet the program is balancing (`lb::flow::Packet`), kept
/// here rather than in the program's main frame (see `Packet::slot`).
#[btf_map]
pub static PACKET: PerCpuArray<[u64; PACKET_WORDS], 1> = PerCpuArray::new();

/// Words of an `ICMP_ERROR` slot: room for one `lb::icmp::IcmpError`.
pub const ICMP_ERROR_WORDS: usize = 24;

/// Per CPU: the ICMP error being translated (`lb::icmp::IcmpError`), kept
/// here rather than in a stack frame, which the 512-byte limit counts with
/// its callers' and callees'.
#[btf_map]
pub static ICMP_ERROR: PerCpuArray<[u64; ICMP_ERROR_WORDS], 1> = PerCpuArray::new();

/// Per CPU: the reply key a new flow claims, and the ones its source-NAT port
/// search tries (`lb::conntrack::search_key`), kept out of the stack frames of
/// the deepest chains of calls, which the 512-byte limit counts whole.
#[btf_map]
pub static PORT_SEARCH: PerCpuArray<FlowTuple, 1> = PerCpuArray::new();

/// One per-CPU scratch slot, see `forget_ranges`.
#[btf_map]
static SCRATCH: PerCpuArray<[u64; 2], 1> = PerCpuArray::new();

/// Returns `a` and `b` through a per-CPU map slot, so that the verifier sees
/// unknown scalars instead of the ranges it tracked.
///
/// The parser's paths leave header offsets with many different ranges; the
/// verifier would then walk everything after the parser once per range (state
/// explosion). Passing the offsets through here (and bounding them again where
/// they are used) collapses those states into one.
#[inline(always)]
pub fn forget_ranges(a: usize, b: usize) -> (usize, usize) {
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return (a, b);
    };
    let slot = slot.cast::<u64>();
    // SAFETY: this CPU's two-word slot; nothing else runs on this CPU meanwhile.
    unsafe {
        core::ptr::write_volatile(slot, a as u64);
        core::ptr::write_volatile(slot.add(1), b as u64);
        (
            core::ptr::read_volatile(slot) as usize,
            core::ptr::read_volatile(slot.add(1)) as usize,
        )
    }
}

/// False when `bit` of the address filter is clear.
#[inline(always)]
pub fn filter_has(bit: u32) -> bool {
    match ADDRESS_FILTER.get(bit / 64) {
        Some(word) => word & (1 << (bit % 64)) != 0,
        None => true,
    }
}

/// False when `addr` was never declared a node address (see `NODE_FILTER`).
#[inline(always)]
pub fn maybe_node_address(addr: &Addr) -> bool {
    kind_filter_has(&NODE_FILTER, addr)
}

/// False when `addr` was never declared a VIP-only address (see `VIP_FILTER`).
#[inline(always)]
pub fn maybe_vip_address(addr: &Addr) -> bool {
    kind_filter_has(&VIP_FILTER, addr)
}

/// False when `addr`'s bit in the address-kind filter `filter` is clear.
#[inline(always)]
fn kind_filter_has(filter: &Array<u64, { KIND_FILTER_WORDS as usize }>, addr: &Addr) -> bool {
    let bit = kind_filter_bit(addr);
    match filter.get(bit / 64) {
        Some(word) => word & (1 << (bit % 64)) != 0,
        None => true,
    }
}

#[inline(always)]
fn bump(slot: Option<*mut Counter>, bytes: usize) {
    if let Some(c) = slot {
        // SAFETY: per-CPU slot of this CPU; no other context writes it concurrently
        // (XDP and TC run with preemption disabled on one CPU).
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count_parse(counter: ParseCounter, bytes: usize) {
    bump(PARSE_STATS.get_ptr_mut(counter as u32), bytes);
}

#[inline(always)]
pub fn count_verdict(verdict: Verdict, bytes: usize) {
    bump(VERDICT_STATS.get_ptr_mut(verdict as u32), bytes);
}

#[inline(always)]
pub fn count_ct(event: CtEvent) {
    bump(CT_STATS.get_ptr_mut(event as u32), 0);
}

#[inline(always)]
pub fn count_service(id: u32, bytes: usize) {
    bump(SERVICE_STATS.get_ptr_mut(id), bytes);
}

#[inline(always)]
pub fn count_backend(id: u32, bytes: usize) {
    bump(
        BACKEND_CPU
            .get_ptr_mut(id)
            // SAFETY: a field of a live map value.
            .map(|slot| unsafe { &raw mut (*slot).counter }),
        bytes,
    );
}

#[inline(always)]
pub fn count_decap(verdict: DecapVerdict, bytes: usize) {
    bump(DECAP_STATS.get_ptr_mut(verdict as u32), bytes);
}

#[inline(always)]
pub fn count_flow_event(outcome: FlowEventOutcome, bytes: usize) {
    bump(FLOW_EVENT_STATS.get_ptr_mut(outcome as u32), bytes);
}

#[inline(always)]
pub fn count_probe(verdict: ProbeVerdict, bytes: usize) {
    bump(PROBE_STATS.get_ptr_mut(verdict as u32), bytes);
}

pub fn count_floor(bytes: usize) {
    bump(FLOOR_STATS.get_ptr_mut(0), bytes);
}
