//! `xlb-bench rig`: throughput and latency through an LB namespace, in several
//! modes measured interleaved in one run, so that every ratio compares figures
//! taken minutes apart on the same machine.
//!
//! - `forward`: the LB only routes; the client addresses the backends
//!   themselves. The floor every balancing mode is compared with.
//! - `xlb`: `xdp_lb` on both LB interfaces.
//! - `nftables`: the ruleset kube-proxy's nftables mode writes for the same
//!   services (`kube_proxy::nftables`), in the LB's namespace.
//! - `iptables`: kube-proxy's iptables-mode ruleset, loaded with
//!   `iptables-nft-restore` (Debian's default iptables, on nf_tables);
//!   `iptables-legacy` loads it with `iptables-legacy-restore` (x_tables).
//!
//! Workloads, each bounded in seconds (and UDP in packets):
//! - `udp-new`: every packet a new 5-tuple, spread over all services;
//! - `udp-established`: a fixed set of flows, every one already seen;
//! - `tcp-crr`: connect, request, response, close, with each request's latency;
//! - `tcp-stream`: one iperf3 stream, with the offloads each mode leaves (XDP on
//!   a veth turns TSO and GSO off on its peer, so the XDP mode's client
//!   segments in software while the others hand 64 KB segments through);
//! - `tcp-stream-no-offloads`: the same with TSO, GSO and GRO off on every
//!   interface of the path, in every mode: like for like.
//!
//! UDP figures count what the backends' interfaces received (the "stack
//! sink": a bound socket nobody reads, so every datagram crosses the backend's
//! whole receive path) over the seconds the generator sent.

mod modes;
pub(crate) mod report;
mod stand;
mod sweep;
pub(crate) mod tables;
pub(crate) mod traffic;

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::progress;

use self::{
    report::{Sample, Setup},
    stand::Stand,
    traffic::FlowPick,
};

/// `xlb-bench rig [OPTIONS]`, or `xlb-bench rig sweep`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RigArgs {
    #[command(subcommand)]
    command: Option<sweep::SweepCommand>,
    #[command(flatten)]
    measure: MeasureArgs,
}

#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// Modes to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "forward,xlb,nftables,iptables,iptables-legacy"
    )]
    modes: Vec<Mode>,
    /// Numbers of services, comma-separated, each from 1 to 60000 (each
    /// service has a TCP and a UDP port). kube-proxy's rulesets take minutes
    /// to load at 10 000.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    services: Vec<u32>,
    /// Workloads, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "udp-new,udp-established,tcp-crr,tcp-stream,tcp-stream-no-offloads"
    )]
    workloads: Vec<Workload>,
    /// Where UDP frames end: `stack`, a bound socket nobody reads (the
    /// backend's whole receive path, the realistic case), or `xdp`, a
    /// count-and-drop XDP program on the backends' interfaces (isolates the
    /// path through the LB). TCP always ends in the stack.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "stack,xdp")]
    sinks: Vec<Sink>,
    /// Rounds: each measures every workload in every mode once.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// Seconds per measurement: more than 0, at most 60.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// At most this many UDP packets per measurement (at least 1: the UDP
    /// workloads would send nothing).
    #[arg(long, default_value_t = 20_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    max_packets: u64,
    /// Leave a ruleset mode out at a number of services when its ruleset takes
    /// longer than this many seconds to load (the report says so); at least 1.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    load_timeout: u64,
    /// Client threads of the TCP connect-request-close workload, 1 to 64.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    crr_clients: u32,
    /// Write every sample to this file as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl RigArgs {
    /// `rig sweep`, which removes leftovers rather than setting anything up.
    pub(crate) const fn is_sweep(&self) -> bool {
        self.command.is_some()
    }
}

impl MeasureArgs {
    /// Refuses what clap cannot check value by value, before anything is
    /// set up: no mode, --seconds out of range, a number of services out of
    /// range, a value given twice in a list.
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.modes.is_empty(), "--modes needs at least one mode");
        anyhow::ensure!(
            self.seconds > 0.0 && self.seconds <= MAX_SECONDS,
            "--seconds must be in (0, {MAX_SECONDS}]"
        );
        if let Some(bad) = self.services.iter().find(|n| !(1..=60_000).contains(*n)) {
            anyhow::bail!("--services: {bad} is not in 1..=60000");
        }
        crate::lists::distinct("--modes", &self.modes, crate::lists::choice)?;
        crate::lists::distinct("--services", &self.services, u32::to_string)?;
        crate::lists::distinct("--workloads", &self.workloads, crate::lists::choice)?;
        crate::lists::distinct("--sinks", &self.sinks, crate::lists::choice)?;
        Ok(())
    }
}

