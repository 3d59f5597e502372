//! `xdp-lb`: loads the xlb eBPF programs (embedded at build time), attaches them,
//! and gives typed, safe access to their maps.
//!
//! The object file is built from `xdp-lb/ebpf` by `build.rs` (aya-build, nightly,
//! bpfel-unknown-none) and embedded with `include_bytes_aligned!`, so a binary
//! that links this crate carries its own datapath.
//!
//! - [`Datapath::load_with`]: map sizes, pinning ([`LoadOptions`]);
//! - [`Datapath::attach`] / [`Datapath::detach`]: per interface and mode;
//! - configuration: [`Datapath::set_config`], [`Datapath::set_address`],
//!   [`Datapath::upsert_service`], [`Datapath::put_backend`],
//!   [`Datapath::retire_backend`], [`Datapath::swap_table`];
//! - state: [`Datapath::conntrack`], [`Datapath::delete_flow`], counters;
//! - [`Datapath::simulate`]: which backend a flow would hit;
//! - [`Datapath::test_run`]: runs a program on a packet (`BPF_PROG_TEST_RUN`).

mod bench;
mod conntrack;
mod datapath;
mod error;
mod maps;
mod net;
mod options;
mod simulate;
mod stats;
mod test_run;

pub use conntrack::{FlowState, TrackedFlow};
pub use datapath::{AttachMode, Attachment, Datapath, ProgramName, VerifierReport};
pub use error::Error;
pub use maps::{AddressKind, BackendRecord, MAX_TABLE_SIZE};
pub use net::{Flow, Frontend, Protocol};
pub use options::{LoadOptions, MapSizes};
pub use simulate::Simulation;
pub use stats::{Counters, CtStats, ParseStats, VerdictStats};
pub use test_run::TestRunOutput;
pub use xdp_lb_common::{
    LAYOUT_VERSION,
    bench::{BENCH_MAX_PACKET, Rotation},
    config::Config,
    stats::{Counter, CtEvent, MAX_IP6_EXTENSIONS, ParseCounter, Verdict},
};

/// The eBPF object, as built for this host's endianness.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb"));

/// The kernel's limit on instructions the verifier processes for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_INSN_LIMIT: u32 = 1_000_000;
