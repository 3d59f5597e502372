//! The admin API end to end: a fake agent served on a Unix socket in a
//! tempdir, asked through `AdminClient` (and, for permissions, through the
//! `xlb` binary run as another user).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use control_plane::{
    admin::{
        Admin, AdminClient, AdminError, AdminServer, ClientError, Cursor, EventHistory, EventsRead,
        HISTORY_CAPACITY, ServeError, SharedHistory, resolve_group,
        server::{MAX_EVENT_READERS, MAX_EVENTS_WAIT},
    },
    api::{
        AttachmentView, BackendStatus, BackendView, DatapathBackendStatus, DatapathBackendView,
        DatapathLbView, DatapathServiceView, DatapathTableView, DrainEntryView, DrainRequest,
        DrainSource, DrainUnchanged, DrainUnchangedView, DrainView, DrainsView, ErrorView,
        EventsView, FlowEventView, FlowView, FrontendView, MaglevSettingsView, MaglevView,
        MapUsageView, ReloadView, ServiceBackendView, ServiceView, SimulateRequest, SimulateView,
        StatsView, StatusView,
    },
    model::{FrontendKind, Mode, Protocol},
};
use hyper::StatusCode;
use nix::unistd::Gid;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::{oneshot, watch},
    task::JoinHandle,
};

/// `nobody`/`nogroup` on Debian and Ubuntu.
const NOBODY: u32 = 65_534;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// An agent made of fixed data; records drains.
#[derive(Debug)]
struct FakeAdmin {
    services: Vec<ServiceView>,
    backends: Vec<BackendView>,
    /// What the datapath's maps hold.
    datapath: DatapathLbView,
    flows: Vec<FlowView>,
    stats: StatsView,
    maps: Vec<MapUsageView>,
    status: StatusView,
    drains: Mutex<Vec<(DrainRequest, bool)>>,
    /// Calls of `events`, and whether each first pushes events into the
    /// history (else they come only from [`Self::happen`]).
    event_calls: AtomicUsize,
    push_on_read: bool,
    /// The flow events the fake agent holds, read as the agent reads its
    /// own; adding some wakes the readers waiting for them.
    history: SharedHistory<FlowEventView>,
}

