//! Backends, their permutations, and the table built from them.

use core::fmt;

use crate::Error;
use crate::hash::{FlowKey, OFFSET_DOMAIN, SKIP_DOMAIN, flow_hash, hash64, hash64_u32_le, slot_of};
use crate::populate::{Cursor, Driver, populate};
use crate::probe::Prober;
use crate::sizing::TableSize;
use crate::weights::quotas;

/// A backend as the caller knows it: a stable key and a weight.
///
/// The key is what identifies the backend on every node (e.g. `198.18.2.5:8080/TCP`): the same
/// key gives the same permutation under the same seed, whatever else changes. Keys are compared
/// as bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Backend {
    /// The stable identity (non-empty, unique within a table).
    pub key: Vec<u8>,
    /// The relative weight; 0 drains the backend (it gets no slot).
    pub weight: u32,
}

impl Backend {
    /// A backend of weight 1.
    #[must_use]
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self::weighted(key, 1)
    }

    /// A backend with the given weight.
    #[must_use]
    pub fn weighted(key: impl Into<Vec<u8>>, weight: u32) -> Self {
        Self {
            key: key.into(),
            weight,
        }
    }

    /// The key for messages: UTF-8 as is, other bytes escaped.
    #[must_use]
    pub fn display_key(&self) -> String {
        match core::str::from_utf8(&self.key) {
            Ok(s) => s.to_owned(),
            Err(_) => self.key.escape_ascii().to_string(),
        }
    }
}

/// A backend's Maglev permutation of the slots: `offset, offset + skip, offset + 2·skip, …`
/// modulo `M` (paper §3.4), with
///
/// ```text
/// offset = hash64(key, seed ^ OFFSET_DOMAIN) % M
/// skip   = hash64(key, seed ^ SKIP_DOMAIN) % (M − 1) + 1
/// ```
///
/// ([`hash64`] and the domains are specified in [`crate::hash`]). `M` is prime and
/// `1 ≤ skip < M`, so the permutation visits every slot exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permutation {
    /// The first slot.
    pub offset: u32,
    /// The step between consecutive slots.
    pub skip: u32,
    size: u32,
}

impl Permutation {
    /// The permutation of the backend with `key`, under `seed`, for a table of `size` slots.
    #[must_use]
    pub fn of(key: &[u8], seed: u64, size: TableSize) -> Self {
        Self::from_hashes(offset_hash(key, seed), skip_hash(key, seed), size)
    }

    fn from_hashes(offset_hash: u64, skip_hash: u64, size: TableSize) -> Self {
        let m = u64::from(size.get());
        // `m − 1 ≥ 1`: the smallest size is 2. The results are below `m`, so they fit `u32`.
        Self {
            offset: (offset_hash % m) as u32,
            skip: (skip_hash % (m - 1) + 1) as u32,
            size: size.get(),
        }
    }

    /// The `j`-th slot of the permutation, `(offset + j·skip) mod M`.
    #[must_use]
    pub fn nth(&self, j: u64) -> u32 {
        let m = u64::from(self.size);
        ((u64::from(self.offset) + (j % m) * u64::from(self.skip)) % m) as u32
    }
}

fn offset_hash(key: &[u8], seed: u64) -> u64 {
    hash64(key, seed ^ OFFSET_DOMAIN)
}

fn skip_hash(key: &[u8], seed: u64) -> u64 {
    hash64(key, seed ^ SKIP_DOMAIN)
}

/// A Maglev lookup table: `M` slots, each naming one backend.
///
/// # How it is built
/// 1. **Order**: backends are put in *table order*, by `hash64(key, seed ^ OFFSET_DOMAIN)` and
///    then by key (the hash decides all but astronomically rare ties). The result therefore
///    does not depend on the order the caller gives them in.
/// 2. **Quotas**: the `M` slots are apportioned to the weights by the largest-remainder method
///    (leftover slots to the largest remainders, ties in table order), so backend `i` gets `cᵢ`
///    slots with `|cᵢ − M·wᵢ/W| < 1`, `W` the sum of the weights. Equal weights give `⌊M/N⌋` or
///    `⌈M/N⌉` slots each (max − min ≤ 1). So a backend's share is off its ideal share by less
///    than one slot, `1/M`: within 1% of the mean share `1/N` whenever `M > 100·N` (the
///    [sizing policy](crate::SizingPolicy)), which is within 1% of its own ideal for a backend
///    of at least average weight (and less than one slot, relatively more, for lighter ones).
///    Weight 0 drains a backend: it keeps its place in [`Table::backends`] but gets no slot; a
///    backend whose ideal is below one slot may get none either.
/// 3. **Population**: backends take turns, each taking the next free slot of its
///    [`Permutation`], until the table is full (paper §3.4); the turns are interleaved by quota
///    (Katran's weighted Maglev `MaglevHashV2`, with the quota as the weight, so every backend
///    takes exactly its quota): with `c` the largest quota, `c` rounds run, and in each round
///    every backend in table order adds its quota to a credit that starts at `c − 1` and takes a
///    turn whenever the credit reaches `c` (then loses `c`). Its turns are thus spread evenly
///    over the fill, starting in the first round. For equal weights that is exactly the paper's
///    round-robin.
///
/// Every step is integer arithmetic on specified hashes, so every node, CPU architecture and
/// Rust release builds the same table from the same seed, size and backends; the golden vectors
/// in the tests pin it.
#[derive(Clone, PartialEq, Eq)]
pub struct Table {
    seed: u64,
    size: TableSize,
    backends: Vec<Backend>,
    slots: Vec<u32>,
}

