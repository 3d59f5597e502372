//! `xlb-bench prog`: ns/packet of the datapath under `BPF_PROG_TEST_RUN`, with
//! the methods of DESIGN.md ("Measuring ns/packet"), beside the floor program
//! measured the same way in the same run.
//!
//! A scale is a number of services and a number of tracked flows the hit
//! cases walk over: one service with one cache-hot flow (how DESIGN.md's Katran
//! figures were taken, and where the × floor targets are checked), then every
//! `--services` count at `--flows` flows, so that scales compare at equal flows.
//! For every scale it loads a datapath of its own, configures the services,
//! tracks the flows the cases need, checks every case once on its real
//! interface, and then measures in interleaved rounds: each round runs every
//! (scale, case, method) once, so that the noise of a shared machine falls on
//! every row alike and each ratio pairs figures taken close in time. Everything
//! runs in a private network namespace (see `netns`).

mod cases;
mod check;
mod fixture;
pub(crate) mod frame;
mod measure;
mod netns;
pub(crate) mod report;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::ValueEnum as _;
use tracing::{info, warn};
use xdp_lb::Datapath;

use self::{
    cases::{Case, Clients, Kind},
    fixture::Layout,
    measure::{Method, Progress, Samples},
    report::{Row, Setup},
};

/// `xlb-bench prog [--runs N] [--repeat R] [--calls C] [--services 1,1000,100000]
/// [--flows F] [--method a|b|both] [--cases new-tcp-flow,...] [--json FILE]`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProgArgs {
    /// Measured runs per case and method (the median is reported, with min and max).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Method B: runs per BPF_PROG_TEST_RUN call through the `xdp_bench`
    /// wrapper; at most 55535 with the new-flow cases, whose runs each take
    /// the next source port.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Method A: calls (one run each) per measured run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    calls: u32,
    /// Numbers of services to measure at, comma-separated; each must split
    /// into at most 65536 VIPs × 1000 ports.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,1000,100000",
        value_parser = service_count
    )]
    services: Vec<u32>,
    /// Tracked flows the conntrack-hit and UDP cases walk over at every scale
    /// of --services (spread over its services, at least one per service), so
    /// that scales compare at equal flows. One service with one flow (Katran's
    /// single cache-hot flow, the scale the × floor targets are checked at) is
    /// measured besides. At most 10000000.
    #[arg(
        long,
        default_value_t = 100_000,
        value_parser = clap::value_parser!(u32).range(1..=10_000_000)
    )]
    flows: u32,
    /// Conntrack capacity at every scale (default: 4 × (the flows the
    /// busiest scale tracks + the new flows of one run, the larger of --repeat
    /// and --calls among the methods run, + 1024)); at least the flows the
    /// busiest scale tracks + the new flows of one run, and its tables must
    /// fit in the machine's memory.
    #[arg(long, value_parser = conntrack_capacity)]
    conntrack_entries: Option<u32>,
    /// Which methods to run (`a`, `b` or `both`, in either case).
    #[arg(long, value_enum, ignore_case = true, default_value_t = MethodChoice::Both)]
    method: MethodChoice,
    /// Measure only these cases, comma-separated (the floor is always
    /// measured: every ratio takes it). Every case is still set up and
    /// checked. Default: all.
    #[arg(long, value_enum, value_delimiter = ',')]
    cases: Vec<Kind>,
    /// Stop after the round that ends past this many seconds of measuring (set-up
    /// not counted; at least three rounds are measured, or --runs if fewer).
    #[arg(long, default_value_t = 120)]
    budget_secs: u64,
    /// Seed of the Maglev tables and the flow hash.
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// Write every raw figure to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// `--method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum MethodChoice {
    A,
    B,
    Both,
}

impl MethodChoice {
    fn includes(self, method: Method) -> bool {
        match self {
            Self::Both => true,
            Self::A => method == Method::A,
            Self::B => method == Method::B,
        }
    }
}

/// A scale: services configured, and the flows the hit cases walk over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Spec {
    services: u32,
    flows: u32,
}

