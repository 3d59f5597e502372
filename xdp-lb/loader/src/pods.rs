//! Pod interfaces: `tc_lb_ingress` and `tc_lb_egress` on the host side of
//! pod veths, through tcx links (kernel ≥ 6.6), on the same maps as
//! `xdp_lb`.
//!
//! Each attached interface is also recorded in `POD_INTERFACES`, so that
//! `xdp_lb` hands the frames it would redirect to a pod to the kernel
//! instead: an XDP redirect into a veth is delivered only when the peer runs
//! an XDP program, and pods run none.
//!
//! Pinned links ([`Datapath::attach_pod_interface_pinned`]) live under a
//! directory of their own: `<pod_link_dir>/ingress/<iface>` and
//! `<pod_link_dir>/egress/<iface>`.

use std::{os::fd::AsFd as _, path::Path};

use aya::{
    Ebpf,
    maps::HashMap,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::FdLink,
        tc::{SchedClassifierLinkId, TcAttachOptions},
    },
};
use tracing::debug;

use crate::{
    Datapath, Error, ProgramName,
    datapath::{typed, typed_mut},
    links::{Pinned, ifindex, link_path, pin_link, pinned_of_type, unpin},
    maps::{POD_INTERFACES, absent, map_err},
    sys::{self, BPF_LINK_TYPE_TCX},
};

/// The two TC programs attached to one pod interface, held by the
/// [`Datapath`]: detached with [`Datapath::detach_pod_interface`] or when the
/// `Datapath` is dropped.
#[derive(Debug)]
pub struct PodAttachment {
    iface: String,
    ifindex: u32,
    ingress: SchedClassifierLinkId,
    egress: SchedClassifierLinkId,
}

impl PodAttachment {
    /// The interface (the host side of a pod veth).
    pub fn iface(&self) -> &str {
        &self.iface
    }
}

/// The hooks of a pod interface, each with its program.
const HOOKS: [(ProgramName, TcAttachType, &str); 2] = [
    (ProgramName::TcLbIngress, TcAttachType::Ingress, "ingress"),
    (ProgramName::TcLbEgress, TcAttachType::Egress, "egress"),
];

impl Datapath {
    /// Attaches `tc_lb_ingress` and `tc_lb_egress` to `iface`, the host side
    /// of a pod veth in the calling thread's network namespace, after any
    /// other tcx program there.
    pub fn attach_pod_interface(&mut self, iface: &str) -> Result<PodAttachment, Error> {
        let ifindex = ifindex(iface)?;
        self.mark_pod_interface(ifindex, true)?;
        let ingress = self.attach_tc(ProgramName::TcLbIngress, iface, TcAttachType::Ingress)?;
        let egress = match self.attach_tc(ProgramName::TcLbEgress, iface, TcAttachType::Egress) {
            Ok(link) => link,
            Err(err) => {
                let _ = classifier_mut(&mut self.ebpf, ProgramName::TcLbIngress)?.detach(ingress);
                return Err(err);
            }
        };
        debug!(iface, "TC programs attached");
        Ok(PodAttachment {
            iface: iface.to_owned(),
            ifindex,
            ingress,
            egress,
        })
    }

    /// Detaches both programs and forgets the interface.
    pub fn detach_pod_interface(&mut self, attachment: PodAttachment) -> Result<(), Error> {
        let PodAttachment {
            iface,
            ifindex,
            ingress,
            egress,
        } = attachment;
        for (program, link) in [
            (ProgramName::TcLbIngress, ingress),
            (ProgramName::TcLbEgress, egress),
        ] {
            self.detach_tc(program, &iface, link)?;
        }
        self.mark_pod_interface(ifindex, false)
    }

    /// Attaches both programs to `iface` through bpf_links pinned under
    /// `pod_link_dir`, so that they stay attached after this process. Links
    /// an earlier agent pinned for the same interface get this `Datapath`'s
    /// programs with `BPF_LINK_UPDATE`, atomically, as
    /// [`Datapath::attach_pinned`] does for XDP.
    pub fn attach_pod_interface_pinned(
        &mut self,
        iface: &str,
        pod_link_dir: &Path,
    ) -> Result<(), Error> {
        let ifindex = ifindex(iface)?;
        self.mark_pod_interface(ifindex, true)?;
        for (program, hook, dir) in HOOKS {
            self.attach_tc_pinned(program, iface, hook, &pod_link_dir.join(dir))?;
        }
        Ok(())
    }

