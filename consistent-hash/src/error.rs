//! What can go wrong when sizing, building or comparing tables.

use crate::primes::{MAX_TABLE_SIZE, TABLE_SIZES};

/// Every way a table request can be wrong. Each message names the bad input and what would be
/// right; nothing is half-built when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested table size is not a prime.
    #[error(
        "table size {size} is not a prime: Maglev needs a prime size so that every backend's \
         permutation visits every slot (nearest primes: {below} and {above})"
    )]
    NotPrime {
        /// The size asked for.
        size: u32,
        /// The largest prime below `size` (0 if there is none).
        below: u32,
        /// The smallest prime above `size`.
        above: u32,
    },
    /// The requested table size is below 2 or above [`MAX_TABLE_SIZE`].
    #[error("table size {size} is out of range: it must be a prime from 2 to {MAX_TABLE_SIZE}")]
    SizeOutOfRange {
        /// The size asked for.
        size: u32,
    },
    /// Two backends were given the same key.
    #[error(
        "backend key \"{key}\" is given twice: keys identify backends and must be unique \
         (merge the two entries or give them distinct keys)"
    )]
    DuplicateKey {
        /// The repeated key, with non-printable bytes escaped.
        key: String,
    },
    /// A backend was given an empty key.
    #[error(
        "backends[{index}] has an empty key: give it a stable identity such as \"198.18.2.5:8080/TCP\""
    )]
    EmptyKey {
        /// Position of the backend in the input.
        index: usize,
    },
    /// No backend has a positive weight, so there is nothing to put in the table.
    #[error(
        "none of the {backends} backends has a positive weight: a table needs at least one; \
         a service without usable backends should be refused, not given a table"
    )]
    NoActiveBackends {
        /// Number of backends given (all with weight 0, or none at all).
        backends: usize,
    },
    /// More backends with a positive weight than slots in the table.
    #[error(
        "{backends} backends with a positive weight do not fit a table of {size} slots: \
         use a size above {backends} (at least 100 slots per backend for a 1% balance)"
    )]
    TooManyBackends {
        /// Backends with a positive weight.
        backends: usize,
        /// The table size.
        size: u32,
    },
    /// The sizing policy has no listed size with more than 100 slots per backend.
    #[error(
        "{backends} backends need a table of more than {needed} slots, but the largest size \
         of the list is {largest}: split the service or build with an explicit larger prime",
        needed = *backends as u64 * 100, largest = TABLE_SIZES[TABLE_SIZES.len() - 1]
    )]
    NoFittingSize {
        /// Backends with a positive weight.
        backends: usize,
    },
    /// The sizing policy's minimum is above the largest listed size.
    #[error(
        "minimum table size {min_size} is above the largest size of the list ({largest}): \
         pick a minimum from 1 to {largest}",
        largest = TABLE_SIZES[TABLE_SIZES.len() - 1]
    )]
    MinimumTooLarge {
        /// The configured minimum.
        min_size: u32,
    },
    /// Two tables of different sizes were compared slot by slot.
    #[error(
        "tables of {old} and {new} slots cannot be compared slot by slot: a resize remaps \
         nearly every flow, so write the whole new table"
    )]
    SizeMismatch {
        /// Size of the old table.
        old: u32,
        /// Size of the new table.
        new: u32,
    },
}
