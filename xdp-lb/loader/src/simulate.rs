//! "Which backend would this flow hit?" (Katran's simulator), answered from the
//! live maps with the very lookup the kernel runs (`xdp_lb_common::select`).

use std::net::SocketAddr;

use aya::maps::{Array, HashMap, MapError};
use xdp_lb_common::{
    addr::Addr,
    affinity::{AffinityEntry, AffinityKey},
    backend::{Backend, NO_BACKEND},
    config::NS_PER_SEC,
    select::table_index,
    service::{ADDRESS_NODE, AddressInfo, AddressKey, SERVICE_AFFINITY_CLIENT_IP, Service},
};

use crate::{
    Datapath, Error,
    conntrack::coarse_monotonic_ns,
    maps::{ADDRESSES, AFFINITY, BACKENDS, MAGLEV_TABLES, SERVICES, map_err},
    net::{Flow, socket},
};

/// How a simulated flow would be handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simulation {
    /// Not for a service: the datapath passes it (not a frontend address, or a
    /// node address outside the NodePort range or without a service there).
    Pass,
    /// A VIP-only address with no service on this port: dropped.
    UnknownPort,
    /// A service whose table is missing or names no live backend: refused (a
    /// TCP reset, ICMP port unreachable).
    NoBackend { service_id: u32 },
    /// Translated to this backend.
    Backend {
        service_id: u32,
        backend_id: u32,
        addr: SocketAddr,
        tracked: bool,
    },
}

impl Datapath {
    /// Where `flow` would go now: to its tracked backend if conntrack has a
    /// live entry (not expired by timeout is not checked here), else, for a
    /// service with ClientIP affinity, to the backend the client's last new
    /// flow went to while the affinity holds, else to the backend Maglev
    /// picks. On a VIP-only address the tracked flow is looked for before
    /// the service, as the datapath does.
    pub fn simulate(&self, flow: &Flow) -> Result<Simulation, Error> {
        if flow.src.is_ipv4() != flow.dst.is_ipv4() {
            return Err(Error::MixedFamilies {
                client: flow.src,
                frontend: flow.dst,
            });
        }
        let tuple = flow.tuple();
        let addresses = HashMap::<_, AddressKey, AddressInfo>::try_from(self.map(ADDRESSES)?)
            .map_err(map_err(ADDRESSES, "open"))?;
        let kind = match addresses.get(
            &AddressKey {
                addr: tuple.dst_addr,
            },
            0,
        ) {
            Ok(info) => info.kind,
            Err(MapError::KeyNotFound) => return Ok(Simulation::Pass),
            Err(source) => {
                return Err(Error::Map {
                    map: ADDRESSES,
                    op: "lookup",
                    source,
                });
            }
        };
        let config = self.config()?;
        let port = flow.dst.port();
        let is_node = kind == ADDRESS_NODE;
        if is_node && !(config.nodeport_min..=config.nodeport_max).contains(&port) {
            return Ok(Simulation::Pass);
        }
        if !is_node && let Some(tracked) = self.tracked_backend(flow)? {
            return Ok(tracked);
        }
        let services = HashMap::<_, _, Service>::try_from(self.map(SERVICES)?)
            .map_err(map_err(SERVICES, "open"))?;
        let frontend = crate::net::Frontend::new(flow.dst, flow.proto);
        let service = match services.get(&frontend.key(), 0) {
            Ok(service) => service,
            Err(MapError::KeyNotFound) if is_node => return Ok(Simulation::Pass),
            Err(MapError::KeyNotFound) => return Ok(Simulation::UnknownPort),
            Err(source) => {
                return Err(Error::Map {
                    map: SERVICES,
                    op: "lookup",
                    source,
                });
            }
        };
        if is_node && let Some(tracked) = self.tracked_backend(flow)? {
            return Ok(tracked);
        }
        let affinity = service.flags & SERVICE_AFFINITY_CLIENT_IP != 0;
        if affinity
            && let Some((backend_id, addr)) = self.sticky_backend(&tuple.src_addr, &service)?
        {
            return Ok(Simulation::Backend {
                service_id: service.id,
                backend_id,
                addr,
                tracked: false,
            });
        }
        let none = Simulation::NoBackend {
            service_id: service.id,
        };
        let Some(table) = self.table_map(service.id)? else {
            return Ok(none);
        };
        let size = table
            .get(&0, 0)
            .map_err(map_err(MAGLEV_TABLES, "read table"))?;
        if size == 0 {
            return Ok(none);
        }
        let index = table_index(&tuple, affinity, config.hash_seed, size);
        let id = table
            .get(&index, 0)
            .map_err(map_err(MAGLEV_TABLES, "read table"))?;
        match self.live_backend(id)? {
            Some(backend) => Ok(Simulation::Backend {
                service_id: service.id,
                backend_id: id,
                addr: socket(&backend.addr, backend.port_be),
                tracked: false,
            }),
            None => Ok(none),
        }
    }

    /// The live backend `flow` is tracked to, if any.
    fn tracked_backend(&self, flow: &Flow) -> Result<Option<Simulation>, Error> {
        let Some(tracked) = self.tracked_flow(flow)? else {
            return Ok(None);
        };
        let live = self
            .live_backend(tracked.backend_id)?
            .is_some_and(|backend| backend.generation == tracked.generation);
        Ok(live.then_some(Simulation::Backend {
            service_id: tracked.service_id,
            backend_id: tracked.backend_id,
            addr: tracked.backend,
            tracked: true,
        }))
    }

    /// The backend ClientIP affinity holds `client` to in `service`, as the
    /// datapath's `lb::affinity::recall` judges it.
    fn sticky_backend(
        &self,
        client: &Addr,
        service: &Service,
    ) -> Result<Option<(u32, SocketAddr)>, Error> {
        let key = AffinityKey {
            client: *client,
            service_id: service.id,
        };
        let entry = match HashMap::<_, AffinityKey, AffinityEntry>::try_from(self.map(AFFINITY)?)
            .map_err(map_err(AFFINITY, "open"))?
            .get(&key, 0)
        {
            Ok(entry) => entry,
            Err(MapError::KeyNotFound) => return Ok(None),
            Err(source) => {
                return Err(Error::Map {
                    map: AFFINITY,
                    op: "lookup",
                    source,
                });
            }
        };
        let timeout = u64::from(service.affinity_timeout_s) * NS_PER_SEC;
        if coarse_monotonic_ns().saturating_sub(entry.last_seen_ns) >= timeout {
            return Ok(None);
        }
        Ok(self
            .live_backend(entry.backend_id)?
            .filter(|backend| backend.generation == entry.generation)
            .map(|backend| (entry.backend_id, socket(&backend.addr, backend.port_be))))
    }

    fn live_backend(&self, id: u32) -> Result<Option<Backend>, Error> {
        if id == NO_BACKEND || id >= self.sizes.backends {
            return Ok(None);
        }
        let backend = Array::<_, Backend>::try_from(self.map(BACKENDS)?)
            .map_err(map_err(BACKENDS, "open"))?
            .get(&id, 0)
            .map_err(map_err(BACKENDS, "read"))?;
        Ok(backend.is_active().then_some(backend))
    }
}
