//! Balance and disruption of this crate's Maglev against the `maglev` crate 0.2.1, jump
//! consistent hash and rendezvous hashing, on the same backends, printed as a table.
//!
//! Every scheme is turned into a table of `M` slots, as a datapath would hold it: slot `s`
//! belongs to the backend the scheme picks for a flow whose hash falls in slot `s`. Balance is
//! then exact (slots per backend), and disruption is the share of slots whose backend changes
//! when one backend is removed or added.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use consistent_hash::{Backend, Disruption, Table, TableSize, hash64};
use maglev::{ConsistentHasher, Maglev};

#[path = "support/keys.rs"]
mod keys;

const SEED: u64 = 0x0123_4567_89ab_cdef;
/// (M, N) of the comparison.
const CASES: [(u32, u32); 2] = [(65537, 100), (65537, 1000)];

/// A scheme's table: for every slot, an index into `keys`.
struct Slots {
    keys: Vec<Vec<u8>>,
    slots: Vec<u32>,
}

/// A consistent-hashing scheme under comparison.
trait Scheme {
    fn name(&self) -> &'static str;
    /// The table of `m` slots for `keys`.
    fn build(&self, keys: &[Vec<u8>], m: u32) -> Slots;
}

/// This crate.
struct Xlb;

impl Scheme for Xlb {
    fn name(&self) -> &'static str {
        "xlb Maglev (this crate)"
    }

    fn build(&self, keys: &[Vec<u8>], m: u32) -> Slots {
        let size = TableSize::new(m).expect("a prime");
        let table =
            Table::build(SEED, size, keys.iter().cloned().map(Backend::new)).expect("valid");
        Slots {
            keys: table.backends().iter().map(|b| b.key.clone()).collect(),
            slots: table.slots().to_vec(),
        }
    }
}

/// The `maglev` crate 0.2.1: SipHash (std's `DefaultHasher`), an `N × M` permutation matrix.
struct MaglevCrate;

impl MaglevCrate {
    /// The slot the crate looks `key` up in: it hashes `0xdead_babe` (as `u32`) then the key
    /// with `DefaultHasher`, modulo the table size (`maglev` 0.2.1, `Maglev::get`).
    fn slot_of(key: u64, m: u64) -> usize {
        let mut hasher = DefaultHasher::new();
        hasher.write_u32(0xdead_babe);
        key.hash(&mut hasher);
        (hasher.finish() % m) as usize
    }
}

impl Scheme for MaglevCrate {
    fn name(&self) -> &'static str {
        "maglev crate 0.2.1"
    }

    fn build(&self, keys: &[Vec<u8>], m: u32) -> Slots {
        let nodes: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        // With a prime capacity the crate uses exactly that size.
        let maglev = Maglev::with_capacity(nodes.clone(), m as usize);
        assert_eq!(maglev.capacity(), m as usize);
        // The table itself is private: read it back through lookups, one probe key per slot,
        // checked with a second key per slot so a wrong guess of the crate's hashing shows.
        let mut probe: Vec<Option<u64>> = vec![None; m as usize];
        let (mut found, mut key) = (0, 0u64);
        let mut slots = vec![u32::MAX; m as usize];
        while found < m {
            let slot = Self::slot_of(key, u64::from(m));
            let node = maglev.get(&key).expect("a non-empty table");
            let index = nodes.iter().position(|n| n == node).expect("a node") as u32;
            match probe[slot] {
                None => {
                    probe[slot] = Some(key);
                    slots[slot] = index;
                    found += 1;
                }
                Some(_) => assert_eq!(slots[slot], index, "slot {slot} read back inconsistently"),
            }
            key += 1;
        }
        Slots {
            keys: keys.to_vec(),
            slots,
        }
    }
}

/// Jump consistent hash (Lamping and Veach, 2014): bucket `i` is the `i`-th key in sorted
/// order, so removing a key renumbers every bucket after it (only removing the last bucket
/// is cheap with jump hash).
struct Jump;

impl Jump {
    fn bucket(mut key: u64, buckets: u32) -> u32 {
        let (mut b, mut j) = (-1i64, 0i64);
        while j < i64::from(buckets) {
            b = j;
            key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
            j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
        }
        b as u32
    }
}

