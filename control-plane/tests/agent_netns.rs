//! Issue 6's acceptance scenarios: the real `xlb agent` binary in a netns rig
//! ([`netns_tests::agent_rig::AgentRig`]: client → LB running the agent with
//! `xdp_lb` on eth0 and eth1 → switch → backends b0, b1, b2; the VIP is
//! plan VIP 1, 198.19.0.1).
//!
//! - restart and upgrade without loss: a TCP stream of at least 10 s and a
//!   loop of TCP echo requests run while the agent is SIGKILLed and
//!   restarted, then SIGKILLed and restarted as another program build
//!   (`--version-stamp`): no request fails, nothing is reset, every byte of
//!   the stream comes back intact, and the program on the interface is
//!   replaced by the upgrade;
//! - backend changes under load: adding a backend breaks none of 30
//!   established connections (data exchanged on each before and after) nor
//!   any request of a request loop; removing one leaves every connection on
//!   the other backends working; a UDP client with a fixed source port on the
//!   removed backend reaches a live one within 1 s;
//! - a bad configuration reload keeps the previous configuration serving and
//!   shows in `xlb status` and in `xlb_config_reloads_total`; an agent
//!   restarted on the pinned state with that file keeps it serving, and `xlb
//!   bpf lb list` (the maps) shows the frontend `xlb service list` (the
//!   model) has not, and, apart, a table, a backend record and a VIP no
//!   frontend reaches, written into the pinned maps while no agent ran;
//!   the good file back, its first sync removes them;
//! - a drain made with `xlb drain` outlives a SIGTERM restart of the agent
//!   (listed as drained by `xlb drain`, and given no new flow), as does an
//!   undrain; `xlb undrain` of a backend the file drains fails and names
//!   the file; a drains file that cannot be restored is logged and shown,
//!   set aside, and the agent starts without it;
//! - health checks: a backend whose server dies leaves within
//!   interval × fall (+ one probe timeout + a stated margin), new requests
//!   avoid it, and it returns when its server does; a dead backend added to
//!   a running agent, and again after a restart, is never active nor its VIP
//!   announced: `pending` until its first probe, then `down`;
//! - the admin socket is mode 0660: a user outside its group is refused, a
//!   user in it (`--admin-group`) gets through;
//! - tearing the rig down leaves none of the agent's BPF programs, links or
//!   maps behind;
//! - `examples/demo.yaml` (what `make demo` runs) names the rig's addresses;
//! - flags that cannot work (a second agent on a held pin directory, an
//!   unknown interface, a file where the admin socket goes, a metrics address
//!   that cannot be bound, a bad pod-interface glob) stop the agent before
//!   it changes anything an earlier agent left forwarding; an interface
//!   dropped from `--interface` loses its links.
//!
//! - a scrape of `/metrics` holds up no admin call: with conntrack tables
//!   sized for 4 Mi flows (a walk of both takes most of a second in a
//!   debug build), `xlb status` answers during back-to-back scrapes as
//!   fast as without them, the tables' count being the collector's; and
//!   the conntrack tables' pressure is their flows over the flows
//!   `--conntrack-size` asks for, and the conntrack events and parser
//!   results of `/metrics` count those flows;
//! - flow events: `xlb observe` shows each new flow from when it starts,
//!   two `xlb observe` at once each see every event (the agent's history is
//!   read, not taken), and `xlb observe` goes on across an agent restart,
//!   saying the agent restarted.
//!
//! Every scenario builds its own rig, so they run in parallel. Needs root.
//! Measured figures are printed to stderr (`--nocapture` shows them).

use std::{
    collections::BTreeMap,
    io::{self, ErrorKind},
    net::{IpAddr, SocketAddr, UdpSocket},
    os::unix::{
        fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener, UnixStream},
    },
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use control_plane::{
    admin::{AdminClient, server::MAX_EVENTS},
    api::{
        BackendStatus, BackendView, DatapathAddressView, DatapathBackendStatus,
        DatapathBackendView, DatapathLbView, DatapathRecordView, DatapathServiceView,
        DatapathTableView, DrainSource, FlowEventView, StatusView,
    },
    model::FrontendKind,
};
use netns_tests::{
    EchoClient, Netns, Proto,
    agent_rig::{
        AgentRig, BACKEND_PORT, BACKENDS, INTERFACES, StreamSession, VIP_PORT, backend_name,
        backend_named, io_error_kind, vip,
    },
    topology::plan::{self, BACKEND_LAN, Subnet},
    wait_for, wait_until,
};
use xdp_lb::{AddressKind, Datapath, LoadOptions, MapSizes};

/// The `xlb` binary under test.
const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// The stream service's port, on the VIP and on the backends.
const STREAM_PORT: u16 = 9000;
/// The health check of the scenarios that use one.
const INTERVAL: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const RISE: u32 = 2;
const FALL: u32 = 3;
/// Time for the agent to see a health change, program it, and for the test
/// to see it in `xlb backend list`: one reconcile (milliseconds), the poll
/// interval of `wait_until` (at most 100 ms) and one `xlb` command (tens of
/// milliseconds).
const HEALTH_MARGIN: Duration = Duration::from_millis(300);
/// How long the stream of the restart scenario runs at least.
const STREAM_MIN: Duration = Duration::from_secs(10);
/// Hard limits of every traffic loop (they stop by themselves).
const TRAFFIC_CAP: Duration = Duration::from_secs(90);
const MAX_REQUESTS: u64 = 20_000;
/// Pause between two requests of a request loop, and between two chunks of
/// a stream: keeps the load modest while other scenarios run in parallel.
const REQUEST_PACE: Duration = Duration::from_millis(5);
const STREAM_PACE: Duration = Duration::from_millis(1);
/// Bytes per stream exchange.
const CHUNK: usize = 16 * 1024;
/// How long one request or exchange may take.
const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Waits with no timing claim of their own; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(20);
/// The version stamp of the "upgraded" program build.
const UPGRADE_STAMP: u32 = 1_921_681;
/// Requests that must succeed in each phase of the restart scenario.
const PER_PHASE: u64 = 20;
/// Held connections in the backend-change scenario.
const HELD: usize = 30;
/// The fixed source port of the UDP client.
const UDP_CLIENT_PORT: u16 = 40_000;

/// Prints a measured figure (shown with `--nocapture`).
#[expect(
    clippy::print_stderr,
    reason = "the scenarios' figures, for --nocapture"
)]
fn report(line: &str) {
    eprintln!("agent_netns: {line}");
}

/// A service of the configuration file, in the native format.
fn service(name: &str, protocol: &str, port: u16, backends: &[SocketAddr], health: bool) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|b| format!("{{address: \"{b}\"}}"))
        .collect();
    let mut yaml = format!(
        "  - name: {name}\n    protocol: {protocol}\n    frontends: [{{address: {}, port: {port}}}]\n    backends: [{}]\n",
        vip(),
        backends.join(", ")
    );
    if health {
        yaml.push_str(&format!(
            "    health_check: {{type: tcp, interval: {}ms, timeout: {}ms, rise: {RISE}, fall: {FALL}}}\n",
            INTERVAL.as_millis(),
            PROBE_TIMEOUT.as_millis()
        ));
    }
    yaml
}

fn config(services: &[String]) -> String {
    format!("services:\n{}", services.concat())
}

/// The backends `which` on `port`.
fn backends(rig: &AgentRig, which: &[usize], port: u16) -> Vec<SocketAddr> {
    which.iter().map(|&i| rig.backend_addr(i, port)).collect()
}

/// The configuration of one TCP service `web` on the VIP, served by every
/// backend on [`BACKEND_PORT`], with a health check when `health`.
fn web_on_every_backend(rig: &AgentRig, health: bool) -> String {
    let all: Vec<usize> = (0..BACKENDS).collect();
    config(&[service(
        "web",
        "TCP",
        VIP_PORT,
        &backends(rig, &all, BACKEND_PORT),
        health,
    )])
}

fn backend_list(rig: &AgentRig) -> Vec<BackendView> {
    serde_json::from_value(
        rig.xlb_json(&["backend", "list"])
            .expect("xlb backend list"),
    )
    .expect("BackendViews")
}

/// Sends `count` TCP echo requests through the VIP; answers per backend, and
/// the failures.
fn echo_requests(rig: &AgentRig, count: usize) -> ([usize; BACKENDS], Vec<String>) {
    let outcomes = EchoClient::new(rig.client())
        .with_timeout(IO_TIMEOUT)
        .each(Proto::Tcp, rig.vip_addr(VIP_PORT), count)
        .expect("running echo requests in the client namespace");
    let mut per_backend = [0; BACKENDS];
    let mut failures = Vec::new();
    for outcome in outcomes {
        match outcome.map(|echo| backend_named(&echo.server)) {
            Ok(Some(i)) => per_backend[i] += 1,
            Ok(None) => failures.push("an answer from an unknown server".to_owned()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    (per_backend, failures)
}

/// TCP echo requests through the VIP one after another, on a thread of its
/// own, until stopped (or [`TRAFFIC_CAP`] / [`MAX_REQUESTS`]).
struct RequestLoop {
    stop: Arc<AtomicBool>,
    succeeded: Arc<AtomicU64>,
    thread: JoinHandle<LoopReport>,
}

#[derive(Debug, Default)]
struct LoopReport {
    succeeded: u64,
    failures: Vec<String>,
    resets: u64,
    per_backend: [u64; BACKENDS],
    elapsed: Duration,
}

impl RequestLoop {
    fn start(client: &Netns, vip: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let succeeded = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, succeeded, echo) = (
                stop.clone(),
                succeeded.clone(),
                EchoClient::new(client).with_timeout(IO_TIMEOUT),
            );
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut report = LoopReport::default();
                let mut sent = 0;
                while !stop.load(Ordering::Acquire)
                    && started.elapsed() < TRAFFIC_CAP
                    && sent < MAX_REQUESTS
                {
                    sent += 1;
                    let outcome = echo
                        .each(Proto::Tcp, vip, 1)
                        .map(|mut all| all.pop().expect("one outcome"));
                    match outcome.and_then(|o| o) {
                        Ok(answer) => {
                            if let Some(i) = backend_named(&answer.server) {
                                report.per_backend[i] += 1;
                            }
                            report.succeeded += 1;
                            succeeded.fetch_add(1, Ordering::AcqRel);
                        }
                        Err(e) => {
                            if io_error_kind(&e) == Some(ErrorKind::ConnectionReset) {
                                report.resets += 1;
                            }
                            report
                                .failures
                                .push(format!("{:.3?}: {e}", started.elapsed()));
                        }
                    }
                    std::thread::sleep(REQUEST_PACE);
                }
                report.elapsed = started.elapsed();
                report
            })
        };
        Self {
            stop,
            succeeded,
            thread,
        }
    }

    fn succeeded(&self) -> u64 {
        self.succeeded.load(Ordering::Acquire)
    }

    /// Waits until `more` requests have succeeded since now.
    fn wait_for_more(&self, more: u64, what: &str) {
        let target = self.succeeded() + more;
        wait_until(PATIENCE, what, || self.succeeded() >= target).unwrap_or_else(|e| {
            panic!(
                "{e}: {} requests succeeded, {target} expected",
                self.succeeded()
            )
        });
    }

    fn finish(self) -> LoopReport {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the request loop panicked")
    }
}

