//! The Maglev population loop (Eisenbud et al., NSDI 2016, §3.4), with O(N) scratch.
//!
//! Backends take turns; on its turn a backend walks its permutation
//! `offset, offset + skip, offset + 2·skip, … (mod M)` from where it stopped last time and takes
//! the first free slot. Instead of the paper's `N × M` permutation matrix (or a multiplication
//! and a division per step), each backend keeps only its *cursor*, the next slot of its
//! permutation, advanced by one addition and one conditional subtraction (`cursor < M` and
//! `skip < M`, so `cursor + skip < 2M` never overflows for `M < 2^31`).
//!
//! Which slots are taken is kept in a bitmap (`M/8` bytes: 8 KiB for `M = 65537`, which stays in
//! the L1 cache) rather than read from the table itself (`4·M` bytes), which is only written,
//! once per slot. A fill probes about `M·ln M` slots, and most of them in its last phase, where a
//! backend passes many taken slots before it finds one of the few free ones (the coupon
//! collector's tail: for `M = 65537, N = 1000`, the first half of the slots costs 6% of the
//! probes, the last 1% of the slots 58%). So the fill changes its method as the table fills up,
//! always with the same result:
//! 1. while less than [`CHUNK_AFTER`] of the slots are taken (and in tables below
//!    [`CHUNK_FROM_SIZE`] slots, until the last phase), one probe at a time: the first probe
//!    mostly succeeds;
//! 2. then [`crate::probe::CHUNK`] probes at a time (one AVX2 gather where the CPU has it), with
//!    one branch per chunk instead of one mispredicted branch per take;
//! 3. for the last `√M / 2` free slots, no walk at all: the backend takes the free slot that is
//!    the fewest steps ahead of its cursor, `(slot − cursor)·skip⁻¹ mod M` steps — exactly the
//!    one the walk would reach first, since every slot the walk passed is taken — at the cost
//!    of one multiplication per free slot instead of about `M / free` probes.
//!
//! The order of turns comes from the quotas (see [`crate::weights`]): with `c` the largest quota,
//! the fill runs `c` rounds; in each round every backend, in table order, adds its quota to a
//! credit that starts at `c − 1`, and takes a turn when the credit reaches `c` (then loses `c`).
//! That is Katran's weighted Maglev (`MaglevHashV2`) with the quota as the weight, so each
//! backend takes exactly its quota and its turns are spread evenly over the fill, starting in the
//! first round. With equal weights every round is a full round-robin and the last round stops
//! after the first `M mod N` backends: exactly the paper's order, which the fast path runs
//! directly.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;

use crate::modular::Modulus;
use crate::probe::{Bitmap, Prober, Steps};

/// Marks a slot no backend has taken yet, in tables under construction.
const FREE: u32 = u32::MAX;

/// The share of taken slots after which the walk probes in chunks (tuned on the README's
/// machine: from here on a chunk costs less than the mispredicted branches it saves). Any value
/// gives the same table.
pub(crate) const CHUNK_AFTER: f64 = 0.3;

/// Tables smaller than this never probe in chunks: their walks stay short (the longest are about
/// `2√M` probes), and with a bitmap of a few hundred words a gather keeps reading words that
/// the previous takes just wrote, which the store buffer cannot forward to it. Measured on the
/// README's machine: chunks cost 20% at `M = 4093` and save 25% at `M = 8191`.
const CHUNK_FROM_SIZE: u32 = 8000;

/// Below how many free slots the fill scans them instead of walking: about where a scan of the
/// free slots costs as much as a walk of `M / free` probes (tuned as [`CHUNK_AFTER`]).
fn scan_below(m: u32) -> u32 {
    m.isqrt() / 2
}

/// A backend's place in its permutation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cursor {
    /// The next slot of the permutation to probe (`< M`).
    pub(crate) next: u32,
    /// The permutation's step (`1 ≤ skip < M`).
    pub(crate) skip: u32,
}

/// How the turns are generated. The drivers give the same order where they apply; the choice
/// only affects speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Driver {
    /// Equal quotas (up to the last round): plain round-robin.
    RoundRobin,
    /// Credit rounds, scanning every backend each round: `O(c·N)`.
    Scan,
    /// Credit rounds, visiting only the backends due, through a heap: `O(M·log N)`.
    Heap,
}

