//! `xlb-bench sync`: how fast the control plane programs the datapath.
//!
//! One file of N services × B backends is loaded through the agent's own file
//! source, then programmed into a freshly loaded datapath by the agent's
//! reconciler: that is the full sync. Then single backend changes — one
//! backend of one service leaves, or comes back — are programmed one at a
//! time, each timed from "the new model is in hand" to "the maps hold it"
//! (what kube-proxy calls network programming latency, less the source's
//! own delay): the desired state is recomputed, diffed and written.
//!
//! With `--flows N`, N flows are tracked before the changes are timed (a
//! SYN to each service in turn, through `BPF_PROG_TEST_RUN`): a change's
//! latency beside a conntrack table that holds them, which a sync must not
//! walk.
//!
//! Beside it (`--baselines`, on by default), the same services as kube-proxy
//! would program them: its nftables-mode ruleset loaded with `nft -f` and its
//! iptables-mode ruleset with `iptables-restore`, each into an empty private
//! network namespace, then single backend changes applied the way
//! kube-proxy's partial sync applies them. Only the tool's own process time
//! is measured (kube-proxy's computation of the text is not).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Command, Stdio},
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
use xdp_lb::{Config, Datapath, LoadOptions, MapSizes, ProgramName};

use crate::{
    child::{Ended, run_bounded},
    kube_proxy,
    prog::frame::{Headers, L4, ipv4_plus},
};

/// `xlb-bench sync [--services N] [--backends B] [--changes C] [--flows F] [--json FILE]`.
#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// Services in the generated file (one frontend each: the first 65 536
    /// on port 80 of their own VIP in 198.19.0.0/16, the next ones on port 81
    /// of the same VIPs). At most 131072.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=131_072))]
    services: u32,
    /// Backends per service, 2 to 100.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=100))]
    backends: u32,
    /// Single backend changes to time.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    changes: u32,
    /// Flows tracked before the changes are timed: TCP SYNs to the
    /// services' frontends in turn, from clients in 198.18.128.0/17. The
    /// conntrack tables are asked for four times as many entries, as
    /// `xlb-bench prog` asks, so that no bucket gives one up; 0 leaves
    /// them empty. At most 500000.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=500_000))]
    flows: u32,
    /// Also time loading kube-proxy's nftables and iptables rulesets for the
    /// same services (in a private network namespace); on unless
    /// --no-baselines.
    #[arg(long, default_value_t = true, conflicts_with = "no_baselines")]
    baselines: bool,
    /// Skip the kube-proxy baselines.
    #[arg(long = "no-baselines")]
    no_baselines: bool,
    /// Single backend changes to time for each kube-proxy baseline.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    baseline_changes: u32,
    /// Give up on a kube-proxy ruleset whose full load takes longer than
    /// this many seconds (its row then says so); at most 86400, a day.
    #[arg(
        long,
        default_value_t = 180,
        value_parser = clap::value_parser!(u64).range(1..=SECONDS_MAX)
    )]
    baseline_timeout: u64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The longest any duration of a run may be, in seconds: --baseline-timeout
/// bounds a full load of a ruleset, and a full sync of the largest file takes
/// minutes. `report` refuses a longer one.
pub(crate) const SECONDS_MAX: u64 = 86_400;

/// The longest single change xlb's histogram holds, in µs (a longer one
/// fails the run).
pub(crate) const CHANGE_MAX_US: u64 = 60_000_000;

/// The longest single change a kube-proxy baseline's histogram holds, in µs.
pub(crate) const BASELINE_CHANGE_MAX_US: u64 = 600_000_000;

/// The histogram of change latencies up to `max_us`, in µs, to three
/// significant digits.
pub(crate) fn change_histogram(max_us: u64) -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, max_us, 3).context("histogram bounds")
}

/// The largest figure, in ms, that a p50 or p99 read from
/// `change_histogram(max_us)` can be: the top of its highest bucket.
pub(crate) fn change_ms_max(max_us: u64) -> anyhow::Result<f64> {
    let top = change_histogram(max_us)?.highest_equivalent(max_us);
    Ok(Duration::from_micros(top).as_secs_f64() * 1e3)
}

