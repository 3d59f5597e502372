//! `xlb-bench pairs`: two builds of the datapath compared, the way
//! `docs/bench/notes.md` measures a change. Each build is an `xlb-bench`
//! binary (the eBPF object is built into it); each pair runs `prog --method
//! b` once with each, at the hot scale and any `--services` scales, and the
//! order alternates from pair to pair (A then B, B then A): with the order
//! fixed, the second run of a pair measured 0.6–1.5% dearer in an A/A test.
//! Per row, the figure is the median over pairs of B's figure over A's in the
//! same pair: each build is judged against the other's run of the same
//! minute, not against runs from another phase of a shared machine.
//!
//! At the hot scale a row's figure is its × floor, as the hot targets are
//! judged; at the other scales it is its ns/packet, as the scale targets are
//! judged (`Samples::paired_over`): a row of a microsecond or two would
//! otherwise carry the floor's jumps of 18–36 ns from run to run.

mod json;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{ErrorKind, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Component, Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tracing::{info, warn};

use crate::{
    build_id::BuildId,
    prog::report::Target,
    report::inputs::{self, Prog},
};

/// `xlb-bench pairs --a BIN --b BIN [--pairs N] [--runs R] [--repeat R]
/// [--cases LIST] [--services LIST --flows F] [--keep DIR] [--json FILE]`.
#[derive(Debug, clap::Args)]
pub(crate) struct PairsArgs {
    /// The `xlb-bench` binary of build A, the one the change starts from.
    #[arg(long)]
    a: PathBuf,
    /// The `xlb-bench` binary of build B, the change.
    #[arg(long)]
    b: PathBuf,
    /// Pairs of runs (each pair runs both builds once, in alternating
    /// order), at most 200.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=200))]
    pairs: u32,
    /// `prog --runs` of every run, at most 1000.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// `prog --repeat` of every run.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// `prog --cases` of every run, comma-separated (the floor is always measured).
    #[arg(long, default_value = "conntrack-hit,udp,reply")]
    cases: String,
    /// `prog --services` of every run, comma-separated: the scales measured
    /// besides the hot one (one service, one flow), which `prog` always
    /// measures. The default measures the hot scale alone.
    #[arg(long, default_value = "1")]
    services: String,
    /// `prog --flows` of every run: the tracked flows of every `--services` scale.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    flows: u32,
    /// Keep every run's JSON in this directory (`a-1.json`, `b-1.json`, …),
    /// beside the copies of the two binaries the runs ran (`a.xlb-bench`,
    /// `b.xlb-bench`); it must hold no earlier run's JSON. Else they go to
    /// a temporary one, removed at the end.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Write the comparison to this file as JSON: each row's B over A in
    /// every pair and their median, each target as each build's runs judged
    /// it, and which builds A and B are (their binaries, and the commit and
    /// datapath their runs recorded).
    #[arg(long)]
    json: Option<PathBuf>,
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

/// A row of a `prog` run: its scale and its case (`Kind`, snake_case).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RowKey {
    services: u32,
    flows: u32,
    case: String,
}

impl RowKey {
    /// The scale the × floor targets are judged at (`ProgRow::is_hot`).
    fn is_hot(&self) -> bool {
        self.services == 1 && self.flows == 1
    }

    fn scale(&self) -> String {
        let plural = |n: u32, what: &str| {
            if n == 1 {
                format!("1 {what}")
            } else {
                format!("{n} {what}s")
            }
        };
        format!(
            "{}, {}",
            plural(self.services, "service"),
            plural(self.flows, "flow")
        )
    }
}

/// What one run measured: method B's × floor and ns/packet medians per row
/// (the floors' rows too), and each target as `prog` judged it.
#[derive(Debug, Default)]
struct Run {
    rows: BTreeMap<RowKey, (f64, f64)>,
    /// In `prog`'s order.
    targets: Vec<Target>,
    /// The build that measured it, as its JSON records it (none from a
    /// build older than the record).
    build: Option<BuildId>,
}

impl Run {
    fn of(prog: &Prog) -> Self {
        let rows = prog
            .rows
            .iter()
            .filter_map(|r| {
                let over = r.method_b_over_floor?;
                let ns = r.method_b_summary.as_ref()?.median;
                let key = RowKey {
                    services: r.services,
                    flows: r.scale_flows,
                    case: r.case.clone(),
                };
                Some((key, (over, ns)))
            })
            .collect();
        Self {
            rows,
            targets: prog.targets.clone(),
            build: prog.build.clone(),
        }
    }

