//! The configuration a scale is measured with: `N` services spread over VIPs and
//! ports in 198.19.0.0/16, each with a TCP and a UDP frontend sharing one Maglev
//! table (built by `consistent-hash`) of three backends from a pool, and a
//! third, direct-server-return TCP frontend on the same VIP (ports from
//! `DSR_FIRST_PORT`) with the same table.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    ops::Range,
    path::Path,
    time::Instant,
};

use anyhow::Context as _;
use consistent_hash::{Backend, SizingPolicy, Table};
use tracing::info;
use xdp_lb::{
    AddressKind, Config, Datapath, Frontend, LoadOptions, MapSizes, Protocol, Rotation,
    ServiceOptions,
};
use xdp_lb_common::flow_table::{FlowBucket, ReplyBucket, WAYS, buckets_for};

use super::{
    frame::{DST_IP_LO, DST_PORT},
    netns::DOWN_ADDR,
};

/// Backends IDs `1..=BACKEND_POOL`, at 198.18.2.1 and up.
pub(crate) const BACKEND_POOL: u32 = 250;
/// The backend every service has besides two of the pool: replies from one
/// address can then belong to flows of any service (see the reply case).
pub(crate) const SHARED_BACKEND: u32 = 1;
pub(crate) const BACKEND_PORT: u16 = 8080;
/// Backends of every service: the shared one and two of the pool.
pub(crate) const BACKENDS_PER_SERVICE: u32 = 3;
/// The first port of the services; VIPs with several services use the next ones.
const FIRST_PORT: u16 = 80;
/// The first port of the services' direct-server-return frontends, laid out
/// as those from `FIRST_PORT` (at most 1000 ports per VIP: no overlap).
const DSR_FIRST_PORT: u16 = 5000;
/// Longest run of ports per VIP: `N` is split into VIPs × ports, and a VIP's
/// index must fit the 16 bits the wrapper rotates.
const MAX_VIPS: u32 = 1 << 16;
const MAX_PORTS_PER_VIP: u32 = 1000;

/// The `id`-th backend's address.
pub(crate) fn backend_ip(id: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 2, 0)) + id)
}

/// The `id`-th backend's MAC (a permanent neighbour of `dn0`).
pub(crate) fn backend_mac(id: u32) -> [u8; 6] {
    let [_, _, hi, lo] = id.to_be_bytes();
    [0x02, 0, 0, 0x02, hi, lo]
}

/// The backend ID at `ip`, if it is one of the pool.
pub(crate) fn backend_id(ip: Ipv4Addr) -> Option<u32> {
    let id = u32::from(ip).checked_sub(u32::from(backend_ip(0)))?;
    (1..=BACKEND_POOL).contains(&id).then_some(id)
}

/// How `N` services are laid out: service `i` (ID `i + 1`) is VIP `i % vips`,
/// port `80 + i / vips`, so that the wrapper can walk every service with one
/// rotation of the VIP's low 16 bits and, past 65 536 services, a second one of
/// the port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) services: u32,
    pub(crate) vips: u32,
    pub(crate) ports: u32,
}

impl Layout {
    pub(crate) fn new(services: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(services >= 1, "a scale needs at least 1 service");
        let ports = (1..=MAX_PORTS_PER_VIP)
            .find(|&p| services.is_multiple_of(p) && services / p <= MAX_VIPS)
            .with_context(|| {
                format!("{services} services cannot be split into ≤ 65536 VIPs × ≤ 1000 ports")
            })?;
        Ok(Self {
            services,
            vips: services / ports,
            ports,
        })
    }

