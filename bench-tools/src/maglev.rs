//! `xlb-bench maglev`: build a Maglev table and report its build time, balance, and the
//! disruption of removing and adding one backend, as a Markdown table and (with `--json`) as
//! JSON that `xlb-bench report` reads back.
use std::{
    fmt::Write as _,
    io::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use consistent_hash::{
    Backend, Balance, Diff, Disruption, SizingPolicy, Table, TableSize, primes::TABLE_SIZES,
};
use serde::{Deserialize, Serialize};

/// `xlb-bench maglev --size M --backends N [--weights w1,w2,...] [--seed S]`.
#[derive(Debug, clap::Args)]
pub(crate) struct MaglevArgs {
    /// Table size M, a prime of at most 16777213 (default: the sizing
    /// policy's size for N, the smallest listed prime above 100·N; the
    /// datapath takes at most 131071, the largest listed size, and larger
    /// sizes are for comparing builds with the Maglev paper's M = 655373).
    #[arg(long, value_parser = table_size)]
    size: Option<u32>,
    /// Number of backends N, at most 131071 (the largest listed size) and
    /// at most --size (a table needs a slot per backend); their keys are
    /// 198.18.2.0:8080/TCP and up.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BACKENDS)))]
    backends: u32,
    /// One weight per backend, comma-separated (default: all 1).
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<u32>>,
    /// Seed of the offset/skip hashes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Builds to time, at most 1000; the median is reported.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..=MAX_RUNS))]
    runs: u32,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one `xlb-bench maglev` run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MaglevResult {
    /// Table size M.
    pub(crate) size: u32,
    /// Backends N, and how many have a positive weight.
    pub(crate) backends: u32,
    pub(crate) active: usize,
    pub(crate) seed: u64,
    /// Build time over `runs` builds, in ms.
    pub(crate) runs: u32,
    pub(crate) build_ms_median: f64,
    pub(crate) build_ms_min: f64,
    pub(crate) build_ms_max: f64,
    /// Slots of the emptiest and the fullest backend.
    pub(crate) slots_min: u32,
    pub(crate) slots_max: u32,
    /// The largest distance from a backend's ideal share, in % of that share.
    pub(crate) max_deviation_pct: f64,
    /// Removing one backend, then adding one (either may be skipped).
    pub(crate) changes: Vec<Change>,
    /// The build that measured it (`build_id`); absent from a file written
    /// before builds were recorded.
    #[serde(default)]
    pub(crate) build: Option<crate::build_id::BuildId>,
}

/// The disruption of one change to the backend set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Change {
    pub(crate) what: String,
    /// Slots whose backend changed, in %; the least possible beside it.
    pub(crate) moved_pct: f64,
    pub(crate) ideal_pct: f64,
    /// Slots that moved between backends the change did not touch, in %.
    pub(crate) collateral_pct: f64,
    /// Slots a patch in place writes.
    pub(crate) slots_written: usize,
}

/// The largest `--size`: the largest prime below 2^24, a table of 64 MiB.
/// Past the largest table the agent builds and the datapath takes (the
/// sizing policy's last, `LARGEST_LISTED`), so that a build can be timed at
/// the Maglev paper's M = 655 373 (DESIGN.md quotes it). `TableSize` goes up
/// to 2^31 − 1, a table of 8 GiB, allocated before anything could refuse it.
const MAX_SIZE: u32 = 16_777_213;

/// The largest size of the sizing policy's list (DESIGN.md, State): the
/// largest table the agent builds and the datapath takes.
const LARGEST_LISTED: u32 = TABLE_SIZES[TABLE_SIZES.len() - 1];
const _: () = assert!(LARGEST_LISTED == xdp_lb::MAX_TABLE_SIZE);

/// The most backends a run takes: as many as the largest listed table holds,
/// since a table holds each backend of positive weight in one slot at least
/// (`Table::build` refuses more); with a smaller `--size`, that size.
/// Checked before the backends and their keys are built: beyond it a run
/// would grow to gigabytes before the table size refused it.
const MAX_BACKENDS: u32 = LARGEST_LISTED;

/// The most builds `--runs` times: their durations are kept (and the vector
/// for them allocated up front), and a thousand give a median as steady as
/// any.
const MAX_RUNS: i64 = 1000;

/// `--size`: a prime up to `MAX_SIZE`, refused when the command line is
/// parsed.
fn table_size(text: &str) -> Result<u32, String> {
    let size = text.parse::<u32>().map_err(|e| e.to_string())?;
    if !(2..=MAX_SIZE).contains(&size) {
        return Err(format!(
            "table size {size} is out of range: give a prime from 2 to {MAX_SIZE} (the datapath \
             takes at most {LARGEST_LISTED})"
        ));
    }
    TableSize::new(size)
        .map(TableSize::get)
        .map_err(|e| e.to_string())
}

/// The key of the `i`-th backend: `198.18.2.0:8080/TCP` and up (RFC 2544 range), as the
/// consistent-hash benchmarks name them.
fn backend_key(i: u32) -> String {
    format!("{}:8080/TCP", std::net::Ipv4Addr::from(0xc612_0200 + i))
}

pub(crate) fn run(args: &MaglevArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        crate::output::check_file("--json", path)?;
    }
    let result = measure(args)?;
    std::io::stdout()
        .lock()
        .write_all(markdown(&result).as_bytes())?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn measure(args: &MaglevArgs) -> anyhow::Result<MaglevResult> {
    anyhow::ensure!(args.backends > 0, "--backends must be at least 1");
    anyhow::ensure!(
        args.backends <= MAX_BACKENDS,
        "--backends {} is more than {MAX_BACKENDS}, the most the datapath's largest table \
         holds (one slot each at least)",
        args.backends,
    );
    if let Some(size) = args.size {
        anyhow::ensure!(
            args.backends <= size,
            "--backends {} is more than a table of {size} slots holds (one slot each at least)",
            args.backends,
        );
    }
    let weights = match &args.weights {
        Some(w) => {
            anyhow::ensure!(
                w.len() == args.backends as usize,
                "--weights has {} values but --backends is {}: give one weight per backend",
                w.len(),
                args.backends
            );
            w.clone()
        }
        None => vec![1; args.backends as usize],
    };
    let backends: Vec<Backend> = (0..args.backends)
        .zip(&weights)
        .map(|(i, &w)| Backend::weighted(backend_key(i), w))
        .collect();
    let active = weights.iter().filter(|&&w| w > 0).count();
    let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let size = match args.size {
        // Also checked when parsed (`table_size`): `args` may come from elsewhere.
        Some(m) => TableSize::new(m).context("--size")?,
        None => SizingPolicy::default()
            .fitting(active)
            .context("choosing a table size for --backends (give --size)")?,
    };

    let (times, table) = time_builds(args.seed, size, &backends, args.runs)?;
    let balance = Balance::of(&table);

    // Remove the middle backend by key order, then add one more of weight 1.
    let mut by_key: Vec<&Backend> = backends.iter().collect();
    by_key.sort_by(|a, b| a.key.cmp(&b.key));
    let removed = by_key[by_key.len() / 2].key.clone();
    let removed_share = f64::from(by_key[by_key.len() / 2].weight) / total_weight as f64;
    let added_share = 1.0 / (total_weight + 1) as f64;
    let fewer: Vec<Backend> = backends
        .iter()
        .filter(|b| b.key != removed)
        .cloned()
        .collect();
    let added = Backend::new(backend_key(args.backends));
    let more: Vec<Backend> = backends.iter().cloned().chain([added.clone()]).collect();

    let mut changes = Vec::new();
    if fewer.iter().any(|b| b.weight > 0) {
        let new = Table::build(args.seed, size, fewer).context("building without one backend")?;
        let what = format!("remove {}", String::from_utf8_lossy(&removed));
        changes.push(change(what, &table, &new, removed_share)?);
    }
    if let Ok(new) = Table::build(args.seed, size, more) {
        let what = format!("add {} (weight 1)", added.display_key());
        changes.push(change(what, &table, &new, added_share)?);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(MaglevResult {
        size: size.get(),
        backends: args.backends,
        active,
        seed: args.seed,
        runs: times.len() as u32,
        build_ms_median: ms(times[times.len() / 2]),
        build_ms_min: ms(times[0]),
        build_ms_max: ms(times[times.len() - 1]),
        slots_min: balance.min,
        slots_max: balance.max,
        max_deviation_pct: balance.max_deviation * 100.0,
        changes,
        build: Some(crate::build_id::BuildId::of_this_binary()),
    })
}

/// The result as two Markdown tables: the build and balance, then one row
/// per change.
pub(crate) fn markdown(r: &MaglevResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| M | N (active) | seed | build, median of {} (min–max) | slots per backend | farthest from its ideal share |",
        r.runs
    );
    let _ = writeln!(out, "|---:|---:|---:|---|---|---:|");
    let _ = writeln!(
        out,
        "| {} | {} ({}) | {:#x} | {} ({}–{}) | {}–{} | {:.3}% |",
        r.size,
        r.backends,
        r.active,
        r.seed,
        ms(r.build_ms_median),
        ms(r.build_ms_min),
        ms(r.build_ms_max),
        r.slots_min,
        r.slots_max,
        r.max_deviation_pct
    );
    if !r.changes.is_empty() {
        let _ = writeln!(
            out,
            "\n| change | slots moved | ideal | collateral | slots a patch writes |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|");
        for c in &r.changes {
            let _ = writeln!(
                out,
                "| {} | {:.3}% | {:.3}% | {:.3}% | {} |",
                c.what, c.moved_pct, c.ideal_pct, c.collateral_pct, c.slots_written
            );
        }
    }
    out
}

fn ms(value: f64) -> String {
    if value < 1.0 {
        format!("{:.1} µs", value * 1e3)
    } else {
        format!("{value:.3} ms")
    }
}

/// Builds the table `runs` times; returns the sorted build times and the table.
fn time_builds(
    seed: u64,
    size: TableSize,
    backends: &[Backend],
    runs: u32,
) -> anyhow::Result<(Vec<Duration>, Table)> {
    let mut times = Vec::with_capacity(runs as usize);
    let mut table = None;
    for _ in 0..runs {
        let input = backends.to_vec();
        let start = Instant::now();
        let built = Table::build(seed, size, input).context("building the table")?;
        times.push(start.elapsed());
        table = Some(built);
    }
    times.sort();
    Ok((times, table.context("no build ran")?))
}

/// The change from `old` to `new`; `ideal` is the share of the slots that must move.
fn change(what: String, old: &Table, new: &Table, ideal: f64) -> anyhow::Result<Change> {
    let d = Disruption::between(old, new)?;
    let diff = Diff::between(old, new)?;
    Ok(Change {
        what,
        moved_pct: d.moved_share() * 100.0,
        ideal_pct: ideal * 100.0,
        collateral_pct: d.kept_moved_share() * 100.0,
        slots_written: diff.len(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(backends: u32) -> MaglevArgs {
        MaglevArgs {
            size: Some(251),
            backends,
            weights: None,
            seed: 7,
            runs: 3,
            json: None,
        }
    }

    #[test]
    fn a_run_reports_balance_and_both_changes() {
        let r = measure(&args(4)).unwrap();
        assert_eq!((r.size, r.backends, r.active, r.runs), (251, 4, 4, 3));
        assert!(r.slots_min <= 63 && r.slots_max >= 62, "{r:?}");
        assert_eq!(r.changes.len(), 2);
        assert!((r.changes[0].ideal_pct - 25.0).abs() < 1e-9);
        let text = markdown(&r);
        assert!(text.contains("| 251 | 4 (4) | 0x7 |"), "{text}");
        assert!(text.contains("| remove 198.18.2."), "{text}");
        // JSON keeps every field (floats to within a rounding step).
        let back: MaglevResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(
            (back.size, back.slots_min, back.changes.len()),
            (251, r.slots_min, 2)
        );
        assert!((back.build_ms_max - r.build_ms_max).abs() < 1e-9);
        // And the build that measured it.
        let build = crate::build_id::BuildId::of_this_binary();
        assert_eq!(back.build, Some(build));
    }

    #[test]
    fn backends_beyond_the_table_are_refused_before_they_are_built() {
        let parse = |n: &str| crate::Cli::try_parse_from(["xlb-bench", "maglev", "--backends", n]);
        let e = parse("0").expect_err("no backend");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        // Refused when parsed, as the help says: at most 131071.
        let e = parse("150000").expect_err("beyond the largest table");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("1..=131071"), "{e}");
        // `measure` refuses them too, before any backend is built.
        for (backends, size, why) in [
            (4_294_967_295, None, "is more than 131071"),
            (131_072, None, "is more than 131071"),
            (131_072, Some(655_373), "is more than 131071"),
            (1_000, Some(997), "is more than a table of 997 slots"),
        ] {
            let e = measure(&MaglevArgs {
                size,
                ..args(backends)
            })
            .expect_err("more backends than slots")
            .to_string();
            assert!(e.contains(why), "{e}");
        }
        // The most backends a table of that size holds, one slot each.
        let r = measure(&MaglevArgs {
            size: Some(MAX_BACKENDS),
            runs: 1,
            ..args(MAX_BACKENDS)
        })
        .unwrap();
        assert_eq!((r.slots_min, r.slots_max), (1, 1));
    }

    #[test]
    fn sizes_beyond_the_largest_table_and_composites_are_refused_when_parsed() {
        let parse = |size: &str| {
            crate::Cli::try_parse_from(["xlb-bench", "maglev", "--backends", "1", "--size", size])
        };
        for (size, why) in [
            (
                "2147483647",
                "table size 2147483647 is out of range: give a prime from 2 to 16777213 (the \
                 datapath takes at most 131071)",
            ),
            ("16777259", "table size 16777259 is out of range"),
            ("1", "from 2 to 16777213"),
            ("65536", "not a prime"),
        ] {
            let e = parse(size).expect_err(size);
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{size}");
            assert!(e.to_string().contains(why), "{size}: {e}");
        }
        // `make bench`'s size, and the largest.
        for size in ["65537", "131071"] {
            parse(size).unwrap();
        }
    }

    #[test]
    fn runs_beyond_a_thousand_are_refused_when_parsed() {
        let parse = |runs: &str| {
            crate::Cli::try_parse_from(["xlb-bench", "maglev", "--backends", "1", "--runs", runs])
        };
        let e = parse("4294967295").expect_err("4294967295 runs");
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(e.to_string().contains("1..=1000"), "{e}");
        parse("1000").unwrap();
    }

    #[test]
    fn one_backend_cannot_be_removed() {
        let r = measure(&args(1)).unwrap();
        assert_eq!(r.changes.len(), 1, "only the addition: {r:?}");
        assert!(r.changes[0].what.starts_with("add "));
    }
}
