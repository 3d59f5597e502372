//! Issue 9's acceptance scenarios: three `xlb agent` instances behind a
//! router that learns the VIP from their BGP announcements (BIRD on every
//! box) and spreads flows over them by the 5-tuple; four backends that
//! decapsulate and answer the clients directly
//! ([`netns_tests::ecmp_rig::EcmpAgentRig`]).
//!
//! - the router's route comes from the announcements and flows spread over
//!   all three LBs; for 1 000 flows `xlb simulate --flows` names the same
//!   backend on every LB, and the traffic lands there;
//! - 200 long-lived TCP connections survive an LB going away (BIRD and agent
//!   killed, program detached) and coming back: at least 99% intact;
//! - an LB whose backends all fail their health checks withdraws the VIP and
//!   the router stops sending it traffic; it comes back when they pass;
//! - removing a backend while connections run breaks only that backend's.
//!
//! Each scenario builds its own rig. Needs root and `bird` (scripts/setup).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use netns_tests::{
    EchoClient,
    ecmp_rig::{BACKENDS, EcmpAgentRig, LBS, PORT, STREAM_PORT, backend_name, vip},
    stream::StreamSession,
};

/// The `xlb` binary under test.
const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// BGP convergence after a change: the timers of `netns_tests::bird` (hold
/// 3 s, reconnect 1 s) plus the agents' health checks.
const CONVERGE: Duration = Duration::from_secs(20);
/// How long one request or exchange may take (TCP may retransmit while the
/// router's paths change).
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The health check of every service.
const INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const FALL: u32 = 2;
/// Bytes per exchange on a long-lived connection.
const CHUNK: usize = 512;

#[expect(
    clippy::print_stderr,
    reason = "the scenarios' figures, for --nocapture"
)]
fn report(line: &str) {
    eprintln!("ecmp_netns: {line}");
}

/// The agents' configuration: TCP and UDP echo and the stream service on the
/// VIP, direct server return, served by the backends `which`, checked by a
/// TCP connect to the echo port.
fn config(rig: &EcmpAgentRig, which: &[usize]) -> String {
    let health = format!(
        "    health_check: {{type: tcp, port: {PORT}, interval: {}ms, timeout: {}ms, rise: 2, fall: {FALL}}}\n",
        INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    );
    let mut yaml = String::from("services:\n");
    for (name, protocol, port) in [
        ("echo", "TCP", PORT),
        ("echo-udp", "UDP", PORT),
        ("stream", "TCP", STREAM_PORT),
    ] {
        let backends: Vec<String> = which
            .iter()
            .map(|&i| format!("{{address: \"{}\"}}", rig.backend_addr(i, port)))
            .collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    protocol: {protocol}\n    mode: dsr\n    \
             frontends: [{{address: {}, port: {port}}}]\n    backends: [{}]\n{health}",
            vip(),
            backends.join(", ")
        ));
    }
    yaml
}

/// A rig with every LB started on every backend, the router routing the VIP
/// over all three.
fn running_rig() -> EcmpAgentRig {
    let mut rig = EcmpAgentRig::build(XLB).expect("rig");
    let all: Vec<usize> = (0..BACKENDS).collect();
    rig.write_config(&config(&rig, &all)).expect("config");
    for i in 0..LBS {
        rig.start_lb(i).expect("LB");
    }
    let lbs: Vec<usize> = (0..LBS).collect();
    rig.wait_gateways(&lbs, CONVERGE)
        .expect("the router learns the VIP from every LB");
    rig
}

/// `count` UDP flows: the client's source addresses in turn, a port each.
fn udp_flows(rig: &EcmpAgentRig, count: usize) -> Vec<SocketAddr> {
    let sources = rig.client_sources();
    (0..count)
        .map(|n| {
            let port = 20_000 + u16::try_from(n / sources.len()).expect("few flows");
            SocketAddr::new(sources[n % sources.len()], port)
        })
        .collect()
}

/// Which backend answered each flow's request (its name), or why none did.
fn udp_answers(rig: &EcmpAgentRig, flows: &[SocketAddr]) -> Vec<Result<String, String>> {
    EchoClient::new(&rig.topo.client.netns)
        .with_timeout(Duration::from_secs(2))
        .udp_from(flows, SocketAddr::new(vip(), PORT))
        .expect("the client namespace")
        .into_iter()
        .map(|echo| echo.map(|e| e.server).map_err(|e| e.to_string()))
        .collect()
}

fn encapsulated(rig: &EcmpAgentRig) -> Vec<u64> {
    (0..LBS)
        .map(|i| rig.encapsulated(i).expect("xlb stats"))
        .collect()
}