impl Scheme for Jump {
    fn name(&self) -> &'static str {
        "jump consistent hash"
    }

    fn build(&self, keys: &[Vec<u8>], m: u32) -> Slots {
        let mut keys = keys.to_vec();
        keys.sort();
        let n = keys.len() as u32;
        let slots = (0..m)
            .map(|s| Self::bucket(hash64(&s.to_le_bytes(), SEED), n))
            .collect();
        Slots { keys, slots }
    }
}

/// Rendezvous (highest random weight) hashing: slot `s` goes to the backend with the highest
/// `hash64(hash64(key) ^ s)`.
struct Rendezvous;

impl Scheme for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous (HRW)"
    }

    fn build(&self, keys: &[Vec<u8>], m: u32) -> Slots {
        let hashes: Vec<u64> = keys.iter().map(|k| hash64(k, SEED)).collect();
        let slots = (0..u64::from(m))
            .map(|s| {
                let score = |&h: &u64| hash64(&(h ^ s).to_le_bytes(), SEED);
                let best = hashes.iter().enumerate().max_by_key(|(_, h)| score(h));
                best.expect("at least one backend").0 as u32
            })
            .collect();
        Slots {
            keys: keys.to_vec(),
            slots,
        }
    }
}

/// (largest, smallest) slot count over the ideal `M/N`.
fn balance(table: &Slots) -> (f64, f64) {
    let mut counts = vec![0u32; table.keys.len()];
    for &s in &table.slots {
        counts[s as usize] += 1;
    }
    let ideal = table.slots.len() as f64 / table.keys.len() as f64;
    let max = f64::from(*counts.iter().max().expect("backends"));
    let min = f64::from(*counts.iter().min().expect("backends"));
    (max / ideal, min / ideal)
}

/// (moved, collateral): the share of slots whose backend changed, and the share of slots that
/// moved from one backend present in both tables to another — as [`Disruption`] counts them.
fn disruption(old: &Slots, new: &Slots) -> (f64, f64) {
    let kept = |key: &[u8]| new.keys.iter().position(|k| k == key);
    let map: Vec<Option<usize>> = old.keys.iter().map(|k| kept(k)).collect();
    let in_old: Vec<bool> = new.keys.iter().map(|k| old.keys.contains(k)).collect();
    let (mut moved, mut collateral) = (0u32, 0u32);
    for (&o, &n) in old.slots.iter().zip(&new.slots) {
        if map[o as usize] != Some(n as usize) {
            moved += 1;
            if map[o as usize].is_some() && in_old[n as usize] {
                collateral += 1;
            }
        }
    }
    let m = old.slots.len() as f64;
    (f64::from(moved) / m, f64::from(collateral) / m)
}

/// The median of `runs` builds, and the last table.
fn timed(scheme: &dyn Scheme, keys: &[Vec<u8>], m: u32, runs: usize) -> (Duration, Slots) {
    let mut times = Vec::with_capacity(runs);
    let mut table = None;
    for _ in 0..runs {
        let start = Instant::now();
        table = Some(scheme.build(keys, m));
        times.push(start.elapsed());
    }
    times.sort();
    (times[runs / 2], table.expect("runs > 0"))
}

