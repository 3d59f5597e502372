//! The report on small hand-written documents shaped like the real ones
//! (fields the report does not read included, as the tools write them).

use std::path::Path;

use serde_json::json;

use super::*;

const PROG: &str = r#"{
  "tool": "xlb-bench prog",
  "build": { "commit": "0123456789abcdef0123456789abcdef01234567", "dirty": false,
             "datapath_sha256": "5e1f" },
  "unit": "ns/packet",
  "methods": { "a": "method A text", "b": "repeat runs per call through xdp_bench" },
  "setup": { "kernel": "6.18.0-test", "rounds": 5, "repeat": 1000, "calls": 1000, "seed": 1,
             "conntrack_entries": 4096, "table_size": 509, "backends_per_service": 3 },
  "rows": [
    { "services": 1, "scale_flows": 1, "case": "floor", "flows": 1,
      "method_a": null,
      "method_b": { "runs_ns": [40.0, 41.0, 39.0], "floor_ns": [], "packets_per_run": 1000 },
      "method_a_summary": null,
      "method_b_summary": { "median": 40.0, "min": 39.0, "max": 41.0, "p10": 39.0, "p90": 41.0 },
      "method_a_over_floor": null, "method_b_over_floor": 1.0 },
    { "services": 1, "scale_flows": 1, "case": "conntrack_hit", "flows": 1,
      "method_a": null,
      "method_b": { "runs_ns": [200.0], "floor_ns": [40.0], "packets_per_run": 1000 },
      "method_a_summary": null,
      "method_b_summary": { "median": 200.0, "min": 200.0, "max": 200.0, "p10": 200.0, "p90": 200.0 },
      "method_a_over_floor": null, "method_b_over_floor": 5.0 },
    { "services": 1, "scale_flows": 100000, "case": "floor", "flows": 1,
      "method_a": null, "method_b": null, "method_a_summary": null,
      "method_b_summary": { "median": 45.0, "min": 45.0, "max": 45.0, "p10": 45.0, "p90": 45.0 },
      "method_a_over_floor": null, "method_b_over_floor": 1.0 },
    { "services": 1, "scale_flows": 100000, "case": "conntrack_hit", "flows": 100002,
      "method_a": null, "method_b": null, "method_a_summary": null,
      "method_b_summary": { "median": 250.0, "min": 240.0, "max": 260.0, "p10": 240.0, "p90": 260.0 },
      "method_a_over_floor": null, "method_b_over_floor": 5.55 },
    { "services": 1000, "scale_flows": 100000, "case": "floor", "flows": 1,
      "method_a": null, "method_b": null, "method_a_summary": null,
      "method_b_summary": { "median": 55.0, "min": 55.0, "max": 55.0, "p10": 55.0, "p90": 55.0 },
      "method_a_over_floor": null, "method_b_over_floor": 1.0 },
    { "services": 1000, "scale_flows": 100000, "case": "conntrack_hit", "flows": 100000,
      "method_a": null, "method_b": null, "method_a_summary": null,
      "method_b_summary": { "median": 300.0, "min": 290.0, "max": 310.0, "p10": 290.0, "p90": 310.0 },
      "method_a_over_floor": null, "method_b_over_floor": 7.27 }
  ],
  "targets": [
    { "what": "conntrack hit (TCP ACK) ≤ 5.4× floor", "services": "1 (hot)",
      "measured": 5.0, "limit": 5.4, "aim": 4.0, "pass": true },
    { "what": "conntrack hit (TCP ACK): 1000 services (100000 flows) within 15% of 1 (100002 flows)",
      "services": "1000 vs 1", "measured": 1.31, "limit": 1.15, "aim": null, "pass": false }
  ]
}"#;

/// As `verifier::run` writes it: `xdp_lb` within budget, `xdp_sink` over.
const VERIFIER: &str = r#"{
  "kernel": "6.18.0-verifier",
  "limit": 1000000,
  "programs": [
    { "program": "xdp_lb", "instructions": 5120, "processed": 61234 },
    { "program": "xdp_sink", "instructions": 12, "processed": 700000 }
  ]
}"#;

