//! The break half of a sync, in the reverse order of the make half:
//! frontends, then tables and service IDs, then addresses, and last the
//! backends nothing names any more.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use super::{
    Change, Desired, FrontendKey, Reconciler, SyncError, SyncReport, Target, datapath, frontend,
    show,
};

impl Reconciler {
    /// Removes the frontends that changed services gave up and no service
    /// took over (all unwanted ones on a full pass, recovered ones included).
    pub(super) fn remove_frontends<T: Target>(
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
            self.flows_to_delete.insert(key);
        }
        // Their tracked flows too: the datapath finds a VIP's tracked flow
        // before its service, so they would go on until their timeout. Kept
        // until deleted, so that a failure is tried again at the next sync;
        // a frontend written again meanwhile has its flows back.
        let frontends = &self.frontends;
        self.flows_to_delete
            .retain(|key| !frontends.contains_key(key));
        if self.flows_to_delete.is_empty() {
            return Ok(());
        }
        let gone: Vec<_> = self
            .flows_to_delete
            .iter()
            .map(|&key| frontend(key))
            .collect();
        report.flows_deleted += target.delete_flows_to(&gone).map_err(datapath(
            "delete flows of removed frontends",
            gone.len().to_string(),
        ))?;
        self.flows_to_delete.clear();
        Ok(())
    }

    /// Removes the tables of services gone or without usable backends, the
    /// client networks of services gone or left without any, and frees the
    /// IDs of services gone (and of recovered services nobody claimed, on a
    /// full pass).
    pub(super) fn remove_services<T: Target>(
        &mut self,
        changes: &[Change],
        full: bool,
        target: &mut T,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let mut candidates: Vec<(u32, bool, bool, bool)> = changes
            .iter()
            .filter_map(|c| {
                let id = *self.names.get(&c.name)?;
                let keep_table = c.new.as_ref().is_some_and(|s| !s.members.is_empty());
                let keep_ranges = c.new.as_ref().is_some_and(|s| !s.source_ranges.is_empty());
                Some((id, keep_table, keep_ranges, c.new.is_some()))
            })
            .collect();
        if full {
            candidates.extend(
                self.services
                    .iter()
                    .filter(|(_, s)| s.name.is_none())
                    .map(|(&id, _)| (id, false, false, false)),
            );
        }
        for (id, keep_table, keep_ranges, keep_service) in candidates {
            if !keep_table && self.services.get(&id).is_some_and(|s| s.table.is_some()) {
                target
                    .remove_table(id)
                    .map_err(datapath("remove table of service", id.to_string()))?;
                self.set_table(id, None);
                report.tables_removed += 1;
            }
            // Its frontends are gone, or no longer read its networks (a
            // frontend reading none drops every client). A service gone is
            // cleared whatever is known of it.
            let stale_ranges = self
                .services
                .get(&id)
                .is_some_and(|s| s.source_ranges.differ(&[]));
            if !keep_service || (!keep_ranges && stale_ranges) {
                self.write_source_ranges(id, &[], target).map_err(datapath(
                    "remove the source ranges of service",
                    id.to_string(),
                ))?;
            }
            if !keep_service {
                if let Some(service) = self.services.remove(&id) {
                    // Cleared above: nothing left to count.
                    self.source_ranges -= service.source_ranges.networks.len();
                    if let Some(name) = service.name {
                        self.names.remove(&name);
                    }
                }
                self.service_ids.free(id);
            }
        }
        Ok(())
    }

    pub(super) fn remove_addresses<T: Target>(
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
    pub(super) fn retire_backends<T: Target>(
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
        // Their flows are left to the conntrack collector, which deletes
        // what the datapath re-selects (a retired record, or an ID reused
        // at a newer generation): a walk of the table in the sync cost every
        // backend change hundreds of milliseconds at a million flows.
        for (addr, id) in retire {
            target
                .retire_backend(id)
                .map_err(datapath("retire backend", id.to_string()))?;
            report.backends_retired += 1;
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
