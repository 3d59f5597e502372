//! `xlb-bench sync`: how fast the control plane programs the datapath.
//!
//! One file of N services × B backends is loaded through the agent's own file
//! source, then programmed into a freshly loaded datapath by the agent's
//! reconciler: that is the full sync. Then single backend changes — one
//! backend of one service leaves, or comes back — are programmed one at a
//! time, each timed from "the new model is in hand" to "the maps hold it"
//! (what kube-proxy calls network programming latency, less the source's
//! own delay): the desired state is recomputed, diffed and written.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use consistent_hash::SizingPolicy;
use control_plane::{
    model::{Backend, ServiceName},
    reconcile::{Desired, Reconciler, SyncReport},
    source,
};
use hdrhistogram::Histogram;
use serde::Serialize;
use xdp_lb::{Datapath, LoadOptions, MapSizes};

/// `xlb-bench sync [--services N] [--backends B] [--changes C] [--json FILE]`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// Services in the generated file.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    services: u32,
    /// Backends per service.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=100))]
    backends: u32,
    /// Single backend changes to time.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    changes: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The Maglev seed (any fixed value: the cost does not depend on it).
const SEED: u64 = 0x786c_6200_5359_4e43;
/// Distinct backend hosts; backends beyond that share hosts on other ports.
const BACKEND_HOSTS: u32 = 20_000;

/// What one run measured.
#[derive(Debug, Serialize)]
struct Results {
    services: u32,
    backends_per_service: u32,
    file_bytes: usize,
    parse_seconds: f64,
    full_sync_seconds: f64,
    full_sync: Ops,
    changes: u32,
    change_p50_ms: f64,
    change_p99_ms: f64,
    change_max_ms: f64,
    /// Changes written in place (table size unchanged) and as table swaps.
    changes_patched: usize,
    changes_swapped: usize,
}

/// The writes of a sync.
#[derive(Debug, Serialize)]
struct Ops {
    backends_written: usize,
    tables_swapped: usize,
    frontends_written: usize,
    addresses_written: usize,
}

impl From<SyncReport> for Ops {
    fn from(r: SyncReport) -> Self {
        Self {
            backends_written: r.backends_written,
            tables_swapped: r.tables_swapped,
            frontends_written: r.frontends_written,
            addresses_written: r.addresses_written,
        }
    }
}

/// VIP of service `i`: 198.19.0.0/16, one address each.
fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i)
}

/// Backend `j` of service `i`: on one of [`BACKEND_HOSTS`] hosts in
/// 198.18.0.0/16, at a port that keeps every backend distinct.
fn backend(i: u32, j: u32, per_service: u32) -> SocketAddr {
    let n = i * per_service + j;
    let host = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + n % BACKEND_HOSTS);
    let port = u16::try_from(8000 + n / BACKEND_HOSTS).unwrap_or(u16::MAX);
    SocketAddr::new(IpAddr::V4(host), port)
}

/// The native config file for `services` × `per_service`.
fn config(services: u32, per_service: u32) -> String {
    let mut out = String::from("services:\n");
    for i in 0..services {
        let _ = writeln!(
            out,
            "  - name: svc-{i}\n    frontends: [{{address: {}, port: 80}}]\n    backends:",
            vip(i)
        );
        for j in 0..per_service {
            let _ = writeln!(out, "      - address: \"{}\"", backend(i, j, per_service));
        }
    }
    out
}

pub(crate) fn run(args: &SyncArgs) -> anyhow::Result<()> {
    let text = config(args.services, args.backends);
    let path = std::env::temp_dir().join(format!("xlb-bench-sync-{}.yaml", std::process::id()));
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let started = Instant::now();
    let loaded = source::file::load(&path);
    let parse = started.elapsed();
    let _ = std::fs::remove_file(&path);
    let mut model = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;

    let sizes = MapSizes {
        services: args.services.next_power_of_two().max(1024),
        backends: (args.services * args.backends + 2).next_power_of_two(),
        conntrack: 1024,
        addresses: (args.services + 1).next_power_of_two().max(1024),
    };
    let mut datapath = Datapath::load_with(&LoadOptions {
        sizes,
        ..LoadOptions::default()
    })
    .context("loading the datapath (run as root)")?;
    let mut reconciler = Reconciler::new(
        SEED,
        SizingPolicy::default(),
        sizes.services,
        sizes.backends,
    );
    let all_healthy = |_: &ServiceName, _: SocketAddr| true;
    let started = Instant::now();
    let mut desired = Desired::new(&model, all_healthy);
    let full = reconciler
        .sync(&desired, &mut datapath)
        .context("full sync")?;
    let full_sync = started.elapsed();
    tracing::info!(?full_sync, ?full, "full sync done");

    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("histogram bounds")?;
    let (mut patched, mut swapped) = (0, 0);
    let names: Vec<ServiceName> = model.services.keys().cloned().collect();
    let mut removed: BTreeMap<ServiceName, Backend> = BTreeMap::new();
    for c in 0..args.changes {
        // A spread of services, each toggled: first a backend leaves, the
        // next time it comes back.
        let name = &names[(c as usize * 7_919) % names.len()];
        let service = model.services.get_mut(name).context("service")?;
        match removed.remove(name) {
            Some(b) => service.backends.push(b),
            None => {
                let b = service.backends.pop().context("a backend to remove")?;
                removed.insert(name.clone(), b);
            }
        }
        let started = Instant::now();
        desired.refresh(&model, all_healthy);
        let computed = started.elapsed();
        let report = reconciler
            .sync(&desired, &mut datapath)
            .context("single change")?;
        let took = started.elapsed();
        tracing::debug!(?computed, ?took, "single change");
        histogram
            .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1))
            .context("histogram")?;
        patched += report.tables_patched;
        swapped += report.tables_swapped;
    }
    let ms = |us: u64| Duration::from_micros(us).as_secs_f64() * 1e3;
    let results = Results {
        services: args.services,
        backends_per_service: args.backends,
        file_bytes: text.len(),
        parse_seconds: parse.as_secs_f64(),
        full_sync_seconds: full_sync.as_secs_f64(),
        full_sync: full.into(),
        changes: args.changes,
        change_p50_ms: ms(histogram.value_at_quantile(0.5)),
        change_p99_ms: ms(histogram.value_at_quantile(0.99)),
        change_max_ms: ms(histogram.max()),
        changes_patched: patched,
        changes_swapped: swapped,
    };
    print_table(&results);
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the benchmark's report")]
fn print_table(r: &Results) {
    println!(
        "xlb-bench sync: {} services × {} backends ({} KiB of YAML)\n",
        r.services,
        r.backends_per_service,
        r.file_bytes / 1024
    );
    println!("| what | measured | target |");
    println!("|---|---|---|");
    println!(
        "| parse + validate the file | {:.3} s | — |",
        r.parse_seconds
    );
    println!(
        "| full sync ({} backends, {} tables, {} frontends) | {:.3} s | ≤ 2 s |",
        r.full_sync.backends_written,
        r.full_sync.tables_swapped,
        r.full_sync.frontends_written,
        r.full_sync_seconds
    );
    println!(
        "| single backend change, p50 ({} changes: {} in place, {} swapped) | {:.3} ms | — |",
        r.changes, r.changes_patched, r.changes_swapped, r.change_p50_ms
    );
    println!(
        "| single backend change, p99 | {:.3} ms | ≤ 10 ms |",
        r.change_p99_ms
    );
    println!(
        "| single backend change, max | {:.3} ms | — |",
        r.change_max_ms
    );
}
