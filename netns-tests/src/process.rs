//! Processes started inside a rig namespace, killed and reaped with the rig.
use std::{
    path::{Path, PathBuf},
    process::{Child, ExitStatus},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tracing::{debug, warn};

/// A process the rig started (through `ip netns exec`, which `exec`s the
/// program itself, so the pid is the program's).
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) const fn new(child: Child, log: PathBuf) -> Self {
        Self { child, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// Returns the exit status if the process has exited.
    pub(crate) fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Kills the process's whole group (it was started as a group leader, so
    /// helpers it forked die too) and reaps it.
    pub(crate) fn kill(mut self) -> std::io::Result<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(status);
        }
        let pid = self.pid();
        match i32::try_from(pid) {
            Ok(raw) => {
                if let Err(err) = killpg(Pid::from_raw(raw), Signal::SIGKILL) {
                    // The group may be gone already; the child itself is
                    // still ours to kill.
                    debug!(pid, error = %err, "killpg failed; killing the process alone");
                    if let Err(err) = self.child.kill() {
                        warn!(pid, error = %err, "could not kill a rig process");
                    }
                }
            }
            Err(_) => self.child.kill()?,
        }
        self.child.wait()
    }
}