impl Driver {
    /// The fastest driver that gives the credit order for these quotas.
    pub(crate) fn for_quotas(quotas: &[u32], m: u32) -> Self {
        let max = quotas.iter().copied().max().unwrap_or(0);
        let min = quotas.iter().copied().min().unwrap_or(0);
        // Round-robin is the credit order when no quota is more than one below the largest and
        // the smaller ones come last (their credit misses only the last round).
        let tail_only = quotas.windows(2).all(|w| w[0] >= w[1]);
        if max - min <= 1 && tail_only {
            Driver::RoundRobin
        } else if u64::from(max) * quotas.len() as u64 <= 16 * u64::from(m) {
            // A scan step costs a few cycles, a heap step a few dozen: scanning wins until the
            // rounds are mostly idle, as with one backend weighted far above the others.
            Driver::Scan
        } else {
            Driver::Heap
        }
    }
}

/// Fills a table of `m` slots. `cursors[i]` and `quotas[i]` belong to the backend whose index
/// in the table is `owners[i]`; the quotas are positive (backends without a slot are left out)
/// and sum to `m`, and every cursor walks a full permutation of `0..m` (`m` prime). Returns the
/// owner of every slot.
pub(crate) fn populate(
    m: u32,
    cursors: Vec<Cursor>,
    quotas: &[u32],
    owners: &[u32],
    driver: Driver,
    prober: Prober,
) -> Vec<u32> {
    let fill = Fill::new(m, cursors, prober);
    fill.run(quotas, owners, driver)
}

/// The table under construction.
struct Fill {
    modulus: Modulus,
    /// Free slots left.
    left: u32,
    /// Below this many free slots, [`Fill::take`] probes in chunks.
    chunk_below: u32,
    /// Below this many free slots, [`Fill::take`] scans the free slots instead of walking.
    scan_below: u32,
    prober: Prober,
    /// The taken slots (walking phases only).
    taken: Bitmap,
    slots: Vec<u32>,
    cursors: Vec<Cursor>,
    steps: Vec<Steps>,
    /// Set up on the first scan.
    tail: Option<Tail>,
}

/// The state of the scanning phase.
struct Tail {
    /// The free slots, in no particular order.
    free: Vec<u32>,
    /// `skip⁻¹ mod m` of every backend.
    inverses: Vec<u32>,
}

impl Fill {
    fn new(m: u32, cursors: Vec<Cursor>, prober: Prober) -> Self {
        debug_assert!(
            cursors
                .iter()
                .all(|c| c.next < m && (1..m).contains(&c.skip))
        );
        let modulus = Modulus::new(m);
        let steps = cursors
            .iter()
            .map(|c| Steps::new(c.skip, modulus))
            .collect();
        Self {
            modulus,
            left: m,
            // Small tables walk until they scan.
            chunk_below: if m < CHUNK_FROM_SIZE {
                scan_below(m)
            } else {
                (f64::from(m) * (1.0 - CHUNK_AFTER)) as u32
            },
            scan_below: scan_below(m),
            prober,
            taken: Bitmap::new(m),
            slots: vec![FREE; m as usize],
            cursors,
            steps,
            tail: None,
        }
    }

    fn run(mut self, quotas: &[u32], owners: &[u32], driver: Driver) -> Vec<u32> {
        debug_assert!(
            quotas.iter().all(|&q| q > 0),
            "callers leave out backends without slots"
        );
        debug_assert_eq!(
            quotas.iter().map(|&q| u64::from(q)).sum::<u64>(),
            u64::from(self.left)
        );
        match driver {
            Driver::RoundRobin => round_robin(&mut self, owners),
            Driver::Scan => credit_scan(&mut self, quotas, owners),
            Driver::Heap => credit_heap(&mut self, quotas, owners),
        }
        debug_assert!(self.slots.iter().all(|&s| s != FREE));
        self.slots
    }

    /// Backend `i` takes the next free slot of its permutation for `owner`. There must be a
    /// free slot: the drivers call this exactly `m` times.
    #[inline(always)]
    fn take(&mut self, i: usize, owner: u32) {
        debug_assert!(self.left > 0);
        let slot = if self.left > self.chunk_below {
            self.walk(i)
        } else if self.left > self.scan_below {
            let (base, steps) = (self.cursors[i].next, &self.steps[i]);
            let slot = self
                .prober
                .first_free(&self.taken, self.modulus, base, steps);
            self.taken.take(slot);
            slot
        } else {
            self.scan(i)
        };
        self.slots[slot as usize] = owner;
        self.cursors[i].next = self.modulus.add(slot, self.cursors[i].skip);
        self.left -= 1;
    }

