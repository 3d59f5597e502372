//! Addresses in map keys and values: always 16 bytes, IPv4 as an IPv4-mapped
//! IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) — the same convention as
//! the Maglev flow hash of `consistent-hash`, so one key type serves both families.

/// An IPv6 address, or an IPv4 address mapped into IPv6.
pub type Addr = [u8; 16];

/// The IPv4-mapped form of `a.b.c.d`: the flow hash's own mapping, so that map
/// keys and hash input can never disagree.
pub use consistent_hash::hash::ipv4_mapped as v4_mapped;

/// The IPv4 address inside an IPv4-mapped address, or `None` for IPv6.
#[inline(always)]
pub const fn as_v4(addr: &Addr) -> Option<[u8; 4]> {
    if is_v4_mapped(addr) {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

/// Bytes 8..12 of an IPv4-mapped address; bytes 0..8 are zero.
const V4_MAPPED_MARK: [u8; 4] = [0, 0, 0xff, 0xff];

/// True when `addr` is an IPv4-mapped address.
///
/// Two word compares rather than a byte loop: in the datapath every branch is
/// a path the verifier walks.
#[inline(always)]
pub const fn is_v4_mapped(addr: &Addr) -> bool {
    let a = addr;
    let high = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let middle = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
    (high | (middle ^ u32::from_ne_bytes(V4_MAPPED_MARK)) as u64) == 0
}

/// `is_v4_mapped` of an address held as its two 8-byte words, as they lie in
/// memory: for a caller that reads or builds addresses a word at a time.
#[inline(always)]
pub const fn words_are_v4_mapped([high, low]: [u64; 2]) -> bool {
    let low = low.to_ne_bytes();
    high == 0
        && u32::from_ne_bytes([low[0], low[1], low[2], low[3]])
            == u32::from_ne_bytes(V4_MAPPED_MARK)
}

/// The second 8-byte word of `v4_mapped(a)`, as it lies in memory (the first
/// is 0).
#[inline(always)]
pub const fn v4_mapped_low_word(a: [u8; 4]) -> u64 {
    let [m0, m1, m2, m3] = V4_MAPPED_MARK;
    u64::from_ne_bytes([m0, m1, m2, m3, a[0], a[1], a[2], a[3]])
}

/// Bits in the address filter (`ADDRESS_FILTER`): one per IPv4 /24, and IPv6
/// /64s folded onto the same bits.
pub const FILTER_BITS: u32 = 1 << 24;
/// 64-bit words of the address filter.
pub const FILTER_WORDS: u32 = FILTER_BITS / 64;

/// The filter bit of `addr`: its IPv4 /24, or a fold of its IPv6 /64.
///
/// The filter is the datapath's first test on every packet: a bit is set for
/// the prefix of every frontend and backend address, so a packet whose source
/// and destination prefixes are both clear cannot be for a service nor a reply
/// from a backend, and passes without a hash lookup. A shared or stale bit
/// only sends a packet down the full lookup path.
#[inline(always)]
pub const fn filter_bit(addr: &Addr) -> u32 {
    let a = addr;
    if is_v4_mapped(addr) {
        filter_bit_v4([a[12], a[13], a[14], a[15]])
    } else {
        filter_bit_v6([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
    }
}

/// The filter bit of an IPv4 address: its /24.
#[inline(always)]
pub const fn filter_bit_v4(a: [u8; 4]) -> u32 {
    (a[0] as u32) << 16 | (a[1] as u32) << 8 | a[2] as u32
}

/// The filter bit of an IPv6 address, from its first 8 bytes (its /64).
#[inline(always)]
pub const fn filter_bit_v6(prefix: [u8; 8]) -> u32 {
    let prefix = u64::from_be_bytes(prefix);
    ((prefix >> 40) ^ (prefix >> 16) ^ prefix) as u32 & (FILTER_BITS - 1)
}

/// Bits in each address-kind filter (`NODE_FILTER`, `VIP_FILTER`): 32 KiB,
/// so that they stay in cache beside the hot maps.
pub const KIND_FILTER_BITS: u32 = 1 << 18;
/// 64-bit words of an address-kind filter.
pub const KIND_FILTER_WORDS: u32 = KIND_FILTER_BITS / 64;

/// The bit of `addr` in an address-kind filter: a multiplicative hash of the
/// whole address (node addresses are few, and often share a prefix with
/// VIPs; VIPs share theirs with pods).
///
/// A bit is set for every address ever declared of the filter's kind, before
/// the address is, and never cleared, so a clear bit is a firm "not of this
/// kind", and a shared or stale bit only sends a packet down a lookup:
/// - `NODE_FILTER`: a service found on an address whose bit is clear is on a
///   VIP-only address, and its request skips the `ADDRESSES` lookup;
/// - `VIP_FILTER`: only a packet to an address whose bit is set looks for a
///   tracked flow before the service (pod-to-pod traffic does not).
#[inline(always)]
pub const fn kind_filter_bit(addr: &Addr) -> u32 {
    addr_hash(addr, KIND_FILTER_BITS.trailing_zeros())
}

/// A multiplicative hash of the whole address, `bits` bits wide (1 to 32).
#[inline(always)]
pub const fn addr_hash(addr: &Addr, bits: u32) -> u32 {
    let a = addr;
    let high = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let low = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]);
    // Fibonacci hashing: the top bits of the product mix every input bit.
    ((high ^ low).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_forms_agree_with_the_byte_forms() {
        let words = |a: &Addr| {
            let (high, low) = a.split_at(8);
            [
                u64::from_ne_bytes(high.try_into().unwrap()),
                u64::from_ne_bytes(low.try_into().unwrap()),
            ]
        };
        for v4 in [[198, 18, 2, 5], [0, 0, 0, 0], [255, 255, 255, 255]] {
            let mapped = v4_mapped(v4);
            assert_eq!(words(&mapped), [0, v4_mapped_low_word(v4)]);
            assert!(words_are_v4_mapped(words(&mapped)));
        }
        let mut near = v4_mapped([198, 18, 2, 5]);
        near[9] = 1;
        let v6: Addr = [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 2, 5];
        for not_mapped in [near, v6, [0; 16]] {
            assert!(!is_v4_mapped(&not_mapped));
            assert!(!words_are_v4_mapped(words(&not_mapped)));
        }
    }

    #[test]
    fn kind_filter_bits_are_in_range_and_tell_neighbours_apart() {
        let a = v4_mapped([198, 18, 2, 5]);
        let b = v4_mapped([198, 18, 2, 6]);
        assert!(kind_filter_bit(&a) < KIND_FILTER_BITS);
        assert_ne!(kind_filter_bit(&a), kind_filter_bit(&b));
        let mut bits = [0u32; 256];
        for (i, bit) in (0..=255u8).zip(bits.iter_mut()) {
            *bit = kind_filter_bit(&v4_mapped([10, 0, 0, i]));
        }
        bits.sort_unstable();
        let distinct = 1 + bits.windows(2).filter(|w| w[0] != w[1]).count();
        // A /24 of nodes spreads over (nearly) as many bits.
        assert!(distinct > 250, "{distinct}");
        let v6 = [0xffu8; 16];
        assert!(kind_filter_bit(&v6) < KIND_FILTER_BITS);
    }

    #[test]
    fn filter_bits_are_ipv4_slash_24s_and_in_range() {
        let a = v4_mapped([198, 18, 2, 5]);
        let b = v4_mapped([198, 18, 2, 200]);
        let c = v4_mapped([198, 18, 3, 5]);
        assert_eq!(filter_bit(&a), filter_bit(&b));
        assert_ne!(filter_bit(&a), filter_bit(&c));
        assert_eq!(filter_bit(&a), 198 << 16 | 18 << 8 | 2);
        let mut v6 = [0xffu8; 16];
        v6[0] = 0x20;
        assert!(filter_bit(&v6) < FILTER_BITS);
        let mut same_64 = v6;
        same_64[15] = 0;
        assert_eq!(filter_bit(&v6), filter_bit(&same_64));
    }

    #[test]
    fn mapping_round_trips_and_rejects_ipv6() {
        let a = v4_mapped([198, 18, 0, 7]);
        assert_eq!(as_v4(&a), Some([198, 18, 0, 7]));
        let mut v6 = [0u8; 16];
        v6[0] = 0x20;
        v6[1] = 0x01;
        v6[3] = 0x02;
        assert_eq!(as_v4(&v6), None);
        // ::ffff:0:0/96 only; ::a.b.c.d (deprecated IPv4-compatible) is IPv6 here.
        let mut compat = [0u8; 16];
        compat[15] = 1;
        assert_eq!(as_v4(&compat), None);
    }
}
