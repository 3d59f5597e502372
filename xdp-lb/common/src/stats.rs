//! Per-CPU packet counters of the parser: one slot per packet class and one per
//! malformed/truncated reason.

/// Packets and bytes seen for one counter slot on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<Counter>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), two u64 fields, no padding; every bit pattern is valid.
unsafe impl aya::Pod for Counter {}

macro_rules! parse_counters {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )+) => {
        /// What the parser made of a frame. Each variant is one slot of the
        /// `PARSE_STATS` per-CPU array; every frame lands in exactly one slot.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum ParseCounter {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl ParseCounter {
            /// Every counter, in slot order.
            pub const ALL: &'static [ParseCounter] = &[$(ParseCounter::$variant,)+];

            /// Stable snake_case name, used in CLI output and metrics labels.
            pub const fn name(self) -> &'static str {
                match self { $( ParseCounter::$variant => $name, )+ }
            }
        }
    };
}

parse_counters! {
    /// TCP over IPv4 (first or only fragment).
    Tcp4 = "tcp4",
    /// UDP over IPv4 (first or only fragment).
    Udp4 = "udp4",
    /// ICMP over IPv4.
    Icmp4 = "icmp4",
    /// IPv4 with another transport protocol.
    OtherL4Ip4 = "other_l4_ip4",
    /// A non-first IPv4 fragment: it carries no transport header.
    Fragment4 = "fragment4",
    /// TCP over IPv6.
    Tcp6 = "tcp6",
    /// UDP over IPv6.
    Udp6 = "udp6",
    /// ICMPv6.
    Icmp6 = "icmp6",
    /// IPv6 with another transport protocol (after any extension headers).
    OtherL4Ip6 = "other_l4_ip6",
    /// A non-first IPv6 fragment: it carries no transport header.
    Fragment6 = "fragment6",
    /// ARP.
    Arp = "arp",
    /// Any other EtherType (including a second, stacked VLAN tag).
    OtherEthertype = "other_ethertype",
    /// Shorter than an Ethernet header.
    TruncatedEthernet = "truncated_ethernet",
    /// 802.1Q TPID with no room for the tag.
    TruncatedVlan = "truncated_vlan",
    /// EtherType IPv4 with less than a minimal IPv4 header.
    TruncatedIp4 = "truncated_ip4",
    /// IPv4 version field is not 4.
    BadIp4Version = "bad_ip4_version",
    /// IPv4 IHL below 5, or options running past the frame.
    BadIp4HeaderLength = "bad_ip4_header_length",
    /// IPv4 total length shorter than its header or longer than the frame.
    BadIp4TotalLength = "bad_ip4_total_length",
    /// EtherType IPv6 with less than a fixed IPv6 header.
    TruncatedIp6 = "truncated_ip6",
    /// IPv6 version field is not 6.
    BadIp6Version = "bad_ip6_version",
    /// IPv6 payload length longer than the frame.
    BadIp6PayloadLength = "bad_ip6_payload_length",
    /// An IPv6 extension header runs past the frame.
    TruncatedIp6Extension = "truncated_ip6_extension",
    /// More IPv6 extension headers than the parser walks (see `MAX_IP6_EXTENSIONS`).
    TooManyIp6Extensions = "too_many_ip6_extensions",
    /// TCP header shorter than 20 bytes in the frame.
    TruncatedTcp = "truncated_tcp",
    /// TCP data offset below 5 or past the frame.
    BadTcpDataOffset = "bad_tcp_data_offset",
    /// UDP header shorter than 8 bytes in the frame.
    TruncatedUdp = "truncated_udp",
    /// ICMP header shorter than 8 bytes in the frame.
    TruncatedIcmp4 = "truncated_icmp4",
    /// ICMPv6 header shorter than 8 bytes in the frame.
    TruncatedIcmp6 = "truncated_icmp6",
}

impl ParseCounter {
    /// Number of slots in the `PARSE_STATS` map.
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// True for the slots that count a malformed or truncated frame.
    pub const fn is_malformed(self) -> bool {
        self as u32 >= ParseCounter::TruncatedEthernet as u32
    }
}

/// The parser walks at most this many IPv6 extension headers; a chain that is
/// longer is counted as `TooManyIp6Extensions` (and passed untouched).
pub const MAX_IP6_EXTENSIONS: usize = 6;

#[cfg(test)]
mod tests {
    use super::ParseCounter;

    #[test]
    fn slots_are_dense_and_names_unique() {
        for (i, c) in ParseCounter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} is out of slot order");
        }
        let mut names: [&str; ParseCounter::COUNT as usize] = [""; ParseCounter::COUNT as usize];
        for (i, c) in ParseCounter::ALL.iter().enumerate() {
            names[i] = c.name();
        }
        names.sort_unstable();
        for w in names.windows(2) {
            assert_ne!(w[0], w[1], "duplicate counter name");
        }
    }
}