impl FakeAdmin {
    fn new() -> Self {
        let backend = |id, address: &str, status| ServiceBackendView {
            id,
            address: addr(address),
            weight: 1,
            status,
            slots: if status == BackendStatus::Active {
                7
            } else {
                0
            },
        };
        let services = vec![
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
                affinity_timeout_seconds: Some(10_800),
                table_size: 7,
                backends: vec![
                    backend(1, "198.18.2.1:8080", BackendStatus::Active),
                    backend(2, "198.18.2.2:8080", BackendStatus::Draining),
                ],
                packets: 10,
                bytes: 1_500,
            },
            ServiceView {
                id: 2,
                name: "dns".into(),
                protocol: Protocol::Udp,
                mode: Mode::Nat,
                frontends: vec![FrontendView {
                    address: addr("10.0.0.5:30053"),
                    protocol: Protocol::Udp,
                    kind: FrontendKind::Node,
                }],
                affinity_timeout_seconds: None,
                table_size: 0,
                backends: vec![],
                packets: 0,
                bytes: 0,
            },
        ];
        let active = BackendView {
            id: 1,
            address: addr("198.18.2.1:8080"),
            protocol: Protocol::Tcp,
            generation: 3,
            status: BackendStatus::Active,
            health: "up".into(),
            health_by_service: BTreeMap::new(),
            services: vec!["default/web:http".into()],
            status_by_service: BTreeMap::from([("default/web:http".into(), BackendStatus::Active)]),
            drained_by: BTreeMap::new(),
            packets: 10,
            bytes: 1_500,
        };
        // Drained by the file and by `xlb drain` both.
        let draining = BackendView {
            id: 2,
            address: addr("198.18.2.2:8080"),
            status: BackendStatus::Draining,
            status_by_service: BTreeMap::from([(
                "default/web:http".into(),
                BackendStatus::Draining,
            )]),
            drained_by: BTreeMap::from([(
                "default/web:http".into(),
                vec![DrainSource::File, DrainSource::Admin],
            )]),
            ..active.clone()
        };
        let backends = vec![active, draining];
        let frontends = vec![DatapathServiceView {
            frontend: addr("198.18.100.1:80"),
            protocol: Protocol::Tcp,
            kind: Some(FrontendKind::Vip),
            service_id: 1,
            service: None,
            mode: Mode::Nat,
            affinity_timeout_seconds: Some(10_800),
            table_size: 7,
            backends: vec![
                DatapathBackendView {
                    id: 1,
                    address: Some(addr("198.18.2.1:8080")),
                    generation: Some(3),
                    status: DatapathBackendStatus::Active,
                    slots: 6,
                },
                DatapathBackendView {
                    id: 4,
                    address: None,
                    generation: None,
                    status: DatapathBackendStatus::Missing,
                    slots: 1,
                },
            ],
        }];
        // A table no frontend names, beside the frontend.
        let datapath = DatapathLbView {
            services: frontends,
            tables_without_frontend: vec![DatapathTableView {
                service_id: 9,
                service: None,
                table_size: 7,
                backends: vec![DatapathBackendView {
                    id: 1,
                    address: Some(addr("198.18.2.1:8080")),
                    generation: Some(3),
                    status: DatapathBackendStatus::Active,
                    slots: 7,
                }],
            }],
            ..DatapathLbView::default()
        };
        let flow = |client: &str, service: Option<&str>| FlowView {
            protocol: Protocol::Tcp,
            client: addr(client),
            frontend: addr("198.18.100.1:80"),
            backend_id: 1,
            backend: Some(addr("198.18.2.1:8080")),
            snat: None,
            service: service.map(str::to_owned),
            state: "established".into(),
            idle_seconds: 3,
        };
        let flows = vec![
            flow("198.18.50.77:40000", Some("default/web:http")),
            flow("198.18.50.78:40000", Some("other")),
            flow("198.18.50.79:40000", None),
        ];
        let stats = StatsView {
            verdicts: BTreeMap::from([
                ("forward_to_backend".into(), 10),
                ("drop_no_backend".into(), 1),
            ]),
            conntrack: BTreeMap::from([("created".into(), 3)]),
            parser: BTreeMap::from([("ipv4".into(), 11)]),
            flow_events: BTreeMap::from([("written".into(), 5), ("lost_ring_full".into(), 2)]),
        };
        let maps = vec![MapUsageView {
            name: "CONNTRACK".into(),
            entries: 3,
            capacity: 1_024,
            age_seconds: Some(4.5),
        }];
        let status = StatusView {
            version: "0.1.0-test".into(),
            layout_version: 1,
            config_file: Some("/etc/xlb/xlb.yaml".into()),
            attached: vec![AttachmentView {
                interface: "eth0".into(),
                mode: "native".into(),
            }],
            services: 2,
            backends: 1,
            synced: true,
            last_reload: Some(ReloadView {
                at: 1_700_000_000,
                outcome: "ok".into(),
                error: None,
            }),
            reloads_ok: 1,
            reloads_failed: 0,
            last_sync_seconds: Some(0.25),
            last_sync_error: Some("write frontend 198.19.0.1:80/TCP: map full".into()),
            uptime_seconds: 60,
            announcements: Vec::new(),
            earlier_agent_state_kept: None,
            kubernetes: None,
            flow_event_sampling: Some(0),
            maglev: Some(MaglevSettingsView {
                hash_seed: 7,
                min_table_size: 251,
            }),
            drains: Some(DrainsView {
                file: "/run/xlb/drains.json".into(),
                drains: vec![DrainEntryView {
                    backend: addr("198.18.2.2:8080"),
                    service: None,
                    services: vec!["default/web:http".into()],
                }],
                restore_error: Some("/run/xlb/drains.json.rejected: not a drains file".into()),
            }),
        };
        Self {
            services,
            backends,
            datapath,
            flows,
            stats,
            maps,
            status,
            drains: Mutex::new(Vec::new()),
            event_calls: AtomicUsize::new(0),
            push_on_read: true,
            history: SharedHistory::new(EventHistory::new(HISTORY_CAPACITY)),
        }
    }

    /// A fake whose events come only from [`Self::happen`], into a history
    /// of `capacity`.
    fn with_history(capacity: usize) -> Self {
        Self {
            push_on_read: false,
            history: SharedHistory::new(EventHistory::new(capacity)),
            ..Self::new()
        }
    }

    /// Events that happened at `times` (ns), into the history.
    fn happen(&self, times: impl IntoIterator<Item = u64>) {
        self.history.append(times.into_iter().map(event_at), None);
    }

    fn service(&self, name: &str) -> Result<&ServiceView, AdminError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| AdminError::NotFound(format!("no service named {name}")))
    }

    fn maglev_of(service: &ServiceView) -> MaglevView {
        MaglevView {
            service: service.name.clone(),
            id: service.id,
            size: service.table_size,
            slots: vec![1; service.table_size as usize],
            shares: BTreeMap::from([(1, service.table_size)]),
        }
    }
}