/// The byte at `offset` of a stream: a hash of the offset, so a lost,
/// repeated or reordered chunk cannot echo back as the expected bytes.
fn pattern(offset: u64) -> u8 {
    (offset.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8
}

/// A stream through the VIP that exchanges [`CHUNK`]-byte chunks (each sent,
/// echoed and checked) for at least `min`, then until stopped.
struct StreamRun {
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    thread: JoinHandle<StreamReport>,
}

#[derive(Debug)]
struct StreamReport {
    server: String,
    bytes: u64,
    error: Option<String>,
    reset: bool,
    elapsed: Duration,
}

impl StreamRun {
    fn start(mut session: StreamSession, min: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, echoed) = (stop.clone(), echoed.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let server = session.server().to_owned();
                let mut chunk = vec![0u8; CHUNK];
                let mut failed = None;
                loop {
                    let elapsed = started.elapsed();
                    if (elapsed >= min && stop.load(Ordering::Acquire)) || elapsed >= TRAFFIC_CAP {
                        break;
                    }
                    let offset = session.echoed();
                    for (i, byte) in chunk.iter_mut().enumerate() {
                        *byte = pattern(offset + i as u64);
                    }
                    if let Err(e) = session.exchange(&chunk) {
                        failed = Some(e);
                        break;
                    }
                    echoed.store(session.echoed(), Ordering::Release);
                    std::thread::sleep(STREAM_PACE);
                }
                let bytes = session.echoed();
                if failed.is_none()
                    && let Err(e) = session.close()
                {
                    failed = Some(e);
                }
                StreamReport {
                    server,
                    bytes,
                    reset: failed
                        .as_ref()
                        .is_some_and(|e| e.kind() == ErrorKind::ConnectionReset),
                    error: failed.map(|e| e.to_string()),
                    elapsed: started.elapsed(),
                }
            })
        };
        Self {
            stop,
            echoed,
            thread,
        }
    }

    fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Acquire)
    }

    /// Waits until more bytes have come back than now.
    fn wait_for_progress(&self, what: &str) {
        let now = self.echoed();
        wait_until(PATIENCE, what, || self.echoed() > now)
            .unwrap_or_else(|e| panic!("{e}: the stream is stuck at {now} bytes"));
    }

    fn finish(self) -> StreamReport {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the stream panicked")
    }
}

#[test]
fn restart_and_upgrade_lose_nothing() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
        rig.serve_stream(i, STREAM_PORT).expect("stream server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    rig.write_config(&config(&[
        service(
            "web",
            "TCP",
            VIP_PORT,
            &backends(&rig, &all, BACKEND_PORT),
            true,
        ),
        service(
            "stream",
            "TCP",
            STREAM_PORT,
            &backends(&rig, &all, STREAM_PORT),
            false,
        ),
    ]))
    .expect("config");
    rig.start_agent(&[]).expect("agent");
    // web's backends wait for their first probe (milliseconds) before they
    // take traffic; the restarts below must not make them wait again.
    wait_until(PATIENCE, "every backend active", || {
        backend_list(&rig)
            .iter()
            .all(|b| b.status == BackendStatus::Active)
    })
    .expect("backends up");
    let first_stamp = rig.xdp_prog_stamp("eth0").expect("the program's stamp");
    let first_prog = rig
        .xdp_prog_id("eth0")
        .expect("ip link")
        .expect("xdp_lb on eth0");

    let session = StreamSession::open(rig.client(), rig.vip_addr(STREAM_PORT), IO_TIMEOUT)
        .expect("a stream through the VIP");
    let stream = StreamRun::start(session, STREAM_MIN);
    let requests = RequestLoop::start(rig.client(), rig.vip_addr(VIP_PORT));
    requests.wait_for_more(PER_PHASE, "requests with the first agent");

    // Restart: SIGKILL, traffic with no agent at all, a new agent.
    rig.kill_agent().expect("SIGKILL");
    requests.wait_for_more(PER_PHASE, "requests while no agent runs");
    stream.wait_for_progress("the stream while no agent runs");
    let started = Instant::now();
    rig.start_agent(&[]).expect("the restarted agent");
    let restart = started.elapsed();
    let restarted_prog = rig
        .xdp_prog_id("eth0")
        .expect("ip link")
        .expect("xdp_lb on eth0");
    requests.wait_for_more(PER_PHASE, "requests with the restarted agent");

    // Upgrade: the same, to a build with another version stamp.
    rig.kill_agent().expect("SIGKILL");
    requests.wait_for_more(PER_PHASE, "requests while no agent runs (upgrade)");
    stream.wait_for_progress("the stream while no agent runs (upgrade)");
    let started = Instant::now();
    let new_stamp = UPGRADE_STAMP.to_string();
    rig.start_agent(&["--version-stamp", &new_stamp])
        .expect("the upgraded agent");
    let upgrade = started.elapsed();
    let upgraded_prog = rig
        .xdp_prog_id("eth0")
        .expect("ip link")
        .expect("xdp_lb on eth0");
    let upgraded_stamp = rig.xdp_prog_stamp("eth0").expect("the program's stamp");
    let upgraded_prog_eth1 = rig
        .xdp_prog_id("eth1")
        .expect("ip link")
        .expect("xdp_lb on eth1");
    requests.wait_for_more(PER_PHASE, "requests with the upgraded agent");
    stream.wait_for_progress("the stream with the upgraded agent");

    let stream = stream.finish();
    let requests = requests.finish();
    report(&format!(
        "restart: agent ready {restart:.2?} after start, upgrade: {upgrade:.2?}; \
         xdp prog id on eth0 {first_prog} -> {restarted_prog} (restart) -> {upgraded_prog} \
         (upgrade; eth1 {upgraded_prog_eth1}); its version stamp {first_stamp:?} -> \
         {upgraded_stamp:?}"
    ));
    report(&format!(
        "restart: {} requests in {:.1?} ({:?} per backend), {} failed, {} resets; stream via {}: \
         {} bytes echoed intact in {:.1?}, error {:?}",
        requests.succeeded,
        requests.elapsed,
        requests.per_backend,
        requests.failures.len(),
        requests.resets,
        stream.server,
        stream.bytes,
        stream.elapsed,
        stream.error
    ));
    assert!(
        requests.failures.is_empty(),
        "{} requests failed, first: {:?}",
        requests.failures.len(),
        requests.failures.first()
    );
    assert_eq!(requests.resets, 0);
    assert!(
        stream.error.is_none(),
        "the stream broke (reset: {}): {:?}",
        stream.reset,
        stream.error
    );
    assert!(stream.elapsed >= STREAM_MIN && stream.bytes > 0);
    assert_ne!(
        upgraded_prog, restarted_prog,
        "the upgrade must replace the program on eth0"
    );
    assert_eq!(
        upgraded_prog, upgraded_prog_eth1,
        "one program build serves both interfaces"
    );
    assert_ne!(first_stamp, Some(UPGRADE_STAMP));
    assert_eq!(
        upgraded_stamp,
        Some(UPGRADE_STAMP),
        "the upgraded build runs on eth0"
    );
}

/// A UDP client bound to a fixed source port, connected to the VIP, so its
/// 5-tuple (hence its conntrack entry) never changes.
struct UdpFlow {
    socket: UdpSocket,
    sent: u64,
}

impl UdpFlow {
    fn open(client: &Netns, local: SocketAddr, server: SocketAddr) -> Self {
        let socket = client
            .run(move || {
                let socket = UdpSocket::bind(local)?;
                socket.connect(server)?;
                io::Result::Ok(socket)
            })
            .expect("entering the client namespace")
            .expect("binding the UDP client");
        Self { socket, sent: 0 }
    }

    /// Sends one request and returns the name of the backend that answered
    /// it, or `None` when no answer came within `timeout`. Late answers to
    /// earlier requests are skipped.
    fn ask(&mut self, timeout: Duration) -> Option<String> {
        self.sent += 1;
        let request = format!("udp-{}", self.sent);
        self.socket.send(request.as_bytes()).expect("UDP send");
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.socket
                .set_read_timeout(Some(left))
                .expect("UDP timeout");
            // Errors are timeouts, or ICMP errors reported on the connected
            // socket: both mean no answer yet.
            if let Ok(len) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..len]);
                if let Some((name, echoed)) = text.split_once(' ')
                    && echoed == request
                {
                    return Some(name.to_owned());
                }
            }
        }
    }
}

#[test]
fn backend_changes_under_load() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
        rig.serve_echo(i, Proto::Udp, BACKEND_PORT)
            .expect("UDP echo server");
        rig.serve_stream(i, STREAM_PORT).expect("stream server");
    }
    let with = |rig: &AgentRig, which: &[usize]| {
        config(&[
            service(
                "web",
                "TCP",
                VIP_PORT,
                &backends(rig, which, BACKEND_PORT),
                false,
            ),
            service(
                "stream",
                "TCP",
                STREAM_PORT,
                &backends(rig, which, STREAM_PORT),
                false,
            ),
            service(
                "dns",
                "UDP",
                VIP_PORT,
                &backends(rig, which, BACKEND_PORT),
                false,
            ),
        ])
    };
    rig.write_config(&with(&rig, &[0, 1])).expect("config");
    rig.start_agent(&[]).expect("agent");

    // The UDP flow, on b0 or b1.
    let mut udp = UdpFlow::open(
        rig.client(),
        SocketAddr::new(rig.client_ip(), UDP_CLIENT_PORT),
        rig.vip_addr(VIP_PORT),
    );
    let udp_backend = wait_for(PATIENCE, "an answer to the UDP client", || {
        Ok(udp.ask(Duration::from_millis(200)))
    })
    .expect("the UDP flow");
    let removed = backend_named(&udp_backend).expect("a known backend");

    // Held connections, each exchanging data once.
    let mut held: Vec<StreamSession> = (0..HELD)
        .map(|_| {
            StreamSession::open(rig.client(), rig.vip_addr(STREAM_PORT), IO_TIMEOUT)
                .expect("a held connection")
        })
        .collect();
    let exchange = |session: &mut StreamSession, round: u64| {
        let data: Vec<u8> = (0..4096).map(|i| pattern(round * 4096 + i)).collect();
        session.exchange(&data)
    };
    for session in &mut held {
        exchange(session, 1).expect("an exchange before the change");
    }
    let on = |held: &[StreamSession], i: usize| {
        held.iter()
            .filter(|s| s.server() == backend_name(i))
            .count()
    };
    report(&format!(
        "backend changes: {HELD} held connections, {} on b0, {} on b1; the UDP flow on {udp_backend}",
        on(&held, 0),
        on(&held, 1)
    ));
    assert_eq!(on(&held, 0) + on(&held, 1), HELD);

    // Add b2 under load.
    let requests = RequestLoop::start(rig.client(), rig.vip_addr(VIP_PORT));
    requests.wait_for_more(PER_PHASE, "requests before the change");
    let status = rig
        .apply_config(&with(&rig, &[0, 1, 2]), PATIENCE)
        .expect("adding b2");
    assert_eq!(status["last_reload"]["outcome"], "ok", "{status}");
    let broken: Vec<String> = held
        .iter_mut()
        .filter_map(|s| {
            exchange(s, 2)
                .err()
                .map(|e| format!("{} via {}: {e}", s.local_addr(), s.server()))
        })
        .collect();
    requests.wait_for_more(PER_PHASE, "requests after the change");
    // New connections reach b2: the change took effect.
    let mut tries = 0;
    wait_until(PATIENCE, "a new connection on b2", || {
        tries += 1;
        StreamSession::open(rig.client(), rig.vip_addr(STREAM_PORT), IO_TIMEOUT)
            .is_ok_and(|s| s.server() == "b2" && s.close().is_ok())
    })
    .expect("b2 takes new connections");
    let requests = requests.finish();
    report(&format!(
        "adding b2: {} of {HELD} held connections broke; request loop {} ok, {} failed \
         ({:?} per backend); b2 took a new connection after {tries} tries",
        broken.len(),
        requests.succeeded,
        requests.failures.len(),
        requests.per_backend
    ));
    assert!(broken.is_empty(), "held connections broke: {broken:#?}");
    assert!(
        requests.failures.is_empty(),
        "requests failed while adding b2: {:#?}",
        requests.failures
    );

    // Remove the UDP flow's backend; time until the flow reaches another.
    let remaining: Vec<usize> = (0..BACKENDS).filter(|&i| i != removed).collect();
    let reloads = rig.reloads().expect("reload count");
    rig.write_config(&with(&rig, &remaining)).expect("config");
    rig.hangup().expect("SIGHUP");
    let removal = Instant::now();
    let moved_to = wait_for(PATIENCE, "the UDP flow to reach a live backend", || {
        Ok(udp
            .ask(Duration::from_millis(20))
            .filter(|name| *name != udp_backend))
    })
    .expect("the UDP flow moves");
    let moved_after = removal.elapsed();
    wait_until(PATIENCE, "the agent to reload", || {
        rig.reloads().is_ok_and(|n| n > reloads)
    })
    .expect("reload");
    let mut kept = 0;
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    for session in &mut held {
        let result = exchange(session, 3);
        if session.server() == backend_name(removed) {
            let outcome = result
                .err()
                .map_or("still works".to_owned(), |e| e.to_string());
            *lost.entry(outcome).or_default() += 1;
        } else {
            result.unwrap_or_else(|e| {
                panic!(
                    "connection {} on {} (not removed) broke: {e}",
                    session.local_addr(),
                    session.server()
                )
            });
            kept += 1;
        }
    }
    report(&format!(
        "removing {udp_backend}: the UDP flow answered by {moved_to} {moved_after:.3?} after \
         the SIGHUP; {kept} connections on the other backends all work; the {} on \
         {udp_backend}: {lost:?}",
        lost.values().sum::<usize>()
    ));
    assert!(
        moved_after <= Duration::from_secs(1),
        "the UDP flow took {moved_after:?} to reach a live backend"
    );
    assert!(
        kept > 0 && !lost.is_empty(),
        "both backends must have held connections"
    );
    for session in held
        .into_iter()
        .filter(|s| s.server() != backend_name(removed))
    {
        session.close().expect("an orderly close");
    }
}

