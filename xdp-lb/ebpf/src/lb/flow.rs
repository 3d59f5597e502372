//! The flow a parsed frame belongs to: its 5-tuple and what the NAT needs.

use network_types::ip::{Ipv4Hdr, Ipv6Hdr};
use xdp_lb_common::{
    addr::{Addr, filter_bit_v4, is_v4_mapped, v4_mapped, v4_mapped_low_word},
    conntrack::FlowTuple,
    stats::ParseCounter,
};

use crate::{
    lb::marks,
    maps::{PACKET, PACKET_WORDS, forget_ranges},
    packet::{Frame, FrameSource},
    parse::Parsed,
    unaligned::PacketBytes,
    wire::{
        ETH_HLEN, ETH_P_IPV4, ETH_TYPE, IP4_FRAGS, IP4_HLEN, IP4_MF, IP4_OFFSET_MASK, IP4_PROTO,
        IP4_SRC, IP4_TOTAL_LEN, IP4_TTL, IP6_DST, IP6_HOP_LIMIT, IP6_SRC, IPPROTO_DSTOPTS,
        IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_DATA_OFFSET, TCP_FIN, TCP_FLAGS, TCP_HLEN, TCP_RST,
        TCP_SYN, UDP_HLEN,
    },
};

/// The network header follows Ethernet and at most one 802.1Q tag.
pub const MAX_L3_OFFSET: usize = 18;
/// The transport header starts within the first page of a linear frame.
pub const MAX_L4_OFFSET: usize = 4096;

/// A TCP or UDP packet, as the core sees it.
#[derive(Clone, Copy)]
pub struct Flow {
    pub tuple: FlowTuple,
    pub is_v4: bool,
    pub is_tcp: bool,
    /// TCP flags, 0 for UDP.
    pub tcp_flags: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub l3_offset: usize,
    pub l4_offset: usize,
    /// The frame carries an 802.1Q tag.
    pub has_vlan: bool,
}

/// What the core needs of a parsed frame.
///
/// Plain fields rather than `Option`s: this type is in a BPF subprogram's
/// signature, and the kernel rejects the BTF that Rust's data-carrying enums
/// become.
#[repr(C)]
pub struct Packet {
    pub flow: Flow,
    pub dst: Addr,
    /// 0 for a whole packet; for a fragment (first or later) of a larger
    /// datagram, `FRAGMENT` with its IP identification (`Parsed::fragment_id`)
    /// in the low 32 bits. One 8-byte stack slot of its own, apart from the
    /// fields read after `lb::decide`: the verifier compares a slot whole,
    /// and a whole packet and a first fragment then meet in one state once
    /// `decide` has read it (`Packet::is_fragment`, `Packet::fragment_id`).
    pub fragment: u64,
    pub counter: ParseCounter,
    /// `flow` is set: a well-formed TCP or UDP packet, a first fragment of
    /// one (which carries its transport header), or a later fragment of one
    /// (`is_later_fragment`), whose tuple's ports are 0: it carries none. A
    /// later IPv6 fragment whose Fragment header names Destination Options
    /// has protocol 60 in its tuple until `fragment::later` finds whether
    /// its datagram is UDP or TCP.
    pub has_flow: bool,
    /// `dst` is set: an IP frame that is not a TCP/UDP packet or fragment.
    pub has_dst: bool,
    /// Which ends the address filter holds (`MARK_DST`, `MARK_SRC` of
    /// `lb`): set by the attaching program from `lb::filter_marks`, which
    /// reads the filter once per packet.
    pub marks: u8,
}

const _: () = assert!(size_of::<Packet>() <= PACKET_WORDS * 8 && align_of::<Packet>() <= 8);

/// `Packet::fragment` of a fragment.
const FRAGMENT: u64 = 1 << 32;

impl Packet {
    /// Fills `self` from a parsed frame (in place: this runs on the 512-byte
    /// BPF stack, where a returned copy would cost another `Packet`).
    #[inline(never)]
    pub fn fill<S: FrameSource>(&mut self, source: &S, parsed: &Parsed) {
        let frame = &source.frame();
        self.counter = parsed.counter;
        self.fragment = if parsed.is_fragment != 0 {
            FRAGMENT | u64::from(parsed.fragment_id)
        } else {
            0
        };
        self.has_flow = fill_flow(frame, parsed, &mut self.flow).is_some();
        self.has_dst = false;
        if !self.has_flow
            && let Some(dst) = destination(frame, parsed)
        {
            self.dst = dst;
            self.has_dst = true;
        }
    }