    /// The row's figure: × floor at the hot scale, else ns/packet.
    fn figure(&self, key: &RowKey) -> Option<f64> {
        let &(over, ns) = self.rows.get(key)?;
        Some(if key.is_hot() { over } else { ns })
    }
}

/// One row compared over the pairs.
#[derive(Debug)]
struct Comparison {
    key: RowKey,
    pairs: usize,
    /// B's figure over A's in each pair that measured the row, in the order
    /// the pairs ran.
    ratios: Vec<f64>,
    /// Median over pairs of B's figure over A's.
    paired: f64,
    /// Pairs in which B's figure was below A's.
    b_cheaper: usize,
    /// Each build's figure, median over its runs.
    a: f64,
    b: f64,
}

impl Comparison {
    /// A figure of this row as the table prints it.
    fn show(&self, figure: f64) -> String {
        if self.key.is_hot() {
            format!("{figure:.2}×")
        } else {
            format!("{figure:.0} ns")
        }
    }
}

/// Every row both runs of at least one pair measured, the floors left out.
fn compare(pairs: &[(Run, Run)]) -> Vec<Comparison> {
    let mut by_row: BTreeMap<&RowKey, Vec<(f64, f64)>> = BTreeMap::new();
    for (a, b) in pairs {
        for key in a.rows.keys().filter(|k| k.case != "floor") {
            if let (Some(fa), Some(fb)) = (a.figure(key), b.figure(key))
                && fa > 0.0
            {
                by_row.entry(key).or_default().push((fa, fb));
            }
        }
    }
    by_row
        .into_iter()
        .filter_map(|(key, figures)| {
            let median =
                |f: fn(&(f64, f64)) -> f64| crate::stats::median(figures.iter().map(f).collect());
            Some(Comparison {
                key: key.clone(),
                pairs: figures.len(),
                ratios: figures.iter().map(|(a, b)| b / a).collect(),
                paired: median(|(a, b)| b / a)?,
                b_cheaper: figures.iter().filter(|(a, b)| b < a).count(),
                a: median(|(a, _)| *a)?,
                b: median(|(_, b)| *b)?,
            })
        })
        .collect()
}

/// A target as `prog` judged it, median over the runs of each build
/// (`None` where no run of that build judged it).
#[derive(Debug, PartialEq, serde::Serialize)]
struct TargetFigures {
    what: String,
    services: String,
    a: Option<f64>,
    b: Option<f64>,
}

/// Every target some run judged, in `prog`'s order.
fn targets(pairs: &[(Run, Run)]) -> Vec<TargetFigures> {
    let mut order: Vec<(&str, &str)> = Vec::new();
    for (a, b) in pairs {
        for t in a.targets.iter().chain(&b.targets) {
            let target = (t.what.as_str(), t.services.as_str());
            if !order.contains(&target) {
                order.push(target);
            }
        }
    }
    let median = |runs: Vec<&Run>, what: &str, services: &str| {
        crate::stats::median(
            runs.iter()
                .filter_map(|run| {
                    run.targets
                        .iter()
                        .find(|t| t.what == what && t.services == services)
                        .map(|t| t.measured)
                })
                .collect(),
        )
    };
    order
        .into_iter()
        .map(|(what, services)| TargetFigures {
            what: what.to_owned(),
            services: services.to_owned(),
            a: median(pairs.iter().map(|p| &p.0).collect(), what, services),
            b: median(pairs.iter().map(|p| &p.1).collect(), what, services),
        })
        .collect()
}

/// The hot floor's ns/packet, median over the runs of one build.
fn floor_ns<'a>(runs: impl Iterator<Item = &'a Run>) -> Option<f64> {
    let hot_floor = RowKey {
        services: 1,
        flows: 1,
        case: "floor".to_owned(),
    };
    crate::stats::median(
        runs.filter_map(|r| r.rows.get(&hot_floor).map(|f| f.1))
            .collect(),
    )
}

