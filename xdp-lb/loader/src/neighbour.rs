//! L2 announcements: the addresses `xdp_lb` answers ARP requests and IPv6
//! neighbour solicitations for, and on which interface, with which MAC.
//!
//! A LoadBalancer IP or externalIP that no interface of the host holds is
//! unreachable on its link until something answers for it there: MetalLB's
//! and Cilium's "L2 announcements" do it in user space or in the kernel;
//! here the XDP program does it, before the kernel sees the request. Only a
//! request that arrives on the announced interface is answered, so an
//! address is claimed on one link and never on the host's others.

use std::net::IpAddr;

use aya::maps::{HashMap, MapError};
use xdp_lb_common::{neighbour::L2Announcement, service::AddressKey};

use crate::{
    Datapath, Error,
    maps::{L2_ANNOUNCE, map_err},
    net::{from_addr, to_addr},
};

/// Where an address is announced: the interface whose requests are
/// answered, and the MAC address the answers give for the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct L2Link {
    /// The interface index (in the network namespace the datapath is
    /// attached in).
    pub ifindex: u32,
    /// A unicast Ethernet MAC address, normally the interface's own: the
    /// switch then delivers the traffic for the address to this port.
    pub mac: [u8; 6],
}

impl L2Link {
    /// The index and MAC address of Ethernet interface `name` in the calling
    /// thread's network namespace.
    ///
    /// Read from the kernel over netlink (`getifaddrs`), which answers for
    /// the namespace of the socket it opens, that is the calling thread's;
    /// `/sys/class/net` would show the namespace of whoever mounted `/sys`.
    ///
    /// Only an Ethernet interface with a unicast MAC address can announce:
    /// `lo` (a loopback link, whose MAC is all zeros), tunnels and every
    /// other link type are refused with
    /// [`Error::NotAnEthernetLink`]; a name that does not exist here with
    /// [`Error::UnknownInterface`].
    pub fn of_interface(name: &str) -> Result<Self, Error> {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|errno| Error::Interfaces(std::io::Error::from(errno)))?;
        let not_ethernet = |reason| Error::NotAnEthernetLink {
            iface: name.to_owned(),
            reason,
        };
        let mut exists = false;
        for ifa in addrs.filter(|ifa| ifa.interface_name == name) {
            exists = true;
            // Every link has one AF_PACKET entry; the others are its IP
            // addresses.
            let Some(link) = ifa.address.as_ref().and_then(|a| a.as_link_addr()) else {
                continue;
            };
            if link.hatype() != libc::ARPHRD_ETHER || link.halen() != 6 {
                return Err(not_ethernet(
                    "it is not an Ethernet interface (ARP and neighbour discovery are answered on Ethernet only)",
                ));
            }
            let mac = link
                .addr()
                .ok_or_else(|| not_ethernet("it has no MAC address"))?;
            let on = Self {
                ifindex: u32::try_from(link.ifindex())
                    .map_err(|_| not_ethernet("its interface index is out of range"))?,
                mac,
            };
            return match on.check() {
                Ok(()) => Ok(on),
                Err(reason) => Err(not_ethernet(reason)),
            };
        }
        Err(if exists {
            not_ethernet("the kernel reports no link-layer address for it")
        } else {
            Error::UnknownInterface {
                iface: name.to_owned(),
            }
        })
    }

    /// Why the datapath could not answer for an address on this link, if
    /// it could not.
    fn check(&self) -> Result<(), &'static str> {
        if self.ifindex == 0 {
            return Err(
                "interface index 0 names no interface; give the index of the announcing one",
            );
        }
        if self.mac == [0; 6] {
            return Err("the MAC address is all zeros; give the interface's unicast MAC");
        }
        if self.mac[0] & 1 != 0 {
            return Err(
                "the MAC address is a group (multicast or broadcast) address; give a unicast MAC",
            );
        }
        Ok(())
    }
}

/// Why `addr` cannot be announced, if it cannot: no neighbour asks for these
/// (and answering for them would claim what is not one host's).
fn check_announceable(addr: IpAddr) -> Result<(), &'static str> {
    const UNSPECIFIED: &str = "the unspecified address is no host's; announce a unicast address";
    const MULTICAST: &str = "a multicast address is no one host's; announce a unicast address";
    const LOOPBACK: &str = "a loopback address never leaves its host";
    match addr {
        IpAddr::V4(v4) if v4.is_unspecified() => Err(UNSPECIFIED),
        IpAddr::V4(v4) if v4.is_broadcast() => Err("the broadcast address is no one host's"),
        IpAddr::V4(v4) if v4.is_multicast() => Err(MULTICAST),
        IpAddr::V4(v4) if v4.is_loopback() => Err(LOOPBACK),
        IpAddr::V6(v6) if v6.is_unspecified() => Err(UNSPECIFIED),
        IpAddr::V6(v6) if v6.is_multicast() => Err(MULTICAST),
        IpAddr::V6(v6) if v6.is_loopback() => Err(LOOPBACK),
        _ => Ok(()),
    }
}

