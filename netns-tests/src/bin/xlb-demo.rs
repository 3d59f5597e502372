//! `make demo`: the xlb agent balancing HTTP in a throwaway netns rig.
//!
//! A client, the load balancer and three backends (`b0`, `b1`, `b2`) running
//! HTTP servers that answer with their own name. The agent (the `xlb` binary
//! next to this one) runs in the LB's namespace on `examples/demo.yaml`
//! (embedded here). The demo sends 30 requests through the VIP and shows the
//! spread, shows `xlb service list` and `xlb stats`, drains one backend live
//! with `xlb drain`, sends 30 more requests and shows that none reached the
//! drained backend, then removes everything.
//!
//! Exits 0 only when every request was answered and the drained backend got
//! no new request. Needs root (namespaces, BPF); touches nothing outside the
//! rig it creates.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use netns_tests::{
    agent_rig::{AgentRig, BACKEND_PORT, BACKENDS, VIP_PORT, backend_name, backend_named},
    http::http_get,
};

/// The demo's configuration (the `web` service on the rig's addresses).
const DEMO_CONFIG: &str = include_str!("../../../examples/demo.yaml");
/// Requests per round.
const REQUESTS: usize = 30;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// The backend the demo drains.
const DRAINED: usize = 1;

/// The xlb agent balancing HTTP in a throwaway rig of network namespaces: a
/// client, the load balancer and three backends. Sends 30 requests through
/// the VIP, drains one backend live, sends 30 more, then removes everything.
/// Needs root; touches nothing outside the rig (addresses from
/// 198.18.0.0/15). Exits 0 only when every request was answered and the
/// drained backend got none. No options.
#[derive(Parser)]
#[command(name = "xlb-demo", version)]
struct Args {}

