//! Frames: untagged Ethernet/IPv4 with TCP or UDP, built with etherparse (which
//! computes every checksum from scratch), the byte offsets the benchmark wrapper
//! rotates, the same frames wrapped for direct server return, and comparisons
//! of output frames.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use anyhow::Context as _;
use etherparse::{IpDscp, IpEcn, IpHeaders, IpNumber, Ipv4Header, PacketBuilder};
use xdp_lb::{Flow, Protocol, Rotation};

/// Low 16 bits of the IPv4 source address (Ethernet 14 + IPv4 12 + 2).
pub(crate) const SRC_IP_LO: u16 = 28;
/// Low 16 bits of the IPv4 destination address (Ethernet 14 + IPv4 16 + 2).
pub(crate) const DST_IP_LO: u16 = 32;
/// The TCP or UDP source port (Ethernet 14 + IPv4 20).
pub(crate) const SRC_PORT: u16 = 34;
/// The TCP or UDP destination port.
pub(crate) const DST_PORT: u16 = 36;

/// The IPv4 TOS byte (DSCP and ECN).
const TOS: usize = 15;
const TTL: usize = 22;
const PROTO: usize = 23;
const IP_CSUM: usize = 24;
const SRC_IP: usize = 26;
const DST_IP: usize = 30;
const TCP_CSUM: usize = 50;
const UDP_CSUM: usize = 40;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What follows the IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4 {
    /// A TCP SYN: the first packet of a connection.
    Syn,
    /// A TCP ACK carrying data: a packet of an established connection.
    Ack,
    /// A UDP datagram with a (non-zero) checksum.
    Udp,
}

/// The fields of a benchmark frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Headers {
    pub(crate) src_mac: [u8; 6],
    pub(crate) dst_mac: [u8; 6],
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    pub(crate) ttl: u8,
    pub(crate) l4: L4,
}

/// Data of the ACK and UDP frames: as long for both, so that the wrapper restores
/// the same number of bytes in every case but the SYN.
const PAYLOAD: &[u8] = b"GET / HTTP/1.1\r\n";

impl Headers {
    /// The frame, every checksum computed.
    pub(crate) fn build(&self) -> Vec<u8> {
        let ip = PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ipv4(
            self.src.ip().octets(),
            self.dst.ip().octets(),
            self.ttl,
        );
        let (sport, dport) = (self.src.port(), self.dst.port());
        let mut out = Vec::new();
        let written = match self.l4 {
            L4::Syn => ip.tcp(sport, dport, 1000, 64240).syn().write(&mut out, b""),
            L4::Ack => ip
                .tcp(sport, dport, 1001, 64240)
                .ack(5001)
                .write(&mut out, PAYLOAD),
            L4::Udp => ip.udp(sport, dport).write(&mut out, PAYLOAD),
        };
        written.expect("a fixed-size frame always fits a Vec");
        out
    }

    /// The flow this frame belongs to, as `simulate` takes it.
    pub(crate) fn flow(&self) -> Flow {
        let proto = match self.l4 {
            L4::Syn | L4::Ack => Protocol::Tcp,
            L4::Udp => Protocol::Udp,
        };
        Flow::new(SocketAddr::V4(self.src), SocketAddr::V4(self.dst), proto)
    }
}

/// Writes the rotated fields of run `n` into `packet`, as `xdp_bench` does.
pub(crate) fn rotate(packet: &mut [u8], rotations: &[Rotation], n: u32) {
    for r in rotations.iter().filter(|r| r.offset != 0) {
        let at = usize::from(r.offset);
        packet[at..at + 2].copy_from_slice(&r.value(n).to_be_bytes());
    }
}