/// How the LB namespace balances (or does not).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Mode {
    Forward,
    Xlb,
    Nftables,
    Iptables,
    IptablesLegacy,
}

impl Mode {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Forward => "forward",
            Self::Xlb => "xlb",
            Self::Nftables => "nftables",
            Self::Iptables => "iptables-nft",
            Self::IptablesLegacy => "iptables-legacy",
        }
    }

    /// The restore command of an iptables mode.
    const fn restore_command(self) -> &'static str {
        match self {
            Self::IptablesLegacy => "iptables-legacy-restore",
            _ => "iptables-nft-restore",
        }
    }
}

/// Where the UDP frames end on the backends.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Sink {
    Stack,
    Xdp,
}

impl Sink {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Stack => "stack sink",
            Self::Xdp => "XDP sink",
        }
    }
}

/// What a measurement sends.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Workload {
    UdpNew,
    UdpEstablished,
    TcpCrr,
    TcpStream,
    TcpStreamNoOffloads,
}

impl Workload {
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::UdpNew => "UDP, new flows",
            Self::UdpEstablished => "UDP, established flows",
            Self::TcpCrr => "TCP connect/request/close",
            Self::TcpStream => "TCP stream, offloads as each mode leaves them",
            Self::TcpStreamNoOffloads => "TCP stream, TSO/GSO/GRO off everywhere",
        }
    }

    pub(crate) const fn is_udp(self) -> bool {
        matches!(self, Self::UdpNew | Self::UdpEstablished)
    }

    pub(crate) const fn is_stream(self) -> bool {
        matches!(self, Self::TcpStream | Self::TcpStreamNoOffloads)
    }
}

/// The longest `--seconds`, a measurement's length.
pub(crate) const MAX_SECONDS: f64 = 60.0;

/// Flows of the established workload: at least one per service.
fn established_flows(services: u32) -> u64 {
    u64::from(services.max(1024))
}

/// How often `settled` reads a counter, and for how long at most.
const SETTLE_POLL: Duration = Duration::from_millis(20);
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

/// Reads `counter` until two reads `SETTLE_POLL` apart agree, so that the
/// frames still in flight when the generator stopped are counted (and none of
/// the next measurement's); after `SETTLE_LIMIT` the last read stands, with a
/// warning.
fn settled(counter: impl Fn() -> anyhow::Result<u64>) -> anyhow::Result<u64> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut last = counter()?;
    loop {
        thread::sleep(SETTLE_POLL);
        let now = counter()?;
        if now == last {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            warn!(
                last,
                now, "a counter still moved after {SETTLE_LIMIT:?}; taking it as it is"
            );
            return Ok(now);
        }
        last = now;
    }
}

/// What an interrupted run may leave (`stop`): the stands' named network
/// namespaces, with their veths and the processes in them, their bpffs
/// mounts and work directories, all named after this process.
pub(crate) fn leftovers() -> crate::stop::Leftovers {
    let prefix = netns_tests::process_prefix();
    crate::stop::Leftovers {
        at_once: format!(
            "leaving its network namespaces ({prefix}*) with the processes in them, and its \
             bpffs mounts and work directories: `xlb-bench rig sweep --orphans` removes them once \
             this process has ended"
        ),
        after_stop: "a warning above names anything it could not remove: `xlb-bench rig sweep \
                     --orphans` removes it"
            .to_owned(),
    }
}

pub(crate) fn run(args: &RigArgs) -> anyhow::Result<()> {
    if let Some(command) = &args.command {
        return sweep::run(command);
    }
    let m = &args.measure;
    m.check()?;
    if let Some(path) = &m.json {
        crate::output::check_file("--json", path)?;
    }
    let mut modes = m.modes.clone();
    modes.sort_unstable();
    let mut samples = Vec::new();
    let mut left_out = Vec::new();
    for &services in &m.services {
        let mut stands = build_stands(m, &modes, services, &mut left_out)?;
        samples.extend(measure_rounds(m, &mut stands, services)?);
    }
    let setup = Setup::of_this_machine(m.seconds, m.rounds, m.crr_clients)?;
    tables::markdown(
        &mut std::io::stdout().lock(),
        &setup,
        &modes,
        &samples,
        &left_out,
    )?;
    if let Some(path) = &m.json {
        let document = report::Json {
            setup,
            samples,
            left_out,
            build: Some(crate::build_id::BuildId::of_this_binary()),
        };
        report::json(path, &document)?;
        info!(path = %path.display(), "samples written");
    }
    Ok(())
}