    /// VIP `v`: 198.19.0.0 + v.
    pub(crate) fn vip(v: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + v)
    }

    /// Service `i`'s frontend address (TCP and UDP).
    pub(crate) fn frontend(&self, i: u32) -> SocketAddrV4 {
        self.frontend_from(FIRST_PORT, i)
    }

    /// Service `i`'s direct-server-return frontend address (TCP).
    pub(crate) fn dsr_frontend(&self, i: u32) -> SocketAddrV4 {
        self.frontend_from(DSR_FIRST_PORT, i)
    }

    fn frontend_from(&self, first_port: u16, i: u32) -> SocketAddrV4 {
        let port = first_port + u16::try_from(i / self.vips).expect("ports ≤ 1000");
        SocketAddrV4::new(Self::vip(i % self.vips), port)
    }

    /// The rotations that send run `n` to service `n % N` (given a frame to
    /// service 0). With one service the first rewrites the VIP with its own
    /// value: every scale then makes the wrapper do the same work.
    pub(crate) fn rotations(&self) -> Vec<Rotation> {
        self.rotations_from(FIRST_PORT)
    }

    /// `rotations` over the direct-server-return frontends (given a frame to
    /// service 0's).
    pub(crate) fn dsr_rotations(&self) -> Vec<Rotation> {
        self.rotations_from(DSR_FIRST_PORT)
    }

    fn rotations_from(&self, first_port: u16) -> Vec<Rotation> {
        let mut rotations = vec![Rotation {
            offset: DST_IP_LO,
            base: 0,
            modulus: self.vips,
            divisor: 1,
        }];
        if self.ports > 1 {
            rotations.push(Rotation {
                offset: DST_PORT,
                base: first_port,
                modulus: self.ports,
                divisor: self.vips,
            });
        }
        rotations
    }

    /// The service IDs' backends: the shared one and two of the pool.
    fn backends_of(i: u32) -> [u32; 3] {
        let others = BACKEND_POOL - 1;
        [
            SHARED_BACKEND,
            2 + (2 * i) % others,
            2 + (2 * i + 1) % others,
        ]
    }
}

/// Loads a datapath sized for `layout`, its maps pinned in `pin_dir` (on a
/// bpffs), and configures every service.
pub(crate) fn load(
    layout: &Layout,
    conntrack: u32,
    seed: u64,
    pin_dir: &Path,
) -> anyhow::Result<Datapath> {
    let n = layout.services;
    let options = LoadOptions {
        sizes: MapSizes {
            // Three frontends per service; IDs 1..=N.
            services: 3 * n + 1,
            backends: BACKEND_POOL + 1,
            conntrack,
            addresses: layout.vips + 1,
            fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
        },
        pin_dir: Some(pin_dir.to_owned()),
    };
    let mut dp = Datapath::load_with(&options).context("loading the datapath")?;
    // Timeouts far beyond a benchmark's length: a flow created during setup
    // must still be tracked when it is measured. No flood guard: method B
    // creates flows far faster than its rate, and every one is measured as
    // tracked. Direct server return wraps from the LB's address toward the
    // backends.
    dp.set_config(&Config {
        hash_seed: seed,
        tcp_syn_timeout_s: 86_400,
        tcp_established_timeout_s: 86_400,
        udp_timeout_s: 86_400,
        new_flows_per_cpu_per_sec: 0,
        encap_source_v4: DOWN_ADDR.octets(),
        ..Config::default()
    })?;
    for id in 1..=BACKEND_POOL {
        dp.put_backend(id, SocketAddr::from((backend_ip(id), BACKEND_PORT)), 1)?;
    }
    let started = Instant::now();
    write_tables(&mut dp, n, seed)?;
    for v in 0..layout.vips {
        dp.set_address(IpAddr::V4(Layout::vip(v)), AddressKind::Vip)?;
    }
    let dsr = ServiceOptions {
        dsr: true,
        ..ServiceOptions::default()
    };
    for i in 0..n {
        // 100 000 services take a while to configure.
        crate::stop::check()?;
        let addr = SocketAddr::V4(layout.frontend(i));
        for proto in [Protocol::Tcp, Protocol::Udp] {
            dp.upsert_service(
                &Frontend::new(addr, proto),
                i + 1,
                &ServiceOptions::default(),
            )?;
        }
        let addr = SocketAddr::V4(layout.dsr_frontend(i));
        dp.upsert_service(&Frontend::new(addr, Protocol::Tcp), i + 1, &dsr)?;
    }
    info!(
        services = n,
        table_size = table_size()?.get(),
        seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
        "services configured"
    );
    Ok(dp)
}

