//! How each mode sets up the LB namespace of a stand: `xlb` loads and
//! attaches the datapath with the stand's services; the ruleset modes load
//! the rules kube-proxy would write for the same services (`kube_proxy`).

use std::{
    collections::BTreeMap,
    fs::File,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    process::Stdio,
    time::Duration,
};

use anyhow::Context as _;
use consistent_hash::{Backend as MaglevBackend, SizingPolicy, Table};
use netns_tests::topology::{ClientLbBackends, plan};
use xdp_lb::{
    AddressKind, Attachment, Config, Datapath, Frontend, LoadOptions, MapSizes, Protocol,
    ServiceOptions,
};

use super::{
    stand::BACKENDS,
    traffic::{STREAM_PORT, TCP_BACKEND_PORT, TCP_FRONTEND_PORT, UDP_PORT},
};
use crate::{
    child::{Ended, run_bounded},
    kube_proxy,
};

/// The backend ID of the stream service's one backend (after the TCP and UDP
/// backends, `1..=2 * BACKENDS`).
const STREAM_BACKEND: u32 = 2 * BACKENDS as u32 + 1;
/// The Maglev hash seed of the `xlb` mode.
const HASH_SEED: u64 = 0x786c_6200_0000_0010;
/// xlb's conntrack capacity: the kernel's conntrack limit in a namespace
/// (262 144, which cannot be raised from inside one), so both sides track
/// as many flows.
const CONNTRACK_ENTRIES: u32 = 262_144;

/// xlb's datapath and its attachments: declared before the rig so the
/// programs detach before the namespaces go.
#[derive(Debug)]
pub(crate) struct Xlb {
    _attachments: Vec<Attachment>,
    pub(crate) datapath: Datapath,
}

/// Service `i`'s VIP (from 0).
pub(crate) fn vip(i: u32) -> Ipv4Addr {
    let n = u16::try_from(i + 1).expect("at most 65 535 services");
    plan::vip(n).0
}

/// The kube-proxy services equal to the stand's: per service, the TCP port
/// and the UDP port; then the stream service.
pub(crate) fn kube_services(topo: &ClientLbBackends, services: u32) -> Vec<kube_proxy::Service> {
    let endpoints = |port| {
        topo.backends
            .iter()
            .map(|b| SocketAddrV4::new(b.v4, port))
            .collect::<Vec<_>>()
    };
    (0..services)
        .flat_map(|i| {
            [
                kube_proxy::Service {
                    name: format!("svc-{i}"),
                    vip: vip(i),
                    port: TCP_FRONTEND_PORT,
                    protocol: kube_proxy::Protocol::Tcp,
                    endpoints: endpoints(TCP_BACKEND_PORT),
                },
                kube_proxy::Service {
                    name: format!("svc-{i}"),
                    vip: vip(i),
                    port: UDP_PORT,
                    protocol: kube_proxy::Protocol::Udp,
                    endpoints: endpoints(UDP_PORT),
                },
            ]
        })
        .chain([kube_proxy::Service {
            name: "stream".to_owned(),
            vip: vip(services),
            port: STREAM_PORT,
            protocol: kube_proxy::Protocol::Tcp,
            endpoints: vec![SocketAddrV4::new(topo.backends[0].v4, STREAM_PORT)],
        }])
        .collect()
}

/// A ruleset did not load within the time allowed: the mode is left out at
/// that number of services, and the report says so.
#[derive(Debug)]
pub(crate) struct LoadTimedOut {
    pub(crate) program: String,
    pub(crate) seconds: u64,
}

impl std::fmt::Display for LoadTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} did not load the ruleset within {} s",
            self.program, self.seconds
        )
    }
}

impl std::error::Error for LoadTimedOut {}

/// Writes `rules` to the rig's work directory and loads them inside the LB's
/// namespace with `program [args] FILE`, within `limit`. A run asked to stop
/// (Ctrl-C, SIGTERM) kills the load rather than waiting for it: at 10 000
/// services `iptables-restore` runs for minutes.
pub(crate) fn load(
    topo: &mut ClientLbBackends,
    program: &str,
    args: &[&str],
    rules: &str,
    limit: Duration,
) -> anyhow::Result<()> {
    let workdir = topo.rig.workdir()?;
    let path = workdir.join(format!("{program}.rules"));
    std::fs::write(&path, rules).with_context(|| format!("writing {}", path.display()))?;
    // Errors to a file, as `child::run_bounded` asks.
    let errors = workdir.join(format!("{program}.stderr"));
    let stderr = File::create(&errors).with_context(|| format!("creating {}", errors.display()))?;
    // `ip netns exec` execs the program itself, so a kill reaches the load.
    let mut command = topo.lb.command(program)?;
    command
        .args(args)
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    match run_bounded(&mut command, limit)? {
        Ended::Exited(status, _) if status.success() => Ok(()),
        Ended::Exited(status, _) => anyhow::bail!(
            "loading the ruleset with {program} failed ({status}): {}",
            std::fs::read_to_string(&errors).unwrap_or_default().trim()
        ),
        Ended::TimedOut => Err(LoadTimedOut {
            program: program.to_owned(),
            seconds: limit.as_secs(),
        }
        .into()),
    }
}

