//! Typed, safe operations on the datapath's configuration maps.
//!
//! Ordering is the caller's part of make-before-break: write backends before
//! the tables that name them, tables before the services that use them, and
//! remove in the opposite order. Each single operation here is atomic for the
//! datapath (one map update), and a table swap replaces a whole table at once.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::{AsFd as _, BorrowedFd},
    time::Duration,
};

use aya::{
    Pod,
    maps::{
        Array, HashMap, HashOfMaps, Map, MapData, MapError,
        lpm_trie::{Key, LpmTrie},
    },
};
use xdp_lb_common::{
    LAYOUT_VERSION,
    addr::{filter_bit, kind_filter_bit},
    backend::{BACKEND_ACTIVE, BACKEND_LOCAL, Backend, NO_BACKEND},
    config::Config,
    flow_table::{WAYS, buckets_for},
    service::{
        ADDRESS_NODE, ADDRESS_VIP, AddressInfo, AddressKey, SERVICE_AFFINITY_CLIENT_IP,
        SERVICE_DROP_WITHOUT_BACKENDS, SERVICE_DSR, SERVICE_SNAT_REMOTE, SERVICE_SOURCE_RANGES,
        Service, SourceRange, TABLE_HEADER_SLOTS, source_range_prefix,
    },
};

use crate::{
    Datapath, Error,
    net::{Frontend, socket, to_addr},
    sys,
};

pub(crate) const PARSE_STATS: &str = "PARSE_STATS";
pub(crate) const VERDICT_STATS: &str = "VERDICT_STATS";
pub(crate) const CT_STATS: &str = "CT_STATS";
pub(crate) const SERVICE_STATS: &str = "SERVICE_STATS";
pub(crate) const FLOOR_STATS: &str = "FLOOR_STATS";
pub(crate) const DECAP_STATS: &str = "DECAP_STATS";
pub(crate) const DECAP_VIPS: &str = "DECAP_VIPS";
pub(crate) const FLOW_EVENT_STATS: &str = "FLOW_EVENT_STATS";
/// `tc_probe_encap`'s counters, probe slots and mark base (not pinned).
pub(crate) const PROBE_STATS: &str = "PROBE_STATS";
pub(crate) const PROBE_BACKENDS: &str = "PROBE_BACKENDS";
pub(crate) const PROBE_MARK_BASE: &str = "PROBE_MARK_BASE";
pub(crate) const CONFIG: &str = "CONFIG";
pub(crate) const LAYOUT: &str = "LAYOUT";
pub(crate) const ADDRESSES: &str = "ADDRESSES";
pub(crate) const ADDRESS_FILTER: &str = "ADDRESS_FILTER";
pub(crate) const NODE_FILTER: &str = "NODE_FILTER";
pub(crate) const VIP_FILTER: &str = "VIP_FILTER";
/// The host sides of pod veths with the TC programs, by ifindex.
pub(crate) const POD_INTERFACES: &str = "POD_INTERFACES";
/// L2 announcements: address → interface and MAC.
pub(crate) const L2_ANNOUNCE: &str = "L2_ANNOUNCE";
pub(crate) const SERVICES: &str = "SERVICES";
/// `loadBalancerSourceRanges`: (service, client network) → allowed.
pub(crate) const SOURCE_RANGES: &str = "SOURCE_RANGES";
pub(crate) const BACKENDS: &str = "BACKENDS";
pub(crate) const MAGLEV_TABLES: &str = "MAGLEV_TABLES";
/// Per CPU, by backend ID: its counter and cached next hop (`BackendCpu`).
pub(crate) const BACKEND_CPU: &str = "BACKEND_CPU";
/// The per-CPU next-hop cache of replies, by client address.
pub(crate) const REPLY_HOPS: &str = "REPLY_HOPS";
pub(crate) const CONNTRACK: &str = "CONNTRACK";
pub(crate) const CONNTRACK_REPLY: &str = "CONNTRACK_REPLY";
/// The conntrack tables' hash seed and sizes.
pub(crate) const FLOW_TABLES: &str = "FLOW_TABLES";
/// ClientIP affinity: (client, service) → backend.
pub(crate) const AFFINITY: &str = "AFFINITY";
/// The new-flow flood guard's per-CPU windows.
const FLOOD_GUARD: &str = "FLOOD_GUARD";
/// Sampled flow events.
pub(crate) const FLOW_EVENTS: &str = "FLOW_EVENTS";
/// The first fragments' ports, for the later fragments of their datagrams.
pub(crate) const FRAGMENTS: &str = "FRAGMENTS";
/// The per-CPU slot of the ICMP error being translated.
const ICMP_ERROR: &str = "ICMP_ERROR";
/// The scratch slot the programs use to make the verifier forget ranges.
const SCRATCH: &str = "SCRATCH";
/// The per-CPU slot of a source-NAT port search's key.
const PORT_SEARCH: &str = "PORT_SEARCH";
/// The benchmark wrapper's input and the program it runs: set by each load
/// for its own test runs, so not pinned. Pinned, a reload would reuse a map
/// of an older shape (`BenchInput` grew in 6fddffc), and `xdp_bench` would
/// then fail verification against it.
pub(crate) const BENCH_INPUT: &str = "BENCH_INPUT";
pub(crate) const BENCH_TARGET: &str = "BENCH_TARGET";

