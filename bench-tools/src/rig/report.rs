//! The figures of `xlb-bench rig`: one sample per (round, services, workload,
//! sink, mode), written as JSON (and read back by `xlb-bench report`); the
//! tables are `tables`.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{Mode, Sink, Workload};
use crate::stats::median;

/// Request latency percentiles of one sample, in µs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Self {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        }
    }
}

/// One measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) round: u32,
    pub(crate) mode: Mode,
    pub(crate) services: u32,
    pub(crate) workload: Workload,
    /// UDP: where the frames ended.
    #[serde(default)]
    pub(crate) sink: Option<Sink>,
    /// UDP: frames the generator sent.
    pub(crate) sent: u64,
    /// UDP: frames the backends received; TCP: requests answered; stream:
    /// bytes received.
    pub(crate) delivered: u64,
    /// TCP: connections that failed or timed out; stream: retransmissions.
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    /// UDP: the generator stopped at --max-packets before --seconds had
    /// passed, so `seconds` is shorter than the run's; false in files of runs
    /// that did not record it.
    #[serde(default)]
    pub(crate) cut_short: bool,
    /// Softirq time of the whole machine meanwhile, in clock ticks.
    pub(crate) softirq_ticks: u64,
    pub(crate) latency_us: Option<Latency>,
    /// Frames the stand's veths dropped during the measurement (full rings
    /// or backlogs), whatever the mode; `None` in files of runs that did not
    /// record it.
    #[serde(default)]
    pub(crate) veth_drops: Option<u64>,
    /// `xlb` mode: packets per `xdp_lb` verdict during the measurement.
    #[serde(default)]
    pub(crate) xlb_verdicts: Option<BTreeMap<String, u64>>,
}

impl Sample {
    pub(crate) const fn new(mode: Mode, services: u32, workload: Workload) -> Self {
        Self {
            round: 0,
            mode,
            services,
            workload,
            sink: None,
            sent: 0,
            delivered: 0,
            errors: 0,
            seconds: 0.0,
            cut_short: false,
            softirq_ticks: 0,
            latency_us: None,
            veth_drops: None,
            xlb_verdicts: None,
        }
    }

    /// Packets (UDP), connections (TCP) or bytes (stream) per second.
    pub(crate) fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.delivered as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Softirq ns of the machine per packet (or connection) delivered; per
    /// 1500 bytes for a stream. None for a measurement shorter than one clock
    /// tick (`tick_ns`): /proc/stat counts whole ticks, so its 0 would say
    /// nothing of what the measurement cost.
    pub(crate) fn softirq_ns(&self, tick_ns: f64) -> Option<f64> {
        if self.shorter_than_a_tick(tick_ns) {
            return None;
        }
        let units = if self.workload.is_stream() {
            self.delivered as f64 / 1500.0
        } else {
            self.delivered as f64
        };
        (units > 0.0).then(|| self.softirq_ticks as f64 * tick_ns / units)
    }
}

impl Sample {
    /// The measurement ran for less than one clock tick of `tick_ns`.
    pub(crate) fn shorter_than_a_tick(&self, tick_ns: f64) -> bool {
        self.seconds * 1e9 < tick_ns
    }
}

/// A mode left out at a number of services, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LeftOut {
    pub(crate) mode: Mode,
    pub(crate) services: u32,
    pub(crate) reason: String,
}

/// What the figures were taken on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Setup {
    pub(crate) kernel: String,
    pub(crate) cpus: usize,
    pub(crate) seconds: f64,
    pub(crate) rounds: u32,
    pub(crate) crr_clients: u32,
    /// Length of a clock tick of `/proc/stat`, in ns.
    pub(crate) tick_ns: f64,
    pub(crate) iptables: String,
}

impl Setup {
    pub(crate) fn of_this_machine(
        seconds: f64,
        rounds: u32,
        crr_clients: u32,
    ) -> anyhow::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
        anyhow::ensure!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
        let iptables = std::process::Command::new("iptables")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        Ok(Self {
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            seconds,
            rounds,
            crr_clients,
            tick_ns: 1e9 / hz as f64,
            iptables,
        })
    }
}

/// The machine's softirq time so far, in clock ticks (`/proc/stat`, all CPUs).
pub(crate) fn softirq_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_softirq(&stat).context("no softirq figure in /proc/stat")
}

/// The 7th figure of the `cpu` line: user nice system idle iowait irq softirq.
fn parse_softirq(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    line.split_whitespace().nth(7)?.parse().ok()
}

/// What `xlb-bench rig --json` writes, and `xlb-bench report` reads back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Json {
    pub(crate) setup: Setup,
    pub(crate) samples: Vec<Sample>,
    #[serde(default)]
    pub(crate) left_out: Vec<LeftOut>,
    /// The build that measured it (`build_id`); absent from a file written
    /// before builds were recorded.
    #[serde(default)]
    pub(crate) build: Option<crate::build_id::BuildId>,
}

/// Writes every sample as JSON.
pub(crate) fn json(path: &Path, document: &Json) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(document)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The median over rounds of `f` for one (services, workload, sink, mode).
pub(crate) fn median_over(
    samples: &[Sample],
    (services, workload, sink, mode): (u32, Workload, Option<Sink>, Mode),
    f: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    median(
        samples
            .iter()
            .filter(|s| {
                (s.services, s.workload, s.sink, s.mode) == (services, workload, sink, mode)
            })
            .filter_map(f)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_is_the_seventh_figure_of_the_cpu_line() {
        let stat = "cpu  10 20 30 40 50 60 70 80 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_softirq(stat), Some(70));
        assert_eq!(parse_softirq("intr 1 2 3\n"), None);
    }
}