/// A stand per mode at `services`; a mode whose ruleset does not load in
/// time is left out (and recorded in `left_out`), any other failure ends the
/// run.
fn build_stands(
    m: &MeasureArgs,
    modes: &[Mode],
    services: u32,
    left_out: &mut Vec<report::LeftOut>,
) -> anyhow::Result<Vec<Stand>> {
    let mut stands = Vec::new();
    for &mode in modes {
        // A signal stops the run here or before a measurement; the stands
        // built so far drop on the way out, and with them their
        // namespaces, veths, processes and mounts (`stop`).
        crate::stop::check()?;
        let started = Instant::now();
        match Stand::build(mode, services, Duration::from_secs(m.load_timeout)) {
            Ok(stand) => stands.push(stand),
            Err(e) if e.downcast_ref::<modes::LoadTimedOut>().is_some() => {
                warn!(mode = mode.name(), services, error = %e, "mode left out");
                left_out.push(report::LeftOut {
                    mode,
                    services,
                    reason: e.to_string(),
                });
                continue;
            }
            Err(e) => {
                return Err(e.context(format!("setting up {} at {services} services", mode.name())));
            }
        }
        info!(
            mode = mode.name(),
            services,
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "stand ready"
        );
    }
    Ok(stands)
}

/// Every round of every workload (and sink) in every stand, interleaved.
fn measure_rounds(
    m: &MeasureArgs,
    stands: &mut [Stand],
    services: u32,
) -> anyhow::Result<Vec<Sample>> {
    let duration = Duration::from_secs_f64(m.seconds);
    let sinks_of = |workload: Workload| -> Vec<Option<Sink>> {
        if workload.is_udp() {
            m.sinks.iter().copied().map(Some).collect()
        } else {
            vec![None]
        }
    };
    let per_round: usize = m.workloads.iter().map(|&w| sinks_of(w).len()).sum();
    let bar = progress::bar(
        (per_round * stands.len() * m.rounds as usize) as u64,
        format!("{services} services"),
    );
    let mut next_new = vec![0u64; stands.len()];
    let mut samples = Vec::new();
    for round in 0..m.rounds {
        for &workload in &m.workloads {
            for sink in sinks_of(workload) {
                // Each round starts from another mode, so no mode is always
                // measured first (or right after the same neighbour).
                for k in 0..stands.len() {
                    crate::stop::check()?;
                    let i = (k + round as usize) % stands.len();
                    let stand = &mut stands[i];
                    let sample = measure(m, stand, workload, sink, duration, &mut next_new[i])
                        .with_context(|| {
                            format!(
                                "{} in {} mode at {services} services",
                                workload.name(),
                                stand.mode.name()
                            )
                        })?;
                    debug!(
                        round,
                        mode = stand.mode.name(),
                        workload = workload.name(),
                        sink = sink.map(Sink::name),
                        rate = format!("{:.0}", sample.rate()),
                        "measured"
                    );
                    bar.inc(1);
                    samples.push(Sample { round, ..sample });
                }
            }
        }
    }
    bar.finish_and_clear();
    Ok(samples)
}

