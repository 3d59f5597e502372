//! What an earlier agent served, read back from the pinned maps after a
//! restart: the health verdicts it acted on, as far as its tables show them.
//!
//! Health is not pinned (it lives in the agent's memory), but what the
//! earlier agent did with it is: a backend in a service's Maglev table was
//! passing that service's check, and a live backend record that no table
//! names was draining while passing (a backend that failed is retired). A
//! restarted agent starts those targets up, since pulling them out until
//! probed would be an outage at every upgrade, and every other one pending,
//! as a new backend starts.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use crate::model::{Frontend, Protocol};

/// The pinned tables and backend records of an earlier agent, reduced to
/// the question [`PinnedTables::served`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinnedTables {
    /// Frontend (address and port, protocol) → the service ID it points at.
    frontends: HashMap<(SocketAddr, Protocol), u32>,
    /// Service ID → the backends its table names (live records only: a slot
    /// naming a retired or missing record sends no flow anywhere).
    members: HashMap<u32, HashSet<SocketAddr>>,
    /// Backends with a live record that no table names.
    live_outside_tables: HashSet<SocketAddr>,
}

impl PinnedTables {
    /// From the pinned maps: the `SERVICES` map's frontends with their
    /// service IDs, the `BACKENDS` map's records (ID, address, live), and
    /// each table's slots (service ID, the backend ID of every slot).
    pub fn new(
        frontends: impl IntoIterator<Item = ((SocketAddr, Protocol), u32)>,
        records: impl IntoIterator<Item = (u32, SocketAddr, bool)>,
        tables: impl IntoIterator<Item = (u32, Vec<u32>)>,
    ) -> Self {
        let live: HashMap<u32, SocketAddr> = records
            .into_iter()
            .filter(|&(.., live)| live)
            .map(|(id, addr, _)| (id, addr))
            .collect();
        let members: HashMap<u32, HashSet<SocketAddr>> = tables
            .into_iter()
            .map(|(service, slots)| {
                let backends = slots
                    .iter()
                    .filter_map(|id| live.get(id).copied())
                    .collect();
                (service, backends)
            })
            .collect();
        let in_tables: HashSet<SocketAddr> = members.values().flatten().copied().collect();
        let live_outside_tables = live
            .into_values()
            .filter(|addr| !in_tables.contains(addr))
            .collect();
        Self {
            frontends: frontends.into_iter().collect(),
            members,
            live_outside_tables,
        }
    }

    /// True when nothing was pinned (a first start).
    pub fn is_empty(&self) -> bool {
        self.frontends.is_empty() && self.members.is_empty() && self.live_outside_tables.is_empty()
    }

    /// Whether the earlier agent served the backend at `addr` for the
    /// service with `frontends`: it is in the table one of those frontends
    /// points at, or its record is live and no table names it (a draining
    /// backend, which keeps its flows only while its record lives).
    ///
    /// A backend in the table of another service only was not served here:
    /// it may have been down under this service's check, or been added to
    /// this service while no agent ran.
    pub fn served(&self, frontends: &[Frontend], addr: SocketAddr) -> bool {
        self.live_outside_tables.contains(&addr)
            || frontends.iter().any(|frontend| {
                self.frontends
                    .get(&(
                        SocketAddr::new(frontend.addr, frontend.port),
                        frontend.protocol,
                    ))
                    .and_then(|service| self.members.get(service))
                    .is_some_and(|members| members.contains(&addr))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FrontendKind;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn frontend(address: &str) -> Frontend {
        let address = addr(address);
        Frontend {
            addr: address.ip(),
            port: address.port(),
            protocol: Protocol::Tcp,
            kind: FrontendKind::Vip,
            snat_remote: false,
            source_ranges_only: false,
        }
    }

    #[test]
    fn a_backend_is_served_where_its_services_table_names_it() {
        let (up, down, elsewhere, draining, retired_in_slot) = (
            addr("198.18.2.1:80"),
            addr("198.18.2.2:80"),
            addr("198.18.2.3:80"),
            addr("198.18.2.4:80"),
            addr("198.18.2.5:80"),
        );
        let pinned = PinnedTables::new(
            [
                ((addr("198.19.0.1:80"), Protocol::Tcp), 1),
                ((addr("198.19.0.2:80"), Protocol::Tcp), 2),
            ],
            [
                (10, up, true),
                // Retired when it went down: no table names it any more.
                (11, down, false),
                (12, elsewhere, true),
                (13, draining, true),
                // Still in a slot (a damaged map): not served through it.
                (14, retired_in_slot, false),
            ],
            [(1, vec![10, 10, 14]), (2, vec![12])],
        );
        let web = [frontend("198.19.0.1:80")];
        assert!(pinned.served(&web, up));
        assert!(!pinned.served(&web, down), "out of the table: it was down");
        assert!(
            !pinned.served(&web, elsewhere),
            "in another service's table only"
        );
        assert!(pinned.served(&[frontend("198.19.0.2:80")], elsewhere));
        assert!(
            pinned.served(&web, draining),
            "live, in no table: draining, and passing"
        );
        assert!(!pinned.served(&web, retired_in_slot));
        assert!(
            !pinned.served(&[frontend("198.19.0.9:80")], up),
            "a frontend no pinned service has"
        );
        assert!(!pinned.served(&[], up));
        assert!(!pinned.is_empty());
        assert!(PinnedTables::default().is_empty());
    }
}
