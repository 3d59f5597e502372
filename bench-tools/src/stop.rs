//! SIGINT (Ctrl-C) and SIGTERM: a run stops at its next safe point and
//! removes what it set up, instead of dying with it in place.
//!
//! `prog`, `sync`, `rig` and `pairs` set up what outlives their process — a
//! private bpffs mount, named network namespaces with their veths and
//! processes, files in the temporary directory — and remove it in drops on
//! their way out. A signal's default action ends the process without running
//! them, which leaves it all behind ([`Leftovers`] says what, for each). So
//! these runs [`install`] a handler that only records the signal; they
//! [`check`] where their rounds, runs and changes loop (every traffic loop is
//! bounded in seconds, so such a point is never far), stop there with
//! [`Interrupted`], and the drops run as the error goes up to `main`, which
//! exits with the signal's status (`exit::outcome`). The handler is reset
//! once it has run, so a second signal ends the process at once, as if none
//! had been installed.

use std::{
    fmt,
    sync::{
        OnceLock,
        atomic::{AtomicI32, Ordering},
    },
};

use anyhow::Context as _;
use nix::sys::signal::{
    SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal, pthread_sigmask, sigaction,
};

/// The signal a run was asked to stop by: the first one recorded.
#[derive(Debug)]
pub(crate) struct Stop {
    /// 0 until a signal arrives: no signal has that number.
    signal: AtomicI32,
}

impl Stop {
    const fn new() -> Self {
        Self {
            signal: AtomicI32::new(0),
        }
    }

    /// Records `signal`, unless one was recorded before. Async-signal-safe:
    /// an atomic operation, nothing else.
    fn request(&self, signal: i32) {
        let _ = self
            .signal
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The signal recorded, if any.
    fn requested(&self) -> Option<Signal> {
        Signal::try_from(self.signal.load(Ordering::SeqCst)).ok()
    }

    /// Fails with [`Interrupted`] once a signal is recorded.
    fn check(&self) -> Result<(), Interrupted> {
        self.requested()
            .map_or(Ok(()), |signal| Err(Interrupted(signal)))
    }
}

/// The process's [`Stop`], which the handler writes.
static STOP: Stop = Stop::new();

/// What a run leaves behind that its drops would have removed, and the
/// command that removes it: each subcommand says its own (`leftovers` in its
/// module), as it knows what it sets up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Leftovers {
    /// When a second signal ends the process at once, its drops unrun: what
    /// stays, and how to remove it ("leaving ...").
    pub(crate) at_once: String,
    /// Once the run has stopped at a safe point and its drops have run:
    /// what a drop that failed (and warned) may have left, and how to
    /// remove it.
    pub(crate) after_stop: String,
}

/// What the handler writes at once (the next safe point may be seconds away:
/// a scale of 100 000 services takes a while to set up), made by [`install`]
/// before the handler can run.
static MESSAGE: OnceLock<Box<[u8]>> = OnceLock::new();

/// The handler's message for a run that leaves `leftovers`.
fn message(leftovers: &Leftovers) -> String {
    format!(
        "\nxlb-bench: interrupted; stopping at the next safe point to remove what the run set up \
         (interrupt again to exit at once, {})\n",
        leftovers.at_once
    )
}

extern "C" fn on_signal(signal: nix::libc::c_int) {
    STOP.request(signal);
    // write(2) is async-signal-safe, and so is reading a `OnceLock` set
    // before the handler was installed (an atomic load): nothing is locked
    // or allocated.
    if let Some(message) = MESSAGE.get() {
        let _ = nix::unistd::write(std::io::stderr(), message);
    }
}