#[test]
fn a_bad_reload_keeps_the_running_configuration() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let good = config(&[service(
        "web",
        "TCP",
        VIP_PORT,
        &backends(&rig, &all, BACKEND_PORT),
        false,
    )]);
    rig.write_config(&good).expect("config");
    rig.start_agent(&[]).expect("agent");
    let (before, failures) = echo_requests(&rig, 30);
    assert!(failures.is_empty(), "{failures:?}");

    // Not YAML at all.
    let status = rig
        .apply_config(
            "services:\n  - name: web\n    frontends: [{address: 198.19.0.1, port: 80\n",
            PATIENCE,
        )
        .expect("a reload");
    let status: StatusView = serde_json::from_value(status).expect("a StatusView");
    let reload = status.last_reload.clone().expect("a last reload");
    assert_eq!(reload.outcome, "rejected", "{status:?}");
    assert!(
        reload.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{status:?}"
    );
    assert_eq!(status.services, 1, "{status:?}");
    let (after, failures) = echo_requests(&rig, 30);
    assert!(
        failures.is_empty(),
        "requests failed after a bad reload: {failures:?}"
    );
    assert!(after.iter().filter(|&&n| n > 0).count() >= 2, "{after:?}");

    // YAML, but a port out of range: the error names the place.
    let bad_port = good.replace("port: 80}", "port: 70000}");
    assert_ne!(bad_port, good);
    let status: StatusView =
        serde_json::from_value(rig.apply_config(&bad_port, PATIENCE).expect("a reload"))
            .expect("a StatusView");
    let reload = status.last_reload.clone().expect("a last reload");
    let error = reload.error.unwrap_or_default();
    assert_eq!(reload.outcome, "rejected");
    assert!(error.contains("services[0]"), "{error}");
    let (_, failures) = echo_requests(&rig, 10);
    assert!(failures.is_empty(), "{failures:?}");

    let text = rig.xlb_ok(&["status"]).expect("xlb status");
    assert!(text.contains("rejected"), "{text}");
    let metrics = rig.metrics_get("/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    let rejected = metric(
        &metrics.body,
        r#"xlb_config_reloads_total{outcome="rejected"}"#,
    );
    report(&format!(
        "bad reload: answers per backend before {before:?}, after {after:?}; status says \
         {} ok / {} rejected, last error {error:?}; metrics say rejected = {rejected:?}",
        status.reloads_ok, status.reloads_failed
    ));
    assert!(rejected.is_some_and(|n| n >= 2.0), "{}", metrics.body);
    assert!(status.reloads_failed >= 2, "{status:?}");

    // `xlb bpf lb list` reads the maps: the frontend and its three backends,
    // named by the agent's model.
    let mut all_backends = backends(&rig, &all, BACKEND_PORT);
    all_backends.sort_unstable();
    let view = datapath_lb(&rig);
    let listed = &view.services;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].service.as_deref(), Some("web"), "{listed:?}");
    assert_eq!(listed_backends(&listed[0]), all_backends, "{listed:?}");
    // A synced agent leaves nothing no frontend reaches.
    assert_eq!(
        view,
        DatapathLbView {
            services: view.services.clone(),
            ..DatapathLbView::default()
        }
    );

    // Restarted on the pinned state with the rejected file in place: the
    // agent keeps the pinned service forwarding but has no model, so
    // `service list` is empty (and warns), while `bpf lb list` still shows
    // the frontend the datapath forwards, without a name.
    rig.kill_agent().expect("SIGKILL");
    // And, while no agent runs, what a crash mid-sync or a bug leaves in
    // the pinned maps: the restarted agent cannot sync (its file is
    // rejected), so `bpf lb list` must show them.
    let leaked = leave_unreached_state(&rig);
    rig.spawn_agent(&rig.agent_args(&[]))
        .expect("the restarted agent");
    let restarted = wait_for(PATIENCE, "the restarted agent to reject its file", || {
        Ok(rig
            .status()
            .ok()
            .and_then(|s| serde_json::from_value::<StatusView>(s).ok())
            .filter(|s| s.reloads_failed >= 1 && s.attached.len() == INTERFACES.len()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rig.agent_log()));
    assert!(!restarted.synced, "{restarted:?}");
    let (_, failures) = echo_requests(&rig, 10);
    assert!(
        failures.is_empty(),
        "the pinned service stopped forwarding: {failures:?}"
    );
    let output = rig.xlb(&["service", "list"]).expect("xlb service list");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "only the header: {stdout}");
    assert!(stderr.contains("`xlb bpf lb list`"), "{stderr}");
    let view = datapath_lb(&rig);
    let listed = &view.services;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].frontend, rig.vip_addr(VIP_PORT), "{listed:?}");
    assert_eq!(listed[0].service, None, "{listed:?}");
    assert_eq!(listed_backends(&listed[0]), all_backends, "{listed:?}");
    assert_eq!(
        DatapathLbView {
            services: vec![],
            ..view
        },
        leaked
    );
    let output = rig.xlb(&["bpf", "lb", "list"]).expect("xlb bpf lb list");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{output:?}"
    );
    assert!(
        table.contains(&format!("{}/TCP", rig.vip_addr(VIP_PORT))),
        "{table}"
    );
    for heading in [
        "Tables no frontend names",
        "Active backends no table names",
        "Addresses no frontend has",
    ] {
        assert!(table.contains(heading), "{heading}: {table}");
    }
    report(&format!(
        "restart on a rejected file: `xlb bpf lb list` shows\n{table}"
    ));

    // The good file back: the first sync claims the pinned service, and
    // removes or retires all that no frontend reached, as the notes say.
    rig.apply_config(&good, PATIENCE).expect("a reload");
    wait_until(PATIENCE, "the restarted agent to sync", || {
        rig.status()
            .ok()
            .and_then(|s| serde_json::from_value::<StatusView>(s).ok())
            .is_some_and(|s| s.synced)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rig.agent_log()));
    let view = datapath_lb(&rig);
    assert_eq!(view.services.len(), 1, "{view:?}");
    assert_eq!(view.services[0].service.as_deref(), Some("web"), "{view:?}");
    assert_eq!(
        view,
        DatapathLbView {
            services: view.services.clone(),
            ..DatapathLbView::default()
        }
    );
}

