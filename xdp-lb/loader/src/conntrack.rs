//! Reading and deleting conntrack entries from user space.

use std::{net::SocketAddr, time::Duration};

use aya::maps::HashMap;
use xdp_lb_common::conntrack::{
    CT_SEEN_REPLY, CtEntry, FlowTuple, TCP_CLOSING, TCP_ESTABLISHED, TCP_SYN_SENT,
};

use crate::{
    Datapath, Error,
    maps::{CONNTRACK, CONNTRACK_REPLY, map_err},
    net::{Flow, Protocol, socket},
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
    /// When the datapath last refreshed the entry, on the `CLOCK_MONOTONIC`
    /// clock (refreshed at most once a second).
    pub last_seen: Duration,
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
        last_seen: Duration::from_nanos(entry.last_seen_ns),
    })
}

impl Datapath {
    /// Every tracked flow (a snapshot taken by iterating the map; flows that
    /// come and go meanwhile may or may not be in it).
    pub fn conntrack(&self) -> Result<Vec<TrackedFlow>, Error> {
        let map = HashMap::<_, FlowTuple, CtEntry>::try_from(self.map(CONNTRACK)?)
            .map_err(map_err(CONNTRACK, "open"))?;
        let mut flows = Vec::new();
        for item in map.iter() {
            let (key, entry) = item.map_err(map_err(CONNTRACK, "iterate"))?;
            flows.extend(tracked(&key, &entry));
        }
        Ok(flows)
    }

    /// The tracked entry of `flow`, if any.
    pub fn tracked_flow(&self, flow: &Flow) -> Result<Option<TrackedFlow>, Error> {
        let key = flow.tuple();
        let map = HashMap::<_, FlowTuple, CtEntry>::try_from(self.map(CONNTRACK)?)
            .map_err(map_err(CONNTRACK, "open"))?;
        match map.get(&key, 0) {
            Ok(entry) => Ok(tracked(&key, &entry)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(Error::Map {
                map: CONNTRACK,
                op: "lookup",
                source,
            }),
        }
    }

    /// Deletes `flow`'s entry and its reply entry. Returns whether there was one.
    pub fn delete_flow(&mut self, flow: &Flow) -> Result<bool, Error> {
        let Some(tracked) = self.tracked_flow(flow)? else {
            return Ok(false);
        };
        let key = flow.tuple();
        let reply = key.reply_from(
            crate::net::to_addr(tracked.backend.ip()),
            tracked.backend.port().to_be(),
        );
        // The flow entry first: a reply entry left alone for a moment is never
        // used without its flow entry (and is deleted on sight), while a flow
        // entry left alone would bring its reply entry back on its next refresh.
        let mut flows = HashMap::<_, FlowTuple, CtEntry>::try_from(self.map_mut(CONNTRACK)?)
            .map_err(map_err(CONNTRACK, "open"))?;
        let existed = match flows.remove(&key) {
            Ok(()) => true,
            Err(aya::maps::MapError::KeyNotFound) => false,
            Err(source) => {
                return Err(Error::Map {
                    map: CONNTRACK,
                    op: "remove",
                    source,
                });
            }
        };
        let mut replies =
            HashMap::<_, FlowTuple, FlowTuple>::try_from(self.map_mut(CONNTRACK_REPLY)?)
                .map_err(map_err(CONNTRACK_REPLY, "open"))?;
        match replies.remove(&reply) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(existed),
            Err(source) => Err(Error::Map {
                map: CONNTRACK_REPLY,
                op: "remove",
                source,
            }),
        }
    }
}