/// The flow a (rotated) frame carries.
pub(crate) fn flow_of(packet: &[u8]) -> anyhow::Result<Flow> {
    anyhow::ensure!(packet.len() >= 38, "frame too short for IPv4 + ports");
    let proto = match packet[PROTO] {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        other => anyhow::bail!("frame carries IP protocol {other}, not TCP or UDP"),
    };
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    let src = SocketAddrV4::new(ipv4_at(packet, SRC_IP), port(usize::from(SRC_PORT)));
    let dst = SocketAddrV4::new(ipv4_at(packet, DST_IP), port(usize::from(DST_PORT)));
    Ok(Flow::new(SocketAddr::V4(src), SocketAddr::V4(dst), proto))
}

fn ipv4_at(packet: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3])
}

/// Which end of the flow a translation rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rewrite {
    Destination,
    Source,
}

/// `packet` as the datapath forwards it: `end` becomes `to`, the MACs those of
/// the next hop, the TTL one less. Checksums are left as they were: compare the
/// result with [`same_but_checksums`].
pub(crate) fn translated(
    packet: &[u8],
    end: Rewrite,
    to: SocketAddrV4,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let mut out = packet.to_vec();
    out[..6].copy_from_slice(&dst_mac);
    out[6..12].copy_from_slice(&src_mac);
    out[TTL] -= 1;
    let (ip_at, port_at) = match end {
        Rewrite::Destination => (DST_IP, usize::from(DST_PORT)),
        Rewrite::Source => (SRC_IP, usize::from(SRC_PORT)),
    };
    out[ip_at..ip_at + 4].copy_from_slice(&to.ip().octets());
    out[port_at..port_at + 2].copy_from_slice(&to.port().to_be_bytes());
    out
}

/// The frame `packet` (Ethernet/IPv4) as the datapath sends it to a backend
/// by direct server return: its IPv4 packet unchanged behind an outer IPv4
/// header from `source` to `backend` (protocol 4, IPIP), the outer TTL 64
/// less this hop, DF set, identification 0, the TOS copied, and new MACs.
/// Every field of the outer header, its checksum included, computed by
/// etherparse.
pub(crate) fn encapsulated(
    packet: &[u8],
    source: Ipv4Addr,
    backend: Ipv4Addr,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
) -> Vec<u8> {
    let inner = &packet[SRC_IP - 12..];
    let tos = packet[TOS];
    let mut outer = Ipv4Header::new(
        u16::try_from(inner.len()).expect("a frame-sized packet"),
        63,
        IpNumber(4),
        source.octets(),
        backend.octets(),
    )
    .expect("an IPv4 header");
    outer.dont_fragment = true;
    outer.identification = 0;
    outer.dscp = IpDscp::try_new(tos >> 2).expect("6 bits");
    outer.ecn = IpEcn::try_new(tos & 0x3).expect("2 bits");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(IpHeaders::Ipv4(outer, Default::default()))
        .write(&mut out, IpNumber(4), inner)
        .expect("a frame-sized packet always fits a Vec");
    out
}

/// True when the frames are equal but for the IPv4 and TCP/UDP checksums: the
/// wrapper rotates fields without fixing checksums up, so only the frame run 0
/// sees (built by etherparse) has checksums worth comparing. Of a wrapped
/// frame (`encapsulated`) only the outer header's checksum is left out: the
/// inner packet leaves as it came, stale checksums and all.
pub(crate) fn same_but_checksums(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() || a.len() <= PROTO {
        return false;
    }
    // No transport checksum to leave out of another protocol (a wrapped
    // frame's outer header says IPIP).
    let l4 = match a[PROTO] {
        IPPROTO_TCP => TCP_CSUM..TCP_CSUM + 2,
        IPPROTO_UDP => UDP_CSUM..UDP_CSUM + 2,
        _ => 0..0,
    };
    a.iter()
        .zip(b)
        .enumerate()
        .all(|(i, (x, y))| x == y || (IP_CSUM..IP_CSUM + 2).contains(&i) || l4.contains(&i))
}

