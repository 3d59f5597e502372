//! The pin directory: it must be on a bpffs (one is mounted there if it is
//! not), and one agent at a time holds it.

use std::{io, path::Path};

use anyhow::Context as _;
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, SYSFS_MAGIC, statfs},
};

use super::dir_lock::{self, DirLock};

/// Locks the pin directory `dir`, or says that another agent holds it. Two
/// agents on one directory would sync the same maps from two sources and
/// each put its own program into the other's links; the second is refused
/// before it changes anything.
pub(crate) fn lock(dir: &Path) -> anyhow::Result<DirLock> {
    dir_lock::lock(dir, "pin directory", || {
        format!(
            "another xlb agent runs on --pin-dir {}: one agent per pin directory",
            dir.display()
        )
    })
}

/// Creates `dir` and mounts a bpffs on it unless it is on one already
/// (`/sys/fs/bpf` usually is; on these hosts it is not mounted by default).
/// A `dir` under a sysfs directory (`/sys/fs/bpf/xlb` where nothing is
/// mounted on `/sys/fs/bpf`) gets its bpffs on that directory, where
/// systemd mounts it, since sysfs makes no directories.
pub(crate) fn ensure(dir: &Path) -> anyhow::Result<()> {
    if let Some(sysfs_dir) = dir
        .ancestors()
        .skip(1)
        .find(|a| a.exists())
        .filter(|a| is_on(a, SYSFS_MAGIC).unwrap_or(false))
    {
        mount_bpffs(sysfs_dir)?;
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the pin directory {}", dir.display()))?;
    if on_bpffs(dir)? {
        return Ok(());
    }
    mount_bpffs(dir)
}

/// Mounts a bpffs on `dir`, readable by root only.
fn mount_bpffs(dir: &Path) -> anyhow::Result<()> {
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
    is_on(dir, BPF_FS_MAGIC)
}

/// True when `path` is on a file system of type `magic`.
fn is_on(path: &Path, magic: nix::sys::statfs::FsType) -> anyhow::Result<bool> {
    let stat = statfs(path)
        .map_err(io::Error::from)
        .with_context(|| format!("statfs {}", path.display()))?;
    Ok(stat.filesystem_type() == magic)
}

#[cfg(test)]
mod tests {
    use nix::{
        mount::{MntFlags, umount2},
        sched::{CloneFlags, unshare},
    };

    use super::*;

    /// On a sysfs where nothing is mounted on `/sys/fs/bpf` (as in a fresh
    /// mount namespace of `ip netns exec`), the default pin directory gets a
    /// bpffs on `/sys/fs/bpf`. Runs as root, in a mount namespace of its
    /// own thread, with every mount private: nothing reaches the machine's.
    #[test]
    fn a_pin_directory_under_a_bare_sys_fs_bpf_gets_its_bpffs_there() {
        std::thread::spawn(|| {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
                .expect("unshare (tests run as root)");
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("make every mount private");
            // A sysfs of this network namespace, as `ip netns exec` mounts.
            umount2("/sys", MntFlags::MNT_DETACH).expect("unmount /sys");
            mount(
                Some("sysfs"),
                "/sys",
                Some("sysfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .expect("mount sysfs");
            let bpf = Path::new("/sys/fs/bpf");
            assert!(!on_bpffs(bpf).unwrap(), "a fresh sysfs has no bpffs");
            let dir = bpf.join("xlb-test");
            ensure(&dir).expect("the pin directory");
            assert!(on_bpffs(&dir).unwrap() && on_bpffs(bpf).unwrap());
            // Once there, it is kept as it is.
            ensure(&dir).expect("again");
        })
        .join()
        .expect("the test thread");
    }
}