impl Admin for FakeAdmin {
    fn services(&self) -> Result<Vec<ServiceView>, AdminError> {
        Ok(self.services.clone())
    }
    fn backends(&self) -> Result<Vec<BackendView>, AdminError> {
        Ok(self.backends.clone())
    }
    fn datapath_lb(&self) -> Result<DatapathLbView, AdminError> {
        Ok(self.datapath.clone())
    }
    fn conntrack(&self, service: Option<&str>) -> Result<Vec<FlowView>, AdminError> {
        if let Some(name) = service {
            self.service(name)?;
        }
        Ok(self
            .flows
            .iter()
            .filter(|f| service.is_none() || f.service.as_deref() == service)
            .cloned()
            .collect())
    }
    fn stats(&self) -> Result<StatsView, AdminError> {
        Ok(self.stats.clone())
    }
    fn maps(&self) -> Result<Vec<MapUsageView>, AdminError> {
        Ok(self.maps.clone())
    }
    fn maglev(&self, service: &str) -> Result<MaglevView, AdminError> {
        Ok(Self::maglev_of(self.service(service)?))
    }
    fn simulate(&self, request: &SimulateRequest) -> Result<SimulateView, AdminError> {
        if request.client.is_ipv6() {
            return Err(AdminError::BadRequest("xlb balances IPv4 only".into()));
        }
        Ok(SimulateView {
            outcome: "backend".into(),
            service: Some("default/web:http".into()),
            backend_id: Some(u32::from(request.client.port() % 2) + 1),
            backend: None,
        })
    }
    fn drain(&self, request: &DrainRequest, drain: bool) -> Result<DrainView, AdminError> {
        self.drains
            .lock()
            .expect("drains lock")
            .push((request.clone(), drain));
        if request.service.as_deref() == Some("broken") {
            return Err(AdminError::Internal("writing the table failed".into()));
        }
        Ok(DrainView {
            services: vec![
                request
                    .service
                    .clone()
                    .unwrap_or_else(|| "default/web:http".into()),
            ],
            unchanged: vec![DrainUnchangedView {
                service: "dns".into(),
                reason: DrainUnchanged::DrainedByFile,
            }],
            forgotten: vec![DrainEntryView {
                backend: request.backend,
                service: Some("gone".into()),
                services: Vec::new(),
            }],
        })
    }
    fn status(&self) -> Result<StatusView, AdminError> {
        Ok(self.status.clone())
    }
    /// Reads the history; with `push_on_read`, each call first pushes
    /// `max` events, those of call `n` (from 0) at `1000 n + i` ns. A call
    /// is counted once it has read: a reader counted since it last read is
    /// waiting (or has its answer).
    fn events(&self, read: &EventsRead) -> Result<EventsView, AdminError> {
        if self.push_on_read {
            let call = self.event_calls.load(Ordering::Relaxed);
            self.happen((0..read.max).map(|i| 1000 * call as u64 + i as u64));
        }
        let page = read.from(&self.history, |e| e.time_ns);
        self.event_calls.fetch_add(1, Ordering::Relaxed);
        page
    }
    fn event_arrivals(&self) -> watch::Receiver<u64> {
        self.history.arrivals()
    }
}

/// A new flow at `time_ns`.
fn event_at(time_ns: u64) -> FlowEventView {
    FlowEventView {
        time_ns,
        kind: "new_flow".into(),
        protocol: Some(Protocol::Tcp),
        client: Some(addr("198.18.50.77:40000")),
        frontend: addr("198.18.100.1:80"),
        service: Some("default/web:http".into()),
        backend: Some(addr("198.18.2.1:8080")),
        reason: None,
    }
}

/// A fake agent served on `socket` until dropped.
struct Served {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Served {
    async fn start(admin: Arc<FakeAdmin>, socket: &Path, group: Option<Gid>) -> Self {
        let server = AdminServer::bind(socket, group)
            .await
            .expect("bind the admin socket");
        Self::serve(server, admin)
    }

    fn serve(server: AdminServer, admin: Arc<FakeAdmin>) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(admin, async move {
            stopped.await.ok();
        }));
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        self.stop.take().expect("running").send(()).ok();
        self.task
            .take()
            .expect("running")
            .await
            .expect("server task");
    }
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("admin.sock")
}

#[tokio::test]
async fn every_route_answers_with_the_agents_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::new());
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);

    assert_eq!(client.services().await.expect("services"), fake.services);
    assert_eq!(client.backends().await.expect("backends"), fake.backends);
    assert_eq!(
        client.datapath_lb().await.expect("datapath lb"),
        fake.datapath
    );
    // The frontends alone, as the route answered before the rest was added.
    assert_eq!(
        client.datapath_services().await.expect("datapath services"),
        fake.datapath.services
    );
    assert_eq!(client.conntrack(None).await.expect("conntrack"), fake.flows);
    assert_eq!(
        client
            .conntrack(Some("default/web:http"))
            .await
            .expect("conntrack of web"),
        fake.flows[..1].to_vec()
    );
    assert_eq!(client.stats().await.expect("stats"), fake.stats);
    assert_eq!(client.maps().await.expect("maps"), fake.maps);
    // The name carries '/' and ':', which the route keeps.
    assert_eq!(
        client.maglev("default/web:http").await.expect("maglev"),
        FakeAdmin::maglev_of(&fake.services[0])
    );
    assert_eq!(client.status().await.expect("status"), fake.status);
    let events = client
        .events(3, Duration::from_millis(250))
        .await
        .expect("events");
    assert_eq!(events.events.len(), 3);

    let request = SimulateRequest {
        client: addr("198.18.50.77:40001"),
        frontend: addr("198.18.100.1:80"),
        protocol: Protocol::Tcp,
    };
    assert_eq!(
        client.simulate(&request).await.expect("simulate"),
        SimulateView {
            outcome: "backend".into(),
            service: Some("default/web:http".into()),
            backend_id: Some(2),
            backend: None,
        }
    );

    let drain = DrainRequest {
        backend: addr("198.18.2.2:8080"),
        service: Some("default/web:http".into()),
    };
    let drained = client.drain(&drain).await.expect("drain");
    assert_eq!(drained.services, vec!["default/web:http".to_owned()]);
    assert_eq!(drained.unchanged[0].reason, DrainUnchanged::DrainedByFile);
    assert_eq!(drained.forgotten[0].service.as_deref(), Some("gone"));
    let undrain = DrainRequest {
        backend: addr("198.18.2.2:8080"),
        service: None,
    };
    client.undrain(&undrain).await.expect("undrain");
    assert_eq!(
        *fake.drains.lock().expect("drains lock"),
        vec![(drain, true), (undrain, false)]
    );

    served.stop().await;
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

