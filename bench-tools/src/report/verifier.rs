//! The verifier section: `xlb-bench verifier`'s instruction and
//! processed-instruction counts of every program, as that command prints
//! them, and whether its check passed.

use std::fmt::Write as _;

use super::markdown;
use crate::verifier::{VerifierResult, check, markdown as table};

pub(super) fn section(out: &mut String, verifier: Option<&VerifierResult>) -> anyhow::Result<()> {
    writeln!(out, "## Verifier: the cost of every program\n")?;
    let Some(result) = verifier else {
        return markdown::not_measured(
            out,
            "target/release/xlb-bench verifier --json target/xlb-bench-verifier.json",
            "--verifier target/xlb-bench-verifier.json",
            "it loads the datapath's programs",
        );
    };
    writeln!(
        out,
        "`xlb-bench verifier` on kernel {}: every program of the object as loaded, its \
         instructions and the instructions the verifier processed, each in % of the kernel's \
         limit of {} processed instructions per program. The run fails when a program needs \
         more than half of it ({}).\n",
        result.kernel,
        result.limit,
        result.budget()
    )?;
    out.push_str(&table(result));
    // The command writes its JSON before it checks, so a failed run can be
    // reported; say so rather than show its figures as if they had passed.
    if let Err(e) = check(result) {
        writeln!(out, "\n**The check failed**: {e:#}.")?;
    }
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verifier::ProgramCost;

    fn result(processed: u32) -> VerifierResult {
        VerifierResult {
            kernel: "6.18.0-test".into(),
            limit: 1_000_000,
            build: None,
            programs: vec![
                ProgramCost {
                    program: "xdp_lb".into(),
                    instructions: 4_321,
                    processed,
                },
                ProgramCost {
                    program: "xdp_pass".into(),
                    instructions: 2,
                    processed: 2,
                },
            ],
        }
    }

    #[test]
    fn the_section_shows_the_table_and_a_failed_check() {
        let mut out = String::new();
        section(&mut out, Some(&result(61_234))).unwrap();
        assert!(out.contains("on kernel 6.18.0-test"), "{out}");
        assert!(
            out.contains("| `xdp_lb` | 4321 | 0.43% | 61234 | 6.12% |"),
            "{out}"
        );
        assert!(
            out.contains("| `xdp_pass` | 2 | 0.00% | 2 | 0.00% |"),
            "{out}"
        );
        assert!(!out.contains("check failed"), "{out}");

        let mut over = String::new();
        section(&mut over, Some(&result(600_000))).unwrap();
        assert!(
            over.contains("**The check failed**: xdp_lb: the verifier processed 600000"),
            "{over}"
        );

        let mut missing = String::new();
        section(&mut missing, None).unwrap();
        assert!(missing.contains("Not measured in this run"), "{missing}");
        assert!(missing.contains("--verifier target/xlb-bench-verifier.json"));
    }
}
