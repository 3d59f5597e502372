//! Arithmetic modulo a table size `M < 2^31` without a division in the hot loops.

/// A modulus `m` with `2 ≤ m < 2^31`, and its Barrett constant `⌊(2^64 − 1)/m⌋`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Modulus {
    m: u32,
    magic: u64,
}

impl Modulus {
    pub(crate) fn new(m: u32) -> Self {
        debug_assert!((2..1 << 31).contains(&m));
        Self {
            m,
            magic: u64::MAX / u64::from(m),
        }
    }

    /// The modulus.
    #[inline(always)]
    pub(crate) fn get(self) -> u32 {
        self.m
    }

    /// `a + b mod m` for `a, b < m`: `a + b < 2m < 2^32`, so one conditional subtraction does.
    /// Written as a minimum, which compiles to a conditional move: a branch here would be
    /// taken half the time at random.
    #[inline(always)]
    pub(crate) fn add(self, a: u32, b: u32) -> u32 {
        let s = a + b;
        // Below `m`, `s − m` wraps to above `s`.
        s.min(s.wrapping_sub(self.m))
    }

    /// `a − b mod m` for `a, b < m`.
    #[inline(always)]
    pub(crate) fn sub(self, a: u32, b: u32) -> u32 {
        if a >= b { a - b } else { a + (self.m - b) }
    }

    /// `a · b mod m` for `a, b < m` (Barrett reduction: two multiplications instead of a
    /// division). `a·b < 2^62`; the estimated quotient is at most two below the true one, because
    /// `magic` is at most one below `2^64/m` and the product below `2^64`, so the remainder
    /// estimate is below `3m < 2^33`.
    #[inline(always)]
    pub(crate) fn mul(self, a: u32, b: u32) -> u32 {
        let product = u64::from(a) * u64::from(b);
        let quotient = ((u128::from(product) * u128::from(self.magic)) >> 64) as u64;
        let mut r = product - quotient * u64::from(self.m);
        let m = u64::from(self.m);
        if r >= m {
            r -= m;
        }
        if r >= m {
            r -= m;
        }
        r as u32
    }

    /// The inverses of many numbers at the cost of one inversion and three multiplications
    /// each (Montgomery's trick: invert the product of all, then peel the factors off one by
    /// one). Every number must be in `1..m`, and `m` prime.
    pub(crate) fn inverses(self, values: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let values: Vec<u32> = values.into_iter().collect();
        // prefix[k] = values[0] · … · values[k − 1]
        let mut prefix = Vec::with_capacity(values.len());
        let mut product = 1 % self.m;
        for &v in &values {
            prefix.push(product);
            product = self.mul(product, v);
        }
        // `rest` = (values[0] · … · values[k])⁻¹, walking k down.
        let mut rest = self.inverse(product);
        let mut inverses = vec![0; values.len()];
        for k in (0..values.len()).rev() {
            inverses[k] = self.mul(rest, prefix[k]);
            rest = self.mul(rest, values[k]);
        }
        inverses
    }

    /// Multiplication by a fixed `w < m`, prepared for many operands.
    pub(crate) fn multiplier(self, w: u32) -> Multiplier {
        // `w·2^32/m < 2^32`.
        let shoup = ((u64::from(w) << 32) / u64::from(self.m)) as u32;
        Multiplier {
            w,
            shoup,
            m: self.m,
        }
    }

    /// The inverse of `a` modulo `m` (extended Euclid), for `0 < a < m` with `gcd(a, m) = 1`,
    /// which holds for every such `a` when `m` is prime.
    pub(crate) fn inverse(self, a: u32) -> u32 {
        let (mut r0, mut r1) = (i64::from(self.m), i64::from(a));
        let (mut t0, mut t1) = (0i64, 1i64);
        while r1 != 0 {
            let q = r0 / r1;
            (r0, r1) = (r1, r0 - q * r1);
            (t0, t1) = (t1, t0 - q * t1);
        }
        debug_assert_eq!(r0, 1, "{a} has no inverse modulo {}", self.m);
        t0.rem_euclid(i64::from(self.m)) as u32
    }
}

/// `x ↦ x·w mod m` with Shoup's precomputed quotient `⌊w·2^32/m⌋`: two 32-bit multiplications,
/// a high half and one conditional subtraction, no division. For `x < m < 2^31` the estimated
/// quotient `⌊x·shoup/2^32⌋` is the true one or one below it, so `x·w − q·m` is in `[0, 2m)` and
/// computing it modulo `2^32` is exact.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Multiplier {
    w: u32,
    shoup: u32,
    m: u32,
}

impl Multiplier {
    /// `x·w mod m`, for `x < m`.
    #[inline(always)]
    pub(crate) fn apply(self, x: u32) -> u32 {
        let q = ((u64::from(x) * u64::from(self.shoup)) >> 32) as u32;
        let r = x.wrapping_mul(self.w).wrapping_sub(q.wrapping_mul(self.m));
        r.min(r.wrapping_sub(self.m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_plain_arithmetic() {
        for m in [2u32, 3, 251, 65537, 655_373, (1 << 31) - 1] {
            let modulus = Modulus::new(m);
            let samples = [0, 1, 2, m / 3, m / 2, m - 2, m - 1].map(|x| x.min(m - 1));
            for a in samples {
                for b in samples {
                    let (a64, b64, m64) = (u64::from(a), u64::from(b), u64::from(m));
                    assert_eq!(u64::from(modulus.add(a, b)), (a64 + b64) % m64);
                    assert_eq!(u64::from(modulus.sub(a, b)), (a64 + m64 - b64) % m64);
                    assert_eq!(
                        u64::from(modulus.mul(a, b)),
                        a64 * b64 % m64,
                        "{a}·{b} mod {m}"
                    );
                }
                let by_a = modulus.multiplier(a);
                for b in samples {
                    assert_eq!(
                        u64::from(by_a.apply(b)),
                        u64::from(a) * u64::from(b) % u64::from(m)
                    );
                }
                if a != 0 {
                    assert_eq!(modulus.mul(a, modulus.inverse(a)), 1);
                }
            }
            let values: Vec<u32> = samples.into_iter().filter(|&a| a != 0).collect();
            let inverses = modulus.inverses(values.iter().copied());
            for (&a, &inverse) in values.iter().zip(&inverses) {
                assert_eq!(inverse, modulus.inverse(a), "{a}⁻¹ mod {m}");
            }
        }
    }

    #[test]
    fn mul_is_exact_over_a_whole_small_modulus() {
        let m = 251;
        let modulus = Modulus::new(m);
        for a in 0..m {
            for b in 0..m {
                assert_eq!(modulus.mul(a, b), a * b % m);
            }
            let by_a = modulus.multiplier(a);
            for b in 0..m {
                assert_eq!(by_a.apply(b), a * b % m);
            }
            if a != 0 {
                assert_eq!(modulus.mul(a, modulus.inverse(a)), 1);
            }
        }
        let all: Vec<u32> = (1..m).collect();
        let inverses = modulus.inverses(all.iter().copied());
        for (a, inverse) in all.into_iter().zip(inverses) {
            assert_eq!(a * inverse % m, 1);
        }
    }
}
