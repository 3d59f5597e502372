//! The JSON documents `prog`, `sync` and `rig` write, as far as the report
//! (and `pairs`, of `prog`'s) reads them. Only the fields read are declared
//! (serde skips the others), so that a field added to a writer does not break
//! the report; modes, workloads and cases stay strings, so that a new one
//! shows up under its own name instead of failing the whole report.

use std::{io::ErrorKind, path::Path};

use anyhow::Context as _;
use serde::{Deserialize, de::DeserializeOwned};

/// `xlb-bench prog --json` (`prog::report::json`).
#[derive(Debug, Deserialize)]
pub(crate) struct Prog {
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
    anyhow::ensure!(
        (0.0..=PROG_FIGURE_MAX).contains(&value),
        "{value:?} is no figure `xlb-bench prog` measures: its ns/packet and ratios run \
         from 0 to {PROG_FIGURE_MAX} (the kernel times runs in whole ns, in a u32)"
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

/// `load` of a `prog` document, its figures checked (`Prog::check`).
pub(crate) fn load_prog(path: &Path) -> anyhow::Result<Option<Prog>> {
    let prog: Option<Prog> = load(path)?;
    if let Some(prog) = &prog {
        prog.check()
            .with_context(|| format!("checking {}", path.display()))?;
    }
    Ok(prog)
}

/// Reads `path`, or `None` if there is no such file: a benchmark that was not
/// run this time leaves its section saying so rather than failing the report.
/// A file that is there but does not parse is an error, which names the
/// field (a figure absent, or null where a run writes a number).
pub(crate) fn load<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "no such file: its section says not measured");
            return Ok(None);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut json = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut json)
        .map(Some)
        .with_context(|| format!("parsing {}", path.display()))
}
