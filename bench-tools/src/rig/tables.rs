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

/// Says which measurements --max-packets ended before --seconds, and how
/// long they ran: their rates are over that time, not the header's.
fn cut_short(out: &mut impl Write, setup: &Setup, samples: &[Sample]) -> anyhow::Result<()> {
    let cut: Vec<&Sample> = samples.iter().filter(|s| s.cut_short).collect();
    if cut.is_empty() {
        return Ok(());
    }
    let shortest = cut.iter().map(|s| s.seconds).fold(f64::INFINITY, f64::min);
    let longest = cut.iter().map(|s| s.seconds).fold(0.0, f64::max);
    let ran = if shortest == longest {
        format!("{shortest:.3} s")
    } else {
        format!("{shortest:.3}–{longest:.3} s")
    };
    writeln!(
        out,
        "{} of {} measurements were cut short by --max-packets: they ran {ran}, not {:.1} s, and \
         their rates are over the time they ran.",
        cut.len(),
        samples.len(),
        setup.seconds
    )?;
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
    cut_short(out, setup, samples)?;
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

    let untimed = if samples.iter().any(|s| s.shorter_than_a_tick(setup.tick_ns)) {
        format!(
            "; — where the measurements ran shorter than one {:.0} ms clock tick, which \
             /proc/stat counts softirq time in",
            setup.tick_ns / 1e6
        )
    } else {
        String::new()
    };
    writeln!(
        out,
        "\nSoftirq time of the whole machine per packet (UDP), connection (TCP) or 1500 bytes (stream), ns, medians over rounds{untimed}:\n"
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

    #[test]
    fn measurements_cut_short_say_so_and_softirq_below_a_tick_is_no_figure() {
        let setup = Setup {
            kernel: "6.18".into(),
            cpus: 2,
            seconds: 1.0,
            rounds: 1,
            crr_clients: 2,
            tick_ns: 1e7,
            iptables: "iptables v1.8.9 (nf_tables)".into(),
        };
        // 1000 packets in 5 ms, 0 ticks: --max-packets 1000 ended it.
        let short = |mode| Sample {
            delivered: 1000,
            sent: 1000,
            seconds: 0.005,
            cut_short: true,
            sink: Some(Sink::Stack),
            ..Sample::new(mode, 1, Workload::UdpNew)
        };
        let samples = vec![short(Mode::Forward), short(Mode::Xlb)];
        let mut out = Vec::new();
        markdown(&mut out, &setup, &[Mode::Forward, Mode::Xlb], &samples, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains(
                "2 of 2 measurements were cut short by --max-packets: they ran 0.005 s, not 1.0 s"
            ),
            "{text}"
        );
        assert!(text.contains("shorter than one 10 ms clock tick"), "{text}");
        let softirq = text.split("Softirq time").nth(1).unwrap();
        assert!(
            softirq.contains("| 1 | UDP, new flows, stack sink | — | — |"),
            "{text}"
        );
        // Measurements of their full length say neither.
        let full = |mode| Sample {
            seconds: 1.0,
            cut_short: false,
            softirq_ticks: 1,
            ..short(mode)
        };
        let mut out = Vec::new();
        let samples = [full(Mode::Forward), full(Mode::Xlb)];
        markdown(&mut out, &setup, &[Mode::Forward, Mode::Xlb], &samples, &[]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("cut short"), "{text}");
        assert!(!text.contains("clock tick"), "{text}");
        assert!(
            text.contains("| 1 | UDP, new flows, stack sink | 10000 | 10000 |"),
            "{text}"
        );
    }
}
