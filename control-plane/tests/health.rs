//! Health checks against real TCP and HTTP servers, each test in its own
//! network namespace so that it can bind and kill servers freely.

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU16, Ordering},
    },
    time::Duration,
};

use control_plane::{
    announce,
    health::{
        self, Health, HealthChange, HealthChecker, PinnedTables, ProbePath, Target, TargetStatus,
    },
    model::{
        Backend, Frontend, FrontendKind, HealthCheck, Model, Probe, Protocol, Service, ServiceName,
    },
    reconcile::Desired,
};
use nix::sched::{CloneFlags, unshare};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
    time::{self, Instant},
};

const INTERVAL: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_millis(200);
/// For waits with no timing claim of their own; only reached on failure.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `test` on a current-thread runtime in a thread of its own, inside
/// a fresh network namespace with `lo` up.
fn in_netns<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET) (run as root)");
        // `ip` inherits this thread's namespace.
        let status = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("running `ip link set lo up`");
        assert!(status.success(), "`ip link set lo up`: {status}");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building a runtime")
            .block_on(test());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

fn check(probe: Probe, port: Option<u16>, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        probe,
        port,
        interval: INTERVAL,
        timeout: TIMEOUT,
        rise,
        fall,
    }
}

/// The next change, which must arrive within `within`.
async fn change_within(
    changes: &mut mpsc::UnboundedReceiver<HealthChange>,
    within: Duration,
) -> HealthChange {
    time::timeout(within, changes.recv())
        .await
        .unwrap_or_else(|_| panic!("no health change within {within:?}"))
        .expect("the checker is alive")
}

/// Waits until the only checked target's status satisfies `done`.
async fn wait_for_status(
    checker: &HealthChecker,
    done: impl Fn(&TargetStatus) -> bool,
) -> TargetStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let [status] = <[TargetStatus; 1]>::try_from(checker.snapshot()).expect("one target");
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "status never got there: {status:?}"
        );
        // Polling the snapshot: the checker only signals transitions.
        time::sleep(INTERVAL / 10).await;
    }
}

/// Accepts and closes connections until aborted; the listener goes with it.
fn accept_forever(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    })
}

/// Aborts `server` and waits until its listener is closed.
async fn kill(server: JoinHandle<()>) {
    server.abort();
    assert!(server.await.unwrap_err().is_cancelled());
}

#[test]
fn tcp_check_follows_the_server_down_and_back() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = accept_forever(listener);
        let (rise, fall) = (2, 3);
        let check = check(Probe::Tcp, None, rise, fall);
        let (mut checker, mut changes) = HealthChecker::new();
        checker.set_targets([(Target { addr }, check.clone())]);
        assert_eq!(
            checker.health(addr, &check, ProbePath::Direct),
            Some(Health::Pending)
        );

        // The first probe runs at once and brings it up.
        let change = change_within(&mut changes, TIMEOUT).await;
        assert!(change.healthy, "{change:?}");
        let status = wait_for_status(&checker, |s| s.consecutive_successes >= fall + 2).await;
        assert_eq!(status.health, Health::Up);
        assert!(
            changes.try_recv().is_err(),
            "no transition while the server is up"
        );

        kill(server).await;
        let change = change_within(&mut changes, INTERVAL * fall + TIMEOUT).await;
        assert_eq!(change.target, Target { addr });
        assert!(!change.healthy, "{change:?}");
        let reason = change.reason.expect("a down change says why");
        assert!(
            reason.contains(&format!("connecting to {addr}")),
            "{reason}"
        );
        assert!(!checker.is_healthy(addr, &check, ProbePath::Direct));

        let server = accept_forever(TcpListener::bind(addr).await.unwrap());
        let change = change_within(&mut changes, INTERVAL * rise + TIMEOUT).await;
        assert!(change.healthy, "{change:?}");
        assert_eq!(change.reason, None);
        assert!(checker.is_healthy(addr, &check, ProbePath::Direct));
        let status = wait_for_status(&checker, |_| true).await;
        assert!(status.last_error.is_some_and(|e| e == reason));
        kill(server).await;
    });
}

