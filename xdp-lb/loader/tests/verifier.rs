//! Every program loads, and the verifier's work on each stays within half of the
//! kernel's 1M processed-instruction limit (DESIGN.md, "Verifier"). The counts are
//! printed; `make test` runs this test once more with `--nocapture` so its output
//! shows how close each program is.
#![expect(clippy::print_stderr, reason = "the report is this test's output")]
use xdp_lb::{Datapath, ProgramName, VERIFIER_INSN_LIMIT};

#[test]
fn every_program_loads_within_half_the_verifier_budget() {
    let datapath = Datapath::load().expect("the kernel accepts every program");
    let report = datapath
        .verifier_report()
        .expect("program info is readable");
    assert_eq!(report.len(), ProgramName::ALL.len());
    for r in &report {
        eprintln!(
            "verifier: {:<10} {:>6} instructions, {:>7} processed ({:.2}% of the limit)",
            r.program.as_str(),
            r.instructions,
            r.processed,
            f64::from(r.processed) * 100.0 / f64::from(VERIFIER_INSN_LIMIT)
        );
        assert!(
            r.instructions > 0,
            "{:?} reports no instructions",
            r.program
        );
        assert!(
            r.processed > 0,
            "{:?}: kernel did not report verified_insns",
            r.program
        );
        assert!(
            r.processed <= VERIFIER_INSN_LIMIT / 2,
            "{:?} needs {} processed instructions, over half the limit",
            r.program,
            r.processed
        );
    }
}
