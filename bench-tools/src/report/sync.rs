//! The control-plane section: `xlb-bench sync`'s full sync and single-change
//! latency, one document per number of services, beside what loading and
//! changing kube-proxy's rulesets for the same services cost.

use std::fmt::Write as _;

use super::{
    inputs::{RulesetCost, Sync},
    markdown,
    plots::{Chart, Panel, Series, YScale},
};

fn full_load(cost: &RulesetCost) -> String {
    if cost.full_load_timed_out {
        format!("did not finish in {:.0} s", cost.full_load_seconds)
    } else {
        format!("{:.3} s", cost.full_load_seconds)
    }
}

fn change(cost: &RulesetCost) -> String {
    if cost.changes == 0 {
        "—".to_owned()
    } else {
        format!(
            "{:.3} / {:.3} ms ({} changes)",
            cost.change_p50_ms, cost.change_p99_ms, cost.changes
        )
    }
}

/// `syncs` in the order the report shows them: by services, then backends.
pub(super) fn sorted(mut syncs: Vec<Sync>) -> Vec<Sync> {
    syncs.sort_by_key(|s| (s.services, s.backends_per_service));
    syncs
}

pub(super) fn section(out: &mut String, syncs: &[Sync], plot: Option<&str>) -> anyhow::Result<()> {
    writeln!(out, "## Control plane: sync and change latency\n")?;
    if syncs.is_empty() {
        return markdown::not_measured(
            out,
            "target/release/xlb-bench sync --services N --json target/xlb-bench-sync-N.json",
            "--sync FILE",
            "it loads the datapath and kube-proxy's rulesets",
        );
    }
    writeln!(
        out,
        "`xlb-bench sync`: a full sync programs N services from one file into a freshly \
         loaded datapath; a change is one backend of one service leaving or coming back, \
         timed from the new model to the maps holding it (p50 / p99 over the changes; with \
         `--flows`, beside that many tracked flows, set up before the changes). \
         kube-proxy: its nftables ruleset loaded with `nft -f`, its iptables ruleset with \
         `iptables-restore`, each into an empty network namespace, then single changes the way \
         its partial sync applies them; only the tool's process time counts.\n"
    )?;
    writeln!(
        out,
        "| services | backends each | xlb full sync | xlb change p50 / p99 | kube-proxy nftables full load | kube-proxy iptables full load |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for s in syncs {
        let (nft, ipt) = s.baselines.as_ref().map_or_else(
            || ("not measured".to_owned(), "not measured".to_owned()),
            |b| (full_load(&b.nftables), full_load(&b.iptables)),
        );
        let flows = match s.tracked_flows {
            0 => String::new(),
            n => format!(", {n} tracked flows"),
        };
        writeln!(
            out,
            "| {} | {} | {:.3} s | {:.3} / {:.3} ms ({} changes{flows}) | {nft} | {ipt} |",
            s.services,
            s.backends_per_service,
            s.full_sync_seconds,
            s.change_p50_ms,
            s.change_p99_ms,
            s.changes
        )?;
    }
    let baselines: Vec<_> = syncs
        .iter()
        .filter_map(|s| Some((s, s.baselines.as_ref()?)))
        .collect();
    if !baselines.is_empty() {
        writeln!(out, "\nkube-proxy single backend change, p50 / p99:\n")?;
        writeln!(out, "| services | nftables | iptables |")?;
        writeln!(out, "|---|---|---|")?;
        for (s, b) in &baselines {
            writeln!(
                out,
                "| {} | {} | {} |",
                s.services,
                change(&b.nftables),
                change(&b.iptables)
            )?;
        }
        let versions = distinct_versions(&baselines);
        writeln!(out, "\nTools: {versions}.")?;
    }
    if let Some(plot) = plot {
        writeln!(
            out,
            "\n![single-change latency p99 against the number of services]({plot})"
        )?;
    }
    writeln!(out)?;
    Ok(())
}

fn distinct_versions(baselines: &[(&Sync, &super::inputs::SyncBaselines)]) -> String {
    let mut versions: Vec<&str> = Vec::new();
    for (_, b) in baselines {
        for v in [b.nft_version.as_str(), b.iptables_version.as_str()] {
            if !versions.contains(&v) {
                versions.push(v);
            }
        }
    }
    versions
        .iter()
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Single-change latency p99 against the number of services: xlb, and
/// kube-proxy's rulesets where they were measured.
pub(super) fn chart(syncs: &[Sync]) -> Option<Chart> {
    let baseline = |name: &str, cost: fn(&Sync) -> Option<&RulesetCost>| Series {
        name: name.to_owned(),
        points: syncs
            .iter()
            .filter_map(|s| {
                let c = cost(s).filter(|c| c.changes > 0)?;
                Some((f64::from(s.services), c.change_p99_ms))
            })
            .collect(),
    };
    let series = vec![
        Series {
            name: "xlb".to_owned(),
            points: syncs
                .iter()
                .map(|s| (f64::from(s.services), s.change_p99_ms))
                .collect(),
        },
        baseline("kube-proxy nftables", |s| {
            s.baselines.as_ref().map(|b| &b.nftables)
        }),
        baseline("kube-proxy iptables", |s| {
            s.baselines.as_ref().map(|b| &b.iptables)
        }),
    ];
    Chart {
        x_label: "services".to_owned(),
        y_label: "ms".to_owned(),
        y_scale: YScale::Log,
        panels: vec![Panel {
            title: "single backend change, p99".to_owned(),
            series,
        }],
    }
    .non_empty()
}
