//! Backend records: the `BACKENDS` array, indexed by backend ID.

use crate::{addr::Addr, config::NS_PER_SEC, pod::impl_pod, stats::Counter};

/// `Backend::flags`: the record is live. Flows keep a live backend even when it
/// is no longer in any Maglev table (draining, terminating).
pub const BACKEND_ACTIVE: u32 = 1 << 0;

/// `Backend::flags`: the backend is a pod of this node. Flows of a
/// `SERVICE_SNAT_REMOTE` service to it keep the client's source.
pub const BACKEND_LOCAL: u32 = 1 << 1;

/// ID 0 is never a backend: an all-zero table slot means "no backend".
pub const NO_BACKEND: u32 = 0;

/// One backend. Records are immutable: a changed address or port is a new ID.
/// An ID is reused only with a higher `generation`, and conntrack entries carry
/// the generation they were made with, so a reused ID never inherits old flows.
///
/// Aligned to 8 bytes, as `FlowTuple` is and for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// The backend address (IPv4-mapped for IPv4).
    pub addr: Addr,
    /// The backend port, in network byte order.
    pub port_be: u16,
    pub _pad: u16,
    /// `BACKEND_*` flags.
    pub flags: u32,
    /// Bumped every time this ID is given to a new backend.
    pub generation: u32,
    pub _reserved: u32,
}
const _: () = assert!(size_of::<Backend>() == 32);

impl Backend {
    /// A live backend record.
    pub const fn new(addr: Addr, port: u16, generation: u32) -> Self {
        Self {
            addr,
            port_be: port.to_be(),
            _pad: 0,
            flags: BACKEND_ACTIVE,
            generation,
            _reserved: 0,
        }
    }

    /// True when flows may still use this record.
    pub const fn is_active(&self) -> bool {
        self.flags & BACKEND_ACTIVE != 0
    }

    /// True when the backend is a pod of this node.
    pub const fn is_local(&self) -> bool {
        self.flags & BACKEND_LOCAL != 0
    }
}

/// A cached next hop toward a backend (`BackendCpu::hop`):
/// what `bpf_fib_lookup` answered, reused for a short while so that a busy
/// backend does not cost a FIB and neighbour lookup on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// When the lookup was made (`bpf_ktime_get_coarse_ns`); 0 = empty.
    pub looked_up_ns: u64,
    /// The interface the answer holds for (the lookup's input).
    pub ingress_ifindex: u32,
    /// Where to send.
    pub egress_ifindex: u32,
    /// Destination MAC, then source MAC: the frame's first 12 bytes.
    pub macs: [u8; 12],
    /// The generation of the backend ID the lookup was for: a reused ID is
    /// another backend, with a next hop of its own.
    pub generation: u32,
    /// The egress device's MTU (bytes of IP packet): a larger frame would be
    /// dropped by the redirect.
    pub mtu: u32,
    /// Nonzero when the egress device is a pod interface (`POD_INTERFACES`):
    /// the frame goes to the kernel, which sends it on. An XDP redirect into
    /// a veth delivers only when the peer runs XDP, and pods do not.
    pub via_stack: u32,
}
const _: () = assert!(size_of::<NextHop>() == 40);
// The datapath reads the MACs as an 8- and a 4-byte word.
const _: () = assert!(core::mem::offset_of!(NextHop, macs) % 8 == 0);

/// What each CPU keeps per backend ID (`BACKEND_CPU`): the backend's packet
/// counter and its cached next hop, in one element, because a forwarded packet
/// needs both. At 100 000 services a backend's element is cold, and each
/// per-CPU array element costs two cache misses (its pointer, then its data):
/// as two maps, the counter and the hop cost four.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCpu {
    /// Packets and bytes translated to or from the backend on this CPU.
    pub counter: Counter,
    pub hop: NextHop,
}
const _: () = assert!(size_of::<BackendCpu>() == 56);

/// A slot of the per-CPU reply next-hop cache (`REPLY_HOPS`): the client
/// whose hop it holds, and the hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyHop {
    pub client: Addr,
    pub hop: NextHop,
}
const _: () = assert!(size_of::<ReplyHop>() == 56);

/// Slots of the reply next-hop cache, per CPU: a power of two. A client is
/// cached in the slot its address hashes to (`addr::addr_hash`), and a
/// client hashing to a taken slot replaces its holder.
pub const REPLY_HOP_SLOTS: u32 = 4096;

/// How long a cached next hop is trusted. A changed route or neighbour reaches
/// a backend's packets at most this late.
pub const NEXT_HOP_TTL_NS: u64 = NS_PER_SEC;

impl_pod!(Backend, NextHop, BackendCpu, ReplyHop);
