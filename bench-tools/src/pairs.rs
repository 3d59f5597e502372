//! `xlb-bench pairs`: two builds of the datapath compared at the hot scale,
//! the way `docs/bench/notes.md` measures a change. Each build is an
//! `xlb-bench` binary (the eBPF object is built into it); each pair runs
//! `prog --services 1 --flows 1 --method b` once with each, and the order
//! alternates from pair to pair (A then B, B then A): with the order fixed,
//! the second run of a pair measured 0.6–1.5% dearer in an A/A test. Per
//! case, the figure is the median over pairs of B's × floor over A's in the
//! same pair: each build is judged against the other's run of the same
//! minute, not against runs from another phase of a shared machine.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use tracing::info;

use crate::report::inputs::{self, Prog};

/// `xlb-bench pairs --a BIN --b BIN [--pairs N] [--runs R] [--repeat R]
/// [--cases LIST] [--keep DIR]`.
#[derive(Debug, clap::Args)]
pub(crate) struct PairsArgs {
    /// The `xlb-bench` binary of build A, the one the change starts from.
    #[arg(long)]
    a: PathBuf,
    /// The `xlb-bench` binary of build B, the change.
    #[arg(long)]
    b: PathBuf,
    /// Pairs of runs (each pair runs both builds once, in alternating order).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=200))]
    pairs: u32,
    /// `prog --runs` of every run.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// `prog --repeat` of every run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// `prog --cases` of every run, comma-separated (the floor is always measured).
    #[arg(long, default_value = "conntrack-hit,udp,reply")]
    cases: String,
    /// Keep every run's JSON in this directory (`a-1.json`, `b-1.json`, …);
    /// else they go to a temporary one, removed at the end.
    #[arg(long)]
    keep: Option<PathBuf>,
}

/// Which build a run measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    A,
    B,
}

impl Build {
    fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// The builds of pair `index` (from 0), in the order they run.
fn order(index: u32) -> [Build; 2] {
    if index.is_multiple_of(2) {
        [Build::A, Build::B]
    } else {
        [Build::B, Build::A]
    }
}

/// One run's hot-scale figures by case (`Kind`, snake_case): method B's
/// × floor and ns/packet medians; the floor's row is there too (× floor 1).
type HotFigures = BTreeMap<String, (f64, f64)>;

fn hot_figures(prog: &Prog) -> HotFigures {
    prog.rows
        .iter()
        .filter(|r| r.is_hot())
        .filter_map(|r| {
            let over = r.method_b_over_floor?;
            let ns = r.method_b_summary.as_ref()?.median;
            Some((r.case.clone(), (over, ns)))
        })
        .collect()
}

/// One case compared over the pairs.
#[derive(Debug)]
struct Comparison {
    case: String,
    pairs: usize,
    /// Median over pairs of B's × floor over A's.
    paired: f64,
    /// Pairs in which B's × floor was below A's.
    b_cheaper: usize,
    a_over_floor: f64,
    b_over_floor: f64,
}

/// Every case both runs of at least one pair measured, the floor left out
/// (its × floor is 1 by definition).
fn compare(pairs: &[(HotFigures, HotFigures)]) -> Vec<Comparison> {
    let mut by_case: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (a, b) in pairs {
        for (case, &(a_over, _)) in a {
            if let Some(&(b_over, _)) = b.get(case)
                && case != "floor"
                && a_over > 0.0
            {
                by_case.entry(case).or_default().push((a_over, b_over));
            }
        }
    }
    by_case
        .into_iter()
        .filter_map(|(case, figures)| {
            let median =
                |f: fn(&(f64, f64)) -> f64| crate::stats::median(figures.iter().map(f).collect());
            Some(Comparison {
                case: case.to_owned(),
                pairs: figures.len(),
                paired: median(|(a, b)| b / a)?,
                b_cheaper: figures.iter().filter(|(a, b)| b < a).count(),
                a_over_floor: median(|(a, _)| *a)?,
                b_over_floor: median(|(_, b)| *b)?,
            })
        })
        .collect()
}

/// The floor's ns/packet, median over the runs of one build.
fn floor_ns<'a>(runs: impl Iterator<Item = &'a HotFigures>) -> Option<f64> {
    crate::stats::median(runs.filter_map(|r| r.get("floor").map(|f| f.1)).collect())
}

