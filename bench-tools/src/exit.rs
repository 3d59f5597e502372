//! How the process ends after a run: its exit status, and what it prints on
//! stderr.

use std::{backtrace::BacktraceStatus, fmt::Write as _};

use control_plane::error_text::causes;
use nix::sys::signal::Signal;

use crate::stop::Interrupted;

/// What the exit status of a measuring run (`prog`, `rig`, `sync`,
/// `pairs`) means, for their long help.
pub(crate) const MEASURING_STATUS: &str = "Exit status: 0 once the run has measured and printed \
its tables, whatever the verdicts of its targets (a FAIL row is a finding, not an error: `make \
bench` goes on to the report after it); 1 when it could not measure (the error is on stderr); 2 \
when the command line was refused; 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when a signal stopped \
it, once it had removed what it had set up.";

/// What the exit status of `verifier` means.
pub(crate) const VERIFIER_STATUS: &str = "Exit status: 0 when every program needs at most half \
of the kernel's limit; 1 when one needs more (its table and --json are still written) or on an \
error; 2 when the command line was refused.";

/// What the exit status of `maglev` and `report` means: they set nothing up,
/// and a signal ends them as it ends any process.
pub(crate) const WRITING_STATUS: &str = "Exit status: 0 when the output was written; 1 on an \
error (on stderr); 2 when the command line was refused.";

/// The exit status and the message of a run that returned `result`, with
/// `signal` the signal that asked it to stop, if one did, and `after_stop`
/// what such a run may leave (`stop::Leftovers::after_stop`).
///
/// A run that a signal interrupted exits with 128 + the signal's number, as
/// a shell reports a process the signal ended, whatever the run's own result:
/// an error it stopped on after the signal (a child process the same Ctrl-C
/// ended) is shown as what it stopped on.
pub(crate) fn outcome(
    result: anyhow::Result<()>,
    signal: Option<Signal>,
    after_stop: &str,
) -> (u8, Option<String>) {
    let Some(signal) = signal else {
        return match result {
            Ok(()) => (0, None),
            Err(e) => (1, Some(describe(&e))),
        };
    };
    let mut text = format!(
        "Error: interrupted by {signal}: the run stopped, and removed what it had set up \
         ({after_stop})"
    );
    match result {
        Ok(()) => text.push_str(". It had finished: its output is complete."),
        Err(e) if e.chain().any(|cause| cause.is::<Interrupted>()) => {}
        Err(e) => {
            let _ = write!(text, ". It stopped on: {}", causes(e.as_ref()).join(": "));
        }
    }
    (128 + signal as u8, Some(text))
}

/// `e` as `main` returning it would print it (`Error: ...`, then `Caused
/// by:` and the causes, numbered when there are several, and the backtrace
/// when `RUST_BACKTRACE` asked for one), but each cause once (`control_plane::error_text`).
fn describe(e: &anyhow::Error) -> String {
    let causes = causes(e.as_ref());
    let mut text = format!("Error: {}", causes[0]);
    match &causes[1..] {
        [] => {}
        [one] => {
            let _ = write!(text, "\n\nCaused by:\n    {one}");
        }
        more => {
            text.push_str("\n\nCaused by:");
            for (i, cause) in more.iter().enumerate() {
                let _ = write!(text, "\n    {i}: {cause}");
            }
        }
    }
    if e.backtrace().status() == BacktraceStatus::Captured {
        let _ = write!(text, "\n\nStack backtrace:\n{}", e.backtrace());
    }
    text
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn an_interrupted_run_exits_with_the_signals_status_and_says_so() {
        let stopped = Err(anyhow::Error::new(Interrupted(Signal::SIGINT))).context("round 1");
        let left = "nothing is left";
        let (code, text) = outcome(stopped, Some(Signal::SIGINT), left);
        let text = text.unwrap();
        assert_eq!(code, 130, "{text}");
        assert_eq!(
            text,
            "Error: interrupted by SIGINT: the run stopped, and removed what it had set up \
             (nothing is left)"
        );
        assert!(!text.contains("stopped on"), "{text}");

        // An error after the signal (a child the same Ctrl-C ended) is
        // what the run stopped on.
        let failed = Err(anyhow::anyhow!("nft failed (signal: 2)")).context("loading");
        let (code, text) = outcome(failed, Some(Signal::SIGTERM), left);
        assert_eq!(code, 143);
        assert!(
            text.unwrap()
                .ends_with(". It stopped on: loading: nft failed (signal: 2)")
        );
        let (code, text) = outcome(Ok(()), Some(Signal::SIGINT), left);
        assert_eq!(code, 130);
        assert!(text.unwrap().ends_with("its output is complete."));
    }

    #[test]
    fn without_a_signal_a_run_ends_as_main_returning_its_result_would() {
        assert_eq!(outcome(Ok(()), None, ""), (0, None));
        fn one() -> anyhow::Error {
            anyhow::anyhow!("no such file").context("reading x.json")
        }
        fn two() -> anyhow::Error {
            one().context("loading the inputs")
        }
        for error in [one, two] {
            let (code, text) = outcome(Err(error()), None, "");
            assert_eq!(code, 1);
            // As anyhow prints it, a backtrace after when RUST_BACKTRACE
            // asks for one.
            let anyhow = format!("Error: {:?}", error());
            let before_backtrace = |text: &str| text.split("\n\nStack").next().unwrap().to_owned();
            assert_eq!(before_backtrace(&text.unwrap()), before_backtrace(&anyhow));
        }
    }

    /// An error whose message holds its source's, as aya's `EbpfError`
    /// holds its `MapError`'s.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "map error: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_cause_its_wrapper_already_shows_is_printed_once() {
        let map = std::io::Error::other("failed to create map `CONNTRACK_REPLY`");
        let e = anyhow::Error::new(Wrapper(map)).context("loading the datapath");
        let (_, text) = outcome(Err(e), None, "");
        let text = text.unwrap();
        assert_eq!(
            text.split("\n\nStack").next().unwrap(),
            "Error: loading the datapath\n\nCaused by:\n    \
             map error: failed to create map `CONNTRACK_REPLY`"
        );
    }
}
