//! Pinned XDP links: attachments that outlive the agent, and atomic program
//! replacement for restarts and upgrades.
//!
//! A bpf_link holds the program on the interface for as long as something
//! holds the link: a pin on a bpffs does, so neither dropping the `Datapath`
//! nor the process ending detaches it. A restarted (or upgraded) agent loads
//! its programs against the same pinned maps and swaps its program into the
//! pinned link with `BPF_LINK_UPDATE`: the interface never runs without a
//! program, and the new program finds every service, table and flow.
//!
//! The pin of interface `eth0` is `<link_dir>/eth0`. Interface names resolve in
//! the calling thread's network namespace, while the pin lives on a bpffs:
//! give each network namespace its own `link_dir`.

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    path::{Path, PathBuf},
};

use aya::programs::{XdpMode, links::FdLink};
use tracing::{debug, warn};

use crate::{
    AttachMode, Datapath, Error, ProgramName,
    sys::{self, BPF_LINK_TYPE_XDP, LinkInfo},
};

/// A program attached to an interface through a pinned bpf_link. Plain data:
/// the link stays attached while its pin exists, whoever holds this value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedAttachment {
    program: ProgramName,
    iface: String,
    path: PathBuf,
    link: PinnedLinkInfo,
    replaced: bool,
    /// For a new link: whether it runs in native (driver) mode.
    native: Option<bool>,
}

impl PinnedAttachment {
    /// The attached program.
    pub const fn program(&self) -> ProgramName {
        self.program
    }

    /// The interface it is attached to.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The link's pin.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The link as the kernel reported it right after the attachment.
    pub const fn link(&self) -> PinnedLinkInfo {
        self.link
    }

    /// True when an existing pinned link was taken over (its program
    /// replaced), false when a new link was made and pinned.
    pub const fn replaced(&self) -> bool {
        self.replaced
    }

    /// For a new link, whether it was attached in native (driver) mode
    /// rather than generic; `None` for a taken-over link, which keeps the
    /// mode it was made in.
    pub const fn native(&self) -> Option<bool> {
        self.native
    }
}

/// What the kernel reports about a pinned XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinnedLinkInfo {
    /// The link's ID: stays the same when its program is replaced.
    pub link_id: u32,
    /// The ID of the program the link runs (see [`Datapath::program_id`]).
    pub program_id: u32,
    /// The interface the link is attached to; 0 once that interface is gone
    /// (the link is then defunct, and taken over by a fresh link).
    pub ifindex: u32,
}

impl From<LinkInfo> for PinnedLinkInfo {
    fn from(info: LinkInfo) -> Self {
        Self {
            link_id: info.id,
            program_id: info.prog_id,
            ifindex: info.ifindex,
        }
    }
}

/// What is pinned at a link path.
pub(crate) enum Pinned {
    Nothing,
    /// An XDP link on an interface that no longer exists.
    Defunct,
    Link(std::os::fd::OwnedFd, LinkInfo),
}

