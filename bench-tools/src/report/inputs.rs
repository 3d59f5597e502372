//! The JSON documents `prog`, `sync` and `rig` write, as far as the report
//! (and `pairs`, of `prog`'s) reads them. Only the fields read are declared
//! (serde skips the others), so that a field added to a writer does not break
//! the report; modes, workloads and cases stay strings, so that a new one
//! shows up under its own name instead of failing the whole report.

use std::{ops::RangeInclusive, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, de::DeserializeOwned};

use crate::build_id::BuildId;

/// `xlb-bench prog --json` (`prog::report::json`).
#[derive(Debug, Deserialize)]
pub(crate) struct Prog {
    /// The build that measured it; absent from a file written before
    /// builds were recorded.
    #[serde(default)]
    pub(crate) build: Option<BuildId>,
    pub(super) methods: ProgMethods,
    pub(super) setup: ProgSetup,
    pub(crate) rows: Vec<ProgRow>,
    /// The acceptance targets, as `prog` judged them.
    pub(crate) targets: Vec<crate::prog::report::Target>,
}

/// The largest figure of a `prog` document: the kernel times runs in whole
/// ns, in a u32 (`BPF_PROG_TEST_RUN`'s `duration`), so no ns/packet is larger,
/// and neither is a ratio of two (the smaller at least 1 ns: a run of 0 ns
/// makes the ratio infinite, which the JSON holds as null).
const PROG_FIGURE_MAX: f64 = u32::MAX as f64;

impl Prog {
    /// Refuses a figure no run measures, negative or beyond `PROG_FIGURE_MAX`:
    /// the tables print figures whole (`{:.0}` of -1.8e308 is 309 digits).
    fn check(&self) -> anyhow::Result<()> {
        for (i, row) in self.rows.iter().enumerate() {
            let at = |field: &str| {
                format!(
                    "rows[{i}] ({} at {} service(s), {} flow(s)): {field}",
                    row.case, row.services, row.scale_flows
                )
            };
            if let Some(summary) = &row.method_b_summary {
                check_figure(summary.median).with_context(|| at("method_b_summary.median"))?;
            }
            if let Some(over) = row.method_b_over_floor {
                check_figure(over).with_context(|| at("method_b_over_floor"))?;
            }
        }
        for (i, target) in self.targets.iter().enumerate() {
            let at = |field: &str| format!("targets[{i}] ({}): {field}", target.what);
            check_figure(target.measured).with_context(|| at("measured"))?;
            check_figure(target.limit).with_context(|| at("limit"))?;
            if let Some(aim) = target.aim {
                check_figure(aim).with_context(|| at("aim"))?;
            }
        }
        Ok(())
    }
}

fn check_figure(value: f64) -> anyhow::Result<()> {
    check_in(
        value,
        0.0..=PROG_FIGURE_MAX,
        "prog",
        &format!(
            "its ns/packet and ratios run from 0 to {PROG_FIGURE_MAX} (the kernel times runs \
             in whole ns, in a u32)"
        ),
    )
}

/// Refuses `value` outside `range` (NaN included): `xlb-bench tool` measures
/// no such figure, and `what` says which it does.
fn check_in(value: f64, range: RangeInclusive<f64>, tool: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        range.contains(&value),
        "{value:?} is no figure `xlb-bench {tool}` measures: {what}"
    );
    Ok(())
}

/// Refuses a count beyond `most`.
fn check_count(value: u64, most: u64, tool: &str, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        value <= most,
        "{value} is no count `xlb-bench {tool}` measures: {what}"
    );
    Ok(())
}