/// What scripts read of the drains: the sources and reasons by name.
#[tokio::test]
async fn drains_show_their_source_and_reasons_by_stable_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let served = Served::start(Arc::new(FakeAdmin::new()), &socket, None).await;
    let get = |route: &str| format!("GET {route} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (_, body) = raw(&socket, &get("/v1/backends")).await;
    let backends: serde_json::Value = serde_json::from_str(&body).expect("JSON backends");
    // The fields of before are there as they were.
    assert_eq!(backends[1]["status"], "draining");
    assert_eq!(
        backends[1]["status_by_service"],
        serde_json::json!({"default/web:http": "draining"})
    );
    assert_eq!(
        backends[1]["drained_by"],
        serde_json::json!({"default/web:http": ["file", "admin"]})
    );
    assert_eq!(backends[0]["drained_by"], serde_json::json!({}));
    let (_, body) = post_raw(
        &socket,
        "/v1/undrain",
        "application/json",
        r#"{"backend": "198.18.2.2:8080"}"#,
    )
    .await;
    let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
    assert_eq!(
        answer["unchanged"],
        serde_json::json!([{"service": "dns", "reason": "drained_by_file"}])
    );
    assert_eq!(
        answer["forgotten"],
        serde_json::json!([{"backend": "198.18.2.2:8080", "service": "gone", "services": []}])
    );
    let (_, body) = raw(&socket, &get("/v1/status")).await;
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON status");
    assert_eq!(status["drains"]["file"], "/run/xlb/drains.json");
    assert_eq!(
        status["drains"]["drains"],
        serde_json::json!([{
            "backend": "198.18.2.2:8080",
            "service": null,
            "services": ["default/web:http"]
        }])
    );
    served.stop().await;
}

#[tokio::test]
async fn errors_carry_their_status_and_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let served = Served::start(Arc::new(FakeAdmin::new()), &socket, None).await;
    let client = AdminClient::new(&socket);

    let error = client
        .maglev("default/nope:http")
        .await
        .expect_err("unknown service");
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(error.to_string(), "no service named default/nope:http");

    let error = client
        .conntrack(Some("a b&c"))
        .await
        .expect_err("unknown service");
    assert_eq!(error.status(), Some(StatusCode::NOT_FOUND));
    // The query value arrives decoded.
    assert_eq!(error.to_string(), "no service named a b&c");

    let ipv6 = SimulateRequest {
        client: addr("[2001:db8::1]:40000"),
        frontend: addr("198.18.100.1:80"),
        protocol: Protocol::Tcp,
    };
    let error = client.simulate(&ipv6).await.expect_err("bad request");
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(error.to_string(), "xlb balances IPv4 only");

    let broken = DrainRequest {
        backend: addr("198.18.2.2:8080"),
        service: Some("broken".into()),
    };
    let error = client.drain(&broken).await.expect_err("internal");
    assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(error.to_string(), "writing the table failed");

    served.stop().await;
}