    /// Attaches `program` at `hook` of `iface` through a tcx link pinned
    /// under `dir`, or, when a link an earlier agent pinned there for the
    /// same interface is still attached, gives that link `program` with
    /// `BPF_LINK_UPDATE` (atomically, as [`Datapath::attach_pinned`] does
    /// for XDP).
    pub(crate) fn attach_tc_pinned(
        &mut self,
        program: ProgramName,
        iface: &str,
        hook: TcAttachType,
        dir: &Path,
    ) -> Result<(), Error> {
        let ifindex = ifindex(iface)?;
        let path = link_path(dir, iface)?;
        let wrong = "the pinned link is not a tcx link";
        if let Pinned::Link(link, info) = pinned_of_type(&path, BPF_LINK_TYPE_TCX, wrong)?
            && info.ifindex == ifindex
        {
            let prog = classifier(&self.ebpf, program)?
                .fd()
                .map_err(|source| attach_err(program, iface, source))?;
            sys::link_update(link.as_fd(), prog.as_fd()).map_err(|source| Error::PinnedLink {
                path: path.clone(),
                op: "replace the program",
                source,
            })?;
            debug!(iface, program = program.as_str(), "pinned program replaced");
            return Ok(());
        }
        // Nothing usable there: a defunct link (its interface gone), or
        // one of an interface that took this name before.
        unpin(&path)?;
        std::fs::create_dir_all(dir).map_err(|source| Error::PinDir {
            path: dir.to_owned(),
            source,
        })?;
        let id = self.attach_tc(program, iface, hook)?;
        let link = classifier_mut(&mut self.ebpf, program)?
            .take_link(id)
            .map_err(|source| attach_err(program, iface, source))?;
        let link = FdLink::try_from(link).map_err(|_| Error::LinkUnsupported {
            iface: iface.to_owned(),
        })?;
        let info = pin_link(link, &path)?;
        debug!(
            iface,
            program = program.as_str(),
            link = info.id,
            "attached and pinned"
        );
        Ok(())
    }

    /// The interfaces with pod links pinned under `pod_link_dir` (by an
    /// earlier agent, or this one): those [`Self::attach_pod_interface_pinned`]
    /// pinned, by the ingress pin every attachment has. None when the
    /// directory does not exist.
    pub fn pinned_pod_interfaces(pod_link_dir: &Path) -> Vec<String> {
        let (.., ingress) = HOOKS[0];
        std::fs::read_dir(pod_link_dir.join(ingress))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes the pins of `iface`'s links under `pod_link_dir` (the kernel
    /// detaches them once nothing else holds them) and forgets the interface
    /// if it still exists. Returns whether there was a pin.
    pub fn detach_pod_interface_pinned(
        &mut self,
        iface: &str,
        pod_link_dir: &Path,
    ) -> Result<bool, Error> {
        let mut found = false;
        for (.., dir) in HOOKS {
            found |= unpin(&link_path(&pod_link_dir.join(dir), iface)?)?;
        }
        if let Ok(ifindex) = ifindex(iface) {
            self.mark_pod_interface(ifindex, false)?;
        }
        Ok(found)
    }

    pub(crate) fn attach_tc(
        &mut self,
        program: ProgramName,
        iface: &str,
        hook: TcAttachType,
    ) -> Result<SchedClassifierLinkId, Error> {
        self.attach_tc_at(program, iface, hook, LinkOrder::default())
    }

    /// [`Datapath::attach_tc`] at `order` among the tcx programs there.
    pub(crate) fn attach_tc_at(
        &mut self,
        program: ProgramName,
        iface: &str,
        hook: TcAttachType,
        order: LinkOrder,
    ) -> Result<SchedClassifierLinkId, Error> {
        classifier_mut(&mut self.ebpf, program)?
            .attach_with_options(iface, hook, TcAttachOptions::TcxOrder(order))
            .map_err(|source| attach_err(program, iface, source))
    }

    /// Detaches `program`'s `link` from `iface` (named in the error).
    pub(crate) fn detach_tc(
        &mut self,
        program: ProgramName,
        iface: &str,
        link: SchedClassifierLinkId,
    ) -> Result<(), Error> {
        classifier_mut(&mut self.ebpf, program)?
            .detach(link)
            .map_err(|source| Error::Attach {
                program: program.as_str(),
                iface: iface.to_owned(),
                source,
            })
    }

    /// Adds `ifindex` to `POD_INTERFACES`, or removes it.
    fn mark_pod_interface(&mut self, ifindex: u32, pod: bool) -> Result<(), Error> {
        let mut map = HashMap::<_, u32, u32>::try_from(self.map_mut(POD_INTERFACES)?)
            .map_err(map_err(POD_INTERFACES, "open"))?;
        if pod {
            map.insert(ifindex, 1, 0)
                .map_err(map_err(POD_INTERFACES, "insert"))
        } else {
            absent(map.remove(&ifindex), POD_INTERFACES, "remove").map(drop)
        }
    }
}

pub(crate) fn attach_err(
    program: ProgramName,
    iface: &str,
    source: aya::programs::ProgramError,
) -> Error {
    match source {
        aya::programs::ProgramError::UnknownInterface { .. } => Error::UnknownInterface {
            iface: iface.to_owned(),
        },
        source => Error::Attach {
            program: program.as_str(),
            iface: iface.to_owned(),
            source,
        },
    }
}

pub(crate) fn classifier(ebpf: &Ebpf, name: ProgramName) -> Result<&SchedClassifier, Error> {
    typed(ebpf, name)
}

pub(crate) fn classifier_mut(
    ebpf: &mut Ebpf,
    name: ProgramName,
) -> Result<&mut SchedClassifier, Error> {
    typed_mut(ebpf, name)
}
