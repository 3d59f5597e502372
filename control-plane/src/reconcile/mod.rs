//! The reconciler: diffs the desired state against what is programmed and
//! writes the difference make-before-break.
//!
//! Order of one sync, so that a packet never meets a half-made state:
//! 1. backend records that will be named (new, or back from down) are written;
//! 2. tables are written — in place where the size stays (only the changed
//!    slots; each slot write is atomic and names a live backend either way),
//!    otherwise as whole new tables swapped in with one batched outer update;
//! 3. frontend addresses, then frontends pointing at their service's ID;
//! 4. then the break half in reverse: frontends removed, tables removed,
//!    addresses removed, and finally backends nothing names any more are
//!    retired and their flows deleted (UDP flows move at once).
//!
//! State is updated after each successful write, so a failed sync leaves the
//! reconciler knowing exactly what is programmed, and the next sync goes on
//! from there.

mod desired;
mod ids;
mod target;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use consistent_hash::{Backend as MaglevBackend, SizingPolicy, Table, TableSize};
use xdp_lb::AddressKind;

pub use desired::{Desired, DesiredService, proto};
pub use ids::{Exhausted, IdAllocator};
pub use target::{MemoryTarget, Target, Violation};

use crate::model::{Protocol, ServiceName};

/// A frontend as the datapath keys it.
pub type FrontendKey = (SocketAddr, Protocol);

/// Why a sync stopped. What was written before the error stays written and
/// known; the next sync continues from there.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{op} {what}: {source}")]
    Datapath {
        op: &'static str,
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Ids(#[from] Exhausted),
    #[error("service {service}: Maglev table: {source}")]
    Table {
        service: ServiceName,
        #[source]
        source: consistent_hash::Error,
    },
}

/// What one sync wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub backends_written: usize,
    pub backends_retired: usize,
    pub flows_deleted: usize,
    pub tables_swapped: usize,
    pub tables_patched: usize,
    pub slots_patched: usize,
    pub tables_removed: usize,
    pub frontends_written: usize,
    pub frontends_removed: usize,
    pub addresses_written: usize,
    pub addresses_removed: usize,
}

impl SyncReport {
    /// True when the sync wrote nothing.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// State read back from pinned maps after a restart.
#[derive(Clone, Debug, Default)]
pub struct Recovered {
    /// Frontend → (service ID, ClientIP affinity).
    pub frontends: Vec<(FrontendKey, u32, bool)>,
    /// Backend ID → (address, generation, live).
    pub backends: Vec<(u32, SocketAddr, u32, bool)>,
    /// Service ID → table size.
    pub tables: Vec<(u32, u32)>,
    pub addresses: Vec<(IpAddr, AddressKind)>,
}

#[derive(Clone, Debug)]
struct ProgrammedService {
    /// None for a service recovered from pinned maps and not yet claimed by
    /// a desired service.
    name: Option<ServiceName>,
    table: Option<ProgrammedTable>,
}

#[derive(Clone, Debug)]
struct ProgrammedTable {
    size: TableSize,
    /// Backend ID per slot; None when recovered (contents not read back).
    slots: Option<Vec<u32>>,
    /// The members the table was built from (address, weight), sorted.
    members: Vec<(SocketAddr, u32)>,
}

/// A backend record as programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgrammedBackend {
    pub id: u32,
    pub generation: u32,
    /// False once retired.
    pub live: bool,
}

/// Owns the IDs and knows what is programmed.
#[derive(Debug)]
pub struct Reconciler {
    seed: u64,
    policy: SizingPolicy,
    service_ids: IdAllocator,
    backend_ids: IdAllocator,
    services: BTreeMap<u32, ProgrammedService>,
    names: BTreeMap<ServiceName, u32>,
    frontends: BTreeMap<FrontendKey, (u32, bool)>,
    backends: BTreeMap<SocketAddr, ProgrammedBackend>,
    /// Live records of recovered duplicates, retired at the next sync.
    stray_backends: Vec<u32>,
    addresses: BTreeMap<IpAddr, AddressKind>,
    /// The desired state of every service as of the last successful sync.
    last: BTreeMap<ServiceName, DesiredService>,
    /// How many services of `last` keep each backend live.
    users: HashMap<SocketAddr, u32>,
    /// The next sync compares everything (after a recovery or a failure).
    full_pass: bool,
}

