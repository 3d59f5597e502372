//! Finding, writing and freeing slots of the conntrack tables, which the
//! datapath manages itself (why, and the layout: `xdp_lb_common::flow_table`).
//!
//! Concurrency. Slots are read and written in place by every CPU, as the
//! values of the kernel's hash maps were. What the kernel's maps did besides,
//! an insert never tearing a lookup on another CPU, is narrowed here by the
//! order of the writes: a slot being taken over is freed first (its tag and
//! its key's protocol zeroed, so no lookup matches it), then its value and
//! the key's addresses are written, the key's last word (ports and protocol)
//! in one store, and the tag last. A lookup on another CPU sees the old flow,
//! no flow, or the new one with its value. Two CPUs taking the same free slot
//! for two new flows in the same instant can still leave it holding one's key
//! with the other's value: the next packet of either flow finds nothing or
//! the other's entry, which names another client; it is tracked again as a
//! mid-stream packet (Maglev gives it the same backend while the table is
//! unchanged).
//!
//! The hash and the two scans of a bucket are global functions (`no_mangle`,
//! `extern "C"`): the verifier checks each once, on its own, rather than at
//! every call with the caller's state, and a call costs the caller little
//! more than a helper call. They call no helper, so their values stay in
//! registers and their frames are empty: inlined into callers that call
//! helpers, their values were spilled to those frames, and a new flow's
//! deepest chain of calls went past the 512-byte stack. The verifier takes a
//! global function's pointer arguments for possibly null, and its result for
//! any scalar.

use core::sync::atomic::{Ordering, compiler_fence};

use xdp_lb_common::{
    conntrack::{CtEntry, FlowTuple},
    flow_table::{
        Bucket, FlowTables, ReplyEntry, Slot, Stamp, WAYS, alt_bucket, bucket_of, place, tag_of,
    },
};

use crate::maps::{CONNTRACK, CONNTRACK_REPLY, FLOW_TABLES};

/// A key's first bucket, the index of its second, and the tag its slot
/// carries in either.
struct Place<V: 'static> {
    first: &'static mut Bucket<V>,
    index: u32,
    alt: u32,
    tag: u32,
}

impl<V: Scan> Place<V> {
    /// Where `key` lies in a table of `mask + 1` buckets.
    #[inline(always)]
    fn of(key: &FlowTuple, seed: u64, mask: u32) -> Option<Self> {
        let place = xlb_place(key, seed, mask);
        let (index, tag) = (bucket_of(place), tag_of(place));
        Some(Self {
            first: V::bucket(index)?,
            index,
            alt: alt_bucket(index, tag, mask),
            tag,
        })
    }