/// Sends `request` as is and returns the status line and the body.
async fn raw(socket: &Path, request: &str) -> (String, String) {
    let (status, answer) = raw_with_headers(socket, request).await;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// `POST route` with `body` of `content_type`, sent as is (see [`raw`]).
async fn post_raw(socket: &Path, route: &str, content_type: &str, body: &str) -> (String, String) {
    let request = format!(
        "POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    raw(socket, &request).await
}

/// As [`raw`], with the whole answer, headers included, for the body.
async fn raw_with_headers(socket: &Path, request: &str) -> (String, String) {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer.lines().next().unwrap_or_default().to_owned();
    (status, answer)
}

#[tokio::test]
async fn malformed_requests_get_an_error_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let served = Served::start(Arc::new(FakeAdmin::new()), &socket, None).await;

    let body = r#"{"client":"not an address"}"#;
    let (status, answer) = post_raw(&socket, "/v1/simulate", "application/json", body).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
    assert!(error.error.contains("client"), "{error:?}");

    // A field the request does not have is refused, not ignored: a
    // misspelt `service` must not drain the backend everywhere.
    let body = r#"{"backend":"198.18.2.1:8080","servcie":"dns"}"#;
    for route in ["/v1/drain", "/v1/undrain"] {
        let (status, answer) = post_raw(&socket, route, "application/json", body).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{route}");
        let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
        assert!(error.error.contains("unknown field `servcie`"), "{error:?}");
    }
    let body = r#"{"client":"198.18.50.77:40000","frontend":"198.18.100.1:80","protocol":"TCP","proto":"UDP"}"#;
    let (status, answer) = post_raw(&socket, "/v1/simulate", "application/json", body).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
    assert!(error.error.contains("unknown field `proto`"), "{error:?}");

    let (status, answer) = raw(
        &socket,
        "GET /v2/everything HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
    assert_eq!(error.error, "no admin route /v2/everything");

    // A method the route does not take, a body that is not JSON, one past
    // the limit: each its own status, with an error document.
    let (status, answer) = raw_with_headers(
        &socket,
        "POST /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(
        answer.to_ascii_lowercase().contains("\r\nallow: get"),
        "{answer}"
    );
    let error: ErrorView = serde_json::from_str(answer.split_once("\r\n\r\n").expect("a body").1)
        .expect("an ErrorView");
    assert_eq!(error.error, "/v1/status does not take POST");
    let body = r#"{"backend":"198.18.2.1:8080"}"#;
    let (status, answer) = post_raw(&socket, "/v1/drain", "text/plain", body).await;
    assert_eq!(status, "HTTP/1.1 415 Unsupported Media Type");
    serde_json::from_str::<ErrorView>(&answer).expect("an ErrorView");
    // Past the limit, the server answers and hangs up before it has read
    // the whole body: what it could not take is written in vain.
    let huge = 3 << 20;
    let mut stream = UnixStream::connect(&socket).await.expect("connect");
    let request = format!(
        "POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {huge}\r\nConnection: close\r\n\r\n{}",
        " ".repeat(huge)
    );
    stream.write_all(request.as_bytes()).await.ok();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer.lines().next().unwrap_or_default();
    let answer = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    serde_json::from_str::<ErrorView>(answer).expect("an ErrorView");

    // The events route's bounds.
    for query in [
        "max=0&wait_ms=10",
        "max=5000&wait_ms=10",
        "max=1&wait_ms=60000",
        "max=1",
        // A run is a cursor's: not without one.
        "max=1&wait_ms=10&run=5",
    ] {
        let (status, answer) = raw(
            &socket,
            &format!("GET /v1/events?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{query}");
        let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
        assert!(!error.error.is_empty(), "{query}");
    }

    served.stop().await;
}

/// `GET target` as is: the status line and the body as an error document.
async fn get_error(socket: &Path, target: &str) -> (String, ErrorView) {
    let (status, answer) = raw(
        socket,
        &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let error = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{target}: not an ErrorView ({e}): {answer:?}"));
    (status, error)
}

#[tokio::test]
async fn what_a_route_does_not_take_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let served = Served::start(Arc::new(FakeAdmin::new()), &socket, None).await;

    // A parameter the route does not have (a misspelt filter would list
    // every flow), or one given twice: refused, named.
    for (target, says) in [
        ("/v1/conntrack?servcie=dns", "unknown field `servcie`"),
        ("/v1/services?verbose=1", "unknown field `verbose`"),
        (
            "/v1/datapath/services?service=dns",
            "unknown field `service`",
        ),
        ("/v1/datapath/lb?service=dns", "unknown field `service`"),
        ("/v1/maglev/dns?x=1", "unknown field `x`"),
        (
            "/v1/events?max=1&wait_ms=10&timeout=5",
            "unknown field `timeout`",
        ),
        (
            "/v1/conntrack?service=dns&service=x",
            "duplicate field `service`",
        ),
    ] {
        let (status, error) = get_error(&socket, target).await;
        assert_eq!(status, "HTTP/1.1 400 Bad Request", "{target}");
        assert!(error.error.contains(says), "{target}: {error:?}");
    }
    let (status, answer) = post_raw(
        &socket,
        "/v1/drain?service=dns",
        "application/json",
        r#"{"backend":"198.18.2.1:8080"}"#,
    )
    .await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let error: ErrorView = serde_json::from_str(&answer).expect("an ErrorView");
    assert!(error.error.contains("unknown field `service`"), "{error:?}");

    // Bytes that are no UTF-8 text: a bad request, not an unknown name,
    // and an error document like every other error.
    let (status, error) = get_error(&socket, "/v1/conntrack?service=%FF").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(error.error.contains("`service=%FF`"), "{error:?}");
    let (status, error) = get_error(&socket, "/v1/maglev/%FF").await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(error.error.contains("UTF-8"), "{error:?}");

    // What the routes take still works, encoded as the client encodes it.
    let (status, _) = raw(
        &socket,
        "GET /v1/conntrack?service=default%2Fweb:http HTTP/1.1\r\nHost: x\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, "HTTP/1.1 200 OK");

    served.stop().await;
}

/// Sends `request`, then reads until the server closes the connection,
/// which it must do within `deadline`.
async fn closed_within(socket: &Path, request: &str, deadline: Duration) -> String {
    let mut stream = UnixStream::connect(socket).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(deadline, stream.read_to_string(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("{request:?}: the connection is still open after {deadline:?}"))
        .expect("read");
    answer
}

#[tokio::test]
async fn a_request_sent_in_part_is_cut_off() {
    const BOUND: Duration = Duration::from_millis(300);
    // Far below the bound of a real agent, far above this one.
    let deadline = BOUND + Duration::from_secs(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let server = AdminServer::bind(&socket, None)
        .await
        .expect("bind")
        .with_read_timeout(BOUND);
    let served = Served::serve(server, Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY)));

    // Nothing at all, half a head: closed without an answer.
    for partial in ["", "GET /v1/status HTTP/1.1\r\nHost: x\r\n"] {
        let answer = closed_within(&socket, partial, deadline).await;
        assert_eq!(answer, "", "{partial:?}");
    }
    // A body shorter than its Content-Length: 408, then closed.
    let answer = closed_within(
        &socket,
        "POST /v1/drain HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"backend\":",
        deadline,
    )
    .await;
    let (status, body) = answer.split_once("\r\n\r\n").expect("an answer");
    assert!(
        status.starts_with("HTTP/1.1 408 Request Timeout"),
        "{answer}"
    );
    let error: ErrorView = serde_json::from_str(body).expect("an ErrorView");
    assert!(
        error.error.contains("did not arrive within 300ms"),
        "{error:?}"
    );
    // A kept-alive connection that sends no next request: answered, then
    // closed.
    let answer = closed_within(
        &socket,
        "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n",
        deadline,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");

    // The answer is not bounded: an event reader waits longer than it.
    let started = tokio::time::Instant::now();
    let events = AdminClient::new(&socket)
        .events(1, BOUND * 3)
        .await
        .expect("events after a wait longer than the bound");
    assert!(events.events.is_empty());
    assert!(started.elapsed() >= BOUND * 3, "{:?}", started.elapsed());

    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_woken_by_the_events_it_waits_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);
    let reader = tokio::spawn(async move { client.events(2, Duration::from_secs(10)).await });
    reads(&fake, 1).await;
    // While nothing comes the reader waits without reading the history
    // again (a reader polling it every 50 ms would have read it 6 times).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.event_calls.load(Ordering::Relaxed), 1);
    fake.happen([1, 2]);
    // Woken by them, well before its wait is over.
    let page = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the reader was not woken by the events")
        .expect("reader task")
        .expect("events");
    assert_eq!(times(&page), [1, 2]);
    assert_eq!(fake.event_calls.load(Ordering::Relaxed), 2);
    served.stop().await;

    // None at all: an empty answer once the wait is over, not an error,
    // the history read at its start and its end.
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let started = tokio::time::Instant::now();
    let events = AdminClient::new(&socket)
        .events(1, Duration::from_millis(200))
        .await
        .expect("events");
    assert!(events.events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(fake.event_calls.load(Ordering::Relaxed), 2);
    served.stop().await;
}

/// The times of `page`'s events.
fn times(page: &EventsView) -> Vec<u64> {
    page.events.iter().map(|e| e.time_ns).collect()
}

#[tokio::test]
async fn events_since_a_time_leave_out_the_older_ones_the_history_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    // Older events and newer ones, mixed (the datapath's CPUs write to the
    // ring in turn): only the newer ones.
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    fake.happen([1000, 3000, 2000, 3001, 1500, 3002, 3003]);
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);
    let page = client
        .events_since(3, Duration::from_millis(20), 3000, None)
        .await
        .expect("events");
    assert_eq!(
        (times(&page), page.next_seq, page.missed),
        (vec![3000, 3001, 3002], 6, 0)
    );
    // What the first read passed over is not read again.
    let page = client
        .events_since(
            3,
            Duration::from_millis(20),
            3000,
            Some(Cursor::after(&page)),
        )
        .await
        .expect("events");
    assert_eq!((times(&page), page.next_seq), (vec![3003], 7));

    served.stop().await;

    // Events older than `since_ns` wake a waiting reader, which passes
    // over them and waits on for newer ones.
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);
    let reader = tokio::spawn(async move {
        client
            .events_since(4, Duration::from_secs(5), 3000, None)
            .await
    });
    reads(&fake, 1).await;
    fake.happen([1000, 2000]);
    reads(&fake, 2).await;
    fake.happen([3000, 3001]);
    let page = reader.await.expect("reader task").expect("events");
    assert_eq!((times(&page), page.next_seq), (vec![3000, 3001], 4));
    assert_eq!(fake.event_calls.load(Ordering::Relaxed), 3);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_at_once_each_get_every_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let read = |since_seq| {
        let client = AdminClient::new(&socket);
        tokio::spawn(async move {
            client
                .events_since(100, Duration::from_secs(5), 0, since_seq)
                .await
                .expect("events")
        })
    };
    let mut cursors = [None, None];
    for (round, batch) in [vec![1, 2, 3], vec![4, 5]].into_iter().enumerate() {
        // Both wait, then the events come.
        let readers = cursors.map(read);
        reads(&fake, 2 * (round + 1)).await;
        fake.happen(batch.clone());
        for (reader, cursor) in readers.into_iter().zip(&mut cursors) {
            let page = reader.await.expect("reader task");
            assert_eq!((times(&page), page.missed), (batch.clone(), 0));
            *cursor = Some(Cursor::after(&page));
        }
    }
    served.stop().await;
}

#[tokio::test]
async fn a_reader_that_fell_behind_is_told_how_many_it_missed_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::with_history(4));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);
    let read = |cursor| client.events_since(100, Duration::from_millis(500), 0, cursor);

    fake.happen([1, 2]);
    let page = read(None).await.expect("events");
    assert_eq!((times(&page), page.missed), (vec![1, 2], 0));
    // Ten more in a history of four: the six before the last four are gone.
    fake.happen(3..13);
    let page = read(Some(Cursor::after(&page))).await.expect("events");
    assert_eq!((times(&page), page.missed), (vec![9, 10, 11, 12], 6));
    // Caught up, it misses nothing more.
    fake.happen([13]);
    let page = read(Some(Cursor::after(&page))).await.expect("events");
    assert_eq!(
        (times(&page), page.missed, page.next_seq),
        (vec![13], 0, 13)
    );
    // A cursor this agent never gave, without its run: refused, named.
    let cursor = Cursor { seq: 99, run: None };
    let error = read(Some(cursor))
        .await
        .expect_err("a cursor from elsewhere");
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST), "{error}");
    assert!(error.to_string().contains("since_seq 99"), "{error}");
    served.stop().await;
}

