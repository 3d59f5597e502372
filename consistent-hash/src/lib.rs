//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): weighted, explicitly seeded,
//! deterministic lookup tables, and the tools to size, diff and judge them.
//!
//! Every node and every load-balancer instance computes the same [`Table`] from the same seed,
//! size and backends, so a flow lands on the same backend wherever it is handled.
//!
//! ```
//! # #[cfg(feature = "std")]
//! # fn main() -> Result<(), consistent_hash::Error> {
//! use consistent_hash::{Backend, Diff, Disruption, SizingPolicy, Table};
//!
//! let backends: Vec<Backend> =
//!     (1..=4).map(|i| Backend::new(format!("198.18.2.{i}:8080/TCP"))).collect();
//! let size = SizingPolicy::default().size_for(backends.len(), None)?; // 509 > 100 · 4
//! let old = Table::build(7, size, backends.clone())?;
//!
//! let mut fewer = backends;
//! fewer.remove(2);
//! let new = Table::build(7, size, fewer)?;
//! let diff = Diff::between(&old, &new)?; // write only these slots
//! let disruption = Disruption::between(&old, &new)?;
//! assert_eq!(diff.len() as u32, disruption.moved);
//! assert!(disruption.kept_moved_share() < 0.05);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "std"))]
//! # fn main() {}
//! ```
//!
//! # Modules and guarantees
//! - [`hash`]: the specified, seeded byte hash, and the flow hash the datapath uses (`no_std`,
//!   available without the `std` feature, so the eBPF programs run the very same code).
//! - [`primes`]: the listed table sizes and a primality test (`no_std`).
//! - [`SizingPolicy`] picks a size per service: `M > 100·N`, with hysteresis.
//! - [`Table::build`] populates a table: backend order, weights and the population loop are
//!   documented on [`Table`]. The loop keeps O(N) state — a cursor and a step per backend, no
//!   `N × M` permutation matrix — plus an `M`-bit map of the taken slots.
//! - [`Diff`] lists the slots that change between two tables; [`Balance`] and [`Disruption`]
//!   measure a table and a change.
// Unit tests run with std even without the feature: the test harness needs it.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

pub mod hash;
pub mod primes;

#[cfg(feature = "std")]
mod analysis;
#[cfg(feature = "std")]
mod diff;
#[cfg(feature = "std")]
mod error;
#[cfg(feature = "std")]
mod modular;
#[cfg(feature = "std")]
mod populate;
#[cfg(feature = "std")]
mod probe;
#[cfg(feature = "std")]
mod sizing;
#[cfg(feature = "std")]
mod table;
#[cfg(feature = "std")]
mod weights;

#[cfg(feature = "std")]
pub use analysis::{Balance, Disruption};
#[cfg(feature = "std")]
pub use diff::{Diff, SlotChange};
#[cfg(feature = "std")]
pub use error::Error;
pub use hash::{
    FlowKey, FlowWords, flow_hash, flow_hash_client_ip, flow_hash_client_ip_words, flow_hash_words,
    hash64, slot_of,
};
#[cfg(feature = "std")]
pub use sizing::{SizingPolicy, TableSize};
#[cfg(feature = "std")]
pub use table::{Backend, Permutation, Table};
