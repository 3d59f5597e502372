//! Health probes of direct-server-return backends through the tunnel
//! (`xdp_lb_common::probe`): `tc_probe_encap` at the egress of the uplinks,
//! the probe mark base it answers to, the backend each probe slot names,
//! and its counters ([`Datapath::probe_stats`]).
//!
//! Nothing of it is pinned: probes run only while an agent does, so the
//! attachment is held by the [`Datapath`] (dropped with it), and the maps are
//! this load's own.

use std::{fmt, net::IpAddr};

use aya::{
    maps::{Array, HashMap},
    programs::{LinkOrder, TcAttachType, tc::SchedClassifierLinkId},
};
use tracing::debug;
use xdp_lb_common::{
    probe::{
        DEFAULT_PROBE_MARK_BASE, PROBE_SLOT_MASK, PROBE_SLOTS, ProbeBackend, is_probe_mark_base,
    },
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

/// A probe mark base: not 0, with its low 16 bits (a probe's slot) clear
/// ([`xdp_lb_common::probe`]). Checked once, where the number is read (the
/// agent's `--health-probe-mark`); whatever holds one can use it as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeMarkBase(u32);

impl ProbeMarkBase {
    /// The agent's default: `0x584c0000`.
    pub const DEFAULT: Self = Self(DEFAULT_PROBE_MARK_BASE);

    /// `base`, if it can be a probe mark base.
    pub const fn new(base: u32) -> Result<Self, InvalidProbeMarkBase> {
        if is_probe_mark_base(base) {
            Ok(Self(base))
        } else {
            Err(InvalidProbeMarkBase { base })
        }
    }

    /// The base, as `tc_probe_encap` reads it.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ProbeMarkBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A number that cannot be a probe mark base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{base:#010x} is not a probe mark base: its low 16 bits carry a backend's slot and must be 0, \
     and the base must not be 0 (e.g. {:#010x})",
    self.suggestion()
)]
pub struct InvalidProbeMarkBase {
    base: u32,
}

impl InvalidProbeMarkBase {
    /// The base nearest to the one given: its high 16 bits, or the default
    /// when they are 0.
    pub const fn suggestion(&self) -> u32 {
        match self.base & !PROBE_SLOT_MASK {
            0 => DEFAULT_PROBE_MARK_BASE,
            high => high,
        }
    }
}

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
    /// bits of every probe's mark ([`xdp_lb_common::probe`]). Until it is
    /// set, the program leaves every packet alone.
    pub fn set_probe_mark_base(&mut self, base: ProbeMarkBase) -> Result<(), Error> {
        Array::<_, u32>::try_from(self.map_mut(PROBE_MARK_BASE)?)
            .map_err(map_err(PROBE_MARK_BASE, "open"))?
            .set(0, base.get(), 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_base_keeps_its_low_16_bits_for_the_slot() {
        assert_eq!(
            ProbeMarkBase::new(0x0001_0000).map(ProbeMarkBase::get),
            Ok(0x0001_0000)
        );
        assert_eq!(ProbeMarkBase::DEFAULT.to_string(), "0x584c0000");
        let error = ProbeMarkBase::new(0x584c_0001).unwrap_err();
        assert_eq!(
            error.to_string(),
            "0x584c0001 is not a probe mark base: its low 16 bits carry a backend's slot and must \
             be 0, and the base must not be 0 (e.g. 0x584c0000)"
        );
        assert_eq!(
            ProbeMarkBase::new(0).unwrap_err().suggestion(),
            DEFAULT_PROBE_MARK_BASE
        );
        assert_eq!(
            ProbeMarkBase::new(0xffff).unwrap_err().suggestion(),
            DEFAULT_PROBE_MARK_BASE
        );
        assert_eq!(
            ProbeMarkBase::new(0x1_ffff).unwrap_err().suggestion(),
            0x1_0000
        );
    }
}