const SYNC_SMALL: &str = r#"{
  "services": 100, "backends_per_service": 10, "file_bytes": 20000, "parse_seconds": 0.002,
  "full_sync_seconds": 0.0126,
  "full_sync": { "backends_written": 1000, "tables_swapped": 100, "frontends_written": 100, "addresses_written": 10 },
  "changes": 50, "change_p50_ms": 0.042, "change_p99_ms": 0.187, "change_max_ms": 0.3,
  "changes_patched": 40, "changes_swapped": 10,
  "baselines": {
    "nft_version": "nftables v1.1.3 (Commodore Bullmoose #4)",
    "iptables_version": "iptables v1.8.11 (nf_tables)",
    "nftables": { "full_load_command": "nft -f", "ruleset_bytes": 50000, "full_load_seconds": 0.25,
                  "full_load_timed_out": false, "change_command": "nft -f", "change_bytes": 300,
                  "changes": 20, "change_p50_ms": 3.5, "change_p99_ms": 9.75, "change_max_ms": 10.0 },
    "iptables": { "full_load_command": "iptables-restore --noflush", "ruleset_bytes": 90000,
                  "full_load_seconds": 180.0, "full_load_timed_out": true,
                  "change_command": "iptables-restore --noflush", "change_bytes": 0,
                  "changes": 0, "change_p50_ms": 0.0, "change_p99_ms": 0.0, "change_max_ms": 0.0 }
  }
}"#;

const SYNC_LARGE: &str = r#"{
  "build": { "commit": "89abcdef0123456789abcdef0123456789abcdef", "dirty": true,
             "datapath_sha256": "5e1f" },
  "services": 10000, "backends_per_service": 10, "file_bytes": 2000000, "parse_seconds": 0.2,
  "full_sync_seconds": 1.375,
  "full_sync": { "backends_written": 100000, "tables_swapped": 10000, "frontends_written": 10000, "addresses_written": 10 },
  "changes": 500, "tracked_flows": 400000,
  "change_p50_ms": 0.061, "change_p99_ms": 0.412, "change_max_ms": 1.0,
  "changes_patched": 400, "changes_swapped": 100,
  "baselines": null
}"#;

/// One rig sample as `rig::report::Sample` serializes it.
fn sample(
    round: u32,
    mode: &str,
    services: u32,
    (workload, sink): (&str, Option<&str>),
    delivered: u64,
    latency: Option<[u64; 3]>,
) -> serde_json::Value {
    json!({
        "round": round, "mode": mode, "services": services, "workload": workload, "sink": sink,
        "sent": delivered, "delivered": delivered, "errors": round + 1, "seconds": 2.0,
        "softirq_ticks": delivered / 10_000,
        "latency_us": latency.map(|[p50, p99, p999]| json!({ "p50": p50, "p99": p99, "p999": p999 })),
        "xlb_verdicts": if mode == "xlb" { json!({ "tx": delivered }) } else { json!(null) },
    })
}

fn rig_document() -> String {
    let mut samples = Vec::new();
    for round in 0..2 {
        for services in [1, 100] {
            // Forward's rate differs between rounds, so that its median is
            // the mean of the two.
            let forward = if round == 0 { 2_000_000 } else { 2_200_000 };
            for (mode, delivered) in [
                ("forward", forward),
                ("xlb", 1_000_000),
                ("nftables", 500_000 / u64::from(services)),
            ] {
                let new = |sink| ("udp-new", Some(sink));
                let established = |sink| ("udp-established", Some(sink));
                samples.push(sample(round, mode, services, new("stack"), delivered, None));
                samples.push(sample(
                    round,
                    mode,
                    services,
                    new("xdp"),
                    delivered * 3,
                    None,
                ));
                for sink in ["stack", "xdp"] {
                    let (w, d) = (established(sink), delivered * 2);
                    samples.push(sample(round, mode, services, w, d, None));
                }
                let r = u64::from(round);
                let latency = [100 + 20 * r, 500 + 200 * r, 900 + 200 * r];
                let crr = ("tcp-crr", None);
                samples.push(sample(round, mode, services, crr, 20_000, Some(latency)));
                // 5 Gbit/s: 1.25 GB in 2 s.
                let stream = ("tcp-stream", None);
                samples.push(sample(round, mode, services, stream, 1_250_000_000, None));
            }
        }
    }
    json!({
        "build": { "commit": "unknown", "dirty": null, "datapath_sha256": "5e1f" },
        "setup": { "kernel": "6.18.0-rig", "cpus": 2, "seconds": 2.0, "rounds": 2, "crr_clients": 2,
                   "tick_ns": 10_000_000.0, "iptables": "iptables v1.8.11 (nf_tables)" },
        "samples": samples,
    })
    .to_string()
}

fn machine() -> Machine {
    Machine {
        date: "2025-06-30".into(),
        kernel: "6.18.0-here".into(),
        cpus: 2,
        cpu_model: "Test CPU @ 2.0GHz".into(),
        memory_gib: Some(24.0),
    }
}