/// Loads the datapath with the stand's services and attaches it: `xdp_lb` on
/// both LB interfaces, `xdp_pass` on the far ends it redirects into.
pub(crate) fn set_up_xlb(topo: &mut ClientLbBackends, services: u32) -> anyhow::Result<Xlb> {
    let mut dp = Datapath::load_with(&LoadOptions {
        sizes: MapSizes {
            services: 2 * services + 2,
            backends: STREAM_BACKEND + 1,
            conntrack: CONNTRACK_ENTRIES,
            addresses: services + 1,
            fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
        },
        pin_dir: None,
    })
    .context("loading the datapath")?;
    // No flood guard: the new-flow workload would pass its rate, and xlb
    // then tracks fewer flows than nftables' conntrack, which tracks all.
    dp.set_config(&Config {
        hash_seed: HASH_SEED,
        new_flows_per_cpu_per_sec: 0,
        ..Config::default()
    })?;
    let mut tables = Vec::new();
    for (p, (proto, port)) in [(Protocol::Tcp, TCP_BACKEND_PORT), (Protocol::Udp, UDP_PORT)]
        .into_iter()
        .enumerate()
    {
        let backends: Vec<(u32, SocketAddr)> = (0..BACKENDS)
            .map(|i| {
                let id = (p * BACKENDS + i + 1) as u32;
                (id, SocketAddr::new(topo.backends[i].v4.into(), port))
            })
            .collect();
        for &(id, addr) in &backends {
            dp.put_backend(id, addr, 1)?;
        }
        tables.push((proto, maglev_table(&backends, proto)?));
    }
    // Service IDs: 2i + 1 for the TCP port of service i, 2i + 2 for its UDP port.
    for first in (0..services).step_by(1024) {
        let last = services.min(first + 1024);
        let batch: Vec<(u32, &[u32])> = (first..last)
            .flat_map(|i| {
                tables
                    .iter()
                    .enumerate()
                    .map(move |(p, (_, t))| (2 * i + 1 + p as u32, t.as_slice()))
            })
            .collect();
        dp.swap_tables(&batch)?;
    }
    for i in 0..services {
        let addr = IpAddr::V4(vip(i));
        dp.set_address(addr, AddressKind::Vip)?;
        for (p, (proto, _)) in tables.iter().enumerate() {
            let port = match proto {
                Protocol::Tcp => TCP_FRONTEND_PORT,
                Protocol::Udp => UDP_PORT,
            };
            let frontend = Frontend::new(SocketAddr::new(addr, port), *proto);
            dp.upsert_service(&frontend, 2 * i + 1 + p as u32, &ServiceOptions::default())?;
        }
    }
    // The stream service: b0 alone.
    let stream = SocketAddr::new(topo.backends[0].v4.into(), STREAM_PORT);
    dp.put_backend(STREAM_BACKEND, stream, 1)?;
    let id = 2 * services + 1;
    dp.swap_tables(&[(
        id,
        &maglev_table(&[(STREAM_BACKEND, stream)], Protocol::Tcp)?,
    )])?;
    let vip = IpAddr::V4(vip(services));
    dp.set_address(vip, AddressKind::Vip)?;
    dp.upsert_service(
        &Frontend::new(SocketAddr::new(vip, STREAM_PORT), Protocol::Tcp),
        id,
        &ServiceOptions::default(),
    )?;
    let attachments = netns_tests::attach_lb(&mut dp, &[&topo.lb_front, &topo.lb_back])?;
    anyhow::ensure!(
        attachments.iter().all(Attachment::is_native),
        "XDP fell back to generic mode: the xlb figures would not be XDP's"
    );
    Ok(Xlb {
        _attachments: attachments,
        datapath: dp,
    })
}

/// The Maglev table of `backends` (ID and address), keyed `ip:port/PROTO` as
/// the control plane keys them.
fn maglev_table(backends: &[(u32, SocketAddr)], proto: Protocol) -> anyhow::Result<Vec<u32>> {
    let proto = match proto {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    };
    let ids: BTreeMap<Vec<u8>, u32> = backends
        .iter()
        .map(|&(id, addr)| (format!("{addr}/{proto}").into_bytes(), id))
        .collect();
    let size = SizingPolicy::default().fitting(backends.len())?;
    let keys = ids.keys().map(|key| MaglevBackend::new(key.clone()));
    let table = Table::build(HASH_SEED, size, keys)?;
    Ok(table
        .slots()
        .iter()
        .map(|&index| ids[&table.backends()[index as usize].key])
        .collect())
}