/// The Maglev seed (any fixed value: the cost does not depend on it).
const SEED: u64 = 0x786c_6200_5359_4e43;
/// Distinct backend hosts; backends beyond that share hosts on other ports.
const BACKEND_HOSTS: u32 = 20_000;

/// What one run measured.
#[derive(Debug, Serialize)]
struct Results {
    /// The build that measured it.
    build: crate::build_id::BuildId,
    services: u32,
    backends_per_service: u32,
    file_bytes: usize,
    parse_seconds: f64,
    full_sync_seconds: f64,
    full_sync: Ops,
    changes: u32,
    /// Flows in conntrack while the changes ran (`--flows`).
    tracked_flows: u64,
    change_p50_ms: f64,
    change_p99_ms: f64,
    change_max_ms: f64,
    /// Changes written in place (table size unchanged) and as table swaps.
    changes_patched: usize,
    changes_swapped: usize,
    /// kube-proxy's rulesets for the same services (absent with `--no-baselines`).
    baselines: Option<Baselines>,
}

/// The cost of the equivalent kube-proxy rulesets.
#[derive(Debug, Serialize)]
struct Baselines {
    /// `nft --version`.
    nft_version: String,
    /// `iptables -V`: names the backend, `nf_tables` or `legacy`.
    iptables_version: String,
    nftables: RulesetCost,
    iptables: RulesetCost,
}

/// Loading one ruleset and changing it.
#[derive(Debug, Serialize)]
struct RulesetCost {
    /// The command that loaded the full ruleset.
    full_load_command: String,
    ruleset_bytes: usize,
    /// Wall time of the full load, or of the attempt when it timed out.
    full_load_seconds: f64,
    /// The full load did not finish within `--baseline-timeout` and was
    /// killed; no changes were timed.
    full_load_timed_out: bool,
    /// The command that applied each change.
    change_command: String,
    /// Mean size of one change's input.
    change_bytes: usize,
    changes: u32,
    change_p50_ms: f64,
    change_p99_ms: f64,
    change_max_ms: f64,
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

/// Conntrack entries asked per flow of `--flows`.
const FLOW_HEADROOM: u32 = 4;

/// Source ports per client of `track_flows`.
const PORTS_PER_CLIENT: u32 = 60_000;

/// Sets up `flows` tracked flows, a TCP SYN to each of the `services`
/// frontends in turn, from clients of 198.18.128.0/17 (no backend host
/// lies there), through `BPF_PROG_TEST_RUN` in a private network namespace
/// (the FIB lookups of the forwarding find no route there). The flood guard
/// is off meanwhile. Returns how many flows conntrack holds: all of them,
/// or an error.
fn track_flows(datapath: &mut Datapath, services: u32, flows: u32) -> anyhow::Result<u64> {
    if flows == 0 {
        return Ok(0);
    }
    let config = datapath.config()?;
    datapath.set_config(&Config {
        new_flows_per_cpu_per_sec: 0,
        ..config
    })?;
    let started = Instant::now();
    let shared: &Datapath = datapath;
    in_private_netns(|| {
        for n in 0..flows {
            crate::stop::check()?;
            let (vip, port) = frontend(n % services);
            let client = ipv4_plus(Ipv4Addr::new(198, 18, 128, 0), n / PORTS_PER_CLIENT)?;
            let client_port = u16::try_from(1024 + n % PORTS_PER_CLIENT).expect("below 61 024");
            let syn = Headers {
                src_mac: [2, 0, 0, 0, 0, 1],
                dst_mac: [2, 0, 0, 0, 0, 2],
                src: SocketAddrV4::new(client, client_port),
                dst: SocketAddrV4::new(vip, port),
                ttl: 64,
                l4: L4::Syn,
            };
            shared
                .test_run(ProgramName::XdpLb, &syn.build())
                .context("running a SYN")?;
        }
        Ok(())
    })?;
    datapath.set_config(&config)?;
    let tracked = datapath
        .map_usage()?
        .into_iter()
        .find(|usage| usage.name == "CONNTRACK")
        .map_or(0, |usage| usage.entries);
    tracing::info!(tracked, took = ?started.elapsed(), "flows tracked");
    anyhow::ensure!(
        tracked == u64::from(flows),
        "{tracked} of {flows} flows are tracked"
    );
    Ok(tracked)
}

/// VIPs per port: 198.19.0.0/16, inside the rig range 198.18.0.0/15.
const VIPS: u32 = 1 << 16;

/// The frontend of service `i`: VIP `i % 65 536` of 198.19.0.0/16, port 80
/// for the first 65 536 services, 81 for the next.
fn frontend(i: u32) -> (Ipv4Addr, u16) {
    let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i % VIPS);
    let port = 80 + u16::try_from(i / VIPS).expect("at most 131 072 services");
    (vip, port)
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
        let (vip, port) = frontend(i);
        let _ = writeln!(
            out,
            "  - name: svc-{i}\n    frontends: [{{address: {vip}, port: {port}}}]\n    backends:"
        );
        for j in 0..per_service {
            let _ = writeln!(out, "      - address: \"{}\"", backend(i, j, per_service));
        }
    }
    out
}

