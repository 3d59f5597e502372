//! The netns rig section: `xlb-bench rig`'s samples as medians over rounds per
//! (services, workload, sink, mode), the ratios of xlb to every other mode,
//! softirq time per packet, and TCP request latency.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    super::stats::median,
    inputs::{Rig, RigLatency, RigSample},
    markdown,
    plots::{Chart, Panel, Series, YScale},
    rig_targets,
};

/// Modes in `rig`'s order, with the names its tables use.
const MODES: [(&str, &str); 5] = [
    ("forward", "forward"),
    ("xlb", "xlb"),
    ("nftables", "nftables"),
    ("iptables", "iptables-nft"),
    ("iptables-legacy", "iptables-legacy"),
];

const WORKLOADS: [(&str, &str); 5] = [
    ("udp-new", "UDP, new flows"),
    ("udp-established", "UDP, established flows"),
    ("tcp-crr", "TCP connect/request/close"),
    (
        "tcp-stream",
        "TCP stream, offloads as each mode leaves them",
    ),
    (
        "tcp-stream-no-offloads",
        "TCP stream, TSO/GSO/GRO off everywhere",
    ),
];

/// Where UDP frames ended on the backends.
const SINKS: [(&str, &str); 2] = [("stack", "stack sink"), ("xdp", "XDP sink")];

/// A mode or workload: its place among the known ones (unknown ones after,
/// by name) and its JSON name.
type Key<'a> = (usize, &'a str);

fn key<'a>(known: &[(&str, &str)], name: &'a str) -> Key<'a> {
    (
        known
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or(known.len()),
        name,
    )
}

fn display<'a>(known: &[(&'static str, &'static str)], name: &'a str) -> &'a str {
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, shown)| shown)
}

/// A row of the tables: services, workload and (UDP) sink.
type Row<'a> = (u32, Key<'a>, Option<Key<'a>>);

/// The samples of one row, by mode.
type Cell<'a> = BTreeMap<Key<'a>, Vec<&'a RigSample>>;

fn cells(rig: &Rig) -> BTreeMap<Row<'_>, Cell<'_>> {
    let mut cells: BTreeMap<Row<'_>, Cell<'_>> = BTreeMap::new();
    for s in &rig.samples {
        let sink = s.sink.as_deref().map(|sink| key(&SINKS, sink));
        cells
            .entry((s.services, key(&WORKLOADS, &s.workload), sink))
            .or_default()
            .entry(key(&MODES, &s.mode))
            .or_default()
            .push(s);
    }
    cells
}

fn median_of(cell: &Cell<'_>, mode: Key<'_>, f: impl Fn(&RigSample) -> Option<f64>) -> Option<f64> {
    median(cell.get(&mode)?.iter().filter_map(|s| f(s)).collect())
}

fn is_crr(workload: &str) -> bool {
    workload == "tcp-crr"
}

/// A stream counts bytes, not packets.
fn is_stream(workload: &str) -> bool {
    workload.starts_with("tcp-stream")
}

/// A row's workload label, with its sink.
fn label(workload: Key<'_>, sink: Option<Key<'_>>) -> String {
    let workload = display(&WORKLOADS, workload.1);
    match sink {
        Some(sink) => format!("{workload}, {}", display(&SINKS, sink.1)),
        None => workload.to_owned(),
    }
}

fn fmt_rate(rate: Option<f64>, workload: &str) -> String {
    match rate {
        None => "—".to_owned(),
        Some(r) if is_crr(workload) => format!("{r:.0}/s"),
        Some(r) if is_stream(workload) => format!("{:.2} Gbit/s", r * 8.0 / 1e9),
        Some(r) if r >= 10e3 => format!("{:.0} kpps", r / 1e3),
        Some(r) => format!("{:.2} kpps", r / 1e3),
    }
}

