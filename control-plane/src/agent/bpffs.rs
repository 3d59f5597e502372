//! The pin directory must be on a bpffs: mount one there if it is not.

use std::{io, path::Path};

use anyhow::Context as _;
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

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

fn on_bpffs(dir: &Path) -> anyhow::Result<bool> {
    let stat = statfs(dir)
        .map_err(io::Error::from)
        .with_context(|| format!("statfs {}", dir.display()))?;
    Ok(stat.filesystem_type() == BPF_FS_MAGIC)
}