/// Writes every service's table with `swap_tables`: every map-of-maps update
/// waits for an RCU grace period (~10 ms here), and a batch of tables pays
/// one wait for all of them, where one table per update would take a quarter
/// of an hour for 100 000 services.
fn write_tables(dp: &mut Datapath, n: u32, seed: u64) -> anyhow::Result<()> {
    let size = table_size()?;
    swap_tables(dp, 0..n, |i| maglev_slots(seed, size, i))
}

/// Services `services` (0-based) get tables whose every slot is the shared
/// backend, so that the flows created meanwhile all go to it; `restore_tables`
/// puts their Maglev tables back (the flows keep their backend).
pub(crate) fn pin_to_shared_backend(dp: &mut Datapath, services: Range<u32>) -> anyhow::Result<()> {
    let slots = vec![SHARED_BACKEND; table_size()?.get() as usize];
    swap_tables(dp, services, |_| Ok(slots.clone()))
}

/// Rewrites the Maglev tables of `services` (0-based), see `pin_to_shared_backend`.
pub(crate) fn restore_tables(
    dp: &mut Datapath,
    services: Range<u32>,
    seed: u64,
) -> anyhow::Result<()> {
    let size = table_size()?;
    swap_tables(dp, services, |i| maglev_slots(seed, size, i))
}

/// Swaps in the table `slots(i)` for every service `i` of `services`, in
/// batches.
fn swap_tables(
    dp: &mut Datapath,
    services: Range<u32>,
    slots: impl Fn(u32) -> anyhow::Result<Vec<u32>>,
) -> anyhow::Result<()> {
    const CHUNK: usize = 4096;
    let (first, n) = (services.start, services.len());
    let ids: Vec<u32> = services.collect();
    for (done, chunk) in (CHUNK..).step_by(CHUNK).zip(ids.chunks(CHUNK)) {
        crate::stop::check()?;
        let tables = chunk
            .iter()
            .map(|&i| slots(i))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let batch: Vec<(u32, &[u32])> = chunk
            .iter()
            .zip(&tables)
            .map(|(&i, t)| (i + 1, t.as_slice()))
            .collect();
        dp.swap_tables(&batch)?;
        let done = done.min(n);
        if done.is_multiple_of(20_480) || done == n {
            info!(first, tables = done, of = n, "tables written");
        }
    }
    Ok(())
}

/// Bytes of the two conntrack tables a datapath loaded for `entries` flows
/// has, made as the loader makes them: `buckets_for(entries)` buckets of
/// each, which the kernel allocates whole when the maps are created.
pub(crate) fn conntrack_bytes(entries: u32) -> u64 {
    let bucket = size_of::<FlowBucket>() + size_of::<ReplyBucket>();
    u64::from(buckets_for(entries)) * bucket as u64
}

/// The most conntrack entries whose tables (`conntrack_bytes`) take at most
/// `memory` bytes: a key has two slots of a bucket of `WAYS`, so the tables
/// of `n` entries have the power of two of buckets at or above `n / 4`.
pub(crate) fn conntrack_entries_within(memory: u64) -> u32 {
    let bucket = (size_of::<FlowBucket>() + size_of::<ReplyBucket>()) as u64;
    let buckets = memory / bucket;
    if buckets == 0 {
        return 0;
    }
    let buckets = 1u64 << buckets.ilog2();
    u32::try_from(buckets * (WAYS as u64 / 2)).unwrap_or(u32::MAX)
}

/// Bytes of the Maglev tables of `services` services: one of `table_size`
/// slots of a backend ID (4 bytes) each.
pub(crate) fn tables_bytes(services: u32) -> anyhow::Result<u64> {
    Ok(u64::from(services) * u64::from(table_size()?.get()) * size_of::<u32>() as u64)
}

/// The size the sizing policy gives a service of [`BACKENDS_PER_SERVICE`] backends.
pub(crate) fn table_size() -> anyhow::Result<consistent_hash::TableSize> {
    SizingPolicy::default()
        .fitting(BACKENDS_PER_SERVICE as usize)
        .context("sizing a service's table")
}