    /// `parse`, `fill` and `filter_marks` in one pass, for the frame a NIC
    /// sees most: untagged IPv4 without options, not a fragment, carrying a
    /// whole TCP or UDP header within its total length. Fills the packet and
    /// its marks as those three would: without marks, only the marks and the
    /// parse counter, as the caller passes the frame. False, the packet
    /// untouched, for any other frame, which takes their way (and is counted
    /// by it, malformed ones included). Three subprograms, each
    /// bounds-checking and reading the headers anew, were a sixth of a
    /// conntrack hit's cost. A frame without marks stops before the flow is
    /// written (`docs/bench/notes.md` has what that saves a non-VIP pass).
    #[inline(never)]
    pub fn fill_plain_ip4<S: FrameSource>(&mut self, source: &S) -> bool {
        const L3: usize = ETH_HLEN;
        const L4: usize = ETH_HLEN + IP4_HLEN;
        let frame = &source.frame();
        // The Ethernet and IPv4 headers and a UDP header's worth of the next.
        let Some(h) = frame.get::<[u8; L4 + UDP_HLEN]>(0) else {
            return false;
        };
        let h = h.cast::<u8>();
        // SAFETY: offsets within the checked bytes.
        let (ethertype, vihl, total_len, frags, proto) = unsafe {
            (
                u16::from_be_bytes(<[u8; 2]>::load(h.add(ETH_TYPE))),
                *h.add(L3),
                usize::from(u16::from_be_bytes(<[u8; 2]>::load(
                    h.add(L3 + IP4_TOTAL_LEN),
                ))),
                u16::from_be_bytes(<[u8; 2]>::load(h.add(L3 + IP4_FRAGS))),
                *h.add(L3 + IP4_PROTO),
            )
        };
        // Version 4, a header of 20 bytes, no fragment bits.
        if ethertype != ETH_P_IPV4
            || vihl != 0x45
            || frags & (IP4_MF | IP4_OFFSET_MASK) != 0
            || total_len < IP4_HLEN
            || L3 + total_len > frame.len()
        {
            return false;
        }
        let end = L3 + total_len;
        let (counter, is_tcp, tcp_flags) = match proto {
            IPPROTO_TCP => {
                let Some(tcp) = frame.get::<[u8; L4 + TCP_HLEN]>(0) else {
                    return false;
                };
                // SAFETY: offsets within the checked bytes.
                let (doff, flags) = unsafe {
                    let tcp = tcp.cast::<u8>().add(L4);
                    (
                        usize::from(*tcp.add(TCP_DATA_OFFSET) >> 4) * 4,
                        *tcp.add(TCP_FLAGS),
                    )
                };
                if doff < TCP_HLEN || L4 + doff > end {
                    return false;
                }
                (ParseCounter::Tcp4, true, flags)
            }
            IPPROTO_UDP if L4 + UDP_HLEN <= end => (ParseCounter::Udp4, false, 0),
            _ => return false,
        };
        // SAFETY: offsets within the checked bytes.
        let addrs = unsafe { <[u8; 8]>::load(h.add(L3 + IP4_SRC)) };
        let (src, dst) = (
            [addrs[0], addrs[1], addrs[2], addrs[3]],
            [addrs[4], addrs[5], addrs[6], addrs[7]],
        );
        self.marks = marks(filter_bit_v4(src), filter_bit_v4(dst));
        self.counter = counter;
        if self.marks == 0 {
            // Passed untouched by the caller, as `fill_if_marked` leaves a
            // frame without marks: nothing more of it is read or written.
            return true;
        }
        // SAFETY: offsets within the checked bytes.
        let (ports, ttl) = unsafe { (<[u8; 4]>::load(h.add(L4)), *h.add(L3 + IP4_TTL)) };
        self.fragment = 0;
        self.has_flow = true;
        self.has_dst = false;
        // The offsets as `fill` leaves them: ranges the verifier does not
        // follow into the callees (`forget_ranges`), so that both ways meet
        // them in one state.
        let (l3, l4) = forget_ranges(L3, L4);
        let flow = &mut self.flow;
        write_v4_tuple(&mut flow.tuple, addrs, ports, proto);
        flow.ttl = ttl;
        flow.is_v4 = true;
        flow.is_tcp = is_tcp;
        flow.tcp_flags = tcp_flags;
        flow.l3_offset = l3;
        flow.l4_offset = l4;
        flow.has_vlan = false;
        true
    }

