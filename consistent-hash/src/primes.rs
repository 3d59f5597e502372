//! Prime table sizes.
//!
//! Maglev needs a prime number of slots `M`: a backend's permutation visits
//! `offset, offset + skip, offset + 2·skip, … (mod M)` and covers every slot only when `skip` and
//! `M` are coprime, which every `skip` in `1..M` is when `M` is prime.

/// The table sizes the [sizing policy](crate::SizingPolicy) picks from (DESIGN.md): primes
/// just below the powers of two from 2^8 to 2^17, so a table of `M` `u32` slots stays under a
/// power-of-two number of bytes. Each is about twice the previous one.
pub const TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// The largest accepted table size, `2^31 − 1` (a prime): the build adds two slot indexes below
/// `M` in `u32`, which must not overflow. Such a table would take 8 GiB.
pub const MAX_TABLE_SIZE: u32 = i32::MAX as u32;

/// Whether `n` is prime (deterministic trial division by 2, 3 and `6k ± 1` up to `√n`; at most
/// about 22 000 divisions for a `u32`, and only ever run when a size is chosen).
#[must_use]
pub const fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let n = n as u64;
    let mut d: u64 = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// The largest prime below `n`, or 0 when there is none.
#[must_use]
pub const fn prime_below(n: u32) -> u32 {
    let mut p = n;
    while p > 2 {
        p -= 1;
        if is_prime(p) {
            return p;
        }
    }
    0
}

/// The smallest prime above `n`, saturating at `u32::MAX` (not a prime) when there is none.
#[must_use]
pub const fn prime_above(n: u32) -> u32 {
    let mut p = n;
    while p < u32::MAX {
        p += 1;
        if is_prime(p) {
            return p;
        }
    }
    u32::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sieve of Eratosthenes, an independent check of `is_prime`.
    fn sieve(limit: usize) -> Vec<bool> {
        let mut prime = vec![true; limit + 1];
        prime[0] = false;
        prime[1] = false;
        let mut i = 2;
        while i * i <= limit {
            if prime[i] {
                for j in (i * i..=limit).step_by(i) {
                    prime[j] = false;
                }
            }
            i += 1;
        }
        prime
    }

    #[test]
    fn is_prime_agrees_with_a_sieve() {
        let sieve = sieve(200_000);
        for (n, &expected) in sieve.iter().enumerate() {
            assert_eq!(is_prime(n as u32), expected, "{n}");
        }
    }

    #[test]
    fn large_primes_and_composites() {
        for p in [65537, 655_373, MAX_TABLE_SIZE, 4_294_967_291] {
            assert!(is_prime(p), "{p}");
        }
        // 65537² overflows u32; 65521 · 65519 and 46337² are the classic traps for a bound
        // that stops one step early.
        for c in [65521 * 65519, 46337 * 46337, 655_371, u32::MAX] {
            assert!(!is_prime(c), "{c}");
        }
    }

    #[test]
    fn listed_sizes_are_increasing_primes_below_powers_of_two() {
        for (i, &m) in TABLE_SIZES.iter().enumerate() {
            assert!(is_prime(m), "{m} is not prime");
            let power = 1u32 << (i + 8);
            assert!(
                m < power && prime_above(m) > power,
                "{m} is not the prime just below {power}"
            );
        }
    }

    #[test]
    fn neighbours() {
        assert_eq!((prime_below(65536), prime_above(65536)), (65521, 65537));
        assert_eq!((prime_below(2), prime_above(1)), (0, 2));
        assert_eq!(prime_above(u32::MAX), u32::MAX);
    }
}
