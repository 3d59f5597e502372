use std::{net::IpAddr, path::PathBuf};

/// What went wrong while loading, attaching or using the datapath.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF object failed")]
    Load(#[source] aya::EbpfError),

    #[error("program `{program}` is missing from the eBPF object (built from an older source?)")]
    MissingProgram { program: &'static str },

    #[error("program `{program}` has an unexpected type")]
    ProgramType {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("the kernel rejected program `{program}` (the verifier log follows the cause)")]
    Verify {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("attaching `{program}` to interface `{iface}` failed")]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("interface `{iface}` does not exist in this network namespace")]
    UnknownInterface { iface: String },

    #[error("listing the network interfaces of this network namespace failed")]
    Interfaces(#[source] std::io::Error),

    #[error("interface `{iface}` cannot announce addresses: {reason}")]
    NotAnEthernetLink { iface: String, reason: &'static str },

    #[error("cannot announce {addr} on L2: {reason}")]
    L2Announcement { addr: IpAddr, reason: &'static str },

    #[error(
        "map `{map}` is full ({capacity} entries); load the datapath with a larger `MapSizes::{size}`"
    )]
    MapFull {
        map: &'static str,
        capacity: u32,
        /// The `MapSizes` field that sizes the map.
        size: &'static str,
    },

    #[error("map `{map}` is missing from the eBPF object")]
    MissingMap { map: &'static str },

    #[error("map `{map}`: {op} failed")]
    Map {
        map: &'static str,
        op: &'static str,
        #[source]
        source: aya::maps::MapError,
    },

    #[error("reading information about program `{program}` failed")]
    ProgramInfo {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("BPF_PROG_TEST_RUN of `{program}` failed")]
    TestRun {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },

    #[error("probe slot {slot} is out of range (slots are below {limit})")]
    ProbeSlotOutOfRange { slot: u32, limit: u32 },

    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: &'static str,
    },

    #[error(
        "client {client} and frontend {frontend} are of different IP families: no packet has ends of two families (the datapath does no NAT46 or NAT64)"
    )]
    MixedFamilies {
        client: std::net::SocketAddr,
        frontend: std::net::SocketAddr,
    },

    #[error("frontend {frontend}: its address is not declared (`set_address` it first)")]
    UndeclaredAddress { frontend: std::net::SocketAddr },

    #[error(
        "{kind} ID {id} is out of range (the map holds IDs below {limit}; backend ID 0 is reserved)"
    )]
    IdOutOfRange {
        kind: &'static str,
        id: u32,
        limit: u32,
    },

    #[error("Maglev table for service {service} rejected: {reason}")]
    InvalidTable { service: u32, reason: &'static str },

    #[error(
        "pinned maps have layout version {found}, this build reads version {expected}; \
         migrate or remove the pinned state"
    )]
    Layout { found: u32, expected: u32 },

    #[error("map `{map}`: {op} failed")]
    Syscall {
        map: &'static str,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("map `{map}`: {op} stopped after {done} of {total} elements")]
    Batch {
        map: &'static str,
        op: &'static str,
        /// Elements the kernel had processed before the failing one.
        done: usize,
        total: usize,
        #[source]
        source: std::io::Error,
    },

    #[error("map `{map}` holds an entry this build cannot read: {reason}")]
    Corrupt {
        map: &'static str,
        reason: &'static str,
    },

    #[error("pinned link {path}: {op} failed")]
    PinnedLink {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("pinning the link at {path} failed")]
    PinLink {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },

    #[error(
        "interface `{iface}`: the kernel attached XDP without a bpf_link (kernel < 5.9?), \
         which cannot be pinned"
    )]
    LinkUnsupported { iface: String },

    #[error("{path} is not a link this datapath may take over: {reason}")]
    ForeignLink { path: PathBuf, reason: &'static str },

    #[error("pin directory {path} is not usable")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("reading flow events failed ({call})")]
    FlowEvents {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
}
