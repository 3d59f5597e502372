//! The reconciler: diffs the desired state against what is programmed and
//! writes the difference make-before-break.
//!
//! Order of one sync, so that a packet never meets a half-made state:
//! 1. backend records that will be named (new, or back from down) are written;
//! 2. tables are written — in place where the size stays (only the changed
//!    slots; each slot write is atomic and names a live backend either way),
//!    otherwise as whole new tables swapped in with one batched outer update;
//! 3. frontend addresses, then per service its client networks
//!    (`loadBalancerSourceRanges`, new ones before old ones go) and its
//!    frontends pointing at its ID;
//! 4. then the break half in reverse: frontends removed, tables and the
//!    networks nothing reads any more removed, addresses removed, and
//!    finally backends nothing names any more are retired and their flows
//!    deleted (UDP flows move at once).
//!
//! Before any of it, the sync checks that its peak fits the maps
//! ([`Reconciler::fits`]): a configuration too big for them is refused whole, with
//! nothing written.
//!
//! State is updated after each successful write, so a failed sync leaves the
//! reconciler knowing exactly what is programmed, and the next sync goes on
//! from there.

mod capacity;
mod desired;
mod ids;
mod make;
mod remove;
mod target;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
};

use consistent_hash::{SizingPolicy, TableSize};
use xdp_lb::{AddressKind, MapSizes, ServiceOptions};

pub use capacity::{DoesNotFit, Overflow, Quantity};
pub use desired::{Desired, DesiredService};
pub use ids::{Exhausted, IdAllocator};
pub use target::{MemoryTarget, Target, Violation};

use crate::model::{Protocol, ServiceName};

/// A frontend as the datapath keys it.
pub type FrontendKey = (SocketAddr, Protocol);

/// Why a sync stopped. What was written before the error stays written and
/// known; the next sync continues from there.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The desired state does not fit the maps: refused before anything
    /// was written.
    #[error(transparent)]
    DoesNotFit(#[from] DoesNotFit),
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

impl SyncError {
    /// Every [`SyncError::reason`], for the metric's series.
    pub const REASONS: [&'static str; 4] = ["does_not_fit", "ids_exhausted", "table", "datapath"];

    /// What stopped the sync, as `xlb_sync_failures_total{reason}` labels
    /// it: `does_not_fit` (refused whole, nothing written), `ids_exhausted`
    /// (a safety net behind it), `table` (a Maglev table could not be
    /// built), `datapath` (a map write failed).
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::DoesNotFit(_) => Self::REASONS[0],
            Self::Ids(_) => Self::REASONS[1],
            Self::Table { .. } => Self::REASONS[2],
            Self::Datapath { .. } => Self::REASONS[3],
        }
    }
}

/// What one sync wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub backends_written: usize,
    pub backends_retired: usize,
    /// Flows to removed frontends, deleted with them (a retired backend's
    /// are left to the conntrack collector).
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
    /// Frontend → (service ID, its options).
    pub frontends: Vec<(FrontendKey, u32, ServiceOptions)>,
    /// Backend ID → (address, generation, live).
    pub backends: Vec<(u32, SocketAddr, u32, bool)>,
    /// Service ID → table size.
    pub tables: Vec<(u32, u32)>,
    pub addresses: Vec<(IpAddr, AddressKind)>,
    /// (service ID, address, prefix length): each service's client
    /// networks, one `SOURCE_RANGES` entry each.
    pub source_ranges: Vec<(u32, IpAddr, u8)>,
    /// Frontends gone from the datapath whose tracked flows are still there
    /// (the agent stopped between removing a frontend and deleting its
    /// flows): the first sync deletes those flows, unless it writes the
    /// frontend again.
    pub removed_frontends_with_flows: Vec<FrontendKey>,
}

#[derive(Clone, Debug)]
struct ProgrammedService {
    /// None for a service recovered from pinned maps and not yet claimed by
    /// a desired service.
    name: Option<ServiceName>,
    table: Option<ProgrammedTable>,
    source_ranges: ProgrammedRanges,
}