/// An HTTP server answering every request with the status in `status`
/// (read per request), and sending each request head it gets to `heads`.
fn http_server(
    listener: TcpListener,
    status: Arc<AtomicU16>,
    heads: mpsc::UnboundedSender<String>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let head = read_head(&mut stream).await;
            let _ = heads.send(head);
            let code = status.load(Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 {code} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            // The probe may already be gone (timed out); nothing to do then.
            let _ = stream.write_all(response.as_bytes()).await;
        }
    })
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0; 512];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn http_check_follows_the_status_code() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let status = Arc::new(AtomicU16::new(200));
        let (heads_tx, mut heads) = mpsc::unbounded_channel();
        let server = http_server(listener, Arc::clone(&status), heads_tx);
        // Traffic goes to port 1, where nothing listens; the check probes
        // the server's port instead.
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (rise, fall) = (1, 2);
        let check = check(
            Probe::Http {
                path: "/healthz?full=1".into(),
            },
            Some(port),
            rise,
            fall,
        );
        let (mut checker, mut changes) = HealthChecker::new();
        checker.set_targets([(Target { addr }, check.clone())]);

        let head = time::timeout(PATIENCE, heads.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            head.starts_with("GET /healthz?full=1 HTTP/1.1\r\n"),
            "{head:?}"
        );
        assert!(
            head.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
            "{head:?}"
        );
        assert!(head.contains("\r\nConnection: close\r\n"), "{head:?}");
        assert!(
            change_within(&mut changes, TIMEOUT).await.healthy,
            "200 brings it up"
        );
        let up = wait_for_status(&checker, |s| s.consecutive_successes > fall).await;
        assert_eq!(up.health, Health::Up);
        assert_eq!(up.probe_addr.port(), port);
        assert!(changes.try_recv().is_err(), "200 keeps it up");

        status.store(500, Ordering::SeqCst);
        let change = change_within(&mut changes, INTERVAL * fall + TIMEOUT).await;
        assert!(!change.healthy, "{change:?}");
        let reason = change.reason.unwrap();
        assert!(reason.contains("HTTP status 500"), "{reason}");
        assert!(!checker.is_healthy(addr, &check, ProbePath::Direct));

        // 3xx passes too: a redirect says the server is alive.
        status.store(302, Ordering::SeqCst);
        let change = change_within(&mut changes, INTERVAL * rise + TIMEOUT).await;
        assert!(change.healthy, "{change:?}");
        kill(server).await;
    });
}

#[test]
fn http_check_fails_on_a_non_http_answer() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                read_head(&mut stream).await;
                let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
            }
        });
        let check = check(Probe::Http { path: "/".into() }, None, 1, 2);
        let (mut checker, mut changes) = HealthChecker::new();
        checker.set_targets([(Target { addr }, check)]);

        let change = change_within(&mut changes, INTERVAL * 2 + TIMEOUT).await;
        assert!(!change.healthy);
        let reason = change.reason.unwrap();
        assert!(
            reason.contains(
                r#"answered "SSH-2.0-OpenSSH_9.6", which is not an HTTP/1.x status line"#
            ),
            "{reason}"
        );
        let status = wait_for_status(&checker, |s| s.consecutive_failures >= 2).await;
        assert_eq!(status.last_error.as_deref(), Some(reason.as_str()));
        kill(server).await;
    });
}

#[test]
fn http_check_times_out_on_a_silent_server() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads the request, and never answers.
        let server = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                read_head(&mut stream).await;
                open.push(stream);
            }
        });
        let check = check(Probe::Http { path: "/".into() }, None, 1, 1);
        let (mut checker, mut changes) = HealthChecker::new();
        let started = Instant::now();
        checker.set_targets([(Target { addr }, check)]);

        // The first probe starts at once and gives up after the timeout.
        let change = change_within(&mut changes, TIMEOUT + INTERVAL).await;
        assert!(!change.healthy);
        assert!(started.elapsed() >= TIMEOUT, "gave up before the timeout");
        let reason = change.reason.unwrap();
        assert_eq!(reason, format!("no answer from {addr} within {TIMEOUT:?}"));
        kill(server).await;
    });
}