fn args(dir: &Path) -> ReportArgs {
    ReportArgs {
        maglev: None,
        verifier: Some(dir.join("verifier.json")),
        prog: Some(dir.join("prog.json")),
        sync: vec![dir.join("sync-10000.json"), dir.join("sync-100.json")],
        rig: Some(dir.join("rig.json")),
        out: dir.join("BENCHMARKS.md"),
        plots: dir.join("docs/bench"),
        notes: Some(dir.join("notes.md")),
    }
}

/// Writes every input into `dir` and generates the report there.
fn full_report(dir: &Path) -> String {
    std::fs::write(dir.join("prog.json"), PROG).unwrap();
    std::fs::write(dir.join("verifier.json"), VERIFIER).unwrap();
    std::fs::write(dir.join("sync-100.json"), SYNC_SMALL).unwrap();
    std::fs::write(dir.join("sync-10000.json"), SYNC_LARGE).unwrap();
    std::fs::write(dir.join("rig.json"), rig_document()).unwrap();
    std::fs::write(dir.join("notes.md"), "## Notes\n\nWritten by hand.\n").unwrap();
    let args = args(dir);
    let inputs = Inputs::load(&args).unwrap();
    generate(&args, &inputs, &machine()).unwrap()
}

fn assert_has(text: &str, needle: &str) {
    assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
}

#[test]
fn report_header_names_the_files_the_command_and_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let text = full_report(dir.path());
    let d = dir.path().display();
    assert_has(
        &text,
        &format!(
            "# xlb benchmarks\n\nThis file was generated by `xlb-bench report --verifier \
             {d}/verifier.json --prog {d}/prog.json --sync {d}/sync-10000.json --sync \
             {d}/sync-100.json --rig {d}/rig.json --out {d}/BENCHMARKS.md --plots {d}/docs/bench \
             --notes {d}/notes.md` from `{d}/verifier.json` (`xlb-bench verifier`, build not \
             recorded), `{d}/prog.json` (`xlb-bench prog`, commit 0123456789ab), \
             `{d}/sync-10000.json` (`xlb-bench sync`, commit 89abcdef0123 with uncommitted \
             changes), `{d}/sync-100.json` (`xlb-bench sync`, build not recorded), \
             `{d}/rig.json` (`xlb-bench rig`, built outside a git checkout); "
        ),
    );
    assert_has(
        &text,
        "Generated on 2025-06-30 (UTC) on Linux 6.18.0-here, 2 CPUs (Test CPU @ 2.0GHz), 24.0 GiB of memory.",
    );
    assert!(
        text.ends_with("## Notes\n\nWritten by hand.\n"),
        "the notes close the file"
    );
}

#[test]
fn report_header_states_only_what_the_inputs_record() {
    let dir = tempfile::tempdir().unwrap();
    let maglev = crate::maglev::MaglevResult {
        size: 1021,
        backends: 10,
        active: 10,
        seed: 0,
        runs: 3,
        build_ms_median: 0.01,
        build_ms_min: 0.01,
        build_ms_max: 0.02,
        slots_min: 102,
        slots_max: 103,
        max_deviation_pct: 0.9,
        changes: Vec::new(),
        build: Some(crate::build_id::BuildId {
            commit: "fedcba9876543210fedcba9876543210fedcba98".to_owned(),
            dirty: Some(false),
            datapath_sha256: "5e1f".to_owned(),
        }),
    };
    let path = dir.path().join("maglev.json");
    std::fs::write(&path, serde_json::to_string(&maglev).unwrap()).unwrap();
    let args = ReportArgs {
        maglev: Some(path.clone()),
        verifier: None,
        prog: None,
        sync: Vec::new(),
        rig: None,
        out: dir.path().join("BENCHMARKS.md"),
        plots: dir.path().join("plots"),
        notes: None,
    };
    let inputs = Inputs::load(&args).unwrap();
    let text = generate(&args, &inputs, &machine()).unwrap();
    let header = text.split("\n## ").next().unwrap();
    assert_has(
        header,
        &format!(
            "`{}` (`xlb-bench maglev`, M = 1021, 10 backends, commit fedcba987654)",
            path.display()
        ),
    );
    // Not the settings of `make bench`'s run, nor a claim that it ran.
    assert!(!header.contains("--backends 1000"), "{header}");
    assert!(!header.contains("65537"), "{header}");
    assert!(!header.contains("generated by `make bench`"), "{header}");
}

