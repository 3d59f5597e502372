//! Setting up the `xdp_bench` wrapper (DESIGN.md, "Measuring ns/packet", method B).

use aya::maps::{Array, ProgramArray};
use xdp_lb_common::{
    bench::{BENCH_MAX_PACKET, BENCH_ROTATIONS, BenchInput, Rotation},
    conntrack::FlowTuple,
};

use crate::{
    Datapath, Error, Flow, ProgramName,
    maps::{BENCH_INPUT, BENCH_TARGET, map_err},
};

impl Datapath {
    /// Makes `xdp_bench` restore `packet` before every run and then run
    /// `program`. Measure with `test_run_repeat(ProgramName::XdpBench, packet, n)`.
    pub fn bench_target(&mut self, program: ProgramName, packet: &[u8]) -> Result<(), Error> {
        self.bench_target_rotating(program, packet, &[])
    }

    /// Like [`Self::bench_target`], and before run `n` (from 0, counted anew
    /// by each call of this method) each rotation's field is set to its
    /// [`Rotation::value`] for `n`.
    pub fn bench_target_rotating(
        &mut self,
        program: ProgramName,
        packet: &[u8],
        rotations: &[Rotation],
    ) -> Result<(), Error> {
        self.set_bench_input(program, packet, rotations, None)
    }

    /// Like [`Self::bench_target`], and before every run `xdp_bench` deletes
    /// the tracked flow `forget` and its reply entry: a packet of that flow
    /// is then a new flow in every run, its entries written over warm
    /// buckets. The deletion's lookups are timed with the run.
    pub fn bench_target_forgetting(
        &mut self,
        program: ProgramName,
        packet: &[u8],
        forget: &Flow,
    ) -> Result<(), Error> {
        self.set_bench_input(program, packet, &[], Some(forget.tuple()))
    }

    fn set_bench_input(
        &mut self,
        program: ProgramName,
        packet: &[u8],
        rotations: &[Rotation],
        forget: Option<FlowTuple>,
    ) -> Result<(), Error> {
        if rotations.len() > BENCH_ROTATIONS
            || rotations
                .iter()
                .any(|r| r.offset == 0 || usize::from(r.offset) + 2 > packet.len())
        {
            return Err(Error::InvalidOption {
                option: "bench rotations",
                reason: "at most 4, each a 16-bit field inside the packet past byte 0",
            });
        }
        if packet.is_empty() || packet.len() > BENCH_MAX_PACKET {
            return Err(Error::InvalidOption {
                option: "bench packet",
                reason: "must be 1..=512 bytes",
            });
        }
        if program == ProgramName::XdpBench {
            return Err(Error::InvalidOption {
                option: "bench target",
                reason: "the wrapper cannot measure itself",
            });
        }
        let fd = self
            .program(program)?
            .fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|source| Error::ProgramInfo {
                program: program.as_str(),
                source,
            })?;
        let mut input = BenchInput {
            len: packet.len() as u32,
            ..BenchInput::default()
        };
        if let Some(tuple) = forget {
            input.forget = tuple;
        }
        input.packet[..packet.len()].copy_from_slice(packet);
        input.rotations[..rotations.len()].copy_from_slice(rotations);
        Array::<_, BenchInput>::try_from(self.map_mut(BENCH_INPUT)?)
            .map_err(map_err(BENCH_INPUT, "open"))?
            .set(0, input, 0)
            .map_err(map_err(BENCH_INPUT, "write"))?;
        ProgramArray::try_from(self.map_mut(BENCH_TARGET)?)
            .map_err(map_err(BENCH_TARGET, "open"))?
            .set(0, &fd, 0)
            .map_err(map_err(BENCH_TARGET, "write"))
    }
}
