//! Finding, writing and freeing slots of the conntrack tables, which the
//! datapath manages itself (why, and the layout: `xdp_lb_common::flow_table`).
//!
//! Concurrency. Slots are read and written in place by every CPU, as the
//! values of the kernel's hash maps were. What the kernel's maps did besides,
//! an insert never tearing a lookup on another CPU, is narrowed here by the
//! order of the writes: a slot being taken over is freed first (its protocol
//! zeroed, so no lookup matches it), then its value and the key's addresses
//! are written, and the key's last word (ports and protocol) last, in one
//! store. A lookup on another CPU sees the old flow, no flow, or the new one
//! with its value. Two CPUs taking the same free slot for two new flows in
//! the same instant can still leave it holding one's key with the other's
//! value: the next packet of either flow finds nothing or the other's entry,
//! which names another client; it is tracked again as a mid-stream packet
//! (Maglev gives it the same backend while the table is unchanged).

use core::sync::atomic::{Ordering, compiler_fence};

use aya_ebpf::btf_maps::Array;
use xdp_lb_common::{
    conntrack::{CtEntry, FlowTuple},
    flow_table::{Bucket, FlowTables, ReplyEntry, Slot, Stamp, WAYS, bucket},
};

use crate::maps::{CONNTRACK, CONNTRACK_REPLY, FLOW_TABLES};

/// The bucket `key` hashes to in a table of `mask + 1` buckets.
#[inline(always)]
fn bucket_of<V, const N: usize, const F: usize>(
    table: &Array<Bucket<V>, N, F>,
    key: &FlowTuple,
    seed: u64,
    mask: u32,
) -> Option<&'static mut Bucket<V>> {
    let b = table.get_ptr_mut(xlb_bucket(key, seed, mask))?;
    // SAFETY: a map value of the right type, which lives as long as the map;
    // read and written in place (see the module's doc on concurrency).
    Some(unsafe { &mut *b })
}

/// `bucket` as a global function: the key's words are read inside it, not
/// in the caller, where LLVM read them before the caller's helper calls and
/// spilled them to its frame. The index is masked again where the verifier
/// sees it: the array lookup checks it anyway.
#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_bucket(key: *const FlowTuple, seed: u64, mask: u32) -> u32 {
    // SAFETY: a null-checked pointer from `bucket_of`'s reference.
    unsafe { key.as_ref() }.map_or(0, |key| bucket(key, seed, mask))
}

/// The slot of `bucket` holding `key`.
#[inline(always)]
fn find<'a, V: Scan>(bucket: &'a mut Bucket<V>, key: &FlowTuple) -> Option<&'a mut Slot<V>> {
    let way = way_of(bucket, key)?;
    bucket.slots.get_mut(way)
}

// The two scans of a bucket are global functions (`no_mangle`, `extern
// "C"`): the verifier checks each once, on its own, rather than at every
// call with the caller's state, and a call costs the caller no more than a
// helper call. Both leave their values in registers (no helper call in
// them), so their frames are empty too: inlined into callers that call
// helpers, they were spilled to those frames, and a new flow's deepest chain
// of calls went past the 512-byte stack. A global function's pointer
// arguments may be null as far as the verifier knows.

/// The way of `bucket` holding `key`.
#[inline(always)]
fn way_of<V: Scan>(bucket: &Bucket<V>, key: &FlowTuple) -> Option<usize> {
    let way = V::way_of(bucket, key);
    (way < WAYS as u32).then(|| masked_way(way))
}

/// The way `bucket` gives to a new key: a free one, else the least recently
/// used.
#[inline(always)]
fn victim_of<V: Scan>(bucket: &Bucket<V>) -> usize {
    masked_way(V::victim_of(bucket))
}

/// The global functions of one table's value type.
trait Scan: Stamp + Sized {
    /// The way holding `key`, `WAYS` when none does.
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple) -> u32;
    fn victim_of(bucket: &Bucket<Self>) -> u32;
}

impl Scan for CtEntry {
    #[inline(always)]
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple) -> u32 {
        xlb_flow_way_of(bucket, key)
    }
    #[inline(always)]
    fn victim_of(bucket: &Bucket<Self>) -> u32 {
        xlb_flow_victim_of(bucket)
    }
}

impl Scan for ReplyEntry {
    #[inline(always)]
    fn way_of(bucket: &Bucket<Self>, key: &FlowTuple) -> u32 {
        xlb_reply_way_of(bucket, key)
    }
    #[inline(always)]
    fn victim_of(bucket: &Bucket<Self>) -> u32 {
        xlb_reply_victim_of(bucket)
    }
}

/// `way` kept below `WAYS` by a mask the verifier sees. A global function's
/// result is any scalar to the verifier, while LLVM, which sees the body,
/// knows the victim's range and drops the slice's bounds check; the mask is
/// in `asm!` so that LLVM cannot drop it too.
#[inline(always)]
fn masked_way(way: u32) -> usize {
    let mut way = u64::from(way);
    #[cfg(target_arch = "bpf")]
    // SAFETY: an `and` of a register with a constant.
    unsafe {
        core::arch::asm!("{w} &= 3", w = inout(reg) way, options(pure, nomem, nostack));
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        way &= WAYS as u64 - 1;
    }
    way as usize
}

