//! `xdp-lb`: loads the xlb eBPF programs (embedded at build time), attaches them,
//! and gives typed, safe access to their maps.
//!
//! The object file is built from `xdp-lb/ebpf` by `build.rs` (aya-build, nightly,
//! bpfel-unknown-none) and embedded with `include_bytes_aligned!`, so a binary
//! that links this crate carries its own datapath.
//!
//! - [`Datapath::load_with`]: map sizes, pinning ([`LoadOptions`]);
//!   [`Datapath::load_stamped`] with another version stamp;
//! - [`Datapath::attach`] / [`Datapath::detach`]: per interface and mode;
//!   [`Datapath::attach_pinned`] / [`Datapath::detach_pinned`]: through a
//!   pinned bpf_link that outlives the process, taken over atomically by the
//!   next agent;
//! - pod interfaces (the TC programs on the host side of pod veths):
//!   [`Datapath::attach_pod_interface`], [`Datapath::attach_pod_interface_pinned`];
//!   what the node itself sends (`tc_lb_uplink` at the egress of an uplink):
//!   [`Datapath::attach_uplink_egress`], [`Datapath::attach_uplink_egress_pinned`];
//! - health probes of direct-server-return backends through the tunnel
//!   (`tc_probe_encap`): [`Datapath::attach_probe_encap`],
//!   [`Datapath::set_probe_mark_base`], [`Datapath::set_probe_backend`],
//!   [`Datapath::probe_stats`];
//! - configuration: [`Datapath::set_config`], [`Datapath::set_address`],
//!   [`Datapath::upsert_service`], [`Datapath::put_backend`],
//!   [`Datapath::retire_backend`], [`Datapath::swap_table`],
//!   [`Datapath::swap_tables`] (many per grace period),
//!   [`Datapath::patch_table`] (slots in place);
//! - L2 announcements (`xdp_lb` answers ARP and IPv6 neighbour discovery
//!   for VIPs no interface holds): [`Datapath::announce_l2`],
//!   [`Datapath::withdraw_l2`], [`Datapath::l2_announcements`], with
//!   [`L2Link::of_interface`];
//! - recovery after a restart: [`Datapath::frontends`],
//!   [`Datapath::backends`], [`Datapath::table_ids`], [`Datapath::map_usage`],
//!   [`Datapath::removed_frontends_with_flows`];
//! - state: [`Datapath::conntrack`], [`Datapath::delete_flow`],
//!   [`Datapath::expire_flows`], [`Datapath::delete_flows_of_backend`],
//!   [`ConntrackTables`] (the same walks on descriptors of their own), counters;
//! - [`Datapath::simulate`]: which backend a flow would hit;
//! - [`Datapath::test_run`]: runs a program on a packet (`BPF_PROG_TEST_RUN`).

mod bench;
mod conntrack;
mod datapath;
mod decap;
mod error;
mod events;
mod flow_table;
mod links;
mod maps;
mod neighbour;
mod net;
mod options;
mod pods;
mod probes;
mod recovery;
mod simulate;
mod stats;
mod sys;
mod tables;
mod test_run;
mod uplinks;

pub use conntrack::{FlowState, TrackedFlow};
pub use datapath::{AttachMode, Attachment, Datapath, ProgramName, VerifierReport};
pub use error::Error;
pub use events::{FlowEvent, FlowEventKind, FlowEvents};
pub use flow_table::ConntrackTables;
pub use links::{PinnedAttachment, PinnedLinkInfo, interface_index, is_interface_name};
pub use maps::{AddressKind, BackendRecord, MAX_AFFINITY_TIMEOUT, MAX_TABLE_SIZE, ServiceOptions};
pub use neighbour::L2Link;
pub use net::{Flow, Frontend, Protocol};
pub use options::{DEFAULT_FRAGMENT_ENTRIES, DEFAULT_VERSION_STAMP, LoadOptions, MapSizes};
pub use pods::PodAttachment;
pub use probes::{InvalidProbeMarkBase, ProbeEncapAttachment, ProbeMarkBase, ProbeStats};
pub use recovery::MapUsage;
pub use simulate::Simulation;
pub use stats::{Counters, CtStats, DecapStats, FlowEventStats, ParseStats, VerdictStats};
pub use tables::TABLES_PER_BATCH;
pub use test_run::TestRunOutput;
pub use uplinks::UplinkAttachment;
pub use xdp_lb_common::{
    LAYOUT_VERSION,
    bench::{BENCH_MAX_PACKET, BENCH_ROTATIONS, Rotation},
    config::{Config, DEFAULT_NEW_FLOWS_PER_CPU_PER_SEC},
    probe::{DEFAULT_PROBE_MARK_BASE, PROBE_SLOTS},
    stats::{
        Counter, CtEvent, DecapVerdict, FlowEventOutcome, MAX_IP6_EXTENSIONS, ParseCounter,
        ProbeVerdict, Verdict,
    },
};

/// The eBPF object, as built for this host's endianness.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp-lb"));

/// The eBPF object every [`Datapath`] of this build loads, byte for byte: a
/// hash of it tells which datapath a measurement was taken with.
pub fn ebpf_object() -> &'static [u8] {
    EBPF_OBJECT
}

/// The kernel's limit on instructions the verifier processes for one program
/// (`BPF_COMPLEXITY_LIMIT_INSNS`).
pub const VERIFIER_INSN_LIMIT: u32 = 1_000_000;
