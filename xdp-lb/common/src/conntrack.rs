//! Connection tracking: a flow entry keyed by the client's tuple, and a reply
//! entry keyed by the backend's tuple that points back to it.
//!
//! The flow entry (`CONNTRACK`) holds everything. The reply entry
//! (`CONNTRACK_REPLY`) holds only the flow's key. Both tables evict their least
//! recently used entries (`flow_table`). A reply entry is used only after its
//! flow entry is found and names the same backend; one whose flow entry was
//! evicted is deleted on sight and counted (`CtEvent::ReplyOrphan`), so an
//! orphan never translates a packet. The forward path marks the reply entry used
//! whenever it refreshes `last_seen` (at most once a second), and writes it again
//! if it was evicted, so an active flow's reply entry comes back.

use crate::{addr::Addr, pod::impl_pod};

/// A flow's 5-tuple as seen in one direction. Ports in network byte order.
///
/// Aligned to 8 bytes (its size already is a multiple, so no padding is
/// added): copies of it, and of its addresses, become 64-bit moves in BPF,
/// which splits every copy of a less aligned value into single bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    pub src_addr: Addr,
    pub dst_addr: Addr,
    pub src_port_be: u16,
    pub dst_port_be: u16,
    pub proto: u8,
    // Scalars, not `[u8; 3]`: a zeroed array becomes a `memset` call in BPF.
    pub _pad0: u8,
    pub _pad1: u16,
}
const _: () = assert!(size_of::<FlowTuple>() == 40);

impl FlowTuple {
    /// A tuple; ports in network byte order.
    #[inline(always)]
    pub const fn new(
        src_addr: Addr,
        dst_addr: Addr,
        src_port_be: u16,
        dst_port_be: u16,
        proto: u8,
    ) -> Self {
        Self {
            src_addr,
            dst_addr,
            src_port_be,
            dst_port_be,
            proto,
            _pad0: 0,
            _pad1: 0,
        }
    }

    /// The tuple a reply carries when this flow is translated to the backend
    /// at `backend_addr`:`backend_port_be`, its source kept: the key of its
    /// `CONNTRACK_REPLY` entry.
    #[inline(always)]
    pub const fn reply_from(&self, backend_addr: Addr, backend_port_be: u16) -> Self {
        Self::new(
            backend_addr,
            self.src_addr,
            backend_port_be,
            self.src_port_be,
            self.proto,
        )
    }
}

impl CtEntry {
    /// The key of the flow's `CONNTRACK_REPLY` entry: what the backend's
    /// replies carry (to the client, or to the source NAT gave the flow).
    #[inline(always)]
    pub const fn reply_key(&self, proto: u8) -> FlowTuple {
        FlowTuple::new(
            self.backend_addr,
            self.reply_dst_addr,
            self.backend_port_be,
            self.reply_dst_port_be,
            proto,
        )
    }

    /// The flow's source was translated (`CT_SNAT`).
    #[inline(always)]
    pub const fn is_snat(&self) -> bool {
        self.flags & CT_SNAT != 0
    }

    /// TCP: both ends have closed (a FIN each way, or a RST). The flow no
    /// longer holds its reply tuple: a new flow whose replies would carry it
    /// takes it over instead of clashing, as netfilter reuses the tuple of a
    /// connection in TIME_WAIT. A half-closed flow (one FIN) still holds it:
    /// its other end may go on sending.
    #[inline(always)]
    pub const fn is_closed(&self) -> bool {
        self.flags & CT_CLOSED == CT_CLOSED
    }
}

/// TCP states as the LB sees them (both directions pass through it in NAT mode).
pub const TCP_SYN_SENT: u8 = 1;
/// Packets seen in both directions, no FIN/RST yet.
pub const TCP_ESTABLISHED: u8 = 2;
/// A FIN or RST was seen: short timeout; a new SYN re-selects.
pub const TCP_CLOSING: u8 = 3;
/// Not TCP.
pub const NOT_TCP: u8 = 0;

/// `CtEntry::flags`: a packet of the reply direction has been seen.
pub const CT_SEEN_REPLY: u8 = 1 << 0;
/// `CtEntry::flags`: source NAT: the flow's source was translated to
/// `reply_dst_addr`:`reply_dst_port_be` (a remote backend behind a node
/// address, a pod reaching itself, or a clash of translated tuples).
pub const CT_SNAT: u8 = 1 << 1;
/// `CtEntry::flags`: the client sent a FIN (or either end a RST).
pub const CT_FIN_CLIENT: u8 = 1 << 2;
/// `CtEntry::flags`: the backend sent a FIN (or either end a RST).
pub const CT_FIN_BACKEND: u8 = 1 << 3;
/// Both ends have closed (`CtEntry::is_closed`).
pub const CT_CLOSED: u8 = CT_FIN_CLIENT | CT_FIN_BACKEND;
/// `CtEntry::flags`: direct server return: the flow's packets are
/// encapsulated toward the backend, unchanged, and it has no reply entry.
/// Kept in the entry so that a tracked flow is forwarded without its
/// service's record: on a VIP-only address the datapath finds the flow
/// before the service (`lb::decide_flow` in the eBPF crate).
pub const CT_DSR: u8 = 1 << 4;

/// Value of `CONNTRACK`: the flow's backend and translated tuple, and its state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` when last refreshed (at most once a second).
    pub last_seen_ns: u64,
    /// The backend the flow was given.
    pub backend_id: u32,
    /// The backend record's generation when the flow was given to it.
    pub generation: u32,
    /// The backend address the flow is translated to.
    pub backend_addr: Addr,
    /// The backend port, network order.
    pub backend_port_be: u16,
    /// `TCP_*` or `NOT_TCP`.
    pub state: u8,
    /// `CT_*` flags.
    pub flags: u8,
    /// The service, for the reply direction's counters.
    pub service_id: u32,
    /// The source the backend sees, hence the destination of its replies:
    /// the client's address, or the source NAT gave the flow (`CT_SNAT`).
    pub reply_dst_addr: Addr,
    /// The port of `reply_dst_addr`, network order. Under source NAT the
    /// reply entry keyed by it is the port's reservation: a port is taken
    /// while that entry names a live flow.
    pub reply_dst_port_be: u16,
    pub _pad0: u16,
    pub _pad1: u32,
}
const _: () = assert!(size_of::<CtEntry>() == 64);

impl_pod!(FlowTuple, CtEntry);
