//! Health probes of direct-server-return backends through the tunnel
//! (`xdp_lb_common::probe`): `tc_probe_encap` at the egress of the uplinks,
//! the probe mark base it answers to, the backend each probe slot names,
//! and its counters ([`Datapath::probe_stats`]).
//!
//! Nothing of it is pinned: probes run only while an agent does, so the
//! attachment is held by the [`Datapath`] (dropped with it), and the maps are
//! this load's own.

use std::net::IpAddr;

use aya::{
    maps::{Array, HashMap},
    programs::{LinkOrder, TcAttachType, tc::SchedClassifierLinkId},
};
use tracing::debug;
use xdp_lb_common::{
    probe::{PROBE_SLOTS, ProbeBackend, is_probe_mark_base},
    stats::ProbeVerdict,
};

use crate::{
    Datapath, Error, ProgramName,
    maps::{PROBE_BACKENDS, PROBE_MARK_BASE, absent, map_err},
    net::to_addr,
    stats::Counters,
};

/// The counters of `tc_probe_encap`.
pub type ProbeStats = Counters<ProbeVerdict>;

/// `tc_probe_encap` at the egress of one interface, held by the
/// [`Datapath`]: detached with [`Datapath::detach_probe_encap`] or when the
/// `Datapath` is dropped.
#[derive(Debug)]
pub struct ProbeEncapAttachment {
    iface: String,
    link: SchedClassifierLinkId,
}

impl ProbeEncapAttachment {
    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }
}

impl Datapath {
    /// Attaches `tc_probe_encap` at the egress of `iface` (in the calling
    /// thread's network namespace), before every other tcx program there:
    /// `tc_lb_uplink` would otherwise balance a probe to a VIP as any packet
    /// of the node to a service.
    pub fn attach_probe_encap(&mut self, iface: &str) -> Result<ProbeEncapAttachment, Error> {
        let link = self.attach_tc_at(
            ProgramName::TcProbeEncap,
            iface,
            TcAttachType::Egress,
            LinkOrder::first(),
        )?;
        debug!(iface, "tc_probe_encap attached");
        Ok(ProbeEncapAttachment {
            iface: iface.to_owned(),
            link,
        })
    }

    /// Detaches what [`Datapath::attach_probe_encap`] attached.
    pub fn detach_probe_encap(&mut self, attachment: ProbeEncapAttachment) -> Result<(), Error> {
        self.detach_tc(
            ProgramName::TcProbeEncap,
            &attachment.iface,
            attachment.link,
        )
    }

    /// Sets the probe mark base `tc_probe_encap` answers to: the high 16
    /// bits of every probe's mark, its low 16 bits clear
    /// ([`xdp_lb_common::probe`]). 0 turns the program off.
    pub fn set_probe_mark_base(&mut self, base: u32) -> Result<(), Error> {
        if base != 0 && !is_probe_mark_base(base) {
            return Err(Error::InvalidProbeMarkBase { base });
        }
        Array::<_, u32>::try_from(self.map_mut(PROBE_MARK_BASE)?)
            .map_err(map_err(PROBE_MARK_BASE, "open"))?
            .set(0, base, 0)
            .map_err(map_err(PROBE_MARK_BASE, "write"))
    }

    /// Has packets marked with probe slot `slot` wrapped for `backend`.
    pub fn set_probe_backend(&mut self, slot: u32, backend: IpAddr) -> Result<(), Error> {
        if slot >= PROBE_SLOTS {
            return Err(Error::ProbeSlotOutOfRange {
                slot,
                limit: PROBE_SLOTS,
            });
        }
        HashMap::<_, u32, ProbeBackend>::try_from(self.map_mut(PROBE_BACKENDS)?)
            .map_err(map_err(PROBE_BACKENDS, "open"))?
            .insert(
                slot,
                ProbeBackend {
                    addr: to_addr(backend),
                },
                0,
            )
            .map_err(map_err(PROBE_BACKENDS, "insert"))
    }

    /// Forgets probe slot `slot`: packets marked with it are dropped as
    /// `drop_unknown_mark`. Returns whether it named a backend.
    pub fn remove_probe_backend(&mut self, slot: u32) -> Result<bool, Error> {
        let mut map = HashMap::<_, u32, ProbeBackend>::try_from(self.map_mut(PROBE_BACKENDS)?)
            .map_err(map_err(PROBE_BACKENDS, "open"))?;
        absent(map.remove(&slot), PROBE_BACKENDS, "remove")
    }
}
