//! The maps of the programs, and the small helpers that update them.
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use xdp_lb_common::stats::{Counter, ParseCounter};

/// Per-CPU packets and bytes per parser verdict (`ParseCounter` slot).
#[btf_map]
static PARSE_STATS: PerCpuArray<Counter, { ParseCounter::COUNT as usize }> = PerCpuArray::new();

/// The single counter of the `xdp_floor` benchmark program.
#[btf_map]
static FLOOR_STATS: PerCpuArray<Counter, 1> = PerCpuArray::new();

#[inline(always)]
fn bump(slot: Option<*mut Counter>, bytes: usize) {
    if let Some(c) = slot {
        // SAFETY: per-CPU slot of this CPU; no other context writes it concurrently
        // (XDP and TC run with preemption disabled on one CPU).
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes as u64;
        }
    }
}

#[inline(always)]
pub fn count_parse(counter: ParseCounter, bytes: usize) {
    bump(PARSE_STATS.get_ptr_mut(counter as u32), bytes);
}

#[inline(always)]
pub fn count_floor(bytes: usize) {
    bump(FLOOR_STATS.get_ptr_mut(0), bytes);
}
