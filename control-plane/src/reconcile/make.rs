//! The make half of a sync: what packets will need is written before
//! anything points at it — backend records, then tables, then frontend
//! addresses and frontends.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use consistent_hash::{Backend as MaglevBackend, Table, TableSize};

use super::{
    Change, Desired, DesiredService, ProgrammedBackend, ProgrammedService, ProgrammedTable,
    Reconciler, SyncError, SyncReport, Target, datapath, frontend, show, table_error,
};
use crate::model::ServiceName;

impl Reconciler {
    /// Writes the records of the `live` backends not written yet; those in
    /// `local` are pods of this node.
    pub(super) fn write_backends<T: Target>(
        &mut self,
        live: &BTreeSet<SocketAddr>,
        local: &BTreeSet<SocketAddr>,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let mut batch = Vec::new();
        for &addr in live {
            let (id, generation, allocated) = match self.backends.get(&addr) {
                Some(b) if b.live => continue,
                // Back from down: a new generation, so flows that were
                // re-selected away from it are not pulled back.
                Some(b) => (b.id, self.backend_ids.bump(b.id), false),
                None => match self.backend_ids.allocate("backend") {
                    Ok((id, generation)) => (id, generation, true),
                    Err(exhausted) => {
                        self.release_unwritten(&batch);
                        return Err(exhausted.into());
                    }
                },
            };
            batch.push((id, addr, generation, local.contains(&addr)));
            // An ID given out starts from zero, whoever held it before.
            if allocated && let Err(e) = target.clear_backend_stats(id) {
                self.release_unwritten(&batch);
                return Err(datapath("zero the counters of backend", addr.to_string())(
                    e,
                ));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Err(e) = target.put_backends(&batch) {
            self.release_unwritten(&batch);
            return Err(datapath("write backends", format!("({})", batch.len()))(e));
        }
        for &(id, addr, generation, _) in &batch {
            self.backends.insert(
                addr,
                ProgrammedBackend {
                    id,
                    generation,
                    live: true,
                },
            );
        }
        report.backends_written += batch.len();
        Ok(())
    }

    /// Gives back the IDs allocated for a batch that was not written (an ID
    /// reused for a backend back from down keeps its bumped generation,
    /// which is harmless).
    fn release_unwritten(&mut self, batch: &[(u32, SocketAddr, u32, bool)]) {
        for &(id, addr, ..) in batch {
            if !self.backends.contains_key(&addr) {
                self.backend_ids.free(id);
            }
        }
    }

    /// Gives every new service in `changes` an ID: the ID of the recovered
    /// service it takes over (with its counters), or a free one, whose
    /// counters are zeroed before anything points at it.
    pub(super) fn claim_service_ids<T: Target>(
        &mut self,
        changes: &[Change],
        target: &mut T,
    ) -> Result<(), SyncError> {
        for change in changes {
            let (name, Some(service)) = (&change.name, &change.new) else {
                continue;
            };
            if self.names.contains_key(name) {
                continue;
            }
            // Claimed here are named at once: none to skip.
            let id = match self.recovered_id(service, &BTreeSet::new()) {
                Some(id) => id,
                None => {
                    let (id, _) = self.service_ids.allocate("service")?;
                    if let Err(e) = target.clear_service_stats(id) {
                        self.service_ids.free(id);
                        return Err(datapath("zero the counters of service", name.to_string())(
                            e,
                        ));
                    }
                    id
                }
            };
            self.services
                .entry(id)
                .or_insert(ProgrammedService::unnamed())
                .name = Some(name.clone());
            self.names.insert(name.clone(), id);
        }
        Ok(())
    }

    /// The ID of a service recovered from pinned maps that `service` takes
    /// over: a recovered service keeps its ID (and so its counters and
    /// table) when one of its frontends is still its own. `claimed`: the
    /// recovered IDs already taken in this sync but not yet named.
    pub(super) fn recovered_id(
        &self,
        service: &DesiredService,
        claimed: &BTreeSet<u32>,
    ) -> Option<u32> {
        service.frontends.iter().find_map(|f| {
            let &(id, _) = self.frontends.get(f)?;
            (self.services.get(&id).is_some_and(|s| s.name.is_none()) && !claimed.contains(&id))
                .then_some(id)
        })
    }

    pub(super) fn write_tables<T: Target>(
        &mut self,
        changes: &[Change],
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let mut swaps: Vec<(u32, ProgrammedTable)> = Vec::new();
        for change in changes {
            let (name, Some(service)) = (&change.name, &change.new) else {
                continue;
            };
            let id = self.names[name];
            if service.members.is_empty() {
                continue; // removed in the break half
            }
            let current = self.services.get(&id).and_then(|s| s.table.as_ref());
            // By the backends listed, not those in the table: a drain or a
            // failed health check does not resize it.
            let size = self
                .policy
                .size_for(service.listed, current.and_then(|t| t.size))
                .map_err(table_error(name))?;
            if let Some(t) = current
                && t.size == Some(size)
                && t.slots.is_some()
                && t.members == service.members
            {
                continue;
            }
            let slots = self.build(name, size, &service.members)?;
            let table = ProgrammedTable {
                size: Some(size),
                slots: Some(slots),
                members: service.members.clone(),
            };
            match current {
                Some(old) if old.size == Some(size) => {
                    let new = table.slots.as_deref().unwrap_or_default();
                    let changes: Vec<(u32, u32)> = match &old.slots {
                        Some(old) => (0..)
                            .zip(old.iter().zip(new))
                            .filter(|(_, (o, n))| o != n)
                            .map(|(slot, (_, &n))| (slot, n))
                            .collect(),
                        None => (0..).zip(new.iter().copied()).collect(),
                    };
                    if !changes.is_empty() {
                        target
                            .patch_table(id, &changes)
                            .map_err(datapath("patch table of", name.to_string()))?;
                        report.tables_patched += 1;
                        report.slots_patched += changes.len();
                    }
                    self.set_table(id, Some(table));
                }
                _ => swaps.push((id, table)),
            }
        }
        if !swaps.is_empty() {
            let batch: Vec<(u32, &[u32])> = swaps
                .iter()
                .map(|(id, t)| (*id, t.slots.as_deref().unwrap_or_default()))
                .collect();
            target.swap_tables(&batch).map_err(datapath(
                "swap tables",
                format!("({} services)", batch.len()),
            ))?;
            report.tables_swapped += swaps.len();
            for (id, table) in swaps {
                self.set_table(id, Some(table));
            }
        }
        Ok(())
    }

    pub(super) fn set_table(&mut self, id: u32, table: Option<ProgrammedTable>) {
        if let Some(service) = self.services.get_mut(&id) {
            service.table = table;
        }
    }

    /// The backend ID per slot of the Maglev table of `members`.
    fn build(
        &self,
        name: &ServiceName,
        size: TableSize,
        members: &[(SocketAddr, u32)],
    ) -> Result<Vec<u32>, SyncError> {
        // The Maglev key is the backend's address and port: every instance
        // computes the same table from the same seed and members.
        let ids: HashMap<Vec<u8>, u32> = members
            .iter()
            .map(|(addr, _)| (addr.to_string().into_bytes(), self.backends[addr].id))
            .collect();
        let table = Table::build(
            self.seed,
            size,
            members
                .iter()
                .map(|&(addr, weight)| MaglevBackend::weighted(addr.to_string(), weight)),
        )
        .map_err(table_error(name))?;
        let by_index: Vec<u32> = table.backends().iter().map(|b| ids[&b.key]).collect();
        Ok(table
            .slots()
            .iter()
            .map(|&i| by_index[i as usize])
            .collect())
    }

    pub(super) fn write_addresses<T: Target>(
        &mut self,
        desired: &Desired,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        for &(addr, kind) in &desired.addresses {
            if self.addresses.get(&addr) == Some(&kind) {
                continue;
            }
            target
                .set_address(addr, kind)
                .map_err(datapath("write address", addr.to_string()))?;
            self.addresses.insert(addr, kind);
            report.addresses_written += 1;
        }
        Ok(())
    }

    pub(super) fn write_frontends<T: Target>(
        &mut self,
        changes: &[Change],
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        for change in changes {
            let (name, Some(service)) = (&change.name, &change.new) else {
                continue;
            };
            let id = self.names[name];
            // The networks before the frontends that read them, compared
            // with what is programmed (a failed write is written again).
            // None left: removed in the break half, once no frontend reads
            // them (`remove_services`).
            let ranges = &service.source_ranges;
            if !ranges.is_empty()
                && self
                    .services
                    .get(&id)
                    .is_none_or(|s| s.source_ranges.differ(ranges))
            {
                self.write_source_ranges(id, ranges, target)
                    .map_err(datapath("write the source ranges of", name.to_string()))?;
            }
            for &key in &service.frontends {
                let want = (id, service.options_for(&key));
                if self.frontends.get(&key) == Some(&want) {
                    continue;
                }
                target
                    .upsert_frontend(&frontend(key), id, &want.1)
                    .map_err(datapath("write frontend", show(key)))?;
                self.frontends.insert(key, want);
                report.frontends_written += 1;
            }
        }
        Ok(())
    }
}
