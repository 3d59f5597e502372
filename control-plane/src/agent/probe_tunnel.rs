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
use xdp_lb::{Datapath, ProbeMarkBase};

use crate::{
    health::{ProbeTunnel, tunnel::SlotChanges},
    model::Model,
};

/// Warns when IPv4 reverse-path filtering is strict on `iface`: a backend
/// answers a probe from the VIP, which this host routes out of an uplink,
/// maybe not the one the answer arrives by, and strict filtering (RFC 3704)
/// drops such an answer (seen in the rigs), failing every probe. Only
/// read, never changed: the setting is the operator's.
fn warn_of_strict_reverse_path_filter(iface: &str) {
    let read = |conf: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"))
            .ok()
            .and_then(|value| value.trim().parse::<u8>().ok())
    };
    if let (Some(all), Some(own)) = (read("all"), read(iface))
        && is_strict(all, own)
    {
        tracing::warn!(
            iface,
            "strict reverse-path filtering (net.ipv4.conf.{{all,{iface}}}.rp_filter, the larger \
             of the two is 1): the kernel drops the backends' answers to health probes through \
             the DSR tunnel that arrive here, and their backends go down; set \
             net.ipv4.conf.{iface}.rp_filter=2 (loose)"
        );
    }
}

/// The kernel applies the larger of `net.ipv4.conf.all.rp_filter` and the
/// interface's own: 1 is strict, 2 loose, 0 off.
const fn is_strict(all: u8, own: u8) -> bool {
    let effective = if all > own { all } else { own };
    effective == 1
}

/// Probes through the tunnel: which backend each slot names, written to the
/// datapath.
#[derive(Debug)]
pub(crate) struct TunnelProbes {
    tunnel: ProbeTunnel,
}

impl TunnelProbes {
    /// Writes the mark base `base` to `datapath`, for an agent with the
    /// encapsulation sources `(v4, v6)`, and attaches `tc_probe_encap` at
    /// the egress of each of `interfaces`: before the first configuration
    /// starts any probe, which would otherwise leave unwrapped (and, one
    /// probe deciding a new backend, take it down). The `Datapath` detaches
    /// the program when it goes.
    pub(crate) fn start(
        datapath: &mut Datapath,
        base: ProbeMarkBase,
        sources: (Option<IpAddr>, Option<IpAddr>),
        interfaces: &[String],
    ) -> anyhow::Result<Self> {
        let tunnel = ProbeTunnel::new(base, sources.0.is_some(), sources.1.is_some());
        datapath
            .set_probe_mark_base(base)
            .context("writing the health probes' mark base to the datapath")?;
        for iface in interfaces {
            datapath
                .attach_probe_encap(iface)
                .with_context(|| format!("attaching tc_probe_encap to the egress of {iface}"))?;
            warn_of_strict_reverse_path_filter(iface);
        }
        // Slots an earlier agent wrote are this load's no more (the map is
        // not pinned), so there is nothing to forget.
        Ok(Self { tunnel })
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
                    mark = format_args!("{:#010x}", self.tunnel.base().get() | slot),
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

#[cfg(test)]
mod tests {
    use super::is_strict;

    #[test]
    fn reverse_path_filtering_is_strict_when_the_larger_setting_is_1() {
        assert!(is_strict(1, 0));
        assert!(is_strict(0, 1));
        assert!(is_strict(1, 1));
        assert!(!is_strict(1, 2), "loose on the interface wins");
        assert!(!is_strict(2, 1), "loose for all wins");
        assert!(!is_strict(0, 0));
    }
}
