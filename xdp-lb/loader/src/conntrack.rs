//! Reading and deleting conntrack entries from user space, and the garbage
//! collector.
//!
//! The datapath decides expiry lazily, on lookup (`xdp-lb/ebpf/src/lb/
//! conntrack.rs`): an entry is gone once `now - last_seen >= timeout(state)`,
//! `now` being `bpf_ktime_get_coarse_ns()` (`CLOCK_MONOTONIC_COARSE`) and the
//! timeouts those of `CONFIG`. The collector applies the very same rule with
//! the same clock, read once before the walk: the clock only moves forward, so
//! whatever it finds expired the datapath already treats as expired (and would
//! replace on the flow's next packet).

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use aya::maps::HashMap;
use xdp_lb_common::{
    config::{Config, NS_PER_SEC},
    conntrack::{
        CT_FIN_BACKEND, CT_FIN_CLIENT, CT_SEEN_REPLY, CtEntry, FlowTuple, TCP_CLOSING,
        TCP_ESTABLISHED, TCP_SYN_SENT,
    },
    fragment::{FragmentKey, FragmentPorts},
    service::FrontendKey,
};

use crate::{
    Datapath, Error,
    flow_table::ConntrackTables,
    maps::{FRAGMENTS, map_err},
    net::{Flow, Frontend, Protocol, socket},
};

/// A flow's state as the datapath tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowState {
    SynSent,
    Established,
    Closing,
    /// UDP: no states.
    Datagram,
}

/// One tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedFlow {
    /// The flow as the client sent it (to the frontend).
    pub flow: Flow,
    /// Where it is translated to.
    pub backend: SocketAddr,
    pub backend_id: u32,
    pub generation: u32,
    pub service_id: u32,
    pub state: FlowState,
    /// A reply has come back through the datapath.
    pub seen_reply: bool,
    /// TCP: the client has sent a FIN (or either end a RST).
    pub client_closed: bool,
    /// TCP: the backend has sent a FIN (or either end a RST). With
    /// `client_closed`, the flow no longer holds its reply tuple: a new flow
    /// whose replies would carry it takes it over.
    pub backend_closed: bool,
    /// The source the flow was given by source NAT (the backend answers
    /// it); `None` when the backend sees the client's own address and port.
    pub snat: Option<SocketAddr>,
    /// When the datapath last refreshed the entry, on the `CLOCK_MONOTONIC`
    /// clock (refreshed at most once a second).
    pub last_seen: Duration,
}

impl TrackedFlow {
    /// How long ago the datapath last refreshed the entry, on the datapath's
    /// own clock (so at most about a second more than the flow's real idle
    /// time: the refresh is throttled).
    pub fn idle(&self) -> Duration {
        Duration::from_nanos(coarse_monotonic_ns()).saturating_sub(self.last_seen)
    }
}

fn tracked(key: &FlowTuple, entry: &CtEntry) -> Option<TrackedFlow> {
    let proto = Protocol::from_number(key.proto)?;
    let state = match entry.state {
        TCP_SYN_SENT => FlowState::SynSent,
        TCP_ESTABLISHED => FlowState::Established,
        TCP_CLOSING => FlowState::Closing,
        _ => FlowState::Datagram,
    };
    Some(TrackedFlow {
        flow: Flow::new(
            socket(&key.src_addr, key.src_port_be),
            socket(&key.dst_addr, key.dst_port_be),
            proto,
        ),
        backend: socket(&entry.backend_addr, entry.backend_port_be),
        backend_id: entry.backend_id,
        generation: entry.generation,
        service_id: entry.service_id,
        state,
        seen_reply: entry.flags & CT_SEEN_REPLY != 0,
        client_closed: entry.flags & CT_FIN_CLIENT != 0,
        backend_closed: entry.flags & CT_FIN_BACKEND != 0,
        snat: entry
            .is_snat()
            .then(|| socket(&entry.reply_dst_addr, entry.reply_dst_port_be)),
        last_seen: Duration::from_nanos(entry.last_seen_ns),
    })
}