#[tokio::test]
async fn a_cursor_of_another_run_reads_the_new_one_and_says_the_agent_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let client = AdminClient::new(&socket);
    let first_run = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    first_run.happen([1, 2]);
    let served = Served::start(Arc::clone(&first_run), &socket, None).await;
    let page = client
        .events_since(100, Duration::from_millis(20), 0, None)
        .await
        .expect("events");
    assert_eq!((times(&page), page.restarted), (vec![1, 2], false));
    served.stop().await;

    // The agent restarts with a history of its own; it has already pushed
    // the first of its five events out of its four places. Its numbers
    // start at 0 again: the old cursor (2) would read from its third.
    let second_run = Arc::new(FakeAdmin::with_history(4));
    second_run.happen(10..15);
    let served = Served::start(Arc::clone(&second_run), &socket, None).await;
    let again = client
        .events_since(100, MAX_EVENTS_WAIT, 0, Some(Cursor::after(&page)))
        .await
        .expect("events after the restart");
    assert_ne!(again.run, page.run);
    assert_eq!(
        (times(&again), again.missed, again.restarted),
        (vec![11, 12, 13, 14], 1, true)
    );
    // From the new run's cursor, as usual.
    second_run.happen([15]);
    let page = client
        .events_since(100, MAX_EVENTS_WAIT, 0, Some(Cursor::after(&again)))
        .await
        .expect("events");
    assert_eq!(
        (times(&page), page.missed, page.restarted),
        (vec![15], 0, false)
    );
    served.stop().await;

    // With nothing to read, a restart is news of its own: told at once, not
    // at the end of the wait.
    let third_run = Arc::new(FakeAdmin::with_history(4));
    let served = Served::start(Arc::clone(&third_run), &socket, None).await;
    let page = client
        .events_since(100, MAX_EVENTS_WAIT, 0, Some(Cursor::after(&page)))
        .await
        .expect("events after the restart");
    assert_eq!((page.events.len(), page.restarted), (0, true));
    assert_eq!(third_run.event_calls.load(Ordering::Relaxed), 1);
    served.stop().await;
}