/// The services' file the run writes for the agent's file source, removed
/// once parsed.
fn services_file() -> PathBuf {
    std::env::temp_dir().join(format!("xlb-bench-sync-{}.yaml", std::process::id()))
}

/// The directory of the kube-proxy rulesets the baselines load, removed
/// with them.
fn rulesets_dir() -> PathBuf {
    std::env::temp_dir().join(format!("xlb-bench-sync-{}", std::process::id()))
}

/// What an interrupted run may leave (`stop`): the files it writes. Its
/// network namespaces are anonymous, and its datapath's maps are pinned
/// nowhere: they end with the process.
pub(crate) fn leftovers() -> crate::stop::Leftovers {
    let (file, dir) = (services_file(), rulesets_dir());
    let (file, dir) = (file.display(), dir.display());
    crate::stop::Leftovers {
        at_once: format!(
            "leaving the kube-proxy rulesets it writes in {dir} and, while it parses it, the \
             services' file {file}: `rm -rf {dir} {file}` removes them (its network namespaces \
             and maps end with the process)"
        ),
        after_stop: "nothing is left: its network namespaces and maps ended with it, and a \
                     warning above names any file it could not remove"
            .to_owned(),
    }
}

/// Removes `path` (a directory with all it holds if `dir`), or warns that
/// it could not: a file left in the temporary directory is not worth
/// failing a run that measured.
fn remove_or_warn(path: &Path, dir: bool) {
    let removed = if dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove it: remove it by hand");
        }
        _ => {}
    }
}