#[test]
fn bgp_spreads_flows_over_every_lb_and_they_all_name_the_same_backend() {
    const FLOWS: usize = 1_000;
    let rig = running_rig();
    let flows = udp_flows(&rig, FLOWS);

    // Every LB's answer for every flow, before any traffic (a new flow each).
    let file = rig.config_path().with_file_name("flows.txt");
    let lines: Vec<String> = flows
        .iter()
        .map(|f| format!("{f} {}:{PORT} udp", vip()))
        .collect();
    std::fs::write(&file, lines.join("\n")).expect("flows file");
    let answers: Vec<Vec<serde_json::Value>> = (0..LBS)
        .map(|i| {
            let json = rig
                .lb(i)
                .client
                .json(&["simulate", "--flows", &file.to_string_lossy()])
                .expect("xlb simulate --flows");
            json.as_array().expect("one answer per flow").clone()
        })
        .collect();
    let by_address: BTreeMap<String, String> = (0..BACKENDS)
        .map(|i| (rig.backend_addr(i, PORT).to_string(), backend_name(i)))
        .collect();
    let mut predicted = Vec::with_capacity(FLOWS);
    for (n, flow) in flows.iter().enumerate() {
        let backends: Vec<&str> = answers
            .iter()
            .map(|lb| {
                assert_eq!(lb[n]["outcome"], "backend", "{flow}: {}", lb[n]);
                lb[n]["backend"].as_str().expect("a backend")
            })
            .collect();
        assert!(
            backends.iter().all(|b| *b == backends[0]),
            "{flow}: the LBs disagree: {backends:?}"
        );
        predicted.push(by_address[backends[0]].clone());
    }

    let before = encapsulated(&rig);
    let answered = udp_answers(&rig, &flows);
    let after = encapsulated(&rig);
    let mut per_backend = BTreeMap::<String, usize>::new();
    for ((flow, answer), want) in flows.iter().zip(&answered).zip(&predicted) {
        let server = answer
            .as_ref()
            .unwrap_or_else(|e| panic!("{flow}: no answer: {e}"));
        assert_eq!(
            server, want,
            "{flow}: answered by another backend than simulated"
        );
        *per_backend.entry(server.clone()).or_default() += 1;
    }
    let per_lb: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    for (i, &packets) in per_lb.iter().enumerate() {
        // An equal share is a third; each LB must see a real part of it.
        assert!(
            packets as usize >= FLOWS / LBS / 2,
            "lb{i} got {packets} of {FLOWS} flows: {per_lb:?}"
        );
    }
    report(&format!(
        "{FLOWS} UDP flows from {} sources: every LB's simulate agreed and the traffic \
         confirmed it; per LB {per_lb:?} packets, per backend {per_backend:?}",
        rig.client_sources().len()
    ));
}

/// Long-lived connections through the VIP, one per client source in turn.
fn open_streams(rig: &EcmpAgentRig, count: usize) -> Vec<StreamSession> {
    let sources = rig.client_sources();
    (0..count)
        .map(|n| {
            StreamSession::open_from(
                &rig.topo.client.netns,
                Some(sources[n % sources.len()]),
                SocketAddr::new(vip(), STREAM_PORT),
                IO_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("connection {n}: {e}"))
        })
        .collect()
}

/// One exchange on every connection still intact; marks the ones that fail.
fn exchange_all(sessions: &mut [StreamSession], broken: &mut [Option<String>], round: u8) {
    let data = vec![round; CHUNK];
    for (session, broken) in sessions.iter_mut().zip(broken.iter_mut()) {
        if broken.is_none()
            && let Err(e) = session.exchange(&data)
        {
            *broken = Some(format!("round {round}: {e}"));
        }
    }
}

#[test]
fn connections_survive_an_lb_leaving_and_coming_back() {
    const CONNECTIONS: usize = 200;
    const LEAVING: usize = 1;
    let mut rig = running_rig();
    let mut sessions = open_streams(&rig, CONNECTIONS);
    let mut broken: Vec<Option<String>> = vec![None; CONNECTIONS];
    let before = encapsulated(&rig);
    exchange_all(&mut sessions, &mut broken, 1);
    let carried = rig.encapsulated(LEAVING).expect("stats") - before[LEAVING];
    assert!(carried > 0, "lb{LEAVING} carried none of the connections");

    rig.fail_lb(LEAVING).expect("taking the LB out");
    // Exchanges right away, while the router may still send to it.
    exchange_all(&mut sessions, &mut broken, 2);
    let rest: Vec<usize> = (0..LBS).filter(|&i| i != LEAVING).collect();
    rig.wait_gateways(&rest, CONVERGE)
        .expect("the router drops the failed LB");
    exchange_all(&mut sessions, &mut broken, 3);

    rig.start_lb(LEAVING).expect("the LB back");
    let all: Vec<usize> = (0..LBS).collect();
    rig.wait_gateways(&all, CONVERGE)
        .expect("the router takes the LB back");
    let back = rig.encapsulated(LEAVING).expect("stats");
    exchange_all(&mut sessions, &mut broken, 4);
    let carried_again = rig.encapsulated(LEAVING).expect("stats") - back;

    let mut closed_badly = 0;
    for (session, broken) in sessions.into_iter().zip(broken.iter_mut()) {
        if broken.is_none()
            && let Err(e) = session.close()
        {
            *broken = Some(format!("close: {e}"));
            closed_badly += 1;
        }
    }
    let failures: Vec<&String> = broken.iter().flatten().collect();
    let intact = CONNECTIONS - failures.len();
    report(&format!(
        "{intact}/{CONNECTIONS} connections intact across lb{LEAVING} leaving and coming back \
         ({carried} packets through it before, {carried_again} after its return; \
         {closed_badly} failed at close); failures: {failures:?}"
    ));
    assert!(carried_again > 0, "no connection moved back to lb{LEAVING}");
    assert!(
        intact * 100 >= CONNECTIONS * 99,
        "{intact}/{CONNECTIONS} intact: {failures:?}"
    );
}

