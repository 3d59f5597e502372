//! `xdp_bench`: the measuring wrapper of DESIGN.md's method B. With a
//! `repeat` above 1, `BPF_PROG_TEST_RUN` does not restore the packet between
//! runs, so a program that rewrites it would measure its own output from the
//! second run on. This wrapper writes the original packet back (with the
//! fields it is told to rotate set for this run, so a run can be a new flow),
//! then tail-calls the program under test (slot 0 of `BENCH_TARGET`); the
//! floor is measured through the same wrapper, so the ratio compares like
//! with like. A program that moved the frame's head (an encapsulation grows
//! it) has it moved back first, so the bytes go where the frame began; the
//! measured cases leave the tail where it was.

use aya_ebpf::{
    bindings::xdp_action::XDP_ABORTED,
    btf_maps::{Array, ProgramArray},
    helpers::{bpf_xdp_adjust_head, bpf_xdp_store_bytes},
    macros::btf_map,
    programs::XdpContext,
};
use xdp_lb_common::bench::{BENCH_MAX_PACKET, BENCH_ROTATIONS, BenchInput};

use crate::lb::conntrack;

const _: () = assert!(BENCH_MAX_PACKET.is_power_of_two());

/// The packet to restore (slot 0), written by the loader.
#[btf_map]
static BENCH_INPUT: Array<BenchInput, 1> = Array::new();

/// The program under test (slot 0), set by the loader.
#[btf_map]
static BENCH_TARGET: ProgramArray<1> = ProgramArray::new();

/// Restores the packet and runs the program under test. XDP_ABORTED means the
/// setup is wrong (no input, or no target): a benchmark checks the verdict.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(input) = BENCH_INPUT.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // SAFETY: a map value of the right type.
    let len = unsafe { (*input).len };
    if len == 0 || len as usize > BENCH_MAX_PACKET {
        return XDP_ABORTED;
    }
    // A no-op for the lengths that passed the check, written so that the
    // verifier sees 1..=BENCH_MAX_PACKET (LLVM folds the check above into a
    // form it cannot follow).
    let len = ((len - 1) & (BENCH_MAX_PACKET as u32 - 1)) + 1;
    // The last run's head, moved back to where the frame began: a positive
    // delta shrinks the head, a negative one grows it.
    let now = (ctx.data_end() - ctx.data()) as i64;
    let moved = now - i64::from(len);
    // SAFETY: the program's context; the helper checks the bounds.
    if moved != 0 && unsafe { bpf_xdp_adjust_head(ctx.ctx, moved as i32) } != 0 {
        return XDP_ABORTED;
    }
    // One helper call for the whole frame. SAFETY: `len` bytes of the map
    // value are readable; the helper checks them against the packet's length.
    let stored =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, (*input).packet.as_mut_ptr().cast(), len) };
    if stored != 0 {
        return XDP_ABORTED;
    }
    // SAFETY: a map value of the right type; this CPU runs the test alone.
    let input = unsafe { &mut *input };
    // The rotated fields, written straight into the packet (a helper call
    // each would weigh on every row, the floor included).
    let (data, end) = (ctx.data(), ctx.data_end());
    for i in 0..BENCH_ROTATIONS {
        let rotation = input.rotations[i];
        if rotation.offset == 0 {
            continue;
        }
        let offset = usize::from(rotation.offset) & (BENCH_MAX_PACKET - 1);
        if data + offset + 2 > end {
            return XDP_ABORTED;
        }
        let step = &mut input.steps[i];
        // SAFETY: the two bytes lie inside the packet, checked just above.
        unsafe {
            ((data + offset) as *mut [u8; 2]).write_unaligned(step.value(&rotation).to_be_bytes());
        }
        step.advance(&rotation);
    }
    if input.forget.proto != 0 {
        conntrack::forget(&input.forget);
    }
    // SAFETY: a tail call with this program's own context.
    unsafe { BENCH_TARGET.tail_call(ctx, 0) };
    XDP_ABORTED
}