/// One service, one flow: the scale DESIGN.md's Katran figures compare with.
const HOT: Spec = Spec {
    services: 1,
    flows: 1,
};

/// `--services`: a count `Layout` can lay out, whose Maglev tables fit in the
/// machine's memory, refused when the command line is parsed rather than once
/// the run has started (or, for the tables, minutes into writing them).
fn service_count(text: &str) -> Result<u32, String> {
    let services = text.parse::<u32>().map_err(|e| format!("{e}"))?;
    let layout = Layout::new(services).map_err(|e| e.to_string())?;
    match crate::memory::total() {
        Some(memory) => services_within(layout.services, memory).map_err(|e| format!("{e:#}")),
        None => Ok(layout.services),
    }
}

/// `services`, if their Maglev tables fit in `memory` bytes.
fn services_within(services: u32, memory: u64) -> anyhow::Result<u32> {
    let tables = fixture::tables_bytes(services)?;
    anyhow::ensure!(
        tables <= memory,
        "the Maglev tables of {services} services take {} ({} slots of 4 bytes each), more \
         than this machine's {} of memory",
        crate::memory::gib(tables),
        fixture::table_size()?,
        crate::memory::gib(memory)
    );
    Ok(services)
}

/// `--conntrack-entries`: at least 1, and tables that fit in the machine's
/// memory, the most the kernel makes maps of. Refused when the command line
/// is parsed: the kernel would refuse it only at the first load, once the
/// run has set up its namespace, and a size near the machine's memory would
/// take what every other process on it needs.
fn conntrack_capacity(text: &str) -> Result<u32, String> {
    let entries = text.parse::<u32>().map_err(|e| format!("{e}"))?;
    if entries == 0 {
        return Err("0 entries: give at least 1".to_owned());
    }
    match crate::memory::total() {
        Some(memory) => conntrack_within(entries, memory),
        None => Ok(entries),
    }
}

/// `entries`, if their conntrack tables fit in `memory` bytes.
fn conntrack_within(entries: u32, memory: u64) -> Result<u32, String> {
    let tables = fixture::conntrack_bytes(entries);
    if tables <= memory {
        return Ok(entries);
    }
    Err(format!(
        "the conntrack tables of {entries} entries take {}, more than this machine's {} of \
         memory: at most {} entries fit in it",
        crate::memory::gib(tables),
        crate::memory::gib(memory),
        fixture::conntrack_entries_within(memory)
    ))
}

/// Refuses a run whose datapaths take more kernel memory than the machine
/// has, before anything is set up: every scale keeps its own datapath, with
/// conntrack tables of `conntrack` entries and its services' Maglev tables,
/// until the end of the run. A lower bound: the other maps come on top.
fn check_memory(
    args: &ProgArgs,
    specs: &[Spec],
    conntrack: u32,
    memory: u64,
) -> anyhow::Result<()> {
    let each = fixture::conntrack_bytes(conntrack);
    let mut tables = 0;
    for spec in specs {
        tables += fixture::tables_bytes(spec.services)?;
    }
    let total = each * specs.len() as u64 + tables;
    anyhow::ensure!(
        total <= memory,
        "the run's datapaths need at least {}, more than this machine's {} of memory: {} \
         scale(s), each with conntrack tables of {} for {conntrack} entries ({}), and Maglev \
         tables of {} in all; lower --services, --flows, --repeat or --calls, or give a \
         smaller --conntrack-entries",
        crate::memory::gib(total),
        crate::memory::gib(memory),
        specs.len(),
        crate::memory::gib(each),
        conntrack_origin(args, specs),
        crate::memory::gib(tables)
    );
    Ok(())
}