/// The table of `pairs`, whose rows `comparisons` compared (`compare`).
fn markdown(args: &PairsArgs, pairs: &[(Run, Run)], comparisons: &[Comparison]) -> String {
    let mut out = String::new();
    let floor = |pick: fn(&(Run, Run)) -> &Run| {
        floor_ns(pairs.iter().map(pick)).map_or_else(|| "—".to_owned(), |ns| format!("{ns:.1} ns"))
    };
    let build = |pick: fn(&(Run, Run)) -> &Run| {
        crate::build_id::shown(pairs.first().and_then(|p| pick(p).build.as_ref()))
    };
    let _ = writeln!(
        out,
        "## xlb-bench pairs: B over A\n\n\
         - A: `{}` ({})\n- B: `{}` ({})\n\
         - {} pairs of `prog --services {} --flows {} --method b --runs {} --repeat {}`, the \
         order alternating (A then B, B then A).\n\
         - Each row's figure: × floor at the hot scale (one service, one flow), ns/packet at \
         the others; B over A is the median over pairs of B's figure over A's in the same pair.\n\
         - Hot floor, median over runs: A {}, B {}.\n",
        args.a.display(),
        build(|p| &p.0),
        args.b.display(),
        build(|p| &p.1),
        pairs.len(),
        args.services,
        args.flows,
        args.runs,
        args.repeat,
        floor(|p| &p.0),
        floor(|p| &p.1),
    );
    let _ = writeln!(
        out,
        "| scale | case | pairs | B over A, median over pairs | pairs with B cheaper | A | B |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for c in comparisons {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} of {} | {} | {} |",
            c.key.scale(),
            c.key.case,
            c.pairs,
            c.paired,
            c.b_cheaper,
            c.pairs,
            c.show(c.a),
            c.show(c.b)
        );
    }
    let targets = targets(pairs);
    if !targets.is_empty() {
        let _ = writeln!(
            out,
            "\nThe targets as `prog` judged each run, median over each build's runs:\n\n\
             | target | services | A | B |\n|---|---|---|---|"
        );
        let show = |m: Option<f64>| m.map_or_else(|| "—".to_owned(), |m| format!("{m:.2}×"));
        for t in targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                t.what,
                t.services,
                show(t.a),
                show(t.b)
            );
        }
    }
    out
}

/// Each build's binary as the pairs run it: a copy in the runs' directory,
/// taken before the first pair, so that a build rebuilt in place meanwhile
/// changes nothing measured; and the copy's SHA-256, for `--json`.
#[derive(Debug)]
struct Binaries {
    a: PathBuf,
    b: PathBuf,
    a_sha256: String,
    b_sha256: String,
}

impl Binaries {
    /// Copies `--a` and `--b` into `dir` (`a.xlb-bench`, `b.xlb-bench`).
    fn copy(args: &PairsArgs, dir: &Path) -> anyhow::Result<Self> {
        let copy = |given: &Path, build: Build| -> anyhow::Result<(PathBuf, String)> {
            let to = dir.join(format!("{}.xlb-bench", build.name()));
            std::fs::copy(given, &to).with_context(|| {
                format!("copying {} to {} to run", given.display(), to.display())
            })?;
            let sha256 = crate::build_id::file_sha256(&to)
                .with_context(|| format!("reading {}", to.display()))?;
            Ok((to, sha256))
        };
        let (a, a_sha256) = copy(&args.a, Build::A)?;
        let (b, b_sha256) = copy(&args.b, Build::B)?;
        Ok(Self {
            a,
            b,
            a_sha256,
            b_sha256,
        })
    }