impl fmt::Debug for Table {
    /// The size, seed and backends; the slots are too many to print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("seed", &self.seed)
            .field("size", &self.size)
            .field("backends", &self.backends.len())
            .field("fingerprint", &format_args!("{:#018x}", self.fingerprint()))
            .finish_non_exhaustive()
    }
}

impl Table {
    /// Builds the table of `size` slots for `backends` under `seed`.
    ///
    /// Time: `O(N log N + M log M)` expected, the `M log M` being Maglev's probing (1 ms for
    /// `M = 65537`, `N = 1000` on the machine of the README). Memory: the table (`4·M` bytes),
    /// a bitmap of `M/8` bytes and `O(N)`.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::DuplicateKey`], [`Error::NoActiveBackends`] when no backend
    /// has a positive weight (an empty table would black-hole traffic; a service without
    /// backends is refused instead), and [`Error::TooManyBackends`] when more backends have a
    /// positive weight than there are slots.
    pub fn build(
        seed: u64,
        size: TableSize,
        backends: impl IntoIterator<Item = Backend>,
    ) -> Result<Self, Error> {
        let m = size.get();
        let mut entries: Vec<(u64, Backend)> = Vec::new();
        for (index, backend) in backends.into_iter().enumerate() {
            if backend.key.is_empty() {
                return Err(Error::EmptyKey { index });
            }
            entries.push((offset_hash(&backend.key, seed), backend));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
        // Equal keys have equal hashes, so duplicates end up next to each other.
        if let Some(pair) = entries
            .windows(2)
            .find(|pair| pair[0].1.key == pair[1].1.key)
        {
            return Err(Error::DuplicateKey {
                key: pair[0].1.display_key(),
            });
        }

        let active = entries.iter().filter(|(_, b)| b.weight > 0).count();
        if active == 0 {
            return Err(Error::NoActiveBackends {
                backends: entries.len(),
            });
        }
        if active > m as usize {
            return Err(Error::TooManyBackends {
                backends: active,
                size: m,
            });
        }

        let weights: Vec<u32> = entries.iter().map(|(_, b)| b.weight).collect();
        let all_quotas = quotas(&weights, m);
        let mut cursors = Vec::with_capacity(active);
        let mut quotas = Vec::with_capacity(active);
        let mut owners = Vec::with_capacity(active);
        for (index, ((hash, backend), &quota)) in entries.iter().zip(&all_quotas).enumerate() {
            if quota > 0 {
                let p = Permutation::from_hashes(*hash, skip_hash(&backend.key, seed), size);
                cursors.push(Cursor {
                    next: p.offset,
                    skip: p.skip,
                });
                quotas.push(quota);
                owners.push(index as u32);
            }
        }
        let driver = Driver::for_quotas(&quotas, m);
        let slots = populate(m, cursors, &quotas, &owners, driver, Prober::detect());
        let backends = entries.into_iter().map(|(_, b)| b).collect();
        Ok(Self {
            seed,
            size,
            backends,
            slots,
        })
    }

    /// The seed the table was built with.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The number of slots, `M`.
    #[must_use]
    pub fn size(&self) -> TableSize {
        self.size
    }

    /// The backends in table order (see the type's documentation), including those of weight 0.
    #[must_use]
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// For every slot, the index in [`Table::backends`] of the backend it names. This is what
    /// the datapath stores, after mapping each index to the backend's ID.
    #[must_use]
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The backend in `slot`.
    ///
    /// # Panics
    /// If `slot` is not below [`Table::size`].
    #[must_use]
    pub fn backend_at(&self, slot: u32) -> &Backend {
        &self.backends[self.slots[slot as usize] as usize]
    }

    /// The backend for a flow hash: the one in slot [`slot_of`]`(hash, M)`, as the datapath
    /// looks it up.
    #[must_use]
    pub fn lookup(&self, flow_hash: u32) -> &Backend {
        self.backend_at(slot_of(flow_hash, self.size.get()))
    }

    /// The backend for a flow, hashed with [`flow_hash`] under `flow_seed` (the datapath's seed,
    /// which need not be the table's).
    #[must_use]
    pub fn lookup_flow(&self, flow: &FlowKey, flow_seed: u64) -> &Backend {
        self.lookup(flow_hash(flow, flow_seed))
    }

    /// The index in [`Table::backends`] of the backend with `key`, if any (`O(log N)`).
    #[must_use]
    pub fn index_of(&self, key: &[u8]) -> Option<u32> {
        let hash = offset_hash(key, self.seed);
        self.backends
            .binary_search_by(|b| {
                offset_hash(&b.key, self.seed)
                    .cmp(&hash)
                    .then(b.key.as_slice().cmp(key))
            })
            .ok()
            .map(|i| i as u32)
    }

    /// How many slots each backend has, in table order.
    #[must_use]
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.backends.len()];
        for &s in &self.slots {
            counts[s as usize] += 1;
        }
        counts
    }

    /// A fingerprint of the table: [`hash64`] (seed 0) of the slots as little-endian `u32`
    /// backend indexes. Two nodes with the same fingerprint (and the same backends, which fix
    /// the indexes) route every flow alike.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        hash64_u32_le(&self.slots, 0)
    }
}
