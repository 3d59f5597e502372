//! Running the helper tools (`ip`, `ethtool`, `nft`) and reporting their failures.
use std::process::{Command, Stdio};

use tracing::debug;

use crate::{Error, Result};

/// Runs `program args...` to completion and returns its standard output.
///
/// A non-zero exit becomes [`Error::Command`] carrying the tool's own message,
/// which is usually the best explanation there is.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String> {
    run_with_input(program, args, None)
}

/// Like [`run`], with `input` written to the tool's standard input.
pub(crate) fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let command_line = display(program, args);
    debug!(command = %command_line, "run");
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| Error::Spawn {
        command: command_line.clone(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let Some(input) = input {
        use std::io::Write as _;
        // Taking stdin closes it when the handle drops, so the tool sees EOF.
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin
            .write_all(input.as_bytes())
            .map_err(Error::io(format!("writing the input of `{command_line}`")))?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: command_line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// `program arg arg` for messages.
pub(crate) fn display(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}
