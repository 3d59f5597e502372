//! `xlb-bench`: datapath microbenchmarks, Maglev analysis, traffic rigs and baselines.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build_id;
mod child;
mod exit;
mod kube_proxy;
mod lists;
mod maglev;
mod memory;
mod output;
mod pairs;
mod prog;
mod progress;
mod report;
mod rig;
mod stats;
mod stop;
mod sync;
mod verifier;

#[derive(Debug, Parser)]
#[command(name = "xlb-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a Maglev table and report build time, balance and disruption.
    #[command(after_long_help = exit::WRITING_STATUS)]
    Maglev(maglev::MaglevArgs),
    /// Load every program and report its instruction count and the
    /// verifier's processed-instruction count against the kernel's 1M limit;
    /// fails when a program needs over half of it.
    #[command(after_long_help = exit::VERIFIER_STATUS)]
    Verifier(verifier::VerifierArgs),
    /// Measure the datapath's ns/packet under BPF_PROG_TEST_RUN beside the floor program.
    #[command(after_long_help = exit::MEASURING_STATUS)]
    Prog(prog::ProgArgs),
    /// Compare two builds (two `xlb-bench` binaries): pairs of `prog` runs in
    /// alternating order, at the hot scale and any --services scales, each
    /// row's B over A paired.
    #[command(after_long_help = exit::MEASURING_STATUS)]
    Pairs(pairs::PairsArgs),
    /// Time the control plane: a full sync of N services × B backends from one
    /// file, and the programming latency of single backend changes.
    #[command(after_long_help = exit::MEASURING_STATUS)]
    Sync(sync::SyncArgs),
    /// Measure throughput and latency through an LB namespace in several
    /// modes (xlb, kube-proxy's nftables and iptables rulesets, plain
    /// forwarding), interleaved in one run; `rig sweep` removes what crashed
    /// rigs left behind.
    #[command(after_long_help = exit::MEASURING_STATUS)]
    Rig(rig::RigArgs),
    /// Write BENCHMARKS.md and its SVG plots from the JSON files of `maglev`,
    /// `verifier`, `prog`, `sync` and `rig`, so that `make bench` regenerates
    /// the published figures instead of anyone copying them by hand.
    #[command(after_long_help = exit::WRITING_STATUS)]
    Report(report::ReportArgs),
}