impl Reconciler {
    /// A reconciler for an empty datapath whose maps hold `services` service
    /// IDs and `backends` backend IDs. ID 0 is never given out: it means "none"
    /// in views (and is never a backend in the datapath).
    pub fn new(seed: u64, policy: SizingPolicy, services: u32, backends: u32) -> Self {
        Self {
            seed,
            policy,
            service_ids: IdAllocator::new(1, services),
            backend_ids: IdAllocator::new(1, backends),
            services: BTreeMap::new(),
            names: BTreeMap::new(),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            stray_backends: Vec::new(),
            addresses: BTreeMap::new(),
            last: BTreeMap::new(),
            users: HashMap::new(),
            full_pass: true,
        }
    }

    /// A reconciler that adopts `recovered` pinned state: IDs and generations
    /// are kept, nothing is written. The first sync then claims recovered
    /// services by their frontends and deletes what the source no longer has.
    pub fn recover(
        seed: u64,
        policy: SizingPolicy,
        services: u32,
        backends: u32,
        recovered: &Recovered,
    ) -> Self {
        let mut r = Self::new(seed, policy, services, backends);
        let mut records = recovered.backends.clone();
        records.sort_unstable_by_key(|&(id, ..)| id);
        for &(id, addr, generation, live) in &records {
            r.backend_ids.adopt(id, generation);
            if !live {
                r.backend_ids.free(id);
            } else {
                match r.backends.entry(addr) {
                    std::collections::btree_map::Entry::Occupied(_) => r.stray_backends.push(id),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(ProgrammedBackend {
                            id,
                            generation,
                            live,
                        });
                    }
                }
            }
        }
        for &(key, id, affinity) in &recovered.frontends {
            r.service_ids.adopt(id, 0);
            r.services.entry(id).or_insert(ProgrammedService {
                name: None,
                table: None,
            });
            r.frontends.insert(key, (id, affinity));
        }
        for &(id, size) in &recovered.tables {
            let Ok(size) = TableSize::try_from(size) else {
                // Not a listed size: rewritten as a new table at the next sync.
                continue;
            };
            r.service_ids.adopt(id, 0);
            r.services
                .entry(id)
                .or_insert(ProgrammedService {
                    name: None,
                    table: None,
                })
                .table = Some(ProgrammedTable {
                size,
                slots: None,
                members: Vec::new(),
            });
        }
        r.addresses = recovered.addresses.iter().copied().collect();
        r
    }

    /// The service ID of `name`, once synced.
    pub fn service_id(&self, name: &ServiceName) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// The programmed record of the backend at `addr`.
    pub fn backend(&self, addr: SocketAddr) -> Option<ProgrammedBackend> {
        self.backends.get(&addr).copied()
    }

    /// Every programmed backend record, by address.
    pub fn backends(&self) -> impl Iterator<Item = (SocketAddr, ProgrammedBackend)> + '_ {
        self.backends.iter().map(|(&a, &b)| (a, b))
    }

    /// The backend ID per slot of `name`'s table, when programmed and known.
    pub fn table(&self, name: &ServiceName) -> Option<&[u32]> {
        let id = self.service_id(name)?;
        self.services.get(&id)?.table.as_ref()?.slots.as_deref()
    }

    /// Programs `desired`: only the services that differ from the last sync
    /// are looked at (a single backend change costs the same whatever the
    /// number of services), except after a recovery or a failed sync, which
    /// compare everything.
    pub fn sync<T: Target>(
        &mut self,
        desired: &Desired,
        target: &mut T,
    ) -> Result<SyncReport, SyncError> {
        let full = self.full_pass;
        // Until this sync succeeds, the next one must compare everything.
        self.full_pass = true;
        let changes = self.changes(desired, full);
        let mut report = SyncReport::default();
        let gained: BTreeSet<SocketAddr> = changes
            .iter()
            .filter_map(|c| c.new.as_ref())
            .flat_map(|s| s.live.iter().copied())
            .collect();
        self.write_backends(&gained, target, &mut report)?;
        self.claim_service_ids(&changes)?;
        self.write_tables(&changes, target, &mut report)?;
        let addresses_changed = !self
            .addresses
            .iter()
            .map(|(&a, &k)| (a, k))
            .eq(desired.addresses.iter().copied());
        if addresses_changed {
            self.write_addresses(desired, target, &mut report)?;
        }
        self.write_frontends(&changes, target, &mut report)?;
        self.remove_frontends(&changes, full, target, &mut report)?;
        self.remove_services(&changes, full, target, &mut report)?;
        if addresses_changed {
            self.remove_addresses(desired, target, &mut report)?;
        }
        self.retire_backends(&changes, full, target, &mut report)?;
        self.remember(changes, full);
        self.full_pass = false;
        Ok(report)
    }

    /// The services whose desired state differs from the last sync's (all
    /// of them on a full pass).
    fn changes(&self, desired: &Desired, full: bool) -> Vec<Change> {
        // Both sides are sorted by name: one merge walk.
        let mut changes = Vec::new();
        let mut last = self.last.iter().peekable();
        for (name, new) in &desired.services {
            while let Some((gone, old)) = last.next_if(|(n, _)| *n < name) {
                changes.push(Change {
                    name: gone.clone(),
                    old: Some(old.clone()),
                    new: None,
                });
            }
            let old = last.next_if(|(n, _)| *n == name).map(|(_, old)| old);
            if full || old != Some(new) {
                changes.push(Change {
                    name: name.clone(),
                    old: old.cloned(),
                    new: Some(new.clone()),
                });
            }
        }
        for (gone, old) in last {
            changes.push(Change {
                name: gone.clone(),
                old: Some(old.clone()),
                new: None,
            });
        }
        changes
    }

    /// Records a successful sync: the last desired state per service, and
    /// how many services keep each backend live.
    fn remember(&mut self, changes: Vec<Change>, full: bool) {
        if full {
            self.users.clear();
            self.last.clear();
        }
        for change in changes {
            let Change { name, old, new } = change;
            if !full && let Some(old) = &old {
                for addr in &old.live {
                    if let Some(n) = self.users.get_mut(addr) {
                        *n -= 1;
                        if *n == 0 {
                            self.users.remove(addr);
                        }
                    }
                }
            }
            match new {
                Some(new) => {
                    for &addr in &new.live {
                        *self.users.entry(addr).or_default() += 1;
                    }
                    self.last.insert(name, new);
                }
                None => {
                    self.last.remove(&name);
                }
            }
        }
    }

    fn write_backends<T: Target>(
        &mut self,
        live: &BTreeSet<SocketAddr>,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        for &addr in live {
            let (id, generation) = match self.backends.get(&addr) {
                Some(b) if b.live => continue,
                // Back from down: a new generation, so flows that were
                // re-selected away from it are not pulled back.
                Some(b) => (b.id, self.backend_ids.bump(b.id)),
                None => self.backend_ids.allocate("backend")?,
            };
            target
                .put_backend(id, addr, generation)
                .map_err(datapath("write backend", format!("{id} ({addr})")))?;
            self.backends.insert(
                addr,
                ProgrammedBackend {
                    id,
                    generation,
                    live: true,
                },
            );
            report.backends_written += 1;
        }
        Ok(())
    }

    fn claim_service_ids(&mut self, changes: &[Change]) -> Result<(), SyncError> {
        for change in changes {
            let (name, Some(service)) = (&change.name, &change.new) else {
                continue;
            };
            if self.names.contains_key(name) {
                continue;
            }
            // A service recovered from pinned maps keeps its ID (and so its
            // counters and table) when one of its frontends is still its own.
            let recovered = service.frontends.iter().find_map(|f| {
                let &(id, _) = self.frontends.get(f)?;
                self.services
                    .get(&id)
                    .is_some_and(|s| s.name.is_none())
                    .then_some(id)
            });
            let id = match recovered {
                Some(id) => id,
                None => self.service_ids.allocate("service")?.0,
            };
            self.services
                .entry(id)
                .or_insert(ProgrammedService {
                    name: None,
                    table: None,
                })
                .name = Some(name.clone());
            self.names.insert(name.clone(), id);
        }
        Ok(())
    }

    fn write_tables<T: Target>(
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
            let size = self
                .policy
                .size_for(service.members.len(), current.map(|t| t.size))
                .map_err(table_error(name))?;
            if let Some(t) = current
                && t.size == size
                && t.slots.is_some()
                && t.members == service.members
            {
                continue;
            }
            let slots = self.build(name, size, &service.members)?;
            let table = ProgrammedTable {
                size,
                slots: Some(slots),
                members: service.members.clone(),
            };
            match current {
                Some(old) if old.size == size => {
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

    fn set_table(&mut self, id: u32, table: Option<ProgrammedTable>) {
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

    fn write_addresses<T: Target>(
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

    fn write_frontends<T: Target>(
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
            let want = (id, service.client_ip_affinity);
            for &key in &service.frontends {
                if self.frontends.get(&key) == Some(&want) {
                    continue;
                }
                target
                    .upsert_frontend(&frontend(key), id, want.1)
                    .map_err(datapath("write frontend", show(key)))?;
                self.frontends.insert(key, want);
                report.frontends_written += 1;
            }
        }
        Ok(())
    }

    /// Removes the frontends that changed services gave up and no service
    /// took over (all unwanted ones on a full pass, recovered ones included).
    fn remove_frontends<T: Target>(
        &mut self,
        changes: &[Change],
        full: bool,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let stale: Vec<FrontendKey> = if full {
            let wanted: BTreeSet<FrontendKey> = changes
                .iter()
                .filter_map(|c| c.new.as_ref())
                .flat_map(|s| s.frontends.iter().copied())
                .collect();
            self.frontends
                .keys()
                .filter(|k| !wanted.contains(k))
                .copied()
                .collect()
        } else {
            let mut stale = Vec::new();
            for change in changes {
                let Some(old) = &change.old else { continue };
                let owner = self.names.get(&change.name).copied();
                for key in &old.frontends {
                    let still_wanted = change.new.as_ref().is_some_and(|n| n.has_frontend(key));
                    // Gone only if no other service has taken it over.
                    let still_ours = self.frontends.get(key).map(|&(id, _)| id) == owner;
                    if !still_wanted && still_ours {
                        stale.push(*key);
                    }
                }
            }
            stale
        };
        for key in stale {
            target
                .remove_frontend(&frontend(key))
                .map_err(datapath("remove frontend", show(key)))?;
            self.frontends.remove(&key);
            report.frontends_removed += 1;
        }
        Ok(())
    }

    /// Removes the tables of services gone or without usable backends, and
    /// frees the IDs of services gone (and of recovered services nobody
    /// claimed, on a full pass).
    fn remove_services<T: Target>(
        &mut self,
        changes: &[Change],
        full: bool,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let mut candidates: Vec<(u32, bool, bool)> = changes
            .iter()
            .filter_map(|c| {
                let id = *self.names.get(&c.name)?;
                let keep_table = c.new.as_ref().is_some_and(|s| !s.members.is_empty());
                Some((id, keep_table, c.new.is_some()))
            })
            .collect();
        if full {
            candidates.extend(
                self.services
                    .iter()
                    .filter(|(_, s)| s.name.is_none())
                    .map(|(&id, _)| (id, false, false)),
            );
        }
        for (id, keep_table, keep_service) in candidates {
            if !keep_table && self.services.get(&id).is_some_and(|s| s.table.is_some()) {
                target
                    .remove_table(id)
                    .map_err(datapath("remove table of service", id.to_string()))?;
                self.set_table(id, None);
                report.tables_removed += 1;
            }
            if !keep_service {
                if let Some(name) = self.services.remove(&id).and_then(|s| s.name) {
                    self.names.remove(&name);
                }
                self.service_ids.free(id);
            }
        }
        Ok(())
    }

    fn remove_addresses<T: Target>(
        &mut self,
        desired: &Desired,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let stale: Vec<IpAddr> = self
            .addresses
            .keys()
            .filter(|&&a| desired.address(a).is_none())
            .copied()
            .collect();
        for addr in stale {
            target
                .remove_address(addr)
                .map_err(datapath("remove address", addr.to_string()))?;
            self.addresses.remove(&addr);
            report.addresses_removed += 1;
        }
        Ok(())
    }

    /// Retires the backends no service keeps live any more: those changed
    /// services dropped (on a full pass: every live record nothing keeps,
    /// recovered ones included), and recovered duplicates.
    fn retire_backends<T: Target>(
        &mut self,
        changes: &[Change],
        full: bool,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let kept: BTreeSet<SocketAddr>;
        let stale: Vec<SocketAddr> = if full {
            kept = changes
                .iter()
                .filter_map(|c| c.new.as_ref())
                .flat_map(|s| s.live.iter().copied())
                .collect();
            self.backends
                .iter()
                .filter(|(addr, b)| b.live && !kept.contains(addr))
                .map(|(&addr, _)| addr)
                .collect()
        } else {
            let dropped: BTreeSet<SocketAddr> = changes
                .iter()
                .filter_map(|c| c.old.as_ref())
                .flat_map(|s| s.live.iter().copied())
                .collect();
            dropped
                .into_iter()
                .filter(|addr| self.users_after(*addr, changes) == 0)
                .filter(|addr| self.backends.get(addr).is_some_and(|b| b.live))
                .collect()
        };
        let retire = stale
            .into_iter()
            .map(|addr| (Some(addr), self.backends[&addr].id))
            .chain(self.stray_backends.iter().map(|&id| (None, id)))
            .collect::<Vec<_>>();
        for (addr, id) in retire {
            target
                .retire_backend(id)
                .map_err(datapath("retire backend", id.to_string()))?;
            report.backends_retired += 1;
            report.flows_deleted += target
                .delete_flows_of_backend(id)
                .map_err(datapath("delete flows of backend", id.to_string()))?;
            match addr {
                Some(addr) => {
                    self.backends.remove(&addr);
                }
                None => self.stray_backends.retain(|&s| s != id),
            }
            self.backend_ids.free(id);
        }
        Ok(())
    }

    /// How many services keep `addr` live once `changes` are applied.
    fn users_after(&self, addr: SocketAddr, changes: &[Change]) -> i64 {
        let before = i64::from(self.users.get(&addr).copied().unwrap_or(0));
        changes.iter().fold(before, |n, c| {
            let had = c.old.as_ref().is_some_and(|s| s.keeps(addr));
            let has = c.new.as_ref().is_some_and(|s| s.keeps(addr));
            n + i64::from(has) - i64::from(had)
        })
    }
}

/// One service whose desired state changed since the last sync.
#[derive(Debug)]
struct Change {
    name: ServiceName,
    old: Option<DesiredService>,
    new: Option<DesiredService>,
}

fn frontend((addr, protocol): FrontendKey) -> xdp_lb::Frontend {
    xdp_lb::Frontend::new(addr, proto(protocol))
}

fn show((addr, protocol): FrontendKey) -> String {
    format!("{addr}/{protocol}")
}

fn datapath<E: std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    what: String,
) -> impl FnOnce(E) -> SyncError {
    move |source| SyncError::Datapath {
        op,
        what,
        source: Box::new(source),
    }
}

fn table_error(service: &ServiceName) -> impl FnOnce(consistent_hash::Error) -> SyncError {
    let service = service.clone();
    move |source| SyncError::Table { service, source }
}

#[cfg(test)]
mod tests;
