//! Finding the first free slot of a permutation, several probes at a time.
//!
//! Once most slots are taken, a backend probes many taken slots before it finds a free one
//! (about `M·ln M` probes over a whole fill, most of them near the end). Probing one slot at a
//! time puts a data-dependent branch on every probe; here [`CHUNK`] consecutive slots of the
//! permutation are probed at once, with one branch per chunk. On x86-64 CPUs with AVX2 the
//! chunk is one gather of bitmap words (about five times faster than the scalar chunk on the
//! README's machine); elsewhere it is plain code. Both give the same answer, so the table never
//! depends on the CPU.

use crate::modular::Modulus;

/// Probes per chunk: one AVX2 register of `u32` slots.
pub(crate) const CHUNK: usize = 8;

/// The taken slots: bit `s % 32` of word `s / 32` is set once slot `s` is taken.
#[derive(Debug)]
pub(crate) struct Bitmap {
    words: Vec<u32>,
}

impl Bitmap {
    /// All `m` slots free.
    pub(crate) fn new(m: u32) -> Self {
        Self {
            words: vec![0; (m as usize).div_ceil(32)],
        }
    }

    /// Whether `slot` is taken, as 0 or 1.
    #[inline(always)]
    pub(crate) fn get(&self, slot: u32) -> u32 {
        (self.words[(slot >> 5) as usize] >> (slot & 31)) & 1
    }

    /// Marks `slot` taken and says whether it was free.
    #[inline(always)]
    pub(crate) fn take(&mut self, slot: u32) -> bool {
        let word = &mut self.words[(slot >> 5) as usize];
        let bit = 1 << (slot & 31);
        let free = *word & bit == 0;
        *word |= bit;
        free
    }

    /// The free slots below `m`, in slot order.
    pub(crate) fn free_slots(&self, m: u32) -> Vec<u32> {
        let mut free = Vec::new();
        for (w, &word) in self.words.iter().enumerate() {
            let mut bits = !word;
            while bits != 0 {
                let slot = (w as u32) << 5 | bits.trailing_zeros();
                if slot >= m {
                    break;
                }
                free.push(slot);
                bits &= bits - 1;
            }
        }
        free
    }
}

/// A backend's steps for chunked probing: `k·skip mod m` at index `k`, and `CHUNK·skip mod m`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Steps {
    offsets: [u32; CHUNK],
    stride: u32,
}

impl Steps {
    pub(crate) fn new(skip: u32, modulus: Modulus) -> Self {
        let mut offsets = [0; CHUNK];
        for k in 1..CHUNK {
            offsets[k] = modulus.add(offsets[k - 1], skip);
        }
        Self {
            offsets,
            stride: modulus.add(offsets[CHUNK - 1], skip),
        }
    }
}

