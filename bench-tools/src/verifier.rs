//! `xlb-bench verifier`: loads every program of the datapath and reports what
//! the verifier made of each, as a Markdown table and (with `--json`) as JSON
//! that `xlb-bench report` reads back. It fails, naming the program, when one
//! needs more than half of the kernel's limit on processed instructions: the
//! margin the loader's own test (`xdp-lb/loader/tests/verifier.rs`) holds
//! the programs to, which leaves room for another kernel or compiler to verify
//! them at a higher cost.
use std::{fmt::Write as _, io::Write as _, path::PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xdp_lb::{Datapath, VERIFIER_INSN_LIMIT};

/// `xlb-bench verifier [--json FILE]`.
#[derive(Debug, clap::Args)]
pub(crate) struct VerifierArgs {
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one `xlb-bench verifier` run read from the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct VerifierResult {
    /// The kernel that verified the programs (`/proc/sys/kernel/osrelease`).
    pub(crate) kernel: String,
    /// The kernel's limit on processed instructions per program
    /// (`BPF_COMPLEXITY_LIMIT_INSNS`).
    pub(crate) limit: u32,
    /// Every program of the object, in the loader's order.
    pub(crate) programs: Vec<ProgramCost>,
    /// The build that measured it (`build_id`); absent from a file written
    /// before builds were recorded.
    #[serde(default)]
    pub(crate) build: Option<crate::build_id::BuildId>,
}

/// What the verifier did with one program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ProgramCost {
    /// The program's symbol name (`xdp_lb`).
    pub(crate) program: String,
    /// Instructions in the program as loaded.
    pub(crate) instructions: u32,
    /// Instructions the verifier processed (`verified_insns`).
    pub(crate) processed: u32,
}

impl VerifierResult {
    /// The most processed instructions a program may need: half the limit.
    pub(crate) const fn budget(&self) -> u32 {
        self.limit / 2
    }

    /// `count` in % of the limit.
    fn share(&self, count: u32) -> f64 {
        f64::from(count) * 100.0 / f64::from(self.limit)
    }
}

pub(crate) fn run(args: &VerifierArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.json {
        crate::output::check_file("--json", path)?;
    }
    let result = measure()?;
    std::io::stdout()
        .lock()
        .write_all(markdown(&result).as_bytes())?;
    // Written even when the check below fails, so that the figures of a
    // program over budget can still be read and reported.
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    check(&result)
}

/// Loads the datapath (which verifies every program) and reads back each
/// program's counts. Needs no network namespace and pins nothing: the
/// programs are only loaded, never attached.
fn measure() -> anyhow::Result<VerifierResult> {
    let datapath = Datapath::load().context(
        "loading the datapath (as root; the error names the program the kernel refused)",
    )?;
    let report = datapath
        .verifier_report()
        .context("reading the programs' verifier counts")?;
    Ok(VerifierResult {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
        limit: VERIFIER_INSN_LIMIT,
        build: Some(crate::build_id::BuildId::of_this_binary()),
        programs: report
            .into_iter()
            .map(|r| ProgramCost {
                program: r.program.as_str().to_owned(),
                instructions: r.instructions,
                processed: r.processed,
            })
            .collect(),
    })
}

/// Fails, naming every program at fault, when one needs more than half of
/// the limit, or when the kernel did not say what a program cost (which would
/// make the check pass without checking anything).
pub(crate) fn check(result: &VerifierResult) -> anyhow::Result<()> {
    anyhow::ensure!(
        !result.programs.is_empty(),
        "the kernel reported no program"
    );
    let mut faults = Vec::new();
    for p in &result.programs {
        if p.instructions == 0 || p.processed == 0 {
            faults.push(format!(
                "{}: the kernel reported {} instructions and {} processed; it needs to report \
                 both (`verified_insns` is in Linux 5.16 and later)",
                p.program, p.instructions, p.processed
            ));
        } else if p.processed > result.budget() {
            faults.push(format!(
                "{}: the verifier processed {} instructions ({:.2}% of the kernel's limit of {}), \
                 over half of the limit ({}); simplify the program or split it with a tail call",
                p.program,
                p.processed,
                result.share(p.processed),
                result.limit,
                result.budget()
            ));
        }
    }
    anyhow::ensure!(faults.is_empty(), "{}", faults.join("; "));
    Ok(())
}

/// The result as a Markdown table, one row per program.
pub(crate) fn markdown(r: &VerifierResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| program | instructions | of the {} limit | processed by the verifier | of the limit |",
        limit(r.limit)
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for p in &r.programs {
        let _ = writeln!(
            out,
            "| `{}` | {} | {:.2}% | {} | {:.2}% |",
            p.program,
            p.instructions,
            r.share(p.instructions),
            p.processed,
            r.share(p.processed)
        );
    }
    out
}

/// `1_000_000` as `1M`, any other limit as it is.
fn limit(limit: u32) -> String {
    if limit.is_multiple_of(1_000_000) {
        format!("{}M", limit / 1_000_000)
    } else {
        limit.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(processed: &[(&str, u32)]) -> VerifierResult {
        VerifierResult {
            kernel: "6.18.0-test".into(),
            limit: 1_000_000,
            build: None,
            programs: processed
                .iter()
                .map(|&(program, processed)| ProgramCost {
                    program: program.into(),
                    instructions: 1234,
                    processed,
                })
                .collect(),
        }
    }

    #[test]
    fn the_table_has_one_row_per_program_with_its_shares() {
        let text = markdown(&result(&[("xdp_lb", 61_234), ("xdp_pass", 2)]));
        assert!(text.starts_with("| program | instructions | of the 1M limit |"));
        assert!(
            text.contains("| `xdp_lb` | 1234 | 0.12% | 61234 | 6.12% |"),
            "{text}"
        );
        assert!(
            text.contains("| `xdp_pass` | 1234 | 0.12% | 2 | 0.00% |"),
            "{text}"
        );
    }

    #[test]
    fn half_the_limit_passes_and_one_more_names_the_program() {
        check(&result(&[("xdp_lb", 500_000), ("xdp_pass", 2)])).unwrap();
        let err = check(&result(&[("xdp_pass", 2), ("xdp_lb", 500_001)])).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with("xdp_lb: the verifier processed 500001"),
            "{text}"
        );
        assert!(!text.contains("xdp_pass"), "{text}");
    }

    #[test]
    fn a_program_without_counts_fails_the_check() {
        let err = check(&result(&[("xdp_lb", 0)])).unwrap_err();
        assert!(format!("{err:#}").contains("xdp_lb: the kernel reported"));
        assert!(check(&result(&[])).is_err());
    }

    #[test]
    fn json_keeps_every_field() {
        let r = result(&[("xdp_lb", 61_234)]);
        let back: VerifierResult =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