impl ProgrammedService {
    /// A service ID nothing is known of yet but that it is in use.
    fn unnamed() -> Self {
        Self {
            name: None,
            table: None,
            source_ranges: ProgrammedRanges::default(),
        }
    }
}

/// A service ID's client networks in `SOURCE_RANGES`.
#[derive(Clone, Debug, Default)]
struct ProgrammedRanges {
    /// Sorted. After a failed write, every network that may be there (the
    /// old ones and the new), so that the count stays an upper bound.
    networks: Vec<(IpAddr, u8)>,
    /// A write failed part-way: which of `networks` are there is not
    /// known, so they are written again whatever the next sync wants.
    unsure: bool,
}

impl ProgrammedRanges {
    /// Whether `wanted` needs a write.
    fn differ(&self, wanted: &[(IpAddr, u8)]) -> bool {
        self.unsure || self.networks != wanted
    }

    /// How many entries a write of `wanted` adds before it removes any
    /// (the datapath writes only the networks not there yet): all of them
    /// when which are there is not known.
    fn added_by(&self, wanted: &[(IpAddr, u8)]) -> usize {
        if self.unsure {
            return wanted.len();
        }
        wanted
            .iter()
            .filter(|n| self.networks.binary_search(n).is_err())
            .count()
    }
}

#[derive(Clone, Debug)]
struct ProgrammedTable {
    /// None for a recovered table of a size the policy does not list (an
    /// earlier agent's): never patched in place, replaced or removed whole.
    size: Option<TableSize>,
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
    /// The capacities of the maps written to (`conntrack` is not read).
    sizes: MapSizes,
    service_ids: IdAllocator,
    backend_ids: IdAllocator,
    services: BTreeMap<u32, ProgrammedService>,
    names: BTreeMap<ServiceName, u32>,
    frontends: BTreeMap<FrontendKey, (u32, ServiceOptions)>,
    backends: BTreeMap<SocketAddr, ProgrammedBackend>,
    /// Live records of recovered duplicates, retired at the next sync.
    stray_backends: Vec<u32>,
    addresses: BTreeMap<IpAddr, AddressKind>,
    /// Entries in `SOURCE_RANGES`: the networks of every service ID in
    /// `services` (an upper bound after a failed write).
    source_ranges: usize,
    /// Removed frontends whose tracked flows are still to be deleted: a
    /// failed deletion is tried again at the next sync.
    flows_to_delete: BTreeSet<FrontendKey>,
    /// The desired state of every service as of the last successful sync.
    last: BTreeMap<ServiceName, DesiredService>,
    /// How many services of `last` keep each backend live.
    users: HashMap<SocketAddr, u32>,
    /// The next sync compares everything (after a recovery or a failure).
    full_pass: bool,
}

impl Reconciler {
    /// A reconciler for an empty datapath whose maps have `sizes` (the
    /// datapath's own, [`xdp_lb::Datapath::sizes`]): `sizes.services`
    /// frontends, service IDs and client networks (per service ID),
    /// `sizes.backends` backend IDs, `sizes.addresses` frontend addresses.
    /// ID 0 is never given out: it means "none" in views (and is never a
    /// backend in the datapath).
    pub fn new(seed: u64, policy: SizingPolicy, sizes: MapSizes) -> Self {
        Self {
            seed,
            policy,
            sizes,
            service_ids: IdAllocator::new(1, sizes.services),
            backend_ids: IdAllocator::new(1, sizes.backends),
            services: BTreeMap::new(),
            names: BTreeMap::new(),
            frontends: BTreeMap::new(),
            backends: BTreeMap::new(),
            stray_backends: Vec::new(),
            addresses: BTreeMap::new(),
            source_ranges: 0,
            flows_to_delete: BTreeSet::new(),
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
        sizes: MapSizes,
        recovered: &Recovered,
    ) -> Self {
        let mut r = Self::new(seed, policy, sizes);
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
            r.services.entry(id).or_insert(ProgrammedService::unnamed());
            r.frontends.insert(key, (id, affinity));
        }
        for &(id, size) in &recovered.tables {
            // A size the policy does not list is adopted too, so that the
            // first sync replaces it (its service wants a table) or removes
            // it (nobody claims the service): left out, it stayed pinned.
            let size = TableSize::try_from(size).ok();
            r.service_ids.adopt(id, 0);
            r.services
                .entry(id)
                .or_insert(ProgrammedService::unnamed())
                .table = Some(ProgrammedTable {
                size,
                slots: None,
                members: Vec::new(),
            });
        }
        // A service ID with networks only (the agent stopped between
        // removing its frontends and its networks) is one too: it holds
        // entries, and the first sync removes them.
        for &(id, addr, len) in &recovered.source_ranges {
            r.service_ids.adopt(id, 0);
            r.services
                .entry(id)
                .or_insert(ProgrammedService::unnamed())
                .source_ranges
                .networks
                .push((addr, len));
            r.source_ranges += 1;
        }
        for service in r.services.values_mut() {
            service.source_ranges.networks.sort_unstable();
        }
        r.addresses = recovered.addresses.iter().copied().collect();
        r.flows_to_delete
            .extend(recovered.removed_frontends_with_flows.iter().copied());
        r
    }

