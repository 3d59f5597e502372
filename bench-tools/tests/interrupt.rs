//! `xlb-bench` runs interrupted with SIGINT, as Ctrl-C does: each must stop,
//! remove what it set up (mounts, namespaces, files), and exit with SIGINT's
//! status, saying so. Each run is long enough that only the signal ends it in
//! time, and bounded, should it be ignored.
//!
//! Needs root (network namespaces, BPF, mounts), as `make test` runs.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{SigHandler, Signal, kill, signal},
    unistd::Pid,
};

/// How long a run may take to set up, and to stop once interrupted.
const SET_UP: Duration = Duration::from_secs(60);
const STOP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// A running `xlb-bench`, its stderr in a file.
struct Run {
    child: Child,
    stderr: File,
}

impl Run {
    fn start(args: &[&str]) -> Self {
        let stderr = tempfile::tempfile().expect("a file for stderr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_xlb-bench"));
        command
            .args(args)
            // `prog`'s info too: its "measuring" line marks the end of set-up.
            .env("RUST_LOG", "warn,xlb_bench::prog=info")
            .stdout(std::process::Stdio::null())
            .stderr(stderr.try_clone().unwrap());
        // A test run in the background of a shell without job control has
        // SIGINT ignored, and so would the run (`stop::install` leaves an
        // ignored signal ignored): it gets the default, as at a terminal.
        // SAFETY: signal(2) is async-signal-safe, as required between fork
        // and exec, and the closure touches nothing else.
        unsafe {
            command.pre_exec(|| {
                signal(Signal::SIGINT, SigHandler::SigDfl)
                    .map(drop)
                    .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect("starting xlb-bench");
        Self { child, stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&mut self) -> String {
        let mut text = String::new();
        self.stderr.seek(SeekFrom::Start(0)).unwrap();
        self.stderr.read_to_string(&mut text).unwrap();
        text
    }

    /// Waits until `ready` finds something in the run (given its pid), the
    /// run still going, and returns it.
    fn wait_for<T>(&mut self, what: &str, ready: impl Fn(u32) -> Option<T>) -> T {
        self.wait_until(what, |run| ready(run.pid()))
    }

    /// Waits until the run's log holds `line`, the run still going.
    fn wait_for_log(&mut self, line: &str) {
        self.wait_until(line, |run| run.stderr().contains(line).then_some(()));
    }

    /// [`Self::wait_for`], `ready` given the run itself.
    fn wait_until<T>(&mut self, what: &str, ready: impl Fn(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + SET_UP;
        loop {
            if let Some(found) = ready(self) {
                return found;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ended ({status}) before {what}:\n{}", self.stderr());
            }
            assert!(Instant::now() < deadline, "no {what} after {SET_UP:?}");
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGINT and waits for the run to end.
    fn interrupt(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.pid()).unwrap());
        kill(pid, Signal::SIGINT).expect("sending SIGINT");
        let deadline = Instant::now() + STOP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                // Our own child, by its handle.
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("still running {STOP:?} after SIGINT:\n{}", self.stderr());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Interrupts the run and checks that it said so and exited as SIGINT
    /// ends a process (128 + 2).
    fn interrupt_and_check(&mut self) -> String {
        let status = self.interrupt();
        let stderr = self.stderr();
        assert_eq!(status.code(), Some(130), "{status}:\n{stderr}");
        assert!(
            stderr.contains("Error: interrupted by SIGINT: the run stopped"),
            "{stderr}"
        );
        stderr
    }
}

/// The rig prefix of every name the process `pid` creates (`Rig::id`).
fn rig_prefix(pid: u32) -> String {
    format!("xlb-rig-{pid}-")
}

/// Mount points of the mount table that name one of `pid`'s rigs.
fn mounts_of(pid: u32) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.contains(&rig_prefix(pid)))
        .map(str::to_owned)
        .collect()
}

/// Named network namespaces of `pid`'s rigs.
fn namespaces_of(pid: u32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(&rig_prefix(pid)))
        .collect()
}

/// The children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

const PROG: [&str; 13] = [
    "prog",
    "--services",
    "1",
    "--flows",
    "1",
    "--repeat",
    "256",
    "--calls",
    "256",
    "--runs",
    "100000",
    "--budget-secs",
    "20",
];

#[test]
fn an_interrupted_prog_unmounts_its_bpffs() {
    let mut run = Run::start(&PROG);
    run.wait_for("bpffs mounted", |pid| mounts_of(pid).pop());
    run.interrupt_and_check();
    assert_eq!(mounts_of(run.pid()), Vec::<String>::new());
}

#[test]
fn a_prog_interrupted_inside_a_long_test_run_stops_at_once() {
    // Each BPF_PROG_TEST_RUN call of 50 million runs takes seconds.
    let mut run = Run::start(&[
        "prog",
        "--services",
        "1",
        "--flows",
        "1",
        "--method",
        "b",
        "--cases",
        "conntrack-hit",
        "--repeat",
        "50000000",
        "--conntrack-entries",
        "100000",
        "--runs",
        "1000",
    ]);
    // Measuring: from here every call is one of 50 million runs, and the
    // signal lands inside one.
    run.wait_for_log("every case checked; measuring");
    let started = Instant::now();
    let stderr = run.interrupt_and_check();
    let took = started.elapsed();
    // Not the seconds the call, or the round, has left to run.
    assert!(
        took < Duration::from_secs(1),
        "stopped after {took:?}:\n{stderr}"
    );
    assert!(!stderr.contains("stopped on"), "{stderr}");
    assert_eq!(mounts_of(run.pid()), Vec::<String>::new());
}

#[test]
fn an_interrupted_rig_removes_its_namespaces() {
    let mut run = Run::start(&[
        "rig",
        "--modes",
        "forward",
        "--services",
        "1",
        "--rounds",
        "100",
        "--seconds",
        "0.5",
        "--workloads",
        "udp-new",
        "--sinks",
        "stack",
    ]);
    run.wait_for("rig namespaces", |pid| namespaces_of(pid).pop());
    run.interrupt_and_check();
    assert_eq!(namespaces_of(run.pid()), Vec::<String>::new());
    assert_eq!(mounts_of(run.pid()), Vec::<String>::new());
}

#[test]
fn an_interrupted_sync_removes_its_rulesets() {
    let mut run = Run::start(&[
        "sync",
        "--services",
        "20",
        "--backends",
        "2",
        "--changes",
        "1",
        "--baseline-changes",
        "1000000",
    ]);
    let dir = |pid: u32| -> PathBuf { std::env::temp_dir().join(format!("xlb-bench-sync-{pid}")) };
    run.wait_for("the rulesets' directory", |pid| {
        dir(pid).is_dir().then_some(())
    });
    run.interrupt_and_check();
    assert!(
        !dir(run.pid()).exists(),
        "{} left",
        dir(run.pid()).display()
    );
}

#[test]
fn an_interrupted_pairs_stops_its_run_which_unmounts_its_bpffs() {
    let me = env!("CARGO_BIN_EXE_xlb-bench");
    let mut run = Run::start(&[
        "pairs",
        "--a",
        me,
        "--b",
        me,
        "--pairs",
        "200",
        "--runs",
        "1000",
        "--repeat",
        "256",
        "--cases",
        "conntrack-hit",
    ]);
    // Only the parent is signalled, as `kill` does (a Ctrl-C reaches both):
    // it must pass the request on.
    let prog = run.wait_for("a run's bpffs mounted", |pid| {
        children(pid)
            .into_iter()
            .find(|&c| !mounts_of(c).is_empty())
    });
    run.interrupt_and_check();
    assert_eq!(mounts_of(prog), Vec::<String>::new());
}
