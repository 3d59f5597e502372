//! The hashes that make a table and a lookup identical everywhere.
//!
//! Everything here is `no_std` and allocation free, and the flow hash also has no loop and no
//! branch, so the eBPF programs call the very same code as the control plane. The functions are
//! fully specified below, so that a table computed by any node, on any CPU architecture, with
//! any Rust release is the same, and so that another implementation can be checked against the
//! golden vectors in the tests.
//!
//! # `hash64`: the byte hash
//!
//! ```text
//! K1 = 0x9E37_79B9_7F4A_7C15            (2^64 / golden ratio)
//! K2 = 0xC2B2_AE3D_27D4_EB4F            (xxHash64's PRIME64_2)
//! fmix64(x):                            (MurmurHash3's 64-bit finalizer, a bijection)
//!     x ^= x >> 33; x *= 0xFF51_AFD7_ED55_8CCD;
//!     x ^= x >> 33; x *= 0xC4CE_B9FE_1A85_EC53;
//!     x ^= x >> 33
//! hash64(bytes, seed):
//!     h = fmix64(seed ^ K1) ^ (len(bytes) * K2)
//!     for each 8-byte chunk c of bytes (read little-endian; the last one zero-padded;
//!                                       an empty input is one all-zero chunk):
//!         h = fmix64(h ^ c)
//!     return h
//! ```
//!
//! All arithmetic wraps modulo 2^64. The seed is mixed before any data so that seed and data
//! never combine linearly; the length is mixed in so that zero padding is unambiguous. Each step
//! is a bijection of the state for a fixed chunk, so two inputs of the same length that differ in
//! one chunk never collide. It is a fast, well-mixing hash, not a keyed PRF: a client who knows
//! the seed can choose source ports that land on one backend.
//!
//! # Domains
//!
//! The same function is used with three seeds derived from the caller's seed, so the three uses
//! are independent of each other: [`OFFSET_DOMAIN`], [`SKIP_DOMAIN`] and [`FLOW_DOMAIN`] (ASCII
//! tags read little-endian) are XORed into the caller's seed.
//!
//! # `flow_hash`: the lookup hash
//!
//! `flow_hash(flow, seed) = fold32(hash64(input, seed ^ FLOW_DOMAIN))` with
//! `fold32(h) = (h ^ (h >> 32)) as u32` and `input` the 19 bytes
//!
//! ```text
//! offset  size  field
//!      0    16  src_addr (IPv4 as ::ffff:a.b.c.d, RFC 4291 §2.5.5.2)
//!     16     2  src_port as on the wire (big-endian); 0 0 for ClientIP affinity
//!     18     1  protocol (IANA number: 6 TCP, 17 UDP)
//! ```
//!
//! The destination address and port are **not** hashed: every frontend of a service (ClusterIP,
//! NodePort on every node address, LoadBalancer IP, externalIPs) and every node then picks the
//! same backend for the same client flow (DESIGN.md, datapath step 5). The table already belongs
//! to one service port, so the destination adds nothing but disagreement between frontends.
//! The slot is `flow_hash % M` ([`slot_of`]).

/// `2^64 / φ`, the usual odd constant with well-spread bits.
const K1: u64 = 0x9E37_79B9_7F4A_7C15;
/// xxHash64's `PRIME64_2`, used to spread the input length.
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// XORed into the seed for a backend's Maglev `offset` (ASCII `"xlb.off"`, little-endian).
pub const OFFSET_DOMAIN: u64 = u64::from_le_bytes(*b"xlb.off\0");
/// XORed into the seed for a backend's Maglev `skip` (ASCII `"xlb.skp"`, little-endian).
pub const SKIP_DOMAIN: u64 = u64::from_le_bytes(*b"xlb.skp\0");
/// XORed into the seed for the per-packet flow hash (ASCII `"xlb.flw"`, little-endian).
pub const FLOW_DOMAIN: u64 = u64::from_le_bytes(*b"xlb.flw\0");

/// Length in bytes of the canonical flow-hash input (see the module documentation).
const FLOW_INPUT_LEN: u64 = 19;

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
#[inline(always)]
const fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// The initial state for `len` bytes under `seed`.
#[inline(always)]
const fn start(seed: u64, len: u64) -> u64 {
    fmix64(seed ^ K1) ^ len.wrapping_mul(K2)
}