    fn path(&self, build: Build) -> &Path {
        match build {
            Build::A => &self.a,
            Build::B => &self.b,
        }
    }
}

/// Runs `bin prog` and reads its JSON back from `json`.
fn run_prog(args: &PairsArgs, bin: &Path, json: &Path) -> anyhow::Result<Run> {
    remove_stale(json)?;
    let (runs, repeat, flows) = (
        args.runs.to_string(),
        args.repeat.to_string(),
        args.flows.to_string(),
    );
    // Errors go to a file, not a pipe: nobody reads a pipe while `wait`
    // polls, and a child that wrote much would stall on it.
    let mut stderr = tempfile::tempfile().context("creating a file for the run's errors")?;
    let mut child = Command::new(runnable(bin))
        .args(["prog", "--services", &args.services, "--flows", &flows])
        .args(["--method", "b", "--runs", &runs, "--repeat", &repeat])
        .args(["--cases", &args.cases])
        .arg("--json")
        .arg(json)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr.try_clone().context("the run's error file")?)
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let status = wait(&mut child).with_context(|| format!("waiting for {}", bin.display()))?;
    crate::stop::check()?;
    if !status.success() {
        let mut text = String::new();
        stderr
            .seek(SeekFrom::Start(0))
            .and_then(|_| stderr.read_to_string(&mut text))
            .context("reading the run's errors")?;
        bail!("{} prog failed ({status}):\n{text}", bin.display());
    }
    anyhow::ensure!(
        json.is_file(),
        "{} prog succeeded but wrote no {}: is it an xlb-bench build with `prog --json`?",
        bin.display(),
        json.display()
    );
    let prog: Prog = inputs::load_prog(json)?;
    Ok(Run::of(&prog))
}

/// How often `wait` looks at the child and at the stop flag.
const WAIT_POLL: Duration = Duration::from_millis(50);

/// Waits for `child` (a `prog` run) to end. Once the run is asked to stop
/// (`stop`), the child is asked too, with SIGTERM, and waited for: it then
/// stops at its own next safe point and removes its bpffs. Not SIGINT: a
/// Ctrl-C reaches the child as well, and its handler, reset after one
/// signal, would let a second SIGINT end it before its clean-up.
fn wait(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let mut asked = false;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if !asked && crate::stop::requested().is_some() {
            let pid = Pid::from_raw(i32::try_from(child.id())?);
            // Our own child, by its id; it may have just ended (ESRCH).
            let _ = kill(pid, Signal::SIGTERM);
            asked = true;
        }
        std::thread::sleep(WAIT_POLL);
    }
}

/// `bin` as a program to start: a bare file name (`--a xlb-bench`) gets a
/// leading `./`, since a name without a `/` is looked up in PATH (execvp(3)),
/// which would run another file of that name, or none, instead of the one
/// `run` found in the current directory.
fn runnable(bin: &Path) -> PathBuf {
    let mut parts = bin.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) => Path::new(".").join(bin),
        _ => bin.to_owned(),
    }
}

/// Removes what an earlier run left at `json` (a `--keep` directory used
/// twice): read back after a build that wrote nothing, it would pass for that
/// build's figures.
fn remove_stale(json: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(json) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}, left by an earlier run", json.display()))
        }
        _ => Ok(()),
    }
}