#[test]
fn report_prog_section_has_cases_by_scale_and_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let text = full_report(dir.path());
    assert_has(&text, "`xlb-bench prog` on kernel 6.18.0-test");
    assert_has(
        &text,
        "| case | 1 service, 1 flow (hot) | 1 service, 100000 flows | 1000 services, 100000 flows |",
    );
    assert_has(
        &text,
        "| floor (`xdp_floor`) | 40 ns, 1.00× | 45 ns, 1.00× | 55 ns, 1.00× |",
    );
    assert_has(
        &text,
        "| conntrack hit (TCP ACK) | 200 ns, 5.00× | 250 ns, 5.55× | 300 ns, 7.27× |",
    );
    assert_has(
        &text,
        "| conntrack hit (TCP ACK) ≤ 5.4× floor | 1 (hot) | 5.00× | 5.4× | pass (aim 4× missed) |",
    );
    assert_has(&text, "| 1000 vs 1 | 1.31× | 1.15× | FAIL |");
    assert_has(&text, "](docs/bench/prog-ns-per-packet.svg)");
}

/// A prog document with direct-server-return rows, as `xlb-bench prog`
/// writes them.
fn prog_with_dsr() -> Prog {
    let summary = |median: f64| json!({ "median": median, "min": median, "max": median, "p10": median, "p90": median });
    let row = |case: &str, b: (f64, f64)| {
        json!({
            "services": 1, "scale_flows": 1, "case": case, "flows": 1,
            "method_a": null, "method_b": null,
            "method_b_summary": summary(b.0),
            "method_b_over_floor": b.1,
        })
    };
    let document = json!({
        "tool": "xlb-bench prog",
        "unit": "ns/packet",
        "methods": { "a": "one run per call", "b": "through xdp_bench" },
        "setup": { "kernel": "6.18.0-test", "rounds": 3, "repeat": 1000, "calls": 1000,
                   "seed": 1, "conntrack_entries": 4096, "table_size": 509,
                   "backends_per_service": 3 },
        "rows": [
            row("floor", (30.0, 1.0)),
            row("new_tcp_flow", (180.0, 6.0)),
            row("conntrack_hit", (120.0, 4.0)),
            row("dsr_new_tcp_flow", (150.0, 5.0)),
            row("dsr_conntrack_hit", (125.0, 4.2)),
        ],
        "targets": [],
    });
    serde_json::from_value(document).unwrap()
}

#[test]
fn report_prog_section_shows_dsr_rows_with_the_others() {
    let mut text = String::new();
    prog::section(&mut text, Some(&prog_with_dsr()), None).unwrap();
    assert_has(
        &text,
        "a TCP and a UDP frontend and a direct-server-return (DSR) TCP frontend, 3 backends",
    );
    assert_has(
        &text,
        "| conntrack hit (TCP ACK) | 120 ns, 4.00× |\n| DSR new TCP flow (SYN, IPIP) | 150 ns, 5.00× |\n\
         | DSR conntrack hit (TCP ACK, IPIP) | 125 ns, 4.20× |",
    );
}

#[test]
fn report_verifier_section_has_every_program_and_the_failed_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = full_report(dir.path());
    // After the datapath's ns/packet, before the Maglev tables.
    let at = |s: &str| {
        text.find(s)
            .unwrap_or_else(|| panic!("no {s:?} in:\n{text}"))
    };
    let section = at("## Verifier: the cost of every program");
    assert!(at("## Datapath: ns/packet") < section && section < at("## Maglev tables"));
    assert_has(&text, "`xlb-bench verifier` on kernel 6.18.0-verifier");
    assert_has(&text, "| `xdp_lb` | 5120 | 0.51% | 61234 | 6.12% |");
    assert_has(&text, "| `xdp_sink` | 12 | 0.00% | 700000 | 70.00% |");
    assert_has(
        &text,
        "**The check failed**: xdp_sink: the verifier processed 700000 instructions",
    );
}

#[test]
fn report_sync_section_has_each_n_beside_kube_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let text = full_report(dir.path());
    // Sorted by N whatever the order of the options.
    let small = text.find("| 100 | 10 | 0.013 s").unwrap();
    let large = text.find("| 10000 | 10 | 1.375 s").unwrap();
    assert!(small < large);
    assert_has(
        &text,
        "| 100 | 10 | 0.013 s | 0.042 / 0.187 ms (50 changes) | 0.250 s | did not finish in 180 s |",
    );
    assert_has(
        &text,
        "| 10000 | 10 | 1.375 s | 0.061 / 0.412 ms (500 changes, 400000 tracked flows) | not measured | not measured |",
    );
    assert_has(&text, "| 100 | 3.500 / 9.750 ms (20 changes) | — |");
    assert_has(&text, "`nftables v1.1.3 (Commodore Bullmoose #4)`");
    assert_has(&text, "](docs/bench/sync-change-p99.svg)");
}