/// How chunks are probed, chosen once per build from what the CPU offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prober {
    /// Plain code, any CPU.
    Scalar,
    /// One AVX2 gather per chunk. Only constructed when the CPU has AVX2 (see
    /// [`Prober::detect`]), which the `unsafe` call below relies on.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Prober {
    /// The fastest prober this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            return Prober::Avx2;
        }
        Prober::Scalar
    }

    /// The first free slot of the permutation `base, base + skip, …` (mod `m`), where `steps`
    /// belong to `skip`. `base < m`, and some slot must be free. The slot is not marked.
    #[inline(always)]
    pub(crate) fn first_free(
        self,
        bitmap: &Bitmap,
        modulus: Modulus,
        base: u32,
        steps: &Steps,
    ) -> u32 {
        match self {
            Prober::Scalar => first_free_scalar(bitmap, modulus, base, steps),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Prober::Avx2` exists only when `detect` found AVX2 on this CPU.
            Prober::Avx2 => unsafe { avx2::first_free(bitmap, modulus, base, steps) },
        }
    }
}

fn first_free_scalar(bitmap: &Bitmap, modulus: Modulus, mut base: u32, steps: &Steps) -> u32 {
    loop {
        let mut taken = 0;
        for (k, &offset) in steps.offsets.iter().enumerate() {
            taken |= bitmap.get(modulus.add(base, offset)) << k;
        }
        let free = !taken & ((1 << CHUNK) - 1);
        if free != 0 {
            // The first free probe in permutation order.
            return modulus.add(base, steps.offsets[free.trailing_zeros() as usize]);
        }
        base = modulus.add(base, steps.stride);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_ps, _mm256_i32gather_epi32,
        _mm256_loadu_si256, _mm256_min_epu32, _mm256_movemask_ps, _mm256_set1_epi32,
        _mm256_slli_epi32, _mm256_srli_epi32, _mm256_srlv_epi32, _mm256_sub_epi32,
    };

    use super::{Bitmap, CHUNK, Steps};
    use crate::modular::Modulus;

    /// [`super::first_free_scalar`], eight probes per gather.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn first_free(
        bitmap: &Bitmap,
        modulus: Modulus,
        mut base: u32,
        steps: &Steps,
    ) -> u32 {
        const _: () = assert!(CHUNK == 8, "one __m256i holds eight u32 slots");
        let m = modulus.get();
        // Slots are below `m < 2^31`, so they are the same as `i32` and as `u32`.
        let m_v = _mm256_set1_epi32(m as i32);
        let low5 = _mm256_set1_epi32(31);
        // SAFETY: `offsets` is `[u32; 8]`, 32 readable bytes; `loadu` allows any alignment.
        let offsets: __m256i = unsafe { _mm256_loadu_si256(steps.offsets.as_ptr().cast()) };
        let words = bitmap.words.as_ptr().cast::<i32>();
        loop {
            // `base + offset < 2m`; the unsigned minimum with `slot − m` reduces it below `m`,
            // as `Modulus::add` does.
            let slots = _mm256_add_epi32(_mm256_set1_epi32(base as i32), offsets);
            let slots = _mm256_min_epu32(slots, _mm256_sub_epi32(slots, m_v));
            // SAFETY: every slot is below `m` (above), so every word index `slot / 32` is
            // below `⌈m/32⌉ = words.len()`: each of the eight 4-byte reads is in bounds.
            let gathered =
                unsafe { _mm256_i32gather_epi32::<4>(words, _mm256_srli_epi32::<5>(slots)) };
            let bits = _mm256_srlv_epi32(gathered, _mm256_and_si256(slots, low5));
            // The taken bit of each lane moved to its sign bit, then one bit per lane.
            let taken = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_slli_epi32::<31>(bits)));
            let free = !(taken as u32) & 0xff;
            if free != 0 {
                return modulus.add(base, steps.offsets[free.trailing_zeros() as usize]);
            }
            base = modulus.add(base, steps.stride);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bitmap with a pseudo-random fraction of the slots taken.
    fn bitmap(m: u32, taken_per_mille: u64, seed: u64) -> Bitmap {
        let mut bitmap = Bitmap::new(m);
        let mut x = seed;
        for slot in 0..m {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            if (x >> 33) % 1000 < taken_per_mille {
                bitmap.take(slot);
            }
        }
        bitmap
    }

    /// The first free slot by walking one slot at a time.
    fn walk(bitmap: &Bitmap, modulus: Modulus, mut slot: u32, skip: u32) -> u32 {
        while bitmap.get(slot) == 1 {
            slot = modulus.add(slot, skip);
        }
        slot
    }

    #[test]
    fn every_prober_finds_what_a_walk_finds() {
        let probers = [Prober::Scalar, Prober::detect()];
        for (m, taken) in [
            (251, 500),
            (4093, 950),
            (65537, 990),
            (65537, 999),
            (2, 500),
            (37, 0),
        ] {
            let modulus = Modulus::new(m);
            let bitmap = bitmap(m, taken, u64::from(m));
            if bitmap.free_slots(m).is_empty() {
                continue;
            }
            for (base, skip) in [
                (0, 1),
                (m - 1, m - 1),
                (m / 3, m / 2 + 1),
                (7 % m, 5 % (m - 1) + 1),
            ] {
                let expected = walk(&bitmap, modulus, base, skip);
                for prober in probers {
                    let found =
                        prober.first_free(&bitmap, modulus, base, &Steps::new(skip, modulus));
                    assert_eq!(found, expected, "{prober:?} m={m} base={base} skip={skip}");
                }
            }
        }
    }

    #[test]
    fn free_slots_lists_the_clear_bits_below_m() {
        let mut bitmap = Bitmap::new(70);
        for slot in (0..70).filter(|s| s % 3 != 0) {
            assert!(bitmap.take(slot));
        }
        assert!(!bitmap.take(1), "taking twice reports the slot as taken");
        let expected: Vec<u32> = (0..70).filter(|s| s % 3 == 0).collect();
        assert_eq!(bitmap.free_slots(70), expected);
    }
}
