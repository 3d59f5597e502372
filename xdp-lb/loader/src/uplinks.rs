//! What the node itself sends: `tc_lb_uplink` at the egress of the
//! interfaces `xdp_lb` runs on.
//! - Its requests to a service (a hostNetwork pod's, any process's) are
//!   balanced as a pod's are, and its replies from the backend come back
//!   through `xdp_lb` (a remote backend) or a pod interface (a local pod).
//! - Its replies as a backend (a hostNetwork pod's endpoint is a node
//!   address) are translated back: `xdp_lb` hands the translated request to
//!   the node's stack, and the answer leaves through the stack, which no XDP
//!   program sees.
//!
//! A translated packet whose new destination is the node itself goes back in
//! through the uplink, into the node's stack. Everything else the node sends
//! passes untouched; packets forwarded through the node (a pod's, a frame
//! `xdp_lb` handed to the kernel) pass without a look, and frames `xdp_lb`
//! sends on itself never meet it.
//!
//! Pinned links ([`Datapath::attach_uplink_egress_pinned`]) live under a
//! directory of their own: `<link_dir>/<iface>`.

use std::path::Path;

use aya::programs::{TcAttachType, tc::SchedClassifierLinkId};
use tracing::debug;

use crate::{
    Datapath, Error, ProgramName,
    links::{link_path, unpin},
};

/// `tc_lb_uplink` at the egress of an uplink, held by the [`Datapath`]:
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
    /// Attaches `tc_lb_uplink` at the egress of `iface` (an interface
    /// `xdp_lb` runs on, in the calling thread's network namespace), after
    /// any other tcx program there.
    pub fn attach_uplink_egress(&mut self, iface: &str) -> Result<UplinkAttachment, Error> {
        let link = self.attach_tc(ProgramName::TcLbUplink, iface, TcAttachType::Egress)?;
        debug!(iface, "tc_lb_uplink attached");
        Ok(UplinkAttachment {
            iface: iface.to_owned(),
            link,
        })
    }

    /// Detaches what [`Datapath::attach_uplink_egress`] attached.
    pub fn detach_uplink_egress(&mut self, attachment: UplinkAttachment) -> Result<(), Error> {
        self.detach_tc(ProgramName::TcLbUplink, &attachment.iface, attachment.link)
    }

    /// Attaches `tc_lb_uplink` at the egress of `iface` through a link
    /// pinned under `link_dir`, so that it stays attached after this
    /// process; a link an earlier agent pinned there for the same interface
    /// gets this `Datapath`'s program, atomically.
    pub fn attach_uplink_egress_pinned(
        &mut self,
        iface: &str,
        link_dir: &Path,
    ) -> Result<(), Error> {
        self.attach_tc_pinned(
            ProgramName::TcLbUplink,
            iface,
            TcAttachType::Egress,
            link_dir,
        )
    }

    /// The interfaces with an uplink egress link pinned under `link_dir`.
    /// None when the directory does not exist.
    pub fn pinned_uplink_egresses(link_dir: &Path) -> Vec<String> {
        crate::links::pin_names(link_dir)
    }

    /// Removes the pin of `iface`'s uplink egress link under `link_dir` (the
    /// kernel detaches it once nothing else holds it). Returns whether there
    /// was one.
    pub fn detach_uplink_egress_pinned(iface: &str, link_dir: &Path) -> Result<bool, Error> {
        unpin(&link_path(link_dir, iface)?)
    }
}
