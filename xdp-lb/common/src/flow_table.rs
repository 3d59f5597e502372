//! The layout of the two conntrack tables (`CONNTRACK`, `CONNTRACK_REPLY`):
//! hash tables the datapath manages itself in array maps, rather than the
//! kernel's LRU hash maps.
//!
//! Why: on this kernel an LRU hash insert into a full map (the steady state
//! of a conntrack) costs several times a cold array slot (`docs/bench/notes.md`
//! has the measurements), and a new NAT flow does two. Here a flow's key
//! hashes to a bucket of [`WAYS`] slots, one element of the array: a lookup
//! is one array lookup (which the verifier inlines), a read of the bucket's
//! tags (a 32-bit fingerprint of each slot's key, in the bucket's first
//! cache line), and a key compare for a matching tag only. A new flow's
//! lookup misses after that one cache line, where comparing the keys spread
//! over the bucket missed on each. An insert writes one slot. A full
//! bucket evicts its least recently used slot, as the LRU evicted its least
//! recently used element, by a stamp each slot carries.
//!
//! A slot whose tag is 0 is free (a tag is never 0), and so is one whose key
//! has protocol 0 (no tracked flow has protocol 0): freeing writes both.
//!
//! The hash is keyed by a random seed drawn when the tables are created and
//! kept beside them (`FlowTables`), so that a client cannot choose ports that
//! fill one bucket, and so that a restarted agent finds its flows again.

use crate::{
    conntrack::{CtEntry, FlowTuple},
    pod::impl_pod,
};

/// Slots per bucket: a lookup reads this many tags (one cache line) and
/// compares the keys under a matching tag. Eight rather than four: keys
/// spread over buckets unevenly, and a full bucket gives up a flow while the
/// table still has room (`buckets_for` has the figures).
pub const WAYS: usize = 8;

/// The shape of both tables, written once when they are created: the hash
/// seed and each table's bucket count minus one (a power of two minus one).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowTables {
    pub seed: u64,
    pub flow_mask: u32,
    pub reply_mask: u32,
}
const _: () = assert!(size_of::<FlowTables>() == 16);

/// One slot: a key, and its value when the key's protocol is not 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot<V> {
    pub key: FlowTuple,
    pub value: V,
}

/// One element of a table: the slots a key's hash leads to, and their tags.
/// The header (tags, overflow count) is one cache line, and so is every
/// bucket's start: both bucket sizes are multiples of 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket<V> {
    pub tags: [u32; WAYS],
    /// Keys whose first bucket this is that were written to their second
    /// (`alt_bucket`) because this one was full: a hint that a lookup
    /// missing here must look there too. The datapath only counts it up;
    /// the agent sets it back to 0 once no such key is left
    /// (`Datapath::clear_overflow_hints`, once a minute).
    pub overflow: u32,
    pub _pad: [u32; 7],
    pub slots: [Slot<V>; WAYS],
}

impl<V> Slot<V> {
    /// The slot holds a flow, its tag being `tag`: a free slot has tag 0 or
    /// a key of protocol 0 (freeing writes both, one at a time).
    #[inline(always)]
    pub const fn is_used_under(&self, tag: u32) -> bool {
        tag != 0 && self.key.proto != 0
    }
}

impl<V> Bucket<V> {
    /// Slot `way` holds a flow.
    #[inline(always)]
    pub const fn is_used(&self, way: usize) -> bool {
        self.slots[way].is_used_under(self.tags[way])
    }
}

/// A slot of `CONNTRACK`: the client's tuple → the flow's entry.
pub type FlowSlot = Slot<CtEntry>;
const _: () = assert!(size_of::<FlowSlot>() == 104);
/// An element of `CONNTRACK`.
pub type FlowBucket = Bucket<CtEntry>;
const _: () = assert!(size_of::<FlowBucket>() == 896 && size_of::<FlowBucket>().is_multiple_of(64));
const _: () = assert!(size_of::<ReplyBucket>().is_multiple_of(64));

/// A slot of `CONNTRACK_REPLY`: the backend's tuple → the flow's key.
pub type ReplySlot = Slot<ReplyEntry>;
const _: () = assert!(size_of::<ReplySlot>() == 88);
/// An element of `CONNTRACK_REPLY`.
pub type ReplyBucket = Bucket<ReplyEntry>;

/// Where slot `way`'s key lies in its bucket.
pub const fn key_offset<V>(way: usize) -> usize {
    core::mem::offset_of!(Bucket<V>, slots) + way * size_of::<Slot<V>>()
}