#[test]
fn an_lb_whose_backends_all_fail_withdraws_the_vip() {
    const FLOWS: usize = 200;
    const CUT: usize = 2;
    let rig = running_rig();
    // The LB's health probes cannot leave it: from where it stands, every
    // backend is down.
    let lb = &rig.topo.lbs[CUT].netns;
    let nft = |args: &[&str]| lb.exec("nft", args).expect("nft");
    nft(&["add", "table", "inet", "cut"]);
    nft(&[
        "add",
        "chain",
        "inet",
        "cut",
        "out",
        "{ type filter hook output priority 0 ; }",
    ]);
    nft(&[
        "add",
        "rule",
        "inet",
        "cut",
        "out",
        "tcp",
        "dport",
        &PORT.to_string(),
        "drop",
    ]);
    let rest: Vec<usize> = (0..LBS).filter(|&i| i != CUT).collect();
    rig.wait_gateways(&rest, CONVERGE)
        .expect("the LB without healthy backends withdraws the VIP");
    let status = rig.lb(CUT).client.status().expect("status");
    assert_eq!(
        status["announcements"][0]["vips"],
        serde_json::json!([]),
        "{status}"
    );

    let before = encapsulated(&rig);
    let flows = udp_flows(&rig, FLOWS);
    let failed: Vec<String> = udp_answers(&rig, &flows)
        .into_iter()
        .filter_map(Result::err)
        .collect();
    let after = encapsulated(&rig);
    assert!(
        failed.is_empty(),
        "{} flows unanswered: {failed:?}",
        failed.len()
    );
    assert_eq!(
        after[CUT], before[CUT],
        "the router still sends lb{CUT} traffic"
    );

    nft(&["delete", "table", "inet", "cut"]);
    let all: Vec<usize> = (0..LBS).collect();
    rig.wait_gateways(&all, CONVERGE)
        .expect("the LB announces again once its backends pass");
    report(&format!(
        "lb{CUT} withdrew the VIP when its backends failed; {FLOWS} flows all answered by the \
         others (per LB {:?} packets); announced again once they passed",
        after
            .iter()
            .zip(&before)
            .map(|(a, b)| a - b)
            .collect::<Vec<_>>()
    ));
}

#[test]
fn removing_a_backend_breaks_only_its_own_connections() {
    const CONNECTIONS: usize = 80;
    const REMOVED: usize = 3;
    let rig = running_rig();
    let mut sessions = open_streams(&rig, CONNECTIONS);
    let mut broken: Vec<Option<String>> = vec![None; CONNECTIONS];
    exchange_all(&mut sessions, &mut broken, 1);
    let removed = backend_name(REMOVED);
    let on_removed = sessions.iter().filter(|s| s.server() == removed).count();
    assert!(on_removed > 0, "no connection landed on {removed}");

    let kept: Vec<usize> = (0..BACKENDS).filter(|&i| i != REMOVED).collect();
    rig.write_config(&config(&rig, &kept)).expect("config");
    let gone = rig.backend_addr(REMOVED, STREAM_PORT);
    for i in 0..LBS {
        netns_tests::wait_for(CONVERGE, "every LB to drop the backend", || {
            let list = rig.lb(i).client.json(&["backend", "list"]).map_err(|e| {
                netns_tests::Error::Io {
                    what: "xlb backend list".into(),
                    source: std::io::Error::other(format!("{e:#}")),
                }
            })?;
            let listed = list
                .as_array()
                .into_iter()
                .flatten()
                .any(|b| b["address"] == gone.to_string());
            Ok((!listed).then_some(()))
        })
        .expect("the agents reload");
    }
    exchange_all(&mut sessions, &mut broken, 2);
    exchange_all(&mut sessions, &mut broken, 3);
    let mut others_broken = Vec::new();
    let mut its_own_broken = 0;
    for (session, broken) in sessions.iter().zip(&broken) {
        match broken {
            Some(e) if session.server() != removed => {
                others_broken.push(format!("{}: {e}", session.server()));
            }
            Some(_) => its_own_broken += 1,
            None => {}
        }
    }
    report(&format!(
        "removing {removed}: {its_own_broken}/{on_removed} of its connections broke, \
         {} of the other {} did",
        others_broken.len(),
        CONNECTIONS - on_removed
    ));
    assert!(others_broken.is_empty(), "{others_broken:?}");
}
