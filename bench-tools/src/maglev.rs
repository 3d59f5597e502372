//! `xlb-bench maglev`: build a Maglev table and report its build time, balance, and the
//! disruption of removing and adding one backend.
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use consistent_hash::{Backend, Balance, Diff, Disruption, SizingPolicy, Table, TableSize};

/// `xlb-bench maglev --size M --backends N [--weights w1,w2,...] [--seed S]`.
#[derive(Debug, clap::Args)]
pub(crate) struct MaglevArgs {
    /// Table size M, a prime (default: the sizing policy's size for N, the smallest listed
    /// prime above 100·N).
    #[arg(long)]
    size: Option<u32>,
    /// Number of backends N; their keys are 198.18.2.0:8080/TCP and up.
    #[arg(long)]
    backends: u32,
    /// One weight per backend, comma-separated (default: all 1).
    #[arg(long, value_delimiter = ',')]
    weights: Option<Vec<u32>>,
    /// Seed of the offset/skip hashes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Builds to time; the median is reported.
    #[arg(long, default_value_t = 21, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
}

/// The key of the `i`-th backend: `198.18.2.0:8080/TCP` and up (RFC 2544 range), as the
/// consistent-hash benchmarks name them.
fn backend_key(i: u32) -> String {
    format!("{}:8080/TCP", std::net::Ipv4Addr::from(0xc612_0200 + i))
}

pub(crate) fn run(args: &MaglevArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.backends > 0, "--backends must be at least 1");
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
        Some(m) => TableSize::new(m).context("--size")?,
        None => SizingPolicy::default()
            .fitting(active)
            .context("choosing a table size for --backends (give --size)")?,
    };

    let (times, table) = time_builds(args.seed, size, &backends, args.runs)?;
    let balance = Balance::of(&table);

    // Remove the middle backend in key order; add the next key up.
    let mut by_key: Vec<&Backend> = backends.iter().collect();
    by_key.sort_by(|a, b| a.key.cmp(&b.key));
    let removed = by_key[by_key.len() / 2].key.clone();
    // The share of the slots that must move: the removed backend's, or the new one's.
    let removed_share = f64::from(by_key[by_key.len() / 2].weight) / total_weight as f64;
    let added_share = 1.0 / (total_weight + 1) as f64;
    let fewer: Vec<Backend> = backends
        .iter()
        .filter(|b| b.key != removed)
        .cloned()
        .collect();
    let added = Backend::new(backend_key(args.backends));
    let more: Vec<Backend> = backends.iter().cloned().chain([added.clone()]).collect();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "Maglev table: M = {} slots, N = {} backends ({active} with a positive weight), seed {:#x}",
        size, args.backends, args.seed
    )?;
    writeln!(
        out,
        "build:      median {} over {} runs (min {}, max {})",
        duration(times[times.len() / 2]),
        times.len(),
        duration(times[0]),
        duration(times[times.len() - 1])
    )?;
    writeln!(
        out,
        "balance:    slots per backend {} to {} (mean {:.2}); farthest from its ideal share by \
         {:.3}% ({:.2} slots)",
        balance.min,
        balance.max,
        f64::from(size.get()) / active as f64,
        balance.max_deviation * 100.0,
        balance.max_slot_error
    )?;
    if fewer.iter().any(|b| b.weight > 0) {
        let new = Table::build(args.seed, size, fewer).context("building without one backend")?;
        let label = format!("remove {}", String::from_utf8_lossy(&removed));
        report_change(&mut out, &label, &table, &new, removed_share)?;
    } else {
        writeln!(
            out,
            "remove:     skipped, no backend with a positive weight would remain"
        )?;
    }
    match Table::build(args.seed, size, more) {
        Ok(new) => {
            let label = format!("add {} (weight 1)", added.display_key());
            report_change(&mut out, &label, &table, &new, added_share)?;
        }
        Err(e) => writeln!(out, "add:        skipped: {e}")?,
    }
    Ok(())
}

/// `1.234 ms`, or `56.7 µs` below a millisecond.
fn duration(d: Duration) -> String {
    let seconds = d.as_secs_f64();
    if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.3} ms", seconds * 1e3)
    }
}

/// Builds the table `runs` times; returns the sorted times and the table.
fn time_builds(
    seed: u64,
    size: TableSize,
    backends: &[Backend],
    runs: u32,
) -> anyhow::Result<(Vec<Duration>, Table)> {
    let mut times = Vec::with_capacity(runs as usize);
    let mut table = None;
    for _ in 0..runs {
        // The clone is the caller's input, not part of the build.
        let input = backends.to_vec();
        let start = Instant::now();
        let built = Table::build(seed, size, input).context("building the table")?;
        times.push(start.elapsed());
        table = Some(built);
    }
    times.sort();
    Ok((times, table.context("no build ran")?))
}

/// One line on the change from `old` to `new`; `ideal` is the share of the slots that must move.
fn report_change(
    out: &mut impl std::io::Write,
    label: &str,
    old: &Table,
    new: &Table,
    ideal: f64,
) -> anyhow::Result<()> {
    let d = Disruption::between(old, new)?;
    let diff = Diff::between(old, new)?;
    writeln!(
        out,
        "{label}: {:.3}% of the slots moved (ideal {:.3}%); {:.3}% of the other backends' \
         slots moved between them (collateral); the diff writes {} slots",
        d.moved_share() * 100.0,
        ideal * 100.0,
        d.kept_moved_share() * 100.0,
        diff.len()
    )?;
    Ok(())
}
