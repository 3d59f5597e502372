//! Frontends and services: what `xdp_lb` matches a packet's destination against.

use crate::{addr::Addr, pod::impl_pod};

/// IANA protocol numbers xlb balances.
pub const PROTO_TCP: u8 = 6;
/// UDP.
pub const PROTO_UDP: u8 = 17;

/// Key of the `SERVICES` map: one frontend `(address, port, protocol)`.
/// Aligned to 4 bytes, as far as its 20 bytes allow without padding that
/// would enter the hash (see `FlowTuple`).
#[repr(C, align(4))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    /// The frontend address (IPv4-mapped for IPv4).
    pub addr: Addr,
    /// The frontend port, in network byte order (as in the packet).
    pub port_be: u16,
    /// `PROTO_TCP` or `PROTO_UDP`.
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FrontendKey>() == 20);

impl FrontendKey {
    /// A key from a host-order port.
    pub const fn new(addr: Addr, port: u16, proto: u8) -> Self {
        Self {
            addr,
            port_be: port.to_be(),
            proto,
            _pad: 0,
        }
    }

    /// The frontend a client's flow was sent to: its destination.
    pub const fn of_flow(tuple: &crate::conntrack::FlowTuple) -> Self {
        Self {
            addr: tuple.dst_addr,
            port_be: tuple.dst_port_be,
            proto: tuple.proto,
            _pad: 0,
        }
    }
}

/// `Service::flags`: ClientIP session affinity: a client's new flows go to the
/// backend of its last one while `Service::affinity_timeout_s` holds, and the
/// flow hash ignores the source port.
pub const SERVICE_AFFINITY_CLIENT_IP: u32 = 1 << 0;

/// `Service::flags`: direct server return: packets reach the backend
/// unchanged inside an IPIP / IP6IP6 / IPv4-in-IPv6 header (the backend
/// decapsulates, holds the VIP itself and answers the client directly), and
/// the port is not translated.
pub const SERVICE_DSR: u32 = 1 << 1;

/// `Service::flags`: source NAT toward a backend that is not a pod of this
/// node (`BACKEND_LOCAL` unset), so its replies come back through this node:
/// the NodePort, LoadBalancer and externalIP frontends of a service with
/// `externalTrafficPolicy: Cluster`. The source becomes the node's
/// `Config::snat_source_*` with a port of the source-NAT range.
pub const SERVICE_SNAT_REMOTE: u32 = 1 << 2;

/// `Service::flags`: without a backend, packets are dropped
/// (`Verdict::DropNoLocalBackend`) rather than refused: a Kubernetes
/// service with a `Local` traffic policy whose endpoints are all on other
/// nodes, as kube-proxy drops it. (A service with no endpoints at all is
/// refused.)
pub const SERVICE_DROP_WITHOUT_BACKENDS: u32 = 1 << 3;

/// `Service::flags`: only clients in the service's networks (`SOURCE_RANGES`,
/// Kubernetes' `loadBalancerSourceRanges`) reach this frontend; others are
/// dropped (`Verdict::DropSourceRange`).
pub const SERVICE_SOURCE_RANGES: u32 = 1 << 4;

/// The data of a `SOURCE_RANGES` key (an LPM trie): the service ID, matched
/// whole (the first 32 bits of every prefix), then the client network
/// (IPv4-mapped for IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRange {
    /// The service ID, big-endian, so that it is the prefix's leading bits.
    pub service_be: [u8; 4],
    pub addr: Addr,
}
const _: () = assert!(size_of::<SourceRange>() == 20);

/// The prefix length of a `SOURCE_RANGES` key for a network of `len` bits:
/// the service ID's 32 bits, then the address's (an IPv4 network's counted
/// in its IPv4-mapped form, after 96 fixed bits).
pub const fn source_range_prefix(is_v4: bool, len: u8) -> u32 {
    32 + if is_v4 { 96 } else { 0 } + len as u32
}

/// The prefix length of a lookup: every bit of the key.
pub const SOURCE_RANGE_FULL: u32 = 32 + 128;

/// Value of the `SERVICES` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into `MAGLEV_TABLES` and the per-service counters.
    pub id: u32,
    /// `SERVICE_*` flags.
    pub flags: u32,
    /// With `SERVICE_AFFINITY_CLIENT_IP`: how long a client stays with its
    /// backend after its last new flow, in seconds.
    pub affinity_timeout_s: u32,
}
const _: () = assert!(size_of::<Service>() == 12);

/// Value of the `ADDRESSES` map: what kind of address a frontend address is.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressInfo {
    /// `ADDRESS_VIP` or `ADDRESS_NODE`.
    pub kind: u32,
}
const _: () = assert!(size_of::<AddressInfo>() == 4);

/// An address that exists only as a service VIP (ClusterIP, LoadBalancer IP, an
/// externalIP that is not a node address): every port of it belongs to xlb, and
/// a port without a service is dropped with a reason.
pub const ADDRESS_VIP: u32 = 1;
/// A node's own address: only the NodePort range is matched; every other port
/// passes untouched (SSH, the kubelet, replies to the node's own connections).
pub const ADDRESS_NODE: u32 = 2;

/// Key of the `ADDRESSES` map. Aligned as `FlowTuple` is, for the same reason.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AddressKey {
    pub addr: Addr,
}
const _: () = assert!(size_of::<AddressKey>() == 16);

/// A Maglev table in `MAGLEV_TABLES` holds its size M in slot 0 and the backend
/// IDs in slots `1..=M`, so that size and entries are swapped together by one
/// update of the outer map.
pub const TABLE_HEADER_SLOTS: u32 = 1;

impl_pod!(FrontendKey, Service, AddressInfo, AddressKey, SourceRange);
