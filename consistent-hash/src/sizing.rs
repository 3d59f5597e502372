//! Table sizes: validated primes, and the policy that picks one per service.

use core::fmt;

use crate::Error;
use crate::primes::{MAX_TABLE_SIZE, TABLE_SIZES, is_prime, prime_above, prime_below};

/// A valid Maglev table size: a prime `M` with `2 ≤ M ≤` [`MAX_TABLE_SIZE`].
///
/// Any prime is accepted (benchmarks use 65537 and 655373); the [`SizingPolicy`] only ever
/// picks one of [`TABLE_SIZES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableSize(u32);

impl TableSize {
    /// Checks that `size` is a prime in range.
    ///
    /// # Errors
    /// [`Error::SizeOutOfRange`] below 2 or above [`MAX_TABLE_SIZE`]; [`Error::NotPrime`] (with
    /// the nearest primes) otherwise when `size` is composite.
    pub const fn new(size: u32) -> Result<Self, Error> {
        if size < 2 || size > MAX_TABLE_SIZE {
            return Err(Error::SizeOutOfRange { size });
        }
        if !is_prime(size) {
            return Err(Error::NotPrime {
                size,
                below: prime_below(size),
                above: prime_above(size),
            });
        }
        Ok(Self(size))
    }

    /// The number of slots.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for TableSize {
    type Error = Error;

    fn try_from(size: u32) -> Result<Self, Error> {
        Self::new(size)
    }
}

impl From<TableSize> for u32 {
    fn from(size: TableSize) -> u32 {
        size.0
    }
}

impl fmt::Display for TableSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How the size of a service's table follows its number of backends (DESIGN.md, State).
///
/// - **Fit**: a table *fits* `n` backends when `M > 100·n`, which keeps every backend within 1%
///   of its ideal share (see [`crate::Table`]). The *fitting size* for `n` is the smallest
///   prime of [`TABLE_SIZES`] that fits `n` and is at least the configured minimum.
/// - **Grow** as soon as the current size no longer fits (`M ≤ 100·n`), or is below the
///   minimum: to the fitting size.
/// - **Shrink** only when the current size is more than four times what `n` needs
///   (`M > 400·n`): to the fitting size.
/// - Otherwise **keep** the current size, even if a smaller one would fit.
///
/// Why: a new `M` remaps nearly every slot (only about `1/N` of the flows keep their backend by
/// chance), so a service whose backend count moves around a boundary must not flip between
/// two sizes. After any change `100·n < M`, and the fitting size is at most about twice what
/// `n` needs, so it is below `200·n` up to the rounding of the list. A shrink then needs `n` to
/// fall below a quarter of `M/100`, at least a factor two from where it grew; a backend count
/// oscillating by less than a factor two changes `M` at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SizingPolicy {
    /// The smallest size to use, whatever the backend count (rounded up to a listed size).
    /// A larger minimum trades memory (4 bytes a slot) for fewer resizes as a service grows.
    pub min_size: u32,
}

impl Default for SizingPolicy {
    /// No minimum beyond the smallest listed size, 251.
    fn default() -> Self {
        Self {
            min_size: TABLE_SIZES[0],
        }
    }
}

impl SizingPolicy {
    /// Slots per backend a table must exceed to fit: `M > 100·n`.
    pub const SLOTS_PER_BACKEND: u64 = 100;
    /// How many times too large a table may be before it shrinks: `M > 4·100·n`.
    pub const SHRINK_FACTOR: u64 = 4;

    /// A policy with the given minimum size.
    #[must_use]
    pub const fn with_min_size(min_size: u32) -> Self {
        Self { min_size }
    }

    /// The size for a service with `backends` backends of positive weight, given the size of
    /// its current table, if it has one (see the type's documentation for the rules).
    ///
    /// # Errors
    /// [`Error::NoFittingSize`] when even the largest listed size does not fit, and
    /// [`Error::MinimumTooLarge`] when the minimum is above the largest listed size.
    pub fn size_for(
        &self,
        backends: usize,
        current: Option<TableSize>,
    ) -> Result<TableSize, Error> {
        let needed = backends as u64 * Self::SLOTS_PER_BACKEND;
        if let Some(current) = current {
            let m = u64::from(current.get());
            let fits = m > needed && current.get() >= self.min_size;
            let too_large = m > needed * Self::SHRINK_FACTOR;
            if fits && !too_large {
                return Ok(current);
            }
            // Grow or shrink to the fitting size; a minimum at or above the current size makes
            // that the current size again.
        }
        self.fitting(backends)
    }

