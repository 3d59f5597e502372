//! What the reconciler writes to: the datapath maps ([`xdp_lb::Datapath`]) or,
//! in tests, [`MemoryTarget`], which checks the make-before-break order too.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use xdp_lb::{AddressKind, Datapath, Frontend, MapSizes, ServiceOptions};

/// The datapath operations the reconciler needs, in the words of the maps.
/// Each one is atomic for the datapath; the reconciler orders them.
pub trait Target {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes backends `(id, addr, generation, local)` as live, in one
    /// batch (`local`: a pod of this node).
    fn put_backends(
        &mut self,
        backends: &[(u32, SocketAddr, u32, bool)],
    ) -> Result<(), Self::Error>;
    /// Zeroes the counters (and cached next hops) of backend `id`, an ID
    /// about to be given to a backend: a reused ID would otherwise start
    /// with the counts of the backend that held it before.
    fn clear_backend_stats(&mut self, id: u32) -> Result<(), Self::Error>;
    /// Zeroes the counters of service `id`, an ID about to be given to a
    /// service (as `clear_backend_stats`).
    fn clear_service_stats(&mut self, id: u32) -> Result<(), Self::Error>;
    /// Retires backend `id`: flows still pointing at it are re-selected on
    /// their next packet, and their entries collected by the agent's
    /// conntrack collector (`ConntrackTables::expire_flows`).
    fn retire_backend(&mut self, id: u32) -> Result<(), Self::Error>;
    /// Replaces whole tables (service ID, backend ID per slot), one batch.
    fn swap_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), Self::Error>;
    /// Rewrites slots of service `id`'s live table in place.
    fn patch_table(&mut self, id: u32, changes: &[(u32, u32)]) -> Result<(), Self::Error>;
    /// Removes service `id`'s table.
    fn remove_table(&mut self, id: u32) -> Result<(), Self::Error>;
    /// Declares a frontend address.
    fn set_address(&mut self, addr: IpAddr, kind: AddressKind) -> Result<(), Self::Error>;
    /// Forgets a frontend address.
    fn remove_address(&mut self, addr: IpAddr) -> Result<(), Self::Error>;
    /// Points a frontend at service `id`.
    fn upsert_frontend(
        &mut self,
        frontend: &Frontend,
        id: u32,
        options: &ServiceOptions,
    ) -> Result<(), Self::Error>;
    /// Removes a frontend.
    fn remove_frontend(&mut self, frontend: &Frontend) -> Result<(), Self::Error>;
    /// Deletes the tracked flows sent to `frontends` (after they were
    /// removed), in one pass.
    fn delete_flows_to(&mut self, frontends: &[Frontend]) -> Result<usize, Self::Error>;
    /// Replaces service `id`'s client networks (`loadBalancerSourceRanges`).
    fn set_source_ranges(&mut self, id: u32, ranges: &[(IpAddr, u8)]) -> Result<(), Self::Error>;
}

impl Target for Datapath {
    type Error = xdp_lb::Error;

    fn put_backends(
        &mut self,
        backends: &[(u32, SocketAddr, u32, bool)],
    ) -> Result<(), Self::Error> {
        Self::put_backends_on_node(self, backends)
    }

    fn clear_backend_stats(&mut self, id: u32) -> Result<(), Self::Error> {
        Self::clear_backend_stats(self, id)
    }

    fn clear_service_stats(&mut self, id: u32) -> Result<(), Self::Error> {
        Self::clear_service_stats(self, id)
    }

    fn retire_backend(&mut self, id: u32) -> Result<(), Self::Error> {
        Self::retire_backend(self, id)
    }

    fn swap_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), Self::Error> {
        Self::swap_tables(self, tables)
    }

    fn patch_table(&mut self, id: u32, changes: &[(u32, u32)]) -> Result<(), Self::Error> {
        Self::patch_table(self, id, changes)
    }

    fn remove_table(&mut self, id: u32) -> Result<(), Self::Error> {
        Self::remove_table(self, id)
    }

    fn set_address(&mut self, addr: IpAddr, kind: AddressKind) -> Result<(), Self::Error> {
        Self::set_address(self, addr, kind)
    }

    fn remove_address(&mut self, addr: IpAddr) -> Result<(), Self::Error> {
        Self::remove_address(self, addr)
    }

    fn upsert_frontend(
        &mut self,
        frontend: &Frontend,
        id: u32,
        options: &ServiceOptions,
    ) -> Result<(), Self::Error> {
        self.upsert_service(frontend, id, options)
    }

    fn remove_frontend(&mut self, frontend: &Frontend) -> Result<(), Self::Error> {
        self.remove_service(frontend)
    }

    fn delete_flows_to(&mut self, frontends: &[Frontend]) -> Result<usize, Self::Error> {
        Self::delete_flows_to(self, frontends)
    }

    fn set_source_ranges(&mut self, id: u32, ranges: &[(IpAddr, u8)]) -> Result<(), Self::Error> {
        Self::set_source_ranges(self, id, ranges)
    }
}

