//! ClientIP session affinity: a client's new flows to a service go to the
//! backend its previous one went to, until the service's timeout passes
//! without a new flow (kube-proxy's `sessionAffinity: ClientIP`, whose
//! iptables mode also renews the timeout with each new connection).

use crate::{addr::Addr, pod::impl_pod};

/// Key of the `AFFINITY` map: a client of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// The client's address (IPv4-mapped for IPv4).
    pub client: Addr,
    pub service_id: u32,
}
const _: () = assert!(size_of::<AffinityKey>() == 20);

/// Value of the `AFFINITY` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityEntry {
    /// `bpf_ktime_get_coarse_ns()` of the client's last new flow.
    pub last_seen_ns: u64,
    /// The backend, and its record's generation then (a stale one means the
    /// backend is gone, as in conntrack).
    pub backend_id: u32,
    pub generation: u32,
}
const _: () = assert!(size_of::<AffinityEntry>() == 16);

impl_pod!(AffinityKey, AffinityEntry);
