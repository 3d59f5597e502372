//! L2 mode: `xdp_lb` answers ARP requests and IPv6 neighbour solicitations
//! for the VIPs on one interface (`Datapath::announce_l2`), as MetalLB's and
//! Cilium's L2 modes do, and the agent tells the segment when it starts
//! answering for an address: an ARP announcement (a gratuitous ARP request,
//! RFC 5227 2.3) or an unsolicited neighbour advertisement with the Override
//! flag (RFC 4861 7.2.6). A host that still holds the address at another MAC,
//! the box this one replaces, moves its entry at once; without the
//! announcement it would go on sending to the old MAC until the entry went
//! stale and failed its probes (with Linux's defaults, up to 45 s reachable,
//! then 5 s of delay and 3 s of probes).
//!
//! Each announcement is sent again on the agent's next announcement ticks,
//! 2 s apart (RFC 5227 sends two, RFC 4861 up to three), in case one is
//! lost.
//! A failure to send is logged and counted, never an error of the speaker:
//! the map entry, which answers every request, is what serving needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use etherparse::{ArpEthIpv4Packet, ArpOperation, Icmpv6Type, PacketBuilder};
use xdp_lb::{Datapath, L2Link};

use crate::metrics::Metrics;

/// ARP announcements per address: RFC 5227's `ANNOUNCE_NUM`.
const ARP_ANNOUNCEMENTS: u8 = 2;
/// Unsolicited advertisements per address: RFC 4861's
/// `MAX_NEIGHBOR_ADVERTISEMENT`.
const NEIGHBOUR_ADVERTISEMENTS: u8 = 3;

/// The L2 speaker: the interface the answers come from, and the
/// announcements still to send.
#[derive(Debug)]
pub struct L2 {
    interface: String,
    link: L2Link,
    /// Addresses newly answered for, and how many announcements each still
    /// gets.
    pending: BTreeMap<IpAddr, u8>,
}

impl L2 {
    pub const fn new(interface: String, link: L2Link) -> Self {
        Self {
            interface,
            link,
            pending: BTreeMap::new(),
        }
    }

    /// The interface, for `xlb status`.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The addresses the map answers for on this speaker's link, whoever
    /// wrote them (an agent that has not announced yet shows what an
    /// earlier one left, [`super::Announcer::views`]).
    pub fn held(&self, datapath: &Datapath) -> Result<BTreeSet<IpAddr>, xdp_lb::Error> {
        Ok(datapath
            .l2_announcements()?
            .into_iter()
            .filter(|(_, on)| *on == self.link)
            .map(|(addr, _)| addr)
            .collect())
    }

    /// Moves the map from answering for `before` (None: unknown, e.g. left
    /// by an earlier agent) to answering for exactly `after`, and announces
    /// the addresses it did not answer for on this link.
    pub fn announce(
        &mut self,
        before: Option<&BTreeSet<IpAddr>>,
        after: &BTreeSet<IpAddr>,
        datapath: &mut Datapath,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        // What the map holds on this link, and what must leave it: from the
        // last success, or read back (left by an earlier agent, perhaps on
        // another link).
        let (held, stale): (BTreeSet<IpAddr>, Vec<IpAddr>) = match before {
            Some(before) => (before.clone(), before.difference(after).copied().collect()),
            None => {
                let pinned = datapath.l2_announcements()?;
                (
                    pinned
                        .iter()
                        .filter(|(_, on)| *on == self.link)
                        .map(|(addr, _)| *addr)
                        .collect(),
                    pinned
                        .iter()
                        .map(|(addr, _)| *addr)
                        .filter(|addr| !after.contains(addr))
                        .collect(),
                )
            }
        };
        // Withdrawn first: the map (as big as the address map) then never
        // holds more than `after`, which the reconciler made sure fits,
        // whatever an earlier agent left in it. No wanted address is
        // touched by it.
        for addr in stale {
            datapath.withdraw_l2(addr)?;
            self.pending.remove(&addr);
        }
        let mut new = Vec::new();
        for addr in after.difference(&held) {
            datapath
                .announce_l2(*addr, self.link)
                .map_err(|error| match error {
                    // In the words of the agent's flags, not the loader's.
                    xdp_lb::Error::MapFull { capacity, .. } => anyhow::anyhow!(
                        "announcing {addr}: the L2 announcement map is full ({capacity} \
                         entries): raise --max-addresses"
                    ),
                    error => error.into(),
                })?;
            new.push(*addr);
        }
        self.send(&new, metrics);
        for addr in new {
            self.pending.insert(addr, announcements(addr) - 1);
        }
        self.pending.retain(|_, left| *left > 0);
        Ok(())
    }

    /// Sends the next announcement of every address that still has one to
    /// get: called on each announcement tick.
    pub fn send_pending(&mut self, metrics: &Metrics) {
        let due: Vec<IpAddr> = self.pending.keys().copied().collect();
        self.send(&due, metrics);
        for left in self.pending.values_mut() {
            *left -= 1;
        }
        self.pending.retain(|_, left| *left > 0);
    }

    /// Sends one announcement of each of `addrs`, through one socket.
    fn send(&self, addrs: &[IpAddr], metrics: &Metrics) {
        if addrs.is_empty() {
            return;
        }
        let socket = PacketSocket::open(self.link.ifindex)
            .inspect_err(|error| {
                tracing::warn!(
                    interface = self.interface,
                    %error,
                    "no packet socket to announce the VIPs on"
                );
            })
            .ok();
        for &addr in addrs {
            let sent = socket
                .as_ref()
                .map(|s| s.send(&announcement(addr, self.link.mac)));
            if let Some(Err(error)) = &sent {
                tracing::warn!(interface = self.interface, %addr, %error, "announcing a VIP failed");
            }
            metrics.l2_announcement(family(addr), matches!(sent, Some(Ok(()))));
        }
    }
}