/// Where slot `way`'s tag lies in its bucket.
pub const fn tag_offset<V>(way: usize) -> usize {
    core::mem::offset_of!(Bucket<V>, tags) + way * size_of::<u32>()
}

/// Where a bucket's `overflow` hint lies in it.
pub const fn overflow_offset<V>() -> usize {
    core::mem::offset_of!(Bucket<V>, overflow)
}

/// The value of a reply slot: the key of the flow it belongs to, and when it
/// was last used (refreshed at most once a second by the packets that use
/// it), which decides what a full bucket evicts.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyEntry {
    pub used_ns: u64,
    pub original: FlowTuple,
}
const _: () = assert!(size_of::<ReplyEntry>() == 48);

/// What a full bucket compares to choose the slot it gives up: the least
/// recently used.
pub trait Stamp {
    /// When the slot was last used, in `CLOCK_MONOTONIC` nanoseconds.
    fn stamp(&self) -> u64;
}

impl Stamp for CtEntry {
    #[inline(always)]
    fn stamp(&self) -> u64 {
        self.last_seen_ns
    }
}

impl Stamp for ReplyEntry {
    #[inline(always)]
    fn stamp(&self) -> u64 {
        self.used_ns
    }
}

impl FlowTuple {
    /// The tuple as five words: it is 8-byte aligned and 40 bytes long.
    #[inline(always)]
    pub const fn words(&self) -> &[u64; 5] {
        // SAFETY: `repr(C, align(8))`, 40 bytes of integers, no padding the
        // compiler adds (asserted beside the type).
        unsafe { &*(self as *const Self).cast::<[u64; 5]>() }
    }

    /// The same tuple, compared a word at a time (`==` compares the addresses
    /// a byte at a time in BPF), with one branch rather than five: the
    /// verifier walks every branch of every compare of a bucket's slots.
    #[inline(always)]
    pub const fn same_as(&self, other: &Self) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) | (a[4] ^ b[4]) == 0
    }
}

/// Where `key` lies in a table of `mask + 1` buckets: its bucket (the low
/// 32 bits) and its tag (the high 32, never 0).
///
/// Each word is folded in with a multiply by an odd constant and a shift of
/// the high half down (multiplication carries only upward); a final round
/// mixes the last word's bits into the low ones the mask keeps. A few
/// instructions per word, where the kernel's maps run `jhash` over the key.
/// The tag is the hash's high half, which the bucket does not use.
#[inline(always)]
pub const fn place(key: &FlowTuple, seed: u64, mask: u32) -> u64 {
    let w = key.words();
    let mut h = seed;
    h = fold(h ^ w[0]);
    h = fold(h ^ w[1]);
    h = fold(h ^ w[2]);
    h = fold(h ^ w[3]);
    h = fold(h ^ w[4]);
    h = fold(h);
    (h | (1 << 32)) & !(u32::MAX as u64) | (h as u32 & mask) as u64
}

/// A key's second bucket, from its first and its tag (partial-key cuckoo
/// hashing): each of the two is the other's `alt_bucket`, so either can be
/// found from the other without the key.
#[inline(always)]
pub const fn alt_bucket(bucket: u32, tag: u32, mask: u32) -> u32 {
    (bucket ^ tag.wrapping_mul(0x5bd1_e995)) & mask
}

/// The bucket of a `place`.
#[inline(always)]
pub const fn bucket_of(place: u64) -> u32 {
    place as u32
}

/// The tag of a `place`.
#[inline(always)]
pub const fn tag_of(place: u64) -> u32 {
    (place >> 32) as u32
}

#[inline(always)]
const fn fold(x: u64) -> u64 {
    let x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^ (x >> 29)
}

/// The bucket count of a table asked to hold `entries`: a power of two,
/// with two slots per entry. Keys spread over buckets unevenly: a key whose
/// first bucket is full goes to its second, and a flow is given up (its
/// first bucket's least recently used) only when both are full, where an LRU
/// map evicts only once full.
pub const fn buckets_for(entries: u32) -> u32 {
    let buckets = entries.div_ceil(WAYS as u32 / 2);
    match buckets.checked_next_power_of_two() {
        Some(n) => n,
        None => 1 << 31,
    }
}