fn main() -> ExitCode {
    let Args {} = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    let mut out = io::stdout().lock();
    match run(&mut out) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            let _ = writeln!(io::stderr(), "\nxlb-demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The `xlb` binary: the one built next to this demo.
fn xlb_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding the demo's own executable")?;
    let dir = me
        .parent()
        .context("the demo's executable has no directory")?;
    let xlb = dir.join("xlb");
    if !xlb.is_file() {
        bail!(
            "{} is missing: the demo runs the xlb agent built next to it; build both with \
             `cargo build --release -p control-plane -p netns-tests --bins` (or run `make demo`)",
            xlb.display()
        );
    }
    Ok(xlb)
}

/// Answers per backend, from one round of requests.
#[derive(Debug, Default)]
struct Round {
    per_backend: [usize; BACKENDS],
    failures: Vec<String>,
}

fn requests(rig: &AgentRig, count: usize) -> Round {
    let vip = rig.vip_addr(VIP_PORT);
    let mut round = Round::default();
    for _ in 0..count {
        match http_get(rig.client(), vip, "/", REQUEST_TIMEOUT) {
            Ok(answer) if answer.status == 200 => match backend_named(answer.body.trim()) {
                Some(i) => round.per_backend[i] += 1,
                None => round
                    .failures
                    .push(format!("unknown answer {:?}", answer.body)),
            },
            Ok(answer) => round
                .failures
                .push(format!("status {}: {:?}", answer.status, answer.body)),
            Err(e) => round.failures.push(e.to_string()),
        }
    }
    round
}

/// Shows the client's command, sends `REQUESTS` requests through the VIP
/// and prints where they went.
fn request_round(out: &mut impl Write, rig: &AgentRig) -> io::Result<Round> {
    writeln!(
        out,
        "client$ for i in $(seq {REQUESTS}); do curl -s http://{}/; done | sort | uniq -c",
        rig.vip_addr(VIP_PORT).ip()
    )?;
    let round = requests(rig, REQUESTS);
    print_round(out, &round)?;
    Ok(round)
}

fn print_round(out: &mut impl Write, round: &Round) -> io::Result<()> {
    for (i, &n) in round.per_backend.iter().enumerate() {
        let line = format!("  {:<3} {n:>3}  {}", backend_name(i), "#".repeat(n));
        writeln!(out, "{}", line.trim_end())?;
    }
    if !round.failures.is_empty() {
        writeln!(
            out,
            "  {} requests FAILED, first: {}",
            round.failures.len(),
            round.failures[0]
        )?;
    }
    Ok(())
}

fn heading(out: &mut impl Write, step: usize, title: &str) -> io::Result<()> {
    writeln!(out, "\n== {step}. {title}\n")
}

/// Runs `xlb args...` and prints it as typed, then its output.
fn show_xlb(out: &mut impl Write, rig: &AgentRig, args: &[&str]) -> anyhow::Result<()> {
    writeln!(out, "$ xlb {}", args.join(" "))?;
    let output = rig.xlb_ok(args)?;
    for line in output.lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

fn run(out: &mut impl Write) -> anyhow::Result<bool> {
    let started = Instant::now();
    let xlb = xlb_binary()?;
    writeln!(
        out,
        "xlb demo: the xlb agent load-balancing HTTP in a throwaway rig of network namespaces"
    )?;

    heading(out, 1, "The rig")?;
    let mut rig = AgentRig::build(&xlb)?;
    let outcome = steps(out, &mut rig);
    if outcome.is_err() {
        let _ = writeln!(io::stderr(), "the agent's log:\n{}", rig.all_logs());
    }
    let (answered, drain_held) = outcome?;

    heading(out, 7, "Clean up")?;
    writeln!(
        out,
        "  stopping the agent, unmounting the rig's bpffs (its pinned maps and links go with \
         it) and deleting the namespaces (the interfaces and their XDP programs go with them)"
    )?;
    drop(rig);
    writeln!(out)?;
    if answered && drain_held {
        writeln!(
            out,
            "ok: {} requests answered, none reached the drained backend ({:.1?} in all)",
            2 * REQUESTS,
            started.elapsed()
        )?;
    }
    Ok(answered && drain_held)
}

/// Steps 1 to 6; whether every request was answered, and whether the drain
/// held (failures are printed as they are found).
fn steps(out: &mut impl Write, rig: &mut AgentRig) -> anyhow::Result<(bool, bool)> {
    for i in 0..BACKENDS {
        rig.serve_http(i, BACKEND_PORT)?;
    }
    writeln!(
        out,
        "  client {}  ->  VIP {}  ->  [xdp_lb on the LB's eth0 and eth1]  ->  backends",
        rig.client_ip(),
        rig.vip_addr(VIP_PORT)
    )?;
    for i in 0..BACKENDS {
        writeln!(
            out,
            "  {}: an HTTP server on {} answering \"{}\"",
            backend_name(i),
            rig.backend_addr(i, BACKEND_PORT),
            backend_name(i)
        )?;
    }

    heading(
        out,
        2,
        "Start the agent on examples/demo.yaml (inside the LB)",
    )?;
    rig.write_config(DEMO_CONFIG)?;
    writeln!(
        out,
        "lb$ xlb {}",
        rig.agent_args(&[])
            .iter()
            .map(|a| a.replace(
                &rig.config_path().display().to_string(),
                "examples/demo.yaml"
            ))
            .collect::<Vec<_>>()
            .join(" ")
    )?;
    rig.start_agent(&[])?;
    writeln!(
        out,
        "  ready: xdp_lb attached to eth0 and eth1 (pinned under {}), the services programmed",
        rig.pin_dir().display()
    )?;
    writeln!(
        out,
        "\n  Every xlb command below talks to the agent through its admin socket:\n  \
         $ export XLB_ADMIN_SOCKET={}",
        rig.admin_socket().display()
    )?;

    heading(
        out,
        3,
        &format!("{REQUESTS} requests from the client to the VIP"),
    )?;
    let first = request_round(out, rig)?;
    writeln!(
        out,
        "  (each connection comes from a new client port, so Maglev hashing spreads them)"
    )?;

    heading(
        out,
        4,
        "What the agent programmed, and what the datapath counted",
    )?;
    show_xlb(out, rig, &["service", "list"])?;
    writeln!(out)?;
    show_xlb(out, rig, &["stats"])?;

    let drained = rig.backend_addr(DRAINED, BACKEND_PORT);
    heading(
        out,
        5,
        &format!("Drain {} live ({drained})", backend_name(DRAINED)),
    )?;
    let served_before = rig
        .http_server(DRAINED, BACKEND_PORT)
        .map(|s| s.served())
        .context("the drained backend's server")?;
    let drain_arg = drained.to_string();
    show_xlb(out, rig, &["drain", &drain_arg])?;
    writeln!(out)?;
    show_xlb(out, rig, &["backend", "list"])?;
    writeln!(
        out,
        "  (a draining backend keeps its established connections and gets no new ones)"
    )?;

    heading(
        out,
        6,
        &format!(
            "{REQUESTS} more requests: none may reach {}",
            backend_name(DRAINED)
        ),
    )?;
    let second = request_round(out, rig)?;
    let served_after = rig
        .http_server(DRAINED, BACKEND_PORT)
        .map(|s| s.served())
        .context("the drained backend's server")?;
    let reached = second.per_backend[DRAINED];
    let server_saw = served_after - served_before;
    writeln!(
        out,
        "  {}: {reached} answers seen by the client, {server_saw} requests seen by its server",
        backend_name(DRAINED)
    )?;

    let answered = first.failures.is_empty() && second.failures.is_empty();
    let drain_held = reached == 0 && server_saw == 0;
    if !answered {
        writeln!(
            out,
            "\nFAILED: {} of {} requests were not answered",
            first.failures.len() + second.failures.len(),
            2 * REQUESTS
        )?;
    }
    if !drain_held {
        writeln!(
            out,
            "\nFAILED: the drained backend got new requests ({reached} answers, {server_saw} \
             seen by its server)"
        )?;
    }
    Ok((answered, drain_held))
}