/// The maps pinned with `LoadOptions::pin_dir`: every map of the object but
/// the benchmark wrapper's and `PACKET`, the per-CPU slot of the packet a
/// program is balancing. That one holds nothing past a program's run, and
/// its size follows the build's `Packet`: pinned, a reload of a build whose
/// `Packet` grew would reuse the smaller map and fail verification.
pub(crate) const PINNED: [&str; 32] = [
    PARSE_STATS,
    VERDICT_STATS,
    CT_STATS,
    SERVICE_STATS,
    FLOOR_STATS,
    DECAP_STATS,
    DECAP_VIPS,
    CONFIG,
    LAYOUT,
    ADDRESSES,
    ADDRESS_FILTER,
    NODE_FILTER,
    VIP_FILTER,
    POD_INTERFACES,
    L2_ANNOUNCE,
    SERVICES,
    SOURCE_RANGES,
    BACKENDS,
    MAGLEV_TABLES,
    BACKEND_CPU,
    REPLY_HOPS,
    CONNTRACK,
    CONNTRACK_REPLY,
    FLOW_TABLES,
    AFFINITY,
    FLOOD_GUARD,
    FLOW_EVENTS,
    FLOW_EVENT_STATS,
    FRAGMENTS,
    ICMP_ERROR,
    SCRATCH,
    PORT_SEARCH,
];

/// Entries per batched lookup when a whole map is read: few syscalls, a
/// bounded buffer, and far more than any hash bucket holds (the kernel
/// returns whole buckets).
const WALK_CHUNK: u32 = 4096;

/// The largest Maglev table the datapath takes (the largest listed prime).
pub const MAX_TABLE_SIZE: u32 = 131_071;

/// What a frontend address is (DESIGN.md, "Per packet", step 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressKind {
    /// Only a service VIP: every port belongs to xlb; unknown ports are dropped.
    Vip,
    /// A node's own address: only the NodePort range is matched.
    Node,
}

/// A backend record as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendRecord {
    pub addr: SocketAddr,
    pub generation: u32,
    /// False once retired: its flows are re-selected.
    pub active: bool,
    /// A pod of this node ([`Datapath::put_backend_on_node`]).
    pub local: bool,
}

impl BackendRecord {
    /// The record stored as `record`; `None` for a slot never written.
    pub(crate) fn from_stored(record: &Backend) -> Option<Self> {
        (*record != Backend::default()).then(|| Self {
            addr: socket(&record.addr, record.port_be),
            generation: record.generation,
            active: record.is_active(),
            local: record.is_local(),
        })
    }
}

pub(crate) fn map_err(map: &'static str, op: &'static str) -> impl FnOnce(MapError) -> Error {
    move |source| Error::Map { map, op, source }
}

/// Every entry of map `name` behind `data` (a hash map or an array), read
/// with batched lookups, and the map's capacity. The key and value sizes
/// are checked against what the kernel reports for the map.
pub(crate) fn walk<K: Pod, V: Pod>(
    name: &'static str,
    data: &MapData,
) -> Result<(Vec<K>, Vec<V>, u32), Error> {
    let info = data.info().map_err(map_err(name, "info"))?;
    if info.key_size() as usize != size_of::<K>() || info.value_size() as usize != size_of::<V>() {
        return Err(Error::Corrupt {
            map: name,
            reason: "its key or value size is not the one this build reads",
        });
    }
    let (keys, values) =
        sys::map_lookup_all(data.fd().as_fd(), WALK_CHUNK).map_err(|source| Error::Syscall {
            map: name,
            op: "batch lookup",
            source,
        })?;
    Ok((keys, values, info.max_entries()))
}

