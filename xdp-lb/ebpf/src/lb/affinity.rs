//! ClientIP session affinity (`xdp_lb_common::affinity`): consulted for a
//! new flow of a service with `SERVICE_AFFINITY_CLIENT_IP`, before Maglev.

#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a borrowed key or value reaches the map helper as a pointer; by value it would \
              first be copied onto the 512-byte BPF stack"
)]

use core::mem::MaybeUninit;

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use xdp_lb_common::{
    addr::Addr,
    affinity::{AffinityEntry, AffinityKey},
    backend::{Backend, NO_BACKEND},
    config::NS_PER_SEC,
    service::Service,
};

use crate::maps::{AFFINITY, BACKENDS};

/// The backend `client`'s last new flow to `service` went to, while the
/// service's timeout since then has not passed and the backend is live with
/// the same generation: its ID, with the record written to `out`, and the
/// client's timeout renewed. `NO_BACKEND` otherwise.
#[inline(never)]
pub fn recall(client: &Addr, service: &Service, out: &mut MaybeUninit<Backend>) -> u32 {
    let key = AffinityKey {
        client: *client,
        service_id: service.id,
    };
    let Some(entry) = AFFINITY.get_ptr_mut(&key) else {
        return NO_BACKEND;
    };
    // SAFETY: a map value of the right type. Another CPU may renew it at the
    // same time; each field written is a whole word valid on its own.
    let entry = unsafe { &mut *entry };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let timeout = u64::from(service.affinity_timeout_s) * NS_PER_SEC;
    if now.saturating_sub(entry.last_seen_ns) >= timeout {
        return NO_BACKEND;
    }
    let Some(backend) = BACKENDS.get(entry.backend_id) else {
        return NO_BACKEND;
    };
    if !backend.is_active() || backend.generation != entry.generation {
        return NO_BACKEND;
    }
    entry.last_seen_ns = now;
    out.write(*backend);
    entry.backend_id
}

/// Remembers that `client`'s new flow to `service` went to backend `id`.
#[inline(never)]
pub fn remember(client: &Addr, service: &Service, id: u32, backend: &Backend) {
    let key = AffinityKey {
        client: *client,
        service_id: service.id,
    };
    let entry = AffinityEntry {
        // SAFETY: a helper without arguments.
        last_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
        backend_id: id,
        generation: backend.generation,
    };
    // A full map evicts its least recently used client: that client's next
    // flow is balanced afresh, nothing breaks.
    let _ = AFFINITY.insert(&key, &entry, 0);
}
