//! `make demo`, in two parts, each in a throwaway netns rig:
//!
//! 1. frames of every class through the XDP packet parser on a veth, and the
//!    program's per-class counters printed beside what was sent;
//! 2. the load balancer: a client opens TCP connections and sends UDP requests
//!    to a VIP (IPv4 and IPv6) that `xdp_lb` spreads over three backends
//!    ([`lb_scenario::run_demo`]); printed are the connections per backend
//!    beside the equal share, whether every answer came from the backend
//!    `Datapath::simulate` predicted, and the LB's verdict counters beside the
//!    frames that crossed the links.
//!
//! Exits 0 only when every counter and every answer matches.
//!
//! Needs root (namespaces, BPF). Touches nothing outside the rig it creates.

use std::{
    io::{self, Write as _},
    process::ExitCode,
};

use netns_tests::{
    Proto,
    lb_scenario::{self, BACKENDS, DROPS, LbDemo, backend_name},
    parser_run,
    topology::Family,
};
use xdp_lb::{Counter, CtEvent, ParseCounter, Verdict};

/// Copies of each sample frame in the mix.
const COPIES: usize = 10;
/// TCP connections through the VIP, per family.
const TCP_FLOWS: u16 = 300;
/// UDP requests through the VIP, per family.
const UDP_FLOWS: u16 = 60;
/// How far a backend's share of the TCP connections may be from the equal
/// share (the client's ports, hence the spread, are the same on every run).
const SPREAD_TOLERANCE: f64 = 0.15;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(io::stderr)
        .init();
    let parser = parser_demo().unwrap_or_else(|err| {
        tracing::error!("parser demo failed: {err:#}");
        false
    });
    let lb = lb_demo().unwrap_or_else(|err| {
        tracing::error!("load-balancer demo failed: {err:#}");
        false
    });
    if parser && lb {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parser_demo() -> anyhow::Result<bool> {
    let run = parser_run::run(COPIES)?;
    let mut out = io::stdout().lock();
    writeln!(
        out,
        "xlb demo, part 1: the packet parser\n\n{} frames ({} samples x {COPIES}) sent over a veth into xdp_lb ({} mode)\n",
        run.sent.len(),
        run.sent.len() / COPIES,
        if run.native { "native" } else { "generic" },
    )?;
    writeln!(
        out,
        "{:<26} {:>12} {:>12} {:>10} {:>10}",
        "counter", "packets sent", "counted", "bytes sent", "counted"
    )?;
    for &slot in ParseCounter::ALL {
        let sent = run.expected.get(&slot).copied().unwrap_or_default();
        let counted = run.counted.get(&slot).copied().unwrap_or_default();
        if sent == Counter::default() && counted == Counter::default() {
            continue;
        }
        let mark = if sent == counted { "ok" } else { "MISMATCH" };
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>10} {:>10}  {mark}",
            slot.name(),
            sent.packets,
            counted.packets,
            sent.bytes,
            counted.bytes
        )?;
    }
    let matches = run.matches();
    writeln!(
        out,
        "\n{}",
        if matches {
            "every counter matches what was sent"
        } else {
            "counters differ from what was sent"
        }
    )?;
    Ok(matches)
}

fn lb_demo() -> anyhow::Result<bool> {
    let demo = lb_scenario::run_demo(TCP_FLOWS, UDP_FLOWS, SPREAD_TOLERANCE)?;
    let mut out = io::stdout().lock();
    print_lb(&mut out, &demo)?;
    Ok(demo.ok())
}

fn ok(good: bool) -> &'static str {
    if good { "ok" } else { "MISMATCH" }
}

fn family_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