pub(super) fn section(
    out: &mut String,
    rig: Option<&Rig>,
    plot: Option<&str>,
) -> anyhow::Result<()> {
    writeln!(out, "## Netns rig: throughput and latency through the LB\n")?;
    let Some(rig) = rig else {
        return markdown::not_measured(
            out,
            "target/release/xlb-bench rig --json target/xlb-bench-rig.json",
            "--rig target/xlb-bench-rig.json",
            "it builds network namespaces and loads XDP programs and rulesets",
        );
    };
    let s = &rig.setup;
    writeln!(
        out,
        "`xlb-bench rig` on kernel {}, {} CPUs: {} round(s) of {:.1} s per measurement, the \
         modes measured interleaved; {}. UDP: frames the backends received per second the \
         generator sent (stack sink: taken in by the backend's UDP stack; XDP sink: counted \
         and dropped by `xdp_sink` on the backend's interface); TCP: requests answered per \
         second by {} client thread(s), one connection per request; stream: one TCP stream's \
         received rate. Every figure is a median over rounds.\n",
        s.kernel, s.cpus, s.rounds, s.seconds, s.iptables, s.crr_clients
    )?;
    if rig.samples.is_empty() {
        writeln!(out, "The file holds no sample.\n")?;
        return Ok(());
    }
    let cells = cells(rig);
    let mut modes: Vec<Key<'_>> = rig.samples.iter().map(|s| key(&MODES, &s.mode)).collect();
    modes.sort_unstable();
    modes.dedup();
    let xlb = key(&MODES, "xlb");
    let others: Vec<Key<'_>> = if modes.contains(&xlb) {
        modes.iter().copied().filter(|&m| m != xlb).collect()
    } else {
        Vec::new()
    };

    write!(out, "| services | workload |")?;
    for m in &modes {
        write!(out, " {} |", display(&MODES, m.1))?;
    }
    for m in &others {
        write!(out, " xlb / {} |", display(&MODES, m.1))?;
    }
    writeln!(out, "\n|{}", "---|".repeat(2 + modes.len() + others.len()))?;
    for (&(services, workload, sink), cell) in &cells {
        write!(out, "| {services} | {} |", label(workload, sink))?;
        for &m in &modes {
            let rate = median_of(cell, m, RigSample::rate);
            write!(out, " {} |", fmt_rate(rate, workload.1))?;
        }
        let ours = median_of(cell, xlb, RigSample::rate);
        for &m in &others {
            match (ours, median_of(cell, m, RigSample::rate)) {
                (Some(a), Some(b)) if b > 0.0 => write!(out, " {:.2}× |", a / b)?,
                _ => write!(out, " — |")?,
            }
        }
        writeln!(out)?;
    }
    over_forward(out, &cells, &modes)?;
    rig_targets::write(out, &rig_targets::targets(rig))?;
    if let Some(plot) = plot {
        writeln!(
            out,
            "\n![UDP throughput against the number of services, one line per mode]({plot})"
        )?;
    }

    writeln!(
        out,
        "\nSoftirq time of the whole machine per packet (UDP) or request (TCP), ns (streams \
         count bytes, not packets: left out):\n"
    )?;
    write!(out, "| services | workload |")?;
    for m in &modes {
        write!(out, " {} |", display(&MODES, m.1))?;
    }
    writeln!(out, "\n|{}", "---|".repeat(2 + modes.len()))?;
    for (&(services, workload, sink), cell) in cells.iter().filter(|((_, w, _), _)| !is_stream(w.1))
    {
        write!(out, "| {services} | {} |", label(workload, sink))?;
        for &m in &modes {
            match median_of(cell, m, |x| x.softirq_ns(s.tick_ns)) {
                Some(ns) => write!(out, " {ns:.0} |")?,
                None => write!(out, " — |")?,
            }
        }
        writeln!(out)?;
    }
    latency(out, &cells)?;
    writeln!(out)?;
    Ok(())
}