impl Datapath {
    /// Every tracked flow (a snapshot taken by reading the table; flows that
    /// come and go meanwhile may or may not be in it).
    pub fn conntrack(&self) -> Result<Vec<TrackedFlow>, Error> {
        let (slots, _) = self.ct_tables.flow_slots()?;
        Ok(slots
            .iter()
            .filter_map(|(_, slot)| tracked(&slot.key, &slot.value))
            .collect())
    }

    /// The tracked entry of `flow`, if any.
    pub fn tracked_flow(&self, flow: &Flow) -> Result<Option<TrackedFlow>, Error> {
        let key = flow.tuple();
        Ok(self
            .ct_tables
            .find_flow(&key)?
            .and_then(|(_, entry)| tracked(&key, &entry)))
    }

    /// Deletes `flow`'s entry and its reply entry. Returns whether there was one.
    pub fn delete_flow(&mut self, flow: &Flow) -> Result<bool, Error> {
        Ok(self.delete_flows(std::slice::from_ref(flow))? == 1)
    }

    /// Deletes the entries of `flows` and their reply entries, in one
    /// mapping of each table. Returns how many there were.
    pub fn delete_flows(&mut self, flows: &[Flow]) -> Result<usize, Error> {
        self.ct_tables.delete_flows(flows)
    }

    /// Forgets every fragmented datagram in flight (`FRAGMENTS`, the first
    /// fragments' ports): their later fragments then find no flow, and are
    /// dropped as `drop_fragment_untracked` when sent to a VIP. Returns how
    /// many there were. The map makes room by itself (least recently used
    /// first); this is for a caller that must know what it holds, as the
    /// fuzz test's model must over a long run.
    pub fn forget_fragments(&mut self) -> Result<usize, Error> {
        let mut map: HashMap<_, FragmentKey, FragmentPorts> =
            HashMap::try_from(self.map_mut(FRAGMENTS)?).map_err(map_err(FRAGMENTS, "open"))?;
        let keys = map
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(FRAGMENTS, "iterate"))?;
        for key in &keys {
            map.remove(key).map_err(map_err(FRAGMENTS, "delete"))?;
        }
        Ok(keys.len())
    }

    /// Deletes every flow the datapath already treats as gone (expired, or
    /// its backend retired or superseded), and the reply entry of each
    /// (`ConntrackTables::expire_flows`). Returns how many flows were deleted.
    pub fn expire_flows(&mut self) -> Result<usize, Error> {
        self.ct_tables.expire_flows()
    }

    /// Sets back to 0 the conntrack overflow hints no key needs any longer
    /// (`ConntrackTables::clear_overflow_hints`); how many.
    pub fn clear_overflow_hints(&self) -> Result<usize, Error> {
        self.ct_tables.clear_overflow_hints()
    }

    /// Deletes every flow given to backend `backend_id` (whatever its
    /// generation) and their reply entries; returns how many, at once rather
    /// than at the collector's next walk (`expire_flows`, which takes them
    /// once the record is retired). A flow given to another backend
    /// meanwhile is kept (each entry is read again right before its
    /// deletion).
    pub fn delete_flows_of_backend(&mut self, backend_id: u32) -> Result<usize, Error> {
        self.check_backend_id(backend_id)?;
        self.ct_tables
            .delete_flows_where(|_, entry| entry.backend_id == backend_id)
    }

    /// Deletes every flow sent to one of `frontends` and their reply
    /// entries; returns how many. For removed frontends, in one walk however
    /// many: on a VIP-only address the datapath looks for a tracked flow
    /// before the service (as netfilter's conntrack comes before
    /// kube-proxy's rules), so a removed frontend's flows would otherwise go
    /// on to their backend while it lives, until their timeout.
    pub fn delete_flows_to(&mut self, frontends: &[Frontend]) -> Result<usize, Error> {
        if frontends.is_empty() {
            return Ok(0);
        }
        let doomed: HashSet<FrontendKey> = frontends.iter().map(Frontend::key).collect();
        self.ct_tables
            .delete_flows_where(|tuple, _| doomed.contains(&FrontendKey::of_flow(tuple)))
    }
}