fn print_lb(out: &mut impl io::Write, demo: &LbDemo) -> io::Result<()> {
    writeln!(
        out,
        "\nxlb demo, part 2: the load balancer\n\n\
         client -> [xdp_lb] lb [xdp_lb] -> switch -> {BACKENDS} backends ({} mode); \
         VIPs {} and {}\n\
         {TCP_FLOWS} TCP connections and {UDP_FLOWS} UDP requests per family to VIP port {}\n",
        if demo.native { "native" } else { "generic" },
        lb_scenario::vip(Family::V4),
        lb_scenario::vip(Family::V6),
        lb_scenario::VIP_PORT,
    )?;
    write!(
        out,
        "{:<6} {:<5} {:>8} {:>8} {:>12}",
        "family", "proto", "sent", "answered", "as predicted"
    )?;
    for i in 0..BACKENDS {
        write!(out, " {:>13}", backend_name(i))?;
    }
    writeln!(
        out,
        " {:>11} {:>9} {:>6}",
        "equal share", "predicted", "spread"
    )?;
    for run in &demo.runs {
        let as_predicted = run.answers.iter().filter(|a| a.as_predicted()).count();
        write!(
            out,
            "{:<6} {:<5} {:>8} {:>8} {:>12}",
            family_name(run.family),
            match run.proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            },
            run.requested,
            run.answers.len(),
            as_predicted,
        )?;
        let share = run.equal_share();
        for n in run.per_backend() {
            let off = (n as f64 - share) / share * 100.0;
            write!(out, " {n:>5} ({off:>+5.1}%)")?;
        }
        // UDP sockets take random ports: their spread is shown, not held.
        let spread = match run.proto {
            Proto::Tcp => ok(run.max_deviation() <= demo.tolerance),
            Proto::Udp => "-",
        };
        writeln!(
            out,
            " {share:>11.1} {:>9} {spread:>6}",
            ok(run.all_as_predicted())
        )?;
        if let Some(err) = run.failures.first() {
            writeln!(
                out,
                "       {} unanswered, first: {err}",
                run.failures.len()
            )?;
        }
        if let Some(answer) = run.mispredicted().next() {
            writeln!(out, "       not as predicted, first: {answer:?}")?;
        }
    }
    writeln!(
        out,
        "\n(columns per backend: answers and their distance from the equal share; TCP \
         spreads must stay within ±{:.0}%, UDP ports are random)",
        demo.tolerance * 100.0
    )?;

    let t = &demo.traffic;
    let client_tx = t.links.client.tx_packets;
    let backends_tx = t.links.backends_tx();
    writeln!(
        out,
        "\n{:<26} {:>10} {:>14}",
        "LB verdict", "packets", "links say"
    )?;
    writeln!(
        out,
        "{:<26} {:>10} {:>14}  {}",
        Verdict::ForwardToBackend.name(),
        t.verdict(Verdict::ForwardToBackend),
        format!("{client_tx} sent"),
        ok(t.to_backend() == client_tx),
    )?;
    writeln!(
        out,
        "{:<26} {:>10} {:>14}  {}",
        Verdict::ForwardReply.name(),
        t.verdict(Verdict::ForwardReply),
        format!("{backends_tx} sent"),
        ok(t.replies() == backends_tx),
    )?;
    for verdict in DROPS {
        writeln!(
            out,
            "{:<26} {:>10} {:>14}  {}",
            verdict.name(),
            t.verdict(verdict),
            "0",
            ok(t.verdict(verdict) == 0),
        )?;
    }
    let shown = [Verdict::ForwardToBackend, Verdict::ForwardReply];
    for (&verdict, &n) in &t.verdicts {
        if !shown.contains(&verdict) && !DROPS.contains(&verdict) {
            writeln!(out, "{:<26} {n:>10}", verdict.name())?;
        }
    }
    writeln!(
        out,
        "\nconntrack: {} entries created for {} flows, {} replies matched to their flow, \
         {} frames dropped on the links  {}",
        t.ct_event(CtEvent::Created),
        demo.flows(),
        t.ct_event(CtEvent::ReplyHit),
        t.links.tx_dropped(),
        ok(demo.counters_ok()),
    )?;
    let good = demo.ok();
    writeln!(
        out,
        "\n{} (load-balancer part: {:.1?})",
        if good {
            "every answer came from the predicted backend and every counter matches"
        } else {
            "something did not match: see MISMATCH above"
        },
        demo.elapsed,
    )
}