/// Waits until `fake`'s events were read `n` times (each reader reads at
/// once, then between its waits); fails after [`MAX_EVENTS_WAIT`].
async fn reads(fake: &FakeAdmin, n: usize) {
    let deadline = tokio::time::Instant::now() + MAX_EVENTS_WAIT;
    while fake.event_calls.load(Ordering::Relaxed) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the readers never read"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_event_readers_are_bounded_and_hold_up_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let wait = Duration::from_secs(5);
    let readers: Vec<_> = (0..MAX_EVENT_READERS)
        .map(|_| {
            let client = AdminClient::new(&socket);
            tokio::spawn(async move { client.events(1, wait).await })
        })
        .collect();
    // Until every reader has read once, one more may still find room.
    reads(&fake, MAX_EVENT_READERS).await;
    let client = AdminClient::new(&socket);
    let error = client
        .events(1, wait)
        .await
        .expect_err("one reader too many");
    assert_eq!(
        error.status(),
        Some(StatusCode::TOO_MANY_REQUESTS),
        "{error}"
    );
    // The other routes answer while the readers wait.
    assert_eq!(client.status().await.expect("status"), fake.status);
    assert!(
        readers.iter().all(|r| !r.is_finished()),
        "the readers gave up before their wait was over"
    );
    for reader in readers {
        let events = reader.await.expect("reader task").expect("events");
        assert!(events.events.is_empty());
    }
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_answers_a_waiting_event_reader_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let fake = Arc::new(FakeAdmin::with_history(HISTORY_CAPACITY));
    let served = Served::start(Arc::clone(&fake), &socket, None).await;
    let client = AdminClient::new(&socket);
    let started = tokio::time::Instant::now();
    let reader = tokio::spawn(async move { client.events(1, MAX_EVENTS_WAIT).await });
    reads(&fake, 1).await;
    served.stop().await;
    let events = reader.await.expect("reader task").expect("an answer");
    assert!(events.events.is_empty());
    // Not the reader's whole wait: the server stopped it.
    assert!(
        started.elapsed() < MAX_EVENTS_WAIT,
        "{:?}",
        started.elapsed()
    );
    assert!(!socket.exists(), "the socket outlived the server");
}