/// How many announcements `addr` gets.
const fn announcements(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => ARP_ANNOUNCEMENTS,
        IpAddr::V6(_) => NEIGHBOUR_ADVERTISEMENTS,
    }
}

/// The metrics' `family` label.
const fn family(addr: IpAddr) -> &'static str {
    match addr {
        IpAddr::V4(_) => "ipv4",
        IpAddr::V6(_) => "ipv6",
    }
}

/// The frame that announces `addr` at `mac` to the segment.
fn announcement(addr: IpAddr, mac: [u8; 6]) -> Vec<u8> {
    match addr {
        IpAddr::V4(addr) => arp_announcement(addr, mac),
        IpAddr::V6(addr) => neighbour_advertisement(addr, mac),
    }
}

/// A broadcast ARP request whose sender and target are both `addr`, the
/// sender's MAC `mac`, the target's zero (RFC 5227 2.3). Linux takes it as
/// gratuitous (`arp_is_garp`) and overrides the entry it holds for `addr`
/// whatever its lock time; it creates none where it holds none.
fn arp_announcement(addr: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: addr.octets(),
        target_mac: [0; 6],
        target_ipv4: addr.octets(),
    };
    let mut frame = Vec::with_capacity(42);
    PacketBuilder::ethernet2(mac, [0xff; 6])
        .arp(arp.into())
        .write(&mut frame)
        .expect("an ARP frame fits in memory");
    frame
}

/// An unsolicited neighbour advertisement for `addr` at `mac`, to all nodes:
/// from `addr` itself, as the kernel sends its own; hop limit 255 (receivers
/// drop any other); Override set, so that an entry at another MAC changes,
/// Solicited and Router clear; a Target link-layer address option.
fn neighbour_advertisement(addr: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    /// Option type 2 (target link-layer address), length 1 (8 bytes).
    const TARGET_LINK_ADDR: [u8; 2] = [2, 1];
    let kind = Icmpv6Type::NeighborAdvertisement(etherparse::icmpv6::NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    });
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&addr.octets());
    payload.extend_from_slice(&TARGET_LINK_ADDR);
    payload.extend_from_slice(&mac);
    let mut frame = Vec::with_capacity(86);
    PacketBuilder::ethernet2(mac, multicast_mac(ALL_NODES))
        .ipv6(addr.octets(), ALL_NODES.octets(), 255)
        .icmpv6(kind)
        .write(&mut frame, &payload)
        .expect("an advertisement fits in memory");
    frame
}

/// The Ethernet address of IPv6 multicast group `group` (RFC 2464 7).
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// An `AF_PACKET` socket that sends whole frames, exactly as given, on one
/// interface. Protocol 0: it receives nothing.
struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    fn open(ifindex: u32) -> io::Result<Self> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        // SAFETY: plain socket(2); the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, ifindex })
    }

    /// Sends `frame` (Ethernet header included) on the socket's interface.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all zeros is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(frame.get(..6).unwrap_or(&[0; 6]));
        // SAFETY: `frame` and `to` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == frame.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of the frame's {} bytes",
                frame.len()
            ))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

    #[test]
    fn an_arp_announcement_is_a_broadcast_request_for_the_address_itself() {
        let vip = Ipv4Addr::new(198, 18, 10, 1);
        let frame = announcement(vip.into(), MAC);
        let sliced = SlicedPacket::from_ethernet(&frame).expect("an Ethernet frame");
        let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
            panic!("not Ethernet II");
        };
        assert_eq!((eth.source(), eth.destination()), (MAC, [0xff; 6]));
        let Some(NetSlice::Arp(arp)) = &sliced.net else {
            panic!("not ARP: {frame:02x?}");
        };
        let arp = arp.to_packet().try_eth_ipv4().expect("Ethernet/IPv4 ARP");
        assert_eq!(
            arp,
            ArpEthIpv4Packet {
                operation: ArpOperation::REQUEST,
                sender_mac: MAC,
                sender_ipv4: vip.octets(),
                target_mac: [0; 6],
                target_ipv4: vip.octets(),
            }
        );
    }

    #[test]
    fn a_neighbour_advertisement_overrides_from_the_address_to_all_nodes() {
        let vip: Ipv6Addr = "2001:2:0:10::1".parse().unwrap();
        let frame = announcement(vip.into(), MAC);
        let sliced = SlicedPacket::from_ethernet(&frame).expect("an Ethernet frame");
        let Some(LinkSlice::Ethernet2(eth)) = &sliced.link else {
            panic!("not Ethernet II");
        };
        assert_eq!(
            (eth.source(), eth.destination()),
            (MAC, [0x33, 0x33, 0, 0, 0, 1])
        );
        let Some(NetSlice::Ipv6(ip)) = &sliced.net else {
            panic!("not IPv6");
        };
        let header = ip.header();
        assert_eq!(header.source_addr(), vip);
        assert_eq!(
            header.destination_addr(),
            "ff02::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(header.hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &sliced.transport else {
            panic!("not ICMPv6");
        };
        // The checksum the pseudo-header and message sum to, recomputed.
        let expected = icmp
            .header()
            .icmp_type
            .calc_checksum(header.source(), header.destination(), icmp.payload())
            .expect("a checksum");
        assert_eq!(icmp.checksum(), expected);
        let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
            panic!("not an advertisement: {:?}", icmp.icmp_type());
        };
        assert!(flags.r#override && !flags.solicited && !flags.router);
        // Target, then the target link-layer address option.
        let mut body = vip.octets().to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&MAC);
        assert_eq!(icmp.payload(), body);
    }
}