pub(crate) fn run(args: &SyncArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        crate::output::check_file("--json", path)?;
    }
    let text = config(args.services, args.backends);
    let path = services_file();
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    let started = Instant::now();
    let loaded = source::file::load(&path);
    let parse = started.elapsed();
    remove_or_warn(&path, false);
    let mut model = loaded.map_err(|e| anyhow::anyhow!("{e}"))?;

    let sizes = MapSizes {
        // Service ID 0 is never given out: one more than the services.
        services: (args.services + 1).next_power_of_two().max(1024),
        backends: (args.services * args.backends + 2).next_power_of_two(),
        conntrack: (args.flows * FLOW_HEADROOM).max(1024),
        addresses: (args.services.min(VIPS) + 1).next_power_of_two().max(1024),
        fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
    };
    let mut datapath = Datapath::load_with(&LoadOptions {
        sizes,
        ..LoadOptions::default()
    })
    .context("loading the datapath (run as root)")?;
    let mut reconciler = Reconciler::new(SEED, SizingPolicy::default(), sizes);
    let all_healthy = |_: &ServiceName, _: SocketAddr| true;
    let started = Instant::now();
    let mut desired = Desired::new(&model, all_healthy);
    let full = reconciler
        .sync(&desired, &mut datapath)
        .context("full sync")?;
    let full_sync = started.elapsed();
    tracing::info!(?full_sync, ?full, "full sync done");
    let tracked_flows = track_flows(&mut datapath, args.services, args.flows)?;

    let mut histogram = change_histogram(CHANGE_MAX_US)?;
    let (mut patched, mut swapped) = (0, 0);
    let names: Vec<ServiceName> = model.services.keys().cloned().collect();
    let mut removed: BTreeMap<ServiceName, Backend> = BTreeMap::new();
    for c in 0..args.changes {
        crate::stop::check()?;
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
        build: crate::build_id::BuildId::of_this_binary(),
        services: args.services,
        backends_per_service: args.backends,
        file_bytes: text.len(),
        parse_seconds: parse.as_secs_f64(),
        full_sync_seconds: full_sync.as_secs_f64(),
        full_sync: full.into(),
        changes: args.changes,
        tracked_flows,
        change_p50_ms: ms(histogram.value_at_quantile(0.5)),
        change_p99_ms: ms(histogram.value_at_quantile(0.99)),
        change_max_ms: ms(histogram.max()),
        changes_patched: patched,
        changes_swapped: swapped,
        baselines: None,
    };
    // The datapath's maps are not needed any more; free them before the
    // baselines fill the kernel with rules.
    drop(datapath);
    let mut results = results;
    if args.baselines && !args.no_baselines {
        results.baselines = Some(baselines(args)?);
    }
    print_table(&results);
    if let Some(json) = &args.json {
        std::fs::write(json, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", json.display()))?;
    }
    Ok(())
}

#[expect(clippy::print_stdout, reason = "the benchmark's report")]
fn print_table(r: &Results) {
    print_xlb_rows(r);
    if let Some(b) = &r.baselines {
        for (name, version, cost) in [
            ("kube-proxy nftables", &b.nft_version, &b.nftables),
            ("kube-proxy iptables", &b.iptables_version, &b.iptables),
        ] {
            println!(
                "| {name}: full load, `{} FILE` ({} KiB; {version}) | {}{:.3} s | — |",
                cost.full_load_command,
                cost.ruleset_bytes / 1024,
                if cost.full_load_timed_out {
                    "did not finish in "
                } else {
                    ""
                },
                cost.full_load_seconds
            );
            if cost.changes == 0 {
                continue;
            }
            println!(
                "| {name}: single backend change, p50 ({} changes, `{} FILE`, {} bytes each) | {:.3} ms | — |",
                cost.changes, cost.change_command, cost.change_bytes, cost.change_p50_ms
            );
            println!(
                "| {name}: single backend change, p99 / max | {:.3} / {:.3} ms | — |",
                cost.change_p99_ms, cost.change_max_ms
            );
        }
    }
}

#[expect(clippy::print_stdout, reason = "the benchmark's report")]
fn print_xlb_rows(r: &Results) {
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
    if r.tracked_flows > 0 {
        println!(
            "| flows tracked during the changes | {} | — |",
            r.tracked_flows
        );
    }
    println!(
        "| single backend change, max | {:.3} ms | — |",
        r.change_max_ms
    );
}

/// The benchmark's services as kube-proxy sees them: the same VIPs, port
/// and backends as the YAML file.
fn kube_services(services: u32, per_service: u32) -> Vec<kube_proxy::Service> {
    (0..services)
        .map(|i| kube_proxy::Service {
            name: format!("svc-{i}"),
            vip: frontend(i).0,
            port: frontend(i).1,
            protocol: kube_proxy::Protocol::Tcp,
            endpoints: (0..per_service)
                .filter_map(|j| match backend(i, j, per_service) {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .collect(),
        })
        .collect()
}

/// One ruleset flavour: how to load it whole and how to apply a change.
struct Flavour {
    name: &'static str,
    full: fn(&[kube_proxy::Service]) -> String,
    full_args: &'static [&'static str],
    /// The change text for `services[changed]`, which held `old` before.
    change: fn(&[kube_proxy::Service], usize, &kube_proxy::Service) -> String,
    change_args: &'static [&'static str],
}

