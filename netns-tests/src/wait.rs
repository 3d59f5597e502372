//! Waiting for a condition with a deadline, instead of sleeping.
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The first pause between two checks; it doubles up to [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(5);
const MAX_POLL: Duration = Duration::from_millis(100);

/// Calls `condition` until it returns true or `timeout` has passed.
///
/// The condition is always checked at least once, and once more at the
/// deadline, so a condition that is already true never fails. `what` names
/// the condition in the timeout error.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    wait_for(timeout, what, || Ok(condition().then_some(())))
}

/// Calls `probe` until it returns `Ok(Some(value))`, an error, or `timeout`
/// has passed; returns the value.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_POLL;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut calls = 0;
        wait_until(Duration::from_secs(5), "third call", || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);
    }

    #[test]
    fn times_out_with_the_condition_named() {
        let err = wait_until(Duration::from_millis(20), "never", || false).unwrap_err();
        assert!(matches!(err, Error::Timeout { ref what, .. } if what == "never"));
    }
}
