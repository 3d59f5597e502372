//! The agent's side of health probes through the DSR tunnel
//! ([`crate::health::tunnel`]): `tc_probe_encap` at the egress of every
//! interface, its mark base, and the backend of every probe slot in the
//! datapath, following the model.
//!
//! The program runs before `tc_lb_uplink` there, which would otherwise
//! balance a probe to the VIP as any packet of this host to a service. It is
//! not pinned: probes run only while the agent does, and a stopped agent's
//! links go with it.

use std::net::IpAddr;

use anyhow::Context as _;
use xdp_lb::{Datapath, ProbeEncapAttachment};

use crate::{
    health::{ProbeTunnel, tunnel::SlotChanges},
    model::Model,
};

/// Probes through the tunnel: which backend each slot names, written to the
/// datapath, and the program's attachments.
#[derive(Debug)]
pub(crate) struct TunnelProbes {
    tunnel: ProbeTunnel,
    /// Held so that they stay attached; the `Datapath` detaches them when
    /// it goes.
    attachments: Vec<ProbeEncapAttachment>,
}

impl TunnelProbes {
    /// Writes the mark base `base` to `datapath`, for an agent with the
    /// encapsulation sources `(v4, v6)`.
    pub(crate) fn start(
        datapath: &mut Datapath,
        base: u32,
        sources: (Option<IpAddr>, Option<IpAddr>),
    ) -> anyhow::Result<Self> {
        let tunnel = ProbeTunnel::new(base, sources.0.is_some(), sources.1.is_some())?;
        datapath
            .set_probe_mark_base(base)
            .context("writing the health probes' mark base to the datapath")?;
        // Slots an earlier agent wrote are this load's no more (the map is
        // not pinned), so there is nothing to forget.
        Ok(Self {
            tunnel,
            attachments: Vec::new(),
        })
    }

    /// Attaches `tc_probe_encap` at the egress of `iface`.
    pub(crate) fn attach(&mut self, datapath: &mut Datapath, iface: &str) -> anyhow::Result<()> {
        let attachment = datapath
            .attach_probe_encap(iface)
            .with_context(|| format!("attaching tc_probe_encap to the egress of {iface}"))?;
        self.attachments.push(attachment);
        Ok(())
    }

    /// The tunnel, for [`crate::health::targets`].
    pub(crate) const fn tunnel(&self) -> &ProbeTunnel {
        &self.tunnel
    }

    /// Gives the backends of `model` probed through the tunnel their slots
    /// and writes the new ones to `datapath`, before their probes start;
    /// returns the slots freed, for [`Self::forget`] once their probes have
    /// stopped. A slot that cannot be written is logged: its probes are
    /// dropped (`drop_unknown_mark`), so its backend shows down, not up.
    pub(crate) fn follow(&mut self, model: &Model, datapath: &mut Datapath) -> Vec<u32> {
        let SlotChanges { added, removed } = self.tunnel.assign(model);
        for (slot, backend) in added {
            if let Err(error) = datapath.set_probe_backend(slot, backend) {
                tracing::error!(
                    %backend,
                    mark = format_args!("{:#010x}", self.tunnel.base() | slot),
                    error = %crate::error_text::one_line(&error),
                    "could not write a health probe's mark to the datapath: its probes fail"
                );
            }
        }
        removed
    }

    /// Removes the slots [`Self::follow`] freed.
    pub(crate) fn forget(removed: &[u32], datapath: &mut Datapath) {
        for &slot in removed {
            if let Err(error) = datapath.remove_probe_backend(slot) {
                tracing::warn!(
                    slot,
                    error = %crate::error_text::one_line(&error),
                    "could not remove a health probe's slot from the datapath"
                );
            }
        }
    }
}
