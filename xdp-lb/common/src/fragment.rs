//! IP fragments of a balanced datagram. Only the first fragment carries the
//! transport header; the datapath balances it as a whole packet and
//! remembers its ports under the datagram's reassembly key (RFC 791 §2.3 for
//! IPv4: source, destination, protocol and identification; RFC 8200 §4.5 for
//! IPv6, whose 32-bit identification is in the Fragment header), so that the
//! later fragments, which carry none, find the same conntrack entry and
//! leave translated as the first did.

use crate::{addr::Addr, pod::impl_pod};

/// Key of the `FRAGMENTS` map: a fragmented datagram as it arrived (before
/// any translation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// Source and destination (IPv4-mapped for IPv4).
    pub src_addr: Addr,
    pub dst_addr: Addr,
    /// The IP identification: IPv4's 16 bits (zero-extended) or IPv6's 32, in
    /// host order.
    pub id: u32,
    /// TCP or UDP.
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FragmentKey>() == 40);

/// Value of the `FRAGMENTS` map: the first fragment's ports, network order,
/// as they lay in its transport header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragmentPorts {
    pub src_port_be: u16,
    pub dst_port_be: u16,
}
const _: () = assert!(size_of::<FragmentPorts>() == 4);

impl_pod!(FragmentKey, FragmentPorts);