    /// The plain walk, one probe at a time.
    #[inline(always)]
    fn walk(&mut self, i: usize) -> u32 {
        let Cursor { mut next, skip } = self.cursors[i];
        while !self.taken.take(next) {
            next = self.modulus.add(next, skip);
        }
        next
    }

    /// The free slot fewest steps ahead of backend `i`'s cursor (see the module documentation).
    fn scan(&mut self, i: usize) -> u32 {
        let modulus = self.modulus;
        let tail = self.tail.get_or_insert_with(|| Tail {
            free: self.taken.free_slots(modulus.get()),
            inverses: modulus.inverses(self.cursors.iter().map(|c| c.skip)),
        });
        let next = self.cursors[i].next;
        let steps_to = modulus.multiplier(tail.inverses[i]);
        // Distances are distinct (the permutation is a bijection), so the minimum is unique
        // and the order of `free` does not matter.
        let (mut best, mut best_at) = (u32::MAX, 0);
        for (at, &slot) in tail.free.iter().enumerate() {
            let distance = steps_to.apply(modulus.sub(slot, next));
            if distance < best {
                (best, best_at) = (distance, at);
            }
        }
        tail.free.swap_remove(best_at)
    }
}

/// The paper's order: every backend in turn until the table is full.
fn round_robin(fill: &mut Fill, owners: &[u32]) {
    loop {
        for (i, &owner) in owners.iter().enumerate() {
            fill.take(i, owner);
            if fill.left == 0 {
                return;
            }
        }
    }
}

/// Credit rounds (see the module documentation), scanning every backend each round.
fn credit_scan(fill: &mut Fill, quotas: &[u32], owners: &[u32]) {
    let rounds = quotas.iter().copied().max().unwrap_or(0);
    // Credits stay below `2·rounds ≤ 2m < 2^32`.
    let mut credit = vec![rounds - 1; quotas.len()];
    for _ in 0..rounds {
        for (i, (&quota, &owner)) in quotas.iter().zip(owners).enumerate() {
            credit[i] += quota;
            if credit[i] >= rounds {
                credit[i] -= rounds;
                fill.take(i, owner);
            }
        }
    }
}

