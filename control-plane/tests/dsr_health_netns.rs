//! Health checks of a `mode: dsr` service through the tunnel, with the real
//! `xlb agent` ([`netns_tests::agent_rig::AgentRig`]: client → LB → switch →
//! b0, b1, b2; every backend holds the VIP on `lo`, runs `xlb decap` and
//! serves TCP echo on every address).
//!
//! The agent probes each backend at the VIP from a socket marked for it;
//! `tc_probe_encap` wraps the probe for the backend, whose `xlb decap`
//! strips it and whose stack answers from the VIP. So when b0's `xlb decap`
//! stops, b0 goes down — although its own address still answers, which is
//! all a probe tested before — and comes back when `xlb decap` runs again;
//! b1 and b2 stay up throughout. The NAT service `api` lists the same
//! backends under the same check, probed directly: it keeps b0 throughout.
//! Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use control_plane::api::{BackendStatus, BackendView, HealthCheckView, ProbePathView};
use netns_tests::{
    Proto,
    agent_rig::{AgentRig, BACKENDS, VIP_PORT, backend_name, vip},
    topology::plan,
    wait_until,
};

/// The `xlb` binary under test.
const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// The health check: quick, so that the scenario is.
const INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 2;
/// Waits with no timing claim of their own; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(20);
/// How long the direct exchange with a backend may take.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// `web`, `dsr` at the rig's VIP, and `api`, NAT at another: the same
/// backends under the same check.
fn config(rig: &AgentRig) -> String {
    let backends: Vec<String> = (0..BACKENDS)
        .map(|i| format!("{{address: \"{}\"}}", rig.backend_addr(i, VIP_PORT)))
        .collect();
    let check = format!(
        "{{type: tcp, interval: {}ms, timeout: {}ms, rise: 1, fall: {FALL}}}",
        INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    );
    let service = |name: &str, mode: &str, vip: IpAddr| {
        format!(
            "  - name: {name}\n    mode: {mode}\n    frontends: [{{address: {vip}, port: \
             {VIP_PORT}}}]\n    backends: [{}]\n    health_check: {check}\n",
            backends.join(", ")
        )
    };
    format!(
        "services:\n{}{}",
        service("web", "dsr", vip()),
        service("api", "nat", nat_vip())
    )
}

/// The NAT service's VIP.
fn nat_vip() -> IpAddr {
    plan::vip(2).0.into()
}

/// Each backend's health, in backend order.
fn health(rig: &AgentRig) -> Vec<String> {
    let list: Vec<BackendView> = serde_json::from_value(
        rig.xlb_json(&["backend", "list"])
            .expect("xlb backend list"),
    )
    .expect("BackendViews");
    (0..BACKENDS)
        .map(|i| {
            let addr = rig.backend_addr(i, VIP_PORT);
            list.iter()
                .find(|b| b.address == addr)
                .map_or_else(|| "missing".to_owned(), |b| b.health.clone())
        })
        .collect()
}

/// Backend `i` as `xlb backend list -o json` shows it.
fn backend(rig: &AgentRig, i: usize) -> BackendView {
    let list: Vec<BackendView> = serde_json::from_value(
        rig.xlb_json(&["backend", "list"])
            .expect("xlb backend list"),
    )
    .expect("BackendViews");
    let addr = rig.backend_addr(i, VIP_PORT);
    list.into_iter()
        .find(|b| b.address == addr)
        .unwrap_or_else(|| panic!("no backend {addr}"))
}

