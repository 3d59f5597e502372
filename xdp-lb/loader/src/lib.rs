//! `xdp-lb`: loads the xlb eBPF programs (embedded at build time), attaches them,
//! and gives typed, safe access to their maps.
//!
//! The object file is built from `xdp-lb/ebpf` by `build.rs` (aya-build, nightly,
//! bpfel-unknown-none) and embedded with `include_bytes_aligned!`, so a binary
//! that links this crate carries its own datapath.

mod datapath;
mod error;
mod stats;
mod test_run;

pub use datapath::{AttachMode, Attachment, Datapath, ProgramName, VerifierReport};
pub use error::Error;
pub use stats::ParseStats;
pub use test_run::TestRunOutput;
pub use xdp_lb_common::{
    LAYOUT_VERSION,
    stats::{Counter, MAX_IP6_EXTENSIONS, ParseCounter},
};

/// The eBPF object, as built for this host's endianness.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb"));

/// The kernel's limit on instructions the verifier processes for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_INSN_LIMIT: u32 = 1_000_000;
