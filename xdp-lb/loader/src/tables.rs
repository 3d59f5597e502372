//! Writing Maglev tables in bulk: whole tables swapped many at a time, and
//! single slots patched in place.
//!
//! Every update of a map-of-maps makes the kernel wait for an RCU grace period
//! before the syscall returns (`maybe_wait_bpf_programs`: 8–13 ms measured
//! here), so one table per syscall caps a writer at ~100 tables a second.
//! [`Datapath::swap_tables`] fills each new inner array with one batch update
//! (arrays do not wait), then inserts up to [`TABLES_PER_BATCH`] of them into
//! `MAGLEV_TABLES` with one batch update of the outer map: one grace period for
//! all of them (measured on 6.18: 256 tables inserted in 8–16 ms, one wait).
//! Tables are `BPF_F_MMAPABLE` arrays, filled and patched through a shared
//! memory mapping: a batch update would copy element by element through the
//! kernel (~170 ns each; half of a 10 000-table sync), a mapping is a store
//! per slot.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::maps::{Array, HashOfMaps, IterableMap as _, MapData};
use tracing::debug;
use xdp_lb_common::{backend::NO_BACKEND, service::TABLE_HEADER_SLOTS};

use crate::{
    Datapath, Error, MAX_TABLE_SIZE,
    maps::{MAGLEV_TABLES, map_err},
    sys::{self, BatchError, U32ArrayMapping},
};

/// The flags of every table: `BPF_F_INNER_MAP` (inner arrays of one
/// map-of-maps may differ in size) and `BPF_F_MMAPABLE` (tables are written
/// through a memory mapping, not element by element through bpf(2)). They
/// must equal the flags of `MAGLEV_TABLES`' inner map in the eBPF object.
const TABLE_FLAGS: u32 = (1 << 12) | (1 << 10);

/// Tables created, filled and swapped in per outer batch. Each new table is
/// an open file descriptor until it is in the outer map: this keeps a large
/// swap well below the usual soft limit of 1024 descriptors, and costs one
/// grace period per 256 tables.
pub const TABLES_PER_BATCH: usize = 256;

/// The kernel's `ENOTSUPP` (not in libc: it is kernel-internal, but bpf(2)
/// returns it for a batch command the map type lacks).
const ENOTSUPP: i32 = 524;

pub(crate) fn batch_err(
    map: &'static str,
    op: &'static str,
    total: usize,
) -> impl FnOnce(BatchError) -> Error {
    move |BatchError { done, source }| Error::Batch {
        map,
        op,
        done,
        total,
        source,
    }
}

impl Datapath {
    /// Checks what `swap_table` checks of a table's size and slots.
    fn check_table(&self, id: u32, table: &[u32]) -> Result<(), Error> {
        self.check_service_id(id)?;
        let size = u32::try_from(table.len()).unwrap_or(u32::MAX);
        if size == 0 || size > MAX_TABLE_SIZE {
            return Err(Error::InvalidTable {
                service: id,
                reason: "size must be 1..=131071",
            });
        }
        self.check_slot_backends(id, table.iter().copied())
    }

    /// Refuses backend ID 0 ("no backend") and IDs beyond the backends map.
    fn check_slot_backends(
        &self,
        id: u32,
        mut backends: impl Iterator<Item = u32>,
    ) -> Result<(), Error> {
        if backends.any(|b| b == NO_BACKEND || b >= self.sizes.backends) {
            return Err(Error::InvalidTable {
                service: id,
                reason: "a slot names backend ID 0 or an ID beyond the backends map",
            });
        }
        Ok(())
    }

