//! One agent per directory: an exclusive `flock` on the directory itself,
//! held for as long as the agent runs. The kernel drops it with the
//! process, however it ends, so a killed agent's successor is not refused.

use std::{fs::File, io, path::Path};

use anyhow::Context as _;
use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// A directory locked for this agent, until dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _lock: Flock<File>,
}

/// Locks `dir`, the agent's `what` (for messages), or answers `held` when
/// another agent holds it.
pub(crate) fn lock(
    dir: &Path,
    what: &str,
    held: impl FnOnce() -> String,
) -> anyhow::Result<DirLock> {
    let file = File::open(dir).with_context(|| format!("opening the {what} {}", dir.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(DirLock { _lock: lock }),
        Err((_, Errno::EWOULDBLOCK)) => Err(anyhow::anyhow!(held())),
        Err((_, errno)) => Err(io::Error::from(errno))
            .with_context(|| format!("locking the {what} {}", dir.display())),
    }
}