/// Refuses a --repeat that method B's new-flow cases cannot run, or --calls
/// that method A's cannot, before anything is set up: each run of a call
/// (each call of a run) is a flow from the next source port, and past
/// `NEW_FLOW_RUNS` one would repeat (`measure::run_b`, `measure::run_a`),
/// which those find only once every scale is set up and checked. Not a bound
/// of --repeat or --calls as such: the hit cases run more (`--cases
/// conntrack-hit --repeat 100000` in docs/bench/notes.md).
fn check_new_flow_runs(args: &ProgArgs) -> anyhow::Result<()> {
    for (method, flag, value, what) in [
        (
            Method::B,
            "--repeat",
            args.repeat,
            "runs a new-flow case makes in one call",
        ),
        (
            Method::A,
            "--calls",
            args.calls,
            "calls a new-flow case makes in one run",
        ),
    ] {
        if !args.method.includes(method) || value <= cases::NEW_FLOW_RUNS {
            continue;
        }
        let limited: Vec<String> = Kind::ALL
            .into_iter()
            .filter(|&kind| kind.walks_new_ports() && args.measures(kind))
            .filter_map(|kind| Some(kind.to_possible_value()?.get_name().to_owned()))
            .collect();
        anyhow::ensure!(
            limited.is_empty(),
            "{flag} {value} is more than the {} {what} ({}) before a flow repeats: lower {flag}, \
             or leave those cases out with --cases",
            cases::NEW_FLOW_RUNS,
            limited.join(", ")
        );
    }
    Ok(())
}

/// The hot scale, then --services at --flows.
fn specs(args: &ProgArgs) -> anyhow::Result<Vec<Spec>> {
    anyhow::ensure!(
        !args.services.is_empty(),
        "--services needs at least one count"
    );
    let mut specs: Vec<Spec> = args
        .services
        .iter()
        .map(|&services| Spec {
            services,
            flows: args.flows,
        })
        .collect();
    for spec in &specs {
        if spec.services > spec.flows {
            // Every service's hit case walks at least one flow of its own.
            warn!(
                services = spec.services,
                flows = spec.flows,
                "--flows is below --services: that scale walks one flow per service, {} in all",
                spec.services
            );
        }
    }
    specs.sort_unstable();
    specs.insert(0, HOT);
    specs.dedup();
    Ok(specs)
}

/// Refuses a value given twice in --services or --cases (`lists`).
fn check_lists(args: &ProgArgs) -> anyhow::Result<()> {
    crate::lists::distinct("--services", &args.services, u32::to_string)?;
    crate::lists::distinct("--cases", &args.cases, crate::lists::choice)
}

/// What an interrupted run may leave (`stop`): its private bpffs, every
/// scale's maps pinned in it (their memory taken until it is unmounted), in
/// the work directory of the rig `run` makes. The benchmark's network
/// namespace is anonymous and ends with its thread.
pub(crate) fn leftovers() -> crate::stop::Leftovers {
    let rigs = format!(
        "{}/{}*",
        std::env::temp_dir().display(),
        netns_tests::process_prefix()
    );
    crate::stop::Leftovers {
        at_once: format!(
            "leaving its private bpffs, with every scale's maps pinned in it, mounted in {rigs}: \
             `xlb-bench rig sweep --orphans` removes it once this process has ended"
        ),
        after_stop: format!(
            "a warning above names anything in {rigs} it could not remove: `xlb-bench rig sweep \
             --orphans` removes it"
        ),
    }
}

pub(crate) fn run(args: &ProgArgs) -> anyhow::Result<()> {
    check_lists(args)?;
    let specs = specs(args)?;
    check_new_flow_runs(args)?;
    let conntrack = match args.conntrack_entries {
        Some(entries) => {
            check_conntrack_room(args, &specs, entries)?;
            entries
        }
        None => conntrack_entries(args, &specs)?,
    };
    if let Some(memory) = crate::memory::total() {
        check_memory(args, &specs, conntrack, memory)?;
    }
    if let Some(path) = &args.json {
        crate::output::check_file("--json", path)?;
    }
    // The maps are pinned (see `fixture::write_tables`) in a private bpffs,
    // unmounted with the rig.
    let mut rig = netns_tests::Rig::new()?;
    let bpffs = rig.bpffs()?;
    let (setup, rows) = netns::in_private_netns(|| measure_all(args, &specs, conntrack, &bpffs))?;
    drop(rig);
    let targets = report::targets(&rows, args.flows);
    report::markdown(&mut std::io::stdout().lock(), &setup, &rows, &targets)?;
    if let Some(path) = &args.json {
        report::json(path, &setup, &rows, &targets)?;
        info!(path = %path.display(), "raw figures written");
    }
    Ok(())
}