/// Service `i`'s table, as backend IDs per slot.
///
/// The backends' keys name the service too: the flow hash leaves the
/// destination out, so with keys shared between services a flow would pick the
/// shared backend in nearly every service or in none (its permutation, and so
/// its slots, would be the same in every table); the reply case needs flows of
/// many services that pick it.
fn maglev_slots(seed: u64, size: consistent_hash::TableSize, i: u32) -> anyhow::Result<Vec<u32>> {
    let ids = Layout::backends_of(i);
    let key = |id: u32| format!("{}:{BACKEND_PORT}/TCP service {}", backend_ip(id), i + 1);
    let table = Table::build(seed, size, ids.map(|id| Backend::new(key(id))))
        .context("building a Maglev table")?;
    // The table names backends by their index in its own (hash) order.
    let order: Vec<u32> = table
        .backends()
        .iter()
        .map(|b| {
            ids.into_iter()
                .find(|&id| key(id).as_bytes() == b.key.as_slice())
                .expect("every backend of the table is one of ids")
        })
        .collect();
    Ok(table.slots().iter().map(|&s| order[s as usize]).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::prog::frame::{Headers, L4, flow_of, rotate};

    #[test]
    fn layouts_split_services_into_vips_and_ports() {
        assert_eq!(
            Layout::new(1).unwrap(),
            Layout {
                services: 1,
                vips: 1,
                ports: 1
            }
        );
        assert_eq!(Layout::new(1000).unwrap().ports, 1);
        let big = Layout::new(100_000).unwrap();
        assert_eq!((big.vips, big.ports), (50_000, 2));
    }

    #[test]
    fn the_rotations_walk_every_service_once_per_pass() {
        let layout = Layout::new(100_000).unwrap();
        let frame = Headers {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40_000),
            dst: layout.frontend(0),
            ttl: 64,
            l4: L4::Ack,
        }
        .build();
        let mut seen = HashSet::new();
        for n in 0..layout.services {
            let mut rotated = frame.clone();
            rotate(&mut rotated, &layout.rotations(), n);
            let dst = flow_of(&rotated).unwrap().dst;
            assert_eq!(dst, SocketAddr::V4(layout.frontend(n)));
            seen.insert(dst);
        }
        assert_eq!(seen.len(), 100_000);
    }

    #[test]
    fn every_service_has_the_shared_backend_and_two_of_the_pool() {
        for i in [0, 1, 123, 99_999] {
            let ids = Layout::backends_of(i);
            assert_eq!(ids[0], SHARED_BACKEND);
            assert!(ids[1] != ids[2] && ids[1..].iter().all(|id| (2..=BACKEND_POOL).contains(id)));
            assert_eq!(backend_id(backend_ip(ids[1])), Some(ids[1]));
        }
    }

    #[test]
    fn the_conntrack_tables_take_a_power_of_two_of_buckets() {
        // 896 + 768 bytes a bucket of each table; a quarter of the entries
        // asked, rounded up to a power of two, of buckets.
        assert_eq!(conntrack_bytes(1), 1664);
        assert_eq!(conntrack_bytes(4096), 1024 * 1664);
        assert_eq!(conntrack_bytes(4097), 2048 * 1664);
        assert_eq!(conntrack_bytes(u32::MAX), (1 << 30) * 1664);
        for memory in [1664, 1 << 30, 24 << 30, u64::MAX] {
            let most = conntrack_entries_within(memory);
            assert!(conntrack_bytes(most) <= memory, "{memory}");
            if most < u32::MAX {
                assert!(conntrack_bytes(most + 1) > memory, "{memory}");
            }
        }
        assert_eq!(conntrack_entries_within(1663), 0);
        // 24 GiB hold 2^23 buckets of each table.
        assert_eq!(conntrack_entries_within(24 << 30), 1 << 25);
    }

    #[test]
    fn tables_name_only_the_services_backends() {
        let size = table_size().unwrap();
        let slots = maglev_slots(7, size, 42).unwrap();
        assert_eq!(slots.len(), size.get() as usize);
        let ids = Layout::backends_of(42);
        for id in ids {
            let share = slots.iter().filter(|&&s| s == id).count();
            assert!(share > slots.len() / 4, "backend {id} has {share} slots");
        }
    }
}
