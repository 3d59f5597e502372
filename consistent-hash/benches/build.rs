//! Full table builds, the crate's against the paper's plain pseudocode (and a plain loop with
//! incremental permutations, a stronger baseline), in the same run.
//!
//! After criterion's own output, prints a summary of the medians and the speed-up, read back
//! from criterion's `estimates.json` files, and how the probes spread over the fill.

use std::path::PathBuf;
use std::time::Duration;

use consistent_hash::{Backend, Table, TableSize};
use criterion::{BatchSize, Criterion, black_box};

#[path = "support/keys.rs"]
mod keys;
#[path = "support/profile.rs"]
mod profile;
#[path = "support/reference.rs"]
mod reference;

/// (M, N): the sizes, from a tiny service to the paper's large table.
const CASES: [(u32, u32); 4] = [(251, 2), (16381, 100), (65537, 1000), (655_373, 1000)];
const SEED: u64 = 0x0123_4567_89ab_cdef;

fn group_name(m: u32, n: u32) -> String {
    format!("build_m{m}_n{n}")
}

fn bench(c: &mut Criterion) {
    for (m, n) in CASES {
        let size = TableSize::new(m).expect("the cases are primes");
        let keys = keys::backend_keys(n);
        let backends: Vec<Backend> = keys.iter().cloned().map(Backend::new).collect();
        let mut group = c.benchmark_group(group_name(m, n));
        if m > 100_000 {
            // ~10 ms and ~40 ms a build: fewer, longer samples.
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(12));
        } else if m > 20_000 {
            group
                .sample_size(50)
                .measurement_time(Duration::from_secs(8));
        }
        // The backend list is the caller's input, so cloning it is set-up. Each build is timed
        // alone and its table dropped before the next one, so the next build gets memory the
        // allocator recycled, as a reconciler that replaces a service's table does (keeping a
        // batch of tables alive would instead time the kernel's page faults on fresh memory).
        // The pseudocode is timed the same way.
        group.bench_function("xlb", |b| {
            b.iter_batched(
                || backends.clone(),
                |backends| Table::build(SEED, size, backends).expect("valid input"),
                BatchSize::PerIteration,
            );
        });
        group.bench_function("paper", |b| {
            b.iter_batched(
                || (),
                |()| reference::populate(black_box(&keys), SEED, size),
                BatchSize::PerIteration,
            );
        });
        group.bench_function("incremental", |b| {
            b.iter_batched(
                || (),
                |()| reference::populate_incremental(black_box(&keys), SEED, size),
                BatchSize::PerIteration,
            );
        });
        group.finish();
    }
}

/// Where criterion writes its results: as criterion finds it (`CARGO_TARGET_DIR`, else
/// `cargo metadata`), under `criterion/`.
fn criterion_dir() -> Option<PathBuf> {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cargo = std::env::var_os("CARGO")?;
            let output = std::process::Command::new(cargo)
                .args(["metadata", "--format-version", "1", "--no-deps"])
                .output()
                .ok()?;
            let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
            PathBuf::from(metadata["target_directory"].as_str()?)
        }
    };
    Some(target.join("criterion"))
}

/// The median of the last run of `group/function`, in seconds.
fn median(dir: &std::path::Path, group: &str, function: &str) -> Option<f64> {
    let path = dir
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let estimates: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some(estimates["median"]["point_estimate"].as_f64()? * 1e-9)
}

fn format_time(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.1} µs", seconds * 1e6)
    } else {
        format!("{:.3} ms", seconds * 1e3)
    }
}

#[expect(clippy::print_stdout, reason = "a benchmark report for the terminal")]
fn summary() {
    let Some(dir) = criterion_dir() else {
        return;
    };
    println!("\nMedians of this run (criterion estimates):");
    println!("| M | N | xlb | paper pseudocode | speed-up | plain incremental | speed-up |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (m, n) in CASES {
        let group = group_name(m, n);
        let times = ["xlb", "paper", "incremental"].map(|f| median(&dir, &group, f));
        if let [Some(ours), Some(paper), Some(incremental)] = times {
            println!(
                "| {m} | {n} | {} | {} | {:.2}× | {} | {:.2}× |",
                format_time(ours),
                format_time(paper),
                paper / ours,
                format_time(incremental),
                incremental / ours
            );
        }
    }

    println!("\nWhere the probes go (share of all probes, by the share of slots already taken):");
    println!("| M | N | probes | probes/slot | 0–50% | 50–90% | 90–99% | last 1% |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (m, n) in CASES {
        let size = TableSize::new(m).expect("the cases are primes");
        let profile = profile::probe_profile(&keys::backend_keys(n), SEED, size);
        let total: u64 = profile.iter().sum();
        let share = |range: std::ops::Range<usize>| {
            100.0 * profile[range].iter().sum::<u64>() as f64 / total as f64
        };
        println!(
            "| {m} | {n} | {total} | {:.1} | {:.1}% | {:.1}% | {:.1}% | {:.1}% |",
            total as f64 / f64::from(m),
            share(0..50),
            share(50..90),
            share(90..99),
            share(99..100),
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    summary();
}