/// The VIPs `speaker`'s entry of `status` (JSON) lists, as text.
fn announced_by(status: &serde_json::Value, speaker: &str) -> Vec<String> {
    status["announcements"]
        .as_array()
        .and_then(|all| all.iter().find(|a| a["speaker"] == speaker))
        .and_then(|a| a["vips"].as_array())
        .map(|vips| {
            vips.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue: an agent restarted over pinned state with a configuration file it
/// now rejects keeps serving the pinned tables, and BIRD's file and the L2
/// map keep the earlier agent's VIPs, but `xlb status` said both speakers
/// announced nothing (and `xlb_announced_vips` was 0), and nothing said
/// that health checks wait for a good file.
#[test]
fn a_restart_on_a_rejected_file_shows_what_the_earlier_agent_announced() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    // No BIRD runs: the agent writes its file all the same (a BIRD that
    // starts reads it), and retries the reconfiguration.
    let bird_socket = rig.workdir().join("bird.ctl");
    let bird_include = rig.workdir().join("bird-vips.conf");
    let speakers = [
        "--l2-interface",
        "eth0",
        "--bird-socket",
        bird_socket.to_str().expect("a UTF-8 path"),
        "--bird-include",
        bird_include.to_str().expect("a UTF-8 path"),
    ];
    let good = web_on_every_backend(&rig, true);
    rig.write_config(&good).expect("config");
    rig.start_agent(&speakers).expect("agent");
    let vip = vip().to_string();
    wait_until(PATIENCE, "the VIP announced on L2", || {
        rig.status()
            .is_ok_and(|s| announced_by(&s, "l2") == [vip.as_str()])
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rig.agent_log()));
    let routes = std::fs::read_to_string(&bird_include).expect("BIRD's file");
    assert!(
        routes.contains(&format!("route {vip}/32 blackhole;")),
        "{routes}"
    );

    rig.kill_agent().expect("SIGKILL");
    let b0 = rig.backend_addr(0, BACKEND_PORT);
    let rejected = good.replace(
        &format!("{{address: \"{b0}\"}}"),
        &format!("{{address: \"{b0}\", weight: 0}}"),
    );
    assert_ne!(rejected, good);
    rig.write_config(&rejected).expect("the rejected config");
    rig.spawn_agent(&rig.agent_args(&speakers))
        .expect("the restarted agent");
    let status = wait_for(PATIENCE, "the restarted agent to reject its file", || {
        Ok(rig.status().ok().filter(|s| {
            s["reloads_failed"].as_u64() >= Some(1)
                && s["attached"].as_array().map(Vec::len) == Some(INTERFACES.len())
        }))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rig.agent_log()));
    assert_eq!(status["synced"], false, "{status}");
    let (_, failures) = echo_requests(&rig, 10);
    assert!(
        failures.is_empty(),
        "the pinned service stopped: {failures:?}"
    );
    // What the speakers really hold: BIRD's file and the L2 map, untouched.
    assert_eq!(
        std::fs::read_to_string(&bird_include).expect("BIRD's file"),
        routes
    );
    for speaker in ["bgp", "l2"] {
        assert_eq!(
            announced_by(&status, speaker),
            [vip.as_str()],
            "{speaker}: {status}"
        );
    }
    assert_eq!(
        status["earlier_agent_state_kept"], "the configuration file is rejected",
        "{status}"
    );
    // The gauge counts what is still announced, as status shows it.
    let metrics = rig.metrics_get("/metrics").expect("GET /metrics");
    for speaker in ["bgp", "l2"] {
        assert_eq!(
            metric(
                &metrics.body,
                &format!(r#"xlb_announced_vips{{speaker="{speaker}"}}"#)
            ),
            Some(1.0),
            "{speaker}: {}",
            metrics.body
        );
    }
    let text = rig.xlb_ok(&["status"]).expect("xlb status");
    for line in [
        "Serving:      what an earlier agent pinned, unchanged: the configuration file is rejected",
        "no health check runs until a good file is loaded",
        &format!(
            "Announcing:   bgp: {vip} (an earlier agent's, kept until this agent's first sync)"
        ),
        &format!(
            "Announcing:   l2 on eth0: {vip} (an earlier agent's, kept until this agent's first sync)"
        ),
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
    report(&format!(
        "restarted on a rejected file, xlb status says:\n{text}"
    ));

    // The good file back: this agent announces, and says so.
    let status = rig.apply_config(&good, PATIENCE).expect("a reload");
    assert!(status.get("earlier_agent_state_kept").is_none(), "{status}");
    wait_until(PATIENCE, "the restarted agent to announce", || {
        rig.status().is_ok_and(|s| {
            announced_by(&s, "l2") == [vip.as_str()]
                && s["announcements"]
                    .as_array()
                    .is_some_and(|all| all.iter().all(|a| a.get("left_by_earlier_agent").is_none()))
        })
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", rig.agent_log()));
}

/// A reload whose file is good but needs more frontends than the agent's
/// maps hold is refused as a bad file is, before its model is taken: the
/// running service keeps serving, and `xlb status` and `xlb service list`
/// go on showing it rather than the refused file.
#[test]
fn a_reload_the_maps_cannot_hold_keeps_the_running_configuration() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all = backends(&rig, &(0..BACKENDS).collect::<Vec<_>>(), BACKEND_PORT);
    let good = config(&[service("web", "TCP", VIP_PORT, &all, false)]);
    rig.write_config(&good).expect("config");
    // Three frontends: `web`'s one, and room for two more.
    rig.start_agent(&["--max-services", "3"]).expect("agent");
    let (_, failures) = echo_requests(&rig, 10);
    assert!(failures.is_empty(), "{failures:?}");

    // Four services of one frontend each: one more than the map holds.
    let too_big = config(
        &(0..4)
            .map(|i| service(&format!("web{i}"), "TCP", VIP_PORT + i, &all, false))
            .collect::<Vec<_>>(),
    );
    let status: StatusView =
        serde_json::from_value(rig.apply_config(&too_big, PATIENCE).expect("a reload"))
            .expect("a StatusView");
    let reload = status.last_reload.clone().expect("a last reload");
    let error = reload.error.unwrap_or_default();
    assert_eq!(reload.outcome, "rejected", "{status:?}");
    assert!(
        error.contains("needs 4 frontends but --max-services is 3"),
        "{error}"
    );
    assert_eq!(status.services, 1, "{status:?}");
    let listed = rig.xlb_ok(&["service", "list"]).expect("xlb service list");
    assert!(
        listed.contains(&format!(":{VIP_PORT}/TCP"))
            && !listed.contains(&format!(":{}/TCP", VIP_PORT + 3)),
        "{listed}"
    );
    let (_, failures) = echo_requests(&rig, 10);
    assert!(
        failures.is_empty(),
        "requests failed after a refused reload: {failures:?}"
    );
    report(&format!("refused reload: {error}"));
}

/// On a node where nothing is pinned, a first file the agent refuses is
/// fatal before any map is made: maps pinned at that run's sizes would
/// outlive it and fix the sizes of the next run. A restart on pinned maps
/// with another `--hash-seed` says that new flows may move.
#[test]
fn a_first_file_refused_on_a_fresh_node_pins_nothing() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    let maps = rig.pin_dir().join("maps");
    let pinned = |maps: &std::path::Path| {
        std::fs::read_dir(maps)
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let all = backends(&rig, &(0..BACKENDS).collect::<Vec<_>>(), BACKEND_PORT);
    let two = config(&[
        service("web", "TCP", VIP_PORT, &all, false),
        service("web2", "TCP", VIP_PORT + 1, &all, false),
    ]);
    // No file yet; then two frontends with room for one.
    for (extra, says) in [
        (&[][..], "No such file or directory"),
        (
            &["--max-services", "2"][..],
            "needs 2 services but --max-services 2 holds 1",
        ),
    ] {
        if !extra.is_empty() {
            rig.write_config(&two).expect("config");
        }
        let (status, log) = rig
            .run_to_exit(&rig.agent_args(extra), PATIENCE)
            .expect("an agent that stops");
        assert!(!status.success(), "{log}");
        assert!(
            log.contains("the configuration file was rejected") && log.contains(says),
            "expected {says:?}: {log}"
        );
        // Logs to a file carry no terminal colours.
        assert!(!log.contains('\u{1b}'), "{log}");
        assert_eq!(pinned(&maps), 0, "maps pinned by a refused start: {log}");
    }
    // The sizes of the next start are its own.
    rig.start_agent(&["--max-services", "4"]).expect("agent");
    assert!(pinned(&maps) > 0);
    let log = rig.agent_log();
    assert!(
        !log.contains("does not apply") && !log.contains("--hash-seed differs"),
        "{log}"
    );
    // A restart on the pinned maps with another seed says what it does.
    rig.kill_agent().expect("SIGKILL the agent");
    rig.start_agent(&["--max-services", "4", "--hash-seed", "7"])
        .expect("agent");
    let log = rig.agent_log();
    assert!(
        log.contains("--hash-seed differs from the pinned datapath's"),
        "{log}"
    );
}

/// The agent sets `accept_local` on its interfaces where `/proc/sys` is
/// read-only, as a container runtime mounts it in an unprivileged container
/// (the DaemonSet's): over rtnetlink, not by writing the file.
#[test]
fn accept_local_is_set_with_proc_sys_read_only() {
    // `xlb` behind a wrapper that, in a mount namespace of its own (inside
    // the one `ip netns exec` made), makes /proc/sys read-only first.
    let dir = tempfile::tempdir().expect("temporary directory");
    let wrapper = dir.path().join("xlb-ro-proc-sys");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --mount --propagation private sh -c \
             'mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && \
             exec \"$0\" \"$@\"' {XLB} \"$@\"\n"
        ),
    )
    .expect("the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let mut rig = AgentRig::build(&wrapper).expect("rig");
    let all = backends(&rig, &(0..BACKENDS).collect::<Vec<_>>(), BACKEND_PORT);
    rig.write_config(&config(&[service("web", "TCP", VIP_PORT, &all, false)]))
        .expect("config");
    let accept_local = |rig: &AgentRig, dev: &str| {
        rig.lb()
            .sysctl(&format!("net.ipv4.conf.{dev}.accept_local"))
            .expect("sysctl")
    };
    for dev in INTERFACES {
        assert_eq!(accept_local(&rig, dev), "0", "{dev}: a fresh namespace's");
    }
    rig.start_agent(&[]).unwrap_or_else(|e| panic!("{e:#}"));
    for dev in INTERFACES {
        assert_eq!(accept_local(&rig, dev), "1", "{dev}: {}", rig.agent_log());
    }
}

/// `xlb bpf lb list -o json`.
fn datapath_lb(rig: &AgentRig) -> DatapathLbView {
    serde_json::from_value(
        rig.xlb_json(&["bpf", "lb", "list"])
            .expect("xlb bpf lb list"),
    )
    .expect("a DatapathLbView")
}

/// Writes into `rig`'s pinned maps, while no agent runs, one of each kind
/// of state no frontend reaches: a table under a service ID no frontend
/// names, naming a backend record of its own; an active record no table
/// names; and a VIP no frontend has (none of the rig's hosts). Answers what
/// `xlb bpf lb list` should show of them.
fn leave_unreached_state(rig: &AgentRig) -> DatapathLbView {
    // IDs far above those the agent gave its one service and its backends.
    const SERVICE: u32 = 4000;
    const TABLED: u32 = 4001;
    const UNTABLED: u32 = 4002;
    let lan = Subnet::lan(BACKEND_LAN);
    // Hosts past the backends' (.100 to .249): no rig host has them.
    let tabled = SocketAddr::new(lan.host(250).0.addr(), BACKEND_PORT);
    let untabled = SocketAddr::new(lan.host(251).0.addr(), BACKEND_PORT);
    let vip = IpAddr::V4(plan::vip(77).0);
    let mut datapath = Datapath::load_with(&LoadOptions {
        // The agent's defaults, as the rig starts it, and where it pins
        // its maps.
        sizes: MapSizes::default(),
        pin_dir: Some(rig.pin_dir().join("maps")),
    })
    .expect("the pinned maps");
    let table = vec![TABLED; 251];
    datapath.put_backend(TABLED, tabled, 1).expect("a record");
    datapath
        .put_backend(UNTABLED, untabled, 1)
        .expect("a record");
    datapath.swap_table(SERVICE, &table).expect("a table");
    datapath
        .set_address(vip, AddressKind::Vip)
        .expect("an address");
    DatapathLbView {
        services: vec![],
        tables_without_frontend: vec![DatapathTableView {
            service_id: SERVICE,
            service: None,
            table_size: 251,
            backends: vec![DatapathBackendView {
                id: TABLED,
                address: Some(tabled),
                generation: Some(1),
                status: DatapathBackendStatus::Active,
                slots: 251,
            }],
        }],
        active_backends_without_table: vec![DatapathRecordView {
            id: UNTABLED,
            address: untabled,
            generation: 1,
            status_by_service: BTreeMap::new(),
        }],
        addresses_without_frontend: vec![DatapathAddressView {
            address: vip,
            kind: FrontendKind::Vip,
        }],
    }
}

/// The active backends a listed table names, sorted, after checking that
/// its slots add up to its size.
fn listed_backends(listed: &DatapathServiceView) -> Vec<SocketAddr> {
    let slots: u32 = listed.backends.iter().map(|b| b.slots).sum();
    assert_eq!(slots, listed.table_size, "{listed:?}");
    assert!(listed.table_size > 0, "{listed:?}");
    let mut active: Vec<SocketAddr> = listed
        .backends
        .iter()
        .filter(|b| b.status == DatapathBackendStatus::Active)
        .filter_map(|b| b.address)
        .collect();
    active.sort_unstable();
    active
}

/// `args` with the value after `flag` replaced by `value`.
fn replaced(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    let at = args.iter().position(|a| a == flag).expect(flag);
    args[at + 1] = value.to_owned();
    args
}

#[test]
fn flags_that_cannot_work_change_nothing() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let web = service(
        "web",
        "TCP",
        VIP_PORT,
        &backends(&rig, &all, BACKEND_PORT),
        false,
    );
    rig.write_config(&config(&[web])).expect("config");
    rig.start_agent(&[]).expect("agent");
    let programs = |rig: &AgentRig| INTERFACES.map(|dev| rig.xdp_prog_id(dev).expect("ip link"));
    let pinned = |rig: &AgentRig, dir: &str, dev: &str| rig.pin_dir().join(dir).join(dev).exists();
    let before = programs(&rig);
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // No flow has ends of two families.
    let vip = rig.vip_addr(VIP_PORT).to_string();
    let mixed = rig
        .xlb(&[
            "simulate",
            "--client",
            "[2001:2::7]:40000",
            "--frontend",
            &vip,
        ])
        .expect("xlb simulate");
    let stderr = String::from_utf8_lossy(&mixed.stderr);
    assert!(
        !mixed.status.success() && stderr.contains("different IP families"),
        "{stderr}"
    );
    // In a file, that flow is named by its line, and the others answered.
    let flows = rig.workdir().join("flows.txt");
    std::fs::write(
        &flows,
        format!("198.18.0.7:40000 {vip}\n# the next one mixes families\n[2001:2::7]:40000 {vip}\n"),
    )
    .expect("a flows file");
    let batch = rig
        .xlb(&["simulate", "--flows", &flows.to_string_lossy()])
        .expect("xlb simulate --flows");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&batch.stdout),
        String::from_utf8_lossy(&batch.stderr),
    );
    assert!(!batch.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("198.18.0.7:40000"), "{stdout}");
    assert!(
        stderr.contains("line 3: [2001:2::7]:40000 -> ")
            && stderr.contains("different IP families"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of the 2 flows in"), "{stderr}");

    // A second agent on the pin directory the first one holds.
    let other_socket = rig.workdir().join("second.sock");
    let second = replaced(
        replaced(
            rig.agent_args(&[]),
            "--admin-socket",
            &other_socket.to_string_lossy(),
        ),
        "--metrics-address",
        "127.0.0.1:10257",
    );
    let (status, log) = rig.run_to_exit(&second, PATIENCE).expect("a second agent");
    assert!(!status.success(), "{log}");
    assert!(log.contains("another xlb agent runs on --pin-dir"), "{log}");
    assert_eq!(programs(&rig), before);
    // On a pin directory of its own: the interfaces run the first agent's
    // program, and the second is refused before it pins a map.
    let own_pins = rig.pin_dir().with_file_name("xlb-second");
    let (status, log) = rig
        .run_to_exit(
            &replaced(second, "--pin-dir", &own_pins.to_string_lossy()),
            PATIENCE,
        )
        .expect("a second agent");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("--interface eth0 already runs XDP program"),
        "{log}"
    );
    assert!(!own_pins.join("maps").exists(), "{log}");
    assert_eq!(programs(&rig), before);

    // With the first agent gone, its pinned links forward; an agent whose
    // flags cannot work must leave them as they are.
    rig.kill_agent().expect("SIGKILL the agent");
    let not_a_socket = rig.workdir().join("not-a-socket");
    std::fs::write(&not_a_socket, "").expect("a regular file");
    let not_a_socket = not_a_socket.to_string_lossy().into_owned();
    let base = rig.agent_args(&[]);
    let mut bad_pods = base.clone();
    bad_pods.extend(["--pod-interfaces".to_owned(), "veth[".to_owned()]);
    for (args, says) in [
        (
            replaced(base.clone(), "--interface", "eth0,xlbnosuch0"),
            "no such interface",
        ),
        (
            replaced(base.clone(), "--admin-socket", &not_a_socket),
            "is not a socket",
        ),
        // An address of the rig's plan that no interface holds.
        (
            replaced(base.clone(), "--metrics-address", "198.18.255.254:10256"),
            "binding the metrics address",
        ),
        (bad_pods, "is not a valid glob"),
    ] {
        let (status, log) = rig
            .run_to_exit(&args, PATIENCE)
            .expect("an agent that stops");
        assert!(!status.success(), "{log}");
        assert!(log.contains(says), "expected {says:?}: {log}");
        assert!(!log.contains("removed"), "{log}");
        assert_eq!(programs(&rig), before, "{log}");
        for dev in INTERFACES {
            assert!(
                pinned(&rig, "links", dev) && pinned(&rig, "uplinks", dev),
                "{dev}: {log}"
            );
        }
        let (_, failures) = echo_requests(&rig, 5);
        assert!(failures.is_empty(), "after `{says}`: {failures:?}");
    }

    // An interface dropped from the flags stops balancing: its links go.
    rig.spawn_agent(&replaced(base, "--interface", "eth0"))
        .expect("an agent on eth0 alone");
    wait_until(PATIENCE, "xdp_lb gone from eth1", || {
        rig.xdp_prog_id("eth1").ok() == Some(None)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", rig.agent_log()));
    assert!(!pinned(&rig, "links", "eth1") && !pinned(&rig, "uplinks", "eth1"));
    assert!(pinned(&rig, "links", "eth0"), "{}", rig.agent_log());
    assert!(rig.xdp_prog_id("eth0").expect("ip link").is_some());
}

/// The value of the sample `name` (with its labels) in OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(name))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// The status of the backend at `addr` in `xlb backend list`.
fn backend_status(rig: &AgentRig, addr: SocketAddr) -> Option<String> {
    backend_list(rig)
        .into_iter()
        .find(|b| b.address == addr)
        .map(|b| b.status.as_str().to_owned())
}

#[test]
fn a_backend_drained_in_one_of_its_services_is_not_listed_active() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    let shared = rig.backend_addr(0, BACKEND_PORT);
    let web = service("web", "TCP", VIP_PORT, &[shared], false);
    let api = service("api", "TCP", VIP_PORT + 1, &[shared], false);
    rig.write_config(&config(&[web, api])).expect("config");
    rig.start_agent(&[]).expect("agent");
    let drained = rig
        .xlb_ok(&["drain", &shared.to_string(), "--service", "api"])
        .unwrap_or_else(|e| panic!("{e:#}: {}", rig.agent_log()));
    assert_eq!(drained, format!("{shared}: draining in api\n"));

    let listed = backend_list(&rig);
    let backend = listed
        .iter()
        .find(|b| b.address == shared)
        .expect("the shared backend is listed");
    assert_eq!(
        backend.status_by_service,
        BTreeMap::from([
            ("api".to_owned(), BackendStatus::Draining),
            ("web".to_owned(), BackendStatus::Active),
        ])
    );
    // `status` keeps its meaning: web still sends it new flows.
    assert_eq!(backend.status, BackendStatus::Active);
    let table = rig.xlb_ok(&["backend", "list"]).expect("xlb backend list");
    assert!(table.contains("draining (1 of 2 services)"), "{table}");
}

/// Stops the rig's agent as an operator's upgrade does, with SIGTERM, and
/// reaps it once it has exited.
fn stop_agent(rig: &mut AgentRig) {
    let pid = rig.agent_pid().expect("an agent runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the agent");
    let exited = wait_for(PATIENCE, "the agent to exit on SIGTERM", || {
        rig.agent_exit()
    })
    .unwrap_or_else(|e| panic!("{e}: {}", rig.agent_log()));
    assert!(exited.success(), "{exited}: {}", rig.agent_log());
    rig.kill_agent().expect("reaping the agent");
}

/// The drains file of the rig's agent: in its state directory, by default
/// the admin socket's.
fn drains_file(rig: &AgentRig) -> std::path::PathBuf {
    rig.admin_socket()
        .parent()
        .expect("the admin socket's directory")
        .join("drains.json")
}

/// `web` on b0, b1 and b2, the configuration file draining b2.
fn web_with_b2_drained_by_the_file(rig: &AgentRig) -> String {
    let b2 = rig.backend_addr(2, BACKEND_PORT);
    web_on_every_backend(rig, false).replace(
        &format!("{{address: \"{b2}\"}}"),
        &format!("{{address: \"{b2}\", state: draining}}"),
    )
}

/// Issue: a drain made with `xlb drain` was lost when the agent restarted,
/// and the backend took new flows again.
#[test]
fn a_drain_survives_an_agent_restart_and_says_who_made_it() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let [b0, b2] = [0, 2].map(|i| rig.backend_addr(i, BACKEND_PORT));
    rig.write_config(&web_with_b2_drained_by_the_file(&rig))
        .expect("config");
    rig.start_agent(&[]).expect("agent");
    assert_eq!(
        rig.xlb_ok(&["drain", &b0.to_string()])
            .unwrap_or_else(|e| panic!("{e:#}: {}", rig.agent_log())),
        format!("{b0}: draining in web\n")
    );
    // The file's drain is not `xlb undrain`'s to lift, and it says so.
    let refused = rig.xlb(&["undrain", &b2.to_string()]).expect("xlb undrain");
    assert_eq!(refused.status.code(), Some(1));
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("the configuration file drains it there (state: draining)")
            && error.contains(&rig.config_path().display().to_string()),
        "{error}"
    );

    stop_agent(&mut rig);
    rig.start_agent(&[]).expect("the restarted agent");
    let log = rig.agent_log();
    assert!(
        log.contains("drains made with `xlb drain` restored") && log.contains("restored=1"),
        "{log}"
    );
    let listed = backend_list(&rig);
    let drained_by = |addr: SocketAddr| {
        let backend = listed
            .iter()
            .find(|b| b.address == addr)
            .expect("the backend is listed");
        (backend.status, backend.drained_by.clone())
    };
    assert_eq!(
        drained_by(b0),
        (
            BackendStatus::Draining,
            BTreeMap::from([("web".to_owned(), vec![DrainSource::Admin])])
        )
    );
    assert_eq!(
        drained_by(b2),
        (
            BackendStatus::Draining,
            BTreeMap::from([("web".to_owned(), vec![DrainSource::File])])
        )
    );
    // And the datapath keeps it out of new flows.
    let (per_backend, failures) = echo_requests(&rig, 30);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(per_backend, [0, 30, 0], "answers per backend");
    report(&format!(
        "drain restored after a SIGTERM restart; 30 new flows: {per_backend:?} per backend"
    ));

    // An undrain is kept too.
    assert_eq!(
        rig.xlb_ok(&["undrain", &b0.to_string()])
            .expect("xlb undrain"),
        format!("{b0}: undrained in web\n")
    );
    stop_agent(&mut rig);
    rig.start_agent(&[]).expect("the agent, again");
    let listed = backend_list(&rig);
    let b0_now = listed.iter().find(|b| b.address == b0).expect("b0");
    assert_eq!(b0_now.status, BackendStatus::Active);
    assert!(b0_now.drained_by.is_empty(), "{b0_now:?}");
}

#[test]
fn a_drains_file_that_cannot_be_restored_is_said_and_the_agent_starts() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    let b0 = rig.backend_addr(0, BACKEND_PORT);
    rig.write_config(&web_on_every_backend(&rig, false))
        .expect("config");
    rig.start_agent(&[]).expect("agent");
    rig.xlb_ok(&["drain", &b0.to_string()]).expect("xlb drain");
    rig.kill_agent().expect("killing the agent");
    let file = drains_file(&rig);
    std::fs::write(&file, "{\"version\": 1, \"drains\": [{\"backend\": ")
        .expect("a truncated drains file");

    rig.start_agent(&[]).expect("the agent starts all the same");
    let log = rig.agent_log();
    assert!(
        log.contains("ERROR")
            && log.contains("could not be restored")
            && log.contains(&file.display().to_string()),
        "{log}"
    );
    let status: StatusView =
        serde_json::from_value(rig.status().expect("xlb status")).expect("a StatusView");
    let drains = status.drains.expect("the drains in the status");
    let error = drains.restore_error.expect("the restore error");
    assert!(error.contains("drains.json.rejected"), "{error}");
    assert!(drains.drains.is_empty(), "{:?}", drains.drains);
    assert!(file.with_file_name("drains.json.rejected").exists());
    let text = rig.xlb_ok(&["status"]).expect("xlb status");
    assert!(text.contains("not restored at start"), "{text}");
    // What the log and the status say: the backend takes new flows again.
    assert_eq!(
        backend_status(&rig, b0).as_deref(),
        Some("active"),
        "{}",
        rig.agent_log()
    );
}