/// A frame as hex, for error messages.
pub(crate) fn hex(packet: &[u8]) -> String {
    packet.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails with both frames in hex unless `check` holds.
pub(crate) fn ensure_frame(
    check: bool,
    what: &str,
    got: &[u8],
    expected: &[u8],
) -> anyhow::Result<()> {
    anyhow::ensure!(
        check,
        "{what}: output frame differs\n  got      {}\n  expected {}",
        hex(got),
        hex(expected)
    );
    Ok(())
}

/// An IPv4 address `offset` above `base`.
pub(crate) fn ipv4_plus(base: Ipv4Addr, offset: u32) -> anyhow::Result<Ipv4Addr> {
    u32::from(base)
        .checked_add(offset)
        .map(Ipv4Addr::from)
        .context("address overflow")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syn() -> Headers {
        Headers {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40_000),
            dst: SocketAddrV4::new(Ipv4Addr::new(198, 19, 0, 0), 80),
            ttl: 64,
            l4: L4::Syn,
        }
    }

    #[test]
    fn rotated_fields_take_the_wrappers_values() {
        let mut frame = syn().build();
        let rotations = [
            Rotation {
                offset: DST_IP_LO,
                base: 0,
                modulus: 1000,
                divisor: 1,
            },
            Rotation {
                offset: SRC_PORT,
                base: 10_000,
                modulus: 0,
                divisor: 1000,
            },
        ];
        rotate(&mut frame, &rotations, 2_345);
        let flow = flow_of(&frame).unwrap();
        assert_eq!(flow.dst, "198.19.1.89:80".parse().unwrap()); // 345 = 1 · 256 + 89
        assert_eq!(flow.src, "10.0.0.1:10002".parse().unwrap());
    }

    #[test]
    fn the_byte_model_of_dnat_matches_a_rebuilt_frame_but_for_checksums() {
        let input = syn();
        let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 2, 7), 8080);
        let (down, next) = ([2, 0, 0, 0, 0xfe, 2], [2, 0, 0, 2, 0, 7]);
        let modelled = translated(&input.build(), Rewrite::Destination, backend, down, next);
        let rebuilt = Headers {
            src_mac: down,
            dst_mac: next,
            dst: backend,
            ttl: 63,
            ..input
        }
        .build();
        assert!(same_but_checksums(&modelled, &rebuilt));
        assert_ne!(modelled, rebuilt, "the model leaves the checksums stale");
    }

    #[test]
    fn a_wrapped_frame_is_the_packet_behind_a_valid_outer_header() {
        let input = Headers {
            l4: L4::Ack,
            ..syn()
        }
        .build();
        let (source, backend) = (Ipv4Addr::new(198, 18, 3, 254), Ipv4Addr::new(198, 18, 2, 7));
        let (down, next) = ([2, 0, 0, 0, 0xfe, 2], [2, 0, 0, 2, 0, 7]);
        let out = encapsulated(&input, source, backend, down, next);
        assert_eq!(out.len(), input.len() + 20);
        assert_eq!(&out[34..], &input[14..], "the inner packet, byte for byte");
        let (outer, rest) = etherparse::Ipv4Header::from_slice(&out[14..]).unwrap();
        assert_eq!(rest, &input[14..]);
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        assert_eq!(
            (outer.source, outer.destination),
            (source.octets(), backend.octets())
        );
        assert_eq!((outer.protocol, outer.time_to_live), (IpNumber(4), 63));
        assert!(outer.dont_fragment);
        assert_eq!(usize::from(outer.total_len), input.len() - 14 + 20);
        // A changed outer checksum is no difference; a changed inner byte is.
        let mut b = out.clone();
        b[IP_CSUM] ^= 1;
        assert!(same_but_checksums(&out, &b));
        b[50] ^= 1;
        assert!(!same_but_checksums(&out, &b));
    }

    #[test]
    fn a_changed_port_is_a_difference() {
        let a = syn().build();
        let mut b = a.clone();
        b[usize::from(DST_PORT) + 1] ^= 1;
        assert!(!same_but_checksums(&a, &b));
    }
}