#[test]
fn report_rig_section_has_medians_ratios_softirq_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let text = full_report(dir.path());
    assert_has(
        &text,
        "Kernel 6.18.0-rig, 2 CPUs; 2 round(s) of 2.0 s per measurement",
    );
    assert_has(
        &text,
        "| services | workload | forward | xlb | nftables | xlb / forward | xlb / nftables |",
    );
    // Rates: forward (1.0 M + 1.1 M) / 2, xlb 0.5 M, nftables 0.25 M per s.
    assert_has(
        &text,
        "| 1 | UDP, new flows, stack sink | 1050 kpps | 500 kpps | 250 kpps | 0.48× | 2.00× |",
    );
    assert_has(
        &text,
        "| 1 | UDP, new flows, XDP sink | 3150 kpps | 1500 kpps | 750 kpps | 0.48× | 2.00× |",
    );
    assert_has(
        &text,
        "| 100 | UDP, new flows, stack sink | 1050 kpps | 500 kpps | 2.50 kpps | 0.48× | 200.00× |",
    );
    assert_has(
        &text,
        "| 1 | UDP, established flows, XDP sink | 2100 kpps | 1000 kpps | 500 kpps | 0.48× | 2.00× |",
    );
    assert_has(
        &text,
        "| 1 | TCP connect/request/close | 10000/s | 10000/s | 10000/s | 1.00× | 1.00× |",
    );
    assert_has(
        &text,
        "| 1 | TCP stream, offloads as each mode leaves them | 5.00 Gbit/s | 5.00 Gbit/s | 5.00 Gbit/s | 1.00× | 1.00× |",
    );
    // Each mode over forward: xlb 500 / 1050, nftables 250 / 1050.
    assert_has(
        &text,
        "| services | workload | xlb / forward | nftables / forward |",
    );
    assert_has(&text, "| 1 | UDP, new flows, stack sink | 0.48× | 0.24× |");
    // Streams are in the rate, over-forward and softirq tables (the last
    // per 1500 bytes).
    assert_eq!(text.matches("| 1 | TCP stream").count(), 3, "{text}");
    // Softirq: delivered / 10 000 ticks of 10 ms each = 1000 ns per packet.
    assert_has(
        &text,
        "| 1 | UDP, new flows, stack sink | 1000 | 1000 | 1000 |",
    );
    // Latency: medians over the two rounds; failed connections 1 + 2.
    // Veth drops: these samples, like older files, do not record them.
    assert_has(&text, "| 1 | xlb | 110 | 600 | 1000 | 3 | — |");
    assert_has(&text, "| 100 | nftables | 110 | 600 | 1000 | 3 | — |");
    assert_has(&text, "](docs/bench/rig-udp-throughput.svg)");
}

#[test]
fn report_writes_well_formed_svg_plots() {
    let dir = tempfile::tempdir().unwrap();
    full_report(dir.path());
    for name in [PROG_PLOT, SYNC_PLOT, RIG_PLOT] {
        let path = dir.path().join("docs/bench").join(name);
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(
            svg.starts_with("<svg"),
            "{name}: {}",
            &svg[..svg.len().min(80)]
        );
        assert!(svg.trim_end().ends_with("</svg>"), "{name}");
        assert!(svg.contains("<text"), "{name}: no text");
        assert!(svg.contains("services"), "{name}: no axis label");
    }
    let rig = std::fs::read_to_string(dir.path().join("docs/bench").join(RIG_PLOT)).unwrap();
    for legend in [
        "forward",
        "xlb",
        "nftables",
        "UDP, new flows",
        "UDP, established flows",
    ] {
        assert!(rig.contains(legend), "rig plot lacks {legend}");
    }
}

