//! `xlb`: the agent and command-line tool of the xlb load balancer.
//!
//! Only the command-line skeleton exists so far: the agent (file and
//! Kubernetes sources, reconciler, admin API) is built by its own issues; see
//! the README's "Status".
use clap::Parser;

/// xlb: XDP-first L4 load balancer and Kubernetes ClusterIP fabric.
///
/// No commands yet: the agent is not built (see the README's "Status").
#[derive(Debug, Parser)]
#[command(name = "xlb", version, arg_required_else_help = true)]
struct Cli {}

fn main() {
    let Cli {} = Cli::parse();
}