impl Datapath {
    /// Announces `addr` on `on`: from now on `xdp_lb` answers ARP requests
    /// (IPv4) or neighbour solicitations (IPv6) for it that arrive on
    /// `on.ifindex` with `on.mac` (an address already announced moves to
    /// `on`). The program must be attached to that interface for the
    /// answers to happen.
    ///
    /// A request inside an 802.1Q tag is answered in its VLAN, whatever the
    /// VLAN: XDP sees tagged frames on the interface the program is
    /// attached to, whose index they carry, so an address is announced per
    /// interface, not per VLAN (an index of a VLAN device never matches).
    ///
    /// Refused: the unspecified, broadcast, multicast and loopback
    /// addresses, and a link with interface index 0 or a MAC that is not a
    /// unicast one ([`Error::L2Announcement`]); a new address when as many
    /// are announced as `MapSizes::addresses` allows ([`Error::MapFull`]).
    pub fn announce_l2(&mut self, addr: IpAddr, on: L2Link) -> Result<(), Error> {
        let addr = addr.to_canonical();
        let refuse = |reason| Error::L2Announcement { addr, reason };
        check_announceable(addr).map_err(refuse)?;
        on.check().map_err(refuse)?;
        let value = L2Announcement {
            ifindex: on.ifindex,
            mac: on.mac,
            _pad: [0; 2],
        };
        match announcements_mut(self)?.insert(key(addr), value, 0) {
            Ok(()) => Ok(()),
            // A hash map refuses a new key with E2BIG once it is full.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::E2BIG) => {
                // The capacity is read for the message only, not per insert.
                let capacity = self
                    .map_data(L2_ANNOUNCE)?
                    .info()
                    .map_err(map_err(L2_ANNOUNCE, "info"))?
                    .max_entries();
                Err(Error::MapFull {
                    map: L2_ANNOUNCE,
                    capacity,
                    size: "addresses",
                })
            }
            Err(source) => Err(Error::Map {
                map: L2_ANNOUNCE,
                op: "insert",
                source,
            }),
        }
    }

    /// Stops announcing `addr`: its ARP requests or neighbour solicitations
    /// pass to the kernel again. Returns whether it was announced (an
    /// address that was not is no error: withdrawing is idempotent).
    pub fn withdraw_l2(&mut self, addr: IpAddr) -> Result<bool, Error> {
        match announcements_mut(self)?.remove(&key(addr.to_canonical())) {
            Ok(()) => Ok(true),
            // aya reports a removal's miss as the syscall's ENOENT.
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(source) => Err(Error::Map {
                map: L2_ANNOUNCE,
                op: "remove",
                source,
            }),
        }
    }

    /// Every announced address with the link it is announced on, in no
    /// particular order (IPv4 addresses as `IpAddr::V4`).
    pub fn l2_announcements(&self) -> Result<Vec<(IpAddr, L2Link)>, Error> {
        let (keys, values, _) = self.walk::<AddressKey, L2Announcement>(L2_ANNOUNCE)?;
        Ok(keys
            .iter()
            .zip(&values)
            .map(|(key, value)| {
                (
                    from_addr(&key.addr),
                    L2Link {
                        ifindex: value.ifindex,
                        mac: value.mac,
                    },
                )
            })
            .collect())
    }
}

fn key(addr: IpAddr) -> AddressKey {
    AddressKey {
        addr: to_addr(addr),
    }
}

fn announcements_mut(
    datapath: &mut Datapath,
) -> Result<HashMap<&mut aya::maps::MapData, AddressKey, L2Announcement>, Error> {
    HashMap::try_from(datapath.map_mut(L2_ANNOUNCE)?).map_err(map_err(L2_ANNOUNCE, "open"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_addresses_and_links_are_announceable() {
        for bad in [
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "127.0.0.1",
            "::",
            "ff02::1",
            "::1",
        ] {
            assert!(check_announceable(bad.parse().unwrap()).is_err(), "{bad}");
        }
        for good in ["198.18.100.1", "2001:2:100::1", "fe80::1"] {
            assert_eq!(check_announceable(good.parse().unwrap()), Ok(()), "{good}");
        }
        let link = |ifindex, mac| L2Link { ifindex, mac };
        assert_eq!(link(2, [2, 0, 0, 0, 0, 1]).check(), Ok(()));
        assert!(link(0, [2, 0, 0, 0, 0, 1]).check().is_err());
        assert!(link(2, [0; 6]).check().is_err());
        assert!(link(2, [0x33, 0x33, 0, 0, 0, 1]).check().is_err());
        assert!(link(2, [0xff; 6]).check().is_err());
    }
}