impl ConntrackTables {
    /// See [`Datapath::delete_flows`].
    fn delete_flows(&self, flows: &[Flow]) -> Result<usize, Error> {
        let table = self.flows()?;
        // The flow entries first: a reply entry left alone for a moment is
        // never used without its flow entry (and is deleted on sight), while
        // a flow entry left alone would bring its reply entry back on its
        // next refresh.
        let mut found = Vec::new();
        for flow in flows {
            let key = flow.tuple();
            if let Some((at, entry)) = table.find(&key) {
                found.push((at, key, entry));
            }
        }
        let slots: Vec<_> = found.iter().map(|&(at, key, _)| (at, key)).collect();
        let deleted = table.free(&slots);
        let entries: Vec<_> = found.into_iter().map(|(_, key, e)| (key, e)).collect();
        self.free_replies_of(&entries)?;
        Ok(deleted)
    }

    /// Frees the reply entry of each flow keyed `key` with `entry` that still
    /// names that flow: a DSR flow has none, and the tuple may be another
    /// flow's reply entry by now.
    fn free_replies_of(&self, flows: &[(FlowTuple, CtEntry)]) -> Result<(), Error> {
        if flows.is_empty() {
            return Ok(());
        }
        let table = self.replies()?;
        let mut replies = Vec::new();
        for (key, entry) in flows {
            let reply = entry.reply_key(key.proto);
            if let Some((at, held)) = table.find(&reply)
                && held.original.same_as(key)
            {
                replies.push((at, reply));
            }
        }
        table.free(&replies);
        Ok(())
    }

    /// Deletes every flow the datapath already treats as gone, and the
    /// reply entry of each. Returns how many flows were deleted.
    ///
    /// A flow is gone when it has expired, `now - last_seen >=
    /// timeout(state)` (SYN sent, established, closing, or non-TCP, from
    /// [`Config`]), on the clock the datapath uses; or when its backend is
    /// (`backend_gone`): the datapath re-selects such a flow on its next
    /// packet. So a sync that retires backends need not walk the table for
    /// their flows: this collects them. A live flow is never deleted: each
    /// candidate is read again right before its deletion and kept if a
    /// packet has refreshed or replaced it meanwhile. (The kernel has no
    /// compare-and-delete: a flow whose first packet after expiry lands
    /// between that read and the delete, a few microseconds, loses its
    /// fresh entry; its next packet makes a new one, to the same backend
    /// unless the table changed.)
    pub fn expire_flows(&self) -> Result<usize, Error> {
        let config = self.config()?;
        let now = coarse_monotonic_ns();
        let generations = self.backend_generations()?;
        self.delete_flows_where(|_, entry| {
            is_expired(entry, &config, now) || backend_gone(entry, &generations)
        })
    }

    /// Deletes the flows whose entry satisfies `doomed` when read just before
    /// the deletion, flow entry first, then its reply entry (an orphaned reply
    /// entry is never used: the datapath deletes it on sight).
    fn delete_flows_where(
        &self,
        doomed: impl Fn(&FlowTuple, &CtEntry) -> bool,
    ) -> Result<usize, Error> {
        let table = self.flows()?;
        // Read again right before: a flow may have moved on since the walk.
        let mut doomed_flows = Vec::new();
        for (at, slot) in table.used() {
            let key = slot.key;
            if !doomed(&key, &slot.value) {
                continue;
            }
            if let Some((now_at, entry)) = table.find(&key)
                && now_at == at
                && doomed(&key, &entry)
            {
                doomed_flows.push((at, key, entry));
            }
        }
        let slots: Vec<_> = doomed_flows.iter().map(|&(at, key, _)| (at, key)).collect();
        let deleted = table.free(&slots);
        // A reply entry goes only if it still points at its flow, and no new
        // entry of the same flow (a new packet since) relies on it.
        let mut orphaned = Vec::new();
        for (_, key, entry) in doomed_flows {
            let claimed = table.find(&key).is_some_and(|(_, again)| {
                !doomed(&key, &again) && again.reply_key(key.proto) == entry.reply_key(key.proto)
            });
            if !claimed {
                orphaned.push((key, entry));
            }
        }
        self.free_replies_of(&orphaned)?;
        Ok(deleted)
    }
}

