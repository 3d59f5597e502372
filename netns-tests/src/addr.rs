//! Addresses a rig may use: IPv4 198.18.0.0/15 and IPv6 2001:2::/48, the
//! benchmarking ranges of RFC 2544 and RFC 5180, which no real network routes.
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::{Error, Result};

/// The IPv4 rig range, 198.18.0.0/15 (RFC 2544).
pub const RIG_RANGE_V4: Cidr = Cidr {
    addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 0)),
    prefix_len: 15,
};

/// The IPv6 rig range, 2001:2::/48 (RFC 5180).
pub const RIG_RANGE_V6: Cidr = Cidr {
    addr: IpAddr::V6(Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0)),
    prefix_len: 48,
};

/// True when `addr` lies in one of the rig ranges.
pub fn is_rig_address(addr: IpAddr) -> bool {
    RIG_RANGE_V4.contains(addr) || RIG_RANGE_V6.contains(addr)
}

/// Refuses an address outside the rig ranges.
pub(crate) fn check_rig_address(addr: IpAddr) -> Result<()> {
    if is_rig_address(addr) {
        Ok(())
    } else {
        Err(Error::AddressOutOfRange {
            addr: addr.to_string(),
        })
    }
}

/// An address with a prefix length, as `ip` writes it (`198.18.0.1/24`).
///
/// The address keeps its host bits: `198.18.0.1/24` is an interface address,
/// `198.18.0.0/24` a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// `addr/prefix_len`; fails when the prefix is longer than the address.
    pub fn new(addr: impl Into<IpAddr>, prefix_len: u8) -> Result<Self> {
        let addr = addr.into();
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(Error::Invalid {
                what: "prefix length",
                input: format!("{addr}/{prefix_len}"),
                expected: "at most 32 for IPv4, 128 for IPv6",
            });
        }
        Ok(Self { addr, prefix_len })
    }

    /// `addr/prefix_len` without the length check, for constants; the caller
    /// keeps `prefix_len` within the address's bits.
    pub(crate) const fn const_new(addr: IpAddr, prefix_len: u8) -> Self {
        Self { addr, prefix_len }
    }

    /// A single address: `/32` or `/128`.
    pub fn host(addr: impl Into<IpAddr>) -> Self {
        let addr = addr.into();
        Self {
            addr,
            prefix_len: max_prefix_len(addr),
        }
    }

    /// The address, host bits included.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True for an IPv6 prefix.
    pub const fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// The network: the address with its host bits cleared.
    pub fn network(&self) -> Self {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() & mask4(self.prefix_len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() & mask6(self.prefix_len))),
        };
        Self {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// True when `addr` is inside this prefix.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = mask4(self.prefix_len);
                net.to_bits() & mask == a.to_bits() & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = mask6(self.prefix_len);
                net.to_bits() & mask == a.to_bits() & mask
            }
            _ => false,
        }
    }

    /// True when every address of this prefix lies inside `outer`.
    pub fn is_within(&self, outer: &Self) -> bool {
        self.prefix_len >= outer.prefix_len && outer.contains(self.addr)
    }

    /// Refuses a prefix that is not entirely inside a rig range.
    pub(crate) fn check_in_rig(&self) -> Result<()> {
        if self.is_within(&RIG_RANGE_V4) || self.is_within(&RIG_RANGE_V6) {
            Ok(())
        } else {
            Err(Error::AddressOutOfRange {
                addr: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = Error;

    /// Parses `addr/len`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::Invalid {
            what: "prefix",
            input: s.to_owned(),
            expected: "ADDRESS or ADDRESS/LENGTH",
        };
        match s.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                let len: u8 = len.parse().map_err(|_| invalid())?;
                Self::new(addr, len)
            }
            None => Ok(Self::host(s.parse::<IpAddr>().map_err(|_| invalid())?)),
        }
    }
}

const fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask4(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::Invalid {
            what: "MAC address",
            input: s.to_owned(),
            expected: "six hex bytes separated by ':'",
        };
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(invalid)?;
            if part.len() != 2 {
                return Err(invalid());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn rig_ranges() {
        assert!(is_rig_address("198.18.0.1".parse().unwrap()));
        assert!(is_rig_address("198.19.255.255".parse().unwrap()));
        assert!(!is_rig_address("198.20.0.1".parse().unwrap()));
        assert!(!is_rig_address("10.0.0.1".parse().unwrap()));
        assert!(is_rig_address("2001:2::1".parse().unwrap()));
        assert!(is_rig_address("2001:2:0:ffff::1".parse().unwrap()));
        assert!(!is_rig_address("2001:2:1::1".parse().unwrap()));
        assert!(!is_rig_address("fe80::1".parse().unwrap()));
    }

    #[test]
    fn prefixes_must_fit_inside_the_ranges() {
        assert!(cidr("198.18.0.1/24").check_in_rig().is_ok());
        assert!(cidr("198.18.0.0/15").check_in_rig().is_ok());
        assert!(cidr("198.18.0.1/14").check_in_rig().is_err());
        assert!(cidr("198.18.0.1/8").check_in_rig().is_err());
        assert!(cidr("2001:2::1/64").check_in_rig().is_ok());
        assert!(cidr("2001:2::/47").check_in_rig().is_err());
        assert!(cidr("0.0.0.0/0").check_in_rig().is_err());
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(cidr("198.18.0.1/24").to_string(), "198.18.0.1/24");
        assert_eq!(cidr("198.18.0.1").to_string(), "198.18.0.1/32");
        assert_eq!(cidr("198.18.3.7/24").network().to_string(), "198.18.3.0/24");
        assert_eq!(cidr("2001:2::5/64").network().to_string(), "2001:2::/64");
        assert!("198.18.0.1/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let mac: Mac = "02:78:6C:62:00:01".parse().unwrap();
        assert_eq!(mac.to_string(), "02:78:6c:62:00:01");
        assert!("02:78:6c:62:00".parse::<Mac>().is_err());
    }
}
