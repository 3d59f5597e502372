//! Issue 4's netns scenario: `xdp_lb` balancing real TCP and UDP traffic.
//!
//! ```text
//! client eth0 ─── eth0 [xdp_lb] lb [xdp_lb] eth1 ─── p0 [xdp_pass] switch ─┬─ b0
//! [xdp_pass]                                                               ├─ b1
//!                                                                          └─ b2
//! ```
//! Every host is wire-like (TX checksum offload off). The VIPs (plan VIP 1,
//! both families) exist on no interface: the client routes them via the LB,
//! whose `xdp_lb` on eth0 translates each flow to a backend's own address
//! (DNAT, port 80 → 8080) and redirects it out of eth1; the backends route the
//! client back via the LB, whose `xdp_lb` on eth1 translates the replies back
//! (source = VIP:80) and redirects them out of eth0. A redirect into a veth
//! delivers only when the far end runs an XDP program (DESIGN.md, "Known
//! pitfalls"), hence the `xdp_pass` on the client's eth0 and the switch port.
//!
//! What is checked, on IPv4 and IPv6:
//! - 1000 TCP connections through the VIP, each answered by the backend that
//!   `simulate` names for its 5-tuple, with the right payload, and the spread
//!   within ±15% of the equal share;
//! - UDP requests on connected sockets (so a reply counts only if it comes from
//!   VIP:80), each answered by the backend `simulate` names;
//! - a 10 MB upload and a 10 MB download on one connection through the VIP;
//! - the LB's counters: every frame the client sent was translated to a
//!   backend, every frame the backends sent was translated back, and nothing
//!   else was counted (no drop of any kind);
//! - and, in a rig whose neighbours are not pinned, the first packets of a
//!   flow that the program hands to the kernel (`*ViaStack`) arrive too.
//!
//! The Maglev tables are built by `consistent-hash` as the control plane will
//! build them: backends keyed by `ip:port/PROTO`, the size from the sizing
//! policy (509 for three backends).
use consistent_hash::{Backend as MaglevBackend, SizingPolicy, Table};
use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netns_tests::{
    Echo, EchoClient, LinkStats, Netns, Proto,
    topology::{ClientLbBackends, Endpoint, Family, Options, plan},
    wait_until,
};
use xdp_lb::{
    AddressKind, AttachMode, Attachment, Config, CtEvent, CtStats, Datapath, Flow, Frontend,
    ProgramName, Protocol, Simulation, Verdict, VerdictStats,
};

/// Backends behind the VIP.
const BACKENDS: usize = 3;
/// The VIP's echo port (TCP and UDP).
const VIP_PORT: u16 = 80;
/// Where the backends' echo servers listen (DNAT changes the port too).
const ECHO_PORT: u16 = 8080;
/// The bulk-transfer service's port, on the VIP and on the backends.
const BULK_PORT: u16 = 9000;
/// TCP connections per family.
const TCP_FLOWS: usize = 1000;
/// UDP requests per family.
const UDP_FLOWS: usize = 60;
/// Bytes sent each way by the bulk transfer.
const BULK_BYTES: usize = 10 * 1024 * 1024;
/// The Maglev hash seed.
const HASH_SEED: u64 = 0x786c_6200_0000_0004;
/// The client's ephemeral ports: exactly [`TCP_FLOWS`] of them, so the 1000
/// connections of a family use every port once (each stays in TIME_WAIT) and
/// the set of 5-tuples, hence the spread, is the same on every run.
const CLIENT_PORTS: (u16, u16) = (20000, 20999);
/// The allowed deviation from the equal share.
const SPREAD_TOLERANCE: f64 = 0.15;
/// How long counters may take to settle after the last reply.
const SETTLE: Duration = Duration::from_secs(3);

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

/// What a frontend serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    EchoTcp,
    EchoUdp,
    Bulk,
}

impl Kind {
    const ALL: [Self; 3] = [Self::EchoTcp, Self::EchoUdp, Self::Bulk];

