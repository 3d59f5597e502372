//! The interfaces `xdp_lb` runs on also get `tc_lb_egress` at their egress,
//! for the replies this host's own sockets send as a backend (a hostNetwork
//! pod, or any process the node runs behind a service): `xdp_lb` hands a
//! request translated to one of the node's own addresses to the kernel, and
//! the answer leaves through the stack, which no XDP program sees. The
//! egress program translates it back, as it does for replies entering a pod.
//!
//! Everything else the node sends passes it untouched: the program only
//! translates packets whose source and destination are the reply tuple of a
//! tracked flow. Frames `xdp_lb` sends on itself never meet it.
//!
//! Pinned links ([`Datapath::attach_uplink_egress_pinned`]) live under a
//! directory of their own: `<link_dir>/<iface>`.

use std::path::Path;

use aya::programs::{TcAttachType, tc::SchedClassifierLinkId};
use tracing::debug;

use crate::{
    Datapath, Error, ProgramName,
    links::{link_path, unpin},
    pods::classifier_mut,
};

/// `tc_lb_egress` at the egress of an uplink, held by the [`Datapath`]:
/// detached with [`Datapath::detach_uplink_egress`] or when the `Datapath`
/// is dropped.
#[derive(Debug)]
pub struct UplinkAttachment {
    iface: String,
    link: SchedClassifierLinkId,
}

impl UplinkAttachment {
    /// The interface.
    pub fn iface(&self) -> &str {
        &self.iface
    }
}

impl Datapath {
    /// Attaches `tc_lb_egress` at the egress of `iface` (an interface
    /// `xdp_lb` runs on, in the calling thread's network namespace), after
    /// any other tcx program there.
    pub fn attach_uplink_egress(&mut self, iface: &str) -> Result<UplinkAttachment, Error> {
        let link = self.attach_tc(ProgramName::TcLbEgress, iface, TcAttachType::Egress)?;
        debug!(iface, "tc_lb_egress attached to an uplink");
        Ok(UplinkAttachment {
            iface: iface.to_owned(),
            link,
        })
    }

    /// Detaches what [`Datapath::attach_uplink_egress`] attached.
    pub fn detach_uplink_egress(&mut self, attachment: UplinkAttachment) -> Result<(), Error> {
        let program = ProgramName::TcLbEgress;
        classifier_mut(&mut self.ebpf, program)?
            .detach(attachment.link)
            .map_err(|source| Error::Attach {
                program: program.as_str(),
                iface: attachment.iface,
                source,
            })
    }

    /// Attaches `tc_lb_egress` at the egress of `iface` through a link
    /// pinned under `link_dir`, so that it stays attached after this
    /// process; a link an earlier agent pinned there for the same interface
    /// gets this `Datapath`'s program, atomically.
    pub fn attach_uplink_egress_pinned(
        &mut self,
        iface: &str,
        link_dir: &Path,
    ) -> Result<(), Error> {
        self.attach_tc_pinned(
            ProgramName::TcLbEgress,
            iface,
            TcAttachType::Egress,
            link_dir,
        )
    }

    /// The interfaces with an uplink egress link pinned under `link_dir`.
    /// None when the directory does not exist.
    pub fn pinned_uplink_egresses(link_dir: &Path) -> Vec<String> {
        std::fs::read_dir(link_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes the pin of `iface`'s uplink egress link under `link_dir` (the
    /// kernel detaches it once nothing else holds it). Returns whether there
    /// was one.
    pub fn detach_uplink_egress_pinned(iface: &str, link_dir: &Path) -> Result<bool, Error> {
        unpin(&link_path(link_dir, iface)?)
    }
}
