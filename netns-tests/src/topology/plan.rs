//! The address plan of the ready-made topologies.
//!
//! | what                     | IPv4                       | IPv6                              |
//! |--------------------------|----------------------------|-----------------------------------|
//! | LAN `n` (n < 64)         | 198.18.n.0/24              | 2001:2:0:n::/64                   |
//! | client LAN               | LAN 0                      |                                   |
//! | backend LAN (switch)     | LAN 1                      |                                   |
//! | node fabric              | LAN 2                      |                                   |
//! | behind a router          | LAN 3                      |                                   |
//! | router ↔ LB `i`          | LAN 16 + i                 |                                   |
//! | pods of node `n`         | 198.18.(64 + n).0/24       | 2001:2:0:(8000 + 100·n)::/56 (hex) |
//! | pod `i` of node `n`      | .4i/30 (node .4i+1, pod .4i+2) | 2001:2:0:(8000 + 100·n + i)::/64 |
//! | VIPs                     | 198.19.0.0/16              | 2001:2:0:ff00::/56                |
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{Cidr, Error, Result};

/// The client LAN.
pub const CLIENT_LAN: u8 = 0;
/// The backend LAN (a switch).
pub const BACKEND_LAN: u8 = 1;
/// The LAN between nodes.
pub const FABRIC_LAN: u8 = 2;
/// A backend's LAN behind a router (`ClientLbRouterBackend`).
pub const BEHIND_ROUTER_LAN: u8 = 3;
/// The first router ↔ LB link.
pub const LB_LINK_BASE: u8 = 16;
/// The most LBs behind one router.
pub const MAX_LBS: usize = 16;
/// The most backends on the backend LAN (hosts .100 to .249).
pub const MAX_BACKENDS: usize = 150;
/// The most nodes in a rig.
pub const MAX_NODES: usize = 64;
/// The most pods on one node (/30 each in a /24).
pub const MAX_PODS: usize = 64;

/// The IPv4 VIP range, 198.19.0.0/16.
pub const VIP_RANGE_V4: Cidr = cidr4(Ipv4Addr::new(198, 19, 0, 0), 16);
/// The IPv6 VIP range, 2001:2:0:ff00::/56.
pub const VIP_RANGE_V6: Cidr = cidr6(Ipv6Addr::new(0x2001, 2, 0, 0xff00, 0, 0, 0, 0), 56);

/// VIP number `n` (from 1): 198.19.x.y and 2001:2:0:ff00::n.
pub fn vip(n: u16) -> (Ipv4Addr, Ipv6Addr) {
    let [hi, lo] = n.to_be_bytes();
    (
        Ipv4Addr::new(198, 19, hi, lo),
        Ipv6Addr::new(0x2001, 2, 0, 0xff00, 0, 0, 0, n),
    )
}

/// A dual-stack subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// The IPv4 network.
    pub v4: Cidr,
    /// The IPv6 network.
    pub v6: Cidr,
}

impl Subnet {
    /// LAN `n`: 198.18.n.0/24 and 2001:2:0:n::/64.
    pub fn lan(n: u8) -> Self {
        Self {
            v4: cidr4(Ipv4Addr::new(198, 18, n, 0), 24),
            v6: cidr6(Ipv6Addr::new(0x2001, 2, 0, u16::from(n), 0, 0, 0, 0), 64),
        }
    }

    /// The pod range of node `node`.
    pub fn pods_of_node(node: usize) -> Result<Self> {
        let n = checked(node, MAX_NODES, "node index")?;
        Ok(Self {
            v4: cidr4(Ipv4Addr::new(198, 18, 64 + n, 0), 24),
            v6: cidr6(Ipv6Addr::new(0x2001, 2, 0, pod_group(n, 0), 0, 0, 0, 0), 56),
        })
    }

    /// The link of pod `pod` on node `node`: a /30 and a /64.
    pub fn pod(node: usize, pod: usize) -> Result<Self> {
        let n = checked(node, MAX_NODES, "node index")?;
        let i = checked(pod, MAX_PODS, "pod index")?;
        Ok(Self {
            v4: cidr4(Ipv4Addr::new(198, 18, 64 + n, 4 * i), 30),
            v6: cidr6(Ipv6Addr::new(0x2001, 2, 0, pod_group(n, i), 0, 0, 0, 0), 64),
        })
    }

    /// Host `host` of the subnet, with the subnet's prefix lengths.
    pub fn host(&self, host: u8) -> (Cidr, Cidr) {
        (offset(self.v4, host), offset(self.v6, host))
    }
}

/// `cidr`'s address plus `host`, same prefix length.
fn offset(cidr: Cidr, host: u8) -> Cidr {
    let addr = match cidr.addr() {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits().wrapping_add(host.into()))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits().wrapping_add(host.into()))),
    };
    Cidr::const_new(addr, cidr.prefix_len())
}

fn pod_group(node: u8, pod: u8) -> u16 {
    0x8000 + 0x100 * u16::from(node) + u16::from(pod)
}

fn checked(value: usize, max: usize, what: &'static str) -> Result<u8> {
    u8::try_from(value)
        .ok()
        .filter(|_| value < max)
        .ok_or_else(|| Error::Invalid {
            what,
            input: value.to_string(),
            expected: "within the address plan (see topology::plan)",
        })
}

const fn cidr4(addr: Ipv4Addr, prefix_len: u8) -> Cidr {
    Cidr::const_new(IpAddr::V4(addr), prefix_len)
}

const fn cidr6(addr: Ipv6Addr, prefix_len: u8) -> Cidr {
    Cidr::const_new(IpAddr::V6(addr), prefix_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_stays_inside_the_rig_ranges_and_apart() {
        let lan = Subnet::lan(1);
        assert_eq!(lan.host(100).0.to_string(), "198.18.1.100/24");
        assert_eq!(lan.host(100).1.to_string(), "2001:2:0:1::64/64");
        let pod = Subnet::pod(1, 3).unwrap();
        assert_eq!(pod.v4.to_string(), "198.18.65.12/30");
        assert_eq!(pod.host(2).0.to_string(), "198.18.65.14/30");
        assert_eq!(pod.v6.to_string(), "2001:2:0:8103::/64");
        let range = Subnet::pods_of_node(1).unwrap();
        assert!(pod.v4.is_within(&range.v4));
        assert!(pod.v6.is_within(&range.v6));
        assert!(Subnet::pod(0, 64).is_err());
        for cidr in [lan.v4, lan.v6, pod.v4, pod.v6, VIP_RANGE_V4, VIP_RANGE_V6] {
            cidr.check_in_rig().unwrap();
        }
        assert!(!VIP_RANGE_V6.contains(range.v6.addr()));
        assert_eq!(vip(1).0, Ipv4Addr::new(198, 19, 0, 1));
        assert!(VIP_RANGE_V6.contains(vip(1).1.into()));
    }
}
