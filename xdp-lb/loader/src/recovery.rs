//! Reading back what the maps hold: what a restarted agent rebuilds its state
//! from (service and backend IDs, generations) before its first sync, and how
//! full each map is.

use std::{
    collections::{BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::maps::{Array, HashOfMaps, MapData};
use xdp_lb_common::{
    addr::as_v4,
    backend::{Backend, NO_BACKEND},
    neighbour::L2Announcement,
    service::{
        ADDRESS_NODE, ADDRESS_VIP, AddressInfo, AddressKey, FrontendKey,
        SERVICE_AFFINITY_CLIENT_IP, SERVICE_DROP_WITHOUT_BACKENDS, SERVICE_DSR,
        SERVICE_SNAT_REMOTE, SERVICE_SOURCE_RANGES, Service,
    },
};

use crate::{
    AddressKind, BackendRecord, ConntrackTables, Datapath, Error, ServiceOptions,
    maps::{
        ADDRESSES, BACKENDS, CONNTRACK, CONNTRACK_REPLY, L2_ANNOUNCE, MAGLEV_TABLES, SERVICES,
        SOURCE_RANGES, map_err,
    },
    net::{Frontend, Protocol, from_addr, socket},
};

/// How full one map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapUsage {
    /// The map's name in the object (and its pin).
    pub name: &'static str,
    /// Entries in use: for `BACKENDS`, the active records (retired ones are
    /// kept for their generation but serve no new flow).
    pub entries: u64,
    /// Entries the map can hold, as the kernel reports it; for `BACKENDS`
    /// the usable IDs (ID 0 is never a backend); for the conntrack tables,
    /// their slots (two per flow asked for: `MapSizes::conntrack`).
    pub capacity: u64,
}

impl Datapath {
    /// Every frontend: `(frontend, service ID, its options)`, in no
    /// particular order.
    pub fn frontends(&self) -> Result<Vec<(Frontend, u32, ServiceOptions)>, Error> {
        let (keys, services, _) = self.walk::<FrontendKey, Service>(SERVICES)?;
        keys.iter()
            .zip(&services)
            .map(|(key, service)| {
                let proto = Protocol::from_number(key.proto).ok_or(Error::Corrupt {
                    map: SERVICES,
                    reason: "a frontend with a protocol other than TCP or UDP",
                })?;
                let frontend = Frontend::new(socket(&key.addr, key.port_be), proto);
                let options = ServiceOptions {
                    client_ip_affinity: (service.flags & SERVICE_AFFINITY_CLIENT_IP != 0)
                        .then(|| Duration::from_secs(service.affinity_timeout_s.into())),
                    dsr: service.flags & SERVICE_DSR != 0,
                    snat_remote: service.flags & SERVICE_SNAT_REMOTE != 0,
                    drop_without_backends: service.flags & SERVICE_DROP_WITHOUT_BACKENDS != 0,
                    source_ranges_only: service.flags & SERVICE_SOURCE_RANGES != 0,
                };
                Ok((frontend, service.id, options))
            })
            .collect()
    }

    /// The frontends, gone from the services map, that tracked flows were
    /// still sent to: what an agent stopped between removing a frontend and
    /// deleting its flows leaves behind. On a VIP-only address the datapath
    /// finds a tracked flow before its service, so those flows would go on
    /// to their backend until their timeout; a restarted agent deletes them
    /// with [`Datapath::delete_flows_to`]. Sorted, each once.
    ///
    /// A snapshot of two maps read one after the other: call it while no
    /// frontend is being written (a restarted agent, before its first sync).
    pub fn removed_frontends_with_flows(&self) -> Result<Vec<Frontend>, Error> {
        let (live, _, _) = self.walk::<FrontendKey, Service>(SERVICES)?;
        let live: HashSet<FrontendKey> = live.into_iter().collect();
        let (flows, _) = self.ct_tables.flow_slots()?;
        let gone: BTreeSet<(SocketAddr, Protocol)> = flows
            .iter()
            .map(|(_, slot)| FrontendKey::of_flow(&slot.key))
            .filter(|key| !live.contains(key))
            .map(|key| {
                let proto = Protocol::from_number(key.proto).ok_or(Error::Corrupt {
                    map: CONNTRACK,
                    reason: "a flow with a protocol other than TCP or UDP",
                })?;
                Ok((socket(&key.addr, key.port_be), proto))
            })
            .collect::<Result<_, Error>>()?;
        Ok(gone
            .into_iter()
            .map(|(addr, proto)| Frontend::new(addr, proto))
            .collect())
    }

    /// Every backend record ever written, by ID (ascending): active ones and
    /// retired ones alike, each with its generation (an ID is reused only with
    /// a higher one).
    pub fn backends(&self) -> Result<Vec<(u32, BackendRecord)>, Error> {
        let (ids, records, _) = self.walk::<u32, Backend>(BACKENDS)?;
        Ok(ids
            .into_iter()
            .zip(&records)
            .filter(|&(id, _)| id != NO_BACKEND)
            .filter_map(|(id, record)| Some((id, BackendRecord::from_stored(record)?)))
            .collect())
    }

    /// Every frontend address with its kind, in no particular order.
    pub fn addresses(&self) -> Result<Vec<(IpAddr, AddressKind)>, Error> {
        let (keys, infos, _) = self.walk::<AddressKey, AddressInfo>(ADDRESSES)?;
        keys.iter()
            .zip(&infos)
            .map(|(key, info)| {
                let kind = match info.kind {
                    ADDRESS_VIP => AddressKind::Vip,
                    ADDRESS_NODE => AddressKind::Node,
                    _ => {
                        return Err(Error::Corrupt {
                            map: ADDRESSES,
                            reason: "an address that is neither a VIP nor a node address",
                        });
                    }
                };
                Ok((from_addr(&key.addr), kind))
            })
            .collect()
    }

    /// Every service's client networks in `SOURCE_RANGES` (what
    /// [`Datapath::set_source_ranges`] wrote): `(service ID, address,
    /// prefix length)`, sorted, host bits cleared.
    pub fn source_ranges(&self) -> Result<Vec<(u32, IpAddr, u8)>, Error> {
        let mut ranges: Vec<(u32, IpAddr, u8)> = self
            .read_source_ranges()?
            .into_iter()
            .flat_map(|(id, networks)| networks.into_iter().map(move |n| (id, n)))
            .map(|(id, (prefix, range))| {
                // The key's prefix counts the service ID's 32 bits, and an
                // IPv4 network's 96 bits of IPv4-mapped form.
                let bits = prefix.saturating_sub(32);
                let (addr, len) = match as_v4(&range.addr) {
                    Some(v4) if bits >= 96 => (IpAddr::from(v4), bits - 96),
                    _ => (from_addr(&range.addr), bits),
                };
                let len = u8::try_from(len).map_err(|_| Error::Corrupt {
                    map: SOURCE_RANGES,
                    reason: "a prefix longer than an address",
                })?;
                Ok((id, addr, len))
            })
            .collect::<Result<_, Error>>()?;
        ranges.sort_unstable();
        Ok(ranges)
    }

    /// The size M of service `id`'s table, if it has one (one read: the size
    /// sits in the table's header slot).
    pub fn table_size(&self, id: u32) -> Result<Option<u32>, Error> {
        self.table_map(id)?
            .map(|inner| {
                inner
                    .get(&0, 0)
                    .map_err(map_err(MAGLEV_TABLES, "read table size"))
            })
            .transpose()
    }

    /// How full the configuration and conntrack maps are: those of
    /// [`Self::config_map_usage`], then `CONNTRACK` and `CONNTRACK_REPLY`
    /// ([`ConntrackTables::usage`], a walk of both tables).
    pub fn map_usage(&self) -> Result<Vec<MapUsage>, Error> {
        let mut usage = self.config_map_usage()?;
        usage.extend(self.ct_tables.usage()?);
        Ok(usage)
    }

    /// How full the maps the configuration fills are: `SERVICES`,
    /// `ADDRESSES`, `BACKENDS`, `MAGLEV_TABLES`, `SOURCE_RANGES`,
    /// `L2_ANNOUNCE`, in that order. Each count is a snapshot taken by
    /// walking the map (in batches where the kernel allows: some 15 ms for
    /// all six at their default sizes, in a debug build); the conntrack
    /// tables, far larger, are left to [`ConntrackTables::usage`].
    pub fn config_map_usage(&self) -> Result<Vec<MapUsage>, Error> {
        let (services, _, services_max) = self.walk::<FrontendKey, Service>(SERVICES)?;
        let (addresses, _, addresses_max) = self.walk::<AddressKey, AddressInfo>(ADDRESSES)?;
        let (_, backends, backends_max) = self.walk::<u32, Backend>(BACKENDS)?;
        let active = backends
            .iter()
            .skip(NO_BACKEND as usize + 1)
            .filter(|b| b.is_active())
            .count();
        // Counted by key: only the keys matter, not the inner maps.
        let tables = HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(self.map(MAGLEV_TABLES)?)
            .map_err(map_err(MAGLEV_TABLES, "open"))?;
        let table_count = tables
            .keys()
            .try_fold(0usize, |n, key| key.map(|_| n + 1))
            .map_err(map_err(MAGLEV_TABLES, "iterate"))?;
        let tables_max = self
            .map_data(MAGLEV_TABLES)?
            .info()
            .map_err(map_err(MAGLEV_TABLES, "info"))?
            .max_entries();
        // A trie cannot be read in batches: the networks `set_source_ranges`
        // keeps track of, read from the trie only until it first writes.
        let networks: usize = match &self.source_ranges {
            Some(index) => index.values().map(Vec::len).sum(),
            None => self.read_source_ranges()?.values().map(Vec::len).sum(),
        };
        let (announced, _, announced_max) = self.walk::<AddressKey, L2Announcement>(L2_ANNOUNCE)?;
        Ok(vec![
            usage(SERVICES, services.len(), services_max),
            usage(ADDRESSES, addresses.len(), addresses_max),
            usage(BACKENDS, active, backends_max.saturating_sub(1)),
            usage(MAGLEV_TABLES, table_count, tables_max),
            usage(SOURCE_RANGES, networks, self.sizes.services),
            usage(L2_ANNOUNCE, announced.len(), announced_max),
        ])
    }
}

impl ConntrackTables {
    /// How full `CONNTRACK` and `CONNTRACK_REPLY` are, in that order: each
    /// a count of its used slots, taken by walking the table (a snapshot of
    /// a table the datapath writes meanwhile). The walk reads every
    /// bucket's tags: both tables sized for 4 Mi flows take 0.8 s in a
    /// debug build, so the agent counts on its collector's handle, not
    /// under its lock.
    pub fn usage(&self) -> Result<[MapUsage; 2], Error> {
        let flows = self.flows()?;
        let replies = self.replies()?;
        Ok([
            usage(CONNTRACK, flows.count_used(), flows.slots()),
            usage(CONNTRACK_REPLY, replies.count_used(), replies.slots()),
        ])
    }
}

fn usage(name: &'static str, entries: usize, capacity: u32) -> MapUsage {
    MapUsage {
        name,
        entries: entries as u64,
        capacity: u64::from(capacity),
    }
}