impl Datapath {
    /// Attaches `program` to `iface` through a bpf_link pinned at
    /// `link_dir/<iface>`, so that it stays attached after this `Datapath`
    /// and this process are gone.
    ///
    /// If a live XDP link is pinned there already (an earlier agent's), its
    /// program is replaced by this `Datapath`'s with `BPF_LINK_UPDATE`:
    /// atomically (each packet meets the old program or the new one, never
    /// none), keeping the link, its ID and its mode (`mode` does not apply
    /// then). Otherwise a new link is made in `mode` (native falling back to
    /// generic, as [`Datapath::attach`]) and pinned; a pin left by an
    /// interface that no longer exists is replaced.
    ///
    /// Refused: an interface missing from the calling thread's network
    /// namespace, a pin that is not an XDP link, and an XDP link pinned there
    /// for another interface.
    pub fn attach_pinned(
        &mut self,
        program: ProgramName,
        iface: &str,
        mode: AttachMode,
        link_dir: &Path,
    ) -> Result<PinnedAttachment, Error> {
        let path = link_path(link_dir, iface)?;
        let ifindex = ifindex(iface)?;
        let attachment = |link: LinkInfo, native: Option<bool>| PinnedAttachment {
            program,
            iface: iface.to_owned(),
            path: path.clone(),
            link: link.into(),
            replaced: native.is_none(),
            native,
        };
        match pinned(&path)? {
            Pinned::Link(link, info) if info.ifindex == ifindex => {
                let prog = self
                    .program(program)?
                    .fd()
                    .map_err(|source| Error::Attach {
                        program: program.as_str(),
                        iface: iface.to_owned(),
                        source,
                    })?;
                match sys::link_update(link.as_fd(), prog.as_fd()) {
                    Ok(()) => {
                        let info = link_info(&path, link.as_fd())?;
                        debug!(
                            iface,
                            program = program.as_str(),
                            link = info.id,
                            "program replaced"
                        );
                        return Ok(attachment(info, None));
                    }
                    // The interface went away between the two calls.
                    Err(err) if err.raw_os_error() == Some(libc::ENOLINK) => warn!(
                        path = %path.display(),
                        "the pinned link's interface is gone; pinning a new link in its place"
                    ),
                    Err(source) => {
                        return Err(Error::PinnedLink {
                            path,
                            op: "replace the program",
                            source,
                        });
                    }
                }
            }
            Pinned::Link(..) => {
                return Err(Error::ForeignLink {
                    path,
                    reason: "it is attached to another interface (or to one in another network \
                             namespace)",
                });
            }
            Pinned::Defunct => warn!(
                path = %path.display(),
                "the pinned link's interface is gone; pinning a new link in its place"
            ),
            Pinned::Nothing => {}
        }
        // Nothing usable is pinned: a fresh link, pinned in place of whatever
        // defunct link was there.
        unpin(&path)?;
        std::fs::create_dir_all(link_dir).map_err(|source| Error::PinDir {
            path: link_dir.to_owned(),
            source,
        })?;
        let (link_id, mode) = self.attach_link(program, iface, mode)?;
        let link = self
            .program_mut(program)?
            .take_link(link_id)
            .map_err(|source| Error::Attach {
                program: program.as_str(),
                iface: iface.to_owned(),
                source,
            })?;
        let link = FdLink::try_from(link).map_err(|_| Error::LinkUnsupported {
            iface: iface.to_owned(),
        })?;
        let info = pin_link(link, &path)?;
        debug!(
            iface,
            program = program.as_str(),
            ?mode,
            link = info.id,
            "attached and pinned"
        );
        Ok(attachment(info, Some(mode == XdpMode::Driver)))
    }

    /// Removes the pin of `iface`'s link under `link_dir`; the kernel detaches
    /// the link once nothing else holds it (shortly after, not before this
    /// returns). Returns whether there was a pin. Refuses to remove a pin
    /// that is not a link.
    pub fn detach_pinned(link_dir: &Path, iface: &str) -> Result<bool, Error> {
        let path = link_path(link_dir, iface)?;
        match pinned(&path)? {
            Pinned::Nothing => Ok(false),
            Pinned::Defunct | Pinned::Link(..) => unpin(&path),
        }
    }

    /// The interfaces with a link pinned under `link_dir` by
    /// [`Datapath::attach_pinned`]. None when the directory does not exist.
    pub fn pinned_links(link_dir: &Path) -> Vec<String> {
        pin_names(link_dir)
    }

    /// The link pinned for `iface` under `link_dir`, if any: which program it
    /// runs, on which interface.
    pub fn pinned_link(link_dir: &Path, iface: &str) -> Result<Option<PinnedLinkInfo>, Error> {
        let path = link_path(link_dir, iface)?;
        let Some(fd) = open_pin(&path)? else {
            return Ok(None);
        };
        Ok(Some(link_info(&path, fd.as_fd())?.into()))
    }
}