fn markdown(args: &PairsArgs, pairs: &[(HotFigures, HotFigures)]) -> String {
    let mut out = String::new();
    let floor = |pick: fn(&(HotFigures, HotFigures)) -> &HotFigures| {
        floor_ns(pairs.iter().map(pick)).map_or_else(|| "—".to_owned(), |ns| format!("{ns:.1} ns"))
    };
    let _ = writeln!(
        out,
        "## xlb-bench pairs: B over A at the hot scale\n\n\
         - A: `{}`\n- B: `{}`\n\
         - {} pairs of `prog --services 1 --flows 1 --method b --runs {} --repeat {}`, the order \
         alternating (A then B, B then A).\n\
         - Floor, median over runs: A {}, B {}.\n",
        args.a.display(),
        args.b.display(),
        pairs.len(),
        args.runs,
        args.repeat,
        floor(|p| &p.0),
        floor(|p| &p.1),
    );
    let _ = writeln!(
        out,
        "| case | pairs | B over A, median over pairs | pairs with B cheaper | A × floor | B × floor |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for c in compare(pairs) {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {} of {} | {:.2}× | {:.2}× |",
            c.case, c.pairs, c.paired, c.b_cheaper, c.pairs, c.a_over_floor, c.b_over_floor
        );
    }
    out
}

/// Runs `bin prog` at the hot scale and reads its JSON back from `json`.
fn run_prog(args: &PairsArgs, bin: &Path, json: &Path) -> anyhow::Result<HotFigures> {
    let (runs, repeat) = (args.runs.to_string(), args.repeat.to_string());
    let out = Command::new(bin)
        .args(["prog", "--services", "1", "--flows", "1", "--method", "b"])
        .args(["--runs", &runs, "--repeat", &repeat, "--cases", &args.cases])
        .arg("--json")
        .arg(json)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} prog failed ({}):\n{}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let prog: Prog = inputs::load(json)?
        .with_context(|| format!("{} prog wrote no {}", bin.display(), json.display()))?;
    Ok(hot_figures(&prog))
}

pub(crate) fn run(args: &PairsArgs) -> anyhow::Result<()> {
    for bin in [&args.a, &args.b] {
        anyhow::ensure!(bin.is_file(), "no xlb-bench binary at {}", bin.display());
    }
    let temporary;
    let dir = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.as_path()
        }
        None => {
            temporary = tempfile::tempdir().context("creating a temporary directory")?;
            temporary.path()
        }
    };
    let mut pairs = Vec::new();
    for index in 0..args.pairs {
        let (mut a, mut b) = (HotFigures::new(), HotFigures::new());
        for build in order(index) {
            let (bin, figures) = match build {
                Build::A => (&args.a, &mut a),
                Build::B => (&args.b, &mut b),
            };
            let json = dir.join(format!("{}-{}.json", build.name(), index + 1));
            *figures = run_prog(args, bin, &json)?;
        }
        info!(pair = index + 1, of = args.pairs, "pair measured");
        pairs.push((a, b));
    }
    std::io::stdout()
        .lock()
        .write_all(markdown(args, &pairs).as_bytes())
        .context("writing the table")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(cases: &[(&str, f64)]) -> HotFigures {
        cases
            .iter()
            .map(|&(case, over)| (case.to_owned(), (over, over * 20.0)))
            .collect()
    }

    #[test]
    fn the_order_alternates_from_pair_to_pair() {
        assert_eq!(order(0), [Build::A, Build::B]);
        assert_eq!(order(1), [Build::B, Build::A]);
        assert_eq!(order(2), [Build::A, Build::B]);
    }

    #[test]
    fn each_case_is_b_over_a_paired_and_the_floor_is_left_out() {
        // B is 10% cheaper in three pairs of four and 10% dearer in one; the
        // pairs differ by phase (A itself 5× to 6×), which pairing cancels.
        let pairs = [(5.0, 4.5), (6.0, 5.4), (5.5, 6.05), (5.0, 4.5)].map(|(a, b)| {
            (
                figures(&[("floor", 1.0), ("conntrack_hit", a)]),
                figures(&[("floor", 1.0), ("conntrack_hit", b)]),
            )
        });
        let compared = compare(&pairs);
        assert_eq!(compared.len(), 1, "{compared:?}");
        let hit = &compared[0];
        assert_eq!(
            (hit.case.as_str(), hit.pairs, hit.b_cheaper),
            ("conntrack_hit", 4, 3)
        );
        assert!((hit.paired - 0.9).abs() < 1e-9, "{hit:?}");
        assert!((hit.a_over_floor - 5.25).abs() < 1e-9, "{hit:?}");
    }

    #[test]
    fn a_case_one_build_did_not_measure_is_compared_only_where_both_did() {
        let pairs = [
            (
                figures(&[("udp", 5.0), ("reply", 6.0)]),
                figures(&[("udp", 5.0)]),
            ),
            (
                figures(&[("udp", 5.0), ("reply", 6.0)]),
                figures(&[("udp", 4.0), ("reply", 3.0)]),
            ),
        ];
        let compared = compare(&pairs);
        let reply = compared.iter().find(|c| c.case == "reply").expect("reply");
        assert_eq!((reply.pairs, reply.paired), (1, 0.5));
        let udp = compared.iter().find(|c| c.case == "udp").expect("udp");
        assert_eq!((udp.pairs, udp.paired), (2, 0.9));
    }
}