impl_pod!(
    FlowTables,
    FlowBucket,
    ReplyBucket,
    FlowSlot,
    ReplySlot,
    ReplyEntry
);

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src_port: u16) -> FlowTuple {
        let mut client = [0; 16];
        client[10] = 0xff;
        client[11] = 0xff;
        client[12..].copy_from_slice(&[198, 18, 0, 2]);
        let mut vip = client;
        vip[15] = 10;
        FlowTuple::new(client, vip, src_port.to_be(), 80u16.to_be(), 6)
    }

    fn bucket(key: &FlowTuple, seed: u64, mask: u32) -> u32 {
        bucket_of(place(key, seed, mask))
    }

    #[test]
    fn buckets_lie_inside_the_table_and_tags_are_never_0() {
        for port in 0..2000 {
            let p = place(&tuple(port), 0x1234_5678_9abc_def0, 255);
            assert!(bucket_of(p) < 256);
            assert_ne!(tag_of(p), 0);
        }
        // A hash whose high half is 0 still gets a tag.
        assert_ne!(tag_of(place(&FlowTuple::default(), 0, 0)), 0);
    }

    #[test]
    fn keys_of_one_bucket_rarely_share_a_tag() {
        // 4096 keys in 1024 buckets: a handful each.
        let mut tags = [[0u32; 16]; 1024];
        let mut held = [0usize; 1024];
        let mut shared = 0;
        for port in 0..4096 {
            let p = place(&tuple(port), 7, 1023);
            let (b, tag) = (bucket_of(p) as usize, tag_of(p));
            if tags[b][..held[b]].contains(&tag) {
                shared += 1;
            }
            tags[b][held[b]] = tag;
            held[b] += 1;
        }
        assert_eq!(
            shared, 0,
            "{shared} keys share a tag with another of their bucket"
        );
    }

    #[test]
    fn neighbouring_ports_spread_over_the_buckets() {
        // 4096 client ports into 1024 buckets: a good hash puts four in
        // each on average, and none anywhere near a bucket's worth too many.
        let mut load = [0u32; 1024];
        for port in 0..4096 {
            load[bucket(&tuple(port), 7, 1023) as usize] += 1;
        }
        let max = *load.iter().max().unwrap();
        let empty = load.iter().filter(|&&n| n == 0).count();
        assert!(max <= 14, "a bucket took {max} of 4096 keys");
        // Poisson(4) leaves e^-4 ≈ 1.8% of the buckets empty.
        assert!(empty < 60, "{empty} of 1024 buckets stayed empty");
    }

    #[test]
    fn the_seed_moves_the_buckets() {
        let moved = (0..256)
            .filter(|&p| bucket(&tuple(p), 1, 1023) != bucket(&tuple(p), 2, 1023))
            .count();
        assert!(moved > 240, "only {moved} of 256 keys moved with the seed");
    }

    #[test]
    fn a_word_compare_is_equality() {
        assert!(tuple(1).same_as(&tuple(1)));
        assert!(!tuple(1).same_as(&tuple(2)));
        let mut other = tuple(1);
        other.proto = 17;
        assert!(!tuple(1).same_as(&other));
    }

    #[test]
    fn tables_are_a_power_of_two_of_buckets_with_room_for_what_is_asked() {
        assert_eq!(buckets_for(1), 1);
        assert_eq!(buckets_for(64), 16);
        assert_eq!(buckets_for(65), 32);
        assert_eq!(buckets_for(131_072), 32_768);
        assert_eq!(buckets_for(u32::MAX), 1 << 30);
    }

    #[test]
    fn a_second_bucket_leads_back_to_the_first() {
        for port in 0..512 {
            let p = place(&tuple(port), 3, 255);
            let second = alt_bucket(bucket_of(p), tag_of(p), 255);
            assert!(second < 256);
            assert_eq!(alt_bucket(second, tag_of(p), 255), bucket_of(p));
        }
    }

    #[test]
    fn a_slots_key_and_tag_lie_where_user_space_reads_and_frees_them() {
        let mut bucket = ReplyBucket::default();
        bucket.slots[2].key.proto = 6;
        bucket.tags[3] = 0x0102_0304;
        // SAFETY: reading the bytes of a `repr(C)` value of integers.
        let bytes: &[u8; size_of::<ReplyBucket>()] = unsafe { &*(&raw const bucket).cast() };
        let proto = key_offset::<ReplyEntry>(2) + core::mem::offset_of!(FlowTuple, proto);
        assert_eq!(bytes[proto], 6);
        let tag = tag_offset::<ReplyEntry>(3);
        assert_eq!(bytes[tag..tag + 4], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(bytes.iter().filter(|&&b| b != 0).count(), 5);
    }

    #[test]
    fn a_slot_is_used_only_with_a_tag_and_a_protocol() {
        let mut bucket = FlowBucket::default();
        assert!(!bucket.is_used(0));
        bucket.tags[0] = 1;
        assert!(!bucket.is_used(0));
        bucket.slots[0].key.proto = 17;
        assert!(bucket.is_used(0));
        bucket.tags[0] = 0;
        assert!(!bucket.is_used(0));
    }
}
