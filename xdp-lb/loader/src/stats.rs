//! Reading the programs' per-CPU counters, summed over CPUs.
use aya::maps::PerCpuArray;
use xdp_lb_common::{
    backend::BackendCpu,
    stats::{Counter, CtEvent, DecapVerdict, ParseCounter, Verdict},
};

use crate::{
    Datapath, Error,
    maps::{
        BACKEND_CPU, CT_STATS, DECAP_STATS, FLOOR_STATS, PARSE_STATS, SERVICE_STATS, VERDICT_STATS,
        map_err,
    },
};

/// A snapshot of one counter array, summed over CPUs, indexed by a counter enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters<C: 'static> {
    all: &'static [C],
    counters: Vec<Counter>,
}

/// The parser's counters.
pub type ParseStats = Counters<ParseCounter>;
/// The counters of `xdp_decap`.
pub type DecapStats = Counters<DecapVerdict>;
/// The verdict counters of `xdp_lb`.
pub type VerdictStats = Counters<Verdict>;
/// The connection-tracking event counters.
pub type CtStats = Counters<CtEvent>;

impl<C: Copy + Into<u32>> Counters<C> {
    /// Packets and bytes counted in one slot.
    pub fn get(&self, counter: C) -> Counter {
        let slot: u32 = counter.into();
        self.counters
            .get(slot as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Every slot with its counts, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (C, Counter)> + '_ {
        self.all.iter().map(|&c| (c, self.get(c)))
    }

    /// Total packets over every slot.
    pub fn total_packets(&self) -> u64 {
        self.counters.iter().map(|c| c.packets).sum()
    }
}

fn sum(per_cpu: impl IntoIterator<Item = Counter>) -> Counter {
    per_cpu
        .into_iter()
        .fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        })
}

impl Datapath {
    fn counter_slots(&self, map: &'static str, slots: u32) -> Result<Vec<Counter>, Error> {
        let array =
            PerCpuArray::<_, Counter>::try_from(self.map(map)?).map_err(map_err(map, "open"))?;
        (0..slots)
            .map(|slot| {
                array
                    .get(&slot, 0)
                    .map(|v| sum(v.iter().copied()))
                    .map_err(map_err(map, "lookup"))
            })
            .collect()
    }

    fn counter_slot(&self, map: &'static str, slot: u32) -> Result<Counter, Error> {
        let array =
            PerCpuArray::<_, Counter>::try_from(self.map(map)?).map_err(map_err(map, "open"))?;
        array
            .get(&slot, 0)
            .map(|v| sum(v.iter().copied()))
            .map_err(map_err(map, "lookup"))
    }

    /// The parser counters (each CPU's slot read once).
    pub fn parse_stats(&self) -> Result<ParseStats, Error> {
        let counters = self.counter_slots(PARSE_STATS, ParseCounter::COUNT)?;
        Ok(Counters {
            all: ParseCounter::ALL,
            counters,
        })
    }

    /// The verdict counters of `xdp_lb`.
    pub fn verdict_stats(&self) -> Result<VerdictStats, Error> {
        let counters = self.counter_slots(VERDICT_STATS, Verdict::COUNT)?;
        Ok(Counters {
            all: Verdict::ALL,
            counters,
        })
    }

    /// The verdict counters of `xdp_decap`.
    pub fn decap_stats(&self) -> Result<DecapStats, Error> {
        let counters = self.counter_slots(DECAP_STATS, DecapVerdict::COUNT)?;
        Ok(Counters {
            all: DecapVerdict::ALL,
            counters,
        })
    }

    /// The connection-tracking event counters (packets only).
    pub fn ct_stats(&self) -> Result<CtStats, Error> {
        let counters = self.counter_slots(CT_STATS, CtEvent::COUNT)?;
        Ok(Counters {
            all: CtEvent::ALL,
            counters,
        })
    }

    /// Packets and bytes translated for service `id`, both directions.
    pub fn service_stats(&self, id: u32) -> Result<Counter, Error> {
        self.counter_slot(SERVICE_STATS, id)
    }

    /// Packets and bytes translated to or from backend `id`.
    pub fn backend_stats(&self, id: u32) -> Result<Counter, Error> {
        let array = PerCpuArray::<_, BackendCpu>::try_from(self.map(BACKEND_CPU)?)
            .map_err(map_err(BACKEND_CPU, "open"))?;
        let per_cpu = array.get(&id, 0).map_err(map_err(BACKEND_CPU, "lookup"))?;
        Ok(sum(per_cpu.iter().map(|slot| slot.counter)))
    }

    /// The one counter of the `xdp_floor` and `xdp_sink` programs.
    pub fn floor_stats(&self) -> Result<Counter, Error> {
        self.counter_slot(FLOOR_STATS, 0)
    }
}