    /// Replaces the Maglev tables of many services: `(service ID, slots)`.
    ///
    /// Every table is checked first (the rules of [`Datapath::swap_table`]; a
    /// service may appear once): if one is refused, nothing is written. Each
    /// new table is a new inner array, filled completely before it is
    /// inserted, so a packet sees either the whole old table of a service or
    /// the whole new one. Services are swapped [`TABLES_PER_BATCH`] at a time,
    /// not all at once: a packet may meet one service's new table and another
    /// service's old one, which make-before-break ordering allows.
    ///
    /// On a kernel error (which validation leaves only to resource
    /// exhaustion), the services before the failing one have their new
    /// tables, the others their old ones; calling again with the same tables
    /// finishes the job.
    pub fn swap_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), Error> {
        for &(id, table) in tables {
            self.check_table(id, table)?;
        }
        let mut ids: Vec<u32> = tables.iter().map(|&(id, _)| id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(Error::InvalidTable {
                service: pair[0],
                reason: "the service appears more than once in one swap",
            });
        }
        // The outer map's key and value types, checked once.
        HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(self.map(MAGLEV_TABLES)?)
            .map_err(map_err(MAGLEV_TABLES, "open"))?;
        for chunk in tables.chunks(TABLES_PER_BATCH) {
            let inner = chunk
                .iter()
                .map(|&(_, table)| filled_table(table))
                .collect::<Result<Vec<_>, _>>()?;
            self.insert_tables(chunk, &inner)?;
        }
        Ok(())
    }

    /// Inserts the filled `inner` tables of `chunk` into `MAGLEV_TABLES`.
    fn insert_tables(
        &mut self,
        chunk: &[(u32, &[u32])],
        inner: &[Array<MapData, u32>],
    ) -> Result<(), Error> {
        let keys: Vec<u32> = chunk.iter().map(|&(id, _)| id).collect();
        // A map-of-maps update takes the inner map's file descriptor as value.
        let fds: Vec<u32> = inner
            .iter()
            .map(|table| table.map().fd().as_fd().as_raw_fd().cast_unsigned())
            .collect();
        let outer = self.map_fd(MAGLEV_TABLES)?;
        match sys::map_update_batch(outer, &keys, &fds, 0) {
            Ok(()) => Ok(()),
            // A kernel without batch updates for this map type answers
            // ENOTSUPP before touching anything (this one, 6.18, has them):
            // one update, and one grace period, per table then.
            Err(BatchError { done: 0, source })
                if matches!(source.raw_os_error(), Some(ENOTSUPP | libc::EOPNOTSUPP)) =>
            {
                debug!("no batch update of MAGLEV_TABLES: inserting tables one by one");
                let mut tables = HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(
                    self.map_mut(MAGLEV_TABLES)?,
                )
                .map_err(map_err(MAGLEV_TABLES, "open"))?;
                for (id, table) in keys.iter().zip(inner) {
                    tables
                        .insert(id, table, 0)
                        .map_err(map_err(MAGLEV_TABLES, "swap"))?;
                }
                Ok(())
            }
            Err(err) => Err(batch_err(MAGLEV_TABLES, "swap", keys.len())(err)),
        }
    }

    /// Rewrites slots of service `id`'s live table in place: `(slot, backend
    /// ID)`, slots counted from 0 as in [`Datapath::table`]. One batch update
    /// of the inner array: no new table, no grace period, so it suits the
    /// small changes a backend joining or leaving makes to a Maglev table
    /// (consistent-hash's `Diff`).
    ///
    /// What a packet sees: each slot is one aligned 4-byte value, replaced
    /// whole (see the note below), so a packet that reads a slot gets its old
    /// or its new backend ID, while other slots of the same table
    /// may already hold their new IDs or not yet (the patch as a whole is not
    /// atomic, unlike a swap). Both IDs are live backends when the caller
    /// writes make-before-break: new backend records before any slot points
    /// to them, and a backend retired only once no slot points to it. A
    /// packet already in flight keeps the ID it read; an established flow
    /// keeps its conntrack entry either way.
    ///
    /// (The slots are written through a shared mapping of the table's memory
    /// with aligned 4-byte atomic stores, which no reader can see half-done.)
    ///
    /// Refused, with nothing written: a service without a table, a slot at
    /// or beyond the table's size, and backend IDs [`Datapath::swap_table`]
    /// refuses. The caller must be the only writer of this service's table
    /// (a concurrent swap would take the patch away with the old table).
    pub fn patch_table(&mut self, id: u32, changes: &[(u32, u32)]) -> Result<(), Error> {
        self.check_service_id(id)?;
        self.check_slot_backends(id, changes.iter().map(|&(_, backend)| backend))?;
        let Some((mapping, size)) = self.table_mapping(id)? else {
            return Err(Error::InvalidTable {
                service: id,
                reason: "the service has no table to patch",
            });
        };
        if changes.iter().any(|&(slot, _)| slot >= size) {
            return Err(Error::InvalidTable {
                service: id,
                reason: "a slot is beyond the table's size",
            });
        }
        for &(slot, backend) in changes {
            mapping.store(slot + TABLE_HEADER_SLOTS, backend);
        }
        Ok(())
    }

    /// Service `id`'s table memory, mapped (its size slot, then its slots),
    /// and its size, if it has a table.
    pub(crate) fn table_mapping(&self, id: u32) -> Result<Option<(U32ArrayMapping, u32)>, Error> {
        let Some(inner) = self.table_map(id)? else {
            return Ok(None);
        };
        let size = inner
            .get(&0, 0)
            .map_err(map_err(MAGLEV_TABLES, "read table"))?;
        // Mapping more than the array holds fails (EINVAL), so a damaged
        // size slot is an error here rather than a read past the table.
        let mapping = U32ArrayMapping::new(inner.map().fd().as_fd(), size + TABLE_HEADER_SLOTS)
            .map_err(|source| Error::Syscall {
                map: MAGLEV_TABLES,
                op: "map table memory",
                source,
            })?;
        Ok(Some((mapping, size)))
    }

    /// The IDs of every service that has a table.
    pub fn table_ids(&self) -> Result<Vec<u32>, Error> {
        let tables = HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(self.map(MAGLEV_TABLES)?)
            .map_err(map_err(MAGLEV_TABLES, "open"))?;
        let mut ids = tables
            .keys()
            .collect::<Result<Vec<u32>, _>>()
            .map_err(map_err(MAGLEV_TABLES, "iterate"))?;
        ids.sort_unstable();
        Ok(ids)
    }
}

/// A new inner array holding `table` (size in slot 0, then the slots),
/// written with one batch update.
fn filled_table(table: &[u32]) -> Result<Array<MapData, u32>, Error> {
    // Checked by `check_table`: at most MAX_TABLE_SIZE slots.
    let size = table.len() as u32;
    let inner = Array::<MapData, u32>::create(size + TABLE_HEADER_SLOTS, TABLE_FLAGS)
        .map_err(map_err(MAGLEV_TABLES, "create table"))?;
    let mapping = U32ArrayMapping::new(inner.map().fd().as_fd(), size + TABLE_HEADER_SLOTS)
        .map_err(|source| Error::Syscall {
            map: MAGLEV_TABLES,
            op: "map new table memory",
            source,
        })?;
    mapping.store(0, size);
    for (slot, &backend) in (TABLE_HEADER_SLOTS..).zip(table) {
        mapping.store(slot, backend);
    }
    Ok(inner)
}
