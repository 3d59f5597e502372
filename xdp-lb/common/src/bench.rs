//! The benchmark wrapper's input: the packet `xdp_bench` writes back before
//! every run (DESIGN.md, "Measuring ns/packet", method B), and the fields it
//! rotates so that every run can be a new flow or hit another service.

use crate::{conntrack::FlowTuple, pod::impl_pod};

/// The longest packet the wrapper restores (a power of two).
pub const BENCH_MAX_PACKET: usize = 512;
/// How many fields the wrapper can rotate: the service (one or two fields),
/// the client in step with it (so that flows of different services never
/// share a client, whose translated tuples would clash), and the flows of a
/// service.
pub const BENCH_ROTATIONS: usize = 4;

/// A 16-bit big-endian field the wrapper rewrites before run `n` (counting
/// from 0) to `base + (n / divisor) % modulus`. `offset` 0 means unused (byte 0
/// is the destination MAC, never a rotated field). The packet's checksums are
/// not adjusted: the programs under test do not verify them, and a benchmark
/// that checks output bytes computes the expected frame for the same `n`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rotation {
    pub offset: u16,
    pub base: u16,
    pub modulus: u32,
    pub divisor: u32,
}
const _: () = assert!(size_of::<Rotation>() == 12);

/// Value of the `BENCH_INPUT` array (slot 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BenchInput {
    /// Bytes of `packet` in use.
    pub len: u32,
    pub _pad: u32,
    /// A tracked flow the wrapper deletes before every run, with its reply
    /// entry, so that one packet, never rotated, is a new flow in every run
    /// over the same warm buckets (as Katran's SYN figure repeats one
    /// packet); the deletion is timed with the run. None when its protocol
    /// is 0, which no tracked flow has (the default).
    pub forget: FlowTuple,
    pub rotations: [Rotation; BENCH_ROTATIONS],
    /// Where each rotation stands, advanced by the wrapper after every run:
    /// counting beats dividing (a BPF division costs tens of cycles, and
    /// every row, the floor included, pays the wrapper). Zeroed whenever the
    /// input is written (a test run executes on one CPU).
    pub steps: [RotationStep; BENCH_ROTATIONS],
    pub packet: [u8; BENCH_MAX_PACKET],
}
const _: () = assert!(size_of::<BenchInput>() == 8 + 40 + 48 + 32 + BENCH_MAX_PACKET);

/// A rotation's position: run `n` has `step == (n / divisor) % modulus` and
/// `within == n % divisor` (see `Rotation::value`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RotationStep {
    pub step: u32,
    pub within: u32,
}

impl RotationStep {
    /// The field's value in this run.
    #[inline(always)]
    pub const fn value(&self, rotation: &Rotation) -> u16 {
        rotation.base.wrapping_add(self.step as u16)
    }

    /// Moves on to the next run.
    #[inline(always)]
    pub const fn advance(&mut self, rotation: &Rotation) {
        self.within += 1;
        if self.within >= rotation.divisor {
            self.within = 0;
            self.step = self.step.wrapping_add(1);
            if self.step == rotation.modulus {
                self.step = 0;
            }
        }
    }
}

impl Default for BenchInput {
    fn default() -> Self {
        Self {
            len: 0,
            _pad: 0,
            forget: FlowTuple::default(),
            rotations: [Rotation::default(); BENCH_ROTATIONS],
            steps: [RotationStep::default(); BENCH_ROTATIONS],
            packet: [0; BENCH_MAX_PACKET],
        }
    }
}

impl Rotation {
    /// The value the field takes in run `n`.
    pub const fn value(&self, n: u32) -> u16 {
        let divisor = if self.divisor == 0 { 1 } else { self.divisor };
        let step = if self.modulus == 0 {
            n / divisor
        } else {
            (n / divisor) % self.modulus
        };
        self.base.wrapping_add(step as u16)
    }
}

impl_pod!(Rotation, RotationStep, BenchInput);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_steps_give_the_formulas_values() {
        for (modulus, divisor) in [(0, 1), (0, 0), (7, 1), (5, 3), (1, 4), (0, 6)] {
            let rotation = Rotation {
                offset: 40,
                base: 65_530,
                modulus,
                divisor,
            };
            let mut step = RotationStep::default();
            for n in 0..100 {
                assert_eq!(
                    step.value(&rotation),
                    rotation.value(n),
                    "{rotation:?} run {n}"
                );
                step.advance(&rotation);
            }
        }
    }
}
