//! `xlb-bench` given input it cannot work with: it must say what is wrong
//! before it measures anything, and never report figures it did not measure.
//! Nothing here needs root: the builds `pairs` compares are shell scripts
//! standing in for `xlb-bench` binaries.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// A `prog --json` document of one hot conntrack hit at 5× the floor.
const PROG_JSON: &str = r#"{
  "methods": { "b": "through xdp_bench" },
  "setup": { "kernel": "test", "rounds": 1, "repeat": 256, "table_size": 251,
             "backends_per_service": 3 },
  "rows": [
    { "services": 1, "scale_flows": 1, "case": "floor",
      "method_b_summary": { "median": 20.0 }, "method_b_over_floor": 1.0 },
    { "services": 1, "scale_flows": 1, "case": "conntrack_hit",
      "method_b_summary": { "median": 100.0 }, "method_b_over_floor": 5.0 }
  ],
  "targets": []
}"#;

fn xlb_bench(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb-bench"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running xlb-bench")
}

/// An executable script `name` in `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A build whose `prog` succeeds and writes `PROG_JSON` where `--json` says.
fn measuring_build(dir: &Path, name: &str) -> PathBuf {
    script(
        dir,
        name,
        &format!(
            "while [ $# -gt 0 ]; do\n\
             [ \"$1\" = --json ] && printf '%s' '{PROG_JSON}' > \"$2\"\n\
             shift\n\
             done"
        ),
    )
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pairs_does_not_report_what_an_earlier_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    for stale in ["a-1.json", "b-1.json"] {
        std::fs::write(keep.join(stale), PROG_JSON).unwrap();
    }
    // Succeeds, and writes nothing.
    let silent = script(dir.path(), "silent", "exit 0");
    let silent = silent.to_str().unwrap();
    let keep = keep.to_str().unwrap();
    let out = xlb_bench(
        dir.path(),
        &[
            "pairs", "--a", silent, "--b", silent, "--pairs", "1", "--keep", keep,
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "reported from stale files:\n{stdout}"
    );
    assert!(
        stderr(&out).contains("holds 2 run(s) of an earlier `xlb-bench pairs`"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout.contains("conntrack_hit"), "{stdout}");
}

#[test]
fn pairs_runs_a_bare_file_name_from_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    measuring_build(dir.path(), "build");
    // Looked up in PATH, `build` would be this one.
    let decoy = dir.path().join("decoy");
    std::fs::create_dir(&decoy).unwrap();
    script(&decoy, "build", "exit 3");
    let path = format!("{}:{}", decoy.display(), std::env::var("PATH").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_xlb-bench"))
        .args(["pairs", "--a", "build", "--b", "build", "--pairs", "1"])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running xlb-bench");
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("| 1 service, 1 flow | conntrack_hit | 1 | 1.000 |"),
        "{stdout}"
    );
}

#[test]
fn a_json_file_that_cannot_be_written_stops_a_run_before_it_measures() {
    let dir = tempfile::tempdir().unwrap();
    let build = measuring_build(dir.path(), "build");
    let build = build.to_str().unwrap();
    // Tiny runs, should one start after all.
    let commands: [&[&str]; 6] = [
        &["maglev", "--backends", "10", "--size", "251", "--runs", "3"],
        &["verifier"],
        &[
            "prog",
            "--services",
            "1",
            "--flows",
            "1",
            "--runs",
            "1",
            "--repeat",
            "256",
            "--calls",
            "256",
            "--budget-secs",
            "1",
        ],
        &[
            "sync",
            "--services",
            "2",
            "--backends",
            "2",
            "--changes",
            "1",
            "--no-baselines",
        ],
        &[
            "rig",
            "--modes",
            "forward",
            "--services",
            "1",
            "--rounds",
            "1",
            "--seconds",
            "0.2",
            "--workloads",
            "udp-new",
            "--sinks",
            "stack",
        ],
        &["pairs", "--a", build, "--b", build, "--pairs", "1"],
    ];
    for command in commands {
        let out = xlb_bench(
            dir.path(),
            &[command, &["--json", "no-such-dir/out.json"]].concat(),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{command:?}: {stdout}");
        assert!(stdout.is_empty(), "{command:?} measured first:\n{stdout}");
        assert!(
            stderr(&out).contains("--json no-such-dir/out.json: there is no directory no-such-dir"),
            "{command:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn pairs_names_a_keep_directory_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let build = measuring_build(dir.path(), "build");
    let build = build.to_str().unwrap();
    std::fs::write(dir.path().join("keep"), "a file").unwrap();
    let out = xlb_bench(
        dir.path(),
        &["pairs", "--a", build, "--b", build, "--keep", "keep"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--keep keep"), "{}", stderr(&out));
}

#[test]
fn prog_refuses_a_repeat_its_new_flow_cases_cannot_run_before_it_sets_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = xlb_bench(
        dir.path(),
        &[
            "prog",
            "--services",
            "1",
            "--flows",
            "1",
            "--runs",
            "1",
            "--repeat",
            "10000000",
        ],
    );
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains("--repeat 10000000 is more than the 55535 runs"),
        "{text}"
    );
}

#[test]
fn prog_refuses_conntrack_tables_beyond_the_machines_memory_when_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let out = xlb_bench(
        dir.path(),
        &[
            "prog",
            "--services",
            "1",
            "--flows",
            "1",
            "--runs",
            "1",
            "--conntrack-entries",
            "4294967295",
        ],
    );
    // clap's status for a value it refused: nothing was set up or loaded.
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let text = stderr(&out);
    assert!(
        text.contains(
            "invalid value '4294967295' for '--conntrack-entries <CONNTRACK_ENTRIES>': the \
             conntrack tables of 4294967295 entries take 1664.0 GiB, more than this machine's"
        ),
        "{text}"
    );
    assert!(text.contains(" entries fit in it"), "{text}");
}