impl ProgArgs {
    /// `--cases` names `kind`, or names nothing; the floor always.
    fn measures(&self, kind: Kind) -> bool {
        kind == Kind::Floor || self.cases.is_empty() || self.cases.contains(&kind)
    }
}

/// One scale: its datapath, its cases and their figures.
#[derive(Debug)]
struct Scale {
    dp: Datapath,
    cases: Vec<Case>,
    progress: Vec<Progress>,
    rows: Vec<Row>,
}

fn measure_all(
    args: &ProgArgs,
    specs: &[Spec],
    conntrack: u32,
    bpffs: &Path,
) -> anyhow::Result<(Setup, Vec<Row>)> {
    let interfaces = netns::set_up().context("setting up the private namespace")?;
    let mut clients = Clients::default();
    let mut scales = Vec::new();
    for spec in specs {
        // A signal stops the run here, or at the checks of the long steps
        // of a scale's set-up and of every round: `run` then drops the
        // rig, which unmounts the bpffs holding the pins (`stop`).
        crate::stop::check()?;
        let (n, flows) = (spec.services, spec.flows);
        info!(services = n, flows, conntrack, "setting up a scale");
        let layout = Layout::new(n)?;
        let pins = bpffs.join(format!("services-{n}-flows-{flows}"));
        let mut dp = fixture::load(&layout, conntrack, args.seed, &pins).with_context(|| {
            format!(
                "loading a datapath with conntrack for {conntrack} flows ({})",
                conntrack_origin(args, specs)
            )
        })?;
        let mut cases = cases::build(&mut dp, &layout, flows, *spec == HOT, args.seed)?;
        for case in &cases {
            check::golden(&dp, case, interfaces, &mut clients).with_context(|| {
                format!(
                    "checking {} at {n} services, {flows} flows",
                    case.kind.label()
                )
            })?;
        }
        let samples = |method, per_run| args.method.includes(method).then(|| Samples::new(per_run));
        cases.retain(|c| args.measures(c.kind));
        let rows = cases
            .iter()
            .map(|case| Row {
                services: n,
                scale_flows: flows,
                case: case.kind,
                flows: case.flows(),
                // Method A would delete the flow from user space between
                // calls: a mapping of each table per call, far longer than
                // the call itself.
                method_a: samples(Method::A, args.calls).filter(|_| !case.kind.forgets()),
                method_b: samples(Method::B, measure::repeat_for(case, args.repeat)),
            })
            .collect();
        scales.push(Scale {
            dp,
            progress: vec![Progress::default(); cases.len()],
            cases,
            rows,
        });
    }
    info!("every case checked; measuring");

    let budget = Duration::from_secs(args.budget_secs);
    let started = Instant::now();
    let mut rounds = 0;
    let bar = crate::progress::bar(u64::from(args.runs) + 1, "rounds".to_owned());
    // Round 0 warms caches and refreshes the tracked flows; it is not recorded.
    for round in 0..=args.runs {
        crate::stop::check()?;
        for scale in &mut scales {
            measure_round(args, scale, &mut clients, round == 0)?;
        }
        bar.inc(1);
        if round == 0 {
            continue;
        }
        rounds = round;
        tracing::debug!(round, of = args.runs, "round measured");
        if round >= args.runs.min(3) && started.elapsed() > budget && round < args.runs {
            bar.suspend(|| warn!(rounds = round, "time budget spent; stopping early"));
            break;
        }
    }
    bar.finish_and_clear();
    let setup = Setup {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        rounds,
        repeat: args.repeat,
        calls: args.calls,
        seed: args.seed,
        conntrack_entries: conntrack,
        table_size: fixture::table_size()?.get(),
        backends_per_service: fixture::BACKENDS_PER_SERVICE,
    };
    let rows = scales.into_iter().flat_map(|s| s.rows).collect();
    Ok((setup, rows))
}

