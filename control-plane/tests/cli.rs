//! The `xlb` binary against a fake agent on a Unix socket: what a user sees.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use control_plane::{
    admin::{
        Admin, AdminError, AdminServer, EventHistory, EventsRead, HISTORY_CAPACITY, SharedHistory,
    },
    api::{
        BackendStatus, BackendView, DatapathAddressView, DatapathBackendStatus,
        DatapathBackendView, DatapathLbView, DatapathServiceView, DrainEntryView, DrainRequest,
        DrainSource, DrainUnchanged, DrainUnchangedView, DrainView, DrainsView, EventsView,
        FlowEventView, FlowView, FrontendView, HealthCheckView, MaglevView, MapUsageView,
        ProbePathView, ServiceBackendView, ServiceView, SimulateRequest, SimulateView, StatsView,
        StatusView,
    },
    model::{FrontendKind, Mode, Protocol},
};
use tokio::sync::oneshot;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// One service with two backends; everything else minimal.
#[derive(Debug, Default)]
struct FakeAdmin {
    /// What `status` says of the flow event sampling.
    sampling: u32,
    /// What `status` says of the first sync.
    synced: bool,
    /// The backends `xlb drain` drained, in `default/web:http`.
    drained: Mutex<BTreeSet<SocketAddr>>,
    /// The flow events `xlb observe` reads.
    events: Mutex<FakeEvents>,
}

/// The fake agent's flow event history: the three of [`events`] are
/// pushed on each new reader's first read (one without a cursor of this
/// history's run), or on every read; and each read finds `lost_per_read`
/// more events lost to the datapath's full ring.
#[derive(Debug)]
struct FakeEvents {
    history: SharedHistory<FlowEventView>,
    on_every_read: bool,
    lost_per_read: u64,
    lost: u64,
}

impl Default for FakeEvents {
    fn default() -> Self {
        Self {
            history: SharedHistory::new(EventHistory::new(HISTORY_CAPACITY)),
            on_every_read: false,
            lost_per_read: 0,
            lost: 0,
        }
    }
}

impl FakeEvents {
    /// Three events on every read into a history of two: each read after
    /// the first misses one.
    fn overflowing() -> Self {
        Self {
            history: SharedHistory::new(EventHistory::new(2)),
            on_every_read: true,
            ..Self::default()
        }
    }
}

/// The configuration file the fake agent says it runs on.
const CONFIG_FILE: &str = "/etc/xlb/xlb.yaml";
/// A backend of `default/web:http` the configuration file drains.
const DRAINED_BY_FILE: &str = "198.18.2.3:8080";
/// A backend no service has that `xlb drain` drained before the
/// configuration dropped it.
const DRAINED_AND_GONE: &str = "198.18.1.100:9000";

fn web() -> ServiceView {
    let backend = |id, address: &str, status| ServiceBackendView {
        id,
        address: addr(address),
        weight: 1,
        status,
        slots: 0,
    };
    ServiceView {
        id: 1,
        name: "default/web:http".into(),
        protocol: Protocol::Tcp,
        mode: Mode::Nat,
        frontends: vec![FrontendView {
            address: addr("198.18.100.1:80"),
            protocol: Protocol::Tcp,
            kind: FrontendKind::Vip,
        }],
        affinity_timeout_seconds: None,
        table_size: 7,
        backends: vec![
            backend(5, "198.18.2.1:8080", BackendStatus::Active),
            backend(6, "198.18.2.2:8080", BackendStatus::Draining),
        ],
        packets: 0,
        bytes: 0,
    }
}

/// The datapath's maps: `web`'s frontend, a frontend an earlier agent
/// pinned (no name in the model) whose table names a backend without a
/// record, and a VIP no frontend has.
fn programmed() -> DatapathLbView {
    let backend = |id, address: Option<&str>, status, slots| DatapathBackendView {
        id,
        address: address.map(addr),
        generation: address.map(|_| 1),
        status,
        slots,
    };
    let services = vec![
        DatapathServiceView {
            frontend: addr("198.18.100.1:80"),
            protocol: Protocol::Tcp,
            kind: Some(FrontendKind::Vip),
            service_id: 1,
            service: Some("default/web:http".into()),
            mode: Mode::Nat,
            affinity_timeout_seconds: None,
            table_size: 7,
            backends: vec![backend(
                5,
                Some("198.18.2.1:8080"),
                DatapathBackendStatus::Active,
                7,
            )],
        },
        DatapathServiceView {
            frontend: addr("198.18.100.2:443"),
            protocol: Protocol::Tcp,
            kind: Some(FrontendKind::Vip),
            service_id: 2,
            service: None,
            mode: Mode::Nat,
            affinity_timeout_seconds: None,
            table_size: 7,
            backends: vec![
                backend(7, Some("198.18.2.3:8443"), DatapathBackendStatus::Active, 5),
                backend(8, None, DatapathBackendStatus::Missing, 2),
            ],
        },
    ];
    DatapathLbView {
        services,
        addresses_without_frontend: vec![DatapathAddressView {
            address: "198.19.0.50".parse().expect("address"),
            kind: FrontendKind::Vip,
        }],
        ..DatapathLbView::default()
    }
}

