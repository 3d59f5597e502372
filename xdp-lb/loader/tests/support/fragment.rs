//! Datagrams cut into IP fragments as a host cuts them: a whole
//! Ethernet/IPv4 or Ethernet/IPv6 frame becomes its first fragment (the
//! first `FIRST_L4_LEN` bytes after the IP header: the transport header and
//! the start of the payload, after IPv6 Destination Options if asked for)
//! and a later, last one (the rest). A test cuts its input datagram and the
//! translated datagram it expects the same way, and compares each output
//! fragment with its expected one whole.

use etherparse::{IpNumber, Ipv4Header, Ipv6Header};

/// Where the IP header starts: after an untagged Ethernet header.
pub(crate) const L3: usize = 14;
/// Where the transport header starts after a 20-byte IPv4 header.
const L4: usize = L3 + 20;
/// Where the transport header starts after a 40-byte IPv6 header.
const L4_V6: usize = L3 + 40;
/// Bytes of the fragmentable part (the transport header and payload, after
/// Destination Options if any) in the first fragment: a multiple of 8, as
/// every fragment's but the last.
pub(crate) const FIRST_L4_LEN: usize = 32;

/// `frame`, a whole Ethernet/IPv4 datagram without options, cut as a host
/// cuts it: the first fragment (more fragments, offset 0) with
/// `FIRST_L4_LEN` transport bytes, and the later (last) one with the rest,
/// both with identification `id` and their header checksums computed anew.
pub(crate) fn fragments(frame: &[u8], id: u16) -> (Vec<u8>, Vec<u8>) {
    let (header, _) = Ipv4Header::from_slice(&frame[L3..]).expect("an IPv4 header");
    assert_eq!(header.header_len(), 20);
    let cut = |bytes: &[u8], offset: usize, more: bool| {
        let mut h = header.clone();
        h.identification = id;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = u16::try_from(offset / 8).unwrap().try_into().unwrap();
        h.set_payload_len(bytes.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = frame[..L3].to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(bytes);
        out
    };
    let l4 = &frame[L4..];
    (
        cut(&l4[..FIRST_L4_LEN], 0, true),
        cut(&l4[FIRST_L4_LEN..], FIRST_L4_LEN, false),
    )
}

/// `frame`, a whole Ethernet/IPv6 TCP or UDP datagram without extension
/// headers, cut as a host cuts it (RFC 8200 §4.5): each fragment the IPv6
/// header (its payload length that of the fragment) and a Fragment header
/// with identification `id`, then the first `FIRST_L4_LEN` transport bytes
/// (more fragments, offset 0), or the rest (the last fragment).
pub(crate) fn fragments6(frame: &[u8], id: u32) -> (Vec<u8>, Vec<u8>) {
    cut6(frame, id, false)
}

/// As `fragments6`, with a Destination Options header (8 bytes: one PadN
/// option) after the Fragment header. Such a header belongs to the
/// fragmentable part (RFC 8200 §4.5): every Fragment header names it
/// (next header 60), only the first fragment carries it, before
/// `FIRST_L4_LEN - 8` transport bytes, and the later one holds the rest of
/// the transport bytes with nothing to say what they are.
pub(crate) fn fragments6_after_dst_opts(frame: &[u8], id: u32) -> (Vec<u8>, Vec<u8>) {
    cut6(frame, id, true)
}

fn cut6(frame: &[u8], id: u32, dst_opts: bool) -> (Vec<u8>, Vec<u8>) {
    let (header, _) = Ipv6Header::from_slice(&frame[L3..]).expect("an IPv6 header");
    let transport = header.next_header;
    assert!(
        matches!(transport, IpNumber::UDP | IpNumber::TCP),
        "no extension headers"
    );
    let mut fragmentable = Vec::new();
    let first_header = if dst_opts {
        // Next header, length 0 (8 bytes), PadN of 4 bytes.
        fragmentable.extend_from_slice(&[transport.0, 0, 1, 4, 0, 0, 0, 0]);
        IpNumber::IPV6_DESTINATION_OPTIONS
    } else {
        transport
    };
    fragmentable.extend_from_slice(&frame[L4_V6..]);
    let cut = |bytes: &[u8], offset: usize, more: bool| {
        let mut h = header.clone();
        h.next_header = IpNumber::IPV6_FRAGMENTATION_HEADER;
        h.set_payload_length(8 + bytes.len()).unwrap();
        let mut out = frame[..L3].to_vec();
        out.extend_from_slice(&h.to_bytes());
        out.extend_from_slice(&fragment_header6(first_header, offset, more, id));
        out.extend_from_slice(bytes);
        out
    };
    (
        cut(&fragmentable[..FIRST_L4_LEN], 0, true),
        cut(&fragmentable[FIRST_L4_LEN..], FIRST_L4_LEN, false),
    )
}

/// An IPv6 Fragment header before `next`: the fragment's `offset` in bytes
/// (a multiple of 8, so already the 13-bit field shifted into place), M for
/// `more`, identification `id`. Written by hand: etherparse 0.19's
/// `Ipv6FragmentHeader` puts M in the top bit of the field's second byte and
/// the offset's low bits below it, where RFC 8200 and Linux (`IP6_MF`
/// 0x0001, `IP6_OFFSET` 0xfff8) have the offset above and M at the bottom.
fn fragment_header6(next: IpNumber, offset: usize, more: bool, id: u32) -> [u8; 8] {
    assert_eq!(offset % 8, 0);
    let field = u16::try_from(offset).unwrap() | u16::from(more);
    let [f0, f1] = field.to_be_bytes();
    let [i0, i1, i2, i3] = id.to_be_bytes();
    [next.0, 0, f0, f1, i0, i1, i2, i3]
}

/// The IPv4 header checksum of `frame` is right (as computed anew).
pub(crate) fn assert_ip4_checksum(frame: &[u8]) {
    let (header, _) = Ipv4Header::from_slice(&frame[L3..]).expect("an IPv4 header");
    assert_eq!(header.header_checksum, header.calc_header_checksum());
}
