//! Reading the parser's per-CPU counters.
use aya::maps::PerCpuArray;
use xdp_lb_common::stats::{Counter, ParseCounter};

use crate::{Datapath, Error};

const PARSE_STATS: &str = "PARSE_STATS";

/// The parser's counters, summed over all CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    counters: Vec<Counter>,
}

impl ParseStats {
    /// Packets and bytes counted in one slot.
    pub fn get(&self, counter: ParseCounter) -> Counter {
        self.counters
            .get(counter as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every slot with its counts, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ParseCounter, Counter)> + '_ {
        ParseCounter::ALL.iter().map(|&c| (c, self.get(c)))
    }

    /// Total packets over every slot.
    pub fn total_packets(&self) -> u64 {
        self.counters.iter().map(|c| c.packets).sum()
    }
}

impl Datapath {
    /// Reads the parser counters (a snapshot; each CPU's slot is read once).
    pub fn parse_stats(&self) -> Result<ParseStats, Error> {
        let map = self
            .ebpf
            .map(PARSE_STATS)
            .ok_or(Error::MissingMap { map: PARSE_STATS })?;
        let array = PerCpuArray::<_, Counter>::try_from(map).map_err(|source| Error::Map {
            map: PARSE_STATS,
            op: "open",
            source,
        })?;
        let mut counters = Vec::with_capacity(ParseCounter::COUNT as usize);
        for slot in 0..ParseCounter::COUNT {
            let per_cpu = array.get(&slot, 0).map_err(|source| Error::Map {
                map: PARSE_STATS,
                op: "lookup",
                source,
            })?;
            counters.push(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }));
        }
        Ok(ParseStats { counters })
    }
}
