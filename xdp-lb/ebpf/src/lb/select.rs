//! Maglev selection: the flow hash of `consistent-hash` (the very function the
//! control plane and `Datapath::simulate` use) indexes the service's table.

use xdp_lb_common::{
    backend::{Backend, NO_BACKEND},
    conntrack::FlowTuple,
    select::table_index,
    service::{SERVICE_AFFINITY_CLIENT_IP, Service},
};

use crate::maps::{BACKENDS, MAGLEV_TABLES};

/// A backend and its ID; `id == NO_BACKEND` when there is none.
#[derive(Clone, Copy)]
pub struct Selected {
    pub id: u32,
    pub backend: Backend,
}

const NONE: Selected = Selected {
    id: NO_BACKEND,
    backend: Backend {
        addr: [0; 16],
        port_be: 0,
        _pad: 0,
        flags: 0,
        generation: 0,
        _reserved: 0,
    },
};

/// The backend Maglev picks for `tuple` in `service`'s table; none when the
/// table is missing, empty, or names a backend that is not live.
#[inline(never)]
pub fn select(tuple: &FlowTuple, service: &Service, seed: u64) -> Selected {
    pick(tuple, service, seed).unwrap_or(NONE)
}

#[inline(always)]
fn pick(tuple: &FlowTuple, service: &Service, seed: u64) -> Option<Selected> {
    // One outer lookup: size and slots then come from the same table, even if
    // the control plane swaps in a new one meanwhile.
    // SAFETY: inner tables are never written in place, only replaced whole by
    // one update of the outer map, so this one stays consistent while used.
    let table = unsafe { MAGLEV_TABLES.get(&service.id) }?;
    let size = *table.get(0)?;
    if size == 0 {
        return None;
    }
    let affinity = service.flags & SERVICE_AFFINITY_CLIENT_IP != 0;
    let id = *table.get(table_index(tuple, affinity, seed, size))?;
    if id == NO_BACKEND {
        return None;
    }
    let backend = *BACKENDS.get(id)?;
    backend.is_active().then_some(Selected { id, backend })
}