/// An in-memory datapath for reconciler tests. Every write checks the
/// invariant a packet relies on — a frontend names a service whose table
/// names only live backends — and fails the write (as a [`Violation`]) if the
/// reconciler's order would break it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryTarget {
    /// Backend ID → (address, generation, active).
    pub backends: BTreeMap<u32, (SocketAddr, u32, bool)>,
    /// Service ID → backend ID per slot.
    pub tables: BTreeMap<u32, Vec<u32>>,
    pub addresses: BTreeMap<IpAddr, AddressKind>,
    /// Frontend (as `addr:port/proto`) → (service ID, its options).
    pub frontends: BTreeMap<(SocketAddr, u8), (u32, ServiceOptions)>,
    /// Frontends (as `addr:port/proto`) whose flows were deleted, in order.
    pub frontend_flows_deleted: Vec<(SocketAddr, u8)>,
    /// Backend IDs written as pods of this node.
    pub local: BTreeSet<u32>,
    /// Service ID → its client networks (none: absent).
    pub source_ranges: BTreeMap<u32, Vec<(IpAddr, u8)>>,
    /// Backend IDs whose counters were zeroed, in order.
    pub backend_stats_cleared: Vec<u32>,
    /// Service IDs whose counters were zeroed, in order.
    pub service_stats_cleared: Vec<u32>,
    /// How many of the next `delete_flows_to` calls fail, as a datapath
    /// error would.
    pub refuse_flow_deletes: usize,
    /// The maps' capacities, when set: a write the kernel would refuse —
    /// a new frontend, address or client network in a full map (client
    /// networks: `services` entries for every service together), an ID the
    /// map does not hold — fails (unset: no limit). A write of networks
    /// stops there, part-way, as the datapath's does.
    pub sizes: Option<MapSizes>,
}

/// A write the memory target refuses: one that would let a packet see a
/// half-made state (make-before-break violated), or one a test asked it to
/// fail.
#[derive(Debug, thiserror::Error)]
#[error("memory target refused a write: {0}")]
pub struct Violation(pub String);

impl MemoryTarget {
    fn live(&self, id: u32) -> bool {
        self.backends.get(&id).is_some_and(|b| b.2)
    }

    fn check_table(&self, id: u32, slots: &[u32]) -> Result<(), Violation> {
        match slots.iter().find(|&&b| !self.live(b)) {
            Some(b) => Err(Violation(format!(
                "table {id} would name backend {b}, which is not live"
            ))),
            None => Ok(()),
        }
    }

    /// Backend IDs named by any table.
    fn in_tables(&self) -> BTreeSet<u32> {
        self.tables.values().flatten().copied().collect()
    }