/// A TCP service on `vip`:80 served by `backends`, each checked by `check`.
fn checked_service(vip: &str, backends: &[SocketAddr], check: &HealthCheck) -> Service {
    Service {
        frontends: vec![Frontend {
            addr: vip.parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            kind: FrontendKind::Vip,
            snat_remote: false,
            source_ranges_only: false,
        }],
        health_check: Some(check.clone()),
        ..Service::nat(
            Protocol::Tcp,
            backends.iter().copied().map(Backend::active).collect(),
        )
    }
}

/// What the agent would program and announce for `model` with `checker`'s
/// verdicts, as it computes them on every sync: the members of each
/// service's Maglev table (backends the datapath sends new flows to), by
/// service name, and the VIPs it announces.
fn programmed(
    model: &Model,
    checker: &HealthChecker,
) -> (BTreeMap<String, Vec<SocketAddr>>, Vec<IpAddr>) {
    let desired = Desired::new(model, |name, addr| {
        model.services[name]
            .health_check
            .as_ref()
            .is_none_or(|check| checker.is_healthy(addr, check, ProbePath::Direct))
    });
    let members = desired
        .services
        .iter()
        .map(|(name, service)| {
            let members = service.members.iter().map(|&(addr, _)| addr).collect();
            (name.0.clone(), members)
        })
        .collect();
    (members, announce::servable(&desired).into_iter().collect())
}

/// Receives changes until `done` holds of what the agent would program,
/// checking `invariant` of it after each one. Health only changes in the
/// transitions the channel carries, so checking after each of them (and
/// before the first) checks every state the agent could have programmed.
async fn follow_changes(
    model: &Model,
    checker: &HealthChecker,
    changes: &mut mpsc::UnboundedReceiver<HealthChange>,
    invariant: impl Fn(&BTreeMap<String, Vec<SocketAddr>>, &[IpAddr]),
    done: impl Fn(&HealthChecker) -> bool,
) {
    let (members, announced) = programmed(model, checker);
    invariant(&members, &announced);
    while !done(checker) {
        change_within(changes, PATIENCE).await;
        let (members, announced) = programmed(model, checker);
        invariant(&members, &announced);
    }
}

/// The audit's `ghost`: a service added with a dead backend. Before, the
/// backend started up: in the table, its VIP announced, for `fall` probes.
#[test]
fn a_dead_new_backend_is_never_in_the_table_nor_announced() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let server = accept_forever(listener);
        // Nothing listens there: each probe is refused.
        let dead: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let (web_vip, ghost_vip): (IpAddr, IpAddr) = (
            "198.19.0.1".parse().unwrap(),
            "198.19.0.30".parse().unwrap(),
        );
        let check = check(Probe::Tcp, None, 2, 3);
        let model = Model {
            services: BTreeMap::from([
                (
                    ServiceName("web".into()),
                    checked_service("198.19.0.1", &[live], &check),
                ),
                (
                    ServiceName("ghost".into()),
                    checked_service("198.19.0.30", &[dead], &check),
                ),
            ]),
        };
        let (mut checker, mut changes) = HealthChecker::new();
        checker.set_targets(health::targets(&model, None));
        let shown = health::in_service(&model, &checker, None, &ServiceName("ghost".into()), dead);

        follow_changes(
            &model,
            &checker,
            &mut changes,
            |members, announced| {
                assert!(members["ghost"].is_empty(), "{members:?}");
                assert!(!announced.contains(&ghost_vip), "{announced:?}");
            },
            |checker| {
                checker.health(dead, &check, ProbePath::Direct) == Some(Health::Down)
                    && checker.health(live, &check, ProbePath::Direct) == Some(Health::Up)
            },
        )
        .await;
        assert_eq!(shown, Health::Pending, "shown as not probed yet");
        // The same computation does see a backend that passed.
        let (members, announced) = programmed(&model, &checker);
        assert_eq!(members["web"], [live]);
        assert_eq!(announced, [web_vip]);
        kill(server).await;
    });
}