    /// How it sizes tables.
    pub const fn sizing(&self) -> SizingPolicy {
        self.policy
    }

    /// The service ID of `name`, once synced.
    pub fn service_id(&self, name: &ServiceName) -> Option<u32> {
        self.names.get(name).copied()
    }

    /// The name of the service programmed with ID `id` (none for an ID not
    /// in use, or one recovered from pinned maps that no service has
    /// claimed yet).
    pub fn service_name(&self, id: u32) -> Option<&ServiceName> {
        self.services.get(&id)?.name.as_ref()
    }

    /// The ID of the service `frontend` is programmed for: the datapath's
    /// answer, where two services of the model may list the same frontend.
    pub fn frontend_service(&self, frontend: &FrontendKey) -> Option<u32> {
        self.frontends.get(frontend).map(|&(id, _)| id)
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
    ///
    /// A `desired` whose sync would need more of a map than it holds
    /// ([`Reconciler::fits`]) is refused with [`SyncError::DoesNotFit`]
    /// before anything is written: the datapath and the reconciler stay as
    /// they were.
    pub fn sync<T: Target>(
        &mut self,
        desired: &Desired,
        target: &mut T,
    ) -> Result<SyncReport, SyncError> {
        let full = self.full_pass;
        let changes = self.changes(desired, full);
        self.check_fits(&changes, desired)?;
        // Until this sync succeeds, the next one must compare everything.
        self.full_pass = true;
        let mut report = SyncReport::default();
        let gained: BTreeSet<SocketAddr> = changes
            .iter()
            .filter_map(|c| c.new.as_ref())
            .flat_map(|s| s.live.iter().copied())
            .collect();
        let local: BTreeSet<SocketAddr> = changes
            .iter()
            .filter_map(|c| c.new.as_ref())
            .flat_map(|s| s.local.iter().copied())
            .collect();
        self.write_backends(&gained, &local, target, &mut report)?;
        self.claim_service_ids(&changes, target)?;
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

    /// Replaces service `id`'s client networks with `wanted` (sorted, as
    /// [`DesiredService::source_ranges`] is), keeping count of the entries:
    /// of what may be there, should the write fail.
    fn write_source_ranges<T: Target>(
        &mut self,
        id: u32,
        wanted: &[(IpAddr, u8)],
        target: &mut T,
    ) -> Result<(), T::Error> {
        let written = target.set_source_ranges(id, wanted);
        let Some(service) = self.services.get_mut(&id) else {
            return written;
        };
        let ranges = &mut service.source_ranges;
        self.source_ranges -= ranges.networks.len();
        if written.is_ok() {
            ranges.networks = wanted.to_vec();
            ranges.unsure = false;
        } else {
            ranges.networks.extend_from_slice(wanted);
            ranges.networks.sort_unstable();
            ranges.networks.dedup();
            ranges.unsure = true;
        }
        self.source_ranges += ranges.networks.len();
        written
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
    xdp_lb::Frontend::new(addr, protocol.into())
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
