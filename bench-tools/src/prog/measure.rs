//! The two ways of timing a case (DESIGN.md, "Measuring ns/packet"), one run
//! at a time, each run checked.
//!
//! - Method A: one run per `BPF_PROG_TEST_RUN` call (repeat = 1), the kernel's
//!   durations averaged over many calls, as Katran's `--perf_testing` does. It
//!   includes the kernel's per-call timing overhead.
//! - Method B: `repeat` runs per call through `xdp_bench`, which restores the
//!   frame (and sets the rotated fields) before every run, so a rewriting path
//!   is never timed on its own output. The kernel reports the average.

use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use xdp_lb::{Datapath, ProgramName};

use super::{
    cases::{Case, Clients},
    check::{Snapshot, action, expected_output},
    frame::{ensure_frame, flow_of, rotate, same_but_checksums},
};

/// A timing method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    A,
    B,
}

/// Where method A of a case goes on from: the rotations keep counting across
/// runs, so that successive runs walk on over the services instead of starting
/// again from the first.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Progress {
    next: u32,
}

/// Method B's repeat for `case`: `repeat`, rounded up to whole passes over the
/// case's flows (the wrapper's counter restarts with every run, so a run that
/// stopped half-way would leave the other half unmeasured).
pub(crate) fn repeat_for(case: &Case, repeat: u32) -> u32 {
    if case.is_new_flow() || case.cycle <= 1 {
        repeat
    } else {
        repeat.div_ceil(case.cycle).saturating_mul(case.cycle)
    }
}

/// One method-B run of `repeat` runs; returns the kernel's ns per run.
pub(crate) fn run_b(
    dp: &mut Datapath,
    case: &Case,
    repeat: u32,
    clients: &mut Clients,
) -> anyhow::Result<f64> {
    // A call of a large --repeat takes seconds, and a round makes two per
    // case (the floor's and the case's): a signal stops the round before
    // the next call rather than at its end.
    crate::stop::check()?;
    let client = case.is_new_flow().then(|| clients.fresh()).transpose()?;
    anyhow::ensure!(
        !case.is_new_flow() || repeat <= case.cycle,
        "{}: {repeat} runs would repeat a flow after {}; lower --repeat",
        case.kind.label(),
        case.cycle
    );
    let frame = case.frame(client);
    if case.kind.forgets() {
        dp.bench_target_forgetting(case.program, &frame, &flow_of(&frame)?)?;
    } else {
        dp.bench_target_rotating(case.program, &frame, &case.rotations)?;
    }
    let before = Snapshot::take(dp)?;
    // The kernel ends a call a signal lands in with EINTR: that is the
    // interruption, not a failure of the case.
    let out = match dp.test_run_repeat(ProgramName::XdpBench, &frame, repeat) {
        Ok(out) => out,
        Err(e) => {
            crate::stop::check()?;
            return Err(e.into());
        }
    };
    let label = case.kind.label();
    anyhow::ensure!(
        out.action == action(case),
        "{label} (method B): the wrapper returned {} instead of {}",
        out.action,
        action(case)
    );
    Snapshot::take(dp)?.ensure_counted(&before, case.kind, u64::from(repeat))?;
    // The frame the last run left: what run `repeat - 1` must come out as.
    let last = case.frame_at(client, repeat - 1);
    let expected = expected_output(dp, case, &last)?;
    ensure_frame(
        same_but_checksums(&out.packet, &expected),
        label,
        &out.packet,
        &expected,
    )?;
    forget_new_flows(dp, case, client, repeat)?;
    Ok(ns(out.duration))
}

