//! The figures of `xlb-bench rig`: one sample per (round, services, workload,
//! mode), summarised as medians over rounds with the ratios between modes,
//! printed as Markdown and written as JSON.

use std::{collections::BTreeMap, io::Write, path::Path};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{Mode, Sink, Workload};
use crate::stats::median;

/// Request latency percentiles of one sample, in µs.
#[derive(Clone, Copy, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Sample {
    pub(crate) round: u32,
    pub(crate) mode: Mode,
    pub(crate) services: u32,
    pub(crate) workload: Workload,
    /// UDP: where the frames ended.
    pub(crate) sink: Option<Sink>,
    /// UDP: frames the generator sent.
    pub(crate) sent: u64,
    /// UDP: frames the backends received; TCP: requests answered; stream:
    /// bytes received.
    pub(crate) delivered: u64,
    /// TCP: connections that failed or timed out; stream: retransmissions.
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
    /// Softirq time of the whole machine meanwhile, in clock ticks.
    pub(crate) softirq_ticks: u64,
    pub(crate) latency_us: Option<Latency>,
    /// Frames the stand's veths dropped during the measurement (full rings
    /// or backlogs), whatever the mode.
    pub(crate) veth_drops: u64,
    /// `xlb` mode: packets per `xdp_lb` verdict during the measurement.
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
            softirq_ticks: 0,
            latency_us: None,
            veth_drops: 0,
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
    /// 1500 bytes for a stream.
    fn softirq_ns(&self, tick_ns: f64) -> Option<f64> {
        let units = if self.workload.is_stream() {
            self.delivered as f64 / 1500.0
        } else {
            self.delivered as f64
        };
        (units > 0.0).then(|| self.softirq_ticks as f64 * tick_ns / units)
    }
}

/// A mode left out at a number of services, and why.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LeftOut {
    pub(crate) mode: Mode,
    pub(crate) services: u32,
    pub(crate) reason: String,
}

/// What the figures were taken on.
#[derive(Clone, Debug, Serialize)]
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

/// The samples of one (services, workload, sink), by mode.
type Cell<'a> = BTreeMap<Mode, Vec<&'a Sample>>;

/// A row of the tables: services, workload and (UDP) sink.
type Key = (u32, Workload, Option<Sink>);

fn cells(samples: &[Sample]) -> BTreeMap<Key, Cell<'_>> {
    let mut cells: BTreeMap<Key, Cell<'_>> = BTreeMap::new();
    for s in samples {
        cells
            .entry((s.services, s.workload, s.sink))
            .or_default()
            .entry(s.mode)
            .or_default()
            .push(s);
    }
    cells
}

fn median_of(cell: &Cell<'_>, mode: Mode, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    median(cell.get(&mode)?.iter().filter_map(|s| f(s)).collect())
}

/// A row's workload label, with its sink.
fn label(workload: Workload, sink: Option<Sink>) -> String {
    match sink {
        Some(sink) => format!("{}, {}", workload.name(), sink.name()),
        None => workload.name().to_owned(),
    }
}

fn fmt_rate(rate: Option<f64>, workload: Workload) -> String {
    match (rate, workload) {
        (None, _) => "—".to_owned(),
        (Some(r), Workload::TcpCrr) => format!("{r:.0}/s"),
        (Some(r), Workload::TcpStream | Workload::TcpStreamNoOffloads) => {
            format!("{:.2} Gbit/s", r * 8.0 / 1e9)
        }
        (Some(r), Workload::UdpNew | Workload::UdpEstablished) => format!("{:.0} kpps", r / 1e3),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
    }
}