/// The array map `name` is, as `map`.
pub(crate) fn array_data<'a>(name: &'static str, map: &'a Map) -> Result<&'a MapData, Error> {
    let Map::Array(data) = map else {
        return Err(Error::Corrupt {
            map: name,
            reason: "the map does not have the type this build expects",
        });
    };
    Ok(data)
}

/// Refuses pin directory `dir` when its `LAYOUT` map records another layout
/// version than this build's. Checked before the programs are loaded: a
/// pinned map whose shape changed would otherwise fail their verification,
/// and the operator would see a verifier log instead of this error. A
/// directory without `LAYOUT`, or with version 0 (never written), is new.
pub(crate) fn check_pinned_layout(dir: &std::path::Path) -> Result<(), Error> {
    let path = dir.join(LAYOUT);
    if !path.exists() {
        return Ok(());
    }
    let data = MapData::from_pin(&path).map_err(map_err(LAYOUT, "open the pinned"))?;
    let found =
        Array::<_, u32>::try_from(Map::from_map_data(data).map_err(map_err(LAYOUT, "open"))?)
            .map_err(map_err(LAYOUT, "open"))?
            .get(&0, 0)
            .map_err(map_err(LAYOUT, "read"))?;
    match found {
        0 | LAYOUT_VERSION => Ok(()),
        found => Err(Error::Layout {
            found,
            expected: LAYOUT_VERSION,
        }),
    }
}

/// Each service's networks in `SOURCE_RANGES`: (prefix length, key data)
/// by service ID.
pub(crate) type SourceRangeIndex = std::collections::HashMap<u32, Vec<(u32, SourceRange)>>;

/// `range` with the bits past its `prefix` (of the whole key: the service
/// ID's 32 bits, then the address's) cleared: the network the trie matches,
/// whatever host bits it was written with.
fn network(prefix: u32, mut range: SourceRange) -> SourceRange {
    let bits = prefix.saturating_sub(32);
    for (i, byte) in range.addr.iter_mut().enumerate() {
        let kept = bits.saturating_sub(8 * i as u32).min(8);
        // The top `kept` bits of the byte.
        *byte &= !(0xffu16 >> kept) as u8;
    }
    range
}

