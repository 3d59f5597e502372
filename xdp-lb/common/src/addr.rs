//! Addresses in map keys and values: always 16 bytes, IPv4 as an IPv4-mapped
//! IPv6 address (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) — the same convention as
//! the Maglev flow hash of `consistent-hash`, so one key type serves both families.

/// An IPv6 address, or an IPv4 address mapped into IPv6.
pub type Addr = [u8; 16];

/// The IPv4-mapped form of `a.b.c.d`.
#[inline(always)]
pub const fn v4_mapped(v4: [u8; 4]) -> Addr {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3],
    ]
}

/// The IPv4 address inside an IPv4-mapped address, or `None` for IPv6.
#[inline(always)]
pub const fn as_v4(addr: &Addr) -> Option<[u8; 4]> {
    if is_v4_mapped(addr) {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

/// True when `addr` is an IPv4-mapped address.
///
/// Two word compares rather than a byte loop: in the datapath every branch is
/// a path the verifier walks.
#[inline(always)]
pub const fn is_v4_mapped(addr: &Addr) -> bool {
    let a = addr;
    let high = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]);
    let middle = u32::from_ne_bytes([a[8], a[9], a[10], a[11]]);
    (high | (middle ^ u32::from_ne_bytes([0, 0, 0xff, 0xff])) as u64) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

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
