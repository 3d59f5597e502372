//! How many slots each backend gets: its quota.
//!
//! The `M` slots are apportioned to the weights by the largest-remainder (Hamilton) method: each
//! backend first gets `⌊M·wᵢ/W⌋` slots (`W` the sum of the weights), and the slots left over (fewer
//! than the number of backends) go one each to the backends with the largest remainders
//! `M·wᵢ mod W`, ties to the backend earlier in table order. So every quota is within one slot of
//! the ideal `M·wᵢ/W` — the best any integer split can do — and with equal weights the extra slots
//! go to the first `M mod N` backends, exactly as the paper's round-robin leaves them.
//!
//! All arithmetic is exact in `u64`: `M < 2^31` and weights are `u32`, so `M·wᵢ < 2^63`, and there
//! are at most `M` backends with a positive weight, so `W < 2^63`.

/// The quota of every backend, in the order of `weights` (see the module documentation).
///
/// `weights` must contain a positive weight and at most `m` of them; `m < 2^31`.
pub(crate) fn quotas(weights: &[u32], m: u32) -> Vec<u32> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    debug_assert!(total > 0, "callers reject tables without an active backend");
    let m = u64::from(m);
    let mut quotas = Vec::with_capacity(weights.len());
    let mut given = 0u64;
    for &w in weights {
        // ⌊M·w/W⌋ ≤ M fits u32.
        let quota = m * u64::from(w) / total;
        given += quota;
        quotas.push(quota as u32);
    }
    let left = (m - given) as usize;
    if left > 0 {
        // The remainders only need comparing for the backends that compete for a leftover;
        // a backend of weight 0 has remainder 0 and never gets one, as it never gets a turn.
        let mut order: Vec<(u64, usize)> = weights
            .iter()
            .enumerate()
            .filter(|&(_, &w)| w > 0)
            .map(|(i, &w)| (m * u64::from(w) % total, i))
            .collect();
        // Largest remainder first, then table order. `left` < the number of positive weights,
        // because every one of them lost less than one slot to rounding.
        order.select_nth_unstable_by(left - 1, |a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in &order[..left] {
            quotas[i] += 1;
        }
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_give_the_extra_slots_to_the_first_backends() {
        assert_eq!(quotas(&[1, 1, 1], 251), [84, 84, 83]);
        assert_eq!(quotas(&[7, 7, 7, 7], 13), [4, 3, 3, 3]);
    }

    #[test]
    fn quotas_are_within_one_slot_of_ideal_and_sum_to_the_size() {
        let cases: &[(&[u32], u32)] = &[
            (&[1, 2, 3], 251),
            (&[0, 5, 0, 1], 509),
            (&[u32::MAX, 1, u32::MAX - 1], 2_147_483_647),
            (&[1, 1_000_000], 65521),
            (&[3, 3, 3, 1], 2),
        ];
        for &(weights, m) in cases {
            let q = quotas(weights, m);
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            assert_eq!(q.iter().map(|&x| u64::from(x)).sum::<u64>(), u64::from(m));
            for (&w, &c) in weights.iter().zip(&q) {
                let ideal = f64::from(m) * f64::from(w) / total as f64;
                assert!(
                    (f64::from(c) - ideal).abs() < 1.0,
                    "{weights:?} {m}: {c} vs {ideal}"
                );
                if w == 0 {
                    assert_eq!(c, 0);
                }
            }
        }
    }

    #[test]
    fn largest_remainders_win() {
        // 10·w/6: 1.67, 3.33, 5.0 → floors 1, 3, 5 (9), the leftover goes to remainder 4/6.
        assert_eq!(quotas(&[1, 2, 3], 10), [2, 3, 5]);
    }
}