    /// A fragment (first or later) of a larger datagram.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.fragment != 0
    }

    /// A fragment's IP identification (IPv4's 16 bits, IPv6's 32).
    #[inline(always)]
    pub fn fragment_id(&self) -> u32 {
        self.fragment as u32
    }

    /// A later fragment (offset > 0) of a datagram: no transport header.
    /// Read from the parser's counter rather than kept in `Flow`: a field
    /// written on every path made the verifier walk the core once more for
    /// each of its values.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        matches!(
            self.counter,
            ParseCounter::Fragment4 | ParseCounter::Fragment6
        )
    }

    /// This CPU's packet slot (the `PACKET` map), emptied, for the program
    /// to fill. A per-CPU slot rather than the main frame's variable, for
    /// two reasons measured on this datapath:
    /// - the 512-byte stack limit counts the main frame with its deepest
    ///   callees': the packet's bytes there kept `lb::decide` a subprogram
    ///   of its own, and each BPF-to-BPF call costs the hit path (four
    ///   calls more cost a conntrack hit 18% on an AMD EPYC VM);
    /// - the verifier tracks every stack slot's contents, and walked the
    ///   core once per state of the packet's fields; of a map value it
    ///   tracks none, and checks `xdp_lb` in some 44% fewer instructions.
    ///
    /// Nothing else runs on this CPU while the program does, and each run
    /// starts from `EMPTY`, as the stack variable did.
    #[inline(always)]
    pub fn slot() -> Option<&'static mut Self> {
        let slot = PACKET.get_ptr_mut(0)?;
        // SAFETY: this CPU's slot, large and aligned enough for a `Packet`
        // (asserted after the struct; u64 words); the reference does not
        // outlive the program's run.
        let packet = unsafe { &mut *slot.cast::<Self>() };
        *packet = Self::EMPTY;
        Some(packet)
    }

    /// An empty packet, to `fill`.
    pub const EMPTY: Self = Self {
        counter: ParseCounter::OtherEthertype,
        has_flow: false,
        has_dst: false,
        fragment: 0,
        flow: Flow::EMPTY,
        dst: [0; 16],
        marks: 0,
    };
}

/// Writes the tuple of an IPv4 packet into `tuple` as its five 8-byte words:
/// the source and destination `addrs` (as they lie in the header),
/// v4-mapped, then the `ports` (source, destination, as they lie in the
/// transport header) and `proto` with the padding zeroed. Five stores, where
/// assigning each `Addr` stored its last four bytes one by one; the last word
/// whole too, as the flow-table hash and the bucket scans read it
/// (`FlowTuple::words`).
#[inline(always)]
fn write_v4_tuple(tuple: &mut FlowTuple, addrs: [u8; 8], ports: [u8; 4], proto: u8) {
    const _: () = assert!(core::mem::offset_of!(FlowTuple, src_addr) == 0);
    const _: () = assert!(core::mem::offset_of!(FlowTuple, dst_addr) == 16);
    const _: () = assert!(core::mem::offset_of!(FlowTuple, src_port_be) == 32);
    const _: () = assert!(core::mem::offset_of!(FlowTuple, dst_port_be) == 34);
    const _: () = assert!(core::mem::offset_of!(FlowTuple, proto) == 36);
    let [s0, s1, s2, s3, d0, d1, d2, d3] = addrs;
    let [p0, p1, p2, p3] = ports;
    let words = [
        0,
        v4_mapped_low_word([s0, s1, s2, s3]),
        0,
        v4_mapped_low_word([d0, d1, d2, d3]),
        u64::from_ne_bytes([p0, p1, p2, p3, proto, 0, 0, 0]),
    ];
    // SAFETY: the tuple is 8-aligned, 40 bytes of plain integers (asserted
    // beside `FlowTuple`), laid out as asserted above.
    unsafe { (&raw mut *tuple).cast::<[u64; 5]>().write(words) };
}

impl Flow {
    const EMPTY: Self = Self {
        tuple: FlowTuple::new([0; 16], [0; 16], 0, 0, 0),
        is_v4: false,
        is_tcp: false,
        tcp_flags: 0,
        ttl: 0,
        l3_offset: 0,
        l4_offset: 0,
        has_vlan: false,
    };