/// Hashes `bytes` with `seed` as specified in the module documentation.
///
/// Guarantees: the result depends only on the bytes and the seed (never on the platform, the
/// endianness or the Rust release). It loops over the input, so the eBPF side should use
/// [`flow_hash`], which is the same function unrolled over a fixed input.
#[must_use]
pub fn hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h = start(seed, bytes.len() as u64);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = fmix64(h ^ u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() || bytes.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = fmix64(h ^ u64::from_le_bytes(word));
    }
    h
}

/// [`hash64`] of the little-endian bytes of `words`, without collecting them: two words make
/// one 8-byte chunk. (Only the table fingerprint needs it.)
#[cfg(any(test, feature = "std"))]
#[must_use]
pub(crate) fn hash64_u32_le(words: &[u32], seed: u64) -> u64 {
    let mut h = start(seed, 4 * words.len() as u64);
    let mut pairs = words.chunks_exact(2);
    for pair in &mut pairs {
        h = fmix64(h ^ (u64::from(pair[0]) | u64::from(pair[1]) << 32));
    }
    match pairs.remainder() {
        [last] => fmix64(h ^ u64::from(*last)),
        // An empty input is one all-zero chunk, as in `hash64`.
        _ if words.is_empty() => fmix64(h),
        _ => h,
    }
}

/// The 5-tuple of a packet, as the datapath parsed it.
///
/// Plain `#[repr(C)]` data, so an eBPF program can fill it on its stack. Addresses are 16 bytes
/// in network order; an IPv4 address is stored IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291
/// §2.5.5.2) — use [`FlowKey::v4`] or [`ipv4_mapped`]. Ports are in **network byte order**: the
/// field's in-memory bytes are the two bytes of the TCP/UDP header, so a program copies the
/// header field without swapping (`FlowKey::v4` takes host-order ports and converts them).
/// Only `src_addr`, `src_port` and `protocol` enter [`flow_hash`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Source address, network order, IPv4 mapped into IPv6.
    pub src_addr: [u8; 16],
    /// Destination address, network order, IPv4 mapped into IPv6 (not hashed).
    pub dst_addr: [u8; 16],
    /// Source port, network byte order (as in the packet).
    pub src_port: u16,
    /// Destination port, network byte order (as in the packet; not hashed).
    pub dst_port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Explicit padding, always zero, so the struct has no implicit padding bytes.
    pub _pad: [u8; 3],
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// `a.b.c.d` as the IPv4-mapped IPv6 address `::ffff:a.b.c.d` (RFC 4291 §2.5.5.2).
#[must_use]
#[inline(always)]
pub const fn ipv4_mapped(addr: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
    ]
}

impl FlowKey {
    /// An IPv4 flow; ports in host byte order (they are stored in network order).
    #[must_use]
    pub const fn v4(
        src: [u8; 4],
        src_port: u16,
        dst: [u8; 4],
        dst_port: u16,
        protocol: u8,
    ) -> Self {
        Self::v6(
            ipv4_mapped(src),
            src_port,
            ipv4_mapped(dst),
            dst_port,
            protocol,
        )
    }

    /// An IPv6 flow; ports in host byte order (they are stored in network order).
    #[must_use]
    pub const fn v6(
        src: [u8; 16],
        src_port: u16,
        dst: [u8; 16],
        dst_port: u16,
        protocol: u8,
    ) -> Self {
        Self {
            src_addr: src,
            dst_addr: dst,
            src_port: src_port.to_be(),
            dst_port: dst_port.to_be(),
            protocol,
            _pad: [0; 3],
        }
    }

    /// The 19-byte canonical input of [`flow_hash`] (for documentation and cross-checks; the
    /// hash itself never builds it).
    #[must_use]
    pub const fn hash_input(&self, ignore_src_port: bool) -> [u8; 19] {
        let a = self.src_addr;
        let p = if ignore_src_port {
            [0, 0]
        } else {
            self.src_port.to_ne_bytes()
        };
        [
            a[0],
            a[1],
            a[2],
            a[3],
            a[4],
            a[5],
            a[6],
            a[7],
            a[8],
            a[9],
            a[10],
            a[11],
            a[12],
            a[13],
            a[14],
            a[15],
            p[0],
            p[1],
            self.protocol,
        ]
    }