const _: () = assert!(WAYS == 4, "`masked_way` masks with WAYS - 1");

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_flow_way_of(bucket: *const Bucket<CtEntry>, key: *const FlowTuple) -> u32 {
    scan_way(bucket, key)
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_reply_way_of(bucket: *const Bucket<ReplyEntry>, key: *const FlowTuple) -> u32 {
    scan_way(bucket, key)
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_flow_victim_of(bucket: *const Bucket<CtEntry>) -> u32 {
    scan_victim(bucket)
}

#[unsafe(no_mangle)]
#[inline(never)]
extern "C" fn xlb_reply_victim_of(bucket: *const Bucket<ReplyEntry>) -> u32 {
    scan_victim(bucket)
}

#[inline(always)]
fn scan_way<V>(bucket: *const Bucket<V>, key: *const FlowTuple) -> u32 {
    // SAFETY: null-checked pointers from `way_of`'s references.
    let (Some(bucket), Some(key)) = (unsafe { bucket.as_ref() }, unsafe { key.as_ref() }) else {
        return WAYS as u32;
    };
    bucket
        .slots
        .iter()
        .position(|slot| slot.key.same_as(key))
        .unwrap_or(WAYS) as u32
}

#[inline(always)]
fn scan_victim<V: Stamp>(bucket: *const Bucket<V>) -> u32 {
    // SAFETY: a null-checked pointer from `victim_of`'s reference.
    let Some(bucket) = (unsafe { bucket.as_ref() }) else {
        return 0;
    };
    let mut victim = 0;
    let mut oldest = u64::MAX;
    for (way, slot) in bucket.slots.iter().enumerate() {
        // A free slot ranks before every used one.
        let age = if slot.is_used() {
            slot.value.stamp().saturating_add(1)
        } else {
            0
        };
        if age < oldest {
            oldest = age;
            victim = way as u32;
        }
    }
    victim
}

/// Writes `key` and, through `write`, its value into `bucket`: over the slot
/// that holds `key` already (unless `only_new`), else into a free slot, else
/// over the least recently used. False when `only_new` and the key is there.
#[inline(always)]
fn insert<V: Scan>(
    bucket: &mut Bucket<V>,
    key: &FlowTuple,
    only_new: bool,
    write: impl FnOnce(&mut V),
) -> bool {
    let way = match way_of(bucket, key) {
        None => victim_of(bucket),
        Some(_) if only_new => return false,
        Some(way) => way,
    };
    bucket
        .slots
        .get_mut(way)
        .is_some_and(|slot| write_slot(slot, key, write))
}

/// Makes `slot` hold `key`, its value written in place through `write`
/// (built on the stack and copied, it would add to frames that run close to
/// the 512-byte limit), in the module's order.
#[inline(always)]
fn write_slot<V>(slot: &mut Slot<V>, key: &FlowTuple, write: impl FnOnce(&mut V)) -> bool {
    slot.key.proto = 0;
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
    true
}

/// The tables' shape (seed and sizes), absent only before the loader wrote it.
#[inline(always)]
fn shape() -> Option<&'static FlowTables> {
    FLOW_TABLES.get(0)
}

/// The flow entry keyed `key`.
#[inline(always)]
pub fn flow(key: &FlowTuple) -> Option<*mut CtEntry> {
    let t = shape()?;
    let slot = find(bucket_of(&CONNTRACK, key, t.seed, t.flow_mask)?, key)?;
    Some(&raw mut slot.value)
}

/// Writes the flow entry keyed `key` through `write`, over an older one of
/// the same key.
#[inline(always)]
pub fn insert_flow(key: &FlowTuple, write: impl FnOnce(&mut CtEntry)) -> bool {
    shape()
        .and_then(|t| bucket_of(&CONNTRACK, key, t.seed, t.flow_mask))
        .is_some_and(|b| insert(b, key, false, write))
}

/// The reply entry keyed `key`.
#[inline(always)]
pub fn reply(key: &FlowTuple) -> Option<*mut ReplyEntry> {
    let t = shape()?;
    let slot = find(bucket_of(&CONNTRACK_REPLY, key, t.seed, t.reply_mask)?, key)?;
    Some(&raw mut slot.value)
}

/// Writes the reply entry keyed `key`, naming the flow keyed `original`;
/// with `only_new`, only if there is none.
#[inline(always)]
pub fn insert_reply(key: &FlowTuple, original: &FlowTuple, now: u64, only_new: bool) -> bool {
    shape()
        .and_then(|t| bucket_of(&CONNTRACK_REPLY, key, t.seed, t.reply_mask))
        .is_some_and(|b| {
            insert(b, key, only_new, |entry| {
                entry.used_ns = now;
                entry.original = *original;
            })
        })
}

/// Writes the reply entry keyed `key`, naming the flow keyed `original`, if
/// there is none or `may_take` lets it take over the flow the entry names.
/// One bucket lookup and one scan for both, as a new flow's port search
/// tries up to `SNAT_PORT_TRIES` keys; `now` read only to write.
#[inline(always)]
pub fn claim_reply(
    key: &FlowTuple,
    original: &FlowTuple,
    now: impl FnOnce() -> u64,
    may_take: impl FnOnce(&FlowTuple) -> bool,
) -> bool {
    let Some(b) = shape().and_then(|t| bucket_of(&CONNTRACK_REPLY, key, t.seed, t.reply_mask))
    else {
        return false;
    };
    let way = match way_of(b, key) {
        Some(way) => {
            if b.slots
                .get(way)
                .is_none_or(|slot| !may_take(&slot.value.original))
            {
                return false;
            }
            way
        }
        None => victim_of(b),
    };
    b.slots.get_mut(way).is_some_and(|slot| {
        write_slot(slot, key, |entry| {
            entry.used_ns = now();
            entry.original = *original;
        })
    })
}

/// Frees the reply entry keyed `key`.
#[inline(always)]
pub fn remove_reply(key: &FlowTuple) {
    if let Some(slot) = shape()
        .and_then(|t| bucket_of(&CONNTRACK_REPLY, key, t.seed, t.reply_mask))
        .and_then(|b| find(b, key))
    {
        slot.key.proto = 0;
    }
}
