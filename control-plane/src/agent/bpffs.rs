//! The pin directory: it must be on a bpffs (one is mounted there if it is
//! not), and one agent at a time holds it.

use std::{fs::File, io, path::Path};

use anyhow::Context as _;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

/// The pin directory, locked (`flock`) for as long as it is held. Two agents
/// on one directory would sync the same maps from two sources and each put
/// its own program into the other's links; the second is refused before it
/// changes anything. The kernel drops the lock with the process, however it
/// ends, so a killed agent's successor is not refused.
pub(crate) struct PinDirLock {
    _lock: Flock<File>,
}

/// Locks `dir`, or says that another agent holds it.
pub(crate) fn lock(dir: &Path) -> anyhow::Result<PinDirLock> {
    let file =
        File::open(dir).with_context(|| format!("opening the pin directory {}", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(PinDirLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => Err(anyhow::anyhow!(
            "another xlb agent runs on --pin-dir {}: one agent per pin directory",
            dir.display()
        )),
        Err((_, errno)) => Err(io::Error::from(errno))
            .with_context(|| format!("locking the pin directory {}", dir.display())),
    }
}

/// Creates `dir` and mounts a bpffs on it unless it is on one already
/// (`/sys/fs/bpf` usually is; on these hosts it is not mounted by default).
pub(crate) fn ensure(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the pin directory {}", dir.display()))?;
    if on_bpffs(dir)? {
        return Ok(());
    }
    mount(
        Some("bpf"),
        dir,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )
    .with_context(|| {
        format!(
            "mounting bpffs on {} (needs CAP_SYS_ADMIN; or mount one yourself: \
             mount -t bpf bpf {})",
            dir.display(),
            dir.display()
        )
    })?;
    tracing::info!(dir = %dir.display(), "mounted bpffs");
    Ok(())
}

/// True when `dir` is on a bpffs and holds something pinned: the maps of an
/// earlier agent, which keep forwarding whatever this one is given.
pub(crate) fn holds_pins(dir: &Path) -> bool {
    on_bpffs(dir).unwrap_or(false)
        && std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

fn on_bpffs(dir: &Path) -> anyhow::Result<bool> {
    let stat = statfs(dir)
        .map_err(io::Error::from)
        .with_context(|| format!("statfs {}", dir.display()))?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}
