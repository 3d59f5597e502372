//! Issue 4's netns scenario: `xdp_lb` balancing real TCP and UDP traffic.
//!
//! The rig — client → LB (`xdp_lb` on both sides) → switch → three backends,
//! VIPs of both families, Maglev tables from `consistent-hash` — is
//! [`netns_tests::lb_scenario::Scenario`], which `make demo` runs too.
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
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netns_tests::{
    Netns, Proto,
    fabric::payload,
    lb_scenario::{
        BACKENDS, BULK_PORT, DROPS, ECHO_PORT, EchoRun, Kind, SETTLE, Scenario, backend_id,
        backend_name, vip,
    },
    topology::{Family, Options},
};
use xdp_lb::{CtEvent, Flow, Protocol, Verdict};

/// TCP connections per family: as many as the client has ports, so each
/// port is used once (each stays in TIME_WAIT) and the set of 5-tuples, hence
/// the spread, is the same on every run.
const TCP_FLOWS: u16 = 1000;
/// UDP requests per family.
const UDP_FLOWS: usize = 60;
/// Bytes sent each way by the bulk transfer.
const BULK_BYTES: usize = 10 * 1024 * 1024;
/// The allowed deviation from the equal share.
const SPREAD_TOLERANCE: f64 = 0.15;

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

fn build(options: &Options) -> Scenario {
    let s = Scenario::build(options, TCP_FLOWS).expect("scenario builds");
    assert!(s.native(), "veths take native XDP");
    s
}

/// Every request answered, from the client's own address, by the backend
/// `simulate` predicted.
fn assert_as_predicted(run: &EchoRun) {
    let family = run.family;
    assert!(
        run.failures.is_empty(),
        "{family:?}: {} of {} {:?} requests failed, first: {:?}",
        run.failures.len(),
        run.requested,
        run.proto,
        run.failures.first()
    );
    assert_eq!(run.answers.len(), run.requested);
    if let Some(answer) = run.mispredicted().next() {
        panic!("{family:?}: simulate disagrees: {answer:?}");
    }
}

/// 1000 TCP connections through the VIP: all answered, each by the backend
/// `simulate` predicted for its source port, spread within ±15%. Returns the
/// number of flows.
fn tcp_through_vip(s: &Scenario, family: Family) -> usize {
    let run = s
        .echo(family, Proto::Tcp, TCP_FLOWS.into())
        .expect("client runs");
    assert_as_predicted(&run);
    let counts = run.per_backend();
    report!(
        "{family:?}: {TCP_FLOWS} TCP connections in {:.2?}, {} distinct client ports, \
         per backend {counts:?} (equal share {:.1})",
        run.elapsed,
        run.flows(),
        run.equal_share()
    );
    assert!(
        run.max_deviation() <= SPREAD_TOLERANCE,
        "{family:?}: a backend is {:.1}% off the equal share: {counts:?}",
        run.max_deviation() * 100.0
    );
    // Every flow is tracked, with the backend that answered it.
    let vip = SocketAddr::new(vip(family), Kind::EchoTcp.vip_port());
    for answer in &run.answers {
        let flow = Flow::new(answer.echo.local, vip, Protocol::Tcp);
        let tracked = s
            .datapath
            .tracked_flow(&flow)
            .expect("conntrack")
            .unwrap_or_else(|| panic!("{flow:?} is not tracked"));
        let i = answer.served.expect("a known backend");
        assert_eq!(
            tracked.backend,
            s.topo.backends[i].socket(family, ECHO_PORT)
        );
        assert!(tracked.seen_reply, "{tracked:?}");
    }
    run.answers.len()
}