    /// The smallest listed size with `M > 100·backends` and `M ≥ min_size`, ignoring any current
    /// size.
    ///
    /// # Errors
    /// As [`SizingPolicy::size_for`].
    pub fn fitting(&self, backends: usize) -> Result<TableSize, Error> {
        let largest = TABLE_SIZES[TABLE_SIZES.len() - 1];
        if self.min_size > largest {
            return Err(Error::MinimumTooLarge {
                min_size: self.min_size,
            });
        }
        let needed = backends as u64 * Self::SLOTS_PER_BACKEND;
        TABLE_SIZES
            .iter()
            .copied()
            .find(|&m| u64::from(m) > needed && m >= self.min_size)
            .map(TableSize)
            .ok_or(Error::NoFittingSize { backends })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(m: u32) -> TableSize {
        TableSize::new(m).unwrap()
    }

    #[test]
    fn sizes_must_be_prime_and_in_range() {
        assert_eq!(TableSize::new(65537).map(TableSize::get), Ok(65537));
        assert_eq!(TableSize::new(655_373).map(u32::from), Ok(655_373));
        assert_eq!(TableSize::new(2).map(TableSize::get), Ok(2));
        assert_eq!(
            TableSize::new(65536),
            Err(Error::NotPrime {
                size: 65536,
                below: 65521,
                above: 65537
            })
        );
        assert_eq!(TableSize::new(1), Err(Error::SizeOutOfRange { size: 1 }));
        assert_eq!(TableSize::new(0), Err(Error::SizeOutOfRange { size: 0 }));
        assert_eq!(
            TableSize::new(MAX_TABLE_SIZE + 2),
            Err(Error::SizeOutOfRange {
                size: MAX_TABLE_SIZE + 2
            })
        );
        let message = TableSize::new(1000).unwrap_err().to_string();
        assert!(message.contains("1000 is not a prime") && message.contains("997 and 1009"));
    }

    #[test]
    fn fitting_is_the_smallest_listed_size_above_100_per_backend() {
        let policy = SizingPolicy::default();
        assert_eq!(policy.fitting(0), Ok(size(251)));
        assert_eq!(policy.fitting(1), Ok(size(251)));
        assert_eq!(policy.fitting(2), Ok(size(251)));
        assert_eq!(policy.fitting(3), Ok(size(509)));
        assert_eq!(policy.fitting(163), Ok(size(16381)));
        assert_eq!(policy.fitting(164), Ok(size(32749)));
        assert_eq!(policy.fitting(1310), Ok(size(131_071)));
        assert_eq!(
            policy.fitting(1311),
            Err(Error::NoFittingSize { backends: 1311 })
        );
        for n in 0..=1310 {
            let m = u64::from(policy.fitting(n).unwrap().get());
            assert!(m > 100 * n as u64);
        }
    }

    #[test]
    fn minimum_is_rounded_up_to_a_listed_size() {
        let policy = SizingPolicy::with_min_size(5000);
        assert_eq!(policy.fitting(1), Ok(size(8191)));
        assert_eq!(policy.fitting(100), Ok(size(16381)));
        assert_eq!(
            SizingPolicy::with_min_size(200_000).fitting(1),
            Err(Error::MinimumTooLarge { min_size: 200_000 })
        );
    }

    #[test]
    fn grows_as_soon_as_the_table_no_longer_fits() {
        let policy = SizingPolicy::default();
        let m = size(16381);
        assert_eq!(policy.size_for(163, Some(m)), Ok(m));
        assert_eq!(policy.size_for(164, Some(m)), Ok(size(32749)));
        // A table below a raised minimum grows to it.
        assert_eq!(
            SizingPolicy::with_min_size(16381).size_for(1, Some(size(251))),
            Ok(m)
        );
    }

    #[test]
    fn shrinks_only_when_four_times_too_large() {
        let policy = SizingPolicy::default();
        let m = size(32749);
        // 32749 > 400 · 81 but not > 400 · 82.
        assert_eq!(policy.size_for(82, Some(m)), Ok(m));
        assert_eq!(policy.size_for(81, Some(m)), Ok(size(8191)));
        assert_eq!(policy.size_for(0, Some(m)), Ok(size(251)));
        // The minimum stops a shrink.
        assert_eq!(
            SizingPolicy::with_min_size(32749).size_for(1, Some(m)),
            Ok(m)
        );
    }

    #[test]
    fn a_count_oscillating_around_a_boundary_changes_the_size_once() {
        let policy = SizingPolicy::default();
        // 163 ↔ 164 crosses the 16381 boundary; 1 ↔ 3 and 654 ↔ 656 cross others.
        for (low, high) in [(163, 164), (2, 3), (654, 656), (40, 41), (81, 82)] {
            let mut current = policy.size_for(low, None).unwrap();
            let mut sizes = vec![current];
            for _ in 0..10 {
                for n in [high, low] {
                    current = policy.size_for(n, Some(current)).unwrap();
                    if sizes.last() != Some(&current) {
                        sizes.push(current);
                    }
                }
            }
            assert!(sizes.len() <= 2, "{low} ↔ {high} went through {sizes:?}");
        }
    }

    #[test]
    fn any_walk_keeps_the_table_fitting() {
        let policy = SizingPolicy::default();
        let mut current = None;
        // Up one by one to the largest fitting count, then down again.
        for n in (0..=1310).chain((0..=1310).rev()) {
            let m = policy.size_for(n, current).unwrap();
            assert!(u64::from(m.get()) > 100 * n as u64, "n = {n}: {m}");
            assert!(
                u64::from(m.get()) <= 400 * (n as u64).max(1) || m.get() == 251,
                "n = {n}: {m}"
            );
            current = Some(m);
        }
    }
}