    /// What the flow hash reads of this flow, as words.
    #[inline(always)]
    const fn words(&self) -> FlowWords {
        let a = self.src_addr;
        FlowWords {
            src_addr: [
                u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
                u64::from_le_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
            ],
            src_port: self.src_port,
            protocol: self.protocol,
        }
    }
}

/// What [`flow_hash`] reads of a flow, for a caller that holds the source address as words
/// already: `src_addr` is its bytes 0..8 and 8..16, each read as a little-endian `u64`
/// (`u64::from_le` of a native read of 8-byte aligned memory); `src_port` is in network order,
/// as in [`FlowKey`]. The eBPF datapath's tuple is 8-byte aligned, and reading it a word at a
/// time spares the byte loads and shifts that [`FlowKey`]'s byte arrays cost there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowWords {
    pub src_addr: [u64; 2],
    pub src_port: u16,
    pub protocol: u8,
}

/// [`hash64`] of [`FlowKey::hash_input`], from its words, unrolled: three chunks, no loop,
/// no slice.
#[inline(always)]
const fn words_hash64(words: &FlowWords, seed: u64, ignore_src_port: bool) -> u64 {
    // `from_le` of a network-order field's native value gives what `from_le_bytes` of its wire
    // bytes gives, on every architecture.
    let port = if ignore_src_port {
        0
    } else {
        u16::from_le(words.src_port) as u64
    };
    let w2 = port | (words.protocol as u64) << 16;
    let mut h = start(seed ^ FLOW_DOMAIN, FLOW_INPUT_LEN);
    h = fmix64(h ^ words.src_addr[0]);
    h = fmix64(h ^ words.src_addr[1]);
    fmix64(h ^ w2)
}

/// [`flow_hash`] of the flow whose words are `words`: the same value, computed without bytes.
#[must_use]
#[inline(always)]
pub const fn flow_hash_words(words: &FlowWords, seed: u64) -> u32 {
    fold32(words_hash64(words, seed, false))
}

/// [`flow_hash_client_ip`] of the flow whose words are `words`.
#[must_use]
#[inline(always)]
pub const fn flow_hash_client_ip_words(words: &FlowWords, seed: u64) -> u32 {
    fold32(words_hash64(words, seed, true))
}

/// Folds a 64-bit hash to 32 bits, keeping entropy from both halves.
#[inline(always)]
const fn fold32(h: u64) -> u32 {
    (h ^ (h >> 32)) as u32
}

/// The per-flow lookup hash: source address, source port and protocol, under `seed`.
///
/// Guarantees: identical on every node, architecture and Rust release (specified in the module
/// documentation); ignores the destination address and port. Callable from eBPF: no loop, no
/// allocation, no division, no `u128`, no floating point.
#[must_use]
#[inline(always)]
pub const fn flow_hash(flow: &FlowKey, seed: u64) -> u32 {
    flow_hash_words(&flow.words(), seed)
}

/// The lookup hash for `sessionAffinity: ClientIP`: like [`flow_hash`] with the source port
/// taken as zero, so every connection of a client lands on the same backend.
#[must_use]
#[inline(always)]
pub const fn flow_hash_client_ip(flow: &FlowKey, seed: u64) -> u32 {
    flow_hash_client_ip_words(&flow.words(), seed)
}

