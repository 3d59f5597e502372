//! The tables of `xlb-bench rig`, printed by `rig` and written into
//! BENCHMARKS.md by `xlb-bench report`: medians over rounds per (services,
//! workload, sink) and mode, xlb over every other mode and every mode over
//! `forward`, softirq time per packet, and TCP latency.

use std::{collections::BTreeMap, io::Write};

use super::{
    Mode, Sink, Workload,
    report::{Latency, LeftOut, Sample, Setup},
};
use crate::stats::median;

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
pub(crate) fn label(workload: Workload, sink: Option<Sink>) -> String {
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
        (Some(r), Workload::UdpNew | Workload::UdpEstablished) if r >= 10e3 => {
            format!("{:.0} kpps", r / 1e3)
        }
        (Some(r), Workload::UdpNew | Workload::UdpEstablished) => format!("{:.2} kpps", r / 1e3),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
    }
}

/// Every mode's median over the `forward` floor's, per row, if `forward` was
/// measured: how much of plain routing each way of balancing keeps.
fn over_forward(
    out: &mut impl Write,
    cells: &BTreeMap<Key, Cell<'_>>,
    modes: &[Mode],
) -> anyhow::Result<()> {
    if !modes.contains(&Mode::Forward) {
        return Ok(());
    }
    let others: Vec<Mode> = modes
        .iter()
        .copied()
        .filter(|&m| m != Mode::Forward)
        .collect();
    writeln!(
        out,
        "\nEach mode over `forward` (plain routing), same rows:\n"
    )?;
    write!(out, "| services | workload |")?;
    for m in &others {
        write!(out, " {} / forward |", m.name())?;
    }
    writeln!(out, "\n|{}", "---|".repeat(2 + others.len()))?;
    for ((services, workload, sink), cell) in cells {
        write!(out, "| {services} | {} |", label(*workload, *sink))?;
        let floor = median_of(cell, Mode::Forward, |s| Some(s.rate()));
        for &m in &others {
            let rate = median_of(cell, m, |s| Some(s.rate()));
            write!(out, " {} |", fmt_ratio(rate, floor))?;
        }
        writeln!(out)?;
    }
    Ok(())
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
    over_forward(out, &cells, modes)?;

    writeln!(
        out,
        "\nSoftirq time of the whole machine per packet (UDP), connection (TCP) or 1500 bytes (stream), ns, medians over rounds:\n"
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
                // "—" when a sample did not record them (an older file).
                let dropped = s
                    .iter()
                    .map(|s| s.veth_drops)
                    .sum::<Option<u64>>()
                    .map_or_else(|| "—".to_owned(), |n| n.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            text.contains("| 1 | UDP, new flows, stack sink | 0.50× | 0.25× |"),
            "each mode over forward: {text}"
        );
    }
}