/// A backend of two services, drained in one (`xlb drain --service`).
fn shared_backend() -> BackendView {
    BackendView {
        id: 5,
        address: addr("198.18.2.1:8080"),
        protocol: Protocol::Tcp,
        generation: 1,
        status: BackendStatus::Active,
        health: "unchecked".into(),
        health_by_service: BTreeMap::new(),
        services: vec!["default/api:http".into(), "default/web:http".into()],
        status_by_service: BTreeMap::from([
            ("default/api:http".into(), BackendStatus::Draining),
            ("default/web:http".into(), BackendStatus::Active),
        ]),
        drained_by: BTreeMap::from([("default/api:http".into(), vec![DrainSource::Admin])]),
        packets: 0,
        bytes: 0,
    }
}

/// The fake agent's flow events: a new flow, a drop and a refusal.
fn events() -> Vec<FlowEventView> {
    vec![
        FlowEventView {
            time_ns: 1_000,
            kind: "new_flow".into(),
            protocol: Some(Protocol::Tcp),
            client: Some(addr("198.18.50.77:40000")),
            frontend: addr("198.18.100.1:80"),
            service: Some("default/web:http".into()),
            backend: Some(addr("198.18.2.1:8080")),
            reason: None,
        },
        FlowEventView {
            time_ns: 2_000,
            kind: "drop".into(),
            protocol: Some(Protocol::Udp),
            client: Some(addr("198.18.50.77:40001")),
            frontend: addr("198.18.100.1:81"),
            service: None,
            backend: None,
            reason: Some("drop_unknown_port".into()),
        },
        FlowEventView {
            time_ns: 3_000,
            kind: "refused".into(),
            protocol: Some(Protocol::Tcp),
            client: Some(addr("198.18.50.77:40002")),
            frontend: addr("198.18.100.1:80"),
            service: Some("default/web:http".into()),
            backend: None,
            reason: Some("refuse_reset".into()),
        },
    ]
}

fn flow() -> FlowView {
    FlowView {
        protocol: Protocol::Tcp,
        client: addr("198.18.50.77:40000"),
        frontend: addr("198.18.100.1:80"),
        backend_id: 5,
        backend: Some(addr("198.18.2.1:8080")),
        snat: Some(addr("198.18.0.1:61004")),
        service: Some("default/web:http".into()),
        state: "established".into(),
        idle_seconds: 2,
    }
}

/// A backend of a DSR service whose probe through the tunnel fails, and a
/// NAT backend probed directly that passes.
fn health_checks() -> Vec<HealthCheckView> {
    vec![
        HealthCheckView {
            backend: addr("198.18.2.1:80"),
            services: vec!["dsr-web".into()],
            probe: "tcp".into(),
            path: ProbePathView::Tunnel,
            probe_address: addr("198.18.100.2:80"),
            mark: Some(0x584c_0001),
            health: "down".into(),
            consecutive_successes: 0,
            consecutive_failures: 3,
            last_error: Some("no answer from 198.18.100.2:80 within 1s".into()),
        },
        HealthCheckView {
            backend: addr("198.18.2.2:8080"),
            services: vec!["default/web:http".into(), "other".into()],
            probe: "http GET /healthz".into(),
            path: ProbePathView::Direct,
            probe_address: addr("198.18.2.2:8080"),
            mark: None,
            health: "up".into(),
            consecutive_successes: 7,
            consecutive_failures: 0,
            last_error: None,
        },
    ]
}