/// Credit rounds, visiting only the backends whose turn is due. A backend with quota `q` takes
/// `⌈r·q/c⌉` turns in the first `r` rounds, so its `(k+1)`-th turn is in round `⌊k·c/q⌋ + 1`;
/// within a round, turns go in table order, as in the scan.
fn credit_heap(fill: &mut Fill, quotas: &[u32], owners: &[u32]) {
    let rounds = u64::from(quotas.iter().copied().max().unwrap_or(0));
    let mut taken = vec![0u32; quotas.len()];
    // `Reverse` makes the max-heap pop the earliest (round, index) first.
    let mut due: BinaryHeap<Reverse<(u64, usize)>> =
        (0..quotas.len()).map(|i| Reverse((1, i))).collect();
    while let Some(mut top) = due.peek_mut() {
        let Reverse((_, i)) = *top;
        fill.take(i, owners[i]);
        taken[i] += 1;
        if taken[i] == quotas[i] {
            PeekMut::pop(top);
        } else {
            // `k·c < m² < 2^62`.
            let k = u64::from(taken[i]);
            *top = Reverse((k * rounds / u64::from(quotas[i]) + 1, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::quotas;

    fn cursors(m: u32, n: u32) -> Vec<Cursor> {
        // Any full permutations do; these are spread by a multiplicative hash.
        (0..n)
            .map(|i| {
                let h = u64::from(i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
                Cursor {
                    next: (h % u64::from(m)) as u32,
                    skip: (h % u64::from(m - 1)) as u32 + 1,
                }
            })
            .collect()
    }

    fn counts(slots: &[u32], n: usize) -> Vec<u32> {
        let mut c = vec![0; n];
        for &s in slots {
            c[s as usize] += 1;
        }
        c
    }

    /// A fill with the phase boundaries moved: `chunk_after` and `scan_below` as given.
    fn fill_with_phases(
        m: u32,
        weights: &[u32],
        driver: Driver,
        prober: Prober,
        chunk_after: f64,
        scan_below: u32,
    ) -> Vec<u32> {
        let q = quotas(weights, m);
        let owners: Vec<u32> = (0..weights.len() as u32).collect();
        let mut fill = Fill::new(m, cursors(m, weights.len() as u32), prober);
        fill.chunk_below = (f64::from(m) * (1.0 - chunk_after)) as u32;
        fill.scan_below = scan_below;
        fill.run(&q, &owners, driver)
    }

    #[test]
    fn every_phase_and_prober_gives_the_same_table() {
        for (m, n) in [(251, 3), (4093, 40), (65537, 1000), (2, 1), (509, 509)] {
            let weights = vec![1; n];
            let plain = fill_with_phases(m, &weights, Driver::RoundRobin, Prober::Scalar, 1.0, 0);
            for prober in [Prober::Scalar, Prober::detect()] {
                // Scanning costs `free` multiplications a take: whole small tables only.
                let most = m.min(1000);
                for (chunk_after, scan_below) in [(0.0, 0), (0.3, 0), (0.0, most), (0.5, most / 2)]
                {
                    let table = fill_with_phases(
                        m,
                        &weights,
                        Driver::RoundRobin,
                        prober,
                        chunk_after,
                        scan_below,
                    );
                    assert!(
                        table == plain,
                        "m={m} n={n} {prober:?} {chunk_after} {scan_below}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_driver_gives_the_same_table_for_equal_quotas() {
        for (m, n) in [(251, 3), (509, 7), (1021, 1021), (2, 1), (4093, 40)] {
            let q = quotas(&vec![1; n as usize], m);
            let owners: Vec<u32> = (0..n).collect();
            let tables: Vec<Vec<u32>> = [Driver::RoundRobin, Driver::Scan, Driver::Heap]
                .into_iter()
                .map(|d| populate(m, cursors(m, n), &q, &owners, d, Prober::detect()))
                .collect();
            assert_eq!(tables[0], tables[1], "m={m} n={n}");
            assert_eq!(tables[0], tables[2], "m={m} n={n}");
            assert_eq!(Driver::for_quotas(&q, m), Driver::RoundRobin);
        }
    }

    #[test]
    fn scan_and_heap_agree_on_weighted_quotas() {
        for (m, weights) in [
            (251, vec![1, 2, 3]),
            (4093, vec![5, 1, 1, 1, 9, 2]),
            (8191, vec![1000, 1, 1]),
            (8191, (1..=50).collect()),
        ] {
            let q = quotas(&weights, m);
            let owners: Vec<u32> = (10..10 + weights.len() as u32).collect();
            let n = weights.len() as u32;
            let scan = populate(
                m,
                cursors(m, n),
                &q,
                &owners,
                Driver::Scan,
                Prober::detect(),
            );
            let heap = populate(m, cursors(m, n), &q, &owners, Driver::Heap, Prober::Scalar);
            assert_eq!(scan, heap, "m={m} weights={weights:?}");
            let mut expected = vec![0; 10];
            expected.extend_from_slice(&q);
            assert_eq!(counts(&scan, 10 + weights.len()), expected);
        }
    }

    #[test]
    fn driver_choice() {
        assert_eq!(Driver::for_quotas(&[3, 3, 2], 8), Driver::RoundRobin);
        // A smaller quota first is not the round-robin order.
        assert_eq!(Driver::for_quotas(&[2, 3, 3], 8), Driver::Scan);
        assert_eq!(Driver::for_quotas(&[1, 3, 4], 8), Driver::Scan);
        let mut skewed = vec![1; 99];
        skewed.push(65521 - 99);
        assert_eq!(Driver::for_quotas(&skewed, 65521), Driver::Heap);
    }

    #[test]
    fn a_single_backend_takes_its_whole_permutation() {
        let cursor = Cursor { next: 17, skip: 5 };
        let slots = populate(
            251,
            vec![cursor],
            &[251],
            &[0],
            Driver::RoundRobin,
            Prober::Scalar,
        );
        assert!(slots.iter().all(|&s| s == 0));
    }
}
