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
    backend::Backend,
    config::Config,
    conntrack::{CtEntry, FlowTuple},
    flow_table::{
        Bucket, FlowTables, ReplyEntry, Slot, WAYS, alt_bucket, bucket_of, key_offset,
        overflow_offset, place, tag_of, tag_offset,
    },
};

use crate::{
    Datapath, Error,
    maps::{BACKENDS, CONFIG, CONNTRACK, CONNTRACK_REPLY, FLOW_TABLES, array_data, map_err, walk},
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
/// configuration and the backend records their expiry reads: what finding,
/// walking and freeing flows needs, apart from the rest of the datapath. The agent's collector
/// owns one ([`Datapath::conntrack_tables`]), so that its walks of both
/// tables (hundreds of milliseconds at a million flows) run beside the
/// agent's syncs rather than under the lock that orders them.
#[derive(Debug)]
pub struct ConntrackTables {
    flows: Map,
    replies: Map,
    shape: Map,
    config: Map,
    backends: Map,
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
            backends: reopen(BACKENDS)?,
        })
    }

    /// Another handle on the same tables.
    pub fn try_clone(&self) -> Result<Self, Error> {
        Ok(Self {
            flows: reopen(CONNTRACK, &self.flows)?,
            replies: reopen(CONNTRACK_REPLY, &self.replies)?,
            shape: reopen(FLOW_TABLES, &self.shape)?,
            config: reopen(CONFIG, &self.config)?,
            backends: reopen(BACKENDS, &self.backends)?,
        })
    }

    fn map(&self, name: &'static str) -> Result<&Map, Error> {
        match name {
            CONNTRACK => Ok(&self.flows),
            CONNTRACK_REPLY => Ok(&self.replies),
            FLOW_TABLES => Ok(&self.shape),
            CONFIG => Ok(&self.config),
            BACKENDS => Ok(&self.backends),
            _ => Err(Error::MissingMap { map: name }),
        }
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, Error> {
        array_data(name, self.map(name)?)
    }

    /// The global configuration (the timeouts expiry applies).
    pub(crate) fn config(&self) -> Result<Config, Error> {
        Array::<_, Config>::try_from(self.map(CONFIG)?)
            .map_err(map_err(CONFIG, "open"))?
            .get(&0, 0)
            .map_err(map_err(CONFIG, "read"))
    }

    /// Every backend record's generation and whether it is active, by ID,
    /// read in batches.
    pub(crate) fn backend_generations(&self) -> Result<Vec<(u32, bool)>, Error> {
        let (ids, records, _) = walk::<u32, Backend>(BACKENDS, self.map_data(BACKENDS)?)?;
        let mut generations = vec![(0, false); ids.len()];
        for (id, record) in ids.into_iter().zip(records) {
            if let Some(slot) = generations.get_mut(id as usize) {
                *slot = (record.generation, record.is_active());
            }
        }
        Ok(generations)
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

    /// `CONNTRACK`, mapped, with its shape.
    pub(crate) fn flows(&self) -> Result<MappedTable<CtEntry>, Error> {
        let shape = self.flow_tables()?;
        self.mapped(CONNTRACK, shape.seed, shape.flow_mask)
    }

    /// `CONNTRACK_REPLY`, mapped, with its shape.
    pub(crate) fn replies(&self) -> Result<MappedTable<ReplyEntry>, Error> {
        let shape = self.flow_tables()?;
        self.mapped(CONNTRACK_REPLY, shape.seed, shape.reply_mask)
    }

    fn mapped<V>(&self, name: &'static str, seed: u64, mask: u32) -> Result<MappedTable<V>, Error> {
        let buckets = self.buckets(name)?;
        if mask != buckets - 1 {
            return Err(Error::Corrupt {
                map: FLOW_TABLES,
                reason: "it does not describe the conntrack tables beside it",
            });
        }
        let mapping = ByteArrayMapping::new(self.map_data(name)?.fd().as_fd(), buckets).map_err(
            |source| Error::Syscall {
                map: name,
                op: "mmap",
                source,
            },
        )?;
        Ok(MappedTable {
            mapping,
            seed,
            mask,
        })
    }

    /// Every used slot of `CONNTRACK`, and the table's size in slots.
    pub(crate) fn flow_slots(&self) -> Result<(UsedSlots<CtEntry>, u32), Error> {
        let table = self.flows()?;
        Ok((table.used(), table.slots()))
    }

    /// Where `key`'s slot in `CONNTRACK` lies, and its entry, if it has one.
    pub(crate) fn find_flow(&self, key: &FlowTuple) -> Result<Option<(SlotAt, CtEntry)>, Error> {
        Ok(self.flows()?.find(key))
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
        Ok(self.flows()?.clear_hints() + self.replies()?.clear_hints())
    }
}

/// One conntrack table through a mapping of it (`BPF_F_MMAPABLE`), with its
/// seed and mask: what the table operations of user space read and write,
/// in memory rather than a `bpf(2)` call per bucket (a sync that deletes
/// hundreds of thousands of flows made several per flow).
pub(crate) struct MappedTable<V> {
    mapping: ByteArrayMapping<Bucket<V>>,
    seed: u64,
    /// The bucket count less one (a power of two's).
    mask: u32,
}

impl<V: Copy> MappedTable<V>
where
    Slot<V>: Pod,
{
    fn buckets(&self) -> u32 {
        self.mask + 1
    }

    /// The table's size in slots.
    pub(crate) fn slots(&self) -> u32 {
        self.buckets().saturating_mul(WAYS as u32)
    }

    /// Reads the tags of every bucket, and a slot only under a tag: a
    /// bucket's tags are its first cache line, so an empty slot costs a
    /// 4-byte load, where a batched lookup copied every bucket whole.
    /// `expire_flows` on a table sized for a million flows, on the 2-vCPU
    /// VM of `BENCHMARKS.md` (the agent runs it every 10 s): empty, 247–333
    /// ms with the batched lookup, 14–43 ms with this; holding half a
    /// million flows, 130–143 ms with this.
    pub(crate) fn used(&self) -> UsedSlots<V> {
        let mut used = Vec::new();
        for bucket in 0..self.buckets() {
            for way in 0..WAYS {
                let tag = self.mapping.load_u32(bucket, tag_offset::<V>(way));
                if tag == 0 {
                    continue;
                }
                let slot: Slot<V> = self.mapping.read_pod(bucket, key_offset::<V>(way));
                if slot.is_used_under(tag) {
                    used.push((SlotAt { bucket, way }, slot));
                }
            }
        }
        used
    }

    /// How many slots are used, as [`Self::used`] finds them, copying
    /// none: under each tag only the key's protocol is read. A count of a
    /// table holding millions of flows allocates nothing.
    pub(crate) fn count_used(&self) -> usize {
        let proto = std::mem::offset_of!(FlowTuple, proto);
        let mut count = 0;
        for bucket in 0..self.buckets() {
            for way in 0..WAYS {
                let tag = self.mapping.load_u32(bucket, tag_offset::<V>(way));
                // `Slot::is_used_under`, on the one byte it reads.
                if tag != 0
                    && self
                        .mapping
                        .read_pod::<u8>(bucket, key_offset::<V>(way) + proto)
                        != 0
                {
                    count += 1;
                }
            }
        }
        count
    }

    /// Where `key`'s slot lies, and its value, if it has one: its first
    /// bucket, then its second if the first ever overflowed (the datapath's
    /// `Place::locate`).
    pub(crate) fn find(&self, key: &FlowTuple) -> Option<(SlotAt, V)> {
        let place = place(key, self.seed, self.mask);
        let (first, tag) = (bucket_of(place), tag_of(place));
        let in_bucket = |bucket: u32| {
            (0..WAYS).find_map(|way| {
                if self.mapping.load_u32(bucket, tag_offset::<V>(way)) != tag {
                    return None;
                }
                let slot: Slot<V> = self.mapping.read_pod(bucket, key_offset::<V>(way));
                slot.key
                    .same_as(key)
                    .then_some((SlotAt { bucket, way }, slot.value))
            })
        };
        let found = in_bucket(first);
        let second = alt_bucket(first, tag, self.mask);
        if found.is_some()
            || second == first
            || self.mapping.load_u32(first, overflow_offset::<V>()) == 0
        {
            return found;
        }
        in_bucket(second)
    }

    /// Frees each slot that still holds its key; how many.
    pub(crate) fn free(&self, slots: &[(SlotAt, FlowTuple)]) -> usize {
        let mut freed = 0;
        for (at, key) in slots {
            let start = key_offset::<V>(at.way);
            if self.mapping.read_pod::<FlowTuple>(at.bucket, start) != *key {
                continue;
            }
            self.mapping
                .store_u32(at.bucket, tag_offset::<V>(at.way), 0);
            self.mapping
                .store(at.bucket, start + std::mem::offset_of!(FlowTuple, proto), 0);
            freed += 1;
        }
        freed
    }

    /// See `ConntrackTables::clear_overflow_hints`; how many it cleared.
    fn clear_hints(&self) -> usize {
        let hints: Vec<u32> = (0..self.buckets())
            .map(|bucket| self.mapping.load_u32(bucket, overflow_offset::<V>()))
            .collect();
        if hints.iter().all(|&hint| hint == 0) {
            return 0;
        }
        fence(Ordering::SeqCst);
        let mut needed = vec![false; hints.len()];
        for (at, slot) in self.used() {
            let first = bucket_of(place(&slot.key, self.seed, self.mask));
            if first != at.bucket
                && let Some(needed) = needed.get_mut(first as usize)
            {
                *needed = true;
            }
        }
        let mut cleared = 0;
        for (bucket, (&hint, &needed)) in (0..self.buckets()).zip(hints.iter().zip(&needed)) {
            // A hint at its maximum no longer counts up, so a change could
            // not be seen: it stays.
            if hint != 0
                && hint != u32::MAX
                && !needed
                && self
                    .mapping
                    .compare_exchange_u32(bucket, overflow_offset::<V>(), hint, 0)
            {
                cleared += 1;
            }
        }
        cleared
    }
}

/// `map` on a file descriptor of its own.
fn reopen(name: &'static str, map: &Map) -> Result<Map, Error> {
    let fd = array_data(name, map)?
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
