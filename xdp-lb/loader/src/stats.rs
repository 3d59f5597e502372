//! Reading the programs' per-CPU counters, summed over CPUs; and making a
//! pinned counter array anew when another build left it with other slots.
use std::path::Path;

use aya::{
    Pod,
    maps::{MapError, MapInfo, PerCpuArray, PerCpuValues},
    util::nr_cpus,
};
use xdp_lb_common::{
    backend::BackendCpu,
    stats::{
        Counter, CtEvent, DecapVerdict, FlowEventOutcome, ParseCounter, ProbeVerdict, Verdict,
    },
};

use crate::{
    Datapath, Error,
    maps::{
        BACKEND_CPU, CT_STATS, DECAP_STATS, FLOOR_STATS, FLOW_EVENT_STATS, PARSE_STATS,
        PROBE_STATS, SERVICE_STATS, VERDICT_STATS, map_err,
    },
};

/// A snapshot of one counter array, summed over CPUs, indexed by a counter enum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters<C: 'static> {
    pub(crate) all: &'static [C],
    pub(crate) counters: Vec<Counter>,
}

/// The parser's counters.
pub type ParseStats = Counters<ParseCounter>;
/// The counters of `xdp_decap`.
pub type DecapStats = Counters<DecapVerdict>;
/// The verdict counters of `xdp_lb`.
pub type VerdictStats = Counters<Verdict>;
/// The connection-tracking event counters.
pub type CtStats = Counters<CtEvent>;
/// The sampled flow events by outcome: written, or lost to a full ring.
pub type FlowEventStats = Counters<FlowEventOutcome>;

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

/// The counter arrays indexed by a counter enum, with the slots this build
/// counts into: one more verdict in a later build is one more slot.
const COUNTER_ARRAYS: [(&str, u32); 6] = [
    (PARSE_STATS, ParseCounter::COUNT),
    (VERDICT_STATS, Verdict::COUNT),
    (CT_STATS, CtEvent::COUNT),
    (DECAP_STATS, DecapVerdict::COUNT),
    (FLOW_EVENT_STATS, FlowEventOutcome::COUNT),
    (PROBE_STATS, ProbeVerdict::COUNT),
];

/// Unpins every counter array of pin directory `dir` whose slots or counter
/// size are not this build's, so that the load makes it anew, and logs
/// which. Reused, a smaller array would leave this build's new verdicts
/// uncounted (a lookup past its end) and unreadable, and a larger one would
/// hold slots no verdict names. Only counters are lost: the layout version
/// guards the state (services, conntrack), and a counter array's slots are
/// not state. The programs still attached keep the old array until this
/// load's programs replace them.
pub(crate) fn renew_resized_counters(dir: &Path) -> Result<(), Error> {
    for (map, expected) in COUNTER_ARRAYS {
        let path = dir.join(map);
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(map_err(map, "open the pinned"))?;
        let counter_size = u32::try_from(size_of::<Counter>()).unwrap_or(u32::MAX);
        if info.max_entries() == expected && info.value_size() == counter_size {
            continue;
        }
        std::fs::remove_file(&path).map_err(|source| Error::PinDir {
            path: path.clone(),
            source,
        })?;
        tracing::warn!(
            map,
            found = info.max_entries(),
            expected,
            "a pinned counter array has other slots than this build counts into (another \
             build's): made anew, its counts start again from 0"
        );
    }
    Ok(())
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

    /// The verdict counters of `tc_probe_encap` (health probes through the
    /// DSR tunnel).
    pub fn probe_stats(&self) -> Result<crate::ProbeStats, Error> {
        let counters = self.counter_slots(PROBE_STATS, ProbeVerdict::COUNT)?;
        Ok(Counters {
            all: ProbeVerdict::ALL,
            counters,
        })
    }

    /// The sampled flow events by outcome: written to the ring, or lost
    /// because it was full (its reader fell behind).
    pub fn flow_event_stats(&self) -> Result<FlowEventStats, Error> {
        let counters = self.counter_slots(FLOW_EVENT_STATS, FlowEventOutcome::COUNT)?;
        Ok(Counters {
            all: FlowEventOutcome::ALL,
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

    /// Zeroes service `id`'s counters on every CPU, for an ID about to be
    /// given to a service: a reused ID would otherwise start with the counts
    /// of the service that held it before.
    pub fn clear_service_stats(&mut self, id: u32) -> Result<(), Error> {
        let mut array = PerCpuArray::<_, Counter>::try_from(self.map_mut(SERVICE_STATS)?)
            .map_err(map_err(SERVICE_STATS, "open"))?;
        array
            .set(id, zeroed_per_cpu(SERVICE_STATS)?, 0)
            .map_err(map_err(SERVICE_STATS, "update"))
    }

    /// Zeroes backend `id`'s counters and cached next hops on every CPU, for
    /// an ID about to be given to a backend (as `clear_service_stats`). A
    /// zeroed next hop is never fresh: the first packet looks it up.
    pub fn clear_backend_stats(&mut self, id: u32) -> Result<(), Error> {
        let mut array = PerCpuArray::<_, BackendCpu>::try_from(self.map_mut(BACKEND_CPU)?)
            .map_err(map_err(BACKEND_CPU, "open"))?;
        array
            .set(id, zeroed_per_cpu(BACKEND_CPU)?, 0)
            .map_err(map_err(BACKEND_CPU, "update"))
    }

    /// The one counter of the `xdp_floor` and `xdp_sink` programs.
    pub fn floor_stats(&self) -> Result<Counter, Error> {
        self.counter_slot(FLOOR_STATS, 0)
    }
}

/// One zeroed value per possible CPU, as a per-CPU map update takes them.
fn zeroed_per_cpu<T: Pod + Default>(map: &'static str) -> Result<PerCpuValues<T>, Error> {
    let cpus = nr_cpus().map_err(|(_, e)| map_err(map, "count the CPUs")(MapError::IoError(e)))?;
    PerCpuValues::try_from(vec![T::default(); cpus])
        .map_err(|e| map_err(map, "zero")(MapError::IoError(e)))
}