#[test]
fn health_checks_take_a_dead_backend_out_and_back() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    rig.write_config(&web_on_every_backend(&rig, true))
        .expect("config");
    rig.start_agent(&[]).expect("agent");
    let victim = 1;
    let addr = rig.backend_addr(victim, BACKEND_PORT);
    wait_until(PATIENCE, "every backend active", || {
        let list = backend_list(&rig);
        list.len() == BACKENDS && list.iter().all(|b| b.status.as_str() == "active")
    })
    .expect("backends up");

    rig.stop_echo(victim, Proto::Tcp, BACKEND_PORT)
        .expect("stopping b1");
    let killed = Instant::now();
    wait_until(PATIENCE, "b1 down", || {
        backend_status(&rig, addr).as_deref() == Some("down")
    })
    .expect("b1 goes down");
    let down_after = killed.elapsed();
    let bound = INTERVAL * FALL + PROBE_TIMEOUT + HEALTH_MARGIN;
    let (spread, failures) = echo_requests(&rig, 30);

    rig.serve_echo(victim, Proto::Tcp, BACKEND_PORT)
        .expect("restarting b1");
    let restarted = Instant::now();
    wait_until(PATIENCE, "b1 active again", || {
        backend_status(&rig, addr).as_deref() == Some("active")
    })
    .expect("b1 comes back");
    let up_after = restarted.elapsed();
    let mut reached = 0;
    let mut sent = 0;
    wait_until(PATIENCE, "a request answered by b1", || {
        let (per_backend, _) = echo_requests(&rig, 10);
        sent += 10;
        reached += per_backend[victim];
        reached > 0
    })
    .expect("requests reach b1 again");
    report(&format!(
        "health: b1 down {down_after:.3?} after its server stopped (bound {bound:?} = \
         {INTERVAL:?} x {FALL} + {PROBE_TIMEOUT:?} + margin {HEALTH_MARGIN:?}); 30 requests \
         while down: {spread:?} per backend, {} failed; back up {up_after:.3?} after its \
         restart (rise {RISE} x {INTERVAL:?}); {reached} of the next {sent} requests reached it",
        failures.len()
    ));
    assert!(
        down_after <= bound,
        "b1 went down after {down_after:?}, more than {bound:?}"
    );
    assert!(
        failures.is_empty(),
        "requests failed with b1 down: {failures:?}"
    );
    assert_eq!(spread[victim], 0);
}

