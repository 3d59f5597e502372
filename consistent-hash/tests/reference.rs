//! The optimised build against the paper's plain pseudocode: the very same tables.

use consistent_hash::{Backend, Table, TableSize};
use proptest::prelude::*;

#[path = "../benches/support/keys.rs"]
mod keys;
#[path = "../benches/support/reference.rs"]
mod reference;

/// Builds with the crate and with the pseudocode (given the crate's backend order) and compares.
fn check(seed: u64, m: u32, n: u32) {
    let size = TableSize::new(m).unwrap();
    let table = Table::build(
        seed,
        size,
        keys::backend_keys(n).into_iter().map(Backend::new),
    )
    .unwrap();
    let ordered: Vec<Vec<u8>> = table.backends().iter().map(|b| b.key.clone()).collect();
    let expected = reference::populate(&ordered, seed, size);
    let same = table
        .slots()
        .iter()
        .zip(&expected)
        .filter(|&(&a, &b)| i64::from(a) == b)
        .count();
    // The benchmarks' second baseline builds the same table too.
    let incremental = reference::populate_incremental(&ordered, seed, size);
    assert!(
        expected
            .iter()
            .zip(&incremental)
            .all(|(&a, &b)| a == i64::from(b))
    );
    assert_eq!(
        same,
        m as usize,
        "seed={seed} m={m} n={n}: {} slots differ",
        m as usize - same
    );
}

#[test]
fn benchmark_sizes_match_the_pseudocode() {
    for (m, n) in [(251, 2), (16381, 100), (65537, 1000), (655_373, 1000)] {
        check(0x0123_4567_89ab_cdef, m, n);
    }
}

#[test]
fn edge_sizes_match_the_pseudocode() {
    // One backend; as many backends as slots; the smallest prime.
    for (m, n) in [(251, 1), (251, 251), (2, 1), (2, 2), (3, 2), (509, 508)] {
        check(1, m, n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_sizes_match_the_pseudocode(
        seed in any::<u64>(),
        m in prop::sample::select(vec![251u32, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 65537]),
        n in 1u32..300,
    ) {
        check(seed, m, n.min(m));
    }
}