    /// The second bucket, unless it is the first.
    #[inline(always)]
    fn second(&self) -> Option<&'static mut Bucket<V>> {
        if self.alt == self.index {
            return None;
        }
        V::bucket(self.alt)
    }

    /// The bucket and way holding `key`: its first bucket, or its second if
    /// the first ever overflowed.
    #[inline(always)]
    fn locate(&mut self, key: &FlowTuple) -> Option<(&'static mut Bucket<V>, usize)> {
        let first: *mut Bucket<V> = &raw mut *self.first;
        // SAFETY: the same map value as `self.first`, reborrowed for the
        // caller, which uses no other reference to it meanwhile.
        let first = unsafe { &mut *first };
        if let Some(way) = way_of(first, key, self.tag) {
            return Some((first, way));
        }
        if first.overflow == 0 {
            return None;
        }
        let second = self.second()?;
        let way = way_of(second, key, self.tag)?;
        Some((second, way))
    }

    /// The bucket and way a new key takes: a free slot of its first bucket,
    /// else one of its second (true: the caller counts it in the first's
    /// `overflow` once written, see `insert`), else the least recently used
    /// of the first.
    #[inline(always)]
    fn room(&mut self) -> (&'static mut Bucket<V>, usize, bool) {
        let first: *mut Bucket<V> = &raw mut *self.first;
        // SAFETY: as in `locate`.
        let first = unsafe { &mut *first };
        let way = victim_of(first);
        if first.tags.get(way).is_some_and(|&t| t == 0) {
            return (first, way, false);
        }
        if let Some(second) = self.second() {
            let other = victim_of(second);
            if second.tags.get(other).is_some_and(|&t| t == 0) {
                return (second, other, true);
            }
        }
        (first, way, false)
    }

    /// The slot holding `key`.
    #[inline(always)]
    fn find(mut self, key: &FlowTuple) -> Option<&'static mut Slot<V>> {
        let (bucket, way) = self.locate(key)?;
        bucket.slots.get_mut(way)
    }

    /// Writes `key` and, through `write`, its value: over the slot that
    /// holds `key` already if `may_replace` lets it replace that value, else
    /// where `room` says. False when the key is there and may not be
    /// replaced. One bucket lookup and one scan for both.
    #[inline(always)]
    fn insert(
        mut self,
        key: &FlowTuple,
        may_replace: impl FnOnce(&V) -> bool,
        write: impl FnOnce(&mut V),
    ) -> bool {
        let (bucket, way, in_second) = match self.locate(key) {
            Some((bucket, way)) => {
                if bucket
                    .slots
                    .get(way)
                    .is_none_or(|slot| !may_replace(&slot.value))
                {
                    return false;
                }
                (bucket, way, false)
            }
            None => self.room(),
        };
        if !write_slot(bucket, way, key, self.tag, write) {
            return false;
        }
        if in_second {
            // After the slot: the agent clears a hint no slot needs
            // (`Datapath::clear_overflow_hints`) only if it did not change
            // while the agent read the slots, so a key written after that
            // read keeps its hint.
            compiler_fence(Ordering::SeqCst);
            self.first.overflow = self.first.overflow.saturating_add(1);
        }
        true
    }

    /// Frees the slot holding `key`, if any, and returns its value.
    #[inline(always)]
    fn take(mut self, key: &FlowTuple) -> Option<V>
    where
        V: Copy,
    {
        let (bucket, way) = self.locate(key)?;
        let (Some(tag), Some(slot)) = (bucket.tags.get_mut(way), bucket.slots.get_mut(way)) else {
            return None;
        };
        let value = slot.value;
        free_slot(tag, slot);
        Some(value)
    }

    /// Frees the slot holding `key`, if any (`take`, its value unread).
    #[inline(always)]
    fn remove(self, key: &FlowTuple)
    where
        V: Copy,
    {
        let _ = self.take(key);
    }
}

/// The way of `bucket` holding `key` with `tag`.
#[inline(always)]
fn way_of<V: Scan>(bucket: &Bucket<V>, key: &FlowTuple, tag: u32) -> Option<usize> {
    let way = V::way_of(bucket, key, tag);
    (way < WAYS as u32).then(|| masked_way(way))
}

/// A free way of `bucket`, else its least recently used.
#[inline(always)]
fn victim_of<V: Scan>(bucket: &Bucket<V>) -> usize {
    masked_way(V::victim_of(bucket))
}

/// Makes slot `way` of `bucket` hold `key` with `tag`, its value written in
/// place through `write` (built on the stack and copied, it would add to
/// frames that run close to the 512-byte limit), in the module's order.
#[inline(always)]
fn write_slot<V>(
    bucket: &mut Bucket<V>,
    way: usize,
    key: &FlowTuple,
    tag: u32,
    write: impl FnOnce(&mut V),
) -> bool {
    let (Some(slot_tag), Some(slot)) = (bucket.tags.get_mut(way), bucket.slots.get_mut(way)) else {
        return false;
    };
    free_slot(slot_tag, slot);
    compiler_fence(Ordering::SeqCst);
    write(&mut slot.value);
    let from = key.words();
    let words = (&raw mut slot.key).cast::<[u64; 5]>();
    // SAFETY: the key's own memory, as the words it is made of (`words`).
    unsafe {
        (*words)[0] = from[0];
        (*words)[1] = from[1];
        (*words)[2] = from[2];
        (*words)[3] = from[3];
        compiler_fence(Ordering::SeqCst);
        (*words)[4] = from[4];
    }
    compiler_fence(Ordering::SeqCst);
    *slot_tag = tag;
    true
}

/// Frees a slot: no lookup matches it from then on (`Slot::is_used_under`).
#[inline(always)]
fn free_slot<V>(tag: &mut u32, slot: &mut Slot<V>) {
    *tag = 0;
    slot.key.proto = 0;
}

/// The global functions of one table's value type.
trait Scan: Stamp + Sized + 'static {
    /// The way holding `key` with `tag`, `WAYS` when none does.
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple, tag: u32) -> u32;
    /// A free way, else the least recently used.
    fn victim_of(bucket: &Bucket<Self>) -> u32;
    /// Bucket `index` of the table.
    fn bucket(index: u32) -> Option<&'static mut Bucket<Self>>;
}