/// The audit's `lonely`, after an agent restart: its backend was down (its
/// record retired, here even reused by another backend), so it stays out;
/// `web`'s backend was in its table, so it stays in without waiting for a
/// probe.
#[test]
fn after_a_restart_only_what_was_served_stays_in() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let server = accept_forever(listener);
        let dead: SocketAddr = "127.0.0.1:81".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:82".parse().unwrap();
        let (web_vip, lonely_vip): (IpAddr, IpAddr) = (
            "198.19.0.1".parse().unwrap(),
            "198.19.0.31".parse().unwrap(),
        );
        let check = check(Probe::Tcp, None, 2, 3);
        let model = Model {
            services: BTreeMap::from([
                (
                    ServiceName("web".into()),
                    checked_service("198.19.0.1", &[live], &check),
                ),
                (
                    ServiceName("lonely".into()),
                    checked_service("198.19.0.31", &[dead], &check),
                ),
            ]),
        };
        let (mut checker, mut changes) = HealthChecker::new();
        checker.recover(PinnedTables::new(
            [
                ((SocketAddr::new(web_vip, 80), Protocol::Tcp), 1),
                ((SocketAddr::new(lonely_vip, 80), Protocol::Tcp), 2),
            ],
            // Record 7 was lonely's backend's until it went down; another
            // backend has it now.
            [(5, live, true), (7, other, false)],
            [(1, vec![5, 5, 5])],
        ));
        checker.set_targets(health::targets(&model, None));
        let (members, announced) = programmed(&model, &checker);
        assert_eq!(members["web"], [live], "no probe needed to stay in");
        assert_eq!(announced, [web_vip]);

        follow_changes(
            &model,
            &checker,
            &mut changes,
            |members, announced| {
                assert!(members["lonely"].is_empty(), "{members:?}");
                assert!(!announced.contains(&lonely_vip), "{announced:?}");
                assert_eq!(members["web"], [live]);
            },
            |checker| checker.health(dead, &check, ProbePath::Direct) == Some(Health::Down),
        )
        .await;
        kill(server).await;
    });
}

/// A probe through the DSR tunnel goes to the VIP from a socket with the
/// backend's mark (read back from the socket, as `tc_probe_encap` reads
/// it), which does not stand in its way, and a host without a route to the
/// VIP gets an error that says what to do, where a direct probe says only
/// that the network is unreachable.
#[test]
fn a_tunnel_probe_is_marked_and_names_a_missing_route_to_the_vip() {
    in_netns(|| async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let local = listener.local_addr().expect("local address");
        let server = accept_forever(listener);
        let mark = xdp_lb::DEFAULT_PROBE_MARK_BASE | 1;
        let marked = health::ProbeTo {
            addr: local,
            mark: Some(mark),
        };
        let socket_mark = |stream: &TcpStream| {
            nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::Mark)
                .expect("getsockopt(SO_MARK)")
        };
        let connection = health::probe::connect(marked)
            .await
            .expect("a marked probe connects");
        assert_eq!(socket_mark(&connection), mark, "the backend's mark");
        let direct = health::probe::connect(local.into())
            .await
            .expect("a direct probe connects");
        assert_eq!(socket_mark(&direct), 0, "a direct probe is not marked");
        health::probe::probe(&Probe::Tcp, marked, TIMEOUT)
            .await
            .expect("a marked probe passes");
        kill(server).await;

        // This namespace has `lo` only: no route to anything else.
        let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
        let tunnelled = health::ProbeTo {
            addr: vip,
            mark: Some(xdp_lb::DEFAULT_PROBE_MARK_BASE | 1),
        };
        let error = health::probe::probe(&Probe::Tcp, tunnelled, TIMEOUT)
            .await
            .expect_err("no route");
        let reason = error.reason();
        assert!(
            reason.starts_with("this host cannot reach the VIP 198.19.0.1:80 (no route, or the")
                && reason.contains("--dsr-health-probes direct"),
            "{reason}"
        );
        let direct = health::probe::probe(&Probe::Tcp, vip.into(), TIMEOUT)
            .await
            .expect_err("no route");
        assert!(
            direct.reason().starts_with("connecting to 198.19.0.1:80: "),
            "{}",
            direct.reason()
        );
    });
}
