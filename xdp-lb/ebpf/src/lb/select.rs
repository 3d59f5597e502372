//! Maglev selection: the flow hash of `consistent-hash` (the very function the
//! control plane and `Datapath::simulate` use) indexes the service's table.

use core::mem::MaybeUninit;

use xdp_lb_common::{
    backend::{Backend, NO_BACKEND},
    conntrack::FlowTuple,
    select::table_index,
    service::{SERVICE_AFFINITY_CLIENT_IP, Service},
};

use crate::maps::{BACKENDS, MAGLEV_TABLES};

/// The backend Maglev picks for `tuple` in `service`'s table: its ID, with the
/// record written to `out`; `NO_BACKEND` when the table is missing, empty, or
/// names a backend that is not live.
#[inline(never)]
pub fn select(
    tuple: &FlowTuple,
    service: &Service,
    seed: u64,
    out: &mut MaybeUninit<Backend>,
) -> u32 {
    match pick(tuple, service, seed) {
        Some((id, backend)) => {
            out.write(backend);
            id
        }
        None => NO_BACKEND,
    }
}

#[inline(always)]
fn pick(tuple: &FlowTuple, service: &Service, seed: u64) -> Option<(u32, Backend)> {
    // One outer lookup: size and slots then come from the same table, even if
    // the control plane swaps in a new one meanwhile.
    // SAFETY: the size (slot 0) never changes in a live table: a new size
    // comes only as a whole new table swapped in by one outer update. Slots
    // may be rewritten in place (`Datapath::patch_table`), one 4-byte backend
    // ID at a time, each naming a live backend before and after, so whatever
    // mix of old and new slots a packet meets is a valid table.
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
    backend.is_active().then_some((id, backend))
}
