//! The Maglev section: `xlb-bench maglev`'s table build time, balance and
//! disruption, as that command prints them.

use std::fmt::Write as _;

use crate::maglev::{MaglevResult, markdown};

pub(super) fn section(out: &mut String, maglev: Option<&MaglevResult>) -> anyhow::Result<()> {
    writeln!(out, "## Maglev tables\n")?;
    let Some(result) = maglev else {
        writeln!(
            out,
            "Not measured in this run. To measure it, run `target/release/xlb-bench maglev \
             --backends 1000 --size 65537 --json target/xlb-bench-maglev.json`, then pass the \
             file to `xlb-bench report --maglev target/xlb-bench-maglev.json`. The criterion \
             benchmarks of `consistent-hash` (`cargo bench -p consistent-hash`) compare builds \
             with the paper's pseudocode.\n"
        )?;
        return Ok(());
    };
    writeln!(
        out,
        "`xlb-bench maglev`: one table built {} times (the median and the range), the balance \
         of its slots, and how many slots move when one backend leaves or joins: the least \
         possible (ideal) beside what moved, and the collateral, slots that moved between \
         backends the change did not touch.\n",
        result.runs
    )?;
    out.push_str(&markdown(result));
    writeln!(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::Change;

    #[test]
    fn the_section_shows_the_result_or_how_to_measure_it() {
        let result = MaglevResult {
            size: 65537,
            backends: 1000,
            active: 1000,
            seed: 0,
            runs: 21,
            build_ms_median: 0.89,
            build_ms_min: 0.85,
            build_ms_max: 1.2,
            slots_min: 65,
            slots_max: 66,
            max_deviation_pct: 0.819,
            changes: vec![Change {
                what: "remove 198.18.3.8:8080/TCP".into(),
                moved_pct: 0.71,
                ideal_pct: 0.1,
                collateral_pct: 0.609,
                slots_written: 465,
            }],
            build: None,
        };
        let mut out = String::new();
        section(&mut out, Some(&result)).unwrap();
        assert!(
            out.contains(
                "| 65537 | 1000 (1000) | 0x0 | 890.0 µs (850.0 µs–1.200 ms) | 65–66 | 0.819% |"
            ),
            "{out}"
        );
        assert!(out.contains("| remove 198.18.3.8:8080/TCP | 0.710% | 0.100% | 0.609% | 465 |"));
        let mut missing = String::new();
        section(&mut missing, None).unwrap();
        assert!(missing.contains("Not measured in this run"));
    }
}
