//! User space's side of the conntrack tables the datapath manages itself
//! (`xdp_lb_common::flow_table` has the layout and why): creating their
//! shape, and, on a handle of their own (`ConntrackTables`), finding a flow's
//! slot by its key, reading every slot, and freeing slots.
//!
//! A slot is freed as the datapath frees one: its tag and its key's protocol
//! set to 0, stores through a mapping of the table (`BPF_F_MMAPABLE`). Writing the
//! bucket back through `bpf(2)` would rewrite its other slots too, undoing
//! whatever the datapath wrote to them meanwhile. The key is read again
//! through the mapping right before the store; the datapath may still take
//! the slot for another flow between the two, which the datapath's module
//! doc (`lb::flow_table`) describes for two of its own writers.

use std::{
    hash::{BuildHasher, RandomState},
    os::fd::AsFd as _,
    sync::atomic::{Ordering, fence},
};

use aya::{
    Ebpf, Pod,
    maps::{Array, Map, MapData},
};
use xdp_lb_common::{
    config::Config,
    conntrack::{CtEntry, FlowTuple},
    flow_table::{
        Bucket, FlowTables, ReplyEntry, Slot, WAYS, alt_bucket, bucket_of, key_offset,
        overflow_offset, place, tag_of, tag_offset,
    },
};

use crate::{
    Datapath, Error,
    maps::{CONFIG, CONNTRACK, CONNTRACK_REPLY, FLOW_TABLES, map_err},
    sys::ByteArrayMapping,
};

/// Where a slot lies: its bucket (the array index) and its place in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotAt {
    pub bucket: u32,
    pub way: usize,
}

/// Used slots with where they lie.
pub(crate) type UsedSlots<V> = Vec<(SlotAt, Slot<V>)>;

/// The conntrack tables on file descriptors of their own, with the
/// configuration their expiry reads: what finding, walking and freeing
/// flows needs, apart from the rest of the datapath. The agent's collector
/// owns one ([`Datapath::conntrack_tables`]), so that its walks of both
/// tables (hundreds of milliseconds at a million flows) run beside the
/// agent's syncs rather than under the lock that orders them.
#[derive(Debug)]
pub struct ConntrackTables {
    flows: Map,
    replies: Map,
    shape: Map,
    config: Map,
}

impl Datapath {
    /// Another handle on this datapath's conntrack tables, for a thread of
    /// its own (`expire_flows` and `clear_overflow_hints` there).
    pub fn conntrack_tables(&self) -> Result<ConntrackTables, Error> {
        self.ct_tables.try_clone()
    }

    /// On a fresh load: writes the tables' shape, with a new random seed and
    /// the sizes the kernel gave the two tables.
    pub(crate) fn initialise_flow_tables(&mut self) -> Result<(), Error> {
        let shape = FlowTables {
            // Never 0, which `check_flow_tables` takes for "never written".
            seed: RandomState::new().hash_one(std::process::id()) | 1,
            flow_mask: self.ct_tables.buckets(CONNTRACK)? - 1,
            reply_mask: self.ct_tables.buckets(CONNTRACK_REPLY)? - 1,
        };
        Array::<_, FlowTables>::try_from(self.map_mut(FLOW_TABLES)?)
            .map_err(map_err(FLOW_TABLES, "open"))?
            .set(0, shape, 0)
            .map_err(map_err(FLOW_TABLES, "write"))
    }

    /// On maps reopened from a pin directory: checks that the recorded shape
    /// is that of the tables beside it.
    pub(crate) fn check_flow_tables(&self) -> Result<(), Error> {
        let tables = &self.ct_tables;
        let shape = tables.flow_tables()?;
        if shape.seed == 0
            || shape.flow_mask != tables.buckets(CONNTRACK)? - 1
            || shape.reply_mask != tables.buckets(CONNTRACK_REPLY)? - 1
        {
            return Err(Error::Corrupt {
                map: FLOW_TABLES,
                reason: "it does not describe the conntrack tables beside it",
            });
        }
        Ok(())
    }
}