impl Admin for FakeAdmin {
    fn services(&self) -> Result<Vec<ServiceView>, AdminError> {
        Ok(vec![web()])
    }
    fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
        Ok(vec![shared_backend()])
    }
    fn datapath_lb(&self) -> Result<DatapathLbView, AdminError> {
        Ok(programmed())
    }
    fn conntrack(&self, service: Option<&str>) -> Result<Vec<FlowView>, AdminError> {
        match service {
            None | Some("default/web:http") => Ok(vec![flow()]),
            Some(other) => Err(AdminError::NotFound(format!("no service named {other}"))),
        }
    }
    fn stats(&self) -> Result<StatsView, AdminError> {
        Ok(StatsView {
            verdicts: BTreeMap::from([("forward_to_backend".into(), 12)]),
            ..StatsView::default()
        })
    }
    fn maps(&self) -> Result<Vec<MapUsageView>, AdminError> {
        Ok(vec![])
    }
    fn maglev(&self, service: &str) -> Result<MaglevView, AdminError> {
        if service != "default/web:http" {
            return Err(AdminError::NotFound(format!("no service named {service}")));
        }
        Ok(MaglevView {
            service: service.into(),
            id: 1,
            size: 7,
            slots: vec![5, 5, 5, 5, 5, 5, 5],
            shares: BTreeMap::from([(5, 7)]),
        })
    }
    fn simulate(&self, _: &SimulateRequest) -> Result<SimulateView, AdminError> {
        Ok(SimulateView {
            outcome: "backend".into(),
            service: Some("default/web:http".into()),
            backend_id: Some(5),
            backend: Some(addr("198.18.2.1:8080")),
        })
    }
    /// Drains in `default/web:http`, as the agent does: the file's drain
    /// is not the admin API's to lift, and a drain made twice changes
    /// nothing the second time.
    fn drain(&self, request: &DrainRequest, drain: bool) -> Result<DrainView, AdminError> {
        const WEB: &str = "default/web:http";
        let nothing = DrainView {
            services: Vec::new(),
            unchanged: Vec::new(),
            forgotten: Vec::new(),
        };
        let unchanged = |reason| DrainView {
            unchanged: vec![DrainUnchangedView {
                service: WEB.into(),
                reason,
            }],
            ..nothing.clone()
        };
        if request.backend == addr(DRAINED_AND_GONE) && !drain {
            return Ok(DrainView {
                forgotten: vec![DrainEntryView {
                    backend: request.backend,
                    service: None,
                    services: Vec::new(),
                }],
                ..nothing
            });
        }
        if request.backend == addr(DRAINED_BY_FILE) {
            return Ok(unchanged(DrainUnchanged::DrainedByFile));
        }
        let mut drained = self.drained.lock().expect("drains lock");
        let changed = if drain {
            drained.insert(request.backend)
        } else {
            drained.remove(&request.backend)
        };
        Ok(if changed {
            DrainView {
                services: vec![WEB.into()],
                ..nothing
            }
        } else if drain {
            unchanged(DrainUnchanged::AlreadyDrained)
        } else {
            unchanged(DrainUnchanged::NotDrained)
        })
    }
    fn health_checks(&self) -> Result<Vec<HealthCheckView>, AdminError> {
        Ok(health_checks())
    }
    fn status(&self) -> Result<StatusView, AdminError> {
        Ok(StatusView {
            version: "0.0.0".into(),
            layout_version: 1,
            config_file: Some(CONFIG_FILE.into()),
            attached: Vec::new(),
            services: 0,
            backends: 0,
            synced: self.synced,
            last_reload: None,
            reloads_ok: 0,
            reloads_failed: 0,
            last_sync_seconds: None,
            last_sync_error: None,
            uptime_seconds: 1,
            announcements: Vec::new(),
            earlier_agent_state_kept: None,
            kubernetes: None,
            flow_event_sampling: Some(self.sampling),
            maglev: None,
            drains: Some(DrainsView {
                file: "/run/xlb/drains.json".into(),
                drains: vec![DrainEntryView {
                    backend: addr(DRAINED_AND_GONE),
                    service: None,
                    services: Vec::new(),
                }],
                restore_error: None,
            }),
        })
    }
    /// The events, pushed as if they had just happened when a reader starts
    /// (`xlb observe` shows only what happens once it runs), read from the
    /// reader's cursor.
    fn events(&self, read: &EventsRead) -> Result<EventsView, AdminError> {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
            .expect("the clock");
        let now_ns = now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64;
        let mut fake = self.events.lock().expect("events");
        let run = fake.history.run();
        let new_reader = read.cursor().is_none_or(|c| c.run != Some(run));
        let new_events = if new_reader || fake.on_every_read {
            events()
        } else {
            Vec::new()
        };
        fake.lost += fake.lost_per_read;
        fake.history.append(
            new_events.into_iter().map(|event| FlowEventView {
                time_ns: now_ns + event.time_ns,
                ..event
            }),
            Some(fake.lost),
        );
        read.from(&fake.history, |e| e.time_ns)
    }

    fn event_arrivals(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events.lock().expect("events").history.arrivals()
    }
}

/// The fake agent on a socket in its own tempdir, served from a thread
/// (the test drives the `xlb` binary synchronously) until dropped.
struct FakeAgent {
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// A fake agent that samples one flow event in ten.
    fn start() -> Self {
        Self::sampling(10)
    }

    fn sampling(sampling: u32) -> Self {
        Self::serving(FakeAdmin {
            sampling,
            synced: true,
            ..FakeAdmin::default()
        })
    }

    fn serving(admin: FakeAdmin) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stop, thread) = serve(dir.path().join("admin.sock"), admin);
        Self {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops serving, and then serves `admin` on the same socket: the
    /// agent restarted.
    fn restart(&mut self, admin: FakeAdmin) {
        self.stop_serving();
        let (stop, thread) = serve(self.socket(), admin);
        self.stop = Some(stop);
        self.thread = Some(thread);
    }

    /// Stops the server, which removes its socket.
    fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// Runs `xlb --admin-socket <socket> args...`.
    fn xlb(&self, args: &[&str]) -> Output {
        xlb_with_socket(&self.socket(), args)
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

/// Serves `admin` on `socket` from a thread of its own until the sender
/// returned is used (or dropped); returns once the socket is bound.
fn serve(socket: PathBuf, admin: FakeAdmin) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, is_ready) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let server = AdminServer::bind(&socket, None).await.expect("bind");
            ready.send(()).expect("test waiting");
            server
                .serve(Arc::new(admin), async move {
                    stopped.await.ok();
                })
                .await;
        });
    });
    is_ready.recv().expect("the fake agent bound its socket");
    (stop, thread)
}

