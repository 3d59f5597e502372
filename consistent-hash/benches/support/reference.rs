//! The paper's population pseudocode (Eisenbud et al., NSDI 2016, §3.4, Pseudocode 1), written
//! plainly: the baseline the optimised build is measured against, and a cross-check for it.
//!
//! Only the permutation matrix is left out — `permutation[i][j] = (offset + j × skip) mod M`
//! is computed where the pseudocode reads it, as the paper's formula gives it — because the
//! matrix alone would be `N × M` entries (262 MB for M = 655373, N = 100), which is not a fair
//! baseline either. Offsets and skips come from the same specified hashes as the crate's, so
//! both build the very same table.

use consistent_hash::{Permutation, TableSize};

/// The table of `size` slots for `keys`, equal weights, in the order given, under `seed`:
/// `entry[j]` is the index in `keys` of the backend in slot `j`.
#[expect(
    clippy::needless_range_loop,
    reason = "written as the paper's `for each i < N`"
)]
pub(crate) fn populate(keys: &[Vec<u8>], seed: u64, size: TableSize) -> Vec<i64> {
    let m = u64::from(size.get());
    let n = keys.len();
    let permutations: Vec<Permutation> = keys
        .iter()
        .map(|key| Permutation::of(key, seed, size))
        .collect();
    let permutation = |i: usize, j: u64| {
        let p = &permutations[i];
        (u64::from(p.offset) + j * u64::from(p.skip)) % m
    };
    let mut next = vec![0u64; n];
    let mut entry = vec![-1i64; m as usize];
    let mut filled = 0;
    loop {
        for i in 0..n {
            let mut c = permutation(i, next[i]);
            while entry[c as usize] >= 0 {
                next[i] += 1;
                c = permutation(i, next[i]);
            }
            entry[c as usize] = i as i64;
            next[i] += 1;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}

/// A stronger baseline than the pseudocode as written: the same loop with each backend's next
/// permutation slot kept incrementally (`cursor + skip`, minus `M` once past it: no
/// multiplication, no division) and an `i32` entry table, but none of the crate's other
/// changes. Same table as [`populate`].
pub(crate) fn populate_incremental(keys: &[Vec<u8>], seed: u64, size: TableSize) -> Vec<i32> {
    let m = size.get();
    let mut cursors: Vec<(u32, u32)> = keys
        .iter()
        .map(|key| {
            let p = Permutation::of(key, seed, size);
            (p.offset, p.skip)
        })
        .collect();
    let mut entry = vec![-1i32; m as usize];
    let mut filled = 0;
    loop {
        for (i, (cursor, skip)) in cursors.iter_mut().enumerate() {
            let mut c = *cursor;
            while entry[c as usize] >= 0 {
                c += *skip;
                if c >= m {
                    c -= m;
                }
            }
            entry[c as usize] = i as i32;
            c += *skip;
            if c >= m {
                c -= m;
            }
            *cursor = c;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}