#[tokio::test]
async fn a_server_dropped_unserved_removes_its_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let server = AdminServer::bind(&socket, None).await.expect("bind");
    assert!(socket.exists());
    // As when the agent fails to start after binding.
    drop(server);
    assert!(!socket.exists(), "a stale socket was left behind");
}

#[tokio::test]
async fn bind_replaces_a_stale_socket_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);

    // A socket file left by a killed agent: replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a stale socket"));
    let served = Served::start(Arc::new(FakeAdmin::new()), &socket, None).await;
    AdminClient::new(&socket)
        .status()
        .await
        .expect("serves after replacing");

    // A live agent on it: refused, and still serving.
    let error = AdminServer::bind(&socket, None).await.expect_err("in use");
    assert!(matches!(error, ServeError::InUse { .. }), "{error:?}");
    AdminClient::new(&socket)
        .status()
        .await
        .expect("still serving");
    served.stop().await;

    // Not a socket: left alone.
    std::fs::write(&socket, "precious").expect("write a file");
    let error = AdminServer::bind(&socket, None)
        .await
        .expect_err("not a socket");
    assert!(matches!(error, ServeError::NotASocket { .. }), "{error:?}");
    assert_eq!(std::fs::read_to_string(&socket).expect("read"), "precious");

    // A missing directory is created.
    let nested = dir.path().join("run/xlb/admin.sock");
    let served = Served::start(Arc::new(FakeAdmin::new()), &nested, None).await;
    AdminClient::new(&nested)
        .status()
        .await
        .expect("serves in a new directory");
    served.stop().await;
}

#[test]
fn groups_resolve_by_name_or_id() {
    assert_eq!(
        resolve_group("nogroup").expect("nogroup"),
        Gid::from_raw(NOBODY)
    );
    assert_eq!(resolve_group("4242").expect("numeric"), Gid::from_raw(4242));
    let error = resolve_group("xlb-no-such-group").expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "admin group \"xlb-no-such-group\": no such group (give a group name or a numeric ID)"
    );
    // chown(2)'s "no change": the socket would keep root's group.
    let error = resolve_group("4294967295").expect_err("(gid_t)-1");
    assert_eq!(
        error.to_string(),
        "admin group 4294967295: not a group ID (chown(2) takes it, as -1, for \"leave the \
         group as it is\"); give a group name or another numeric ID"
    );
    assert_eq!(
        resolve_group("4294967294").expect("the highest ID"),
        Gid::from_raw(u32::MAX - 1)
    );
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test changes socket ownership and switches users: run it as root (as `make test` does)"
    );
}

/// `xlb status` on `socket`, run as uid `nobody` with only group `gid`.
async fn status_as_nobody(socket: &Path, gid: u32) -> std::process::Output {
    tokio::process::Command::new("setpriv")
        .args([
            "--reuid".to_owned(),
            NOBODY.to_string(),
            "--regid".to_owned(),
            gid.to_string(),
            "--clear-groups".to_owned(),
            env!("CARGO_BIN_EXE_xlb").to_owned(),
            "--admin-socket".to_owned(),
        ])
        .arg(socket)
        .arg("status")
        .output()
        .await
        .expect("run setpriv")
}

#[tokio::test]
async fn socket_is_0660_and_only_its_group_gets_in() {
    assert_root();
    let dir = tempfile::tempdir().expect("tempdir");
    // Others may reach the socket's directory; the socket's own mode decides.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the tempdir");
    let socket = socket_in(&dir);
    let served = Served::start(
        Arc::new(FakeAdmin::new()),
        &socket,
        Some(Gid::from_raw(NOBODY)),
    )
    .await;

    let metadata = std::fs::metadata(&socket).expect("stat the socket");
    assert_eq!(metadata.mode() & 0o7777, 0o660);
    assert_eq!(metadata.gid(), NOBODY);

    // Root connects.
    AdminClient::new(&socket)
        .status()
        .await
        .expect("root connects");

    // A user outside the socket's group is refused, with what to do about it.
    let outsider = status_as_nobody(&socket, NOBODY - 1).await;
    let stderr = String::from_utf8_lossy(&outsider.stderr);
    assert_eq!(outsider.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "permission denied on {}: run as root or as a member of the socket's group",
            socket.display()
        )),
        "stderr: {stderr}"
    );

    // The same user in the socket's group gets in.
    let member = status_as_nobody(&socket, NOBODY).await;
    let stdout = String::from_utf8_lossy(&member.stdout);
    assert!(
        member.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&member.stderr)
    );
    assert!(stdout.contains("0.1.0-test"), "stdout: {stdout}");

    served.stop().await;
}

#[tokio::test]
async fn client_errors_name_the_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = socket_in(&dir);
    let error = AdminClient::new(&socket)
        .services()
        .await
        .expect_err("no agent");
    assert!(matches!(error, ClientError::NoSocket { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("is the agent running? no socket at {}", socket.display())
    );
}