impl Command {
    /// What the run sets up that outlives the process (mounts, namespaces,
    /// temporary files), which it removes in drops: such runs stop at a safe
    /// point on SIGINT or SIGTERM so that the drops run, and say what exiting
    /// at once would leave (`stop`). The others (`None`) have nothing to
    /// remove and keep the signals' default action.
    fn leftovers(&self) -> Option<stop::Leftovers> {
        match self {
            Self::Prog(_) => Some(prog::leftovers()),
            Self::Pairs(args) => Some(pairs::leftovers(args)),
            Self::Sync(_) => Some(sync::leftovers()),
            Self::Rig(args) if !args.is_sweep() => Some(rig::leftovers()),
            Self::Rig(_) | Self::Maglev(_) | Self::Verifier(_) | Self::Report(_) => None,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let leftovers = cli.command.leftovers();
    let result = match &leftovers {
        Some(leftovers) => stop::install(leftovers).and_then(|()| run(cli.command)),
        None => run(cli.command),
    };
    // Only a run with a handler records a signal.
    let after_stop = leftovers.as_ref().map_or("", |l| l.after_stop.as_str());
    let (code, message) = exit::outcome(result, stop::requested(), after_stop);
    if let Some(message) = message {
        #[expect(clippy::print_stderr, reason = "the error a run ended with")]
        {
            eprintln!("{message}");
        }
    }
    ExitCode::from(code)
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Maglev(args) => maglev::run(&args),
        Command::Pairs(args) => pairs::run(&args),
        Command::Prog(args) => prog::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Rig(args) => rig::run(&args),
        Command::Sync(args) => sync::run(&args),
        Command::Verifier(args) => verifier::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    fn long_help(subcommand: &str) -> String {
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut(subcommand)
            .unwrap()
            .render_long_help()
            .to_string();
        // One space between words, wherever clap wrapped the lines.
        help.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xlb-bench").chain(args.iter().copied()))
    }

    #[test]
    fn the_help_states_the_limits_it_enforces() {
        for (subcommand, limits) in [
            ("prog", &["At most 10000000 [default: 100000]"][..]),
            (
                "rig",
                &[
                    "each from 1 to 60000",
                    "more than 0, at most 60",
                    "workload, 1 to 64",
                ],
            ),
            (
                "sync",
                &["At most 131072", "service, 2 to 100", "At most 500000"],
            ),
            ("pairs", &["order), at most 200", "every run, at most 1000"]),
            ("maglev", &["at most 131071 (the largest listed size)"]),
        ] {
            let help = long_help(subcommand);
            for limit in limits {
                assert!(help.contains(limit), "{subcommand}: no {limit:?} in {help}");
            }
        }
        let e = parse(&["maglev", "--backends", "131072"]).unwrap_err();
        assert!(e.to_string().contains("1..=131071"), "{e}");
        parse(&["maglev", "--backends", "131071"]).unwrap();
    }

    #[test]
    fn list_defaults_are_shown_as_the_command_line_takes_them() {
        for (subcommand, flag, default) in [
            ("prog", "--services", "1,1000,100000"),
            ("rig", "--services", "1,1000"),
            (
                "rig",
                "--modes",
                "forward,xlb,nftables,iptables,iptables-legacy",
            ),
            (
                "rig",
                "--workloads",
                "udp-new,udp-established,tcp-crr,tcp-stream,tcp-stream-no-offloads",
            ),
            ("rig", "--sinks", "stack,xdp"),
        ] {
            let help = long_help(subcommand);
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{subcommand} {flag}: {help}"
            );
            // Copied from the help, it parses.
            parse(&[subcommand, flag, default]).unwrap();
        }
    }

    #[test]
    fn every_subcommand_says_what_its_exit_status_means() {
        for subcommand in [
            "maglev", "verifier", "prog", "pairs", "sync", "rig", "report",
        ] {
            let help = long_help(subcommand);
            assert!(help.contains("Exit status: 0 "), "{subcommand}: {help}");
        }
        for measuring in ["prog", "rig"] {
            assert!(
                long_help(measuring).contains("whatever the verdicts of its targets"),
                "{measuring}"
            );
            assert!(long_help(measuring).contains("130 (SIGINT, Ctrl-C) or 143 (SIGTERM)"));
        }
    }

    #[test]
    fn each_run_says_what_exiting_at_once_leaves_and_what_removes_it() {
        let leftovers = |args: &[&str]| parse(args).unwrap().command.leftovers();
        let pid = std::process::id();
        let tmp = std::env::temp_dir();
        let tmp = tmp.display();
        let sweep = "`xlb-bench rig sweep --orphans`";
        // prog and rig: rig objects named after the process, which the
        // sweep removes.
        let prog = leftovers(&["prog"]).unwrap();
        assert!(
            prog.at_once.starts_with(&format!(
                "leaving its private bpffs, with every scale's maps pinned in it, mounted in \
                 {tmp}/xlb-rig-{pid}-*: {sweep}"
            )),
            "{prog:?}"
        );
        let rig = leftovers(&["rig"]).unwrap();
        assert!(
            rig.at_once.contains(&format!("(xlb-rig-{pid}-*)")) && rig.at_once.contains(sweep),
            "{rig:?}"
        );
        // sync: files in the temporary directory, which no sweep removes.
        let sync = leftovers(&["sync"]).unwrap();
        let files = format!("{tmp}/xlb-bench-sync-{pid}");
        assert!(
            sync.at_once
                .contains(&format!("`rm -rf {files} {files}.yaml`")),
            "{sync:?}"
        );
        assert!(!sync.at_once.contains("sweep"), "{sync:?}");
        assert!(sync.after_stop.starts_with("nothing is left"), "{sync:?}");
        // pairs: its runs' JSON and the builds' copies unless --keep keeps
        // them, and the bpffs of the `prog` run a Ctrl-C ends with it.
        let pairs = leftovers(&["pairs", "--a", "a", "--b", "b"]).unwrap();
        let runs = format!("{tmp}/xlb-bench-pairs-{pid}-*");
        assert!(
            pairs
                .at_once
                .contains(&format!("`rm -r {runs}` removes them"))
                && pairs.at_once.contains(sweep),
            "{pairs:?}"
        );
        let kept = leftovers(&["pairs", "--a", "a", "--b", "b", "--keep", "runs"]).unwrap();
        assert!(
            !kept.at_once.contains("rm -r")
                && kept.at_once.ends_with("stay in runs, as --keep asks"),
            "{kept:?}"
        );
        // Nothing to leave: the signals keep their default action.
        for nothing in [
            &["maglev", "--backends", "10"][..],
            &["verifier"],
            &["report", "--prog", "prog.json"],
            &["rig", "sweep", "--orphans"],
        ] {
            assert_eq!(leftovers(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn prog_method_takes_either_case() {
        for method in ["A", "a", "B", "b", "Both", "both"] {
            parse(&["prog", "--method", method]).unwrap();
        }
    }

    #[test]
    fn sync_baselines_and_no_baselines_conflict() {
        let e = parse(&["sync", "--no-baselines", "--baselines"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
        parse(&["sync", "--no-baselines"]).unwrap();
        parse(&["sync", "--baselines"]).unwrap();
    }
}