/// Every mode's median over the `forward` floor's, per row, if `forward` was
/// measured: how much of plain routing each way of balancing keeps.
fn over_forward(
    out: &mut String,
    cells: &BTreeMap<Row<'_>, Cell<'_>>,
    modes: &[Key<'_>],
) -> anyhow::Result<()> {
    let forward = key(&MODES, "forward");
    if !modes.contains(&forward) {
        return Ok(());
    }
    let others: Vec<Key<'_>> = modes.iter().copied().filter(|&m| m != forward).collect();
    writeln!(
        out,
        "\nEach mode over `forward` (plain routing), same rows:\n"
    )?;
    write!(out, "| services | workload |")?;
    for m in &others {
        write!(out, " {} / forward |", display(&MODES, m.1))?;
    }
    writeln!(out, "\n|{}", "---|".repeat(2 + others.len()))?;
    for (&(services, workload, sink), cell) in cells {
        write!(out, "| {services} | {} |", label(workload, sink))?;
        let floor = median_of(cell, forward, RigSample::rate);
        for &m in &others {
            match (median_of(cell, m, RigSample::rate), floor) {
                (Some(a), Some(b)) if b > 0.0 => write!(out, " {:.2}× |", a / b)?,
                _ => write!(out, " — |")?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// The TCP latency table, if TCP was measured.
fn latency(out: &mut String, cells: &BTreeMap<Row<'_>, Cell<'_>>) -> anyhow::Result<()> {
    let tcp: Vec<_> = cells.iter().filter(|((_, w, _), _)| is_crr(w.1)).collect();
    if tcp.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nTCP request latency (connect to close), µs, the median over rounds of each round's \
         percentile; failed connections summed over rounds:\n"
    )?;
    writeln!(out, "| services | mode | p50 | p99 | p99.9 | failed |")?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for ((services, _, _), cell) in tcp {
        for (mode, samples) in cell {
            let pct = |f: fn(&RigLatency) -> u64| {
                median(
                    samples
                        .iter()
                        .filter_map(|s| s.latency_us.as_ref())
                        .map(|l| f(l) as f64)
                        .collect(),
                )
                .map_or_else(|| "—".to_owned(), |v| format!("{v:.0}"))
            };
            let failed: u64 = samples.iter().map(|s| s.errors).sum();
            writeln!(
                out,
                "| {services} | {} | {} | {} | {} | {failed} |",
                display(&MODES, mode.1),
                pct(|l| l.p50),
                pct(|l| l.p99),
                pct(|l| l.p999)
            )?;
        }
    }
    Ok(())
}

/// UDP throughput (median rate) against the number of services, a panel per
/// UDP workload and sink, a line per mode.
pub(super) fn chart(rig: &Rig) -> Option<Chart> {
    let cells = cells(rig);
    let mut modes: Vec<Key<'_>> = rig.samples.iter().map(|s| key(&MODES, &s.mode)).collect();
    modes.sort_unstable();
    modes.dedup();
    let mut kinds: Vec<(Key<'_>, Option<Key<'_>>)> = cells
        .keys()
        .filter(|(_, w, _)| matches!(w.1, "udp-new" | "udp-established"))
        .map(|&(_, w, sink)| (w, sink))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let panels = kinds
        .into_iter()
        .map(|(workload, sink)| Panel {
            title: label(workload, sink),
            series: modes
                .iter()
                .map(|&m| Series {
                    name: display(&MODES, m.1).to_owned(),
                    points: cells
                        .iter()
                        .filter(|((_, w, s), _)| (*w, *s) == (workload, sink))
                        .filter_map(|((services, _, _), cell)| {
                            let rate = median_of(cell, m, RigSample::rate)?;
                            Some((f64::from(*services), rate / 1e3))
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Chart {
        x_label: "services".to_owned(),
        y_label: "kpps (median over rounds)".to_owned(),
        y_scale: YScale::Linear,
        panels,
    }
    .non_empty()
}