    /// A SYN that opens a connection (no ACK).
    #[inline(always)]
    pub const fn is_syn(&self) -> bool {
        self.is_tcp && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A FIN or RST: the connection is closing.
    #[inline(always)]
    pub const fn is_closing(&self) -> bool {
        self.is_tcp && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }
}

/// The destination address of an IP frame (IPv4-mapped for IPv4), whatever its
/// transport: used to tell whether a non-TCP/UDP packet is for a frontend.
#[inline(always)]
fn destination(frame: &Frame, parsed: &Parsed) -> Option<[u8; 16]> {
    let l3 = parsed.l3_offset;
    match parsed.counter {
        ParseCounter::Tcp4
        | ParseCounter::Udp4
        | ParseCounter::Icmp4
        | ParseCounter::OtherL4Ip4
        | ParseCounter::Fragment4 => frame.load::<4>(l3 + 16).map(v4_mapped),
        ParseCounter::Tcp6
        | ParseCounter::Udp6
        | ParseCounter::Icmp6
        | ParseCounter::OtherL4Ip6
        | ParseCounter::Fragment6 => frame.load::<16>(l3 + 24).filter(|dst| !is_v4_mapped(dst)),
        _ => None,
    }
}

/// Writes the flow of a well-formed TCP or UDP frame (or first fragment)
/// into `out`, or of a later fragment of one without its ports (and, after
/// IPv6 Destination Options, without its protocol); `None` for anything
/// else (`out` is then partly written, and not to be read).
#[inline(always)]
fn fill_flow(frame: &Frame, parsed: &Parsed, out: &mut Flow) -> Option<()> {
    let (is_v4, is_tcp, later_fragment) = match parsed.counter {
        ParseCounter::Tcp4 => (true, true, false),
        ParseCounter::Udp4 => (true, false, false),
        ParseCounter::Tcp6 => (false, true, false),
        ParseCounter::Udp6 => (false, false, false),
        ParseCounter::Fragment4 | ParseCounter::Fragment6 => (
            parsed.counter == ParseCounter::Fragment4,
            match parsed.l4_proto {
                IPPROTO_TCP => true,
                IPPROTO_UDP => false,
                // The Fragment header names the first header of the
                // fragmentable part (RFC 8200 §4.5): Destination Options
                // there travel in the first fragment alone, before the
                // transport header. A later fragment's transport is then
                // not known here: its tuple keeps 60 for `fragment::later`,
                // which finds it by the first fragment and sets `is_tcp`
                // for TCP (false, as for UDP, until then).
                IPPROTO_DSTOPTS if parsed.counter == ParseCounter::Fragment6 => false,
                _ => return None,
            },
            true,
        ),
        _ => return None,
    };
    // Header offsets from the parser, with their ranges forgotten (see
    // `forget_ranges`); `Frame` bounds them again on every access.
    let (l3, l4) = forget_ranges(parsed.l3_offset, parsed.l4_offset);
    // Bounded before any arithmetic, so that no derived offset can wrap.
    if l3 > MAX_L3_OFFSET || l4 > MAX_L4_OFFSET {
        return None;
    }
    // One bounds check per header, then field reads through the checked
    // pointer: the verifier follows that; separate checks per field LLVM may
    // merge into one the verifier cannot relate to the other fields. Each
    // branch writes its addresses straight into `out`: merged into one
    // `(src, dst)` pair after the branches, the two 16-byte arrays become 32
    // single-byte values that BPF spills to the stack and stores back one by
    // one.
    if is_v4 {
        // Checked whole, then read in words (`Frame::load` would check
        // each field again).
        let ip = frame.get::<Ipv4Hdr>(l3)?.cast::<u8>();
        // SAFETY: `get` checked the whole header lies in the frame.
        unsafe {
            let addrs = <[u8; 8]>::load(ip.add(IP4_SRC));
            out.tuple.src_addr = v4_mapped([addrs[0], addrs[1], addrs[2], addrs[3]]);
            out.tuple.dst_addr = v4_mapped([addrs[4], addrs[5], addrs[6], addrs[7]]);
            out.ttl = *ip.add(IP4_TTL);
        }
    } else {
        let ip = frame.get::<Ipv6Hdr>(l3)?.cast::<u8>();
        // SAFETY: as above.
        let (src_addr, dst_addr) = unsafe {
            (
                <[u8; 16]>::load(ip.add(IP6_SRC)),
                <[u8; 16]>::load(ip.add(IP6_DST)),
            )
        };
        // The maps key IPv4 as IPv4-mapped IPv6: an IPv6 packet carrying such
        // an address (never valid on the wire, RFC 4291 §2.5.5.2) must not
        // match an IPv4 frontend or flow.
        if is_v4_mapped(&src_addr) || is_v4_mapped(&dst_addr) {
            return None;
        }
        out.tuple.src_addr = src_addr;
        out.tuple.dst_addr = dst_addr;
        // SAFETY: as above.
        out.ttl = unsafe { *ip.add(IP6_HOP_LIMIT) };
    }
    // TCP and UDP both start with source and destination port; the parser
    // checked the whole TCP header is there, and byte 13 holds its flags. A
    // later fragment has neither.
    let (ports, tcp_flags) = if later_fragment {
        ([0; 4], 0)
    } else if is_tcp {
        let tcp = frame.get::<[u8; TCP_FLAGS + 1]>(l4)?.cast::<u8>();
        // SAFETY: as above.
        unsafe { (<[u8; 4]>::load(tcp), *tcp.add(TCP_FLAGS)) }
    } else {
        (frame.load::<4>(l4)?, 0)
    };
    out.tuple.src_port_be = u16::from_ne_bytes([ports[0], ports[1]]);
    out.tuple.dst_port_be = u16::from_ne_bytes([ports[2], ports[3]]);
    out.tuple.proto = parsed.l4_proto;
    out.is_v4 = is_v4;
    out.is_tcp = is_tcp;
    out.tcp_flags = tcp_flags;
    out.l3_offset = l3;
    out.l4_offset = l4;
    out.has_vlan = parsed.has_vlan != 0;
    Some(())
}