/// `xlb_health_probe_packets_total{verdict="wrapped"}` of the agent's
/// `/metrics`.
fn wrapped_probe_packets(rig: &AgentRig) -> u64 {
    let metrics = rig.metrics_get("/metrics").expect("GET /metrics");
    metrics
        .body
        .lines()
        .find_map(|line| line.strip_prefix(r#"xlb_health_probe_packets_total{verdict="wrapped"} "#))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wrapped probe counter in\n{}", metrics.body))
}

/// Starts `xlb decap` on backend `i`; its process ID.
fn start_decap(rig: &mut AgentRig, i: usize) -> u32 {
    let netns = rig.backend(i).clone();
    rig.topo
        .rig
        .spawn(
            &netns,
            XLB,
            &["decap", "--interface", "eth0", "--vip", &vip().to_string()],
        )
        .expect("xlb decap")
        .pid
}

/// One echo exchange from the LB's namespace with `to`, unmarked: what a
/// probe of the backend's own address does. The answering server's name.
fn direct_exchange(rig: &AgentRig, to: SocketAddr) -> Result<String, String> {
    rig.lb()
        .run(move || {
            let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT)
                .map_err(|e| format!("connecting to {to}: {e}"))?;
            stream
                .set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            stream
                .write_all(b"direct")
                .and_then(|()| stream.shutdown(Shutdown::Write))
                .map_err(|e| e.to_string())?;
            let mut answer = String::new();
            stream
                .read_to_string(&mut answer)
                .map_err(|e| e.to_string())?;
            Ok(answer.trim_end_matches(" direct").to_owned())
        })
        .map_err(|e| e.to_string())?
}

#[test]
fn a_dsr_backend_whose_decap_stops_fails_its_health_check_and_returns_with_it() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    let any = SocketAddr::from(([0, 0, 0, 0], VIP_PORT));
    let mut decaps = Vec::new();
    for i in 0..BACKENDS {
        let netns = rig.backend(i).clone();
        let host = netns_tests::Cidr::new(vip(), 32).expect("a host prefix");
        rig.topo
            .rig
            .add_address(&netns, "lo", host)
            .expect("the VIP on lo");
        rig.topo
            .rig
            .serve_echo(&netns, Proto::Tcp, any, &backend_name(i))
            .expect("echo server");
        decaps.push(start_decap(&mut rig, i));
    }
    rig.route_vip_upstream().expect("a route to the VIP");
    rig.write_config(&config(&rig)).expect("config");
    let source = rig.topo.lb_back.v4.to_string();
    rig.start_agent(&["--encap-source", &source])
        .expect("agent");
    let all_up = vec!["up".to_owned(); BACKENDS];
    wait_until(PATIENCE, "every backend up through the tunnel", || {
        health(&rig) == all_up
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", health(&rig), rig.agent_log()));
    let log = rig.agent_log();
    assert!(
        log.contains(&format!("tunnel via {}", vip())),
        "the log says how each backend is probed:\n{log}"
    );
    let wrapped = wrapped_probe_packets(&rig);
    assert!(
        wrapped >= BACKENDS as u64 * 3,
        "every probe's handshake went through tc_probe_encap: {wrapped}"
    );

    // b0's decap stops: what is wrapped for it is lost, its probes too.
    rig.topo
        .rig
        .stop_process(decaps[0])
        .expect("stopping b0's xlb decap");
    wait_until(PATIENCE, "b0 down", || health(&rig)[0] == "down")
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", health(&rig), rig.agent_log()));
    assert_eq!(
        direct_exchange(&rig, rig.backend_addr(0, VIP_PORT)),
        Ok(backend_name(0)),
        "b0's own address still answers: a direct probe would pass"
    );
    assert_eq!(
        &health(&rig)[1..],
        &all_up[1..],
        "the other backends of the VIP stay up"
    );
    // Out of web only: api probes b0's own address, which answers.
    let b0_view = backend(&rig, 0);
    let per_service = |view: &BackendView| {
        view.health_by_service
            .iter()
            .map(|(name, h)| {
                let status = view.status_by_service.get(name).copied();
                (name.clone(), h.path, h.health.clone(), status)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        per_service(&b0_view),
        [
            (
                "api".to_owned(),
                ProbePathView::Direct,
                "up".to_owned(),
                Some(BackendStatus::Active)
            ),
            (
                "web".to_owned(),
                ProbePathView::Tunnel,
                "down".to_owned(),
                Some(BackendStatus::Down)
            ),
        ],
        "{b0_view:?}"
    );
    let table = rig.xlb_ok(&["backend", "list"]).expect("xlb backend list");
    assert!(
        table.contains("down (tunnel: web), up (direct: api)"),
        "{table}"
    );
    // `xlb health list` says how b0 is probed and why it is down.
    let json = rig
        .xlb_ok(&["health", "list", "-o", "json"])
        .expect("xlb health list");
    let checks: Vec<HealthCheckView> = serde_json::from_str(&json).expect("JSON checks");
    let b0 = rig.backend_addr(0, VIP_PORT);
    let rows: Vec<(ProbePathView, &str, &[String])> = checks
        .iter()
        .filter(|c| c.backend == b0)
        .map(|c| (c.path, c.health.as_str(), c.services.as_slice()))
        .collect();
    assert_eq!(
        rows,
        [
            (ProbePathView::Direct, "up", &["api".to_owned()][..]),
            (ProbePathView::Tunnel, "down", &["web".to_owned()][..]),
        ],
        "one row per path: {json}"
    );
    let check = checks
        .iter()
        .find(|c| c.backend == b0 && c.path == ProbePathView::Tunnel)
        .unwrap_or_else(|| panic!("no tunnel check of {b0} in {json}"));
    assert_eq!(
        (check.path, check.probe_address, check.health.as_str()),
        (
            ProbePathView::Tunnel,
            SocketAddr::new(vip(), VIP_PORT),
            "down"
        ),
        "{json}"
    );
    assert!(check.mark.is_some(), "{json}");
    assert!(
        check
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(&vip().to_string())),
        "the probe to the VIP failed: {json}"
    );
    let text = rig.xlb_ok(&["health", "list"]).expect("xlb health list");
    assert!(text.contains("through the DSR tunnel"), "{text}");

    // And it comes back with its decap.
    decaps[0] = start_decap(&mut rig, 0);
    wait_until(PATIENCE, "b0 up again", || health(&rig) == all_up)
        .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", health(&rig), rig.agent_log()));
}