/// The operator audit's `ghost`: a service added to a running agent with a
/// backend nothing answers on, then (after another backend is added) the
/// agent restarted on the pinned state. Each time the backend shows `pending` or `down`, never `active`,
/// and no announcement names its VIP (the agent logs each set it
/// announces), while `web`, on live backends, stays active across the
/// restart.
#[test]
fn a_dead_backend_is_never_active_nor_announced_when_added_or_after_a_restart() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let web = service(
        "web",
        "TCP",
        VIP_PORT,
        &backends(&rig, &all, BACKEND_PORT),
        true,
    );
    // No host has that address: every probe times out, so the backend is
    // pending for a probe timeout, then down.
    let dead = SocketAddr::new(Subnet::lan(BACKEND_LAN).host(249).0.addr(), BACKEND_PORT);
    let ghost_vip: IpAddr = plan::vip(2).0.into();
    let ghost = format!(
        "  - name: ghost\n    protocol: TCP\n    frontends: [{{address: {ghost_vip}, port: {VIP_PORT}}}]\n    backends: [{{address: \"{dead}\"}}]\n    health_check: {{type: tcp, interval: {}ms, timeout: {}ms, rise: {RISE}, fall: {FALL}}}\n",
        INTERVAL.as_millis(),
        PROBE_TIMEOUT.as_millis()
    );
    rig.write_config(&config(std::slice::from_ref(&web)))
        .expect("config");
    rig.start_agent(&["--l2-interface", "eth0"]).expect("agent");
    wait_until(PATIENCE, "web's backends active", || {
        backend_list(&rig)
            .iter()
            .all(|b| b.status == BackendStatus::Active)
    })
    .expect("web up");

    // Polls the backend list and the announcements until the dead backend
    // has been down for longer than `fall` probes would have kept it up
    // before; what it saw of it, in order, without repeats.
    let watch_dead = |rig: &AgentRig| {
        let mut seen: Vec<String> = Vec::new();
        let mut down_since = None;
        let deadline = Instant::now() + PATIENCE;
        loop {
            let list = backend_list(rig);
            let view = list
                .iter()
                .find(|b| b.address == dead)
                .expect("the dead backend is listed");
            let shown = format!("{} {}", view.status.as_str(), view.health);
            assert!(
                shown == "down pending" || shown == "down down",
                "the dead backend shows `{shown}`"
            );
            if seen.last() != Some(&shown) {
                seen.push(shown.clone());
            }
            let announced = rig.status().expect("status")["announcements"][0]["vips"].clone();
            assert!(
                !announced
                    .as_array()
                    .is_some_and(|vips| vips.iter().any(|v| v == &ghost_vip.to_string())),
                "ghost's VIP is announced: {announced}"
            );
            if shown == "down down" {
                let since = *down_since.get_or_insert_with(Instant::now);
                if since.elapsed() > INTERVAL * FALL + HEALTH_MARGIN {
                    return seen;
                }
            }
            assert!(Instant::now() < deadline, "never down: {seen:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let announced_ghost = |log: &str| {
        log.lines()
            .filter(|line| line.contains("announcing"))
            .any(|line| {
                line.contains(&format!("{ghost_vip},")) || line.contains(&format!("{ghost_vip}}}"))
            })
    };

    rig.apply_config(&config(&[web.clone(), ghost.clone()]), PATIENCE)
        .expect("adding ghost");
    let added = watch_dead(&rig);
    let log = rig.agent_log();
    assert!(!announced_ghost(&log), "{log}");

    // The audit's `lonely`: a backend added next takes the lowest free
    // backend ID, which an agent that let the dead backend in had given it
    // (and retired), so no pinned record says it was down.
    let extra = service(
        "extra",
        "TCP",
        VIP_PORT + 1,
        &[rig.backend_addr(1, BACKEND_PORT + 1)],
        false,
    );
    rig.apply_config(&config(&[web.clone(), ghost.clone(), extra]), PATIENCE)
        .expect("adding extra");
    rig.kill_agent().expect("SIGKILL");
    rig.start_agent(&["--l2-interface", "eth0"])
        .expect("the restarted agent");
    // At once, without waiting for a probe: web's backends were in its
    // pinned table.
    let list = backend_list(&rig);
    assert!(
        list.iter()
            .filter(|b| b.address != dead)
            .all(|b| b.status == BackendStatus::Active),
        "{list:?}"
    );
    let restarted = watch_dead(&rig);
    let log = rig.agent_log();
    assert!(!announced_ghost(&log), "{log}");
    report(&format!(
        "a dead backend showed {added:?} when added and {restarted:?} after a restart; its VIP \
         was never announced"
    ));
}

/// Runs `f` on a thread of its own whose file-system credentials are
/// `uid`/`gid` with no supplementary group, as a user other than root would
/// connect. Only that thread changes: the raw system calls set the calling
/// thread's credentials (glibc's wrapper of setgroups would change every
/// thread of the process), and the thread ends with `f`.
fn as_user<T: Send + 'static>(uid: u32, gid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // SAFETY: a plain system call on the calling thread's credentials,
        // with an empty list.
        let dropped =
            unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
        assert_eq!(dropped, 0, "setgroups: {}", io::Error::last_os_error());
        // SAFETY: setfsgid/setfsuid change this thread only; moving the
        // fsuid away from 0 drops the file capabilities (CAP_DAC_OVERRIDE...)
        // from its effective set, so the permission checks are a user's.
        // Called with an invalid ID, they change nothing and return the
        // current one.
        let (now_uid, now_gid) = unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
            (libc::setfsuid(u32::MAX), libc::setfsgid(u32::MAX))
        };
        assert_eq!((now_uid as u32, now_gid as u32), (uid, gid));
        f()
    })
    .join()
    .expect("the credential thread panicked")
}

#[test]
fn the_admin_socket_is_for_its_group_only() {
    const NOBODY: u32 = 65_534;
    const ADMINS: u32 = 4_242;
    let mut rig = AgentRig::build(XLB).expect("rig");
    rig.write_config(&web_on_every_backend(&rig, false))
        .expect("config");
    rig.start_agent(&["--admin-group", &ADMINS.to_string()])
        .expect("agent");
    let socket = rig.admin_socket().to_owned();
    let meta = std::fs::metadata(&socket).expect("the admin socket");
    report(&format!(
        "admin socket {}: mode {:o}, owner {}:{}",
        socket.display(),
        meta.mode() & 0o7777,
        meta.uid(),
        meta.gid()
    ));
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), ADMINS);

    // Let other users reach the socket's directory, so that only the
    // socket's own mode decides; a socket anyone may use, beside it, shows
    // that the directories let them through.
    std::fs::set_permissions(rig.workdir(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the work directory");
    let dir = socket.parent().expect("the socket's directory").to_owned();
    let dir_mode = std::fs::metadata(&dir).expect("socket directory").mode() & 0o7777;
    let open = dir.join("anyone.sock");
    let _listener = UnixListener::bind(&open).expect("a control socket");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let connect = |path: &Path| {
        let path = path.to_owned();
        move || UnixStream::connect(&path).map(drop)
    };
    let outsider_open = as_user(NOBODY, NOBODY, connect(&open));
    let outsider = as_user(NOBODY, NOBODY, connect(&socket));
    let member = as_user(NOBODY, ADMINS, connect(&socket));
    report(&format!(
        "admin socket: directory mode {dir_mode:o}; a user outside the group: {outsider:?} \
         (a mode-666 socket beside it: {outsider_open:?}); a user in group {ADMINS}: {member:?}"
    ));
    outsider_open.expect("the directories let other users through");
    assert_eq!(
        outsider.map_err(|e| e.kind()),
        Err(ErrorKind::PermissionDenied)
    );
    member.expect("a member of the admin group connects");
}

#[test]
fn tearing_the_rig_down_leaves_no_bpf_object() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    rig.write_config(&web_on_every_backend(&rig, false))
        .expect("config");
    rig.start_agent(&[]).expect("agent");
    let objects = rig.bpf_objects().expect("the agent's BPF objects");
    let pin_dir = rig.pin_dir().to_owned();
    report(&format!(
        "teardown: the agent owns programs {:?}, links {:?}, {} maps",
        objects.programs,
        objects.links,
        objects.maps.len()
    ));
    assert!(
        !objects.programs.is_empty() && objects.links.len() >= 2 && !objects.maps.is_empty(),
        "{objects:?}"
    );
    assert_eq!(
        objects.alive().expect("bpftool"),
        objects,
        "bpftool finds every object while the rig lives"
    );
    drop(rig);
    let started = Instant::now();
    let mut left = objects.clone();
    wait_until(PATIENCE, "the agent's BPF objects to be freed", || {
        left = objects.alive().expect("bpftool");
        left.is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: still there: {left:?}"));
    report(&format!(
        "teardown: all freed {:.2?} after the rig was dropped",
        started.elapsed()
    ));
    assert!(!pin_dir.exists(), "{} is still there", pin_dir.display());
}

#[test]
fn the_demo_configuration_names_the_rig_addresses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo.yaml");
    let model = control_plane::source::file::load(&path)
        .unwrap_or_else(|e| panic!("{} is not valid: {e}", path.display()));
    let (vip4, _) = plan::vip(1);
    let lan = Subnet::lan(BACKEND_LAN);
    let plan_backends: Vec<SocketAddr> = (0..BACKENDS)
        .map(|i| {
            let host = u8::try_from(100 + i).expect("a host number");
            SocketAddr::new(lan.host(host).0.addr(), BACKEND_PORT)
        })
        .collect();
    assert_eq!(model.services.len(), 1);
    let (name, web) = model.services.iter().next().expect("one service");
    assert_eq!(name.0, "web");
    let frontends: Vec<(IpAddr, u16)> = web.frontends.iter().map(|f| (f.addr, f.port)).collect();
    assert_eq!(frontends, [(IpAddr::V4(vip4), VIP_PORT)]);
    let backends: Vec<SocketAddr> = web.backends.iter().map(|b| b.addr).collect();
    assert_eq!(backends, plan_backends);
    assert!(web.health_check.is_some());
}

#[test]
fn observe_shows_each_new_flow_and_its_backend() {
    const REQUESTS: usize = 12;
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let servers = backends(&rig, &all, BACKEND_PORT);
    rig.write_config(&config(&[service("web", "TCP", VIP_PORT, &servers, false)]))
        .expect("config");
    rig.start_agent(&["--flow-event-sampling", "1"])
        .expect("agent");
    // Flows before `observe` starts: it shows none of them, only what
    // happens once it runs.
    let (_, failures) = echo_requests(&rig, REQUESTS);
    assert!(failures.is_empty(), "{failures:?}");
    let started =
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE).expect("the clock");
    let started_ns = started.tv_sec() as u64 * 1_000_000_000 + started.tv_nsec() as u64;

    let count = REQUESTS.to_string();
    let json = std::thread::scope(|scope| {
        let observe = scope.spawn(|| {
            rig.xlb_ok(&[
                "observe",
                "--count",
                &count,
                "--duration",
                "10s",
                "-o",
                "json",
            ])
        });
        // Requests until it has seen its count (it starts at some point
        // among them), bounded.
        for _ in 0..200 {
            if observe.is_finished() {
                break;
            }
            let (_, failures) = echo_requests(&rig, 1);
            assert!(failures.is_empty(), "{failures:?}");
        }
        observe.join().expect("the observe thread")
    })
    .expect("xlb observe");
    let events: Vec<FlowEventView> = json
        .lines()
        .map(|line| serde_json::from_str(line).expect("one event per line"))
        .collect();
    assert_eq!(events.len(), REQUESTS, "{json}");
    for event in &events {
        assert!(
            event.time_ns >= started_ns,
            "an event from before: {event:?}"
        );
        assert_eq!(event.kind, "new_flow", "{event:?}");
        assert_eq!(event.service.as_deref(), Some("web"), "{event:?}");
        assert_eq!(event.frontend, rig.vip_addr(VIP_PORT), "{event:?}");
        assert_eq!(
            event.client.map(|c| c.ip()),
            Some(rig.client_ip()),
            "{event:?}"
        );
        assert!(
            event.backend.is_some_and(|b| servers.contains(&b)),
            "{event:?}"
        );
    }
    // Reading takes nothing away: two more readers of the agent's history
    // from when the observer started each find every event it printed.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let read = || {
        runtime
            .block_on(AdminClient::new(rig.admin_socket()).events_since(
                MAX_EVENTS,
                Duration::from_millis(100),
                started_ns,
                None,
            ))
            .expect("the agent's events")
    };
    let (first, second) = (read(), read());
    // The last request's event may come between the two reads.
    assert!(
        second.events.starts_with(&first.events),
        "{first:?} then {second:?}"
    );
    assert_eq!((first.missed, second.missed), (0, 0));
    assert!(
        events.iter().all(|e| first.events.contains(e)),
        "observed {events:?}, the history holds {:?}",
        first.events
    );
    report(&format!(
        "observe: {} new flows reported for {REQUESTS} requests; the history holds {} \
         from when it started, read alike by two more readers",
        events.len(),
        first.events.len()
    ));
}

