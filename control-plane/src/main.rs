//! `xlb`: the agent and command-line tool of the xlb load balancer.

fn main() -> std::process::ExitCode {
    control_plane::cli::main()
}