/// UDP requests from fresh connected sockets: each answered (so from VIP:80)
/// by the backend `simulate` predicted. Returns the number of distinct flows.
fn udp_through_vip(s: &Scenario, family: Family) -> usize {
    let run = s.echo(family, Proto::Udp, UDP_FLOWS).expect("client runs");
    assert_as_predicted(&run);
    let counts = run.per_backend();
    report!("{family:?}: {UDP_FLOWS} UDP requests answered, per backend {counts:?}");
    assert!(
        counts.iter().all(|&n| n > 0),
        "{family:?}: {UDP_FLOWS} UDP flows should reach every backend: {counts:?}"
    );
    run.flows()
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
                backend_name(i),
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
    assert_eq!(header, format!("{} {BULK_BYTES}", backend_name(*backend)));
    let download = &answer[newline + 1..];
    assert_eq!(download.len(), BULK_BYTES, "{family:?}: bytes downloaded");
    assert!(
        download == data.as_slice(),
        "{family:?}: download corrupted"
    );
    assert_eq!(
        *backend,
        s.predict(family, Kind::Bulk, local.port())
            .expect("simulate"),
        "{family:?}: the tracked flow and the sink disagree"
    );
    report!(
        "{family:?}: {} MiB up and down through the VIP in {elapsed:.2?}, served by {}",
        BULK_BYTES >> 20,
        backend_name(*backend)
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
    let s = build(&options);
    let base = s.baseline().expect("counters");

    let mut flows = 0;
    for family in Family::ALL {
        flows += tcp_through_vip(&s, family);
        flows += udp_through_vip(&s, family);
    }
    // The echo traffic never fills a link: no frame may be lost on it. The
    // bulk transfers can: a veth whose peer runs XDP queues frames in a
    // 256-entry ring, and a TCP burst that overflows it is dropped on the
    // sender (counted as its `tx_dropped`, never seen by the program: for
    // the backends, the switch's port toward the LB) and retransmitted.
    // Those are reported, not failed.
    let echo_links = s.links().expect("link counters").since(base.links());
    for (what, link) in [
        ("client", &echo_links.client),
        ("switch port to the LB", &echo_links.switch_to_lb),
    ]
    .into_iter()
    .chain(echo_links.backends.iter().map(|b| ("backend", b)))
    {
        assert_eq!(link.tx_dropped, 0, "echo traffic, {what}: {link:?}");
    }
    for family in Family::ALL {
        bulk_through_vip(&s, family);
        flows += 1;
    }

    // Every frame the client sent went to a backend through xdp_lb on eth0,
    // every frame the backends sent came back through xdp_lb on eth1, and
    // nothing else was counted. With pinned neighbours, no frame needed the
    // kernel's help, and no other frame crossed the links.
    let traffic = s.settle(&base, SETTLE).expect("counters");
    let (links, verdicts, ct) = (&traffic.links, &traffic.verdicts, &traffic.ct);
    report!(
        "client sent {} frames, backends sent {}; verdicts {verdicts:?}; conntrack {ct:?}",
        links.client.tx_packets,
        links.backends_tx()
    );
    assert_eq!(
        traffic.to_backend(),
        links.client.tx_packets,
        "every frame from the client is translated to a backend: {verdicts:?}"
    );
    assert_eq!(
        traffic.replies(),
        links.backends_delivered(),
        "every frame from a backend that reached the LB is translated back: {verdicts:?}"
    );
    assert!(traffic.accounted(), "nothing else counted: {verdicts:?}");
    for verdict in DROPS {
        assert_eq!(verdicts.get(&verdict), None, "{verdicts:?}");
    }
    assert!(traffic.verdict(Verdict::ForwardToBackend) > 0);
    assert!(traffic.verdict(Verdict::ForwardReply) > 0);
    for verdict in [Verdict::PassToBackendViaStack, Verdict::PassReplyViaStack] {
        assert_eq!(
            verdicts.get(&verdict),
            None,
            "pinned neighbours: every frame leaves by redirect: {verdicts:?}"
        );
    }
    report!(
        "frames dropped on the links by a full veth XDP ring during the bulk transfers: {}",
        links.tx_dropped()
    );

    // One conntrack entry per flow, every reply matched to its flow.
    assert_eq!(
        traffic.ct_event(CtEvent::Created),
        flows as u64,
        "one entry per flow: {ct:?}"
    );
    assert_eq!(
        traffic.ct_event(CtEvent::ReplyHit),
        links.backends_delivered(),
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
        links.client.tx_packets + links.backends_delivered(),
        "per-backend counters"
    );
    report!("scenario done in {:.2?}", started.elapsed());
}

#[test]
fn first_packets_go_through_the_kernel_while_neighbours_resolve() {
    // Neighbours not pinned: the LB does not know a backend's MAC until the
    // kernel has resolved it, so a flow's first packet is translated and handed
    // to the kernel, which forwards it.
    let s = build(&Options::default());
    for family in Family::ALL {
        for proto in [Proto::Tcp, Proto::Udp] {
            let run = s.echo(family, proto, 9).expect("client runs");
            assert_as_predicted(&run);
        }
    }
    let verdicts = s.datapath.verdict_stats().expect("verdicts");
    let packets = |v| verdicts.get(v).packets;
    let all: BTreeMap<Verdict, u64> = verdicts.iter().map(|(v, c)| (v, c.packets)).collect();
    report!("unpinned neighbours: verdicts {all:?}");
    assert!(packets(Verdict::PassToBackendViaStack) > 0);
    assert!(packets(Verdict::ForwardToBackend) > 0);
    assert!(packets(Verdict::ForwardReply) + packets(Verdict::PassReplyViaStack) > 0);
    for verdict in DROPS {
        assert_eq!(packets(verdict), 0, "{verdict:?}");
    }
}
