//! The datapath's runtime configuration: one entry of the `CONFIG` array.

use crate::pod::impl_pod;

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
    pub _reserved: u32,
}
const _: () = assert!(size_of::<Config>() == 32);

impl Default for Config {
    /// DESIGN.md's defaults: SYN 60 s, established 8000 s, FIN/RST 10 s,
    /// non-TCP 60 s; Kubernetes' default NodePort range 30000–32767.
    fn default() -> Self {
        Self {
            hash_seed: 0,
            tcp_syn_timeout_s: 60,
            tcp_established_timeout_s: 8000,
            tcp_closing_timeout_s: 10,
            udp_timeout_s: 60,
            nodeport_min: 30000,
            nodeport_max: 32767,
            _reserved: 0,
        }
    }
}

impl_pod!(Config);