/// Deletes the flows a new-flow run of `runs` runs for `client` created, so
/// that the next case meets conntrack as the set-up left it. Left in, they
/// would fill the buckets of the tracked flows that later cases hit, which
/// a full bucket gives up first (the least recently used), long before the
/// table is full.
fn forget_new_flows(
    dp: &mut Datapath,
    case: &Case,
    client: Option<std::net::Ipv4Addr>,
    runs: u32,
) -> anyhow::Result<()> {
    if client.is_none() {
        return Ok(());
    }
    // A forgetting case's runs are all one flow, which the last run left.
    let runs = if case.kind.forgets() { 1 } else { runs };
    let flows = (0..runs)
        .map(|n| flow_of(&case.frame_at(client, n)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let deleted = dp.delete_flows(&flows)?;
    anyhow::ensure!(
        deleted == flows.len(),
        "{}: {} of the run's {} new flows were tracked",
        case.kind.label(),
        deleted,
        flows.len()
    );
    Ok(())
}

/// One method-A run of `calls` calls; returns the average of the kernel's
/// per-call durations, in ns.
pub(crate) fn run_a(
    dp: &mut Datapath,
    case: &Case,
    calls: u32,
    progress: &mut Progress,
    clients: &mut Clients,
) -> anyhow::Result<f64> {
    let label = case.kind.label();
    let client = case.is_new_flow().then(|| clients.fresh()).transpose()?;
    let first = if case.is_new_flow() {
        anyhow::ensure!(
            calls <= case.cycle,
            "{label}: {calls} calls would repeat a flow after {}; lower --calls",
            case.cycle
        );
        0
    } else {
        progress.next
    };
    let mut frame = case.frame(client);
    let before = Snapshot::take(dp)?;
    let mut total = Duration::ZERO;
    let mut last = None;
    for i in 0..calls {
        // A run of many calls takes seconds: a signal stops it between two.
        crate::stop::check()?;
        let n = first.wrapping_add(i);
        rotate(&mut frame, &case.rotations, n);
        let out = dp
            .test_run(case.program, &frame)
            .with_context(|| format!("{label}: test run"))?;
        anyhow::ensure!(
            out.action == action(case),
            "{label} (method A): verdict {} instead of {}",
            out.action,
            action(case)
        );
        total += out.duration;
        if i + 1 == calls {
            last = Some(out.packet);
        }
    }
    progress.next = first.wrapping_add(calls);
    Snapshot::take(dp)?.ensure_counted(&before, case.kind, u64::from(calls))?;
    if let Some(out) = last {
        let expected = expected_output(dp, case, &frame)?;
        ensure_frame(same_but_checksums(&out, &expected), label, &out, &expected)?;
    }
    forget_new_flows(dp, case, client, calls)?;
    Ok(ns(total) / f64::from(calls.max(1)))
}

fn ns(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// The per-run figures of one (scale, case, method), and their summary.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Samples {
    /// ns/packet of each run, in the order measured.
    pub(crate) runs_ns: Vec<f64>,
    /// ns/packet of the floor, run the same way just before each run (empty
    /// for the floor itself): a shared machine's slow phases then weigh on
    /// both sides of each ratio.
    pub(crate) floor_ns: Vec<f64>,
    /// Packets per run: method B's repeat, or method A's calls.
    pub(crate) packets_per_run: u32,
}

/// Order statistics of a set of runs.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) p10: f64,
    pub(crate) p90: f64,
}

impl Summary {
    pub(crate) fn of(values: &[f64]) -> Option<Self> {
        let mut v = values.to_vec();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        // Nearest-rank percentiles.
        let at = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        Some(Self {
            median: crate::stats::median(v.clone())?,
            min: v[0],
            max: v[v.len() - 1],
            p10: at(0.1),
            p90: at(0.9),
        })
    }
}

impl Samples {
    pub(crate) fn new(packets_per_run: u32) -> Self {
        Self {
            runs_ns: Vec::new(),
            floor_ns: Vec::new(),
            packets_per_run,
        }
    }

    pub(crate) fn summary(&self) -> Option<Summary> {
        Summary::of(&self.runs_ns)
    }

    /// The median over runs of each run's figure over the floor's just before.
    pub(crate) fn over_floor(&self) -> Option<f64> {
        median_ratio(&self.runs_ns, &self.floor_ns)
    }

    /// The median over runs of each run's figure over `base`'s run of the
    /// same round: both taken seconds apart, with no floor between them.
    pub(crate) fn paired_over(&self, base: &Self) -> Option<f64> {
        median_ratio(&self.runs_ns, &base.runs_ns)
    }
}

/// The median of `ns[i] / over[i]` over the runs (a zero divisor skipped).
fn median_ratio(ns: &[f64], over: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = ns
        .iter()
        .zip(over)
        .filter(|(_, over)| **over > 0.0)
        .map(|(ns, over)| ns / over)
        .collect();
    Summary::of(&ratios).map(|s| s.median)
}