#[test]
fn two_observers_at_once_each_see_every_event() {
    // Requests run for REQUESTS_FOR from when both observers are spawned,
    // each observer for OBSERVE_FOR from its start: once both have started
    // (a fraction of a second), every request until the last is seen by
    // both, and each observer is still running when the last one ends.
    const OBSERVE_FOR: &str = "8s";
    const REQUESTS_FOR: Duration = Duration::from_secs(3);
    const REQUESTS_CAP: usize = 500;
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let servers = backends(&rig, &all, BACKEND_PORT);
    rig.write_config(&config(&[service("web", "TCP", VIP_PORT, &servers, false)]))
        .expect("config");
    rig.start_agent(&["--flow-event-sampling", "1"])
        .expect("agent");

    let observed = std::thread::scope(|scope| {
        let observe =
            || scope.spawn(|| rig.xlb_ok(&["observe", "--duration", OBSERVE_FOR, "-o", "json"]));
        let observers = [observe(), observe()];
        let until = Instant::now() + REQUESTS_FOR;
        for _ in 0..REQUESTS_CAP {
            if Instant::now() >= until {
                break;
            }
            let (_, failures) = echo_requests(&rig, 1);
            assert!(failures.is_empty(), "{failures:?}");
        }
        observers.map(|o| o.join().expect("an observe thread").expect("xlb observe"))
    });
    let [a, b] = observed.map(|json| {
        json.lines()
            .map(|line| serde_json::from_str(line).expect("one event per line"))
            .collect::<Vec<FlowEventView>>()
    });
    // The observer that started later saw the last events of the other,
    // all of them: none was taken away by the other.
    let (earlier, later) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    assert!(later.len() >= 2, "too few events to compare: {later:?}");
    assert_eq!(earlier[earlier.len() - later.len()..], later[..]);
    report(&format!(
        "two observers at once: {} and {} new flows, the last {} the same",
        earlier.len(),
        later.len(),
        later.len()
    ));
}

