//! `make demo`: frames of every class through the XDP packet parser on a veth
//! inside a throwaway netns rig, and the program's per-class counters printed
//! beside what was sent. Exits 0 only when every counter matches exactly.
//!
//! Needs root (namespaces, BPF). Touches nothing outside the rig it creates.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use netns_tests::parser_run;
use xdp_lb::{Counter, ParseCounter};

/// Copies of each sample frame in the mix.
const COPIES: usize = 10;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    match demo() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            tracing::error!("demo failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo() -> anyhow::Result<bool> {
    let run = parser_run::run(COPIES)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "xlb demo: {} frames ({} samples x {COPIES}) sent over a veth into xdp_lb ({} mode)\n",
        run.sent.len(),
        run.sent.len() / COPIES,
        if run.native { "native" } else { "generic" },
    )?;
    writeln!(
        out,
        "{:<26} {:>12} {:>12} {:>10} {:>10}",
        "counter", "packets sent", "counted", "bytes sent", "counted"
    )?;
    for &slot in ParseCounter::ALL {
        let sent = run.expected.get(&slot).copied().unwrap_or_default();
        let counted = run.counted.get(&slot).copied().unwrap_or_default();
        if sent == Counter::default() && counted == Counter::default() {
            continue;
        }
        let mark = if sent == counted { "ok" } else { "MISMATCH" };
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>10} {:>10}  {mark}",
            slot.name(),
            sent.packets,
            counted.packets,
            sent.bytes,
            counted.bytes
        )?;
    }
    let matches = run.matches();
    writeln!(
        out,
        "\n{}",
        if matches {
            "every counter matches what was sent"
        } else {
            "counters differ from what was sent"
        }
    )?;
    Ok(matches)
}