impl Scan for CtEntry {
    #[inline(always)]
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple, tag: u32) -> u32 {
        xlb_flow_way_of(bucket, key, tag)
    }
    #[inline(always)]
    fn victim_of(bucket: &Bucket<Self>) -> u32 {
        xlb_flow_victim_of(bucket)
    }
    #[inline(always)]
    fn bucket(index: u32) -> Option<&'static mut Bucket<Self>> {
        // SAFETY: a map value of the right type, which lives as long as the
        // map; read and written in place (see the module's doc).
        CONNTRACK.get_ptr_mut(index).map(|b| unsafe { &mut *b })
    }
}

impl Scan for ReplyEntry {
    #[inline(always)]
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple, tag: u32) -> u32 {
        xlb_reply_way_of(bucket, key, tag)
    }
    #[inline(always)]
    fn victim_of(bucket: &Bucket<Self>) -> u32 {
        xlb_reply_victim_of(bucket)
    }
    #[inline(always)]
    fn bucket(index: u32) -> Option<&'static mut Bucket<Self>> {
        // SAFETY: as for `CtEntry`.
        CONNTRACK_REPLY
            .get_ptr_mut(index)
            .map(|b| unsafe { &mut *b })
    }
}

/// `way` kept below `WAYS` by a mask the verifier sees. A global function's
/// result is any scalar to the verifier, while LLVM, which sees the body,
/// knows its range and drops the slice's bounds check; the mask is in `asm!`
/// so that LLVM cannot drop it too.
#[inline(always)]
fn masked_way(way: u32) -> usize {
    let mut way = u64::from(way);
    #[cfg(target_arch = "bpf")]
    // SAFETY: an `and` of a register with a constant.
    unsafe {
        core::arch::asm!("{w} &= 7", w = inout(reg) way, options(pure, nomem, nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        way &= WAYS as u64 - 1;
    }
    way as usize
}

const _: () = assert!(WAYS == 8, "`masked_way` masks with WAYS - 1");

/// `place`, with the key's words read here rather than in the caller (see
/// the module's doc).
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_place(key: *const FlowTuple, seed: u64, mask: u32) -> u64 {
    // SAFETY: a null-checked pointer from `Place::of`'s reference.
    unsafe { key.as_ref() }.map_or(0, |key| place(key, seed, mask))
}

/// The two scans of one table's buckets as global functions: an `extern "C"`
/// function cannot be generic, so each table has its own pair.
macro_rules! bucket_scans {
    ($value:ty, $way_of:ident, $victim_of:ident) => {
        #[unsafe(no_mangle)]
        #[inline(never)]
        extern "C" fn $way_of(
            bucket: *const Bucket<$value>,
            key: *const FlowTuple,
            tag: u32,
        ) -> u32 {
            scan_way(bucket, key, tag)
        }

        #[unsafe(no_mangle)]
        #[inline(never)]
        extern "C" fn $victim_of(bucket: *const Bucket<$value>) -> u32 {
            scan_victim(bucket)
        }
    };
}

bucket_scans!(CtEntry, xlb_flow_way_of, xlb_flow_victim_of);
bucket_scans!(ReplyEntry, xlb_reply_way_of, xlb_reply_victim_of);

/// The way whose tag is `tag` and whose key is `key`: the tags sit in the
/// bucket's first cache line, and a key is read only under a matching tag.
#[inline(always)]
fn scan_way<V>(bucket: *const Bucket<V>, key: *const FlowTuple, tag: u32) -> u32 {
    // SAFETY: null-checked pointers from `Place`'s references.
    let (Some(bucket), Some(key)) = (unsafe { bucket.as_ref() }, unsafe { key.as_ref() }) else {
        return WAYS as u32;
    };
    (0..WAYS)
        .find(|&way| bucket.tags[way] == tag && bucket.slots[way].key.same_as(key))
        .unwrap_or(WAYS) as u32
}

/// A free way (read from the tags alone), else the least recently used.
#[inline(always)]
fn scan_victim<V: Stamp>(bucket: *const Bucket<V>) -> u32 {
    // SAFETY: a null-checked pointer from `Place`'s reference.
    let Some(bucket) = (unsafe { bucket.as_ref() }) else {
        return 0;
    };
    if let Some(free) = bucket.tags.iter().position(|&tag| tag == 0) {
        return free as u32;
    }
    let mut victim = 0;
    let mut oldest = u64::MAX;
    for (way, slot) in bucket.slots.iter().enumerate() {
        // A slot freed by its protocol alone (a write under way) ranks first.
        let age = if slot.key.proto == 0 {
            0
        } else {
            slot.value.stamp().saturating_add(1)
        };
        if age < oldest {
            oldest = age;
            victim = way as u32;
        }
    }
    victim
}

/// The tables' shape (seed and sizes), absent only before the loader wrote it.
#[inline(always)]
fn shape() -> Option<&'static FlowTables> {
    FLOW_TABLES.get(0)
}

#[inline(always)]
fn flows(key: &FlowTuple) -> Option<Place<CtEntry>> {
    shape().and_then(|t| Place::of(key, t.seed, t.flow_mask))
}

#[inline(always)]
fn replies(key: &FlowTuple) -> Option<Place<ReplyEntry>> {
    shape().and_then(|t| Place::of(key, t.seed, t.reply_mask))
}

/// The flow entry keyed `key`. The first cache lines of its first bucket
/// are read at once (`touch`), so that in a table too large for the cache
/// the slot under a matching tag is on its way with the tags rather than
/// after them (a hit among 100 000 tracked flows: 974 → 771 ns, seven
/// alternating pairs, medians).
#[inline(always)]
pub fn flow(key: &FlowTuple) -> Option<*mut CtEntry> {
    let place = flows(key)?;
    touch(place.first);
    place.find(key).map(|slot| &raw mut slot.value)
}

/// Writes the flow entry keyed `key` through `write`, over an older one of
/// the same key.
#[inline(always)]
pub fn insert_flow(key: &FlowTuple, write: impl FnOnce(&mut CtEntry)) -> bool {
    flows(key).is_some_and(|p| p.insert(key, |_| true, write))
}

/// The reply entry keyed `key`, its bucket read as `flow` reads it.
#[inline(always)]
pub fn reply(key: &FlowTuple) -> Option<*mut ReplyEntry> {
    let place = replies(key)?;
    touch(place.first);
    place.find(key).map(|slot| &raw mut slot.value)
}

/// Writes the reply entry keyed `key`, naming the flow keyed `original`;
/// with `only_new`, only if there is none.
#[inline(always)]
pub fn insert_reply(key: &FlowTuple, original: &FlowTuple, now: u64, only_new: bool) -> bool {
    replies(key).is_some_and(|p| {
        p.insert(
            key,
            |_| !only_new,
            |entry| {
                entry.used_ns = now;
                entry.original = *original;
            },
        )
    })
}

/// Writes the reply entry keyed `key`, naming the flow keyed `original`, if
/// there is none or `may_take` lets it take over the flow the entry names,
/// used at `now`. A new flow's port search tries up to `SNAT_PORT_TRIES`
/// keys, each one bucket lookup and one scan.
#[inline(always)]
pub fn claim_reply(
    key: &FlowTuple,
    original: &FlowTuple,
    now: u64,
    may_take: impl FnOnce(&FlowTuple) -> bool,
) -> bool {
    replies(key).is_some_and(|p| {
        p.insert(
            key,
            |entry| may_take(&entry.original),
            |entry| {
                entry.used_ns = now;
                entry.original = *original;
            },
        )
    })
}

/// Starts reading the first bucket of the reply entry keyed `key` (its
/// first lines, as `reply` reads them) and drops the words read: the
/// caller's next instructions run on while the lines come in, so that the
/// lookup of the flow's own bucket, which follows, overlaps this read
/// instead of following it.
#[inline(always)]
pub fn touch_reply(key: &FlowTuple) {
    if let Some(p) = replies(key) {
        touch(p.first);
    }
}

/// Cache lines of a bucket `touch` reads: its tags, and its first slots
/// (a bucket's first free ways are taken first, so they hold most flows
/// while a table is not crowded).
const TOUCHED_LINES: usize = 4;
const _: () = assert!(
    size_of::<Bucket<ReplyEntry>>() >= TOUCHED_LINES * 64
        && size_of::<Bucket<CtEntry>>() >= TOUCHED_LINES * 64
);

/// Reads one word of each of a bucket's first `TOUCHED_LINES` cache lines
/// and drops them.
#[inline(always)]
fn touch<V>(bucket: &Bucket<V>) {
    let words = (&raw const *bucket).cast::<u64>();
    for line in 0..TOUCHED_LINES {
        // SAFETY: a word within the map value (asserted above); the read
        // has no effect.
        let _ = unsafe { core::ptr::read_volatile(words.add(line * 8)) };
    }
}

/// Frees the flow entry keyed `key`; returns its value as it was.
#[inline(always)]
pub fn remove_flow(key: &FlowTuple) -> Option<CtEntry> {
    flows(key)?.take(key)
}

/// Frees the reply entry keyed `key`.
#[inline(always)]
pub fn remove_reply(key: &FlowTuple) {
    if let Some(p) = replies(key) {
        p.remove(key);
    }
}
