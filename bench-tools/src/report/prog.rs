//! The datapath section: `xlb-bench prog`'s method-B ns/packet of every case
//! at every scale, with × floor, and its acceptance targets as it judged
//! them.

use std::fmt::Write as _;

use super::{
    inputs::{Prog, ProgRow, ProgSummary},
    markdown,
    plots::{Chart, Panel, Series, YScale},
};

/// The row label of a case (`prog::cases::Kind::label`), or its JSON name.
fn label(case: &str) -> &str {
    match case {
        "floor" => "floor (`xdp_floor`)",
        "new_tcp_flow" => "new TCP flow (SYN)",
        "new_tcp_flow_warm" => "new TCP flow, warm (one SYN, forgotten before each run)",
        "conntrack_hit" => "conntrack hit (TCP ACK)",
        "udp" => "UDP (conntrack hit)",
        "reply" => "reply reverse-NAT",
        "non_vip_pass" => "non-VIP pass",
        "dsr_new_tcp_flow" => "DSR new TCP flow (SYN, IPIP)",
        "dsr_conntrack_hit" => "DSR conntrack hit (TCP ACK, IPIP)",
        other => other,
    }
}

/// One method's figure of a row: "ns, × floor".
fn cell(ns: Option<&ProgSummary>, over: Option<f64>) -> String {
    match (ns, over) {
        (Some(ns), Some(over)) => format!(" {:.0} ns, {over:.2}× |", ns.median),
        (Some(ns), None) => format!(" {:.0} ns |", ns.median),
        (None, _) => " — |".to_owned(),
    }
}

/// A table of `cases` by `scales`, each cell the figure `figure` takes from a row.
fn table(
    out: &mut String,
    prog: &Prog,
    cases: &[&str],
    scales: &[Scale],
    figure: impl Fn(&ProgRow) -> String,
) -> std::fmt::Result {
    write!(out, "| case |")?;
    for &sc in scales {
        write!(out, " {} |", scale_header(sc))?;
    }
    writeln!(out, "\n|---|{}", "---|".repeat(scales.len()))?;
    for &case in cases {
        write!(out, "| {} |", label(case))?;
        for &sc in scales {
            let row = prog.rows.iter().find(|r| r.case == case && scale(r) == sc);
            match row {
                Some(row) => write!(out, "{}", figure(row))?,
                None => write!(out, " — |")?,
            }
        }
        writeln!(out)?;
    }
    Ok(())
}

/// A scale: (services, flows the hit cases walk over).
type Scale = (u32, u32);

fn scale(row: &ProgRow) -> Scale {
    (row.services, row.scale_flows)
}

/// `items` without repeats, in order of first appearance (the JSON's order is
/// the tool's table order).
fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

fn scale_header((services, flows): Scale) -> String {
    match (services, flows) {
        (1, 1) => "1 service, 1 flow (hot)".to_owned(),
        (1, f) => format!("1 service, {f} flows"),
        (s, f) => format!("{s} services, {f} flows"),
    }
}

pub(super) fn section(
    out: &mut String,
    prog: Option<&Prog>,
    plot: Option<&str>,
) -> anyhow::Result<()> {
    writeln!(out, "## Datapath: ns/packet\n")?;
    let Some(prog) = prog else {
        return markdown::not_measured(
            out,
            "target/release/xlb-bench prog --json target/xlb-bench-prog.json",
            "--prog target/xlb-bench-prog.json",
            "it loads the datapath and times it under BPF_PROG_TEST_RUN",
        );
    };
    let s = &prog.setup;
    if prog.rows.is_empty() {
        writeln!(
            out,
            "The `xlb-bench prog` document (kernel {}) has no rows: it holds no measured case. \
             Rerun `xlb-bench prog --json FILE` and pass that file.\n",
            s.kernel
        )?;
        return Ok(());
    }
    let dsr = if prog.rows.iter().any(|r| r.case.starts_with("dsr_")) {
        " and a direct-server-return (DSR) TCP frontend"
    } else {
        ""
    };
    writeln!(
        out,
        "`xlb-bench prog` on kernel {}: each cell is method B's ns/packet, the median over \
         {} run(s), and beside it × floor, the median over runs of each run's figure over the \
         floor program's measured just before it. Method B: {}; repeat {} per run. Each \
         service has a TCP and a UDP frontend{dsr}, {} backends, Maglev M = {}.\n",
        s.kernel, s.rounds, prog.methods.b, s.repeat, s.backends_per_service, s.table_size
    )?;
    let scales = distinct(prog.rows.iter().map(scale));
    let cases = distinct(prog.rows.iter().map(|r| r.case.as_str()));
    let any_b = prog.rows.iter().any(|r| r.method_b_summary.is_some());
    table(out, prog, &cases, &scales, |r| {
        cell(r.method_b_summary.as_ref(), r.method_b_over_floor)
    })?;
    if !any_b {
        writeln!(
            out,
            "\nMethod B was not measured in this run (`--method a`): rerun with `--method b` or `both`."
        )?;
    }
    if let Some(plot) = plot {
        writeln!(
            out,
            "\n![method B ns/packet per case against the number of services]({plot})"
        )?;
    }
    writeln!(
        out,
        "\nAcceptance targets (method B; at the hot scale × floor, between scales the \
         median over rounds of one scale's ns over the other's in the same round), as `prog` \
         judged them:\n"
    )?;
    if prog.targets.is_empty() {
        writeln!(out, "None applies to the scales measured in this run.\n")?;
        return Ok(());
    }
    writeln!(out, "| target | services | measured | limit | result |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for t in &prog.targets {
        writeln!(out, "{}", t.table_row())?;
    }
    writeln!(out)?;
    Ok(())
}

/// Method B's ns/packet of every case against the number of services, at the
/// flows of the scales that vary the services most (the hot scale alone when
/// nothing else was measured).
pub(super) fn chart(prog: &Prog) -> Option<Chart> {
    let flows = distinct(
        prog.rows
            .iter()
            .filter(|r| !r.is_hot())
            .map(|r| r.scale_flows),
    );
    let services_at = |f: u32| {
        distinct(
            prog.rows
                .iter()
                .filter(|r| !r.is_hot() && r.scale_flows == f)
                .map(|r| r.services),
        )
        .len()
    };
    let chosen = flows.iter().copied().max_by_key(|&f| (services_at(f), f));
    let rows: Vec<&ProgRow> = match chosen {
        Some(f) => prog
            .rows
            .iter()
            .filter(|r| !r.is_hot() && r.scale_flows == f)
            .collect(),
        None => prog.rows.iter().collect(),
    };
    let title = match chosen {
        Some(f) => format!("method B ns/packet, {f} flows per scale"),
        None => "method B ns/packet, 1 flow".to_owned(),
    };
    let series = distinct(rows.iter().map(|r| r.case.as_str()))
        .into_iter()
        .map(|case| Series {
            name: label(case).replace('`', ""),
            points: rows
                .iter()
                .filter(|r| r.case == case)
                .filter_map(|r| {
                    let ns = r.method_b_summary.as_ref()?.median;
                    Some((f64::from(r.services), ns))
                })
                .collect(),
        })
        .collect();
    Chart {
        x_label: "services".to_owned(),
        y_label: "ns/packet (median)".to_owned(),
        y_scale: YScale::Log,
        panels: vec![Panel { title, series }],
    }
    .non_empty()
}
