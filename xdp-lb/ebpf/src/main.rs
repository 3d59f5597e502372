//! The xlb eBPF programs.
//!
//! - `xdp_lb`: the NIC-side program: parse, reply-direction reverse NAT,
//!   frontend lookup, conntrack, Maglev, DNAT and forwarding (`lb` decides,
//!   `xdp` applies).
//! - `tc_lb_ingress` / `tc_lb_egress`: the same core on the host side of pod
//!   veths (tcx), with skb-aware rewrites (`tc`); `tc_lb_uplink`: at the
//!   egress of the node's uplinks, for what the node itself sends.
//! - `tc_probe_encap`: at the egress of the LB's uplinks, wraps the packets
//!   of health probes of direct-server-return backends (marked by the agent)
//!   as `xdp_lb` wraps a client's, and sends them to their backend.
//! - `xdp_decap`: on the backends of direct-server-return services, strips the
//!   outer header of packets for configured VIPs and passes the inner packet.
//! - `xdp_pass`: passes everything. Rigs attach it to the receiving end of a veth
//!   that another program redirects into (this kernel delivers XDP_REDIRECT into
//!   a veth only when the peer has an XDP program).
//! - `xdp_bench`: restores a stored packet and tail-calls the program under
//!   test, so that `BPF_PROG_TEST_RUN` with `repeat` measures rewriting paths
//!   on their input (DESIGN.md, "Measuring ns/packet", method B).
//! - `xdp_floor`: the benchmark floor of DESIGN.md — parse Ethernet/IPv4/TCP, bump
//!   one per-CPU counter, pass.
//! - `xdp_sink`: counts every frame (in the floor's counter) and drops it: the
//!   netns rig's receiving end when a figure should isolate the path under test
//!   from the receiving host's stack.
// Only the bpf target is a real build; on the host the crate is compiled as an
// ordinary binary so that `cargo clippy --workspace` checks this code too.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `asm!` on the bpf target: word access to packet bytes (`unaligned`).
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![no_builtins]
#![allow(
    unreachable_pub,
    reason = "a binary crate: `pub` marks what a module offers the rest of the crate"
)]

mod answer;
mod bench;
mod lb;
mod maps;
mod packet;
mod parse;
mod tc;
mod unaligned;
mod wire;
mod xdp;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::packet::Frame;

/// The build's version stamp, written by the loader before the object is
/// loaded (`EbpfLoader::override_global`, `xdp_lb::LoadOptions`), so that two
/// loads of one build can stand for two builds in upgrade tests, and a pinned
/// link's program can be told from another.
///
/// It lives alone in its own read-only section: aya makes that section a
/// frozen one-entry array map whose value is exactly this `u32`, which the
/// loader reads back (`Datapath::version_stamp`). `no_mangle` gives it the
/// symbol name the loader patches.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".rodata.stamp")]
static BUILD_STAMP: u32 = 0;

#[xdp]
pub fn xdp_lb(ctx: XdpContext) -> u32 {
    // Unused on purpose: without a reference from a program the linker drops
    // the static and its section (and with them the loader's only way to tell
    // builds apart). Volatile, so the read is not folded into the constant 0
    // of this object. The verifier knows the frozen value: this costs two
    // instructions and adds no state.
    // SAFETY: a plain read of an initialised, immutable static.
    let _stamp = unsafe { core::ptr::read_volatile(&raw const BUILD_STAMP) };
    xdp::run(&ctx)
}

#[classifier]
pub fn tc_lb_ingress(ctx: TcContext) -> i32 {
    tc::run(&ctx, tc::Hook::Ingress)
}

#[classifier]
pub fn tc_lb_egress(ctx: TcContext) -> i32 {
    tc::run(&ctx, tc::Hook::Egress)
}

#[classifier]
pub fn tc_lb_uplink(ctx: TcContext) -> i32 {
    tc::run(&ctx, tc::Hook::Uplink)
}

#[classifier]
pub fn tc_probe_encap(ctx: TcContext) -> i32 {
    tc::probe::run(&ctx)
}

#[xdp]
pub fn xdp_bench(ctx: XdpContext) -> u32 {
    bench::run(&ctx)
}

#[xdp]
pub fn xdp_decap(ctx: XdpContext) -> u32 {
    xdp::decap::run(&ctx)
}

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn xdp_floor(ctx: XdpContext) -> u32 {
    let frame = Frame::new(ctx.data(), ctx.data_end());
    if parse::is_plain_tcp4(&frame) {
        maps::count_floor(frame.len());
    }
    xdp_action::XDP_PASS
}

#[xdp]
pub fn xdp_sink(ctx: XdpContext) -> u32 {
    maps::count_floor(Frame::new(ctx.data(), ctx.data_end()).len());
    xdp_action::XDP_DROP
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // Unreachable: the verifier rejects any program with a reachable panic path.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
