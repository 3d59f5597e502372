//! An error and its causes as one line, for the logs, `xlb status` and the
//! command line.
//!
//! `{:#}` of an `anyhow::Error` joins every cause with `: `. Many errors
//! print their cause inside their own message and return it as their
//! source too (kube's `failed to read kubeconfig from ...: {0}`, an I/O
//! error wrapped by a library), so the same text came out two or three
//! times in a row. Here a cause the message before it already holds is
//! left out.

use std::error::Error;

/// The messages of `error`'s chain, outermost first, without the causes
/// that the message kept before already shows.
pub fn causes(error: &(dyn Error + 'static)) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        if !kept.last().is_some_and(|last| last.contains(&text)) {
            kept.push(text);
        }
        next = cause.source();
    }
    kept
}

/// `error` and its causes on one line, each once, joined by `: `.
pub fn one_line(error: &(dyn Error + 'static)) -> String {
    causes(error).join(": ")
}

#[cfg(test)]
mod tests {
    use std::io;

    use anyhow::Context as _;

    use super::*;

    /// An error that prints its source in its message and returns it too.
    #[derive(Debug, thiserror::Error)]
    #[error("reading the kubeconfig: {0}")]
    struct Repeats(#[source] io::Error);

    #[test]
    fn a_cause_the_message_already_shows_is_left_out() {
        let error = Err::<(), _>(Repeats(io::Error::from(io::ErrorKind::NotFound)))
            .context("connecting to the API server")
            .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "connecting to the API server: reading the kubeconfig: entity not found: entity not \
             found"
        );
        assert_eq!(
            one_line(error.as_ref()),
            "connecting to the API server: reading the kubeconfig: entity not found"
        );
    }

    #[test]
    fn causes_that_say_something_new_are_all_kept() {
        let error = Err::<(), _>(io::Error::other("no route"))
            .context("sending")
            .context("announcing")
            .unwrap_err();
        assert_eq!(
            causes(error.as_ref()),
            ["announcing", "sending", "no route"]
        );
    }
}