/// One workload in one stand.
fn measure(
    m: &MeasureArgs,
    stand: &mut Stand,
    workload: Workload,
    sink: Option<Sink>,
    duration: Duration,
    next_new: &mut u64,
) -> anyhow::Result<Sample> {
    let mut sample = Sample::new(stand.mode, stand.services, workload);
    sample.sink = sink;
    if sink == Some(Sink::Xdp) {
        stand.attach_xdp_sinks()?;
    }
    let received = |stand: &Stand| match sink {
        Some(Sink::Xdp) => stand.sunk(),
        _ => stand.delivered(),
    };
    let verdicts = stand.xlb_verdicts()?;
    let drops = stand.veth_drops()?;
    match workload {
        Workload::UdpNew | Workload::UdpEstablished => {
            let flows = traffic::UdpFlows::new(stand.client_mac, stand.lb_mac, stand.udp_targets());
            let pick = if workload == Workload::UdpNew {
                FlowPick::New { first: *next_new }
            } else {
                // Every flow once first, so the measured packets all belong
                // to flows the LB has seen.
                let count = established_flows(stand.services);
                let warm = FlowPick::Cycle { count };
                traffic::blast(&stand.generator, &flows, warm, duration, count)?;
                warm
            };
            let before = settled(|| received(stand))?;
            let softirq = report::softirq_ticks()?;
            let sent = traffic::blast(&stand.generator, &flows, pick, duration, m.max_packets)?;
            let after = settled(|| received(stand))?;
            let softirq = report::softirq_ticks()? - softirq;
            if workload == Workload::UdpNew {
                *next_new += sent.packets;
            }
            sample.sent = sent.packets;
            sample.delivered = after - before;
            sample.seconds = sent.elapsed.as_secs_f64();
            sample.cut_short = sent.cut_short;
            sample.softirq_ticks = softirq;
        }
        Workload::TcpCrr => {
            let softirq = report::softirq_ticks()?;
            let crr = traffic::connect_request_close(
                &stand.topo.client.netns,
                &stand.tcp_targets(),
                m.crr_clients as usize,
                duration,
            )?;
            sample.softirq_ticks = report::softirq_ticks()? - softirq;
            sample.delivered = crr.connections;
            sample.errors = crr.errors;
            sample.seconds = crr.elapsed.as_secs_f64();
            sample.latency_us = Some(report::Latency::of(&crr.latency_us));
        }
        Workload::TcpStream | Workload::TcpStreamNoOffloads => {
            let off = workload == Workload::TcpStreamNoOffloads;
            if off {
                stand.segmentation_offloads_off(true)?;
            }
            let softirq = report::softirq_ticks()?;
            let stream = traffic::stream(&stand.topo.client.netns, stand.stream_target(), duration);
            sample.softirq_ticks = report::softirq_ticks()? - softirq;
            if off {
                stand.segmentation_offloads_off(false)?;
            }
            let stream = stream?;
            sample.delivered = stream.bytes;
            sample.seconds = stream.seconds;
            sample.errors = stream.retransmits;
        }
    }
    stand.detach_xdp_sinks()?;
    sample.veth_drops = Some(stand.veth_drops()?.saturating_sub(drops));
    if let (Some(before), Some(after)) = (verdicts, stand.xlb_verdicts()?) {
        sample.xlb_verdicts = Some(
            after
                .into_iter()
                .map(|(name, n)| {
                    let gained = n.saturating_sub(before.get(&name).copied().unwrap_or(0));
                    (name, gained)
                })
                .filter(|&(_, n)| n > 0)
                .collect(),
        );
    }
    Ok(sample)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    fn parse(args: &[&str]) -> Result<crate::Cli, clap::Error> {
        crate::Cli::try_parse_from(["xlb-bench", "rig"].iter().chain(args))
    }

    #[test]
    fn limits_that_would_measure_nothing_are_refused_when_parsed() {
        for (flag, value) in [("--max-packets", "0"), ("--load-timeout", "0")] {
            let e = parse(&[flag, value]).expect_err(flag);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{flag}");
            assert!(e.to_string().contains(flag), "{e}");
        }
        parse(&["--max-packets", "1", "--load-timeout", "1"]).unwrap();
    }

    /// The measuring arguments of `xlb-bench rig ARGS`, checked as `run`
    /// checks them before it sets anything up.
    fn checked(args: &[&str]) -> anyhow::Result<()> {
        match parse(args)?.command {
            crate::Command::Rig(rig) => rig.measure.check(),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_value_given_twice_in_a_list_is_refused_before_setup() {
        for (flag, list, twice) in [
            ("--services", "1,1", "1"),
            ("--modes", "xlb,forward,xlb", "xlb"),
            ("--workloads", "udp-new,udp-new", "udp-new"),
            ("--sinks", "xdp,stack,xdp", "xdp"),
        ] {
            let err = checked(&[flag, list]).expect_err(flag).to_string();
            assert_eq!(
                err,
                format!("{flag} {list}: {twice} is given more than once; give each value once")
            );
        }
        checked(&["--services", "1,1000", "--modes", "xlb,forward"]).unwrap();
        checked(&[]).unwrap();
    }
}