#[test]
fn report_sections_not_given_say_how_to_measure_and_draw_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("verifier.json"), VERIFIER).unwrap();
    let plots = dir.path().join("plots");
    std::fs::create_dir_all(&plots).unwrap();
    // A plot an earlier run left goes away with its section.
    std::fs::write(plots.join(RIG_PLOT), "<svg></svg>").unwrap();
    let args = ReportArgs {
        maglev: None,
        verifier: Some(dir.path().join("verifier.json")),
        prog: None,
        sync: Vec::new(),
        rig: None,
        out: dir.path().join("BENCHMARKS.md"),
        plots,
        notes: None,
    };
    let inputs = Inputs::load(&args).unwrap();
    let text = generate(&args, &inputs, &machine()).unwrap();
    // Maglev, prog, sync and rig: their options were not given.
    assert_eq!(
        text.matches("Not measured in this run.").count(),
        4,
        "{text}"
    );
    assert_has(
        &text,
        "`target/release/xlb-bench prog --json target/xlb-bench-prog.json`",
    );
    assert_has(&text, "`xlb-bench report --rig target/xlb-bench-rig.json`");
    assert!(!text.contains("!["), "{text}");
    assert_eq!(std::fs::read_dir(&args.plots).unwrap().count(), 0);
}

/// `ReportArgs` as clap parses `xlb-bench report ARGS`.
fn parse_report(args: &[&str]) -> Result<ReportArgs, clap::Error> {
    use clap::Parser as _;
    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        report: ReportArgs,
    }
    Cli::try_parse_from(std::iter::once("report").chain(args.iter().copied())).map(|c| c.report)
}

#[test]
fn report_without_any_input_is_refused() {
    let err = parse_report(&["--out", "x.md"]).unwrap_err();
    assert_eq!(
        err.kind(),
        clap::error::ErrorKind::MissingRequiredArgument,
        "{err}"
    );
    parse_report(&["--sync", "a.json", "--sync", "b.json"]).unwrap();
    // Built by hand rather than parsed, the arguments are refused too.
    let mut args = parse_report(&["--rig", "rig.json"]).unwrap();
    args.rig = None;
    let err = format!("{:#}", Inputs::load(&args).unwrap_err());
    assert_has(&err, "no input: give at least one of --maglev");
}

#[test]
fn report_of_a_named_input_not_there_fails_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("verifier.json"), VERIFIER).unwrap();
    std::fs::write(dir.path().join("notes.md"), "## Notes\n").unwrap();
    let plots = dir.path().join("plots");
    std::fs::create_dir_all(&plots).unwrap();
    std::fs::write(plots.join(RIG_PLOT), "<svg></svg>").unwrap();
    let good = ReportArgs {
        maglev: None,
        verifier: Some(dir.path().join("verifier.json")),
        prog: None,
        sync: Vec::new(),
        rig: None,
        out: dir.path().join("BENCHMARKS.md"),
        plots: plots.clone(),
        notes: Some(dir.path().join("notes.md")),
    };
    let missing = dir.path().join("no-such.json");
    let cases = [
        ReportArgs {
            prog: Some(missing.clone()),
            ..good.clone()
        },
        ReportArgs {
            sync: vec![missing.clone()],
            ..good.clone()
        },
        ReportArgs {
            rig: Some(missing.clone()),
            ..good.clone()
        },
        ReportArgs {
            maglev: Some(missing.clone()),
            ..good.clone()
        },
        ReportArgs {
            verifier: Some(missing.clone()),
            ..good.clone()
        },
        ReportArgs {
            notes: Some(missing.clone()),
            ..good.clone()
        },
    ];
    for args in cases {
        let err = format!("{:#}", run(&args).unwrap_err());
        assert_has(&err, &format!("reading {}", missing.display()));
        assert!(!args.out.exists(), "{args:?} wrote {}", args.out.display());
        assert!(plots.join(RIG_PLOT).exists(), "{args:?} removed a plot");
    }
    // The same arguments with every file there do write the report.
    run(&good).unwrap();
    assert!(good.out.exists());
}

#[test]
fn rig_files_from_before_sinks_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rig.json");
    let mut document: serde_json::Value = serde_json::from_str(&rig_document()).unwrap();
    for sample in document["samples"].as_array_mut().unwrap() {
        sample.as_object_mut().unwrap().remove("sink");
    }
    std::fs::write(&path, document.to_string()).unwrap();
    let rig = inputs::load::<crate::rig::report::Json>(&path).unwrap();
    assert!(rig.samples.iter().all(|s| s.sink.is_none()));
    let mut text = String::new();
    rig::section(&mut text, Some(&rig), None).unwrap();
    assert_has(&text, "| 1 | UDP, new flows | ");
}