impl ConntrackTables {
    /// The tables of `ebpf`, on file descriptors of their own.
    pub(crate) fn of(ebpf: &Ebpf) -> Result<Self, Error> {
        let reopen = |name: &'static str| -> Result<Map, Error> {
            let map = ebpf.map(name).ok_or(Error::MissingMap { map: name })?;
            reopen(name, map)
        };
        Ok(Self {
            flows: reopen(CONNTRACK)?,
            replies: reopen(CONNTRACK_REPLY)?,
            shape: reopen(FLOW_TABLES)?,
            config: reopen(CONFIG)?,
        })
    }

    /// Another handle on the same tables.
    pub fn try_clone(&self) -> Result<Self, Error> {
        Ok(Self {
            flows: reopen(CONNTRACK, &self.flows)?,
            replies: reopen(CONNTRACK_REPLY, &self.replies)?,
            shape: reopen(FLOW_TABLES, &self.shape)?,
            config: reopen(CONFIG, &self.config)?,
        })
    }

    fn map(&self, name: &'static str) -> Result<&Map, Error> {
        match name {
            CONNTRACK => Ok(&self.flows),
            CONNTRACK_REPLY => Ok(&self.replies),
            FLOW_TABLES => Ok(&self.shape),
            CONFIG => Ok(&self.config),
            _ => Err(Error::MissingMap { map: name }),
        }
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, Error> {
        match self.map(name)? {
            Map::Array(data) => Ok(data),
            _ => Err(Error::Corrupt {
                map: name,
                reason: "the map does not have the type this build expects",
            }),
        }
    }

    /// The global configuration (the timeouts expiry applies).
    pub(crate) fn config(&self) -> Result<Config, Error> {
        Array::<_, Config>::try_from(self.map(CONFIG)?)
            .map_err(map_err(CONFIG, "open"))?
            .get(&0, 0)
            .map_err(map_err(CONFIG, "read"))
    }

    /// The tables' seed and sizes.
    fn flow_tables(&self) -> Result<FlowTables, Error> {
        Array::<_, FlowTables>::try_from(self.map(FLOW_TABLES)?)
            .map_err(map_err(FLOW_TABLES, "open"))?
            .get(&0, 0)
            .map_err(map_err(FLOW_TABLES, "read"))
    }

    /// The bucket count of table `name`.
    fn buckets(&self, name: &'static str) -> Result<u32, Error> {
        let buckets = self
            .map_data(name)?
            .info()
            .map_err(map_err(name, "info"))?
            .max_entries();
        if !buckets.is_power_of_two() {
            return Err(Error::Corrupt {
                map: name,
                reason: "its bucket count is not a power of two",
            });
        }
        Ok(buckets)
    }

    /// Every used slot of `CONNTRACK`, and the table's size in slots.
    pub(crate) fn flow_slots(&self) -> Result<(UsedSlots<CtEntry>, u32), Error> {
        self.used_slots(CONNTRACK)
    }

    /// Every used slot of `CONNTRACK_REPLY`, and the table's size in slots.
    pub(crate) fn reply_slots(&self) -> Result<(UsedSlots<ReplyEntry>, u32), Error> {
        self.used_slots(CONNTRACK_REPLY)
    }

    /// Reads the tags of every bucket through a mapping of the table, and a
    /// slot only under a tag: a bucket's tags are its first cache line, so an
    /// empty slot costs a 4-byte load, where a batched lookup copied every
    /// bucket whole. `expire_flows` on a table sized for a million flows, on
    /// the 2-vCPU VM of `BENCHMARKS.md` (the agent runs it every 10 s): empty,
    /// 247–333 ms with the batched lookup, 14–43 ms with this; holding half a
    /// million flows, 130–143 ms with this.
    fn used_slots<V: Copy>(&self, name: &'static str) -> Result<(UsedSlots<V>, u32), Error>
    where
        Slot<V>: Pod,
    {
        let buckets = self.buckets(name)?;
        let mapping = self.mapping::<V>(name, buckets)?;
        Ok((
            used_in(&mapping, buckets),
            buckets.saturating_mul(WAYS as u32),
        ))
    }

    /// A mapping of table `name`'s `buckets` buckets.
    fn mapping<V>(
        &self,
        name: &'static str,
        buckets: u32,
    ) -> Result<ByteArrayMapping<Bucket<V>>, Error> {
        ByteArrayMapping::new(self.map_data(name)?.fd().as_fd(), buckets).map_err(|source| {
            Error::Syscall {
                map: name,
                op: "mmap",
                source,
            }
        })
    }

    /// Where `key`'s slot in `CONNTRACK` lies, and its entry, if it has one.
    pub(crate) fn find_flow(&self, key: &FlowTuple) -> Result<Option<(SlotAt, CtEntry)>, Error> {
        let shape = self.flow_tables()?;
        self.find(
            CONNTRACK,
            place(key, shape.seed, shape.flow_mask),
            shape.flow_mask,
            key,
        )
    }

    /// Where `key`'s slot in `CONNTRACK_REPLY` lies, and its entry, if it has
    /// one.
    pub(crate) fn find_reply(
        &self,
        key: &FlowTuple,
    ) -> Result<Option<(SlotAt, ReplyEntry)>, Error> {
        let shape = self.flow_tables()?;
        self.find(
            CONNTRACK_REPLY,
            place(key, shape.seed, shape.reply_mask),
            shape.reply_mask,
            key,
        )
    }

    fn find<V: Copy>(
        &self,
        name: &'static str,
        place: u64,
        mask: u32,
        key: &FlowTuple,
    ) -> Result<Option<(SlotAt, V)>, Error>
    where
        Bucket<V>: Pod,
    {
        let table =
            Array::<_, Bucket<V>>::try_from(self.map(name)?).map_err(map_err(name, "open"))?;
        let (first, tag) = (bucket_of(place), tag_of(place));
        let in_bucket = |index: u32| -> Result<(Option<(SlotAt, V)>, u32), Error> {
            let b = table.get(&index, 0).map_err(map_err(name, "lookup"))?;
            let found = (0..WAYS)
                .find(|&way| b.tags[way] == tag && b.slots[way].key.same_as(key))
                .map(|way| (SlotAt { bucket: index, way }, b.slots[way].value));
            Ok((found, b.overflow))
        };
        // The first bucket, then the second if the first ever overflowed
        // (the datapath's `Place::locate`).
        let (found, overflow) = in_bucket(first)?;
        let second = alt_bucket(first, tag, mask);
        if found.is_some() || overflow == 0 || second == first {
            return Ok(found);
        }
        Ok(in_bucket(second)?.0)
    }

    /// Sets back to 0 the `overflow` hint of every bucket, in both tables,
    /// that no key needs any longer: none of the keys whose first bucket it
    /// is lies in their second. The datapath only ever counts a hint up, so
    /// without this a bucket that overflowed once would send every lookup
    /// that misses in it to a second bucket for good (new flows, mostly).
    /// Returns how many hints it cleared; the agent calls it once a minute.
    ///
    /// The hints are read before the slots, and one is cleared only if it
    /// has not changed since (one compare-and-swap): the datapath counts a
    /// key in its first bucket's hint after writing the key, so a key the
    /// slots were read without has changed its hint by then, and keeps it.
    pub fn clear_overflow_hints(&self) -> Result<usize, Error> {
        let shape = self.flow_tables()?;
        Ok(
            self.clear_hints::<CtEntry>(CONNTRACK, shape.seed, shape.flow_mask)?
                + self.clear_hints::<ReplyEntry>(CONNTRACK_REPLY, shape.seed, shape.reply_mask)?,
        )
    }

    fn clear_hints<V: Copy>(&self, name: &'static str, seed: u64, mask: u32) -> Result<usize, Error>
    where
        Slot<V>: Pod,
    {
        let buckets = self.buckets(name)?;
        let mapping = self.mapping::<V>(name, buckets)?;
        let hints: Vec<u32> = (0..buckets)
            .map(|bucket| mapping.load_u32(bucket, overflow_offset::<V>()))
            .collect();
        if hints.iter().all(|&hint| hint == 0) {
            return Ok(0);
        }
        fence(Ordering::SeqCst);
        let mut needed = vec![false; hints.len()];
        for (at, slot) in used_in(&mapping, buckets) {
            let first = bucket_of(place(&slot.key, seed, mask));
            if first != at.bucket
                && let Some(needed) = needed.get_mut(first as usize)
            {
                *needed = true;
            }
        }
        let mut cleared = 0;
        for (bucket, (&hint, &needed)) in (0..buckets).zip(hints.iter().zip(&needed)) {
            // A hint at its maximum no longer counts up, so a change could
            // not be seen: it stays.
            if hint != 0
                && hint != u32::MAX
                && !needed
                && mapping.compare_exchange_u32(bucket, overflow_offset::<V>(), hint, 0)
            {
                cleared += 1;
            }
        }
        Ok(cleared)
    }

    /// Frees each slot of `CONNTRACK` that still holds its key; how many.
    pub(crate) fn free_flows(&self, slots: &[(SlotAt, FlowTuple)]) -> Result<usize, Error> {
        self.free::<CtEntry>(CONNTRACK, slots)
    }

    /// Frees each slot of `CONNTRACK_REPLY` that still holds its key; how
    /// many.
    pub(crate) fn free_replies(&self, slots: &[(SlotAt, FlowTuple)]) -> Result<usize, Error> {
        self.free::<ReplyEntry>(CONNTRACK_REPLY, slots)
    }

    fn free<V>(&self, name: &'static str, slots: &[(SlotAt, FlowTuple)]) -> Result<usize, Error> {
        if slots.is_empty() {
            return Ok(0);
        }
        let mapping = self.mapping::<V>(name, self.buckets(name)?)?;
        let mut freed = 0;
        for (at, key) in slots {
            let start = key_offset::<V>(at.way);
            if mapping.read_pod::<FlowTuple>(at.bucket, start) != *key {
                continue;
            }
            mapping.store_u32(at.bucket, tag_offset::<V>(at.way), 0);
            mapping.store(at.bucket, start + std::mem::offset_of!(FlowTuple, proto), 0);
            freed += 1;
        }
        Ok(freed)
    }
}

/// The used slots of the `buckets` buckets behind `mapping` (see
/// `ConntrackTables::used_slots`).
fn used_in<V: Copy>(mapping: &ByteArrayMapping<Bucket<V>>, buckets: u32) -> UsedSlots<V>
where
    Slot<V>: Pod,
{
    let mut used = Vec::new();
    for bucket in 0..buckets {
        for way in 0..WAYS {
            let tag = mapping.load_u32(bucket, tag_offset::<V>(way));
            if tag == 0 {
                continue;
            }
            let slot: Slot<V> = mapping.read_pod(bucket, key_offset::<V>(way));
            if slot.is_used_under(tag) {
                used.push((SlotAt { bucket, way }, slot));
            }
        }
    }
    used
}

/// `map` on a file descriptor of its own.
fn reopen(name: &'static str, map: &Map) -> Result<Map, Error> {
    let data = match map {
        Map::Array(data) => data,
        _ => {
            return Err(Error::Corrupt {
                map: name,
                reason: "the map does not have the type this build expects",
            });
        }
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Syscall {
            map: name,
            op: "dup",
            source,
        })?;
    let data = MapData::from_fd(fd).map_err(map_err(name, "reopen"))?;
    Map::from_map_data(data).map_err(map_err(name, "reopen"))
}
