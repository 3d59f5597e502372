//! The user-facing address types and their map encodings.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use xdp_lb_common::{
    addr::{Addr, as_v4},
    conntrack::FlowTuple,
    service::{FrontendKey, PROTO_TCP, PROTO_UDP},
};

/// A transport protocol xlb balances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IANA protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    /// The protocol with IANA number `n`, if xlb balances it.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

/// A frontend: where clients send a service's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    pub addr: SocketAddr,
    pub proto: Protocol,
}

impl Frontend {
    pub const fn new(addr: SocketAddr, proto: Protocol) -> Self {
        Self { addr, proto }
    }

    pub(crate) fn key(&self) -> FrontendKey {
        FrontendKey::new(
            to_addr(self.addr.ip()),
            self.addr.port(),
            self.proto.number(),
        )
    }
}

/// A flow as a client sends it: source, destination (a frontend), protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: Protocol,
}

impl Flow {
    pub const fn new(src: SocketAddr, dst: SocketAddr, proto: Protocol) -> Self {
        Self { src, dst, proto }
    }

    pub(crate) fn tuple(&self) -> FlowTuple {
        FlowTuple::new(
            to_addr(self.src.ip()),
            to_addr(self.dst.ip()),
            self.src.port().to_be(),
            self.dst.port().to_be(),
            self.proto.number(),
        )
    }
}

/// The map encoding of an address: IPv6, or IPv4 mapped into IPv6.
pub(crate) fn to_addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a map encoding stands for.
pub(crate) fn from_addr(addr: &Addr) -> IpAddr {
    match as_v4(addr) {
        Some(v4) => IpAddr::from(v4),
        None => IpAddr::V6(Ipv6Addr::from(*addr)),
    }
}

/// The socket address of a map-encoded address and a network-order port.
pub(crate) fn socket(addr: &Addr, port_be: u16) -> SocketAddr {
    SocketAddr::new(from_addr(addr), u16::from_be(port_be))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for text in ["198.18.0.1", "2001:2::1", "::ffff:198.18.0.9"] {
            let ip: IpAddr = text.parse().unwrap();
            let back = from_addr(&to_addr(ip));
            // An IPv4-mapped IPv6 address comes back as plain IPv4: one family
            // per address on the wire.
            assert_eq!(back, ip.to_canonical(), "{text}");
        }
    }
}
