//! `xlb-bench`: datapath microbenchmarks, Maglev analysis, traffic rigs and baselines.
use clap::{Parser, Subcommand};

mod kube_proxy;
mod maglev;
mod prog;
mod rig;
mod sync;

#[derive(Debug, Parser)]
#[command(name = "xlb-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build a Maglev table and report build time, balance and disruption.
    Maglev(maglev::MaglevArgs),
    /// Measure the datapath's ns/packet under BPF_PROG_TEST_RUN beside the floor program.
    Prog(prog::ProgArgs),
    /// Time the control plane: a full sync of N services × B backends from one
    /// file, and the programming latency of single backend changes.
    Sync(sync::SyncArgs),
    /// Manage netns rigs (e.g. sweep leftovers of a crashed run).
    #[command(subcommand)]
    Rig(rig::RigCommand),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Maglev(args) => maglev::run(&args),
        Command::Prog(args) => prog::run(&args),
        Command::Rig(command) => rig::run(&command),
        Command::Sync(args) => sync::run(&args),
    }
}