fn xlb_with_socket(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("--admin-socket")
        .arg(socket)
        .args(args)
        .env_remove("XLB_ADMIN_SOCKET")
        .output()
        .expect("run xlb")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "xlb failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn service_list_json_is_the_api_document() {
    let agent = FakeAgent::start();
    let json = stdout(&agent.xlb(&["service", "list", "-o", "json"]));
    let services: Vec<ServiceView> = serde_json::from_str(&json).expect("JSON services");
    assert_eq!(services, vec![web()]);
}

#[test]
fn service_list_table_names_the_service_and_its_backend_ids() {
    let agent = FakeAgent::start();
    let table = stdout(&agent.xlb(&["service", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines,
        [
            "ID   Name               Frontend              Service Type   Backend",
            "1    default/web:http   198.18.100.1:80/TCP   VIP            5 => 198.18.2.1:8080/TCP (active)",
            "                                                             6 => 198.18.2.2:8080/TCP (draining)",
        ]
    );
}

#[test]
fn backend_list_is_not_active_while_a_service_drains_it() {
    let agent = FakeAgent::start();
    let table = stdout(&agent.xlb(&["backend", "list"]));
    let lines: Vec<&str> = table.lines().take(2).collect();
    assert_eq!(
        lines,
        [
            "ID   Address               Status                       Drained By                     Health      Gen   Services                            Packets   Bytes",
            "5    198.18.2.1:8080/TCP   draining (1 of 2 services)   xlb drain (default/api:http)   unchecked   1     default/api:http,default/web:http   0         0",
        ]
    );
    // The documents carry each service's status.
    let json = stdout(&agent.xlb(&["backend", "list", "-o", "json"]));
    let backends: Vec<BackendView> = serde_json::from_str(&json).expect("JSON backends");
    assert_eq!(backends, vec![shared_backend()]);
    let raw: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(
        raw[0]["status_by_service"],
        serde_json::json!({"default/api:http": "draining", "default/web:http": "active"})
    );
    let yaml = stdout(&agent.xlb(&["backend", "list", "-o", "yaml"]));
    let backends: Vec<BackendView> = serde_yaml_ng::from_str(&yaml).expect("YAML backends");
    assert_eq!(backends, vec![shared_backend()]);
}

#[test]
fn conntrack_filter_and_yaml() {
    let agent = FakeAgent::start();
    let yaml = stdout(&agent.xlb(&["ct", "list", "--service", "default/web:http", "-o", "yaml"]));
    let flows: Vec<FlowView> = serde_yaml_ng::from_str(&yaml).expect("YAML flows");
    assert_eq!(flows, vec![flow()]);

    let unknown = agent.xlb(&["ct", "list", "--service", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).contains("no service named nope"),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn health_list_says_how_each_backend_is_probed_and_why_it_failed() {
    let agent = FakeAgent::start();
    let text = stdout(&agent.xlb(&["health", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (line, cells) in lines[1..].iter().zip([
        &[
            "198.18.2.1:80",
            "dsr-web",
            "tcp",
            "198.18.100.2:80 through the DSR tunnel (mark 0x584c0001)",
            "down",
            "3 failed",
            "no answer from 198.18.100.2:80 within 1s",
        ][..],
        &[
            "198.18.2.2:8080",
            "default/web:http,other",
            "http GET /healthz",
            "198.18.2.2:8080",
            "up",
            "7 passed",
            "-",
        ],
    ]) {
        for cell in cells {
            assert!(line.contains(cell), "{cell:?} not in {line:?}");
        }
    }
    let json = stdout(&agent.xlb(&["health", "list", "-o", "json"]));
    let checks: Vec<HealthCheckView> = serde_json::from_str(&json).expect("JSON checks");
    assert_eq!(checks, health_checks());
}

#[test]
fn observe_prints_a_line_per_event_until_its_count() {
    let agent = FakeAgent::start();
    let text = stdout(&agent.xlb(&["observe", "--count", "3"]));
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "new_flow tcp 198.18.50.77:40000 -> 198.18.100.1:80 default/web:http => 198.18.2.1:8080",
            "drop     udp 198.18.50.77:40001 -> 198.18.100.1:81 drop_unknown_port",
            "refused  tcp 198.18.50.77:40002 -> 198.18.100.1:80 default/web:http: refuse_reset",
        ]
    );
    // JSON: one object per line, the API's own document; the count holds.
    let json = stdout(&agent.xlb(&["observe", "-n", "1", "-o", "json"]));
    let lines: Vec<FlowEventView> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .map(|e: FlowEventView| FlowEventView {
            time_ns: events()[0].time_ns,
            ..e
        })
        .collect();
    assert_eq!(lines, events()[..1]);
}

#[test]
fn observe_says_where_it_fell_behind_and_goes_on() {
    let overflowing = || {
        FakeAgent::serving(FakeAdmin {
            sampling: 10,
            synced: true,
            events: Mutex::new(FakeEvents::overflowing()),
            ..FakeAdmin::default()
        })
    };
    // Each read finds three new events in a history of two: the first
    // starts with what is there, the second has missed one.
    let agent = overflowing();
    let text = stdout(&agent.xlb(&["observe", "--count", "4"]));
    let drop = "drop     udp 198.18.50.77:40001 -> 198.18.100.1:81 drop_unknown_port";
    let refused =
        "refused  tcp 198.18.50.77:40002 -> 198.18.100.1:80 default/web:http: refuse_reset";
    let missed = "missed   1 events: this observer fell behind the agent's history";
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [drop, refused, missed, drop, refused]
    );
    // JSON: a line of its own, which no event has.
    let agent = overflowing();
    let json = stdout(&agent.xlb(&["observe", "-n", "4", "-o", "json"]));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 5, "{json}");
    assert_eq!(lines[2], serde_json::json!({"missed": 1}));
    for event in [&lines[..2], &lines[3..]].concat() {
        serde_json::from_value::<FlowEventView>(event.clone()).expect("an event");
    }
}

#[test]
fn observe_says_when_the_datapath_lost_events_to_its_full_ring() {
    // Each read finds three new events, and five more lost: the first
    // answer's count is where the observer starts counting.
    let agent = FakeAgent::serving(FakeAdmin {
        sampling: 10,
        synced: true,
        events: Mutex::new(FakeEvents {
            on_every_read: true,
            lost_per_read: 5,
            ..FakeEvents::default()
        }),
        ..FakeAdmin::default()
    });
    let text = stdout(&agent.xlb(&["observe", "--count", "6"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[..3].iter().all(|l| !l.starts_with("lost")), "{text}");
    assert_eq!(
        lines[3],
        "lost     5 events: the datapath's ring was full, the agent's drain behind (xlb \
         stats: flow events lost_ring_full)"
    );
    let json = stdout(&agent.xlb(&["observe", "-n", "6", "-o", "json"]));
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines[3], serde_json::json!({"lost_ring_full": 5}), "{json}");
}

/// `xlb observe` with `args` on a fake agent, stopped once the observer
/// printed its first three events (the fake's): the observer, its output
/// lines from then on and its stderr lines after the one saying it waits
/// for the agent, and those three events' lines.
struct ObserverOfAStoppedAgent {
    observe: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    errors: std::io::Lines<BufReader<std::process::ChildStderr>>,
    before: Vec<String>,
}

fn observe_until_the_agent_stops(agent: &mut FakeAgent, args: &[&str]) -> ObserverOfAStoppedAgent {
    let mut observe = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("--admin-socket")
        .arg(agent.socket())
        .arg("observe")
        .args(args)
        .env_remove("XLB_ADMIN_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run xlb observe");
    let mut lines = BufReader::new(observe.stdout.take().expect("stdout")).lines();
    let mut errors = BufReader::new(observe.stderr.take().expect("stderr")).lines();
    let before = (0..3)
        .map(|_| lines.next().expect("an event").expect("utf-8"))
        .collect();
    // The agent stops; the observer waits for it (and says so) rather than
    // fail.
    agent.stop_serving();
    let waiting = errors.next().expect("a line on stderr").expect("utf-8");
    assert!(waiting.contains("waiting for it to come back"), "{waiting}");
    ObserverOfAStoppedAgent {
        observe,
        lines,
        errors,
        before,
    }
}

#[test]
fn observe_waits_for_a_restarting_agent_and_says_it_restarted() {
    let mut agent = FakeAgent::start();
    let ObserverOfAStoppedAgent {
        mut observe,
        mut lines,
        before,
        ..
    } = observe_until_the_agent_stops(&mut agent, &["--count", "6", "--duration", "20s"]);
    let mut line = || lines.next().expect("a line").expect("utf-8");
    // The new agent's loss count is the datapath's, which outlived the old
    // agent: no loss this observer saw happen, so no lost line.
    agent.restart(FakeAdmin {
        sampling: 10,
        synced: true,
        events: Mutex::new(FakeEvents {
            lost: 40,
            ..FakeEvents::default()
        }),
        ..FakeAdmin::default()
    });
    let after: Vec<String> = (0..4).map(|_| line()).collect();
    let status = observe.wait().expect("xlb observe ends");
    assert!(status.success(), "{status}");
    let event_lines = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(event_lines(&before), ["new_flow", "drop", "refused"]);
    assert_eq!(
        after[0],
        "restarted the agent restarted: events from its last answer to its start are not known"
    );
    assert_eq!(event_lines(&after[1..]), ["new_flow", "drop", "refused"]);
}

#[test]
fn observe_stops_when_the_restarted_agent_samples_no_events() {
    let mut agent = FakeAgent::start();
    let ObserverOfAStoppedAgent {
        mut observe,
        errors,
        ..
    } = observe_until_the_agent_stops(&mut agent, &["--duration", "20s"]);
    // Back without sampling: nothing would ever come; it stops and says why.
    agent.restart(FakeAdmin {
        sampling: 0,
        synced: true,
        ..FakeAdmin::default()
    });
    let status = observe.wait().expect("xlb observe ends");
    assert!(!status.success(), "{status}");
    let said: Vec<String> = errors.map(|l| l.expect("utf-8")).collect();
    assert!(
        said.iter().any(|l| l.contains(
            "the restarted agent reports no flow events: start it with --flow-event-sampling N"
        )),
        "{said:?}"
    );
}

#[test]
fn lists_warn_while_the_agent_has_not_synced() {
    let lists: [&[&str]; 2] = [&["service", "list"], &["backend", "list", "-o", "json"]];
    for synced in [false, true] {
        let agent = FakeAgent::serving(FakeAdmin {
            sampling: 10,
            synced,
            ..FakeAdmin::default()
        });
        for args in lists {
            let output = agent.xlb(args);
            assert!(output.status.success(), "{args:?}: {}", stderr(&output));
            // The list is printed all the same.
            assert!(!stdout(&output).is_empty(), "{args:?}");
            let warned = stderr(&output).contains("has not programmed its services yet");
            assert_eq!(warned, !synced, "{args:?}: {}", stderr(&output));
            if warned {
                // And says where to see what the datapath forwards.
                assert!(
                    stderr(&output).contains("`xlb bpf lb list` shows what the datapath holds"),
                    "{args:?}: {}",
                    stderr(&output)
                );
            }
        }
        // `bpf lb list` reads the maps: it shows what the datapath
        // forwards, synced or not, and has nothing to warn of.
        let output = agent.xlb(&["bpf", "lb", "list"]);
        assert!(stdout(&output).contains("198.18.100.2:443/TCP (2)"));
        assert_eq!(stderr(&output), "", "synced: {synced}");
    }
}

#[test]
fn bpf_lb_list_shows_the_datapaths_maps() {
    let agent = FakeAgent::serving(FakeAdmin {
        sampling: 10,
        synced: false,
        ..FakeAdmin::default()
    });
    let table = stdout(&agent.xlb(&["bpf", "lb", "list"]));
    assert_eq!(
        table.lines().collect::<Vec<_>>(),
        [
            "Service Address            Service            Table   Backend Address (ID)      State     Slots",
            "198.18.100.1:80/TCP (1)    default/web:http   7       198.18.2.1:8080/TCP (5)   active    7",
            "198.18.100.2:443/TCP (2)   -                  7       198.18.2.3:8443/TCP (7)   active    5",
            "                                                      - (8)                     missing   2",
            "",
            "note: 2 slots missing: new flows hashed to these slots find no backend (`missing`: the \
             table names an ID without a backend record)",
            "",
            "Addresses no frontend has:",
            "Address       Kind",
            "198.19.0.50   VIP",
            "",
            "note: new flows to a VIP here are dropped (`drop_unknown_port`), to a node address \
             passed. The agent adopts every address it finds in the pinned maps when it starts, \
             and a sync removes those no frontend of its model is on; one still listed after a \
             successful sync was not written by this agent",
        ]
    );
    for format in ["json", "yaml"] {
        let text = stdout(&agent.xlb(&["bpf", "lb", "list", "-o", format]));
        let view: DatapathLbView = if format == "json" {
            serde_json::from_str(&text).expect("JSON")
        } else {
            serde_yaml_ng::from_str(&text).expect("YAML")
        };
        assert_eq!(view, programmed(), "{format}");
    }
}

#[test]
fn observe_says_when_the_agent_samples_no_events() {
    let agent = FakeAgent::sampling(0);
    let output = agent.xlb(&["observe", "--count", "1"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("--flow-event-sampling"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn maglev_show_names_the_backends() {
    let agent = FakeAgent::start();
    let text = stdout(&agent.xlb(&["maglev", "show", "default/web:http"]));
    assert!(
        text.contains("5         198.18.2.1:8080   7       100.0%"),
        "{text}"
    );
}

#[test]
fn simulate_and_drain() {
    let agent = FakeAgent::start();
    let text = stdout(&agent.xlb(&[
        "simulate",
        "--client",
        "198.18.50.77:40000",
        "--frontend",
        "198.18.100.1:80",
    ]));
    assert!(text.contains("Backend:   5 => 198.18.2.1:8080"), "{text}");
    let text = stdout(&agent.xlb(&["drain", "198.18.2.2:8080", "--service", "default/web:http"]));
    assert_eq!(text, "198.18.2.2:8080: draining in default/web:http\n");
}

#[test]
fn a_second_drain_or_undrain_says_plainly_that_nothing_changed() {
    let agent = FakeAgent::start();
    let backend = "198.18.2.2:8080";
    let drain = |verb| agent.xlb(&[verb, backend]);
    assert_eq!(
        stdout(&drain("drain")),
        "198.18.2.2:8080: draining in default/web:http\n"
    );
    assert_eq!(
        stdout(&drain("drain")),
        "198.18.2.2:8080: already drained by xlb drain in default/web:http\n"
    );
    assert_eq!(
        stdout(&drain("undrain")),
        "198.18.2.2:8080: undrained in default/web:http\n"
    );
    assert_eq!(
        stdout(&drain("undrain")),
        "198.18.2.2:8080: not drained in default/web:http: nothing to undrain\n"
    );
}

#[test]
fn an_undrain_the_configuration_file_holds_against_fails_and_names_the_file() {
    let agent = FakeAgent::start();
    let output = agent.xlb(&["undrain", DRAINED_BY_FILE]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "{:?}", output.stdout);
    assert_eq!(
        stderr(&output),
        format!(
            "xlb: {DRAINED_BY_FILE}: still draining in default/web:http: the configuration file \
             drains it there (state: draining), which xlb undrain cannot lift: set `state: \
             active` for it in {CONFIG_FILE}\n"
        )
    );
    // The answer is printed all the same, for scripts.
    let output = agent.xlb(&["undrain", DRAINED_BY_FILE, "-o", "json"]);
    assert_eq!(output.status.code(), Some(1));
    let answer: DrainView = serde_json::from_slice(&output.stdout).expect("the JSON answer");
    assert_eq!(
        answer.unchanged,
        [DrainUnchangedView {
            service: "default/web:http".into(),
            reason: DrainUnchanged::DrainedByFile
        }]
    );
    // A drain of it is no error: it is drained, and says by what.
    let text = stdout(&agent.xlb(&["drain", DRAINED_BY_FILE]));
    assert_eq!(
        text,
        format!(
            "{DRAINED_BY_FILE}: already draining in default/web:http: the configuration file \
             drains it (state: draining); this drain is kept as well, and holds if the file \
             stops draining it\n"
        )
    );
}

#[test]
fn drains_that_hold_in_no_service_are_listed_and_an_undrain_forgets_them() {
    let agent = FakeAgent::start();
    let table = stdout(&agent.xlb(&["backend", "list"]));
    let below: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(
        below,
        [
            "",
            "Drains of `xlb drain` that hold in no service now:",
            "Backend             Drained In",
            "198.18.1.100:9000   every service",
            "",
            "note: the backend is not in the configuration now (or not in the service named); \
             the drain is kept, and holds again if it comes back. `xlb undrain ADDR:PORT \
             [--service S]` forgets it",
        ]
    );
    let status = stdout(&agent.xlb(&["status"]));
    assert!(
        status.contains(
            "Drains:       1 by xlb drain (kept in /run/xlb/drains.json across restarts)\n              \
             198.18.1.100:9000 (every service): holds in no service now; kept until xlb undrain\n"
        ),
        "{status}"
    );
    assert_eq!(
        stdout(&agent.xlb(&["undrain", DRAINED_AND_GONE])),
        format!(
            "{DRAINED_AND_GONE}: drain forgotten (every service): it held in no service (the \
             backend, or the service, is not in the configuration now)\n"
        )
    );
}

#[test]
fn agent_errors_go_to_stderr() {
    let agent = FakeAgent::start();
    let output = agent.xlb(&["ct", "list", "--service", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        "xlb: listing tracked flows: no service named nope\n"
    );
}

#[test]
fn missing_socket_says_what_to_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("admin.sock");
    let output = xlb_with_socket(&socket, &["service", "list"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output).contains(&format!(
            "is the agent running? no socket at {}",
            socket.display()
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn admin_socket_comes_from_the_environment() {
    let agent = FakeAgent::start();
    let output = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["bpf", "lb", "list"])
        .env("XLB_ADMIN_SOCKET", agent.socket())
        .output()
        .expect("run xlb");
    let text = stdout(&output);
    assert!(
        text.contains(
            "198.18.100.1:80/TCP (1)    default/web:http   7       198.18.2.1:8080/TCP (5)"
        ),
        "{text}"
    );
}

fn check_config(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run xlb")
}

/// Two services, three frontends on three addresses, two backends (one
/// shared): the native format, as examples/demo.yaml documents it.
const GOOD_FILE: &str = "\
services:
  - name: web
    protocol: TCP
    frontends:
      - address: 198.18.100.1
        port: 80
      - address: 198.18.100.2
        port: 80
    backends:
      - address: \"198.18.2.1:8080\"
      - address: \"198.18.2.2:8080\"
  - name: api
    protocol: TCP
    frontends:
      - address: 198.18.100.3
        port: 443
    backends:
      - address: \"198.18.2.1:8080\"
";

#[test]
fn check_config_summarises_a_good_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("good.yaml");
    // 198.18.2.1 is a backend of both services and counts once.
    std::fs::write(&file, GOOD_FILE).expect("write");
    assert_eq!(
        stdout(&check_config(&file)),
        format!(
            "{}: ok: 2 services, 3 frontends, 2 backends\n",
            file.display()
        )
    );
}

/// `xlb check-config` with `args` before the file and `env` set.
fn check_config_with(file: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .arg("check-config")
        .args(args)
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .expect("run xlb")
}

#[test]
fn check_config_checks_the_file_fits_the_agent_s_map_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("good.yaml");
    std::fs::write(&file, GOOD_FILE).expect("write");
    let ok = format!(
        "{}: ok: 2 services, 3 frontends, 2 backends\n",
        file.display()
    );
    // Just enough: 3 frontends, 2 service IDs, 2 backend IDs, 3 addresses.
    let just_enough = check_config_with(
        &file,
        &["--max-services", "3", "--max-addresses", "3"],
        &[("XLB_MAX_BACKENDS", "3")],
    );
    assert_eq!(stdout(&just_enough), ok);

    // One short of each, by flag and by the agent's variable.
    let output = check_config_with(
        &file,
        &["--max-services", "2", "--max-addresses", "2"],
        &[("XLB_MAX_BACKENDS", "2")],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let name = file.display();
    assert_eq!(
        stderr(&output),
        format!(
            "{name}: the configuration needs 3 frontends but --max-services is 2: raise \
             --max-services\n\
             {name}: the configuration needs 2 services but --max-services 2 holds 1 (ID 0 is \
             never given out): raise --max-services\n\
             {name}: the configuration needs 2 backends but --max-backends 2 holds 1 (ID 0 is \
             never given out): raise --max-backends\n\
             {name}: the configuration needs 3 frontend addresses but --max-addresses is 2: \
             raise --max-addresses\n"
        )
    );

    // The help says what the count assumes.
    let help = stdout(
        &Command::new(env!("CARGO_BIN_EXE_xlb"))
            .args(["check-config", "--help"])
            .output()
            .expect("run xlb"),
    );
    for says in ["--max-backends", "[env: XLB_MAX_SERVICES=]", "pinned state"] {
        assert!(help.contains(says), "{says}: {help}");
    }
}

#[test]
fn check_config_counts_the_client_networks_of_each_service_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ranges.yaml");
    // Two ports, three networks: 6 entries of SOURCE_RANGES (and 4
    // frontends, 2 services).
    std::fs::write(
        &file,
        "\
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: shop}
spec:
  type: LoadBalancer
  allocateLoadBalancerNodePorts: false
  clusterIP: 198.18.100.1
  ports:
    - {name: http, port: 80}
    - {name: https, port: 443}
  loadBalancerSourceRanges: [198.18.0.0/24, 198.18.1.0/24, 198.18.2.0/24]
status:
  loadBalancer:
    ingress: [{ip: 198.18.100.2}]
",
    )
    .expect("write");
    let just_enough = check_config_with(&file, &["--max-services", "6"], &[]);
    assert_eq!(
        stdout(&just_enough),
        format!(
            "{}: ok: 2 services, 4 frontends, 0 backends\n",
            file.display()
        ),
        "{}",
        stderr(&just_enough)
    );

    let output = check_config_with(&file, &["--max-services", "5"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    assert_eq!(
        stderr(&output),
        format!(
            "{}: the configuration needs 6 client networks of loadBalancerSourceRanges (one \
             entry per network and Service port) but --max-services is 5: raise --max-services\n",
            file.display()
        )
    );
}

#[test]
fn check_config_rejects_a_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Without FILE it is a usage error.
    let usage = xlb_with_socket(&dir.path().join("unused.sock"), &["check-config"]);
    assert_eq!(usage.status.code(), Some(2));

    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "services: [\n  this is: not: valid yaml\n").expect("write");
    let output = check_config(&file);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(output.stdout.is_empty());
    let stderr = stderr(&output);
    assert!(!stderr.is_empty());
    // Every problem names the file.
    for line in stderr.lines() {
        assert!(
            line.starts_with(&format!("{}: ", file.display())),
            "{stderr}"
        );
    }

    let missing = dir.path().join("missing.yaml");
    let output = check_config(&missing);
    assert_eq!(output.status.code(), Some(1));
    let stderr = self::stderr(&output);
    assert!(
        stderr.starts_with(&missing.display().to_string()) && stderr.contains("No such file"),
        "{stderr}"
    );
}

#[test]
fn completions_for_bash() {
    let output = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["completions", "bash"])
        .output()
        .expect("run xlb");
    let script = stdout(&output);
    assert!(script.contains("_xlb()"), "{script}");
    assert!(script.contains("check-config"), "{script}");
}

/// `XLB_KUBERNETES=false` (or `0`) is file mode, as if unset: it neither
/// clashes with `--config` nor stands in for a source. Stops at the
/// interface check, before the agent touches anything.
#[test]
fn a_false_xlb_kubernetes_is_file_mode() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = |kubernetes: &str, config: bool| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_xlb"));
        command
            .env("XLB_KUBERNETES", kubernetes)
            .args(["agent", "--interface", "xlbnosuch0"])
            .arg("--pin-dir")
            .arg(dir.path().join("pins"))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"));
        if config {
            command.arg("--config").arg(dir.path().join("xlb.yaml"));
        }
        let out = command.output().expect("runs xlb");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for falsy in ["false", "0", "no"] {
        let (code, stderr) = run(falsy, true);
        assert_eq!(code, Some(1), "{falsy}: {stderr}");
        assert!(stderr.contains("no such interface"), "{falsy}: {stderr}");
        let (code, stderr) = run(falsy, false);
        assert_eq!(code, Some(2), "{falsy}: {stderr}");
        assert!(
            stderr.contains("a source of services is required"),
            "{falsy}: {stderr}"
        );
    }
    let (code, stderr) = run("true", true);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("cannot be used with '--kubernetes'"),
        "{stderr}"
    );
    let (code, stderr) = run("maybe", true);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("XLB_KUBERNETES") || stderr.contains("--kubernetes"),
        "{stderr}"
    );
}