/// Makes SIGINT and SIGTERM ask the run to stop ([`check`]) rather than end
/// the process, for their first delivery, saying what exiting at once would
/// leave (`leftovers`). A signal the process was started with ignored stays
/// ignored: a shell without job control starts its background jobs so, and a
/// Ctrl-C meant for the foreground must not stop them.
pub(crate) fn install(leftovers: &Leftovers) -> anyhow::Result<()> {
    anyhow::ensure!(
        MESSAGE
            .set(message(leftovers).into_bytes().into_boxed_slice())
            .is_ok(),
        "the signal handler is installed once per process"
    );
    // SA_RESETHAND: the second signal meets the default action and ends the
    // process at once. SA_RESTART: a system call the handler interrupted
    // resumes, instead of failing with EINTR wherever the signal landed.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESETHAND | SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only does an atomic compare-and-swap and a
        // write(2), both async-signal-safe, and touches no other state.
        let old = unsafe { sigaction(signal, &action) }
            .with_context(|| format!("installing a handler for {signal}"))?;
        if old.handler() == SigHandler::SigIgn {
            // SAFETY: restores the disposition found, SIG_IGN.
            unsafe { sigaction(signal, &old) }
                .with_context(|| format!("leaving {signal} ignored"))?;
        }
    }
    Ok(())
}

/// Fails with [`Interrupted`] once SIGINT or SIGTERM has arrived: called
/// where a run can stop with nothing half-done.
pub(crate) fn check() -> Result<(), Interrupted> {
    STOP.check()
}

/// The signal that asked the run to stop, if one did.
pub(crate) fn requested() -> Option<Signal> {
    STOP.requested()
}

/// SIGINT and SIGTERM blocked in the thread that made it, until it drops,
/// so that the kernel delivers them to another thread of the process. A
/// thread that only waits for a worker (`prog`'s, in its private network
/// namespace) holds one: a signal then lands in the worker, and a long
/// system call it is in (`BPF_PROG_TEST_RUN` of many repeats, seconds long)
/// ends at once with EINTR, where a signal handled by the waiting thread
/// would leave the call running to its end. The handler records the signal
/// whichever thread runs it.
#[derive(Debug)]
pub(crate) struct SignalsElsewhere {
    /// The thread's mask before, restored on drop.
    before: SigSet,
}

impl SignalsElsewhere {
    /// Blocks SIGINT and SIGTERM in the calling thread. Threads it starts
    /// from now on inherit the block: start the worker first.
    pub(crate) fn block() -> anyhow::Result<Self> {
        let mut stops = SigSet::empty();
        stops.add(Signal::SIGINT);
        stops.add(Signal::SIGTERM);
        let mut before = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stops), Some(&mut before))
            .context("blocking SIGINT and SIGTERM in the waiting thread")?;
        Ok(Self { before })
    }
}

impl Drop for SignalsElsewhere {
    fn drop(&mut self) {
        // A signal that arrived meanwhile with no other thread to take it
        // is delivered here now, as it would have been without the block.
        if let Err(e) = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.before), None) {
            tracing::warn!(error = %e, "restoring the thread's signal mask");
        }
    }
}

/// A run stopped by a signal, at a safe point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interrupted(pub(crate) Signal);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn the_first_signal_is_the_one_recorded() {
        let stop = Stop::new();
        assert_eq!(stop.requested(), None);
        stop.check().unwrap();
        stop.request(Signal::SIGTERM as i32);
        stop.request(Signal::SIGINT as i32);
        assert_eq!(stop.requested(), Some(Signal::SIGTERM));
        assert_eq!(stop.check(), Err(Interrupted(Signal::SIGTERM)));
    }

    #[test]
    fn the_handler_says_what_exiting_at_once_leaves() {
        let leftovers = Leftovers {
            at_once: "leaving /tmp/x (`rm -r /tmp/x`)".to_owned(),
            after_stop: String::new(),
        };
        assert_eq!(
            message(&leftovers),
            "\nxlb-bench: interrupted; stopping at the next safe point to remove what the run \
             set up (interrupt again to exit at once, leaving /tmp/x (`rm -r /tmp/x`))\n"
        );
    }

    #[test]
    fn a_run_a_signal_stopped_exits_with_its_status() {
        let stop = Stop::new();
        let mut rounds = 0;
        let run = (|| {
            for round in 0..3 {
                if round == 1 {
                    stop.request(Signal::SIGINT as i32);
                }
                stop.check()
                    .with_context(|| format!("round {round} at 1 service"))?;
                rounds += 1;
            }
            Ok(())
        })();
        assert_eq!(rounds, 1, "stopped at the check after the signal");
        let (code, text) = crate::exit::outcome(run, stop.requested(), "nothing is left");
        assert_eq!(code, 130);
        assert!(text.unwrap().starts_with("Error: interrupted by SIGINT"));
    }
}