/// What each timing method is, in the tool's own words.
#[derive(Debug, Deserialize)]
pub(super) struct ProgMethods {
    pub(super) b: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct ProgSetup {
    pub(super) kernel: String,
    /// Runs per (scale, case, method): `--runs`.
    pub(super) rounds: u32,
    pub(super) repeat: u32,
    pub(super) table_size: u32,
    pub(super) backends_per_service: u32,
}

/// One case at one scale.
#[derive(Debug, Deserialize)]
pub(crate) struct ProgRow {
    pub(crate) services: u32,
    pub(crate) scale_flows: u32,
    /// `Kind`, snake_case.
    pub(crate) case: String,
    pub(crate) method_b_summary: Option<ProgSummary>,
    pub(crate) method_b_over_floor: Option<f64>,
}

impl ProgRow {
    /// One service, one flow: the scale DESIGN.md's Katran figures were taken at.
    pub(super) fn is_hot(&self) -> bool {
        self.services == 1 && self.scale_flows == 1
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ProgSummary {
    pub(crate) median: f64,
}

/// `xlb-bench sync --json`: one N per document.
#[derive(Debug, Deserialize)]
pub(super) struct Sync {
    /// As `Prog::build`.
    #[serde(default)]
    pub(super) build: Option<BuildId>,
    pub(super) services: u32,
    pub(super) backends_per_service: u32,
    pub(super) full_sync_seconds: f64,
    pub(super) changes: u32,
    /// Flows in conntrack while the changes ran (absent before `--flows`).
    #[serde(default)]
    pub(super) tracked_flows: u64,
    pub(super) change_p50_ms: f64,
    pub(super) change_p99_ms: f64,
    pub(super) baselines: Option<SyncBaselines>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SyncBaselines {
    pub(super) nft_version: String,
    pub(super) iptables_version: String,
    pub(super) nftables: RulesetCost,
    pub(super) iptables: RulesetCost,
}

/// Loading one kube-proxy ruleset, and changing it.
#[derive(Debug, Deserialize)]
pub(super) struct RulesetCost {
    pub(super) full_load_seconds: f64,
    pub(super) full_load_timed_out: bool,
    /// 0 when the full load timed out.
    pub(super) changes: u32,
    pub(super) change_p50_ms: f64,
    pub(super) change_p99_ms: f64,
}

impl Sync {
    /// Refuses a figure no run measures, as `Prog::check` does: durations
    /// from 0 to `sync::SECONDS_MAX`, change latencies from 0 to the most
    /// their histogram holds, a p50 no larger than its p99.
    fn check(&self) -> anyhow::Result<()> {
        let seconds = |value: f64, field: &str| {
            let most = crate::sync::SECONDS_MAX as f64;
            check_in(
                value,
                0.0..=most,
                "sync",
                &format!("its durations run from 0 to {most} s (a day, --baseline-timeout's most)"),
            )
            .with_context(|| field.to_owned())
        };
        let latencies = |p50: f64, p99: f64, max_us: u64, at: &str| -> anyhow::Result<()> {
            let most = crate::sync::change_ms_max(max_us)?;
            for (value, field) in [(p50, "change_p50_ms"), (p99, "change_p99_ms")] {
                let what = format!(
                    "a change's latency runs from 0 to {most} ms, the most its histogram holds"
                );
                check_in(value, 0.0..=most, "sync", &what)
                    .with_context(|| format!("{at}{field}"))?;
            }
            anyhow::ensure!(
                p50 <= p99,
                "{at}change_p50_ms: {p50} is above change_p99_ms, {p99}: no run measures that"
            );
            Ok(())
        };
        seconds(self.full_sync_seconds, "full_sync_seconds")?;
        latencies(
            self.change_p50_ms,
            self.change_p99_ms,
            crate::sync::CHANGE_MAX_US,
            "",
        )?;
        if let Some(b) = &self.baselines {
            for (name, cost) in [("nftables", &b.nftables), ("iptables", &b.iptables)] {
                let at = format!("baselines.{name}.");
                seconds(cost.full_load_seconds, &format!("{at}full_load_seconds"))?;
                latencies(
                    cost.change_p50_ms,
                    cost.change_p99_ms,
                    crate::sync::BASELINE_CHANGE_MAX_US,
                    &at,
                )?;
            }
        }
        Ok(())
    }
}

/// The most CPUs Linux runs on (`CONFIG_NR_CPUS` of x86-64 with `MAXSMP`).
const MAX_CPUS: f64 = 8192.0;

/// The most frames or connections a rig measurement delivers a second: no
/// veth moves a billion (100 Gbit/s of its 60-byte frames is 150 million).
const RIG_RATE_MAX: f64 = 1e9;
/// The most bytes a stream delivers a second: 800 Gbit/s.
const RIG_BYTE_RATE_MAX: f64 = 1e11;

/// The most a rig sample counts of anything (frames, bytes, errors, drops,
/// verdicts, ticks): the most bytes a second over the longest measurement.
/// Sums over up to `--rounds` (100) samples stay far below `u64::MAX`.
const RIG_COUNT_MAX: u64 = {
    let seconds = crate::rig::MAX_SECONDS as u64 + crate::rig::traffic::STREAM_GRACE_SECS;
    RIG_BYTE_RATE_MAX as u64 * seconds
};

/// Refuses a figure no `xlb-bench rig` run measures, naming its field:
/// `setup.seconds` beyond `--seconds`'s range, a clock tick beyond a second,
/// a sample longer than its measurement may run, a rate, count, softirq time
/// or latency beyond what a machine and the histograms hold. The tables
/// divide and sum these: a sample of -2 s or 1e-300 s would print as a rate
/// or a ratio no run measures.
fn check_rig(rig: &crate::rig::report::Json) -> anyhow::Result<()> {
    let setup = &rig.setup;
    let longest = crate::rig::MAX_SECONDS;
    check_in(
        setup.seconds,
        f64::MIN_POSITIVE..=longest,
        "rig",
        &format!("a measurement's --seconds run from above 0 to {longest}"),
    )
    .context("setup.seconds")?;
    check_in(
        setup.tick_ns,
        f64::MIN_POSITIVE..=1e9,
        "rig",
        "a clock tick is above 0 and at most a second, 1e9 ns",
    )
    .context("setup.tick_ns")?;
    // What a measurement may overrun its --seconds by: see STREAM_GRACE_SECS.
    let sample_seconds = setup.seconds + crate::rig::traffic::STREAM_GRACE_SECS as f64;
    let latency_max = crate::rig::traffic::new_histogram()?
        .highest_equivalent(crate::rig::traffic::LATENCY_MAX_US);
    for (i, s) in rig.samples.iter().enumerate() {
        let at = |field: &str| {
            let sink = s
                .sink
                .map_or(String::new(), |sink| format!(", {}", sink.name()));
            format!(
                "samples[{i}] ({} mode, {}{sink}, {} service(s), round {}): {field}",
                s.mode.name(),
                s.workload.name(),
                s.services,
                s.round
            )
        };
        check_in(
            s.seconds,
            0.0..=sample_seconds,
            "rig",
            &format!(
                "a measurement runs from 0 to {sample_seconds} s, the run's --seconds and the \
                 {} s a stream is given to finish",
                crate::rig::traffic::STREAM_GRACE_SECS
            ),
        )
        .with_context(|| at("seconds"))?;
        let counts = [
            (s.sent, "sent"),
            (s.delivered, "delivered"),
            (s.errors, "errors"),
            (s.softirq_ticks, "softirq_ticks"),
            (s.veth_drops.unwrap_or(0), "veth_drops"),
        ];
        let verdicts = s
            .xlb_verdicts
            .iter()
            .flatten()
            .map(|(_, &n)| (n, "xlb_verdicts"));
        for (value, field) in counts.into_iter().chain(verdicts) {
            let what = format!(
                "a measurement counts at most {RIG_COUNT_MAX}, {RIG_BYTE_RATE_MAX} a second \
                 for as long as one runs"
            );
            check_count(value, RIG_COUNT_MAX, "rig", &what).with_context(|| at(field))?;
        }
        let (most, unit) = if s.workload.is_stream() {
            (RIG_BYTE_RATE_MAX, "bytes")
        } else {
            (RIG_RATE_MAX, "frames or connections")
        };
        check_in(
            s.rate(),
            0.0..=most,
            "rig",
            &format!("a measurement delivers at most {most} {unit} a second"),
        )
        .with_context(|| at("delivered over seconds"))?;
        // No machine spends more time in softirq than its CPUs have over the
        // longest the measurement ran. Not `setup.cpus`: it is the CPUs the
        // run could use (a quota or an affinity mask leaves fewer), where
        // /proc/stat counts every CPU of the machine; but Linux runs on at
        // most `MAX_CPUS`.
        let most = MAX_CPUS * sample_seconds * 1e9;
        let spent = s.softirq_ticks as f64 * setup.tick_ns;
        check_in(
            spent,
            0.0..=most,
            "rig",
            &format!(
                "{MAX_CPUS} CPUs, the most Linux runs on, spend at most {most} ns in softirq \
                 over {sample_seconds} s"
            ),
        )
        .with_context(|| at("softirq_ticks × setup.tick_ns"))?;
        if let Some(l) = &s.latency_us {
            for (value, field) in [(l.p50, "p50"), (l.p99, "p99"), (l.p999, "p999")] {
                let what =
                    format!("a latency runs up to {latency_max} µs, the most its histogram holds");
                check_count(value, latency_max, "rig", &what)
                    .with_context(|| at(&format!("latency_us.{field}")))?;
            }
            anyhow::ensure!(
                l.p50 <= l.p99 && l.p99 <= l.p999,
                "{}: {} / {} / {} µs are not in order: no run measures that",
                at("latency_us.p50, p99, p999"),
                l.p50,
                l.p99,
                l.p999
            );
        }
    }
    Ok(())
}

/// `load` of a `prog` document, its figures checked (`Prog::check`).
pub(crate) fn load_prog(path: &Path) -> anyhow::Result<Prog> {
    load_checked(path, Prog::check)
}

/// `load` of a `sync` document, its figures checked (`Sync::check`).
pub(super) fn load_sync(path: &Path) -> anyhow::Result<Sync> {
    load_checked(path, Sync::check)
}

/// `load` of a `rig` document, its figures checked (`check_rig`).
pub(super) fn load_rig(path: &Path) -> anyhow::Result<crate::rig::report::Json> {
    load_checked(path, check_rig)
}

/// `load`, then `check` the document's figures.
fn load_checked<T: DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> anyhow::Result<()>,
) -> anyhow::Result<T> {
    let document: T = load(path)?;
    check(&document).with_context(|| format!("checking {}", path.display()))?;
    Ok(document)
}

/// Reads and parses `path`. A file named but not there is an error, not a
/// section left unmeasured: a mistyped path must not publish a report that
/// silently lost a benchmark. A file that does not parse is an error which
/// names the field (a figure absent, or null where a run writes a number).
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut json = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut json)
        .with_context(|| format!("parsing {}", path.display()))
}
