//! The netns rig section: the tables `xlb-bench rig` prints (one renderer,
//! `rig::tables`), the targets judged on them, and the throughput plot.

use std::fmt::Write as _;

use super::{
    markdown,
    plots::{Chart, Panel, Series, YScale},
    rig_targets,
};
use crate::rig::{
    Mode, Sink, Workload,
    report::{Json, median_over},
    tables,
};

pub(super) fn section(
    out: &mut String,
    rig: Option<&Json>,
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
    if rig.samples.is_empty() {
        writeln!(out, "The file holds no sample.\n")?;
        return Ok(());
    }
    let mut text = Vec::new();
    tables::markdown(
        &mut text,
        &rig.setup,
        &modes(rig),
        &rig.samples,
        &rig.left_out,
    )?;
    out.push_str(&String::from_utf8(text)?);
    rig_targets::write(out, &rig_targets::targets(rig))?;
    if let Some(plot) = plot {
        writeln!(
            out,
            "\n![UDP throughput against the number of services, one line per mode]({plot})"
        )?;
    }
    writeln!(out)?;
    Ok(())
}

/// The modes the run measured, in the rig's order.
fn modes(rig: &Json) -> Vec<Mode> {
    let mut modes: Vec<Mode> = rig.samples.iter().map(|s| s.mode).collect();
    modes.sort_unstable();
    modes.dedup();
    modes
}

/// UDP throughput (median rate) against the number of services, a panel per
/// UDP workload and sink, a line per mode.
pub(super) fn chart(rig: &Json) -> Option<Chart> {
    let mut services: Vec<u32> = rig.samples.iter().map(|s| s.services).collect();
    services.sort_unstable();
    services.dedup();
    let mut kinds: Vec<(Workload, Option<Sink>)> = rig
        .samples
        .iter()
        .filter(|s| s.workload.is_udp())
        .map(|s| (s.workload, s.sink))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let panels = kinds
        .into_iter()
        .map(|(workload, sink)| Panel {
            title: tables::label(workload, sink),
            series: modes(rig)
                .into_iter()
                .map(|mode| Series {
                    name: mode.name().to_owned(),
                    points: services
                        .iter()
                        .filter_map(|&n| {
                            let rate = median_over(&rig.samples, (n, workload, sink, mode), |s| {
                                Some(s.rate())
                            })?;
                            Some((f64::from(n), rate / 1e3))
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