    /// Refuses ID `id` where the map holds `size` entries (`first` is the
    /// lowest ID it takes).
    fn check_id(
        &self,
        kind: &str,
        id: u32,
        first: u32,
        size: fn(&MapSizes) -> u32,
    ) -> Result<(), Violation> {
        match &self.sizes {
            Some(sizes) if id < first || id >= size(sizes) => Err(Violation(format!(
                "{kind} ID {id} is beyond the map ({} entries)",
                size(sizes)
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses a new key in a map of `len` entries that is full.
    fn check_room(
        &self,
        map: &str,
        new: bool,
        len: usize,
        size: fn(&MapSizes) -> u32,
    ) -> Result<(), Violation> {
        match &self.sizes {
            Some(sizes) if new && len >= size(sizes) as usize => Err(Violation(format!(
                "{map} is full ({} entries)",
                size(sizes)
            ))),
            _ => Ok(()),
        }
    }
}

fn key(frontend: &Frontend) -> (SocketAddr, u8) {
    (frontend.addr, frontend.proto.number())
}

impl Target for MemoryTarget {
    type Error = Violation;

    fn put_backends(&mut self, backends: &[(u32, SocketAddr, u32, bool)]) -> Result<(), Violation> {
        let named = self.in_tables();
        for &(id, addr, generation, _) in backends {
            self.check_id("backend", id, 1, |s| s.backends)?;
            if let Some(&(old, old_generation, _)) = self.backends.get(&id)
                && (old != addr || generation < old_generation)
                && named.contains(&id)
            {
                return Err(Violation(format!(
                    "backend {id} rewritten from {old} to {addr} while a table names it"
                )));
            }
        }
        for &(id, addr, generation, local) in backends {
            self.backends.insert(id, (addr, generation, true));
            if local {
                self.local.insert(id);
            } else {
                self.local.remove(&id);
            }
        }
        Ok(())
    }

    fn clear_backend_stats(&mut self, id: u32) -> Result<(), Violation> {
        self.check_id("backend", id, 1, |s| s.backends)?;
        if self.live(id) || self.in_tables().contains(&id) {
            return Err(Violation(format!(
                "backend {id}'s counters zeroed while it is live"
            )));
        }
        self.backend_stats_cleared.push(id);
        Ok(())
    }

    fn clear_service_stats(&mut self, id: u32) -> Result<(), Violation> {
        self.check_id("service", id, 0, |s| s.services)?;
        if self.tables.contains_key(&id) || self.frontends.values().any(|&(f, _)| f == id) {
            return Err(Violation(format!(
                "service {id}'s counters zeroed while a frontend or table is its"
            )));
        }
        self.service_stats_cleared.push(id);
        Ok(())
    }

    fn retire_backend(&mut self, id: u32) -> Result<(), Violation> {
        if self.in_tables().contains(&id) {
            return Err(Violation(format!(
                "backend {id} retired while a table names it"
            )));
        }
        match self.backends.get_mut(&id) {
            Some(b) => {
                b.2 = false;
                Ok(())
            }
            None => Err(Violation(format!("backend {id} retired but never written"))),
        }
    }

    fn swap_tables(&mut self, tables: &[(u32, &[u32])]) -> Result<(), Violation> {
        for &(id, slots) in tables {
            self.check_id("service", id, 0, |s| s.services)?;
            self.check_table(id, slots)?;
        }
        for &(id, slots) in tables {
            self.tables.insert(id, slots.to_vec());
        }
        Ok(())
    }

    fn patch_table(&mut self, id: u32, changes: &[(u32, u32)]) -> Result<(), Violation> {
        let ids: Vec<u32> = changes.iter().map(|&(_, b)| b).collect();
        self.check_table(id, &ids)?;
        let table = self
            .tables
            .get_mut(&id)
            .ok_or_else(|| Violation(format!("patch of table {id}, which does not exist")))?;
        for &(slot, backend) in changes {
            let cell = table
                .get_mut(slot as usize)
                .ok_or_else(|| Violation(format!("slot {slot} beyond table {id}")))?;
            *cell = backend;
        }
        Ok(())
    }

    fn remove_table(&mut self, id: u32) -> Result<(), Violation> {
        self.tables.remove(&id);
        Ok(())
    }

    fn set_address(&mut self, addr: IpAddr, kind: AddressKind) -> Result<(), Violation> {
        let new = !self.addresses.contains_key(&addr);
        self.check_room("ADDRESSES", new, self.addresses.len(), |s| s.addresses)?;
        self.addresses.insert(addr, kind);
        Ok(())
    }

    fn remove_address(&mut self, addr: IpAddr) -> Result<(), Violation> {
        if self.frontends.keys().any(|(a, _)| a.ip() == addr) {
            return Err(Violation(format!(
                "address {addr} removed while a frontend uses it"
            )));
        }
        self.addresses.remove(&addr);
        Ok(())
    }

    fn upsert_frontend(
        &mut self,
        frontend: &Frontend,
        id: u32,
        options: &ServiceOptions,
    ) -> Result<(), Violation> {
        if !self.addresses.contains_key(&frontend.addr.ip()) {
            return Err(Violation(format!(
                "frontend {} written before its address",
                frontend.addr
            )));
        }
        self.check_id("service", id, 0, |s| s.services)?;
        if options.source_ranges_only && !self.source_ranges.contains_key(&id) {
            return Err(Violation(format!(
                "frontend {} reads the source ranges of service {id}, which has none",
                frontend.addr
            )));
        }
        let new = !self.frontends.contains_key(&key(frontend));
        self.check_room("SERVICES", new, self.frontends.len(), |s| s.services)?;
        self.frontends.insert(key(frontend), (id, *options));
        Ok(())
    }

    fn remove_frontend(&mut self, frontend: &Frontend) -> Result<(), Violation> {
        self.frontends.remove(&key(frontend));
        Ok(())
    }

    fn delete_flows_to(&mut self, frontends: &[Frontend]) -> Result<usize, Violation> {
        if self.refuse_flow_deletes > 0 {
            self.refuse_flow_deletes -= 1;
            return Err(Violation("flow deletion refused, as asked".into()));
        }
        for frontend in frontends {
            let key = key(frontend);
            if self.frontends.contains_key(&key) {
                return Err(Violation(format!(
                    "flows of frontend {}/{} deleted while it is live",
                    key.0, key.1
                )));
            }
            self.frontend_flows_deleted.push(key);
        }
        Ok(0)
    }

    fn set_source_ranges(&mut self, id: u32, ranges: &[(IpAddr, u8)]) -> Result<(), Violation> {
        if ranges.is_empty()
            && self
                .frontends
                .values()
                .any(|&(s, o)| s == id && o.source_ranges_only)
        {
            return Err(Violation(format!(
                "the source ranges of service {id} removed while a frontend reads them"
            )));
        }
        self.check_id("service", id, 0, |s| s.services)?;
        // As the datapath writes them: the networks new to `id`, each into
        // a trie with room, then the old ones not wanted go.
        let mut now = self.source_ranges.remove(&id).unwrap_or_default();
        let mut len = self.source_ranges.values().map(Vec::len).sum::<usize>() + now.len();
        let mut written = Ok(());
        for range in ranges {
            if now.contains(range) {
                continue;
            }
            written = self.check_room("SOURCE_RANGES", true, len, |s| s.services);
            if written.is_err() {
                break;
            }
            now.push(*range);
            len += 1;
        }
        if written.is_ok() {
            now = ranges.to_vec();
        }
        if !now.is_empty() {
            self.source_ranges.insert(id, now);
        }
        written
    }
}
