//! Where the probes of the paper's fill go: the coupon collector's tail, measured.

use consistent_hash::{Permutation, TableSize};

/// The same fill, counting probes (reads of `entry`): `profile[p]` is the number made while
/// between `p`% and `p + 1`% of the slots were taken. Shows the coupon collector's tail.
pub(crate) fn probe_profile(keys: &[Vec<u8>], seed: u64, size: TableSize) -> [u64; 100] {
    let m = u64::from(size.get());
    let permutations: Vec<Permutation> = keys
        .iter()
        .map(|key| Permutation::of(key, seed, size))
        .collect();
    let mut next = vec![0u64; keys.len()];
    let mut taken = vec![false; m as usize];
    let mut profile = [0u64; 100];
    let mut filled = 0;
    loop {
        for (i, p) in permutations.iter().enumerate() {
            let bucket = (filled * 100 / m) as usize;
            loop {
                let c = p.nth(next[i]) as usize;
                next[i] += 1;
                profile[bucket] += 1;
                if !taken[c] {
                    taken[c] = true;
                    break;
                }
            }
            filled += 1;
            if filled == m {
                return profile;
            }
        }
    }
}