/// The names pinned in `link_dir` (one per interface); none when the
/// directory does not exist.
pub(crate) fn pin_names(link_dir: &Path) -> Vec<String> {
    std::fs::read_dir(link_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Whether `name` can name an interface (the kernel's `dev_valid_name`: 1 to
/// 15 bytes, not `.` or `..`, no `/`, `:` or white space), which makes it a
/// plain file name too (its pin, its `/proc/sys` directory).
pub fn is_interface_name(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

/// The index of the interface `iface` of the calling thread's network
/// namespace; refused for a name no interface can have.
pub fn interface_index(iface: &str) -> Result<u32, Error> {
    if !is_interface_name(iface) {
        return Err(Error::UnknownInterface {
            iface: iface.to_owned(),
        });
    }
    ifindex(iface)
}

/// `link_dir/<iface>`, for a valid interface name ([`is_interface_name`]).
pub(crate) fn link_path(link_dir: &Path, iface: &str) -> Result<PathBuf, Error> {
    if !is_interface_name(iface) {
        return Err(Error::UnknownInterface {
            iface: iface.to_owned(),
        });
    }
    Ok(link_dir.join(iface))
}

/// Pins `link` at `path` and reads it back from the pin. Dropping the link
/// on an error detaches it again: nothing is left attached without a pin.
pub(crate) fn pin_link(link: FdLink, path: &Path) -> Result<LinkInfo, Error> {
    let pinned = link.pin(path).map_err(|source| Error::PinLink {
        path: path.to_owned(),
        source,
    })?;
    let fd = sys::obj_get(path).map_err(|source| Error::PinnedLink {
        path: path.to_owned(),
        op: "open",
        source,
    })?;
    drop(pinned);
    link_info(path, fd.as_fd())
}

/// `iface`'s index in the calling thread's network namespace.
pub(crate) fn ifindex(iface: &str) -> Result<u32, Error> {
    let unknown = || Error::UnknownInterface {
        iface: iface.to_owned(),
    };
    let name = CString::new(iface).map_err(|_| unknown())?;
    // SAFETY: a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(unknown()),
        index => Ok(index),
    }
}

/// The object pinned at `path`, checked to be a link; `None` without a pin.
fn open_pin(path: &Path) -> Result<Option<std::os::fd::OwnedFd>, Error> {
    let fd = match sys::obj_get(path) {
        Ok(fd) => fd,
        Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(source) => {
            return Err(Error::PinnedLink {
                path: path.to_owned(),
                op: "open",
                source,
            });
        }
    };
    // The info command answers for maps and programs too, in another layout:
    // only the descriptor's fdinfo says what kind of object it is.
    if !is_link(fd.as_fd()).map_err(|source| Error::PinnedLink {
        path: path.to_owned(),
        op: "read the descriptor's fdinfo",
        source,
    })? {
        return Err(Error::ForeignLink {
            path: path.to_owned(),
            reason: "the pinned object is not a link",
        });
    }
    Ok(Some(fd))
}

/// What is pinned at `path`.
fn pinned(path: &Path) -> Result<Pinned, Error> {
    pinned_of_type(
        path,
        BPF_LINK_TYPE_XDP,
        "the pinned link is not an XDP link",
    )
}

/// What is pinned at `path`, refused unless a link of `link_type`.
pub(crate) fn pinned_of_type(
    path: &Path,
    link_type: u32,
    wrong_type: &'static str,
) -> Result<Pinned, Error> {
    let Some(fd) = open_pin(path)? else {
        return Ok(Pinned::Nothing);
    };
    let info = link_info(path, fd.as_fd())?;
    if info.link_type != link_type {
        return Err(Error::ForeignLink {
            path: path.to_owned(),
            reason: wrong_type,
        });
    }
    if info.ifindex == 0 {
        return Ok(Pinned::Defunct);
    }
    Ok(Pinned::Link(fd, info))
}

pub(crate) fn link_info(path: &Path, link: BorrowedFd<'_>) -> Result<LinkInfo, Error> {
    sys::link_info(link).map_err(|source| Error::PinnedLink {
        path: path.to_owned(),
        op: "read link info",
        source,
    })
}

/// Removes the pin at `path`; false if there was none.
pub(crate) fn unpin(path: &Path) -> Result<bool, Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {
            debug!(path = %path.display(), "link pin removed");
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::PinnedLink {
            path: path.to_owned(),
            op: "unpin",
            source,
        }),
    }
}

/// True when `fd` is a bpf_link (its fdinfo has a `link_type` line; maps say
/// `map_type`, programs `prog_type`).
fn is_link(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(fdinfo.lines().any(|line| line.starts_with("link_type:")))
}
