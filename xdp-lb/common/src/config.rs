//! The datapath's runtime configuration: one entry of the `CONFIG` array.

use crate::{
    conntrack::{TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT},
    pod::impl_pod,
};

/// Global settings read by every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seed of the Maglev flow hash; equal on every node and LB instance.
    pub hash_seed: u64,
    /// Conntrack timeout of a TCP flow that has only sent a SYN, in seconds.
    pub tcp_syn_timeout_s: u32,
    /// Conntrack timeout of an established TCP flow, in seconds.
    pub tcp_established_timeout_s: u32,
    /// Conntrack timeout after a FIN or RST, in seconds.
    pub tcp_closing_timeout_s: u32,
    /// Conntrack timeout of a UDP flow, in seconds.
    pub udp_timeout_s: u32,
    /// First port of the NodePort range (host order), matched on node addresses.
    pub nodeport_min: u16,
    /// Last port of the NodePort range (host order, inclusive).
    pub nodeport_max: u16,
    /// The new-flow flood guard: conntrack entries each CPU may create per
    /// second; past it, new flows go to their Maglev backend untracked
    /// (`CtEvent::NotTrackedFloodGuard`). 0 turns the guard off.
    pub new_flows_per_cpu_per_sec: u32,
    /// Flow events (`events::FlowEvent`): one in this many new flows and
    /// drops is written to the `FLOW_EVENTS` ring buffer, chosen at random.
    /// 0 writes none.
    pub flow_event_sampling: u32,
    /// The outer source address of IPv4 encapsulation (direct server
    /// return): this LB's own address; all zeros for none, which leaves
    /// DSR over IPv4 off.
    pub encap_source_v4: [u8; 4],
    /// The same for IPv6 encapsulation.
    pub encap_source_v6: [u8; 16],
    /// The source NAT gives flows to a remote backend of a `SERVICE_SNAT_REMOTE`
    /// service (this node's address toward the other nodes); all zeros for
    /// none, which sends those flows with the client's source.
    pub snat_source_v4: [u8; 4],
    /// The same for IPv6.
    pub snat_source_v6: [u8; 16],
    /// The source a pod sees when it reaches itself through a service
    /// (hairpin): an address the pod routes via its node, so its answer comes
    /// back through the hook that translates it. All zeros for none.
    pub hairpin_source_v4: [u8; 4],
    /// The same for IPv6.
    pub hairpin_source_v6: [u8; 16],
    /// First source-NAT port (host order). The range is per protocol and per
    /// source address: a port is taken by a live flow to one backend address
    /// and port.
    pub snat_port_min: u16,
    /// Last source-NAT port (host order, inclusive); below `snat_port_min`
    /// turns source NAT off (flows that need it are refused).
    pub snat_port_max: u16,
    pub _pad: u32,
}
const _: () = assert!(size_of::<Config>() == 104);

impl Default for Config {
    /// DESIGN.md's defaults: SYN 60 s, established 8000 s, FIN/RST 10 s,
    /// non-TCP 60 s; Kubernetes' default NodePort range 30000–32767; Katran's
    /// flood guard of 125 000 new flows per second per CPU.
    fn default() -> Self {
        Self {
            hash_seed: 0,
            tcp_syn_timeout_s: 60,
            tcp_established_timeout_s: 8000,
            tcp_closing_timeout_s: 10,
            udp_timeout_s: 60,
            nodeport_min: 30000,
            nodeport_max: 32767,
            new_flows_per_cpu_per_sec: DEFAULT_NEW_FLOWS_PER_CPU_PER_SEC,
            flow_event_sampling: 0,
            encap_source_v4: [0; 4],
            encap_source_v6: [0; 16],
            snat_source_v4: [0; 4],
            snat_source_v6: [0; 16],
            hairpin_source_v4: DEFAULT_HAIRPIN_SOURCE_V4,
            hairpin_source_v6: DEFAULT_HAIRPIN_SOURCE_V6,
            snat_port_min: DEFAULT_SNAT_PORTS.0,
            snat_port_max: DEFAULT_SNAT_PORTS.1,
            _pad: 0,
        }
    }
}

impl Config {
    /// The conntrack timeout of an entry in `state`, in nanoseconds: the one
    /// rule the datapath expires entries by and the loader's garbage
    /// collector deletes them by. The state is masked to its two bits, so
    /// that LLVM's lowering of the match into an offset into `Config` stays
    /// bounded for the verifier.
    #[inline(always)]
    pub const fn timeout_ns(&self, state: u8) -> u64 {
        let seconds = match state & 3 {
            TCP_SYN_SENT => self.tcp_syn_timeout_s,
            TCP_ESTABLISHED => self.tcp_established_timeout_s,
            TCP_CLOSING => self.tcp_closing_timeout_s,
            _ => self.udp_timeout_s,
        };
        seconds as u64 * NS_PER_SEC
    }
}

/// The hairpin source by default: a link-local address no host owns
/// (169.254.42.1, as Cilium's service loopback), so a pod's answer to it
/// leaves by the pod's default route, through its node's hook.
pub const DEFAULT_HAIRPIN_SOURCE_V4: [u8; 4] = [169, 254, 42, 1];
/// The IPv6 hairpin source by default: `fd00::a9fe:2a01`, a unique-local
/// address (RFC 4193) with the IPv4 default in its low bits; pods route it by
/// their default route like the IPv4 one.
pub const DEFAULT_HAIRPIN_SOURCE_V6: [u8; 16] =
    [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 169, 254, 42, 1];
/// Source-NAT ports by default: above Linux's ephemeral range
/// (32768–60999), so a translated source does not meet a node's own
/// connections.
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (61000, 65535);

/// Katran's flood guard: 125 000 new flows per second per core.
pub const DEFAULT_NEW_FLOWS_PER_CPU_PER_SEC: u32 = 125_000;

/// One CPU's window of the new-flow flood guard (the `FLOOD_GUARD` per-CPU
/// array): flows tracked since the window began.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloodWindow {
    /// `bpf_ktime_get_coarse_ns()` when the window began.
    pub start_ns: u64,
    /// Entries created in this window.
    pub created: u64,
}
const _: () = assert!(size_of::<FloodWindow>() == 16);

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

impl_pod!(Config, FloodWindow);