/// Refuses a `--keep` directory that holds runs of an earlier `pairs`
/// (`a-N.json`, `b-N.json`): those past this run's count would stay beside
/// its own, and read as part of it.
fn check_no_earlier_runs(dir: &Path) -> anyhow::Result<()> {
    let earlier: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("--keep {}: reading it", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| {
            let run = name
                .strip_suffix(".json")
                .and_then(|n| n.strip_prefix("a-").or_else(|| n.strip_prefix("b-")));
            run.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    anyhow::ensure!(
        earlier.is_empty(),
        "--keep {} holds {} run(s) of an earlier `xlb-bench pairs` ({}…): give an empty or new \
         directory, or remove them",
        dir.display(),
        earlier.len(),
        earlier[0]
    );
    Ok(())
}

/// Refuses a value given twice in --cases or --services (`lists`). They
/// stay text, handed to each build's `prog` as they are (a build may have
/// cases another has not), so their values are compared as written.
fn check_lists(args: &PairsArgs) -> anyhow::Result<()> {
    let values = |list: &str| -> Vec<String> { list.split(',').map(str::to_owned).collect() };
    crate::lists::distinct("--cases", &values(&args.cases), String::clone)?;
    crate::lists::distinct("--services", &values(&args.services), String::clone)
}

/// The name every temporary directory of this process's runs starts with.
fn temporary_prefix() -> String {
    format!("xlb-bench-pairs-{}-", std::process::id())
}

/// What an interrupted run may leave (`stop`): the runs' JSON and the
/// builds' copies, in a temporary directory without `--keep`, and the bpffs of the `prog` run
/// under way should the same Ctrl-C end that run at once too (a SIGTERM
/// sent to this process alone leaves that run to stop and clean up by
/// itself: `wait`).
pub(crate) fn leftovers(args: &PairsArgs) -> crate::stop::Leftovers {
    let prog = "the bpffs of the `prog` run under way if the same Ctrl-C ends it too \
                (`xlb-bench rig sweep --orphans` removes it)";
    let at_once = match &args.keep {
        Some(keep) => format!(
            "leaving {prog}; the runs' JSON and the builds' copies stay in {}, as --keep asks",
            keep.display()
        ),
        None => {
            let runs = std::env::temp_dir().join(temporary_prefix());
            format!(
                "leaving the runs' JSON and the copies of the builds in {runs}* (`rm -r \
                 {runs}*` removes them) and {prog}",
                runs = runs.display()
            )
        }
    };
    crate::stop::Leftovers {
        at_once,
        after_stop: "the `prog` run under way was asked to stop and removed its own set-up; \
                     should it have failed to, `xlb-bench rig sweep --orphans` removes what it \
                     left"
            .to_owned(),
    }
}

pub(crate) fn run(args: &PairsArgs) -> anyhow::Result<()> {
    check_lists(args)?;
    for bin in [&args.a, &args.b] {
        anyhow::ensure!(bin.is_file(), "no xlb-bench binary at {}", bin.display());
    }
    if let Some(path) = &args.json {
        crate::output::check_file("--json", path)?;
    }
    let Some(dir) = &args.keep else {
        let temporary = tempfile::Builder::new()
            .prefix(&temporary_prefix())
            .tempdir()
            .context("creating a temporary directory for the runs")?;
        let result = measure(args, temporary.path());
        let path = temporary.path().to_owned();
        if let Err(e) = temporary.close() {
            warn!(path = %path.display(), error = %e, "could not remove the runs' directory: remove it by hand");
        }
        return result;
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("--keep {}: creating it", dir.display()))?;
    crate::output::check_dir("--keep", dir)?;
    check_no_earlier_runs(dir)?;
    measure(args, dir)
}

/// Runs the pairs, each run's JSON in `dir`, and writes the table (and
/// `--json`).
fn measure(args: &PairsArgs, dir: &Path) -> anyhow::Result<()> {
    let binaries = Binaries::copy(args, dir)?;
    let mut pairs: Vec<(Run, Run)> = Vec::new();
    for index in 0..args.pairs {
        crate::stop::check()?;
        let (mut a, mut b) = (Run::default(), Run::default());
        for build in order(index) {
            let run = match build {
                Build::A => &mut a,
                Build::B => &mut b,
            };
            let json = dir.join(format!("{}-{}.json", build.name(), index + 1));
            *run = run_prog(args, binaries.path(build), &json)?;
        }
        info!(pair = index + 1, of = args.pairs, "pair measured");
        pairs.push((a, b));
    }
    let comparisons = compare(&pairs);
    std::io::stdout()
        .lock()
        .write_all(markdown(args, &pairs, &comparisons).as_bytes())
        .context("writing the table")?;
    if let Some(path) = &args.json {
        json::write(path, args, &binaries, &pairs, &comparisons)?;
        info!(path = %path.display(), "comparison written");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keep_directory_with_an_earlier_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        std::fs::write(dir.path().join("a-json.json"), "{}").unwrap();
        assert!(check_no_earlier_runs(dir.path()).is_ok());
        std::fs::write(dir.path().join("b-2.json"), "{}").unwrap();
        let refused = check_no_earlier_runs(dir.path()).unwrap_err().to_string();
        assert!(
            refused.contains("holds 1 run(s) of an earlier `xlb-bench pairs` (b-2.json…)"),
            "{refused}"
        );
    }

    pub(super) fn parse(args: &[&str]) -> PairsArgs {
        use clap::Parser as _;
        let argv = ["xlb-bench", "pairs", "--a", "a", "--b", "b"]
            .iter()
            .chain(args);
        match crate::Cli::try_parse_from(argv).unwrap().command {
            crate::Command::Pairs(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_value_given_twice_in_a_list_is_refused() {
        let err = |args: &[&str]| check_lists(&parse(args)).unwrap_err().to_string();
        assert_eq!(
            err(&["--services", "1,100000,1"]),
            "--services 1,100000,1: 1 is given more than once; give each value once"
        );
        assert_eq!(
            err(&["--cases", "udp,udp"]),
            "--cases udp,udp: udp is given more than once; give each value once"
        );
        check_lists(&parse(&[])).unwrap();
        check_lists(&parse(&["--services", "1,100000"])).unwrap();
    }

    fn key(services: u32, flows: u32, case: &str) -> RowKey {
        RowKey {
            services,
            flows,
            case: case.to_owned(),
        }
    }

    /// A run of hot rows, each `over` × a floor of 20 ns.
    pub(super) fn hot(cases: &[(&str, f64)]) -> Run {
        Run {
            rows: cases
                .iter()
                .map(|&(case, over)| (key(1, 1, case), (over, over * 20.0)))
                .collect(),
            targets: Vec::new(),
            build: None,
        }
    }

    #[test]
    fn a_bare_file_name_runs_from_the_current_directory() {
        let run = |bin: &str| runnable(Path::new(bin));
        assert_eq!(run("xlb-bench"), Path::new("./xlb-bench"));
        assert_eq!(run("./xlb-bench"), Path::new("./xlb-bench"));
        assert_eq!(run("old/xlb-bench"), Path::new("old/xlb-bench"));
        assert_eq!(run("/usr/bin/xlb-bench"), Path::new("/usr/bin/xlb-bench"));
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
                hot(&[("floor", 1.0), ("conntrack_hit", a)]),
                hot(&[("floor", 1.0), ("conntrack_hit", b)]),
            )
        });
        let compared = compare(&pairs);
        assert_eq!(compared.len(), 1, "{compared:?}");
        let hit = &compared[0];
        assert_eq!(
            (hit.key.case.as_str(), hit.pairs, hit.b_cheaper),
            ("conntrack_hit", 4, 3)
        );
        assert!((hit.paired - 0.9).abs() < 1e-9, "{hit:?}");
        assert!((hit.a - 5.25).abs() < 1e-9, "{hit:?}");
        assert_eq!(hit.show(hit.a), "5.25×");
    }

    #[test]
    fn a_case_one_build_did_not_measure_is_compared_only_where_both_did() {
        let pairs = [
            (hot(&[("udp", 5.0), ("reply", 6.0)]), hot(&[("udp", 5.0)])),
            (
                hot(&[("udp", 5.0), ("reply", 6.0)]),
                hot(&[("udp", 4.0), ("reply", 3.0)]),
            ),
        ];
        let compared = compare(&pairs);
        let reply = compared
            .iter()
            .find(|c| c.key.case == "reply")
            .expect("reply");
        assert_eq!((reply.pairs, reply.paired), (1, 0.5));
        let udp = compared.iter().find(|c| c.key.case == "udp").expect("udp");
        assert_eq!((udp.pairs, udp.paired), (2, 0.9));
    }

    #[test]
    fn a_scale_row_is_compared_by_its_ns_not_its_floor() {
        // Equal ns in both builds, but B's floor measured twice as slow:
        // the × floor figures differ by half, the ns not at all.
        let row = key(100_000, 100_000, "new_tcp_flow");
        let run = |over: f64| Run {
            rows: [(row.clone(), (over, 2_000.0))].into(),
            targets: Vec::new(),
            build: None,
        };
        let compared = compare(&[(run(80.0), run(40.0))]);
        assert_eq!(compared.len(), 1, "{compared:?}");
        let c = &compared[0];
        assert_eq!((c.paired, c.b_cheaper), (1.0, 0));
        assert_eq!(c.show(c.a), "2000 ns");
        assert_eq!(c.key.scale(), "100000 services, 100000 flows");
    }

    pub(super) fn build(commit: &str) -> BuildId {
        BuildId {
            commit: commit.repeat(40 / commit.len()),
            dirty: Some(false),
            datapath_sha256: commit.repeat(64 / commit.len()),
        }
    }

    #[test]
    fn each_build_runs_from_a_copy_a_rebuild_in_place_does_not_reach() {
        let given = tempfile::tempdir().unwrap();
        let runs = tempfile::tempdir().unwrap();
        let (a, b) = (given.path().join("a"), given.path().join("b"));
        std::fs::write(&a, b"build a").unwrap();
        std::fs::write(&b, b"build b").unwrap();
        let (a_arg, b_arg) = (a.to_str().unwrap(), b.to_str().unwrap());
        let argv = ["xlb-bench", "pairs", "--a", a_arg, "--b", b_arg];
        let args = match <crate::Cli as clap::Parser>::try_parse_from(argv)
            .unwrap()
            .command
        {
            crate::Command::Pairs(args) => args,
            other => panic!("parsed as {other:?}"),
        };
        let binaries = Binaries::copy(&args, runs.path()).unwrap();
        assert_eq!(binaries.path(Build::A), runs.path().join("a.xlb-bench"));
        assert_eq!(binaries.a_sha256, crate::build_id::file_sha256(&a).unwrap());
        // Rebuilt in place during the pairs: the runs still use what was
        // copied, and the JSON names that.
        std::fs::write(&b, b"build c").unwrap();
        assert_eq!(std::fs::read(binaries.path(Build::B)).unwrap(), b"build b");
        assert_ne!(binaries.b_sha256, crate::build_id::file_sha256(&b).unwrap());
        // A binary that is not there is said so.
        std::fs::remove_file(&a).unwrap();
        let e = format!("{:#}", Binaries::copy(&args, runs.path()).unwrap_err());
        assert!(e.starts_with(&format!("copying {a_arg} to ")), "{e}");
    }

    #[test]
    fn targets_are_the_median_of_each_builds_runs_in_progs_order() {
        let run = |measured: &[f64]| Run {
            rows: BTreeMap::new(),
            targets: ["hit", "scale"]
                .iter()
                .zip(measured)
                .map(|(what, &measured)| Target {
                    what: (*what).to_owned(),
                    services: "1".to_owned(),
                    measured,
                    limit: 5.4,
                    aim: None,
                    pass: false,
                })
                .collect(),
            build: None,
        };
        let pairs = [
            (run(&[5.0, 2.0]), run(&[4.0])),
            (run(&[6.0, 1.8]), run(&[5.0])),
            (run(&[7.0, 1.9]), run(&[6.0])),
        ];
        let figures = |what: &str, a, b| TargetFigures {
            what: what.to_owned(),
            services: "1".to_owned(),
            a,
            b,
        };
        assert_eq!(
            targets(&pairs),
            [
                figures("hit", Some(6.0), Some(5.0)),
                figures("scale", Some(1.9), None),
            ]
        );
    }
}
