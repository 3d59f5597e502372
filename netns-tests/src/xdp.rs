//! Attaching the datapath's XDP programs inside a rig namespace.
use xdp_lb::{AttachMode, Attachment, Datapath, ProgramName};

use crate::{Error, Netns, Result, VethEnd, names};

impl Netns {
    /// Attaches `program` of `datapath` to interface `dev` of this namespace
    /// (for instance an `xdp_pass` on the peer of a veth that another program
    /// redirects into, which this kernel needs to deliver the frames).
    ///
    /// The attachment lives as long as `datapath` (or until the interface
    /// goes away with the rig).
    pub fn attach_xdp(
        &self,
        dev: &str,
        datapath: &mut Datapath,
        program: ProgramName,
        mode: AttachMode,
    ) -> Result<Attachment> {
        names::check_ifname(dev)?;
        self.run(|| datapath.attach(program, dev, mode))?
            .map_err(|source| Error::Xdp {
                netns: self.name().to_owned(),
                iface: dev.to_owned(),
                source: Box::new(source),
            })
    }
}

impl VethEnd {
    /// Attaches `program` to this veth end; see [`Netns::attach_xdp`].
    pub fn attach_xdp(
        &self,
        datapath: &mut Datapath,
        program: ProgramName,
        mode: AttachMode,
    ) -> Result<Attachment> {
        self.netns.attach_xdp(&self.dev, datapath, program, mode)
    }
}

/// Puts an LB namespace's `xdp_lb` on each of `sides` (the LB's own
/// interfaces) and `xdp_pass` on their far ends, which this kernel needs
/// there to deliver what `xdp_lb` redirects into the veth. The far ends
/// first, so no redirect ever meets a veth without its receiver. Native mode.
pub fn attach_lb(
    datapath: &mut Datapath,
    sides: &[&crate::topology::Endpoint],
) -> Result<Vec<Attachment>> {
    let mut attachments = Vec::with_capacity(2 * sides.len());
    for side in sides {
        attachments.push(side.peer.attach_xdp(
            datapath,
            ProgramName::XdpPass,
            AttachMode::Native,
        )?);
    }
    for side in sides {
        attachments.push(side.netns.attach_xdp(
            &side.dev,
            datapath,
            ProgramName::XdpLb,
            AttachMode::Native,
        )?);
    }
    Ok(attachments)
}