const NFTABLES: Flavour = Flavour {
    name: "nftables",
    full: kube_proxy::nftables::ruleset,
    full_args: &["nft", "-f"],
    change: |services, changed, old| kube_proxy::nftables::endpoint_change(old, &services[changed]),
    change_args: &["nft", "-f"],
};

const IPTABLES: Flavour = Flavour {
    name: "iptables",
    full: kube_proxy::iptables::ruleset,
    full_args: &["iptables-restore", "--noflush"],
    change: kube_proxy::iptables::partial_sync,
    change_args: &["iptables-restore", "--noflush"],
};

fn baselines(args: &SyncArgs) -> anyhow::Result<Baselines> {
    let dir = rulesets_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = (|| {
        Ok(Baselines {
            nft_version: version(&["nft", "--version"])?,
            iptables_version: version(&["iptables", "-V"])?,
            nftables: measure_flavour(&NFTABLES, args, &dir)?,
            iptables: measure_flavour(&IPTABLES, args, &dir)?,
        })
    })();
    remove_or_warn(&dir, true);
    result
}

/// The first line a `--version` prints (harmless anywhere: it loads nothing).
fn version(argv: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("running {argv:?} (is it installed?)"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned())
}

/// Loads `flavour`'s full ruleset into a fresh private namespace, then
/// applies `--baseline-changes` single backend changes, timing each process.
fn measure_flavour(flavour: &Flavour, args: &SyncArgs, dir: &Path) -> anyhow::Result<RulesetCost> {
    let mut services = kube_services(args.services, args.backends);
    let text = (flavour.full)(&services);
    let full_path = dir.join(format!("{}-full", flavour.name));
    std::fs::write(&full_path, &text)
        .with_context(|| format!("writing {}", full_path.display()))?;
    let change_path = dir.join(format!("{}-change", flavour.name));
    tracing::info!(
        flavour = flavour.name,
        bytes = text.len(),
        "loading the kube-proxy ruleset in a private namespace"
    );
    in_private_netns(|| {
        let limit = Duration::from_secs(args.baseline_timeout);
        let spinner = crate::progress::spinner(format!("loading the {} ruleset", flavour.name));
        let loaded = run_timed(flavour.full_args, &full_path, limit);
        spinner.finish_and_clear();
        let (full_load, timed_out) =
            match loaded.with_context(|| format!("full load of the {} ruleset", flavour.name))? {
                Some(took) => (took, false),
                None => (limit, true),
            };
        tracing::info!(
            flavour = flavour.name,
            ?full_load,
            timed_out,
            "full load done"
        );
        let changes = if timed_out { 0 } else { args.baseline_changes };
        let mut histogram = change_histogram(BASELINE_CHANGE_MAX_US)?;
        let mut change_bytes = 0;
        let mut removed: BTreeMap<usize, SocketAddrV4> = BTreeMap::new();
        for c in 0..changes {
            // A signal stops here, or in `run_timed`: `baselines` then
            // removes the rulesets' directory.
            crate::stop::check()?;
            // The same spread and toggling as xlb's changes.
            let i = (c as usize * 7_919) % services.len();
            let old = services[i].clone();
            match removed.remove(&i) {
                Some(ep) => services[i].endpoints.push(ep),
                None => {
                    let ep = services[i]
                        .endpoints
                        .pop()
                        .context("an endpoint to remove")?;
                    removed.insert(i, ep);
                }
            }
            let delta = (flavour.change)(&services, i, &old);
            change_bytes += delta.len();
            std::fs::write(&change_path, &delta)
                .with_context(|| format!("writing {}", change_path.display()))?;
            let took = run_timed(flavour.change_args, &change_path, limit)
                .with_context(|| format!("change {c} of the {} ruleset", flavour.name))?
                .with_context(|| format!("change {c} of the {} ruleset timed out", flavour.name))?;
            histogram
                .record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1))
                .context("histogram")?;
        }
        let ms = |us: u64| Duration::from_micros(us).as_secs_f64() * 1e3;
        Ok(RulesetCost {
            full_load_command: flavour.full_args.join(" "),
            ruleset_bytes: text.len(),
            full_load_seconds: full_load.as_secs_f64(),
            full_load_timed_out: timed_out,
            change_command: flavour.change_args.join(" "),
            change_bytes: change_bytes / (changes as usize).max(1),
            changes,
            change_p50_ms: ms(histogram.value_at_quantile(0.5)),
            change_p99_ms: ms(histogram.value_at_quantile(0.99)),
            change_max_ms: ms(histogram.max()),
        })
    })
}

