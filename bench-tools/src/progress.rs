//! Progress on long runs: a bar over a known number of steps, or a spinner
//! with the elapsed time for one long step (a ruleset that takes minutes to
//! load). indicatif draws them on stderr only when it is a terminal, so logs
//! and CI output stay plain.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` steps, labelled `prefix`.
pub(crate) fn bar(len: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{elapsed_precise}] {bar:40} {pos}/{len} (eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_prefix(prefix);
    bar
}

/// A spinner showing `message` and the time spent, until it is finished.
pub(crate) fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
        spinner.set_style(style);
    }
    spinner.set_message(message);
    spinner.enable_steady_tick(Duration::from_millis(200));
    spinner
}