#[test]
fn a_malformed_input_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prog.json");
    std::fs::write(&path, r#"{ "rows": 3 }"#).unwrap();
    let err = inputs::load::<Prog>(&path).unwrap_err();
    assert!(format!("{err:#}").contains("parsing"), "{err:#}");
}

#[test]
fn a_figure_null_or_absent_is_an_error_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.json");
    // A run writes a NaN as null.
    std::fs::write(
        &path,
        SYNC_LARGE.replace("\"change_p99_ms\": 0.412", "\"change_p99_ms\": null"),
    )
    .unwrap();
    let err = format!("{:#}", inputs::load::<Sync>(&path).unwrap_err());
    assert!(
        err.contains("change_p99_ms: invalid type: null, expected f64"),
        "{err}"
    );
    std::fs::write(&path, SYNC_LARGE.replace("\"change_p99_ms\": 0.412,", "")).unwrap();
    let err = format!("{:#}", inputs::load::<Sync>(&path).unwrap_err());
    assert!(err.contains("missing field `change_p99_ms`"), "{err}");
}

#[test]
fn plot_links_are_relative_to_the_markdown() {
    assert_eq!(
        relative(Path::new("/repo"), Path::new("/repo/docs/bench")),
        "docs/bench"
    );
    assert_eq!(
        relative(Path::new("/repo/docs"), Path::new("/repo/plots")),
        "../plots"
    );
    assert_eq!(relative(Path::new("/repo"), Path::new("/repo")), "");
}

#[test]
fn a_prog_document_without_rows_says_so() {
    let mut prog: Prog = serde_json::from_str(PROG).unwrap();
    prog.rows.clear();
    prog.targets.clear();
    let mut text = String::new();
    prog::section(&mut text, Some(&prog), None).unwrap();
    assert_has(
        &text,
        "The `xlb-bench prog` document (kernel 6.18.0-test) has no rows: it holds no measured case.",
    );
    assert!(!text.contains("--method a"), "{text}");
    assert!(!text.contains("| case |"), "{text}");
}

#[test]
fn prog_figures_no_run_measures_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prog.json");
    let hit = r#""median": 200.0, "min": 200.0"#;
    for (bad, field) in [
        (
            r#""median": -1.7976931348623157e308, "min": 200.0"#,
            "method_b_summary.median",
        ),
        (r#""median": -5.0, "min": 200.0"#, "method_b_summary.median"),
        (
            r#""median": 1e300, "min": 200.0"#,
            "method_b_summary.median",
        ),
    ] {
        std::fs::write(&path, PROG.replacen(hit, bad, 1)).unwrap();
        let err = format!("{:#}", inputs::load_prog(&path).unwrap_err());
        assert!(
            err.contains(&format!(
                "rows[1] (conntrack_hit at 1 service(s), 1 flow(s)): {field}"
            )),
            "{err}"
        );
        assert!(err.contains("no figure `xlb-bench prog` measures"), "{err}");
        assert!(err.len() < 400, "{err}");
    }
    std::fs::write(
        &path,
        PROG.replacen("\"measured\": 5.0", "\"measured\": -5.0", 1),
    )
    .unwrap();
    let err = format!("{:#}", inputs::load_prog(&path).unwrap_err());
    assert!(err.contains("targets[0] (conntrack hit (TCP ACK) ≤ 5.4× floor): measured"));
    std::fs::write(&path, PROG).unwrap();
    inputs::load_prog(&path).unwrap();
}

/// `document` with the value at `pointer` (RFC 6901) replaced by `value`, or
/// removed when `value` is `None`, written to `path`.
fn write_changed(path: &Path, document: &str, pointer: &str, value: Option<serde_json::Value>) {
    let mut document: serde_json::Value = serde_json::from_str(document).unwrap();
    match value {
        Some(value) => *document.pointer_mut(pointer).expect(pointer) = value,
        None => {
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let parent = document.pointer_mut(parent).expect(parent);
            parent.as_object_mut().unwrap().remove(key).expect(key);
        }
    }
    std::fs::write(path, document.to_string()).unwrap();
}