/// Prints the tables.
pub(crate) fn markdown(
    out: &mut impl Write,
    setup: &Setup,
    modes: &[Mode],
    samples: &[Sample],
    left_out: &[LeftOut],
) -> anyhow::Result<()> {
    writeln!(
        out,
        "Kernel {}, {} CPUs; {} round(s) of {:.1} s per measurement, modes measured interleaved; {}.",
        setup.kernel, setup.cpus, setup.rounds, setup.seconds, setup.iptables
    )?;
    writeln!(
        out,
        "UDP: 60-byte frames received by the backends per second the generator sent; stack sink: taken in by the backend's UDP stack (a bound socket nobody reads), XDP sink: counted and dropped by `xdp_sink` on the backend's interface. TCP: requests answered per second by {} client thread(s), one connection each. Stream: one iperf3 TCP stream's received rate. Medians over rounds.\n",
        setup.crr_clients
    )?;
    let cells = cells(samples);
    let others: Vec<Mode> = modes.iter().copied().filter(|&m| m != Mode::Xlb).collect();
    write!(out, "| services | workload |")?;
    for mode in modes {
        write!(out, " {} |", mode.name())?;
    }
    for other in &others {
        write!(out, " xlb / {} |", other.name())?;
    }
    writeln!(out)?;
    writeln!(out, "|{}", "---|".repeat(2 + modes.len() + others.len()))?;
    for ((services, workload, sink), cell) in &cells {
        write!(out, "| {services} | {} |", label(*workload, *sink))?;
        for &mode in modes {
            let rate = median_of(cell, mode, |s| Some(s.rate()));
            write!(out, " {} |", fmt_rate(rate, *workload))?;
        }
        let xlb = median_of(cell, Mode::Xlb, |s| Some(s.rate()));
        for &other in &others {
            let rate = median_of(cell, other, |s| Some(s.rate()));
            write!(out, " {} |", fmt_ratio(xlb, rate))?;
        }
        writeln!(out)?;
    }

    writeln!(
        out,
        "\nSoftirq time of the whole machine per packet (UDP) or connection (TCP), ns, medians over rounds:\n"
    )?;
    write!(out, "| services | workload |")?;
    for mode in modes {
        write!(out, " {} |", mode.name())?;
    }
    writeln!(out)?;
    writeln!(out, "|{}", "---|".repeat(2 + modes.len()))?;
    for ((services, workload, sink), cell) in &cells {
        write!(out, "| {services} | {} |", label(*workload, *sink))?;
        for &mode in modes {
            match median_of(cell, mode, |s| s.softirq_ns(setup.tick_ns)) {
                Some(ns) => write!(out, " {ns:.0} |")?,
                None => write!(out, " — |")?,
            }
        }
        writeln!(out)?;
    }

    for l in left_out {
        writeln!(
            out,
            "\n{} at {} services: left out, {}.",
            l.mode.name(),
            l.services,
            l.reason
        )?;
    }

    let crr: Vec<_> = cells
        .iter()
        .filter(|((_, w, _), _)| *w == Workload::TcpCrr)
        .collect();
    if !crr.is_empty() {
        writeln!(
            out,
            "\nTCP request latency (connect to close), µs, medians over rounds of each round's percentiles; failed connections and frames the rig's veths dropped (full rings or backlogs), summed over rounds, beside:\n"
        )?;
        writeln!(
            out,
            "| services | mode | p50 | p99 | p99.9 | failed | veth drops |"
        )?;
        writeln!(out, "|---|---|---|---|---|---|---|")?;
        for ((services, _, _), cell) in crr {
            for &mode in modes {
                let Some(s) = cell.get(&mode) else { continue };
                let pct = |f: fn(&Latency) -> u64| {
                    median(
                        s.iter()
                            .filter_map(|s| s.latency_us.as_ref())
                            .map(|l| f(l) as f64)
                            .collect(),
                    )
                    .map_or("—".to_owned(), |v| format!("{v:.0}"))
                };
                let failed: u64 = s.iter().map(|s| s.errors).sum();
                let dropped: u64 = s.iter().map(|s| s.veth_drops).sum();
                writeln!(
                    out,
                    "| {services} | {} | {} | {} | {} | {failed} | {dropped} |",
                    mode.name(),
                    pct(|l| l.p50),
                    pct(|l| l.p99),
                    pct(|l| l.p999)
                )?;
            }
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct Json<'a> {
    setup: &'a Setup,
    samples: &'a [Sample],
    left_out: &'a [LeftOut],
}

/// Writes every sample as JSON.
pub(crate) fn json(
    path: &Path,
    setup: &Setup,
    samples: &[Sample],
    left_out: &[LeftOut],
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&Json {
        setup,
        samples,
        left_out,
    })?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
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

    #[test]
    fn the_table_shows_rates_and_ratios_to_each_mode() {
        let sample = |mode, delivered| Sample {
            delivered,
            seconds: 2.0,
            sent: delivered,
            sink: Some(Sink::Stack),
            ..Sample::new(mode, 1, Workload::UdpNew)
        };
        let samples = vec![
            sample(Mode::Forward, 2_000_000),
            sample(Mode::Xlb, 1_000_000),
            sample(Mode::Nftables, 500_000),
        ];
        let setup = Setup {
            kernel: "6.18".into(),
            cpus: 2,
            seconds: 2.0,
            rounds: 1,
            crr_clients: 2,
            tick_ns: 1e7,
            iptables: "iptables v1.8.9 (nf_tables)".into(),
        };
        let modes = [Mode::Forward, Mode::Xlb, Mode::Nftables];
        let mut out = Vec::new();
        markdown(&mut out, &setup, &modes, &samples, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "| 1 | UDP, new flows, stack sink | 1000 kpps | 500 kpps | 250 kpps | 0.50× | 2.00× |"
            ),
            "{text}"
        );
    }
}