#[test]
fn observe_goes_on_across_an_agent_restart_and_says_so() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    for i in 0..BACKENDS {
        rig.serve_echo(i, Proto::Tcp, BACKEND_PORT)
            .expect("echo server");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let servers = backends(&rig, &all, BACKEND_PORT);
    rig.write_config(&config(&[service("web", "TCP", VIP_PORT, &servers, false)]))
        .expect("config");
    rig.start_agent(&["--flow-event-sampling", "1"])
        .expect("agent");
    // Two events, one before the restart and one after; bounded by its
    // duration should either never come.
    let mut observe = std::process::Command::new(XLB)
        .arg("--admin-socket")
        .arg(rig.admin_socket())
        .args(["observe", "--count", "2", "--duration", "60s", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("xlb observe");
    let stdout = observe.stdout.take().expect("observe's stdout");
    let (line_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in io::BufRead::lines(io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Requests until the observer shows one (it starts at some point among
    // them), bounded.
    let next_line = |rig: &AgentRig| {
        for _ in 0..200 {
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                return line;
            }
            let (_, failures) = echo_requests(rig, 1);
            assert!(failures.is_empty(), "{failures:?}");
        }
        panic!("xlb observe printed nothing for 200 requests");
    };
    let before: FlowEventView =
        serde_json::from_str(&next_line(&rig)).expect("an event before the restart");
    stop_agent(&mut rig);
    rig.start_agent(&["--flow-event-sampling", "1"])
        .expect("the agent again");
    let restarted: serde_json::Value = serde_json::from_str(&next_line(&rig)).expect("JSON");
    let after: FlowEventView =
        serde_json::from_str(&next_line(&rig)).expect("an event after the restart");
    let status = observe.wait().expect("xlb observe ends");
    reader.join().expect("the reader thread");
    assert!(status.success(), "{status}");
    assert_eq!(restarted["restarted"], true, "{restarted}");
    for event in [&before, &after] {
        assert_eq!(
            (event.kind.as_str(), event.service.as_deref()),
            ("new_flow", Some("web")),
            "{event:?}"
        );
    }
    report(&format!(
        "observe across a restart: {restarted} between the events at {} and {} ns",
        before.time_ns, after.time_ns
    ));
}

#[test]
fn a_dsr_service_through_the_agent_and_xlb_decap() {
    const REQUESTS: usize = 30;
    let mut rig = AgentRig::build(XLB).expect("rig");
    let any = SocketAddr::from(([0, 0, 0, 0], VIP_PORT));
    for i in 0..BACKENDS {
        let netns = rig.backend(i).clone();
        let host = netns_tests::Cidr::new(vip(), 32).expect("a host prefix");
        rig.topo
            .rig
            .add_address(&netns, "lo", host)
            .expect("the VIP on lo");
        // On every address: the VIP's traffic, and the health checks' on
        // the backend's own.
        rig.topo
            .rig
            .serve_echo(&netns, Proto::Tcp, any, &backend_name(i))
            .expect("echo server");
        rig.topo
            .rig
            .spawn(
                &netns,
                XLB,
                &["decap", "--interface", "eth0", "--vip", &vip().to_string()],
            )
            .expect("xlb decap");
    }
    let all: Vec<usize> = (0..BACKENDS).collect();
    let servers = backends(&rig, &all, VIP_PORT);
    let mut yaml = service("web", "TCP", VIP_PORT, &servers, true);
    yaml.push_str("    mode: dsr\n");
    rig.write_config(&config(&[yaml])).expect("config");
    // The health probes go through the tunnel, by the LB's route to the VIP.
    rig.route_vip_upstream().expect("a route to the VIP");
    let source = rig.topo.lb_back.v4.to_string();
    rig.start_agent(&["--encap-source", &source])
        .expect("agent");
    // `xlb decap` attaches in the background: the first health probes,
    // which go through the tunnel, and the first requests may come before
    // it. Every backend is in once its probes pass.
    wait_until(PATIENCE, "every backend active", || {
        let list = backend_list(&rig);
        list.len() == BACKENDS && list.iter().all(|b| b.status.as_str() == "active")
    })
    .expect("backends up through the tunnel");
    let served = wait_for(
        PATIENCE,
        "requests through the DSR VIP all answered",
        || {
            let (per_backend, failures) = echo_requests(&rig, REQUESTS);
            Ok(failures.is_empty().then_some(per_backend))
        },
    )
    .expect("requests through the DSR VIP");
    assert!(
        served.iter().all(|&n| n > 0),
        "every backend answers a share: {served:?}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&rig.xlb_ok(&["stats", "-o", "json"]).expect("xlb stats"))
            .expect("stats JSON");
    let encapsulated = stats["verdicts"]["forward_encapsulated"]
        .as_u64()
        .unwrap_or_default();
    assert!(encapsulated >= REQUESTS as u64, "{stats}");
    assert!(stats["verdicts"].get("forward_reply").is_none(), "{stats}");
    report(&format!(
        "dsr: {REQUESTS} requests answered directly by the backends {served:?}, \
         {encapsulated} packets encapsulated"
    ));
}

/// The client's neighbour entry for `ip`: its MAC and state, from
/// `ip -j neigh show`.
fn neighbour(rig: &AgentRig, ip: IpAddr) -> Option<(String, String)> {
    let out = rig
        .client()
        .exec("ip", &["-j", "neigh", "show", &ip.to_string()])
        .expect("ip neigh");
    let entries: serde_json::Value = serde_json::from_str(&out).expect("ip -j neigh");
    let entry = entries.as_array()?.first()?;
    let state = entry["state"][0].as_str().unwrap_or_default().to_owned();
    Some((
        entry["lladdr"].as_str().unwrap_or_default().to_owned(),
        state,
    ))
}

/// A rig whose config has one TCP service on the IPv4 VIP and one on an
/// IPv6 VIP, their echo servers running, and the client holding both VIPs
/// on its own segment: it asks for them by ARP and neighbour discovery
/// instead of routing them to the LB. Returns the rig, the services' config
/// entries and the IPv6 VIP.
fn l2_rig() -> (AgentRig, Vec<String>, IpAddr) {
    let mut rig = AgentRig::build(XLB).expect("rig");
    let vip6: IpAddr = plan::vip(1).1.into();
    let mut services = Vec::new();
    for (name, vip, v4) in [("web", vip(), true), ("web6", vip6, false)] {
        let backends: Vec<String> = (0..BACKENDS)
            .map(|i| {
                let b = &rig.topo.backends[i];
                let ip: IpAddr = if v4 { b.v4.into() } else { b.v6.into() };
                format!("{{address: \"{}\"}}", SocketAddr::new(ip, BACKEND_PORT))
            })
            .collect();
        services.push(format!(
            "  - name: {name}\n    protocol: TCP\n    frontends: [{{address: \"{vip}\", port: {VIP_PORT}}}]\n    backends: [{}]\n",
            backends.join(", ")
        ));
        for i in 0..BACKENDS {
            let b = rig.topo.backends[i].clone();
            let ip: IpAddr = if v4 { b.v4.into() } else { b.v6.into() };
            rig.topo
                .rig
                .serve_echo(
                    &b.netns,
                    Proto::Tcp,
                    SocketAddr::new(ip, BACKEND_PORT),
                    &backend_name(i),
                )
                .expect("echo server");
        }
    }
    rig.write_config(&config(&services)).expect("config");
    let client = rig.client().clone();
    for (vip, bits) in [(vip(), 32), (vip6, 128)] {
        let on_link =
            netns_tests::Route::to(netns_tests::Cidr::new(vip, bits).expect("cidr")).dev("eth0");
        rig.topo.rig.add_route(&client, &on_link).expect("route");
    }
    (rig, services, vip6)
}

#[test]
fn l2_mode_answers_arp_and_neighbour_solicitations_for_the_vip() {
    const REQUESTS: usize = 20;
    let (mut rig, services, vip6) = l2_rig();
    rig.start_agent(&["--l2-interface", "eth0"]).expect("agent");
    let client = rig.client().clone();
    let lb_mac = rig.lb().mac("eth0").expect("the LB's MAC").to_string();
    for vip in [vip(), vip6] {
        let echoes = EchoClient::new(rig.client())
            .with_timeout(IO_TIMEOUT)
            .tcp(SocketAddr::new(vip, VIP_PORT), REQUESTS)
            .unwrap_or_else(|e| panic!("requests to {vip}: {e}"));
        assert_eq!(echoes.len(), REQUESTS);
        let (mac, state) = neighbour(&rig, vip).expect("a neighbour entry for the VIP");
        assert_eq!(mac, lb_mac, "{vip} resolved to another MAC ({state})");
    }
    let stats = rig.xlb_json(&["stats"]).expect("xlb stats");
    let arp = stats["verdicts"]["tx_arp_reply"]
        .as_u64()
        .unwrap_or_default();
    let nd = stats["verdicts"]["tx_neighbour_advert"]
        .as_u64()
        .unwrap_or_default();
    assert!(arp >= 1 && nd >= 1, "{stats}");

    // A VIP the agent no longer serves is no longer answered.
    rig.apply_config(&config(&services[1..]), PATIENCE)
        .expect("reload");
    client
        .exec("ip", &["neigh", "flush", "dev", "eth0"])
        .expect("flush");
    let outcome = EchoClient::new(rig.client())
        .with_timeout(Duration::from_secs(2))
        .tcp(rig.vip_addr(VIP_PORT), 1);
    assert!(outcome.is_err(), "the withdrawn VIP still answers");
    let status = rig.status().expect("status");
    assert_eq!(
        status["announcements"][0]["vips"],
        serde_json::json!([vip6.to_string()]),
        "{status}"
    );
    // An agent started without --l2-interface answers for nothing, whatever
    // an earlier one left pinned.
    rig.kill_agent().expect("kill");
    rig.start_agent(&[]).expect("agent without L2");
    client
        .exec("ip", &["neigh", "flush", "dev", "eth0"])
        .expect("flush");
    let outcome = EchoClient::new(rig.client())
        .with_timeout(Duration::from_secs(2))
        .tcp(SocketAddr::new(vip6, VIP_PORT), 1);
    assert!(
        outcome.is_err(),
        "{vip6} still answered without --l2-interface"
    );
    report(&format!(
        "l2: {REQUESTS} requests each to {} and {vip6} after ARP / neighbour discovery \
         answered by xdp_lb with {lb_mac} ({arp} ARP replies, {nd} advertisements); \
         the withdrawn VIP went unanswered, and so did the other once the agent ran without \
         --l2-interface",
        vip()
    ));
}

#[test]
fn l2_mode_announces_a_vip_it_takes_over_so_the_segment_moves_at_once() {
    /// The MAC of the box this one replaces, which the client still holds.
    const OLD_MAC: &str = "02:00:5e:00:53:01";
    let (mut rig, _, vip6) = l2_rig();
    let client = rig.client().clone();
    for vip in [vip(), vip6] {
        client
            .exec(
                "ip",
                &[
                    "neigh",
                    "replace",
                    &vip.to_string(),
                    "lladdr",
                    OLD_MAC,
                    "dev",
                    "eth0",
                    "nud",
                    "stale",
                ],
            )
            .expect("an entry at the old MAC");
    }
    rig.start_agent(&["--l2-interface", "eth0"]).expect("agent");
    let lb_mac = rig.lb().mac("eth0").expect("the LB's MAC").to_string();
    // No packet from the client: only the agent's announcements move the
    // entries (a stale entry is left as it is until it is used).
    for vip in [vip(), vip6] {
        wait_until(PATIENCE, "the client's entry at the LB's MAC", || {
            neighbour(&rig, vip).is_some_and(|(mac, _)| mac == lb_mac)
        })
        .unwrap_or_else(|e| panic!("{vip}: {e}; the entry is {:?}", neighbour(&rig, vip)));
    }
    // Two ARP announcements (RFC 5227) and three advertisements (RFC 4861),
    // the repeats on the agent's announcement ticks, and no more.
    let sent = |family: &str| {
        let metrics = rig.metrics_get("/metrics").expect("GET /metrics");
        metric(
            &metrics.body,
            &format!(r#"xlb_l2_announcements_total{{family="{family}",outcome="sent"}}"#),
        )
    };
    wait_until(PATIENCE, "every announcement sent", || {
        sent("ipv4") == Some(2.0) && sent("ipv6") == Some(3.0)
    })
    .unwrap_or_else(|e| panic!("{e}: ipv4 {:?}, ipv6 {:?}", sent("ipv4"), sent("ipv6")));
    // Not synchronisation but the window of a negative check: two more of
    // the agent's 2 s announcement ticks pass, and neither sends again.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!((sent("ipv4"), sent("ipv6")), (Some(2.0), Some(3.0)));
    // The moved entries carry the traffic.
    for vip in [vip(), vip6] {
        let echoes = EchoClient::new(&client)
            .with_timeout(IO_TIMEOUT)
            .tcp(SocketAddr::new(vip, VIP_PORT), 5)
            .unwrap_or_else(|e| panic!("requests to {vip}: {e}"));
        assert_eq!(echoes.len(), 5);
    }
    report(&format!(
        "l2 takeover: the client's entries for {} and {vip6} moved from {OLD_MAC} to {lb_mac} \
         without a packet of its own; 2 ARP announcements and 3 neighbour advertisements sent",
        vip()
    ));
}

/// Conntrack tables sized for this many flows: walking both takes most of
/// a second in a debug build.
const LARGE_CONNTRACK: &str = "4194304";
/// `xlb status` answers in 10–20 ms on an idle rig (debug build); while
/// scrapes walked the tables under the agent's lock, it took 0.56–1.6 s.
/// The median of the calls during scrapes must stay below this, or below
/// [`SLOWER_DURING_SCRAPES`] times the median without scrapes on a machine
/// so busy that the calls alone take longer.
const STATUS_DURING_SCRAPES: Duration = Duration::from_millis(300);
const SLOWER_DURING_SCRAPES: u32 = 5;
/// `xlb status` calls made during the scrapes.
const STATUS_CALLS: usize = 10;

/// The median of `durations`.
fn median(mut durations: Vec<Duration>) -> Duration {
    durations.sort_unstable();
    durations[durations.len() / 2]
}

#[test]
fn a_scrape_holds_up_no_admin_call() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    rig.serve_echo(0, Proto::Tcp, BACKEND_PORT)
        .expect("echo server");
    rig.write_config(&config(&[service(
        "web",
        "TCP",
        VIP_PORT,
        &backends(&rig, &[0], BACKEND_PORT),
        false,
    )]))
    .expect("config");
    rig.start_agent(&["--conntrack-size", LARGE_CONNTRACK])
        .expect("agent");
    // The collector counts the tables first as it starts.
    wait_until(PATIENCE, "the collector's first count", || {
        rig.metrics_get("/metrics")
            .is_ok_and(|m| metric(&m.body, "xlb_conntrack_entries ").is_some())
    })
    .expect("a count of the conntrack tables");

    let status = || {
        let started = Instant::now();
        rig.xlb_ok(&["status"]).expect("xlb status");
        started.elapsed()
    };
    let alone: Vec<Duration> = (0..STATUS_CALLS).map(|_| status()).collect();
    let stop = AtomicBool::new(false);
    let (during, scrapes) = std::thread::scope(|scope| {
        let scraper = scope.spawn(|| {
            let mut scrapes = Vec::new();
            // Bounded in count too, should the calls below hang.
            while !stop.load(Ordering::Acquire) && scrapes.len() < 1_000 {
                let started = Instant::now();
                let scraped = rig.metrics_get("/metrics").expect("GET /metrics");
                assert_eq!(scraped.status, 200);
                scrapes.push(started.elapsed());
            }
            scrapes
        });
        let during: Vec<Duration> = (0..STATUS_CALLS).map(|_| status()).collect();
        stop.store(true, Ordering::Release);
        (during, scraper.join().expect("the scraper panicked"))
    });
    let (alone, during, scraped) = (median(alone), median(during), scrapes.len());
    let scrape = median(scrapes);
    report(&format!(
        "scrapes with --conntrack-size {LARGE_CONNTRACK}: {scraped} scrapes, median {scrape:?}; \
         xlb status median {alone:?} alone, {during:?} during the scrapes"
    ));
    let bound = STATUS_DURING_SCRAPES.max(alone * SLOWER_DURING_SCRAPES);
    assert!(
        during < bound,
        "xlb status took {during:?} (median) during scrapes, {alone:?} without (bound {bound:?})"
    );
}

/// Flows the conntrack tables of the pressure scenario are sized for: 256
/// buckets of 8 slots, 2 048 slots a table.
const SMALL_CONNTRACK: u32 = 1_000;
/// UDP flows the pressure scenario makes, each from a port of its own.
const PRESSURE_FLOWS: u16 = 12;

#[test]
fn conntrack_pressure_is_flows_over_the_flows_configured() {
    let mut rig = AgentRig::build(XLB).expect("rig");
    rig.serve_echo(0, Proto::Udp, BACKEND_PORT)
        .expect("echo server");
    rig.write_config(&config(&[service(
        "dns",
        "UDP",
        VIP_PORT,
        &backends(&rig, &[0], BACKEND_PORT),
        false,
    )]))
    .expect("config");
    rig.start_agent(&["--conntrack-size", &SMALL_CONNTRACK.to_string()])
        .expect("agent");
    // One flow, and one reply entry, each (UDP flows live 60 s: none
    // expires before the collector counts them).
    let locals: Vec<SocketAddr> = (0..PRESSURE_FLOWS)
        .map(|i| SocketAddr::new(rig.client_ip(), UDP_CLIENT_PORT + i))
        .collect();
    let answers = EchoClient::new(rig.client())
        .with_timeout(IO_TIMEOUT)
        .udp_from(&locals, rig.vip_addr(VIP_PORT))
        .expect("UDP requests in the client namespace");
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // The collector counts every 10 s.
    let scrape = || rig.metrics_get("/metrics").expect("GET /metrics").body;
    let body = wait_for(PATIENCE, "the collector to count the flows", || {
        let body = scrape();
        Ok(
            (metric(&body, "xlb_conntrack_entries ") == Some(f64::from(PRESSURE_FLOWS)))
                .then_some(body),
        )
    })
    .expect("every flow counted");
    let expected = f64::from(PRESSURE_FLOWS) / f64::from(SMALL_CONNTRACK);
    for map in ["CONNTRACK", "CONNTRACK_REPLY"] {
        let pressure = metric(
            &body,
            &format!(r#"xlb_bpf_map_pressure{{map_name="{map}"}}"#),
        );
        assert_eq!(pressure, Some(expected), "{map}:\n{body}");
    }
    // The datapath's counters of the same flows.
    let flows = Some(f64::from(PRESSURE_FLOWS));
    let created = metric(&body, r#"xlb_conntrack_events_total{event="created"}"#);
    let untracked = metric(
        &body,
        r#"xlb_conntrack_events_total{event="not_tracked_flood_guard"}"#,
    );
    let udp4 = metric(&body, r#"xlb_datapath_parsed_packets_total{result="udp4"}"#);
    assert_eq!((created, untracked), (flows, Some(0.0)), "{body}");
    assert!(udp4 >= flows, "{body}");
    report(&format!(
        "{PRESSURE_FLOWS} flows at --conntrack-size {SMALL_CONNTRACK}: pressure {expected}; \
         conntrack events created {created:?}; parsed udp4 {udp4:?}"
    ));
}
