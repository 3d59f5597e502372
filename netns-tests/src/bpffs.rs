//! A private bpffs mount for pinning maps and links.
//!
//! `ip netns exec` gives its command a fresh `/sys`, so a bpffs at
//! `/sys/fs/bpf` is not shared with processes spawned in a rig (DESIGN.md,
//! "Known pitfalls"). A bpffs mounted in the rig's own work directory is
//! visible from everywhere, and unmounting it drops every pin inside.
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use tracing::debug;

use crate::{Error, Result};

/// A bpffs mounted on a directory; unmounted on drop.
#[derive(Debug)]
pub(crate) struct Bpffs {
    path: PathBuf,
    mounted: bool,
}

impl Bpffs {
    /// Mounts a new bpffs instance on the existing directory `path`, whose
    /// path must contain a rig name (so the sweeper can find it).
    pub(crate) fn mount(path: &Path) -> Result<Self> {
        mount(
            Some("bpf"),
            path,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|source| Error::Mount {
            action: "mounting bpffs on",
            path: path.to_owned(),
            source,
        })?;
        debug!(path = %path.display(), "bpffs mounted");
        Ok(Self {
            path: path.to_owned(),
            mounted: true,
        })
    }

    /// The mount point.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Unmounts now; the error says why it failed.
    pub(crate) fn unmount(&mut self) -> Result<()> {
        if !self.mounted {
            return Ok(());
        }
        unmount(&self.path)?;
        self.mounted = false;
        Ok(())
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(err) = self.unmount() {
            tracing::warn!(error = %err, "leaving a bpffs mounted; `xlb-bench rig sweep --orphans` removes it");
        }
    }
}

/// Unmounts `path`; when it is busy (a process still holds a pin open), it is
/// detached lazily so it vanishes from the mount table at once.
pub(crate) fn unmount(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => {
            umount2(path, MntFlags::MNT_DETACH).map_err(|source| Error::Mount {
                action: "detaching",
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(Error::Mount {
            action: "unmounting",
            path: path.to_owned(),
            source,
        }),
    }
}
