//! ICMP and ICMPv6 errors about flows, as the model reads and translates
//! them (`lb/icmp.rs`, `xdp/icmp.rs`): which errors quote a TCP or UDP
//! header the datapath looks up, what their translation must rewrite, and
//! how every checksum over the rewritten bytes must move.
//!
//! What is read follows the datapath's policy: IPv4 errors of types 3
//! (destination unreachable), 11 (time exceeded) and 12 (parameter problem),
//! ICMPv6 errors of types 1 to 4 (RFC 4443); the quote must hold a network
//! header of the error's family (IPv4: IHL at least 5, not a later fragment;
//! IPv6: no IPv4-mapped address, no extension header walked) and the quoted
//! TCP/UDP ports. The quote is read up to the end of the error's datagram
//! (what follows is Ethernet padding), as the datapath reads it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

use xdp_lb::{ParseCounter, Protocol};

use crate::{
    checksum::{self, ICMP_CHECKSUM, IP4_CHECKSUM, TCP_CHECKSUM, UDP_CHECKSUM},
    parse::{Headers, IPPROTO_TCP, IPPROTO_UDP, IpPacket, is_v4_mapped},
};

/// The ICMP header: type, code, checksum, four bytes of the type's own.
pub(crate) const ICMP_HLEN: usize = 8;

/// An ICMP or ICMPv6 error quoting a TCP or UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IcmpError {
    /// The error's own IP packet; its transport header is the ICMP header.
    pub ip: IpPacket,
    /// Offsets of the quoted network and transport headers.
    pub inner_l3: usize,
    pub inner_l4: usize,
    /// The quoted packet's ends, as it was sent.
    pub inner_src: SocketAddr,
    pub inner_dst: SocketAddr,
    pub proto: Protocol,
    /// Offset of the quoted TCP or UDP checksum, when the frame holds it
    /// (a router may quote only 8 transport bytes).
    pub inner_checksum: Option<usize>,
}

/// Where a translated error goes, and what it is translated to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Toward {
    /// To the flow's backend: an error about a reply, sent to a frontend
    /// address. The outer destination and the quoted source become it; under
    /// source NAT the quoted destination becomes the second address (the
    /// one the flow was given).
    Backend(SocketAddr, Option<SocketAddr>),
    /// To the client: an error about a request, sent anywhere else. The
    /// quoted destination becomes the frontend, and so does the outer source
    /// when it was the backend itself; under source NAT the quoted source and
    /// the outer destination become the second address (the client).
    Client(SocketAddr, Option<SocketAddr>),
}

/// Reads `frame` as an ICMP error quoting a TCP or UDP header; `None` for
/// anything else (echo, other types, other quoted protocols, quotes cut
/// before the ports), which goes the way of any other ICMP packet.
pub(crate) fn read(frame: &[u8], headers: &Headers) -> Option<IcmpError> {
    let v4 = match headers.counter {
        ParseCounter::Icmp4 => true,
        ParseCounter::Icmp6 => false,
        _ => return None,
    };
    let ip = headers.ip?;
    let icmp_type = frame[ip.l4];
    let is_error = if v4 {
        matches!(icmp_type, 3 | 11 | 12)
    } else {
        matches!(icmp_type, 1..=4)
    };
    if !is_error {
        return None;
    }
    let inner_l3 = ip.l4 + ICMP_HLEN;
    let (src, dst, proto, inner_l4) = if v4 {
        let quoted = frame.get(inner_l3..(inner_l3 + 20).min(ip.end))?;
        if quoted.len() < 20 {
            return None;
        }
        let header_len = usize::from(quoted[0] & 0x0f) * 4;
        let later_fragment = u16::from_be_bytes([quoted[6], quoted[7]]) & 0x1fff != 0;
        if quoted[0] >> 4 != 4 || header_len < 20 || later_fragment {
            return None;
        }
        let address = |at: usize| {
            let octets: [u8; 4] = quoted[at..at + 4].try_into().expect("4 bytes");
            IpAddr::from(Ipv4Addr::from(octets))
        };
        if inner_l3 + header_len > ip.end {
            return None;
        }
        (address(12), address(16), quoted[9], inner_l3 + header_len)
    } else {
        let quoted = frame.get(inner_l3..inner_l3 + 40)?;
        if quoted[0] >> 4 != 6 || inner_l3 + 40 > ip.end {
            return None;
        }
        let address = |at: usize| {
            let octets: [u8; 16] = quoted[at..at + 16].try_into().expect("16 bytes");
            IpAddr::from(Ipv6Addr::from(octets))
        };
        let (src, dst) = (address(8), address(24));
        if [ip.src, ip.dst, src, dst].into_iter().any(is_v4_mapped) {
            return None;
        }
        (src, dst, quoted[6], inner_l3 + 40)
    };
    let (proto, checksum_at) = match proto {
        IPPROTO_TCP => (Protocol::Tcp, TCP_CHECKSUM),
        IPPROTO_UDP => (Protocol::Udp, UDP_CHECKSUM),
        _ => return None,
    };
    if inner_l4 + 4 > ip.end {
        return None;
    }
    let ports = frame.get(inner_l4..inner_l4 + 4)?;
    let checksum_at = inner_l4 + checksum_at;
    Some(IcmpError {
        ip,
        inner_l3,
        inner_l4,
        inner_src: SocketAddr::new(src, u16::from_be_bytes([ports[0], ports[1]])),
        inner_dst: SocketAddr::new(dst, u16::from_be_bytes([ports[2], ports[3]])),
        proto,
        inner_checksum: (checksum_at + 2 <= ip.end).then_some(checksum_at),
    })
}