#[test]
fn sync_figures_no_run_measures_are_refused_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sync.json");
    std::fs::write(&path, SYNC_SMALL).unwrap();
    inputs::load_sync(&path).unwrap();
    for (pointer, value, expected) in [
        (
            "/full_sync_seconds",
            json!(-0.5),
            "full_sync_seconds: -0.5 is no figure `xlb-bench sync` measures: its durations run \
             from 0 to 86400 s",
        ),
        (
            "/full_sync_seconds",
            json!(86_401.0),
            "full_sync_seconds: 86401.0 is no figure",
        ),
        (
            "/change_p99_ms",
            json!(1e300),
            "change_p99_ms: 1e300 is no figure",
        ),
        (
            "/change_p99_ms",
            json!(60_100.0),
            "change_p99_ms: 60100.0 is no figure",
        ),
        (
            "/change_p50_ms",
            json!(5.0),
            "change_p50_ms: 5 is above change_p99_ms, 0.187: no run measures that",
        ),
        (
            "/baselines/nftables/full_load_seconds",
            json!(-1.0),
            "baselines.nftables.full_load_seconds: -1.0 is no figure",
        ),
        (
            "/baselines/nftables/change_p99_ms",
            json!(1e12),
            "baselines.nftables.change_p99_ms: 1000000000000.0 is no figure",
        ),
        // No JSON number is NaN: a run writes NaN as null.
        (
            "/change_p50_ms",
            json!(null),
            "change_p50_ms: invalid type: null, expected f64",
        ),
    ] {
        write_changed(&path, SYNC_SMALL, pointer, Some(value));
        let err = format!("{:#}", inputs::load_sync(&path).unwrap_err());
        assert!(err.contains(expected), "{pointer}: {err}");
    }
    write_changed(&path, SYNC_SMALL, "/full_sync_seconds", None);
    let err = format!("{:#}", inputs::load_sync(&path).unwrap_err());
    assert!(err.contains("missing field `full_sync_seconds`"), "{err}");
    // The most the histograms hold still reads.
    write_changed(&path, SYNC_SMALL, "/change_p99_ms", Some(json!(60_000.0)));
    inputs::load_sync(&path).unwrap();
}

#[test]
fn rig_figures_no_run_measures_are_refused_with_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rig.json");
    let document = rig_document();
    std::fs::write(&path, &document).unwrap();
    inputs::load_rig(&path).unwrap();
    let first = "samples[0] (forward mode, UDP, new flows, stack sink, 1 service(s), round 0)";
    for (pointer, value, expected) in [
        (
            "/samples/0/seconds",
            json!(-2.0),
            format!(
                "{first}: seconds: -2.0 is no figure `xlb-bench rig` measures: a measurement \
                 runs from 0 to 12 s"
            ),
        ),
        // 2 million frames in 1e-300 s.
        (
            "/samples/0/seconds",
            json!(1e-300),
            format!("{first}: delivered over seconds: "),
        ),
        (
            "/samples/0/delivered",
            json!(u64::MAX),
            format!("{first}: delivered: 18446744073709551615 is no count"),
        ),
        // Summed over rounds in the latency table.
        (
            "/samples/4/errors",
            json!(u64::MAX),
            "samples[4] (forward mode, TCP connect/request/close, 1 service(s), round 0): \
             errors: 18446744073709551615 is no count"
                .to_owned(),
        ),
        // 10^7 ticks of 10 ms: 10^5 s in a measurement of 2 s, more than
        // 8192 CPUs have.
        (
            "/samples/0/softirq_ticks",
            json!(10_000_000u64),
            format!("{first}: softirq_ticks × setup.tick_ns: "),
        ),
        (
            "/samples/4/latency_us/p999",
            json!(u64::MAX),
            "latency_us.p999: 18446744073709551615 is no count".to_owned(),
        ),
        (
            "/samples/4/latency_us/p50",
            json!(1000),
            "latency_us.p50, p99, p999: 1000 / 500 / 900 µs are not in order".to_owned(),
        ),
        (
            "/setup/seconds",
            json!(0.0),
            "setup.seconds: 0.0 is no figure".to_owned(),
        ),
        (
            "/setup/seconds",
            json!(61.0),
            "setup.seconds: 61.0 is no figure".to_owned(),
        ),
        (
            "/setup/tick_ns",
            json!(-1.0),
            "setup.tick_ns: -1.0 is no figure".to_owned(),
        ),
        (
            "/samples/0/seconds",
            json!(null),
            "samples[0].seconds: invalid type: null, expected f64".to_owned(),
        ),
    ] {
        write_changed(&path, &document, pointer, Some(value));
        let err = format!("{:#}", inputs::load_rig(&path).unwrap_err());
        assert!(err.contains(&expected), "{pointer}: {err}");
    }
    write_changed(&path, &document, "/samples/0/seconds", None);
    let err = format!("{:#}", inputs::load_rig(&path).unwrap_err());
    assert!(err.contains("samples[0]: missing field `seconds`"), "{err}");
}