fn percent(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

#[expect(clippy::print_stdout, reason = "a benchmark report for the terminal")]
fn main() {
    // `cargo bench -- <filter>`: run only when the filter names this report.
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if !filters.is_empty() && !filters.iter().any(|f| "compare".contains(f.as_str())) {
        return;
    }
    let schemes: [&dyn Scheme; 4] = [&Xlb, &MaglevCrate, &Jump, &Rendezvous];
    println!("\nBalance and disruption on the same backends (tables of M slots; one run):");
    println!(
        "| M | N | scheme | build (median) | max/ideal | min/ideal | remove 1: moved | \
         remove 1: collateral | add 1: moved | add 1: collateral |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    for (m, n) in CASES {
        let keys = keys::backend_keys(n);
        // Remove the middle key of the sorted list; add a key from further up the range.
        let mut sorted = keys.clone();
        sorted.sort();
        let removed = sorted[sorted.len() / 2].clone();
        let fewer: Vec<Vec<u8>> = keys.iter().filter(|&k| *k != removed).cloned().collect();
        let mut more = keys.clone();
        more.push(keys::backend_key(n + 1000));
        for scheme in schemes {
            // The maglev crate fills an N × M matrix of u64 (0.5 GB at N = 1000): few runs.
            let runs = if n > 100 { 3 } else { 5 };
            let (time, table) = timed(scheme, &keys, m, runs);
            let (max, min) = balance(&table);
            let (rm_moved, rm_collateral) = disruption(&table, &scheme.build(&fewer, m));
            let (add_moved, add_collateral) = disruption(&table, &scheme.build(&more, m));
            println!(
                "| {m} | {n} | {} | {:.2} ms | {max:.4} | {min:.4} | {} | {} | {} | {} |",
                scheme.name(),
                time.as_secs_f64() * 1e3,
                percent(rm_moved),
                percent(rm_collateral),
                percent(add_moved),
                percent(add_collateral),
            );
        }
        check_against_the_crate(m, &keys, &fewer);
        println!(
            "| | | ideal | | 1 | 1 | {} | 0 | {} | 0 |",
            percent(1.0 / f64::from(n)),
            percent(1.0 / f64::from(n + 1))
        );
    }
    println!(
        "\ncollateral: slots moved between backends present in both tables (on top of the \
         removed backend's slots, or the new backend's share). Jump hash numbers its buckets \
         in key order, so removing a middle backend renumbers the rest."
    );
    disruption_spread();
}

/// (M, N) of the disruption distribution: the sizing policy's range of `M/N` (100 to 400)
/// and beyond, and the "N ≤ 200 at M ≥ 16381".
const SPREAD: [(u32, u32); 7] = [
    (16381, 20),
    (16381, 100),
    (16381, 163),
    (32749, 200),
    (65521, 100),
    (65521, 200),
    (65521, 655),
];
/// Seeds per row of the distribution.
const SEEDS: u64 = 200;

/// Mean, 99th percentile and maximum.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    (
        mean,
        values[values.len() * 99 / 100],
        values[values.len() - 1],
    )
}

/// Maglev's disruption over many seeds: it is a distribution, with a thin tail.
#[expect(clippy::print_stdout, reason = "a benchmark report for the terminal")]
fn disruption_spread() {
    println!(
        "
xlb Maglev disruption over {SEEDS} seeds (each removes a different backend):"
    );
    println!(
        "| M | N | M/N | remove 1: collateral mean / p99 / max | add 1: moved ÷ ideal 1/(N+1) \
         mean / p99 / max |"
    );
    println!("|---:|---:|---:|---|---|");
    for (m, n) in SPREAD {
        let size = TableSize::new(m).expect("a prime");
        let keys = keys::backend_keys(n);
        let build = |seed, keys: &[Vec<u8>]| {
            Table::build(seed, size, keys.iter().cloned().map(Backend::new)).expect("valid")
        };
        let (mut removed, mut added) = (Vec::new(), Vec::new());
        for seed in 0..SEEDS {
            let table = build(seed, &keys);
            let mut fewer = keys.clone();
            fewer.remove(seed as usize % keys.len());
            let d = Disruption::between(&table, &build(seed, &fewer)).expect("same size");
            removed.push(d.kept_moved_share());
            let mut more = keys.clone();
            more.push(keys::backend_key(n + 1000));
            let d = Disruption::between(&table, &build(seed, &more)).expect("same size");
            added.push(d.moved_share() * f64::from(n + 1));
        }
        let (rm_mean, rm_p99, rm_max) = spread(removed);
        let (add_mean, add_p99, add_max) = spread(added);
        println!(
            "| {m} | {n} | {} | {} / {} / {} | {add_mean:.2} / {add_p99:.2} / {add_max:.2} |",
            m / n,
            percent(rm_mean),
            percent(rm_p99),
            percent(rm_max)
        );
    }
}

/// The generic disruption above counts as [`Disruption`] does (a check on this report).
fn check_against_the_crate(m: u32, keys: &[Vec<u8>], fewer: &[Vec<u8>]) {
    let size = TableSize::new(m).expect("a prime");
    let build = |k: &[Vec<u8>]| Table::build(SEED, size, k.iter().cloned().map(Backend::new));
    let (old, new) = (build(keys).expect("valid"), build(fewer).expect("valid"));
    let d = Disruption::between(&old, &new).expect("same size");
    let (moved, collateral) = disruption(&Xlb.build(keys, m), &Xlb.build(fewer, m));
    assert!((moved - d.moved_share()).abs() < 1e-12);
    assert!((collateral - f64::from(d.kept_moved) / f64::from(m)).abs() < 1e-12);
}