impl IcmpError {
    const fn v4(&self) -> bool {
        self.ip.is_v4()
    }

    fn addr_len(&self) -> usize {
        if self.v4() { 4 } else { 16 }
    }

    /// Offsets of the source and destination addresses in a network header
    /// at `l3` of the error's family.
    fn addresses(&self, l3: usize) -> (usize, usize) {
        if self.v4() {
            (l3 + 12, l3 + 16)
        } else {
            (l3 + 8, l3 + 24)
        }
    }

    /// The fields `toward` rewrites, as (offset, new bytes): the quoted
    /// address and port, and the outer address when it changes.
    fn fields(&self, frame: &[u8], toward: Toward) -> Vec<(usize, Vec<u8>)> {
        let (quoted_src, quoted_dst) = self.addresses(self.inner_l3);
        let (outer_src, outer_dst) = self.addresses(self.ip.l3);
        let len = self.addr_len();
        let (quoted_at, port_at, outer_at, to) = match toward {
            Toward::Backend(to, _) => (quoted_src, self.inner_l4, outer_dst, to),
            Toward::Client(to, _) => (quoted_dst, self.inner_l4 + 2, outer_src, to),
        };
        let bytes = |addr: IpAddr| match addr {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let new = bytes(to.ip());
        let mut fields = vec![
            (quoted_at, new.clone()),
            (port_at, to.port().to_be_bytes().to_vec()),
        ];
        // An error from a router keeps the router's address; one from the
        // backend itself (its port unreachable) must not show the backend.
        let outer_too = match toward {
            Toward::Backend(..) => true,
            Toward::Client(..) => {
                frame[outer_at..outer_at + len] == frame[quoted_at..quoted_at + len]
            }
        };
        if outer_too {
            fields.push((outer_at, new));
        }
        // Under source NAT the quote's other end too, and going to the
        // client the outer destination: the error came to the source-NAT
        // address, which the client never saw.
        match toward {
            Toward::Backend(_, Some(given)) => {
                fields.push((quoted_dst, bytes(given.ip())));
                fields.push((self.inner_l4 + 2, given.port().to_be_bytes().to_vec()));
            }
            Toward::Client(_, Some(client)) => {
                fields.push((quoted_src, bytes(client.ip())));
                fields.push((self.inner_l4, client.port().to_be_bytes().to_vec()));
                fields.push((outer_dst, bytes(client.ip())));
            }
            _ => {}
        }
        fields
    }

    /// `frame` with the translation `toward` applied, checksums aside (the
    /// frame is not routed yet).
    pub(crate) fn translated(&self, frame: &[u8], toward: Toward) -> Vec<u8> {
        let mut out = frame.to_vec();
        for (at, bytes) in self.fields(frame, toward) {
            out[at..at + bytes.len()].copy_from_slice(&bytes);
        }
        out
    }

    /// The checksum fields a translation updates: the outer IPv4 header's,
    /// the ICMP checksum, the quoted IPv4 header's, and the quoted TCP/UDP
    /// checksum when the frame holds it.
    pub(crate) fn checksum_fields(&self) -> Vec<usize> {
        let mut fields = vec![self.ip.l4 + ICMP_CHECKSUM];
        if self.v4() {
            fields.extend([self.ip.l3 + IP4_CHECKSUM, self.inner_l3 + IP4_CHECKSUM]);
        }
        fields.extend(self.inner_checksum);
        fields
    }

    /// What the ICMP checksum covers that a translation may write: the
    /// message, and for ICMPv6 the pseudo-header's addresses (its length
    /// and next header do not change).
    fn icmp_covers(&self) -> Vec<Range<usize>> {
        let mut covers = just(self.ip.l4..self.ip.end);
        if !self.v4() {
            covers.push(self.ip.l3 + 8..self.ip.l3 + 40);
        }
        covers
    }

    /// Every checksum over the translated bytes moved with them: the
    /// one's-complement sum of what each covers, its own field included, is
    /// the same in `after` as in `before` (RFC 1624: an incremental update
    /// neither breaks a checksum nor launders one). Where the sum cannot be
    /// taken whole (a quote cut short), the sum of the covered words the
    /// translation writes is compared, which is the same condition.
    pub(crate) fn checksums_moved(&self, before: &[u8], after: &[u8]) -> Result<(), String> {
        let ip = &self.ip;
        let mut sums: Vec<(&str, Vec<Range<usize>>)> = Vec::new();
        if self.v4() {
            sums.push(("outer IPv4 header", just(ip.l3..ip.l4)));
            // Its checksum and addresses: the words a translation writes.
            let quoted = self.inner_l3;
            sums.push((
                "quoted IPv4 header",
                just(quoted + IP4_CHECKSUM..quoted + 20),
            ));
        }
        if let Some(at) = self.inner_checksum {
            let (src, _) = self.addresses(self.inner_l3);
            sums.push((
                "quoted transport",
                vec![
                    src..src + 2 * self.addr_len(),
                    self.inner_l4..self.inner_l4 + 4,
                    at..at + 2,
                ],
            ));
            if self.proto == Protocol::Udp {
                udp_zero_kept(before, after, at)?;
            }
        }
        sums.push(("ICMP", self.icmp_covers()));
        let (was, is) = (
            checksum::icmp_holds(before, ip),
            checksum::icmp_holds(after, ip),
        );
        if was != is {
            return Err(format!(
                "the ICMP checksum held before the translation: {was}, after: {is}"
            ));
        }
        if self.v4()
            && checksum::ip4_header_holds(before, ip) != checksum::ip4_header_holds(after, ip)
        {
            return Err(
                "the outer IPv4 header checksum held before, not after, or the reverse".into(),
            );
        }
        for (what, covers) in sums {
            let (was, is) = (
                checksum::sum_class(before, &covers),
                checksum::sum_class(after, &covers),
            );
            if was != is {
                return Err(format!(
                    "the {what} checksum did not move with the bytes it covers: \
                     one's-complement sum {was:#06x} before, {is:#06x} after"
                ));
            }
        }
        Ok(())
    }
}

/// One range, as a list of ranges.
fn just(range: Range<usize>) -> Vec<Range<usize>> {
    vec![range]
}

/// A zero UDP checksum ("none", RFC 768) stays zero, and a nonzero one never
/// becomes zero.
fn udp_zero_kept(before: &[u8], after: &[u8], at: usize) -> Result<(), String> {
    let zero = |frame: &[u8]| frame[at..at + 2] == [0, 0];
    if zero(before) != zero(after) {
        return Err(format!(
            "the quoted UDP checksum was {:02x?}, became {:02x?}",
            &before[at..at + 2],
            &after[at..at + 2]
        ));
    }
    Ok(())
}