/// `CLOCK_MONOTONIC_COARSE`, the clock of `bpf_ktime_get_coarse_ns()` (both
/// read the timekeeper's coarse monotonic time). Not valid in a time namespace
/// with a monotonic offset, which would shift only this side.
pub(crate) fn coarse_monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    // A supported clock and a valid pointer cannot fail (Linux >= 2.6.32).
    debug_assert_eq!(ret, 0);
    (now.tv_sec as u64) * NS_PER_SEC + now.tv_nsec as u64
}

/// An entry whose backend the datapath no longer sends it to, by the
/// records as read before the walk (`generations`: each ID's generation and
/// whether it is active, from `ConntrackTables::backend_generations`): an
/// ID beyond the map, a record of a newer generation (the ID was given to
/// another backend since), or the entry's own generation retired. A
/// generation only grows, so a record read before the entry was written
/// never condemns it: its generation is then older than the entry's, and
/// the entry waits for the next walk.
fn backend_gone(entry: &CtEntry, generations: &[(u32, bool)]) -> bool {
    match generations.get(entry.backend_id as usize) {
        None => true,
        Some(&(generation, active)) => {
            generation > entry.generation || (generation == entry.generation && !active)
        }
    }
}

/// The datapath's expiry rule: `>=`, so a timeout of 0 s has always expired.
fn is_expired(entry: &CtEntry, config: &Config, now_ns: u64) -> bool {
    now_ns.saturating_sub(entry.last_seen_ns) >= config.timeout_ns(entry.state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: u8, last_seen_ns: u64) -> CtEntry {
        CtEntry {
            state,
            last_seen_ns,
            ..CtEntry::default()
        }
    }

    #[test]
    fn a_backend_is_gone_when_retired_or_superseded_and_never_by_an_older_read() {
        let flow = |backend_id, generation| CtEntry {
            backend_id,
            generation,
            ..CtEntry::default()
        };
        // ID 1: generation 3, active; ID 2: generation 3, retired.
        let records = [(0, false), (3, true), (3, false)];
        assert!(!backend_gone(&flow(1, 3), &records), "live");
        assert!(
            backend_gone(&flow(1, 2), &records),
            "the ID went to another backend"
        );
        assert!(backend_gone(&flow(2, 3), &records), "retired");
        assert!(backend_gone(&flow(2, 2), &records), "retired, and older");
        // Records read before the entry's backend was written: kept.
        assert!(!backend_gone(&flow(1, 4), &records));
        assert!(!backend_gone(&flow(2, 4), &records));
        assert!(!backend_gone(&flow(0, 1), &records), "never written then");
        assert!(backend_gone(&flow(3, 1), &records), "beyond the map");
    }

    #[test]
    fn expiry_follows_the_datapath_rule_per_state() {
        let config = Config {
            tcp_syn_timeout_s: 1,
            tcp_established_timeout_s: 2,
            tcp_closing_timeout_s: 3,
            udp_timeout_s: 4,
            ..Config::default()
        };
        let t0 = 100 * NS_PER_SEC;
        for (state, timeout) in [
            (TCP_SYN_SENT, 1),
            (TCP_ESTABLISHED, 2),
            (TCP_CLOSING, 3),
            (xdp_lb_common::conntrack::NOT_TCP, 4),
            // Masked to two bits, as the datapath does: 5 & 3 = SYN sent.
            (5, 1),
        ] {
            let deadline = t0 + timeout * NS_PER_SEC;
            assert!(
                !is_expired(&entry(state, t0), &config, deadline - 1),
                "{state}"
            );
            assert!(is_expired(&entry(state, t0), &config, deadline), "{state}");
        }
        // A clock behind the entry (an entry refreshed after the walk began).
        assert!(!is_expired(&entry(TCP_SYN_SENT, t0), &config, t0 - 5));
        let zero = Config {
            udp_timeout_s: 0,
            ..config
        };
        assert!(
            is_expired(&entry(0, t0), &zero, t0),
            "0 s has always expired"
        );
    }
}