    const fn protocol(self) -> Protocol {
        match self {
            Self::EchoTcp | Self::Bulk => Protocol::Tcp,
            Self::EchoUdp => Protocol::Udp,
        }
    }

    const fn vip_port(self) -> u16 {
        match self {
            Self::EchoTcp | Self::EchoUdp => VIP_PORT,
            Self::Bulk => BULK_PORT,
        }
    }

    const fn backend_port(self) -> u16 {
        match self {
            Self::EchoTcp | Self::EchoUdp => ECHO_PORT,
            Self::Bulk => BULK_PORT,
        }
    }

    const fn index(self) -> u32 {
        match self {
            Self::EchoTcp => 0,
            Self::EchoUdp => 1,
            Self::Bulk => 2,
        }
    }
}

const fn family_index(family: Family) -> u32 {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// Service IDs 1..=6: one per family and kind.
const fn service_id(family: Family, kind: Kind) -> u32 {
    1 + family_index(family) * 3 + kind.index()
}

/// Backend IDs 1..=12: per family, the echo backends (TCP and UDP share them:
/// same address and port) and the bulk backends.
fn backend_id(family: Family, kind: Kind, backend: usize) -> u32 {
    let group = match kind {
        Kind::EchoTcp | Kind::EchoUdp => 0,
        Kind::Bulk => 1,
    };
    let backend = u32::try_from(backend).expect("few backends");
    1 + (family_index(family) * 2 + group) * BACKENDS as u32 + backend
}

fn vip(family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(1);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

/// The Maglev table of `backends` (ID and address), keyed `ip:port/PROTO`.
fn table(backends: &[(u32, SocketAddr)], proto: &str) -> Vec<u32> {
    let ids: BTreeMap<Vec<u8>, u32> = backends
        .iter()
        .map(|&(id, addr)| (format!("{addr}/{proto}").into_bytes(), id))
        .collect();
    let size = SizingPolicy::default()
        .size_for(backends.len(), None)
        .expect("a size fits");
    let keys = ids.keys().map(|key| MaglevBackend::new(key.clone()));
    let table = Table::build(HASH_SEED, size, keys).expect("table builds");
    table
        .slots()
        .iter()
        .map(|&index| ids[&table.backends()[index as usize].key])
        .collect()
}

fn name(backend: usize) -> String {
    format!("b{backend}")
}

/// The LB rig with the datapath loaded, configured and attached, and echo
/// servers running on every backend.
struct Scenario {
    // Declared first so the programs detach before the rig goes.
    datapath: Datapath,
    _attachments: Vec<Attachment>,
    topo: ClientLbBackends,
}

impl Scenario {
    fn build(options: &Options) -> Self {
        let mut topo = ClientLbBackends::build(BACKENDS, options).expect("rig builds");
        topo.rig
            .set_sysctl(
                &topo.client.netns,
                "net.ipv4.ip_local_port_range",
                &format!("{} {}", CLIENT_PORTS.0, CLIENT_PORTS.1),
            )
            .expect("port range");
        let mut datapath = Datapath::load().expect("datapath loads");
        datapath
            .set_config(&Config {
                hash_seed: HASH_SEED,
                ..Config::default()
            })
            .expect("config");
        for family in Family::ALL {
            datapath
                .set_address(vip(family), AddressKind::Vip)
                .expect("VIP");
            for kind in Kind::ALL {
                let backends: Vec<(u32, SocketAddr)> = (0..BACKENDS)
                    .map(|i| {
                        let addr = topo.backends[i].socket(family, kind.backend_port());
                        (backend_id(family, kind, i), addr)
                    })
                    .collect();
                for &(id, addr) in &backends {
                    datapath.put_backend(id, addr, 1).expect("backend");
                }
                let service = service_id(family, kind);
                let proto = match kind.protocol() {
                    Protocol::Tcp => "TCP",
                    Protocol::Udp => "UDP",
                };
                datapath
                    .swap_table(service, &table(&backends, proto))
                    .expect("table");
                let frontend = Frontend::new(
                    SocketAddr::new(vip(family), kind.vip_port()),
                    kind.protocol(),
                );
                datapath
                    .upsert_service(&frontend, service, false)
                    .expect("service");
            }
        }
        let backends = topo.backends.clone();
        for (i, backend) in backends.iter().enumerate() {
            for family in Family::ALL {
                for proto in [Proto::Tcp, Proto::Udp] {
                    let bind = backend.socket(family, ECHO_PORT);
                    topo.rig
                        .serve_echo(&backend.netns, proto, bind, &name(i))
                        .unwrap_or_else(|e| panic!("{proto:?} echo server on {bind}: {e}"));
                }
            }
        }
        let mut attachments = Vec::new();
        for peer in [&topo.lb_front.peer, &topo.lb_back.peer] {
            let pass = peer
                .attach_xdp(&mut datapath, ProgramName::XdpPass, AttachMode::Native)
                .expect("xdp_pass attaches");
            attachments.push(pass);
        }
        for dev in [&topo.lb_front.dev, &topo.lb_back.dev] {
            let lb = topo
                .lb
                .attach_xdp(dev, &mut datapath, ProgramName::XdpLb, AttachMode::Native)
                .expect("xdp_lb attaches");
            attachments.push(lb);
        }
        assert!(
            attachments.iter().all(Attachment::is_native),
            "veths take native XDP"
        );
        Self {
            datapath,
            _attachments: attachments,
            topo,
        }
    }

    fn client(&self) -> &Endpoint {
        &self.topo.client
    }

    /// The backend index answering as `server`.
    fn backend_named(server: &str) -> usize {
        (0..BACKENDS)
            .find(|&i| name(i) == server)
            .unwrap_or_else(|| panic!("no backend is named {server:?}"))
    }

    /// The backend `simulate` names for a new flow from the client's `port`
    /// to the `kind` frontend.
    fn predict(&self, family: Family, kind: Kind, port: u16) -> usize {
        let flow = Flow::new(
            self.client().socket(family, port),
            SocketAddr::new(vip(family), kind.vip_port()),
            kind.protocol(),
        );
        match self.datapath.simulate(&flow).expect("simulate") {
            Simulation::Backend {
                service_id: service,
                backend_id: id,
                addr,
                ..
            } => {
                assert_eq!(service, service_id(family, kind), "{flow:?}");
                let i = (0..BACKENDS)
                    .find(|&i| backend_id(family, kind, i) == id)
                    .unwrap_or_else(|| panic!("{flow:?}: unknown backend ID {id}"));
                assert_eq!(
                    addr,
                    self.topo.backends[i].socket(family, kind.backend_port())
                );
                i
            }
            other => panic!("{flow:?}: simulate says {other:?}"),
        }
    }

    /// `predict` for every port of the client's range, before any flow exists.
    fn predict_all(&self, family: Family, kind: Kind) -> BTreeMap<u16, usize> {
        (CLIENT_PORTS.0..=CLIENT_PORTS.1)
            .map(|port| (port, self.predict(family, kind, port)))
            .collect()
    }

    /// Link counters of the client's and the backends' interfaces.
    fn links(&self) -> Links {
        let stats = |e: &Endpoint| e.netns.link_stats(&e.dev).expect("link stats");
        Links {
            client: stats(&self.topo.client),
            backends: self.topo.backends.iter().map(stats).collect(),
        }
    }

    fn counters(&self) -> (VerdictStats, CtStats) {
        (
            self.datapath.verdict_stats().expect("verdicts"),
            self.datapath.ct_stats().expect("ct stats"),
        )
    }
}

#[derive(Clone, Debug)]
struct Links {
    client: LinkStats,
    backends: Vec<LinkStats>,
}

impl Links {
    fn since(&self, earlier: &Self) -> Self {
        Self {
            client: self.client.since(&earlier.client),
            backends: self
                .backends
                .iter()
                .zip(&earlier.backends)
                .map(|(now, then)| now.since(then))
                .collect(),
        }
    }

    fn backends_tx(&self) -> u64 {
        self.backends.iter().map(|b| b.tx_packets).sum()
    }
}

fn verdicts_since(now: &VerdictStats, then: &VerdictStats) -> BTreeMap<Verdict, u64> {
    Verdict::ALL
        .iter()
        .map(|&v| (v, now.get(v).packets - then.get(v).packets))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn ct_since(now: &CtStats, then: &CtStats) -> BTreeMap<CtEvent, u64> {
    CtEvent::ALL
        .iter()
        .map(|&e| (e, now.get(e).packets - then.get(e).packets))
        .filter(|&(_, n)| n > 0)
        .collect()
}

fn count(map: &BTreeMap<Verdict, u64>, verdicts: &[Verdict]) -> u64 {
    verdicts.iter().filter_map(|v| map.get(v)).sum()
}

/// Answers per backend index.
fn spread<'a>(servers: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let mut counts = vec![0; BACKENDS];
    for server in servers {
        counts[Scenario::backend_named(server)] += 1;
    }
    counts
}

/// 1000 TCP connections through the VIP: all answered, each by the backend
/// `simulate` predicted for its source port, spread within ±15%. Returns the
/// number of flows.
fn tcp_through_vip(s: &Scenario, family: Family) -> usize {
    let predicted = s.predict_all(family, Kind::EchoTcp);
    let vip = SocketAddr::new(vip(family), VIP_PORT);
    let started = Instant::now();
    let outcomes = EchoClient::new(&s.client().netns)
        .each(Proto::Tcp, vip, TCP_FLOWS)
        .expect("client runs");
    let elapsed = started.elapsed();
    let (echoes, failures): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    let echoes: Vec<Echo> = echoes.into_iter().map(Result::unwrap).collect();
    assert!(
        failures.is_empty(),
        "{family:?}: {} of {TCP_FLOWS} TCP requests failed, first: {:?}",
        failures.len(),
        failures.into_iter().next().map(Result::unwrap_err)
    );
    for echo in &echoes {
        assert_eq!(echo.local.ip(), s.client().ip(family), "{echo:?}");
        let expected = name(predicted[&echo.local.port()]);
        assert_eq!(
            echo.server, expected,
            "{family:?}: simulate disagrees: {echo:?}"
        );
    }
    let ports: BTreeSet<u16> = echoes.iter().map(|e| e.local.port()).collect();
    let counts = spread(echoes.iter().map(|e| e.server.as_str()));
    let share = TCP_FLOWS as f64 / BACKENDS as f64;
    report!(
        "{family:?}: {TCP_FLOWS} TCP connections in {elapsed:.2?}, {} distinct client ports, \
         per backend {counts:?} (equal share {share:.1})",
        ports.len()
    );
    for (i, &n) in counts.iter().enumerate() {
        let deviation = (n as f64 - share).abs() / share;
        assert!(
            deviation <= SPREAD_TOLERANCE,
            "{family:?}: backend {i} got {n} of {TCP_FLOWS} connections ({:.1}% off the \
             equal share): {counts:?}",
            deviation * 100.0
        );
    }
    // Every flow is tracked, with the backend that answered it.
    for echo in &echoes {
        let flow = Flow::new(echo.local, vip, Protocol::Tcp);
        let tracked = s
            .datapath
            .tracked_flow(&flow)
            .expect("conntrack")
            .unwrap_or_else(|| panic!("{flow:?} is not tracked"));
        let i = Scenario::backend_named(&echo.server);
        assert_eq!(
            tracked.backend,
            s.topo.backends[i].socket(family, ECHO_PORT)
        );
        assert!(tracked.seen_reply, "{tracked:?}");
    }
    echoes.len()
}

/// UDP requests from fresh connected sockets: each answered (so from VIP:80)
/// by the backend `simulate` predicted. Returns the number of distinct flows.
fn udp_through_vip(s: &Scenario, family: Family) -> usize {
    let predicted = s.predict_all(family, Kind::EchoUdp);
    let vip = SocketAddr::new(vip(family), VIP_PORT);
    let echoes = EchoClient::new(&s.client().netns)
        .udp(vip, UDP_FLOWS)
        .unwrap_or_else(|e| panic!("{family:?}: UDP through the VIP: {e}"));
    assert_eq!(echoes.len(), UDP_FLOWS);
    for echo in &echoes {
        assert_eq!(echo.local.ip(), s.client().ip(family), "{echo:?}");
        let expected = name(predicted[&echo.local.port()]);
        assert_eq!(
            echo.server, expected,
            "{family:?}: simulate disagrees: {echo:?}"
        );
    }
    let counts = spread(echoes.iter().map(|e| e.server.as_str()));
    report!("{family:?}: {UDP_FLOWS} UDP requests answered, per backend {counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "{family:?}: {UDP_FLOWS} UDP flows should reach every backend: {counts:?}"
    );
    let flows: BTreeSet<u16> = echoes.iter().map(|e| e.local.port()).collect();
    flows.len()
}

/// A deterministic, incompressible-looking payload.
fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A one-connection sink: reads everything, answers `<name> <bytes>` and a
/// newline, then sends `payload` back. Gives up when `stop` is set before a
/// client came.
fn bulk_sink(
    netns: &Netns,
    bind: SocketAddr,
    name: String,
    payload: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Option<(SocketAddr, Vec<u8>)>> {
    let listener = netns
        .run(move || TcpListener::bind(bind))
        .expect("enters the backend")
        .unwrap_or_else(|e| panic!("sink on {bind}: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(_) if stop.load(Ordering::Acquire) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("sink accept on {bind}: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut received = Vec::with_capacity(payload.len());
        stream.read_to_end(&mut received).expect("sink reads");
        stream
            .write_all(format!("{name} {}\n", received.len()).as_bytes())
            .and_then(|()| stream.write_all(&payload))
            .and_then(|()| stream.shutdown(Shutdown::Write))
            .expect("sink answers");
        Some((peer, received))
    })
}

/// 10 MB up and 10 MB down on one TCP connection through the VIP. Returns
/// the backend that served it.
fn bulk_through_vip(s: &Scenario, family: Family) -> usize {
    let data = Arc::new(payload(BULK_BYTES));
    let stop = Arc::new(AtomicBool::new(false));
    let sinks: Vec<_> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let bind = b.socket(family, BULK_PORT);
            bulk_sink(
                &b.netns,
                bind,
                name(i),
                Arc::clone(&data),
                Arc::clone(&stop),
            )
        })
        .collect();
    let vip = SocketAddr::new(vip(family), BULK_PORT);
    let upload = Arc::clone(&data);
    let started = Instant::now();
    let outcome = s
        .client()
        .netns
        .run(move || -> std::io::Result<(SocketAddr, Vec<u8>)> {
            let mut stream = TcpStream::connect_timeout(&vip, Duration::from_secs(3))?;
            stream.set_read_timeout(Some(Duration::from_secs(15)))?;
            stream.set_write_timeout(Some(Duration::from_secs(15)))?;
            let local = stream.local_addr()?;
            stream.write_all(&upload)?;
            stream.shutdown(Shutdown::Write)?;
            let mut answer = Vec::with_capacity(upload.len() + 64);
            stream.read_to_end(&mut answer)?;
            Ok((local, answer))
        })
        .expect("client runs");
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    let served: Vec<(usize, (SocketAddr, Vec<u8>))> = sinks
        .into_iter()
        .enumerate()
        .filter_map(|(i, sink)| sink.join().expect("sink thread").map(|got| (i, got)))
        .collect();
    let (local, answer) =
        outcome.unwrap_or_else(|e| panic!("{family:?}: bulk transfer through {vip}: {e}"));
    let [(backend, (peer, received))] = served.as_slice() else {
        panic!("{family:?}: the transfer reached {} sinks", served.len());
    };
    assert_eq!(*peer, local, "the backend sees the client's own address");
    assert_eq!(received.len(), BULK_BYTES, "{family:?}: bytes uploaded");
    assert!(received == data.as_slice(), "{family:?}: upload corrupted");
    let newline = answer
        .iter()
        .position(|&b| b == b'\n')
        .expect("a header line");
    let header = String::from_utf8_lossy(&answer[..newline]);
    assert_eq!(header, format!("{} {BULK_BYTES}", name(*backend)));
    let download = &answer[newline + 1..];
    assert_eq!(download.len(), BULK_BYTES, "{family:?}: bytes downloaded");
    assert!(
        download == data.as_slice(),
        "{family:?}: download corrupted"
    );
    assert_eq!(
        *backend,
        s.predict(family, Kind::Bulk, local.port()),
        "{family:?}: the tracked flow and the sink disagree"
    );
    report!(
        "{family:?}: {} MiB up and down through the VIP in {elapsed:.2?}, served by {}",
        BULK_BYTES >> 20,
        name(*backend)
    );
    *backend
}

#[test]
fn tcp_udp_and_bulk_through_the_vip_on_both_families() {
    let started = Instant::now();
    let options = Options {
        static_neighbours: true,
        ..Options::default()
    };
    let s = Scenario::build(&options);
    let (verdicts0, ct0) = s.counters();
    let links0 = s.links();

    let mut flows = 0;
    for family in Family::ALL {
        flows += tcp_through_vip(&s, family);
        flows += udp_through_vip(&s, family);
        bulk_through_vip(&s, family);
        flows += 1;
    }

    // Every frame the client sent went to a backend through xdp_lb on eth0,
    // every frame the backends sent came back through xdp_lb on eth1, and
    // nothing else was counted. With pinned neighbours, no frame needed the
    // kernel's help, and no other frame crossed the links.
    let to_backend = [Verdict::ForwardToBackend, Verdict::PassToBackendViaStack];
    let reply = [Verdict::ForwardReply, Verdict::PassReplyViaStack];
    let settled = |links: &Links, verdicts: &BTreeMap<Verdict, u64>| {
        count(verdicts, &to_backend) == links.client.tx_packets
            && count(verdicts, &reply) == links.backends_tx()
            && verdicts.values().sum::<u64>() == links.client.tx_packets + links.backends_tx()
    };
    let snapshot = || {
        let links = s.links().since(&links0);
        let (verdicts, ct) = s.counters();
        (
            links,
            verdicts_since(&verdicts, &verdicts0),
            ct_since(&ct, &ct0),
        )
    };
    // The last ACKs may still be on their way.
    let _ = wait_until(SETTLE, "the LB's counters to match the links", || {
        let (links, verdicts, _) = snapshot();
        settled(&links, &verdicts)
    });
    let (links, verdicts, ct) = snapshot();
    report!(
        "client sent {} frames, backends sent {}; verdicts {verdicts:?}; conntrack {ct:?}",
        links.client.tx_packets,
        links.backends_tx()
    );
    assert_eq!(
        count(&verdicts, &to_backend),
        links.client.tx_packets,
        "every frame from the client is translated to a backend: {verdicts:?}"
    );
    assert_eq!(
        count(&verdicts, &reply),
        links.backends_tx(),
        "every frame from a backend is translated back: {verdicts:?}"
    );
    assert!(
        settled(&links, &verdicts),
        "nothing else counted: {verdicts:?}"
    );
    for verdict in [
        Verdict::DropNoBackend,
        Verdict::DropUnknownPort,
        Verdict::DropFragment,
    ] {
        assert_eq!(verdicts.get(&verdict), None, "{verdicts:?}");
    }
    assert!(verdicts.get(&Verdict::ForwardToBackend) > Some(&0));
    assert!(verdicts.get(&Verdict::ForwardReply) > Some(&0));
    for verdict in [Verdict::PassToBackendViaStack, Verdict::PassReplyViaStack] {
        assert_eq!(
            verdicts.get(&verdict),
            None,
            "pinned neighbours: every frame leaves by redirect: {verdicts:?}"
        );
    }
    for (what, link) in std::iter::once(("client", &links.client))
        .chain(links.backends.iter().map(|b| ("backend", b)))
    {
        assert_eq!(link.tx_dropped, 0, "{what}: {link:?}");
    }

    // One conntrack entry per flow, every reply matched to its flow.
    let created = ct.get(&CtEvent::Created).copied().unwrap_or(0);
    assert_eq!(created, flows as u64, "one entry per flow: {ct:?}");
    assert_eq!(
        ct.get(&CtEvent::ReplyHit).copied().unwrap_or(0),
        links.backends_tx(),
        "{ct:?}"
    );
    for event in [
        CtEvent::InsertFailed,
        CtEvent::ReplyOrphan,
        CtEvent::ReselectedBackendGone,
        CtEvent::Expired,
    ] {
        assert_eq!(ct.get(&event), None, "{ct:?}");
    }

    // The per-backend counters add up to the translated frames.
    let per_backend: u64 = Family::ALL
        .into_iter()
        .flat_map(|f| Kind::ALL.into_iter().map(move |k| (f, k)))
        .filter(|&(_, k)| k != Kind::EchoUdp)
        .flat_map(|(f, k)| (0..BACKENDS).map(move |i| backend_id(f, k, i)))
        .map(|id| s.datapath.backend_stats(id).expect("backend stats").packets)
        .sum();
    assert_eq!(
        per_backend,
        links.client.tx_packets + links.backends_tx(),
        "per-backend counters"
    );
    report!("scenario done in {:.2?}", started.elapsed());
}

#[test]
fn first_packets_go_through_the_kernel_while_neighbours_resolve() {
    // Neighbours not pinned: the LB does not know a backend's MAC until the
    // kernel has resolved it, so a flow's first packet is translated and handed
    // to the kernel, which forwards it.
    let s = Scenario::build(&Options::default());
    for family in Family::ALL {
        let vip = SocketAddr::new(vip(family), VIP_PORT);
        let client = EchoClient::new(&s.client().netns);
        for proto in [Proto::Tcp, Proto::Udp] {
            let echoes = client
                .each(proto, vip, 9)
                .expect("client runs")
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_else(|e| panic!("{family:?} {proto:?} through the VIP: {e}"));
            let kind = match proto {
                Proto::Tcp => Kind::EchoTcp,
                Proto::Udp => Kind::EchoUdp,
            };
            for echo in &echoes {
                let expected = name(s.predict(family, kind, echo.local.port()));
                assert_eq!(echo.server, expected, "{echo:?}");
            }
        }
    }
    let verdicts = s.datapath.verdict_stats().expect("verdicts");
    let packets = |v| verdicts.get(v).packets;
    let all: BTreeMap<Verdict, u64> = verdicts.iter().map(|(v, c)| (v, c.packets)).collect();
    report!("unpinned neighbours: verdicts {all:?}");
    assert!(packets(Verdict::PassToBackendViaStack) > 0);
    assert!(packets(Verdict::ForwardToBackend) > 0);
    assert!(packets(Verdict::ForwardReply) + packets(Verdict::PassReplyViaStack) > 0);
    for verdict in [
        Verdict::DropNoBackend,
        Verdict::DropUnknownPort,
        Verdict::DropFragment,
    ] {
        assert_eq!(packets(verdict), 0, "{verdict:?}");
    }
}