/// Runs every case of a scale once with each method, each right after a run
/// of the floor (whose figure the case's ratio takes).
fn measure_round(
    args: &ProgArgs,
    scale: &mut Scale,
    clients: &mut Clients,
    warm_up: bool,
) -> anyhow::Result<()> {
    let floor = scale
        .cases
        .iter()
        .position(|c| c.kind == Kind::Floor)
        .context("a scale without the floor")?;
    // Method A's floor beside a case: a quarter of the calls is plenty for a
    // figure that barely moves, and saves most of its syscalls.
    let floor_calls = (args.calls / 4).max(1);
    for (i, case) in scale.cases.iter().enumerate() {
        let row = &mut scale.rows[i];
        let context = || format!("{} at {} services", case.kind.label(), row.services);
        let beside = (i != floor).then_some(&scale.cases[floor]);
        if let Some(samples) = &mut row.method_a {
            // A shorter warm-up: method A costs microseconds per packet.
            let calls = if warm_up {
                (args.calls / 10).max(1)
            } else {
                args.calls
            };
            let floor_ns = match beside {
                Some(f) => Some(measure::run_a(
                    &mut scale.dp,
                    f,
                    floor_calls,
                    &mut Progress::default(),
                    clients,
                )?),
                None => None,
            };
            let ns = measure::run_a(&mut scale.dp, case, calls, &mut scale.progress[i], clients)
                .with_context(context)?;
            if !warm_up {
                samples.runs_ns.push(ns);
                samples.floor_ns.extend(floor_ns);
            }
        }
        if let Some(samples) = &mut row.method_b {
            let floor_ns = match beside {
                Some(f) => Some(measure::run_b(
                    &mut scale.dp,
                    f,
                    measure::repeat_for(f, args.repeat),
                    clients,
                )?),
                None => None,
            };
            let ns = measure::run_b(&mut scale.dp, case, samples.packets_per_run, clients)
                .with_context(context)?;
            if !warm_up {
                samples.runs_ns.push(ns);
                samples.floor_ns.extend(floor_ns);
            }
        }
    }
    Ok(())
}

/// Conntrack capacity, equal at every scale: the flows the busiest scale
/// tracks, one new-flow run's (deleted right after it: `forget_new_flows`)
/// and the golden checks' few, four times over. A table of buckets gives up a
/// flow only when both of its buckets are full, however much room the rest
/// has, and the cases check that every tracked flow is hit: with two slots per
/// entry asked (`buckets_for`) and a quarter of the entries used, a bucket of
/// eight is a key's first for at most one flow on average, and nine land in
/// one in about a million buckets, whose ninth then goes to its second.
fn conntrack_entries(args: &ProgArgs, specs: &[Spec]) -> anyhow::Result<u32> {
    let (tracked, new_flows) = conntrack_flows(args, specs)?;
    let total = (tracked + new_flows + 1024) * 4;
    u32::try_from(total).with_context(|| {
        format!(
            "4 × ({tracked} flows tracked + {new_flows} new flows of a run + 1024) conntrack \
             entries do not fit one map: lower --flows, --repeat or --calls, or give \
             --conntrack-entries"
        )
    })
}

/// Refuses a --conntrack-entries below the flows the run tracks at once, the
/// busiest scale's and one run's new flows, before anything is set up: the
/// table would give some up, and the golden checks would find a flow they
/// hit untracked (`simulate says tracked = false`) minutes into the set-up.
/// Above that a table can still give up a flow whose two buckets fill
/// (`conntrack_entries`): the default leaves four times the room.
fn check_conntrack_room(args: &ProgArgs, specs: &[Spec], entries: u32) -> anyhow::Result<()> {
    let (tracked, new_flows) = conntrack_flows(args, specs)?;
    let least = tracked + new_flows;
    anyhow::ensure!(
        u64::from(entries) >= least,
        "--conntrack-entries {entries} is too small for the flows this run tracks at once: \
         {tracked} at its busiest scale (--services and --flows) and {new_flows} new flows of a \
         run (--repeat or --calls); raise --conntrack-entries to at least {least}, or leave it \
         out for the default of 4 × ({least} + 1024), which leaves the buckets room"
    );
    Ok(())
}

