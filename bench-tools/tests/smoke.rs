//! Every `xlb-bench` subcommand, run for a few seconds with tiny parameters,
//! so that the tool cannot rot unnoticed between `make bench` runs. The
//! figures are not checked (a smoke run is too short to mean anything); that
//! each subcommand runs to the end and prints its tables is.
//!
//! Needs root (network namespaces, BPF), as `make test` runs.

use std::process::Command;

fn xlb_bench(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xlb-bench"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running xlb-bench");
    assert!(
        out.status.success(),
        "xlb-bench {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn maglev_builds_and_reports() {
    let out = xlb_bench(&["maglev", "--backends", "10", "--size", "251", "--runs", "3"]);
    // The table's row (M, N and its active count), and both changes.
    assert!(out.contains("| 251 | 10 (10) |"), "{out}");
    assert!(out.contains("| remove 198.18.2."), "{out}");
    assert!(
        out.contains("| add 198.18.2.10:8080/TCP (weight 1) |"),
        "{out}"
    );
}

#[test]
fn verifier_reports_every_program() {
    let out = xlb_bench(&["verifier"]);
    // One row per program of the object, each with counts the kernel
    // reported (a zero count fails the command itself).
    for program in ["xdp_lb", "xdp_pass", "xdp_floor", "xdp_bench", "xdp_sink"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("| `{program}` | ")))
            .unwrap_or_else(|| panic!("no {program} row:\n{out}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // ["", program, instructions, %, processed, %, ""]
        assert_eq!(cells.len(), 7, "{row}");
        let count = |i: usize| {
            cells[i]
                .parse::<u32>()
                .unwrap_or_else(|e| panic!("{row}: {e}"))
        };
        let share = |i: usize| format!("{:.2}%", f64::from(count(i)) / 1e4);
        assert!(count(2) > 0 && count(4) > 0, "{row}");
        assert_eq!((cells[3], cells[5]), (&*share(2), &*share(4)), "{row}");
    }
}

#[test]
fn prog_measures_every_case() {
    let out = xlb_bench(&[
        "prog",
        "--method",
        "both",
        "--services",
        "1",
        "--flows",
        "16",
        "--runs",
        "1",
        "--repeat",
        "256",
        "--calls",
        "256",
        "--budget-secs",
        "1",
    ]);
    for case in [
        "floor",
        "new TCP flow",
        "conntrack hit",
        "reply reverse-NAT",
        "non-VIP pass",
        "DSR new TCP flow",
        "DSR conntrack hit",
    ] {
        assert!(out.contains(case), "no {case} row:\n{out}");
    }
}

#[test]
fn pairs_compares_a_build_with_itself() {
    let me = env!("CARGO_BIN_EXE_xlb-bench");
    let out = xlb_bench(&[
        "pairs",
        "--a",
        me,
        "--b",
        me,
        "--pairs",
        "2",
        "--runs",
        "1",
        "--repeat",
        "256",
        "--cases",
        "conntrack-hit",
        "--services",
        "10",
        "--flows",
        "10",
    ]);
    // Both pairs measured the case at both scales, in the table's own words:
    // × floor at the hot scale, ns at the other; and the targets.
    assert!(
        out.contains("| 1 service, 1 flow | conntrack_hit | 2 | "),
        "{out}"
    );
    assert!(
        out.contains("| 10 services, 10 flows | conntrack_hit | 2 | "),
        "{out}"
    );
    assert!(out.contains(" ns |"), "{out}");
    assert!(out.contains("| conntrack hit"), "{out}");
}

#[test]
fn sync_times_a_small_file() {
    let out = xlb_bench(&[
        "sync",
        "--services",
        "20",
        "--backends",
        "2",
        "--changes",
        "5",
        "--flows",
        "1000",
        "--no-baselines",
    ]);
    assert!(
        out.contains("full sync (40 backends, 20 tables, 20 frontends)"),
        "{out}"
    );
    assert!(out.contains("single backend change, p99"), "{out}");
    assert!(
        out.contains("| flows tracked during the changes | 1000 |"),
        "{out}"
    );
}

#[test]
fn rig_measures_every_mode_and_workload() {
    let out = xlb_bench(&[
        "rig",
        "--services",
        "1",
        "--rounds",
        "1",
        "--seconds",
        "0.2",
    ]);
    for row in [
        "UDP, new flows",
        "UDP, established flows",
        "TCP connect/request/close",
    ] {
        assert!(out.contains(row), "no {row} row:\n{out}");
    }
    for mode in ["forward", "xlb", "nftables", "iptables-nft"] {
        assert!(out.contains(mode), "no {mode} column:\n{out}");
    }
}

#[test]
fn rig_sweep_of_orphans_runs() {
    let out = xlb_bench(&["rig", "sweep", "--orphans"]);
    assert!(out.contains("swept:"), "{out}");
}

#[test]
fn report_refuses_to_write_from_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out = dir.path().join("BENCHMARKS.md");
    let plots = dir.path().join("plots");
    let (out_arg, plots_arg) = (out.to_str().unwrap(), plots.to_str().unwrap());
    for inputs in [&[][..], &["--prog", "/nonexistent.json"][..]] {
        let status = Command::new(env!("CARGO_BIN_EXE_xlb-bench"))
            .args(["report", "--out", out_arg, "--plots", plots_arg])
            .args(inputs)
            .env("RUST_LOG", "warn")
            .status()
            .expect("running xlb-bench");
        assert!(!status.success(), "report {inputs:?}: {status}");
        assert!(!out.exists(), "report {inputs:?} wrote {}", out.display());
    }
}