/// Runs `argv file` to completion (in the calling thread's namespace: the
/// child inherits it) and returns its wall time, or `None` if it ran past
/// `limit` and was killed.
fn run_timed(argv: &[&str], file: &Path, limit: Duration) -> anyhow::Result<Option<Duration>> {
    // Errors go to a file, not a pipe: a pipe nobody reads while the child
    // runs would stall a child that writes much.
    let errors = file.with_extension("stderr");
    let stderr =
        std::fs::File::create(&errors).with_context(|| format!("creating {}", errors.display()))?;
    let mut command = Command::new(argv[0]);
    command
        .args(&argv[1..])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(stderr);
    // A full load takes minutes at 10 000 services; a run asked to stop
    // kills it, and the ruleset lives in the thread's private namespace,
    // gone with it.
    let (status, took) = match run_bounded(&mut command, limit)? {
        Ended::Exited(status, took) => (status, took),
        Ended::TimedOut => {
            tracing::warn!(?argv, ?limit, "timed out: killed");
            return Ok(None);
        }
    };
    if !status.success() {
        let stderr = std::fs::read_to_string(&errors).unwrap_or_default();
        anyhow::bail!("{argv:?} {} failed ({status}): {stderr}", file.display());
    }
    Ok(Some(took))
}

/// Runs `f` in a new thread inside a fresh, empty network namespace: the
/// rulesets (or the tracked flows' forwarding) never reach the root
/// namespace, and vanish with the thread.
fn in_private_netns<T: Send>(f: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("xlb-bench-sync".into())
            .spawn_scoped(scope, || {
                // Only this thread moves: the process stays where it was.
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("unshare(CLONE_NEWNET): needs root")?;
                f()
            })
            .context("spawning a thread for a private network namespace")?;
        handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_baseline_timeout_beyond_what_report_reads_is_refused_when_parsed() {
        use clap::Parser as _;
        let parse = |seconds: &str| {
            crate::Cli::try_parse_from(["xlb-bench", "sync", "--baseline-timeout", seconds])
        };
        let e = parse("86401").expect_err("more than a day");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("1..=86400"), "{e}");
        parse("86400").unwrap();
    }

    #[test]
    fn the_largest_change_a_histogram_reports_is_its_top_buckets() {
        // Three significant digits: the top of 60 s's bucket, 31 ms above.
        let most = change_ms_max(CHANGE_MAX_US).unwrap();
        assert!((60_000.0..60_100.0).contains(&most), "{most}");
        let mut histogram = change_histogram(CHANGE_MAX_US).unwrap();
        histogram.record(CHANGE_MAX_US).unwrap();
        let ms = Duration::from_micros(histogram.value_at_quantile(0.99)).as_secs_f64() * 1e3;
        assert_eq!(ms, most);
    }

    #[test]
    fn frontends_are_distinct_and_in_the_vip_range() {
        let all: HashSet<(Ipv4Addr, u16)> = (0..131_072).map(frontend).collect();
        assert_eq!(all.len(), 131_072);
        assert!(all.iter().all(|(vip, _)| vip.octets()[..2] == [198, 19]));
        assert_eq!(frontend(65_536), (Ipv4Addr::new(198, 19, 0, 0), 81));
    }
}