/// The flows `conntrack_entries` sizes for: those the busiest scale tracks,
/// and one run's new flows when a new-flow case is measured (the checks of
/// every case make a few).
fn conntrack_flows(args: &ProgArgs, specs: &[Spec]) -> anyhow::Result<(u64, u64)> {
    let mut new_flows = 0;
    let measures_new_flows = args.cases.is_empty() || args.cases.iter().any(|k| k.is_new_flow());
    if measures_new_flows && args.method.includes(Method::A) {
        new_flows = new_flows.max(u64::from(args.calls));
    }
    if measures_new_flows && args.method.includes(Method::B) {
        new_flows = new_flows.max(u64::from(args.repeat));
    }
    let mut tracked = 0;
    for spec in specs {
        let layout = Layout::new(spec.services)?;
        tracked = tracked.max(cases::tracked_before(&layout, spec.flows));
    }
    Ok((tracked, new_flows))
}

/// Where the conntrack capacity comes from, in the flags' words, for an
/// error of the datapath it sizes (the kernel refusing that much memory).
fn conntrack_origin(args: &ProgArgs, specs: &[Spec]) -> String {
    if let Some(entries) = args.conntrack_entries {
        return format!("--conntrack-entries {entries}");
    }
    match conntrack_flows(args, specs) {
        Ok((tracked, new_flows)) => format!(
            "the default without --conntrack-entries: 4 × ({tracked} flows tracked at --flows {} \
             + {new_flows} new flows of a run at --repeat {} or --calls {} + 1024)",
            args.flows, args.repeat, args.calls
        ),
        Err(e) => format!("the default without --conntrack-entries ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    fn parse(args: &[&str]) -> Result<ProgArgs, clap::Error> {
        let argv = ["xlb-bench", "prog"].iter().chain(args);
        match crate::Cli::try_parse_from(argv)?.command {
            crate::Command::Prog(args) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn services_that_cannot_be_laid_out_are_refused_when_parsed() {
        for (services, why) in [
            ("0", "at least 1 service"),
            ("1,0", "at least 1 service"),
            // A prime above 65536: no VIPs × ports split.
            ("65537", "cannot be split"),
            ("x", "invalid digit"),
        ] {
            let e = parse(&["--services", services]).expect_err(services);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
            assert!(e.to_string().contains(why), "{services}: {e}");
        }
        let args = parse(&["--services", "1,100000"]).unwrap();
        assert_eq!(args.services, [1, 100_000]);
    }

    #[test]
    fn a_value_given_twice_in_a_list_is_refused_before_setup() {
        let err = |args: &[&str]| check_lists(&parse(args).unwrap()).unwrap_err().to_string();
        assert_eq!(
            err(&["--services", "1000,1,1000"]),
            "--services 1000,1,1000: 1000 is given more than once; give each value once"
        );
        assert_eq!(
            err(&["--cases", "udp,reply,udp"]),
            "--cases udp,reply,udp: udp is given more than once; give each value once"
        );
        check_lists(&parse(&["--services", "1,1000", "--cases", "udp,reply"]).unwrap()).unwrap();
    }

    #[test]
    fn services_whose_tables_do_not_fit_in_memory_are_refused() {
        const GIB: u64 = 1 << 30;
        // 509 slots of 4 bytes: 100 000 services take 194 MiB.
        assert_eq!(services_within(100_000, GIB).unwrap(), 100_000);
        // The most `Layout` lays out: 124.3 GiB.
        let e = format!("{:#}", services_within(65_536_000, 24 * GIB).unwrap_err());
        assert_eq!(
            e,
            "the Maglev tables of 65536000 services take 124.3 GiB (509 slots of 4 bytes \
             each), more than this machine's 24.0 GiB of memory"
        );
    }

    #[test]
    fn conntrack_tables_beyond_the_machines_memory_are_refused_when_parsed() {
        // 2^30 buckets of 1664 bytes: no machine has that much.
        let e = parse(&["--conntrack-entries", "4294967295"]).expect_err("1.6 TiB");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(
            e.to_string().contains(
                "the conntrack tables of 4294967295 entries take 1664.0 GiB, more than this \
                 machine's"
            ),
            "{e}"
        );
        assert!(parse(&["--conntrack-entries", "0"]).is_err());
        parse(&["--conntrack-entries", "1000000"]).unwrap();
        const GIB: u64 = 1 << 30;
        assert_eq!(conntrack_within(1 << 25, 24 * GIB), Ok(1 << 25));
        assert_eq!(
            conntrack_within((1 << 25) + 1, 24 * GIB).unwrap_err(),
            "the conntrack tables of 33554433 entries take 26.0 GiB, more than this machine's \
             24.0 GiB of memory: at most 33554432 entries fit in it"
        );
    }

    #[test]
    fn a_run_whose_datapaths_do_not_fit_in_memory_is_refused_before_setup() {
        const GIB: u64 = 1 << 30;
        let check = |args: &[&str], memory| {
            let args = parse(args).unwrap();
            let specs = specs(&args).unwrap();
            let conntrack = match args.conntrack_entries {
                Some(entries) => entries,
                None => conntrack_entries(&args, &specs).unwrap(),
            };
            check_memory(&args, &specs, conntrack, memory).map_err(|e| format!("{e:#}"))
        };
        // `make bench`'s run: four scales up to 100 000 services, 3.4 GiB.
        check(&[], 4 * GIB).unwrap();
        assert!(check(&[], 3 * GIB).is_err());
        // The largest --flows: 30 million tracked flows (hits, UDP,
        // replies), 120 million entries, 52 GiB of tables for each of the
        // two scales.
        let e = check(&["--flows", "10000000", "--services", "1"], 24 * GIB).unwrap_err();
        assert!(
            e.starts_with(
                "the run's datapaths need at least 104.0 GiB, more than this machine's 24.0 GiB \
                 of memory: 2 scale(s), each with conntrack tables of 52.0 GiB for 120324132 \
                 entries (the default without --conntrack-entries: 4 × (30060009 flows tracked \
                 at --flows 10000000"
            ),
            "{e}"
        );
        assert!(e.ends_with("or give a smaller --conntrack-entries"), "{e}");
        // Each scale has tables of its own: ten of 2 GiB do not fit in 16.
        let ten: Vec<String> = (1..=10).map(|n| n.to_string()).collect();
        let args = [
            "--services",
            &ten.join(","),
            "--conntrack-entries",
            "4194304",
        ];
        assert!(check(&args, 16 * GIB).is_err());
        check(&args, 32 * GIB).unwrap();
    }

    #[test]
    fn a_repeat_or_calls_the_new_flow_cases_cannot_run_is_refused_before_setup() {
        let message = |args: &[&str]| {
            format!(
                "{:#}",
                check_new_flow_runs(&parse(args).unwrap()).unwrap_err()
            )
        };
        let text = message(&["--repeat", "10000000"]);
        assert!(
            text.starts_with(
                "--repeat 10000000 is more than the 55535 runs a new-flow case makes in one call \
                 (new-tcp-flow, dsr-new-tcp-flow)"
            ),
            "{text}"
        );
        let text = message(&["--repeat", "55536", "--cases", "dsr-new-tcp-flow,udp"]);
        assert!(text.contains("(dsr-new-tcp-flow)"), "{text}");
        let text = message(&["--calls", "60000", "--method", "a"]);
        assert!(
            text.starts_with(
                "--calls 60000 is more than the 55535 calls a new-flow case makes in one run \
                 (new-tcp-flow, dsr-new-tcp-flow) before a flow repeats: lower --calls"
            ),
            "{text}"
        );
        // The hit cases take more; method A and the warm case take no
        // repeat, method B no calls.
        for ok in [
            &["--repeat", "55535", "--calls", "55535"][..],
            &[
                "--repeat",
                "100000",
                "--calls",
                "100000",
                "--cases",
                "conntrack-hit,new-tcp-flow-warm",
            ],
            &["--repeat", "100000", "--method", "a"],
            &["--calls", "100000", "--method", "b"],
        ] {
            check_new_flow_runs(&parse(ok).unwrap()).unwrap();
        }
    }

    #[test]
    fn a_conntrack_error_names_the_flags_and_the_size() {
        let specs = |args: &ProgArgs| specs(args).unwrap();
        let args = parse(&["--conntrack-entries", "1000000"]).unwrap();
        assert_eq!(
            conntrack_origin(&args, &specs(&args)),
            "--conntrack-entries 1000000"
        );
        let args = parse(&["--services", "1", "--flows", "1000", "--repeat", "500"]).unwrap();
        let entries = conntrack_entries(&args, &specs(&args)).unwrap();
        let (tracked, new_flows) = conntrack_flows(&args, &specs(&args)).unwrap();
        // Method A's calls (20 000) outnumber --repeat.
        assert_eq!(new_flows, 20_000);
        assert_eq!(u64::from(entries), (tracked + new_flows + 1024) * 4);
        assert_eq!(
            conntrack_origin(&args, &specs(&args)),
            format!(
                "the default without --conntrack-entries: 4 × ({tracked} flows tracked at \
                 --flows 1000 + 20000 new flows of a run at --repeat 500 or --calls 20000 + 1024)"
            )
        );
        assert!(parse(&["--conntrack-entries", "0"]).is_err());
        // A default beyond a u32 names the flags that size it.
        let args = parse(&["--cases", "new-tcp-flow", "--repeat", "4294967295"]).unwrap();
        let err = format!("{:#}", conntrack_entries(&args, &specs(&args)).unwrap_err());
        assert!(err.contains("lower --flows, --repeat or --calls"), "{err}");
    }

    #[test]
    fn conntrack_entries_below_the_flows_tracked_are_refused_before_setup() {
        let check = |argv: &[&str]| {
            let args = parse(argv).unwrap();
            let specs = specs(&args).unwrap();
            check_conntrack_room(&args, &specs, args.conntrack_entries.unwrap())
                .map_err(|e| format!("{e:#}"))
        };
        let args = [
            "--services",
            "1",
            "--flows",
            "1",
            "--method",
            "b",
            "--repeat",
            "256",
        ];
        let parsed = parse(&args).unwrap();
        let (tracked, new_flows) = conntrack_flows(&parsed, &specs(&parsed).unwrap()).unwrap();
        assert_eq!(new_flows, 256);
        let e = check(&[&args[..], &["--conntrack-entries", "1"]].concat()).unwrap_err();
        assert_eq!(
            e,
            format!(
                "--conntrack-entries 1 is too small for the flows this run tracks at once: \
                 {tracked} at its busiest scale (--services and --flows) and 256 new flows of a \
                 run (--repeat or --calls); raise --conntrack-entries to at least {}, or leave \
                 it out for the default of 4 × ({} + 1024), which leaves the buckets room",
                tracked + 256,
                tracked + 256
            )
        );
        let least = (tracked + new_flows).to_string();
        check(&[&args[..], &["--conntrack-entries", &least]].concat()).unwrap();
        // Measuring no new-flow case, a run's new flows take no room.
        let hit_only = [&args[..], &["--cases", "conntrack-hit"]].concat();
        let parsed = parse(&hit_only).unwrap();
        assert_eq!(
            conntrack_flows(&parsed, &specs(&parsed).unwrap())
                .unwrap()
                .1,
            0
        );
    }

    #[test]
    fn the_help_gives_the_default_conntrack_capacity_the_code_computes() {
        let mut cli = crate::Cli::command();
        let help = cli
            .find_subcommand_mut("prog")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            help.contains(
                "default: 4 × (the flows the busiest scale tracks + the new flows of one run, \
                 the larger of --repeat and --calls among the methods run, + 1024)"
            ),
            "{help}"
        );
    }
}
