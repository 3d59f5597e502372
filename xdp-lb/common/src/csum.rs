//! Incremental Internet checksum updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`),
//! and whole checksums (RFC 1071) of the few bytes of a header the datapath
//! writes itself.
//!
//! The datapath rewrites addresses, ports and the TTL and must keep the IPv4
//! header checksum and the TCP/UDP checksum (whose pseudo-header covers the
//! addresses) valid without summing the whole packet. Fields are taken as the
//! bytes they are on the wire, so the arithmetic is the same on any host.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum `check` after the bytes `old` were replaced by `new` in the
/// covered data (both of even length `N`, 16-bit aligned in the packet).
#[inline(always)]
pub fn replace<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut sum = u32::from(!check);
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(!u16::from_be_bytes([old[i], old[i + 1]]));
        sum += u32::from(u16::from_be_bytes([new[i], new[i + 1]]));
        i += 2;
    }
    !fold(sum)
}

/// Like [`replace`], for a UDP checksum: 0 means "no checksum" on IPv4 and stays
/// 0; a computed 0 is sent as `0xffff` (RFC 768).
#[inline(always)]
pub fn replace_udp<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    if check == 0 {
        return 0;
    }
    match replace(check, old, new) {
        0 => 0xffff,
        c => c,
    }
}

/// Adds the 16-bit words of `data` (an even number of bytes) to the running
/// one's-complement sum `sum`: a checksum built from parts (a pseudo-header,
/// a header, the data).
#[inline(always)]
pub fn add<const N: usize>(mut sum: u32, data: &[u8; N]) -> u32 {
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
        // Folded as it goes, so that no number of parts can overflow.
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    sum
}

/// The checksum field's value for the running sum `sum` of every covered word
/// (with the checksum field itself counted as 0).
#[inline(always)]
pub const fn finish(sum: u32) -> u16 {
    !fold(sum)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    use super::*;

    const ETH: usize = 14;

    fn be(bytes: &[u8]) -> u16 {
        u16::from_be_bytes([bytes[0], bytes[1]])
    }

    /// Rewrites the destination address and port of an IPv4/TCP frame with the
    /// incremental updates, as the datapath does.
    fn dnat_tcp4(frame: &mut [u8], addr: [u8; 4], port: u16) {
        let old_addr: [u8; 4] = frame[ETH + 16..ETH + 20].try_into().unwrap();
        let old_port: [u8; 2] = frame[ETH + 22..ETH + 24].try_into().unwrap();
        let ip_check = replace(be(&frame[ETH + 10..]), &old_addr, &addr);
        frame[ETH + 10..ETH + 12].copy_from_slice(&ip_check.to_be_bytes());
        let mut l4 = replace(be(&frame[ETH + 36..]), &old_addr, &addr);
        l4 = replace(l4, &old_port, &port.to_be_bytes());
        frame[ETH + 36..ETH + 38].copy_from_slice(&l4.to_be_bytes());
        frame[ETH + 16..ETH + 20].copy_from_slice(&addr);
        frame[ETH + 22..ETH + 24].copy_from_slice(&port.to_be_bytes());
    }

    fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 7, 1000)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    proptest! {
        #[test]
        fn incremental_tcp4_dnat_equals_full_recompute(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), new_dst in any::<[u8; 4]>(),
            sport in any::<u16>(), dport in any::<u16>(), new_port in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut frame = tcp4(src, dst, sport, dport, &payload);
            dnat_tcp4(&mut frame, new_dst, new_port);
            let expected = tcp4(src, new_dst, sport, new_port, &payload);
            prop_assert_eq!(frame, expected);
        }

        #[test]
        fn incremental_ip6_address_change_equals_full_recompute(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), new_dst in any::<[u8; 16]>(),
            sport in any::<u16>(), dport in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let build = |d: [u8; 16]| {
                let mut out = Vec::new();
                PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv6(src, d, 64)
                    .udp(sport, dport)
                    .write(&mut out, &payload)
                    .unwrap();
                out
            };
            let mut frame = build(dst);
            let check_at = ETH + 40 + 6;
            let check = replace_udp(be(&frame[check_at..]), &dst, &new_dst);
            frame[check_at..check_at + 2].copy_from_slice(&check.to_be_bytes());
            frame[ETH + 24..ETH + 40].copy_from_slice(&new_dst);
            let expected = build(new_dst);
            // etherparse writes 0xffff for a computed 0, as RFC 768 asks; so do we.
            prop_assert_eq!(frame, expected);
        }
    }

    proptest! {
        #[test]
        fn a_checksum_built_from_parts_is_the_ipv4_header_checksum(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
        ) {
            let frame = tcp4(src, dst, 1, 2, b"");
            let mut header: [u8; 20] = frame[ETH..ETH + 20].try_into().unwrap();
            let expected = be(&header[10..]);
            header[10..12].fill(0);
            // Two parts (12 + 8 bytes), as a pseudo-header and a header would be.
            let head: [u8; 12] = header[..12].try_into().unwrap();
            let rest: [u8; 8] = header[12..].try_into().unwrap();
            prop_assert_eq!(finish(add(add(0, &head), &rest)), expected);
        }
    }

    #[test]
    fn udp4_without_checksum_stays_without() {
        assert_eq!(replace_udp(0, &[1, 2, 3, 4], &[5, 6, 7, 8]), 0);
    }

    #[test]
    fn a_rewritten_frame_still_parses_with_valid_checksums() {
        let mut frame = tcp4([198, 18, 0, 1], [198, 18, 1, 1], 40000, 80, b"hello");
        dnat_tcp4(&mut frame, [198, 18, 2, 9], 8080);
        let sliced = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("not ipv4")
        };
        let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
            panic!("not tcp")
        };
        let header = ip.header().to_header();
        assert_eq!(header.header_checksum, header.calc_header_checksum());
        assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv4(&header, tcp.payload())
                .unwrap()
        );
    }
}