/// The table slot for a flow hash: `hash % m`, for a table of `m` slots (`m > 0`).
///
/// Division by a run-time `u32` is a single eBPF instruction; the caller checks `m != 0`
/// before calling (the verifier demands it), so this returns 0 for `m == 0` instead of
/// panicking.
#[must_use]
#[inline(always)]
pub const fn slot_of(hash: u32, m: u32) -> u32 {
    match hash.checked_rem(m) {
        Some(slot) => slot,
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_hash_is_hash64_of_the_documented_input() {
        let flows = [
            FlowKey::v4([198, 18, 0, 1], 40000, [198, 18, 1, 1], 80, 6),
            FlowKey::v4([198, 19, 255, 254], 1, [198, 18, 1, 1], 53, 17),
            FlowKey::v6(
                [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                443,
                [0; 16],
                0,
                6,
            ),
        ];
        for (i, flow) in flows.iter().enumerate() {
            let seed = 0x1234_5678_9abc_def0 ^ i as u64;
            let h = hash64(&flow.hash_input(false), seed ^ FLOW_DOMAIN);
            assert_eq!(flow_hash(flow, seed), (h ^ (h >> 32)) as u32);
            let h = hash64(&flow.hash_input(true), seed ^ FLOW_DOMAIN);
            assert_eq!(flow_hash_client_ip(flow, seed), (h ^ (h >> 32)) as u32);
        }
    }

    #[test]
    fn the_word_hashes_equal_the_byte_hashes() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        for i in 0..2000u64 {
            // xorshift64: addresses, ports and protocols of every shape.
            let mut next = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let (a, b, c) = (next(), next(), next());
            let mut src = [0u8; 16];
            src[..8].copy_from_slice(&a.to_ne_bytes());
            src[8..].copy_from_slice(&b.to_ne_bytes());
            let flow = FlowKey {
                src_addr: src,
                src_port: c as u16,
                protocol: (c >> 16) as u8,
                ..FlowKey::default()
            };
            let words = FlowWords {
                src_addr: [u64::from_le(a), u64::from_le(b)],
                src_port: flow.src_port,
                protocol: flow.protocol,
            };
            assert_eq!(flow_hash_words(&words, i), flow_hash(&flow, i));
            assert_eq!(
                flow_hash_client_ip_words(&words, i),
                flow_hash_client_ip(&flow, i)
            );
        }
    }

    #[test]
    fn destination_is_not_hashed_but_source_is() {
        let a = FlowKey::v4([198, 18, 0, 1], 40000, [198, 18, 1, 1], 80, 6);
        let other_frontend = FlowKey::v4([198, 18, 0, 1], 40000, [198, 18, 9, 9], 30080, 6);
        assert_eq!(flow_hash(&a, 7), flow_hash(&other_frontend, 7));
        let other_port = FlowKey::v4([198, 18, 0, 1], 40001, [198, 18, 1, 1], 80, 6);
        assert_ne!(flow_hash(&a, 7), flow_hash(&other_port, 7));
        assert_eq!(
            flow_hash_client_ip(&a, 7),
            flow_hash_client_ip(&other_port, 7)
        );
        let other_client = FlowKey::v4([198, 18, 0, 2], 40000, [198, 18, 1, 1], 80, 6);
        assert_ne!(
            flow_hash_client_ip(&a, 7),
            flow_hash_client_ip(&other_client, 7)
        );
        assert_ne!(flow_hash(&a, 7), flow_hash(&a, 8), "the seed must matter");
    }

    #[test]
    fn ports_are_stored_in_network_order() {
        let flow = FlowKey::v4([198, 18, 0, 1], 0x1f90, [198, 18, 1, 1], 80, 6);
        assert_eq!(flow.src_port.to_ne_bytes(), [0x1f, 0x90]);
        assert_eq!(flow.hash_input(false)[16..], [0x1f, 0x90, 6]);
        assert_eq!(flow.src_addr[10..], [0xff, 0xff, 198, 18, 0, 1]);
    }

    #[test]
    fn padding_and_length_are_unambiguous() {
        assert_ne!(hash64(b"", 0), hash64(b"\0", 0));
        assert_ne!(hash64(b"a", 0), hash64(b"a\0", 0));
        assert_ne!(hash64(b"12345678", 0), hash64(b"12345678\0", 0));
        assert_ne!(hash64(b"abc", 1), hash64(b"abc", 2));
    }

    #[test]
    fn hash64_of_words_is_hash64_of_their_bytes() {
        for n in 0..6u32 {
            let words: Vec<u32> = (0..n).map(|i| 0x0102_0304u32.wrapping_mul(i + 7)).collect();
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            assert_eq!(hash64_u32_le(&words, 9), hash64(&bytes, 9), "{n} words");
        }
    }

    #[test]
    fn slot_of_never_panics() {
        assert_eq!(slot_of(1000, 251), 1000 % 251);
        assert_eq!(slot_of(1000, 0), 0);
    }
}
