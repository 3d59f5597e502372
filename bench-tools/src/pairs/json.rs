//! `pairs --json`: the comparison as one JSON document, every pair's B over
//! A per row beside their median, and which builds A and B are.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use super::{Binaries, Comparison, PairsArgs, Run, TargetFigures, floor_ns, targets};
use crate::build_id::BuildId;

/// What `--json` writes.
#[derive(Debug, Serialize)]
struct Document<'a> {
    tool: &'static str,
    /// The `xlb-bench` that ran the pairs (A, B or neither).
    build: BuildId,
    settings: Settings<'a>,
    a: Side<'a>,
    b: Side<'a>,
    rows: Vec<JsonRow<'a>>,
    /// Every target some run judged, in `prog`'s order.
    targets: Vec<TargetFigures>,
}

/// What the pairs were: how many were measured, and what every run of
/// `prog` was given.
#[derive(Debug, Serialize)]
struct Settings<'a> {
    pairs: usize,
    runs: u32,
    repeat: u32,
    cases: &'a str,
    services: &'a str,
    flows: u32,
}

/// One of the two builds compared.
#[derive(Debug, Serialize)]
struct Side<'a> {
    /// The binary given as `--a` or `--b`.
    binary: &'a Path,
    /// The SHA-256 of the copy of it every run ran (`Binaries::copy`).
    binary_sha256: &'a str,
    /// The build its first run recorded; null for a build older than the
    /// record.
    build: Option<&'a BuildId>,
    /// The hot floor's ns/packet, median over its runs.
    hot_floor_ns: Option<f64>,
}

/// What a row's figures are.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum Figure {
    /// × floor: the hot scale's, as its targets are judged.
    OverFloor,
    /// ns/packet: the other scales', as their targets are judged.
    NsPerPacket,
}

/// One row compared over the pairs.
#[derive(Debug, Serialize)]
struct JsonRow<'a> {
    services: u32,
    scale_flows: u32,
    /// `Kind`, snake_case, as `prog` writes it.
    case: &'a str,
    figure: Figure,
    /// Pairs in which both builds measured the row.
    pairs: usize,
    /// B's figure over A's in each of those pairs, in the order they ran.
    b_over_a: &'a [f64],
    b_over_a_median: f64,
    /// Pairs in which B's figure was below A's.
    b_cheaper: usize,
    /// Each build's figure, median over its runs.
    a_median: f64,
    b_median: f64,
}

/// The document of `pairs` of `binaries`, whose rows `comparisons`
/// compared (`compare`).
fn document<'a>(
    args: &'a PairsArgs,
    binaries: &'a Binaries,
    pairs: &'a [(Run, Run)],
    comparisons: &'a [Comparison],
) -> Document<'a> {
    let side = |binary: &'a PathBuf, sha256: &'a str, pick: fn(&(Run, Run)) -> &Run| Side {
        binary: binary.as_path(),
        binary_sha256: sha256,
        build: pairs.first().and_then(|pair| pick(pair).build.as_ref()),
        hot_floor_ns: floor_ns(pairs.iter().map(pick)),
    };
    Document {
        tool: "xlb-bench pairs",
        build: BuildId::of_this_binary(),
        settings: Settings {
            pairs: pairs.len(),
            runs: args.runs,
            repeat: args.repeat,
            cases: &args.cases,
            services: &args.services,
            flows: args.flows,
        },
        a: side(&args.a, &binaries.a_sha256, |p| &p.0),
        b: side(&args.b, &binaries.b_sha256, |p| &p.1),
        rows: comparisons
            .iter()
            .map(|c| JsonRow {
                services: c.key.services,
                scale_flows: c.key.flows,
                case: &c.key.case,
                figure: if c.key.is_hot() {
                    Figure::OverFloor
                } else {
                    Figure::NsPerPacket
                },
                pairs: c.pairs,
                b_over_a: &c.ratios,
                b_over_a_median: c.paired,
                b_cheaper: c.b_cheaper,
                a_median: c.a,
                b_median: c.b,
            })
            .collect(),
        targets: targets(pairs),
    }
}

/// Writes the comparison to `path` as one JSON document.
pub(super) fn write(
    path: &Path,
    args: &PairsArgs,
    binaries: &Binaries,
    pairs: &[(Run, Run)],
    comparisons: &[Comparison],
) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(&document(args, binaries, pairs, comparisons))?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairs::{
        compare, markdown,
        tests::{build, hot, parse},
    };

    #[test]
    fn the_json_holds_each_pairs_ratio_and_which_builds_were_compared() {
        let args = parse(&["--pairs", "2", "--services", "1,1000", "--flows", "1000"]);
        // A: a build that records its identity; B: one older than the record.
        let with_build = |mut run: Run, commit| {
            run.build = Some(build(commit));
            run
        };
        let pairs = [(5.0, 4.5), (6.0, 6.6)].map(|(a, b)| {
            (
                with_build(hot(&[("floor", 1.0), ("conntrack_hit", a)]), "a"),
                hot(&[("floor", 1.0), ("conntrack_hit", b)]),
            )
        });
        let comparisons = compare(&pairs);
        let binaries = Binaries {
            a: "a.xlb-bench".into(),
            b: "b.xlb-bench".into(),
            a_sha256: "1".repeat(64),
            b_sha256: "2".repeat(64),
        };
        let document =
            serde_json::to_value(document(&args, &binaries, &pairs, &comparisons)).unwrap();
        assert_eq!(document["tool"], "xlb-bench pairs");
        assert_eq!(
            document["build"],
            serde_json::to_value(BuildId::of_this_binary()).unwrap()
        );
        assert_eq!(document["settings"]["pairs"], 2);
        assert_eq!(document["settings"]["services"], "1,1000");
        assert_eq!(document["a"]["binary"], "a");
        assert_eq!(document["a"]["binary_sha256"], "1".repeat(64));
        assert_eq!(document["b"]["binary_sha256"], "2".repeat(64));
        assert_eq!(document["a"]["build"]["commit"], "a".repeat(40));
        assert_eq!(document["a"]["hot_floor_ns"], 20.0);
        assert_eq!(document["b"]["binary"], "b");
        assert_eq!(document["b"]["build"], serde_json::Value::Null);
        let rows = document["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "the floor is left out: {rows:?}");
        let hit = &rows[0];
        assert_eq!(
            (
                &hit["case"],
                &hit["figure"],
                &hit["pairs"],
                &hit["b_cheaper"]
            ),
            (
                &serde_json::json!("conntrack_hit"),
                &serde_json::json!("over_floor"),
                &serde_json::json!(2),
                &serde_json::json!(1)
            )
        );
        let ratios: Vec<f64> = serde_json::from_value(hit["b_over_a"].clone()).unwrap();
        assert_eq!(ratios.len(), 2);
        assert!((ratios[0] - 0.9).abs() < 1e-9 && (ratios[1] - 1.1).abs() < 1e-9);
        assert!((hit["b_over_a_median"].as_f64().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(hit["a_median"], 5.5);
        // The table names the builds too.
        let table = markdown(&args, &pairs, &comparisons);
        assert!(
            table.contains("- A: `a` (commit aaaaaaaaaaaa)\n- B: `b` (build not recorded)\n"),
            "{table}"
        );
    }
}
