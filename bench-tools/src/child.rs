//! Running a child process bounded in time and stoppable by SIGINT and
//! SIGTERM: the kube-proxy-style ruleset loads take minutes at 10 000
//! services, and a run asked to stop must not wait for them (`crate::stop`).

use std::{
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use crate::stop::{self, Interrupted};

/// How a bounded child ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It exited by itself, after this long.
    Exited(ExitStatus, Duration),
    /// It ran past the limit and was killed.
    TimedOut,
}

/// How often a running child is looked at: a load's wall time is measured
/// to this, and a signal is noticed within it.
const POLL: Duration = Duration::from_micros(100);

/// Spawns `command` and waits for it, killing it once `limit` has passed
/// ([`Ended::TimedOut`]) or the run is asked to stop (the error is then
/// [`Interrupted`]). The caller points its output somewhere that never
/// fills: a pipe nobody reads while the child runs would stall a child that
/// writes much.
pub(crate) fn run_bounded(command: &mut Command, limit: Duration) -> anyhow::Result<Ended> {
    run_until(command, limit, stop::check)
}

/// [`run_bounded`], asking `stopped` rather than the process's signal
/// whether to stop.
fn run_until(
    command: &mut Command,
    limit: Duration,
    stopped: impl Fn() -> Result<(), Interrupted>,
) -> anyhow::Result<Ended> {
    let program = command.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("spawning {program}"))?;
    loop {
        if let Some(status) = child.try_wait().context("waiting for the child")? {
            return Ok(Ended::Exited(status, started.elapsed()));
        }
        if started.elapsed() > limit {
            end(&mut child);
            return Ok(Ended::TimedOut);
        }
        if let Err(interrupted) = stopped() {
            end(&mut child);
            return Err(interrupted.into());
        }
        std::thread::sleep(POLL);
    }
}

/// Kills our own child, by its handle, and reaps it.
fn end(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    fn never() -> Result<(), Interrupted> {
        Ok(())
    }

    #[test]
    fn a_child_that_exits_in_time_gives_its_status() {
        let ended = run_until(&mut Command::new("true"), Duration::from_secs(10), never).unwrap();
        assert!(
            matches!(ended, Ended::Exited(s, _) if s.success()),
            "{ended:?}"
        );
        let ended = run_until(&mut Command::new("false"), Duration::from_secs(10), never).unwrap();
        assert!(
            matches!(ended, Ended::Exited(s, _) if !s.success()),
            "{ended:?}"
        );
    }

    #[test]
    fn a_child_past_its_limit_is_killed() {
        let started = Instant::now();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let ended = run_until(&mut sleep, Duration::from_millis(100), never).unwrap();
        assert!(matches!(ended, Ended::TimedOut), "{ended:?}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not waited for"
        );
    }

    #[test]
    fn a_stop_request_kills_the_child_and_says_which_signal() {
        let started = Instant::now();
        let mut sleep = Command::new("sleep");
        sleep.arg("30");
        let error = run_until(&mut sleep, Duration::from_secs(60), || {
            Err(Interrupted(Signal::SIGINT))
        })
        .unwrap_err();
        assert_eq!(
            error.downcast_ref::<Interrupted>(),
            Some(&Interrupted(Signal::SIGINT))
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not waited for"
        );
    }

    #[test]
    fn a_program_that_cannot_be_spawned_is_named() {
        let error = run_until(
            &mut Command::new("/nonexistent/xlb-no-such-program"),
            Duration::from_secs(1),
            never,
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("spawning /nonexistent/xlb-no-such-program"));
    }
}