impl Datapath {
    pub(crate) fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf.map(name).ok_or(Error::MissingMap { map: name })
    }

    pub(crate) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.ebpf
            .map_mut(name)
            .ok_or(Error::MissingMap { map: name })
    }

    /// Map `name`'s kernel object, for the commands of `sys`.
    pub(crate) fn map_data(&self, name: &'static str) -> Result<&MapData, Error> {
        match self.map(name)? {
            Map::Array(data)
            | Map::HashMap(data)
            | Map::LruHashMap(data)
            | Map::HashOfMaps(data)
            | Map::PerCpuArray(data) => Ok(data),
            _ => Err(Error::Corrupt {
                map: name,
                reason: "the map does not have the type this build expects",
            }),
        }
    }

    /// The descriptor of map `name`, for the commands of `sys`. Check the
    /// map's key and value types through its typed aya wrapper first: the
    /// kernel reads and writes elements of the sizes the map was made with.
    pub(crate) fn map_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, Error> {
        Ok(self.map_data(name)?.fd().as_fd())
    }

    /// Every entry of map `name` (a hash map or an array), read with batched
    /// lookups, and the map's capacity (`walk`).
    pub(crate) fn walk<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<(Vec<K>, Vec<V>, u32), Error> {
        walk(name, self.map_data(name)?)
    }

    /// On a fresh load, records the layout version and writes the default
    /// configuration; on maps reopened from a pin directory, checks that they
    /// have the layout this build reads (`check_pinned_layout` has refused
    /// another before the programs were loaded against them).
    pub(crate) fn adopt_or_initialise(&mut self) -> Result<(), Error> {
        let mut layout =
            Array::<_, u32>::try_from(self.map_mut(LAYOUT)?).map_err(map_err(LAYOUT, "open"))?;
        match layout.get(&0, 0).map_err(map_err(LAYOUT, "read"))? {
            0 => {
                layout
                    .set(0, LAYOUT_VERSION, 0)
                    .map_err(map_err(LAYOUT, "write"))?;
                self.initialise_flow_tables()?;
                self.set_config(&Config::default())
            }
            LAYOUT_VERSION => self.check_flow_tables(),
            found => Err(Error::Layout {
                found,
                expected: LAYOUT_VERSION,
            }),
        }
    }

    /// The map capacities in effect: those asked for when the maps were
    /// made here, a pinned map's own when it was reused (a map keeps the
    /// size it was made with, whatever a later load asks for).
    pub const fn sizes(&self) -> crate::MapSizes {
        self.sizes
    }

    /// The capacities of the maps as the kernel made them, for `asked`: the
    /// conntrack size asked for when the tables have its bucket count,
    /// else the most flows that count of buckets is made for.
    pub(crate) fn sizes_in_effect(&self, asked: crate::MapSizes) -> Result<crate::MapSizes, Error> {
        let capacity = |name| {
            self.map_data(name)?
                .info()
                .map_err(map_err(name, "info"))
                .map(|info| info.max_entries())
        };
        let buckets = capacity(CONNTRACK)?;
        Ok(crate::MapSizes {
            services: capacity(SERVICES)?,
            backends: capacity(BACKENDS)?,
            conntrack: if buckets_for(asked.conntrack) == buckets {
                asked.conntrack
            } else {
                buckets.saturating_mul(WAYS as u32 / 2)
            },
            addresses: capacity(ADDRESSES)?,
            fragments: capacity(FRAGMENTS)?,
        })
    }

    /// Replaces the global configuration (hash seed, timeouts, NodePort range).
    pub fn set_config(&mut self, config: &Config) -> Result<(), Error> {
        if config.nodeport_min > config.nodeport_max {
            return Err(Error::InvalidOption {
                option: "nodeport range",
                reason: "the first port is above the last",
            });
        }
        Array::<_, Config>::try_from(self.map_mut(CONFIG)?)
            .map_err(map_err(CONFIG, "open"))?
            .set(0, *config, 0)
            .map_err(map_err(CONFIG, "write"))
    }

    /// The global configuration.
    pub fn config(&self) -> Result<Config, Error> {
        self.ct_tables.config()
    }

    /// Declares `addr` a frontend address of `kind`.
    pub fn set_address(&mut self, addr: IpAddr, kind: AddressKind) -> Result<(), Error> {
        let kind = match kind {
            AddressKind::Vip => ADDRESS_VIP,
            AddressKind::Node => ADDRESS_NODE,
        };
        // The filter bits before the address: a packet that finds the address
        // must never be turned away by the filter, a node address must never
        // be taken for a VIP-only one, and a VIP's tracked flows must be
        // looked for first.
        self.mark_address(addr)?;
        let kind_filter = if kind == ADDRESS_NODE {
            NODE_FILTER
        } else {
            VIP_FILTER
        };
        self.set_filter_bits(kind_filter, [kind_filter_bit(&to_addr(addr))])?;
        HashMap::<_, AddressKey, AddressInfo>::try_from(self.map_mut(ADDRESSES)?)
            .map_err(map_err(ADDRESSES, "open"))?
            .insert(
                AddressKey {
                    addr: to_addr(addr),
                },
                AddressInfo { kind },
                0,
            )
            .map_err(map_err(ADDRESSES, "insert"))
    }

    /// Sets `addr`'s bit in the address filter. Bits are never cleared: one
    /// that outlives its addresses only sends packets down the full lookup
    /// path (the datapath treats a set bit as "maybe").
    fn mark_address(&mut self, addr: IpAddr) -> Result<(), Error> {
        self.mark_addresses(std::iter::once(addr))
    }

    /// [`Self::mark_address`] for many addresses: each filter word is read
    /// and written once, however many addresses fall in it.
    fn mark_addresses(&mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Result<(), Error> {
        let bits = addrs.into_iter().map(|addr| filter_bit(&to_addr(addr)));
        self.set_filter_bits(ADDRESS_FILTER, bits)
    }

    /// Sets `bits` in the bitmap array `map`: each word is read and written
    /// once, however many bits fall in it, and only when it changes.
    fn set_filter_bits(
        &mut self,
        map: &'static str,
        bits: impl IntoIterator<Item = u32>,
    ) -> Result<(), Error> {
        let mut words: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for bit in bits {
            *words.entry(bit / 64).or_default() |= 1 << (bit % 64);
        }
        let mut filter =
            Array::<_, u64>::try_from(self.map_mut(map)?).map_err(map_err(map, "open"))?;
        for (index, bits) in words {
            let word = filter.get(&index, 0).map_err(map_err(map, "read"))?;
            if word | bits != word {
                filter
                    .set(index, word | bits, 0)
                    .map_err(map_err(map, "write"))?;
            }
        }
        Ok(())
    }

    /// Forgets a frontend address: its traffic passes untouched again once
    /// its frontends are deleted, which must come first (a frontend left on
    /// it goes on being balanced).
    pub fn remove_address(&mut self, addr: IpAddr) -> Result<(), Error> {
        HashMap::<_, AddressKey, AddressInfo>::try_from(self.map_mut(ADDRESSES)?)
            .map_err(map_err(ADDRESSES, "open"))?
            .remove(&AddressKey {
                addr: to_addr(addr),
            })
            .map_err(map_err(ADDRESSES, "remove"))
    }

    /// Points `frontend` at service `id` (whose table should exist already),
    /// with `options` (ClientIP affinity, direct server return). Its address
    /// must be declared first ([`Self::set_address`]): the datapath takes a
    /// service on an address never declared a node address for one on a
    /// VIP-only address, without looking the address up.
    pub fn upsert_service(
        &mut self,
        frontend: &Frontend,
        id: u32,
        options: &ServiceOptions,
    ) -> Result<(), Error> {
        self.check_service_id(id)?;
        let declared = HashMap::<_, AddressKey, AddressInfo>::try_from(self.map(ADDRESSES)?)
            .map_err(map_err(ADDRESSES, "open"))?
            .get(
                &AddressKey {
                    addr: frontend.key().addr,
                },
                0,
            );
        match declared {
            Ok(_) => {}
            Err(MapError::KeyNotFound) => {
                return Err(Error::UndeclaredAddress {
                    frontend: frontend.addr,
                });
            }
            Err(e) => return Err(map_err(ADDRESSES, "read")(e)),
        }
        let (mut flags, affinity_timeout_s) = match options.client_ip_affinity {
            None => (0, 0),
            Some(timeout) => (SERVICE_AFFINITY_CLIENT_IP, affinity_seconds(timeout)?),
        };
        if options.dsr {
            flags |= SERVICE_DSR;
        }
        if options.snat_remote {
            flags |= SERVICE_SNAT_REMOTE;
        }
        if options.drop_without_backends {
            flags |= SERVICE_DROP_WITHOUT_BACKENDS;
        }
        if options.source_ranges_only {
            flags |= SERVICE_SOURCE_RANGES;
        }
        let service = Service {
            id,
            flags,
            affinity_timeout_s,
        };
        HashMap::<_, _, Service>::try_from(self.map_mut(SERVICES)?)
            .map_err(map_err(SERVICES, "open"))?
            .insert(frontend.key(), service, 0)
            .map_err(map_err(SERVICES, "insert"))
    }

    /// Replaces the client networks (address, prefix length) of service
    /// `id`: what its [`ServiceOptions::source_ranges_only`] frontends
    /// accept. Empty: none (they then drop every client). A network is
    /// keyed by its prefix: host bits are cleared (`198.18.0.1/24` is
    /// `198.18.0.0/24`, as the trie matches them). The new networks are
    /// written before the old ones go, so a network in both never stops
    /// matching; a network already there is not written again. So the trie
    /// holds, at most, what it held plus the networks new to `id`: what the
    /// reconciler counts against its size (`MapSizes::services`).
    pub fn set_source_ranges(&mut self, id: u32, ranges: &[(IpAddr, u8)]) -> Result<(), Error> {
        self.check_service_id(id)?;
        let mut wanted = ranges
            .iter()
            .map(|&(addr, len)| {
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(Error::InvalidOption {
                        option: "source_ranges",
                        reason: "a prefix longer than its address",
                    });
                }
                let range = SourceRange {
                    service_be: id.to_be_bytes(),
                    addr: to_addr(addr),
                };
                let prefix = source_range_prefix(addr.is_ipv4(), len);
                Ok((prefix, network(prefix, range)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        wanted.sort_unstable_by_key(|&(len, range)| (len, range.addr));
        wanted.dedup();
        let mut index = match self.source_ranges.take() {
            Some(index) => index,
            None => self.read_source_ranges()?,
        };
        let old = index.remove(&id).unwrap_or_default();
        let written = self.write_source_ranges(&wanted, &old);
        if written.is_ok() {
            if !wanted.is_empty() {
                index.insert(id, wanted);
            }
            self.source_ranges = Some(index);
        }
        // Stopped part-way: the trie is read again at the next call, as a
        // network of `id` that is not written again must be there.
        written
    }

    /// Every service's networks in `SOURCE_RANGES`: one walk of the trie
    /// (host bits cleared, should an earlier agent have written them).
    pub(crate) fn read_source_ranges(&self) -> Result<SourceRangeIndex, Error> {
        let trie = LpmTrie::<_, SourceRange, u8>::try_from(self.map(SOURCE_RANGES)?)
            .map_err(map_err(SOURCE_RANGES, "open"))?;
        let mut index = SourceRangeIndex::new();
        for key in trie.keys() {
            let key = key.map_err(map_err(SOURCE_RANGES, "iterate"))?;
            let data = key.data();
            index
                .entry(u32::from_be_bytes(data.service_be))
                .or_default()
                .push((key.prefix_len(), network(key.prefix_len(), data)));
        }
        Ok(index)
    }

    /// Inserts the networks of `wanted` not in `old`, then removes those of
    /// `old` not in `wanted`, so a network in both never stops matching.
    /// One in both is not written again: an older kernel (6.1, as Debian 12
    /// has) refuses even an update in place when the trie is full (ENOSPC),
    /// which would fail a change that only drops networks from a full trie.
    fn write_source_ranges(
        &mut self,
        wanted: &[(u32, SourceRange)],
        old: &[(u32, SourceRange)],
    ) -> Result<(), Error> {
        let mut trie = LpmTrie::<_, SourceRange, u8>::try_from(self.map_mut(SOURCE_RANGES)?)
            .map_err(map_err(SOURCE_RANGES, "open"))?;
        for &(len, range) in wanted {
            if old.contains(&(len, range)) {
                continue;
            }
            trie.insert(&Key::new(len, range), 1, 0)
                .map_err(map_err(SOURCE_RANGES, "insert"))?;
        }
        for &(len, range) in old {
            if wanted.contains(&(len, range)) {
                continue;
            }
            absent(trie.remove(&Key::new(len, range)), SOURCE_RANGES, "remove")?;
        }
        Ok(())
    }

    /// Removes `frontend`.
    pub fn remove_service(&mut self, frontend: &Frontend) -> Result<(), Error> {
        HashMap::<_, _, Service>::try_from(self.map_mut(SERVICES)?)
            .map_err(map_err(SERVICES, "open"))?
            .remove(&frontend.key())
            .map_err(map_err(SERVICES, "remove"))
    }

    /// Writes backend `id`: live, at `addr`, made for `generation`. A record
    /// is immutable in meaning: give a changed backend a new ID, or the same ID
    /// with a higher generation once its old flows may be dropped.
    pub fn put_backend(&mut self, id: u32, addr: SocketAddr, generation: u32) -> Result<(), Error> {
        self.put_backend_on_node(id, addr, generation, false)
    }

    /// [`Self::put_backend`], saying whether the backend is a pod of this
    /// node (`local`): flows of a [`ServiceOptions::snat_remote`] service to
    /// a local backend keep the client's source.
    pub fn put_backend_on_node(
        &mut self,
        id: u32,
        addr: SocketAddr,
        generation: u32,
        local: bool,
    ) -> Result<(), Error> {
        self.check_backend_id(id)?;
        // Replies come from this address: the filter must let them through.
        self.mark_address(addr.ip())?;
        let mut record = Backend::new(to_addr(addr.ip()), addr.port(), generation);
        if local {
            record.flags |= BACKEND_LOCAL;
        }
        Array::<_, Backend>::try_from(self.map_mut(BACKENDS)?)
            .map_err(map_err(BACKENDS, "open"))?
            .set(id, record, 0)
            .map_err(map_err(BACKENDS, "write"))
    }

    /// [`Self::put_backend`] for many backends: the filter bits of all their
    /// addresses first, then every record with one batched update. Every ID
    /// is checked before anything is written; a batch the kernel stops
    /// part-way reports how many records it wrote.
    pub fn put_backends(&mut self, backends: &[(u32, SocketAddr, u32)]) -> Result<(), Error> {
        let remote: Vec<_> = backends
            .iter()
            .map(|&(id, addr, generation)| (id, addr, generation, false))
            .collect();
        self.put_backends_on_node(&remote)
    }

    /// [`Self::put_backends`] with each backend's locality, as
    /// [`Self::put_backend_on_node`] takes it: `(id, addr, generation, local)`.
    pub fn put_backends_on_node(
        &mut self,
        backends: &[(u32, SocketAddr, u32, bool)],
    ) -> Result<(), Error> {
        for &(id, ..) in backends {
            self.check_backend_id(id)?;
        }
        self.mark_addresses(backends.iter().map(|&(_, addr, ..)| addr.ip()))?;
        let (ids, records): (Vec<u32>, Vec<Backend>) = backends
            .iter()
            .map(|&(id, addr, generation, local)| {
                let mut record = Backend::new(to_addr(addr.ip()), addr.port(), generation);
                if local {
                    record.flags |= BACKEND_LOCAL;
                }
                (id, record)
            })
            .unzip();
        crate::sys::map_update_batch(self.map_fd(BACKENDS)?, &ids, &records, 0)
            .map_err(crate::tables::batch_err(BACKENDS, "write", ids.len()))
    }

    /// Retires backend `id`: flows that still point at it are re-selected on
    /// their next packet (UDP at once, TCP too — the new backend answers a
    /// stray segment with a reset).
    pub fn retire_backend(&mut self, id: u32) -> Result<(), Error> {
        self.check_backend_id(id)?;
        let mut backends = Array::<_, Backend>::try_from(self.map_mut(BACKENDS)?)
            .map_err(map_err(BACKENDS, "open"))?;
        let mut record = backends.get(&id, 0).map_err(map_err(BACKENDS, "read"))?;
        record.flags &= !BACKEND_ACTIVE;
        backends
            .set(id, record, 0)
            .map_err(map_err(BACKENDS, "write"))
    }

    /// Backend `id` as stored, if it was ever written.
    pub fn backend(&self, id: u32) -> Result<Option<BackendRecord>, Error> {
        self.check_backend_id(id)?;
        let record = Array::<_, Backend>::try_from(self.map(BACKENDS)?)
            .map_err(map_err(BACKENDS, "open"))?
            .get(&id, 0)
            .map_err(map_err(BACKENDS, "read"))?;
        Ok(BackendRecord::from_stored(&record))
    }

    /// Replaces service `id`'s Maglev table: a new inner map is filled
    /// completely, then swapped in with one update of the outer map, so a packet
    /// sees either the whole old table or the whole new one.
    ///
    /// Refused: an empty table or one over [`MAX_TABLE_SIZE`] slots, and a
    /// slot naming backend ID 0 or an ID beyond the backends map. To swap many
    /// tables, [`Datapath::swap_tables`] waits for one grace period per batch
    /// instead of one per table.
    pub fn swap_table(&mut self, id: u32, table: &[u32]) -> Result<(), Error> {
        self.swap_tables(&[(id, table)])
    }

    /// The inner map holding service `id`'s table, if it has one.
    pub(crate) fn table_map(&self, id: u32) -> Result<Option<Array<MapData, u32>>, Error> {
        let tables = HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(self.map(MAGLEV_TABLES)?)
            .map_err(map_err(MAGLEV_TABLES, "open"))?;
        match tables.get(&id, 0) {
            Ok(inner) => Ok(Some(inner)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(Error::Map {
                map: MAGLEV_TABLES,
                op: "lookup",
                source,
            }),
        }
    }

    /// Service `id`'s table as the datapath sees it, if it has one: read
    /// through a mapping of its memory, not a system call a slot, as `xlb
    /// bpf lb list` reads every service's table while the agent waits.
    pub fn table(&self, id: u32) -> Result<Option<Vec<u32>>, Error> {
        Ok(self.table_mapping(id)?.map(|(mapping, size)| {
            (TABLE_HEADER_SLOTS..size + TABLE_HEADER_SLOTS)
                .map(|slot| mapping.load(slot))
                .collect()
        }))
    }

    /// Removes service `id`'s table (after every frontend using it is gone).
    pub fn remove_table(&mut self, id: u32) -> Result<(), Error> {
        HashOfMaps::<_, u32, Array<MapData, u32>>::try_from(self.map_mut(MAGLEV_TABLES)?)
            .map_err(map_err(MAGLEV_TABLES, "open"))?
            .remove(&id)
            .map_err(map_err(MAGLEV_TABLES, "remove"))
    }

    pub(crate) fn check_service_id(&self, id: u32) -> Result<(), Error> {
        if id >= self.sizes.services {
            return Err(Error::IdOutOfRange {
                kind: "service",
                id,
                limit: self.sizes.services,
            });
        }
        Ok(())
    }

    pub(crate) fn check_backend_id(&self, id: u32) -> Result<(), Error> {
        if id == NO_BACKEND || id >= self.sizes.backends {
            return Err(Error::IdOutOfRange {
                kind: "backend",
                id,
                limit: self.sizes.backends,
            });
        }
        Ok(())
    }
}

/// How a service treats its flows, beside its frontend and table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceOptions {
    /// ClientIP session affinity with this timeout (whole seconds, 1 s to 1
    /// day, as Kubernetes allows): a client's new flows go to the backend of
    /// its last one until the timeout passes without one, and the flow hash
    /// leaves the source port out.
    pub client_ip_affinity: Option<Duration>,
    /// Direct server return: packets reach the backend unchanged inside an
    /// outer header from `Config::encap_source_*`, and its replies go to the
    /// client directly.
    pub dsr: bool,
    /// Source NAT toward backends that are not pods of this node (see
    /// [`Datapath::put_backend_on_node`]), so that their replies come back
    /// through this node: the NodePort, LoadBalancer and externalIP frontends
    /// of a service with `externalTrafficPolicy: Cluster`. The source becomes
    /// `Config::snat_source_*` with a port of the source-NAT range.
    pub snat_remote: bool,
    /// Without a backend, drop packets (`Verdict::DropNoLocalBackend`)
    /// instead of refusing them: a Kubernetes `Local` traffic policy whose
    /// endpoints are all on other nodes.
    pub drop_without_backends: bool,
    /// Only clients in the service's networks
    /// ([`Datapath::set_source_ranges`]) reach this frontend; others are
    /// dropped (`Verdict::DropSourceRange`).
    pub source_ranges_only: bool,
}

/// The longest ClientIP affinity timeout Kubernetes allows: one day.
pub const MAX_AFFINITY_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A ClientIP affinity timeout in the datapath's whole seconds.
fn affinity_seconds(timeout: Duration) -> Result<u32, Error> {
    let invalid = |reason| Error::InvalidOption {
        option: "client_ip_affinity",
        reason,
    };
    if timeout.subsec_nanos() != 0 {
        return Err(invalid("the timeout must be whole seconds"));
    }
    if timeout.is_zero() || timeout > MAX_AFFINITY_TIMEOUT {
        return Err(invalid("the timeout must be from 1 s to 1 day"));
    }
    u32::try_from(timeout.as_secs()).map_err(|_| invalid("the timeout must be from 1 s to 1 day"))
}

/// A removal's outcome: true if this call removed the key, false if it was
/// gone already (deleted by the datapath, or evicted).
pub(crate) fn absent(
    result: Result<(), MapError>,
    map: &'static str,
    op: &'static str,
) -> Result<bool, Error> {
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(source) => Err(Error::Map { map, op, source }),
    }
}

/// The key was not in the map. aya reports a lookup's miss as `KeyNotFound`
/// but a removal's as the syscall's ENOENT.
fn is_missing(error: &MapError) -> bool {
    match error {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_of_a_missing_key_is_no_error() {
        let enoent = || {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(libc::ENOENT),
            })
        };
        assert!(!absent(Err(enoent()), POD_INTERFACES, "remove").unwrap());
        assert!(!absent(Err(MapError::KeyNotFound), POD_INTERFACES, "remove").unwrap());
        assert!(absent(Ok(()), POD_INTERFACES, "remove").unwrap());
        let eperm = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_delete_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        assert!(absent(Err(eperm), POD_INTERFACES, "remove").is_err());
    }

    #[test]
    fn a_source_range_is_keyed_by_its_network() {
        let range = |addr: &str, len: u8| {
            let addr: IpAddr = addr.parse().unwrap();
            let prefix = source_range_prefix(addr.is_ipv4(), len);
            let keyed = network(
                prefix,
                SourceRange {
                    service_be: 7u32.to_be_bytes(),
                    addr: to_addr(addr),
                },
            );
            assert_eq!(keyed.service_be, 7u32.to_be_bytes());
            crate::net::from_addr(&keyed.addr)
        };
        let ip = |addr: &str| addr.parse::<IpAddr>().unwrap();
        assert_eq!(range("198.18.3.129", 24), ip("198.18.3.0"));
        assert_eq!(range("198.18.3.129", 25), ip("198.18.3.128"));
        assert_eq!(range("198.18.3.129", 32), ip("198.18.3.129"));
        assert_eq!(range("198.18.3.129", 0), ip("0.0.0.0"));
        assert_eq!(range("2001:2:0:1::5", 48), ip("2001:2::"));
        assert_eq!(range("2001:2:0:1::5", 128), ip("2001:2:0:1::5"));
        assert_eq!(range("2001:2:0:1::5", 0), ip("::"));
    }
}
